/* One process's share of the simulated fleet, on one libuv loop.
 *
 * Each simulated agent runs the real agent's session, without a disk:
 *
 *   IDLE → CONNECTING (TCP, TLS) → HELLO → READY ──any close──▶ BACKOFF
 *               ▲                                                  │
 *               └──────────────────────────────────────────────────┘
 *
 * Its records (a Snapshot first, then events, command results) get sequence
 * numbers and stay "spooled" until an Ack covers them; records.c makes them
 * again from their number, so the spool costs nothing but counters. At most
 * --window records wait for an Ack; beyond that new events are not made
 * (counted as throttled). After a lost session an agent takes a new
 * snapshot, as a real one rescans its host, and resends from its last Ack.
 *
 * The fleet starts agents at --rate with at most --inflight attempts in
 * progress; reconnects after a failure follow each agent's own backoff, as a
 * real fleet's do, and are not held back by --inflight.
 *
 * Each agent keeps the newest session ticket the collector sent and offers
 * it when it connects again (unless --no-resume), as exfleet-agent does.
 *
 * storm, fanout, promote and resume first bring every agent up with its
 * snapshot acknowledged ("armed"); then: storm waits for the harness to
 * restart the collector; fanout queues a signed RESCAN for every host in the
 * collector's store (issue.c) and times each result; promote breaks every
 * host at once as dcpromo does and watches the collector's API for each to
 * be listed AFFECTED (api_poll.c); resume closes every session and brings
 * all back, offering their tickets, as a second ramp. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <uv.h>

#include "backoff.h"
#include "loadgen.h"
#include "log.h"
#include "tls.h"
#include "util.h"
#include "wire.h"

#define CONNECT_TIMEOUT_MS 10000
#define WELCOME_TIMEOUT_MS 30000
#define SILENT_HEARTBEATS 3
#define HEARTBEAT_DEFAULT_MS 30000
#define LAUNCH_TICK_MS 5
#define CHECK_TICK_MS 100
#define DRAIN_MAX_MS 15000 /* ingest: time allowed for the last Acks */
#define LATENCY_RING 64    /* ingest: batches awaiting their Ack, per agent */

const char *const lg_fail_names[LG_FAIL_COUNT] = {
    [LG_FAIL_CONNECT] = "connect",
    [LG_FAIL_TLS] = "tls_handshake",
    [LG_FAIL_TLS_TIMEOUT] = "tls_handshake_timeout",
    [LG_FAIL_EARLY_CLOSE] = "closed_before_welcome",
    [LG_FAIL_REFUSED] = "refused",
    [LG_FAIL_SHED] = "shed_retry_after",
    [LG_FAIL_WELCOME_TIMEOUT] = "welcome_timeout",
    [LG_FAIL_PROTOCOL] = "protocol_error",
    [LG_FAIL_DROPPED] = "session_dropped",
    [LG_FAIL_SILENT] = "collector_silent",
    [LG_FAIL_SETUP] = "loadgen_setup",
};

enum agent_state { AG_IDLE, AG_CONNECTING, AG_HELLO, AG_READY, AG_BACKOFF, AG_STOPPED };

enum phase {
	PH_RAMP,   /* bringing agents up */
	PH_HOLD,   /* connect: all up, heartbeats only */
	PH_STEADY, /* ingest: all up, measuring */
	PH_DRAIN,  /* ingest: no new events, waiting for the last Acks */
	PH_ARMED,  /* all up and acknowledged: storm waits for the collector to
	            * go; fanout and promote for their moment */
	PH_STORM,  /* storm: sessions dropped, waiting for all to come back */
	PH_ISSUED, /* fanout: commands queued, waiting for every result's Ack */
	PH_PROMOTED, /* promote: hosts broken, waiting for the API to list them */
	PH_REDIAL, /* resume: sessions closed on purpose, coming back */
	PH_DONE,
};

/* Storm bookkeeping per agent. */
enum { STORM_DROPPED = 1, STORM_REWELCOMED = 2, STORM_RECOVERED = 4 };
/* resume: closing on purpose, then reconnecting. */
enum { REDIAL_CLOSING = 1, REDIAL_CONNECTING = 2 };

/* A command result not yet acknowledged. */
struct pending_result {
	struct pending_result *next;
	uint64_t seq;
	uint64_t received_ns;
	int64_t received_ms;
	int64_t issued_ms; /* the command's issued_at */
	Exfleet__CommandStatus status;
	const char *step; /* static strings */
	const char *reason;
	char id[65];
};

struct sent_batch {
	uint64_t seq;
	uint64_t sent_ns;
};

struct lg_agent {
	struct tls_conn conn;
	uv_timer_t timer; /* connect and Welcome deadlines, tick, backoff */
	struct fleet *fleet;
	X509 *cert;
	SSL_SESSION *session;           /* the collector's newest ticket */
	struct pending_result *results; /* in sequence order */
	struct sent_batch *lat;         /* ingest only */
	struct backoff backoff;
	uint64_t next_seq;     /* highest sequence assigned */
	uint64_t acked;        /* highest sequence acknowledged */
	uint64_t sent_upto;    /* sent on this session up to here */
	uint64_t max_sent;     /* ever sent up to here: beyond it a send is new */
	uint64_t snapshot_seq; /* an unacknowledged snapshot, 0: none */
	uint64_t promote_seq;   /* promote: snapshots from here on show the DC */
	uint64_t promote_first; /* promote: the first dcpromo event, 0: none */
	int64_t auth_sent_us;   /* promote: when the auth events first went out */
	uint64_t attempt_ns;
	uint64_t last_rx_ms, last_tx_ms, last_gen_ms;
	uint64_t down_since_ms; /* loop time of the first failure since a Welcome */
	double event_credit; /* events due but not yet made */
	uint32_t heartbeat_ms;
	uint32_t retry_after_ms;
	uint32_t index; /* in the whole fleet */
	uint16_t lat_head, lat_len;
	uint8_t state;
	uint8_t conn_open;
	uint8_t welcomed_once;
	uint8_t storm; /* STORM_* bits */
	uint8_t redial; /* REDIAL_* */
	uint8_t fanout; /* fanout: got its command (1), its result acked (2) */
	uint8_t detected;
	int8_t fail;   /* enum lg_fail set before we close, -1: infer */
};

struct fleet {
	uv_loop_t loop;
	const struct lg_options *o;
	struct lg_result *res;
	const struct lg_reporter *rep;
	struct lg_slot *slots;
	uint32_t nslots;
	SSL_CTX *tls;
	const struct pki_ca *ca; /* not ours */
	EVP_PKEY *key; /* shared by every agent; not ours */
	struct tls_limits limits;
	struct lg_agent *agents;
	unsigned first, n;
	unsigned next_launch;
	unsigned inflight, ready, waiting;
	unsigned max_inflight; /* --inflight, this process's share */
	double rate;           /* --rate, this process's share */
	double tokens;
	uint64_t tokens_ms;
	uint64_t rng;
	uv_timer_t launcher, progress, check, phase_timer, deadline;
	uv_signal_t sigint, sigterm, sigusr1;
	struct lg_poller *poller; /* promote */
	struct lg_command *commands; /* fanout: signed, not yet queued */
	unsigned redial_closed, redial_welcomed;
	enum phase phase;
	int generating;
	int stopping;
	int64_t start_ns;
	int64_t drain_until_ms;
	unsigned storm_dropped, storm_rewelcomed, storm_recovered;
};

static const struct tls_conn_ops conn_ops;
static void agent_connect(struct lg_agent *a);
static void fleet_finish(struct fleet *f, int goal);
static void start_redial(struct fleet *f);

void lg_host_id(const struct lg_options *o, unsigned i, char *out, size_t len)
{
	int width = 5;
	for (unsigned n = o->agents; n >= 100000; n /= 10)
		width++;
	snprintf(out, len, "%s%0*u", o->prefix, width, i + 1);
}

uint32_t lg_slots_needed(const struct lg_options *o)
{
	return (uint32_t)((o->deadline_s + 1) * 1000 / LG_SLOT_MS) + 1;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static struct lg_slot *slot_now(struct fleet *f)
{
	int64_t at = (int64_t)uv_hrtime() - f->start_ns;
	uint64_t i = at > 0 ? (uint64_t)at / (LG_SLOT_MS * 1000000ull) : 0;
	return &f->slots[i < f->nslots ? i : f->nslots - 1];
}

static void inflight_add(struct fleet *f)
{
	f->inflight++;
	struct lg_slot *s = slot_now(f);
	if (f->inflight > s->max_inflight)
		s->max_inflight = f->inflight;
	if (f->inflight > f->res->max_inflight)
		f->res->max_inflight = f->inflight;
}

/* Counts a failure and keeps its reason, as text, with the others. */
static void note_failure(struct lg_agent *a, enum lg_fail kind, const char *why)
{
	struct lg_result *res = a->fleet->res;
	res->fail[kind]++;
	for (int i = 0; i < LG_REASONS; i++) {
		if (res->reason_count[i] == 0) {
			snprintf(res->reason[i], LG_REASON_LEN, "%s", why);
			res->reason_count[i] = 1;
			return;
		}
		if (strncmp(res->reason[i], why, LG_REASON_LEN - 1) == 0) {
			res->reason_count[i]++;
			return;
		}
	}
	res->reason_other++;
}

/* Why tls.c closed a connection that never got its Welcome. */
static enum lg_fail infer_failure(const struct lg_agent *a)
{
	const char *why = a->conn.close_reason;
	if (strncmp(why, "cannot connect", 14) == 0)
		return LG_FAIL_CONNECT;
	if (strncmp(why, "TLS handshake timed out", 23) == 0)
		return LG_FAIL_TLS_TIMEOUT;
	if (strncmp(why, "TLS handshake failed", 20) == 0 ||
	    strncmp(why, "peer closed the connection during the handshake", 47) == 0)
		return LG_FAIL_TLS;
	return LG_FAIL_EARLY_CLOSE;
}

static void agent_close(struct lg_agent *a, enum lg_fail why, enum log_level level,
                        const char *text)
{
	a->fail = (int8_t)why;
	tls_conn_close(&a->conn, level, "%s", text);
}

static int agent_send(struct lg_agent *a, const Exfleet__AgentMessage *m)
{
	int rc = wire_send_agent(&a->conn, m);
	if (rc == 0)
		a->last_tx_ms = uv_now(&a->fleet->loop);
	return rc;
}

/* --- records ------------------------------------------------------------- */

static void take_snapshot(struct lg_agent *a)
{
	a->snapshot_seq = ++a->next_seq;
}

static struct pending_result *result_at(struct lg_agent *a, uint64_t seq)
{
	for (struct pending_result *r = a->results; r && r->seq <= seq; r = r->next)
		if (r->seq == seq)
			return r;
	return NULL;
}

/* The first command result after seq, or NULL. */
static struct pending_result *result_after(struct lg_agent *a, uint64_t seq)
{
	struct pending_result *r = a->results;
	while (r && r->seq <= seq)
		r = r->next;
	return r;
}

/* Everything up to seq is stored: it leaves the window, and is counted. */
static void ack_to(struct lg_agent *a, uint64_t seq)
{
	struct fleet *f = a->fleet;
	struct lg_result *res = f->res;
	if (seq <= a->acked)
		return;
	uint64_t now_ns = uv_hrtime();
	uint64_t records = seq - a->acked, others = 0;
	if (a->snapshot_seq && a->snapshot_seq <= seq) {
		a->snapshot_seq = 0;
		others++;
	}
	while (a->results && a->results->seq <= seq) {
		struct pending_result *r = a->results;
		a->results = r->next;
		lg_hist_add(&res->command_latency, (now_ns - r->received_ns) / 1000);
		res->results_acked++;
		others++;
		if (f->phase == PH_ISSUED && r->issued_ms == res->fanout_issued_ms &&
		    !(a->fanout & 2)) {
			int64_t us = lg_wall_us() - r->issued_ms * 1000;
			lg_hist_add(&res->fanout_result, us > 0 ? (uint64_t)us : 0);
			a->fanout |= 2;
			if (++res->fanout_done == f->n)
				res->fanout_done_ms = util_now_ms();
		}
		free(r);
	}
	uint64_t events = records - others;
	res->records_acked += records;
	res->events_acked += events;
	slot_now(f)->events_acked += (uint32_t)events;
	if (f->phase == PH_STEADY)
		res->steady_events_acked += events;
	while (a->lat && a->lat_len && a->lat[a->lat_head].seq <= seq) {
		lg_hist_add(&res->ack_latency, (now_ns - a->lat[a->lat_head].sent_ns) / 1000);
		a->lat_head = (uint16_t)((a->lat_head + 1) % LATENCY_RING);
		a->lat_len--;
	}
	a->acked = seq;
}

/* Sends what is spooled after sent_upto while the connection keeps up: a
 * snapshot or a result alone, events in runs of up to --batch. */
static void kick(struct lg_agent *a)
{
	struct fleet *f = a->fleet;
	char host[PKI_NAME_MAX + 1];
	lg_host_id(f->o, a->index, host, sizeof(host));
	while (a->state == AG_READY && a->sent_upto < a->next_seq &&
	       a->conn.write_queued < a->conn.limits.write_high / 2) {
		Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
		uint64_t s = a->sent_upto + 1, last = s;
		int64_t now_ms = util_now_ms();
		struct pending_result *r;
		if (s == a->snapshot_seq) {
			enum lg_host_state state = a->promote_seq && s >= a->promote_seq ? LG_HOST_PROMOTED
			                           : f->o->scenario == LG_PROMOTE      ? LG_HOST_AT_RISK
			                                                               : LG_HOST_HEALTHY;
			records_snapshot(&m, host, s, now_ms, state, f->res->promote_ms);
		} else if ((r = result_at(a, s))) {
			records_result(&m, s, r->id, r->status, r->reason, r->step, r->received_ms,
			               now_ms);
		} else {
			last = a->next_seq;
			if (last - s + 1 > f->o->batch)
				last = s + f->o->batch - 1;
			if (a->snapshot_seq > s && a->snapshot_seq <= last)
				last = a->snapshot_seq - 1;
			if ((r = result_after(a, s)) && r->seq <= last)
				last = r->seq - 1;
			records_events(&m, host, s, (size_t)(last - s + 1), now_ms, a->promote_first);
			uint64_t before = s - 1 > a->max_sent ? s - 1 : a->max_sent;
			uint64_t fresh = last > before ? last - before : 0;
			f->res->events_sent += fresh;
			f->res->events_resent += last - s + 1 - fresh;
		}
		if (agent_send(a, &m) < 0)
			return; /* the connection is closing */
		uint64_t auth = a->promote_first + LG_PROMOTE_AUTH_FIRST;
		if (a->promote_first && !a->auth_sent_us && s <= auth && auth <= last)
			a->auth_sent_us = lg_wall_us();
		a->sent_upto = last;
		if (last > a->max_sent) {
			a->max_sent = last;
			if (a->lat && a->lat_len < LATENCY_RING) {
				struct sent_batch *b =
				    &a->lat[(a->lat_head + a->lat_len) % LATENCY_RING];
				b->seq = last;
				b->sent_ns = uv_hrtime();
				a->lat_len++;
			} else if (a->lat) {
				f->res->ack_latency_unsampled++;
			}
		}
	}
}

/* New events at --events-per-sec, as far as the window allows. */
static void generate(struct lg_agent *a, uint64_t now)
{
	struct fleet *f = a->fleet;
	a->event_credit += f->o->events_per_sec * (double)(now - a->last_gen_ms) / 1000.0;
	a->last_gen_ms = now;
	uint64_t due = (uint64_t)a->event_credit;
	a->event_credit -= (double)due;
	uint64_t held = a->next_seq - a->acked;
	uint64_t room = held < f->o->window ? f->o->window - held : 0;
	uint64_t take = due < room ? due : room;
	a->next_seq += take;
	f->res->events_generated += take;
	f->res->events_throttled += due - take;
}

/* --- session ---------------------------------------------------------------- */

static void tick_cb(uv_timer_t *t)
{
	struct lg_agent *a = t->data;
	struct fleet *f = a->fleet;
	uint64_t now = uv_now(&f->loop);
	if (now - a->last_rx_ms > (uint64_t)SILENT_HEARTBEATS * a->heartbeat_ms) {
		agent_close(a, LG_FAIL_SILENT, LOG_WARN, "collector silent for 3 heartbeats");
		return;
	}
	if (f->generating && f->o->events_per_sec > 0)
		generate(a, now);
	kick(a);
	if (a->state == AG_READY && now - a->last_tx_ms + 50 >= a->heartbeat_ms) {
		Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
		records_heartbeat(&m, a->next_seq, util_now_ms());
		agent_send(a, &m);
	}
}

/* How often an agent makes a batch of events: 10 ms at the least. */
static uint64_t batch_interval_ms(const struct lg_options *o)
{
	if (o->events_per_sec <= 0)
		return 0;
	double ms = (double)o->batch * 1000.0 / o->events_per_sec;
	return ms < 10 ? 10 : ms > 3600000 ? 3600000 : (uint64_t)ms;
}

static uint64_t tick_ms(const struct lg_agent *a)
{
	uint64_t ms = a->heartbeat_ms;
	uint64_t batch_ms = batch_interval_ms(a->fleet->o);
	if (a->fleet->generating && batch_ms && batch_ms < ms)
		ms = batch_ms;
	return ms;
}

static void storm_check(struct lg_agent *a)
{
	struct fleet *f = a->fleet;
	struct lg_result *res = f->res;
	if (f->phase != PH_STORM || !(a->storm & STORM_DROPPED) || (a->storm & STORM_RECOVERED) ||
	    a->state != AG_READY || a->snapshot_seq != 0)
		return;
	a->storm |= STORM_RECOVERED;
	f->storm_recovered++;
	res->storm_recovered = f->storm_recovered;
	if (f->storm_recovered == f->n) {
		res->storm_recovered_ns = (int64_t)uv_hrtime();
		fleet_finish(f, 1);
	}
}

static void all_welcomed(struct fleet *f);

static void on_welcome(struct lg_agent *a, const Exfleet__Welcome *w)
{
	struct fleet *f = a->fleet;
	struct lg_result *res = f->res;
	char text[LG_REASON_LEN];
	if (w->error && w->error[0]) {
		snprintf(text, sizeof(text), "collector refused this agent: %s", w->error);
		agent_close(a, LG_FAIL_REFUSED, LOG_WARN, text);
		return;
	}
	if (w->retry_after_ms) {
		a->retry_after_ms = w->retry_after_ms;
		agent_close(a, LG_FAIL_SHED, LOG_INFO, "collector is busy: retry later");
		return;
	}
	a->heartbeat_ms =
	    w->heartbeat_interval_s ? w->heartbeat_interval_s * 1000 : HEARTBEAT_DEFAULT_MS;
	uint64_t stored = w->highest_stored_sequence;
	if (stored > a->next_seq) {
		/* The collector holds more of this host than we made: an earlier
		 * run with the same host ids. Carry on after it. */
		res->adopted++;
		ack_to(a, a->next_seq);
		a->next_seq = a->acked = a->max_sent = stored;
	} else {
		ack_to(a, stored);
	}
	/* A new agent's first record is the state of its host. */
	if (!a->welcomed_once && !a->snapshot_seq)
		take_snapshot(a);
	a->sent_upto = a->acked;
	a->state = AG_READY;
	f->inflight--;
	f->ready++;
	res->welcomes++;
	if (!a->welcomed_once) {
		a->welcomed_once = 1;
		res->ever_welcomed++;
	}
	if (f->ready > res->max_ready)
		res->max_ready = f->ready;
	lg_hist_add(&res->welcome_latency, (uv_hrtime() - a->attempt_ns) / 1000);
	backoff_reset(&a->backoff);
	a->down_since_ms = 0;
	a->last_gen_ms = uv_now(&f->loop);
	a->event_credit = 0;
	/* A random first tick, so that heartbeats and batches do not march in step. */
	uint64_t every = tick_ms(a);
	uv_timer_start(&a->timer, tick_cb, 1 + rng_next(&f->rng) % every, every);
	if (f->phase == PH_REDIAL && a->redial == REDIAL_CONNECTING) {
		a->redial = 0;
		if (++f->redial_welcomed == f->n) {
			res->redial_end_ns = (int64_t)uv_hrtime();
			fleet_finish(f, 1);
			return;
		}
	}
	if (f->phase == PH_STORM && (a->storm & STORM_DROPPED) && !(a->storm & STORM_REWELCOMED)) {
		a->storm |= STORM_REWELCOMED;
		if (++f->storm_rewelcomed == f->n)
			res->storm_all_welcomed_ns = (int64_t)uv_hrtime();
	}
	kick(a);
	if (f->ready == f->n && !res->all_welcomed_ns)
		all_welcomed(f);
	storm_check(a);
}

static void on_command(struct lg_agent *a, const Exfleet__Command *cmd)
{
	struct fleet *f = a->fleet;
	struct pending_result *r = calloc(1, sizeof(*r));
	f->res->commands_received++;
	if (!r) {
		agent_close(a, LG_FAIL_SETUP, LOG_ERR, "out of memory for a command result");
		return;
	}
	r->received_ns = uv_hrtime();
	r->received_ms = util_now_ms();
	r->status = EXFLEET__COMMAND_STATUS__COMMAND_REJECTED;
	Exfleet__CommandBody *body =
	    exfleet__command_body__unpack(NULL, cmd->body.len, cmd->body.data);
	if (!body) {
		r->reason = "the command body does not decode";
	} else {
		snprintf(r->id, sizeof(r->id), "%s", body->id);
		r->issued_ms = body->issued_at_ms;
		if (f->phase == PH_ISSUED && body->issued_at_ms == f->res->fanout_issued_ms &&
		    !(a->fanout & 1)) {
			int64_t us = lg_wall_us() - body->issued_at_ms * 1000;
			lg_hist_add(&f->res->fanout_delivery, us > 0 ? (uint64_t)us : 0);
			f->res->fanout_received++;
			a->fanout |= 1;
		}
		/* No signature is checked here: this is a load generator, not an
		 * agent, and it changes nothing. It answers as an agent would
		 * that carries out only these two actions. */
		if (body->action_case == EXFLEET__COMMAND_BODY__ACTION_RESCAN) {
			r->status = EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED;
			r->step = "rescan";
		} else if (body->action_case == EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES) {
			r->status = EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED;
			r->step = "restart-services";
		} else {
			r->reason = "exfleet-loadgen carries out only RESCAN and RESTART_SERVICES";
		}
		exfleet__command_body__free_unpacked(body, NULL);
	}
	if (r->status == EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED)
		f->res->commands_succeeded++;
	else
		f->res->commands_rejected++;
	r->seq = ++a->next_seq;
	struct pending_result **tail = &a->results;
	while (*tail)
		tail = &(*tail)->next;
	*tail = r;
	kick(a);
}

static void welcome_timeout_cb(uv_timer_t *t)
{
	struct lg_agent *a = t->data;
	agent_close(a, LG_FAIL_WELCOME_TIMEOUT, LOG_WARN, "no Welcome within 30 s");
}

static void conn_ready_cb(struct tls_conn *c)
{
	struct lg_agent *a = c->data;
	struct fleet *f = a->fleet;
	char host[PKI_NAME_MAX + 1];
	if (c->peer_role != PKI_ROLE_COLLECTOR) {
		agent_close(a, LG_FAIL_TLS, LOG_ERR, "peer certificate is not a collector's");
		return;
	}
	f->res->tls_ok++;
	f->res->tls_resumed += c->resumed;
	if (!f->res->all_welcomed_ns)
		f->res->ramp_tls_ok++;
	if (a->redial == REDIAL_CONNECTING) {
		f->res->redial_tls_ok++;
		f->res->redial_resumed += c->resumed;
	}
	a->last_rx_ms = uv_now(&f->loop);
	lg_host_id(f->o, a->index, host, sizeof(host));
	Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
	records_hello(&m, host, a->index, a->next_seq, a->next_seq > a->acked ? a->acked + 1 : 0);
	if (agent_send(a, &m) < 0)
		return;
	a->state = AG_HELLO;
	uv_timer_start(&a->timer, welcome_timeout_cb, WELCOME_TIMEOUT_MS, 0);
}

static void conn_frame_cb(struct tls_conn *c, const uint8_t *payload, size_t len)
{
	struct lg_agent *a = c->data;
	char why[160], text[LG_REASON_LEN];
	Exfleet__CollectorMessage *m = wire_decode_collector(payload, len, why, sizeof(why));
	if (!m) {
		snprintf(text, sizeof(text), "protocol error: %s", why);
		agent_close(a, LG_FAIL_PROTOCOL, LOG_WARN, text);
		return;
	}
	a->last_rx_ms = uv_now(&a->fleet->loop);
	switch (m->msg_case) {
	case EXFLEET__COLLECTOR_MESSAGE__MSG_WELCOME:
		if (a->state != AG_HELLO)
			agent_close(a, LG_FAIL_PROTOCOL, LOG_WARN,
			            "protocol error: Welcome after the handshake");
		else
			on_welcome(a, m->welcome);
		break;
	case EXFLEET__COLLECTOR_MESSAGE__MSG_ACK:
		if (a->state != AG_READY)
			break;
		if (m->ack->sequence > a->next_seq) {
			snprintf(text, sizeof(text),
			         "protocol error: Ack #%llu beyond the highest record #%llu",
			         (unsigned long long)m->ack->sequence,
			         (unsigned long long)a->next_seq);
			agent_close(a, LG_FAIL_PROTOCOL, LOG_WARN, text);
			break;
		}
		ack_to(a, m->ack->sequence);
		kick(a);
		storm_check(a);
		break;
	case EXFLEET__COLLECTOR_MESSAGE__MSG_COMMAND:
		if (a->state == AG_READY)
			on_command(a, m->command);
		break;
	default:
		break;
	}
	exfleet__collector_message__free_unpacked(m, NULL);
}

static void backoff_timer_cb(uv_timer_t *t)
{
	struct lg_agent *a = t->data;
	a->fleet->waiting--;
	agent_connect(a);
}

/* As the agent does (agent/session.c): full jitter under the exponential
 * ceiling, scaled down to at most the time since the collector was last
 * reachable (and at least --reconnect-min). */
static uint64_t reconnect_delay(struct backoff *b, uint64_t down_ms)
{
	uint64_t ceiling = backoff_ceiling(b);
	uint64_t r = backoff_next(b);
	uint64_t limit = down_ms > b->base_ms ? down_ms : b->base_ms;
	return limit >= ceiling ? r : r * limit / ceiling;
}

static void agent_backoff(struct lg_agent *a)
{
	struct fleet *f = a->fleet;
	uint64_t delay, now = uv_now(&f->loop);
	if (!a->down_since_ms)
		a->down_since_ms = now;
	if (a->retry_after_ms) {
		/* As the agent does: when told, plus up to a quarter more. */
		delay = a->retry_after_ms + backoff_next(&a->backoff) % (a->retry_after_ms / 4 + 1);
		a->retry_after_ms = 0;
	} else {
		delay = reconnect_delay(&a->backoff, now - a->down_since_ms);
	}
	a->state = AG_BACKOFF;
	f->waiting++;
	uv_timer_start(&a->timer, backoff_timer_cb, delay, 0);
}

static void launch(struct fleet *f);

static void conn_close_cb(struct tls_conn *c)
{
	struct lg_agent *a = c->data;
	struct fleet *f = a->fleet;
	enum agent_state was = (enum agent_state)a->state;
	a->conn_open = 0;
	uv_timer_stop(&a->timer);
	if (was == AG_READY && a->redial == REDIAL_CLOSING && !f->stopping) {
		/* resume: closed on purpose; all come back together. */
		f->ready--;
		a->state = AG_IDLE;
		a->redial = REDIAL_CONNECTING;
		if (++f->redial_closed == f->n)
			start_redial(f);
		return;
	}
	if (was == AG_CONNECTING || was == AG_HELLO) {
		f->inflight--;
		if (!f->stopping)
			note_failure(a, a->fail >= 0 ? (enum lg_fail)a->fail : infer_failure(a),
			             c->close_reason);
	} else if (was == AG_READY) {
		f->ready--;
		if (!f->stopping) {
			f->res->drops++;
			note_failure(a, a->fail >= 0 ? (enum lg_fail)a->fail : LG_FAIL_DROPPED,
			             c->close_reason);
		}
		a->lat_len = 0; /* what is resent is not timed */
		if (!a->snapshot_seq)
			take_snapshot(a);
		if (f->phase == PH_ARMED && !f->stopping) {
			f->phase = PH_STORM;
			f->res->storm_first_drop_ns = (int64_t)uv_hrtime();
			if (!f->o->quiet)
				fprintf(stderr, "%s: storm: sessions are dropping\n", LG_PROG);
		}
		if (f->phase == PH_STORM) {
			if (a->storm & STORM_RECOVERED) {
				f->storm_recovered--;
				f->res->storm_recovered = f->storm_recovered;
			}
			if (!(a->storm & STORM_DROPPED) && ++f->storm_dropped == f->n)
				f->res->storm_all_dropped_ns = (int64_t)uv_hrtime();
			a->storm = (uint8_t)((a->storm | STORM_DROPPED) & ~STORM_RECOVERED);
		}
	}
	if (f->stopping) {
		a->state = AG_STOPPED;
		return;
	}
	agent_backoff(a);
	launch(f);
}

static void conn_drained_cb(struct tls_conn *c)
{
	kick(c->data);
}

/* The newest ticket is offered next time, as the agent does. */
static int conn_session_cb(struct tls_conn *c, SSL_SESSION *session)
{
	struct lg_agent *a = c->data;
	a->fleet->res->tickets++;
	SSL_SESSION_free(a->session);
	a->session = session;
	return 1;
}

static const struct tls_conn_ops conn_ops = {.ready_cb = conn_ready_cb,
                                             .frame_cb = conn_frame_cb,
                                             .close_cb = conn_close_cb,
                                             .drained_cb = conn_drained_cb,
                                             .session_cb = conn_session_cb};

static void connect_timeout_cb(uv_timer_t *t)
{
	struct lg_agent *a = t->data;
	/* Once TCP is up, tls.c's handshake deadline applies instead. */
	if (a->conn.state == TLS_CONNECTING)
		agent_close(a, LG_FAIL_CONNECT, LOG_INFO, "cannot connect: TCP connect timed out");
}

static void agent_connect(struct lg_agent *a)
{
	struct fleet *f = a->fleet;
	struct sockaddr_in from;
	const struct sockaddr *bind_addr = NULL;
	a->state = AG_CONNECTING;
	a->fail = -1;
	a->attempt_ns = uv_hrtime();
	inflight_add(f);
	f->res->attempts++;
	if (f->phase == PH_STORM)
		f->res->storm_attempts++;
	if (f->o->sources) {
		/* 127.0.0.1 to 127.0.0.K: K times the source ports of one address. */
		memset(&from, 0, sizeof(from));
		from.sin_family = AF_INET;
		from.sin_addr.s_addr = htonl(0x7f000000u | (1 + a->index % f->o->sources));
		bind_addr = (const struct sockaddr *)&from;
	}
	a->conn.data = a;
	int rc = tls_conn_connect_from(&a->conn, &f->loop, (const struct sockaddr *)&f->o->target,
	                               bind_addr, f->tls, f->o->name, &f->limits, &conn_ops);
	if (rc < 0) {
		/* No handles were made, so nothing calls back. */
		f->inflight--;
		char why[TLS_REASON_MAX];
		snprintf(why, sizeof(why), "cannot make a TLS connection: %s", uv_strerror(rc));
		note_failure(a, LG_FAIL_SETUP, why);
		agent_backoff(a);
		return;
	}
	a->conn_open = 1;
	if (a->conn.state != TLS_CONNECTING)
		return; /* already closing: conn_close_cb follows */
	/* The handshake starts in connect_cb, on a later loop turn: until then
	 * the SSL object takes this agent's session (its certificate is handed
	 * over only when the collector asks for it: client_cert_cb). */
	if (a->session && !f->o->no_resume && SSL_set_session(a->conn.ssl, a->session) != 1) {
		ERR_clear_error();
		agent_close(a, LG_FAIL_SETUP, LOG_ERR, "cannot offer the agent's session");
		return;
	}
	uv_timer_start(&a->timer, connect_timeout_cb, CONNECT_TIMEOUT_MS, 0);
}

/* --- the fleet -------------------------------------------------------------- */

static void launch(struct fleet *f)
{
	if (f->stopping || f->next_launch == f->n)
		return;
	if (f->rate > 0) {
		uint64_t now = uv_now(&f->loop);
		double burst = f->rate / 20 > 1 ? f->rate / 20 : 1; /* 50 ms worth */
		f->tokens += f->rate * (double)(now - f->tokens_ms) / 1000.0;
		f->tokens_ms = now;
		if (f->tokens > burst)
			f->tokens = burst;
	}
	while (f->next_launch < f->n && f->inflight < f->max_inflight &&
	       (f->rate <= 0 || f->tokens >= 1)) {
		if (f->rate > 0)
			f->tokens -= 1;
		agent_connect(&f->agents[f->next_launch++]);
	}
	if (f->next_launch == f->n)
		uv_timer_stop(&f->launcher);
}

static void launcher_cb(uv_timer_t *t)
{
	launch(t->data);
}

static void progress_cb(uv_timer_t *t)
{
	struct fleet *f = t->data;
	struct lg_progress p = {
	    .agents = f->n,
	    .ready = f->ready,
	    .inflight = f->inflight,
	    .waiting = f->waiting,
	    .tls_ok = f->res->tls_ok,
	    .welcomes = f->res->welcomes,
	    .events_sent = f->res->events_sent,
	    .events_acked = f->res->events_acked,
	};
	for (int i = 0; i < LG_FAIL_COUNT; i++)
		p.failures += f->res->fail[i];
	if (f->rep && f->rep->progress)
		f->rep->progress(f->rep->arg, &p);
}

static void hold_done_cb(uv_timer_t *t)
{
	struct fleet *f = t->data;
	fleet_finish(f, f->ready == f->n);
}

/* --- after "armed": fanout, promote, resume ------------------------------- */

static void fanout_queue_cb(uv_timer_t *t)
{
	struct fleet *f = t->data;
	char err[512];
	f->phase = PH_ISSUED;
	int rc = lg_commands_queue(f->o, f->commands, f->n, f->res->fanout_issued_ms, err,
	                           sizeof(err));
	f->res->fanout_committed_ms = util_now_ms();
	lg_commands_free(f->commands, f->n);
	f->commands = NULL;
	if (rc < 0) {
		fprintf(stderr, "%s: fanout: %s\n", LG_PROG, err);
		snprintf(f->res->poll_error, sizeof(f->res->poll_error), "%s", err);
		fleet_finish(f, 0);
		return;
	}
	f->res->fanout_queued = f->n;
}

/* Signs a command for every agent, all issued at one moment just after the
 * signing is done, then queues them at that moment. */
static void fanout_issue(struct fleet *f)
{
	char err[512];
	/* Generous: signing late would count against the collector, while
	 * signing early only waits for issued_at. */
	int64_t cost_us = lg_commands_sign_cost_us(f->ca);
	int64_t issued = util_now_ms() + cost_us * f->n * 2 / 1000 + 100;
	uint64_t t0 = uv_hrtime();
	if (lg_commands_sign(f->o, f->ca, f->first, f->n, issued, &f->commands, err,
	                     sizeof(err)) < 0) {
		fprintf(stderr, "%s: fanout: %s\n", LG_PROG, err);
		snprintf(f->res->poll_error, sizeof(f->res->poll_error), "%s", err);
		fleet_finish(f, 0);
		return;
	}
	f->res->fanout_sign_us = (uv_hrtime() - t0) / 1000;
	f->res->fanout_issued_ms = issued;
	int64_t wait = issued - util_now_ms();
	uv_update_time(&f->loop);
	uv_timer_start(&f->phase_timer, fanout_queue_cb, wait > 0 ? (uint64_t)wait : 0, 0);
}

/* dcpromo on every host at once: a snapshot of the domain controller it
 * became, then the SCM failures and the auth-privilege events, all made in
 * one loop turn and sent as fast as the sessions take them. */
static void promote_burst(struct fleet *f)
{
	f->phase = PH_PROMOTED;
	f->res->promote_ms = util_now_ms();
	for (unsigned i = 0; i < f->n; i++) {
		struct lg_agent *a = &f->agents[i];
		if (a->snapshot_seq)
			continue; /* reconnected since armed: an unsent snapshot in the way */
		take_snapshot(a);
		a->promote_seq = a->snapshot_seq;
		a->promote_first = a->next_seq + 1;
		a->next_seq += LG_PROMOTE_EVENTS;
		f->res->events_generated += LG_PROMOTE_EVENTS;
		f->res->promoted++;
	}
	for (unsigned i = 0; i < f->n; i++)
		kick(&f->agents[i]);
}

static void issue_cb(uv_timer_t *t)
{
	struct fleet *f = t->data;
	if (f->phase != PH_ARMED)
		return;
	if (f->o->scenario == LG_FANOUT)
		fanout_issue(f);
	else
		promote_burst(f);
}

static void sigusr1_cb(uv_signal_t *s, int signum)
{
	struct fleet *f = s->data;
	if (f->phase == PH_ARMED && (f->o->scenario == LG_FANOUT || f->o->scenario == LG_PROMOTE)) {
		uv_timer_stop(&f->phase_timer);
		issue_cb(&f->phase_timer);
	}
}

/* resume: every session is closed by us; once all are, they come back. */
static void redial_all(struct fleet *f)
{
	f->phase = PH_REDIAL;
	for (unsigned i = 0; i < f->n; i++) {
		struct lg_agent *a = &f->agents[i];
		a->redial = REDIAL_CLOSING;
		tls_conn_close(&a->conn, LOG_DEBUG, "reconnecting, to resume the session");
	}
}

static void start_redial(struct fleet *f)
{
	f->res->redial_start_ns = (int64_t)uv_hrtime();
	f->next_launch = 0;
	uv_timer_start(&f->launcher, launcher_cb, 0, LAUNCH_TICK_MS);
}

static void seen_cb(void *arg, unsigned index, int64_t seen_us, int64_t since_ms)
{
	struct fleet *f = arg;
	struct lg_agent *a = &f->agents[index - f->first];
	struct lg_result *res = f->res;
	if (a->detected || !a->auth_sent_us)
		return; /* listed before its events went out: not this burst's doing */
	a->detected = 1;
	int64_t us = seen_us - a->auth_sent_us;
	lg_hist_add(&res->detect_seen, us > 0 ? (uint64_t)us : 0);
	if (since_ms) {
		us = since_ms * 1000 - a->auth_sent_us;
		lg_hist_add(&res->detect_recorded, us > 0 ? (uint64_t)us : 0);
	}
	if (++res->detected == f->n)
		res->promote_done_ms = util_now_ms();
}

/* Every agent up with nothing waiting for an Ack. */
static int all_quiet(const struct fleet *f)
{
	for (unsigned i = 0; i < f->n; i++)
		if (f->agents[i].state != AG_READY || f->agents[i].acked != f->agents[i].next_seq)
			return 0;
	return 1;
}

static void arm(struct fleet *f)
{
	char err[512];
	f->phase = PH_ARMED;
	if (f->o->scenario == LG_STORM)
		uv_timer_stop(&f->check);
	if (f->rep && f->rep->armed)
		f->rep->armed(f->rep->arg, f->n);
	switch (f->o->scenario) {
	case LG_PROMOTE:
		/* Connected and listing already, so the first look after the
		 * burst costs no handshake. */
		if (lg_poller_start(&f->poller, f->o, f->ca, f->key, f->first, f->n, err,
		                    sizeof(err)) < 0) {
			fprintf(stderr, "%s: promote: %s\n", LG_PROG, err);
			snprintf(f->res->poll_error, sizeof(f->res->poll_error), "%s", err);
			fleet_finish(f, 0);
			return;
		}
		/* fall through */
	case LG_FANOUT:
		uv_timer_start(&f->phase_timer, issue_cb, (uint64_t)(f->o->issue_after_s * 1000), 0);
		break;
	case LG_RESUME:
		redial_all(f);
		break;
	default:
		break;
	}
}

static void check_cb(uv_timer_t *t)
{
	struct fleet *f = t->data;
	switch (f->phase) {
	case PH_RAMP:
		if (f->res->all_welcomed_ns && all_quiet(f))
			arm(f);
		break;
	case PH_ISSUED:
		if (f->res->fanout_done == f->n)
			fleet_finish(f, 1);
		break;
	case PH_PROMOTED:
		lg_poller_drain(f->poller, seen_cb, f);
		if (f->res->detected == f->n)
			fleet_finish(f, 1);
		break;
	case PH_DRAIN: {
		unsigned left = 0;
		for (unsigned i = 0; i < f->n; i++)
			left += f->agents[i].acked != f->agents[i].next_seq;
		if (left == 0)
			fleet_finish(f, 1);
		else if (uv_now(&f->loop) >= (uint64_t)f->drain_until_ms)
			fleet_finish(f, 0);
		break;
	}
	default:
		break;
	}
}

static void steady_done_cb(uv_timer_t *t)
{
	struct fleet *f = t->data;
	f->phase = PH_DRAIN;
	f->generating = 0;
	f->res->steady_end_ns = (int64_t)uv_hrtime();
	f->drain_until_ms = (int64_t)(uv_now(&f->loop) + DRAIN_MAX_MS);
	uv_timer_start(&f->check, check_cb, CHECK_TICK_MS, CHECK_TICK_MS);
}

static void steady_start_cb(uv_timer_t *t)
{
	struct fleet *f = t->data;
	f->phase = PH_STEADY;
	f->res->steady_start_ns = (int64_t)uv_hrtime();
	uv_timer_start(&f->phase_timer, steady_done_cb, (uint64_t)(f->o->duration_s * 1000), 0);
}

/* Every agent of this process is welcomed, for the first time. */
static void all_welcomed(struct fleet *f)
{
	uint64_t hwm;
	f->res->all_welcomed_ns = (int64_t)uv_hrtime();
	lg_rss(&f->res->rss_kb_up, &hwm);
	if (f->phase != PH_RAMP)
		return;
	switch (f->o->scenario) {
	case LG_CONNECT:
		f->phase = PH_HOLD;
		uv_timer_start(&f->phase_timer, hold_done_cb, (uint64_t)(f->o->hold_s * 1000), 0);
		break;
	case LG_INGEST:
		/* Measure once every agent has sent a whole batch interval's
		 * events, not while the last ones to arrive are still filling up. */
		uv_timer_start(&f->phase_timer, steady_start_cb, batch_interval_ms(f->o), 0);
		break;
	case LG_STORM:
	case LG_FANOUT:
	case LG_PROMOTE:
	case LG_RESUME:
		uv_timer_start(&f->check, check_cb, CHECK_TICK_MS, CHECK_TICK_MS);
		break;
	}
}

static void deadline_cb(uv_timer_t *t)
{
	struct fleet *f = t->data;
	if (!f->o->quiet)
		fprintf(stderr, "%s: deadline of %.0f s reached\n", LG_PROG, f->o->deadline_s);
	fleet_finish(f, 0);
}

static void signal_cb(uv_signal_t *s, int signum)
{
	struct fleet *f = s->data;
	f->res->interrupted = 1;
	fleet_finish(f, 0);
}

static void close_handle(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* Stops every agent and handle; uv_run returns when all are closed. */
static void fleet_finish(struct fleet *f, int goal)
{
	struct lg_result *res = f->res;
	if (f->stopping)
		return;
	f->stopping = 1;
	f->phase = PH_DONE;
	res->goal_met = goal;
	res->end_ns = (int64_t)uv_hrtime();
	res->ready_at_end = f->ready;
	lg_rss(&res->rss_kb_end, &res->hwm_kb);
	if (f->poller) {
		lg_poller_stop(f->poller, res);
		f->poller = NULL;
	}
	for (unsigned i = 0; i < f->n; i++) {
		struct lg_agent *a = &f->agents[i];
		res->unacked_at_end += a->next_seq - a->acked;
	}
	close_handle((uv_handle_t *)&f->launcher);
	close_handle((uv_handle_t *)&f->progress);
	close_handle((uv_handle_t *)&f->check);
	close_handle((uv_handle_t *)&f->phase_timer);
	close_handle((uv_handle_t *)&f->deadline);
	close_handle((uv_handle_t *)&f->sigint);
	close_handle((uv_handle_t *)&f->sigterm);
	close_handle((uv_handle_t *)&f->sigusr1);
	for (unsigned i = 0; i < f->n; i++) {
		struct lg_agent *a = &f->agents[i];
		close_handle((uv_handle_t *)&a->timer);
		if (a->conn_open)
			tls_conn_close(&a->conn, LOG_DEBUG, "loadgen finished");
		else
			a->state = AG_STOPPED;
	}
}

/* The collector asks for a certificate (a full handshake): this agent's.
 * A resumed one does not, and costs the load generator nothing here: a
 * real agent's certificate is its context's, set once. */
static int client_cert_cb(SSL *ssl, X509 **cert, EVP_PKEY **key)
{
	struct tls_conn *c = SSL_get_app_data(ssl);
	struct lg_agent *a = c ? c->data : NULL;
	if (!a || X509_up_ref(a->cert) != 1)
		return 0;
	if (EVP_PKEY_up_ref(a->fleet->key) != 1) {
		X509_free(a->cert);
		return 0;
	}
	*cert = a->cert;
	*key = a->fleet->key;
	return 1;
}

/* The client context, as tls_ctx_new makes one, without a certificate:
 * each connection gets its agent's. */
static int client_ctx(const struct lg_options *o, SSL_CTX **out, char *err, size_t errlen)
{
	char ca[4096];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	*out = NULL;
	if (!ctx) {
		snprintf(err, errlen, "cannot create a TLS context");
		return -1;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	/* Idle sessions give their record buffers back: thousands of them.
	 * The agent's certificate goes alone, as a real agent's does. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_NO_AUTO_CHAIN);
	/* Tickets are kept and offered, as the agent does; with --no-resume
	 * every session is a full handshake. */
	if (o->no_resume)
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	else
		tls_ctx_keep_sessions(ctx);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_client_cert_cb(ctx, client_cert_cb);
	snprintf(ca, sizeof(ca), "%s/ca.crt", o->pki_dir);
	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "%s: cannot load the CA certificate", ca);
		SSL_CTX_free(ctx);
		return -1;
	}
	*out = ctx;
	return 0;
}

int fleet_prepare(struct fleet **out, const struct lg_options *o, const struct pki_ca *ca,
                  EVP_PKEY *key, unsigned first, unsigned count, struct lg_result *res, char *err,
                  size_t errlen)
{
	char host[PKI_NAME_MAX + 1], why[256];
	int rc = -1;
	struct fleet *f = calloc(1, sizeof(*f));
	*out = NULL;
	if (!f || !(f->agents = calloc(count ? count : 1, sizeof(*f->agents)))) {
		snprintf(err, errlen, "out of memory for %u agents", count);
		goto out;
	}
	f->o = o;
	f->res = res;
	f->ca = ca;
	f->key = key;
	f->first = first;
	f->n = count;
	res->agents = count;
	f->rng = ((uint64_t)uv_hrtime() ^ ((uint64_t)uv_os_getpid() << 32) ^ first) | 1;
	if (client_ctx(o, &f->tls, err, errlen) < 0)
		goto out;
	tls_limits_default(&f->limits);
	f->limits.handshake_timeout_ms = o->handshake_timeout_ms;
	uint64_t t0 = uv_hrtime();
	for (unsigned i = 0; i < count; i++) {
		struct lg_agent *a = &f->agents[i];
		a->fleet = f;
		a->index = first + i;
		a->heartbeat_ms = HEARTBEAT_DEFAULT_MS;
		a->fail = -1;
		backoff_init(&a->backoff, o->reconnect_min_ms, o->reconnect_max_ms,
		             rng_next(&f->rng));
		lg_host_id(o, a->index, host, sizeof(host));
		if (pki_ca_mint(ca, PKI_ROLE_AGENT, host, key, o->cert_days, &a->cert, why,
		                sizeof(why)) < 0) {
			snprintf(err, errlen, "cannot mint a certificate for %s: %s", host, why);
			goto out;
		}
		res->certs_minted++;
		if (o->scenario == LG_INGEST && !(a->lat = calloc(LATENCY_RING, sizeof(*a->lat)))) {
			snprintf(err, errlen, "out of memory for %u agents", count);
			goto out;
		}
	}
	res->mint_ns = uv_hrtime() - t0;
	*out = f;
	f = NULL;
	rc = 0;
out:
	fleet_free(f);
	return rc;
}

int fleet_run(struct fleet *f, int64_t start_ns, const struct lg_reporter *rep,
              struct lg_slot *slots, uint32_t nslots, char *err, size_t errlen)
{
	const struct lg_options *o = f->o;
	int rc = uv_loop_init(&f->loop);
	if (rc < 0) {
		snprintf(err, errlen, "cannot start an event loop: %s", uv_strerror(rc));
		return rc;
	}
	f->rep = rep;
	f->slots = slots;
	f->nslots = nslots;
	f->start_ns = start_ns;
	f->res->start_ns = start_ns;
	f->rate = o->rate / o->procs;
	f->max_inflight = (o->inflight + o->procs - 1) / o->procs;
	f->generating = o->scenario == LG_INGEST;
	for (unsigned i = 0; i < f->n; i++) {
		uv_timer_init(&f->loop, &f->agents[i].timer);
		f->agents[i].timer.data = &f->agents[i];
	}
	uv_timer_t *timers[] = {&f->launcher, &f->progress, &f->check, &f->phase_timer,
	                        &f->deadline};
	for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++) {
		uv_timer_init(&f->loop, timers[i]);
		timers[i]->data = f;
	}
	uv_signal_init(&f->loop, &f->sigint);
	uv_signal_init(&f->loop, &f->sigterm);
	uv_signal_init(&f->loop, &f->sigusr1);
	f->sigint.data = f->sigterm.data = f->sigusr1.data = f;
	uv_signal_start(&f->sigint, signal_cb, SIGINT);
	uv_signal_start(&f->sigterm, signal_cb, SIGTERM);
	uv_signal_start(&f->sigusr1, sigusr1_cb, SIGUSR1);

	int64_t spent_ms = ((int64_t)uv_hrtime() - start_ns) / 1000000;
	int64_t left_ms = (int64_t)(o->deadline_s * 1000) - spent_ms;
	uv_timer_start(&f->deadline, deadline_cb, left_ms > 0 ? (uint64_t)left_ms : 0, 0);
	uv_timer_start(&f->progress, progress_cb, 1000, 1000);
	f->tokens_ms = uv_now(&f->loop);
	f->tokens = f->rate > 0 ? 1 : 0;
	uv_timer_start(&f->launcher, launcher_cb, 0, LAUNCH_TICK_MS);
	if (f->n == 0)
		fleet_finish(f, 1);

	uv_run(&f->loop, UV_RUN_DEFAULT);
	f->res->loop_close_rc = uv_loop_close(&f->loop);
	if (f->res->loop_close_rc != 0)
		snprintf(err, errlen, "the event loop still had handles after every agent stopped");
	return 0;
}

void fleet_free(struct fleet *f)
{
	if (!f)
		return;
	for (unsigned i = 0; f->agents && i < f->n; i++) {
		struct lg_agent *a = &f->agents[i];
		while (a->results) {
			struct pending_result *r = a->results;
			a->results = r->next;
			free(r);
		}
		X509_free(a->cert);
		SSL_SESSION_free(a->session);
		free(a->lat);
	}
	free(f->agents);
	lg_commands_free(f->commands, f->n);
	SSL_CTX_free(f->tls);
	free(f);
}
