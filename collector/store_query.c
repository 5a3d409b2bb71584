/* Read-only queries of the store for the HTTPS API (store_query.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sqlite3.h>
#include <uv.h>

#include "status.h"
#include "store.h"
#include "store_query.h"

#define BUDGET_DEFAULT_MS 1000
/* The budget is checked every this many SQLite VM steps (microseconds). */
#define PROGRESS_STEPS 4096
/* A snapshot carries a few services per host; this only bounds a bad one. */
#define SERVICES_MAX 1000

struct store_query {
	sqlite3 *db;
	char path[1024];
	uint64_t budget_ms;
	uint64_t deadline_ns; /* uv_hrtime() past which queries stop; 0: none */
};

/* ---- building a statement: fixed SQL text, values only ever bound ---- */

enum { BIND_TEXT, BIND_INT };

struct bind {
	int type;
	const char *text;
	int64_t num;
};

struct sql {
	char text[4096];
	size_t len;
	struct bind binds[16];
	int n;
	int has_where;
	int overflow; /* a programming error: the text or binds did not fit */
};

static void sql_add(struct sql *b, const char *text)
{
	size_t n = strlen(text);
	if (b->len + n >= sizeof(b->text)) {
		b->overflow = 1;
		return;
	}
	memcpy(b->text + b->len, text, n + 1);
	b->len += n;
}

static void sql_bind_text(struct sql *b, const char *text)
{
	if (b->n == (int)(sizeof(b->binds) / sizeof(b->binds[0]))) {
		b->overflow = 1;
		return;
	}
	b->binds[b->n++] = (struct bind){BIND_TEXT, text, 0};
}

static void sql_bind_int(struct sql *b, int64_t num)
{
	if (b->n == (int)(sizeof(b->binds) / sizeof(b->binds[0]))) {
		b->overflow = 1;
		return;
	}
	b->binds[b->n++] = (struct bind){BIND_INT, NULL, num};
}

/* Adds "cond" (with one '?') to the WHERE clause. */
static void sql_where(struct sql *b, const char *cond)
{
	sql_add(b, b->has_where ? " AND " : " WHERE ");
	sql_add(b, cond);
	b->has_where = 1;
}

static void sql_where_text(struct sql *b, const char *cond, const char *value)
{
	if (!value)
		return;
	sql_where(b, cond);
	sql_bind_text(b, value);
}

static void sql_where_int(struct sql *b, int set, const char *cond, int64_t value)
{
	if (!set)
		return;
	sql_where(b, cond);
	sql_bind_int(b, value);
}

/* ---- running statements ---- */

static int progress_cb(void *arg)
{
	struct store_query *q = arg;
	return q->deadline_ns && uv_hrtime() > q->deadline_ns;
}

static int failed(struct store_query *q, int rc, char *err, size_t errlen)
{
	if (rc == SQLITE_INTERRUPT) {
		snprintf(err, errlen, "the query ran longer than its %llu ms budget",
			 (unsigned long long)q->budget_ms);
		return UV_ETIMEDOUT;
	}
	if (rc == SQLITE_NOMEM) {
		snprintf(err, errlen, "out of memory");
		return UV_ENOMEM;
	}
	snprintf(err, errlen, "%s: %s", q->path, sqlite3_errmsg(q->db));
	return UV_EIO;
}

static int prepare(struct store_query *q, const struct sql *b, sqlite3_stmt **s, char *err,
		   size_t errlen)
{
	*s = NULL;
	if (b->overflow) {
		snprintf(err, errlen, "query too long for its buffer");
		return UV_EINVAL;
	}
	int rc = sqlite3_prepare_v2(q->db, b->text, (int)b->len, s, NULL);
	if (rc != SQLITE_OK)
		return failed(q, rc, err, errlen);
	for (int i = 0; i < b->n; i++) {
		if (b->binds[i].type == BIND_TEXT)
			sqlite3_bind_text(*s, i + 1, b->binds[i].text, -1, SQLITE_STATIC);
		else
			sqlite3_bind_int64(*s, i + 1, b->binds[i].num);
	}
	return 0;
}

/* Columns stored as JSON text, returned parsed. */
static int json_column(const char *name)
{
	static const char *const names[] = {"evidence", "rights", "steps", "strings",
					    "result_steps"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i]) == 0)
			return 1;
	return 0;
}

/* Text as a JSON string; bytes that are not UTF-8 (an event message an
 * agent did not convert) become '?' rather than losing the value. */
static json_t *text_json(const char *text, size_t len)
{
	json_t *j = json_stringn(text, len);
	if (j)
		return j;
	char *copy = malloc(len + 1);
	if (!copy)
		return NULL;
	for (size_t i = 0; i < len; i++)
		copy[i] = (unsigned char)text[i] < 0x80 && text[i] ? text[i] : '?';
	j = json_stringn(copy, len);
	free(copy);
	return j;
}

static json_t *column_json(sqlite3_stmt *s, int i)
{
	switch (sqlite3_column_type(s, i)) {
	case SQLITE_INTEGER:
		return json_integer(sqlite3_column_int64(s, i));
	case SQLITE_FLOAT:
		return json_real(sqlite3_column_double(s, i));
	case SQLITE_TEXT: {
		const char *text = (const char *)sqlite3_column_text(s, i);
		size_t len = (size_t)sqlite3_column_bytes(s, i);
		if (json_column(sqlite3_column_name(s, i))) {
			json_t *j = json_loadb(text, len, JSON_DECODE_ANY, NULL);
			if (j)
				return j;
		}
		return text_json(text, len);
	}
	default: /* NULL; no query selects a blob */
		return json_null();
	}
}

static json_t *row_json(sqlite3_stmt *s)
{
	json_t *o = json_object();
	int n = sqlite3_column_count(s);
	for (int i = 0; o && i < n; i++)
		json_object_set_new(o, sqlite3_column_name(s, i), column_json(s, i));
	return o;
}

/* Appends every row of b to items. */
static int rows(struct store_query *q, const struct sql *b, json_t *items, char *err,
		size_t errlen)
{
	sqlite3_stmt *s;
	int rc = prepare(q, b, &s, err, errlen);
	if (rc < 0)
		return rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		json_t *row = row_json(s);
		if (!row || json_array_append_new(items, row) < 0) {
			rc = SQLITE_NOMEM;
			break;
		}
	}
	rc = rc == SQLITE_DONE ? 0 : failed(q, rc, err, errlen);
	sqlite3_finalize(s);
	return rc;
}

/* Every row of b in a new array *items (NULL on failure). */
static int all_rows(struct store_query *q, const struct sql *b, json_t **items, char *err,
		    size_t errlen)
{
	*items = json_array();
	if (!*items)
		return UV_ENOMEM;
	int rc = rows(q, b, *items, err, errlen);
	if (rc < 0) {
		json_decref(*items);
		*items = NULL;
	}
	return rc;
}

/* The integer in the first column of b's single row. */
static int scalar(struct store_query *q, const struct sql *b, int64_t *value, char *err,
		  size_t errlen)
{
	sqlite3_stmt *s;
	int rc = prepare(q, b, &s, err, errlen);
	if (rc < 0)
		return rc;
	*value = 0;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*value = sqlite3_column_int64(s, 0);
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? 0 : failed(q, rc, err, errlen);
	}
	sqlite3_finalize(s);
	return rc;
}

/* The page of base (a SELECT with its WHERE, binds set) in the given
 * order, and how many rows base has in all. */
static int page(struct store_query *q, const struct sql *base, const char *order,
		const struct store_page *p, json_t **items, int64_t *total, char *err,
		size_t errlen)
{
	struct sql count = {0};
	sql_add(&count, "SELECT COUNT(*) FROM (");
	sql_add(&count, base->text);
	sql_add(&count, ")");
	memcpy(count.binds, base->binds, sizeof(base->binds));
	count.n = base->n;
	count.overflow |= base->overflow;
	int rc = scalar(q, &count, total, err, errlen);
	if (rc < 0)
		return rc;

	struct sql list = *base;
	sql_add(&list, " ORDER BY ");
	sql_add(&list, order);
	sql_add(&list, " LIMIT ? OFFSET ?");
	sql_bind_int(&list, p->limit);
	sql_bind_int(&list, p->offset);
	return all_rows(q, &list, items, err, errlen);
}

/* ---- the connection ---- */

/* connectivity_of() as SQL, so filters, counts and paging agree with it. */
static void connectivity_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	int64_t last_seen = sqlite3_value_int64(argv[0]); /* NULL reads as 0: never */
	int64_t now = sqlite3_value_int64(argv[1]);
	int64_t heartbeat = sqlite3_value_int64(argv[2]);
	enum connectivity c =
		connectivity_of(last_seen, 1, now, heartbeat > 0 ? (uint64_t)heartbeat : 0);
	sqlite3_result_text(ctx, connectivity_name(c), -1, SQLITE_STATIC);
}

int store_query_open(struct store_query **out, const char *path, uint64_t budget_ms, char *err,
		     size_t errlen)
{
	struct store_query *q = calloc(1, sizeof(*q));
	if (!q) {
		snprintf(err, errlen, "out of memory");
		return UV_ENOMEM;
	}
	snprintf(q->path, sizeof(q->path), "%s", path);
	q->budget_ms = budget_ms ? budget_ms : BUDGET_DEFAULT_MS;
	/* Read-only, and never created: the store's own open made it. */
	if (sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		snprintf(err, errlen, "%s: cannot open the store to read: %s", path,
			 q->db ? sqlite3_errmsg(q->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(q->db, (int)q->budget_ms);
	sqlite3_progress_handler(q->db, PROGRESS_STEPS, progress_cb, q);
	if (sqlite3_create_function(q->db, "exfleet_connectivity", 3,
				    SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_DIRECTONLY, NULL,
				    connectivity_fn, NULL, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(q->db));
		goto fail;
	}
	if (store_query_ping(q, err, errlen) < 0)
		goto fail;
	*out = q;
	return 0;
fail:
	store_query_close(q);
	return UV_EIO;
}

void store_query_close(struct store_query *q)
{
	if (!q)
		return;
	sqlite3_close(q->db);
	free(q);
}

int store_query_begin(struct store_query *q, char *err, size_t errlen)
{
	q->deadline_ns = uv_hrtime() + q->budget_ms * 1000000;
	int rc = sqlite3_exec(q->db, "BEGIN", NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : failed(q, rc, err, errlen);
}

void store_query_end(struct store_query *q)
{
	/* An interrupted read may have ended the transaction already. */
	if (!sqlite3_get_autocommit(q->db))
		sqlite3_exec(q->db, "COMMIT", NULL, NULL, NULL);
	q->deadline_ns = 0;
}

int store_query_ping(struct store_query *q, char *err, size_t errlen)
{
	struct sql b = {0};
	sql_add(&b, "SELECT user_version FROM pragma_user_version"
		    " WHERE (SELECT COUNT(*) FROM (SELECT 1 FROM hosts LIMIT 1)) >= 0");
	int64_t version = -1;
	int rc = scalar(q, &b, &version, err, errlen);
	if (rc < 0)
		return rc;
	if (version != STORE_SCHEMA_VERSION) {
		snprintf(err, errlen, "%s: schema version %lld, this collector reads version %d",
			 q->path, (long long)version, STORE_SCHEMA_VERSION);
		return UV_EIO;
	}
	return 0;
}

/* ---- the fleet ---- */

/* Hosts that connected, and planned hosts that never did; the plan's wave
 * overrides the agent's label. Takes the clock's two binds. */
#define FLEET                                                                                   \
	"WITH fleet AS ("                                                                       \
	" SELECT h.host_id AS host_id, COALESCE(w.wave, h.wave) AS wave, h.site AS site,"      \
	"  w.planned_date AS planned_date, h.status AS status, h.status_since AS status_since," \
	"  h.evidence AS evidence, h.promoted_at AS promoted_at, h.last_seen AS last_seen,"     \
	"  exfleet_connectivity(h.last_seen, ?, ?) AS connectivity"                             \
	" FROM hosts h LEFT JOIN waves w ON w.host_id = h.host_id"                              \
	" UNION ALL"                                                                            \
	" SELECT w.host_id, w.wave, NULL, w.planned_date, NULL, NULL, NULL, NULL, NULL,"        \
	"  'NEVER_SEEN' FROM waves w"                                                           \
	" WHERE NOT EXISTS (SELECT 1 FROM hosts h WHERE h.host_id = w.host_id)) "

static void sql_fleet(struct sql *b, const struct store_clock *clock)
{
	sql_add(b, FLEET);
	sql_bind_int(b, clock->now_ms);
	sql_bind_int(b, (int64_t)clock->heartbeat_ms);
}

int store_query_hosts(struct store_query *q, const struct store_clock *clock,
		      const struct store_host_filter *f, const struct store_page *p, json_t **items,
		      int64_t *total, char *err, size_t errlen)
{
	struct sql b = {0};
	sql_fleet(&b, clock);
	sql_add(&b, "SELECT host_id, wave, site, planned_date, status, status_since, evidence,"
		    " promoted_at, last_seen, connectivity FROM fleet");
	sql_where_text(&b, "COALESCE(status, 'NEVER_SEEN') = ?", f->status);
	sql_where_text(&b, "connectivity = ?", f->connectivity);
	sql_where_text(&b, "wave = ?", f->wave);
	sql_where_text(&b, "site = ?", f->site);
	return page(q, &b, "host_id", p, items, total, err, errlen);
}

int store_query_host(struct store_query *q, const struct store_clock *clock, const char *host_id,
		     json_t **host, char *err, size_t errlen)
{
	*host = NULL;
	struct sql b = {0};
	sql_add(&b, "SELECT h.host_id, COALESCE(w.wave, h.wave) AS wave, h.site, w.planned_date,"
		    " h.status, h.status_since, h.evidence, h.promoted_at, h.last_seen,"
		    " exfleet_connectivity(h.last_seen, ?, ?) AS connectivity, h.first_seen,"
		    " h.agent_version, h.platform, h.role, h.domain, h.role_changed_at,"
		    " h.sam_present, h.exchange_version, h.exchange_sp, h.sp_needs_reapply,"
		    " h.highest_seq, h.spool_dropped, h.repaired_at"
		    " FROM hosts h LEFT JOIN waves w ON w.host_id = h.host_id WHERE h.host_id = ?");
	sql_bind_int(&b, clock->now_ms);
	sql_bind_int(&b, (int64_t)clock->heartbeat_ms);
	sql_bind_text(&b, host_id);
	json_t *found = json_array();
	if (!found)
		return UV_ENOMEM;
	int rc = rows(q, &b, found, err, errlen);
	if (rc == 0 && json_array_size(found) == 0) {
		/* Perhaps planned only. */
		struct sql planned = {0};
		sql_fleet(&planned, clock);
		sql_add(&planned, "SELECT * FROM fleet WHERE host_id = ?");
		sql_bind_text(&planned, host_id);
		rc = rows(q, &planned, found, err, errlen);
	}
	if (rc == 0 && json_array_size(found) > 0)
		*host = json_incref(json_array_get(found, 0));
	json_decref(found);
	return rc;
}

int store_query_host_services(struct store_query *q, const char *host_id, json_t **items,
			      char *err, size_t errlen)
{
	struct sql b = {0};
	sql_add(&b, "SELECT name, display_name, state, start_type, logon_account, win32_exit_code,"
		    " service_exit_code, account_status, rights, rights_error FROM services"
		    " WHERE host_id = ? ORDER BY name LIMIT ?");
	sql_bind_text(&b, host_id);
	sql_bind_int(&b, SERVICES_MAX);
	return all_rows(q, &b, items, err, errlen);
}

int store_query_host_history(struct store_query *q, const char *host_id,
			     const struct store_page *p, json_t **items, int64_t *total, char *err,
			     size_t errlen)
{
	struct sql b = {0};
	sql_add(&b, "SELECT rowid AS n, at, status, evidence FROM status_history");
	sql_where_text(&b, "host_id = ?", host_id);
	int rc = page(q, &b, "at DESC, n DESC", p, items, total, err, errlen);
	/* The rowid only orders changes stamped in the same millisecond. */
	size_t i;
	json_t *row;
	json_array_foreach(rc == 0 ? *items : NULL, i, row)
		json_object_del(row, "n");
	return rc;
}

int store_query_events(struct store_query *q, const struct store_event_filter *f,
		       const struct store_page *p, json_t **items, int64_t *total, char *err,
		       size_t errlen)
{
	struct sql b = {0};
	sql_add(&b, "SELECT host_id, seq, record_number, log, source, event_id, type, category,"
		    " category_name, time_generated, strings, message, computer, received_at"
		    " FROM events");
	sql_where_text(&b, "host_id = ?", f->host_id);
	sql_where_text(&b, "source = ?", f->source);
	sql_where_int(&b, f->has_event_id, "event_id = ?", f->event_id);
	sql_where_int(&b, f->has_since, "time_generated >= ?", f->since_ms);
	sql_where_int(&b, f->has_until, "time_generated < ?", f->until_ms);
	return page(q, &b, "time_generated DESC, host_id, seq DESC", p, items, total, err, errlen);
}

/* Sets each group's count in obj from rows of (key, count). */
static int group_counts(struct store_query *q, const struct sql *b, json_t *obj, char *err,
			size_t errlen)
{
	json_t *found = json_array();
	if (!found)
		return UV_ENOMEM;
	int rc = rows(q, b, found, err, errlen);
	size_t i;
	json_t *row;
	json_array_foreach(rc == 0 ? found : NULL, i, row) {
		const char *key = json_string_value(json_object_get(row, "k"));
		if (key)
			json_object_set(obj, key, json_object_get(row, "n"));
	}
	json_decref(found);
	return rc;
}

static json_t *zero_statuses(void)
{
	json_t *o = json_object();
	for (int s = HOST_HEALTHY; s <= HOST_REPAIRING; s++)
		json_object_set_new(o, host_status_name((enum host_status)s), json_integer(0));
	return o;
}

static int same_wave(json_t *a, json_t *b)
{
	return json_is_null(a) ? json_is_null(b) : json_equal(a, b);
}

int store_query_waves(struct store_query *q, const struct store_clock *clock,
		      const struct store_page *p, json_t **items, int64_t *total, char *err,
		      size_t errlen)
{
	struct sql b = {0};
	sql_fleet(&b, clock);
	sql_add(&b, "SELECT wave, MIN(planned_date) AS planned_date, COUNT(*) AS hosts,"
		    " SUM(promoted_at IS NOT NULL) AS promoted,"
		    " SUM(promoted_at IS NOT NULL AND status IN ('HEALTHY', 'REPAIRED')) AS done,"
		    " SUM(connectivity = 'ONLINE') AS online,"
		    " SUM(connectivity = 'OFFLINE') AS offline,"
		    " SUM(connectivity = 'NEVER_SEEN') AS never_seen FROM fleet GROUP BY wave");
	/* Wave "10" after "9"; names that are not numbers cast to 0. */
	int rc = page(q, &b, "wave IS NULL, CAST(wave AS INTEGER), wave", p, items, total, err,
		      errlen);
	if (rc < 0)
		return rc;

	struct sql by_status = {0};
	sql_fleet(&by_status, clock);
	sql_add(&by_status, "SELECT wave, status, COUNT(*) AS n FROM fleet WHERE status IS NOT NULL"
			    " GROUP BY wave, status");
	json_t *counts = json_array();
	rc = counts ? rows(q, &by_status, counts, err, errlen) : UV_ENOMEM;
	size_t i, k;
	json_t *item, *count;
	json_array_foreach(rc == 0 ? *items : NULL, i, item) {
		json_t *statuses = zero_statuses();
		json_array_foreach(counts, k, count) {
			const char *status = json_string_value(json_object_get(count, "status"));
			if (status && same_wave(json_object_get(count, "wave"),
						json_object_get(item, "wave")))
				json_object_set(statuses, status, json_object_get(count, "n"));
		}
		json_object_set_new(item, "by_status", statuses);
		json_object_set_new(item, "by_connectivity",
				    json_pack("{s:O, s:O, s:O}", "ONLINE",
					      json_object_get(item, "online"), "OFFLINE",
					      json_object_get(item, "offline"), "NEVER_SEEN",
					      json_object_get(item, "never_seen")));
		json_object_del(item, "online");
		json_object_del(item, "offline");
		json_object_del(item, "never_seen");
	}
	json_decref(counts);
	if (rc < 0) {
		json_decref(*items);
		*items = NULL;
	}
	return rc;
}

/* ---- commands, audit ---- */

#define COMMANDS                                                                                \
	"SELECT c.command_id, c.host_id, c.action, c.issuer, c.issued_at, c.expires_at, c.state," \
	" c.state_since, r.status AS result_status, r.reason AS result_reason,"                 \
	" r.started_at AS result_started_at, r.finished_at AS result_finished_at,"             \
	" r.received_at AS result_received_at, r.steps AS result_steps, c.rowid AS n"          \
	" FROM commands c LEFT JOIN command_results r ON r.host_id = c.host_id"                \
	" AND r.seq = (SELECT MAX(seq) FROM command_results x"                                  \
	"  WHERE x.host_id = c.host_id AND x.command_id = c.command_id)"

static void drop_rowids(json_t *items)
{
	size_t i;
	json_t *row;
	json_array_foreach(items, i, row)
		json_object_del(row, "n");
}

int store_query_commands(struct store_query *q, const struct store_command_filter *f,
			 const struct store_page *p, json_t **items, int64_t *total, char *err,
			 size_t errlen)
{
	struct sql b = {0};
	sql_add(&b, COMMANDS);
	sql_where_text(&b, "c.host_id = ?", f->host_id);
	sql_where_text(&b, "c.state = ?", f->state);
	int rc = page(q, &b, "n DESC", p, items, total, err, errlen);
	if (rc == 0)
		drop_rowids(*items);
	return rc;
}

int store_query_command(struct store_query *q, const char *command_id, json_t **command,
			char *err, size_t errlen)
{
	*command = NULL;
	struct sql b = {0};
	sql_add(&b, COMMANDS);
	sql_where_text(&b, "c.command_id = ?", command_id);
	json_t *found = json_array();
	if (!found)
		return UV_ENOMEM;
	int rc = rows(q, &b, found, err, errlen);
	drop_rowids(found);
	if (rc == 0 && json_array_size(found) > 0)
		*command = json_incref(json_array_get(found, 0));
	json_decref(found);
	return rc;
}

int store_query_host_known(struct store_query *q, const char *host_id, int *known, char *err,
			   size_t errlen)
{
	struct sql b = {0};
	sql_add(&b, "SELECT EXISTS (SELECT 1 FROM hosts WHERE host_id = ?)"
		    " OR EXISTS (SELECT 1 FROM waves WHERE host_id = ?)");
	sql_bind_text(&b, host_id);
	sql_bind_text(&b, host_id);
	int64_t v = 0;
	int rc = scalar(q, &b, &v, err, errlen);
	*known = v != 0;
	return rc;
}

int store_query_audit(struct store_query *q, const struct store_page *p, json_t **items,
		      int64_t *total, char *err, size_t errlen)
{
	struct sql b = {0};
	sql_add(&b, "SELECT id, at, actor, action, detail, prev_hash, hash FROM audit");
	return page(q, &b, "id DESC", p, items, total, err, errlen);
}

int store_query_counts(struct store_query *q, const struct store_clock *clock, json_t **counts,
		       char *err, size_t errlen)
{
	json_t *by_status = json_object(), *by_connectivity = json_object(),
	       *by_state = json_object();
	*counts = json_pack("{s:o, s:o, s:o}", "hosts_by_status", by_status,
			    "hosts_by_connectivity", by_connectivity, "commands_by_state",
			    by_state);
	if (!*counts)
		return UV_ENOMEM;
	struct sql statuses = {0}, connectivity = {0}, states = {0}, dropped = {0};
	sql_add(&statuses, "SELECT status AS k, COUNT(*) AS n FROM hosts WHERE status IS NOT NULL"
			   " GROUP BY status");
	sql_fleet(&connectivity, clock);
	sql_add(&connectivity, "SELECT connectivity AS k, COUNT(*) AS n FROM fleet"
			       " GROUP BY connectivity");
	sql_add(&states, "SELECT state AS k, COUNT(*) AS n FROM commands GROUP BY state");
	sql_add(&dropped, "SELECT COALESCE(SUM(spool_dropped), 0) FROM hosts");
	int64_t spool_dropped = 0;
	int rc = group_counts(q, &statuses, by_status, err, errlen);
	if (rc == 0)
		rc = group_counts(q, &connectivity, by_connectivity, err, errlen);
	if (rc == 0)
		rc = group_counts(q, &states, by_state, err, errlen);
	if (rc == 0)
		rc = scalar(q, &dropped, &spool_dropped, err, errlen);
	if (rc < 0) {
		json_decref(*counts);
		*counts = NULL;
		return rc;
	}
	json_object_set_new(*counts, "spool_dropped", json_integer(spool_dropped));
	return 0;
}

int store_query_audit_verify(struct store_query *q, int64_t *entries, int64_t *first_bad,
			     char *err, size_t errlen)
{
	struct sql b = {0};
	sql_add(&b, "SELECT id, at, actor, action, detail, prev_hash, hash FROM audit ORDER BY id");
	sqlite3_stmt *s;
	*entries = 0;
	*first_bad = 0;
	int rc = prepare(q, &b, &s, err, errlen);
	if (rc < 0)
		return rc;
	char prev[65] = STORE_AUDIT_GENESIS, hash[65];
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		(*entries)++;
		const char *stored_prev = (const char *)sqlite3_column_text(s, 5);
		const char *stored = (const char *)sqlite3_column_text(s, 6);
		const char *actor = (const char *)sqlite3_column_text(s, 2);
		const char *action = (const char *)sqlite3_column_text(s, 3);
		store_audit_hash(prev, sqlite3_column_int64(s, 1), actor ? actor : "",
				 action ? action : "", (const char *)sqlite3_column_text(s, 4),
				 hash);
		if (!stored_prev || !stored || strcmp(stored_prev, prev) != 0 ||
		    strcmp(stored, hash) != 0) {
			*first_bad = sqlite3_column_int64(s, 0);
			rc = SQLITE_DONE;
			break;
		}
		snprintf(prev, sizeof(prev), "%s", stored);
	}
	rc = rc == SQLITE_DONE ? 0 : failed(q, rc, err, errlen);
	sqlite3_finalize(s);
	return rc;
}

int store_query_host_sealing(struct store_query *q, const char *host_id, json_t **sealing,
			     char *err, size_t errlen)
{
	struct sql b = {0};
	sql_add(&b, "SELECT sealing_key, sealing_key_sig, agent_cert FROM hosts WHERE host_id = ?"
		    " AND length(sealing_key) > 0 AND length(sealing_key_sig) > 0"
		    " AND length(agent_cert) > 0");
	sql_bind_text(&b, host_id);
	sqlite3_stmt *s;
	*sealing = NULL;
	int rc = prepare(q, &b, &s, err, errlen);
	if (rc < 0)
		return rc;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		json_t *o = json_object();
		static const char *const keys[] = {"public_key", "signature"};
		for (int i = 0; o && i < 2; i++) {
			const unsigned char *blob = sqlite3_column_blob(s, i);
			int n = sqlite3_column_bytes(s, i);
			unsigned char *text = malloc(4 * ((size_t)n / 3 + 1) + 1);
			if (!text) {
				json_decref(o);
				o = NULL;
				break;
			}
			EVP_EncodeBlock(text, blob, n);
			json_object_set_new(o, keys[i], json_string((const char *)text));
			free(text);
		}
		/* The certificate as PEM, as operators' tools read certificates. */
		const unsigned char *der = sqlite3_column_blob(s, 2);
		X509 *cert = d2i_X509(NULL, &der, sqlite3_column_bytes(s, 2));
		BIO *pem = BIO_new(BIO_s_mem());
		char *text = NULL;
		long len = 0;
		if (cert && pem && PEM_write_bio_X509(pem, cert) == 1)
			len = BIO_get_mem_data(pem, &text);
		if (o && len > 0)
			json_object_set_new(o, "agent_certificate",
					    json_stringn(text, (size_t)len));
		X509_free(cert);
		BIO_free(pem);
		if (o && !json_object_get(o, "agent_certificate")) {
			json_decref(o);
			o = NULL;
		}
		/* A certificate that does not parse is as good as none. */
		*sealing = o;
		rc = SQLITE_DONE;
	}
	rc = rc == SQLITE_DONE ? 0 : failed(q, rc, err, errlen);
	sqlite3_finalize(s);
	return rc;
}

int store_query_report(struct store_query *q, const struct store_clock *clock, json_t **items,
		       char *err, size_t errlen)
{
	struct sql b = {0};
	sql_fleet(&b, clock);
	/* Detection: the first AFFECTED or NEEDS_SP_REINSTALL at or after the
	 * promotion; repair: the first REPAIRED after that. */
	sql_add(&b, ", d AS (SELECT f.host_id, (SELECT MIN(s.at) FROM status_history s"
		    "  WHERE s.host_id = f.host_id AND s.status IN ('AFFECTED', 'NEEDS_SP_REINSTALL')"
		    "  AND s.at >= COALESCE(f.promoted_at, 0)) AS detected_at FROM fleet f)"
		    " SELECT f.host_id, f.wave, f.planned_date, f.site, f.status, f.connectivity,"
		    " f.promoted_at, d.detected_at, (SELECT MIN(s.at) FROM status_history s"
		    "  WHERE s.host_id = f.host_id AND s.status = 'REPAIRED'"
		    "  AND s.at >= d.detected_at) AS repaired_at, f.evidence"
		    " FROM fleet f JOIN d ON d.host_id = f.host_id");
	sql_add(&b, " ORDER BY f.host_id");
	return all_rows(q, &b, items, err, errlen);
}
