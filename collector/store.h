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
#define STORE_SCHEMA_VERSION 3
#define STORE_COMMAND_ID_LEN 65 /* a command id and its NUL */

struct store;

struct store_options {
	const char *path;
	const struct status_rules *rules; /* NULL: the Exchange 5.5 defaults */
	size_t queue_high;   /* writes queued above which readers should pause */
	size_t queue_low;    /* and below which they may resume */
	unsigned batch_max;  /* writes per transaction, at most */
	/* Retention, enforced in the background by the writer: events
	 * received longer ago than this go (0: kept forever), and a host keeps
	 * at most this many of its newest events (0: no limit). */
	uint64_t event_max_age_ms;
	uint64_t events_per_host;
	uint64_t prune_interval_ms;
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
	/* Or, with msg NULL: commands' new state (the relay's bookkeeping). */
	char (*command_ids)[STORE_COMMAND_ID_LEN]; /* ncommands ids, freed by the store */
	size_t ncommands;
	const char *command_state;   /* a string literal: "delivered", "expired" */
	int prune;                   /* or, with neither: a retention pass */
	uint8_t *peer_cert;          /* with a Hello: the agent's certificate (DER), freed */
	size_t peer_cert_len;
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

/* Queues a retention pass now (it also runs every prune_interval_ms). */
void store_prune(struct store *st);
/* Events the retention passes removed since open. */
uint64_t store_pruned(struct store *st);

/* Queues a change of a command's state (delivered, expired). */
void store_command_state(struct store *st, const char *command_id, const char *state);
/* The same for n commands as one write, so that a wave's deliveries count
 * once against the store's queue, not once each. Takes ids over. */
void store_commands_state(struct store *st, char (*ids)[STORE_COMMAND_ID_LEN], size_t n,
			  const char *state);

/* Commands waiting to be relayed (state "queued"), oldest first, whose row is
 * newer than *after; *after advances past each one reported. */
struct store_command {
	const char *command_id;
	const char *host_id;
	int64_t expires_at_ms;
	const uint8_t *envelope;     /* an encoded Exfleet__Command */
	size_t len;
};
typedef void (*store_command_cb)(const struct store_command *c, void *arg);
int store_queued_commands(struct store *st, int64_t *after, store_command_cb cb, void *arg);

/* The highest sequence committed for host_id (0 for a host never seen). */
int store_host_highest(struct store *st, const char *host_id, uint64_t *seq);

/* Commits what is queued, stops the writer and closes the database. The
 * committed callbacks for the last writes run before done_cb. */
void store_close(struct store *st, void (*done_cb)(void *arg), void *arg);

/* ---- a store without its writer thread or a loop ----
 * For one write at a time outside the collector's own process (tests, and
 * tools run where the database is): never creates the file, and refuses a
 * schema version other than this build's. */
int store_open_reader(struct store **out, const char *path, char *err, size_t errlen);
void store_close_reader(struct store *st);

/* Replaces the wave plan with these (host, wave, planned date) triples, in
 * one transaction with an audit entry "waves.imported" by actor (NULL:
 * none): all or nothing. */
struct store_wave {
	const char *host_id;
	const char *wave;
	const char *planned_date; /* "" when not known */
};
int store_import_plan(struct store *st, const struct store_wave *plan, size_t n,
		      const char *actor, int64_t now_ms, char *err, size_t errlen);

/* The audit chain: each entry's hash is SHA-256 over the previous hash
 * (STORE_AUDIT_GENESIS for the first), the time, actor, action and detail,
 * each with its terminating NUL; out is hex. */
#define STORE_AUDIT_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"
void store_audit_hash(const char *prev, int64_t at, const char *actor, const char *action,
		      const char *detail, char out[65]);

/* Appends one entry to the audit log (its own transaction). */
int store_audit_add(struct store *st, int64_t at, const char *actor, const char *action,
		    const char *detail, char *err, size_t errlen);

/* Queues an operator's command (an encoded Exfleet__Command) for host_id;
 * the relay delivers it. UV_EEXIST for an id already used. */
int store_enqueue_command(struct store *st, const char *command_id, const char *host_id,
			  const char *action, const char *issuer, int64_t issued_ms,
			  int64_t expires_ms, const uint8_t *envelope, size_t len, char *err,
			  size_t errlen);

#endif
