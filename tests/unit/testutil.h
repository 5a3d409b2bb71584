/* What the unit tests share: a scratch directory of their own. */
#ifndef EXFLEET_TESTUTIL_H
#define EXFLEET_TESTUTIL_H

#include <stddef.h>

/* Creates a fresh directory NAME-XXXXXX under $EXFLEET_TEST_TMP (or /tmp)
 * into out. Returns 0 or a negative libuv error code. */
int test_tmpdir(const char *name, char *out, size_t len);
/* Removes path and everything below it. */
void test_rmtree(const char *path);

#endif
