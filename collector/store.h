/* The collector's store: every record agents send, kept durably.
 *
 * Writes go through one writer thread that commits them in batched
 * transactions; the committed callback runs on the loop afterwards, and only
 * then may a record be acknowledged to its agent. Reads used while serving
 * agents (the highest sequence stored for a host) use a separate connection
 * on the loop thread; SQLite's WAL mode lets them run beside the writer.
 *
 * The SQL and the schema, with its versioned migrations, live in
 * store_sqlite.c and nowhere else. */
#ifndef EXFLEET_STORE_H
#define EXFLEET_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "exfleet.pb-c.h"
#include "status.h"

/* The schema version this collector writes (PRAGMA user_version). */
#define STORE_SCHEMA_VERSION 2

struct store;

struct store_options {
	const char *path;
	const struct status_rules *rules; /* NULL: the Exchange 5.5 defaults */
	size_t queue_high;   /* writes queued above which readers should pause */
	size_t queue_low;    /* and below which they may resume */
	unsigned batch_max;  /* writes per transaction, at most */
};

void store_options_default(struct store_options *o);

/* One agent message (Hello, Snapshot, EventBatch, CommandResult, Heartbeat),
 * handed to the writer with its ownership. After the records of a write are
 * stored, the host's status is classified again in the same transaction
 * (status.h) when they can change it, and a change is kept in the host's
 * status history. */
struct store_write {
	char host_id[65];
	Exfleet__AgentMessage *msg;  /* freed by the store after commit */
	int64_t received_ms;
	/* Set by the writer: the highest sequence stored for the host after
	 * this write's transaction committed, and its outcome. */
	uint64_t highest_seq;
	int status;                  /* 0, or negative when the batch failed */
	struct store_write *next;
};

/* Called on the loop for each write, in submission order, after commit. The
 * callee must not keep w. */
typedef void (*store_committed_cb)(struct store_write *w, void *arg);

int store_open(struct store **out, uv_loop_t *loop, const struct store_options *o,
	       store_committed_cb committed_cb, void *arg, char *err, size_t errlen);

/* Queues w for the writer and returns the queue depth. */
size_t store_submit(struct store *st, struct store_write *w);
size_t store_queue_depth(struct store *st);
/* Writes committed since open, and transactions that committed them. */
uint64_t store_committed(struct store *st);
uint64_t store_transactions(struct store *st);

/* The highest sequence committed for host_id (0 for a host never seen). */
int store_host_highest(struct store *st, const char *host_id, uint64_t *seq);

/* Commits what is queued, stops the writer and closes the database. The
 * committed callbacks for the last writes run before done_cb. */
void store_close(struct store *st, void (*done_cb)(void *arg), void *arg);

#endif
