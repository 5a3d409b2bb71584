/* The spool: what the agent relies on across appends, acks, restarts, torn
 * writes, damaged files and a full disk budget, tested through spool.h and
 * the files it documents. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "log.h"
#include "spool.h"
#include "testutil.h"
#include "util.h"

#define SEG_NAME_LEN 28

static char tmp_root[1024];
static int dir_counter;

static int make_tmp_root(void **state)
{
	return test_tmpdir("test_spool", tmp_root, sizeof(tmp_root));
}


static int remove_tmp_root(void **state)
{
	if (tmp_root[0])
		test_rmtree(tmp_root);
	return 0;
}

/* A fresh spool directory name for one test (not created: spool_open does). */
static void new_dir(char *dir, size_t len)
{
	snprintf(dir, len, "%s/spool%d", tmp_root, ++dir_counter);
}

static struct spool *open_spool(const char *dir, uint64_t max_bytes, uint64_t segment_bytes,
				enum spool_sync sync)
{
	struct spool_options o = {.dir = dir, .max_bytes = max_bytes,
				  .segment_bytes = segment_bytes, .sync = sync};
	struct spool *sp = NULL;
	char err[512] = "";
	int rc = spool_open(&sp, &o, err, sizeof(err));
	if (rc != 0)
		fail_msg("spool_open %s: %s", dir, err);
	return sp;
}

/* Payloads carry their own sequence, so a replayed record proves it is the
 * one that was appended. */
static void fill_payload(uint8_t *p, size_t len, uint64_t seq)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seq * 31 + i * 7);
	if (len >= 8)
		for (int i = 0; i < 8; i++)
			p[i] = (uint8_t)(seq >> (8 * i));
}

static int payload_ok(const struct spool_record *rec, size_t len)
{
	uint8_t want[4096];
	if (rec->len != len || len > sizeof(want))
		return 0;
	fill_payload(want, len, rec->seq);
	return memcmp(want, rec->payload, len) == 0;
}

static uint64_t append(struct spool *sp, enum spool_kind kind, size_t len, const char *state)
{
	uint8_t buf[4096];
	char err[512] = "";
	uint64_t seq = 0, next = spool_next_sequence(sp);
	assert_true(len <= sizeof(buf));
	fill_payload(buf, len, next);
	int rc = spool_append(sp, kind, buf, len, state, &seq, err, sizeof(err));
	if (rc != 0)
		fail_msg("spool_append: %s (%s)", uv_strerror(rc), err);
	assert_int_equal(seq, next);
	return seq;
}

/* Every record after `after`: their sequences into seqs (ascending, checked),
 * payloads checked against len (0: any). */
static size_t collect(struct spool *sp, uint64_t after, uint64_t *seqs, size_t max, size_t len)
{
	struct spool_iter it;
	struct spool_record rec;
	size_t n = 0;
	uint64_t prev = 0;
	int rc;
	assert_int_equal(spool_iter_init(sp, &it, after), 0);
	while ((rc = spool_iter_next(&it, &rec)) == 1) {
		assert_true(rec.seq > after);
		assert_true(rec.seq > prev);
		if (len)
			assert_true(payload_ok(&rec, len));
		prev = rec.seq;
		if (seqs && n < max)
			seqs[n] = rec.seq;
		n++;
	}
	assert_int_equal(rc, 0);
	spool_iter_close(&it);
	return n;
}

/* Segment file names, sorted: names[i] is "seg-<20 digits>.log". */
static size_t seg_files(const char *dir, char names[][SEG_NAME_LEN + 1], size_t max)
{
	uv_fs_t req;
	uv_dirent_t ent;
	size_t n = 0;
	assert_true(uv_fs_scandir(NULL, &req, dir, 0, NULL) >= 0);
	while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
		if (strncmp(ent.name, "seg-", 4) != 0 || strlen(ent.name) != SEG_NAME_LEN)
			continue;
		assert_true(n < max);
		snprintf(names[n++], SEG_NAME_LEN + 1, "%s", ent.name);
	}
	uv_fs_req_cleanup(&req);
	qsort(names, n, SEG_NAME_LEN + 1, (int (*)(const void *, const void *))strcmp);
	return n;
}

static uint64_t file_size(const char *path)
{
	uv_fs_t req;
	assert_int_equal(uv_fs_stat(NULL, &req, path, NULL), 0);
	uint64_t size = req.statbuf.st_size;
	uv_fs_req_cleanup(&req);
	return size;
}

static void truncate_file(const char *path, uint64_t size)
{
	uv_fs_t req;
	int fd = uv_fs_open(NULL, &req, path, UV_FS_O_WRONLY, 0, NULL);
	uv_fs_req_cleanup(&req);
	assert_true(fd >= 0);
	assert_int_equal(uv_fs_ftruncate(NULL, &req, fd, (int64_t)size, NULL), 0);
	uv_fs_req_cleanup(&req);
	uv_fs_close(NULL, &req, fd, NULL);
	uv_fs_req_cleanup(&req);
}

static void patch_file(const char *path, uint64_t off, const void *data, size_t len)
{
	uv_fs_t req;
	int fd = uv_fs_open(NULL, &req, path, UV_FS_O_WRONLY, 0, NULL);
	uv_fs_req_cleanup(&req);
	assert_true(fd >= 0);
	uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
	assert_int_equal(uv_fs_write(NULL, &req, fd, &b, 1, (int64_t)off, NULL), (int)len);
	uv_fs_req_cleanup(&req);
	uv_fs_close(NULL, &req, fd, NULL);
	uv_fs_req_cleanup(&req);
}

static void flip_byte(const char *path, uint64_t off)
{
	char *data;
	size_t len;
	char err[512];
	assert_int_equal(util_read_file(path, 64 << 20, &data, &len, err, sizeof(err)), 0);
	assert_true(off < len);
	uint8_t b = (uint8_t)(data[off] ^ 0x5a);
	free(data);
	patch_file(path, off, &b, 1);
}

static void write_file(const char *path, const void *data, size_t len)
{
	char err[512];
	assert_int_equal(util_write_file_atomic(path, data, len, 0600, err, sizeof(err)), 0);
}

static void remove_file(const char *path)
{
	uv_fs_t req;
	assert_int_equal(uv_fs_unlink(NULL, &req, path, NULL), 0);
	uv_fs_req_cleanup(&req);
}

static int file_exists(const char *path)
{
	uv_fs_t req;
	int rc = uv_fs_stat(NULL, &req, path, NULL);
	uv_fs_req_cleanup(&req);
	return rc == 0;
}

/* Log lines a test produced, captured in a temporary file. */
static FILE *log_capture;

static void capture_logs(void)
{
	log_capture = tmpfile();
	assert_non_null(log_capture);
	log_init(log_capture, LOG_WARN);
}

static char *captured_logs(void)
{
	long len;
	fflush(log_capture);
	len = ftell(log_capture);
	char *text = calloc(1, (size_t)len + 1);
	assert_non_null(text);
	rewind(log_capture);
	assert_int_equal(fread(text, 1, (size_t)len, log_capture), (size_t)len);
	fclose(log_capture);
	log_capture = NULL;
	log_init(NULL, LOG_WARN);
	return text;
}

static size_t count_lines_with(const char *text, const char *needle)
{
	size_t n = 0;
	for (const char *line = text; *line;) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char buf[2048];
		snprintf(buf, sizeof(buf), "%.*s", (int)len, line);
		if (strstr(buf, needle))
			n++;
		line += len + (end ? 1 : 0);
	}
	return n;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_append_ack_replay(void **state)
{
	char dir[1100], err[512];
	uint64_t seqs[32];
	new_dir(dir, sizeof(dir));
	struct spool *sp = open_spool(dir, 0, 0, SPOOL_SYNC_NONE);
	assert_int_equal(spool_next_sequence(sp), 1);
	assert_int_equal(spool_highest(sp), 0);
	assert_int_equal(spool_lowest_unacked(sp), 0);
	assert_string_equal(spool_state(sp), "");
	for (uint64_t i = 1; i <= 10; i++)
		assert_int_equal(append(sp, i == 1 ? SPOOL_SNAPSHOT : SPOOL_EVENT, 100, NULL), i);
	assert_int_equal(spool_highest(sp), 10);
	assert_int_equal(spool_next_sequence(sp), 11);
	assert_int_equal(spool_records(sp), 10);
	assert_int_equal(spool_lowest_unacked(sp), 1);
	assert_true(spool_bytes(sp) >= 10 * 100);

	struct spool_iter it;
	struct spool_record rec;
	assert_int_equal(spool_iter_init(sp, &it, 0), 0);
	assert_int_equal(spool_iter_next(&it, &rec), 1);
	assert_int_equal(rec.seq, 1);
	assert_int_equal(rec.kind, SPOOL_SNAPSHOT);
	assert_true(payload_ok(&rec, 100));
	assert_int_equal(spool_iter_next(&it, &rec), 1);
	assert_int_equal(rec.seq, 2);
	assert_int_equal(rec.kind, SPOOL_EVENT);
	spool_iter_close(&it);
	assert_int_equal(collect(sp, 0, seqs, 32, 100), 10);
	assert_int_equal(collect(sp, 7, seqs, 32, 100), 3);
	assert_int_equal(seqs[0], 8);

	assert_int_equal(spool_ack(sp, 4, err, sizeof(err)), 0);
	assert_int_equal(spool_acked(sp), 4);
	assert_int_equal(spool_records(sp), 6);
	assert_int_equal(spool_lowest_unacked(sp), 5);
	/* Acknowledged records are not replayed, whatever the caller asks for. */
	assert_int_equal(collect(sp, 0, seqs, 32, 100), 6);
	assert_int_equal(seqs[0], 5);
	/* Old and repeated acks change nothing. */
	assert_int_equal(spool_ack(sp, 4, err, sizeof(err)), 0);
	assert_int_equal(spool_ack(sp, 2, err, sizeof(err)), 0);
	assert_int_equal(spool_acked(sp), 4);
	/* An ack for a sequence never handed out is the collector's bug. */
	err[0] = '\0';
	assert_int_equal(spool_ack(sp, 11, err, sizeof(err)), UV_EINVAL);
	assert_non_null(strstr(err, "above the highest"));
	assert_non_null(strstr(err, dir));
	assert_int_equal(spool_acked(sp), 4);
	assert_int_equal(spool_ack(sp, 10, err, sizeof(err)), 0);
	assert_int_equal(spool_records(sp), 0);
	assert_int_equal(spool_lowest_unacked(sp), 0);
	assert_int_equal(collect(sp, 0, NULL, 0, 0), 0);
	spool_close(sp);
}

static void test_sequences_never_reused(void **state)
{
	char dir[1100], err[512], path[1200];
	char names[64][SEG_NAME_LEN + 1];
	new_dir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/spool.meta", dir);

	struct spool *sp = open_spool(dir, 0, 4096, SPOOL_SYNC_BATCH);
	for (int i = 0; i < 100; i++)
		append(sp, SPOOL_EVENT, 200, NULL);
	assert_true(spool_segments(sp) > 3);
	assert_int_equal(spool_sync(sp, err, sizeof(err)), 0);
	assert_int_equal(spool_ack(sp, 100, err, sizeof(err)), 0);
	/* Everything acknowledged: only the segment taking appends is left. */
	assert_int_equal(spool_segments(sp), 1);
	spool_close(sp);

	sp = open_spool(dir, 0, 4096, SPOOL_SYNC_BATCH);
	assert_int_equal(spool_records(sp), 0);
	assert_int_equal(spool_next_sequence(sp), 101);
	assert_int_equal(append(sp, SPOOL_EVENT, 200, NULL), 101);
	spool_close(sp);

	/* Without the meta file the segments still tell the high-water mark. */
	assert_true(file_exists(path));
	remove_file(path);
	sp = open_spool(dir, 0, 4096, SPOOL_SYNC_BATCH);
	assert_int_equal(spool_next_sequence(sp), 102);
	assert_int_equal(spool_ack(sp, 101, err, sizeof(err)), 0);
	spool_close(sp);

	/* All segment files gone, meta left: a new empty segment is named for
	 * the next sequence... */
	size_t n = seg_files(dir, names, 64);
	for (size_t i = 0; i < n; i++) {
		char seg[1200];
		snprintf(seg, sizeof(seg), "%s/%s", dir, names[i]);
		remove_file(seg);
	}
	sp = open_spool(dir, 0, 4096, SPOOL_SYNC_BATCH);
	assert_int_equal(spool_next_sequence(sp), 102);
	spool_close(sp);
	assert_int_equal(seg_files(dir, names, 64), 1);
	assert_string_equal(names[0], "seg-00000000000000000102.log");
	/* ...so losing the meta file then still reuses nothing. */
	remove_file(path);
	sp = open_spool(dir, 0, 4096, SPOOL_SYNC_BATCH);
	assert_int_equal(spool_next_sequence(sp), 102);
	assert_int_equal(append(sp, SPOOL_RESULT, 10, NULL), 102);
	spool_close(sp);
}

static void test_restart_keeps_unacked_and_state(void **state)
{
	char dir[1100], err[512];
	uint64_t seqs[64];
	new_dir(dir, sizeof(dir));
	struct spool *sp = open_spool(dir, 0, 4096, SPOOL_SYNC_BATCH);
	for (int i = 1; i <= 40; i++) {
		char cursor[32];
		snprintf(cursor, sizeof(cursor), "eventlog:%d", i * 10);
		/* Only every tenth append moves the cursor; the others carry none. */
		append(sp, SPOOL_EVENT, 200, i % 10 == 3 ? cursor : NULL);
	}
	assert_string_equal(spool_state(sp), "eventlog:330");
	assert_int_equal(spool_sync(sp, err, sizeof(err)), 0);
	assert_int_equal(spool_ack(sp, 12, err, sizeof(err)), 0);
	spool_close(sp);

	sp = open_spool(dir, 0, 4096, SPOOL_SYNC_BATCH);
	assert_int_equal(spool_acked(sp), 12);
	assert_int_equal(spool_records(sp), 28);
	assert_int_equal(spool_lowest_unacked(sp), 13);
	assert_string_equal(spool_state(sp), "eventlog:330");
	/* The acked position is kept even inside a partly acknowledged segment. */
	assert_int_equal(collect(sp, 0, seqs, 64, 200), 28);
	assert_int_equal(seqs[0], 13);
	assert_int_equal(seqs[27], 40);

	/* The state outlives the records that carried it. */
	assert_int_equal(spool_ack(sp, 40, err, sizeof(err)), 0);
	assert_string_equal(spool_state(sp), "eventlog:330");
	spool_close(sp);
	sp = open_spool(dir, 0, 4096, SPOOL_SYNC_BATCH);
	assert_string_equal(spool_state(sp), "eventlog:330");
	assert_int_equal(spool_records(sp), 0);
	append(sp, SPOOL_EVENT, 10, "eventlog:999");
	spool_close(sp);
	sp = open_spool(dir, 0, 4096, SPOOL_SYNC_BATCH);
	assert_string_equal(spool_state(sp), "eventlog:999");
	spool_close(sp);
}

/* After a cut the spool keeps working: appends continue, nothing reappears. */
static void check_after_cut(const char *dir, uint64_t kept, uint64_t highest)
{
	uint64_t seqs[64];
	struct spool *sp = open_spool(dir, 0, 0, SPOOL_SYNC_BATCH);
	assert_int_equal(spool_torn(sp), 1);
	assert_int_equal(spool_lost(sp), 0);
	assert_int_equal(spool_records(sp), kept);
	assert_int_equal(collect(sp, 0, seqs, 64, 100), kept);
	for (uint64_t i = 0; i < kept; i++)
		assert_int_equal(seqs[i], i + 1);
	assert_int_equal(spool_highest(sp), highest);
	uint64_t seq = append(sp, SPOOL_EVENT, 100, NULL);
	assert_true(seq > highest);
	spool_close(sp);

	sp = open_spool(dir, 0, 0, SPOOL_SYNC_BATCH);
	assert_int_equal(spool_torn(sp), 1); /* counted once, persisted */
	assert_int_equal(collect(sp, 0, seqs, 64, 100), kept + 1);
	assert_int_equal(seqs[kept], seq);
	spool_close(sp);
}

static void test_torn_tail_cut(void **state)
{
	char dir[1100], path[1200];
	char names[8][SEG_NAME_LEN + 1];
	new_dir(dir, sizeof(dir));
	struct spool *sp = open_spool(dir, 0, 0, SPOOL_SYNC_BATCH);
	for (int i = 0; i < 10; i++)
		append(sp, SPOOL_EVENT, 100, NULL);
	spool_close(sp);
	assert_int_equal(seg_files(dir, names, 8), 1);
	snprintf(path, sizeof(path), "%s/%s", dir, names[0]);
	uint64_t size = file_size(path);
	uint64_t record = size / 10;
	/* The last record half written, as after a power cut. */
	truncate_file(path, size - 50);

	capture_logs();
	sp = open_spool(dir, 0, 0, SPOOL_SYNC_BATCH);
	spool_close(sp);
	char *logs = captured_logs();
	char want[1400];
	snprintf(want, sizeof(want), "spool: cut a torn record at %s offset %llu (%llu bytes)",
		 path, (unsigned long long)(size - record), (unsigned long long)(record - 50));
	assert_non_null(strstr(logs, want));
	free(logs);
	assert_int_equal(file_size(path), size - record);
	/* The meta file remembers 10 was handed out, so it is not handed out again. */
	check_after_cut(dir, 9, 10);
}

static void test_torn_tail_flipped_bytes(void **state)
{
	char dir[1100], path[1200];
	char names[8][SEG_NAME_LEN + 1];

	/* A payload byte of the last record. */
	new_dir(dir, sizeof(dir));
	struct spool *sp = open_spool(dir, 0, 0, SPOOL_SYNC_NONE);
	for (int i = 0; i < 10; i++)
		append(sp, SPOOL_EVENT, 100, NULL);
	spool_close(sp);
	assert_int_equal(seg_files(dir, names, 8), 1);
	snprintf(path, sizeof(path), "%s/%s", dir, names[0]);
	flip_byte(path, file_size(path) - 10);
	check_after_cut(dir, 9, 10);

	/* A header byte (the length) of the last record, meta file gone too: the
	 * high-water mark is then what the segment proves. */
	new_dir(dir, sizeof(dir));
	sp = open_spool(dir, 0, 0, SPOOL_SYNC_NONE);
	for (int i = 0; i < 10; i++)
		append(sp, SPOOL_EVENT, 100, NULL);
	spool_close(sp);
	assert_int_equal(seg_files(dir, names, 8), 1);
	snprintf(path, sizeof(path), "%s/%s", dir, names[0]);
	flip_byte(path, file_size(path) / 10 * 9 + 9);
	snprintf(path, sizeof(path), "%s/spool.meta", dir);
	remove_file(path);
	check_after_cut(dir, 9, 9);
}

static void test_damaged_middle_segment(void **state)
{
	char dir[1100], path[1200];
	char names[64][SEG_NAME_LEN + 1];
	uint64_t seqs[128];
	new_dir(dir, sizeof(dir));
	struct spool *sp = open_spool(dir, 0, 4096, SPOOL_SYNC_NONE);
	for (int i = 0; i < 100; i++)
		append(sp, SPOOL_EVENT, 200, NULL);
	spool_close(sp);
	size_t n = seg_files(dir, names, 64);
	assert_true(n >= 5);

	/* Bit rot in the middle of the second segment: one record lost, not the
	 * rest of the segment, nor any other segment. */
	snprintf(path, sizeof(path), "%s/%s", dir, names[1]);
	uint64_t first = strtoull(names[1] + 4, NULL, 10);
	uint64_t next_first = strtoull(names[2] + 4, NULL, 10);
	flip_byte(path, file_size(path) / 2);
	capture_logs();
	sp = open_spool(dir, 0, 4096, SPOOL_SYNC_NONE);
	char *logs = captured_logs();
	assert_non_null(strstr(logs, path));
	assert_non_null(strstr(logs, "1 record lost"));
	free(logs);
	assert_int_equal(spool_lost(sp), 1);
	assert_int_equal(spool_torn(sp), 0);
	assert_int_equal(spool_records(sp), 99);
	assert_int_equal(collect(sp, 0, seqs, 128, 200), 99);
	uint64_t missing = 0;
	for (uint64_t i = 0, want = 1; i < 99; i++, want++) {
		if (seqs[i] != want) {
			assert_int_equal(missing, 0);
			missing = want++;
			assert_int_equal(seqs[i], want);
		}
	}
	if (!missing)
		missing = 100;
	assert_true(missing >= first && missing < next_first);
	assert_int_equal(append(sp, SPOOL_EVENT, 200, NULL), 101);
	spool_close(sp);

	/* The damage is rewritten away: counted once. */
	sp = open_spool(dir, 0, 4096, SPOOL_SYNC_NONE);
	assert_int_equal(spool_lost(sp), 1);
	assert_int_equal(spool_records(sp), 100);
	spool_close(sp);

	/* The second half of an older segment zeroed: what follows it is kept. */
	n = seg_files(dir, names, 64);
	snprintf(path, sizeof(path), "%s/%s", dir, names[2]);
	uint64_t size = file_size(path);
	uint8_t zeros[4096] = {0};
	patch_file(path, size / 2, zeros, (size_t)(size - size / 2));
	next_first = strtoull(names[3] + 4, NULL, 10);
	capture_logs();
	sp = open_spool(dir, 0, 4096, SPOOL_SYNC_NONE);
	logs = captured_logs();
	/* Never rewritten, the segment's loss is exact: its last 9 records. */
	assert_non_null(strstr(logs, "9 records lost"));
	free(logs);
	assert_int_equal(spool_lost(sp), 1 + 9);
	size_t got = collect(sp, 0, seqs, 128, 200);
	assert_int_equal(got, 100 - 9);
	/* Everything from the next segment on is there. */
	assert_int_equal(seqs[got - 1], 101);
	size_t from = 0;
	while (seqs[from] < next_first)
		from++;
	assert_int_equal(got - from, 101 - next_first + 1);
	spool_close(sp);
}

static void test_full_drops_oldest_events(void **state)
{
	char dir[1100], err[512];
	static uint64_t seqs[1024];
	new_dir(dir, sizeof(dir));
	const uint64_t max = 64 * 1024;
	struct spool *sp = open_spool(dir, max, 8192, SPOOL_SYNC_NONE);
	uint64_t snap = append(sp, SPOOL_SNAPSHOT, 200, NULL);
	uint64_t result = append(sp, SPOOL_RESULT, 200, NULL);

	/* An iterator open while drops rewrite and remove segments under it. */
	struct spool_iter it;
	struct spool_record rec;
	assert_int_equal(spool_iter_init(sp, &it, 0), 0);
	assert_int_equal(spool_iter_next(&it, &rec), 1);
	assert_int_equal(rec.seq, snap);

	capture_logs();
	for (int i = 0; i < 600; i++) {
		append(sp, SPOOL_EVENT, 200, NULL);
		assert_true(spool_bytes(sp) <= max);
	}
	char *logs = captured_logs();
	uint64_t dropped = spool_dropped(sp);
	assert_true(dropped > 300);
	/* One line per append that had to drop, a segment's worth at a time. */
	size_t lines = count_lines_with(logs, "dropped");
	assert_true(lines >= 1);
	assert_true(lines * 10 <= dropped);
	assert_non_null(strstr(logs, dir));
	free(logs);

	/* The snapshot and the result stay; the events left are the newest. */
	size_t n = collect(sp, 0, seqs, 1024, 200);
	assert_int_equal(n, 602 - dropped);
	assert_int_equal(spool_records(sp), n);
	assert_int_equal(seqs[0], snap);
	assert_int_equal(seqs[1], result);
	for (size_t i = 2; i < n; i++)
		assert_int_equal(seqs[i], seqs[i - 1] + (i == 2 ? dropped + 1 : 1));
	assert_int_equal(seqs[n - 1], 602);

	/* The iterator carries on: no duplicates, nothing that was dropped. */
	uint64_t prev = snap;
	size_t seen = 0;
	while (spool_iter_next(&it, &rec) == 1) {
		assert_true(rec.seq > prev);
		assert_true(payload_ok(&rec, 200));
		assert_true(rec.seq == result || rec.seq > dropped + 2);
		prev = rec.seq;
		seen++;
	}
	assert_int_equal(seen, n - 1);
	spool_iter_close(&it);
	spool_close(sp);

	/* The count and the survivors persist. */
	sp = open_spool(dir, max, 8192, SPOOL_SYNC_NONE);
	assert_int_equal(spool_dropped(sp), dropped);
	assert_int_equal(collect(sp, 0, NULL, 0, 200), n);

	/* A newer snapshot supersedes the first, which may then go like events. */
	uint64_t snap2 = append(sp, SPOOL_SNAPSHOT, 200, NULL);
	for (int i = 0; i < 400; i++)
		append(sp, SPOOL_EVENT, 200, NULL);
	n = collect(sp, 0, seqs, 1024, 200);
	assert_int_equal(seqs[0], result);
	assert_int_equal(seqs[1], snap2);
	assert_true(seqs[2] > snap2 + 1);
	assert_true(spool_dropped(sp) > dropped);
	assert_int_equal(spool_ack(sp, spool_highest(sp), err, sizeof(err)), 0);
	spool_close(sp);
}

static void test_full_of_undroppable_is_enospc(void **state)
{
	char dir[1100], err[512];
	uint8_t payload[1000];
	uint64_t seqs[64];
	new_dir(dir, sizeof(dir));
	const uint64_t max = 16 * 1024;
	struct spool *sp = open_spool(dir, max, 4096, SPOOL_SYNC_NONE);
	uint64_t snap = append(sp, SPOOL_SNAPSHOT, 1000, NULL);
	uint64_t results = 0;
	int rc;
	for (;;) {
		fill_payload(payload, sizeof(payload), spool_next_sequence(sp));
		err[0] = '\0';
		rc = spool_append(sp, SPOOL_RESULT, payload, sizeof(payload), NULL, NULL, err,
				  sizeof(err));
		if (rc != 0)
			break;
		results++;
	}
	assert_int_equal(rc, UV_ENOSPC);
	assert_non_null(strstr(err, dir));
	assert_non_null(strstr(err, "full"));
	assert_true(results >= 10);
	/* Events cannot get in either, and nothing was dropped for trying. */
	rc = spool_append(sp, SPOOL_EVENT, payload, sizeof(payload), NULL, NULL, err, sizeof(err));
	assert_int_equal(rc, UV_ENOSPC);
	assert_int_equal(spool_dropped(sp), 0);
	assert_int_equal(collect(sp, 0, seqs, 64, 0), results + 1);
	assert_int_equal(seqs[0], snap);

	/* A new snapshot replaces the latest one. */
	uint64_t snap2 = append(sp, SPOOL_SNAPSHOT, 1000, NULL);
	assert_int_equal(spool_dropped(sp), 1);
	assert_int_equal(collect(sp, 0, seqs, 64, 1000), results + 1);
	assert_int_equal(seqs[0], snap + 1);
	assert_int_equal(seqs[results], snap2);

	/* Acknowledgements make room. */
	assert_int_equal(spool_ack(sp, snap + 3, err, sizeof(err)), 0);
	append(sp, SPOOL_RESULT, 1000, NULL);
	append(sp, SPOOL_EVENT, 1000, NULL);
	assert_int_equal(spool_dropped(sp), 1);
	assert_true(spool_bytes(sp) <= max);
	spool_close(sp);
}

static void test_iterator_with_appends_and_acks(void **state)
{
	char dir[1100], err[512];
	struct spool_iter it, it2;
	struct spool_record rec;
	new_dir(dir, sizeof(dir));
	struct spool *sp = open_spool(dir, 0, 4096, SPOOL_SYNC_NONE);
	for (int i = 0; i < 50; i++)
		append(sp, SPOOL_EVENT, 200, NULL);
	assert_int_equal(spool_iter_init(sp, &it, 0), 0);
	for (uint64_t want = 1; want <= 10; want++) {
		assert_int_equal(spool_iter_next(&it, &rec), 1);
		assert_int_equal(rec.seq, want);
	}
	/* Appends during a replay are seen in order. */
	for (int i = 0; i < 50; i++)
		append(sp, SPOOL_EVENT, 200, NULL);
	for (uint64_t want = 11; want <= 100; want++) {
		assert_int_equal(spool_iter_next(&it, &rec), 1);
		assert_int_equal(rec.seq, want);
		assert_true(payload_ok(&rec, 200));
	}
	assert_int_equal(spool_iter_next(&it, &rec), 0);
	/* At the end, a later append still comes out of the same iterator. */
	append(sp, SPOOL_RESULT, 200, NULL);
	assert_int_equal(spool_iter_next(&it, &rec), 1);
	assert_int_equal(rec.seq, 101);
	assert_int_equal(rec.kind, SPOOL_RESULT);
	assert_int_equal(spool_iter_next(&it, &rec), 0);
	spool_iter_close(&it);

	/* Acks remove the segment an iterator is reading: it skips forward. */
	assert_int_equal(spool_iter_init(sp, &it2, 0), 0);
	for (uint64_t want = 1; want <= 5; want++) {
		assert_int_equal(spool_iter_next(&it2, &rec), 1);
		assert_int_equal(rec.seq, want);
	}
	size_t before = spool_segments(sp);
	assert_int_equal(spool_ack(sp, 60, err, sizeof(err)), 0);
	assert_true(spool_segments(sp) < before);
	for (uint64_t want = 61; want <= 101; want++) {
		assert_int_equal(spool_iter_next(&it2, &rec), 1);
		assert_int_equal(rec.seq, want);
		assert_true(payload_ok(&rec, 200));
	}
	assert_int_equal(spool_iter_next(&it2, &rec), 0);

	/* Closing the spool first leaves the iterator safe to close. */
	spool_close(sp);
	assert_int_equal(spool_iter_next(&it2, &rec), UV_EBADF);
	spool_iter_close(&it2);
}

static void test_limits(void **state)
{
	char dir[1100], err[512];
	char state_text[SPOOL_MAX_STATE + 2];
	new_dir(dir, sizeof(dir));
	struct spool *sp = open_spool(dir, 0, 0, SPOOL_SYNC_NONE);
	uint8_t *big = malloc(SPOOL_MAX_PAYLOAD + 1);
	assert_non_null(big);
	for (size_t i = 0; i < SPOOL_MAX_PAYLOAD + 1; i++)
		big[i] = (uint8_t)(i * 13);
	err[0] = '\0';
	assert_int_equal(spool_append(sp, SPOOL_EVENT, big, SPOOL_MAX_PAYLOAD + 1, NULL, NULL, err,
				      sizeof(err)),
			 UV_E2BIG);
	assert_non_null(strstr(err, "larger than"));
	assert_int_equal(spool_next_sequence(sp), 1);
	assert_int_equal(spool_append(sp, SPOOL_SNAPSHOT, big, SPOOL_MAX_PAYLOAD, NULL, NULL, err,
				      sizeof(err)),
			 0);
	memset(state_text, 'x', sizeof(state_text) - 1);
	state_text[sizeof(state_text) - 1] = '\0';
	assert_int_equal(spool_append(sp, SPOOL_EVENT, big, 10, state_text, NULL, err, sizeof(err)),
			 UV_EINVAL);
	state_text[SPOOL_MAX_STATE] = '\0';
	assert_int_equal(spool_append(sp, SPOOL_EVENT, big, 10, state_text, NULL, err, sizeof(err)),
			 0);
	assert_string_equal(spool_state(sp), state_text);
	assert_int_equal(spool_append(sp, (enum spool_kind)9, big, 10, NULL, NULL, err, sizeof(err)),
			 UV_EINVAL);
	/* An empty payload is a record too. */
	assert_int_equal(spool_append(sp, SPOOL_EVENT, NULL, 0, NULL, NULL, err, sizeof(err)), 0);
	spool_close(sp);

	sp = open_spool(dir, 0, 0, SPOOL_SYNC_NONE);
	struct spool_iter it;
	struct spool_record rec;
	assert_int_equal(spool_iter_init(sp, &it, 0), 0);
	assert_int_equal(spool_iter_next(&it, &rec), 1);
	assert_int_equal(rec.len, SPOOL_MAX_PAYLOAD);
	assert_memory_equal(rec.payload, big, SPOOL_MAX_PAYLOAD);
	assert_int_equal(spool_iter_next(&it, &rec), 1);
	assert_int_equal(rec.len, 10);
	assert_int_equal(spool_iter_next(&it, &rec), 1);
	assert_int_equal(rec.len, 0);
	assert_int_equal(spool_iter_next(&it, &rec), 0);
	spool_iter_close(&it);
	assert_string_equal(spool_state(sp), state_text);
	spool_close(sp);
	free(big);

	/* A record larger than the whole spool can never fit. */
	new_dir(dir, sizeof(dir));
	sp = open_spool(dir, 8192, 4096, SPOOL_SYNC_NONE);
	uint8_t mid[9000] = {0};
	assert_int_equal(spool_append(sp, SPOOL_RESULT, mid, sizeof(mid), NULL, NULL, err,
				      sizeof(err)),
			 UV_ENOSPC);
	spool_close(sp);

	struct spool_options o = {.dir = dir, .segment_bytes = 100};
	struct spool *bad = NULL;
	assert_int_equal(spool_open(&bad, &o, err, sizeof(err)), UV_EINVAL);
	assert_null(bad);
}

static void test_memory_is_per_segment(void **state)
{
	char dir[1100];
	enum { N = 200000 };
	new_dir(dir, sizeof(dir));
	struct spool *sp = open_spool(dir, 0, 0, SPOOL_SYNC_NONE);
	uint8_t payload[300];
	char err[512];
	for (int i = 0; i < N; i++) {
		fill_payload(payload, sizeof(payload), (uint64_t)i + 1);
		assert_int_equal(spool_append(sp, SPOOL_EVENT, payload, sizeof(payload), NULL, NULL,
					      err, sizeof(err)),
				 0);
	}
	assert_int_equal(spool_records(sp), N);
	assert_int_equal(spool_dropped(sp), 0);
	/* About 64 MiB in 1 MiB segments: metadata for ~64 segments, not 200k records. */
	assert_true(spool_segments(sp) <= SPOOL_DEFAULT_MAX_BYTES / SPOOL_DEFAULT_SEGMENT_BYTES + 2);
	assert_true(spool_segments(sp) >= 60);
	spool_close(sp);
	sp = open_spool(dir, 0, 0, SPOOL_SYNC_NONE);
	assert_int_equal(spool_records(sp), N);
	assert_true(spool_segments(sp) <= SPOOL_DEFAULT_MAX_BYTES / SPOOL_DEFAULT_SEGMENT_BYTES + 2);
	assert_int_equal(collect(sp, N - 1000, NULL, 0, 300), 1000);
	spool_close(sp);
	test_rmtree(dir);
}

/* CRC-32C, bit by bit: independent of the module's table-driven one. */
static uint32_t crc32c_ref(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	while (n--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
	}
	return ~crc;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static size_t encode_record(uint8_t *out, int kind, uint32_t index, uint64_t seq,
			    const char *state, const char *payload)
{
	size_t sl = strlen(state), pl = strlen(payload);
	memcpy(out, "SPR1", 4);
	out[4] = (uint8_t)kind;
	out[5] = 0;
	put_le(out + 6, sl, 2);
	put_le(out + 8, pl, 4);
	put_le(out + 12, index, 4);
	put_le(out + 16, seq, 8);
	memcpy(out + 32, state, sl);
	memcpy(out + 32 + sl, payload, pl);
	uint32_t crc = crc32c_ref(0, out, 24);
	crc = crc32c_ref(crc, out + 32, sl + pl);
	put_le(out + 24, crc, 4);
	put_le(out + 28, crc32c_ref(0, out, 28), 4);
	return 32 + sl + pl;
}

/* The on-disk format is the one spool.h documents, both ways. */
static void test_documented_format(void **state)
{
	char dir[1100], path[1200], err[512];
	uint8_t file[1024];
	size_t len = 0;
	assert_int_equal(crc32c_ref(0, (const uint8_t *)"123456789", 9), 0xe3069283u);

	new_dir(dir, sizeof(dir));
	assert_int_equal(util_mkdir_p(dir, 0700, err, sizeof(err)), 0);
	len += encode_record(file + len, SPOOL_SNAPSHOT, 0, 7, "", "host state");
	len += encode_record(file + len, SPOOL_EVENT, 1, 8, "cursor-8", "event 13003");
	len += encode_record(file + len, SPOOL_RESULT, 2, 9, "", "result");
	snprintf(path, sizeof(path), "%s/seg-00000000000000000007.log", dir);
	write_file(path, file, len);

	struct spool *sp = open_spool(dir, 0, 0, SPOOL_SYNC_NONE);
	assert_int_equal(spool_highest(sp), 9);
	assert_int_equal(spool_records(sp), 3);
	assert_string_equal(spool_state(sp), "cursor-8");
	struct spool_iter it;
	struct spool_record rec;
	const char *want[] = {"host state", "event 13003", "result"};
	assert_int_equal(spool_iter_init(sp, &it, 0), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(spool_iter_next(&it, &rec), 1);
		assert_int_equal(rec.seq, 7 + i);
		assert_int_equal(rec.kind, i + 1);
		assert_int_equal(rec.len, strlen(want[i]));
		assert_memory_equal(rec.payload, want[i], rec.len);
	}
	assert_int_equal(spool_iter_next(&it, &rec), 0);
	spool_iter_close(&it);

	/* And what it writes decodes by the same rules. */
	const char *payload = "written";
	assert_int_equal(spool_append(sp, SPOOL_EVENT, (const uint8_t *)payload, strlen(payload),
				      "cursor-10", NULL, err, sizeof(err)),
			 0);
	spool_close(sp);
	char *data;
	size_t size;
	assert_int_equal(util_read_file(path, 1 << 20, &data, &size, err, sizeof(err)), 0);
	assert_int_equal(size, len + 32 + 9 + 7);
	const uint8_t *p = (const uint8_t *)data + len;
	assert_memory_equal(p, "SPR1", 4);
	assert_int_equal(p[4], SPOOL_EVENT);
	assert_int_equal(p[5], 0);
	assert_int_equal(get_le(p + 6, 2), 9);
	assert_int_equal(get_le(p + 8, 4), 7);
	assert_int_equal(get_le(p + 12, 4), 3);
	assert_int_equal(get_le(p + 16, 8), 10);
	assert_memory_equal(p + 32, "cursor-10written", 16);
	uint32_t crc = crc32c_ref(0, p, 24);
	crc = crc32c_ref(crc, p + 32, 16);
	assert_int_equal(get_le(p + 24, 4), crc);
	assert_int_equal(get_le(p + 28, 4), crc32c_ref(0, p, 28));
	free(data);
}

static void test_damaged_or_missing_meta(void **state)
{
	char dir[1100], path[1200], err[512];
	uint64_t seqs[64];
	new_dir(dir, sizeof(dir));
	struct spool *sp = open_spool(dir, 0, 0, SPOOL_SYNC_BATCH);
	for (int i = 0; i < 20; i++)
		append(sp, SPOOL_EVENT, 100, i == 15 ? "cursor-16" : NULL);
	assert_int_equal(spool_ack(sp, 5, err, sizeof(err)), 0);
	spool_close(sp);

	snprintf(path, sizeof(path), "%s/spool.meta", dir);
	write_file(path, "garbage, not a meta file", 24);
	capture_logs();
	sp = open_spool(dir, 0, 0, SPOOL_SYNC_BATCH);
	char *logs = captured_logs();
	assert_non_null(strstr(logs, path));
	free(logs);
	/* The acked position is lost with it: records are replayed again (the
	 * collector deduplicates), none are lost and no sequence is reused. */
	assert_int_equal(spool_next_sequence(sp), 21);
	assert_int_equal(spool_records(sp), 20);
	assert_int_equal(collect(sp, 0, seqs, 64, 100), 20);
	assert_string_equal(spool_state(sp), "cursor-16");
	spool_close(sp);

	/* A meta file with one flipped byte fails its checksum the same way. */
	flip_byte(path, 20);
	sp = open_spool(dir, 0, 0, SPOOL_SYNC_BATCH);
	assert_int_equal(spool_next_sequence(sp), 21);
	assert_int_equal(spool_records(sp), 20);
	spool_close(sp);

	/* Leftovers of an interrupted rewrite are cleared away. */
	char tmp[1200];
	snprintf(tmp, sizeof(tmp), "%s/compact.tmp", dir);
	write_file(tmp, "half a segment", 14);
	sp = open_spool(dir, 0, 0, SPOOL_SYNC_BATCH);
	assert_false(file_exists(tmp));
	assert_int_equal(spool_records(sp), 20);
	spool_close(sp);
}

static void test_sync_policies(void **state)
{
	char dir[1100], err[512];
	enum spool_sync policies[] = {SPOOL_SYNC_ALWAYS, SPOOL_SYNC_BATCH, SPOOL_SYNC_NONE};
	for (size_t p = 0; p < 3; p++) {
		new_dir(dir, sizeof(dir));
		struct spool *sp = open_spool(dir, 0, 4096, policies[p]);
		for (int i = 0; i < 40; i++)
			append(sp, SPOOL_EVENT, 200, "c");
		assert_int_equal(spool_sync(sp, err, sizeof(err)), 0);
		assert_int_equal(spool_sync(sp, err, sizeof(err)), 0);
		assert_int_equal(spool_ack(sp, 20, err, sizeof(err)), 0);
		spool_close(sp);
		sp = open_spool(dir, 0, 4096, policies[p]);
		assert_int_equal(spool_records(sp), 20);
		assert_int_equal(collect(sp, 0, NULL, 0, 200), 20);
		spool_close(sp);
	}
}

int main(void)
{
	log_init(NULL, LOG_WARN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_append_ack_replay),
		cmocka_unit_test(test_sequences_never_reused),
		cmocka_unit_test(test_restart_keeps_unacked_and_state),
		cmocka_unit_test(test_torn_tail_cut),
		cmocka_unit_test(test_torn_tail_flipped_bytes),
		cmocka_unit_test(test_damaged_middle_segment),
		cmocka_unit_test(test_full_drops_oldest_events),
		cmocka_unit_test(test_full_of_undroppable_is_enospc),
		cmocka_unit_test(test_iterator_with_appends_and_acks),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_memory_is_per_segment),
		cmocka_unit_test(test_documented_format),
		cmocka_unit_test(test_damaged_or_missing_meta),
		cmocka_unit_test(test_sync_policies),
	};
	return cmocka_run_group_tests(tests, make_tmp_root, remove_tmp_root);
}
