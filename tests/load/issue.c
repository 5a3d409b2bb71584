/* fanout: a signed RESCAN for every simulated host, queued in the
 * collector's store the way exfleetctl queues one (the commands table, state
 * "queued"), but all in one transaction, so that the relay finds the whole
 * wave at its next look. The signature is real (an operator certificate
 * minted from the test CA, one batch signature for the wave, as exfleetctl
 * signs a wave), so the relay's and each agent's checks pass as they would
 * for an operator's commands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <uv.h>

#include "loadgen.h"
#include "sign.h"
#include "util.h"

#define OPERATOR_NAME "exfleet-loadgen"
#define COMMAND_LIFETIME_MS 3600000

/* An operator as exfleetctl pki would make one: a key of the algorithm the
 * CA gives operators, and a certificate minted for it. */
struct operator {
	EVP_PKEY *key;
	X509 *cert;
};

static int operator_make(const struct pki_ca *ca, struct operator *op, char *err, size_t errlen)
{
	op->cert = NULL;
	if (pki_ca_keygen(ca, PKI_ROLE_OPERATOR, &op->key, err, errlen) < 0)
		return -1;
	if (pki_ca_mint(ca, PKI_ROLE_OPERATOR, OPERATOR_NAME, op->key, 1, &op->cert, err,
	                errlen) < 0) {
		EVP_PKEY_free(op->key);
		op->key = NULL;
		return -1;
	}
	return 0;
}

static void operator_free(struct operator *op)
{
	X509_free(op->cert);
	EVP_PKEY_free(op->key);
}

/* RESCANs for c[0..n-1], signed as one batch the way exfleetctl signs a
 * wave's, each packed into c[i].envelope. */
static int sign_batch(struct lg_command *c, unsigned n, int64_t issued_ms,
                      const struct operator *op, char *err, size_t errlen)
{
	Exfleet__CommandBody *bodies = calloc(n, sizeof(*bodies));
	const Exfleet__CommandBody **list = calloc(n, sizeof(*list));
	Exfleet__Command *cmds = calloc(n, sizeof(*cmds));
	Exfleet__Rescan rescan = EXFLEET__RESCAN__INIT;
	int rc = -1;
	if (!bodies || !list || !cmds) {
		snprintf(err, errlen, "out of memory for %u commands", n);
		goto out;
	}
	for (unsigned i = 0; i < n; i++) {
		exfleet__command_body__init(&bodies[i]);
		bodies[i].id = c[i].id;
		bodies[i].target_host_id = c[i].host_id;
		bodies[i].issued_at_ms = issued_ms;
		bodies[i].expires_at_ms = issued_ms + COMMAND_LIFETIME_MS;
		bodies[i].action_case = EXFLEET__COMMAND_BODY__ACTION_RESCAN;
		bodies[i].rescan = &rescan;
		list[i] = &bodies[i];
	}
	if (sign_commands(list, n, op->key, op->cert, cmds, err, errlen) < 0)
		goto out;
	for (unsigned i = 0; i < n; i++) {
		c[i].len = exfleet__command__get_packed_size(&cmds[i]);
		if (!(c[i].envelope = malloc(c[i].len ? c[i].len : 1))) {
			snprintf(err, errlen, "out of memory for %u commands", n);
			goto out;
		}
		exfleet__command__pack(&cmds[i], c[i].envelope);
	}
	rc = 0;
out:
	for (unsigned i = 0; cmds && i < n; i++)
		sign_command_free(&cmds[i]);
	free(cmds);
	free(list);
	free(bodies);
	return rc;
}

int64_t lg_commands_sign_cost_us(const struct pki_ca *ca)
{
	char err[256];
	struct operator op;
	enum { TRIAL = 256 };
	struct lg_command *c = calloc(TRIAL, sizeof(*c));
	if (!c || operator_make(ca, &op, err, sizeof(err)) < 0) {
		free(c);
		return 1000;
	}
	for (unsigned i = 0; i < TRIAL; i++) {
		snprintf(c[i].id, sizeof(c[i].id), "%032x", i);
		snprintf(c[i].host_id, sizeof(c[i].host_id), "TRIAL%u", i);
	}
	uint64_t t0 = uv_hrtime();
	int rc = sign_batch(c, TRIAL, util_now_ms(), &op, err, sizeof(err));
	int64_t us = (int64_t)(uv_hrtime() - t0) / 1000 / TRIAL;
	lg_commands_free(c, TRIAL);
	operator_free(&op);
	return rc == 0 ? us + 1 : 1000;
}

int lg_commands_sign(const struct lg_options *o, const struct pki_ca *ca, unsigned first,
                     unsigned n, int64_t issued_ms, struct lg_command **out, char *err,
                     size_t errlen)
{
	*out = NULL;
	struct operator op;
	struct lg_command *c = calloc(n ? n : 1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory for %u commands", n);
		return -1;
	}
	if (operator_make(ca, &op, err, errlen) < 0) {
		free(c);
		return -1;
	}
	for (unsigned i = 0; i < n; i++) {
		uint8_t raw[16];
		if (RAND_bytes(raw, sizeof(raw)) != 1) {
			ERR_clear_error();
			snprintf(err, errlen, "no randomness for a command id");
			goto fail;
		}
		util_hex(raw, sizeof(raw), c[i].id);
		lg_host_id(o, first + i, c[i].host_id, sizeof(c[i].host_id));
	}
	if (n > 0 && sign_batch(c, n, issued_ms, &op, err, errlen) < 0)
		goto fail;
	operator_free(&op);
	*out = c;
	return 0;
fail:
	operator_free(&op);
	lg_commands_free(c, n);
	return -1;
}

int lg_commands_queue(const struct lg_options *o, const struct lg_command *c, unsigned n,
                      int64_t issued_ms, char *err, size_t errlen)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	int rc = -1;
	/* Never create: a wrong path must say so, not make an empty store. */
	if (sqlite3_open_v2(o->store, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "--store %s: %s", o->store,
		         db ? sqlite3_errmsg(db) : "out of memory");
		goto out;
	}
	sqlite3_busy_timeout(db, 10000);
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db,
	                       "INSERT INTO commands (command_id, host_id, action, issuer, issued_at,"
	                       " expires_at, state, state_since, envelope)"
	                       " VALUES (?1, ?2, 'RESCAN', '" OPERATOR_NAME "', ?3, ?4, 'queued',"
	                       " ?3, ?5)",
	                       -1, &s, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "--store %s: %s", o->store, sqlite3_errmsg(db));
		goto out;
	}
	for (unsigned i = 0; i < n; i++) {
		sqlite3_bind_text(s, 1, c[i].id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, c[i].host_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, issued_ms);
		sqlite3_bind_int64(s, 4, issued_ms + COMMAND_LIFETIME_MS);
		sqlite3_bind_blob(s, 5, c[i].envelope, (int)c[i].len, SQLITE_STATIC);
		if (sqlite3_step(s) != SQLITE_DONE) {
			snprintf(err, errlen, "--store %s: queueing a command: %s", o->store,
			         sqlite3_errmsg(db));
			goto out;
		}
		sqlite3_reset(s);
	}
	sqlite3_finalize(s);
	s = NULL;
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "--store %s: %s", o->store, sqlite3_errmsg(db));
		goto out;
	}
	rc = 0;
out:
	sqlite3_finalize(s);
	if (rc < 0 && db)
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(db);
	return rc;
}

void lg_commands_free(struct lg_command *c, unsigned n)
{
	for (unsigned i = 0; c && i < n; i++)
		free(c[i].envelope);
	free(c);
}
