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
	/* Or, with msg NULL: a command's new state (the relay's bookkeeping). */
	char command_id[65];
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

/* ---- direct access for exfleetctl, until the collector's API serves it ----
 * A reader opens the database without a writer thread or a loop; it may
 * also queue a command for the collector's relay to pick up. */
int store_open_reader(struct store **out, const char *path, char *err, size_t errlen);
void store_close_reader(struct store *st);

/* One row of a query: column names and their text values (NULL for SQL
 * NULL), valid during the callback. */
enum store_type { STORE_NULL, STORE_INTEGER, STORE_TEXT };
struct store_row {
	int n;
	const char *const *names;
	const char *const *values;
	const enum store_type *types;
};
typedef void (*store_row_cb)(const struct store_row *row, void *arg);

enum store_view {
	STORE_HOSTS,          /* every host with its status; filters: status, wave */
	STORE_HOST,           /* one host (key: host id) */
	STORE_HOST_SERVICES,
	STORE_HOST_EVENTS,    /* its newest events */
	STORE_HOST_HISTORY,   /* its status changes */
	STORE_HOST_COMMANDS,
	STORE_REPORT,         /* per host, for the wave report: plan, status, times */
	STORE_AUDIT,          /* the audit log, oldest first */
};
/* Rows of view; key is the host id for the per-host views. status and wave
 * filter STORE_HOSTS (NULL: any). */
int store_view(struct store *st, enum store_view view, const char *key, const char *status,
	       const char *wave, store_row_cb cb, void *arg, char *err, size_t errlen);

/* Walks the audit log and checks every entry's hash and its link to the
 * one before: *entries read, *first_bad the id of the first entry that does
 * not check (0 when the chain is whole). */
int store_audit_verify(struct store *st, int64_t *entries, int64_t *first_bad, char *err,
		       size_t errlen);

/* What an operator needs to seal a password to host_id: the agent's X25519
 * public key, its signature by the agent's certificate key, and that
 * certificate (DER), all from the agent's last Hello. malloc'd; UV_ENOENT
 * when the host or its key is unknown (err says which). */
int store_host_sealing(struct store *st, const char *host_id, uint8_t **pub, size_t *pub_len,
		       uint8_t **sig, size_t *sig_len, uint8_t **cert, size_t *cert_len, char *err,
		       size_t errlen);

/* A command's state ("queued", "delivered", "succeeded", "failed",
 * "rejected", "expired"), the agent's reason and its steps (a JSON array,
 * malloc'd, NULL before a result). UV_ENOENT for an unknown id. */
int store_command_outcome(struct store *st, const char *command_id, char *state,
			  size_t state_len, char *reason, size_t reason_len, char **steps);

/* Replaces the wave plan with these (host, wave, planned date) triples, in
 * one transaction: all or nothing. */
struct store_wave {
	const char *host_id;
	const char *wave;
	const char *planned_date; /* "" when not known */
};
int store_import_waves(struct store *st, const struct store_wave *plan, size_t n, char *err,
		       size_t errlen);
/* The same, with an audit entry "waves.imported" by actor (NULL: none) in
 * the same transaction. */
int store_import_plan(struct store *st, const struct store_wave *plan, size_t n,
		      const char *actor, int64_t now_ms, char *err, size_t errlen);

/* The audit chain: each entry's hash is SHA-256 over the previous hash
 * (STORE_AUDIT_GENESIS for the first), the time, actor, action and detail,
 * each with its terminating NUL; out is hex. */
#define STORE_AUDIT_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"
void store_audit_hash(const char *prev, int64_t at, const char *actor, const char *action,
		      const char *detail, char out[65]);

/* Queues an operator's command (an encoded Exfleet__Command) for host_id;
 * the relay delivers it. UV_EEXIST for an id already used. */
int store_enqueue_command(struct store *st, const char *command_id, const char *host_id,
			  const char *action, const char *issuer, int64_t issued_ms,
			  int64_t expires_ms, const uint8_t *envelope, size_t len, char *err,
			  size_t errlen);

#endif
