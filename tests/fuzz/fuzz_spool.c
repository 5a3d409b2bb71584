/* Spool recovery fed arbitrary files: whatever a segment or the meta file
 * holds, spool_open must recover without crashing or leaking, the iterator
 * must agree with the counters, and a record appended afterwards must
 * survive a reopen with a fresh sequence number.
 *
 * Input: byte 0 flags (1: a meta file follows, 2: split the segment bytes
 * into two files, 4: acknowledge half before closing), byte 1 the meta
 * file's length, byte 2 where to split and the second file's name; then the
 * meta bytes, then the segment bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "log.h"
#include "spool.h"
#include "util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char base_dir[1024];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *base = getenv("EXFLEET_TEST_TMP");
	/* Recovery logs every repair it makes: thousands of runs a second. */
	log_init(fopen("/dev/null", "w"), LOG_ERR);
	char err[1200];
	snprintf(base_dir, sizeof(base_dir), "%s", base && *base ? base : "/tmp");
	if (util_mkdir_p(base_dir, 0700, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
	return 0;
}

static void write_file(const char *dir, const char *name, const uint8_t *data, size_t len)
{
	char path[1200];
	uv_fs_t req;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = uv_fs_open(NULL, &req, path, UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_TRUNC,
			    0600, NULL);
	uv_fs_req_cleanup(&req);
	if (fd < 0)
		abort();
	uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
	if (len > 0 && uv_fs_write(NULL, &req, fd, &b, 1, 0, NULL) != (int)len)
		abort();
	uv_fs_req_cleanup(&req);
	uv_fs_close(NULL, &req, fd, NULL);
	uv_fs_req_cleanup(&req);
}

static void remove_dir(const char *dir)
{
	uv_fs_t req;
	uv_dirent_t ent;
	if (uv_fs_scandir(NULL, &req, dir, 0, NULL) >= 0) {
		while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
			char path[1200];
			uv_fs_t unlink_req;
			snprintf(path, sizeof(path), "%s/%s", dir, ent.name);
			uv_fs_unlink(NULL, &unlink_req, path, NULL);
			uv_fs_req_cleanup(&unlink_req);
		}
	}
	uv_fs_req_cleanup(&req);
	uv_fs_rmdir(NULL, &req, dir, NULL);
	uv_fs_req_cleanup(&req);
}

static struct spool *open_or_die(const char *dir)
{
	struct spool_options o = {.dir = dir, .max_bytes = 32 * 1024, .segment_bytes = 4096,
				  .sync = SPOOL_SYNC_NONE};
	struct spool *sp;
	char err[1400];
	if (spool_open(&sp, &o, err, sizeof(err)) != 0) {
		fprintf(stderr, "spool_open: %s\n", err);
		abort();
	}
	return sp;
}

/* Walks every record; returns how many, and whether want was among them. */
static uint64_t walk(struct spool *sp, uint64_t want, int *found)
{
	struct spool_iter it;
	struct spool_record rec;
	uint64_t n = 0, prev = spool_acked(sp);
	int rc;
	if (spool_iter_init(sp, &it, 0) != 0)
		abort();
	while ((rc = spool_iter_next(&it, &rec)) == 1) {
		if (rec.seq <= prev || rec.seq > spool_highest(sp) || rec.len > SPOOL_MAX_PAYLOAD)
			abort();
		if (rec.len > 0) {
			volatile uint8_t sink = rec.payload[0] ^ rec.payload[rec.len - 1];
			(void)sink;
		}
		*found |= rec.seq == want;
		prev = rec.seq;
		n++;
	}
	if (rc != 0)
		abort();
	spool_iter_close(&it);
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char dir[1100], err[1400], name[64];
	uv_fs_t req;
	uint8_t flags = 0, meta_len = 0, split = 0;
	int found = 0;

	if (size >= 3) {
		flags = data[0];
		meta_len = flags & 1 ? data[1] : 0;
		split = data[2];
		data += 3;
		size -= 3;
	}
	if (meta_len > size)
		meta_len = (uint8_t)size;

	snprintf(dir, sizeof(dir), "%s/fuzz_spool-XXXXXX", base_dir);
	if (uv_fs_mkdtemp(NULL, &req, dir, NULL) != 0)
		abort();
	snprintf(dir, sizeof(dir), "%s", req.path);
	uv_fs_req_cleanup(&req);

	if (flags & 1)
		write_file(dir, "spool.meta", data, meta_len);
	const uint8_t *seg = data + meta_len;
	size_t seg_len = size - meta_len;
	size_t first_len = flags & 2 ? seg_len * split / 256 : seg_len;
	write_file(dir, "seg-00000000000000000001.log", seg, first_len);
	if (flags & 2) {
		snprintf(name, sizeof(name), "seg-%020u.log", 2u + split);
		write_file(dir, name, seg + first_len, seg_len - first_len);
	}

	struct spool *sp = open_or_die(dir);
	if (walk(sp, 0, &found) != spool_records(sp))
		abort();
	uint64_t next = spool_next_sequence(sp), seq = 0;
	static const uint8_t payload[300] = {1, 2, 3};
	int rc = spool_append(sp, SPOOL_EVENT, payload, sizeof(payload), "fuzz", &seq, err,
			      sizeof(err));
	/* The only acceptable refusal is a spool full of undroppable records. */
	if (rc != 0 && rc != UV_ENOSPC)
		abort();
	if (rc == 0 && (seq != next || spool_highest(sp) != seq))
		abort();
	if (flags & 4 && spool_ack(sp, spool_highest(sp) / 2, err, sizeof(err)) != 0)
		abort();
	uint64_t records = spool_records(sp), acked = spool_acked(sp);
	spool_close(sp);

	sp = open_or_die(dir);
	found = 0;
	if (walk(sp, seq, &found) != spool_records(sp) || spool_records(sp) != records ||
	    spool_acked(sp) != acked)
		abort();
	if (rc == 0 && (spool_next_sequence(sp) <= seq || strcmp(spool_state(sp), "fuzz") != 0 ||
			(seq > acked && !found)))
		abort();
	spool_close(sp);
	remove_dir(dir);
	return 0;
}
