/* fanout: a signed RESCAN for every simulated host, queued in the
 * collector's store the way exfleetctl queues one (the commands table, state
 * "queued"), but all in one transaction, so that the relay finds the whole
 * wave at its next look. The signatures are real (an operator certificate
 * minted from the test CA), so the relay's check passes as it would for an
 * operator's command. */
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

static int sign_one(const char *host, const char *id, int64_t issued_ms, EVP_PKEY *key,
                    X509 *cert, uint8_t **out, size_t *len, char *err, size_t errlen)
{
	Exfleet__CommandBody body = EXFLEET__COMMAND_BODY__INIT;
	Exfleet__Rescan rescan = EXFLEET__RESCAN__INIT;
	Exfleet__Command cmd = EXFLEET__COMMAND__INIT;
	body.id = (char *)id;
	body.target_host_id = (char *)host;
	body.issued_at_ms = issued_ms;
	body.expires_at_ms = issued_ms + COMMAND_LIFETIME_MS;
	body.action_case = EXFLEET__COMMAND_BODY__ACTION_RESCAN;
	body.rescan = &rescan;
	if (sign_command(&body, key, cert, &cmd, err, errlen) < 0) {
		sign_command_free(&cmd);
		return -1;
	}
	*len = exfleet__command__get_packed_size(&cmd);
	*out = malloc(*len ? *len : 1);
	if (*out)
		exfleet__command__pack(&cmd, *out);
	else
		snprintf(err, errlen, "out of memory");
	sign_command_free(&cmd);
	return *out ? 0 : -1;
}

static X509 *operator_cert(const struct pki_ca *ca, EVP_PKEY *key, char *err, size_t errlen)
{
	X509 *cert = NULL;
	if (pki_ca_mint(ca, PKI_ROLE_OPERATOR, OPERATOR_NAME, key, 1, &cert, err, errlen) < 0)
		return NULL;
	return cert;
}

int64_t lg_commands_sign_cost_us(const struct pki_ca *ca, EVP_PKEY *key)
{
	char err[256];
	uint8_t *env = NULL;
	size_t len;
	X509 *cert = operator_cert(ca, key, err, sizeof(err));
	if (!cert)
		return 1000;
	/* A few, the first of which warms up what later ones reuse. */
	int rc = 0;
	uint64_t t0 = uv_hrtime();
	for (int i = 0; i < 16 && rc == 0; i++) {
		rc = sign_one("TRIAL", "00000000000000000000000000000000", util_now_ms(), key,
		              cert, &env, &len, err, sizeof(err));
		free(env);
		env = NULL;
	}
	int64_t us = (int64_t)(uv_hrtime() - t0) / 1000 / 16;
	X509_free(cert);
	return rc == 0 ? us : 1000;
}

int lg_commands_sign(const struct lg_options *o, const struct pki_ca *ca, EVP_PKEY *key,
                     unsigned first, unsigned n, int64_t issued_ms, struct lg_command **out,
                     char *err, size_t errlen)
{
	*out = NULL;
	struct lg_command *c = calloc(n ? n : 1, sizeof(*c));
	X509 *cert = operator_cert(ca, key, err, errlen);
	if (!c || !cert) {
		if (!c)
			snprintf(err, errlen, "out of memory for %u commands", n);
		free(c);
		X509_free(cert);
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
		if (sign_one(c[i].host_id, c[i].id, issued_ms, key, cert, &c[i].envelope, &c[i].len,
		             err, errlen) < 0)
			goto fail;
	}
	X509_free(cert);
	*out = c;
	return 0;
fail:
	X509_free(cert);
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
