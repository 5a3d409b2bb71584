/* Commands from operators, received on the collector session: checked
 * (operator's signature, target, validity window, never seen before),
 * executed through the probe one at a time, and answered with a
 * CommandResult that is spooled like any other record, so a result survives
 * restarts until the collector has it.
 *
 * Only commands signed by an operator of the deployment's CA run
 * (common/sign.h). Executed: RESCAN and RESTART_SERVICES (with the running
 * services that depend on those named, which Windows would not let it stop
 * otherwise); the other actions are answered REJECTED: not enabled. */
#ifndef EXFLEET_COMMAND_H
#define EXFLEET_COMMAND_H

#include <stdint.h>

#include <uv.h>

#include "agent.h"
#include "collect.h"

#define COMMAND_ID_MAX 64
#define COMMAND_QUEUE_MAX 32

struct replay_entry {
	char id[COMMAND_ID_MAX + 1];
	int64_t expires_ms;
};

struct restart_plan;
struct sign_verifier;

struct commands {
	uv_loop_t *loop;
	const struct agent_config *cfg;
	struct collect *collect;
	char replay_path[1024];
	struct replay_entry *seen;   /* the replay cache, persisted at replay_path */
	size_t nseen, capseen;
	Exfleet__Command *queue[COMMAND_QUEUE_MAX]; /* waiting for the one running */
	size_t nqueued;
	struct restart_plan *running;
	struct sign_verifier *verifier; /* operators' signatures, against our CA */
	uv_timer_t timer;            /* polls service state while restarting */
	void (*result_cb)(void *arg); /* a result was spooled */
	void *arg;
};

int commands_init(struct commands *cmds, uv_loop_t *loop, const struct agent_config *cfg,
		  struct collect *collect, void (*result_cb)(void *arg), void *arg, char *err,
		  size_t errlen);
void commands_close(struct commands *cmds);

/* Takes one Command from the collector (ownership passes). */
void commands_receive(struct commands *cmds, Exfleet__Command *cmd);

#endif
