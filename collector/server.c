/* The agent-facing server: accepts mutual-TLS sessions, checks each agent's
 * Hello against its certificate, welcomes it, and keeps one session per host. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector.h"
#include "log.h"
#include "pki.h"
#include "sign.h"
#include "util.h"
#include "wire.h"

#define HELLO_TIMEOUT_MS 30000
/* Fresh tickets for long-lived sessions, at most this many a second, so
 * that a fleet that came up at once does not refresh in one loop turn. */
#define TICKET_REFRESH_PER_SWEEP 500
/* Handshakes since the last trim of the heap that make another worth it. */
#define TRIM_AFTER_HANDSHAKES 256

static void admit(struct server *srv);
static void wait_unlink(struct server *srv, struct agent_conn *a);
#define SILENT_HEARTBEATS 3

static void conns_link(struct server *srv, struct agent_conn *a)
{
	a->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = a;
	srv->conns = a;
	srv->nconns++;
}

static void conns_unlink(struct server *srv, struct agent_conn *a)
{
	if (a->prev)
		a->prev->next = a->next;
	else
		srv->conns = a->next;
	if (a->next)
		a->next->prev = a->prev;
	srv->nconns--;
}

static void maybe_stopped(struct server *srv)
{
	if (srv->stopping && srv->nconns == 0 && uv_is_closing((uv_handle_t *)&srv->listener)) {
		uv_close((uv_handle_t *)&srv->sweep, NULL);
		hostmap_free(&srv->sessions);
		if (srv->stopped_cb)
			srv->stopped_cb(srv);
	}
}

/* Welcomes an agent, or refuses it when error is set. */
static void welcome(struct agent_conn *a, const char *error, uint64_t stored)
{
	const struct collector_config *cfg = a->server->cfg;
	Exfleet__Welcome w = EXFLEET__WELCOME__INIT;
	w.protocol_version = WIRE_PROTOCOL_VERSION;
	w.collector_id = cfg->id;
	w.server_time_ms = util_now_ms();
	w.heartbeat_interval_s = (uint32_t)(cfg->heartbeat_ms / 1000);
	w.max_frame_size = (uint32_t)cfg->max_frame;
	w.error = (char *)(error ? error : "");
	w.highest_stored_sequence = stored;
	Exfleet__CollectorMessage m = EXFLEET__COLLECTOR_MESSAGE__INIT;
	m.msg_case = EXFLEET__COLLECTOR_MESSAGE__MSG_WELCOME;
	m.welcome = &w;
	wire_send_collector(&a->conn, &m);
}

/* Refuses a Hello: the agent is told why, then the session closes. */
static void refuse(struct agent_conn *a, const char *why)
{
	welcome(a, why, 0);
	tls_conn_close(&a->conn, LOG_WARN, "refused: %s", why);
}

/* Checks a Hello and welcomes the agent: 0, or negative when refused. */
static int on_hello(struct agent_conn *a, const Exfleet__Hello *h)
{
	struct server *srv = a->server;
	char why[256];
	if (h->protocol_version != WIRE_PROTOCOL_VERSION) {
		snprintf(why, sizeof(why),
			 "protocol version %u is not supported; this collector speaks %u",
			 h->protocol_version, WIRE_PROTOCOL_VERSION);
		refuse(a, why);
		return -1;
	}
	if (strcmp(h->host_id, a->conn.peer_name) != 0) {
		snprintf(why, sizeof(why),
			 "Hello names host '%.64s' but the certificate is for '%s'", h->host_id,
			 a->conn.peer_name);
		refuse(a, why);
		return -1;
	}
	/* One session per host: the newest wins, since the older one is most
	 * likely a connection the agent has already given up on. */
	struct agent_conn *old = hostmap_get(&srv->sessions, h->host_id);
	if (old)
		tls_conn_close(&old->conn, LOG_INFO, "replaced by a new session from %s",
			       tls_conn_addr(&a->conn));
	if (srv->cfg->max_sessions > 0 && !old && srv->nready >= (unsigned)srv->cfg->max_sessions) {
		/* Full: come back later, spread by jitter. */
		uint64_t base = srv->cfg->retry_after_ms;
		Exfleet__Welcome w = EXFLEET__WELCOME__INIT;
		w.protocol_version = WIRE_PROTOCOL_VERSION;
		w.collector_id = srv->cfg->id;
		w.server_time_ms = util_now_ms();
		w.retry_after_ms = (uint32_t)(base / 2 + (uint64_t)rand() % (base + 1));
		Exfleet__CollectorMessage m = EXFLEET__COLLECTOR_MESSAGE__INIT;
		m.msg_case = EXFLEET__COLLECTOR_MESSAGE__MSG_WELCOME;
		m.welcome = &w;
		wire_send_collector(&a->conn, &m);
		srv->shed++;
		tls_conn_close(&a->conn, LOG_INFO, "shed: %u sessions (max_sessions): retry in %u ms",
			       srv->nready, w.retry_after_ms);
		return -1;
	}
	uint64_t stored = 0;
	if (store_host_highest(srv->store, h->host_id, &stored) < 0) {
		refuse(a, "the collector cannot read its store; try again later");
		return -1;
	}
	if (hostmap_put(&srv->sessions, a->conn.peer_name, a) < 0) {
		tls_conn_close(&a->conn, LOG_ERR, "out of memory");
		return -1;
	}
	a->state = AGENT_READY;
	a->acked = stored;
	srv->nready++;
	char labels[160] = "";
	size_t used = 0;
	for (size_t i = 0; i < h->n_labels && used < sizeof(labels); i++)
		used += (size_t)snprintf(labels + used, sizeof(labels) - used, " %.32s=%.32s",
					 h->labels[i]->key, h->labels[i]->value);
	log_msg(LOG_INFO, a->conn.peer,
		"Hello: agent %.32s on %.64s%s, holds up to #%llu; stored up to #%llu; "
		"welcomed (%u online)",
		h->agent_version, h->platform, labels, (unsigned long long)h->highest_sequence,
		(unsigned long long)stored, srv->nready);
	welcome(a, NULL, stored);
	relay_host_ready(&srv->relay, a->conn.peer_name);
	return 0;
}

static void on_heartbeat(struct agent_conn *a)
{
	Exfleet__Heartbeat hb = EXFLEET__HEARTBEAT__INIT;
	hb.sent_at_ms = util_now_ms();
	Exfleet__CollectorMessage m = EXFLEET__COLLECTOR_MESSAGE__INIT;
	m.msg_case = EXFLEET__COLLECTOR_MESSAGE__MSG_HEARTBEAT;
	m.heartbeat = &hb;
	wire_send_collector(&a->conn, &m);
}

static void conn_ready_cb(struct tls_conn *c)
{
	struct agent_conn *a = c->data;
	a->server->nhandshakes--;
	a->server->handshakes_done++;
	a->server->resumed += c->resumed;
	a->state = AGENT_HELLO;
	a->last_rx_ms = util_now_ms();
	admit(a->server);
	if (c->peer_role != PKI_ROLE_AGENT) {
		tls_conn_close(c, LOG_WARN,
			       "refused: a certificate of role '%s' may not connect as an agent",
			       pki_role_name((enum pki_role)c->peer_role));
		return;
	}
	if (a->server->readers_paused)
		tls_conn_pause(c, TLS_PAUSE_OWNER);
}

static void pause_readers(struct server *srv, int pause)
{
	srv->readers_paused = pause;
	for (struct agent_conn *a = srv->conns; a; a = a->next) {
		if (pause)
			tls_conn_pause(&a->conn, TLS_PAUSE_OWNER);
		else
			tls_conn_resume(&a->conn, TLS_PAUSE_OWNER);
	}
}

/* Hands a message with records to the store; ownership of m (and of cert,
 * OpenSSL-allocated DER) goes with it. The records are acknowledged once
 * committed (server_committed). */
static void submit_with_cert(struct agent_conn *a, Exfleet__AgentMessage *m, uint8_t *cert,
			     size_t cert_len)
{
	struct server *srv = a->server;
	struct store_write *w = calloc(1, sizeof(*w));
	if (!w) {
		exfleet__agent_message__free_unpacked(m, NULL);
		OPENSSL_free(cert);
		tls_conn_close(&a->conn, LOG_ERR, "out of memory");
		return;
	}
	if (cert) {
		/* The store frees with free(): copy out of OpenSSL's allocator. */
		w->peer_cert = malloc(cert_len);
		if (w->peer_cert) {
			memcpy(w->peer_cert, cert, cert_len);
			w->peer_cert_len = cert_len;
		}
		OPENSSL_free(cert);
	}
	snprintf(w->host_id, sizeof(w->host_id), "%s", a->conn.peer_name);
	w->msg = m;
	w->received_ms = a->last_rx_ms;
	size_t depth = store_submit(srv->store, w);
	/* The store is behind: stop reading from every agent rather than
	 * buffer without bound; agents keep their records spooled. */
	if (depth >= (size_t)srv->cfg->store_queue_high && !srv->readers_paused) {
		log_warn("store is behind (%zu messages queued): pausing agent sessions", depth);
		srv->pauses++;
		pause_readers(srv, 1);
	}
}

static void submit(struct agent_conn *a, Exfleet__AgentMessage *m)
{
	submit_with_cert(a, m, NULL, 0);
}

void server_committed(struct store_write *w, void *arg)
{
	struct server *srv = arg;
	struct agent_conn *a = w->msg ? hostmap_get(&srv->sessions, w->host_id) : NULL;
	if (w->status == 0 && a && a->state == AGENT_READY && w->highest_seq > a->acked) {
		Exfleet__Ack ack = EXFLEET__ACK__INIT;
		ack.sequence = w->highest_seq;
		Exfleet__CollectorMessage m = EXFLEET__COLLECTOR_MESSAGE__INIT;
		m.msg_case = EXFLEET__COLLECTOR_MESSAGE__MSG_ACK;
		m.ack = &ack;
		if (wire_send_collector(&a->conn, &m) == 0) {
			a->acked = w->highest_seq;
			srv->acks++;
		}
	}
	if (srv->readers_paused &&
	    store_queue_depth(srv->store) <= (size_t)srv->cfg->store_queue_low) {
		log_info("store caught up: agent sessions read again");
		pause_readers(srv, 0);
	}
}

/* A Hello goes to the store with the agent's certificate, which operators
 * need to check the sealing key the Hello carries. */
static void submit_hello(struct agent_conn *a, Exfleet__AgentMessage *m)
{
	X509 *cert = SSL_get0_peer_certificate(a->conn.ssl);
	uint8_t *der = NULL;
	int len = cert ? i2d_X509(cert, &der) : -1;
	submit_with_cert(a, m, len > 0 ? der : NULL, len > 0 ? (size_t)len : 0);
}

static void conn_frame_cb(struct tls_conn *c, const uint8_t *payload, size_t len)
{
	struct agent_conn *a = c->data;
	char why[160];
	Exfleet__AgentMessage *m = wire_decode_agent(payload, len, why, sizeof(why));
	if (!m) {
		tls_conn_close(c, LOG_WARN, "protocol error: %s", why);
		return;
	}
	a->last_rx_ms = util_now_ms();
	log_msg(LOG_DEBUG, c->peer, "received %s", wire_agent_kind(m));
	if (a->state == AGENT_HELLO) {
		if (m->msg_case != EXFLEET__AGENT_MESSAGE__MSG_HELLO) {
			tls_conn_close(c, LOG_WARN, "protocol error: %s before Hello",
				       wire_agent_kind(m));
		} else if (on_hello(a, m->hello) == 0) {
			submit_hello(a, m);
			return;
		}
	} else {
		switch (m->msg_case) {
		case EXFLEET__AGENT_MESSAGE__MSG_HELLO:
			tls_conn_close(c, LOG_WARN, "protocol error: a second Hello");
			break;
		case EXFLEET__AGENT_MESSAGE__MSG_HEARTBEAT:
			on_heartbeat(a);
			submit(a, m); /* the host's last_seen */
			return;
		default:
			submit(a, m);
			return;
		}
	}
	exfleet__agent_message__free_unpacked(m, NULL);
}

static void conn_close_cb(struct tls_conn *c)
{
	struct agent_conn *a = c->data;
	struct server *srv = a->server;
	if (a->state == AGENT_READY) {
		srv->nready--;
		hostmap_remove(&srv->sessions, a->conn.peer_name, a);
	} else if (a->state == AGENT_HANDSHAKE) {
		srv->nhandshakes--;
	} else if (a->state == AGENT_WAITING) {
		wait_unlink(srv, a);
	}
	conns_unlink(srv, a);
	free(a);
	if (!srv->stopping)
		admit(srv);
	maybe_stopped(srv);
}

static const struct tls_conn_ops conn_ops = {
	.ready_cb = conn_ready_cb, .frame_cb = conn_frame_cb, .close_cb = conn_close_cb};

static void wait_push(struct server *srv, struct agent_conn *a)
{
	a->wait_prev = srv->wait_tail;
	a->wait_next = NULL;
	if (srv->wait_tail)
		srv->wait_tail->wait_next = a;
	else
		srv->wait_head = a;
	srv->wait_tail = a;
	srv->nwaiting++;
}

static void wait_unlink(struct server *srv, struct agent_conn *a)
{
	if (a->wait_prev)
		a->wait_prev->wait_next = a->wait_next;
	else
		srv->wait_head = a->wait_next;
	if (a->wait_next)
		a->wait_next->wait_prev = a->wait_prev;
	else
		srv->wait_tail = a->wait_prev;
	a->wait_prev = a->wait_next = NULL;
	srv->nwaiting--;
}

/* Starts waiting handshakes while there are free slots, oldest first.
 * Agents wait longer for their handshake ([agents] wait_timeout, below
 * their own 30 s) than it takes to work through a storm's queue at the
 * handshake rate, so each is served in its turn; an agent turned away
 * would come back only after its backoff, which grows with every failure. */
static void admit(struct server *srv)
{
	while (srv->wait_head && srv->nhandshakes < (unsigned)srv->cfg->max_handshakes) {
		struct agent_conn *a = srv->wait_head;
		wait_unlink(srv, a);
		a->state = AGENT_HANDSHAKE;
		srv->nhandshakes++;
		tls_conn_start(&a->conn);
	}
}

static void on_connection(uv_stream_t *listener, int status)
{
	struct server *srv = listener->data;
	if (status < 0) {
		/* libuv has already accepted and closed what it could not keep,
		 * so this does not spin; say so now and then, not each time. */
		srv->emfile += status == UV_EMFILE || status == UV_ENFILE;
		int64_t now = util_now_ms();
		if (now - srv->last_emfile_log_ms > 10000) {
			srv->last_emfile_log_ms = now;
			log_warn("accept: %s (%llu times so far; %u connections open): raise the "
				 "file limit or lower [agents] max_waiting",
				 uv_strerror(status), (unsigned long long)srv->emfile, srv->nconns);
		}
		return;
	}
	struct agent_conn *a = calloc(1, sizeof(*a));
	if (!a) {
		log_err("accept: out of memory");
		return;
	}
	a->server = srv;
	a->connected_ms = util_now_ms();
	a->conn.data = a;
	conns_link(srv, a);
	if (srv->nhandshakes < (unsigned)srv->cfg->max_handshakes) {
		a->state = AGENT_HANDSHAKE;
		srv->nhandshakes++;
		tls_conn_accept(&a->conn, listener, srv->tls, &srv->limits, &conn_ops);
		return;
	}
	/* A reconnect storm: past the handshakes the CPU can take, connections
	 * wait their turn, and past that they are closed at once; agents back
	 * off with jitter and come back. */
	a->state = AGENT_WAITING;
	wait_push(srv, a);
	tls_conn_accept_held(&a->conn, listener, srv->tls, &srv->limits, &conn_ops);
	if (srv->nwaiting > (unsigned)srv->cfg->max_waiting) {
		srv->shed++;
		tls_conn_close(&a->conn, LOG_DEBUG, "shed: %u connections already waiting",
			       srv->nwaiting - 1);
	}
}

static void sweep_cb(uv_timer_t *t)
{
	struct server *srv = t->data;
	int64_t now = util_now_ms();
	int64_t silent = (int64_t)(SILENT_HEARTBEATS * srv->cfg->heartbeat_ms);
	unsigned tickets = 0;
	for (struct agent_conn *a = srv->conns, *next; a; a = next) {
		next = a->next;
		/* An agent's ticket must still open after a restart, however
		 * long its session has lasted. */
		if (srv->ticket_refresh_ms && a->state == AGENT_READY &&
		    now - a->conn.ticket_ms > (int64_t)srv->ticket_refresh_ms &&
		    tickets < TICKET_REFRESH_PER_SWEEP) {
			tickets++;
			if (tls_conn_new_ticket(&a->conn) < 0)
				continue; /* closing */
		}
		if (a->state == AGENT_WAITING &&
		    now - a->connected_ms > (int64_t)srv->cfg->wait_timeout_ms)
			/* Its agent's own handshake deadline is about to pass. */
			tls_conn_close(&a->conn, LOG_DEBUG, "waited %lld ms for a handshake slot",
				       (long long)(now - a->connected_ms));
		else if (a->state == AGENT_HELLO && now - a->last_rx_ms > HELLO_TIMEOUT_MS)
			tls_conn_close(&a->conn, LOG_WARN, "no Hello within %d s",
				       HELLO_TIMEOUT_MS / 1000);
		else if (a->state == AGENT_READY && (a->conn.paused & TLS_PAUSE_WRITE) &&
			 a->stalled_since_ms && now - a->stalled_since_ms > (int64_t)srv->cfg->heartbeat_ms)
			/* Reading from it stopped because it does not read our
			 * replies; it would look silent, but the cause is this. */
			tls_conn_close(&a->conn, LOG_WARN,
				       "agent has not read its replies for %lld s (%zu bytes queued)",
				       (long long)(now - a->stalled_since_ms) / 1000,
				       a->conn.write_queued);
		else if (a->state == AGENT_READY && now - a->last_rx_ms > silent)
			tls_conn_close(&a->conn, LOG_WARN, "silent for %lld s: offline",
				       (long long)(now - a->last_rx_ms) / 1000);
		if (a->conn.paused & TLS_PAUSE_WRITE) {
			if (!a->stalled_since_ms)
				a->stalled_since_ms = now;
		} else {
			a->stalled_since_ms = 0;
		}
	}
	/* A burst of handshakes is over: the memory its steps used for a
	 * moment, spread over the thread pool's malloc arenas, goes back to
	 * the system rather than staying resident beside thousands of idle
	 * sessions. */
	if (srv->nhandshakes == 0 && srv->nwaiting == 0 &&
	    srv->handshakes_done - srv->trimmed_at >= TRIM_AFTER_HANDSHAKES) {
		srv->trimmed_at = srv->handshakes_done;
		int64_t t0 = util_now_ms();
		util_trim_memory();
		log_msg(LOG_DEBUG, NULL, "heap trimmed after a burst of handshakes in %lld ms",
			(long long)(util_now_ms() - t0));
	}
}

int server_reload_crl(struct server *srv, size_t *revoked, unsigned *closed, char *err,
		      size_t errlen)
{
	*closed = 0;
	if (tls_ctx_reload_crl(srv->tls, srv->cfg->crl_file, revoked, err, errlen) < 0)
		return -1;
	char why[512];
	if (relay_reload_crl(&srv->relay, why, sizeof(why)) < 0) {
		/* The agents' CRL is in force; the relay keeps its own until it
		 * can read the file, and the agents check commands themselves. */
		snprintf(err, errlen, "the relay's check: %s", why);
		return -1;
	}
	for (struct agent_conn *a = srv->conns, *next; a; a = next) {
		next = a->next;
		if ((a->state == AGENT_HELLO || a->state == AGENT_READY) &&
		    a->conn.state != TLS_CLOSING &&
		    tls_ctx_revoked(srv->tls, SSL_get0_peer_certificate(a->conn.ssl))) {
			tls_conn_close(&a->conn, LOG_WARN, "certificate revoked: session closed");
			(*closed)++;
		}
	}
	return 0;
}

int server_start(struct server *srv, uv_loop_t *loop, const struct collector_config *cfg,
		 SSL_CTX *tls, struct store *store, char *err, size_t errlen)
{
	memset(srv, 0, sizeof(*srv));
	srv->loop = loop;
	srv->store = store;
	hostmap_init(&srv->sessions);
	srv->cfg = cfg;
	srv->tls = tls;
	tls_limits_default(&srv->limits);
	srv->ticket_refresh_ms = tls_ctx_ticket_lifetime_ms(tls) / 2;
	srv->limits.max_frame = cfg->max_frame;
	srv->limits.handshake_timeout_ms = cfg->handshake_timeout_ms;
	/* The loop moves bytes; handshakes run on the thread pool, on every
	 * core, when a fleet reconnects at once. */
	srv->limits.offload_handshake = 1;
	srv->limits.write_max = cfg->write_queue_max;
	if (srv->limits.write_high > cfg->write_queue_max / 2) {
		srv->limits.write_high = cfg->write_queue_max / 2;
		srv->limits.write_low = cfg->write_queue_max / 8;
	}

	char host[256], port[8];
	if (util_split_hostport(cfg->listen, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(err, errlen, "[collector] listen: '%s' is not host:port", cfg->listen);
		return UV_EINVAL;
	}
	struct sockaddr_storage ss;
	int rc = strchr(host, ':') ? uv_ip6_addr(host, atoi(port), (struct sockaddr_in6 *)&ss)
				   : uv_ip4_addr(host, atoi(port), (struct sockaddr_in *)&ss);
	if (rc < 0) {
		snprintf(err, errlen, "[collector] listen: '%s' is not an IP address", host);
		return rc;
	}
	uv_tcp_init(loop, &srv->listener);
	srv->listener.data = srv;
	rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&srv->listener, 4096, on_connection);
	if (rc < 0) {
		snprintf(err, errlen, "[collector] listen: cannot listen on %s: %s", cfg->listen,
			 uv_strerror(rc));
		uv_close((uv_handle_t *)&srv->listener, NULL);
		return rc;
	}
	/* Port 0 asks the system for one: report the one it gave. */
	int sslen = sizeof(ss);
	uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &sslen);
	uv_ip_name((struct sockaddr *)&ss, host, sizeof(host));
	snprintf(srv->bound, sizeof(srv->bound), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
		 ntohs(((struct sockaddr_in *)&ss)->sin_port));
	relay_init(&srv->relay, loop, srv, store);
	if (cfg->ca_file) {
		srv->relay.verifier = sign_verifier_new(cfg->ca_file, cfg->crl_file, err, errlen);
		if (!srv->relay.verifier)
			log_warn("relay: commands will not be checked before delivery: %s", err);
	}
	uv_timer_init(loop, &srv->sweep);
	srv->sweep.data = srv;
	uv_timer_start(&srv->sweep, sweep_cb, 1000, 1000);
	return 0;
}

void server_stop(struct server *srv, void (*stopped_cb)(struct server *srv))
{
	srv->stopping = 1;
	srv->stopped_cb = stopped_cb;
	uv_close((uv_handle_t *)&srv->listener, NULL);
	uv_timer_stop(&srv->sweep);
	relay_close(&srv->relay); /* frees the verifier once no check uses it */
	for (struct agent_conn *a = srv->conns, *next; a; a = next) {
		next = a->next;
		tls_conn_close(&a->conn, LOG_DEBUG, "collector stopping");
	}
	maybe_stopped(srv);
}
