/* Backoff: delays stay within [0, min(cap, base * 2^attempt)], cover that
 * range (full jitter), and start over after a reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "backoff.h"

static void test_ceiling_doubles_then_caps(void **state)
{
	struct backoff b;
	backoff_init(&b, 100, 30000, 42);
	uint64_t want[] = {100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_int_equal(backoff_ceiling(&b), want[i]);
		backoff_next(&b);
	}
	/* Many failures never overflow past the cap. */
	for (int i = 0; i < 1000; i++)
		assert_true(backoff_next(&b) <= 30000);
	assert_int_equal(backoff_ceiling(&b), 30000);
}

static void test_full_jitter_distribution(void **state)
{
	/* At the cap, 20000 draws from [0, 1000]: all in range, mean near 500,
	 * each tenth of the range hit about equally often. */
	struct backoff b;
	backoff_init(&b, 1000, 1000, 7);
	unsigned buckets[10] = {0};
	uint64_t sum = 0, lo = UINT64_MAX, hi = 0;
	enum { N = 20000 };
	for (int i = 0; i < N; i++) {
		uint64_t d = backoff_next(&b);
		assert_true(d <= 1000);
		sum += d;
		lo = d < lo ? d : lo;
		hi = d > hi ? d : hi;
		buckets[d == 1000 ? 9 : d / 100]++;
	}
	double mean = (double)sum / N;
	assert_true(mean > 480 && mean < 520);
	assert_true(lo < 10);
	assert_true(hi > 990);
	for (int i = 0; i < 10; i++)
		assert_true(buckets[i] > N / 10 * 0.85 && buckets[i] < N / 10 * 1.15);
}

static void test_reset_starts_over(void **state)
{
	struct backoff b;
	backoff_init(&b, 50, 5000, 1);
	for (int i = 0; i < 8; i++)
		backoff_next(&b);
	assert_int_equal(backoff_ceiling(&b), 5000);
	backoff_reset(&b);
	assert_int_equal(backoff_ceiling(&b), 50);
	assert_true(backoff_next(&b) <= 50);
}

static void test_different_seeds_differ(void **state)
{
	/* Agents seeded differently must not reconnect in lockstep. */
	struct backoff a, b;
	backoff_init(&a, 1000, 60000, 1);
	backoff_init(&b, 1000, 60000, 2);
	int same = 0;
	for (int i = 0; i < 20; i++)
		same += backoff_next(&a) == backoff_next(&b);
	assert_true(same < 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ceiling_doubles_then_caps),
		cmocka_unit_test(test_full_jitter_distribution),
		cmocka_unit_test(test_reset_starts_over),
		cmocka_unit_test(test_different_seeds_differ),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
