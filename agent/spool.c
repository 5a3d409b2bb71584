/* The durable spool: segment files of checksummed records, recovered at open,
 * bounded by a drop policy. The format and the guarantees are in spool.h. */
#include "spool.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "log.h"
#include "util.h"

#define REC_MAGIC 0x31525053u /* "SPR1" as little-endian bytes */
#define REC_HEADER 32
#define REC_MAX (REC_HEADER + SPOOL_MAX_STATE + SPOOL_MAX_PAYLOAD)
#define SEQ_LIMIT ((uint64_t)INT64_MAX)
#define MAX_SEGMENT_BYTES (1ull << 30)
#define CHUNK (64 * 1024)
#define PATH_LEN 4096
#define ERR_LEN (PATH_LEN + 256)

#define META_NAME "spool.meta"
#define META_TMP "spool.meta.tmp"
#define COMPACT_TMP "compact.tmp"
#define META_MAGIC "EXSPMET1"
#define META_FIXED 58 /* magic, six u64 fields, u16 state length */
#define SEG_NAME_LEN 28 /* "seg-" + 20 digits + ".log" */

/* ---- encoding ---------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* CRC-32C (Castagnoli), slice-by-8. The table is built on first use; a spool
 * is used from one thread. */
static uint32_t crc_table[8][256];
static int crc_ready;

static void crc_init(void)
{
	if (crc_ready)
		return;
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[0][i] = c;
	}
	for (int t = 1; t < 8; t++)
		for (int i = 0; i < 256; i++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
					  crc_table[0][crc_table[t - 1][i] & 0xff];
	crc_ready = 1;
}

/* crc: 0 to start, or the previous result to continue over more bytes. */
static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	while (n >= 8) {
		uint32_t lo = crc ^ get32(p), hi = get32(p + 4);
		crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		      crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		      crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
		      crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
		p += 8;
		n -= 8;
	}
	while (n--)
		crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

struct rec_header {
	uint8_t kind;
	uint16_t state_len;
	uint32_t len;
	uint32_t index;
	uint64_t seq;
};

static uint64_t rec_size(const struct rec_header *h)
{
	return REC_HEADER + (uint64_t)h->state_len + h->len;
}

static void header_encode(uint8_t *p, const struct rec_header *h, const uint8_t *state,
			  const uint8_t *payload)
{
	put32(p, REC_MAGIC);
	p[4] = h->kind;
	p[5] = 0;
	put16(p + 6, h->state_len);
	put32(p + 8, h->len);
	put32(p + 12, h->index);
	put64(p + 16, h->seq);
	uint32_t crc = crc32c(0, p, 24);
	crc = crc32c(crc, state, h->state_len);
	crc = crc32c(crc, payload, h->len);
	put32(p + 24, crc);
	put32(p + 28, crc32c(0, p, 28));
}

/* The header alone: enough to know how long the record claims to be. */
static int header_check(const uint8_t *p, struct rec_header *h)
{
	if (get32(p) != REC_MAGIC || get32(p + 28) != crc32c(0, p, 28))
		return 0;
	h->kind = p[4];
	h->state_len = get16(p + 6);
	h->len = get32(p + 8);
	h->index = get32(p + 12);
	h->seq = get64(p + 16);
	return p[5] == 0 && h->kind >= SPOOL_SNAPSHOT && h->kind <= SPOOL_RESULT &&
	       h->state_len <= SPOOL_MAX_STATE && h->len <= SPOOL_MAX_PAYLOAD && h->seq >= 1 &&
	       h->seq <= SEQ_LIMIT;
}

static int body_check(const uint8_t *p, const struct rec_header *h)
{
	uint32_t crc = crc32c(0, p, 24);
	crc = crc32c(crc, p + REC_HEADER, (size_t)h->state_len + h->len);
	return crc == get32(p + 24);
}

/* ---- files --------------------------------------------------------------- */

static int fs_open(const char *path, int flags, int mode)
{
	uv_fs_t req;
	int rc = uv_fs_open(NULL, &req, path, flags, mode, NULL);
	uv_fs_req_cleanup(&req);
	return rc;
}

static int fs_close(uv_file fd)
{
	uv_fs_t req;
	int rc = uv_fs_close(NULL, &req, fd, NULL);
	uv_fs_req_cleanup(&req);
	return rc;
}

static int fs_fsync(uv_file fd)
{
	uv_fs_t req;
	int rc = uv_fs_fsync(NULL, &req, fd, NULL);
	uv_fs_req_cleanup(&req);
	return rc;
}

static int fs_truncate(uv_file fd, uint64_t size)
{
	uv_fs_t req;
	int rc = uv_fs_ftruncate(NULL, &req, fd, (int64_t)size, NULL);
	uv_fs_req_cleanup(&req);
	return rc;
}

/* A file that is already gone is fine. */
static int fs_unlink(const char *path)
{
	uv_fs_t req;
	int rc = uv_fs_unlink(NULL, &req, path, NULL);
	uv_fs_req_cleanup(&req);
	return rc == UV_ENOENT ? 0 : rc;
}

static int fs_rename(const char *from, const char *to)
{
	uv_fs_t req;
	int rc = uv_fs_rename(NULL, &req, from, to, NULL);
	uv_fs_req_cleanup(&req);
	return rc;
}

static int fs_size(const char *path, uint64_t *size)
{
	uv_fs_t req;
	int rc = uv_fs_stat(NULL, &req, path, NULL);
	if (rc == 0)
		*size = req.statbuf.st_size;
	uv_fs_req_cleanup(&req);
	return rc;
}

static int fs_read(uv_file fd, uint8_t *buf, size_t len, uint64_t off)
{
	uv_fs_t req;
	uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
	int rc = uv_fs_read(NULL, &req, fd, &b, 1, (int64_t)off, NULL);
	uv_fs_req_cleanup(&req);
	return rc;
}

/* Writes all of bufs at off, however the system splits the write. */
static int fs_write_all(uv_file fd, uv_buf_t *bufs, unsigned n, uint64_t off)
{
	while (n > 0) {
		uv_fs_t req;
		int rc = uv_fs_write(NULL, &req, fd, bufs, n, (int64_t)off, NULL);
		uv_fs_req_cleanup(&req);
		if (rc < 0)
			return rc;
		if (rc == 0)
			return UV_EIO;
		size_t done = (size_t)rc;
		off += done;
		while (n > 0 && done >= bufs[0].len) {
			done -= bufs[0].len;
			bufs++;
			n--;
		}
		if (n > 0) {
			bufs[0].base += done;
			bufs[0].len -= done;
		}
	}
	return 0;
}

/* ---- the spool ----------------------------------------------------------- */

struct segment {
	uint64_t id;             /* new whenever the file is replaced */
	uint64_t name_seq;       /* N in seg-N.log */
	uint64_t first, last;    /* sequences held; 0 when empty */
	uint64_t records;
	uint64_t acked_records;  /* records <= acked still in the file */
	uint64_t drop_records;   /* events and snapshots: candidates when full */
	uint64_t drop_bytes;
	uint64_t bytes;          /* end of the last whole record: where appends go */
	uint32_t next_index;
	int damaged;             /* at open: rewrite it without the damage */
};

/* What the meta file held when last written; deletions wait until it is current. */
struct meta_fields {
	uint64_t highest, acked, dropped, torn, lost, state_seq;
};

struct spool {
	char *dir;
	uint64_t max_bytes, segment_bytes;
	enum spool_sync sync;
	struct segment *segs;    /* ascending; the last one takes appends */
	size_t nsegs, segcap;
	uint64_t next_id;
	uv_file fd;              /* the last segment, open for writing; -1 when closed */
	int sealed;              /* the last segment takes no more appends */
	int dirty;               /* appended since the last fsync */
	uint64_t highest, acked, dropped, torn, lost;
	uint64_t lowest_unacked;
	uint64_t snap_seq;       /* the latest snapshot appended */
	uint64_t snap_bytes;     /* its size on disk; 0 once it left the disk */
	uint64_t state_seq;
	char state[SPOOL_MAX_STATE + 1];
	struct meta_fields written;
	int meta_current;        /* written matches the meta file */
	struct spool_cursor *cursors;
};

static void dir_path(const struct spool *sp, const char *name, char *buf)
{
	snprintf(buf, PATH_LEN, "%s/%s", sp->dir, name);
}

static void seg_path(const struct spool *sp, uint64_t name_seq, char *buf)
{
	snprintf(buf, PATH_LEN, "%s/seg-%020" PRIu64 ".log", sp->dir, name_seq);
}

/* Only names this module writes: a stray seg-5.log must not alias seg-000…5.log.
 * Records go up to SEQ_LIMIT, so an empty segment may be named one above. */
static int parse_seg_name(const char *name, uint64_t *seq)
{
	if (strlen(name) != SEG_NAME_LEN || memcmp(name, "seg-", 4) != 0 ||
	    strcmp(name + 24, ".log") != 0)
		return 0;
	uint64_t v = 0;
	for (int i = 4; i < 24; i++) {
		if (name[i] < '0' || name[i] > '9')
			return 0;
		uint64_t digit = (uint64_t)(name[i] - '0');
		if (v > (UINT64_MAX - digit) / 10)
			return 0;
		v = v * 10 + digit;
	}
	if (v < 1 || v > SEQ_LIMIT + 1)
		return 0;
	*seq = v;
	return 1;
}

/* Syncing a directory makes created, renamed and removed names durable. Where
 * a directory cannot be opened (Windows), the file system journals names. */
static void sync_dir(const struct spool *sp)
{
	if (sp->sync == SPOOL_SYNC_NONE)
		return;
	int fd = fs_open(sp->dir, UV_FS_O_RDONLY, 0);
	if (fd < 0)
		return;
	fs_fsync(fd);
	fs_close(fd);
}

static void seg_add(struct segment *s, const struct rec_header *h)
{
	if (s->records == 0)
		s->first = h->seq;
	s->last = h->seq;
	s->records++;
	s->next_index = h->index + 1;
	if (h->kind != SPOOL_RESULT) {
		s->drop_records++;
		s->drop_bytes += rec_size(h);
	}
}

static int seg_push(struct spool *sp, const struct segment *s)
{
	if (sp->nsegs == sp->segcap) {
		size_t cap = sp->segcap ? sp->segcap * 2 : 16;
		struct segment *grown = realloc(sp->segs, cap * sizeof(*grown));
		if (!grown)
			return UV_ENOMEM;
		sp->segs = grown;
		sp->segcap = cap;
	}
	sp->segs[sp->nsegs++] = *s;
	return 0;
}

static void seg_forget(struct spool *sp, size_t i)
{
	memmove(&sp->segs[i], &sp->segs[i + 1], (sp->nsegs - i - 1) * sizeof(sp->segs[0]));
	sp->nsegs--;
}

static int seg_holds(const struct segment *s, uint64_t seq)
{
	return s->records > 0 && seq >= s->first && seq <= s->last;
}

/* ---- reading records ------------------------------------------------------ */

enum { READ_END = 0, READ_RECORD = 1, READ_DAMAGE = 2 };

/* Reads one segment file a buffer at a time. After damage (a bad magic,
 * checksum or length) it looks for the next good record byte by byte, so
 * one bad record costs that record only. */
struct reader {
	char path[PATH_LEN];
	uv_file fd;              /* opened on first read; -1 when closed */
	uint8_t *buf;
	size_t cap, pos, len;
	uint64_t buf_off;        /* file offset of buf[0] */
	uint64_t end;            /* nothing at or after this offset is read */
	uint64_t min_seq;        /* lower sequences belong to an earlier segment */
	uint64_t last_seq;
	uint32_t last_index;
	int have_last;
	int in_damage;
	uint64_t damage_off;
	uint64_t stale;          /* records skipped as repeats of earlier sequences */
	/* READ_RECORD: the record, valid until the next call. */
	struct rec_header h;
	const uint8_t *rec;
	/* READ_DAMAGE: the region skipped and the records it held (from the index). */
	uint64_t damage_len, damage_lost;
};

static void reader_init(struct reader *r, const char *path, uint64_t end, uint64_t min_seq)
{
	uint8_t *buf = r->buf;
	size_t cap = r->cap;
	memset(r, 0, sizeof(*r));
	r->buf = buf;
	r->cap = cap;
	r->fd = -1;
	snprintf(r->path, sizeof(r->path), "%s", path);
	r->end = end;
	r->min_seq = min_seq;
}

static void reader_release(struct reader *r)
{
	if (r->fd >= 0)
		fs_close(r->fd);
	r->fd = -1;
}

static void reader_free(struct reader *r)
{
	reader_release(r);
	free(r->buf);
	r->buf = NULL;
	r->cap = 0;
}

/* Makes n bytes from the current position available: 1, or 0 when the file
 * (up to end) holds fewer. */
static int reader_fill(struct reader *r, size_t n, char *err, size_t errlen)
{
	if (r->len - r->pos >= n)
		return 1;
	if (r->buf_off + r->pos + n > r->end)
		return 0;
	if (r->pos > 0) {
		memmove(r->buf, r->buf + r->pos, r->len - r->pos);
		r->len -= r->pos;
		r->buf_off += r->pos;
		r->pos = 0;
	}
	if (r->cap < n || r->cap < CHUNK) {
		size_t cap = n > CHUNK ? n : CHUNK;
		uint8_t *grown = realloc(r->buf, cap);
		if (!grown) {
			snprintf(err, errlen, "cannot read %s: out of memory", r->path);
			return UV_ENOMEM;
		}
		r->buf = grown;
		r->cap = cap;
	}
	if (r->fd < 0) {
		int rc = fs_open(r->path, UV_FS_O_RDONLY, 0);
		if (rc < 0) {
			snprintf(err, errlen, "cannot open %s: %s", r->path, uv_strerror(rc));
			return rc;
		}
		r->fd = rc;
	}
	while (r->len < n) {
		uint64_t off = r->buf_off + r->len;
		size_t want = r->cap - r->len;
		if (want > r->end - off)
			want = (size_t)(r->end - off);
		int rc = fs_read(r->fd, r->buf + r->len, want, off);
		if (rc < 0) {
			snprintf(err, errlen, "cannot read %s at offset %" PRIu64 ": %s", r->path, off,
				 uv_strerror(rc));
			return rc;
		}
		if (rc == 0)
			return 0; /* shorter than end: someone cut the file */
		r->len += (size_t)rc;
	}
	return 1;
}

/* READ_RECORD, READ_DAMAGE (the good record after it comes next), READ_END,
 * or a negative error with err naming the file. */
static int reader_next(struct reader *r, char *err, size_t errlen)
{
	for (;;) {
		uint64_t off = r->buf_off + r->pos;
		int rc = reader_fill(r, REC_HEADER, err, errlen);
		if (rc < 0)
			return rc;
		if (rc == 0) {
			if (off < r->end && !r->in_damage) {
				r->in_damage = 1;
				r->damage_off = off;
			}
			if (!r->in_damage)
				return READ_END;
			/* Damage runs to the end: how many records it held is unknown. */
			r->in_damage = 0;
			r->damage_len = r->end - r->damage_off;
			r->damage_lost = 1;
			r->buf_off = r->end;
			r->pos = r->len = 0;
			return READ_DAMAGE;
		}
		struct rec_header h;
		const uint8_t *p = r->buf + r->pos;
		int ok = header_check(p, &h);
		if (ok) {
			rc = reader_fill(r, (size_t)rec_size(&h), err, errlen);
			if (rc < 0)
				return rc;
			p = r->buf + r->pos;
			ok = rc == 1 && body_check(p, &h);
		}
		if (!ok) {
			if (!r->in_damage) {
				r->in_damage = 1;
				r->damage_off = off;
			}
			r->pos++;
			const uint8_t *m = memchr(r->buf + r->pos, REC_MAGIC & 0xff, r->len - r->pos);
			r->pos = m ? (size_t)(m - r->buf) : r->len;
			continue;
		}
		if (h.seq < r->min_seq || (r->have_last && h.seq <= r->last_seq)) {
			r->stale++;
			r->pos += (size_t)rec_size(&h);
			continue;
		}
		if (r->in_damage) {
			uint64_t expect = r->have_last ? (uint64_t)r->last_index + 1 : 0;
			r->in_damage = 0;
			r->damage_len = off - r->damage_off;
			r->damage_lost = h.index > expect ? h.index - expect : 0;
			return READ_DAMAGE;
		}
		r->h = h;
		r->rec = p;
		r->pos += (size_t)rec_size(&h);
		r->last_seq = h.seq;
		r->last_index = h.index;
		r->have_last = 1;
		return READ_RECORD;
	}
}

/* ---- iterators (the part the spool must know of) --------------------------- */

struct spool_cursor {
	struct spool *sp;          /* NULL once the spool is closed */
	struct spool_cursor *next;
	uint64_t after;            /* the last sequence yielded or skipped */
	uint64_t seg_id;           /* the segment r reads; 0 none */
	struct reader r;
};

/* Files are about to be replaced or removed: close what iterators hold open
 * (Windows refuses to rename or delete open files). They reopen by name. */
static void cursors_release(struct spool *sp, uint64_t seg_id)
{
	for (struct spool_cursor *c = sp->cursors; c; c = c->next)
		if (c->seg_id == seg_id)
			reader_release(&c->r);
}

/* ---- the meta file ------------------------------------------------------- */

static void meta_fields_now(const struct spool *sp, struct meta_fields *m)
{
	m->highest = sp->highest;
	m->acked = sp->acked;
	m->dropped = sp->dropped;
	m->torn = sp->torn;
	m->lost = sp->lost;
	m->state_seq = sp->state_seq;
}

static int meta_write(struct spool *sp, char *err, size_t errlen)
{
	uint8_t buf[META_FIXED + SPOOL_MAX_STATE + 4];
	char path[PATH_LEN], tmp[PATH_LEN];
	size_t state_len = strlen(sp->state);
	int rc;

	memcpy(buf, META_MAGIC, 8);
	put64(buf + 8, sp->highest);
	put64(buf + 16, sp->acked);
	put64(buf + 24, sp->dropped);
	put64(buf + 32, sp->torn);
	put64(buf + 40, sp->lost);
	put64(buf + 48, sp->state_seq);
	put16(buf + 56, (uint16_t)state_len);
	memcpy(buf + META_FIXED, sp->state, state_len);
	size_t n = META_FIXED + state_len;
	put32(buf + n, crc32c(0, buf, n));
	n += 4;

	dir_path(sp, META_NAME, path);
	dir_path(sp, META_TMP, tmp);
	rc = fs_open(tmp, UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_TRUNC, 0600);
	if (rc < 0) {
		snprintf(err, errlen, "cannot create %s: %s", tmp, uv_strerror(rc));
		return rc;
	}
	uv_file fd = rc;
	uv_buf_t b = uv_buf_init((char *)buf, (unsigned)n);
	rc = fs_write_all(fd, &b, 1, 0);
	if (rc == 0 && sp->sync != SPOOL_SYNC_NONE)
		rc = fs_fsync(fd);
	int crc = fs_close(fd);
	if (rc == 0)
		rc = crc;
	if (rc == 0)
		rc = fs_rename(tmp, path);
	if (rc < 0) {
		snprintf(err, errlen, "cannot write %s: %s", path, uv_strerror(rc));
		fs_unlink(tmp);
		return rc;
	}
	sync_dir(sp);
	meta_fields_now(sp, &sp->written);
	sp->meta_current = 1;
	return 0;
}

/* Before a segment goes: the meta file must already hold the collection
 * state and counters, which may have lived only in that segment. */
static int meta_flush(struct spool *sp, char *err, size_t errlen)
{
	struct meta_fields now;
	meta_fields_now(sp, &now);
	if (sp->meta_current && now.acked == sp->written.acked &&
	    now.dropped == sp->written.dropped && now.torn == sp->written.torn &&
	    now.lost == sp->written.lost && now.state_seq == sp->written.state_seq)
		return 0;
	return meta_write(sp, err, errlen);
}

/* 1: read; 0: missing; -1: unusable (logged). */
static int meta_read(struct spool *sp)
{
	char path[PATH_LEN], err[ERR_LEN];
	char *data = NULL;
	size_t len = 0;
	const char *why = NULL;

	dir_path(sp, META_NAME, path);
	int rc = util_read_file(path, META_FIXED + SPOOL_MAX_STATE + 4, &data, &len, err,
				sizeof(err));
	if (rc == UV_ENOENT)
		return 0;
	if (rc < 0) {
		log_warn("spool: ignoring %s; recovering from the segments", err);
		return -1;
	}
	const uint8_t *p = (const uint8_t *)data;
	uint16_t state_len = len >= META_FIXED ? get16(p + 56) : 0;
	uint64_t highest = 0, acked = 0, state_seq = 0;
	if (len < META_FIXED + 4 || memcmp(p, META_MAGIC, 8) != 0) {
		why = "not a spool meta file";
	} else if (state_len > SPOOL_MAX_STATE || len != META_FIXED + (size_t)state_len + 4) {
		why = "wrong length";
	} else if (get32(p + len - 4) != crc32c(0, p, len - 4)) {
		why = "checksum mismatch";
	} else {
		highest = get64(p + 8);
		acked = get64(p + 16);
		state_seq = get64(p + 48);
		if (highest > SEQ_LIMIT || acked > highest || state_seq > highest)
			why = "inconsistent sequence numbers";
	}
	if (why) {
		log_warn("spool: ignoring damaged %s (%s); recovering from the segments", path, why);
		free(data);
		return -1;
	}
	sp->highest = highest;
	sp->acked = acked;
	sp->dropped = get64(p + 24);
	sp->torn = get64(p + 32);
	sp->lost = get64(p + 40);
	sp->state_seq = state_seq;
	memcpy(sp->state, p + META_FIXED, state_len);
	sp->state[state_len] = '\0';
	free(data);
	meta_fields_now(sp, &sp->written);
	sp->meta_current = 1;
	return 1;
}

/* ---- segments ------------------------------------------------------------- */

/* Counts the records of s at or below seq, and finds the first one above it. */
static int seg_split(const struct spool *sp, const struct segment *s, uint64_t seq,
		     uint64_t *upto, uint64_t *above, char *err, size_t errlen)
{
	*upto = 0;
	*above = 0;
	if (s->records == 0)
		return 0;
	if (seq < s->first) {
		*above = s->first;
		return 0;
	}
	if (seq >= s->last) {
		*upto = s->records;
		return 0;
	}
	if (s->last - s->first + 1 == s->records) {
		/* Every sequence in between is here: no need to read. */
		*upto = seq - s->first + 1;
		*above = seq + 1;
		return 0;
	}
	char path[PATH_LEN];
	struct reader r = {0};
	int rc;
	seg_path(sp, s->name_seq, path);
	reader_init(&r, path, s->bytes, s->first);
	while ((rc = reader_next(&r, err, errlen)) > 0) {
		if (rc != READ_RECORD)
			continue;
		if (r.h.seq > seq) {
			*above = r.h.seq;
			break;
		}
		(*upto)++;
	}
	reader_free(&r);
	return rc < 0 ? rc : 0;
}

static void update_lowest(struct spool *sp)
{
	char err[ERR_LEN];
	sp->lowest_unacked = 0;
	for (size_t i = 0; i < sp->nsegs; i++) {
		struct segment *s = &sp->segs[i];
		if (s->records <= s->acked_records)
			continue;
		uint64_t upto, above;
		if (s->acked_records == 0)
			sp->lowest_unacked = s->first;
		else if (seg_split(sp, s, sp->acked, &upto, &above, err, sizeof(err)) == 0 && above)
			sp->lowest_unacked = above;
		else
			sp->lowest_unacked = sp->acked + 1;
		return;
	}
}

/* Makes the last segment writable again after a compaction or an error closed it. */
static int open_active(struct spool *sp, char *err, size_t errlen)
{
	if (sp->fd >= 0)
		return 0;
	char path[PATH_LEN];
	seg_path(sp, sp->segs[sp->nsegs - 1].name_seq, path);
	int rc = fs_open(path, UV_FS_O_WRONLY, 0);
	if (rc < 0) {
		snprintf(err, errlen, "cannot open %s: %s", path, uv_strerror(rc));
		return rc;
	}
	sp->fd = rc;
	return 0;
}

static int close_active(struct spool *sp, char *err, size_t errlen)
{
	int rc = 0;
	if (sp->fd < 0)
		return 0;
	if (sp->dirty && sp->sync != SPOOL_SYNC_NONE)
		rc = fs_fsync(sp->fd);
	int crc = fs_close(sp->fd);
	sp->fd = -1;
	sp->dirty = 0;
	if (rc == 0)
		rc = crc;
	if (rc < 0) {
		char path[PATH_LEN];
		seg_path(sp, sp->segs[sp->nsegs - 1].name_seq, path);
		snprintf(err, errlen, "cannot flush %s to disk: %s", path, uv_strerror(rc));
	}
	return rc;
}

/* A new, empty last segment named for the next sequence: with it the names
 * alone still tell the high-water mark when everything else is gone. */
static int create_active(struct spool *sp, char *err, size_t errlen)
{
	char path[PATH_LEN];
	struct segment s = {0};
	s.name_seq = sp->highest + 1;
	/* Hand-placed files may be named above their records: skip sequences
	 * rather than share a name. */
	if (sp->nsegs > 0 && sp->segs[sp->nsegs - 1].name_seq >= s.name_seq)
		s.name_seq = sp->segs[sp->nsegs - 1].name_seq + 1;
	seg_path(sp, s.name_seq, path);
	if (s.name_seq > SEQ_LIMIT + 1) {
		snprintf(err, errlen, "cannot create %s: sequence numbers exhausted", path);
		return UV_EOVERFLOW;
	}
	s.id = sp->next_id++;
	int rc = fs_open(path, UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_TRUNC, 0600);
	if (rc < 0) {
		snprintf(err, errlen, "cannot create %s: %s", path, uv_strerror(rc));
		return rc;
	}
	uv_file fd = rc;
	rc = seg_push(sp, &s);
	if (rc < 0) {
		snprintf(err, errlen, "cannot create %s: out of memory", path);
		fs_close(fd);
		fs_unlink(path);
		return rc;
	}
	sync_dir(sp);
	sp->highest = s.name_seq - 1;
	sp->fd = fd;
	sp->dirty = 0;
	sp->sealed = 0;
	return 0;
}

static int remove_segment(struct spool *sp, size_t i, char *err, size_t errlen)
{
	char path[PATH_LEN];
	struct segment *s = &sp->segs[i];
	int rc = meta_flush(sp, err, errlen);
	if (rc < 0)
		return rc;
	cursors_release(sp, s->id);
	seg_path(sp, s->name_seq, path);
	rc = fs_unlink(path);
	if (rc < 0) {
		snprintf(err, errlen, "cannot remove %s: %s", path, uv_strerror(rc));
		return rc;
	}
	if (seg_holds(s, sp->snap_seq))
		sp->snap_bytes = 0;
	seg_forget(sp, i);
	return 0;
}

struct drop_tally {
	uint64_t records, lo, hi;
};

/* Rewrites segment i without its acknowledged records and, when drop is set,
 * without its events and snapshots other than keep_snap. Kept records keep
 * their sequence numbers; the file keeps its name, so order is unchanged. A
 * compacted last segment is sealed and a new empty one takes appends. */
static int compact(struct spool *sp, size_t i, int drop, uint64_t keep_snap,
		   struct drop_tally *t, char *err, size_t errlen)
{
	struct segment old = sp->segs[i];
	struct segment out = {0};
	int active = i == sp->nsegs - 1;
	char path[PATH_LEN], tmp[PATH_LEN];
	struct reader r = {0};
	uint8_t *wbuf = NULL;
	size_t wlen = 0;
	uint64_t woff = 0, dropped = 0, lo = 0, hi = 0;
	uv_file fd = -1;
	int tmp_made = 0, snap_gone = 0, rc;

	seg_path(sp, old.name_seq, path);
	dir_path(sp, COMPACT_TMP, tmp);
	cursors_release(sp, old.id);
	reader_init(&r, path, old.bytes, old.first);
	out.name_seq = old.name_seq;
	wbuf = malloc(CHUNK);
	if (!wbuf) {
		rc = UV_ENOMEM;
		snprintf(err, errlen, "cannot rewrite %s: out of memory", path);
		goto out;
	}
	rc = fs_open(tmp, UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_TRUNC, 0600);
	if (rc < 0) {
		snprintf(err, errlen, "cannot create %s: %s", tmp, uv_strerror(rc));
		goto out;
	}
	fd = rc;
	tmp_made = 1;
	while ((rc = reader_next(&r, err, errlen)) > 0) {
		if (rc == READ_DAMAGE)
			continue; /* counted and logged when the spool was opened */
		const struct rec_header *h = &r.h;
		int keep = h->seq > sp->acked;
		if (keep && drop &&
		    (h->kind == SPOOL_EVENT || (h->kind == SPOOL_SNAPSHOT && h->seq != keep_snap))) {
			keep = 0;
			dropped++;
			lo = lo ? lo : h->seq;
			hi = h->seq;
		}
		if (!keep) {
			snap_gone |= h->seq == sp->snap_seq;
			continue;
		}
		struct rec_header nh = *h;
		nh.index = out.next_index;
		uint8_t hdr[REC_HEADER];
		const uint8_t *state = r.rec + REC_HEADER, *payload = state + h->state_len;
		size_t size = (size_t)rec_size(h);
		header_encode(hdr, &nh, state, payload);
		if (wlen + size > CHUNK && wlen > 0) {
			uv_buf_t b = uv_buf_init((char *)wbuf, (unsigned)wlen);
			rc = fs_write_all(fd, &b, 1, woff);
			if (rc < 0)
				goto write_failed;
			woff += wlen;
			wlen = 0;
		}
		if (size > CHUNK) {
			uv_buf_t b[3] = {uv_buf_init((char *)hdr, REC_HEADER),
					 uv_buf_init((char *)state, h->state_len),
					 uv_buf_init((char *)payload, h->len)};
			rc = fs_write_all(fd, b, 3, woff);
			if (rc < 0)
				goto write_failed;
			woff += size;
		} else {
			memcpy(wbuf + wlen, hdr, REC_HEADER);
			memcpy(wbuf + wlen + REC_HEADER, state, size - REC_HEADER);
			wlen += size;
		}
		seg_add(&out, &nh);
		out.bytes += size;
	}
	if (rc < 0)
		goto out;
	if (wlen > 0) {
		uv_buf_t b = uv_buf_init((char *)wbuf, (unsigned)wlen);
		rc = fs_write_all(fd, &b, 1, woff);
		if (rc < 0)
			goto write_failed;
	}
	if (sp->sync != SPOOL_SYNC_NONE) {
		rc = fs_fsync(fd);
		if (rc < 0)
			goto write_failed;
	}
	rc = fs_close(fd);
	fd = -1;
	if (rc < 0)
		goto write_failed;
	reader_release(&r); /* Windows: no renaming over an open file */

	sp->dropped += dropped;
	rc = meta_flush(sp, err, errlen);
	if (rc < 0) {
		sp->dropped -= dropped;
		goto out;
	}
	if (active) {
		rc = close_active(sp, err, errlen);
		if (rc < 0)
			goto out;
	}
	if (out.records == 0) {
		fs_unlink(tmp);
		tmp_made = 0;
		if (active) {
			rc = create_active(sp, err, errlen);
			if (rc < 0)
				goto out;
		}
		rc = fs_unlink(path);
		if (rc < 0) {
			snprintf(err, errlen, "cannot remove %s: %s", path, uv_strerror(rc));
			goto out;
		}
		seg_forget(sp, i);
	} else {
		rc = fs_rename(tmp, path);
		if (rc < 0) {
			snprintf(err, errlen, "cannot replace %s: %s", path, uv_strerror(rc));
			goto out;
		}
		tmp_made = 0;
		out.id = sp->next_id++;
		sp->segs[i] = out;
		if (active) {
			rc = create_active(sp, err, errlen);
			if (rc < 0) {
				sp->sealed = 1;
				goto out;
			}
		}
	}
	if (snap_gone)
		sp->snap_bytes = 0;
	sync_dir(sp);
	t->records += dropped;
	t->lo = t->lo ? t->lo : lo;
	t->hi = hi ? hi : t->hi;
	rc = 0;
	goto out;

write_failed:
	snprintf(err, errlen, "cannot write %s: %s", tmp, uv_strerror(rc));
out:
	if (fd >= 0)
		fs_close(fd);
	if (tmp_made)
		fs_unlink(tmp);
	reader_free(&r);
	free(wbuf);
	return rc;
}

static uint64_t droppable_bytes(const struct spool *sp, uint64_t keep_snap)
{
	uint64_t n = 0;
	for (size_t i = 0; i < sp->nsegs; i++)
		n += sp->segs[i].drop_bytes;
	if (keep_snap && sp->snap_bytes && n >= sp->snap_bytes)
		n -= sp->snap_bytes;
	return n;
}

static int seg_droppable(const struct spool *sp, const struct segment *s, uint64_t keep_snap)
{
	uint64_t n = s->drop_records;
	if (keep_snap && sp->snap_bytes && seg_holds(s, keep_snap) && n > 0)
		n--;
	return n > 0;
}

/* Frees space for need bytes: acknowledged records first (free of loss), then
 * whole segments' worth of droppable records, oldest first. Nothing is dropped
 * when dropping everything droppable would still not make room. */
static int make_room(struct spool *sp, uint64_t need, enum spool_kind kind, char *err,
		     size_t errlen)
{
	/* A new snapshot supersedes the latest one, which may then go too. */
	uint64_t keep_snap = kind == SPOOL_SNAPSHOT ? 0 : sp->snap_seq;
	struct drop_tally t = {0};
	int rc = 0, compacted = 0;

	if (need > sp->max_bytes) {
		snprintf(err, errlen, "spool %s: a record of %" PRIu64 " bytes cannot fit in %" PRIu64
			 " bytes; raise the spool size", sp->dir, need, sp->max_bytes);
		return UV_ENOSPC;
	}
	for (;;) {
		uint64_t used = spool_bytes(sp);
		size_t i;
		if (used + need <= sp->max_bytes)
			break;
		for (i = 0; i < sp->nsegs && sp->segs[i].acked_records == 0; i++)
			;
		if (i < sp->nsegs) {
			compacted = 1;
			rc = compact(sp, i, 0, keep_snap, &t, err, errlen);
			if (rc < 0)
				break;
			continue;
		}
		if (used - droppable_bytes(sp, keep_snap) + need > sp->max_bytes) {
			snprintf(err, errlen,
				 "spool %s is full (%" PRIu64 " of %" PRIu64 " bytes) of records that "
				 "are never dropped (command results and the latest snapshot): cannot "
				 "append %" PRIu64 " bytes until the collector acknowledges some",
				 sp->dir, used, sp->max_bytes, need);
			rc = UV_ENOSPC;
			break;
		}
		for (i = 0; i < sp->nsegs && !seg_droppable(sp, &sp->segs[i], keep_snap); i++)
			;
		if (i == sp->nsegs) {
			snprintf(err, errlen, "spool %s is full and has nothing left to drop", sp->dir);
			rc = UV_ENOSPC;
			break;
		}
		compacted = 1;
		rc = compact(sp, i, 1, keep_snap, &t, err, errlen);
		if (rc < 0)
			break;
	}
	if (compacted)
		update_lowest(sp);
	if (t.records > 0)
		log_warn("spool: %s is full (limit %" PRIu64 " bytes): dropped %" PRIu64
			 " unacknowledged records, the oldest events and superseded snapshots "
			 "(sequences %" PRIu64 "..%" PRIu64 "); %" PRIu64 " dropped in all",
			 sp->dir, sp->max_bytes, t.records, t.lo, t.hi, sp->dropped);
	return rc;
}

static int rotate(struct spool *sp, char *err, size_t errlen)
{
	int rc = close_active(sp, err, errlen);
	if (rc < 0)
		return rc;
	rc = create_active(sp, err, errlen);
	if (rc < 0)
		return rc;
	/* The previous segment may be acknowledged already; it need not wait. */
	size_t prev = sp->nsegs - 2;
	if (sp->segs[prev].records == sp->segs[prev].acked_records) {
		char why[ERR_LEN];
		if (remove_segment(sp, prev, why, sizeof(why)) < 0)
			log_warn("spool: %s", why);
	}
	return 0;
}

/* ---- open and close ---------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int list_segments(struct spool *sp, uint64_t **names, size_t *count, char *err,
			 size_t errlen)
{
	uv_fs_t req;
	uv_dirent_t ent;
	uint64_t *list = NULL;
	size_t n = 0, cap = 0;
	int rc = uv_fs_scandir(NULL, &req, sp->dir, 0, NULL);
	if (rc < 0) {
		uv_fs_req_cleanup(&req);
		snprintf(err, errlen, "cannot list %s: %s", sp->dir, uv_strerror(rc));
		return rc;
	}
	rc = 0;
	while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
		uint64_t seq;
		if (strcmp(ent.name, COMPACT_TMP) == 0 || strcmp(ent.name, META_TMP) == 0) {
			/* Left by an interrupted rewrite; the file it was to replace is intact. */
			char path[PATH_LEN];
			dir_path(sp, ent.name, path);
			fs_unlink(path);
			continue;
		}
		if (!parse_seg_name(ent.name, &seq))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			uint64_t *grown = realloc(list, cap * sizeof(*grown));
			if (!grown) {
				rc = UV_ENOMEM;
				snprintf(err, errlen, "cannot list %s: out of memory", sp->dir);
				break;
			}
			list = grown;
		}
		list[n++] = seq;
	}
	uv_fs_req_cleanup(&req);
	if (rc < 0) {
		free(list);
		return rc;
	}
	if (n > 0)
		qsort(list, n, sizeof(*list), cmp_u64);
	*names = list;
	*count = n;
	return 0;
}

/* Damage running to the end of an older segment: how many records it took
 * shows only once the next segment's first sequence is known. */
struct tail_damage {
	char path[PATH_LEN];
	uint64_t off, len;
	uint64_t after_good; /* the sequence after the last good record; 0 unknown */
};

static void tail_damage_count(struct spool *sp, const struct tail_damage *td,
			      uint64_t next_first)
{
	uint64_t lost = 1;
	if (td->after_good && next_first > td->after_good)
		lost = next_first - td->after_good;
	sp->lost += lost;
	log_warn("spool: %s offset %" PRIu64 ": %" PRIu64 " damaged bytes skipped, %s%" PRIu64
		 " record%s lost",
		 td->path, td->off, td->len, td->after_good ? "" : "at least ", lost,
		 lost == 1 ? "" : "s");
}

/* Checks every record of one segment file and accounts for it. Damage at
 * the end of the newest file is a torn write, to cut at *cut; at the end of
 * an older one it goes to *td. */
static int scan_segment(struct spool *sp, struct segment *s, int newest, uint64_t prev_max,
			uint64_t *cut, struct tail_damage *td, char *err, size_t errlen)
{
	char path[PATH_LEN];
	uint64_t size = 0;
	struct reader r = {0};
	int rc;

	seg_path(sp, s->name_seq, path);
	rc = fs_size(path, &size);
	if (rc < 0) {
		snprintf(err, errlen, "cannot read %s: %s", path, uv_strerror(rc));
		return rc;
	}
	*cut = UINT64_MAX;
	td->len = 0;
	s->bytes = size;
	reader_init(&r, path, size, prev_max + 1);
	while ((rc = reader_next(&r, err, errlen)) > 0) {
		if (rc == READ_DAMAGE) {
			if (newest && r.damage_off + r.damage_len == size) {
				*cut = r.damage_off;
				s->bytes = r.damage_off;
				sp->torn++;
				log_warn("spool: cut a torn record at %s offset %" PRIu64 " (%" PRIu64
					 " bytes)",
					 path, r.damage_off, r.damage_len);
			} else if (r.damage_off + r.damage_len == size) {
				/* A segment never rewritten holds every sequence from its
				 * name on: then the gap to the next segment is the loss. */
				uint64_t after_good = s->name_seq + s->records;
				s->damaged = 1;
				snprintf(td->path, sizeof(td->path), "%s", path);
				td->off = r.damage_off;
				td->len = r.damage_len;
				td->after_good = s->records == 0 || s->last + 1 == after_good ? after_good
											       : 0;
			} else {
				s->damaged = 1;
				sp->lost += r.damage_lost;
				log_warn("spool: %s offset %" PRIu64 ": %" PRIu64 " damaged bytes skipped, "
					 "%" PRIu64 " record%s lost",
					 path, r.damage_off, r.damage_len, r.damage_lost,
					 r.damage_lost == 1 ? "" : "s");
			}
			continue;
		}
		seg_add(s, &r.h);
		if (r.h.state_len > 0 && r.h.seq > sp->state_seq) {
			memcpy(sp->state, r.rec + REC_HEADER, r.h.state_len);
			sp->state[r.h.state_len] = '\0';
			sp->state_seq = r.h.seq;
		}
		if (r.h.kind == SPOOL_SNAPSHOT && r.h.seq > sp->acked) {
			sp->snap_seq = r.h.seq;
			sp->snap_bytes = rec_size(&r.h);
		}
	}
	if (rc == 0 && r.stale > 0) {
		log_warn("spool: %s: skipped %" PRIu64 " records that repeat earlier sequences",
			 path, r.stale);
		s->damaged = 1;
	}
	reader_free(&r);
	return rc;
}

static int recover(struct spool *sp, char *err, size_t errlen)
{
	uint64_t *names = NULL;
	size_t n = 0;
	uint64_t prev_max = 0, name_max = 0, cut = UINT64_MAX;
	char path[PATH_LEN];
	struct tail_damage *td = NULL, *next_td = NULL;
	int meta = meta_read(sp), rc;

	td = calloc(1, sizeof(*td));
	next_td = calloc(1, sizeof(*next_td));
	if (!td || !next_td) {
		snprintf(err, errlen, "spool %s: out of memory", sp->dir);
		rc = UV_ENOMEM;
		goto out;
	}

	rc = list_segments(sp, &names, &n, err, errlen);
	if (rc < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		struct segment s = {0};
		int newest = i == n - 1;
		s.name_seq = names[i];
		s.id = sp->next_id++;
		name_max = names[i];
		rc = scan_segment(sp, &s, newest, prev_max, &cut, next_td, err, errlen);
		if (rc < 0)
			goto out;
		if (td->len > 0)
			tail_damage_count(sp, td, s.records && s.first < names[i] ? s.first : names[i]);
		struct tail_damage *swap = td;
		td = next_td;
		next_td = swap;
		if (s.records > 0)
			prev_max = s.last;
		if (!newest && s.records == 0) {
			/* Nothing readable is left in it (its loss is logged above). */
			seg_path(sp, s.name_seq, path);
			fs_unlink(path);
			continue;
		}
		rc = seg_push(sp, &s);
		if (rc < 0) {
			snprintf(err, errlen, "spool %s: out of memory", sp->dir);
			goto out;
		}
	}
	if (meta == 0 && n > 0)
		log_warn("spool: %s/%s is missing; recovering from the segments", sp->dir, META_NAME);

	/* A segment named N was created when N was next: the names bound it too. */
	if (prev_max > sp->highest)
		sp->highest = prev_max;
	if (name_max > 0 && name_max - 1 > sp->highest)
		sp->highest = name_max - 1;

	if (sp->nsegs > 0) {
		struct segment *s = &sp->segs[sp->nsegs - 1];
		seg_path(sp, s->name_seq, path);
		rc = fs_open(path, UV_FS_O_WRONLY, 0);
		if (rc < 0) {
			snprintf(err, errlen, "cannot open %s: %s", path, uv_strerror(rc));
			goto out;
		}
		sp->fd = rc;
		if (cut != UINT64_MAX) {
			rc = fs_truncate(sp->fd, cut);
			if (rc == 0 && sp->sync != SPOOL_SYNC_NONE)
				rc = fs_fsync(sp->fd);
			if (rc < 0) {
				snprintf(err, errlen, "cannot cut the torn end of %s: %s", path,
					 uv_strerror(rc));
				goto out;
			}
		}
		if (s->records == 0 && s->name_seq == sp->highest + 1 && s->bytes > 0) {
			/* Nothing readable: start it afresh. */
			rc = fs_truncate(sp->fd, 0);
			if (rc < 0) {
				snprintf(err, errlen, "cannot truncate %s: %s", path, uv_strerror(rc));
				goto out;
			}
			s->bytes = 0;
			s->next_index = 0;
			s->damaged = 0;
		} else if (s->records == 0 && s->name_seq != sp->highest + 1) {
			/* An empty last segment must carry the high-water mark in its name. */
			fs_close(sp->fd);
			sp->fd = -1;
			seg_forget(sp, sp->nsegs - 1);
			rc = fs_unlink(path);
			if (rc < 0) {
				snprintf(err, errlen, "cannot remove %s: %s", path, uv_strerror(rc));
				goto out;
			}
		}
	}
	if (sp->nsegs == 0 || sp->fd < 0) {
		rc = create_active(sp, err, errlen);
		if (rc < 0)
			goto out;
	}

	for (size_t i = 0; i < sp->nsegs; i++) {
		uint64_t above;
		rc = seg_split(sp, &sp->segs[i], sp->acked, &sp->segs[i].acked_records, &above,
			       err, errlen);
		if (rc < 0)
			goto out;
	}
	rc = meta_write(sp, err, errlen);
	if (rc < 0)
		goto out;
	while (sp->nsegs > 1 && sp->segs[0].records == sp->segs[0].acked_records) {
		rc = remove_segment(sp, 0, err, errlen);
		if (rc < 0)
			goto out;
	}
	/* Rewrite damaged segments once, so their loss is not counted again. A
	 * rewrite leaves at i either the clean file or the next segment. */
	for (size_t i = 0; i < sp->nsegs;) {
		struct drop_tally t = {0};
		char why[ERR_LEN];
		if (!sp->segs[i].damaged) {
			i++;
		} else if (compact(sp, i, 0, sp->snap_seq, &t, why, sizeof(why)) < 0) {
			log_warn("spool: %s", why);
			sp->segs[i++].damaged = 0;
		}
	}
	update_lowest(sp);
	rc = 0;
out:
	free(names);
	free(td);
	free(next_td);
	return rc;
}

int spool_open(struct spool **out, const struct spool_options *o, char *err, size_t errlen)
{
	struct spool *sp = NULL;
	int rc;

	*out = NULL;
	if (!o || !o->dir || !o->dir[0]) {
		snprintf(err, errlen, "spool: no directory given");
		return UV_EINVAL;
	}
	uint64_t max_bytes = o->max_bytes ? o->max_bytes : SPOOL_DEFAULT_MAX_BYTES;
	uint64_t segment_bytes = o->segment_bytes ? o->segment_bytes : SPOOL_DEFAULT_SEGMENT_BYTES;
	if (segment_bytes < SPOOL_MIN_BYTES || segment_bytes > MAX_SEGMENT_BYTES ||
	    max_bytes < SPOOL_MIN_BYTES) {
		snprintf(err, errlen,
			 "spool %s: segment size %" PRIu64 " must be 4 KiB to 1 GiB and spool size %" PRIu64
			 " at least 4 KiB",
			 o->dir, segment_bytes, max_bytes);
		return UV_EINVAL;
	}
	if (o->sync != SPOOL_SYNC_BATCH && o->sync != SPOOL_SYNC_ALWAYS &&
	    o->sync != SPOOL_SYNC_NONE) {
		snprintf(err, errlen, "spool %s: unknown sync policy %d", o->dir, (int)o->sync);
		return UV_EINVAL;
	}
	if (strlen(o->dir) > PATH_LEN - 64) {
		snprintf(err, errlen, "spool %.64s...: directory name too long", o->dir);
		return UV_ENAMETOOLONG;
	}
	crc_init();
	sp = calloc(1, sizeof(*sp));
	if (!sp || !(sp->dir = strdup(o->dir))) {
		free(sp);
		snprintf(err, errlen, "spool %s: out of memory", o->dir);
		return UV_ENOMEM;
	}
	for (size_t n = strlen(sp->dir); n > 1 && (sp->dir[n - 1] == '/' || sp->dir[n - 1] == '\\');)
		sp->dir[--n] = '\0';
	sp->max_bytes = max_bytes;
	sp->segment_bytes = segment_bytes;
	sp->sync = o->sync;
	sp->fd = -1;
	sp->next_id = 1;

	rc = util_mkdir_p(sp->dir, 0700, err, errlen);
	if (rc < 0)
		goto out;
	rc = recover(sp, err, errlen);
	if (rc < 0)
		goto out;
	log_info("spool: %s: %" PRIu64 " unacknowledged records, %" PRIu64 " bytes in %zu "
		 "segments, next sequence %" PRIu64,
		 sp->dir, spool_records(sp), spool_bytes(sp), sp->nsegs, sp->highest + 1);
	*out = sp;
	sp = NULL;
out:
	if (sp) {
		if (sp->fd >= 0)
			fs_close(sp->fd);
		free(sp->segs);
		free(sp->dir);
		free(sp);
	}
	return rc;
}

void spool_close(struct spool *sp)
{
	char err[ERR_LEN];
	if (!sp)
		return;
	if (close_active(sp, err, sizeof(err)) < 0)
		log_err("spool: %s", err);
	struct meta_fields now;
	meta_fields_now(sp, &now);
	if (!sp->meta_current || memcmp(&now, &sp->written, sizeof(now)) != 0)
		if (meta_write(sp, err, sizeof(err)) < 0)
			log_err("spool: %s", err);
	for (struct spool_cursor *c = sp->cursors; c; c = c->next) {
		reader_release(&c->r);
		c->sp = NULL;
	}
	free(sp->segs);
	free(sp->dir);
	free(sp);
}

/* ---- appending and acknowledging ----------------------------------------------- */

uint64_t spool_next_sequence(const struct spool *sp)
{
	return sp->highest + 1;
}

int spool_append(struct spool *sp, enum spool_kind kind, const uint8_t *payload, size_t len,
		 const char *state, uint64_t *seq_out, char *err, size_t errlen)
{
	size_t state_len = state ? strlen(state) : 0;
	int rc;

	if (kind != SPOOL_SNAPSHOT && kind != SPOOL_EVENT && kind != SPOOL_RESULT) {
		snprintf(err, errlen, "spool %s: unknown record kind %d", sp->dir, (int)kind);
		return UV_EINVAL;
	}
	if (len > SPOOL_MAX_PAYLOAD) {
		snprintf(err, errlen, "spool %s: a record of %zu bytes is larger than the limit of %d",
			 sp->dir, len, SPOOL_MAX_PAYLOAD);
		return UV_E2BIG;
	}
	if (!payload && len > 0) {
		snprintf(err, errlen, "spool %s: no payload", sp->dir);
		return UV_EINVAL;
	}
	if (state_len > SPOOL_MAX_STATE) {
		snprintf(err, errlen, "spool %s: collection state of %zu bytes is longer than %d",
			 sp->dir, state_len, SPOOL_MAX_STATE);
		return UV_EINVAL;
	}
	if (sp->highest >= SEQ_LIMIT) {
		snprintf(err, errlen, "spool %s: sequence numbers exhausted", sp->dir);
		return UV_EOVERFLOW;
	}
	struct rec_header h = {
		.kind = (uint8_t)kind,
		.state_len = (uint16_t)state_len,
		.len = (uint32_t)len,
		.seq = sp->highest + 1,
	};
	uint64_t size = rec_size(&h);
	rc = make_room(sp, size, kind, err, errlen);
	if (rc < 0)
		return rc;
	struct segment *s = &sp->segs[sp->nsegs - 1];
	if (sp->sealed || (s->bytes > 0 && s->bytes + size > sp->segment_bytes)) {
		rc = rotate(sp, err, errlen);
		if (rc < 0)
			return rc;
	}
	rc = open_active(sp, err, errlen);
	if (rc < 0)
		return rc;
	s = &sp->segs[sp->nsegs - 1];
	h.index = s->next_index;

	uint8_t hdr[REC_HEADER];
	header_encode(hdr, &h, (const uint8_t *)state, payload);
	uv_buf_t bufs[3] = {uv_buf_init((char *)hdr, REC_HEADER),
			    uv_buf_init((char *)state, (unsigned)state_len),
			    uv_buf_init((char *)payload, (unsigned)len)};
	rc = fs_write_all(sp->fd, bufs, 3, s->bytes);
	if (rc == 0 && sp->sync == SPOOL_SYNC_ALWAYS)
		rc = fs_fsync(sp->fd);
	if (rc < 0) {
		char path[PATH_LEN];
		seg_path(sp, s->name_seq, path);
		snprintf(err, errlen, "cannot write %s: %s", path, uv_strerror(rc));
		/* No partial record may stay where the next one goes; if it cannot be
		 * cut, the next append starts a new file (recovery skips the rest). */
		if (fs_truncate(sp->fd, s->bytes) < 0)
			sp->sealed = 1;
		return rc;
	}
	seg_add(s, &h);
	s->bytes += size;
	sp->highest = h.seq;
	sp->dirty = sp->sync == SPOOL_SYNC_BATCH;
	if (kind == SPOOL_SNAPSHOT) {
		sp->snap_seq = h.seq;
		sp->snap_bytes = size;
	}
	if (state_len > 0) {
		memcpy(sp->state, state, state_len + 1);
		sp->state_seq = h.seq;
	}
	if (sp->lowest_unacked == 0)
		sp->lowest_unacked = h.seq;
	if (seq_out)
		*seq_out = h.seq;
	return 0;
}

int spool_sync(struct spool *sp, char *err, size_t errlen)
{
	if (!sp->dirty || sp->fd < 0)
		return 0;
	int rc = fs_fsync(sp->fd);
	if (rc < 0) {
		char path[PATH_LEN];
		seg_path(sp, sp->segs[sp->nsegs - 1].name_seq, path);
		snprintf(err, errlen, "cannot flush %s to disk: %s", path, uv_strerror(rc));
		return rc;
	}
	sp->dirty = 0;
	return 0;
}

int spool_ack(struct spool *sp, uint64_t seq, char *err, size_t errlen)
{
	int rc;
	if (seq <= sp->acked)
		return 0;
	if (seq > sp->highest) {
		snprintf(err, errlen,
			 "spool %s: acknowledgement of sequence %" PRIu64
			 " is above the highest appended (%" PRIu64 ")",
			 sp->dir, seq, sp->highest);
		return UV_EINVAL;
	}
	sp->acked = seq;
	sp->lowest_unacked = 0;
	for (size_t i = 0; i < sp->nsegs; i++) {
		struct segment *s = &sp->segs[i];
		uint64_t above;
		if (s->records == 0)
			break;
		if (s->first > seq) {
			if (!sp->lowest_unacked)
				sp->lowest_unacked = s->first;
			break;
		}
		rc = seg_split(sp, s, seq, &s->acked_records, &above, err, errlen);
		if (rc < 0)
			return rc;
		if (above && !sp->lowest_unacked)
			sp->lowest_unacked = above;
	}
	rc = meta_write(sp, err, errlen);
	if (rc < 0)
		return rc;
	while (sp->nsegs > 1 && sp->segs[0].records == sp->segs[0].acked_records) {
		rc = remove_segment(sp, 0, err, errlen);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ---- counters ------------------------------------------------------------- */

uint64_t spool_highest(const struct spool *sp)
{
	return sp->highest;
}

uint64_t spool_acked(const struct spool *sp)
{
	return sp->acked;
}

uint64_t spool_lowest_unacked(const struct spool *sp)
{
	return sp->lowest_unacked;
}

uint64_t spool_bytes(const struct spool *sp)
{
	uint64_t n = 0;
	for (size_t i = 0; i < sp->nsegs; i++)
		n += sp->segs[i].bytes;
	return n;
}

uint64_t spool_records(const struct spool *sp)
{
	uint64_t n = 0;
	for (size_t i = 0; i < sp->nsegs; i++)
		n += sp->segs[i].records - sp->segs[i].acked_records;
	return n;
}

uint64_t spool_dropped(const struct spool *sp)
{
	return sp->dropped;
}

uint64_t spool_torn(const struct spool *sp)
{
	return sp->torn;
}

uint64_t spool_lost(const struct spool *sp)
{
	return sp->lost;
}

size_t spool_segments(const struct spool *sp)
{
	return sp->nsegs;
}

const char *spool_state(const struct spool *sp)
{
	return sp->state;
}

/* ---- iterating ------------------------------------------------------------ */

int spool_iter_init(struct spool *sp, struct spool_iter *it, uint64_t after)
{
	struct spool_cursor *c = calloc(1, sizeof(*c));
	it->cur = NULL;
	if (!c)
		return UV_ENOMEM;
	c->sp = sp;
	c->after = after;
	reader_init(&c->r, "", 0, 0);
	c->next = sp->cursors;
	sp->cursors = c;
	it->cur = c;
	return 0;
}

int spool_iter_next(struct spool_iter *it, struct spool_record *rec)
{
	struct spool_cursor *c = it->cur;
	char err[ERR_LEN];
	if (!c)
		return UV_EINVAL;
	struct spool *sp = c->sp;
	if (!sp)
		return UV_EBADF;
	for (;;) {
		struct segment *s = NULL;
		if (c->after < sp->acked)
			c->after = sp->acked;
		for (size_t i = 0; i < sp->nsegs && !s; i++)
			if (sp->segs[i].records > 0 && sp->segs[i].last > c->after)
				s = &sp->segs[i];
		if (!s)
			return 0;
		if (s->id != c->seg_id) {
			/* Another file, or this one rewritten: read it from its start. */
			char path[PATH_LEN];
			seg_path(sp, s->name_seq, path);
			reader_release(&c->r);
			reader_init(&c->r, path, s->bytes, s->first);
			c->seg_id = s->id;
		}
		c->r.end = s->bytes;
		int rc = reader_next(&c->r, err, sizeof(err));
		if (rc < 0) {
			log_err("spool: %s", err);
			return rc;
		}
		if (rc == READ_DAMAGE) {
			log_debug("spool: %s offset %" PRIu64 ": skipped %" PRIu64 " damaged bytes",
				  c->r.path, c->r.damage_off, c->r.damage_len);
			continue;
		}
		if (rc == READ_END) {
			/* Nothing more is readable here although the segment said so. */
			c->after = s->last;
			continue;
		}
		if (c->r.h.seq <= c->after)
			continue;
		c->after = c->r.h.seq;
		rec->kind = (enum spool_kind)c->r.h.kind;
		rec->seq = c->r.h.seq;
		rec->payload = c->r.rec + REC_HEADER + c->r.h.state_len;
		rec->len = c->r.h.len;
		return 1;
	}
}

void spool_iter_close(struct spool_iter *it)
{
	struct spool_cursor *c = it->cur;
	if (!c)
		return;
	if (c->sp) {
		struct spool_cursor **pp = &c->sp->cursors;
		while (*pp && *pp != c)
			pp = &(*pp)->next;
		if (*pp)
			*pp = c->next;
	}
	reader_free(&c->r);
	free(c);
	it->cur = NULL;
}
