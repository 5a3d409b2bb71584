/* The agent's command verifier on arbitrary bytes: no crash, no leak, and
 * nothing accepted that an operator did not sign. A deployment (CA, CRL,
 * operator alice) is made in a temporary directory at the first call.
 *
 * The first byte picks what the rest is, so that the checks behind the
 * certificate and the signature are reached too:
 *   0  an encoded Command, verified as it is;
 *   1  an encoded Command carrying alice's certificate instead of its own
 *      (the signature bytes are then parsed and checked);
 *   2  an encoded CommandBody that alice signs, its times taken as offsets
 *      from now; a sealed password in an accepted body is opened with the
 *      agent's sealing key;
 *   3  a count (1 to 16) and an encoded CommandBody: alice signs that many
 *      copies as one batch, and each is verified in full and through a
 *      memo, which must agree. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "../unit/testutil.h"
#include "pki.h"
#include "seal.h"
#include "sign.h"
#include "util.h"

#define HOST "EXCH01"
#define SKEW_MS (5 * 60 * 1000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[1024];
static struct sign_verifier *verifier;
static EVP_PKEY *alice_key, *seal_key;
static X509 *alice_cert;
static uint8_t *alice_der;
static size_t alice_der_len;
static int64_t now_ms;

static void teardown(void)
{
	sign_verifier_free(verifier);
	EVP_PKEY_free(alice_key);
	EVP_PKEY_free(seal_key);
	X509_free(alice_cert);
	OPENSSL_free(alice_der);
	test_rmtree(root);
}

static void die(const char *what, const char *err)
{
	fprintf(stderr, "fuzz_command: %s: %s\n", what, err);
	abort();
}

static void setup(void)
{
	char dir[1100], crt[1200], key[1200], ca[1200], crl[1200], err[512];
	struct pki_issue_opts o = {.role = PKI_ROLE_OPERATOR, .name = "alice"};
	if (test_tmpdir("fuzz_command", root, sizeof(root)) < 0)
		die("temporary directory", root);
	snprintf(dir, sizeof(dir), "%s/pki", root);
	if (pki_init(dir, PKI_ALGO_ECDSA_P256, 0, err, sizeof(err)) < 0 ||
	    pki_issue(dir, &o, NULL, err, sizeof(err)) < 0)
		die("making a deployment", err);
	pki_cert_path(dir, PKI_ROLE_OPERATOR, "alice", crt, sizeof(crt), key, sizeof(key));
	alice_key = test_read_key(key);
	alice_cert = test_read_cert(crt);
	int len = alice_cert ? i2d_X509(alice_cert, &alice_der) : -1;
	if (!alice_key || len <= 0)
		die("loading alice", key);
	alice_der_len = (size_t)len;
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	snprintf(crl, sizeof(crl), "%s/crl.pem", dir);
	verifier = sign_verifier_new(ca, crl, err, sizeof(err));
	if (!verifier)
		die("verifier", err);
	seal_key = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	if (!seal_key)
		die("sealing key", "X25519");
	now_ms = util_now_ms();
	atexit(teardown);
}

static void open_password(const Exfleet__CommandBody *b)
{
	const Exfleet__SealedSecret *s = NULL;
	if (b->action_case == EXFLEET__COMMAND_BODY__ACTION_VERIFY_CREDENTIALS)
		s = b->verify_credentials->password;
	else if (b->action_case == EXFLEET__COMMAND_BODY__ACTION_SET_SERVICE_CREDENTIALS)
		s = b->set_service_credentials->password;
	if (!s)
		return;
	uint8_t *secret = NULL;
	size_t len = 0;
	char reason[256];
	if (seal_open(seal_key, HOST, b->id, s, &secret, &len, reason, sizeof(reason)) == 0)
		seal_free_secret(secret, len);
}

static void verify(const Exfleet__Command *cmd)
{
	Exfleet__CommandBody *body = NULL;
	char op[SIGN_OPERATOR_MAX], reason[512];
	int rc = sign_verify_command(verifier, cmd, HOST, now_ms, SKEW_MS, &body, op, reason,
	                             sizeof(reason));
	if (rc == 0) {
		open_password(body);
		exfleet__command_body__free_unpacked(body, NULL);
	} else if (body) {
		abort(); /* a refusal hands out no body */
	}
}

#define BATCH_COPIES 16

/* copies of b signed as one batch: the full check and the memo's agree on
 * every one, and a refusal hands out no body. */
static void verify_batch(const Exfleet__CommandBody *b, size_t copies)
{
	const Exfleet__CommandBody *list[BATCH_COPIES];
	Exfleet__Command cmds[BATCH_COPIES];
	char err[256];
	for (size_t i = 0; i < copies; i++)
		list[i] = b;
	if (sign_commands(list, copies, alice_key, alice_cert, cmds, err, sizeof(err)) < 0)
		return;
	struct sign_memo memo = {0};
	for (size_t i = 0; i < copies; i++) {
		Exfleet__CommandBody *full = NULL, *memoed = NULL;
		char op[SIGN_OPERATOR_MAX], full_reason[512] = "", memo_reason[512] = "";
		int full_rc = sign_verify_command(verifier, &cmds[i], HOST, now_ms, SKEW_MS, &full,
		                                  op, full_reason, sizeof(full_reason));
		int memo_rc = sign_verify_command_memo(X509_get0_pubkey(alice_cert), &cmds[i], HOST,
		                                       now_ms, SKEW_MS, &memo, &memoed, memo_reason,
		                                       sizeof(memo_reason));
		if (full_rc != memo_rc || strcmp(full_reason, memo_reason) != 0 ||
		    (full_rc == 0) != (full != NULL) || (memo_rc == 0) != (memoed != NULL))
			abort();
		if (full)
			open_password(full);
		exfleet__command_body__free_unpacked(full, NULL);
		exfleet__command_body__free_unpacked(memoed, NULL);
		sign_command_free(&cmds[i]);
	}
}

/* Offsets from now, wrapping rather than overflowing. */
static int64_t from_now(int64_t offset)
{
	return (int64_t)((uint64_t)offset + (uint64_t)now_ms);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!verifier)
		setup();
	if (size < 1)
		return 0;
	int mode = data[0] % 4;
	data++;
	size--;

	if (mode == 0 || mode == 1) {
		Exfleet__Command *cmd = exfleet__command__unpack(NULL, size, data);
		if (!cmd)
			return 0;
		ProtobufCBinaryData own = cmd->issuer_certificate;
		if (mode == 1) {
			cmd->issuer_certificate.data = alice_der;
			cmd->issuer_certificate.len = alice_der_len;
		}
		verify(cmd);
		cmd->issuer_certificate = own;
		exfleet__command__free_unpacked(cmd, NULL);
		return 0;
	}

	size_t copies = 1;
	if (mode == 3) {
		if (size < 1)
			return 0;
		copies = 1 + data[0] % BATCH_COPIES;
		data++;
		size--;
	}
	Exfleet__CommandBody *b = exfleet__command_body__unpack(NULL, size, data);
	if (!b)
		return 0;
	b->issued_at_ms = from_now(b->issued_at_ms);
	b->expires_at_ms = from_now(b->expires_at_ms);
	if (mode == 2) {
		Exfleet__Command cmd;
		char err[256];
		if (sign_command(b, alice_key, alice_cert, &cmd, err, sizeof(err)) == 0)
			verify(&cmd);
		sign_command_free(&cmd);
	} else {
		verify_batch(b, copies);
	}
	exfleet__command_body__free_unpacked(b, NULL);
	return 0;
}
