/* The collector's agent server in-process, with real certificates and a
 * real store: each kind of bad agent (an oversize frame, a Hello that names
 * another host, garbage after the handshake, an agent that does not read,
 * a second session for the same host) costs only its own session, while a
 * well-behaved agent beside them keeps being welcomed and acknowledged; and
 * admission control: connections beyond the handshake slots wait their
 * turn, oldest first, up to max_waiting and wait_timeout; and the relay
 * delivers only what the agent would accept, in order, also once it trusts
 * a signer's certificate without checking it again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <sqlite3.h>

#include "collector.h"
#include "pki.h"
#include "sign.h"
#include "util.h"
#include "wire.h"
#include "testutil.h"

static char dir[512], pki_dir[600], db_path[600];
static FILE *log_file;

static int logged(const char *needle)
{
	fflush(log_file);
	rewind(log_file);
	char line[1024];
	while (fgets(line, sizeof(line), log_file))
		if (strstr(line, needle))
			return 1;
	return 0;
}

/* The collector's log must name what happened, with the peer. */
static void expect_logged(const char *needle)
{
	if (!logged(needle))
		fail_msg("not in the collector's log: %s", needle);
}


/* ---- a scripted agent ---- */

struct client {
	struct tls_conn conn;
	const char *name;
	int ready, closed, welcomed, refused, acks, commands;
	char command_ids[8][65];
	uint64_t acked;
	char reason[200];
	char welcome_error[200];
};

static void client_ready_cb(struct tls_conn *c)
{
	((struct client *)c->data)->ready = 1;
}

static void client_frame_cb(struct tls_conn *c, const uint8_t *p, size_t len)
{
	struct client *cl = c->data;
	char why[128];
	Exfleet__CollectorMessage *m = wire_decode_collector(p, len, why, sizeof(why));
	assert_non_null(m);
	if (m->msg_case == EXFLEET__COLLECTOR_MESSAGE__MSG_WELCOME) {
		if (m->welcome->error[0]) {
			cl->refused = 1;
			snprintf(cl->welcome_error, sizeof(cl->welcome_error), "%s", m->welcome->error);
		} else {
			cl->welcomed = 1;
		}
	} else if (m->msg_case == EXFLEET__COLLECTOR_MESSAGE__MSG_ACK) {
		cl->acks++;
		cl->acked = m->ack->sequence;
	} else if (m->msg_case == EXFLEET__COLLECTOR_MESSAGE__MSG_COMMAND) {
		Exfleet__CommandBody *b = exfleet__command_body__unpack(
			NULL, m->command->body.len, m->command->body.data);
		assert_non_null(b);
		if (cl->commands < 8)
			snprintf(cl->command_ids[cl->commands], 65, "%s", b->id);
		cl->commands++;
		exfleet__command_body__free_unpacked(b, NULL);
	}
	exfleet__collector_message__free_unpacked(m, NULL);
}

static void client_close_cb(struct tls_conn *c)
{
	struct client *cl = c->data;
	cl->closed = 1;
	snprintf(cl->reason, sizeof(cl->reason), "%s", c->close_reason);
}

static const struct tls_conn_ops client_ops = {
	.ready_cb = client_ready_cb, .frame_cb = client_frame_cb, .close_cb = client_close_cb};

static SSL_CTX *agent_ctx(const char *name)
{
	char crt[700], key[700], ca[700], err[512];
	assert_int_equal(pki_cert_path(pki_dir, PKI_ROLE_AGENT, name, crt, sizeof(crt), key,
				       sizeof(key)),
			 0);
	snprintf(ca, sizeof(ca), "%s/ca.crt", pki_dir);
	struct tls_config cfg = {.ca_file = ca, .cert_file = crt, .key_file = key};
	SSL_CTX *ctx;
	if (tls_ctx_new(&ctx, 0, &cfg, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	return ctx;
}

static void hello(struct client *cl, const char *host_id)
{
	Exfleet__Hello h = EXFLEET__HELLO__INIT;
	h.protocol_version = WIRE_PROTOCOL_VERSION;
	h.host_id = (char *)host_id;
	h.agent_version = "test";
	h.platform = "test";
	Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
	m.msg_case = EXFLEET__AGENT_MESSAGE__MSG_HELLO;
	m.hello = &h;
	assert_int_equal(wire_send_agent(&cl->conn, &m), 0);
}

static void events(struct client *cl, uint64_t first, size_t n)
{
	Exfleet__Event *ev[16];
	Exfleet__Event e[16];
	for (size_t i = 0; i < n; i++) {
		exfleet__event__init(&e[i]);
		e[i].sequence = first + i;
		e[i].source = "MSExchangePOP3";
		e[i].event_id = 13003;
		ev[i] = &e[i];
	}
	Exfleet__EventBatch b = EXFLEET__EVENT_BATCH__INIT;
	b.events = ev;
	b.n_events = n;
	Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
	m.msg_case = EXFLEET__AGENT_MESSAGE__MSG_EVENTS;
	m.events = &b;
	assert_int_equal(wire_send_agent(&cl->conn, &m), 0);
}

static void heartbeat(struct client *cl)
{
	Exfleet__Heartbeat hb = EXFLEET__HEARTBEAT__INIT;
	hb.sent_at_ms = util_now_ms();
	Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
	m.msg_case = EXFLEET__AGENT_MESSAGE__MSG_HEARTBEAT;
	m.heartbeat = &hb;
	wire_send_agent(&cl->conn, &m);
}

/* ---- the collector ---- */

struct world {
	uv_loop_t loop;
	struct collector_config cfg;
	SSL_CTX *server_ctx;
	struct store *store;
	struct server srv;
	int port;
	int stopped;
};

static void world_start(struct world *w)
{
	memset(w, 0, sizeof(*w));
	assert_int_equal(uv_loop_init(&w->loop), 0);
	static char listen[] = "127.0.0.1:0", id[] = "localhost";
	w->cfg.id = id;
	w->cfg.listen = listen;
	w->cfg.heartbeat_ms = 1000;
	w->cfg.handshake_timeout_ms = 5000;
	w->cfg.max_handshakes = 64;
	w->cfg.max_waiting = 64;
	w->cfg.wait_timeout_ms = 5000;
	w->cfg.retry_after_ms = 1000;
	w->cfg.max_frame = 4096;
	w->cfg.write_queue_max = 128 * 1024;
	w->cfg.store_queue_high = 4096;
	w->cfg.store_queue_low = 1024;
	char crt[700], key[700], ca[700], crl[700], err[512];
	pki_cert_path(pki_dir, PKI_ROLE_COLLECTOR, "localhost", crt, sizeof(crt), key, sizeof(key));
	snprintf(ca, sizeof(ca), "%s/ca.crt", pki_dir);
	snprintf(crl, sizeof(crl), "%s/crl.pem", pki_dir);
	struct tls_config tc = {ca, crt, key, crl, 0};
	static char ca_copy[700], crl_copy[700];
	snprintf(ca_copy, sizeof(ca_copy), "%s", ca);
	snprintf(crl_copy, sizeof(crl_copy), "%s", crl);
	w->cfg.ca_file = ca_copy;
	w->cfg.crl_file = crl_copy;
	if (tls_ctx_new(&w->server_ctx, 1, &tc, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	struct store_options so;
	store_options_default(&so);
	so.path = db_path;
	assert_int_equal(store_open(&w->store, &w->loop, &so, server_committed, &w->srv, err,
				    sizeof(err)),
			 0);
	if (server_start(&w->srv, &w->loop, &w->cfg, w->server_ctx, w->store, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	w->port = atoi(strrchr(w->srv.bound, ':') + 1);
}

static void stopped_cb(struct server *srv)
{
	struct world *w = (struct world *)((char *)srv - offsetof(struct world, srv));
	store_close(w->store, NULL, NULL);
	w->stopped = 1;
}

static void world_end(struct world *w)
{
	server_stop(&w->srv, stopped_cb);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	assert_true(w->stopped);
	assert_int_equal(uv_loop_close(&w->loop), 0);
	SSL_CTX_free(w->server_ctx);
}

static void connect_client(struct world *w, struct client *cl, SSL_CTX *ctx, const char *name)
{
	memset(cl, 0, sizeof(*cl));
	cl->name = name;
	cl->conn.data = cl;
	struct sockaddr_in addr;
	uv_ip4_addr("127.0.0.1", w->port, &addr);
	assert_int_equal(tls_conn_connect(&cl->conn, &w->loop, (struct sockaddr *)&addr, ctx,
					  "localhost", NULL, &client_ops),
			 0);
}

/* Runs the loop until *flag is set or seconds pass. */
static void run_for(struct world *w, const int *flag, int seconds)
{
	int64_t end = util_now_ms() + seconds * 1000;
	while (!*flag && util_now_ms() < end)
		uv_run(&w->loop, UV_RUN_ONCE);
	if (!*flag)
		fail_msg("timed out");
}

static void welcome_and_ack(struct world *w, struct client *good, uint64_t seq)
{
	events(good, seq, 4);
	int64_t end = util_now_ms() + 5000;
	while (good->acked < seq + 3 && util_now_ms() < end)
		uv_run(&w->loop, UV_RUN_ONCE);
	assert_int_equal(good->acked, seq + 3);
	assert_false(good->closed);
}

static int setup(void **state)
{
	char err[512];
	assert_int_equal(test_tmpdir("test_server", dir, sizeof(dir)), 0);
	snprintf(pki_dir, sizeof(pki_dir), "%s/pki", dir);
	snprintf(db_path, sizeof(db_path), "%s/collector.db", dir);
	assert_int_equal(pki_init(pki_dir, PKI_ALGO_ECDSA_P256, 0, err, sizeof(err)), 0);
	const char *agents[] = {"GOOD01", "BAD01", "BAD02", "BAD03", "BAD04", "FRESH01"};
	struct pki_issue_opts o = {.role = PKI_ROLE_COLLECTOR, .name = "localhost"};
	assert_int_equal(pki_issue(pki_dir, &o, NULL, err, sizeof(err)), 0);
	for (size_t i = 0; i < sizeof(agents) / sizeof(agents[0]); i++) {
		struct pki_issue_opts a = {.role = PKI_ROLE_AGENT, .name = agents[i]};
		assert_int_equal(pki_issue(pki_dir, &a, NULL, err, sizeof(err)), 0);
	}
	struct pki_issue_opts op = {.role = PKI_ROLE_OPERATOR, .name = "alice"};
	assert_int_equal(pki_issue(pki_dir, &op, NULL, err, sizeof(err)), 0);
	return 0;
}

static int teardown(void **state)
{
	test_rmtree(dir);
	return 0;
}

/* Connects c as host with ctx and runs the loop until it is welcomed. */
static void welcome(struct world *w, struct client *c, SSL_CTX *ctx, const char *host)
{
	connect_client(w, c, ctx, host);
	run_for(w, &c->ready, 5);
	hello(c, host);
	run_for(w, &c->welcomed, 5);
}

static void test_bad_agents_cost_only_their_session(void **state)
{
	struct world w;
	world_start(&w);
	SSL_CTX *good_ctx = agent_ctx("GOOD01");
	struct client good;
	welcome(&w, &good, good_ctx, "GOOD01");
	welcome_and_ack(&w, &good, 1);

	/* 1. A frame larger than [agents] max_frame. */
	SSL_CTX *ctx1 = agent_ctx("BAD01");
	struct client bad;
	welcome(&w, &bad, ctx1, "BAD01");
	static uint8_t big[FRAME_HEADER + 8192];
	memset(big + FRAME_HEADER, 0x0a, 8192);
	assert_int_equal(tls_conn_send(&bad.conn, big, 8192), 0);
	run_for(&w, &bad.closed, 5);
	expect_logged("[BAD01 127.0.0.1:");
	expect_logged("closed: protocol error: frame larger than the maximum (8192 bytes, limit 4096)");
	welcome_and_ack(&w, &good, 5);

	/* 2. A Hello naming another host than the certificate. */
	SSL_CTX *ctx2 = agent_ctx("BAD02");
	connect_client(&w, &bad, ctx2, "BAD02");
	run_for(&w, &bad.ready, 5);
	hello(&bad, "GOOD01");
	run_for(&w, &bad.closed, 5);
	assert_true(bad.refused);
	assert_string_equal(bad.welcome_error,
			    "Hello names host 'GOOD01' but the certificate is for 'BAD02'");
	expect_logged("closed: refused: Hello names host 'GOOD01' but the certificate is for "
		      "'BAD02'");
	welcome_and_ack(&w, &good, 9); /* and GOOD01's session was not replaced */

	/* 3. Garbage in a well-formed frame after the handshake. */
	SSL_CTX *ctx3 = agent_ctx("BAD03");
	welcome(&w, &bad, ctx3, "BAD03");
	uint8_t junk[FRAME_HEADER + 6] = {0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f};
	assert_int_equal(tls_conn_send(&bad.conn, junk, 6), 0);
	run_for(&w, &bad.closed, 5);
	expect_logged("closed: protocol error: undecodable AgentMessage (6 bytes)");
	welcome_and_ack(&w, &good, 13);

	/* 4. An agent that sends but never reads: its replies pile up, the
	 * collector stops reading it, then drops it (heartbeat is 1 s here). */
	SSL_CTX *ctx4 = agent_ctx("BAD04");
	connect_client(&w, &bad, ctx4, "BAD04");
	uv_recv_buffer_size((uv_handle_t *)&bad.conn.tcp, &(int){4096});
	run_for(&w, &bad.ready, 5);
	hello(&bad, "BAD04");
	run_for(&w, &bad.welcomed, 5);
	tls_conn_pause(&bad.conn, TLS_PAUSE_OWNER);
	/* Generous: the sweep acts within seconds, but machines under load
	 * (sanitizers, parallel tests) are slow. */
	int64_t end = util_now_ms() + 45000, good_hb = 0;
	while (!bad.closed && util_now_ms() < end) {
		for (int i = 0; i < 200 && bad.conn.state == TLS_READY; i++)
			heartbeat(&bad);
		uv_run(&w.loop, UV_RUN_NOWAIT);
		/* GOOD01 keeps a heartbeat as an agent does (often, not once per
		 * loop turn: thousands queued behind the store's backpressure
		 * would come back as a burst of replies that is its own fault). */
		if (util_now_ms() - good_hb >= 100) {
			heartbeat(&good);
			good_hb = util_now_ms();
		}
		if (bad.conn.state != TLS_READY)
			tls_conn_resume(&bad.conn, TLS_PAUSE_OWNER); /* to see the close */
	}
	assert_true(bad.closed);
	if (good.closed)
		fail_msg("GOOD01 was closed: %s", good.reason);
	/* Dropped by the sweep after a heartbeat interval, or at once when one
	 * read's worth of requests queued more replies than write_queue_max. */
	if (!logged("closed: agent has not read its replies for") &&
	    !logged("closed: peer is not reading: "))
		fail_msg("the collector did not say the agent was not reading");
	welcome_and_ack(&w, &good, 17);

	/* 5. An operator's certificate is not an agent's. */
	SSL_CTX *ctx5 = SSL_CTX_new(TLS_client_method());
	char crt[700], key[700], ca[700];
	pki_cert_path(pki_dir, PKI_ROLE_OPERATOR, "alice", crt, sizeof(crt), key, sizeof(key));
	snprintf(ca, sizeof(ca), "%s/ca.crt", pki_dir);
	SSL_CTX_use_certificate_file(ctx5, crt, SSL_FILETYPE_PEM);
	SSL_CTX_use_PrivateKey_file(ctx5, key, SSL_FILETYPE_PEM);
	SSL_CTX_load_verify_locations(ctx5, ca, NULL);
	connect_client(&w, &bad, ctx5, "alice");
	run_for(&w, &bad.closed, 5);
	assert_false(bad.welcomed);
	expect_logged("closed: refused: a certificate of role 'operator' may not connect as an "
		      "agent");
	welcome_and_ack(&w, &good, 21);

	/* 6. A second session for GOOD01 replaces the first. */
	struct client again;
	welcome(&w, &again, good_ctx, "GOOD01");
	run_for(&w, &good.closed, 5);
	expect_logged("closed: replaced by a new session from 127.0.0.1:");
	welcome_and_ack(&w, &again, 25);

	tls_conn_close(&again.conn, LOG_DEBUG, "done");
	world_end(&w);
	SSL_CTX_free(good_ctx);
	SSL_CTX_free(ctx1);
	SSL_CTX_free(ctx2);
	SSL_CTX_free(ctx3);
	SSL_CTX_free(ctx4);
	SSL_CTX_free(ctx5);
}

/* A client that connects over TCP and says nothing: it holds a handshake
 * slot until the collector's handshake deadline. */
struct mute {
	uv_tcp_t tcp;
	uv_connect_t req;
	int connected, closed;
};

static void mute_close_cb(uv_handle_t *h)
{
	((struct mute *)h->data)->closed = 1;
}

static void mute_connect_cb(uv_connect_t *req, int status)
{
	((struct mute *)req->data)->connected = status == 0;
}

static void mute_connect(struct world *w, struct mute *m)
{
	memset(m, 0, sizeof(*m));
	uv_tcp_init(&w->loop, &m->tcp);
	m->tcp.data = m->req.data = m;
	struct sockaddr_in addr;
	uv_ip4_addr("127.0.0.1", w->port, &addr);
	assert_int_equal(uv_tcp_connect(&m->req, &m->tcp, (struct sockaddr *)&addr, mute_connect_cb),
			 0);
	run_for(w, &m->connected, 5);
}

/* Runs the loop until the server has accepted n connections in all. */
static void run_until_accepted(struct world *w, unsigned n)
{
	int64_t end = util_now_ms() + 5000;
	while (w->srv.nconns < n && util_now_ms() < end)
		uv_run(&w->loop, UV_RUN_ONCE);
	assert_int_equal(w->srv.nconns, n);
}

static int order[8], norder;

static void ordered_ready_cb(struct tls_conn *c)
{
	struct client *cl = c->data;
	cl->ready = 1;
	order[norder++] = cl->name[5] - '0'; /* "GOOD0N" */
}

static const struct tls_conn_ops ordered_ops = {
	.ready_cb = ordered_ready_cb, .frame_cb = client_frame_cb, .close_cb = client_close_cb};

static void test_storm_waits_its_turn_oldest_first(void **state)
{
	struct world w;
	world_start(&w);
	/* One handshake at a time; three may wait, each at most 1.5 s. */
	w.cfg.max_handshakes = 1;
	w.cfg.max_waiting = 3;
	w.cfg.wait_timeout_ms = 1500;
	SSL_CTX *ctx = agent_ctx("GOOD01");

	struct mute slot;
	mute_connect(&w, &slot);
	run_until_accepted(&w, 1);
	assert_int_equal(w.srv.nhandshakes, 1);

	static const char *const names[] = {"GOOD00", "GOOD01", "GOOD02", "GOOD03", "GOOD04"};
	struct client c[5];
	struct sockaddr_in addr;
	uv_ip4_addr("127.0.0.1", w.port, &addr);
	for (int i = 1; i <= 4; i++) {
		memset(&c[i], 0, sizeof(c[i]));
		c[i].name = names[i];
		c[i].conn.data = &c[i];
		assert_int_equal(tls_conn_connect(&c[i].conn, &w.loop, (struct sockaddr *)&addr, ctx,
						  "localhost", NULL, &ordered_ops),
				 0);
		if (i < 4)
			run_until_accepted(&w, 1 + (unsigned)i);
	}
	/* The fourth is one too many: closed at once. The others wait,
	 * holding a socket and no TLS state. */
	run_for(&w, &c[4].closed, 5);
	assert_int_equal(w.srv.nwaiting, 3);
	assert_int_equal(w.srv.shed, 1);
	for (struct agent_conn *a = w.srv.wait_head; a; a = a->wait_next)
		assert_null(a->conn.ssl);

	/* The slot frees: the three are served in the order they came. */
	uv_close((uv_handle_t *)&slot.tcp, mute_close_cb);
	norder = 0;
	run_for(&w, &c[3].ready, 10);
	run_for(&w, &c[2].ready, 5);
	assert_int_equal(norder, 3);
	assert_int_equal(order[0], 1);
	assert_int_equal(order[1], 2);
	assert_int_equal(order[2], 3);
	for (int i = 1; i <= 3; i++)
		tls_conn_close(&c[i].conn, LOG_DEBUG, "done");

	/* One that waits longer than wait_timeout is let go. */
	mute_connect(&w, &slot);
	int64_t end = util_now_ms() + 5000;
	while (w.srv.nhandshakes != 1 && util_now_ms() < end)
		uv_run(&w.loop, UV_RUN_ONCE);
	struct client late;
	connect_client(&w, &late, ctx, "GOOD01");
	end = util_now_ms() + 5000;
	while (w.srv.nwaiting != 1 && util_now_ms() < end)
		uv_run(&w.loop, UV_RUN_ONCE);
	assert_int_equal(w.srv.nwaiting, 1);
	run_for(&w, &late.closed, 5);
	assert_false(late.ready);
	assert_int_equal(w.srv.nwaiting, 0);
	uv_close((uv_handle_t *)&slot.tcp, mute_close_cb);
	run_for(&w, &slot.closed, 5);
	world_end(&w);
	SSL_CTX_free(ctx);
}

/* ---- the relay ---- */

static void load_identity(enum pki_role role, const char *name, X509 **cert, EVP_PKEY **key)
{
	char crt[700], keyf[700];
	pki_cert_path(pki_dir, role, name, crt, sizeof(crt), keyf, sizeof(keyf));
	*cert = test_read_cert(crt);
	*key = test_read_key(keyf);
	assert_non_null(*cert);
	assert_non_null(*key);
}

/* Signs a RESCAN addressed to target, queues it for host: its id. */
static void queue_command(struct world *w, X509 *cert, EVP_PKEY *key, const char *host,
			  const char *target, int64_t issued, int tamper, char id[33])
{
	uint8_t raw[16];
	char err[512];
	assert_int_equal(RAND_bytes(raw, sizeof(raw)), 1);
	util_hex(raw, sizeof(raw), id);
	Exfleet__CommandBody body = EXFLEET__COMMAND_BODY__INIT;
	Exfleet__Rescan rescan = EXFLEET__RESCAN__INIT;
	body.id = id;
	body.target_host_id = (char *)target;
	body.issued_at_ms = issued;
	body.expires_at_ms = issued + 3600000;
	body.action_case = EXFLEET__COMMAND_BODY__ACTION_RESCAN;
	body.rescan = &rescan;
	Exfleet__Command cmd = EXFLEET__COMMAND__INIT;
	if (sign_command(&body, key, cert, &cmd, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	if (tamper)
		cmd.signature.data[cmd.signature.len / 2] ^= 0x40;
	uint8_t env[8192];
	size_t len = exfleet__command__pack(&cmd, env);
	sign_command_free(&cmd);
	if (store_enqueue_command(w->store, id, host, "RESCAN", "test", issued, issued + 3600000,
				  env, len, err, sizeof(err)) < 0)
		fail_msg("%s", err);
}

static void command_state(const char *id, char *state, size_t len)
{
	sqlite3 *db;
	sqlite3_stmt *s;
	state[0] = '\0';
	assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT state FROM commands WHERE command_id = ?1",
					    -1, &s, NULL),
			 SQLITE_OK);
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		snprintf(state, len, "%s", sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	sqlite3_close(db);
}

/* Runs the loop until the command's state is want (or 10 s pass). */
static int64_t count_rows(const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *s;
	int64_t n = -1;
	assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	if (sqlite3_step(s) == SQLITE_ROW)
		n = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return n;
}

static void expect_state(struct world *w, const char *id, const char *want)
{
	char state[32];
	int64_t end = util_now_ms() + 10000;
	for (;;) {
		command_state(id, state, sizeof(state));
		if (strcmp(state, want) == 0 || util_now_ms() > end)
			break;
		uv_run(&w->loop, UV_RUN_NOWAIT);
		uv_sleep(10);
	}
	if (strcmp(state, want) != 0)
		fail_msg("command %s is '%s', not '%s'", id, state, want);
}

static void test_relay_delivers_only_what_the_agent_would_accept(void **state)
{
	struct world w;
	world_start(&w);
	SSL_CTX *ctx = agent_ctx("GOOD01");
	struct client good;
	welcome(&w, &good, ctx, "GOOD01");

	X509 *alice, *agent;
	EVP_PKEY *alice_key, *agent_key;
	load_identity(PKI_ROLE_OPERATOR, "alice", &alice, &alice_key);
	load_identity(PKI_ROLE_AGENT, "BAD01", &agent, &agent_key);
	int64_t now = util_now_ms();
	char ok1[33], ok2[33], forged[33], misaddressed[33], expired[33], by_agent[33], late[33];
	/* The first is checked in full, and its signer trusted for a while:
	 * the others by alice are checked against that, one by one. */
	queue_command(&w, alice, alice_key, "GOOD01", "GOOD01", now, 0, ok1);
	expect_state(&w, ok1, "delivered");
	queue_command(&w, alice, alice_key, "GOOD01", "GOOD01", now, 1, forged);
	queue_command(&w, alice, alice_key, "GOOD01", "BAD01", now, 0, misaddressed);
	queue_command(&w, alice, alice_key, "GOOD01", "GOOD01", now - 7200000, 0, expired);
	queue_command(&w, agent, agent_key, "GOOD01", "GOOD01", now, 0, by_agent);
	queue_command(&w, alice, alice_key, "GOOD01", "GOOD01", now, 0, ok2);
	expect_state(&w, forged, "rejected");
	expect_state(&w, misaddressed, "rejected");
	expect_state(&w, expired, "expired");
	expect_state(&w, by_agent, "rejected");
	expect_state(&w, ok2, "delivered");
	assert_true(w.srv.relay.fast_checks >= 4);
	expect_logged("refused, not delivered: bad signature");
	expect_logged("refused, not delivered: addressed to host 'BAD01', not 'GOOD01'");
	expect_logged("has role agent, not operator");

	/* An offline host's command waits, and goes out when it connects,
	 * in order after its host's earlier ones. */
	queue_command(&w, alice, alice_key, "GOOD02", "GOOD02", now, 0, late);
	int64_t end = util_now_ms() + 10000;
	while (good.commands < 2 && util_now_ms() < end)
		uv_run(&w.loop, UV_RUN_ONCE);
	assert_int_equal(good.commands, 2);
	assert_string_equal(good.command_ids[0], ok1);
	assert_string_equal(good.command_ids[1], ok2);
	char st[32];
	command_state(late, st, sizeof(st));
	assert_string_equal(st, "queued");

	tls_conn_close(&good.conn, LOG_DEBUG, "done");
	world_end(&w);
	SSL_CTX_free(ctx);
	X509_free(alice);
	X509_free(agent);
	EVP_PKEY_free(alice_key);
	EVP_PKEY_free(agent_key);
}

/* Signs n RESCANs for host as one batch and queues them: ids[i] each.
 * tamper_path and tamper_sig (-1: none) spoil one command's path or its copy
 * of the signature after signing. */
static void queue_batch(struct world *w, X509 *cert, EVP_PKEY *key, const char *host, int64_t issued,
			size_t n, int tamper_path, int tamper_sig, char ids[][33])
{
	Exfleet__CommandBody bodies[8];
	const Exfleet__CommandBody *list[8];
	Exfleet__Command cmds[8];
	Exfleet__Rescan rescan = EXFLEET__RESCAN__INIT;
	char err[512];
	assert_true(n <= 8);
	for (size_t i = 0; i < n; i++) {
		uint8_t raw[16];
		assert_int_equal(RAND_bytes(raw, sizeof(raw)), 1);
		util_hex(raw, sizeof(raw), ids[i]);
		exfleet__command_body__init(&bodies[i]);
		bodies[i].id = ids[i];
		bodies[i].target_host_id = (char *)host;
		bodies[i].issued_at_ms = issued;
		bodies[i].expires_at_ms = issued + 3600000;
		bodies[i].action_case = EXFLEET__COMMAND_BODY__ACTION_RESCAN;
		bodies[i].rescan = &rescan;
		list[i] = &bodies[i];
	}
	if (sign_commands(list, n, key, cert, cmds, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	if (tamper_path >= 0)
		cmds[tamper_path].batch_path[0].data[0] ^= 0x01;
	if (tamper_sig >= 0)
		cmds[tamper_sig].signature.data[cmds[tamper_sig].signature.len / 2] ^= 0x40;
	for (size_t i = 0; i < n; i++) {
		uint8_t env[8192];
		size_t len = exfleet__command__pack(&cmds[i], env);
		sign_command_free(&cmds[i]);
		if (store_enqueue_command(w->store, ids[i], host, "RESCAN", "test", issued,
					  issued + 3600000, env, len, err, sizeof(err)) < 0)
			fail_msg("%s", err);
	}
}

/* A wave signed as one batch: the relay lets each good command through and
 * stops the one whose path or signature was spoiled, though the batch's
 * signature was found good a moment before. */
static void test_relay_checks_each_command_of_a_batch(void **state)
{
	struct world w;
	world_start(&w);
	SSL_CTX *ctx = agent_ctx("GOOD01");
	struct client good;
	welcome(&w, &good, ctx, "GOOD01");
	X509 *alice;
	EVP_PKEY *alice_key;
	load_identity(PKI_ROLE_OPERATOR, "alice", &alice, &alice_key);

	char ids[5][33];
	queue_batch(&w, alice, alice_key, "GOOD01", util_now_ms(), 5, 2, 3, ids);
	expect_state(&w, ids[0], "delivered");
	expect_state(&w, ids[1], "delivered");
	expect_state(&w, ids[2], "rejected");
	expect_state(&w, ids[3], "rejected");
	expect_state(&w, ids[4], "delivered");
	expect_logged("refused, not delivered: bad signature");
	int64_t end = util_now_ms() + 10000;
	while (good.commands < 3 && util_now_ms() < end)
		uv_run(&w.loop, UV_RUN_ONCE);
	assert_int_equal(good.commands, 3);
	assert_string_equal(good.command_ids[0], ids[0]);
	assert_string_equal(good.command_ids[1], ids[1]);
	assert_string_equal(good.command_ids[2], ids[4]);

	tls_conn_close(&good.conn, LOG_DEBUG, "done");
	world_end(&w);
	SSL_CTX_free(ctx);
	X509_free(alice);
	EVP_PKEY_free(alice_key);
}

/* Sessions that stopped reading because the store was behind read again
 * once it caught up, also when the last writes were the relay's (a wave's
 * "delivered" marks, which are no agent's records). */
static void test_sessions_resume_after_a_relay_burst(void **state)
{
	struct world w;
	world_start(&w);
	w.cfg.store_queue_high = 8;
	w.cfg.store_queue_low = 2;
	SSL_CTX *ctx = agent_ctx("FRESH01");
	struct client good;
	welcome(&w, &good, ctx, "FRESH01");
	welcome_and_ack(&w, &good, 1);

	/* Four commands for FRESH01 in the store, which the relay will find
	 * at its next look (the loop does not run meanwhile). */
	X509 *alice;
	EVP_PKEY *alice_key;
	load_identity(PKI_ROLE_OPERATOR, "alice", &alice, &alice_key);
	char err[512];
	sqlite3 *db;
	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	char ids[4][33];
	for (int i = 0; i < 4; i++) {
		uint8_t raw[16];
		char *id = ids[i];
		assert_int_equal(RAND_bytes(raw, sizeof(raw)), 1);
		util_hex(raw, sizeof(raw), id);
		Exfleet__CommandBody body = EXFLEET__COMMAND_BODY__INIT;
		Exfleet__Rescan rescan = EXFLEET__RESCAN__INIT;
		body.id = id;
		body.target_host_id = "FRESH01";
		body.issued_at_ms = util_now_ms();
		body.expires_at_ms = body.issued_at_ms + 3600000;
		body.action_case = EXFLEET__COMMAND_BODY__ACTION_RESCAN;
		body.rescan = &rescan;
		Exfleet__Command cmd = EXFLEET__COMMAND__INIT;
		if (sign_command(&body, alice_key, alice, &cmd, err, sizeof(err)) < 0)
			fail_msg("%s", err);
		uint8_t env[8192];
		size_t len = exfleet__command__pack(&cmd, env);
		sign_command_free(&cmd);
		if (store_enqueue_command(w.store, id, "FRESH01", "RESCAN", "test",
					  body.issued_at_ms, body.expires_at_ms, env, len, err,
					  sizeof(err)) < 0)
			fail_msg("%s", err);
	}
	/* Someone else holds the database: the writer waits. Records pile up
	 * past queue_high, so sessions stop reading; the commands go out
	 * meanwhile, their "delivered" marks queued behind them as one write. */
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	for (int i = 0; i < 10; i++)
		events(&good, 5 + 4 * (uint64_t)i, 4);
	int64_t end = util_now_ms() + 5000;
	while ((!w.srv.readers_paused || good.commands < 4) && util_now_ms() < end)
		uv_run(&w.loop, UV_RUN_ONCE);
	assert_true(w.srv.readers_paused);
	assert_int_equal(good.commands, 4);
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	/* The store catches up: FRESH01 is read, and acknowledged, again;
	 * each command is marked delivered, each mark on the audit record. */
	welcome_and_ack(&w, &good, 45);
	assert_false(w.srv.readers_paused);
	for (int i = 0; i < 4; i++) {
		expect_state(&w, ids[i], "delivered");
		char sql[200];
		snprintf(sql, sizeof(sql),
			 "SELECT COUNT(*) FROM audit WHERE action = 'command.delivered'"
			 " AND detail = '{\"command_id\":\"%s\"}'", ids[i]);
		assert_int_equal(count_rows(sql), 1);
	}

	tls_conn_close(&good.conn, LOG_DEBUG, "done");
	world_end(&w);
	SSL_CTX_free(ctx);
	X509_free(alice);
	EVP_PKEY_free(alice_key);
}

int main(void)
{
	log_file = tmpfile();
	log_init(log_file, LOG_INFO);
	util_ignore_sigpipe();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_agents_cost_only_their_session),
		cmocka_unit_test(test_storm_waits_its_turn_oldest_first),
		cmocka_unit_test(test_relay_delivers_only_what_the_agent_would_accept),
	    cmocka_unit_test(test_relay_checks_each_command_of_a_batch),
		cmocka_unit_test(test_sessions_resume_after_a_relay_burst),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
