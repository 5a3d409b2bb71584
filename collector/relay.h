/* The command relay: commands wait here for their host and go out on its
 * session the moment it is welcomed, or at once when it is online; the
 * collector never creates or alters a command, it only carries the
 * envelope an operator made, after checking its signature as the agent
 * will (a command the agent would refuse is marked rejected here). States: queued -> delivered -> succeeded,
 * failed, rejected (the agent's result) or expired (never delivered in time).
 *
 * The checks run on libuv's thread pool, a chunk of commands per work
 * item, so that a wave of thousands neither blocks the loop nor waits for
 * one core; commands still leave in the order they were taken. An operator
 * certificate that passed the full check is trusted for a minute: the
 * commands of a wave after the first cost one signature check each. */
#ifndef EXFLEET_RELAY_H
#define EXFLEET_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <uv.h>

#include "exfleet.pb-c.h"
#include "hostmap.h"
#include "store.h"

struct server;
struct sign_verifier;
struct store;

struct relay_command {
	char id[65];
	char host_id[65];
	int64_t expires_ms;
	uint8_t *envelope;      /* encoded Exfleet__Command */
	size_t len;
	Exfleet__Command *cmd;  /* decoded, during the check only */
	int verdict;            /* 0: not checked yet; 1: deliverable; < 0: refused */
	int in_check;           /* on the thread pool: the work item's until it ends */
	char reason[200];       /* why it was refused */
	struct relay_command *next;
};

/* An operator certificate that passed sign_verify_command, by the SHA-256
 * of its DER. */
struct relay_signer {
	unsigned char digest[32];
	EVP_PKEY *key;
	int64_t checked_ms;
};

#define RELAY_SIGNERS 8

struct relay {
	struct server *srv;
	struct store *store;
	uv_loop_t *loop;
	/* Taken from the store, in order; the head leaves once checked. */
	struct relay_command *pending, *pending_tail;
	struct hostmap waiting;  /* host id -> struct relay_host: checked, host offline */
	size_t nqueued;          /* pending and waiting */
	unsigned checking;       /* work items on the thread pool */
	int closing;
	int64_t after;          /* store row of the newest command taken */
	int64_t last_flush_ms;
	uv_timer_t timer;       /* picks up new commands, expires old ones */
	struct sign_verifier *verifier; /* NULL: delivered unchecked; freed by relay_close */
	uv_mutex_t signers_lock;
	struct relay_signer signers[RELAY_SIGNERS];
	uint64_t signers_gen;    /* CRL reloads so far: signers older are forgotten */
	uint64_t delivered, expired, rejected, fast_checks, full_checks;
	/* Delivered since the last store write that marks them so: one write
	 * for a dispatch's deliveries. */
	char (*marks)[STORE_COMMAND_ID_LEN];
	size_t nmarks, marks_cap;
};

void relay_init(struct relay *r, uv_loop_t *loop, struct server *srv, struct store *store);
/* Takes new queued commands from the store and sends what it can. */
void relay_poll(struct relay *r);
/* host_id was just welcomed: its queued commands go out now. */
void relay_host_ready(struct relay *r, const char *host_id);
/* Reads the verifier's CRL again and forgets the signers it trusted, so
 * that a revoked operator's next command is checked in full. A CRL that
 * cannot be read changes nothing: 0, or negative with err. */
int relay_reload_crl(struct relay *r, char *err, size_t errlen);
/* Stops; commands still being checked are freed when their check ends,
 * and the verifier with the last of them. */
void relay_close(struct relay *r);

#endif
