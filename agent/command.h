/* Commands from operators, received on the collector session: checked
 * (operator's signature, target, validity window, never seen before, enabled
 * in [commands] enabled), executed through the probe one at a time, and
 * answered with a CommandResult that is spooled like any other record, so a
 * result survives restarts until the collector has it.
 *
 * Only commands signed by an operator of the deployment's CA run
 * (common/sign.h). A disabled action is answered REJECTED "not enabled:
 * GRANT_RIGHTS is disabled in [commands] enabled". The actions, and the
 * steps each result carries (step, target):
 *   VERIFY_CREDENTIALS      verify-credentials, account: a service logon
 *                           (LOGON32_LOGON_SERVICE). 1385 (no "log on as a
 *                           service" right) counts as verified, with the
 *                           code kept in the step: Windows checks the
 *                           password first, and GRANT_RIGHTS restores the
 *                           right, so a promoted host can be repaired.
 *   GRANT_RIGHTS            grant-rights, right (one per right): granted,
 *                           then held on a re-read of the account's rights;
 *                           a right outside [commands] allowed_rights
 *                           rejects the whole command before any is granted.
 *   SET_SERVICE_CREDENTIALS set-service-credentials, service (one per
 *                           service): set, then the host re-read and the
 *                           service's logon account compared; the first
 *                           failure stops the command, later services are
 *                           left untouched.
 *   RESTART_SERVICES        stop, start (one per service): with the running
 *                           services that depend on those named, which
 *                           Windows would not let it stop otherwise.
 *   REAPPLY_SERVICE_PACK    reapply-service-pack, installer: only the
 *                           installer and arguments of [commands]
 *                           service_pack_installer/_args; refused without.
 *   RESCAN                  no steps.
 * A FAILED result's reason is its first failed step: "step target: code
 * text". Passwords arrive sealed to this agent's key (common/seal.h); a blob
 * that does not open is answered REJECTED with seal_open's reason. The
 * plaintext lives only while the probe uses it, is wiped on every path and
 * never logged nor put in a result. */
#ifndef EXFLEET_COMMAND_H
#define EXFLEET_COMMAND_H

#include <stdint.h>

#include <uv.h>

#include "agent.h"
#include "collect.h"
#include "seal.h"

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
	/* The sealing key, loaded or made by commands_init. Its public half and
	 * the agent certificate key's signature over it go in every Hello. */
	EVP_PKEY *seal_key;
	uint8_t seal_public[SEAL_KEY_LEN];
	uint8_t *seal_signature;
	size_t seal_signature_len;
};

/* Loads the replay cache, the operators' CA and the sealing key (creating it
 * at [commands] sealing_key, default SPOOL_DIR/sealing.key, mode 0600), and
 * signs the key's public half with the key of [tls] key. */
int commands_init(struct commands *cmds, uv_loop_t *loop, const struct agent_config *cfg,
		  struct collect *collect, void (*result_cb)(void *arg), void *arg, char *err,
		  size_t errlen);
void commands_close(struct commands *cmds);

/* Takes one Command from the collector (ownership passes). */
void commands_receive(struct commands *cmds, Exfleet__Command *cmd);
/* Reads [tls] crl again for the check of operators' signatures; a file that
 * cannot be read changes nothing: 0, or negative with err. */
int commands_reload_crl(struct commands *cmds, char *err, size_t errlen);

#endif
