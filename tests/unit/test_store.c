/* The store: records committed in batches, callbacks after commit in order,
 * duplicates (same host and sequence) stored once, the current snapshot only
 * replaced by a newer one, and everything there again after reopening. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "log.h"
#include "store.h"
#include "util.h"
#include "testutil.h"

static char dir[512], db_path[600];


static int setup(void **state)
{
	assert_int_equal(test_tmpdir("test_store", dir, sizeof(dir)), 0);
	snprintf(db_path, sizeof(db_path), "%s/collector.db", dir);
	return 0;
}

static int teardown(void **state)
{
	test_rmtree(dir);
	return 0;
}

/* ---- building messages ---- */

static Exfleet__AgentMessage *hello(const char *host)
{
	Exfleet__AgentMessage *m = calloc(1, sizeof(*m));
	exfleet__agent_message__init(m);
	m->msg_case = EXFLEET__AGENT_MESSAGE__MSG_HELLO;
	m->hello = calloc(1, sizeof(*m->hello));
	exfleet__hello__init(m->hello);
	m->hello->host_id = strdup(host);
	m->hello->agent_version = strdup("0.1.0");
	m->hello->n_labels = 1;
	m->hello->labels = calloc(1, sizeof(Exfleet__Label *));
	m->hello->labels[0] = calloc(1, sizeof(Exfleet__Label));
	exfleet__label__init(m->hello->labels[0]);
	m->hello->labels[0]->key = strdup("wave");
	m->hello->labels[0]->value = strdup("2");
	return m;
}

static Exfleet__AgentMessage *events(uint64_t first, size_t n)
{
	Exfleet__AgentMessage *m = calloc(1, sizeof(*m));
	exfleet__agent_message__init(m);
	m->msg_case = EXFLEET__AGENT_MESSAGE__MSG_EVENTS;
	m->events = calloc(1, sizeof(*m->events));
	exfleet__event_batch__init(m->events);
	m->events->n_events = n;
	m->events->events = calloc(n, sizeof(Exfleet__Event *));
	for (size_t i = 0; i < n; i++) {
		Exfleet__Event *e = calloc(1, sizeof(*e));
		exfleet__event__init(e);
		e->sequence = first + i;
		e->record_number = (uint32_t)(first + i);
		e->source = strdup("MSExchangePOP3");
		e->event_id = 13003;
		e->n_insertion_strings = 1;
		e->insertion_strings = calloc(1, sizeof(char *));
		e->insertion_strings[0] = strdup("a \"quoted\" string");
		m->events->events[i] = e;
	}
	return m;
}

static Exfleet__AgentMessage *snapshot(uint64_t seq, Exfleet__DomainRole role)
{
	Exfleet__AgentMessage *m = calloc(1, sizeof(*m));
	exfleet__agent_message__init(m);
	m->msg_case = EXFLEET__AGENT_MESSAGE__MSG_SNAPSHOT;
	m->snapshot = calloc(1, sizeof(*m->snapshot));
	exfleet__snapshot__init(m->snapshot);
	m->snapshot->sequence = seq;
	m->snapshot->observed_at_ms = 1000 * (int64_t)seq;
	m->snapshot->role = role;
	m->snapshot->n_services = 1;
	m->snapshot->services = calloc(1, sizeof(Exfleet__Service *));
	Exfleet__Service *svc = calloc(1, sizeof(*svc));
	exfleet__service__init(svc);
	svc->name = strdup("MSExchangeIS");
	svc->state = seq % 2 ? EXFLEET__SERVICE_STATE__SERVICE_RUNNING
			     : EXFLEET__SERVICE_STATE__SERVICE_STOPPED;
	m->snapshot->services[0] = svc;
	return m;
}

/* ---- the loop ---- */

struct seen {
	int count;
	uint64_t highest[64];
	int status[64];
};

static void committed_cb(struct store_write *w, void *arg)
{
	struct seen *s = arg;
	s->highest[s->count] = w->highest_seq;
	s->status[s->count] = w->status;
	s->count++;
}

static void submit(struct store *st, const char *host, Exfleet__AgentMessage *m)
{
	struct store_write *w = calloc(1, sizeof(*w));
	snprintf(w->host_id, sizeof(w->host_id), "%s", host);
	w->msg = m;
	w->received_ms = util_now_ms();
	store_submit(st, w);
}

static void run_until(uv_loop_t *loop, struct seen *s, int count)
{
	while (s->count < count)
		uv_run(loop, UV_RUN_ONCE);
}

static int64_t query_int(const char *sql)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static char last_text[4096];

/* One text value from db into last_text; 0 or -1. */
static int query_str(const char *db_file, const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int rc = -1;
	if (sqlite3_open(db_file, &db) != SQLITE_OK)
		goto out;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		goto out;
	if (sqlite3_step(st) == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(st, 0);
		snprintf(last_text, sizeof(last_text), "%s", t ? (const char *)t : "(null)");
		rc = 0;
	}
	sqlite3_finalize(st);
out:
	sqlite3_close(db);
	return rc;
}

static void test_commit_ack_dedup_reopen(void **state)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct store_options o;
	store_options_default(&o);
	o.path = db_path;
	o.batch_max = 1; /* one transaction per write, so each highest is exact */
	struct store *st;
	struct seen seen = {0};
	char err[512];
	assert_int_equal(store_open(&st, &loop, &o, committed_cb, &seen, err, sizeof(err)), 0);

	submit(st, "EXCH01", hello("EXCH01"));
	submit(st, "EXCH01", snapshot(1, EXFLEET__DOMAIN_ROLE__ROLE_MEMBER_SERVER));
	submit(st, "EXCH01", events(2, 100));
	submit(st, "EXCH01", events(50, 100)); /* overlaps: 50..101 again */
	submit(st, "EXCH01", snapshot(200, EXFLEET__DOMAIN_ROLE__ROLE_PRIMARY_DC));
	submit(st, "EXCH01", snapshot(150, EXFLEET__DOMAIN_ROLE__ROLE_MEMBER_SERVER)); /* late */
	run_until(&loop, &seen, 6);
	for (int i = 0; i < 6; i++)
		assert_int_equal(seen.status[i], 0);
	/* Callbacks come in order, each after its own commit. */
	assert_int_equal(seen.highest[1], 1);
	assert_int_equal(seen.highest[2], 101);
	assert_int_equal(seen.highest[3], 149);
	assert_int_equal(seen.highest[5], 200);
	assert_true(store_transactions(st) >= 1);

	uint64_t hi;
	assert_int_equal(store_host_highest(st, "EXCH01", &hi), 0);
	assert_int_equal(hi, 200);
	assert_int_equal(store_host_highest(st, "NEVER", &hi), 0);
	assert_int_equal(hi, 0);

	store_close(st, NULL, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);

	/* Each sequence once; the current snapshot is the newest (a DC). */
	assert_int_equal(query_int("SELECT COUNT(*) FROM events WHERE host_id = 'EXCH01'"), 148);
	assert_int_equal(query_int("SELECT COUNT(DISTINCT record_number) FROM events"), 148);
	assert_int_equal(query_int("SELECT snapshot_seq FROM hosts"), 200);
	assert_int_equal(query_int("SELECT role FROM hosts"), EXFLEET__DOMAIN_ROLE__ROLE_PRIMARY_DC);
	assert_int_equal(query_int("SELECT promoted_at FROM hosts"), 200000);
	assert_int_equal(query_int("SELECT COUNT(*) FROM snapshots"), 3);
	assert_int_equal(query_int("SELECT state FROM services"), EXFLEET__SERVICE_STATE__SERVICE_STOPPED);
	assert_int_equal(query_int("SELECT wave = '2' FROM hosts"), 1);

	/* Reopened: the same highest sequence, the same schema. */
	uv_loop_init(&loop);
	seen.count = 0;
	assert_int_equal(store_open(&st, &loop, &o, committed_cb, &seen, err, sizeof(err)), 0);
	assert_int_equal(store_host_highest(st, "EXCH01", &hi), 0);
	assert_int_equal(hi, 200);
	store_close(st, NULL, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	assert_int_equal(query_int("PRAGMA user_version"), STORE_SCHEMA_VERSION);
}

static void count_cb(struct store_write *w, void *arg)
{
	(void)w;
	(*(int *)arg)++;
}

/* The writer copies the WAL back into the database itself once nothing is
 * queued (SQLite's automatic checkpoint, inside whichever commit crosses
 * its mark, is off), so the database grows and the WAL does not. */
static void test_checkpoint_once_idle(void **state)
{
	enum { BATCHES = 200, EACH = 200 };
	char kept[sizeof(db_path)];
	snprintf(kept, sizeof(kept), "%s", db_path);
	snprintf(db_path, sizeof(db_path), "%s/checkpoint.db", dir);
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct store_options o;
	store_options_default(&o);
	o.path = db_path;
	o.batch_max = 4;
	struct store *st;
	int done = 0;
	char err[512];
	assert_int_equal(store_open(&st, &loop, &o, count_cb, &done, err, sizeof(err)), 0);
	struct stat sb;
	assert_int_equal(stat(db_path, &sb), 0);
	off_t before = sb.st_size;

	submit(st, "EXCH01", hello("EXCH01"));
	for (int i = 0; i < BATCHES; i++)
		submit(st, "EXCH01", events(1 + (uint64_t)i * EACH, EACH));
	while (done < BATCHES + 1)
		uv_run(&loop, UV_RUN_ONCE);
	/* The checkpoint follows the last commit, on the writer's thread. */
	int64_t end = util_now_ms() + 10000;
	while (stat(db_path, &sb) == 0 && sb.st_size < before + (4 << 20) && util_now_ms() < end)
		uv_sleep(20);
	assert_true(sb.st_size >= before + (4 << 20));

	store_close(st, NULL, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	assert_int_equal(query_int("SELECT COUNT(*) FROM events"), BATCHES * EACH);
	snprintf(db_path, sizeof(db_path), "%s", kept);
}

static char *const_strdup(const char *s)
{
	return strdup(s);
}

/* A promoted host whose Information Store failed to log on, then POP3
 * logons refused: AFFECTED with its evidence, and the change on record. */
static void test_status_follows_the_records(void **state)
{
	char path[700];
	snprintf(path, sizeof(path), "%s/status.db", dir);
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct store_options o;
	store_options_default(&o);
	o.path = path;
	struct store *st;
	struct seen seen = {0};
	char err[512];
	assert_int_equal(store_open(&st, &loop, &o, committed_cb, &seen, err, sizeof(err)), 0);

	submit(st, "EXCH07", hello("EXCH07"));
	Exfleet__AgentMessage *m = snapshot(1, EXFLEET__DOMAIN_ROLE__ROLE_MEMBER_SERVER);
	m->snapshot->services[0]->state = EXFLEET__SERVICE_STATE__SERVICE_RUNNING;
	m->snapshot->services[0]->logon_account = const_strdup("CORP\\exsvc");
	m->snapshot->services[0]->account_status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_EXISTS;
	static const char *rights[] = {"SeServiceLogonRight", "SeTcbPrivilege",
				       "SeRestorePrivilege"};
	m->snapshot->services[0]->n_account_rights = 3;
	m->snapshot->services[0]->account_rights = calloc(3, sizeof(char *));
	for (size_t i = 0; i < 3; i++)
		m->snapshot->services[0]->account_rights[i] = const_strdup(rights[i]);
	submit(st, "EXCH07", m);
	run_until(&loop, &seen, 2);
	assert_int_equal(query_str(path, "SELECT status FROM hosts"), 0);
	assert_string_equal(last_text, "HEALTHY");

	int64_t promoted = util_now_ms() - 60000;
	m = snapshot(2, EXFLEET__DOMAIN_ROLE__ROLE_PRIMARY_DC);
	m->snapshot->role_changed_at_ms = promoted;
	m->snapshot->services[0]->state = EXFLEET__SERVICE_STATE__SERVICE_STOPPED;
	m->snapshot->services[0]->win32_exit_code = 1069;
	submit(st, "EXCH07", m);
	m = events(3, 5);
	for (size_t i = 0; i < 5; i++)
		m->events->events[i]->time_generated_ms = promoted + 1000;
	submit(st, "EXCH07", m);
	run_until(&loop, &seen, 4);
	store_close(st, NULL, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);

	assert_int_equal(query_str(path, "SELECT status FROM hosts"), 0);
	assert_string_equal(last_text, "AFFECTED");
	assert_int_equal(query_str(path, "SELECT evidence FROM hosts"), 0);
	assert_non_null(strstr(last_text, "MSExchangeIS stopped: 1069"));
	assert_non_null(strstr(last_text, "5 x MSExchangePOP3/13003 since promotion"));
	assert_int_equal(query_str(path, "SELECT group_concat(status, ',') FROM "
					 "(SELECT status FROM status_history ORDER BY rowid)"),
			 0);
	/* A member server with its service running, then the promotion. */
	assert_string_equal(last_text, "HEALTHY,AFFECTED");
	assert_int_equal(query_str(path, "SELECT was_affected FROM hosts"), 0);
	assert_string_equal(last_text, "1");
}

/* Retention: events past their age go, and a host keeps only its newest. */
static void test_retention(void **state)
{
	char path[700];
	snprintf(path, sizeof(path), "%s/retention.db", dir);
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct store_options o;
	store_options_default(&o);
	o.path = path;
	o.events_per_host = 30;
	o.event_max_age_ms = 3600000;
	struct store *st;
	struct seen seen = {0};
	char err[512];
	assert_int_equal(store_open(&st, &loop, &o, committed_cb, &seen, err, sizeof(err)), 0);
	submit(st, "EXCH01", hello("EXCH01"));
	submit(st, "EXCH02", hello("EXCH02"));
	submit(st, "EXCH01", events(1, 50));
	/* EXCH02's events arrived two hours ago. */
	struct store_write *w = calloc(1, sizeof(*w));
	snprintf(w->host_id, sizeof(w->host_id), "EXCH02");
	w->msg = events(1, 10);
	w->received_ms = util_now_ms() - 7200000;
	store_submit(st, w);
	run_until(&loop, &seen, 4);
	store_prune(st);
	submit(st, "EXCH01", events(51, 1)); /* its callback comes after the pass */
	run_until(&loop, &seen, 5);
	assert_int_equal(store_pruned(st), 20 + 10);
	store_close(st, NULL, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);
	assert_int_equal(query_str(path, "SELECT COUNT(*) || ',' || MIN(seq) FROM events "
					 "WHERE host_id = 'EXCH01'"),
			 0);
	assert_string_equal(last_text, "31,21");
	assert_int_equal(query_str(path, "SELECT COUNT(*) FROM events WHERE host_id = 'EXCH02'"), 0);
	assert_string_equal(last_text, "0");
}

static void test_newer_schema_is_refused(void **state)
{
	sqlite3 *db;
	char path[700];
	snprintf(path, sizeof(path), "%s/future.db", dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
	sqlite3_close(db);
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct store_options o;
	store_options_default(&o);
	o.path = path;
	struct store *st;
	char err[512];
	assert_true(store_open(&st, &loop, &o, committed_cb, NULL, err, sizeof(err)) < 0);
	char want[128];
	snprintf(want, sizeof(want), "schema version 99 is newer than this collector knows (%d)",
		 STORE_SCHEMA_VERSION);
	assert_non_null(strstr(err, want));
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* exfleetctl's reader says what to do with a store of another version. */
static void test_reader_names_the_fix(void **state)
{
	char path[700], err[512];
	snprintf(path, sizeof(path), "%s/old.db", dir);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_exec(db, "PRAGMA user_version = 1", NULL, NULL, NULL);
	sqlite3_close(db);
	struct store *st;
	assert_true(store_open_reader(&st, path, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "schema version 1"));
	assert_non_null(strstr(err, "start the new exfleet-collector once to migrate it"));
	assert_true(store_open_reader(&st, "/nonexistent-dir/x.db", err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "/nonexistent-dir/x.db: cannot open the collector's store"));
}

static void test_unopenable_path_names_the_file(void **state)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct store_options o;
	store_options_default(&o);
	o.path = "/nonexistent-dir/collector.db";
	struct store *st;
	char err[512];
	assert_true(store_open(&st, &loop, &o, committed_cb, NULL, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "/nonexistent-dir/collector.db: cannot open"));
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	log_init(stderr, LOG_WARN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commit_ack_dedup_reopen),
		cmocka_unit_test(test_status_follows_the_records),
		cmocka_unit_test(test_retention),
		cmocka_unit_test(test_checkpoint_once_idle),
		cmocka_unit_test(test_newer_schema_is_refused),
		cmocka_unit_test(test_reader_names_the_fix),
		cmocka_unit_test(test_unopenable_path_names_the_file),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
