/* TLS transport on a real loop over loopback, with certificates from our own
 * PKI: the mutual handshake, every way a peer is refused, a plaintext or
 * HTTP client that harms nobody else, frame limits, and write backpressure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/err.h>

#include "pki.h"
#include "tls.h"
#include "util.h"
#include "testutil.h"

static char top_dir[512], pki_dir[512], other_dir[512];

/* ---- one test's world: a loop, a listening server, its connections ---- */

struct side {
	int ready;
	int closed;
	char reason[200];
	char peer_name[65];
	int peer_role;
	int frames;
	size_t bytes;
	char last[64];
	int saw_write_pause;
	int resumed;
	int tickets;
	SSL_SESSION *session; /* client: the newest ticket the server sent */
	int next_seq;         /* pause_each: the frame expected next */
	int bad_frames;       /* pause_each: frames out of order or altered */
	struct tls_conn *paused; /* pause_each: paused after its last frame */
};

struct world {
	uv_loop_t loop;
	uv_tcp_t listener;
	uv_timer_t deadline;
	SSL_CTX *server_ctx;
	struct tls_limits server_limits;
	int port;
	struct side server[8];
	int accepted;
	int echo;     /* server echoes frames back */
	int pause_each; /* the server checks seq_frame()s, pausing after each */
	int timed_out;
};

struct test_conn {
	struct tls_conn conn;
	struct side *side;
	struct world *w;
};

static struct world *W;

static void side_ready_cb(struct tls_conn *c)
{
	struct test_conn *t = c->data;
	t->side->ready = 1;
	snprintf(t->side->peer_name, sizeof(t->side->peer_name), "%s", c->peer_name);
	t->side->peer_role = c->peer_role;
	t->side->resumed = c->resumed;
}

/* Frame number seq of a numbered stream: 6 to 6,005 bytes, its number
 * then a pattern of it, so that a lost, repeated or altered byte shows. */
static size_t seq_frame(int seq, uint8_t *payload)
{
	size_t len = 6 + ((size_t)seq * 977) % 6000;
	snprintf((char *)payload, 7, "%06d", seq);
	for (size_t i = 6; i < len; i++)
		payload[i] = (uint8_t)(seq * 31 + i);
	return len;
}

static void side_frame_cb(struct tls_conn *c, const uint8_t *p, size_t len)
{
	struct test_conn *t = c->data;
	if (t->w->pause_each) {
		uint8_t want[6006];
		size_t want_len = seq_frame(t->side->next_seq++, want);
		if (len != want_len || memcmp(p, want, len) != 0)
			t->side->bad_frames++;
		t->side->frames++;
		tls_conn_pause(c, TLS_PAUSE_OWNER);
		t->side->paused = c;
		return;
	}
	t->side->frames++;
	t->side->bytes += len;
	size_t n = len < sizeof(t->side->last) - 1 ? len : sizeof(t->side->last) - 1;
	memcpy(t->side->last, p, n);
	t->side->last[n] = '\0';
	if (t->w->echo && t->side >= t->w->server && t->side < t->w->server + 8) {
		uint8_t frame[FRAME_HEADER + 64];
		memcpy(frame + FRAME_HEADER, p, n);
		tls_conn_send(c, frame, n);
	}
}

static void side_close_cb(struct tls_conn *c)
{
	struct test_conn *t = c->data;
	t->side->closed = 1;
	snprintf(t->side->reason, sizeof(t->side->reason), "%s", c->close_reason);
	free(t);
}

static int keep_sessions; /* the resumption tests keep the client's tickets */

static int side_session_cb(struct tls_conn *c, SSL_SESSION *session)
{
	struct test_conn *t = c->data;
	if (!keep_sessions)
		return 0;
	SSL_SESSION_free(t->side->session);
	t->side->session = session;
	t->side->tickets++;
	return 1;
}

static const struct tls_conn_ops side_ops = {.ready_cb = side_ready_cb,
					     .frame_cb = side_frame_cb,
					     .close_cb = side_close_cb,
					     .session_cb = side_session_cb};

/* The world's server takes the connection, its owner calling back ops. */
static void accept_with(uv_stream_t *server, int status, const struct tls_conn_ops *ops)
{
	struct world *w = server->data;
	assert_int_equal(status, 0);
	assert_true(w->accepted < 8);
	struct test_conn *t = calloc(1, sizeof(*t));
	t->side = &w->server[w->accepted++];
	t->w = w;
	t->conn.data = t;
	assert_int_equal(tls_conn_accept(&t->conn, server, w->server_ctx, &w->server_limits, ops),
			 0);
}

static void on_connection(uv_stream_t *server, int status)
{
	accept_with(server, status, &side_ops);
}

static void cert_paths(const char *dir, enum pki_role role, const char *name, char *crt,
		       char *key)
{
	assert_int_equal(pki_cert_path(dir, role, name, crt, 512, key, 512), 0);
}

static int allow_tls12;

static SSL_CTX *make_ctx(int server, const char *dir, enum pki_role role, const char *name,
			 const char *ca_dir, const char *crl)
{
	char crt[512], key[512], ca[512], err[512];
	cert_paths(dir, role, name, crt, key);
	snprintf(ca, sizeof(ca), "%s/ca.crt", ca_dir);
	struct tls_config cfg = {.ca_file = ca, .cert_file = crt, .key_file = key,
				 .crl_file = crl, .allow_tls12 = allow_tls12};
	SSL_CTX *ctx = NULL;
	if (tls_ctx_new(&ctx, server, &cfg, err, sizeof(err)) < 0)
		fail_msg("tls_ctx_new: %s", err);
	return ctx;
}

static int offload; /* the server's handshakes run on the thread pool */

static void world_start(struct world *w, SSL_CTX *server_ctx)
{
	memset(w, 0, sizeof(*w));
	W = w;
	assert_int_equal(uv_loop_init(&w->loop), 0);
	w->server_ctx = server_ctx;
	tls_limits_default(&w->server_limits);
	w->server_limits.offload_handshake = offload;
	uv_tcp_init(&w->loop, &w->listener);
	w->listener.data = w;
	struct sockaddr_in addr;
	uv_ip4_addr("127.0.0.1", 0, &addr);
	assert_int_equal(uv_tcp_bind(&w->listener, (struct sockaddr *)&addr, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&w->listener, 64, on_connection), 0);
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	uv_tcp_getsockname(&w->listener, (struct sockaddr *)&ss, &len);
	w->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	uv_timer_init(&w->loop, &w->deadline);
	w->deadline.data = w;
}

static struct test_conn *client_connect(struct world *w, SSL_CTX *ctx, const char *server_name,
					struct side *side, const struct tls_limits *limits)
{
	struct sockaddr_in addr;
	uv_ip4_addr("127.0.0.1", w->port, &addr);
	struct test_conn *t = calloc(1, sizeof(*t));
	t->side = side;
	t->w = w;
	t->conn.data = t;
	assert_int_equal(tls_conn_connect(&t->conn, &w->loop, (struct sockaddr *)&addr, ctx,
					  server_name, limits, &side_ops),
			 0);
	return t;
}

static void deadline_cb(uv_timer_t *t)
{
	struct world *w = t->data;
	w->timed_out = 1;
	uv_stop(&w->loop);
}

/* Runs the loop until cond() holds or 5 s pass. */
static void run_until(struct world *w, int (*cond)(struct world *))
{
	uv_timer_start(&w->deadline, deadline_cb, 5000, 0);
	while (!cond(w) && !w->timed_out)
		uv_run(&w->loop, UV_RUN_ONCE);
	uv_timer_stop(&w->deadline);
	if (w->timed_out)
		fail_msg("timed out waiting on the loop");
}

static int cond_none(struct world *w)
{
	return 0;
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
	if (uv_is_closing(h))
		return;
	if (h->type == UV_TCP && h->data && h->data != arg) {
		/* a connection's socket: close it through its owner */
		struct tls_conn *c = h->data;
		tls_conn_close(c, LOG_DEBUG, "test over");
		return;
	}
	if (h->type == UV_TIMER && h->data && h->data != arg)
		return; /* a connection's timer, closed with it */
	uv_close(h, NULL);
}

static void world_end(struct world *w)
{
	uv_walk(&w->loop, close_walk_cb, w);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&w->loop), 0);
	SSL_CTX_free(w->server_ctx);
	(void)cond_none;
}

/* ---- fixtures ---- */

static void issue(const char *dir, enum pki_role role, const char *name, int64_t backdate)
{
	char err[512];
	struct pki_issue_opts o = {.role = role, .name = name, .backdate_s = backdate};
	if (pki_issue(dir, &o, NULL, err, sizeof(err)) < 0)
		fail_msg("pki_issue %s: %s", name, err);
}

static int setup_pki(void **state)
{
	char err[512];
	assert_int_equal(test_tmpdir("test_tls", top_dir, sizeof(top_dir)), 0);
	snprintf(pki_dir, sizeof(pki_dir), "%s/pki", top_dir);
	snprintf(other_dir, sizeof(other_dir), "%s/other", top_dir);
	if (pki_init(pki_dir, PKI_ALGO_ECDSA_P256, 0, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	if (pki_init(other_dir, PKI_ALGO_ED25519, 0, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	issue(pki_dir, PKI_ROLE_COLLECTOR, "collector.test", 0);
	issue(pki_dir, PKI_ROLE_AGENT, "EXCH01", 0);
	issue(pki_dir, PKI_ROLE_AGENT, "EXCH02", 0);
	issue(pki_dir, PKI_ROLE_AGENT, "OLD01", 900LL * 86400); /* expired 75 days ago */
	issue(pki_dir, PKI_ROLE_AGENT, "GONE01", 0);
	if (pki_revoke(pki_dir, "GONE01", NULL, NULL, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	issue(other_dir, PKI_ROLE_AGENT, "EXCH01", 0);
	issue(other_dir, PKI_ROLE_COLLECTOR, "collector.test", 0);
	return 0;
}


static int teardown_pki(void **state)
{
	test_rmtree(top_dir);
	return 0;
}

static SSL_CTX *collector_ctx(void)
{
	char crl[600];
	snprintf(crl, sizeof(crl), "%s/crl.pem", pki_dir);
	return make_ctx(1, pki_dir, PKI_ROLE_COLLECTOR, "collector.test", pki_dir, crl);
}

static SSL_CTX *agent_ctx(const char *name)
{
	return make_ctx(0, pki_dir, PKI_ROLE_AGENT, name, pki_dir, NULL);
}

/* ---- tests ---- */

static struct side client_side;

static int cond_echoed(struct world *w)
{
	return client_side.frames > 0 || client_side.closed;
}

static void test_mutual_handshake_and_frames(void **state)
{
	struct world w;
	world_start(&w, collector_ctx());
	w.echo = 1;
	memset(&client_side, 0, sizeof(client_side));
	SSL_CTX *actx = agent_ctx("EXCH01");
	struct test_conn *c = client_connect(&w, actx, "collector.test", &client_side, NULL);
	while (!client_side.ready && !client_side.closed)
		uv_run(&w.loop, UV_RUN_ONCE);
	assert_false(client_side.closed);
	assert_string_equal(client_side.peer_name, "collector.test");
	assert_int_equal(client_side.peer_role, PKI_ROLE_COLLECTOR);
	assert_string_equal(SSL_get_version(c->conn.ssl), "TLSv1.3");

	uint8_t frame[FRAME_HEADER + 16];
	memcpy(frame + FRAME_HEADER, "ping", 4);
	assert_int_equal(tls_conn_send(&c->conn, frame, 4), 0);
	run_until(&w, cond_echoed);
	assert_string_equal(client_side.last, "ping");
	assert_true(w.server[0].ready);
	assert_string_equal(w.server[0].peer_name, "EXCH01");
	assert_int_equal(w.server[0].peer_role, PKI_ROLE_AGENT);
	assert_string_equal(w.server[0].last, "ping");
	world_end(&w);
	SSL_CTX_free(actx);
}

static int cond_server_closed(struct world *w)
{
	return w->server[0].closed && client_side.closed;
}

/* Connects with ctx and expects the collector to refuse with reason. */
static void expect_refused(SSL_CTX *actx, const char *reason)
{
	struct world w;
	world_start(&w, collector_ctx());
	memset(&client_side, 0, sizeof(client_side));
	client_connect(&w, actx, "collector.test", &client_side, NULL);
	run_until(&w, cond_server_closed);
	assert_false(w.server[0].ready);
	if (!strstr(w.server[0].reason, reason))
		fail_msg("server closed with '%s', wanted '%s'", w.server[0].reason, reason);
	world_end(&w);
	SSL_CTX_free(actx);
}

static void test_refuses_client_without_certificate(void **state)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char ca[600];
	snprintf(ca, sizeof(ca), "%s/ca.crt", pki_dir);
	SSL_CTX_load_verify_locations(ctx, ca, NULL);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	expect_refused(ctx, "peer did not return a certificate");
}

static void test_refuses_certificate_from_another_ca(void **state)
{
	expect_refused(make_ctx(0, other_dir, PKI_ROLE_AGENT, "EXCH01", pki_dir, NULL),
		       "certificate rejected: unable to get local issuer certificate");
}

static void test_refuses_expired_certificate(void **state)
{
	expect_refused(agent_ctx("OLD01"), "certificate rejected: certificate has expired");
}

static void test_refuses_revoked_certificate(void **state)
{
	expect_refused(agent_ctx("GONE01"), "certificate rejected: certificate revoked");
}

static int cond_client_closed(struct world *w)
{
	return client_side.closed;
}

static void test_agent_refuses_wrong_collector_name(void **state)
{
	struct world w;
	world_start(&w, collector_ctx());
	memset(&client_side, 0, sizeof(client_side));
	SSL_CTX *actx = agent_ctx("EXCH01");
	client_connect(&w, actx, "mail-collector.test", &client_side, NULL);
	run_until(&w, cond_client_closed);
	assert_false(client_side.ready);
	assert_string_equal(client_side.reason, "TLS handshake failed: certificate rejected: "
						 "hostname mismatch");
	world_end(&w);
	SSL_CTX_free(actx);
}

static void test_agent_refuses_collector_from_another_ca(void **state)
{
	struct world w;
	world_start(&w, make_ctx(1, other_dir, PKI_ROLE_COLLECTOR, "collector.test", other_dir,
				 NULL));
	memset(&client_side, 0, sizeof(client_side));
	SSL_CTX *actx = agent_ctx("EXCH01");
	client_connect(&w, actx, "collector.test", &client_side, NULL);
	run_until(&w, cond_client_closed);
	assert_false(client_side.ready);
	if (!strstr(client_side.reason, "certificate rejected"))
		fail_msg("client closed with '%s'", client_side.reason);
	world_end(&w);
	SSL_CTX_free(actx);
}

/* A raw TCP client that writes some bytes and waits to be closed. */
struct raw_client {
	uv_tcp_t tcp;
	uv_connect_t req;
	uv_write_t wreq;
	const char *text;
	int closed;
};

static void raw_close_cb(uv_handle_t *h)
{
	((struct raw_client *)h->data)->closed = 1;
}

static void raw_alloc_cb(uv_handle_t *h, size_t n, uv_buf_t *buf)
{
	static char scratch[4096];
	*buf = uv_buf_init(scratch, sizeof(scratch));
}

static void raw_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	if (n < 0)
		uv_close((uv_handle_t *)s, raw_close_cb);
}

static void raw_connect_cb(uv_connect_t *req, int status)
{
	struct raw_client *r = req->data;
	assert_int_equal(status, 0);
	uv_buf_t buf = uv_buf_init((char *)r->text, (unsigned)strlen(r->text));
	uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &buf, 1, NULL);
	uv_read_start((uv_stream_t *)&r->tcp, raw_alloc_cb, raw_read_cb);
}

static void raw_connect(struct world *w, struct raw_client *r, const char *text)
{
	memset(r, 0, sizeof(*r));
	r->text = text;
	uv_tcp_init(&w->loop, &r->tcp);
	r->tcp.data = r;
	r->req.data = r;
	struct sockaddr_in addr;
	uv_ip4_addr("127.0.0.1", w->port, &addr);
	uv_tcp_connect(&r->req, &r->tcp, (struct sockaddr *)&addr, raw_connect_cb);
}

static struct raw_client plain, http;

/* In TLS 1.3 the client is done before the server has checked its
 * certificate, so wait for both. */
static int cond_both_ready(struct world *w)
{
	return (client_side.ready && w->server[0].ready) || client_side.closed ||
	       w->server[0].closed;
}

static int cond_raw_done(struct world *w)
{
	return plain.closed && http.closed && w->server[1].closed && w->server[2].closed;
}

static void test_plaintext_and_http_clients_harm_no_one(void **state)
{
	struct world w;
	world_start(&w, collector_ctx());
	w.echo = 1;
	memset(&client_side, 0, sizeof(client_side));
	SSL_CTX *actx = agent_ctx("EXCH02");
	struct test_conn *good = client_connect(&w, actx, "collector.test", &client_side, NULL);
	run_until(&w, cond_both_ready);
	assert_true(w.server[0].ready);

	raw_connect(&w, &plain, "hello, I speak plaintext\r\n");
	raw_connect(&w, &http, "GET /api/v1/hosts HTTP/1.1\r\nHost: collector\r\n\r\n");
	run_until(&w, cond_raw_done);
	for (int i = 1; i <= 2; i++) {
		assert_false(w.server[i].ready);
		assert_string_equal(w.server[i].reason,
				    "TLS handshake failed: not a TLS client (plaintext or HTTP)");
	}
	/* The agent that was there all along still talks. */
	assert_false(w.server[0].closed);
	uint8_t frame[FRAME_HEADER + 16];
	memcpy(frame + FRAME_HEADER, "still here", 10);
	assert_int_equal(tls_conn_send(&good->conn, frame, 10), 0);
	run_until(&w, cond_echoed);
	assert_string_equal(client_side.last, "still here");
	world_end(&w);
	SSL_CTX_free(actx);
}

static void test_oversize_frame_closes_only_that_session(void **state)
{
	struct world w;
	world_start(&w, collector_ctx());
	w.server_limits.max_frame = 1024;
	memset(&client_side, 0, sizeof(client_side));
	SSL_CTX *actx = agent_ctx("EXCH01");
	struct test_conn *c = client_connect(&w, actx, "collector.test", &client_side, NULL);
	while (!client_side.ready && !client_side.closed)
		uv_run(&w.loop, UV_RUN_ONCE);
	static uint8_t big[FRAME_HEADER + 4096];
	assert_int_equal(tls_conn_send(&c->conn, big, 4096), 0);
	run_until(&w, cond_server_closed);
	assert_string_equal(w.server[0].reason,
			    "protocol error: frame larger than the maximum (4096 bytes, limit 1024)");
	assert_int_equal(w.server[0].frames, 0);
	world_end(&w);
	SSL_CTX_free(actx);
}

/* The server floods a client that does not read. */
static struct test_conn *flood_server;

static void flood(struct world *w, int rounds)
{
	static uint8_t chunk[FRAME_HEADER + 16384];
	for (int i = 0; i < rounds && flood_server && flood_server->conn.state == TLS_READY; i++) {
		tls_conn_send(&flood_server->conn, chunk, 16384);
		if (flood_server->conn.paused & TLS_PAUSE_WRITE)
			w->server[0].saw_write_pause = 1;
	}
}

static void flood_ready_cb(struct tls_conn *c)
{
	struct test_conn *t = c->data;
	side_ready_cb(c);
	if (t->side == &t->w->server[0])
		flood_server = t;
}

static void flood_close_cb(struct tls_conn *c)
{
	struct test_conn *t = c->data;
	if (t == flood_server)
		flood_server = NULL;
	side_close_cb(c);
}

static const struct tls_conn_ops flood_ops = {
	.ready_cb = flood_ready_cb, .frame_cb = side_frame_cb, .close_cb = flood_close_cb};

static void on_flood_connection(uv_stream_t *server, int status)
{
	accept_with(server, status, &flood_ops);
}

static int cond_flood_ready(struct world *w)
{
	return flood_server != NULL && client_side.ready;
}

static int cond_drained(struct world *w)
{
	return flood_server && !(flood_server->conn.paused & TLS_PAUSE_WRITE) &&
	       flood_server->conn.write_queued == 0;
}

static void test_write_backpressure(void **state)
{
	struct world w;
	world_start(&w, collector_ctx());
	/* Re-listen with the flooding accept callback. */
	uv_close((uv_handle_t *)&w.listener, NULL);
	uv_run(&w.loop, UV_RUN_NOWAIT);
	uv_tcp_init(&w.loop, &w.listener);
	w.listener.data = &w;
	struct sockaddr_in addr;
	uv_ip4_addr("127.0.0.1", w.port, &addr);
	assert_int_equal(uv_tcp_bind(&w.listener, (struct sockaddr *)&addr, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&w.listener, 8, on_flood_connection), 0);
	w.server_limits.write_high = 256 << 10;
	w.server_limits.write_low = 64 << 10;
	w.server_limits.write_max = 64u << 20;

	memset(&client_side, 0, sizeof(client_side));
	flood_server = NULL;
	SSL_CTX *actx = agent_ctx("EXCH01");
	struct test_conn *c = client_connect(&w, actx, "collector.test", &client_side, NULL);
	run_until(&w, cond_flood_ready);
	tls_conn_pause(&c->conn, TLS_PAUSE_OWNER); /* the client stops reading */

	/* Kernel buffers take a few MB, then the queue grows past the high mark
	 * and the server stops reading from this peer. */
	for (int i = 0; i < 400 && !w.server[0].saw_write_pause; i++) {
		flood(&w, 8);
		uv_run(&w.loop, UV_RUN_NOWAIT);
	}
	assert_true(w.server[0].saw_write_pause);
	assert_false(flood_server->conn.reading);

	/* The client reads again: the queue drains and the server resumes. */
	tls_conn_resume(&c->conn, TLS_PAUSE_OWNER);
	run_until(&w, cond_drained);
	assert_true(flood_server->conn.reading);
	assert_true(client_side.bytes > 0);

	/* Now a small hard limit: a peer that stops reading is closed. */
	tls_conn_pause(&c->conn, TLS_PAUSE_OWNER);
	flood_server->conn.limits.write_max = 1 << 20;
	for (int i = 0; i < 2000 && flood_server; i++) {
		flood(&w, 8);
		uv_run(&w.loop, UV_RUN_NOWAIT);
	}
	/* The client reads again to see the close. */
	tls_conn_resume(&c->conn, TLS_PAUSE_OWNER);
	run_until(&w, cond_server_closed);
	assert_non_null(strstr(w.server[0].reason, "peer is not reading: "));
	assert_non_null(strstr(w.server[0].reason, " bytes queued, limit 1048576"));
	world_end(&w);
	SSL_CTX_free(actx);
}

/* The owner pauses after every frame, with more of the socket's read
 * still to take: what is left waits, and every frame arrives whole, once,
 * in order, over records and reads of every size. */
static void test_pause_between_frames_loses_nothing(void **state)
{
	enum { FRAMES = 400 };
	struct world w;
	world_start(&w, collector_ctx());
	w.pause_each = 1;
	memset(&client_side, 0, sizeof(client_side));
	SSL_CTX *actx = agent_ctx("EXCH01");
	struct test_conn *c = client_connect(&w, actx, "collector.test", &client_side, NULL);
	while (!client_side.ready && !client_side.closed)
		uv_run(&w.loop, UV_RUN_ONCE);
	assert_true(client_side.ready);
	static uint8_t frame[FRAME_HEADER + 6006];
	for (int i = 0; i < FRAMES; i++)
		assert_int_equal(tls_conn_send(&c->conn, frame, seq_frame(i, frame + FRAME_HEADER)),
				 0);

	struct side *srv = &w.server[0];
	uv_timer_start(&w.deadline, deadline_cb, 10000, 0);
	int waited = 0;
	while (srv->frames < FRAMES && !srv->closed && !w.timed_out) {
		if (srv->paused) {
			/* Some loop turns pass before the next frame is taken,
			 * so reads land while input waits. */
			if (++waited < 3) {
				uv_run(&w.loop, UV_RUN_NOWAIT);
				continue;
			}
			struct tls_conn *pc = srv->paused;
			srv->paused = NULL;
			waited = 0;
			tls_conn_resume(pc, TLS_PAUSE_OWNER);
		} else {
			uv_run(&w.loop, UV_RUN_ONCE);
		}
	}
	uv_timer_stop(&w.deadline);
	assert_false(srv->closed);
	assert_int_equal(srv->frames, FRAMES);
	assert_int_equal(srv->bad_frames, 0);
	world_end(&w);
	SSL_CTX_free(actx);
}

/* TLS 1.2 only where configured: a 1.2-only agent is refused by default. */
static void test_tls12_only_when_allowed(void **state)
{
	for (int allowed = 0; allowed <= 1; allowed++) {
		struct world w;
		allow_tls12 = allowed;
		world_start(&w, collector_ctx());
		allow_tls12 = 0;
		memset(&client_side, 0, sizeof(client_side));
		SSL_CTX *actx = agent_ctx("EXCH01");
		SSL_CTX_set_min_proto_version(actx, TLS1_2_VERSION);
		SSL_CTX_set_max_proto_version(actx, TLS1_2_VERSION);
		struct test_conn *c = client_connect(&w, actx, "collector.test", &client_side, NULL);
		run_until(&w, allowed ? cond_both_ready : cond_server_closed);
		if (allowed) {
			assert_true(w.server[0].ready);
			assert_string_equal(SSL_get_version(c->conn.ssl), "TLSv1.2");
		} else {
			assert_false(w.server[0].ready);
			assert_non_null(strstr(w.server[0].reason, "TLS handshake failed"));
		}
		world_end(&w);
		SSL_CTX_free(actx);
	}
}

/* ---- session resumption ---- */

static char tickets_file[600];

/* The collector as it starts: a context that seals tickets with the keys
 * in tickets_file, rotated every rotation_ms. */
static SSL_CTX *ticket_collector_ctx(uint64_t rotation_ms)
{
	char err[512];
	SSL_CTX *ctx = collector_ctx();
	if (tls_ctx_enable_tickets(ctx, tickets_file, rotation_ms, err, sizeof(err)) < 0)
		fail_msg("tls_ctx_enable_tickets: %s", err);
	return ctx;
}

static int cond_ticket(struct world *w)
{
	return (client_side.session && w->server[0].ready) || client_side.closed ||
	       w->server[0].closed;
}

/* One session from agent name against server_ctx, offering session (NULL:
 * none): returns the ticket it got (NULL: none within the wait), the two
 * sides in client_side and *server. */
static SSL_SESSION *session_with(SSL_CTX *server_ctx, const char *name, SSL_SESSION *session,
				 struct side *server, int expect_ticket)
{
	struct world w;
	world_start(&w, server_ctx);
	memset(&client_side, 0, sizeof(client_side));
	keep_sessions = 1;
	SSL_CTX *actx = agent_ctx(name);
	struct test_conn *c = client_connect(&w, actx, "collector.test", &client_side, NULL);
	if (session)
		assert_int_equal(SSL_set_session(c->conn.ssl, session), 1);
	if (expect_ticket) {
		run_until(&w, cond_ticket);
	} else {
		/* Long enough for a ticket to arrive if one were sent. */
		run_until(&w, cond_both_ready);
		uint8_t frame[FRAME_HEADER + 8];
		memcpy(frame + FRAME_HEADER, "x", 1);
		w.echo = 1;
		if (client_side.ready && !client_side.closed)
			tls_conn_send(&c->conn, frame, 1);
		run_until(&w, cond_echoed);
	}
	*server = w.server[0];
	world_end(&w);
	SSL_CTX_free(actx);
	keep_sessions = 0;
	/* One ticket per session, resumed or not. */
	assert_true(client_side.tickets <= 1);
	SSL_SESSION *got = client_side.session;
	client_side.session = NULL;
	return got;
}

static void test_no_tickets_unless_enabled(void **state)
{
	struct side server;
	SSL_SESSION *s = session_with(collector_ctx(), "EXCH01", NULL, &server, 0);
	assert_true(server.ready);
	assert_null(s);
}

static void test_resumes_after_restart(void **state)
{
	snprintf(tickets_file, sizeof(tickets_file), "%s/tickets-restart", top_dir);
	struct side server;
	SSL_SESSION *first = session_with(ticket_collector_ctx(0), "EXCH01", NULL, &server, 1);
	assert_non_null(first);
	assert_true(server.ready);
	assert_false(server.resumed);
	/* The keys were made private. */
	char err[512];
	assert_int_equal(util_check_private_file(tickets_file, err, sizeof(err)), 0);

	/* A new context reading the same keys: the collector after a restart. */
	SSL_SESSION *second = session_with(ticket_collector_ctx(0), "EXCH01", first, &server, 1);
	assert_true(server.ready);
	assert_true(server.resumed);
	assert_true(client_side.resumed);
	assert_string_equal(server.peer_name, "EXCH01"); /* the identity came back with it */
	assert_int_equal(server.peer_role, PKI_ROLE_AGENT);
	assert_non_null(second); /* and a fresh ticket for next time */
	SSL_SESSION_free(first);
	SSL_SESSION_free(second);

	/* Without the keys file a ticket is worth nothing: a full handshake. */
	unlink(tickets_file);
	first = session_with(ticket_collector_ctx(0), "EXCH01", NULL, &server, 1);
	unlink(tickets_file);
	second = session_with(ticket_collector_ctx(0), "EXCH01", first, &server, 1);
	assert_true(server.ready);
	assert_false(server.resumed);
	SSL_SESSION_free(first);
	SSL_SESSION_free(second);
}

static void test_revoked_agent_cannot_resume(void **state)
{
	char err[512];
	snprintf(tickets_file, sizeof(tickets_file), "%s/tickets-revoked", top_dir);
	issue(pki_dir, PKI_ROLE_AGENT, "LATE01", 0);
	struct side server;
	SSL_SESSION *ticket = session_with(ticket_collector_ctx(0), "LATE01", NULL, &server, 1);
	assert_non_null(ticket);
	assert_true(server.ready);

	/* Revoked, then the collector restarts with the new CRL and the same
	 * keys: the ticket still opens, but the agent is refused. */
	if (pki_revoke(pki_dir, "LATE01", NULL, NULL, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	struct world w;
	world_start(&w, ticket_collector_ctx(0));
	memset(&client_side, 0, sizeof(client_side));
	SSL_CTX *actx = agent_ctx("LATE01");
	struct test_conn *c = client_connect(&w, actx, "collector.test", &client_side, NULL);
	assert_int_equal(SSL_set_session(c->conn.ssl, ticket), 1);
	run_until(&w, cond_server_closed);
	assert_false(w.server[0].ready);
	if (!strstr(w.server[0].reason, "certificate rejected: certificate revoked"))
		fail_msg("server closed with '%s'", w.server[0].reason);
	world_end(&w);
	SSL_CTX_free(actx);
	SSL_SESSION_free(ticket);
	SSL_SESSION_free(client_side.session);
	client_side.session = NULL;
}

static X509 *agent_cert(const char *name)
{
	char crt[700];
	snprintf(crt, sizeof(crt), "%s/agent/%s.crt", pki_dir, name);
	X509 *cert = test_read_cert(crt);
	assert_non_null(cert);
	return cert;
}

/* One handshake of agent name with sctx (kept): whether the server took it,
 * and if not, why. */
static int handshake_with(SSL_CTX *sctx, const char *name, char *why, size_t whylen)
{
	struct world w;
	assert_int_equal(SSL_CTX_up_ref(sctx), 1);
	world_start(&w, sctx);
	memset(&client_side, 0, sizeof(client_side));
	SSL_CTX *actx = agent_ctx(name);
	client_connect(&w, actx, "collector.test", &client_side, NULL);
	while (!w.server[0].ready && !(w.server[0].closed && client_side.closed))
		uv_run(&w.loop, UV_RUN_ONCE);
	int ready = w.server[0].ready;
	snprintf(why, whylen, "%s", w.server[0].reason);
	world_end(&w);
	SSL_CTX_free(actx);
	return ready;
}

/* A CRL read again is in force for the next handshake; a bad file, or a
 * CRL of another CA, changes nothing. */
static void test_crl_reload(void **state)
{
	char err[512], crl[600], bad[600], why[256];
	size_t revoked = 0;
	snprintf(crl, sizeof(crl), "%s/crl.pem", pki_dir);
	issue(pki_dir, PKI_ROLE_AGENT, "SOON01", 0);
	SSL_CTX *sctx = collector_ctx();
	X509 *soon = agent_cert("SOON01");
	if (pki_revoke(pki_dir, "SOON01", NULL, NULL, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	/* Revoked in the file, not yet in force. */
	assert_false(tls_ctx_revoked(sctx, soon));
	assert_true(handshake_with(sctx, "SOON01", why, sizeof(why)));

	snprintf(bad, sizeof(bad), "%s/garbage.pem", top_dir);
	FILE *fp = fopen(bad, "w");
	assert_non_null(fp);
	fputs("-----BEGIN X509 CRL-----\nnot base64 at all\n-----END X509 CRL-----\n", fp);
	fclose(fp);
	assert_int_equal(tls_ctx_reload_crl(sctx, bad, &revoked, err, sizeof(err)), -1);
	if (!strstr(err, "garbage.pem: cannot load CRL"))
		fail_msg("%s", err);
	snprintf(bad, sizeof(bad), "%s/crl.pem", other_dir);
	assert_int_equal(tls_ctx_reload_crl(sctx, bad, &revoked, err, sizeof(err)), -1);
	if (!strstr(err, "other/crl.pem: CRL not signed by the trusted CA"))
		fail_msg("%s", err);
	/* Nor does a context start with it. */
	char crt[512], key[512], ca[512];
	cert_paths(pki_dir, PKI_ROLE_COLLECTOR, "collector.test", crt, key);
	snprintf(ca, sizeof(ca), "%s/ca.crt", pki_dir);
	struct tls_config cfg = {.ca_file = ca, .cert_file = crt, .key_file = key, .crl_file = bad};
	SSL_CTX *refused = NULL;
	assert_int_equal(tls_ctx_new(&refused, 1, &cfg, err, sizeof(err)), -1);
	assert_null(refused);
	if (!strstr(err, "other/crl.pem: CRL not signed by the trusted CA"))
		fail_msg("%s", err);
	assert_false(tls_ctx_revoked(sctx, soon));
	assert_true(handshake_with(sctx, "SOON01", why, sizeof(why)));

	assert_int_equal(tls_ctx_reload_crl(sctx, crl, &revoked, err, sizeof(err)), 0);
	assert_true(revoked >= 2); /* GONE01 and SOON01 at least */
	assert_true(tls_ctx_revoked(sctx, soon));
	assert_false(handshake_with(sctx, "SOON01", why, sizeof(why)));
	if (!strstr(why, "certificate rejected: certificate revoked"))
		fail_msg("refused with '%s'", why);
	assert_true(handshake_with(sctx, "EXCH01", why, sizeof(why)));

	/* Nothing to reload where no CRL was configured. */
	SSL_CTX *actx = agent_ctx("EXCH01");
	assert_int_equal(tls_ctx_reload_crl(actx, crl, NULL, err, sizeof(err)), -1);
	assert_string_equal(err, "no CRL was configured to reload");
	SSL_CTX_free(actx);
	X509_free(soon);
	SSL_CTX_free(sctx);
}

static void test_ticket_keys_rotate(void **state)
{
	/* A second's rotation: a ticket lives a second, its key opens tickets
	 * for two. */
	snprintf(tickets_file, sizeof(tickets_file), "%s/tickets-rotate", top_dir);
	struct side server;
	SSL_SESSION *s = session_with(ticket_collector_ctx(1000), "EXCH02", NULL, &server, 1);
	SSL_SESSION_free(s);
	uv_sleep(700);
	/* Sealed late in the first key's second... */
	SSL_SESSION *old = session_with(ticket_collector_ctx(1000), "EXCH02", NULL, &server, 1);
	assert_non_null(old);
	assert_false(server.resumed);
	uv_sleep(500);
	/* ...it opens after the rotation, with the key before... */
	s = session_with(ticket_collector_ctx(1000), "EXCH02", old, &server, 1);
	assert_true(server.resumed);
	SSL_SESSION_free(s);
	uv_sleep(1000);
	/* ...and not after the next one: a full handshake, which succeeds. */
	s = session_with(ticket_collector_ctx(1000), "EXCH02", old, &server, 1);
	assert_true(server.ready);
	assert_false(server.resumed);
	SSL_SESSION_free(s);
	SSL_SESSION_free(old);
}

static void test_ticket_keys_must_be_private(void **state)
{
	char err[512];
	snprintf(tickets_file, sizeof(tickets_file), "%s/tickets-open", top_dir);
	SSL_CTX *ctx = collector_ctx();
	assert_int_equal(tls_ctx_enable_tickets(ctx, tickets_file, 0, err, sizeof(err)), 0);
	assert_true(tls_ctx_ticket_lifetime_ms(ctx) == 24ull * 3600 * 1000);
	SSL_CTX_free(ctx);
	assert_int_equal(chmod(tickets_file, 0644), 0);
	ctx = collector_ctx();
	assert_true(tls_ctx_enable_tickets(ctx, tickets_file, 0, err, sizeof(err)) < 0);
	if (!strstr(err, tickets_file))
		fail_msg("error does not name the file: %s", err);
	SSL_CTX_free(ctx);
	/* A file that is not ours is refused, with the line and the remedy. */
	assert_int_equal(util_write_file_atomic(tickets_file, "garbage\n", 8, 0600, err,
						sizeof(err)),
			 0);
	ctx = collector_ctx();
	assert_true(tls_ctx_enable_tickets(ctx, tickets_file, 0, err, sizeof(err)) < 0);
	if (!strstr(err, ":1: not a ticket key line"))
		fail_msg("unexpected error: %s", err);
	SSL_CTX_free(ctx);
}

/* A long session gets a fresh ticket from its server (tls_conn_new_ticket),
 * and that one resumes too. */
static struct test_conn *ticket_server;

static void refresh_ready_cb(struct tls_conn *c)
{
	side_ready_cb(c);
	ticket_server = c->data;
}

static const struct tls_conn_ops refresh_ops = {.ready_cb = refresh_ready_cb,
						.frame_cb = side_frame_cb,
						.close_cb = side_close_cb};

static void on_refresh_connection(uv_stream_t *server, int status)
{
	accept_with(server, status, &refresh_ops);
}

static int cond_two_tickets(struct world *w)
{
	return client_side.tickets >= 2 || client_side.closed;
}

static void test_fresh_ticket_for_a_long_session(void **state)
{
	snprintf(tickets_file, sizeof(tickets_file), "%s/tickets-refresh", top_dir);
	struct world w;
	world_start(&w, ticket_collector_ctx(0));
	uv_close((uv_handle_t *)&w.listener, NULL);
	uv_run(&w.loop, UV_RUN_NOWAIT);
	uv_tcp_init(&w.loop, &w.listener);
	w.listener.data = &w;
	struct sockaddr_in addr;
	uv_ip4_addr("127.0.0.1", w.port, &addr);
	assert_int_equal(uv_tcp_bind(&w.listener, (struct sockaddr *)&addr, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&w.listener, 8, on_refresh_connection), 0);
	memset(&client_side, 0, sizeof(client_side));
	ticket_server = NULL;
	keep_sessions = 1;
	SSL_CTX *actx = agent_ctx("EXCH01");
	client_connect(&w, actx, "collector.test", &client_side, NULL);
	run_until(&w, cond_ticket);
	assert_non_null(ticket_server);
	assert_int_equal(client_side.tickets, 1);
	int64_t first = ticket_server->conn.ticket_ms;
	uv_sleep(5);
	assert_int_equal(tls_conn_new_ticket(&ticket_server->conn), 0);
	assert_true(ticket_server->conn.ticket_ms > first);
	run_until(&w, cond_two_tickets);
	assert_false(client_side.closed);
	SSL_SESSION *fresh = client_side.session;
	client_side.session = NULL;
	world_end(&w);
	SSL_CTX_free(actx);
	keep_sessions = 0;

	struct side server;
	SSL_SESSION *next = session_with(ticket_collector_ctx(0), "EXCH01", fresh, &server, 1);
	assert_true(server.resumed);
	SSL_SESSION_free(next);
	SSL_SESSION_free(fresh);
}

/* The same handshakes, refusals and resumption with the server's steps on
 * libuv's thread pool, as the collector runs them. */
static void test_handshakes_on_the_thread_pool(void **state)
{
	offload = 1;
	test_mutual_handshake_and_frames(state);
	test_refuses_revoked_certificate(state);
	test_refuses_certificate_from_another_ca(state);
	test_plaintext_and_http_clients_harm_no_one(state);
	test_resumes_after_restart(state);
	test_revoked_agent_cannot_resume(state);
	test_crl_reload(state);
	offload = 0;
}

/* A server that closes while a step is on the thread pool closes once it
 * is back: nothing frees what the step uses. */
static void test_close_during_a_step(void **state)
{
	offload = 1;
	for (int i = 0; i < 20; i++) {
		struct world w;
		world_start(&w, collector_ctx());
		memset(&client_side, 0, sizeof(client_side));
		SSL_CTX *actx = agent_ctx("EXCH01");
		client_connect(&w, actx, "collector.test", &client_side, NULL);
		/* Run until the server has accepted and its first step is
		 * (probably) on the pool, then end the world at once. */
		while (w.accepted == 0)
			uv_run(&w.loop, UV_RUN_ONCE);
		for (int k = 0; k < i % 5; k++)
			uv_run(&w.loop, UV_RUN_NOWAIT);
		world_end(&w);
		SSL_CTX_free(actx);
	}
	offload = 0;
}

int main(void)
{
	log_init(stderr, getenv("EXFLEET_TEST_DEBUG") ? LOG_DEBUG : LOG_ERR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mutual_handshake_and_frames),
		cmocka_unit_test(test_refuses_client_without_certificate),
		cmocka_unit_test(test_refuses_certificate_from_another_ca),
		cmocka_unit_test(test_refuses_expired_certificate),
		cmocka_unit_test(test_refuses_revoked_certificate),
		cmocka_unit_test(test_agent_refuses_wrong_collector_name),
		cmocka_unit_test(test_agent_refuses_collector_from_another_ca),
		cmocka_unit_test(test_plaintext_and_http_clients_harm_no_one),
		cmocka_unit_test(test_oversize_frame_closes_only_that_session),
		cmocka_unit_test(test_write_backpressure),
		cmocka_unit_test(test_pause_between_frames_loses_nothing),
		cmocka_unit_test(test_tls12_only_when_allowed),
		cmocka_unit_test(test_no_tickets_unless_enabled),
		cmocka_unit_test(test_resumes_after_restart),
		cmocka_unit_test(test_revoked_agent_cannot_resume),
		cmocka_unit_test(test_crl_reload),
		cmocka_unit_test(test_ticket_keys_rotate),
		cmocka_unit_test(test_ticket_keys_must_be_private),
		cmocka_unit_test(test_fresh_ticket_for_a_long_session),
		cmocka_unit_test(test_handshakes_on_the_thread_pool),
		cmocka_unit_test(test_close_during_a_step),
	};
	return cmocka_run_group_tests(tests, setup_pki, teardown_pki);
}
