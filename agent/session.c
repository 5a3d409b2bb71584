/* The agent's one long-lived session with the collector:
 *
 *   IDLE → RESOLVING → CONNECTING (TCP, TLS) → HELLO → STREAMING
 *              ↑                                          │ any error
 *              └──────────────── BACKOFF ◀────────────────┘
 *
 * Every failure ends in BACKOFF, with a delay drawn by exponential backoff
 * with full jitter (or the collector's retry_after), so a fleet reconnecting
 * after a collector restart spreads out instead of stampeding. */
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "log.h"
#include "pki.h"
#include "util.h"
#include "wire.h"

#define WELCOME_TIMEOUT_MS 30000
#define SILENT_HEARTBEATS 3

static void session_connect(struct agent_session *s);

static const char *const state_names[] = {"idle",    "resolving", "connecting", "hello",
					  "streaming", "backoff", "stopped"};

static void set_state(struct agent_session *s, enum session_state next)
{
	log_debug("session: %s -> %s", state_names[s->state], state_names[next]);
	s->state = next;
}

/* The last step of session_stop, once no connection or lookup is left. */
static void session_stopped(struct agent_session *s)
{
	uv_close((uv_handle_t *)&s->timer, NULL);
	if (s->stopped_cb)
		s->stopped_cb(s);
}

static void backoff_timer_cb(uv_timer_t *t)
{
	session_connect(t->data);
}

/* After any failure: wait, then try again. */
static void session_backoff(struct agent_session *s)
{
	if (s->state == SESSION_STOPPED)
		return;
	uint64_t delay;
	if (s->retry_after_ms) {
		/* The collector is shedding load: come back when it says, plus
		 * up to a quarter more so the fleet does not return at once. */
		delay = s->retry_after_ms + backoff_next(&s->backoff) % (s->retry_after_ms / 4 + 1);
		s->retry_after_ms = 0;
	} else {
		delay = backoff_next(&s->backoff);
	}
	set_state(s, SESSION_BACKOFF);
	log_info("reconnecting in %.1f s", (double)delay / 1000);
	uv_timer_start(&s->timer, backoff_timer_cb, delay, 0);
}

static int send_message(struct agent_session *s, Exfleet__AgentMessage *m)
{
	int rc = wire_send_agent(&s->conn, m);
	if (rc == 0)
		s->last_tx_ms = util_now_ms();
	return rc;
}

static void send_heartbeat(struct agent_session *s)
{
	Exfleet__Heartbeat hb = EXFLEET__HEARTBEAT__INIT;
	hb.sent_at_ms = util_now_ms();
	Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
	m.msg_case = EXFLEET__AGENT_MESSAGE__MSG_HEARTBEAT;
	m.heartbeat = &hb;
	send_message(s, &m);
}

static void tick_cb(uv_timer_t *t)
{
	struct agent_session *s = t->data;
	int64_t now = util_now_ms();
	if (s->state == SESSION_HELLO) {
		tls_conn_close(&s->conn, LOG_WARN, "no Welcome from the collector within %d s",
			       WELCOME_TIMEOUT_MS / 1000);
		return;
	}
	if (now - s->last_rx_ms > (int64_t)(SILENT_HEARTBEATS * s->heartbeat_ms)) {
		tls_conn_close(&s->conn, LOG_WARN, "collector silent for %lld s",
			       (long long)(now - s->last_rx_ms) / 1000);
		return;
	}
	if (now - s->last_tx_ms >= (int64_t)s->heartbeat_ms - 50)
		send_heartbeat(s);
}

static void send_hello(struct agent_session *s)
{
	const struct agent_config *cfg = s->cfg;
	Exfleet__Label site = EXFLEET__LABEL__INIT, wave = EXFLEET__LABEL__INIT;
	Exfleet__Label *labels[2];
	size_t nlabels = 0;
	if (cfg->site) {
		site.key = "site";
		site.value = cfg->site;
		labels[nlabels++] = &site;
	}
	if (cfg->wave) {
		wave.key = "wave";
		wave.value = cfg->wave;
		labels[nlabels++] = &wave;
	}
	char *caps[] = {"heartbeat"};
	Exfleet__Hello h = EXFLEET__HELLO__INIT;
	h.protocol_version = WIRE_PROTOCOL_VERSION;
	h.host_id = cfg->host_id;
	h.agent_version = EXFLEET_VERSION;
	h.platform = "sim";
	h.n_capabilities = sizeof(caps) / sizeof(caps[0]);
	h.capabilities = caps;
	h.n_labels = nlabels;
	h.labels = labels;
	Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
	m.msg_case = EXFLEET__AGENT_MESSAGE__MSG_HELLO;
	m.hello = &h;
	if (send_message(s, &m) < 0)
		return;
	set_state(s, SESSION_HELLO);
	uv_timer_start(&s->timer, tick_cb, WELCOME_TIMEOUT_MS, 0);
}

static void on_welcome(struct agent_session *s, const Exfleet__Welcome *w)
{
	if (w->error && w->error[0]) {
		tls_conn_close(&s->conn, LOG_ERR, "collector refused this agent: %s", w->error);
		return;
	}
	if (w->retry_after_ms) {
		s->retry_after_ms = w->retry_after_ms;
		tls_conn_close(&s->conn, LOG_INFO, "collector is busy: retry in %u ms",
			       w->retry_after_ms);
		return;
	}
	if (w->heartbeat_interval_s)
		s->heartbeat_ms = (uint64_t)w->heartbeat_interval_s * 1000;
	s->welcomes++;
	backoff_reset(&s->backoff);
	set_state(s, SESSION_STREAMING);
	log_msg(LOG_INFO, s->conn.peer,
		"welcomed by collector %s: protocol %u, heartbeat %llu s, stored up to #%llu",
		w->collector_id, w->protocol_version, (unsigned long long)s->heartbeat_ms / 1000,
		(unsigned long long)w->highest_stored_sequence);
	uv_timer_start(&s->timer, tick_cb, s->heartbeat_ms, s->heartbeat_ms);
}

static void conn_ready_cb(struct tls_conn *c)
{
	struct agent_session *s = c->data;
	if (c->peer_role != PKI_ROLE_COLLECTOR) {
		tls_conn_close(c, LOG_ERR, "peer certificate is not a collector's");
		return;
	}
	s->last_rx_ms = util_now_ms();
	send_hello(s);
}

static void conn_frame_cb(struct tls_conn *c, const uint8_t *payload, size_t len)
{
	struct agent_session *s = c->data;
	char why[160];
	Exfleet__CollectorMessage *m = wire_decode_collector(payload, len, why, sizeof(why));
	if (!m) {
		tls_conn_close(c, LOG_WARN, "protocol error: %s", why);
		return;
	}
	s->last_rx_ms = util_now_ms();
	log_msg(LOG_DEBUG, c->peer, "received %s", wire_collector_kind(m));
	switch (m->msg_case) {
	case EXFLEET__COLLECTOR_MESSAGE__MSG_WELCOME:
		if (s->state != SESSION_HELLO)
			tls_conn_close(c, LOG_WARN, "protocol error: Welcome after the handshake");
		else
			on_welcome(s, m->welcome);
		break;
	case EXFLEET__COLLECTOR_MESSAGE__MSG_HEARTBEAT:
	case EXFLEET__COLLECTOR_MESSAGE__MSG_ACK:
		break;
	case EXFLEET__COLLECTOR_MESSAGE__MSG_COMMAND:
		log_msg(LOG_WARN, c->peer, "command received, but this agent executes none yet");
		break;
	default:
		break;
	}
	exfleet__collector_message__free_unpacked(m, NULL);
}

static void conn_close_cb(struct tls_conn *c)
{
	struct agent_session *s = c->data;
	s->conn_open = 0;
	uv_timer_stop(&s->timer);
	if (s->state == SESSION_STOPPED) {
		if (!s->resolving)
			session_stopped(s);
		return;
	}
	session_backoff(s);
}

static const struct tls_conn_ops conn_ops = {conn_ready_cb, conn_frame_cb, conn_close_cb};

static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct agent_session *s = req->data;
	s->resolving = 0;
	if (s->state == SESSION_STOPPED) {
		uv_freeaddrinfo(res);
		if (!s->conn_open)
			session_stopped(s);
		return;
	}
	if (status < 0) {
		log_warn("cannot resolve collector address %s: %s", s->cfg->collector_address,
			 uv_strerror(status));
		session_backoff(s);
		return;
	}
	set_state(s, SESSION_CONNECTING);
	struct tls_limits limits;
	tls_limits_default(&limits);
	limits.max_frame = s->cfg->max_frame;
	s->conn.data = s;
	s->conn_open = 1;
	tls_conn_connect(&s->conn, s->loop, res->ai_addr, s->tls, s->cfg->collector_name,
			 &limits, &conn_ops);
	uv_freeaddrinfo(res);
}

static void session_connect(struct agent_session *s)
{
	char host[256], port[8];
	if (util_split_hostport(s->cfg->collector_address, host, sizeof(host), port,
				sizeof(port)) < 0) {
		log_err("collector address '%s' is not host:port", s->cfg->collector_address);
		session_backoff(s);
		return;
	}
	set_state(s, SESSION_RESOLVING);
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	s->resolve.data = s;
	s->resolving = 1;
	int rc = uv_getaddrinfo(s->loop, &s->resolve, resolved_cb, host, port, &hints);
	if (rc < 0) {
		s->resolving = 0;
		log_warn("cannot resolve collector address %s: %s", s->cfg->collector_address,
			 uv_strerror(rc));
		session_backoff(s);
	}
}

int session_init(struct agent_session *s, uv_loop_t *loop, const struct agent_config *cfg,
		 SSL_CTX *tls)
{
	memset(s, 0, sizeof(*s));
	s->loop = loop;
	s->cfg = cfg;
	s->tls = tls;
	s->heartbeat_ms = cfg->heartbeat_ms;
	uint64_t seed = (uint64_t)util_now_ms() ^ ((uint64_t)uv_os_getpid() << 32);
	for (const char *p = cfg->host_id; *p; p++)
		seed = seed * 131 + (uint8_t)*p;
	backoff_init(&s->backoff, cfg->reconnect_min_ms, cfg->reconnect_max_ms, seed);
	uv_timer_init(loop, &s->timer);
	s->timer.data = s;
	return 0;
}

void session_start(struct agent_session *s)
{
	session_connect(s);
}

void session_stop(struct agent_session *s, void (*stopped_cb)(struct agent_session *s))
{
	if (s->state == SESSION_STOPPED)
		return;
	set_state(s, SESSION_STOPPED);
	s->stopped_cb = stopped_cb;
	uv_timer_stop(&s->timer);
	if (s->resolving) {
		uv_cancel((uv_req_t *)&s->resolve);
		return; /* resolved_cb finishes */
	}
	if (s->conn_open) {
		tls_conn_close(&s->conn, LOG_INFO, "agent stopping");
		return; /* conn_close_cb finishes */
	}
	session_stopped(s);
}
