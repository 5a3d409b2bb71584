/* The agent's one long-lived session with the collector:
 *
 *   IDLE → RESOLVING → CONNECTING (TCP, TLS) → HELLO → STREAMING
 *              ↑                                          │ any error
 *              └──────────────── BACKOFF ◀────────────────┘
 *
 * Every failure ends in BACKOFF, with a delay drawn by exponential backoff
 * with full jitter (or the collector's retry_after), so a fleet reconnecting
 * after a collector restart spreads out instead of stampeding; the delay's
 * ceiling never exceeds the time since the collector was last reachable, so
 * a short outage costs a short wait. */
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

#include "agent.h"
#include "command.h"
#include "log.h"
#include "pki.h"
#include "util.h"
#include "wire.h"

#define WELCOME_TIMEOUT_MS 30000
#define SESSION_HANDSHAKE_TIMEOUT_MS 30000
#define SILENT_HEARTBEATS 3
/* Records sent and not yet acknowledged, at most; and events per batch. */
#define SEND_WINDOW 8192
#define BATCH_EVENTS 256

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
	SSL_SESSION_free(s->last_session);
	s->last_session = NULL;
	uv_close((uv_handle_t *)&s->timer, NULL);
	if (s->stopped_cb)
		s->stopped_cb(s);
}

static void backoff_timer_cb(uv_timer_t *t)
{
	session_connect(t->data);
}

/* Full jitter under the exponential ceiling, scaled down to at most the
 * time the collector has been out of reach (and at least the first
 * ceiling). Doubling per attempt alone lets quick failures during a
 * one-second restart push the unluckiest of thousands of agents to 8 or
 * 16 s; bounded by the outage, all are back within about twice it. */
static uint64_t reconnect_delay(struct backoff *b, uint64_t down_ms)
{
	uint64_t ceiling = backoff_ceiling(b);
	uint64_t r = backoff_next(b); /* uniform on [0, ceiling] */
	uint64_t limit = down_ms > b->base_ms ? down_ms : b->base_ms;
	return limit >= ceiling ? r : r * limit / ceiling;
}

/* After any failure: wait, then try again. */
static void session_backoff(struct agent_session *s)
{
	if (s->state == SESSION_STOPPED)
		return;
	int64_t now = util_now_ms();
	if (!s->down_since_ms)
		s->down_since_ms = now;
	uint64_t delay;
	if (s->retry_after_ms) {
		/* The collector is shedding load: come back when it says, plus
		 * up to a quarter more so the fleet does not return at once. */
		delay = s->retry_after_ms + backoff_next(&s->backoff) % (s->retry_after_ms / 4 + 1);
		s->retry_after_ms = 0;
	} else {
		delay = reconnect_delay(&s->backoff, (uint64_t)(now - s->down_since_ms));
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
	hb.highest_sequence = spool_highest(s->spool);
	hb.spool_dropped = spool_dropped(s->spool);
	hb.spool_bytes = spool_bytes(s->spool);
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
	session_kick(s);
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
	char *caps[] = {"spool", "commands", "seal-x25519"};
	Exfleet__Hello h = EXFLEET__HELLO__INIT;
	h.protocol_version = WIRE_PROTOCOL_VERSION;
	h.host_id = cfg->host_id;
	h.agent_version = EXFLEET_VERSION;
	h.platform = (char *)s->platform;
	h.highest_sequence = spool_highest(s->spool);
	h.lowest_sequence = spool_lowest_unacked(s->spool);
	h.spool_dropped = spool_dropped(s->spool);
	h.n_capabilities = sizeof(caps) / sizeof(caps[0]);
	h.capabilities = caps;
	/* In every Hello, so the collector always has the key in use, also
	 * after the file was removed and a new key made at start. */
	if (s->commands && s->commands->seal_key) {
		h.sealing_public_key.data = s->commands->seal_public;
		h.sealing_public_key.len = SEAL_KEY_LEN;
		h.sealing_key_signature.data = s->commands->seal_signature;
		h.sealing_key_signature.len = s->commands->seal_signature_len;
	} else {
		h.n_capabilities--; /* no key: nothing can be sealed to this agent */
	}
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

static void on_ack(struct agent_session *s, uint64_t seq)
{
	char err[256];
	if (seq > spool_highest(s->spool)) {
		tls_conn_close(&s->conn, LOG_WARN,
			       "protocol error: Ack #%llu beyond the highest record #%llu",
			       (unsigned long long)seq, (unsigned long long)spool_highest(s->spool));
		return;
	}
	if (spool_ack(s->spool, seq, err, sizeof(err)) < 0)
		log_err("%s", err);
}

static void send_events(struct agent_session *s, Exfleet__Event **events, size_t *n)
{
	if (*n == 0)
		return;
	Exfleet__EventBatch b = EXFLEET__EVENT_BATCH__INIT;
	b.events = events;
	b.n_events = *n;
	Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
	m.msg_case = EXFLEET__AGENT_MESSAGE__MSG_EVENTS;
	m.events = &b;
	send_message(s, &m);
	for (size_t i = 0; i < *n; i++)
		exfleet__event__free_unpacked(events[i], NULL);
	*n = 0;
}

/* A spooled snapshot or result, in its envelope. */
static void send_record(struct agent_session *s, const struct spool_record *rec)
{
	Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
	if (rec->kind == SPOOL_SNAPSHOT) {
		Exfleet__Snapshot *snap = exfleet__snapshot__unpack(NULL, rec->len, rec->payload);
		if (snap) {
			m.msg_case = EXFLEET__AGENT_MESSAGE__MSG_SNAPSHOT;
			m.snapshot = snap;
			send_message(s, &m);
			exfleet__snapshot__free_unpacked(snap, NULL);
			return;
		}
	} else {
		Exfleet__CommandResult *r =
			exfleet__command_result__unpack(NULL, rec->len, rec->payload);
		if (r) {
			m.msg_case = EXFLEET__AGENT_MESSAGE__MSG_COMMAND_RESULT;
			m.command_result = r;
			send_message(s, &m);
			exfleet__command_result__free_unpacked(r, NULL);
			return;
		}
	}
	log_err("spool record #%llu does not decode: skipped", (unsigned long long)rec->seq);
}

/* Sends spooled records after sent_upto, in order: events in batches,
 * snapshots and results one by one, while the window and the connection's
 * write queue have room. Acks, drained writes and new records call again. */
void session_kick(struct agent_session *s)
{
	if (s->state != SESSION_STREAMING)
		return;
	struct spool_iter it;
	if (spool_iter_init(s->spool, &it, s->sent_upto) < 0)
		return;
	Exfleet__Event *batch[BATCH_EVENTS];
	size_t n = 0;
	struct spool_record rec;
	while (s->state == SESSION_STREAMING &&
	       s->sent_upto - spool_acked(s->spool) < SEND_WINDOW &&
	       s->conn.write_queued < s->conn.limits.write_high / 2 &&
	       spool_iter_next(&it, &rec) == 1) {
		s->sent_upto = rec.seq;
		if (rec.kind == SPOOL_EVENT) {
			batch[n] = exfleet__event__unpack(NULL, rec.len, rec.payload);
			if (!batch[n])
				log_err("spool record #%llu does not decode: skipped",
					(unsigned long long)rec.seq);
			else if (++n == BATCH_EVENTS)
				send_events(s, batch, &n);
			continue;
		}
		send_events(s, batch, &n);
		send_record(s, &rec);
	}
	send_events(s, batch, &n);
	spool_iter_close(&it);
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
	s->down_since_ms = 0;
	set_state(s, SESSION_STREAMING);
	uint64_t stored = w->highest_stored_sequence;
	uint64_t highest = spool_highest(s->spool);
	log_msg(LOG_INFO, s->conn.peer,
		"welcomed by collector %s: protocol %u, heartbeat %llu s, stored up to #%llu, "
		"spool up to #%llu",
		w->collector_id, w->protocol_version, (unsigned long long)s->heartbeat_ms / 1000,
		(unsigned long long)stored, (unsigned long long)highest);
	if (stored > highest)
		log_err("the collector holds records up to #%llu but this agent's spool ends at "
			"#%llu: the spool was reset, and the collector will take new records "
			"up to #%llu for ones it has",
			(unsigned long long)stored, (unsigned long long)highest,
			(unsigned long long)stored);
	/* What the collector already has leaves the spool; the rest is sent. */
	on_ack(s, stored < highest ? stored : highest);
	s->sent_upto = spool_acked(s->spool);
	uv_timer_start(&s->timer, tick_cb, s->heartbeat_ms, s->heartbeat_ms);
	session_kick(s);
}

static void conn_ready_cb(struct tls_conn *c)
{
	struct agent_session *s = c->data;
	if (c->peer_role != PKI_ROLE_COLLECTOR) {
		tls_conn_close(c, LOG_ERR, "peer certificate is not a collector's");
		return;
	}
	s->last_rx_ms = util_now_ms();
	s->resumed += c->resumed;
	send_hello(s);
}

/* The collector's tickets: the newest is offered on the next connection,
 * which then costs the collector a fraction of a full handshake. */
static int conn_session_cb(struct tls_conn *c, SSL_SESSION *session)
{
	struct agent_session *s = c->data;
	if (!s->cfg->resumption)
		return 0;
	SSL_SESSION_free(s->last_session);
	s->last_session = session;
	return 1;
}

/* A revocation is in force from the next connection (the collector's
 * certificate) and the next command (the operator's) on: the CRL file is
 * looked at (one stat) before each, and read again when it changed. */
static void crl_refresh(struct agent_session *s)
{
	const char *crl = s->cfg->crl_file;
	char err[512];
	if (!crl || !crl[0] || util_file_changed(crl, &s->crl_stamp) <= 0)
		return;
	int tls_rc = tls_ctx_reload_crl(s->tls, crl, NULL, err, sizeof(err));
	if (tls_rc < 0)
		log_err("[tls] crl: %s; the collector's certificate is checked against the CRL "
			"read before",
			err);
	int cmd_rc = commands_reload_crl(s->commands, err, sizeof(err));
	if (cmd_rc < 0)
		log_err("[tls] crl: %s; operators' commands are checked against the CRL read before",
			err);
	if (tls_rc == 0 && cmd_rc == 0)
		log_info("[tls] crl %s read again for operators' commands and the collector's "
			 "certificate",
			 crl);
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
		break;
	case EXFLEET__COLLECTOR_MESSAGE__MSG_ACK:
		if (s->state == SESSION_STREAMING) {
			on_ack(s, m->ack->sequence);
			session_kick(s);
		}
		break;
	case EXFLEET__COLLECTOR_MESSAGE__MSG_COMMAND:
		if (s->state == SESSION_STREAMING) {
			/* The command moves to the command queue with its memory. */
			crl_refresh(s);
			commands_receive(s->commands, m->command);
			m->command = NULL;
			m->msg_case = EXFLEET__COLLECTOR_MESSAGE__MSG__NOT_SET;
		}
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

static void conn_drained_cb(struct tls_conn *c)
{
	session_kick(c->data);
}

static const struct tls_conn_ops conn_ops = {.ready_cb = conn_ready_cb,
					     .frame_cb = conn_frame_cb,
					     .close_cb = conn_close_cb,
					     .drained_cb = conn_drained_cb,
					     .session_cb = conn_session_cb};

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
	crl_refresh(s);
	set_state(s, SESSION_CONNECTING);
	struct tls_limits limits;
	tls_limits_default(&limits);
	limits.max_frame = s->cfg->max_frame;
	/* A collector that took our connection is alive: waiting our turn in
	 * its queue after a restart is cheaper for everyone than retrying. */
	limits.handshake_timeout_ms = SESSION_HANDSHAKE_TIMEOUT_MS;
	s->conn.data = s;
	s->conn_open = 1;
	tls_conn_connect(&s->conn, s->loop, res->ai_addr, s->tls, s->cfg->collector_name,
			 &limits, &conn_ops);
	uv_freeaddrinfo(res);
	/* The collector decides whether the ticket still holds (it checks our
	 * certificate again); if not, this is a full handshake. */
	if (s->cfg->resumption && s->last_session && s->conn.state == TLS_CONNECTING &&
	    SSL_set_session(s->conn.ssl, s->last_session) != 1) {
		ERR_clear_error();
		SSL_SESSION_free(s->last_session);
		s->last_session = NULL;
	}
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
		 SSL_CTX *tls, struct spool *spool, struct commands *commands, const char *platform)
{
	memset(s, 0, sizeof(*s));
	s->loop = loop;
	s->cfg = cfg;
	s->tls = tls;
	s->spool = spool;
	s->commands = commands;
	s->platform = platform;
	s->heartbeat_ms = cfg->heartbeat_ms;
	if (cfg->crl_file && cfg->crl_file[0])
		util_file_changed(cfg->crl_file, &s->crl_stamp); /* as tls read it */
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
