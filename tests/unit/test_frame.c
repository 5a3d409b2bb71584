/* Framing: frames split across reads, many frames in one read, and every
 * kind of bad length. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frame.h"

static size_t make_frame(uint8_t *out, const char *payload)
{
	size_t n = strlen(payload);
	frame_put_header(out, (uint32_t)n);
	memcpy(out + FRAME_HEADER, payload, n);
	return FRAME_HEADER + n;
}

static void expect_frame(struct frame_reader *fr, const char *want)
{
	const uint8_t *p;
	size_t len;
	assert_int_equal(frame_reader_next(fr, &p, &len), 1);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(p, want, len);
}

static void test_header_is_big_endian(void **state)
{
	uint8_t h[4];
	frame_put_header(h, 0x01020304);
	assert_int_equal(h[0], 1);
	assert_int_equal(h[3], 4);
}

static void test_one_byte_at_a_time(void **state)
{
	struct frame_reader fr;
	frame_reader_init(&fr, 1024);
	uint8_t wire[64];
	size_t n = make_frame(wire, "hello, collector");
	const uint8_t *p;
	size_t len;
	for (size_t i = 0; i < n - 1; i++) {
		assert_int_equal(frame_reader_feed(&fr, wire + i, 1), 1);
		assert_int_equal(frame_reader_next(&fr, &p, &len), 0);
	}
	assert_int_equal(frame_reader_feed(&fr, wire + n - 1, 1), 1);
	expect_frame(&fr, "hello, collector");
	assert_int_equal(frame_reader_next(&fr, &p, &len), 0);
	assert_int_equal(frame_reader_pending(&fr), 0);
	assert_null(fr.buf); /* an empty reader holds no memory */
	frame_reader_free(&fr);
}

static void test_many_frames_in_one_read(void **state)
{
	struct frame_reader fr;
	frame_reader_init(&fr, 1024);
	uint8_t wire[256];
	size_t n = 0;
	n += make_frame(wire + n, "one");
	n += make_frame(wire + n, "two");
	n += make_frame(wire + n, "three");
	/* and half of a fourth */
	size_t fourth = make_frame(wire + n, "four");
	assert_int_equal(frame_reader_feed(&fr, wire, n + fourth / 2), n + fourth / 2);
	expect_frame(&fr, "one");
	expect_frame(&fr, "two");
	expect_frame(&fr, "three");
	const uint8_t *p;
	size_t len;
	assert_int_equal(frame_reader_next(&fr, &p, &len), 0);
	assert_int_equal(frame_reader_pending(&fr), fourth / 2);
	assert_int_equal(frame_reader_feed(&fr, wire + n + fourth / 2, fourth - fourth / 2),
			 fourth - fourth / 2);
	expect_frame(&fr, "four");
	frame_reader_free(&fr);
}

static void test_large_frame_split(void **state)
{
	enum { N = 300000 };
	struct frame_reader fr;
	frame_reader_init(&fr, FRAME_MAX_DEFAULT);
	uint8_t *wire = malloc(FRAME_HEADER + N);
	assert_non_null(wire);
	frame_put_header(wire, N);
	for (size_t i = 0; i < N; i++)
		wire[FRAME_HEADER + i] = (uint8_t)(i * 7);
	size_t off = 0;
	const uint8_t *p;
	size_t len;
	while (off < FRAME_HEADER + N) {
		size_t chunk = 4093;
		if (chunk > FRAME_HEADER + N - off)
			chunk = FRAME_HEADER + N - off;
		assert_int_equal(frame_reader_feed(&fr, wire + off, chunk), chunk);
		off += chunk;
		if (off < FRAME_HEADER + N)
			assert_int_equal(frame_reader_next(&fr, &p, &len), 0);
	}
	assert_int_equal(frame_reader_next(&fr, &p, &len), 1);
	assert_int_equal(len, N);
	assert_memory_equal(p, wire + FRAME_HEADER, N);
	/* It grew to the frame it carried, not beyond. */
	assert_true(fr.cap <= FRAME_HEADER + N + 16384);
	free(wire);
	frame_reader_free(&fr);
}

static void test_zero_length_is_an_error(void **state)
{
	struct frame_reader fr;
	frame_reader_init(&fr, 1024);
	uint8_t wire[4] = {0, 0, 0, 0};
	frame_reader_feed(&fr, wire, 4);
	const uint8_t *p;
	size_t len;
	assert_int_equal(frame_reader_next(&fr, &p, &len), FRAME_ERR_EMPTY);
	assert_string_equal(frame_strerror(FRAME_ERR_EMPTY), "frame of length 0");
	frame_reader_free(&fr);
}

static void test_oversize_allocates_nothing(void **state)
{
	struct frame_reader fr;
	frame_reader_init(&fr, 1024);
	uint8_t wire[4];
	frame_put_header(wire, 0xfffffff0u);
	assert_int_equal(frame_reader_feed(&fr, wire, 4), 4);
	size_t cap_before = fr.cap;
	const uint8_t *p;
	size_t len;
	assert_int_equal(frame_reader_next(&fr, &p, &len), FRAME_ERR_OVERSIZE);
	assert_int_equal(fr.bad_length, 0xfffffff0u);
	/* Asking for room to read the rest is refused too, without growing. */
	uint8_t *space;
	size_t avail;
	assert_int_equal(frame_reader_space(&fr, &space, &avail), FRAME_ERR_OVERSIZE);
	assert_int_equal(fr.cap, cap_before);
	assert_true(fr.cap <= 16384);
	frame_reader_free(&fr);
}

static void test_limit_is_inclusive(void **state)
{
	struct frame_reader fr;
	frame_reader_init(&fr, 8);
	uint8_t wire[32];
	size_t n = make_frame(wire, "12345678");
	frame_reader_feed(&fr, wire, n);
	expect_frame(&fr, "12345678");
	n = make_frame(wire, "123456789");
	/* The bad length is seen as soon as its header is in. */
	assert_int_equal(frame_reader_feed(&fr, wire, n), FRAME_ERR_OVERSIZE);
	const uint8_t *p;
	size_t len;
	assert_int_equal(frame_reader_next(&fr, &p, &len), FRAME_ERR_OVERSIZE);
	frame_reader_free(&fr);
}

static void test_truncated_stream_reports_pending(void **state)
{
	struct frame_reader fr;
	frame_reader_init(&fr, 1024);
	uint8_t wire[64];
	size_t n = make_frame(wire, "cut short");
	frame_reader_feed(&fr, wire, n - 3);
	const uint8_t *p;
	size_t len;
	assert_int_equal(frame_reader_next(&fr, &p, &len), 0);
	/* The owner sees these at end of stream and reports a truncation. */
	assert_int_equal(frame_reader_pending(&fr), n - 3);
	frame_reader_free(&fr);
}

static void test_feed_stops_when_full_of_frames(void **state)
{
	/* Whole frames must be taken before more bytes fit; feed says how many
	 * it took instead of growing without bound. */
	struct frame_reader fr;
	frame_reader_init(&fr, 16);
	uint8_t wire[20 * 1024];
	size_t n = 0;
	while (n + 20 <= sizeof(wire))
		n += make_frame(wire + n, "sixteen bytes!!!");
	long taken = frame_reader_feed(&fr, wire, n);
	assert_true(taken > 0 && (size_t)taken < n);
	/* Taking frames makes room for the rest. */
	const uint8_t *p;
	size_t len, off = (size_t)taken, frames = 0;
	for (;;) {
		while (frame_reader_next(&fr, &p, &len) == 1) {
			assert_int_equal(len, 16);
			frames++;
		}
		if (off == n)
			break;
		taken = frame_reader_feed(&fr, wire + off, n - off);
		assert_true(taken > 0);
		off += (size_t)taken;
	}
	assert_int_equal(frames, n / 20);
	/* Never more than one frame and read-ahead, bounded by the limit. */
	assert_true(fr.cap <= 20);
	frame_reader_free(&fr);
}

static void test_space_and_commit(void **state)
{
	struct frame_reader fr;
	frame_reader_init(&fr, 1024);
	uint8_t wire[64];
	size_t n = make_frame(wire, "direct");
	uint8_t *space;
	size_t avail;
	assert_int_equal(frame_reader_space(&fr, &space, &avail), 0);
	assert_true(avail >= n);
	memcpy(space, wire, n);
	frame_reader_commit(&fr, n);
	expect_frame(&fr, "direct");
	frame_reader_free(&fr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_is_big_endian),
		cmocka_unit_test(test_one_byte_at_a_time),
		cmocka_unit_test(test_many_frames_in_one_read),
		cmocka_unit_test(test_large_frame_split),
		cmocka_unit_test(test_zero_length_is_an_error),
		cmocka_unit_test(test_oversize_allocates_nothing),
		cmocka_unit_test(test_limit_is_inclusive),
		cmocka_unit_test(test_truncated_stream_reports_pending),
		cmocka_unit_test(test_feed_stops_when_full_of_frames),
		cmocka_unit_test(test_space_and_commit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
