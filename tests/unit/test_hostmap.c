/* The host map against a plain array as the reference, through growth and
 * many removals (backward-shift deletion must keep every key findable). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "hostmap.h"

enum { N = 5000 };
static char names[N][16];
static int present[N];

static void test_put_get_remove(void **state)
{
	struct hostmap m;
	hostmap_init(&m);
	assert_null(hostmap_get(&m, "EXCH0001"));
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "EXCH%04d", i);
		assert_int_equal(hostmap_put(&m, names[i], &present[i]), 0);
		present[i] = 1;
	}
	assert_int_equal(m.count, N);
	/* Remove every third, in an order that exercises wrap-around chains. */
	uint32_t x = 12345;
	for (int k = 0; k < N; k++) {
		x = x * 1103515245u + 12345u;
		int i = (int)(x % N);
		if (i % 3 == 0 && present[i]) {
			hostmap_remove(&m, names[i], &present[i]);
			present[i] = 0;
		}
	}
	size_t live = 0;
	for (int i = 0; i < N; i++) {
		void *v = hostmap_get(&m, names[i]);
		if (present[i]) {
			assert_ptr_equal(v, &present[i]);
			live++;
		} else {
			assert_null(v);
		}
	}
	assert_int_equal(m.count, live);
	hostmap_free(&m);
}

static void test_remove_only_matching_value(void **state)
{
	/* A replaced session closing later must not remove its successor. */
	struct hostmap m;
	hostmap_init(&m);
	int old_session, new_session;
	hostmap_put(&m, "EXCH01", &old_session);
	hostmap_put(&m, "EXCH01", &new_session);
	assert_int_equal(m.count, 1);
	hostmap_remove(&m, "EXCH01", &old_session);
	assert_ptr_equal(hostmap_get(&m, "EXCH01"), &new_session);
	hostmap_remove(&m, "EXCH01", &new_session);
	assert_null(hostmap_get(&m, "EXCH01"));
	assert_int_equal(m.count, 0);
	hostmap_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_remove),
		cmocka_unit_test(test_remove_only_matching_value),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
