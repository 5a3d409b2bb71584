/* The command relay: commands wait here for their host and go out on its
 * session the moment it is welcomed, or at once when it is online; the
 * collector never creates or alters a command, it only carries the
 * envelope an operator made, after checking its signature as the agent
 * will (a command the agent would refuse is marked rejected here). States: queued -> delivered -> succeeded,
 * failed, rejected (the agent's result) or expired (never delivered in time). */
#ifndef EXFLEET_RELAY_H
#define EXFLEET_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct server;
struct sign_verifier;
struct store;

struct relay_command {
	char id[65];
	char host_id[65];
	int64_t expires_ms;
	uint8_t *envelope;      /* encoded Exfleet__Command */
	size_t len;
	struct relay_command *next;
};

struct relay {
	struct server *srv;
	struct store *store;
	struct relay_command *queued, *queued_tail;
	size_t nqueued;
	int64_t after;          /* store row of the newest command taken */
	int64_t last_flush_ms;
	uv_timer_t timer;       /* picks up new commands, expires old ones */
	struct sign_verifier *verifier; /* NULL: delivered unchecked */
	uint64_t delivered, expired;
};

void relay_init(struct relay *r, uv_loop_t *loop, struct server *srv, struct store *store);
/* Takes new queued commands from the store and sends what it can. */
void relay_poll(struct relay *r);
/* host_id was just welcomed: its queued commands go out now. */
void relay_host_ready(struct relay *r, const char *host_id);
void relay_close(struct relay *r);

#endif
