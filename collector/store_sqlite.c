/* The store on SQLite: WAL mode, one writer thread, batched transactions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <sqlite3.h>

#include "hostmap.h"
#include "log.h"
#include "store.h"
#include "util.h"

/* Each entry moves the schema up one version (PRAGMA user_version). Never
 * edit one that has shipped: add the next. */
static const char *const migrations[] = {
	/* 1: the first schema */
	"CREATE TABLE hosts ("
	"  host_id TEXT PRIMARY KEY,"
	"  site TEXT, wave TEXT,"                  /* from agent labels */
	"  agent_version TEXT, platform TEXT,"
	"  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,"
	"  highest_seq INTEGER NOT NULL DEFAULT 0,"
	"  spool_dropped INTEGER NOT NULL DEFAULT 0,"
	"  sealing_key BLOB, sealing_key_sig BLOB,"
	"  snapshot_seq INTEGER NOT NULL DEFAULT 0, snapshot BLOB,"
	"  observed_at INTEGER, role INTEGER, domain TEXT, role_changed_at INTEGER,"
	"  promoted_at INTEGER, sam_present INTEGER,"
	"  exchange_version TEXT, exchange_sp INTEGER, sp_needs_reapply INTEGER,"
	"  status TEXT, evidence TEXT, status_since INTEGER"
	");"
	"CREATE TABLE services ("
	"  host_id TEXT NOT NULL, name TEXT NOT NULL, display_name TEXT,"
	"  state INTEGER, start_type INTEGER, logon_account TEXT,"
	"  win32_exit_code INTEGER, service_exit_code INTEGER,"
	"  account_status INTEGER, rights TEXT, rights_error INTEGER,"
	"  PRIMARY KEY (host_id, name)"
	") WITHOUT ROWID;"
	"CREATE TABLE snapshots ("
	"  host_id TEXT NOT NULL, seq INTEGER NOT NULL,"
	"  observed_at INTEGER, received_at INTEGER NOT NULL, body BLOB NOT NULL,"
	"  PRIMARY KEY (host_id, seq)"
	") WITHOUT ROWID;"
	"CREATE TABLE events ("
	"  host_id TEXT NOT NULL, seq INTEGER NOT NULL,"
	"  record_number INTEGER, log TEXT, source TEXT, event_id INTEGER,"
	"  type INTEGER, category INTEGER, category_name TEXT,"
	"  time_generated INTEGER, strings TEXT, message TEXT, computer TEXT,"
	"  received_at INTEGER NOT NULL,"
	"  PRIMARY KEY (host_id, seq)"
	") WITHOUT ROWID;"
	"CREATE INDEX events_by_signature ON events (host_id, source, event_id, time_generated);"
	"CREATE INDEX events_by_time ON events (received_at);"
	"CREATE TABLE command_results ("
	"  host_id TEXT NOT NULL, seq INTEGER NOT NULL, command_id TEXT NOT NULL,"
	"  status INTEGER, reason TEXT, steps TEXT,"
	"  started_at INTEGER, finished_at INTEGER, received_at INTEGER NOT NULL,"
	"  PRIMARY KEY (host_id, seq)"
	") WITHOUT ROWID;"
	"CREATE TABLE commands ("
	"  command_id TEXT PRIMARY KEY, host_id TEXT NOT NULL, action TEXT NOT NULL,"
	"  issuer TEXT NOT NULL, issued_at INTEGER, expires_at INTEGER,"
	"  state TEXT NOT NULL, state_since INTEGER NOT NULL, envelope BLOB NOT NULL"
	");"
	"CREATE INDEX commands_by_host ON commands (host_id, state);"
	"CREATE TABLE status_history ("
	"  host_id TEXT NOT NULL, at INTEGER NOT NULL, status TEXT NOT NULL, evidence TEXT"
	");"
	"CREATE INDEX status_history_by_host ON status_history (host_id, at);"
	"CREATE TABLE waves ("
	"  host_id TEXT PRIMARY KEY, wave TEXT NOT NULL, planned_date TEXT"
	");"
	"CREATE TABLE audit ("
	"  id INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL,"
	"  action TEXT NOT NULL, detail TEXT, prev_hash TEXT NOT NULL, hash TEXT NOT NULL"
	");",
	/* 2: what the status rules remember about repairs */
	"ALTER TABLE hosts ADD COLUMN repaired_at INTEGER;"
	"ALTER TABLE hosts ADD COLUMN was_affected INTEGER NOT NULL DEFAULT 0;"
	"CREATE INDEX hosts_by_status ON hosts (status);",
	/* 3: the agent's certificate, so operators can check its sealing key */
	"ALTER TABLE hosts ADD COLUMN agent_cert BLOB;",
};

#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))
_Static_assert(NMIGRATIONS == STORE_SCHEMA_VERSION, "a migration per schema version");

enum {
	ST_HELLO,
	ST_SNAPSHOT_INSERT,
	ST_SNAPSHOT_CURRENT,
	ST_SERVICES_DELETE,
	ST_SERVICE_INSERT,
	ST_EVENT_INSERT,
	ST_RESULT_INSERT,
	ST_HIGHEST_UPDATE,
	ST_HIGHEST_SELECT,
	ST_SEEN_UPDATE,
	ST_STATUS_HOST,
	ST_STATUS_EVENTS,
	ST_STATUS_REPAIR,
	ST_STATUS_UPDATE,
	ST_STATUS_HISTORY,
	ST_COMMAND_STATE,
	ST_COMMAND_RESULT,
	ST_REPAIRED,
	ST_PRUNE_AGE,
	ST_PRUNE_HOSTS,
	ST_PRUNE_HOST,
	ST_AUDIT_LAST,
	ST_AUDIT_INSERT,
	ST_COMMAND_ACTION,
	ST_COUNT
};

#define AUDIT_LAST_SQL "SELECT hash FROM audit ORDER BY id DESC LIMIT 1"
#define AUDIT_INSERT_SQL                                                       \
	"INSERT INTO audit (at, actor, action, detail, prev_hash, hash)"      \
	" VALUES (?1, ?2, ?3, ?4, ?5, ?6)"

static const char *const statements[ST_COUNT] = {
	[ST_HELLO] =
		"INSERT INTO hosts (host_id, site, wave, agent_version, platform, first_seen,"
		" last_seen, spool_dropped, sealing_key, sealing_key_sig, agent_cert)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10)"
		" ON CONFLICT (host_id) DO UPDATE SET site = ?2, wave = ?3, agent_version = ?4,"
		" platform = ?5, last_seen = ?6, spool_dropped = ?7, sealing_key = ?8,"
		" sealing_key_sig = ?9, agent_cert = COALESCE(?10, agent_cert)",
	[ST_SNAPSHOT_INSERT] =
		"INSERT OR IGNORE INTO snapshots (host_id, seq, observed_at, received_at, body)"
		" VALUES (?1, ?2, ?3, ?4, ?5)",
	/* Only a newer snapshot replaces the current state; a promotion time
	 * is the role change the agent saw, else the first snapshot showing
	 * a domain controller. */
	[ST_SNAPSHOT_CURRENT] =
		"UPDATE hosts SET snapshot_seq = ?2, snapshot = ?3, observed_at = ?4, role = ?5,"
		" domain = ?6, role_changed_at = ?7, sam_present = ?8, exchange_version = ?9,"
		" exchange_sp = ?10, sp_needs_reapply = ?11,"
		" promoted_at = CASE WHEN ?5 >= 5 THEN COALESCE(NULLIF(?7, 0), promoted_at, ?4)"
		" ELSE NULL END"
		" WHERE host_id = ?1 AND snapshot_seq < ?2",
	[ST_SERVICES_DELETE] = "DELETE FROM services WHERE host_id = ?1",
	[ST_SERVICE_INSERT] =
		"INSERT OR REPLACE INTO services (host_id, name, display_name, state, start_type,"
		" logon_account, win32_exit_code, service_exit_code, account_status, rights,"
		" rights_error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
	[ST_EVENT_INSERT] =
		"INSERT OR IGNORE INTO events (host_id, seq, record_number, log, source, event_id,"
		" type, category, category_name, time_generated, strings, message, computer,"
		" received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
	[ST_RESULT_INSERT] =
		"INSERT OR IGNORE INTO command_results (host_id, seq, command_id, status, reason,"
		" steps, started_at, finished_at, received_at)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	[ST_HIGHEST_UPDATE] =
		"UPDATE hosts SET highest_seq = MAX(highest_seq, ?2), last_seen = ?3"
		" WHERE host_id = ?1",
	[ST_HIGHEST_SELECT] = "SELECT highest_seq FROM hosts WHERE host_id = ?1",
	[ST_SEEN_UPDATE] = "UPDATE hosts SET last_seen = ?2, spool_dropped = ?3 WHERE host_id = ?1",
	[ST_STATUS_HOST] =
		"SELECT snapshot, COALESCE(promoted_at, 0), COALESCE(repaired_at, 0), was_affected,"
		" status, evidence FROM hosts WHERE host_id = ?1",
	/* The events the rules look at: SCM failures and the auth signatures
	 * (bound as a JSON array of "source/id"), newest last, bounded. */
	[ST_STATUS_EVENTS] =
		"SELECT log, source, event_id, type, time_generated, strings FROM ("
		" SELECT * FROM events WHERE host_id = ?1 AND time_generated >= ?2 AND ("
		"  (source = 'Service Control Manager' AND event_id IN (7000, 7013, 7038, 7041))"
		"  OR source || '/' || event_id IN (SELECT value FROM json_each(?3)))"
		" ORDER BY time_generated DESC LIMIT 20000) ORDER BY time_generated",
	[ST_STATUS_REPAIR] =
		"SELECT command_id FROM commands WHERE host_id = ?1 AND action <> 'RESCAN'"
		" AND state IN ('queued', 'delivered') LIMIT 1",
	[ST_STATUS_UPDATE] =
		"UPDATE hosts SET status = ?2, evidence = ?3,"
		" status_since = CASE WHEN status IS ?2 THEN status_since ELSE ?4 END,"
		" was_affected = was_affected OR ?2 = 'AFFECTED' WHERE host_id = ?1",
	[ST_STATUS_HISTORY] =
		"INSERT INTO status_history (host_id, at, status, evidence) VALUES (?1, ?2, ?3, ?4)",
	/* A command never goes back: a late "delivered" does not undo a result. */
	[ST_COMMAND_STATE] =
		"UPDATE commands SET state = ?2, state_since = ?3 WHERE command_id = ?1"
		" AND state IN ('queued', 'delivered')",
	[ST_COMMAND_RESULT] =
		"UPDATE commands SET state = ?3, state_since = ?4 WHERE command_id = ?1"
		" AND host_id = ?2",
	/* A repair that succeeded starts the host's after-repair window. */
	[ST_REPAIRED] =
		"UPDATE hosts SET repaired_at = ?2 WHERE host_id = ?1 AND EXISTS (SELECT 1 FROM"
		" commands WHERE command_id = ?3 AND action IN ('SET_SERVICE_CREDENTIALS',"
		" 'REAPPLY_SERVICE_PACK'))",
	/* Retention works in bounded chunks so the writer never stalls long. */
	[ST_PRUNE_AGE] =
		"DELETE FROM events WHERE (host_id, seq) IN (SELECT host_id, seq FROM events"
		" WHERE received_at < ?1 LIMIT ?2)",
	[ST_PRUNE_HOSTS] =
		"SELECT host_id FROM events GROUP BY host_id HAVING COUNT(*) > ?1",
	[ST_PRUNE_HOST] =
		"DELETE FROM events WHERE host_id = ?1 AND seq < (SELECT seq FROM events"
		" WHERE host_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2 - 1)",
	[ST_AUDIT_LAST] = AUDIT_LAST_SQL,
	[ST_AUDIT_INSERT] = AUDIT_INSERT_SQL,
	[ST_COMMAND_ACTION] = "SELECT action FROM commands WHERE command_id = ?1",
};

#define PRUNE_CHUNK 20000

static const char queued_commands_sql[] =
	"SELECT rowid, command_id, host_id, expires_at, envelope FROM commands"
	" WHERE state = 'queued' AND rowid > ?1 ORDER BY rowid";

struct store {
	uv_loop_t *loop;
	struct store_options opts;
	char path[1024];
	sqlite3 *wdb;                    /* the writer thread's */
	sqlite3 *rdb;                    /* the loop's, for reads */
	sqlite3_stmt *st[ST_COUNT];      /* prepared on wdb */
	sqlite3_stmt *read_highest;      /* prepared on rdb */
	sqlite3_stmt *read_commands;
	store_committed_cb committed_cb;
	void *arg;
	struct status_rules rules;
	char *auth_json;                 /* rules.auth as ["source/id", ...] */
	char audit_last[65];             /* writer: the hash it appended last in this transaction */

	uv_thread_t thread;
	uv_mutex_t lock;
	uv_cond_t wake;
	struct store_write *queue, *queue_tail; /* for the writer */
	struct store_write *done, *done_tail;   /* back to the loop */
	size_t pending;                  /* submitted, not yet reported back */
	int stopping;
	uv_async_t async;
	uv_timer_t prune_timer;
	uint64_t committed, transactions, pruned;
	int wal_frames;                  /* writer: frames in the WAL after its last commit */

	void (*closed_cb)(void *arg);
	void *closed_arg;
};

void store_options_default(struct store_options *o)
{
	o->path = "collector.db";
	o->rules = NULL;
	o->event_max_age_ms = 90ull * 86400000;
	o->events_per_host = 100000;
	o->prune_interval_ms = 600000;
	o->queue_high = 4096;
	o->queue_low = 1024;
	o->batch_max = 2048;
}

static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

/* ---- the audit log: append-only, each entry hashing the one before ----
 * hash = SHA-256 of prev_hash, at, actor, action and detail, each followed
 * by a NUL; the first entry's prev_hash is 64 zeros. Whoever appends does so
 * inside its write transaction, so the chain cannot fork. */

#define AUDIT_GENESIS STORE_AUDIT_GENESIS

void store_audit_hash(const char *prev, int64_t at, const char *actor, const char *action,
		      const char *detail, char out[65])
{
	char when[24];
	snprintf(when, sizeof(when), "%lld", (long long)at);
	const char *parts[] = {prev, when, actor, action, detail ? detail : ""};
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char digest[32];
	unsigned int n = 0;
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		EVP_DigestUpdate(md, parts[i], strlen(parts[i]) + 1);
	EVP_DigestFinal_ex(md, digest, &n);
	EVP_MD_CTX_free(md);
	util_hex(digest, sizeof(digest), out);
}

/* Chains one entry after prev (NULL: the last one stored, read with last)
 * and inserts it with insert; its hash into hash. Both statements are
 * left reset, for reuse. */
static int audit_chain(sqlite3_stmt *last, sqlite3_stmt *insert, const char *prev_known,
		       int64_t at, const char *actor, const char *action, const char *detail,
		       char hash[65])
{
	char prev[65] = AUDIT_GENESIS;
	if (prev_known) {
		memcpy(prev, prev_known, sizeof(prev));
	} else {
		if (sqlite3_step(last) == SQLITE_ROW)
			snprintf(prev, sizeof(prev), "%s", sqlite3_column_text(last, 0));
		sqlite3_reset(last);
	}
	store_audit_hash(prev, at, actor, action, detail, hash);
	sqlite3_bind_int64(insert, 1, at);
	sqlite3_bind_text(insert, 2, actor, -1, SQLITE_STATIC);
	sqlite3_bind_text(insert, 3, action, -1, SQLITE_STATIC);
	sqlite3_bind_text(insert, 4, detail ? detail : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(insert, 5, prev, -1, SQLITE_STATIC);
	sqlite3_bind_text(insert, 6, hash, -1, SQLITE_STATIC);
	int rc = sqlite3_step(insert);
	sqlite3_reset(insert);
	sqlite3_clear_bindings(insert);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* Appends one entry on db, in the caller's transaction. */
static int audit_append(sqlite3 *db, int64_t at, const char *actor, const char *action,
			const char *detail)
{
	sqlite3_stmt *last = NULL, *insert = NULL;
	char hash[65];
	int rc = -1;
	if (sqlite3_prepare_v2(db, AUDIT_LAST_SQL, -1, &last, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, AUDIT_INSERT_SQL, -1, &insert, NULL) == SQLITE_OK)
		rc = audit_chain(last, insert, NULL, at, actor, action, detail, hash);
	sqlite3_finalize(last);
	sqlite3_finalize(insert);
	return rc;
}

/* audit_append on the writer's connection, with its prepared statements:
 * a wave of commands is thousands of entries. Within the writer's
 * transaction (which holds the write lock) the last entry is the one it
 * appended last. */
static int writer_audit(struct store *st, int64_t at, const char *actor, const char *action,
			const char *detail)
{
	char hash[65];
	if (audit_chain(st->st[ST_AUDIT_LAST], st->st[ST_AUDIT_INSERT],
			st->audit_last[0] ? st->audit_last : NULL, at, actor, action, detail,
			hash) < 0)
		return -1;
	memcpy(st->audit_last, hash, sizeof(hash));
	return 0;
}

static int open_db(const char *path, sqlite3 **db, char *err, size_t errlen)
{
	if (sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
					   SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: cannot open: %s", path,
			 *db ? sqlite3_errmsg(*db) : "out of memory");
		sqlite3_close(*db);
		*db = NULL;
		return -1;
	}
	sqlite3_busy_timeout(*db, 5000);
	/* An acknowledged record must survive power loss, so commits are
	 * synced (FULL); batching keeps that affordable. */
	char why[256];
	if (exec(*db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
		      "PRAGMA foreign_keys = ON;", why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: %s", path, why);
		sqlite3_close(*db);
		*db = NULL;
		return -1;
	}
	return 0;
}

static int migrate(struct store *st, char *err, size_t errlen)
{
	sqlite3_stmt *s;
	int version = 0;
	if (sqlite3_prepare_v2(st->wdb, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		version = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	if (version > NMIGRATIONS) {
		snprintf(err, errlen,
			 "%s: schema version %d is newer than this collector knows (%d); "
			 "run a newer exfleet-collector",
			 st->path, version, NMIGRATIONS);
		return -1;
	}
	for (; version < NMIGRATIONS; version++) {
		char why[512], sql[64];
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version + 1);
		if (exec(st->wdb, "BEGIN IMMEDIATE", why, sizeof(why)) < 0 ||
		    exec(st->wdb, migrations[version], why, sizeof(why)) < 0 ||
		    exec(st->wdb, sql, why, sizeof(why)) < 0 ||
		    exec(st->wdb, "COMMIT", why, sizeof(why)) < 0) {
			exec(st->wdb, "ROLLBACK", sql, sizeof(sql));
			snprintf(err, errlen, "%s: migration to schema version %d failed: %s",
				 st->path, version + 1, why);
			return -1;
		}
		log_info("store: %s at schema version %d", st->path, version + 1);
	}
	return 0;
}

/* ---- the writer thread ---- */

static void bind_text(sqlite3_stmt *s, int i, const char *text)
{
	if (text && text[0])
		sqlite3_bind_text(s, i, text, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, i);
}

static void bind_blob(sqlite3_stmt *s, int i, const ProtobufCBinaryData *b)
{
	if (b->len)
		sqlite3_bind_blob(s, i, b->data, (int)b->len, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, i);
}

static int step(struct store *st, sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		log_err("store: %s: %s", sqlite3_sql(s), sqlite3_errmsg(st->wdb));
		return -1;
	}
	return 0;
}

/* The strings of a repeated field as a JSON array. */
static char *json_strings(char **items, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(items[i] ? items[i] : ""));
	char *text = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return text;
}

static const char *label(const Exfleet__Hello *h, const char *key)
{
	for (size_t i = 0; i < h->n_labels; i++)
		if (strcmp(h->labels[i]->key, key) == 0)
			return h->labels[i]->value;
	return NULL;
}

static int write_hello(struct store *st, const struct store_write *w, const Exfleet__Hello *h)
{
	sqlite3_stmt *s = st->st[ST_HELLO];
	sqlite3_bind_text(s, 1, w->host_id, -1, SQLITE_STATIC);
	bind_text(s, 2, label(h, "site"));
	bind_text(s, 3, label(h, "wave"));
	bind_text(s, 4, h->agent_version);
	bind_text(s, 5, h->platform);
	sqlite3_bind_int64(s, 6, w->received_ms);
	sqlite3_bind_int64(s, 7, (sqlite3_int64)h->spool_dropped);
	bind_blob(s, 8, &h->sealing_public_key);
	bind_blob(s, 9, &h->sealing_key_signature);
	if (w->peer_cert_len)
		sqlite3_bind_blob(s, 10, w->peer_cert, (int)w->peer_cert_len, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, 10);
	return step(st, s);
}

static int write_services(struct store *st, const char *host_id, const Exfleet__Snapshot *snap)
{
	sqlite3_stmt *s = st->st[ST_SERVICES_DELETE];
	sqlite3_bind_text(s, 1, host_id, -1, SQLITE_STATIC);
	if (step(st, s) < 0)
		return -1;
	s = st->st[ST_SERVICE_INSERT];
	for (size_t i = 0; i < snap->n_services; i++) {
		const Exfleet__Service *svc = snap->services[i];
		char *rights = json_strings(svc->account_rights, svc->n_account_rights);
		sqlite3_bind_text(s, 1, host_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, svc->name, -1, SQLITE_STATIC);
		bind_text(s, 3, svc->display_name);
		sqlite3_bind_int(s, 4, svc->state);
		sqlite3_bind_int(s, 5, svc->start_type);
		bind_text(s, 6, svc->logon_account);
		sqlite3_bind_int64(s, 7, svc->win32_exit_code);
		sqlite3_bind_int64(s, 8, svc->service_exit_code);
		sqlite3_bind_int(s, 9, svc->account_status);
		sqlite3_bind_text(s, 10, rights, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(s, 11, svc->rights_error);
		free(rights);
		if (step(st, s) < 0)
			return -1;
	}
	return 0;
}

static int write_snapshot(struct store *st, const struct store_write *w,
			  const Exfleet__Snapshot *snap)
{
	size_t len = exfleet__snapshot__get_packed_size(snap);
	uint8_t *body = malloc(len ? len : 1);
	if (!body)
		return -1;
	exfleet__snapshot__pack(snap, body);
	int rc = -1;
	sqlite3_stmt *s = st->st[ST_SNAPSHOT_INSERT];
	sqlite3_bind_text(s, 1, w->host_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)snap->sequence);
	sqlite3_bind_int64(s, 3, snap->observed_at_ms);
	sqlite3_bind_int64(s, 4, w->received_ms);
	sqlite3_bind_blob(s, 5, body, (int)len, SQLITE_STATIC);
	if (step(st, s) < 0)
		goto out;
	s = st->st[ST_SNAPSHOT_CURRENT];
	sqlite3_bind_text(s, 1, w->host_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)snap->sequence);
	sqlite3_bind_blob(s, 3, body, (int)len, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, snap->observed_at_ms);
	sqlite3_bind_int(s, 5, snap->role);
	bind_text(s, 6, snap->domain);
	sqlite3_bind_int64(s, 7, snap->role_changed_at_ms);
	sqlite3_bind_int(s, 8, snap->sam_present);
	bind_text(s, 9, snap->exchange_version);
	sqlite3_bind_int(s, 10, (int)snap->exchange_service_pack);
	sqlite3_bind_int(s, 11, snap->service_pack_needs_reapply);
	if (step(st, s) < 0)
		goto out;
	/* Services follow the current snapshot only. */
	rc = sqlite3_changes(st->wdb) ? write_services(st, w->host_id, snap) : 0;
out:
	free(body);
	return rc;
}

static int write_events(struct store *st, const struct store_write *w,
			const Exfleet__EventBatch *b)
{
	sqlite3_stmt *s = st->st[ST_EVENT_INSERT];
	for (size_t i = 0; i < b->n_events; i++) {
		const Exfleet__Event *e = b->events[i];
		char *strings = json_strings(e->insertion_strings, e->n_insertion_strings);
		sqlite3_bind_text(s, 1, w->host_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)e->sequence);
		sqlite3_bind_int64(s, 3, e->record_number);
		bind_text(s, 4, e->log);
		bind_text(s, 5, e->source);
		sqlite3_bind_int64(s, 6, e->event_id);
		sqlite3_bind_int(s, 7, e->type);
		sqlite3_bind_int64(s, 8, e->category);
		bind_text(s, 9, e->category_name);
		sqlite3_bind_int64(s, 10, e->time_generated_ms);
		sqlite3_bind_text(s, 11, strings, -1, SQLITE_TRANSIENT);
		bind_text(s, 12, e->message);
		bind_text(s, 13, e->computer);
		sqlite3_bind_int64(s, 14, w->received_ms);
		free(strings);
		if (step(st, s) < 0)
			return -1;
	}
	return 0;
}

static char *json_steps(const Exfleet__CommandResult *r)
{
	json_t *a = json_array();
	for (size_t i = 0; i < r->n_steps; i++) {
		const Exfleet__StepResult *sr = r->steps[i];
		json_array_append_new(
			a, json_pack("{s:s, s:s, s:b, s:I, s:s, s:I}", "step", sr->step, "target",
				     sr->target, "ok", sr->ok, "win32_error",
				     (json_int_t)sr->win32_error, "message", sr->message,
				     "finished_at", (json_int_t)sr->finished_at_ms));
	}
	char *text = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return text;
}

static int write_result(struct store *st, const struct store_write *w,
			const Exfleet__CommandResult *r)
{
	sqlite3_stmt *s = st->st[ST_RESULT_INSERT];
	char *steps = json_steps(r);
	sqlite3_bind_text(s, 1, w->host_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)r->sequence);
	sqlite3_bind_text(s, 3, r->command_id, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 4, r->status);
	bind_text(s, 5, r->reason);
	sqlite3_bind_text(s, 6, steps ? steps : "[]", -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, 7, r->started_at_ms);
	sqlite3_bind_int64(s, 8, r->finished_at_ms);
	sqlite3_bind_int64(s, 9, w->received_ms);
	free(steps);
	if (step(st, s) < 0)
		return -1;
	static const char *const states[] = {
		[EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED] = "succeeded",
		[EXFLEET__COMMAND_STATUS__COMMAND_FAILED] = "failed",
		[EXFLEET__COMMAND_STATUS__COMMAND_REJECTED] = "rejected",
		[EXFLEET__COMMAND_STATUS__COMMAND_EXPIRED] = "expired",
	};
	const char *state = (unsigned)r->status < sizeof(states) / sizeof(states[0]) &&
				    states[r->status]
			    ? states[r->status]
			    : "failed";
	s = st->st[ST_COMMAND_RESULT];
	sqlite3_bind_text(s, 1, r->command_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, w->host_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, state, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, w->received_ms);
	if (step(st, s) < 0)
		return -1;
	if (r->status == EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED) {
		s = st->st[ST_REPAIRED];
		sqlite3_bind_text(s, 1, w->host_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, r->finished_at_ms ? r->finished_at_ms : w->received_ms);
		sqlite3_bind_text(s, 3, r->command_id, -1, SQLITE_STATIC);
		if (step(st, s) < 0)
			return -1;
	}
	/* Each result, and so each refusal with its reason, goes on record. */
	json_t *d = json_pack("{s:s, s:s, s:s}", "command_id", r->command_id, "status", state,
			      "reason", r->reason);
	char *detail = d ? json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(d);
	int rc = writer_audit(st, w->received_ms, w->host_id, "command.result", detail);
	free(detail);
	return rc;
}

/* Can this message change the host's status? Snapshots and results can; so
 * can events the rules look at. */
static int affects_status(struct store *st, const Exfleet__AgentMessage *m)
{
	if (!m)
		return 0;
	switch (m->msg_case) {
	case EXFLEET__AGENT_MESSAGE__MSG_SNAPSHOT:
		return 1;
	case EXFLEET__AGENT_MESSAGE__MSG_COMMAND_RESULT: {
		/* A RESCAN's result changes nothing the rules read (they look
		 * only at repairs in flight and done): a fleet-wide RESCAN
		 * must not classify every host again. */
		sqlite3_stmt *s = st->st[ST_COMMAND_ACTION];
		int rescan = 0;
		sqlite3_bind_text(s, 1, m->command_result->command_id, -1, SQLITE_STATIC);
		if (sqlite3_step(s) == SQLITE_ROW)
			rescan = strcmp((const char *)sqlite3_column_text(s, 0), "RESCAN") == 0;
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		return !rescan;
	}
	case EXFLEET__AGENT_MESSAGE__MSG_EVENTS:
		for (size_t i = 0; i < m->events->n_events; i++) {
			const Exfleet__Event *e = m->events->events[i];
			/* Only the SCM failures the rules read: routine SCM events
			 * (7036, a service changed state) are most of the traffic. */
			if ((e->event_id == 7000 || e->event_id == 7013 || e->event_id == 7038 ||
			     e->event_id == 7041) &&
			    strcmp(e->source, "Service Control Manager") == 0)
				return 1;
			for (size_t k = 0; k < st->rules.n_auth; k++)
				if (e->event_id == st->rules.auth[k].event_id &&
				    strcmp(e->source, st->rules.auth[k].source) == 0)
					return 1;
		}
		return 0;
	default:
		return 0;
	}
}

/* The events the rules look at, copied out of SQLite's rows. */
struct status_events {
	struct status_event *items;
	size_t n;
	json_t **strings;           /* each event's insertion strings, owned */
	const char **ptrs;          /* flattened string pointers into them */
};

static void status_events_free(struct status_events *ev)
{
	for (size_t i = 0; i < ev->n; i++) {
		free((char *)ev->items[i].log);
		free((char *)ev->items[i].source);
		json_decref(ev->strings[i]);
	}
	free(ev->items);
	free(ev->strings);
	free(ev->ptrs);
}

static int load_status_events(struct store *st, const char *host_id, int64_t since,
			      struct status_events *ev)
{
	memset(ev, 0, sizeof(*ev));
	sqlite3_stmt *s = st->st[ST_STATUS_EVENTS];
	sqlite3_bind_text(s, 1, host_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, since);
	sqlite3_bind_text(s, 3, st->auth_json, -1, SQLITE_STATIC);
	size_t cap = 0, nptrs = 0, capptrs = 0;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (ev->n == cap) {
			cap = cap ? cap * 2 : 64;
			void *a = realloc(ev->items, cap * sizeof(*ev->items));
			void *b = a ? realloc(ev->strings, cap * sizeof(*ev->strings)) : NULL;
			if (a)
				ev->items = a;
			if (b)
				ev->strings = b;
			if (!a || !b)
				goto fail;
		}
		struct status_event *e = &ev->items[ev->n];
		const char *log = (const char *)sqlite3_column_text(s, 0);
		const char *source = (const char *)sqlite3_column_text(s, 1);
		e->log = strdup(log ? log : "");
		e->source = strdup(source ? source : "");
		e->event_id = (uint32_t)sqlite3_column_int64(s, 2);
		e->type = sqlite3_column_int(s, 3);
		e->time_ms = sqlite3_column_int64(s, 4);
		const char *strings = (const char *)sqlite3_column_text(s, 5);
		json_t *a = strings ? json_loads(strings, 0, NULL) : NULL;
		if (!json_is_array(a)) {
			json_decref(a);
			a = json_array();
		}
		ev->strings[ev->n++] = a;
		nptrs += json_array_size(a);
		if (!e->log || !e->source)
			goto fail;
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_DONE)
		goto fail;
	/* Now that nothing moves, point each event at its strings. */
	capptrs = nptrs ? nptrs : 1;
	ev->ptrs = malloc(capptrs * sizeof(char *));
	if (!ev->ptrs)
		goto fail;
	size_t at = 0;
	for (size_t i = 0; i < ev->n; i++) {
		json_t *a = ev->strings[i];
		ev->items[i].strings = ev->ptrs + at;
		ev->items[i].n_strings = json_array_size(a);
		for (size_t k = 0; k < json_array_size(a); k++) {
			const char *v = json_string_value(json_array_get(a, k));
			ev->ptrs[at++] = v ? v : "";
		}
	}
	return 0;
fail:
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	status_events_free(ev);
	memset(ev, 0, sizeof(*ev));
	return -1;
}

/* Classifies host_id again from what is stored, in the open transaction,
 * and records a change of status with its time. */
static int update_status(struct store *st, const char *host_id, int64_t now)
{
	sqlite3_stmt *s = st->st[ST_STATUS_HOST];
	sqlite3_bind_text(s, 1, host_id, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_ROW) {
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		return 0; /* no such host (yet) */
	}
	Exfleet__Snapshot *snap = NULL;
	if (sqlite3_column_type(s, 0) == SQLITE_BLOB)
		snap = exfleet__snapshot__unpack(NULL, (size_t)sqlite3_column_bytes(s, 0),
						 sqlite3_column_blob(s, 0));
	struct status_input in = {
		.snapshot = snap,
		.promoted_at_ms = sqlite3_column_int64(s, 1),
		.repaired_at_ms = sqlite3_column_int64(s, 2),
		.was_affected = sqlite3_column_int(s, 3),
		.now_ms = now,
	};
	const char *old_status = (const char *)sqlite3_column_text(s, 4);
	const char *old_evidence = (const char *)sqlite3_column_text(s, 5);
	char *was_status = old_status ? strdup(old_status) : NULL;
	char *was_evidence = old_evidence ? strdup(old_evidence) : NULL;
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);

	/* Everything the window could start at: the rules pick the start. */
	int64_t since = now - st->rules.retention_ms;
	if (in.promoted_at_ms && in.promoted_at_ms < since)
		since = in.promoted_at_ms;
	struct status_events ev;
	int rc = load_status_events(st, host_id, since, &ev);
	char repair[72] = "";
	if (rc == 0) {
		s = st->st[ST_STATUS_REPAIR];
		sqlite3_bind_text(s, 1, host_id, -1, SQLITE_STATIC);
		if (sqlite3_step(s) == SQLITE_ROW)
			snprintf(repair, sizeof(repair), "%s", sqlite3_column_text(s, 0));
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		in.events = ev.items;
		in.n_events = ev.n;
		in.repair_in_flight = repair[0] ? repair : NULL;

		struct status_result out;
		status_classify(&st->rules, &in, &out);
		json_t *lines = json_array();
		for (size_t i = 0; i < out.n_evidence; i++)
			json_array_append_new(lines, json_string(out.evidence[i]));
		char *evidence = json_dumps(lines, JSON_COMPACT);
		json_decref(lines);
		const char *status = host_status_name(out.status);
		int changed = !was_status || strcmp(was_status, status) != 0;
		if (evidence && (changed || !was_evidence || strcmp(was_evidence, evidence) != 0)) {
			s = st->st[ST_STATUS_UPDATE];
			sqlite3_bind_text(s, 1, host_id, -1, SQLITE_STATIC);
			sqlite3_bind_text(s, 2, status, -1, SQLITE_STATIC);
			sqlite3_bind_text(s, 3, evidence, -1, SQLITE_STATIC);
			sqlite3_bind_int64(s, 4, now);
			rc = step(st, s);
			if (rc == 0 && changed) {
				s = st->st[ST_STATUS_HISTORY];
				sqlite3_bind_text(s, 1, host_id, -1, SQLITE_STATIC);
				sqlite3_bind_int64(s, 2, now);
				sqlite3_bind_text(s, 3, status, -1, SQLITE_STATIC);
				sqlite3_bind_text(s, 4, evidence, -1, SQLITE_STATIC);
				rc = step(st, s);
				log_info("status: %s %s -> %s: %s", host_id,
					 was_status ? was_status : "(new)", status,
					 out.n_evidence ? out.evidence[0] : "");
			}
		}
		free(evidence);
		status_events_free(&ev);
	}
	free(was_status);
	free(was_evidence);
	if (snap)
		exfleet__snapshot__free_unpacked(snap, NULL);
	return rc;
}

/* The highest sequence a message carries, 0 for none. */
static uint64_t message_highest(const Exfleet__AgentMessage *m)
{
	uint64_t hi = 0;
	switch (m->msg_case) {
	case EXFLEET__AGENT_MESSAGE__MSG_SNAPSHOT:
		return m->snapshot->sequence;
	case EXFLEET__AGENT_MESSAGE__MSG_EVENTS:
		for (size_t i = 0; i < m->events->n_events; i++)
			if (m->events->events[i]->sequence > hi)
				hi = m->events->events[i]->sequence;
		return hi;
	case EXFLEET__AGENT_MESSAGE__MSG_COMMAND_RESULT:
		return m->command_result->sequence;
	default:
		return 0;
	}
}

/* One retention pass: old events, then hosts over their share. */
static int prune(struct store *st)
{
	uint64_t removed = 0;
	if (st->opts.event_max_age_ms) {
		sqlite3_stmt *s = st->st[ST_PRUNE_AGE];
		int64_t cutoff = util_now_ms() - (int64_t)st->opts.event_max_age_ms;
		int changed;
		do {
			sqlite3_bind_int64(s, 1, cutoff);
			sqlite3_bind_int(s, 2, PRUNE_CHUNK);
			if (step(st, s) < 0)
				return -1;
			changed = sqlite3_changes(st->wdb);
			removed += (uint64_t)changed;
		} while (changed == PRUNE_CHUNK);
	}
	if (st->opts.events_per_host) {
		sqlite3_stmt *s = st->st[ST_PRUNE_HOSTS];
		sqlite3_bind_int64(s, 1, (sqlite3_int64)st->opts.events_per_host);
		char (*hosts)[65] = NULL;
		size_t n = 0, cap = 0;
		while (sqlite3_step(s) == SQLITE_ROW) {
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				void *grown = realloc(hosts, cap * sizeof(*hosts));
				if (!grown)
					break;
				hosts = grown;
			}
			snprintf(hosts[n++], 65, "%s", sqlite3_column_text(s, 0));
		}
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		s = st->st[ST_PRUNE_HOST];
		for (size_t i = 0; i < n; i++) {
			sqlite3_bind_text(s, 1, hosts[i], -1, SQLITE_STATIC);
			sqlite3_bind_int64(s, 2, (sqlite3_int64)st->opts.events_per_host);
			if (step(st, s) < 0) {
				free(hosts);
				return -1;
			}
			removed += (uint64_t)sqlite3_changes(st->wdb);
		}
		free(hosts);
	}
	if (removed) {
		log_info("store: retention removed %llu events", (unsigned long long)removed);
		uv_mutex_lock(&st->lock);
		st->pruned += removed;
		uv_mutex_unlock(&st->lock);
	}
	return 0;
}

static int write_one(struct store *st, struct store_write *w)
{
	const Exfleet__AgentMessage *m = w->msg;
	int rc = 0;
	if (w->prune)
		return prune(st);
	if (!m) {
		char action[32];
		snprintf(action, sizeof(action), "command.%s", w->command_state);
		for (size_t i = 0; i < w->ncommands; i++) {
			sqlite3_stmt *s = st->st[ST_COMMAND_STATE];
			sqlite3_bind_text(s, 1, w->command_ids[i], -1, SQLITE_STATIC);
			sqlite3_bind_text(s, 2, w->command_state, -1, SQLITE_STATIC);
			sqlite3_bind_int64(s, 3, w->received_ms);
			if (step(st, s) < 0)
				return -1;
			char detail[160];
			snprintf(detail, sizeof(detail), "{\"command_id\":\"%s\"}", w->command_ids[i]);
			rc = writer_audit(st, w->received_ms, "collector", action, detail);
			if (rc < 0)
				return rc;
		}
		return 0;
	}
	switch (m->msg_case) {
	case EXFLEET__AGENT_MESSAGE__MSG_HELLO:
		return write_hello(st, w, m->hello);
	case EXFLEET__AGENT_MESSAGE__MSG_HEARTBEAT: {
		sqlite3_stmt *s = st->st[ST_SEEN_UPDATE];
		sqlite3_bind_text(s, 1, w->host_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, w->received_ms);
		sqlite3_bind_int64(s, 3, (sqlite3_int64)m->heartbeat->spool_dropped);
		return step(st, s);
	}
	case EXFLEET__AGENT_MESSAGE__MSG_SNAPSHOT:
		rc = write_snapshot(st, w, m->snapshot);
		break;
	case EXFLEET__AGENT_MESSAGE__MSG_EVENTS:
		rc = write_events(st, w, m->events);
		break;
	case EXFLEET__AGENT_MESSAGE__MSG_COMMAND_RESULT:
		rc = write_result(st, w, m->command_result);
		break;
	default:
		return 0;
	}
	if (rc < 0)
		return rc;
	sqlite3_stmt *s = st->st[ST_HIGHEST_UPDATE];
	sqlite3_bind_text(s, 1, w->host_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)message_highest(m));
	sqlite3_bind_int64(s, 3, w->received_ms);
	return step(st, s);
}

static uint64_t writer_highest(struct store *st, const char *host_id)
{
	sqlite3_stmt *s = st->st[ST_HIGHEST_SELECT];
	uint64_t seq = 0;
	sqlite3_bind_text(s, 1, host_id, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		seq = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return seq;
}

static int transient(int code)
{
	code &= 0xff;
	return code == SQLITE_BUSY || code == SQLITE_LOCKED || code == SQLITE_IOERR ||
	       code == SQLITE_FULL || code == SQLITE_CANTOPEN || code == SQLITE_NOMEM;
}

/* Commits one batch. Batches commit strictly in order, because an Ack is
 * cumulative: were a later batch to commit past a failed one, its Ack would
 * cover records that were never stored. So a batch that fails for a reason
 * that passes (disk full, I/O, lock) is retried until it commits, while the
 * queue, and with it the agents' spools, take the wait; a write that fails on
 * its own content is set aside (logged, never acknowledged) and the rest of
 * the batch retried. */
static void writer_commit(struct store *st, struct store_write *batch)
{
	char why[512];
	unsigned delay_ms = 100;
	for (;;) {
		struct store_write *bad = NULL;
		st->audit_last[0] = '\0'; /* others may have appended since */
		int rc = exec(st->wdb, "BEGIN IMMEDIATE", why, sizeof(why));
		for (struct store_write *w = batch; w && rc == 0; w = w->next) {
			if (w->status < 0)
				continue;
			rc = write_one(st, w);
			if (rc < 0)
				bad = w;
		}
		/* Each host whose records can change its status, once per batch. */
		int64_t now = util_now_ms();
		struct hostmap seen;
		hostmap_init(&seen);
		for (struct store_write *w = batch; w && rc == 0; w = w->next) {
			if (w->status < 0 || hostmap_get(&seen, w->host_id) ||
			    !affects_status(st, w->msg))
				continue;
			if (hostmap_put(&seen, w->host_id, w) < 0) {
				rc = -1;
				break;
			}
			rc = update_status(st, w->host_id, now);
		}
		hostmap_free(&seen);
		/* What each Ack will say, read inside the transaction: the same
		 * once it commits (this is the only writer), without a read
		 * transaction, and its locks, for every record. Only agents'
		 * records are acknowledged: a command's state or a retention
		 * pass needs no sequence. */
		for (struct store_write *w = batch; w && rc == 0; w = w->next)
			if (w->status == 0 && w->msg)
				w->highest_seq = writer_highest(st, w->host_id);
		if (rc == 0 && exec(st->wdb, "COMMIT", why, sizeof(why)) == 0)
			break;
		int code = sqlite3_extended_errcode(st->wdb);
		log_err("store: %s: a batch was rolled back: %s", st->path, sqlite3_errmsg(st->wdb));
		exec(st->wdb, "ROLLBACK", why, sizeof(why));
		if (bad && !transient(code)) {
			log_err("store: %s: set aside a %s from %s that cannot be stored", st->path,
				bad->msg->msg_case == EXFLEET__AGENT_MESSAGE__MSG_EVENTS ? "event batch"
											 : "record",
				bad->host_id);
			bad->status = UV_EINVAL;
			continue;
		}
		uv_sleep(delay_ms);
		delay_ms = delay_ms < 5000 ? delay_ms * 2 : 5000;
	}
}

/* SQLite copies the WAL back into the database every 1,000 pages by
 * default, inside whichever commit crosses the mark: in the middle of a
 * burst, with agents waiting on their Acks. The writer takes that over
 * and checkpoints when its queue has run dry, or, under load that never
 * lets up, once the WAL has grown to WAL_FRAMES_MAX. */
#define WAL_FRAMES_IDLE 1000
#define WAL_FRAMES_MAX 16000

static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
	(void)db;
	(void)name;
	((struct store *)arg)->wal_frames = frames;
	return SQLITE_OK;
}

static void writer_checkpoint(struct store *st)
{
	int log = 0, done = 0;
	int rc = sqlite3_wal_checkpoint_v2(st->wdb, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
	if (rc != SQLITE_OK && rc != SQLITE_BUSY)
		log_warn("store: checkpoint: %s", sqlite3_errmsg(st->wdb));
	/* Readers may hold some back; the next commit says how many there are. */
	st->wal_frames = 0;
}

static void writer_main(void *arg)
{
	struct store *st = arg;
	uv_mutex_lock(&st->lock);
	for (;;) {
		while (!st->queue && !st->stopping)
			uv_cond_wait(&st->wake, &st->lock);
		if (!st->queue)
			break;
		/* Take up to batch_max writes. */
		struct store_write *batch = st->queue, *last = batch;
		unsigned n = 1;
		while (last->next && n < st->opts.batch_max) {
			last = last->next;
			n++;
		}
		st->queue = last->next;
		if (!st->queue)
			st->queue_tail = NULL;
		last->next = NULL;
		uv_mutex_unlock(&st->lock);

		writer_commit(st, batch);

		uv_mutex_lock(&st->lock);
		if (st->done_tail)
			st->done_tail->next = batch;
		else
			st->done = batch;
		st->done_tail = last;
		st->committed += n;
		st->transactions++;
		uv_async_send(&st->async);
		if ((!st->queue && st->wal_frames >= WAL_FRAMES_IDLE) ||
		    st->wal_frames >= WAL_FRAMES_MAX) {
			uv_mutex_unlock(&st->lock);
			writer_checkpoint(st);
			uv_mutex_lock(&st->lock);
		}
	}
	uv_mutex_unlock(&st->lock);
}

/* ---- the loop side ---- */

static void async_cb(uv_async_t *a)
{
	struct store *st = a->data;
	uv_mutex_lock(&st->lock);
	struct store_write *w = st->done;
	st->done = st->done_tail = NULL;
	uv_mutex_unlock(&st->lock);
	while (w) {
		struct store_write *next = w->next;
		st->pending--;
		/* Every write, also a command's state or a retention pass: the
		 * queue's depth falls with each, and whoever paused on it must
		 * hear that it did. */
		if (st->committed_cb)
			st->committed_cb(w, st->arg);
		if (w->msg)
			exfleet__agent_message__free_unpacked(w->msg, NULL);
		free(w->peer_cert);
		free(w->command_ids);
		free(w);
		w = next;
	}
}

size_t store_submit(struct store *st, struct store_write *w)
{
	w->next = NULL;
	uv_mutex_lock(&st->lock);
	if (st->queue_tail)
		st->queue_tail->next = w;
	else
		st->queue = w;
	st->queue_tail = w;
	uv_cond_signal(&st->wake);
	uv_mutex_unlock(&st->lock);
	return ++st->pending;
}

void store_prune(struct store *st)
{
	struct store_write *w = calloc(1, sizeof(*w));
	if (!w)
		return;
	w->prune = 1;
	store_submit(st, w);
}

uint64_t store_pruned(struct store *st)
{
	uv_mutex_lock(&st->lock);
	uint64_t n = st->pruned;
	uv_mutex_unlock(&st->lock);
	return n;
}

static void prune_timer_cb(uv_timer_t *t)
{
	store_prune(t->data);
}

void store_commands_state(struct store *st, char (*ids)[STORE_COMMAND_ID_LEN], size_t n,
			  const char *state)
{
	struct store_write *w = n ? calloc(1, sizeof(*w)) : NULL;
	if (!w) {
		if (n)
			log_err("store: out of memory recording %zu commands (%s, ...) as %s", n,
				ids[0], state);
		free(ids);
		return;
	}
	w->command_ids = ids;
	w->ncommands = n;
	w->command_state = state;
	w->received_ms = util_now_ms();
	store_submit(st, w);
}

void store_command_state(struct store *st, const char *command_id, const char *state)
{
	char (*ids)[STORE_COMMAND_ID_LEN] = malloc(sizeof(*ids));
	if (!ids) {
		log_err("store: out of memory recording command %s as %s", command_id, state);
		return;
	}
	snprintf(ids[0], sizeof(ids[0]), "%s", command_id);
	store_commands_state(st, ids, 1, state);
}

int store_queued_commands(struct store *st, int64_t *after, store_command_cb cb, void *arg)
{
	sqlite3_stmt *s = st->read_commands;
	sqlite3_bind_int64(s, 1, *after);
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct store_command c = {
			.command_id = (const char *)sqlite3_column_text(s, 1),
			.host_id = (const char *)sqlite3_column_text(s, 2),
			.expires_at_ms = sqlite3_column_int64(s, 3),
			.envelope = sqlite3_column_blob(s, 4),
			.len = (size_t)sqlite3_column_bytes(s, 4),
		};
		*after = sqlite3_column_int64(s, 0);
		if (c.command_id && c.host_id)
			cb(&c, arg);
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_DONE) {
		log_err("store: %s: reading queued commands: %s", st->path, sqlite3_errmsg(st->rdb));
		return -1;
	}
	return 0;
}

size_t store_queue_depth(struct store *st)
{
	return st->pending;
}

uint64_t store_committed(struct store *st)
{
	uv_mutex_lock(&st->lock);
	uint64_t n = st->committed;
	uv_mutex_unlock(&st->lock);
	return n;
}

uint64_t store_transactions(struct store *st)
{
	uv_mutex_lock(&st->lock);
	uint64_t n = st->transactions;
	uv_mutex_unlock(&st->lock);
	return n;
}

int store_host_highest(struct store *st, const char *host_id, uint64_t *seq)
{
	sqlite3_stmt *s = st->read_highest;
	*seq = 0;
	sqlite3_bind_text(s, 1, host_id, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*seq = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		log_err("store: %s: reading host %s: %s", st->path, host_id,
			sqlite3_errmsg(st->rdb));
		return -1;
	}
	return 0;
}

static void async_closed_cb(uv_handle_t *h);

static void store_free(struct store *st)
{
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(st->st[i]);
	sqlite3_finalize(st->read_highest);
	sqlite3_finalize(st->read_commands);
	sqlite3_close(st->wdb);
	sqlite3_close(st->rdb);
	free(st->auth_json);
	free(st);
}

int store_open(struct store **out, uv_loop_t *loop, const struct store_options *o,
	       store_committed_cb committed_cb, void *arg, char *err, size_t errlen)
{
	struct store *st = calloc(1, sizeof(*st));
	if (!st) {
		snprintf(err, errlen, "out of memory");
		return UV_ENOMEM;
	}
	st->loop = loop;
	st->opts = *o;
	snprintf(st->path, sizeof(st->path), "%s", o->path);
	st->opts.path = st->path;
	st->committed_cb = committed_cb;
	st->arg = arg;
	if (o->rules)
		st->rules = *o->rules;
	else
		status_rules_default(&st->rules);
	json_t *auth = json_array();
	for (size_t i = 0; i < st->rules.n_auth; i++)
		json_array_append_new(auth, json_sprintf("%s/%u", st->rules.auth[i].source,
							 st->rules.auth[i].event_id));
	st->auth_json = json_dumps(auth, JSON_COMPACT);
	json_decref(auth);
	if (!st->auth_json) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (open_db(st->path, &st->wdb, err, errlen) < 0 || migrate(st, err, errlen) < 0 ||
	    open_db(st->path, &st->rdb, err, errlen) < 0)
		goto fail;
	sqlite3_wal_hook(st->wdb, wal_hook, st); /* replaces the automatic checkpoint */
	for (int i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v3(st->wdb, statements[i], -1, SQLITE_PREPARE_PERSISTENT,
				       &st->st[i], NULL) != SQLITE_OK) {
			snprintf(err, errlen, "%s: %s", st->path, sqlite3_errmsg(st->wdb));
			goto fail;
		}
	}
	if (sqlite3_prepare_v2(st->rdb, statements[ST_HIGHEST_SELECT], -1, &st->read_highest,
			       NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(st->rdb, queued_commands_sql, -1, &st->read_commands, NULL) !=
		    SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", st->path, sqlite3_errmsg(st->rdb));
		goto fail;
	}
	uv_mutex_init(&st->lock);
	uv_cond_init(&st->wake);
	uv_async_init(loop, &st->async, async_cb);
	st->async.data = st;
	uv_timer_init(loop, &st->prune_timer);
	st->prune_timer.data = st;
	if (st->opts.prune_interval_ms &&
	    (st->opts.event_max_age_ms || st->opts.events_per_host))
		uv_timer_start(&st->prune_timer, prune_timer_cb, st->opts.prune_interval_ms,
			       st->opts.prune_interval_ms);
	if (uv_thread_create(&st->thread, writer_main, st) != 0) {
		snprintf(err, errlen, "cannot start the store's writer thread");
		uv_close((uv_handle_t *)&st->prune_timer, NULL);
		uv_close((uv_handle_t *)&st->async, async_closed_cb); /* frees st */
		return UV_EAGAIN;
	}
	*out = st;
	return 0;
fail:
	store_free(st);
	return UV_EIO;
}

static void async_closed_cb(uv_handle_t *h)
{
	struct store *st = h->data;
	void (*cb)(void *) = st->closed_cb;
	void *arg = st->closed_arg;
	uv_mutex_destroy(&st->lock);
	uv_cond_destroy(&st->wake);
	store_free(st);
	if (cb)
		cb(arg);
}

void store_close(struct store *st, void (*done_cb)(void *arg), void *arg)
{
	uv_mutex_lock(&st->lock);
	st->stopping = 1;
	uv_cond_signal(&st->wake);
	uv_mutex_unlock(&st->lock);
	/* The writer commits what is queued and ends; that takes at most one
	 * batch's time, so waiting here is fine at shutdown. */
	uv_thread_join(&st->thread);
	async_cb(&st->async);
	st->closed_cb = done_cb;
	st->closed_arg = arg;
	uv_close((uv_handle_t *)&st->prune_timer, NULL);
	uv_close((uv_handle_t *)&st->async, async_closed_cb);
}

/* ---- a store without its writer, for one write at a time ---- */

int store_open_reader(struct store **out, const char *path, char *err, size_t errlen)
{
	struct store *st = calloc(1, sizeof(*st));
	if (!st) {
		snprintf(err, errlen, "out of memory");
		return UV_ENOMEM;
	}
	snprintf(st->path, sizeof(st->path), "%s", path);
	/* Never create: a reader pointed at the wrong file must say so. */
	if (sqlite3_open_v2(path, &st->rdb, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: cannot open the collector's store: %s", path,
			 st->rdb ? sqlite3_errmsg(st->rdb) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(st->rdb, 5000);
	sqlite3_stmt *s;
	int version = -1;
	if (sqlite3_prepare_v2(st->rdb, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		version = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	if (version != STORE_SCHEMA_VERSION) {
		/* Say what to do: the collector migrates a store when it starts. */
		snprintf(err, errlen, "%s: schema version %d, this build reads version %d: %s",
			 path, version, STORE_SCHEMA_VERSION,
			 version <= 0 ? "is this a collector's store?"
			 : version < STORE_SCHEMA_VERSION
				 ? "start the new exfleet-collector once to migrate it"
				 : "use the build of the collector that wrote it");
		goto fail;
	}
	*out = st;
	return 0;
fail:
	sqlite3_close(st->rdb);
	free(st);
	return UV_EINVAL;
}

void store_close_reader(struct store *st)
{
	sqlite3_close(st->rdb);
	free(st);
}

int store_enqueue_command(struct store *st, const char *command_id, const char *host_id,
			  const char *action, const char *issuer, int64_t issued_ms,
			  int64_t expires_ms, const uint8_t *envelope, size_t len, char *err,
			  size_t errlen)
{
	sqlite3_stmt *s;
	char why[256];
	if (exec(st->rdb, "BEGIN IMMEDIATE", why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: %s", st->path, why);
		return UV_EIO;
	}
	if (sqlite3_prepare_v2(st->rdb,
			       "INSERT INTO commands (command_id, host_id, action, issuer, issued_at,"
			       " expires_at, state, state_since, envelope)"
			       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?5, ?7)",
			       -1, &s, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", st->path, sqlite3_errmsg(st->rdb));
		exec(st->rdb, "ROLLBACK", why, sizeof(why));
		return UV_EIO;
	}
	sqlite3_bind_text(s, 1, command_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, host_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, action, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, issuer, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, issued_ms);
	sqlite3_bind_int64(s, 6, expires_ms);
	sqlite3_bind_blob(s, 7, envelope, (int)len, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc == SQLITE_CONSTRAINT) {
		exec(st->rdb, "ROLLBACK", why, sizeof(why));
		snprintf(err, errlen, "command id %s is already in use", command_id);
		return UV_EEXIST;
	}
	json_t *d = json_pack("{s:s, s:s, s:s, s:I}", "command_id", command_id, "host_id",
			      host_id, "action", action, "expires_at", (json_int_t)expires_ms);
	char *detail = d ? json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(d);
	if (rc != SQLITE_DONE || !detail ||
	    audit_append(st->rdb, issued_ms, issuer, "command.submitted", detail) < 0 ||
	    exec(st->rdb, "COMMIT", why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: %s", st->path, sqlite3_errmsg(st->rdb));
		exec(st->rdb, "ROLLBACK", why, sizeof(why));
		free(detail);
		return UV_EIO;
	}
	free(detail);
	return 0;
}

int store_audit_add(struct store *st, int64_t at, const char *actor, const char *action,
		    const char *detail, char *err, size_t errlen)
{
	char why[256];
	/* IMMEDIATE: the writer thread appends too; the chain's last hash is
	 * read and extended under the one write lock. */
	if (exec(st->rdb, "BEGIN IMMEDIATE", why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: %s", st->path, why);
		return UV_EIO;
	}
	if (audit_append(st->rdb, at, actor, action, detail) < 0 ||
	    exec(st->rdb, "COMMIT", why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: audit: %s", st->path, sqlite3_errmsg(st->rdb));
		exec(st->rdb, "ROLLBACK", why, sizeof(why));
		return UV_EIO;
	}
	return 0;
}

int store_import_plan(struct store *st, const struct store_wave *plan, size_t n,
		      const char *actor, int64_t now_ms, char *err, size_t errlen)
{
	char why[512];
	sqlite3_stmt *s = NULL;
	if (exec(st->rdb, "BEGIN IMMEDIATE", why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: %s", st->path, why);
		return UV_EIO;
	}
	int rc = exec(st->rdb, "DELETE FROM waves", why, sizeof(why));
	if (rc == 0 && sqlite3_prepare_v2(st->rdb,
					  "INSERT INTO waves (host_id, wave, planned_date)"
					  " VALUES (?1, ?2, NULLIF(?3, ''))",
					  -1, &s, NULL) != SQLITE_OK) {
		snprintf(why, sizeof(why), "%s", sqlite3_errmsg(st->rdb));
		rc = -1;
	}
	for (size_t i = 0; rc == 0 && i < n; i++) {
		sqlite3_bind_text(s, 1, plan[i].host_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, plan[i].wave, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, plan[i].planned_date ? plan[i].planned_date : "", -1,
				  SQLITE_STATIC);
		if (sqlite3_step(s) != SQLITE_DONE) {
			snprintf(why, sizeof(why), "%s: %s", plan[i].host_id, sqlite3_errmsg(st->rdb));
			rc = -1;
		}
		sqlite3_reset(s);
	}
	sqlite3_finalize(s);
	if (rc == 0 && actor) {
		char detail[64];
		snprintf(detail, sizeof(detail), "{\"hosts\":%zu}", n);
		if (audit_append(st->rdb, now_ms, actor, "waves.imported", detail) < 0) {
			snprintf(why, sizeof(why), "audit: %s", sqlite3_errmsg(st->rdb));
			rc = -1;
		}
	}
	if (rc == 0 && exec(st->rdb, "COMMIT", why, sizeof(why)) == 0)
		return 0;
	char ignored[64];
	exec(st->rdb, "ROLLBACK", ignored, sizeof(ignored));
	snprintf(err, errlen, "%s: the plan was not imported (nothing changed): %s", st->path, why);
	return UV_EIO;
}
