/* The collector's HTTPS API in-process: real certificates from the PKI, a
 * store created with the real schema and filled with a small fleet, the API
 * on a loop in this thread, and a plain blocking OpenSSL client in a second
 * thread for each request. Every endpoint, every role, each kind of bad
 * input (and that it changes nothing), paging bounds, the metrics format,
 * the request log, and a clean stop with a connection still open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/ssl.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api.h"
#include "exfleet.pb-c.h"
#include "log.h"
#include "pki.h"
#include "store.h"
#include "testutil.h"
#include "util.h"

static char dir[512], pki_dir[600], db_path[600], log_path[600];
static FILE *log_file;
static int64_t now_ms, base_ms; /* fixture times: base_ms is a whole second */

/* ---- the collector's side, faked: counters and command submission ---- */

struct submitted {
	int calls;
	char host_id[65], command_id[65], action[64], by[65];
	size_t len;
};
static struct submitted submitted;

static void fake_stats(struct api_stats *s, void *arg)
{
	memset(s, 0, sizeof(*s));
	s->sessions_waiting = 1;
	s->sessions_handshake = 2;
	s->sessions_hello = 3;
	s->sessions_ready = 4;
	s->handshakes_in_progress = 2;
	s->handshakes_completed = 77;
	s->records_stored = 1234;
	s->acks_sent = 1200;
	s->store_queue_depth = 9;
	s->backpressure_pauses = 5;
	s->shed = 6;
	s->emfile = 7;
}

/* Accepts every command but "dddd", which the collector already holds. */
static int fake_submit(const struct api_command *c, char *err, size_t errlen, void *arg)
{
	submitted.calls++;
	if (strcmp(c->command_id, "dddd") == 0) {
		snprintf(err, errlen, "command id dddd is already in use");
		return UV_EEXIST;
	}
	snprintf(submitted.host_id, sizeof(submitted.host_id), "%s", c->host_id);
	snprintf(submitted.command_id, sizeof(submitted.command_id), "%s", c->command_id);
	snprintf(submitted.action, sizeof(submitted.action), "%s", c->action);
	snprintf(submitted.by, sizeof(submitted.by), "%s", c->submitted_by);
	submitted.len = c->len;
	return 0;
}

/* Imports through the real store code (a reader's connection), as the
 * collector's callback does, and remembers who asked. */
static struct {
	int calls;
	char by[65];
	size_t n;
} imported;

static int fake_import(const struct store_wave *plan, size_t n, const char *by, char *err,
		       size_t errlen, void *arg)
{
	imported.calls++;
	imported.n = n;
	snprintf(imported.by, sizeof(imported.by), "%s", by);
	struct store *st;
	int rc = store_open_reader(&st, db_path, err, errlen);
	if (rc < 0)
		return rc;
	rc = store_import_plan(st, plan, n, by, util_now_ms(), err, errlen);
	store_close_reader(st);
	return rc;
}

/* ---- the API on a loop ---- */

/* Dashboard lifetimes for the next world_start; 0: the defaults. */
static uint64_t next_signin_ttl_ms, next_session_ttl_ms;

struct world {
	uv_loop_t loop;
	struct api *api;
	int port;
	int stopped;
};

static void world_start(struct world *w, unsigned page_max, uint64_t budget_ms)
{
	memset(w, 0, sizeof(*w));
	assert_int_equal(uv_loop_init(&w->loop), 0);
	char ca[700], crl[700], crt[700], key[700], err[512];
	snprintf(ca, sizeof(ca), "%s/ca.crt", pki_dir);
	snprintf(crl, sizeof(crl), "%s/crl.pem", pki_dir);
	assert_int_equal(pki_cert_path(pki_dir, PKI_ROLE_COLLECTOR, "localhost", crt, sizeof(crt),
				       key, sizeof(key)),
			 0);
	struct api_config cfg;
	api_config_default(&cfg);
	cfg.listen = "127.0.0.1:0";
	cfg.ca_file = ca;
	cfg.cert_file = crt;
	cfg.key_file = key;
	cfg.crl_file = crl;
	cfg.store_path = db_path;
	cfg.stats = fake_stats;
	cfg.submit_command = fake_submit;
	cfg.import_waves = fake_import;
	if (next_signin_ttl_ms)
		cfg.signin_ttl_ms = next_signin_ttl_ms;
	if (next_session_ttl_ms)
		cfg.session_ttl_ms = next_session_ttl_ms;
	next_signin_ttl_ms = next_session_ttl_ms = 0;
	if (page_max)
		cfg.page_max = page_max;
	if (budget_ms)
		cfg.query_budget_ms = budget_ms;
	if (api_start(&w->api, &w->loop, &cfg, err, sizeof(err)) < 0)
		fail_msg("api_start: %s", err);
	w->port = api_port(w->api);
	assert_true(w->port > 0);
}

static void stopped_cb(void *arg)
{
	((struct world *)arg)->stopped = 1;
}

static void world_stop(struct world *w)
{
	api_stop(w->api, stopped_cb, w);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	assert_true(w->stopped);
	assert_int_equal(uv_loop_close(&w->loop), 0);
}

/* ---- a blocking HTTPS client, one request per thread ---- */

struct call {
	/* what to send */
	int port;
	const char *who; /* certificate name, or NULL for none */
	const char *method, *path, *body, *content_type;
	const char *cookie;       /* a Cookie header's value, or NULL */
	long long content_length; /* > 0: claim this length and send no body */
	int hold;                 /* only connect, then wait for the server to close */
	/* what came back */
	int status;               /* 0: no HTTP response (the TLS handshake failed) */
	char *raw;
	size_t raw_len;
	const char *headers, *body_text;
	json_t *json;
	/* back to the loop */
	uv_async_t done;
	int finished;
	uv_sem_t connected;
};

static const struct {
	const char *name;
	enum pki_role role;
} people[] = {{"localhost", PKI_ROLE_COLLECTOR},
	      {"alice", PKI_ROLE_OPERATOR},
	      {"victor", PKI_ROLE_VIEWER},
	      {"mallory", PKI_ROLE_VIEWER},
	      {"EXCH01", PKI_ROLE_AGENT}};

static SSL_CTX *client_ctx(const char *who)
{
	char ca[700], crt[700], key[700];
	snprintf(ca, sizeof(ca), "%s/ca.crt", pki_dir);
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_load_verify_locations(ctx, ca, NULL);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	for (size_t i = 0; who && i < sizeof(people) / sizeof(people[0]); i++) {
		if (strcmp(people[i].name, who) != 0)
			continue;
		pki_cert_path(pki_dir, people[i].role, who, crt, sizeof(crt), key, sizeof(key));
		SSL_CTX_use_certificate_chain_file(ctx, crt);
		SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM);
	}
	return ctx;
}

static void client_main(void *arg)
{
	struct call *c = arg;
	SSL_CTX *ctx = client_ctx(c->who);
	SSL *ssl = NULL;
	char *req = NULL;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		if (c->hold)
			uv_sem_post(&c->connected);
		goto out;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	SSL_set_tlsext_host_name(ssl, "localhost");
	SSL_set1_host(ssl, "localhost");
	if (SSL_connect(ssl) != 1) {
		/* A test waiting for the connection must not wait forever. */
		if (c->hold)
			uv_sem_post(&c->connected);
		goto out;
	}
	if (c->hold) {
		uv_sem_post(&c->connected);
		char byte;
		while (SSL_read(ssl, &byte, 1) > 0)
			;
		goto out;
	}
	size_t body_len = c->body ? strlen(c->body) : 0;
	size_t cap = 1024 + body_len;
	req = malloc(cap);
	int n = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n",
			 c->method, c->path);
	if (c->content_type)
		n += snprintf(req + n, cap - (size_t)n, "Content-Type: %s\r\n", c->content_type);
	if (c->cookie)
		n += snprintf(req + n, cap - (size_t)n, "Cookie: %s\r\n", c->cookie);
	if (c->content_length > 0)
		n += snprintf(req + n, cap - (size_t)n, "Content-Length: %lld\r\n",
			      c->content_length);
	else if (c->body || strcmp(c->method, "POST") == 0)
		n += snprintf(req + n, cap - (size_t)n, "Content-Length: %zu\r\n", body_len);
	n += snprintf(req + n, cap - (size_t)n, "\r\n");
	if (body_len && c->content_length <= 0) {
		memcpy(req + n, c->body, body_len);
		n += (int)body_len;
	}
	if (SSL_write(ssl, req, n) != n)
		goto out;
	size_t raw_cap = 1 << 16;
	c->raw = malloc(raw_cap + 1);
	for (;;) {
		if (c->raw_len == raw_cap) {
			raw_cap *= 2;
			c->raw = realloc(c->raw, raw_cap + 1);
		}
		int got = SSL_read(ssl, c->raw + c->raw_len, (int)(raw_cap - c->raw_len));
		if (got <= 0)
			break;
		c->raw_len += (size_t)got;
	}
	c->raw[c->raw_len] = '\0';
out:
	free(req);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	if (fd >= 0)
		close(fd);
	if (c->hold)
		uv_sem_post(&c->connected); /* in case the handshake failed */
	uv_async_send(&c->done);
}

static void call_closed_cb(uv_handle_t *h)
{
	((struct call *)h->data)->finished = 1;
}

static void call_done_cb(uv_async_t *a)
{
	uv_close((uv_handle_t *)a, call_closed_cb);
}

static void parse_response(struct call *c)
{
	char *end = c->raw ? strstr(c->raw, "\r\n\r\n") : NULL;
	if (!end || strncmp(c->raw, "HTTP/1.1 ", 9) != 0)
		return;
	*end = '\0';
	c->status = atoi(c->raw + 9);
	c->headers = c->raw;
	c->body_text = end + 4;
	c->json = json_loads(c->body_text, 0, NULL);
}

static struct call *request(struct world *w, const char *who, const char *method,
			    const char *path, const char *body)
{
	struct call *c = calloc(1, sizeof(*c));
	c->port = w->port;
	c->who = who;
	c->method = method;
	c->path = path;
	c->body = body;
	c->content_type = body ? "application/json" : NULL;
	return c;
}

static struct call *run(struct world *w, struct call *c)
{
	uv_thread_t thread;
	assert_int_equal(uv_async_init(&w->loop, &c->done, call_done_cb), 0);
	c->done.data = c;
	assert_int_equal(uv_thread_create(&thread, client_main, c), 0);
	while (!c->finished)
		uv_run(&w->loop, UV_RUN_ONCE);
	uv_thread_join(&thread);
	parse_response(c);
	return c;
}

static struct call *get(struct world *w, const char *who, const char *path)
{
	return run(w, request(w, who, "GET", path, NULL));
}

static struct call *post(struct world *w, const char *who, const char *path, const char *body)
{
	return run(w, request(w, who, "POST", path, body));
}

static void call_free(struct call *c)
{
	json_decref(c->json);
	free(c->raw);
	free(c);
}

/* The response header's value, or NULL. */
static const char *header(const struct call *c, const char *name, char *buf, size_t len)
{
	size_t n = strlen(name);
	for (const char *p = c->headers; p && (p = strstr(p, "\r\n")); p += 2) {
		if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
			const char *v = p + 3 + n;
			v += strspn(v, " ");
			snprintf(buf, len, "%.*s", (int)strcspn(v, "\r\n"), v);
			return buf;
		}
	}
	return NULL;
}

/* The response was an error in the API's shape, with this status and
 * code, and a message that contains needle (the field at fault). */
static void expect_error(struct call *c, int status, const char *code, const char *needle)
{
	if (c->status != status)
		fail_msg("expected %d, got %d: %s", status, c->status,
			 c->body_text ? c->body_text : "(no response)");
	json_t *e = json_object_get(c->json, "error");
	assert_non_null(e);
	assert_string_equal(json_string_value(json_object_get(e, "code")), code);
	const char *message = json_string_value(json_object_get(e, "message"));
	assert_non_null(message);
	if (needle && !strstr(message, needle))
		fail_msg("message '%s' does not name '%s'", message, needle);
	call_free(c);
}

static json_t *ok_json(struct call *c, int status)
{
	if (c->status != status)
		fail_msg("expected %d, got %d: %s", status, c->status,
			 c->body_text ? c->body_text : "(no response)");
	assert_non_null(c->json);
	return c->json;
}

static const char *str(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static long long num(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

/* ---- the fixture fleet ---- */

static sqlite3 *db_open(void)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static void db_exec(sqlite3 *db, char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
	sqlite3_free(sql);
}

static long long db_count(const char *table)
{
	sqlite3 *db = db_open();
	char *sql = sqlite3_mprintf("SELECT COUNT(*) FROM %s", table);
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	long long n = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_free(sql);
	sqlite3_close(db);
	return n;
}

/* EXCH01 promoted and AFFECTED, online; EXCH02 HEALTHY, offline; EXCH03
 * AT_RISK, labelled wave 2 but planned in wave 3; EXCH09 planned in wave 2,
 * never seen. */
static void fill_store(void)
{
	sqlite3 *db = db_open();
	long long n = now_ms, b = base_ms;
	db_exec(db, sqlite3_mprintf(
		"INSERT INTO hosts (host_id, site, wave, agent_version, platform, first_seen,"
		" last_seen, highest_seq, spool_dropped, observed_at, role, domain,"
		" role_changed_at, promoted_at, sam_present, exchange_version, exchange_sp,"
		" sp_needs_reapply, status, evidence, status_since) VALUES"
		" ('EXCH01', 'paris', '1', '0.1.0', 'sim', %lld, %lld, 70, 3, %lld, 5, 'CORP',"
		"  %lld, %lld, 0, '5.5.2650', 3, 0, 'AFFECTED',"
		"  '[\"MSExchangeIS stopped: 1069\", \"60 MSExchangePOP3/13003\"]', %lld),"
		" ('EXCH02', 'lyon', '1', '0.1.0', 'sim', %lld, %lld, 5, 0, %lld, 4, 'CORP',"
		"  0, NULL, 1, '5.5.2650', 3, 0, 'HEALTHY', '[]', %lld),"
		" ('EXCH03', 'lyon', '2', '0.1.0', 'sim', %lld, %lld, 5, 2, %lld, 4, 'CORP',"
		"  0, NULL, 1, '5.5.2650', 3, 0, 'AT_RISK',"
		"  '[\"MSExchangeSA logs on as .\\exsvc\"]', %lld)",
		n - 86400000, n, n, b, b, b + 50000, n - 86400000, n - 600000, n, n - 86400000,
		n - 86400000, n - 1000, n, n - 500000));
	db_exec(db, sqlite3_mprintf("INSERT INTO waves VALUES ('EXCH03', '3', '2026-12-01'),"
				    " ('EXCH09', '2', '2026-11-30')"));
	db_exec(db, sqlite3_mprintf(
		"INSERT INTO services VALUES"
		" ('EXCH01', 'MSExchangeIS', 'Microsoft Exchange Information Store', 1, 3,"
		"  'EXCH01\\exsvc', 1069, 0, 2, '[\"SeServiceLogonRight\"]', 0),"
		" ('EXCH01', 'MSExchangeSA', 'Microsoft Exchange System Attendant', 4, 3,"
		"  'LocalSystem', 0, 0, 3, '[]', 0)"));
	db_exec(db, sqlite3_mprintf(
		"INSERT INTO status_history VALUES ('EXCH01', %lld, 'HEALTHY', '[]'),"
		" ('EXCH01', %lld, 'AFFECTED', '[\"MSExchangeIS stopped: 1069\"]')",
		n - 86400000, b + 50000));
	for (int seq = 1; seq <= 60; seq++)
		db_exec(db, sqlite3_mprintf(
			"INSERT INTO events VALUES ('EXCH01', %d, %d, 'Application',"
			" 'MSExchangePOP3', 13003, 1, 1, 'Authentication', %lld, '[\"user%d\"]',"
			" 'A required privilege is not held by the client.', 'EXCH01', %lld)",
			seq, 1000 + seq, b + seq * 1000LL, seq, n));
	db_exec(db, sqlite3_mprintf(
		"INSERT INTO events VALUES ('EXCH01', 61, 1061, 'System',"
		" 'Service Control Manager', 7000, 1, 0, NULL, %lld,"
		" '[\"MSExchangeIS\", \"%%%%1069\"]',"
		" 'The service did not start due to a logon failure.', 'EXCH01', %lld)",
		b + 61000, n));
	for (int seq = 1; seq <= 5; seq++)
		db_exec(db, sqlite3_mprintf(
			"INSERT INTO events VALUES ('EXCH02', %d, %d, 'Application',"
			" 'MSExchangeIS', 1000, 4, 0, NULL, %lld, '[]', 'Started.', 'EXCH02',"
			" %lld)",
			seq, seq, b + seq * 1000LL, n));
	db_exec(db, sqlite3_mprintf(
		"INSERT INTO commands VALUES"
		" ('c0ffee01', 'EXCH01', 'RESTART_SERVICES', 'alice', %lld, %lld, 'succeeded',"
		"  %lld, x'0a00'),"
		" ('c0ffee02', 'EXCH02', 'RESCAN', 'alice', %lld, %lld, 'queued', %lld, x'0a00')",
		n - 100000, n + 3600000, n - 90000, n - 50000, n + 3600000, n - 50000));
	db_exec(db, sqlite3_mprintf(
		"INSERT INTO command_results VALUES ('EXCH01', 62, 'c0ffee01', 1, '', '["
		"{\"step\":\"restart\",\"target\":\"MSExchangeSA\",\"ok\":true,"
		"\"win32_error\":0,\"message\":\"running\",\"finished_at\":%lld},"
		"{\"step\":\"restart\",\"target\":\"MSExchangeIS\",\"ok\":true,"
		"\"win32_error\":0,\"message\":\"running\",\"finished_at\":%lld}]',"
		" %lld, %lld, %lld)",
		n - 93000, n - 91000, n - 95000, n - 91000, n - 90000));
	sqlite3_close(db);
}

static int group_setup(void **state)
{
	char err[512];
	/* As the collector does: a client gone mid-response costs a write error. */
	util_ignore_sigpipe();
	assert_int_equal(test_tmpdir("test_api", dir, sizeof(dir)), 0);
	snprintf(pki_dir, sizeof(pki_dir), "%s/pki", dir);
	snprintf(db_path, sizeof(db_path), "%s/collector.db", dir);
	snprintf(log_path, sizeof(log_path), "%s/collector.log", dir);
	log_file = fopen(log_path, "w+");
	assert_non_null(log_file);
	log_init(log_file, LOG_INFO);

	assert_int_equal(pki_init(pki_dir, PKI_ALGO_ECDSA_P256, 0, err, sizeof(err)), 0);
	for (size_t i = 0; i < sizeof(people) / sizeof(people[0]); i++) {
		struct pki_issue_opts p = {.role = people[i].role, .name = people[i].name};
		assert_int_equal(pki_issue(pki_dir, &p, NULL, err, sizeof(err)), 0);
	}
	assert_int_equal(pki_revoke(pki_dir, "mallory", NULL, NULL, err, sizeof(err)), 0);

	/* The real schema, made by the store itself. */
	uv_loop_t loop;
	assert_int_equal(uv_loop_init(&loop), 0);
	struct store_options so;
	store_options_default(&so);
	so.path = db_path;
	so.prune_interval_ms = 0;
	struct store *st;
	if (store_open(&st, &loop, &so, NULL, NULL, err, sizeof(err)) < 0)
		fail_msg("store_open: %s", err);
	store_close(st, NULL, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&loop), 0);

	now_ms = util_now_ms();
	base_ms = (now_ms / 1000) * 1000 - 3600000;
	fill_store();
	return 0;
}

static int group_teardown(void **state)
{
	fclose(log_file);
	test_rmtree(dir);
	return 0;
}

/* ---- building submissions ---- */

enum { WITH_ACTION = 1, NO_ACTION = 0 };

/* base64 of a Command (unsigned) for target with this id. */
static char *envelope(const char *id, const char *target, int64_t expires_ms, int action)
{
	Exfleet__Rescan rescan = EXFLEET__RESCAN__INIT;
	Exfleet__CommandBody body = EXFLEET__COMMAND_BODY__INIT;
	body.id = (char *)id;
	body.target_host_id = (char *)target;
	body.issued_at_ms = util_now_ms();
	body.expires_at_ms = expires_ms;
	if (action) {
		body.action_case = EXFLEET__COMMAND_BODY__ACTION_RESCAN;
		body.rescan = &rescan;
	}
	uint8_t packed_body[512], packed[600];
	Exfleet__Command cmd = EXFLEET__COMMAND__INIT;
	cmd.body.len = exfleet__command_body__pack(&body, packed_body);
	cmd.body.data = packed_body;
	size_t len = exfleet__command__pack(&cmd, packed);
	char *b64 = malloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)b64, packed, (int)len);
	return b64;
}

static char *base64_of(const void *bytes, size_t len)
{
	char *b64 = malloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)b64, bytes, (int)len);
	return b64;
}

/* {"host_id": host, "envelope": b64} (b64 is freed) */
static char *submission(const char *host, char *b64)
{
	json_t *j = json_pack("{s:s, s:s}", "host_id", host, "envelope", b64);
	char *text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	free(b64);
	return text;
}

static int logged(const char *needle);

/* ---- the tests ---- */

/* Each way of failing to start says which setting is at fault, and leaves
 * nothing behind on the loop. */
static void test_start_errors(void **state)
{
	struct world running;
	world_start(&running, 0, 0);
	char ca[700], crt[700], key[700], missing[700], no_crt[700], busy[64], err[512];
	snprintf(ca, sizeof(ca), "%s/ca.crt", pki_dir);
	snprintf(missing, sizeof(missing), "%s/no-such.db", dir);
	snprintf(no_crt, sizeof(no_crt), "%s/no-such.crt", dir);
	pki_cert_path(pki_dir, PKI_ROLE_COLLECTOR, "localhost", crt, sizeof(crt), key, sizeof(key));
	snprintf(busy, sizeof(busy), "127.0.0.1:%d", running.port);
	const struct {
		const char *listen, *store, *cert;
		const char *needle;
	} cases[] = {
		{"nonsense", db_path, crt, "[api] listen: 'nonsense'"},
		{"localhost:8443", db_path, crt, "not an IP address"},
		{busy, db_path, crt, "cannot listen on"},
		{"127.0.0.1:0", missing, crt, "no-such.db"},
		{"127.0.0.1:0", db_path, no_crt, "no-such.crt: cannot load certificate"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uv_loop_t loop;
		assert_int_equal(uv_loop_init(&loop), 0);
		struct api_config cfg;
		api_config_default(&cfg);
		cfg.listen = cases[i].listen;
		cfg.ca_file = ca;
		cfg.cert_file = cases[i].cert;
		cfg.key_file = key;
		cfg.store_path = cases[i].store;
		struct api *a = NULL;
		assert_true(api_start(&a, &loop, &cfg, err, sizeof(err)) < 0);
		if (!strstr(err, cases[i].needle))
			fail_msg("'%s' does not name '%s'", err, cases[i].needle);
		uv_run(&loop, UV_RUN_DEFAULT);
		assert_int_equal(uv_loop_close(&loop), 0);
	}
	world_stop(&running);
}

static void test_healthz_needs_no_certificate(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	struct call *c = get(&w, NULL, "/healthz");
	json_t *j = ok_json(c, 200);
	assert_string_equal(str(j, "status"), "ok");
	assert_string_equal(str(j, "store"), "ok");
	call_free(c);

	/* A store that is no longer this collector's schema is not healthy. */
	sqlite3 *db = db_open();
	db_exec(db, sqlite3_mprintf("PRAGMA user_version = 99"));
	expect_error(get(&w, NULL, "/healthz"), 503, "store_unavailable", NULL);
	db_exec(db, sqlite3_mprintf("PRAGMA user_version = %d", STORE_SCHEMA_VERSION));
	sqlite3_close(db);
	c = get(&w, NULL, "/healthz");
	ok_json(c, 200);
	call_free(c);

	c = post(&w, NULL, "/healthz", "{}");
	char allow[64];
	assert_non_null(header(c, "allow", allow, sizeof(allow)));
	assert_string_equal(allow, "GET, HEAD");
	expect_error(c, 405, "method_not_allowed", "POST");
	world_stop(&w);
}

static void test_roles(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	/* No certificate: 401, even for a path that does not exist. */
	expect_error(get(&w, NULL, "/api/v1/hosts"), 401, "unauthenticated", "certificate");
	expect_error(get(&w, NULL, "/api/v1/nothing"), 401, "unauthenticated", NULL);
	expect_error(get(&w, NULL, "/metrics"), 401, "unauthenticated", NULL);
	/* A certificate of another role: 403 naming it. */
	expect_error(get(&w, "EXCH01", "/api/v1/hosts"), 403, "forbidden", "agent");
	/* A revoked certificate does not get through the handshake. */
	struct call *c = get(&w, "mallory", "/api/v1/hosts");
	assert_int_equal(c->status, 0);
	call_free(c);
	assert_true(logged("api: TLS handshake refused: certificate revoked: certificate revoked "
			   "(viewer mallory)"));
	/* A collector's certificate is for serving only (serverAuth). */
	c = get(&w, "localhost", "/api/v1/hosts");
	assert_int_equal(c->status, 0);
	call_free(c);
	assert_true(logged("api: TLS handshake refused: unsupported certificate: unsuitable "
			   "certificate purpose (collector localhost)"));
	/* Viewers read; only operators submit. */
	c = get(&w, "victor", "/api/v1/hosts");
	ok_json(c, 200);
	call_free(c);
	char *body = submission("EXCH02", envelope("abcdef01", "EXCH02", util_now_ms() + 60000,
						   WITH_ACTION));
	expect_error(post(&w, "victor", "/api/v1/commands", body), 403, "forbidden", "viewer");
	assert_int_equal(submitted.calls, 0);
	c = post(&w, "alice", "/api/v1/commands", body);
	ok_json(c, 201);
	call_free(c);
	assert_int_equal(submitted.calls, 1);
	free(body);
	/* Anyone with a role gets 404 for what does not exist. */
	expect_error(get(&w, "victor", "/api/v1/nothing"), 404, "not_found", "/api/v1/nothing");
	expect_error(get(&w, "victor", "/nothing"), 404, "not_found", NULL);
	world_stop(&w);
	memset(&submitted, 0, sizeof(submitted));
}

static void test_hosts(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	struct call *c = get(&w, "victor", "/api/v1/hosts");
	json_t *j = ok_json(c, 200);
	assert_int_equal(num(j, "total"), 4);
	assert_true(json_is_null(json_object_get(j, "next")));
	json_t *items = json_object_get(j, "items");
	assert_int_equal(json_array_size(items), 4);
	json_t *h1 = json_array_get(items, 0), *h2 = json_array_get(items, 1),
	       *h3 = json_array_get(items, 2), *h9 = json_array_get(items, 3);
	assert_string_equal(str(h1, "host_id"), "EXCH01");
	assert_string_equal(str(h1, "status"), "AFFECTED");
	assert_string_equal(str(h1, "connectivity"), "ONLINE");
	assert_string_equal(str(h1, "wave"), "1");
	assert_string_equal(str(h1, "site"), "paris");
	assert_int_equal(num(h1, "promoted_at"), base_ms);
	assert_int_equal(num(h1, "status_since"), base_ms + 50000);
	assert_int_equal(json_array_size(json_object_get(h1, "evidence")), 2);
	assert_string_equal(json_string_value(json_array_get(json_object_get(h1, "evidence"), 0)),
			    "MSExchangeIS stopped: 1069");
	assert_string_equal(str(h2, "host_id"), "EXCH02");
	assert_string_equal(str(h2, "connectivity"), "OFFLINE");
	assert_true(json_is_null(json_object_get(h2, "promoted_at")));
	/* The plan overrides the agent's label. */
	assert_string_equal(str(h3, "wave"), "3");
	assert_string_equal(str(h3, "planned_date"), "2026-12-01");
	assert_string_equal(str(h9, "host_id"), "EXCH09");
	assert_string_equal(str(h9, "connectivity"), "NEVER_SEEN");
	assert_true(json_is_null(json_object_get(h9, "status")));
	assert_true(json_is_null(json_object_get(h9, "last_seen")));
	assert_int_equal(json_array_size(json_object_get(h9, "evidence")), 0);
	call_free(c);

	static const struct {
		const char *query;
		int total;
		const char *first;
	} filters[] = {
		{"status=AFFECTED", 1, "EXCH01"},        {"status=at_risk", 1, "EXCH03"},
		{"connectivity=OFFLINE", 1, "EXCH02"},   {"connectivity=never_seen", 1, "EXCH09"},
		{"wave=1", 2, "EXCH01"},                 {"wave=3", 1, "EXCH03"},
		{"wave=2", 1, "EXCH09"},                 {"site=lyon", 2, "EXCH02"},
		{"site=lyon&connectivity=ONLINE", 1, "EXCH03"},
		{"status=REPAIRED", 0, NULL},            {"status=never_seen", 1, "EXCH09"},
	};
	for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++) {
		char path[128];
		snprintf(path, sizeof(path), "/api/v1/hosts?%s", filters[i].query);
		c = get(&w, "victor", path);
		j = ok_json(c, 200);
		if (num(j, "total") != filters[i].total)
			fail_msg("%s: total %lld, expected %d", path, num(j, "total"),
				 filters[i].total);
		if (filters[i].first)
			assert_string_equal(str(json_array_get(json_object_get(j, "items"), 0),
						"host_id"),
					    filters[i].first);
		call_free(c);
	}
	expect_error(get(&w, "victor", "/api/v1/hosts?status=BROKEN"), 400, "invalid_parameter",
		     "status");
	expect_error(get(&w, "victor", "/api/v1/hosts?connectivity=maybe"), 400,
		     "invalid_parameter", "connectivity");
	expect_error(get(&w, "victor", "/api/v1/hosts?wave="), 400, "invalid_parameter", "wave");
	expect_error(get(&w, "victor", "/api/v1/hosts?colour=red"), 400, "unknown_parameter",
		     "colour");
	expect_error(get(&w, "victor", "/api/v1/hosts?status=%zz"), 400, "invalid_parameter",
		     "query");
	/* HEAD: the headers of a GET, no body. */
	c = run(&w, request(&w, "victor", "HEAD", "/api/v1/hosts", NULL));
	assert_int_equal(c->status, 200);
	assert_string_equal(c->body_text, "");
	call_free(c);
	world_stop(&w);
}

static void test_host(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	struct call *c = get(&w, "victor", "/api/v1/hosts/EXCH01");
	json_t *h = ok_json(c, 200);
	assert_string_equal(str(h, "host_id"), "EXCH01");
	assert_string_equal(str(h, "status"), "AFFECTED");
	assert_string_equal(str(h, "connectivity"), "ONLINE");
	assert_string_equal(str(h, "role"), "ROLE_BACKUP_DC");
	assert_string_equal(str(h, "domain"), "CORP");
	assert_int_equal(num(h, "promoted_at"), base_ms);
	assert_true(json_is_false(json_object_get(h, "sam_present")));
	assert_string_equal(str(h, "exchange_version"), "5.5.2650");
	assert_int_equal(num(h, "exchange_sp"), 3);
	assert_int_equal(json_array_size(json_object_get(h, "evidence")), 2);

	json_t *services = json_object_get(h, "services");
	assert_int_equal(json_array_size(services), 2);
	json_t *is = json_array_get(services, 0);
	assert_string_equal(str(is, "name"), "MSExchangeIS");
	assert_string_equal(str(is, "state"), "SERVICE_STOPPED");
	assert_string_equal(str(is, "start_type"), "START_AUTO");
	assert_string_equal(str(is, "account_status"), "ACCOUNT_MISSING");
	assert_int_equal(num(is, "win32_exit_code"), 1069);
	assert_string_equal(json_string_value(json_array_get(json_object_get(is, "rights"), 0)),
			    "SeServiceLogonRight");
	assert_string_equal(str(json_array_get(services, 1), "account_status"),
			    "ACCOUNT_BUILTIN");

	json_t *history = json_object_get(h, "status_history");
	assert_int_equal(num(history, "total"), 2);
	assert_string_equal(str(json_array_get(json_object_get(history, "items"), 0), "status"),
			    "AFFECTED");

	/* Newest 50 of 61, newest first. */
	json_t *events = json_object_get(h, "recent_events");
	assert_int_equal(num(events, "total"), 61);
	json_t *items = json_object_get(events, "items");
	assert_int_equal(json_array_size(items), 50);
	assert_int_equal(num(json_array_get(items, 0), "seq"), 61);
	assert_string_equal(str(json_array_get(items, 0), "source"), "Service Control Manager");
	assert_string_equal(str(json_array_get(items, 0), "type"), "EVENT_ERROR");
	json_t *strings = json_object_get(json_array_get(items, 0), "strings");
	assert_string_equal(json_string_value(json_array_get(strings, 1)), "%%1069");
	assert_int_equal(num(json_array_get(items, 49), "seq"), 12);

	json_t *commands = json_object_get(h, "commands");
	assert_int_equal(num(commands, "total"), 1);
	json_t *cmd = json_array_get(json_object_get(commands, "items"), 0);
	assert_string_equal(str(cmd, "command_id"), "c0ffee01");
	assert_string_equal(str(cmd, "state"), "succeeded");
	json_t *result = json_object_get(cmd, "result");
	assert_string_equal(str(result, "status"), "COMMAND_SUCCEEDED");
	assert_int_equal(json_array_size(json_object_get(result, "steps")), 2);
	call_free(c);

	/* Planned, never connected: the same keys, nothing observed. */
	c = get(&w, "victor", "/api/v1/hosts/EXCH09");
	h = ok_json(c, 200);
	assert_string_equal(str(h, "wave"), "2");
	assert_string_equal(str(h, "connectivity"), "NEVER_SEEN");
	assert_true(json_is_null(json_object_get(h, "role")));
	assert_int_equal(json_array_size(json_object_get(h, "services")), 0);
	assert_int_equal(num(json_object_get(h, "recent_events"), "total"), 0);
	call_free(c);

	expect_error(get(&w, "victor", "/api/v1/hosts/EXCH77"), 404, "not_found", "EXCH77");
	expect_error(get(&w, "victor", "/api/v1/hosts/bad%20id"), 404, "not_found", NULL);
	expect_error(get(&w, "victor", "/api/v1/hosts/EXCH01?limit=5"), 400, "unknown_parameter",
		     "limit");
	world_stop(&w);
}

static void test_events(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	struct call *c = get(&w, "victor", "/api/v1/events");
	json_t *j = ok_json(c, 200);
	assert_int_equal(num(j, "total"), 66);
	assert_int_equal(json_array_size(json_object_get(j, "items")), 66);
	call_free(c);

	char path[256], when[32];
	util_format_time(base_ms + 10000, when, sizeof(when));
	const struct {
		const char *query;
		int total;
	} filters[] = {
		{"host=EXCH01", 61},
		{"host=EXCH02", 5},
		{"source=MSExchangePOP3&id=13003", 60},
		{"source=Service%20Control%20Manager", 1},
		{"source=Service+Control+Manager&id=7000&host=EXCH01", 1},
		{"id=1000", 5},
		{"host=EXCH09", 0},
	};
	for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++) {
		snprintf(path, sizeof(path), "/api/v1/events?%s", filters[i].query);
		c = get(&w, "victor", path);
		j = ok_json(c, 200);
		if (num(j, "total") != filters[i].total)
			fail_msg("%s: total %lld, expected %d", path, num(j, "total"),
				 filters[i].total);
		call_free(c);
	}
	/* since is inclusive, until exclusive; ms and ISO-8601 agree. */
	snprintf(path, sizeof(path), "/api/v1/events?host=EXCH01&since=%lld&until=%lld",
		 (long long)base_ms + 10000, (long long)base_ms + 20000);
	c = get(&w, "victor", path);
	j = ok_json(c, 200);
	assert_int_equal(num(j, "total"), 10);
	assert_int_equal(num(json_array_get(json_object_get(j, "items"), 0), "seq"), 19);
	call_free(c);
	snprintf(path, sizeof(path), "/api/v1/events?host=EXCH01&since=%s", when);
	c = get(&w, "victor", path);
	assert_int_equal(num(ok_json(c, 200), "total"), 52);
	call_free(c);

	expect_error(get(&w, "victor", "/api/v1/events?since=yesterday"), 400,
		     "invalid_parameter", "since");
	expect_error(get(&w, "victor", "/api/v1/events?until=2026-02-30T00:00:00Z"), 400,
		     "invalid_parameter", "until");
	expect_error(get(&w, "victor", "/api/v1/events?since=2000&until=1000"), 400,
		     "invalid_parameter", "until");
	expect_error(get(&w, "victor", "/api/v1/events?id=abc"), 400, "invalid_parameter", "id");
	expect_error(get(&w, "victor", "/api/v1/events?id=-1"), 400, "invalid_parameter", "id");
	expect_error(get(&w, "victor", "/api/v1/events?host=no/such"), 400, "invalid_parameter",
		     "host");
	expect_error(get(&w, "victor", "/api/v1/events?hostname=EXCH01"), 400,
		     "unknown_parameter", "hostname");
	world_stop(&w);
}

static void test_waves(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	struct call *c = get(&w, "victor", "/api/v1/waves");
	json_t *j = ok_json(c, 200);
	assert_int_equal(num(j, "total"), 3);
	json_t *items = json_object_get(j, "items");
	json_t *w1 = json_array_get(items, 0), *w2 = json_array_get(items, 1),
	       *w3 = json_array_get(items, 2);
	assert_string_equal(str(w1, "wave"), "1");
	assert_int_equal(num(w1, "hosts"), 2);
	assert_int_equal(num(w1, "promoted"), 1);
	assert_int_equal(num(w1, "done"), 0); /* EXCH02 is healthy but not promoted */
	assert_int_equal(num(json_object_get(w1, "by_status"), "AFFECTED"), 1);
	assert_int_equal(num(json_object_get(w1, "by_status"), "HEALTHY"), 1);
	assert_int_equal(num(json_object_get(w1, "by_status"), "REPAIRED"), 0);
	assert_int_equal(num(json_object_get(w1, "by_connectivity"), "ONLINE"), 1);
	assert_int_equal(num(json_object_get(w1, "by_connectivity"), "OFFLINE"), 1);
	assert_string_equal(str(w2, "wave"), "2");
	assert_int_equal(num(w2, "hosts"), 1);
	assert_int_equal(num(json_object_get(w2, "by_connectivity"), "NEVER_SEEN"), 1);
	assert_string_equal(str(w2, "planned_date"), "2026-11-30");
	assert_string_equal(str(w3, "wave"), "3");
	assert_int_equal(num(json_object_get(w3, "by_status"), "AT_RISK"), 1);
	call_free(c);

	/* Promoted and healthy is done, as the wave report counts it. */
	sqlite3 *db = db_open();
	db_exec(db, sqlite3_mprintf("UPDATE hosts SET promoted_at = 1 WHERE host_id = 'EXCH02'"));
	c = get(&w, "victor", "/api/v1/waves?limit=1");
	j = ok_json(c, 200);
	assert_int_equal(num(json_array_get(json_object_get(j, "items"), 0), "done"), 1);
	call_free(c);
	db_exec(db, sqlite3_mprintf("UPDATE hosts SET promoted_at = NULL WHERE host_id = 'EXCH02'"));
	sqlite3_close(db);

	c = get(&w, "victor", "/api/v1/waves?limit=1&offset=1");
	j = ok_json(c, 200);
	assert_int_equal(num(j, "total"), 3);
	assert_int_equal(num(j, "next"), 2);
	assert_string_equal(str(json_array_get(json_object_get(j, "items"), 0), "wave"), "2");
	call_free(c);
	expect_error(get(&w, "victor", "/api/v1/waves?wave=1"), 400, "unknown_parameter", "wave");
	world_stop(&w);
}

static void test_commands(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	struct call *c = get(&w, "victor", "/api/v1/commands");
	json_t *j = ok_json(c, 200);
	assert_int_equal(num(j, "total"), 2);
	json_t *newest = json_array_get(json_object_get(j, "items"), 0);
	assert_string_equal(str(newest, "command_id"), "c0ffee02");
	assert_string_equal(str(newest, "state"), "queued");
	assert_true(json_is_null(json_object_get(newest, "result")));
	call_free(c);

	c = get(&w, "victor", "/api/v1/commands?host=EXCH01");
	assert_int_equal(num(ok_json(c, 200), "total"), 1);
	call_free(c);
	c = get(&w, "victor", "/api/v1/commands?state=queued");
	j = ok_json(c, 200);
	assert_int_equal(num(j, "total"), 1);
	assert_string_equal(str(json_array_get(json_object_get(j, "items"), 0), "host_id"),
			    "EXCH02");
	call_free(c);

	c = get(&w, "victor", "/api/v1/commands/c0ffee01");
	j = ok_json(c, 200);
	assert_string_equal(str(j, "action"), "RESTART_SERVICES");
	assert_string_equal(str(j, "issuer"), "alice");
	json_t *result = json_object_get(j, "result");
	assert_string_equal(str(result, "status"), "COMMAND_SUCCEEDED");
	json_t *steps = json_object_get(result, "steps");
	assert_int_equal(json_array_size(steps), 2);
	assert_string_equal(str(json_array_get(steps, 1), "target"), "MSExchangeIS");
	assert_true(json_is_true(json_object_get(json_array_get(steps, 0), "ok")));
	call_free(c);

	expect_error(get(&w, "victor", "/api/v1/commands/ffff"), 404, "not_found", "ffff");
	expect_error(get(&w, "victor", "/api/v1/commands/not-hex"), 404, "not_found", NULL);
	expect_error(get(&w, "victor", "/api/v1/commands?state=lost"), 400, "invalid_parameter",
		     "state");
	world_stop(&w);
}

static void test_submit_command(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	memset(&submitted, 0, sizeof(submitted));
	char *body = submission("EXCH02", envelope("00ff00ff", "EXCH02", util_now_ms() + 600000,
						   WITH_ACTION));
	struct call *c = post(&w, "alice", "/api/v1/commands", body);
	json_t *j = ok_json(c, 201);
	assert_string_equal(str(j, "command_id"), "00ff00ff");
	assert_string_equal(str(j, "state"), "queued");
	char location[128];
	assert_non_null(header(c, "location", location, sizeof(location)));
	assert_string_equal(location, "/api/v1/commands/00ff00ff");
	call_free(c);
	free(body);
	assert_int_equal(submitted.calls, 1);
	assert_string_equal(submitted.host_id, "EXCH02");
	assert_string_equal(submitted.command_id, "00ff00ff");
	assert_string_equal(submitted.action, "RESCAN");
	assert_string_equal(submitted.by, "alice");
	assert_true(submitted.len > 0);

	/* A planned host that never connected may be sent a command too. */
	body = submission("EXCH09", envelope("0a0a", "EXCH09", util_now_ms() + 600000,
					     WITH_ACTION));
	c = post(&w, "alice", "/api/v1/commands", body);
	ok_json(c, 201);
	call_free(c);
	free(body);

	/* An id the store holds, or the collector reports as used: 409. */
	body = submission("EXCH01", envelope("c0ffee01", "EXCH01", util_now_ms() + 600000,
					     WITH_ACTION));
	expect_error(post(&w, "alice", "/api/v1/commands", body), 409, "command_exists",
		     "c0ffee01");
	free(body);
	body = submission("EXCH01", envelope("dddd", "EXCH01", util_now_ms() + 600000,
					     WITH_ACTION));
	expect_error(post(&w, "alice", "/api/v1/commands", body), 409, "command_exists", "dddd");
	free(body);
	assert_int_equal(submitted.calls, 3);
	world_stop(&w);
	memset(&submitted, 0, sizeof(submitted));
}

static void test_bad_submissions_change_nothing(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	memset(&submitted, 0, sizeof(submitted));
	long long commands = db_count("commands");
	int64_t later = util_now_ms() + 600000;
	char *good = envelope("beef", "EXCH01", later, WITH_ACTION);
	uint8_t junk[] = {0xff, 0xff, 0xff};
	Exfleet__Command junk_body = EXFLEET__COMMAND__INIT;
	junk_body.body.data = junk;
	junk_body.body.len = sizeof(junk);
	uint8_t packed[64];
	size_t packed_len = exfleet__command__pack(&junk_body, packed);
	char bodies[16][1024];
	const struct {
		char *body;
		int status;
		const char *code, *needle;
	} cases[] = {
		{"{", 400, "malformed_json", "body"},
		{"{\"host_id\": \"EXCH01\", \"host_id\": \"EXCH02\"}", 400, "malformed_json",
		 "body"},
		{"[]", 400, "invalid_field", "body"},
		{"\"EXCH01\"", 400, "invalid_field", "body"},
		{"{\"host_id\": \"EXCH01\"}", 400, "missing_field", "envelope"},
		{"{\"envelope\": \"AAAA\"}", 400, "missing_field", "host_id"},
		{"{\"host_id\": 7, \"envelope\": \"AAAA\"}", 400, "invalid_field", "host_id"},
		{"{\"host_id\": \"EXCH01\", \"envelope\": []}", 400, "invalid_field", "envelope"},
		{"{\"host_id\": \"EXCH 01\", \"envelope\": \"AAAA\"}", 400, "invalid_field",
		 "host_id"},
		{"{\"host_id\": \"EXCH01\", \"envelope\": \"!!!!\"}", 400, "invalid_envelope",
		 "envelope"},
		{"{\"host_id\": \"EXCH01\", \"envelope\": \"AAA\"}", 400, "invalid_envelope",
		 "envelope"},
		{bodies[0], 400, "unknown_field", "priority"},
		{bodies[1], 400, "invalid_envelope", "Command"},
		{bodies[2], 400, "invalid_envelope", "CommandBody"},
		{bodies[3], 400, "invalid_field", "host_id"},
		{bodies[4], 400, "invalid_envelope", "command id"},
		{bodies[5], 400, "invalid_envelope", "expired"},
		{bodies[6], 400, "invalid_envelope", "no action"},
		{bodies[7], 404, "not_found", "EXCH77"},
	};
	char *b;
	snprintf(bodies[0], sizeof(bodies[0]),
		 "{\"host_id\": \"EXCH01\", \"envelope\": \"%s\", \"priority\": 1}", good);
	b = submission("EXCH01", base64_of(junk, sizeof(junk)));
	snprintf(bodies[1], sizeof(bodies[1]), "%s", b);
	free(b);
	b = submission("EXCH01", base64_of(packed, packed_len));
	snprintf(bodies[2], sizeof(bodies[2]), "%s", b);
	free(b);
	b = submission("EXCH02", envelope("beef", "EXCH01", later, WITH_ACTION));
	snprintf(bodies[3], sizeof(bodies[3]), "%s", b);
	free(b);
	b = submission("EXCH01", envelope("not-hex", "EXCH01", later, WITH_ACTION));
	snprintf(bodies[4], sizeof(bodies[4]), "%s", b);
	free(b);
	b = submission("EXCH01", envelope("beef", "EXCH01", util_now_ms() - 1000, WITH_ACTION));
	snprintf(bodies[5], sizeof(bodies[5]), "%s", b);
	free(b);
	b = submission("EXCH01", envelope("beef", "EXCH01", later, NO_ACTION));
	snprintf(bodies[6], sizeof(bodies[6]), "%s", b);
	free(b);
	b = submission("EXCH77", envelope("beef", "EXCH77", later, WITH_ACTION));
	snprintf(bodies[7], sizeof(bodies[7]), "%s", b);
	free(b);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_error(post(&w, "alice", "/api/v1/commands", cases[i].body), cases[i].status,
			     cases[i].code, cases[i].needle);

	/* Not JSON, a query, an empty body, one too large, the wrong method. */
	char *valid = submission("EXCH01", good);
	struct call *c = request(&w, "alice", "POST", "/api/v1/commands", valid);
	c->content_type = "text/plain";
	expect_error(run(&w, c), 415, "unsupported_media_type", "Content-Type");
	expect_error(post(&w, "alice", "/api/v1/commands?dry_run=1", valid), 400,
		     "unknown_parameter", "dry_run");
	expect_error(post(&w, "alice", "/api/v1/commands", NULL), 400, "invalid_field", "body");
	c = request(&w, "alice", "POST", "/api/v1/commands", NULL);
	c->content_type = "application/json";
	c->content_length = 2 << 20;
	expect_error(run(&w, c), 413, "body_too_large", "body");
	c = run(&w, request(&w, "alice", "PUT", "/api/v1/commands", valid));
	char allow[64];
	assert_non_null(header(c, "allow", allow, sizeof(allow)));
	assert_string_equal(allow, "GET, HEAD, POST");
	expect_error(c, 405, "method_not_allowed", "PUT");
	expect_error(run(&w, request(&w, "alice", "DELETE", "/api/v1/hosts/EXCH01", NULL)), 405,
		     "method_not_allowed", "DELETE");
	expect_error(post(&w, "alice", "/api/v1/hosts", valid), 405, "method_not_allowed", NULL);
	free(valid);

	assert_int_equal(submitted.calls, 0);
	assert_int_equal(db_count("commands"), commands);
	world_stop(&w);
}

static void test_paging(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	static const struct {
		const char *query;
		int count;
		int total;
		int next; /* -1: null */
	} pages[] = {
		{"limit=500", 4, 4, -1},         {"limit=2", 2, 4, 2},
		{"limit=2&offset=2", 2, 4, -1},  {"limit=3&offset=1", 3, 4, -1},
		{"offset=3", 1, 4, -1},          {"offset=100", 0, 4, -1},
		{"limit=1&offset=0", 1, 4, 1},
	};
	for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
		char path[128];
		snprintf(path, sizeof(path), "/api/v1/hosts?%s", pages[i].query);
		struct call *c = get(&w, "victor", path);
		json_t *j = ok_json(c, 200);
		assert_int_equal(json_array_size(json_object_get(j, "items")), pages[i].count);
		assert_int_equal(num(j, "total"), pages[i].total);
		if (pages[i].next < 0)
			assert_true(json_is_null(json_object_get(j, "next")));
		else
			assert_int_equal(num(j, "next"), pages[i].next);
		call_free(c);
	}
	static const struct {
		const char *query;
		const char *field;
	} bad[] = {
		{"limit=0", "limit"},         {"limit=501", "limit"},      {"limit=-1", "limit"},
		{"limit=ten", "limit"},       {"limit=", "limit"},         {"limit=1.5", "limit"},
		{"offset=-1", "offset"},      {"offset=x", "offset"},      {"offset=+1", "offset"},
		{"limit=1&limit=2", "limit"}, {"page=2", "page"},
		{"offset=99999999999999999999", "offset"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char path[128];
		snprintf(path, sizeof(path), "/api/v1/events?%s", bad[i].query);
		struct call *c = get(&w, "victor", path);
		if (c->status != 400)
			fail_msg("%s: %d", path, c->status);
		expect_error(c, 400, strstr(bad[i].query, "page") ? "unknown_parameter"
								   : "invalid_parameter",
			     bad[i].field);
	}
	world_stop(&w);

	/* page_max bounds limit and the default. */
	world_start(&w, 3, 0);
	expect_error(get(&w, "victor", "/api/v1/hosts?limit=4"), 400, "invalid_parameter",
		     "1 to 3");
	struct call *c = get(&w, "victor", "/api/v1/hosts");
	json_t *j = ok_json(c, 200);
	assert_int_equal(json_array_size(json_object_get(j, "items")), 3);
	assert_int_equal(num(j, "limit"), 3);
	assert_int_equal(num(j, "next"), 3);
	call_free(c);
	world_stop(&w);
}

static void test_audit(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	struct call *c = get(&w, "victor", "/api/v1/audit");
	json_t *j = ok_json(c, 200);
	assert_int_equal(num(j, "total"), 0);
	assert_int_equal(json_array_size(json_object_get(j, "items")), 0);
	call_free(c);

	sqlite3 *db = db_open();
	db_exec(db, sqlite3_mprintf("INSERT INTO audit (at, actor, action, detail, prev_hash, hash)"
				    " VALUES (%lld, 'alice', 'submit', 'c0ffee01', '00', 'ab')",
				    (long long)now_ms));
	c = get(&w, "victor", "/api/v1/audit?limit=10");
	j = ok_json(c, 200);
	assert_int_equal(num(j, "total"), 1);
	assert_string_equal(str(json_array_get(json_object_get(j, "items"), 0), "actor"), "alice");
	call_free(c);
	db_exec(db, sqlite3_mprintf("DELETE FROM audit"));
	sqlite3_close(db);
	world_stop(&w);
}

/* A line of the exposition: a comment, or name{label="value"} integer. */
static int sample_line(const char *line)
{
	size_t n = strspn(line, "abcdefghijklmnopqrstuvwxyz_");
	if (n == 0)
		return 0;
	const char *p = line + n;
	if (*p == '{') {
		p++;
		p += strspn(p, "abcdefghijklmnopqrstuvwxyz_");
		if (strncmp(p, "=\"", 2) != 0)
			return 0;
		p = strchr(p + 2, '"');
		if (!p || strncmp(p, "\"} ", 3) != 0)
			return 0;
		p += 2;
	}
	if (*p != ' ')
		return 0;
	p++;
	/* An integer, or a decimal fraction (CPU seconds). */
	size_t whole = strspn(p, "0123456789");
	if (whole == 0)
		return 0;
	p += whole;
	if (*p == '.')
		p += 1 + strspn(p + 1, "0123456789");
	return *p == '\0';
}

/* The value of the sample named name in a /metrics text, or -1. */
static double sample_value(const char *text, const char *name)
{
	char key[128];
	snprintf(key, sizeof(key), "\n%s ", name);
	const char *p = strstr(text, key);
	return p ? strtod(p + strlen(key), NULL) : -1;
}

static void test_metrics(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	struct call *c = get(&w, "victor", "/metrics");
	assert_int_equal(c->status, 200);
	char type[128];
	assert_non_null(header(c, "content-type", type, sizeof(type)));
	assert_string_equal(type, "text/plain; version=0.0.4; charset=utf-8");
	static const char *const expected[] = {
		"# TYPE exfleet_agent_sessions gauge",
		"exfleet_agent_sessions{state=\"waiting\"} 1",
		"exfleet_agent_sessions{state=\"handshake\"} 2",
		"exfleet_agent_sessions{state=\"hello\"} 3",
		"exfleet_agent_sessions{state=\"ready\"} 4",
		"exfleet_agent_handshakes_in_progress 2",
		"# TYPE exfleet_agent_handshakes_completed_total counter",
		"exfleet_agent_handshakes_completed_total 77",
		"# TYPE exfleet_records_stored_total counter",
		"exfleet_records_stored_total 1234",
		"exfleet_acks_sent_total 1200",
		"exfleet_store_queue_depth 9",
		"exfleet_backpressure_pauses_total 5",
		"exfleet_connections_shed_total 6",
		"exfleet_accept_emfile_total 7",
		"exfleet_store_up 1",
		"exfleet_agent_spool_dropped_records 5",
		"exfleet_hosts{status=\"AFFECTED\"} 1",
		"exfleet_hosts{status=\"HEALTHY\"} 1",
		"exfleet_hosts{status=\"AT_RISK\"} 1",
		"exfleet_hosts{status=\"REPAIRED\"} 0",
		"exfleet_hosts_by_connectivity{connectivity=\"ONLINE\"} 2",
		"exfleet_hosts_by_connectivity{connectivity=\"OFFLINE\"} 1",
		"exfleet_hosts_by_connectivity{connectivity=\"NEVER_SEEN\"} 1",
		"exfleet_commands{state=\"queued\"} 1",
		"exfleet_commands{state=\"succeeded\"} 1",
		"exfleet_commands{state=\"expired\"} 0",
	};
	size_t body_len = strlen(c->body_text);
	char *lines_nl = malloc(body_len + 2);
	lines_nl[0] = '\n';
	memcpy(lines_nl + 1, c->body_text, body_len + 1);
	for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
		char line[256];
		snprintf(line, sizeof(line), "\n%s\n", expected[i]);
		if (!strstr(lines_nl, line))
			fail_msg("not in /metrics: %s", expected[i]);
	}
	/* The process itself: memory, CPU, and how near the open-file limit. */
	assert_true(sample_value(lines_nl, "process_resident_memory_bytes") > 1e6);
	assert_true(sample_value(lines_nl, "process_cpu_seconds_total") > 0);
	double fds = sample_value(lines_nl, "process_open_fds");
	assert_true(fds >= 3);
	assert_true(sample_value(lines_nl, "process_max_fds") >= fds);
	free(lines_nl);
	/* Every sample follows its family's HELP and TYPE. */
	char *text = strdup(c->body_text), *save = NULL, family[128] = "";
	int lines = 0;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		lines++;
		if (strncmp(line, "# HELP ", 7) == 0) {
			int len = (int)strcspn(line + 7, " ");
			snprintf(family, sizeof(family), "%.*s", len, line + 7);
			continue;
		}
		if (strncmp(line, "# TYPE ", 7) == 0) {
			assert_int_equal(strncmp(line + 7, family, strlen(family)), 0);
			const char *kind = line + 7 + strlen(family) + 1;
			assert_true(strcmp(kind, "gauge") == 0 || strcmp(kind, "counter") == 0);
			if (strcmp(kind, "counter") == 0)
				assert_non_null(strstr(family, "_total"));
			continue;
		}
		if (!sample_line(line))
			fail_msg("not a sample: %s", line);
		assert_int_equal(strncmp(line, family, strlen(family)), 0);
		assert_true(line[strlen(family)] == ' ' || line[strlen(family)] == '{');
	}
	assert_true(lines > 40);
	free(text);
	call_free(c);
	expect_error(get(&w, "victor", "/metrics?format=json"), 400, "unknown_parameter", "format");
	world_stop(&w);
}

/* A query that would hold the loop too long is cut short: 503, and the
 * API goes on serving. */
static void test_slow_query_is_cut_short(void **state)
{
	sqlite3 *db = db_open();
	db_exec(db, sqlite3_mprintf(
		"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)"
		" INSERT INTO events (host_id, seq, source, event_id, time_generated, received_at)"
		" SELECT 'BULK', i, 'Bulk', i %% 1000, i, i FROM n"));
	struct world w;
	world_start(&w, 0, 1);
	expect_error(get(&w, "victor", "/api/v1/events?source=Bulk&id=7"), 503, "query_too_slow",
		     "1 ms");
	struct call *c = get(&w, "victor", "/api/v1/hosts?limit=1");
	ok_json(c, 200);
	call_free(c);
	world_stop(&w);
	db_exec(db, sqlite3_mprintf("DELETE FROM events WHERE host_id = 'BULK'"));
	sqlite3_close(db);
}

static int logged(const char *needle)
{
	fflush(log_file);
	rewind(log_file);
	char line[1024];
	int found = 0;
	while (!found && fgets(line, sizeof(line), log_file))
		found = strstr(line, needle) != NULL;
	fseek(log_file, 0, SEEK_END);
	return found;
}

static void test_request_log(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	call_free(get(&w, "victor", "/api/v1/hosts?status=AFFECTED"));
	call_free(get(&w, NULL, "/api/v1/events"));
	call_free(get(&w, "EXCH01", "/api/v1/waves"));
	char *env = envelope("feed", "EXCH03", util_now_ms() + 600000, WITH_ACTION);
	char needle[64];
	snprintf(needle, sizeof(needle), "%.40s", env);
	char *body = submission("EXCH03", env);
	call_free(post(&w, "alice", "/api/v1/commands", body));
	free(body);
	world_stop(&w);
	/* Who, with which role, what, the status and the time it took. */
	assert_true(logged("[127.0.0.1] api: victor (viewer) GET /api/v1/hosts 200 "));
	assert_true(logged("api: - (no certificate) GET /api/v1/events 401 "));
	assert_true(logged("api: EXCH01 (agent) GET /api/v1/waves 403 "));
	assert_true(logged("api: alice (operator) POST /api/v1/commands 201 "));
	assert_true(logged("api: alice submitted command feed (RESCAN) for EXCH03"));
	/* Neither queries nor envelopes are written down. */
	assert_false(logged("status=AFFECTED"));
	assert_false(logged(needle));
	memset(&submitted, 0, sizeof(submitted));
}

/* An idle keep-alive connection does not hold the stop up. */
static void test_stop_with_open_connection(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	struct call *c = request(&w, "victor", "GET", "/", NULL);
	c->hold = 1;
	assert_int_equal(uv_sem_init(&c->connected, 0), 0);
	uv_thread_t thread;
	assert_int_equal(uv_async_init(&w.loop, &c->done, call_done_cb), 0);
	c->done.data = c;
	assert_int_equal(uv_thread_create(&thread, client_main, c), 0);
	/* Serve the handshake until the client says it is through. */
	while (uv_sem_trywait(&c->connected) != 0)
		uv_run(&w.loop, UV_RUN_NOWAIT);
	api_stop(w.api, stopped_cb, &w);
	uv_run(&w.loop, UV_RUN_DEFAULT);
	uv_thread_join(&thread);
	assert_true(w.stopped);
	assert_true(c->finished);
	assert_int_equal(uv_loop_close(&w.loop), 0);
	uv_sem_destroy(&c->connected);
	call_free(c);
}

static void test_parse_time(void **state)
{
	/* Exercised through the API above; the edges here. */
	struct world w;
	world_start(&w, 0, 0);
	static const char *const good[] = {"0", "1764410531000", "2026-11-29",
					   "2026-11-29T10:02:11Z", "2026-11-29T10:02:11.123Z",
					   "2024-02-29T00:00:00Z"};
	/* As they travel in a query: '+' escaped, a space as '+'. */
	static const char *const bad[] = {
		"", "-5", "2026-11-29T10:02:11", "2026-11-29T10:02:11%2B01:00", "2026-13-01",
		"2025-02-29", "2026-11-29T24:00:00Z", "2026-11-29+10:02:11Z",
		"2026-11-29T10:02:11.12Z", "now"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char path[128];
		snprintf(path, sizeof(path), "/api/v1/events?since=%s", good[i]);
		struct call *c = get(&w, "victor", path);
		if (c->status != 200)
			fail_msg("%s: %d %s", good[i], c->status, c->body_text);
		call_free(c);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char path[128];
		snprintf(path, sizeof(path), "/api/v1/events?since=%s", bad[i]);
		expect_error(get(&w, "victor", path), 400, "invalid_parameter", "since");
	}
	world_stop(&w);
}

/* ---- the dashboard ---- */

static struct call *with_cookie(struct world *w, const char *method, const char *path,
				const char *cookie)
{
	struct call *c = request(w, NULL, method, path, NULL);
	c->cookie = cookie;
	return run(w, c);
}

/* Its files are served to anyone, with headers that keep the page to
 * itself; they hold no data. */
static void test_dashboard_files(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	struct call *c = get(&w, NULL, "/");
	char value[256];
	assert_int_equal(c->status, 200);
	assert_non_null(header(c, "content-type", value, sizeof(value)));
	assert_string_equal(value, "text/html; charset=utf-8");
	assert_non_null(header(c, "content-security-policy", value, sizeof(value)));
	assert_non_null(strstr(value, "default-src 'self'"));
	assert_non_null(header(c, "x-frame-options", value, sizeof(value)));
	assert_non_null(strstr(c->body_text, "<html"));
	call_free(c);
	c = get(&w, NULL, "/dashboard/app.js");
	assert_int_equal(c->status, 200);
	assert_non_null(header(c, "content-type", value, sizeof(value)));
	assert_string_equal(value, "text/javascript; charset=utf-8");
	assert_true(strlen(c->body_text) > 100);
	call_free(c);
	expect_error(get(&w, NULL, "/dashboard/nothing.js"), 404, "not_found", "nothing.js");
	expect_error(get(&w, NULL, "/dashboard/../api/v1/hosts"), 401, "unauthenticated", NULL);
	expect_error(get(&w, NULL, "/?x=1"), 400, "unknown_parameter", "x");
	world_stop(&w);
}

/* The session cookie from a sign-in page's Set-Cookie, as "name=value". */
static void session_cookie(const struct call *c, char *cookie, size_t len)
{
	char value[256];
	assert_non_null(header(c, "set-cookie", value, sizeof(value)));
	snprintf(cookie, len, "%.*s", (int)strcspn(value, ";"), value);
}

/* A link minted with a certificate signs a browser in once; the session
 * reads with its minter's role and never writes. */
static void test_signin(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	expect_error(post(&w, NULL, "/api/v1/signin-links", NULL), 401, "unauthenticated", NULL);
	expect_error(post(&w, "EXCH01", "/api/v1/signin-links", NULL), 403, "forbidden", "agent");
	expect_error(post(&w, "victor", "/api/v1/signin-links", "{}"), 400, "invalid_body",
		     "body");
	struct call *link = post(&w, "alice", "/api/v1/signin-links", NULL);
	json_t *j = ok_json(link, 201);
	assert_string_equal(str(j, "name"), "alice");
	assert_string_equal(str(j, "role"), "operator");
	assert_int_equal(num(j, "expires_in"), 300);
	const char *path = str(j, "path");
	assert_int_equal(strncmp(path, "/signin?token=", 14), 0);
	assert_int_equal(strlen(path), 14 + 43);

	/* Before: nothing to read without a certificate. */
	expect_error(get(&w, NULL, "/api/v1/hosts"), 401, "unauthenticated", "exfleetctl dashboard");
	struct call *page = get(&w, NULL, path);
	assert_int_equal(page->status, 200);
	char value[256], cookie[128];
	assert_non_null(header(page, "set-cookie", value, sizeof(value)));
	assert_non_null(strstr(value, "; Path=/; Max-Age=28800; HttpOnly; Secure; SameSite=Strict"));
	assert_non_null(header(page, "referrer-policy", value, sizeof(value)));
	assert_string_equal(value, "no-referrer");
	assert_non_null(strstr(page->body_text, "Signed in as alice (operator)"));
	assert_non_null(strstr(page->body_text, "url=/"));
	session_cookie(page, cookie, sizeof(cookie));
	assert_int_equal(strncmp(cookie, "exfleet_session=", 16), 0);
	assert_int_equal(strlen(cookie), 16 + 43);
	call_free(page);

	/* The link works once. */
	page = get(&w, NULL, path);
	assert_int_equal(page->status, 410);
	assert_non_null(strstr(page->body_text, "already been used"));
	assert_null(header(page, "set-cookie", value, sizeof(value)));
	call_free(page);
	page = get(&w, NULL, "/signin?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
	assert_int_equal(page->status, 410);
	assert_non_null(strstr(page->body_text, "unknown here"));
	call_free(page);
	page = get(&w, NULL, "/signin");
	assert_int_equal(page->status, 400);
	assert_non_null(strstr(page->body_text, "exfleetctl dashboard"));
	call_free(page);

	/* The session reads, among other cookies. */
	char cookies[256];
	snprintf(cookies, sizeof(cookies), "theme=dark; %s; lang=en", cookie);
	struct call *c = with_cookie(&w, "GET", "/api/v1/hosts", cookies);
	assert_int_equal(num(ok_json(c, 200), "total"), 4);
	call_free(c);
	c = with_cookie(&w, "GET", "/api/v1/summary", cookie);
	ok_json(c, 200);
	call_free(c);
	/* It writes nothing, even as an operator's, and mints no links. */
	expect_error(with_cookie(&w, "POST", "/api/v1/commands", cookie), 403, "forbidden",
		     "only reads");
	expect_error(with_cookie(&w, "POST", "/api/v1/waves", cookie), 403, "forbidden",
		     "only reads");
	expect_error(with_cookie(&w, "POST", "/api/v1/signin-links", cookie), 403, "forbidden",
		     "certificate");
	assert_int_equal(submitted.calls, 0);
	assert_int_equal(imported.calls, 0);
	/* What does not exist is a 404 for a session too. */
	expect_error(with_cookie(&w, "GET", "/favicon.ico", cookie), 404, "not_found",
		     "favicon.ico");
	expect_error(with_cookie(&w, "POST", "/nothing", cookie), 404, "not_found", NULL);
	/* A cookie that is not a session is nobody's. */
	expect_error(with_cookie(&w, "GET", "/api/v1/hosts",
				 "exfleet_session=BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"),
		     401, "unauthenticated", NULL);
	/* Signing out ends it. */
	c = with_cookie(&w, "POST", "/signout", cookie);
	ok_json(c, 200);
	assert_non_null(header(c, "set-cookie", value, sizeof(value)));
	assert_non_null(strstr(value, "Max-Age=0"));
	call_free(c);
	expect_error(with_cookie(&w, "GET", "/api/v1/hosts", cookie), 401, "unauthenticated", NULL);
	world_stop(&w);

	/* The log tells who signed in, never the token or the session key. */
	assert_true(logged("api: alice minted a dashboard sign-in link"));
	assert_true(logged("api: alice (operator) signed in to the dashboard"));
	assert_true(logged("api: alice (operator, dashboard) GET /api/v1/hosts 200"));
	assert_true(logged("api: - (no certificate) GET /signin 410"));
	assert_false(logged(path + 14));
	assert_false(logged(cookie + 16));
	call_free(link);
}

/* Links and sessions expire. */
static void test_signin_expiry(void **state)
{
	struct world w;
	next_signin_ttl_ms = 50;
	next_session_ttl_ms = 300;
	world_start(&w, 0, 0);
	struct call *early = post(&w, "victor", "/api/v1/signin-links", NULL);
	struct call *late = post(&w, "victor", "/api/v1/signin-links", NULL);
	const char *early_path = str(ok_json(early, 201), "path");
	const char *late_path = str(ok_json(late, 201), "path");
	struct call *page = get(&w, NULL, early_path);
	assert_int_equal(page->status, 200);
	char cookie[128];
	session_cookie(page, cookie, sizeof(cookie));
	call_free(page);
	struct call *c = with_cookie(&w, "GET", "/api/v1/waves", cookie);
	ok_json(c, 200);
	call_free(c);
	usleep(100 * 1000);
	page = get(&w, NULL, late_path);
	assert_int_equal(page->status, 410);
	assert_non_null(strstr(page->body_text, "expired"));
	call_free(page);
	usleep(300 * 1000);
	expect_error(with_cookie(&w, "GET", "/api/v1/waves", cookie), 401, "unauthenticated",
		     NULL);
	call_free(early);
	call_free(late);
	world_stop(&w);
}

static void test_summary(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	struct call *c = get(&w, "victor", "/api/v1/summary");
	json_t *j = ok_json(c, 200);
	assert_int_equal(num(j, "hosts"), 4);
	json_t *s = json_object_get(j, "by_status");
	assert_int_equal(num(s, "AFFECTED"), 1);
	assert_int_equal(num(s, "HEALTHY"), 1);
	assert_int_equal(num(s, "AT_RISK"), 1);
	assert_int_equal(num(s, "NEVER_SEEN"), 1);
	assert_int_equal(num(s, "REPAIRED"), 0);
	assert_non_null(json_object_get(s, "NEEDS_SP_REINSTALL"));
	json_t *r = json_object_get(j, "by_connectivity");
	assert_int_equal(num(r, "ONLINE"), 2);
	assert_int_equal(num(r, "OFFLINE"), 1);
	assert_int_equal(num(r, "NEVER_SEEN"), 1);
	json_t *k = json_object_get(j, "commands_by_state");
	assert_int_equal(num(k, "queued"), 1);
	assert_int_equal(num(k, "succeeded"), 1);
	assert_int_equal(strlen(str(j, "generated_at")), 20);
	call_free(c);
	expect_error(get(&w, "victor", "/api/v1/summary?limit=1"), 400, "unknown_parameter",
		     "limit");
	world_stop(&w);
}

static struct call *post_csv(struct world *w, const char *who, const char *path,
			     const char *csv)
{
	struct call *c = request(w, who, "POST", path, csv);
	c->content_type = "text/csv";
	return run(w, c);
}

static long long db_int(const char *sql)
{
	sqlite3 *db = db_open();
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	long long n = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return n;
}

/* A plan replaces the old one, all or nothing; every bad line is named. */
static void test_waves_import(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	long long audit_before = db_count("audit");
	static const char bad[] = "host,wave,planned_date\r\n"
				  "EXCH01,1,2026-12-01\r\n"
				  "EXCH 02,1,2026-12-01\r\n"
				  "EXCH03,2,2026-02-30\r\n";
	struct call *c = post_csv(&w, "alice", "/api/v1/waves?name=wave.csv", bad);
	if (c->status != 400)
		fail_msg("expected 400, got %d: %s", c->status, c->body_text);
	json_t *e = json_object_get(c->json, "error");
	assert_string_equal(str(e, "code"), "invalid_plan");
	assert_non_null(strstr(str(e, "message"), "wave.csv: 2 errors"));
	json_t *lines = json_object_get(e, "lines");
	assert_int_equal(json_array_size(lines), 2);
	assert_non_null(strstr(json_string_value(json_array_get(lines, 0)), "wave.csv:3: host"));
	assert_non_null(strstr(json_string_value(json_array_get(lines, 1)),
			       "wave.csv:4: planned_date"));
	call_free(c);
	/* Nothing changed: the fixture's plan is whole. */
	assert_int_equal(imported.calls, 0);
	assert_int_equal(db_count("waves"), 2);
	expect_error(post_csv(&w, "victor", "/api/v1/waves", "host,wave\nEXCH01,1\n"), 403,
		     "forbidden", "viewer");
	expect_error(post(&w, "alice", "/api/v1/waves", "{\"host\": 1}"), 415,
		     "unsupported_media_type", "text/csv");
	expect_error(post_csv(&w, "alice", "/api/v1/waves?file=x", "host,wave\nEXCH01,1\n"), 400,
		     "unknown_parameter", "file");
	expect_error(post_csv(&w, "alice", "/api/v1/waves", ""), 400, "invalid_plan", "plan.csv");
	assert_int_equal(imported.calls, 0);
	assert_int_equal(db_count("audit"), audit_before);

	static const char good[] = "\xEF\xBB\xBFHost,Wave,Planned_Date\r\n"
				   "EXCH01,1,2026-12-01\r\n"
				   "\"EXCH03\",\"2\",\r\n"
				   "EXCH09,2,2026-12-02\r\n";
	c = post_csv(&w, "alice", "/api/v1/waves?name=wave.csv", good);
	json_t *j = ok_json(c, 200);
	assert_int_equal(num(j, "imported"), 3);
	assert_int_equal(num(j, "waves"), 2);
	call_free(c);
	assert_int_equal(imported.calls, 1);
	assert_string_equal(imported.by, "alice");
	assert_int_equal(db_count("waves"), 3);
	assert_int_equal(db_int("SELECT COUNT(*) FROM waves WHERE host_id = 'EXCH03' AND wave = '2'"
				" AND planned_date IS NULL"),
			 1);
	assert_int_equal(db_int("SELECT COUNT(*) FROM audit WHERE actor = 'alice'"
				" AND action = 'waves.imported' AND detail = '{\"hosts\":3}'"),
			 1);
	/* The plan shows at once: EXCH03 is in wave 2 now. */
	c = get(&w, "victor", "/api/v1/hosts?wave=2");
	assert_int_equal(num(ok_json(c, 200), "total"), 2);
	call_free(c);
	world_stop(&w);

	/* Back to the fixture's plan. */
	sqlite3 *db = db_open();
	db_exec(db, sqlite3_mprintf("DELETE FROM waves"));
	db_exec(db, sqlite3_mprintf("INSERT INTO waves VALUES ('EXCH03', '3', '2026-12-01'),"
				    " ('EXCH09', '2', '2026-11-30')"));
	db_exec(db, sqlite3_mprintf("DELETE FROM audit"));
	sqlite3_close(db);
	memset(&imported, 0, sizeof(imported));
}

/* The wave report from the fixture, in each format. */
static void test_report(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	struct call *c = get(&w, "victor", "/api/v1/waves/report");
	json_t *j = ok_json(c, 200);
	json_t *waves = json_object_get(j, "waves");
	assert_true(json_is_array(waves));
	json_t *w1 = NULL;
	size_t i;
	json_t *item;
	json_array_foreach(waves, i, item) if (strcmp(str(item, "wave"), "1") == 0) w1 = item;
	if (!w1)
		fail_msg("no wave 1 in %s", c->body_text);
	assert_int_equal(num(w1, "hosts"), 2);
	assert_int_equal(num(w1, "promoted"), 1);
	/* EXCH01: promoted at base, AFFECTED 50 s later. */
	json_t *detect = json_object_get(w1, "promotion_to_detection");
	assert_int_equal(num(detect, "hosts"), 1);
	assert_int_equal(num(detect, "median_s"), 50);
	assert_int_equal(num(json_object_get(w1, "status"), "AFFECTED"), 1);
	call_free(c);

	char value[128];
	c = get(&w, "victor", "/api/v1/waves/report?format=csv&wave=1");
	assert_int_equal(c->status, 200);
	assert_non_null(header(c, "content-type", value, sizeof(value)));
	assert_string_equal(value, "text/csv; charset=utf-8");
	assert_non_null(strstr(c->body_text, "\n1,"));
	assert_null(strstr(c->body_text, "\n3,"));
	call_free(c);
	c = get(&w, "victor", "/api/v1/waves/report?format=html");
	assert_int_equal(c->status, 200);
	assert_non_null(header(c, "content-security-policy", value, sizeof(value)));
	assert_non_null(strstr(c->body_text, "<svg"));
	call_free(c);
	c = get(&w, "victor", "/api/v1/waves/report?format=table");
	assert_int_equal(c->status, 200);
	assert_non_null(strstr(c->body_text, "EXCH01"));
	call_free(c);
	expect_error(get(&w, "victor", "/api/v1/waves/report?format=xml"), 400,
		     "invalid_parameter", "format");
	expect_error(get(&w, "victor", "/api/v1/waves/report?wave=99"), 404, "not_found",
		     "wave '99'");
	expect_error(get(&w, NULL, "/api/v1/waves/report"), 401, "unauthenticated", NULL);
	world_stop(&w);
}

static void test_audit_verify(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	struct call *c = get(&w, "victor", "/api/v1/audit/verify");
	json_t *j = ok_json(c, 200);
	assert_int_equal(num(j, "entries"), 0);
	assert_true(json_is_true(json_object_get(j, "intact")));
	assert_true(json_is_null(json_object_get(j, "first_bad")));
	call_free(c);
	/* Two entries chained as the store chains them, then one edited. */
	char h1[65], h2[65];
	store_audit_hash(STORE_AUDIT_GENESIS, 1000, "alice", "command.submitted", "{}", h1);
	store_audit_hash(h1, 2000, "EXCH01", "command.result", "{\"ok\":1}", h2);
	sqlite3 *db = db_open();
	db_exec(db, sqlite3_mprintf(
		"INSERT INTO audit (id, at, actor, action, detail, prev_hash, hash) VALUES"
		" (1, 1000, 'alice', 'command.submitted', '{}', '%s', '%s'),"
		" (2, 2000, 'EXCH01', 'command.result', '{\"ok\":1}', '%s', '%s')",
		STORE_AUDIT_GENESIS, h1, h1, h2));
	c = get(&w, "victor", "/api/v1/audit/verify");
	j = ok_json(c, 200);
	assert_int_equal(num(j, "entries"), 2);
	assert_true(json_is_true(json_object_get(j, "intact")));
	call_free(c);
	db_exec(db, sqlite3_mprintf("UPDATE audit SET detail = '{\"ok\":0}' WHERE id = 2"));
	c = get(&w, "victor", "/api/v1/audit/verify");
	j = ok_json(c, 200);
	assert_true(json_is_false(json_object_get(j, "intact")));
	assert_int_equal(num(j, "first_bad"), 2);
	call_free(c);
	db_exec(db, sqlite3_mprintf("DELETE FROM audit"));
	sqlite3_close(db);
	world_stop(&w);
}

/* What exfleetctl seals a password with: the agent's key, its signature
 * and the agent's certificate as PEM. */
static void test_sealing(void **state)
{
	struct world w;
	world_start(&w, 0, 0);
	expect_error(get(&w, "victor", "/api/v1/hosts/EXCH01/sealing"), 404, "not_found",
		     "sealing key");
	expect_error(get(&w, "victor", "/api/v1/hosts/NOPE/sealing"), 404, "not_found", NULL);
	char crt[700], key[700];
	pki_cert_path(pki_dir, PKI_ROLE_AGENT, "EXCH01", crt, sizeof(crt), key, sizeof(key));
	X509 *cert = test_read_cert(crt);
	assert_non_null(cert);
	unsigned char *der = NULL;
	int der_len = i2d_X509(cert, &der);
	assert_true(der_len > 0);
	sqlite3 *db = db_open();
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_prepare_v2(db,
					    "UPDATE hosts SET sealing_key = x'0102', "
					    "sealing_key_sig = x'0304', agent_cert = ?1"
					    " WHERE host_id = 'EXCH01'",
					    -1, &s, NULL),
			 SQLITE_OK);
	sqlite3_bind_blob(s, 1, der, der_len, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(s), SQLITE_DONE);
	sqlite3_finalize(s);
	struct call *c = get(&w, "victor", "/api/v1/hosts/EXCH01/sealing");
	json_t *j = ok_json(c, 200);
	assert_string_equal(str(j, "host_id"), "EXCH01");
	assert_string_equal(str(j, "public_key"), "AQI=");
	assert_string_equal(str(j, "signature"), "AwQ=");
	BIO *bio = BIO_new_mem_buf(str(j, "agent_certificate"), -1);
	X509 *back = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	assert_non_null(back);
	assert_int_equal(X509_cmp(cert, back), 0);
	X509_free(back);
	BIO_free(bio);
	call_free(c);
	db_exec(db, sqlite3_mprintf("UPDATE hosts SET sealing_key = NULL, sealing_key_sig = NULL,"
				    " agent_cert = NULL WHERE host_id = 'EXCH01'"));
	sqlite3_close(db);
	OPENSSL_free(der);
	X509_free(cert);
	world_stop(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_start_errors),
		cmocka_unit_test(test_healthz_needs_no_certificate),
		cmocka_unit_test(test_roles),
		cmocka_unit_test(test_hosts),
		cmocka_unit_test(test_host),
		cmocka_unit_test(test_events),
		cmocka_unit_test(test_waves),
		cmocka_unit_test(test_commands),
		cmocka_unit_test(test_submit_command),
		cmocka_unit_test(test_bad_submissions_change_nothing),
		cmocka_unit_test(test_paging),
		cmocka_unit_test(test_audit),
		cmocka_unit_test(test_metrics),
		cmocka_unit_test(test_request_log),
		cmocka_unit_test(test_stop_with_open_connection),
		cmocka_unit_test(test_slow_query_is_cut_short),
		cmocka_unit_test(test_parse_time),
		cmocka_unit_test(test_dashboard_files),
		cmocka_unit_test(test_signin),
		cmocka_unit_test(test_signin_expiry),
		cmocka_unit_test(test_summary),
		cmocka_unit_test(test_waves_import),
		cmocka_unit_test(test_report),
		cmocka_unit_test(test_audit_verify),
		cmocka_unit_test(test_sealing),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
