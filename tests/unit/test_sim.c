/* The simulated Exchange 5.5 host and the "sim" probe backend: what dcpromo,
 * reboots and client logons do (KB Q255269), the repair actions' Windows
 * error codes, the event cursor, bad files, the file watch, generated
 * fleets and exfleet-sim itself. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "probe.h"
#include "sim_host.h"
#include "util.h"
#include "testutil.h"

#define PASSWORD "Exch55-service!"

struct fixture {
	char root[2048];
	char host_file[4096];
	char err[1024];
};

static int fixture_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	if (test_tmpdir("test_sim", f->root, sizeof(f->root)) < 0) {
		free(f);
		return -1;
	}
	snprintf(f->host_file, sizeof(f->host_file), "%s/EXCH01.json", f->root);
	*state = f;
	return 0;
}

static int fixture_teardown(void **state)
{
	struct fixture *f = *state;
	test_rmtree(f->root);
	free(f);
	return 0;
}

/* ---- building hosts ---- */

enum host_kind {
	HOST_DOMAIN_ACCOUNT, /* Exchange logs on as CORP\exsvc */
	HOST_LOCAL_ACCOUNT,  /* as .\exsvc */
	HOST_SYSTEM_ACCOUNT, /* as LocalSystem */
};

static const char *const exchange_rights[] = {"SeServiceLogonRight", "SeTcbPrivilege",
					      "SeRestorePrivilege"};
static const char *const required_rights[] = {"SeTcbPrivilege", "SeRestorePrivilege"};

static const struct {
	const char *name, *display, *dep;
} exchange_services[] = {
	{"MSExchangeSA", "Microsoft Exchange System Attendant", NULL},
	{"MSExchangeDS", "Microsoft Exchange Directory", "MSExchangeSA"},
	{"MSExchangeIS", "Microsoft Exchange Information Store", "MSExchangeDS"},
	{"MSExchangeMTA", "Microsoft Exchange Message Transfer Agent", "MSExchangeDS"},
	{"MSExchangeIMC", "Microsoft Exchange Internet Mail Service", "MSExchangeMTA"},
	{"MSExchangeES", "Microsoft Exchange Event Service", "MSExchangeIS"},
};
#define N_EXCHANGE (sizeof(exchange_services) / sizeof(exchange_services[0]))

static struct sim_host *build_host(enum host_kind kind)
{
	struct sim_host *h = sim_host_new("EXCH01", "CORP", SIM_ROLE_MEMBER_SERVER);
	assert_non_null(h);
	assert_int_equal(sim_host_add_account(h, 1, "Administrator", "admin-pw", NULL, NULL, 0), 0);
	if (kind == HOST_LOCAL_ACCOUNT)
		assert_int_equal(sim_host_add_account(h, 1, "exsvc", PASSWORD, NULL,
						      exchange_rights, 3), 0);
	assert_int_equal(sim_host_add_account(h, 0, "exsvc", PASSWORD, NULL, exchange_rights,
					      kind == HOST_DOMAIN_ACCOUNT ? 3 : 0), 0);
	const char *account = kind == HOST_LOCAL_ACCOUNT    ? ".\\exsvc"
			      : kind == HOST_DOMAIN_ACCOUNT ? "CORP\\exsvc"
							    : "LocalSystem";
	for (size_t i = 0; i < N_EXCHANGE; i++) {
		struct sim_service_spec spec = {
			.name = exchange_services[i].name,
			.display_name = exchange_services[i].display,
			.state = SIM_RUNNING,
			.start_type = SIM_START_AUTO,
			.logon_account = account,
			.password = kind == HOST_SYSTEM_ACCOUNT ? NULL : PASSWORD,
			.dependencies = exchange_services[i].dep ? &exchange_services[i].dep : NULL,
			.n_dependencies = exchange_services[i].dep ? 1 : 0,
			.required_rights = required_rights,
			.n_required_rights = 2,
		};
		assert_int_equal(sim_host_add_service(h, &spec), 0);
	}
	struct sim_service_spec w3svc = {.name = "W3SVC",
					 .display_name = "World Wide Web Publishing Service",
					 .state = SIM_RUNNING,
					 .start_type = SIM_START_AUTO,
					 .logon_account = "LocalSystem"};
	assert_int_equal(sim_host_add_service(h, &w3svc), 0);
	return h;
}

static void write_host(struct fixture *f, enum host_kind kind)
{
	struct sim_host *h = build_host(kind);
	assert_int_equal(sim_host_save_file(h, f->host_file, f->err, sizeof(f->err)), 0);
	sim_host_free(h);
}

static struct sim_host *load_host(struct fixture *f)
{
	struct sim_host *h;
	int rc = sim_host_load_file(f->host_file, &h, f->err, sizeof(f->err));
	if (rc < 0)
		fail_msg("%s", f->err);
	return h;
}

static const struct sim_service *service(const struct sim_host *h, const char *name)
{
	const struct sim_service *s = sim_host_find_service(h, name);
	assert_non_null(s);
	return s;
}

static size_t count_events(const struct sim_host *h, const char *source, uint32_t event_id)
{
	size_t n = 0;
	for (size_t i = 0; i < h->n_events; i++)
		n += strcmp(h->events[i].source, source) == 0 && h->events[i].event_id == event_id;
	return n;
}

/* The first event with that source and id whose first insertion string is s0. */
static const struct sim_event *find_event(const struct sim_host *h, const char *source,
					  uint32_t event_id, const char *s0)
{
	for (size_t i = 0; i < h->n_events; i++) {
		const struct sim_event *e = &h->events[i];
		if (strcmp(e->source, source) == 0 && e->event_id == event_id &&
		    (!s0 || (e->insertion_strings.n > 0 && strcmp(e->insertion_strings.v[0], s0) == 0)))
			return e;
	}
	return NULL;
}

static const Exfleet__Service *snap_service(const Exfleet__Snapshot *snap, const char *name)
{
	for (size_t i = 0; i < snap->n_services; i++)
		if (strcmp(snap->services[i]->name, name) == 0)
			return snap->services[i];
	fail_msg("no service %s in the snapshot", name);
	return NULL;
}

static int has_string(char **v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return 1;
	return 0;
}

/* ---- the file ---- */

static void test_roundtrip(void **state)
{
	(void)state;
	struct sim_host *h = build_host(HOST_LOCAL_ACCOUNT), *again;
	char *a, *b, err[512];
	size_t alen, blen;
	assert_int_equal(sim_host_dcpromo(h, 0), 0);
	assert_int_equal(sim_host_dump(h, &a, &alen), 0);
	assert_int_equal(sim_host_load_buffer("x.json", a, alen, &again, err, sizeof(err)), 0);
	assert_int_equal(sim_host_dump(again, &b, &blen), 0);
	assert_int_equal(alen, blen);
	assert_memory_equal(a, b, alen);
	assert_int_equal(again->n_events, h->n_events);
	assert_int_equal(again->role_changed_at_ms, h->role_changed_at_ms);
	/* Passwords are stored as salted hashes only. */
	assert_null(strstr(a, PASSWORD));
	assert_int_equal(sim_host_verify_credentials(again, "CORP\\exsvc", PASSWORD),
			 WIN32_LOGON_TYPE_NOT_GRANTED);
	free(a);
	free(b);
	sim_host_free(h);
	sim_host_free(again);
}

/* Loads the dump of a healthy host after edit() changed its JSON, and
 * expects the load to fail with exactly want (or containing it when
 * partial). */
static void expect_load_error(void (*edit)(json_t *root), const char *want, int partial)
{
	struct sim_host *h = build_host(HOST_DOMAIN_ACCOUNT), *out;
	char *text, err[512];
	size_t len;
	json_error_t jerr;
	assert_int_equal(sim_host_dump(h, &text, &len), 0);
	json_t *root = json_loads(text, 0, &jerr);
	assert_non_null(root);
	edit(root);
	char *changed = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	assert_int_equal(sim_host_load_buffer("hosts/EXCH01.json", changed, strlen(changed), &out,
					      err, sizeof(err)),
			 UV_EINVAL);
	assert_null(out);
	if (partial ? !strstr(err, want) : strcmp(err, want) != 0)
		fail_msg("got:  %s\nwant: %s", err, want);
	free(changed);
	json_decref(root);
	free(text);
	sim_host_free(h);
}

static json_t *at(json_t *root, const char *key, int index)
{
	json_t *v = json_object_get(root, key);
	return index >= 0 ? json_array_get(v, (size_t)index) : v;
}

static void edit_state(json_t *r)
{
	json_object_set_new(at(r, "services", 2), "state", json_string("runing"));
}
static void edit_missing(json_t *r)
{
	json_object_del(at(r, "exchange", -1), "service_pack");
}
static void edit_unknown_key(json_t *r)
{
	json_object_set_new(at(r, "services", 0), "stat", json_string("running"));
}
static void edit_unknown_dependency(json_t *r)
{
	json_array_set_new(json_object_get(at(r, "services", 1), "dependencies"), 0,
			   json_string("MSExchangeXX"));
}
static void edit_cycle(json_t *r)
{
	json_array_append_new(json_object_get(at(r, "services", 0), "dependencies"),
			      json_string("MSExchangeES"));
}
static void edit_schema(json_t *r)
{
	json_object_set_new(r, "schema", json_integer(2));
}
static void edit_dc_with_sam(json_t *r)
{
	json_object_set_new(r, "role", json_string("primary_dc"));
}
static void edit_right(json_t *r)
{
	json_array_set_new(json_object_get(at(r, "domain_accounts", 0), "rights"), 0,
			   json_string("SeServiceLogonRigth"));
}
static void edit_bool(json_t *r)
{
	json_object_set_new(at(r, "exchange", -1), "pop3_imap_broken", json_string("yes"));
}
static void edit_salt(json_t *r)
{
	json_object_set_new(json_object_get(at(r, "local_accounts", 0), "password"), "salt",
			    json_string("xyz"));
}
static void edit_time(json_t *r)
{
	json_object_set_new(r, "role_changed_at", json_string("yesterday"));
}
static void edit_exit_code(json_t *r)
{
	json_object_set_new(at(r, "services", 0), "win32_exit_code", json_integer(-1));
}
static void edit_records(json_t *r)
{
	json_t *log = json_object_get(r, "event_log");
	json_t *e = json_pack("{s:i, s:s, s:s, s:i, s:s, s:i, s:s, s:s, s:s, s:s}", "record_number",
			      5, "log", "System", "source", "EventLog", "event_id", 6005, "type",
			      "information", "category", 0, "category_name", "None", "time",
			      "2026-11-29T10:02:11Z", "message", "started", "computer", "EXCH01");
	json_object_set_new(log, "next_record_number", json_integer(10));
	json_array_append(json_object_get(log, "records"), e);
	json_array_append_new(json_object_get(log, "records"), e);
}

static void test_schema_errors(void **state)
{
	(void)state;
	expect_load_error(edit_state,
			  "hosts/EXCH01.json: $.services[2].state: 'runing' is not one of stopped, "
			  "start_pending, stop_pending, running, paused", 0);
	expect_load_error(edit_missing,
			  "hosts/EXCH01.json: $.exchange.service_pack: required key is missing", 0);
	expect_load_error(edit_unknown_key, "hosts/EXCH01.json: $.services[0].stat: unknown key", 1);
	expect_load_error(edit_unknown_dependency,
			  "hosts/EXCH01.json: $.services[1].dependencies[0]: 'MSExchangeXX' is not "
			  "a service in this file", 0);
	expect_load_error(edit_cycle, "hosts/EXCH01.json: $.services[0].dependencies: dependency "
			  "cycle through MSExchangeSA", 0);
	expect_load_error(edit_schema, "hosts/EXCH01.json: $.schema: version 2 is not supported", 1);
	expect_load_error(edit_dc_with_sam, "hosts/EXCH01.json: $.local_accounts: a domain "
			  "controller has no local (SAM) accounts", 1);
	expect_load_error(edit_right, "hosts/EXCH01.json: $.domain_accounts[0].rights[0]: "
			  "'SeServiceLogonRigth' is not a Windows 2000 user right or privilege", 0);
	expect_load_error(edit_bool, "hosts/EXCH01.json: $.exchange.pop3_imap_broken: expected true "
			  "or false, found a string", 0);
	expect_load_error(edit_salt, "hosts/EXCH01.json: $.local_accounts[0].password.salt: "
			  "expected 32 hexadecimal digits", 0);
	expect_load_error(edit_time, "hosts/EXCH01.json: $.role_changed_at: 'yesterday' is not a "
			  "UTC time", 1);
	expect_load_error(edit_exit_code, "hosts/EXCH01.json: $.services[0].win32_exit_code: -1 is "
			  "not in 0..4294967295", 0);
	expect_load_error(edit_records, "hosts/EXCH01.json: $.event_log.records[1].record_number: 5 "
			  "does not follow 5: record numbers must increase", 0);
}

static void test_syntax_errors(void **state)
{
	(void)state;
	struct sim_host *h;
	char err[512];
	static const char broken[] = "{\n  \"schema\": 1,\n  oops\n}\n";
	assert_int_equal(sim_host_load_buffer("hosts/EXCH01.json", broken, strlen(broken), &h, err,
					      sizeof(err)),
			 UV_EINVAL);
	assert_non_null(strstr(err, "hosts/EXCH01.json:3:"));
	assert_non_null(strstr(err, ": JSON syntax error: "));
	static const char dup[] = "{\"schema\": 1, \"schema\": 1}";
	assert_int_equal(sim_host_load_buffer("d.json", dup, strlen(dup), &h, err, sizeof(err)),
			 UV_EINVAL);
	assert_non_null(strstr(err, "duplicate"));
	assert_int_equal(sim_host_load_buffer("e.json", "", 0, &h, err, sizeof(err)), UV_EINVAL);
	assert_non_null(strstr(err, "e.json:"));
	assert_int_equal(sim_host_load_buffer("a.json", "[]", 2, &h, err, sizeof(err)), UV_EINVAL);
	assert_string_equal(err, "a.json: $: expected an object, found an array");
}

/* ---- what happens in the field ---- */

static void test_dcpromo_local_account(void **state)
{
	(void)state;
	struct sim_host *h = build_host(HOST_LOCAL_ACCOUNT);
	Exfleet__Snapshot *snap;
	int64_t before = util_now_ms();
	assert_int_equal(sim_host_dcpromo(h, 0), 0);
	int64_t after = util_now_ms();

	assert_int_equal(h->role, SIM_ROLE_PRIMARY_DC);
	assert_true(h->role_changed_at_ms >= before - 1000 && h->role_changed_at_ms <= after);
	assert_int_equal(h->n_local_accounts, 0);
	assert_true(h->pop3_imap_broken);
	assert_int_equal(sim_host_resolve(h, ".\\exsvc", NULL), SIM_ACCOUNT_MISSING);
	assert_int_equal(sim_host_resolve(h, "EXCH01\\exsvc", NULL), SIM_ACCOUNT_MISSING);

	/* SA cannot log on; everything above it fails as a dependency. */
	assert_int_equal(service(h, "MSExchangeSA")->state, SIM_STOPPED);
	assert_int_equal(service(h, "MSExchangeSA")->win32_exit_code, WIN32_SERVICE_LOGON_FAILED);
	for (size_t i = 1; i < N_EXCHANGE; i++) {
		assert_int_equal(service(h, exchange_services[i].name)->state, SIM_STOPPED);
		assert_int_equal(service(h, exchange_services[i].name)->win32_exit_code,
				 WIN32_SERVICE_DEPENDENCY_FAIL);
	}
	assert_int_equal(service(h, "W3SVC")->state, SIM_RUNNING);

	const struct sim_event *e = find_event(h, "Service Control Manager", 7038, "MSExchangeSA");
	assert_non_null(e);
	assert_int_equal(e->type, SIM_EVENT_ERROR);
	assert_string_equal(e->log, "System");
	assert_int_equal(e->insertion_strings.n, 3);
	assert_string_equal(e->insertion_strings.v[1], ".\\exsvc");
	assert_string_equal(e->insertion_strings.v[2], "%%1326");
	e = find_event(h, "Service Control Manager", 7000, "Microsoft Exchange System Attendant");
	assert_non_null(e);
	assert_string_equal(e->insertion_strings.v[1], "%%1069");
	assert_string_equal(e->message, "The Microsoft Exchange System Attendant service failed to "
			    "start due to the following error: The service did not start due to a "
			    "logon failure.");
	e = find_event(h, "Service Control Manager", 7001, "Microsoft Exchange Directory");
	assert_non_null(e);
	assert_string_equal(e->insertion_strings.v[1], "Microsoft Exchange System Attendant");
	assert_string_equal(e->insertion_strings.v[2], "%%1069");
	assert_int_equal(count_events(h, "Service Control Manager", 7001), N_EXCHANGE - 1);
	assert_int_equal(count_events(h, "EventLog", 6005), 1);

	assert_int_equal(sim_host_snapshot(h, &snap), 0);
	assert_int_equal(snap->role, EXFLEET__DOMAIN_ROLE__ROLE_PRIMARY_DC);
	assert_false(snap->sam_present);
	assert_true(snap->service_pack_needs_reapply);
	assert_int_equal(snap->role_changed_at_ms, h->role_changed_at_ms);
	const Exfleet__Service *sa = snap_service(snap, "MSExchangeSA");
	assert_int_equal(sa->account_status, EXFLEET__ACCOUNT_STATUS__ACCOUNT_MISSING);
	assert_int_equal(sa->rights_error, WIN32_NONE_MAPPED);
	assert_int_equal(sa->n_account_rights, 0);
	assert_int_equal(sa->state, EXFLEET__SERVICE_STATE__SERVICE_STOPPED);
	assert_int_equal(sa->win32_exit_code, WIN32_SERVICE_LOGON_FAILED);
	assert_string_equal(sa->logon_account, ".\\exsvc");
	const Exfleet__Service *w3 = snap_service(snap, "W3SVC");
	assert_int_equal(w3->account_status, EXFLEET__ACCOUNT_STATUS__ACCOUNT_BUILTIN);
	assert_true(has_string(w3->account_rights, w3->n_account_rights, "SeServiceLogonRight"));
	assert_true(has_string(w3->account_rights, w3->n_account_rights, "SeTcbPrivilege"));
	exfleet__snapshot__free_unpacked(snap, NULL);

	assert_int_equal(sim_host_dcpromo(h, 0), UV_EALREADY);
	sim_host_free(h);
}

static void test_dcpromo_domain_account(void **state)
{
	(void)state;
	struct sim_host *h = build_host(HOST_DOMAIN_ACCOUNT);
	struct sim_account *a;
	Exfleet__Snapshot *snap;
	assert_int_equal(sim_host_dcpromo(h, 1), 0);
	assert_int_equal(h->role, SIM_ROLE_BACKUP_DC);
	assert_int_equal(sim_host_resolve(h, "CORP\\exsvc", &a), SIM_ACCOUNT_EXISTS);
	assert_int_equal(a->rights.n, 0); /* the security policy was replaced */
	assert_true(h->pop3_imap_broken);
	assert_int_equal(service(h, "MSExchangeSA")->win32_exit_code, WIN32_SERVICE_LOGON_FAILED);
	assert_int_equal(service(h, "MSExchangeIS")->state, SIM_STOPPED);
	assert_int_equal(service(h, "W3SVC")->state, SIM_RUNNING);
	const struct sim_event *e = find_event(h, "Service Control Manager", 7038, "MSExchangeSA");
	assert_non_null(e);
	assert_string_equal(e->insertion_strings.v[2], "%%1385");
	assert_non_null(find_event(h, "SceCli", 1704, NULL));

	assert_int_equal(sim_host_snapshot(h, &snap), 0);
	const Exfleet__Service *sa = snap_service(snap, "MSExchangeSA");
	assert_int_equal(sa->account_status, EXFLEET__ACCOUNT_STATUS__ACCOUNT_EXISTS);
	assert_int_equal(sa->rights_error, 0);
	assert_int_equal(sa->n_account_rights, 0);
	assert_int_equal(sa->n_dependencies, 0);
	const Exfleet__Service *is = snap_service(snap, "MSExchangeIS");
	assert_int_equal(is->n_dependencies, 1);
	assert_string_equal(is->dependencies[0], "MSExchangeDS");
	assert_int_equal(is->start_type, EXFLEET__START_TYPE__START_AUTO);
	exfleet__snapshot__free_unpacked(snap, NULL);
	sim_host_free(h);
}

static void test_dcpromo_localsystem_keeps_running(void **state)
{
	(void)state;
	struct sim_host *h = build_host(HOST_SYSTEM_ACCOUNT);
	struct sim_logon_counts pop3, imap4;
	assert_int_equal(sim_host_dcpromo(h, 0), 0);
	for (size_t i = 0; i < h->n_services; i++) {
		assert_int_equal(h->services[i].state, SIM_RUNNING);
		assert_int_equal(h->services[i].win32_exit_code, 0);
	}
	assert_int_equal(count_events(h, "Service Control Manager", 7000), 0);
	/* The services run, but POP3 and IMAP4 logons fail until the SP is reapplied. */
	sim_host_logon(h, 7, 3, &pop3, &imap4);
	assert_int_equal(pop3.failed, 7);
	assert_int_equal(pop3.ok + pop3.refused, 0);
	assert_int_equal(imap4.failed, 3);
	assert_int_equal(count_events(h, SIM_SOURCE_POP3, SIM_EVENT_POP3_AUTH), 7);
	assert_int_equal(count_events(h, SIM_SOURCE_IMAP4, SIM_EVENT_IMAP4_AUTH), 3);
	const struct sim_event *e = find_event(h, SIM_SOURCE_POP3, 13003, NULL);
	assert_non_null(e);
	assert_string_equal(e->log, "Application");
	assert_int_equal(e->type, SIM_EVENT_ERROR);
	assert_int_equal(e->category, 2);
	assert_string_equal(e->category_name, "Authentication");
	assert_string_equal(e->message, "A required privilege is not held by the client");
	assert_string_equal(e->computer, "EXCH01");
	sim_host_free(h);
}

static void test_logon(void **state)
{
	(void)state;
	struct sim_host *h = build_host(HOST_DOMAIN_ACCOUNT);
	struct sim_logon_counts pop3, imap4;
	sim_host_logon(h, 5, 4, &pop3, &imap4);
	assert_int_equal(pop3.ok, 5);
	assert_int_equal(imap4.ok, 4);
	assert_int_equal(h->n_events, 0); /* healthy: nothing logged */

	h->pop3_imap_broken = 1;
	sim_host_logon(h, 5, 0, &pop3, &imap4);
	assert_int_equal(pop3.failed, 5);
	assert_int_equal(count_events(h, SIM_SOURCE_POP3, 13003), 5);

	/* With the Information Store stopped, clients are refused; no 13003. */
	assert_int_equal(sim_host_stop_service(h, "MSExchangeES"), 0);
	assert_int_equal(sim_host_stop_service(h, "MSExchangeIS"), 0);
	size_t before = h->n_events;
	sim_host_logon(h, 3, 2, &pop3, &imap4);
	assert_int_equal(pop3.refused, 3);
	assert_int_equal(imap4.refused, 2);
	assert_int_equal(pop3.failed + imap4.failed, 0);
	assert_int_equal(h->n_events, before);
	sim_host_free(h);
}

static void test_reboot(void **state)
{
	(void)state;
	struct sim_host *h = build_host(HOST_DOMAIN_ACCOUNT);
	struct sim_service *w3 = sim_host_find_service(h, "W3SVC");
	w3->start_type = SIM_START_DEMAND;
	sim_host_reboot(h);
	assert_int_equal(count_events(h, "EventLog", 6006), 1);
	assert_int_equal(count_events(h, "EventLog", 6005), 1);
	assert_int_equal(h->n_events, 2);
	for (size_t i = 0; i < N_EXCHANGE; i++)
		assert_int_equal(service(h, exchange_services[i].name)->state, SIM_RUNNING);
	assert_int_equal(w3->state, SIM_STOPPED); /* demand start: not started at boot */

	/* A stale configured password fails at the next boot. */
	assert_int_equal(sim_host_set_service_credentials(h, "MSExchangeMTA", "CORP\\exsvc",
							  "old-password"), 0);
	sim_host_reboot(h);
	assert_int_equal(service(h, "MSExchangeMTA")->win32_exit_code, WIN32_SERVICE_LOGON_FAILED);
	assert_int_equal(service(h, "MSExchangeIMC")->win32_exit_code,
			 WIN32_SERVICE_DEPENDENCY_FAIL);
	assert_int_equal(service(h, "MSExchangeIS")->state, SIM_RUNNING);
	const struct sim_event *e = find_event(h, "Service Control Manager", 7038, "MSExchangeMTA");
	assert_non_null(e);
	assert_string_equal(e->insertion_strings.v[2], "%%1326");
	sim_host_free(h);
}

static void test_service_control(void **state)
{
	(void)state;
	struct sim_host *h = build_host(HOST_DOMAIN_ACCOUNT);
	assert_int_equal(sim_host_stop_service(h, "NoSuchService"), WIN32_SERVICE_DOES_NOT_EXIST);
	assert_int_equal(sim_host_stop_service(h, "MSExchangeDS"), WIN32_DEPENDENT_SERVICES_RUNNING);
	assert_int_equal(sim_host_start_service(h, "MSExchangeDS"), WIN32_SERVICE_ALREADY_RUNNING);
	const char *order[] = {"MSExchangeES", "MSExchangeIMC", "MSExchangeMTA", "MSExchangeIS",
			       "MSExchangeDS", "MSExchangeSA"};
	for (size_t i = 0; i < 6; i++)
		assert_int_equal(sim_host_stop_service(h, order[i]), 0);
	assert_int_equal(sim_host_stop_service(h, "MSExchangeSA"), WIN32_SERVICE_NOT_ACTIVE);
	/* Starting a service starts what it depends on, as the SCM does. */
	assert_int_equal(sim_host_start_service(h, "MSExchangeIS"), 0);
	assert_int_equal(service(h, "MSExchangeSA")->state, SIM_RUNNING);
	assert_int_equal(service(h, "MSExchangeDS")->state, SIM_RUNNING);
	assert_int_equal(service(h, "MSExchangeMTA")->state, SIM_STOPPED);
	sim_host_find_service(h, "MSExchangeMTA")->start_type = SIM_START_DISABLED;
	assert_int_equal(sim_host_start_service(h, "MSExchangeMTA"), WIN32_SERVICE_DISABLED);
	assert_int_equal(sim_host_start_service(h, "MSExchangeIMC"), WIN32_SERVICE_DEPENDENCY_FAIL);
	const struct sim_event *e = find_event(h, "Service Control Manager", 7001,
					       "Microsoft Exchange Internet Mail Service");
	assert_non_null(e);
	assert_string_equal(e->insertion_strings.v[2], "%%1058");
	assert_int_equal(h->n_events, 1);
	sim_host_free(h);
}

/* ---- the probe ---- */

static const struct probe_backend *sim_backend(void)
{
	const struct probe_backend *b = probe_backend_find("sim");
	assert_non_null(b);
	return b;
}

static struct probe *open_probe(struct fixture *f, uv_loop_t *loop, uint64_t rescan_ms)
{
	struct probe *p = NULL;
	struct probe_settings s = {.host_file = f->host_file, .rescan_ms = rescan_ms};
	int rc = sim_backend()->open(&p, loop, &s, f->err, sizeof(f->err));
	if (rc < 0)
		fail_msg("open: %s", f->err);
	return p;
}

static void close_probe(struct probe *p)
{
	sim_backend()->close(p, NULL, NULL);
}

static int dcpromo_cb(struct sim_host *h, void *arg)
{
	(void)arg;
	return sim_host_dcpromo(h, 0);
}

static int logon_cb(struct sim_host *h, void *arg)
{
	sim_host_logon(h, *(uint64_t *)arg, 0, NULL, NULL);
	return 0;
}

static void edit(struct fixture *f, sim_edit_fn fn, void *arg)
{
	if (sim_host_edit(f->host_file, fn, arg, f->err, sizeof(f->err)) < 0)
		fail_msg("%s", f->err);
}

static void test_probe_action_errors(void **state)
{
	struct fixture *f = *state;
	const struct probe_backend *b = sim_backend();
	struct probe_result r;
	char **rights;
	size_t n;
	int st;
	uint32_t code;
	write_host(f, HOST_DOMAIN_ACCOUNT);
	edit(f, dcpromo_cb, NULL);
	struct probe *p = open_probe(f, NULL, 0);

	assert_int_equal(b->verify_credentials(p, "CORP\\exsvc", "wrong", &r), 0);
	assert_int_equal(r.win32_error, WIN32_LOGON_FAILURE);
	assert_string_equal(r.message, "CORP\\exsvc: Logon failure: unknown user name or bad password.");
	assert_int_equal(b->verify_credentials(p, "CORP\\nobody", PASSWORD, &r), 0);
	assert_int_equal(r.win32_error, WIN32_NONE_MAPPED);
	assert_int_equal(b->verify_credentials(p, ".\\exsvc", PASSWORD, &r), 0);
	assert_int_equal(r.win32_error, WIN32_NONE_MAPPED);
	assert_int_equal(b->verify_credentials(p, "CORP\\exsvc", PASSWORD, &r), 0);
	assert_int_equal(r.win32_error, WIN32_LOGON_TYPE_NOT_GRANTED);

	assert_int_equal(b->set_service_credentials(p, "NoSuchService", "CORP\\exsvc", PASSWORD, &r), 0);
	assert_int_equal(r.win32_error, WIN32_SERVICE_DOES_NOT_EXIST);
	assert_int_equal(b->set_service_credentials(p, "MSExchangeSA", ".\\exsvc", PASSWORD, &r), 0);
	assert_int_equal(r.win32_error, WIN32_NONE_MAPPED);
	assert_string_equal(r.message, ".\\exsvc: No mapping between account names and security IDs "
			    "was done.");
	assert_int_equal(b->grant_right(p, "CORP\\nobody", "SeServiceLogonRight", &r), 0);
	assert_int_equal(r.win32_error, WIN32_NONE_MAPPED);
	assert_int_equal(b->grant_right(p, "CORP\\exsvc", "SeFlyPrivilege", &r), 0);
	assert_int_equal(r.win32_error, WIN32_NO_SUCH_PRIVILEGE);
	assert_int_equal(b->account_rights(p, "CORP\\nobody", &rights, &n, &r), 0);
	assert_int_equal(r.win32_error, WIN32_NONE_MAPPED);
	assert_null(rights);

	/* No "log on as a service" right: 1069, SCM 7038 with 1385. */
	assert_int_equal(b->start_service(p, "MSExchangeSA", &r), 0);
	assert_int_equal(r.win32_error, WIN32_SERVICE_LOGON_FAILED);
	assert_string_equal(r.message, "MSExchangeSA: The service did not start due to a logon failure.");
	assert_int_equal(b->query_service(p, "MSExchangeSA", &st, &code, &r), 0);
	assert_int_equal(st, EXFLEET__SERVICE_STATE__SERVICE_STOPPED);
	assert_int_equal(code, WIN32_SERVICE_LOGON_FAILED);
	assert_int_equal(b->query_service(p, "NoSuchService", &st, &code, &r), 0);
	assert_int_equal(r.win32_error, WIN32_SERVICE_DOES_NOT_EXIST);

	/* Logged on, but without "act as part of the operating system": 1314. */
	assert_int_equal(b->grant_right(p, "CORP\\exsvc", "SeServiceLogonRight", &r), 0);
	assert_int_equal(r.win32_error, 0);
	assert_string_equal(r.message, "");
	assert_int_equal(b->verify_credentials(p, "CORP\\exsvc", PASSWORD, &r), 0);
	assert_int_equal(r.win32_error, 0);
	assert_int_equal(b->start_service(p, "MSExchangeSA", &r), 0);
	assert_int_equal(r.win32_error, WIN32_PRIVILEGE_NOT_HELD);

	/* All rights, but a wrong password configured: 1069 with 7038 naming 1326. */
	assert_int_equal(b->grant_right(p, "CORP\\exsvc", "SeTcbPrivilege", &r), 0);
	assert_int_equal(b->grant_right(p, "CORP\\exsvc", "serestoreprivilege", &r), 0);
	assert_int_equal(b->account_rights(p, "CORP\\exsvc", &rights, &n, &r), 0);
	assert_int_equal(n, 3);
	assert_true(has_string(rights, n, "SeRestorePrivilege"));
	sim_strings_free_array(rights, n);
	assert_int_equal(b->set_service_credentials(p, "MSExchangeSA", "CORP\\exsvc", "wrong", &r), 0);
	assert_int_equal(r.win32_error, 0); /* not checked until the service logs on */
	assert_int_equal(b->start_service(p, "MSExchangeSA", &r), 0);
	assert_int_equal(r.win32_error, WIN32_SERVICE_LOGON_FAILED);

	assert_int_equal(b->stop_service(p, "MSExchangeSA", &r), 0);
	assert_int_equal(r.win32_error, WIN32_SERVICE_NOT_ACTIVE);
	assert_int_equal(b->stop_service(p, "W3SVC", &r), 0);
	assert_int_equal(r.win32_error, 0);
	assert_int_equal(b->start_service(p, "W3SVC", &r), 0);
	assert_int_equal(r.win32_error, 0);
	assert_int_equal(b->run_installer(p, "", NULL, &r), 0);
	assert_int_equal(r.win32_error, WIN32_FILE_NOT_FOUND);
	close_probe(p);

	struct sim_host *h = load_host(f);
	assert_int_equal(count_events(h, "Service Control Manager", 7023), 1);
	const struct sim_event *e = NULL;
	for (size_t i = 0; i < h->n_events; i++)
		if (h->events[i].event_id == 7038)
			e = &h->events[i];
	assert_non_null(e); /* the last 7038: the wrong password */
	assert_string_equal(e->insertion_strings.v[2], "%%1326");
	assert_true(h->pop3_imap_broken);
	sim_host_free(h);
}

static uint64_t pop3_failures(struct fixture *f, uint64_t logons)
{
	struct sim_host *h = load_host(f);
	size_t before = count_events(h, SIM_SOURCE_POP3, 13003);
	sim_host_free(h);
	edit(f, logon_cb, &logons);
	h = load_host(f);
	size_t after = count_events(h, SIM_SOURCE_POP3, 13003);
	sim_host_free(h);
	return after - before;
}

/* KB Q255269 end to end: a local-account host promoted, then repaired
 * with the domain account; POP3 stays broken until the SP is reapplied. */
static void test_full_repair(void **state)
{
	struct fixture *f = *state;
	const struct probe_backend *b = sim_backend();
	struct probe_result r;
	Exfleet__Snapshot *snap;
	write_host(f, HOST_LOCAL_ACCOUNT);
	edit(f, dcpromo_cb, NULL);
	struct probe *p = open_probe(f, NULL, 0);
	assert_int_equal(pop3_failures(f, 4), 0); /* the store is down: refused */

	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(b->grant_right(p, "CORP\\exsvc", exchange_rights[i], &r), 0);
		assert_int_equal(r.win32_error, 0);
	}
	assert_int_equal(b->verify_credentials(p, "CORP\\exsvc", PASSWORD, &r), 0);
	assert_int_equal(r.win32_error, 0);
	for (size_t i = 0; i < N_EXCHANGE; i++) {
		assert_int_equal(b->set_service_credentials(p, exchange_services[i].name, "CORP\\exsvc",
							    PASSWORD, &r), 0);
		assert_int_equal(r.win32_error, 0);
	}
	for (size_t i = 0; i < N_EXCHANGE; i++) {
		assert_int_equal(b->start_service(p, exchange_services[i].name, &r), 0);
		if (r.win32_error)
			fail_msg("%s", r.message);
	}
	assert_int_equal(b->read_host(p, &snap, f->err, sizeof(f->err)), 0);
	assert_string_equal(f->err, "");
	for (size_t i = 0; i < snap->n_services; i++) {
		const Exfleet__Service *s = snap->services[i];
		assert_int_equal(s->state, EXFLEET__SERVICE_STATE__SERVICE_RUNNING);
		assert_int_equal(s->win32_exit_code, 0);
		if (strcmp(s->name, "W3SVC") == 0)
			continue;
		assert_string_equal(s->logon_account, "CORP\\exsvc");
		assert_int_equal(s->account_status, EXFLEET__ACCOUNT_STATUS__ACCOUNT_EXISTS);
		assert_int_equal(s->n_account_rights, 3);
	}
	assert_true(snap->service_pack_needs_reapply);
	exfleet__snapshot__free_unpacked(snap, NULL);

	/* Services run and rights are present, yet POP3 still fails. */
	assert_int_equal(pop3_failures(f, 4), 4);
	assert_int_equal(b->run_installer(p, "C:\\exchsp3\\i386\\update.exe", "-s", &r), 0);
	assert_int_equal(r.win32_error, 0);
	assert_int_equal(pop3_failures(f, 4), 0);
	assert_int_equal(b->read_host(p, &snap, f->err, sizeof(f->err)), 0);
	assert_false(snap->service_pack_needs_reapply);
	assert_int_equal(snap->exchange_service_pack, 3);
	exfleet__snapshot__free_unpacked(snap, NULL);
	struct sim_host *h = load_host(f);
	assert_non_null(find_event(h, SIM_SOURCE_SETUP, SIM_EVENT_SETUP_APPLIED, "3"));
	sim_host_free(h);
	close_probe(p);
}

static int set_event_log_cb(struct sim_host *h, void *arg)
{
	/* Stands in for "Clear log": numbering restarts after a few records. */
	size_t keep = *(size_t *)arg;
	struct sim_host *fresh = build_host(HOST_SYSTEM_ACCOUNT);
	fresh->pop3_imap_broken = 1;
	sim_host_logon(fresh, keep, 0, NULL, NULL);
	struct sim_event *tmp_events = h->events;
	size_t tmp_n = h->n_events, tmp_cap = h->events_cap;
	uint32_t tmp_next = h->next_record_number;
	h->events = fresh->events;
	h->n_events = fresh->n_events;
	h->events_cap = fresh->events_cap;
	h->next_record_number = fresh->next_record_number;
	fresh->events = tmp_events;
	fresh->n_events = tmp_n;
	fresh->events_cap = tmp_cap;
	fresh->next_record_number = tmp_next;
	sim_host_free(fresh);
	return 0;
}

/* Reads everything after cursor in pages of page; checks there are no gaps
 * or duplicates and returns how many records came. */
static size_t read_all(struct probe *p, char *cursor, size_t page, uint32_t *first, uint32_t *last)
{
	const struct probe_backend *b = sim_backend();
	Exfleet__Event **events;
	size_t n, total = 0;
	char err[512];
	for (;;) {
		assert_int_equal(b->read_events(p, cursor, SIM_CURSOR_MAX, page, &events, &n, err,
						sizeof(err)), 0);
		assert_true(n <= page);
		for (size_t i = 0; i < n; i++) {
			if (total == 0 && i == 0)
				*first = events[i]->record_number;
			else
				assert_int_equal(events[i]->record_number, *last + 1);
			*last = events[i]->record_number;
		}
		total += n;
		sim_events_free(events, n);
		if (n == 0)
			return total;
		char want[SIM_CURSOR_MAX];
		snprintf(want, sizeof(want), "%u", *last);
		assert_string_equal(cursor, want);
	}
}

static void test_read_events_cursor(void **state)
{
	struct fixture *f = *state;
	const struct probe_backend *b = sim_backend();
	char cursor[SIM_CURSOR_MAX] = "", saved[SIM_CURSOR_MAX];
	uint32_t first = 0, last = 0;
	uint64_t logons = 25;
	Exfleet__Event **events;
	size_t n;
	write_host(f, HOST_SYSTEM_ACCOUNT);
	edit(f, dcpromo_cb, NULL); /* 3 records; POP3 now logs 13003 */
	edit(f, logon_cb, &logons);
	struct probe *p = open_probe(f, NULL, 0);

	assert_int_equal(read_all(p, cursor, 7, &first, &last), 28);
	assert_int_equal(first, 1);
	assert_int_equal(last, 28);
	memcpy(saved, cursor, sizeof(saved));

	/* New records only, and a second reader resumes from the saved cursor. */
	logons = 5;
	edit(f, logon_cb, &logons);
	assert_int_equal(read_all(p, cursor, 100, &first, &last), 5);
	assert_int_equal(first, 29);
	close_probe(p);
	p = open_probe(f, NULL, 0);
	assert_int_equal(read_all(p, saved, 2, &first, &last), 5);
	assert_int_equal(first, 29);
	assert_int_equal(last, 33);

	/* The fields travel as they were logged. */
	snprintf(cursor, sizeof(cursor), "%u", 28);
	assert_int_equal(b->read_events(p, cursor, sizeof(cursor), 1, &events, &n, f->err,
					sizeof(f->err)), 0);
	assert_int_equal(n, 1);
	assert_string_equal(events[0]->source, "MSExchangePOP3");
	assert_int_equal(events[0]->event_id, 13003);
	assert_int_equal(events[0]->type, EXFLEET__EVENT_TYPE__EVENT_ERROR);
	assert_int_equal(events[0]->category, 2);
	assert_string_equal(events[0]->category_name, "Authentication");
	assert_string_equal(events[0]->log, "Application");
	assert_string_equal(events[0]->computer, "EXCH01");
	assert_true(events[0]->time_generated_ms > 0);
	sim_events_free(events, n);

	/* The log was cleared: numbering restarted below the cursor. */
	size_t keep = 4;
	edit(f, set_event_log_cb, &keep);
	snprintf(cursor, sizeof(cursor), "33");
	assert_int_equal(read_all(p, cursor, 3, &first, &last), 4);
	assert_int_equal(first, 1);
	assert_int_equal(last, 4);

	/* A cursor that is not a record number restarts, with a note. */
	snprintf(cursor, sizeof(cursor), "x12");
	assert_int_equal(b->read_events(p, cursor, sizeof(cursor), 100, &events, &n, f->err,
					sizeof(f->err)), 0);
	assert_int_equal(n, 4);
	assert_non_null(strstr(f->err, "not a record number"));
	assert_string_equal(cursor, "4");
	sim_events_free(events, n);

	/* Records trimmed before they were read are skipped, not waited for. */
	logons = SIM_EVENTS_KEPT + 10;
	edit(f, logon_cb, &logons);
	snprintf(cursor, sizeof(cursor), "2");
	assert_int_equal(read_all(p, cursor, 1000, &first, &last), SIM_EVENTS_KEPT);
	assert_int_equal(first, 15);
	assert_int_equal(last, SIM_EVENTS_KEPT + 14);
	close_probe(p);
}

static void test_bad_file_keeps_last_good(void **state)
{
	struct fixture *f = *state;
	const struct probe_backend *b = sim_backend();
	Exfleet__Snapshot *snap;
	struct probe_result r;
	char *text;
	size_t len;
	write_host(f, HOST_DOMAIN_ACCOUNT);
	struct probe *p = open_probe(f, NULL, 0);
	assert_int_equal(b->read_host(p, &snap, f->err, sizeof(f->err)), 0);
	assert_string_equal(f->err, "");
	assert_string_equal(snap->computer_name, "EXCH01");
	assert_int_equal(snap->role, EXFLEET__DOMAIN_ROLE__ROLE_MEMBER_SERVER);
	exfleet__snapshot__free_unpacked(snap, NULL);

	static const char broken[] = "{ \"schema\": 1,\n  \"computer_name\": ";
	assert_int_equal(util_write_file_atomic(f->host_file, broken, strlen(broken), 0600, f->err,
						sizeof(f->err)), 0);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(b->read_host(p, &snap, f->err, sizeof(f->err)), 0);
		assert_non_null(snap);
		assert_string_equal(snap->computer_name, "EXCH01");
		assert_non_null(strstr(f->err, "EXCH01.json:2:"));
		assert_non_null(strstr(f->err, "JSON syntax error"));
		assert_non_null(strstr(f->err, "serving the last good state"));
		exfleet__snapshot__free_unpacked(snap, NULL);
	}
	/* Actions cannot change a file they cannot read. */
	assert_true(b->start_service(p, "MSExchangeSA", &r) < 0);
	assert_int_equal(r.win32_error, WIN32_INVALID_DATA);
	assert_non_null(strstr(r.message, "JSON syntax error"));

	/* A schema error is named by its path; then a good file is current again. */
	struct sim_host *h = build_host(HOST_DOMAIN_ACCOUNT);
	assert_int_equal(sim_host_dump(h, &text, &len), 0);
	char *pos = strstr(text, "\"state\": \"running\"");
	assert_non_null(pos);
	memcpy(pos, "\"state\": \"runnin\" ", 18);
	assert_int_equal(util_write_file_atomic(f->host_file, text, len, 0600, f->err,
						sizeof(f->err)), 0);
	free(text);
	assert_int_equal(b->read_host(p, &snap, f->err, sizeof(f->err)), 0);
	assert_non_null(strstr(f->err, "EXCH01.json: $.services[0].state: 'runnin' is not one of"));
	exfleet__snapshot__free_unpacked(snap, NULL);

	assert_int_equal(sim_host_dcpromo(h, 0), 0);
	assert_int_equal(sim_host_save_file(h, f->host_file, f->err, sizeof(f->err)), 0);
	sim_host_free(h);
	assert_int_equal(b->read_host(p, &snap, f->err, sizeof(f->err)), 0);
	assert_string_equal(f->err, "");
	assert_int_equal(snap->role, EXFLEET__DOMAIN_ROLE__ROLE_PRIMARY_DC);
	exfleet__snapshot__free_unpacked(snap, NULL);
	close_probe(p);

	/* Opening needs one good state. */
	unlink(f->host_file);
	struct probe_settings s = {.host_file = f->host_file};
	assert_true(b->open(&p, NULL, &s, f->err, sizeof(f->err)) < 0);
	assert_non_null(strstr(f->err, "EXCH01.json"));
}

/* ---- watching ---- */

struct watch_state {
	struct fixture *f;
	struct probe *probe;
	uv_timer_t change;   /* replaces the file */
	uv_timer_t deadline; /* fails the test */
	int changes_seen;
	int closed;
	int timed_out;
};

static void watch_handle_closed_cb(uv_handle_t *h)
{
	(void)h;
}

static void probe_closed_cb(void *arg)
{
	struct watch_state *w = arg;
	w->closed = 1;
}

static void finish_watch(struct watch_state *w)
{
	sim_backend()->close(w->probe, probe_closed_cb, w);
	uv_close((uv_handle_t *)&w->change, watch_handle_closed_cb);
	uv_close((uv_handle_t *)&w->deadline, watch_handle_closed_cb);
}

static void changed_cb(void *arg)
{
	struct watch_state *w = arg;
	if (w->changes_seen++ == 0)
		finish_watch(w);
}

static void change_timer_cb(uv_timer_t *t)
{
	struct watch_state *w = t->data;
	uint64_t logons = 1;
	edit(w->f, logon_cb, &logons);
}

static void deadline_cb(uv_timer_t *t)
{
	struct watch_state *w = t->data;
	w->timed_out = 1;
	finish_watch(w);
}

static void run_watch(struct fixture *f, uint64_t rescan_ms, int change_file)
{
	uv_loop_t loop;
	struct watch_state w = {.f = f};
	assert_int_equal(uv_loop_init(&loop), 0);
	w.probe = open_probe(f, &loop, rescan_ms);
	assert_int_equal(sim_backend()->watch(w.probe, changed_cb, &w), 0);
	uv_timer_init(&loop, &w.change);
	uv_timer_init(&loop, &w.deadline);
	w.change.data = w.deadline.data = &w;
	if (change_file)
		uv_timer_start(&w.change, change_timer_cb, 50, 0);
	uv_timer_start(&w.deadline, deadline_cb, 5000, 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_false(w.timed_out);
	assert_int_equal(w.changes_seen, 1);
	assert_true(w.closed);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_watch_file_replaced(void **state)
{
	struct fixture *f = *state;
	write_host(f, HOST_DOMAIN_ACCOUNT);
	run_watch(f, 60000, 1); /* the rescan cannot fire in time: notification did it */
}

static void test_watch_rescan(void **state)
{
	struct fixture *f = *state;
	write_host(f, HOST_DOMAIN_ACCOUNT);
	run_watch(f, 30, 0);
}

/* ---- many writers ---- */

static void test_lock_serializes_writers(void **state)
{
	struct fixture *f = *state;
	enum { WRITERS = 3, EDITS = 30 };
	write_host(f, HOST_SYSTEM_ACCOUNT);
	edit(f, dcpromo_cb, NULL);
	struct sim_host *h = load_host(f);
	uint32_t next = h->next_record_number;
	sim_host_free(h);
	pid_t pids[WRITERS];
	for (int w = 0; w < WRITERS; w++) {
		pids[w] = fork();
		assert_true(pids[w] >= 0);
		if (pids[w] == 0) {
			uint64_t one = 1;
			char err[512];
			for (int i = 0; i < EDITS; i++)
				if (sim_host_edit(f->host_file, logon_cb, &one, err, sizeof(err)) < 0)
					_exit(1);
			_exit(0);
		}
	}
	for (int w = 0; w < WRITERS; w++) {
		int status;
		assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	h = load_host(f);
	assert_int_equal(count_events(h, SIM_SOURCE_POP3, 13003), WRITERS * EDITS);
	assert_int_equal(h->next_record_number, next + WRITERS * EDITS);
	sim_host_free(h);
}

/* ---- generated fleets ---- */

static char *generate_dump(uint64_t seed, double share, size_t index)
{
	struct sim_fleet_opts o = {seed, "CORP", share, PASSWORD};
	struct sim_host *h;
	char name[16], *text;
	size_t len;
	snprintf(name, sizeof(name), "EXCH%03zu", index + 1);
	assert_int_equal(sim_host_generate(&o, index, name, &h), 0);
	assert_int_equal(sim_host_dump(h, &text, &len), 0);
	sim_host_free(h);
	return text;
}

static void test_generate(void **state)
{
	(void)state;
	int differs = 0;
	for (size_t i = 0; i < 20; i++) {
		char *a = generate_dump(7, 0.3, i), *b = generate_dump(7, 0.3, i);
		char *c = generate_dump(8, 0.3, i);
		assert_string_equal(a, b);
		differs += strcmp(a, c) != 0;
		free(a);
		free(b);
		free(c);
	}
	assert_true(differs > 0);

	struct sim_fleet_opts all_local = {3, "CORP", 1.0, PASSWORD};
	struct sim_fleet_opts no_local = {3, "CORP", 0.0, PASSWORD};
	for (size_t i = 0; i < 40; i++) {
		struct sim_host *h;
		const struct sim_service *sa;
		assert_int_equal(sim_host_generate(&no_local, i, "EXCH001", &h), 0);
		sa = service(h, "MSExchangeSA");
		assert_string_equal(sa->logon_account, "CORP\\exsvc");
		assert_int_equal(h->role == SIM_ROLE_STANDALONE_SERVER, 0);
		for (size_t s = 0; s < h->n_services; s++) {
			assert_int_equal(h->services[s].state, SIM_RUNNING);
			if (strcmp(h->services[s].logon_account, "LocalSystem") != 0)
				assert_int_equal(sim_host_verify_credentials(
							 h, h->services[s].logon_account, PASSWORD), 0);
		}
		/* A reboot changes nothing on a healthy host. */
		sim_host_reboot(h);
		for (size_t s = 0; s < h->n_services; s++)
			assert_int_equal(h->services[s].state, SIM_RUNNING);
		sim_host_free(h);

		assert_int_equal(sim_host_generate(&all_local, i, "EXCH001", &h), 0);
		sa = service(h, "MSExchangeSA");
		assert_true(strcmp(sa->logon_account, ".\\exsvc") == 0 ||
			    strcmp(sa->logon_account, "EXCH001\\exsvc") == 0);
		assert_int_equal(sim_host_resolve(h, sa->logon_account, NULL), SIM_ACCOUNT_EXISTS);
		assert_int_equal(sim_host_verify_credentials(h, sa->logon_account, PASSWORD), 0);
		sim_host_free(h);
	}
}

/* ---- exfleet-sim ---- */

static int exe_path(char *out, size_t len)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return -1;
	self[n] = '\0';
	char *slash = strrchr(self, '/');
	if (!slash)
		return -1;
	*slash = '\0';
	snprintf(out, len, "%s/exfleet-sim", self);
	return access(out, X_OK);
}

/* Runs exfleet-sim with args (NULL-terminated), output discarded. */
static int run_sim(const char *exe, const char *const *args)
{
	char *argv[32];
	size_t n = 0;
	argv[n++] = (char *)exe;
	for (; args[n - 1] && n < 31; n++)
		argv[n] = (char *)args[n - 1];
	argv[n] = NULL;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 1);
		dup2(null, 2);
		execv(exe, argv);
		_exit(127);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void assert_same_file(const char *a_dir, const char *b_dir, const char *name)
{
	char a_path[4096], b_path[4096], err[512];
	char *a, *b;
	size_t alen, blen;
	snprintf(a_path, sizeof(a_path), "%s/%s", a_dir, name);
	snprintf(b_path, sizeof(b_path), "%s/%s", b_dir, name);
	assert_int_equal(util_read_file(a_path, SIM_FILE_MAX, &a, &alen, err, sizeof(err)), 0);
	assert_int_equal(util_read_file(b_path, SIM_FILE_MAX, &b, &blen, err, sizeof(err)), 0);
	assert_int_equal(alen, blen);
	assert_memory_equal(a, b, alen);
	free(a);
	free(b);
}

static void test_cli(void **state)
{
	struct fixture *f = *state;
	char exe[4096], a[4096], b[4096], host[4096];
	if (exe_path(exe, sizeof(exe)) != 0)
		skip(); /* build the exfleet-sim target to run this test */
	snprintf(a, sizeof(a), "%s/a", f->root);
	snprintf(b, sizeof(b), "%s/b", f->root);
	const char *create_a[] = {"create", a, "--hosts", "6", "--waves", "2", "--seed", "9", NULL};
	const char *create_b[] = {"create", "--seed", "9", b, "--hosts", "6", "--waves", "2", NULL};
	assert_int_equal(run_sim(exe, create_a), 0);
	assert_int_equal(run_sim(exe, create_b), 0);
	const char *same[] = {"waves.csv", "collector.ini", "exsvc.password", "hosts/EXCH001.json",
			      "hosts/EXCH006.json", "agents/EXCH003.ini"};
	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
		assert_same_file(a, b, same[i]);
	assert_int_equal(run_sim(exe, create_a), 1); /* the directory already holds a fleet */

	snprintf(host, sizeof(host), "%s/hosts/EXCH002.json", a);
	const char *show[] = {"show", host, NULL};
	const char *dcpromo[] = {"dcpromo", host, NULL};
	const char *logon[] = {"logon", host, "--pop3", "3", "--imap", "1", NULL};
	const char *reboot[] = {"reboot", host, NULL};
	assert_int_equal(run_sim(exe, show), 0);
	assert_int_equal(run_sim(exe, dcpromo), 0);
	assert_int_equal(run_sim(exe, dcpromo), 1);
	assert_int_equal(run_sim(exe, logon), 0);
	assert_int_equal(run_sim(exe, reboot), 0);
	struct sim_host *h;
	assert_int_equal(sim_host_load_file(host, &h, f->err, sizeof(f->err)), 0);
	assert_true(sim_host_is_dc(h));
	assert_int_equal(count_events(h, "EventLog", 6005), 2);
	sim_host_free(h);

	const char *no_hosts[] = {"create", b, "--waves", "2", NULL};
	const char *bad_count[] = {"logon", host, "--pop3", "many", NULL};
	const char *unknown_opt[] = {"show", host, "--verbose", NULL};
	const char *missing[] = {"show", "/nonexistent/EXCH.json", NULL};
	const char *help[] = {"dcpromo", "--help", NULL};
	const char *top_help[] = {"--help", NULL};
	const char *nothing[] = {NULL};
	const char *unknown_cmd[] = {"promote", NULL};
	assert_int_equal(run_sim(exe, no_hosts), 2);
	assert_int_equal(run_sim(exe, bad_count), 2);
	assert_int_equal(run_sim(exe, unknown_opt), 2);
	assert_int_equal(run_sim(exe, missing), 1);
	assert_int_equal(run_sim(exe, help), 0);
	assert_int_equal(run_sim(exe, top_help), 0);
	assert_int_equal(run_sim(exe, nothing), 2);
	assert_int_equal(run_sim(exe, unknown_cmd), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_schema_errors),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_dcpromo_local_account),
		cmocka_unit_test(test_dcpromo_domain_account),
		cmocka_unit_test(test_dcpromo_localsystem_keeps_running),
		cmocka_unit_test(test_logon),
		cmocka_unit_test(test_reboot),
		cmocka_unit_test(test_service_control),
		cmocka_unit_test_setup_teardown(test_probe_action_errors, fixture_setup,
						fixture_teardown),
		cmocka_unit_test_setup_teardown(test_full_repair, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_read_events_cursor, fixture_setup,
						fixture_teardown),
		cmocka_unit_test_setup_teardown(test_bad_file_keeps_last_good, fixture_setup,
						fixture_teardown),
		cmocka_unit_test_setup_teardown(test_watch_file_replaced, fixture_setup,
						fixture_teardown),
		cmocka_unit_test_setup_teardown(test_watch_rescan, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_lock_serializes_writers, fixture_setup,
						fixture_teardown),
		cmocka_unit_test(test_generate),
		cmocka_unit_test_setup_teardown(test_cli, fixture_setup, fixture_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
