#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector.h"
#include "log.h"
#include "sign.h"
#include "util.h"
#include "wire.h"

/* New commands are looked for often (one indexed query: cheap), the whole
 * queue walked for expiry once a second. */
#define POLL_MS 100
#define EXPIRE_MS 1000
#define RELAY_SKEW_MS 300000
#define RELAY_MAX 100000

/* Sends c on the host's session; 0 when it went out (or was refused). */
static int deliver(struct relay *r, const struct relay_command *c)
{
	struct agent_conn *a = hostmap_get(&r->srv->sessions, c->host_id);
	if (!a || a->state != AGENT_READY)
		return -1;
	Exfleet__Command *cmd = exfleet__command__unpack(NULL, c->len, c->envelope);
	if (!cmd) {
		log_err("relay: command %s is not a valid envelope; marked failed", c->id);
		store_command_state(r->store, c->id, "failed");
		return 0;
	}
	/* Defence in depth: whatever put it in the store, a command that the
	 * agent would refuse (not an operator's signature, another host's,
	 * expired) goes no further. */
	if (r->verifier) {
		Exfleet__CommandBody *body = NULL;
		char signer[SIGN_OPERATOR_MAX] = "", reason[256];
		int rc = sign_verify_command(r->verifier, cmd, c->host_id, util_now_ms(),
					     RELAY_SKEW_MS, &body, signer, reason, sizeof(reason));
		if (body)
			exfleet__command_body__free_unpacked(body, NULL);
		if (rc < 0) {
			log_warn("relay: command %s for %s refused, not delivered: %s", c->id,
				 c->host_id, reason);
			store_command_state(r->store, c->id,
					    rc == UV_ETIMEDOUT ? "expired" : "rejected");
			exfleet__command__free_unpacked(cmd, NULL);
			return 0;
		}
	}
	Exfleet__CollectorMessage m = EXFLEET__COLLECTOR_MESSAGE__INIT;
	m.msg_case = EXFLEET__COLLECTOR_MESSAGE__MSG_COMMAND;
	m.command = cmd;
	int rc = wire_send_collector(&a->conn, &m);
	exfleet__command__free_unpacked(cmd, NULL);
	if (rc < 0)
		return -1;
	log_msg(LOG_INFO, a->conn.peer, "command %s delivered", c->id);
	store_command_state(r->store, c->id, "delivered");
	r->delivered++;
	return 0;
}

static void command_free(struct relay_command *c)
{
	free(c->envelope);
	free(c);
}

/* Delivers or expires what it can; keeps the rest in order. */
static void relay_flush(struct relay *r, const char *only_host)
{
	int64_t now = util_now_ms();
	struct relay_command **pp = &r->queued, *prev = NULL;
	while (*pp) {
		struct relay_command *c = *pp;
		int gone = 0;
		if (c->expires_ms && c->expires_ms < now) {
			log_warn("relay: command %s for %s expired before its host was online",
				 c->id, c->host_id);
			store_command_state(r->store, c->id, "expired");
			r->expired++;
			gone = 1;
		} else if (!only_host || strcmp(only_host, c->host_id) == 0) {
			gone = deliver(r, c) == 0;
		}
		if (gone) {
			*pp = c->next;
			if (r->queued_tail == c)
				r->queued_tail = prev;
			r->nqueued--;
			command_free(c);
		} else {
			prev = c;
			pp = &c->next;
		}
	}
}

static void take_cb(const struct store_command *sc, void *arg)
{
	struct relay *r = arg;
	if (r->nqueued >= RELAY_MAX) {
		log_err("relay: %d commands waiting; command %s stays queued in the store",
			RELAY_MAX, sc->command_id);
		return;
	}
	struct relay_command *c = calloc(1, sizeof(*c));
	if (!c || !(c->envelope = malloc(sc->len ? sc->len : 1))) {
		free(c);
		return;
	}
	snprintf(c->id, sizeof(c->id), "%s", sc->command_id);
	snprintf(c->host_id, sizeof(c->host_id), "%s", sc->host_id);
	c->expires_ms = sc->expires_at_ms;
	memcpy(c->envelope, sc->envelope, sc->len);
	c->len = sc->len;
	/* Append: commands for a host go out in the order they were made. */
	if (r->queued_tail)
		r->queued_tail->next = c;
	else
		r->queued = c;
	r->queued_tail = c;
	r->nqueued++;
}

void relay_poll(struct relay *r)
{
	size_t before = r->nqueued;
	int64_t after = r->after;
	store_queued_commands(r->store, &r->after, take_cb, r);
	int64_t now = util_now_ms();
	if (r->after != after || r->nqueued != before || now - r->last_flush_ms >= EXPIRE_MS) {
		r->last_flush_ms = now;
		relay_flush(r, NULL);
	}
}

void relay_host_ready(struct relay *r, const char *host_id)
{
	relay_flush(r, host_id);
}

static void timer_cb(uv_timer_t *t)
{
	relay_poll(t->data);
}

void relay_init(struct relay *r, uv_loop_t *loop, struct server *srv, struct store *store)
{
	memset(r, 0, sizeof(*r));
	r->srv = srv;
	r->store = store;
	uv_timer_init(loop, &r->timer);
	r->timer.data = r;
	uv_timer_start(&r->timer, timer_cb, 0, POLL_MS);
}

void relay_close(struct relay *r)
{
	uv_timer_stop(&r->timer);
	uv_close((uv_handle_t *)&r->timer, NULL);
	while (r->queued) {
		struct relay_command *next = r->queued->next;
		command_free(r->queued);
		r->queued = next;
	}
	r->queued_tail = NULL;
	r->nqueued = 0;
}
