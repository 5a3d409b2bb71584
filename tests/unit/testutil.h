/* What the unit tests share: a scratch directory of their own, and the
 * certificates and keys of a test deployment. */
#ifndef EXFLEET_TESTUTIL_H
#define EXFLEET_TESTUTIL_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* Creates a fresh directory NAME-XXXXXX under $EXFLEET_TEST_TMP (or /tmp)
 * into out. Returns 0 or a negative libuv error code. */
int test_tmpdir(const char *name, char *out, size_t len);
/* Removes path and everything below it. */
void test_rmtree(const char *path);
/* The PEM certificate, or private key, in path; NULL when there is none. */
X509 *test_read_cert(const char *path);
EVP_PKEY *test_read_key(const char *path);

#endif
