/* Operator-signed commands: what the agent accepts, and each refusal with
 * the exact reason it reports, for ECDSA P-256 and Ed25519 deployments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <uv.h>

#include "pki.h"
#include "sign.h"
#include "util.h"
#include "testutil.h"

#define SKEW_MS (5 * 60 * 1000LL)
#define HOUR_MS (3600 * 1000LL)
#define ID "0123456789abcdef0123456789abcdef"

static const char *const algo_names[] = {"ECDSA", "Ed25519"};

struct deployment {
	char dir[1200];
	struct sign_verifier *v;       /* CA and CRL */
	struct sign_verifier *v_nocrl; /* CA only */
};

struct fixture {
	char root[1024];
	struct deployment d[2]; /* ECDSA P-256, Ed25519 */
	char other[1200];       /* another deployment's CA */
	char err[512];
};

static struct fixture *fx;

static void issue(const char *dir, enum pki_role role, const char *name, int days,
                  int64_t backdate_s)
{
	struct pki_issue_opts o = {
	    .role = role, .name = name, .days = days, .backdate_s = backdate_s};
	int rc = pki_issue(dir, &o, NULL, fx->err, sizeof(fx->err));
	if (rc < 0)
		print_error("pki_issue %s: %s\n", name, fx->err);
	assert_int_equal(rc, 0);
}

static void deployment_make(const char *dir, enum pki_algo algo)
{
	int rc = pki_init(dir, algo, 0, fx->err, sizeof(fx->err));
	if (rc < 0)
		print_error("pki_init: %s\n", fx->err);
	assert_int_equal(rc, 0);
	issue(dir, PKI_ROLE_OPERATOR, "alice", 0, 0);
	issue(dir, PKI_ROLE_OPERATOR, "bob", 0, 0);
	issue(dir, PKI_ROLE_VIEWER, "victor", 0, 0);
	issue(dir, PKI_ROLE_OPERATOR, "mallory", 0, 0);
	/* Valid for one day, three days ago. */
	issue(dir, PKI_ROLE_OPERATOR, "olga", 1, 3 * 86400);
	issue(dir, PKI_ROLE_AGENT, "EXCH01", 0, 0);
	issue(dir, PKI_ROLE_COLLECTOR, "collector.example", 0, 0);
	assert_int_equal(pki_revoke(dir, "mallory", NULL, NULL, fx->err, sizeof(fx->err)), 0);
}

static int group_setup(void **state)
{
	char ca[1300], crl[1300];
	fx = calloc(1, sizeof(*fx));
	if (!fx || test_tmpdir("test_sign", fx->root, sizeof(fx->root)) < 0)
		return -1;
	for (int a = 0; a < 2; a++) {
		struct deployment *d = &fx->d[a];
		char dir[sizeof(d->dir)];
		snprintf(dir, sizeof(dir), "%s/%s", fx->root, algo_names[a]);
		memcpy(d->dir, dir, sizeof(dir));
		deployment_make(d->dir, a == 0 ? PKI_ALGO_ECDSA_P256 : PKI_ALGO_ED25519);
		snprintf(ca, sizeof(ca), "%s/ca.crt", d->dir);
		snprintf(crl, sizeof(crl), "%s/crl.pem", d->dir);
		d->v = sign_verifier_new(ca, crl, fx->err, sizeof(fx->err));
		d->v_nocrl = sign_verifier_new(ca, NULL, fx->err, sizeof(fx->err));
		if (!d->v || !d->v_nocrl)
			return -1;
	}
	char other[sizeof(fx->other)];
	snprintf(other, sizeof(other), "%s/other", fx->root);
	memcpy(fx->other, other, sizeof(other));
	assert_int_equal(pki_init(fx->other, PKI_ALGO_ECDSA_P256, 0, fx->err, sizeof(fx->err)), 0);
	issue(fx->other, PKI_ROLE_OPERATOR, "alice", 0, 0);
	*state = fx;
	return 0;
}

static int group_teardown(void **state)
{
	for (int a = 0; a < 2; a++) {
		sign_verifier_free(fx->d[a].v);
		sign_verifier_free(fx->d[a].v_nocrl);
	}
	test_rmtree(fx->root);
	free(fx);
	fx = NULL;
	return 0;
}

static EVP_PKEY *load_key(const char *dir, enum pki_role role, const char *name)
{
	char crt[1400], key[1400];
	assert_int_equal(pki_cert_path(dir, role, name, crt, sizeof(crt), key, sizeof(key)), 0);
	EVP_PKEY *k = test_read_key(key);
	assert_non_null(k);
	return k;
}

static X509 *load_cert(const char *dir, enum pki_role role, const char *name)
{
	char crt[1400];
	assert_int_equal(pki_cert_path(dir, role, name, crt, sizeof(crt), NULL, 0), 0);
	X509 *c = test_read_cert(crt);
	assert_non_null(c);
	return c;
}

/* A RESCAN command body; the strings are borrowed. */
struct body {
	Exfleet__CommandBody b;
	Exfleet__Rescan rescan;
};

static void body_init(struct body *s, const char *id, const char *host, int64_t issued,
                      int64_t expires)
{
	exfleet__command_body__init(&s->b);
	exfleet__rescan__init(&s->rescan);
	s->b.id = (char *)id;
	s->b.target_host_id = (char *)host;
	s->b.issued_at_ms = issued;
	s->b.expires_at_ms = expires;
	s->b.action_case = EXFLEET__COMMAND_BODY__ACTION_RESCAN;
	s->b.rescan = &s->rescan;
}

/* Signs b with the key of key_name and attaches the certificate of cert_name. */
static void sign_as2(const char *dir, enum pki_role role, const char *key_name,
                     const char *cert_name, const Exfleet__CommandBody *b, Exfleet__Command *cmd)
{
	EVP_PKEY *key = load_key(dir, role, key_name);
	X509 *cert = load_cert(dir, role, cert_name);
	int rc;
	if (strcmp(key_name, cert_name) == 0) {
		rc = sign_command(b, key, cert, cmd, fx->err, sizeof(fx->err));
	} else {
		/* sign_command refuses a key that is not the certificate's:
		 * sign with the key's own certificate, then swap it. */
		X509 *own = load_cert(dir, role, key_name);
		rc = sign_command(b, key, own, cmd, fx->err, sizeof(fx->err));
		X509_free(own);
		if (rc == 0) {
			unsigned char *der = NULL;
			int len = i2d_X509(cert, &der);
			assert_true(len > 0);
			OPENSSL_free(cmd->issuer_certificate.data);
			cmd->issuer_certificate.data = der;
			cmd->issuer_certificate.len = (size_t)len;
		}
	}
	if (rc < 0)
		print_error("sign_command: %s\n", fx->err);
	assert_int_equal(rc, 0);
	X509_free(cert);
	EVP_PKEY_free(key);
}

static void sign_as(const char *dir, enum pki_role role, const char *name,
                    const Exfleet__CommandBody *b, Exfleet__Command *cmd)
{
	sign_as2(dir, role, name, name, b, cmd);
}

static void expect_accepted(struct sign_verifier *v, const Exfleet__Command *cmd, int64_t now,
                            const char *id)
{
	Exfleet__CommandBody *body = NULL;
	char op[SIGN_OPERATOR_MAX], reason[512] = "";
	int rc =
	    sign_verify_command(v, cmd, "EXCH01", now, SKEW_MS, &body, op, reason, sizeof(reason));
	if (rc < 0)
		print_error("refused: %s\n", reason);
	assert_int_equal(rc, 0);
	assert_non_null(body);
	assert_string_equal(body->id, id);
	assert_string_equal(body->target_host_id, "EXCH01");
	assert_int_equal(body->action_case, EXFLEET__COMMAND_BODY__ACTION_RESCAN);
	assert_string_equal(op, "alice");
	exfleet__command_body__free_unpacked(body, NULL);
}

static void expect_refused_as(struct sign_verifier *v, const Exfleet__Command *cmd, int64_t now,
                              int want_rc, const char *want_reason, const char *want_op)
{
	Exfleet__CommandBody *body = (Exfleet__CommandBody *)cmd; /* must be reset */
	char op[SIGN_OPERATOR_MAX] = "junk", reason[512] = "";
	int rc =
	    sign_verify_command(v, cmd, "EXCH01", now, SKEW_MS, &body, op, reason, sizeof(reason));
	assert_int_equal(rc, want_rc);
	assert_null(body);
	assert_string_equal(reason, want_reason);
	assert_string_equal(op, want_op);
	/* Nothing left on OpenSSL's queue for the TLS code to misread. */
	assert_int_equal(ERR_peek_error(), 0);
}

static void expect_refused(struct sign_verifier *v, const Exfleet__Command *cmd, int64_t now,
                           int want_rc, const char *want_reason)
{
	expect_refused_as(v, cmd, now, want_rc, want_reason, "alice");
}

static void time_text(int64_t ms, char *buf, size_t len)
{
	util_format_time(ms, buf, len);
}

/* --- tests -------------------------------------------------------------------- */

static void test_accepted(void **state)
{
	int64_t now = util_now_ms();
	for (int a = 0; a < 2; a++) {
		struct body s;
		Exfleet__Command cmd;
		body_init(&s, ID, "EXCH01", now, now + 10 * 60 * 1000);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		assert_true(cmd.signature.len > 0);
		assert_true(cmd.issuer_certificate.len > 0);
		expect_accepted(fx->d[a].v, &cmd, now, ID);
		expect_accepted(fx->d[a].v_nocrl, &cmd, now, ID);
		/* The verifier is reusable, and a second look gives the same answer. */
		expect_accepted(fx->d[a].v, &cmd, now, ID);
		/* The body travels as signed: it decodes to what was signed. */
		Exfleet__CommandBody *again =
		    exfleet__command_body__unpack(NULL, cmd.body.len, cmd.body.data);
		assert_non_null(again);
		assert_int_equal(again->issued_at_ms, now);
		exfleet__command_body__free_unpacked(again, NULL);
		sign_command_free(&cmd);
		assert_null(cmd.body.data);
	}
}

static void test_forged_signature(void **state)
{
	int64_t now = util_now_ms();
	for (int a = 0; a < 2; a++) {
		struct body s;
		Exfleet__Command cmd;
		body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		for (size_t i = 0; i < cmd.signature.len; i += cmd.signature.len / 4) {
			cmd.signature.data[i] ^= 0x01;
			expect_refused(fx->d[a].v, &cmd, now, UV_EACCES, "bad signature");
			cmd.signature.data[i] ^= 0x01;
		}
		cmd.signature.data[cmd.signature.len - 1] ^= 0x80;
		expect_refused(fx->d[a].v, &cmd, now, UV_EACCES, "bad signature");
		cmd.signature.data[cmd.signature.len - 1] ^= 0x80;
		size_t len = cmd.signature.len;
		cmd.signature.len = 0;
		expect_refused(fx->d[a].v, &cmd, now, UV_EACCES, "bad signature");
		cmd.signature.len = len - 1;
		expect_refused(fx->d[a].v, &cmd, now, UV_EACCES, "bad signature");
		cmd.signature.len = len;
		expect_accepted(fx->d[a].v, &cmd, now, ID);
		sign_command_free(&cmd);

		/* Signed by bob's key, carrying alice's certificate. */
		sign_as2(fx->d[a].dir, PKI_ROLE_OPERATOR, "bob", "alice", &s.b, &cmd);
		expect_refused(fx->d[a].v, &cmd, now, UV_EACCES, "bad signature");
		sign_command_free(&cmd);
	}
}

static void test_body_tampered(void **state)
{
	int64_t now = util_now_ms();
	for (int a = 0; a < 2; a++) {
		struct body s;
		Exfleet__Command cmd;
		body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		for (size_t i = 0; i < cmd.body.len; i++) {
			cmd.body.data[i] ^= 0x04;
			expect_refused(fx->d[a].v, &cmd, now, UV_EACCES, "bad signature");
			cmd.body.data[i] ^= 0x04;
		}
		/* A byte appended, or the last one cut off. */
		uint8_t *longer = malloc(cmd.body.len + 1);
		assert_non_null(longer);
		memcpy(longer, cmd.body.data, cmd.body.len);
		longer[cmd.body.len] = 0;
		uint8_t *orig = cmd.body.data;
		cmd.body.data = longer;
		cmd.body.len++;
		expect_refused(fx->d[a].v, &cmd, now, UV_EACCES, "bad signature");
		cmd.body.len -= 2;
		expect_refused(fx->d[a].v, &cmd, now, UV_EACCES, "bad signature");
		cmd.body.len++;
		cmd.body.data = orig;
		free(longer);
		expect_accepted(fx->d[a].v, &cmd, now, ID);
		sign_command_free(&cmd);
	}
}

static void test_viewer_signer(void **state)
{
	int64_t now = util_now_ms();
	for (int a = 0; a < 2; a++) {
		struct body s;
		Exfleet__Command cmd;
		body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_VIEWER, "victor", &s.b, &cmd);
		expect_refused_as(fx->d[a].v, &cmd, now, UV_EACCES,
		                  "signer 'victor' has role viewer, not operator", "victor");
		sign_command_free(&cmd);
		/* An agent's certificate key is no operator's either. */
		sign_as(fx->d[a].dir, PKI_ROLE_AGENT, "EXCH01", &s.b, &cmd);
		expect_refused_as(fx->d[a].v, &cmd, now, UV_EACCES,
		                  "signer 'EXCH01' has role agent, not operator", "EXCH01");
		sign_command_free(&cmd);
		/* Nor a collector's, which is not even for client use. */
		sign_as(fx->d[a].dir, PKI_ROLE_COLLECTOR, "collector.example", &s.b, &cmd);
		expect_refused_as(fx->d[a].v, &cmd, now, UV_EACCES,
		                  "operator certificate not valid for client authentication", "");
		sign_command_free(&cmd);
	}
}

static void test_revoked_signer(void **state)
{
	int64_t now = util_now_ms();
	for (int a = 0; a < 2; a++) {
		struct body s;
		Exfleet__Command cmd;
		body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "mallory", &s.b, &cmd);
		expect_refused_as(fx->d[a].v, &cmd, now, UV_EACCES, "operator certificate revoked",
		                  "");
		/* Revocation is known only where the CRL is installed. */
		Exfleet__CommandBody *body = NULL;
		char op[SIGN_OPERATOR_MAX], reason[256];
		assert_int_equal(sign_verify_command(fx->d[a].v_nocrl, &cmd, "EXCH01", now, SKEW_MS,
		                                     &body, op, reason, sizeof(reason)),
		                 0);
		assert_string_equal(op, "mallory");
		exfleet__command_body__free_unpacked(body, NULL);
		sign_command_free(&cmd);
	}
}

/* A CRL reloaded after a revocation takes effect; a bad one leaves the last
 * good CRL in force. */
static void test_crl_reload(void **state)
{
	const char *dir = fx->d[0].dir;
	char src[1300], copy[1300], ca[1300], *data = NULL;
	size_t len = 0;
	int64_t now = util_now_ms();
	struct body s;
	Exfleet__Command cmd;

	issue(dir, PKI_ROLE_OPERATOR, "trudy", 0, 0);
	snprintf(src, sizeof(src), "%s/crl.pem", dir);
	snprintf(copy, sizeof(copy), "%s/crl-installed.pem", fx->root);
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	assert_int_equal(util_read_file(src, 1 << 20, &data, &len, fx->err, sizeof(fx->err)), 0);
	assert_int_equal(util_write_file_atomic(copy, data, len, 0644, fx->err, sizeof(fx->err)),
	                 0);
	free(data);
	struct sign_verifier *v = sign_verifier_new(ca, copy, fx->err, sizeof(fx->err));
	assert_non_null(v);

	body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
	sign_as(dir, PKI_ROLE_OPERATOR, "trudy", &s.b, &cmd);
	Exfleet__CommandBody *body = NULL;
	char op[SIGN_OPERATOR_MAX], reason[256];
	assert_int_equal(
	    sign_verify_command(v, &cmd, "EXCH01", now, SKEW_MS, &body, op, reason, sizeof(reason)),
	    0);
	exfleet__command_body__free_unpacked(body, NULL);

	assert_int_equal(pki_revoke(dir, "trudy", NULL, NULL, fx->err, sizeof(fx->err)), 0);
	assert_int_equal(util_read_file(src, 1 << 20, &data, &len, fx->err, sizeof(fx->err)), 0);
	assert_int_equal(util_write_file_atomic(copy, data, len, 0644, fx->err, sizeof(fx->err)),
	                 0);
	free(data);
	/* Not re-read yet: still accepted. */
	assert_int_equal(
	    sign_verify_command(v, &cmd, "EXCH01", now, SKEW_MS, &body, op, reason, sizeof(reason)),
	    0);
	exfleet__command_body__free_unpacked(body, NULL);
	assert_int_equal(sign_verifier_reload_crl(v, fx->err, sizeof(fx->err)), 0);
	expect_refused_as(v, &cmd, now, UV_EACCES, "operator certificate revoked", "");

	/* A damaged file, then another CA's CRL: refused, the last good CRL stays. */
	assert_int_equal(
	    util_write_file_atomic(copy, "garbage\n", 8, 0644, fx->err, sizeof(fx->err)), 0);
	assert_true(sign_verifier_reload_crl(v, fx->err, sizeof(fx->err)) < 0);
	assert_non_null(strstr(fx->err, copy));
	snprintf(src, sizeof(src), "%s/crl.pem", fx->other);
	assert_int_equal(util_read_file(src, 1 << 20, &data, &len, fx->err, sizeof(fx->err)), 0);
	assert_int_equal(util_write_file_atomic(copy, data, len, 0644, fx->err, sizeof(fx->err)),
	                 0);
	free(data);
	assert_int_equal(sign_verifier_reload_crl(v, fx->err, sizeof(fx->err)), UV_EINVAL);
	assert_non_null(strstr(fx->err, "not a CRL signed by the CA"));
	expect_refused_as(v, &cmd, now, UV_EACCES, "operator certificate revoked", "");

	sign_command_free(&cmd);
	sign_verifier_free(v);
}

struct checker {
	struct sign_verifier *v;
	const Exfleet__Command *cmd;
	int64_t now;
	int refused;
};

static void checker_main(void *arg)
{
	struct checker *c = arg;
	for (int i = 0; i < 200; i++) {
		Exfleet__CommandBody *body = NULL;
		char op[SIGN_OPERATOR_MAX], reason[256];
		if (sign_verify_command(c->v, c->cmd, "EXCH01", c->now, SKEW_MS, &body, op, reason,
		                        sizeof(reason)) < 0)
			c->refused++;
		exfleet__command_body__free_unpacked(body, NULL);
	}
}

/* A reload while other threads check commands (the relay's thread pool):
 * every check sees one whole CRL, before or after. */
static void test_crl_reload_while_checking(void **state)
{
	const char *dir = fx->d[0].dir;
	char ca[1300], crl[1300];
	int64_t now = util_now_ms();
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	snprintf(crl, sizeof(crl), "%s/crl.pem", dir);
	struct sign_verifier *v = sign_verifier_new(ca, crl, fx->err, sizeof(fx->err));
	assert_non_null(v);
	struct body s;
	Exfleet__Command cmd;
	body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
	sign_as(dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);

	struct checker c[2] = {{v, &cmd, now, 0}, {v, &cmd, now, 0}};
	uv_thread_t t[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(uv_thread_create(&t[i], checker_main, &c[i]), 0);
	for (int i = 0; i < 50; i++)
		assert_int_equal(sign_verifier_reload_crl(v, fx->err, sizeof(fx->err)), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(uv_thread_join(&t[i]), 0);
		assert_int_equal(c[i].refused, 0);
	}
	sign_command_free(&cmd);
	sign_verifier_free(v);
}

static void test_expired_signer(void **state)
{
	int64_t now = util_now_ms();
	for (int a = 0; a < 2; a++) {
		struct body s;
		Exfleet__Command cmd;
		char want[128], when[32];
		struct tm tm;
		body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "olga", &s.b, &cmd);
		X509 *cert = load_cert(fx->d[a].dir, PKI_ROLE_OPERATOR, "olga");
		assert_int_equal(ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm), 1);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		X509_free(cert);
		snprintf(want, sizeof(want), "operator certificate expired at %s", when);
		expect_refused_as(fx->d[a].v, &cmd, now, UV_EACCES, want, "");
		sign_command_free(&cmd);
	}
}

static void test_expired_crl(void **state)
{
	int64_t later = util_now_ms() + 400LL * 86400 * 1000; /* past the CRL's 365 days */
	struct body s;
	Exfleet__Command cmd;
	body_init(&s, ID, "EXCH01", later, later + HOUR_MS);
	sign_as(fx->d[0].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
	expect_refused_as(fx->d[0].v, &cmd, later, UV_EACCES,
	                  "the CRL has expired: run exfleetctl pki crl and install the new crl.pem",
	                  "");
	sign_command_free(&cmd);
}

static void test_other_ca(void **state)
{
	int64_t now = util_now_ms();
	for (int a = 0; a < 2; a++) {
		struct body s;
		Exfleet__Command cmd;
		body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
		sign_as(fx->other, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_refused_as(fx->d[a].v, &cmd, now, UV_EACCES,
		                  "operator certificate not issued by the trusted CA", "");
		expect_refused_as(fx->d[a].v_nocrl, &cmd, now, UV_EACCES,
		                  "operator certificate not issued by the trusted CA", "");
		sign_command_free(&cmd);
	}
	/* The CA certificate itself signs nothing as an operator. */
	struct body s;
	Exfleet__Command cmd;
	char ca[1300];
	body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
	sign_as(fx->d[0].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
	snprintf(ca, sizeof(ca), "%s/ca.crt", fx->d[0].dir);
	X509 *ca_cert = test_read_cert(ca);
	assert_non_null(ca_cert);
	OPENSSL_free(cmd.issuer_certificate.data);
	cmd.issuer_certificate.data = NULL;
	int len = i2d_X509(ca_cert, &cmd.issuer_certificate.data);
	assert_true(len > 0);
	cmd.issuer_certificate.len = (size_t)len;
	X509_free(ca_cert);
	expect_refused_as(fx->d[0].v, &cmd, now, UV_EACCES,
	                  "operator certificate not valid for client authentication", "");
	sign_command_free(&cmd);
}

static void test_other_host(void **state)
{
	int64_t now = util_now_ms();
	for (int a = 0; a < 2; a++) {
		struct body s;
		Exfleet__Command cmd;
		body_init(&s, ID, "EXCH02", now, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_refused(fx->d[a].v, &cmd, now, UV_EINVAL,
		               "addressed to host 'EXCH02', not 'EXCH01'");
		sign_command_free(&cmd);
		/* Case matters: host ids are compared exactly. */
		body_init(&s, ID, "exch01", now, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_refused(fx->d[a].v, &cmd, now, UV_EINVAL,
		               "addressed to host 'exch01', not 'EXCH01'");
		sign_command_free(&cmd);
		/* A control character in the target does not reach the reason. */
		body_init(&s, ID, "EX\nCH", now, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_refused(fx->d[a].v, &cmd, now, UV_EINVAL,
		               "addressed to host 'EX?CH', not 'EXCH01'");
		sign_command_free(&cmd);
	}
}

static void test_expired_command(void **state)
{
	int64_t now = util_now_ms();
	char want[64], when[32];
	for (int a = 0; a < 2; a++) {
		struct body s;
		Exfleet__Command cmd;
		body_init(&s, ID, "EXCH01", now - 2 * HOUR_MS, now - HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		time_text(now - HOUR_MS, when, sizeof(when));
		snprintf(want, sizeof(want), "expired at %s", when);
		expect_refused(fx->d[a].v, &cmd, now, UV_ETIMEDOUT, want);
		sign_command_free(&cmd);
		/* Expired, but by less than the allowed skew: the agent's clock
		 * may be the one that is ahead. */
		body_init(&s, ID, "EXCH01", now - HOUR_MS, now - SKEW_MS + 1000);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_accepted(fx->d[a].v, &cmd, now, ID);
		sign_command_free(&cmd);
		body_init(&s, ID, "EXCH01", now - HOUR_MS, now - SKEW_MS - 1000);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		time_text(now - SKEW_MS - 1000, when, sizeof(when));
		snprintf(want, sizeof(want), "expired at %s", when);
		expect_refused(fx->d[a].v, &cmd, now, UV_ETIMEDOUT, want);
		sign_command_free(&cmd);
	}
}

static void test_future_command(void **state)
{
	int64_t now = util_now_ms();
	char want[96], when[32];
	for (int a = 0; a < 2; a++) {
		struct body s;
		Exfleet__Command cmd;
		body_init(&s, ID, "EXCH01", now + 10 * 60 * 1000, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		time_text(now + 10 * 60 * 1000, when, sizeof(when));
		snprintf(want, sizeof(want), "issued at %s, in the future: check the clocks", when);
		expect_refused(fx->d[a].v, &cmd, now, UV_EINVAL, want);
		sign_command_free(&cmd);
		/* Ahead by less than the skew. */
		body_init(&s, ID, "EXCH01", now + SKEW_MS - 1000, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_accepted(fx->d[a].v, &cmd, now, ID);
		sign_command_free(&cmd);
	}
}

static void test_lifetime(void **state)
{
	int64_t now = util_now_ms();
	const int64_t day = 24 * HOUR_MS;
	for (int a = 0; a < 2; a++) {
		struct body s;
		Exfleet__Command cmd;
		body_init(&s, ID, "EXCH01", now, now + 365 * day);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_refused(fx->d[a].v, &cmd, now, UV_EINVAL,
		               "lifetime of 31536000 s exceeds 24 h");
		sign_command_free(&cmd);
		body_init(&s, ID, "EXCH01", now, now + day + 1);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_refused(fx->d[a].v, &cmd, now, UV_EINVAL,
		               "lifetime of 86401 s exceeds 24 h");
		sign_command_free(&cmd);
		body_init(&s, ID, "EXCH01", now, now + day);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_accepted(fx->d[a].v, &cmd, now, ID);
		sign_command_free(&cmd);
		body_init(&s, ID, "EXCH01", now, now - 1000);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_refused(fx->d[a].v, &cmd, now, UV_EINVAL, "expires before it is issued");
		sign_command_free(&cmd);
	}
	/* The extremes of int64 neither overflow nor slip through. */
	struct body s;
	Exfleet__Command cmd;
	body_init(&s, ID, "EXCH01", INT64_MIN, INT64_MAX);
	sign_as(fx->d[0].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
	expect_refused(fx->d[0].v, &cmd, now, UV_EINVAL,
	               "lifetime of 18446744073709552 s exceeds 24 h");
	sign_command_free(&cmd);
	body_init(&s, ID, "EXCH01", INT64_MAX, INT64_MAX);
	sign_as(fx->d[0].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
	Exfleet__CommandBody *body = NULL;
	char op[SIGN_OPERATOR_MAX], reason[256];
	assert_int_equal(sign_verify_command(fx->d[0].v, &cmd, "EXCH01", now, INT64_MAX, &body, op,
	                                     reason, sizeof(reason)),
	                 UV_EINVAL);
	assert_string_equal(reason,
	                    "issued at 9223372036854775807 ms, in the future: check the clocks");
	sign_command_free(&cmd);
}

static void test_bad_id(void **state)
{
	static const char *const bad[] = {
	    "",     "ABCDEF", "0123456789abcdeg",
	    "12-4", " 1234",  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0",
	};
	int64_t now = util_now_ms();
	struct body s;
	Exfleet__Command cmd;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		body_init(&s, bad[i], "EXCH01", now, now + HOUR_MS);
		sign_as(fx->d[i % 2].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_refused(fx->d[i % 2].v, &cmd, now, UV_EINVAL,
		               "command id is not 1 to 64 lower-case hex digits");
		sign_command_free(&cmd);
	}
	static const char *const good[] = {
	    "0", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"};
	for (size_t i = 0; i < 2; i++) {
		body_init(&s, good[i], "EXCH01", now, now + HOUR_MS);
		sign_as(fx->d[i].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_accepted(fx->d[i].v, &cmd, now, good[i]);
		sign_command_free(&cmd);
	}
}

/* With the signer's key taken as trusted, the checks that follow the
 * certificate give what sign_verify_command gives: the same result, the
 * same reason, the same body. */
static void expect_key_path_agrees(struct sign_verifier *v, const Exfleet__Command *cmd,
                                   EVP_PKEY *key, int64_t now)
{
	Exfleet__CommandBody *full = NULL, *keyed = NULL;
	char op[SIGN_OPERATOR_MAX], full_reason[512] = "", key_reason[512] = "";
	int full_rc = sign_verify_command(v, cmd, "EXCH01", now, SKEW_MS, &full, op, full_reason,
	                                  sizeof(full_reason));
	int key_rc = sign_verify_command_key(key, cmd, "EXCH01", now, SKEW_MS, &keyed, key_reason,
	                                     sizeof(key_reason));
	assert_int_equal(key_rc, full_rc);
	assert_string_equal(key_reason, full_reason);
	assert_int_equal(keyed != NULL, full != NULL);
	if (full)
		assert_string_equal(keyed->id, full->id);
	exfleet__command_body__free_unpacked(full, NULL);
	exfleet__command_body__free_unpacked(keyed, NULL);
	assert_int_equal(ERR_peek_error(), 0);
}

static void test_trusted_key(void **state)
{
	int64_t now = util_now_ms();
	for (int a = 0; a < 2; a++) {
		EVP_PKEY *alice = load_key(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice");
		struct body s;
		Exfleet__Command cmd;
		const int64_t times[][2] = {{now, now + HOUR_MS},
		                            {now - 2 * HOUR_MS, now - HOUR_MS},
		                            {now + HOUR_MS, now + 2 * HOUR_MS},
		                            {now, now + 25 * HOUR_MS}};
		for (size_t t = 0; t < sizeof(times) / sizeof(times[0]); t++) {
			body_init(&s, ID, "EXCH01", times[t][0], times[t][1]);
			sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
			expect_key_path_agrees(fx->d[a].v, &cmd, alice, now);
			cmd.signature.data[0] ^= 0x01;
			expect_key_path_agrees(fx->d[a].v, &cmd, alice, now);
			sign_command_free(&cmd);
		}
		body_init(&s, ID, "EXCH02", now, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_key_path_agrees(fx->d[a].v, &cmd, alice, now);
		sign_command_free(&cmd);
		body_init(&s, "ABC", "EXCH01", now, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		expect_key_path_agrees(fx->d[a].v, &cmd, alice, now);
		sign_command_free(&cmd);

		/* Another operator's key does not open alice's signature. */
		EVP_PKEY *bob = load_key(fx->d[a].dir, PKI_ROLE_OPERATOR, "bob");
		body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		Exfleet__CommandBody *body = (Exfleet__CommandBody *)&cmd; /* must be reset */
		char reason[512] = "";
		assert_int_equal(sign_verify_command_key(bob, &cmd, "EXCH01", now, SKEW_MS, &body,
		                                         reason, sizeof(reason)),
		                 UV_EACCES);
		assert_null(body);
		assert_string_equal(reason, "bad signature");
		sign_command_free(&cmd);
		EVP_PKEY_free(bob);
		EVP_PKEY_free(alice);
	}
}

static void test_missing_cert(void **state)
{
	int64_t now = util_now_ms();
	struct body s;
	Exfleet__Command cmd;
	body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
	sign_as(fx->d[0].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
	size_t len = cmd.issuer_certificate.len;
	cmd.issuer_certificate.len = 0;
	expect_refused_as(fx->d[0].v, &cmd, now, UV_EACCES, "no issuer certificate", "");
	cmd.issuer_certificate.len = len;
	sign_command_free(&cmd);
}

static void test_garbage_der(void **state)
{
	static uint8_t garbage[] = {0x30, 0x82, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef};
	int64_t now = util_now_ms();
	struct body s;
	Exfleet__Command cmd;
	body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
	sign_as(fx->d[0].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
	ProtobufCBinaryData good = cmd.issuer_certificate;

	cmd.issuer_certificate.data = garbage;
	cmd.issuer_certificate.len = sizeof(garbage);
	expect_refused_as(fx->d[0].v, &cmd, now, UV_EACCES,
	                  "issuer certificate does not parse (DER)", "");
	/* Truncated by one byte. */
	cmd.issuer_certificate.data = good.data;
	cmd.issuer_certificate.len = good.len - 1;
	expect_refused_as(fx->d[0].v, &cmd, now, UV_EACCES,
	                  "issuer certificate does not parse (DER)", "");
	/* Whole, with a byte after it. */
	uint8_t *longer = malloc(good.len + 1);
	assert_non_null(longer);
	memcpy(longer, good.data, good.len);
	longer[good.len] = 0;
	cmd.issuer_certificate.data = longer;
	cmd.issuer_certificate.len = good.len + 1;
	expect_refused_as(fx->d[0].v, &cmd, now, UV_EACCES,
	                  "issuer certificate does not parse (DER)", "");
	free(longer);
	/* PEM is not DER. */
	static char pem[] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
	cmd.issuer_certificate.data = (uint8_t *)pem;
	cmd.issuer_certificate.len = sizeof(pem) - 1;
	expect_refused_as(fx->d[0].v, &cmd, now, UV_EACCES,
	                  "issuer certificate does not parse (DER)", "");
	cmd.issuer_certificate = good;
	sign_command_free(&cmd);
}

static void test_sizes(void **state)
{
	int64_t now = util_now_ms();
	struct body s;
	Exfleet__Command cmd;
	char want[96];
	body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
	sign_as(fx->d[0].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
	size_t len = cmd.body.len;
	cmd.body.len = SIGN_BODY_MAX + 1; /* only the length is looked at */
	snprintf(want, sizeof(want), "command body of %d bytes exceeds %d", SIGN_BODY_MAX + 1,
	         SIGN_BODY_MAX);
	expect_refused_as(fx->d[0].v, &cmd, now, UV_EINVAL, want, "");
	cmd.body.len = len;
	len = cmd.issuer_certificate.len;
	cmd.issuer_certificate.len = SIGN_CERT_MAX + 1;
	snprintf(want, sizeof(want), "issuer certificate of %d bytes exceeds %d", SIGN_CERT_MAX + 1,
	         SIGN_CERT_MAX);
	expect_refused_as(fx->d[0].v, &cmd, now, UV_EINVAL, want, "");
	cmd.issuer_certificate.len = len;
	sign_command_free(&cmd);
}

/* The documented format, signed independently of sign_command: the prefix,
 * then the body bytes. A signature without the prefix is refused. */
static void sign_raw(EVP_PKEY *key, int prefixed, const uint8_t *body, size_t len,
                     ProtobufCBinaryData *sig)
{
	static const char prefix[] = "exfleet-command-v1";
	size_t msg_len = (prefixed ? sizeof(prefix) : 0) + len;
	uint8_t *msg = malloc(msg_len + 1);
	assert_non_null(msg);
	if (prefixed)
		memcpy(msg, prefix, sizeof(prefix));
	memcpy(msg + (prefixed ? sizeof(prefix) : 0), body, len);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	const EVP_MD *md = EVP_PKEY_is_a(key, "ED25519") ? NULL : EVP_sha256();
	size_t sig_len = 0;
	assert_int_equal(EVP_DigestSignInit(ctx, NULL, md, NULL, key), 1);
	assert_int_equal(EVP_DigestSign(ctx, NULL, &sig_len, msg, msg_len), 1);
	free(sig->data);
	sig->data = malloc(sig_len);
	assert_non_null(sig->data);
	assert_int_equal(EVP_DigestSign(ctx, sig->data, &sig_len, msg, msg_len), 1);
	sig->len = sig_len;
	EVP_MD_CTX_free(ctx);
	free(msg);
}

static void test_documented_format(void **state)
{
	int64_t now = util_now_ms();
	for (int a = 0; a < 2; a++) {
		struct body s;
		Exfleet__Command cmd;
		EVP_PKEY *key = load_key(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice");
		body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);

		sign_raw(key, 1, cmd.body.data, cmd.body.len, &cmd.signature);
		expect_accepted(fx->d[a].v, &cmd, now, ID);
		sign_raw(key, 0, cmd.body.data, cmd.body.len, &cmd.signature);
		expect_refused(fx->d[a].v, &cmd, now, UV_EACCES, "bad signature");

		/* Signed, but not a CommandBody. */
		static uint8_t junk[] = {0xff, 0xff, 0xff, 0xff};
		free(cmd.body.data);
		cmd.body.data = malloc(sizeof(junk));
		assert_non_null(cmd.body.data);
		memcpy(cmd.body.data, junk, sizeof(junk));
		cmd.body.len = sizeof(junk);
		sign_raw(key, 1, cmd.body.data, cmd.body.len, &cmd.signature);
		expect_refused(fx->d[a].v, &cmd, now, UV_EINVAL, "command body does not decode");
		EVP_PKEY_free(key);
		sign_command_free(&cmd);
	}
}

static void test_sign_refusals(void **state)
{
	EVP_PKEY *bob = load_key(fx->d[0].dir, PKI_ROLE_OPERATOR, "bob");
	X509 *alice = load_cert(fx->d[0].dir, PKI_ROLE_OPERATOR, "alice");
	EVP_PKEY *x25519 = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	struct body s;
	Exfleet__Command cmd;
	body_init(&s, ID, "EXCH01", 0, 1);
	assert_int_equal(sign_command(&s.b, bob, alice, &cmd, fx->err, sizeof(fx->err)), UV_EINVAL);
	assert_string_equal(fx->err, "operator key does not belong to the operator certificate");
	assert_null(cmd.body.data);
	assert_null(cmd.signature.data);
	assert_null(cmd.issuer_certificate.data);
	assert_int_equal(sign_command(&s.b, x25519, alice, &cmd, fx->err, sizeof(fx->err)),
	                 UV_EINVAL);
	assert_string_equal(fx->err, "operator key is neither ECDSA P-256 nor Ed25519");
	sign_command_free(&cmd);
	assert_int_equal(ERR_peek_error(), 0);
	EVP_PKEY_free(x25519);
	EVP_PKEY_free(bob);
	X509_free(alice);
}

static void test_verifier_files(void **state)
{
	char ca[1300], crl[1300], other_crl[1300], missing[1300];
	snprintf(ca, sizeof(ca), "%s/ca.crt", fx->d[0].dir);
	snprintf(crl, sizeof(crl), "%s/crl.pem", fx->d[0].dir);
	snprintf(other_crl, sizeof(other_crl), "%s/crl.pem", fx->other);
	snprintf(missing, sizeof(missing), "%s/nothing.pem", fx->root);

	assert_null(sign_verifier_new(missing, NULL, fx->err, sizeof(fx->err)));
	assert_non_null(strstr(fx->err, missing));
	assert_null(sign_verifier_new(ca, missing, fx->err, sizeof(fx->err)));
	assert_non_null(strstr(fx->err, missing));
	/* A CRL file that holds the CA certificate instead. */
	assert_null(sign_verifier_new(ca, ca, fx->err, sizeof(fx->err)));
	assert_non_null(strstr(fx->err, ca));
	assert_null(sign_verifier_new(ca, other_crl, fx->err, sizeof(fx->err)));
	assert_non_null(strstr(fx->err, "not a CRL signed by the CA"));
	/* A CA file that holds no certificate. */
	assert_null(sign_verifier_new(crl, NULL, fx->err, sizeof(fx->err)));
	assert_non_null(strstr(fx->err, "holds no PEM certificate"));
	assert_int_equal(ERR_peek_error(), 0);
	/* Without a CRL there is nothing to reload. */
	assert_int_equal(sign_verifier_reload_crl(fx->d[0].v_nocrl, fx->err, sizeof(fx->err)), 0);
	sign_verifier_free(NULL);
}

/* --- batches ------------------------------------------------------------------ */

#define BATCH_MAX_TEST 100

struct batch {
	size_t n;
	char ids[BATCH_MAX_TEST][33];
	char hosts[BATCH_MAX_TEST][16];
	struct body s[BATCH_MAX_TEST];
	const Exfleet__CommandBody *bodies[BATCH_MAX_TEST];
	Exfleet__Command cmds[BATCH_MAX_TEST];
};

/* n RESCANs, one for each of EXCH001..., signed by alice as one batch. */
static struct batch *batch_sign(const char *dir, size_t n, int64_t now)
{
	struct batch *b = calloc(1, sizeof(*b));
	assert_non_null(b);
	b->n = n;
	for (size_t i = 0; i < n; i++) {
		snprintf(b->ids[i], sizeof(b->ids[i]), "%032zx", i + 1);
		snprintf(b->hosts[i], sizeof(b->hosts[i]), "EXCH%03zu", i + 1);
		body_init(&b->s[i], b->ids[i], b->hosts[i], now, now + HOUR_MS);
		b->bodies[i] = &b->s[i].b;
	}
	EVP_PKEY *key = load_key(dir, PKI_ROLE_OPERATOR, "alice");
	X509 *cert = load_cert(dir, PKI_ROLE_OPERATOR, "alice");
	int rc = sign_commands(b->bodies, n, key, cert, b->cmds, fx->err, sizeof(fx->err));
	if (rc < 0)
		print_error("sign_commands: %s\n", fx->err);
	assert_int_equal(rc, 0);
	X509_free(cert);
	EVP_PKEY_free(key);
	return b;
}

static void batch_free(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		sign_command_free(&b->cmds[i]);
	free(b);
}

/* sign_verify_command for host; 0 and the body's id, or the reason. */
static int verify_for(struct sign_verifier *v, const Exfleet__Command *cmd, const char *host,
                      int64_t now, char *out, size_t outlen)
{
	Exfleet__CommandBody *body = NULL;
	char op[SIGN_OPERATOR_MAX];
	int rc = sign_verify_command(v, cmd, host, now, SKEW_MS, &body, op, out, outlen);
	if (rc == 0) {
		assert_string_equal(op, "alice");
		snprintf(out, outlen, "%s", body->id);
	}
	exfleet__command_body__free_unpacked(body, NULL);
	assert_int_equal(ERR_peek_error(), 0);
	return rc;
}

/* As verify_for, with a trusted key and a memo. */
static int verify_memo(EVP_PKEY *key, const Exfleet__Command *cmd, const char *host, int64_t now,
                       struct sign_memo *memo, char *out, size_t outlen)
{
	Exfleet__CommandBody *body = NULL;
	int rc = sign_verify_command_memo(key, cmd, host, now, SKEW_MS, memo, &body, out, outlen);
	if (rc == 0)
		snprintf(out, outlen, "%s", body->id);
	exfleet__command_body__free_unpacked(body, NULL);
	assert_int_equal(ERR_peek_error(), 0);
	return rc;
}

/* Every command of a batch of any size is accepted by its own host alone,
 * under one signature, with a path of at most log2(n) rounded up. */
static void test_batch_accepted(void **state)
{
	static const size_t sizes[] = {2, 3, 4, 5, 7, 8, 9, 16, 17, 100};
	int64_t now = util_now_ms();
	char got[512];
	for (int a = 0; a < 2; a++) {
		EVP_PKEY *alice = load_key(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice");
		for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
			size_t n = sizes[k], depth = 0;
			while (((size_t)1 << depth) < n)
				depth++;
			struct batch *b = batch_sign(fx->d[a].dir, n, now);
			struct sign_memo memo = {0};
			for (size_t i = 0; i < n; i++) {
				const Exfleet__Command *c = &b->cmds[i];
				assert_int_equal(c->batch_size, n);
				assert_int_equal(c->batch_index, i);
				assert_true(c->n_batch_path >= 1 && c->n_batch_path <= depth);
				assert_int_equal(c->signature.len, b->cmds[0].signature.len);
				assert_memory_equal(c->signature.data, b->cmds[0].signature.data,
				                    c->signature.len);
				assert_int_equal(verify_for(fx->d[a].v, c, b->hosts[i], now, got,
				                            sizeof(got)),
				                 0);
				assert_string_equal(got, b->ids[i]);
				assert_int_equal(verify_memo(alice, c, b->hosts[i], now, &memo, got,
				                             sizeof(got)),
				                 0);
				assert_string_equal(got, b->ids[i]);
			}
			/* Another host's command stays another host's. */
			assert_int_equal(verify_for(fx->d[a].v, &b->cmds[1], b->hosts[0], now, got,
			                            sizeof(got)),
			                 UV_EINVAL);
			char want[128];
			snprintf(want, sizeof(want), "addressed to host '%s', not '%s'", b->hosts[1],
			         b->hosts[0]);
			assert_string_equal(got, want);
			batch_free(b);
		}
		EVP_PKEY_free(alice);
	}
}

/* The tree and the signed message are what sign.h says, computed here on
 * their own: a verifier written from the header alone agrees. */
static void test_batch_documented_format(void **state)
{
	int64_t now = util_now_ms();
	for (int a = 0; a < 2; a++) {
		const size_t n = 11;
		struct batch *b = batch_sign(fx->d[a].dir, n, now);
		uint8_t level[BATCH_MAX_TEST][32];
		size_t len = n;
		for (size_t i = 0; i < n; i++) {
			uint8_t *buf = malloc(1 + b->cmds[i].body.len);
			assert_non_null(buf);
			buf[0] = 0x00;
			memcpy(buf + 1, b->cmds[i].body.data, b->cmds[i].body.len);
			unsigned int mdlen = 32;
			assert_int_equal(EVP_Digest(buf, 1 + b->cmds[i].body.len, level[i], &mdlen,
			                            EVP_sha256(), NULL),
			                 1);
			free(buf);
		}
		while (len > 1) {
			for (size_t j = 0; j < (len + 1) / 2; j++) {
				if (2 * j + 1 < len) {
					uint8_t pair[65];
					pair[0] = 0x01;
					memcpy(pair + 1, level[2 * j], 32);
					memcpy(pair + 33, level[2 * j + 1], 32);
					unsigned int mdlen = 32;
					assert_int_equal(EVP_Digest(pair, sizeof(pair), level[j], &mdlen,
					                            EVP_sha256(), NULL),
					                 1);
				} else {
					memmove(level[j], level[2 * j], 32);
				}
			}
			len = (len + 1) / 2;
		}
		static const char prefix[] = "exfleet-command-batch-v1";
		uint8_t msg[sizeof(prefix) + 4 + 32];
		memcpy(msg, prefix, sizeof(prefix));
		msg[sizeof(prefix)] = 0;
		msg[sizeof(prefix) + 1] = 0;
		msg[sizeof(prefix) + 2] = 0;
		msg[sizeof(prefix) + 3] = (uint8_t)n;
		memcpy(msg + sizeof(prefix) + 4, level[0], 32);

		X509 *cert = load_cert(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice");
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		const EVP_MD *md = a == 0 ? EVP_sha256() : NULL;
		assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, md, NULL, X509_get0_pubkey(cert)), 1);
		assert_int_equal(EVP_DigestVerify(ctx, b->cmds[5].signature.data,
		                                  b->cmds[5].signature.len, msg, sizeof(msg)),
		                 1);
		EVP_MD_CTX_free(ctx);
		X509_free(cert);

		/* And a signature made here over that message is accepted. */
		EVP_PKEY *key = load_key(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice");
		ctx = EVP_MD_CTX_new();
		size_t sig_len = 0;
		assert_int_equal(EVP_DigestSignInit(ctx, NULL, md, NULL, key), 1);
		assert_int_equal(EVP_DigestSign(ctx, NULL, &sig_len, msg, sizeof(msg)), 1);
		free(b->cmds[5].signature.data);
		b->cmds[5].signature.data = malloc(sig_len);
		assert_non_null(b->cmds[5].signature.data);
		assert_int_equal(
		    EVP_DigestSign(ctx, b->cmds[5].signature.data, &sig_len, msg, sizeof(msg)), 1);
		b->cmds[5].signature.len = sig_len;
		EVP_MD_CTX_free(ctx);
		EVP_PKEY_free(key);
		char got[512];
		assert_int_equal(verify_for(fx->d[a].v, &b->cmds[5], b->hosts[5], now, got,
		                            sizeof(got)),
		                 0);
		assert_string_equal(got, b->ids[5]);
		batch_free(b);
	}
}

static void expect_batch_refused(struct sign_verifier *v, const Exfleet__Command *cmd,
                                 const char *host, int64_t now, int want_rc, const char *want)
{
	char got[512];
	assert_int_equal(verify_for(v, cmd, host, now, got, sizeof(got)), want_rc);
	assert_string_equal(got, want);
}

/* Each way of moving a command within or out of its batch is refused. */
static void test_batch_tampered(void **state)
{
	int64_t now = util_now_ms();
	for (int a = 0; a < 2; a++) {
		struct sign_verifier *v = fx->d[a].v;
		struct batch *b = batch_sign(fx->d[a].dir, 5, now);
		Exfleet__Command *c = &b->cmds[2];
		const char *host = b->hosts[2];
		const char *misfit = "batch path does not fit its index and size";

		/* Another command's body on this one's path. */
		ProtobufCBinaryData body = c->body;
		c->body = b->cmds[3].body;
		expect_batch_refused(v, c, b->hosts[3], now, UV_EACCES, "bad signature");
		c->body = body;
		/* Another command's path. */
		Exfleet__Command moved = b->cmds[3];
		moved.body = c->body;
		expect_batch_refused(v, &moved, host, now, UV_EACCES, "bad signature");
		/* Another place, another size. */
		c->batch_index = 3;
		expect_batch_refused(v, c, host, now, UV_EACCES, "bad signature");
		c->batch_index = 5;
		expect_batch_refused(v, c, host, now, UV_EINVAL,
		                     "batch index 5 is not below its size 5");
		c->batch_index = 2;
		c->batch_size = 6;
		expect_batch_refused(v, c, host, now, UV_EACCES, "bad signature");
		c->batch_size = SIGN_BATCH_MAX + 1;
		char want[128];
		snprintf(want, sizeof(want), "batch of %u commands exceeds %u", SIGN_BATCH_MAX + 1,
		         SIGN_BATCH_MAX);
		expect_batch_refused(v, c, host, now, UV_EINVAL, want);
		/* Signed alone, by the look of it, but carrying a path. */
		c->batch_size = 0;
		expect_batch_refused(v, c, host, now, UV_EINVAL, misfit);
		c->batch_size = 5;

		/* The path: short, long, a hash cut, a hash changed. */
		c->n_batch_path--;
		expect_batch_refused(v, c, host, now, UV_EINVAL, misfit);
		c->n_batch_path++;
		ProtobufCBinaryData *path = c->batch_path;
		ProtobufCBinaryData longer[SIGN_PATH_MAX + 1];
		memcpy(longer, path, c->n_batch_path * sizeof(*path));
		longer[c->n_batch_path] = path[0];
		c->batch_path = longer;
		c->n_batch_path++;
		expect_batch_refused(v, c, host, now, UV_EINVAL, misfit);
		c->n_batch_path--;
		c->batch_path = path;
		path[0].len--;
		expect_batch_refused(v, c, host, now, UV_EINVAL, misfit);
		path[0].len++;
		path[c->n_batch_path - 1].data[7] ^= 0x20;
		expect_batch_refused(v, c, host, now, UV_EACCES, "bad signature");
		path[c->n_batch_path - 1].data[7] ^= 0x20;
		expect_batch_refused(v, c, b->hosts[1], now, UV_EINVAL,
		                     "addressed to host 'EXCH003', not 'EXCH002'");
		char got[512];
		assert_int_equal(verify_for(v, c, host, now, got, sizeof(got)), 0);
		batch_free(b);

		/* A command signed alone carries no batch fields. */
		struct body s;
		Exfleet__Command cmd;
		body_init(&s, ID, "EXCH01", now, now + HOUR_MS);
		sign_as(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice", &s.b, &cmd);
		assert_int_equal(cmd.batch_size, 0);
		assert_int_equal(cmd.n_batch_path, 0);
		cmd.batch_index = 1;
		expect_refused(v, &cmd, now, UV_EINVAL, misfit);
		cmd.batch_index = 0;
		expect_accepted(v, &cmd, now, ID);
		sign_command_free(&cmd);
	}
}

/* The memo skips the signature check for the batch it remembers, and only
 * for it: the same certificate, root and signature bytes. */
static void test_batch_memo(void **state)
{
	int64_t now = util_now_ms();
	char got[512];
	for (int a = 0; a < 2; a++) {
		EVP_PKEY *alice = load_key(fx->d[a].dir, PKI_ROLE_OPERATOR, "alice");
		EVP_PKEY *bob = load_key(fx->d[a].dir, PKI_ROLE_OPERATOR, "bob");
		struct batch *b = batch_sign(fx->d[a].dir, 4, now);
		struct batch *other = batch_sign(fx->d[a].dir, 4, now - 1000); /* other bodies */
		struct sign_memo memo = {0};

		/* Without a memo bob's key opens nothing of alice's. */
		assert_int_equal(verify_memo(bob, &b->cmds[1], b->hosts[1], now, NULL, got,
		                             sizeof(got)),
		                 UV_EACCES);
		assert_int_equal(verify_memo(bob, &b->cmds[1], b->hosts[1], now, &memo, got,
		                             sizeof(got)),
		                 UV_EACCES);
		assert_false(memo.valid);
		assert_int_equal(verify_memo(alice, &b->cmds[0], b->hosts[0], now, &memo, got,
		                             sizeof(got)),
		                 0);
		assert_true(memo.valid);
		/* Remembered: the key is no longer consulted for this batch. */
		assert_int_equal(verify_memo(bob, &b->cmds[1], b->hosts[1], now, &memo, got,
		                             sizeof(got)),
		                 0);
		assert_string_equal(got, b->ids[1]);
		/* Not for other signature bytes, */
		b->cmds[2].signature.data[3] ^= 0x01;
		assert_int_equal(verify_memo(alice, &b->cmds[2], b->hosts[2], now, &memo, got,
		                             sizeof(got)),
		                 UV_EACCES);
		assert_string_equal(got, "bad signature");
		b->cmds[2].signature.data[3] ^= 0x01;
		/* another batch, */
		assert_int_equal(verify_memo(bob, &other->cmds[1], other->hosts[1], now, &memo, got,
		                             sizeof(got)),
		                 UV_EACCES);
		/* a body off its path, */
		ProtobufCBinaryData body = b->cmds[3].body;
		b->cmds[3].body = other->cmds[3].body;
		assert_int_equal(verify_memo(alice, &b->cmds[3], b->hosts[3], now, &memo, got,
		                             sizeof(got)),
		                 UV_EACCES);
		b->cmds[3].body = body;
		/* or another certificate. */
		X509 *bob_cert = load_cert(fx->d[a].dir, PKI_ROLE_OPERATOR, "bob");
		unsigned char *der = NULL;
		int der_len = i2d_X509(bob_cert, &der);
		assert_true(der_len > 0);
		ProtobufCBinaryData alice_der = b->cmds[3].issuer_certificate;
		b->cmds[3].issuer_certificate.data = der;
		b->cmds[3].issuer_certificate.len = (size_t)der_len;
		assert_int_equal(verify_memo(bob, &b->cmds[3], b->hosts[3], now, &memo, got,
		                             sizeof(got)),
		                 UV_EACCES);
		b->cmds[3].issuer_certificate = alice_der;
		OPENSSL_free(der);
		X509_free(bob_cert);
		assert_int_equal(verify_memo(alice, &b->cmds[3], b->hosts[3], now, &memo, got,
		                             sizeof(got)),
		                 0);
		batch_free(other);
		batch_free(b);
		EVP_PKEY_free(bob);
		EVP_PKEY_free(alice);
	}
}

static void test_batch_refusals(void **state)
{
	EVP_PKEY *key = load_key(fx->d[0].dir, PKI_ROLE_OPERATOR, "alice");
	X509 *cert = load_cert(fx->d[0].dir, PKI_ROLE_OPERATOR, "alice");
	Exfleet__Command cmd;
	assert_int_equal(sign_commands(NULL, 0, key, cert, &cmd, fx->err, sizeof(fx->err)),
	                 UV_EINVAL);
	assert_string_equal(fx->err, "a batch holds 1 to 1048576 commands, not 0");
	X509_free(cert);
	EVP_PKEY_free(key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_accepted),        cmocka_unit_test(test_forged_signature),
	    cmocka_unit_test(test_body_tampered),   cmocka_unit_test(test_viewer_signer),
	    cmocka_unit_test(test_revoked_signer),  cmocka_unit_test(test_crl_reload),
	    cmocka_unit_test(test_crl_reload_while_checking),
	    cmocka_unit_test(test_expired_signer),  cmocka_unit_test(test_expired_crl),
	    cmocka_unit_test(test_other_ca),        cmocka_unit_test(test_other_host),
	    cmocka_unit_test(test_expired_command), cmocka_unit_test(test_future_command),
	    cmocka_unit_test(test_lifetime),        cmocka_unit_test(test_bad_id),
	    cmocka_unit_test(test_missing_cert),    cmocka_unit_test(test_garbage_der),
	    cmocka_unit_test(test_sizes),           cmocka_unit_test(test_documented_format),
	    cmocka_unit_test(test_sign_refusals),   cmocka_unit_test(test_verifier_files),
	    cmocka_unit_test(test_trusted_key),
	    cmocka_unit_test(test_batch_accepted),
	    cmocka_unit_test(test_batch_documented_format),
	    cmocka_unit_test(test_batch_tampered),
	    cmocka_unit_test(test_batch_memo),
	    cmocka_unit_test(test_batch_refusals),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
