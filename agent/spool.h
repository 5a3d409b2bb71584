/* The agent's durable spool. Every observation (a Snapshot, an event-log
 * Event, a CommandResult: opaque protobuf bytes here) takes the next per-host
 * sequence number and is written to disk before it is sent; it leaves only
 * when the collector acknowledges it (cumulatively: "everything <= seq is
 * stored"), or when a full spool drops it (below). Not thread-safe: one loop
 * thread owns a spool. All file calls are libuv's synchronous uv_fs_*.
 *
 * On disk, in the spool directory (created 0700):
 *   seg-<N>.log  segment files, N (20 digits) the sequence of the first record
 *                written to the file; names sort in sequence order and a file
 *                holds records in ascending sequence order. The newest one takes
 *                appends until it reaches segment_bytes.
 *   spool.meta   high-water mark, acknowledged position, drop/torn/lost
 *                counters and the latest collection state, written whole to
 *                spool.meta.tmp and renamed over. Layout: "EXSPMET1", u64
 *                highest, acked, dropped, torn, lost, state_seq, u16 state
 *                length, the state, u32 CRC-32C of all before it.
 *   compact.tmp  a segment being rewritten (renamed over it when complete).
 * A record: a 32-byte header, then state (0..256 bytes), then payload.
 *   0 magic "SPR1"   4 kind (1 snapshot, 2 event, 3 result)   5 flags (0)
 *   6 u16 state_len  8 u32 payload_len  12 u32 index (0, 1, ... within the file)
 *  16 u64 sequence  24 u32 CRC-32C of bytes 0..23, state and payload
 *  28 u32 CRC-32C of bytes 0..27 (lets a reader find the next record after damage)
 * All integers little-endian.
 *
 * Recovery (spool_open): every segment is checked record by record. Damage at
 * the end of the newest segment is a torn write: it is cut off, counted
 * (spool_torn) and logged. Damage anywhere else is skipped up to the next good
 * record, which keeps the rest of that segment and every other one; the records
 * lost are counted (spool_lost: the gap in the index field, or up to the next
 * segment's first sequence when the damage runs to the end of a file) and
 * logged with file and offset, and the segment is rewritten without the damage
 * so the loss is counted once. Leftover *.tmp files are removed. The high-water mark is the highest of spool.meta and the
 * segments (the newest segment is never removed, and an empty one is named for
 * the next sequence), so sequence numbers are never reused even when
 * spool.meta is lost.
 *
 * Full spool (an append would pass max_bytes): records already acknowledged
 * are given back first; then the oldest segment holding droppable records
 * (events, and snapshots other than the latest) is rewritten without them,
 * keeping results and the latest snapshot with their original sequence
 * numbers, and so on until the record fits. Drops go a segment at a time,
 * oldest first; each append that drops logs one line. Drops are counted
 * (spool_dropped). When only results and the latest snapshot remain, the
 * append fails with UV_ENOSPC and nothing is dropped.
 *
 * Memory holds a few words per segment, never per record: with the defaults a
 * full spool is about 64 segments however many records it holds. */
#ifndef EXFLEET_SPOOL_H
#define EXFLEET_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#define SPOOL_MAX_PAYLOAD (1024 * 1024)
#define SPOOL_MAX_STATE 256
#define SPOOL_DEFAULT_MAX_BYTES (64ull * 1024 * 1024)
#define SPOOL_DEFAULT_SEGMENT_BYTES (1024ull * 1024)
/* segment_bytes may range from 4 KiB to 1 GiB; max_bytes from 4 KiB up. */
#define SPOOL_MIN_BYTES 4096ull

enum spool_kind {
	SPOOL_SNAPSHOT = 1, /* whole host state: only the latest one is kept when full */
	SPOOL_EVENT = 2,    /* event-log records: dropped first, oldest first */
	SPOOL_RESULT = 3,   /* command results: never dropped */
};

/* When appended records reach the disk itself (they are in the operating
 * system's cache, safe from a crash of the agent, as soon as spool_append
 * returns in every mode).
 * SPOOL_SYNC_BATCH (the default): the caller appends a batch, then calls
 *   spool_sync() once before sending it; after spool_sync returns 0 the batch
 *   and its collection state survive power loss. Segment rotation, the meta
 *   file and recovery are synced too.
 * SPOOL_SYNC_ALWAYS: every append is flushed to disk before it returns
 *   (fsync per record; slow; spool_sync has nothing left to do).
 * SPOOL_SYNC_NONE: nothing is ever flushed (spool_sync does nothing); power
 *   loss may lose or reuse sequences the collector has already seen. Tests and
 *   benchmarks only. */
enum spool_sync {
	SPOOL_SYNC_BATCH = 0,
	SPOOL_SYNC_ALWAYS,
	SPOOL_SYNC_NONE,
};

struct spool_options {
	const char *dir;
	uint64_t max_bytes;     /* 0: SPOOL_DEFAULT_MAX_BYTES */
	uint64_t segment_bytes; /* 0: SPOOL_DEFAULT_SEGMENT_BYTES */
	enum spool_sync sync;
};

struct spool;

struct spool_record {
	enum spool_kind kind;
	uint64_t seq;
	const uint8_t *payload; /* valid until the next spool_iter_next or close */
	size_t len;
};

/* Caller-allocated handle; its state lives behind cur. */
struct spool_iter {
	struct spool_cursor *cur;
};

/* Opens (creating dir if missing) and recovers the spool. On failure *out is
 * NULL and err names the file and the cause. */
int spool_open(struct spool **out, const struct spool_options *o, char *err, size_t errlen);
/* Syncs (unless SPOOL_SYNC_NONE), writes the meta file and frees the spool.
 * Open iterators stop working (spool_iter_next returns UV_EBADF) but must
 * still be closed. */
void spool_close(struct spool *sp);

/* The sequence the next append gets: the caller encodes it into the payload
 * before spool_append. */
uint64_t spool_next_sequence(const struct spool *sp);

/* Appends one record of len <= SPOOL_MAX_PAYLOAD bytes (UV_E2BIG above). state,
 * when neither NULL nor "", is the collector-side cursor (<= SPOOL_MAX_STATE
 * bytes) committed in the same record: after a crash spool_state() returns the
 * state of the last record that survived. Makes room as described above;
 * UV_ENOSPC when it cannot. *seq_out (may be NULL) gets the record's sequence. */
int spool_append(struct spool *sp, enum spool_kind kind, const uint8_t *payload, size_t len,
		 const char *state, uint64_t *seq_out, char *err, size_t errlen);
/* Makes every append so far durable (SPOOL_SYNC_BATCH; a no-op otherwise). */
int spool_sync(struct spool *sp, char *err, size_t errlen);
/* The collector stored every record <= seq. Acks at or below spool_acked() are
 * ignored; an ack above spool_highest() is UV_EINVAL (a collector bug). The
 * position is persisted; segments holding only acknowledged records are removed. */
int spool_ack(struct spool *sp, uint64_t seq, char *err, size_t errlen);

uint64_t spool_highest(const struct spool *sp);        /* last sequence handed out; 0 none */
uint64_t spool_acked(const struct spool *sp);
uint64_t spool_lowest_unacked(const struct spool *sp); /* 0 when nothing is unacked */
uint64_t spool_bytes(const struct spool *sp);          /* on disk, in segment files */
uint64_t spool_records(const struct spool *sp);        /* unacknowledged, on disk */
uint64_t spool_dropped(const struct spool *sp);        /* unacked records dropped when full */
uint64_t spool_torn(const struct spool *sp);           /* torn tails cut at open */
uint64_t spool_lost(const struct spool *sp);           /* records lost to damage elsewhere */
size_t spool_segments(const struct spool *sp);         /* segment files, i.e. memory used */
/* The state of the latest append that carried one; "" when none ever did. */
const char *spool_state(const struct spool *sp);

/* Reads records with sequence > max(after, spool_acked()) in ascending order,
 * from disk, a buffer at a time. Appends, acks and drops between calls are
 * fine: the iterator sees new records and skips records that left. */
int spool_iter_init(struct spool *sp, struct spool_iter *it, uint64_t after);
/* 1: a record in *rec; 0: no more for now (more may come after appends);
 * < 0: an error, logged with the file's name. */
int spool_iter_next(struct spool_iter *it, struct spool_record *rec);
void spool_iter_close(struct spool_iter *it);

#endif
