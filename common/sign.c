#include "sign.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <uv.h>

#define CA_FILE_MAX (1024 * 1024)
#define CRL_FILE_MAX (64 * 1024 * 1024) /* a large fleet's revocations */
#define SKEW_MAX_MS (7 * 24 * 3600 * 1000LL)

static const char command_context[] = SIGN_COMMAND_CONTEXT; /* sizeof counts the NUL */

struct sign_verifier {
	STACK_OF(X509) * cas;
	X509_CRL *crl; /* NULL: no CRL file */
	X509_STORE *store;
	char *ca_file;
	char *crl_file;
};

/* Formats a message from OpenSSL's error queue, then empties the queue: a
 * stale error would later be read by the TLS code as its own. */
static int ssl_fail(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	const char *why = e ? ERR_reason_error_string(e) : NULL;
	snprintf(err, errlen, "%s: %s", what, why ? why : "OpenSSL error");
	ERR_clear_error();
	return UV_EIO;
}

int sign_key_digest(EVP_PKEY *key, const EVP_MD **md)
{
	if (EVP_PKEY_is_a(key, "ED25519")) {
		*md = NULL;
		return 0;
	}
	char group[32];
	if (EVP_PKEY_is_a(key, "EC") &&
	    EVP_PKEY_get_group_name(key, group, sizeof(group), NULL) == 1 &&
	    (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)) {
		*md = EVP_sha256();
		return 0;
	}
	ERR_clear_error();
	return UV_EINVAL;
}

/* "exfleet-command-v1" NUL || body, in one buffer: Ed25519 cannot sign in parts. */
static uint8_t *signed_message(const uint8_t *body, size_t len, size_t *msg_len)
{
	uint8_t *msg = malloc(sizeof(command_context) + len);
	if (!msg)
		return NULL;
	memcpy(msg, command_context, sizeof(command_context));
	if (len)
		memcpy(msg + sizeof(command_context), body, len);
	*msg_len = sizeof(command_context) + len;
	return msg;
}

void sign_command_free(Exfleet__Command *cmd)
{
	if (!cmd)
		return;
	free(cmd->body.data);
	free(cmd->signature.data);
	OPENSSL_free(cmd->issuer_certificate.data);
	exfleet__command__init(cmd);
}

int sign_command(const Exfleet__CommandBody *body, EVP_PKEY *operator_key, X509 *operator_cert,
                 Exfleet__Command *out, char *err, size_t errlen)
{
	EVP_MD_CTX *mdctx = NULL;
	const EVP_MD *md;
	uint8_t *msg = NULL;
	size_t msg_len = 0, sig_len = 0;
	unsigned char *der = NULL;
	int rc;

	ERR_clear_error();
	exfleet__command__init(out);
	if (sign_key_digest(operator_key, &md) < 0) {
		snprintf(err, errlen, "operator key is neither ECDSA P-256 nor Ed25519");
		return UV_EINVAL;
	}
	if (X509_check_private_key(operator_cert, operator_key) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "operator key does not belong to the operator certificate");
		return UV_EINVAL;
	}
	size_t body_len = exfleet__command_body__get_packed_size(body);
	if (body_len > SIGN_BODY_MAX) {
		snprintf(err, errlen, "command body of %zu bytes exceeds %d", body_len,
		         SIGN_BODY_MAX);
		return UV_EINVAL;
	}
	out->body.data = malloc(body_len ? body_len : 1);
	if (!out->body.data) {
		rc = UV_ENOMEM;
		snprintf(err, errlen, "signing a command: out of memory");
		goto out;
	}
	out->body.len = exfleet__command_body__pack(body, out->body.data);
	msg = signed_message(out->body.data, out->body.len, &msg_len);
	mdctx = EVP_MD_CTX_new();
	if (!msg || !mdctx) {
		rc = UV_ENOMEM;
		snprintf(err, errlen, "signing a command: out of memory");
		goto out;
	}
	if (EVP_DigestSignInit(mdctx, NULL, md, NULL, operator_key) != 1 ||
	    EVP_DigestSign(mdctx, NULL, &sig_len, msg, msg_len) != 1) {
		rc = ssl_fail(err, errlen, "signing a command");
		goto out;
	}
	out->signature.data = malloc(sig_len);
	if (!out->signature.data) {
		rc = UV_ENOMEM;
		snprintf(err, errlen, "signing a command: out of memory");
		goto out;
	}
	if (EVP_DigestSign(mdctx, out->signature.data, &sig_len, msg, msg_len) != 1) {
		rc = ssl_fail(err, errlen, "signing a command");
		goto out;
	}
	out->signature.len = sig_len;
	int der_len = i2d_X509(operator_cert, &der);
	if (der_len <= 0) {
		rc = ssl_fail(err, errlen, "encoding the operator certificate");
		goto out;
	}
	out->issuer_certificate.data = der;
	out->issuer_certificate.len = (size_t)der_len;
	der = NULL;
	rc = 0;
out:
	if (rc < 0)
		sign_command_free(out);
	EVP_MD_CTX_free(mdctx);
	free(msg);
	return rc;
}

/* --- verifier ------------------------------------------------------------- */

static int read_pem(const char *path, size_t max, BIO **bio, char *err, size_t errlen)
{
	char *data = NULL;
	size_t len = 0;
	int rc = util_read_file(path, max, &data, &len, err, errlen);
	if (rc < 0)
		return rc;
	/* A BIO that owns its copy, so data can go now. */
	*bio = BIO_new(BIO_s_mem());
	if (!*bio || BIO_write(*bio, data, (int)len) != (int)len) {
		BIO_free(*bio);
		*bio = NULL;
		free(data);
		return ssl_fail(err, errlen, path);
	}
	free(data);
	return 0;
}

static int cas_load(const char *path, STACK_OF(X509) * *out, char *err, size_t errlen)
{
	BIO *bio = NULL;
	STACK_OF(X509) *cas = NULL;
	X509 *cert = NULL;
	int rc = read_pem(path, CA_FILE_MAX, &bio, err, errlen);
	if (rc < 0)
		return rc;
	cas = sk_X509_new_null();
	if (!cas) {
		rc = ssl_fail(err, errlen, path);
		goto out;
	}
	while ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (!sk_X509_push(cas, cert)) {
			rc = ssl_fail(err, errlen, path);
			goto out;
		}
		cert = NULL;
	}
	/* The loop ends on "no start line" once the file is read. */
	ERR_clear_error();
	if (sk_X509_num(cas) == 0) {
		snprintf(err, errlen,
		         "%s: holds no PEM certificate; install the deployment's ca.crt", path);
		rc = UV_EINVAL;
		goto out;
	}
	*out = cas;
	cas = NULL;
	rc = 0;
out:
	X509_free(cert);
	sk_X509_pop_free(cas, X509_free);
	BIO_free(bio);
	return rc;
}

/* The CRL must come from one of the CAs: a CRL signed by anyone else would
 * fail every check later, far from the file that caused it. */
static int crl_load(const char *path, STACK_OF(X509) * cas, X509_CRL **out, char *err,
                    size_t errlen)
{
	BIO *bio = NULL;
	X509_CRL *crl = NULL;
	int rc = read_pem(path, CRL_FILE_MAX, &bio, err, errlen);
	if (rc < 0)
		return rc;
	crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
	if (!crl) {
		rc = ssl_fail(err, errlen, path);
		goto out;
	}
	int signed_by_ca = 0;
	for (int i = 0; i < sk_X509_num(cas) && !signed_by_ca; i++) {
		X509 *ca = sk_X509_value(cas, i);
		EVP_PKEY *pub = X509_get0_pubkey(ca);
		signed_by_ca =
		    X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) == 0 &&
		    pub && X509_CRL_verify(crl, pub) == 1;
	}
	ERR_clear_error();
	if (!signed_by_ca) {
		snprintf(err, errlen,
		         "%s: not a CRL signed by the CA; install the crl.pem of this deployment",
		         path);
		rc = UV_EINVAL;
		goto out;
	}
	*out = crl;
	crl = NULL;
	rc = 0;
out:
	X509_CRL_free(crl);
	BIO_free(bio);
	return rc;
}

static X509_STORE *store_new(STACK_OF(X509) * cas, X509_CRL *crl)
{
	X509_STORE *store = X509_STORE_new();
	if (!store)
		return NULL;
	for (int i = 0; i < sk_X509_num(cas); i++)
		if (!X509_STORE_add_cert(store, sk_X509_value(cas, i)))
			goto fail;
	if (crl && !X509_STORE_add_crl(store, crl))
		goto fail;
	return store;
fail:
	X509_STORE_free(store);
	return NULL;
}

void sign_verifier_free(struct sign_verifier *v)
{
	if (!v)
		return;
	X509_STORE_free(v->store);
	X509_CRL_free(v->crl);
	sk_X509_pop_free(v->cas, X509_free);
	free(v->ca_file);
	free(v->crl_file);
	free(v);
}

struct sign_verifier *sign_verifier_new(const char *ca_file, const char *crl_file, char *err,
                                        size_t errlen)
{
	struct sign_verifier *v = calloc(1, sizeof(*v));
	int rc;

	ERR_clear_error();
	if (!v) {
		snprintf(err, errlen, "%s: out of memory", ca_file);
		return NULL;
	}
	v->ca_file = strdup(ca_file);
	v->crl_file = crl_file && crl_file[0] ? strdup(crl_file) : NULL;
	if (!v->ca_file || (crl_file && crl_file[0] && !v->crl_file)) {
		snprintf(err, errlen, "%s: out of memory", ca_file);
		goto fail;
	}
	if ((rc = cas_load(ca_file, &v->cas, err, errlen)) < 0)
		goto fail;
	if (v->crl_file && (rc = crl_load(v->crl_file, v->cas, &v->crl, err, errlen)) < 0)
		goto fail;
	v->store = store_new(v->cas, v->crl);
	if (!v->store) {
		ssl_fail(err, errlen, ca_file);
		goto fail;
	}
	return v;
fail:
	sign_verifier_free(v);
	return NULL;
}

int sign_verifier_reload_crl(struct sign_verifier *v, char *err, size_t errlen)
{
	X509_CRL *crl = NULL;
	X509_STORE *store;
	int rc;

	ERR_clear_error();
	if (!v->crl_file)
		return 0;
	if ((rc = crl_load(v->crl_file, v->cas, &crl, err, errlen)) < 0)
		return rc;
	store = store_new(v->cas, crl);
	if (!store) {
		X509_CRL_free(crl);
		return ssl_fail(err, errlen, v->crl_file);
	}
	X509_STORE_free(v->store);
	X509_CRL_free(v->crl);
	v->store = store;
	v->crl = crl;
	return 0;
}

/* --- checks ----------------------------------------------------------------- */

static void asn1_time_text(const ASN1_TIME *t, char *buf, size_t len)
{
	struct tm tm;
	if (!t || !ASN1_TIME_to_tm(t, &tm)) {
		snprintf(buf, len, "an unreadable time");
		return;
	}
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A command's time as util_format_time writes it; a time no calendar
 * routine can take (the fields are only signed, not sane) as a number. */
static void time_text(int64_t ms, char *buf, size_t len)
{
	if (ms >= 0 && ms <= 253402300799999LL) /* 9999-12-31T23:59:59Z */
		util_format_time(ms, buf, len);
	else
		snprintf(buf, len, "%lld ms", (long long)ms);
}

/* A name from a signed but foreign field, fit for a log line: printable
 * ASCII only, at most PKI_NAME_MAX characters. */
static void printable(const char *in, char *out, size_t len)
{
	size_t i = 0;
	for (; in[i] && i < PKI_NAME_MAX && i + 1 < len; i++)
		out[i] = in[i] >= 0x20 && in[i] < 0x7f ? in[i] : '?';
	out[i] = '\0';
}

/* Turns X509_verify_cert's verdict into a reason an operator can act on. */
static void chain_reason(X509_STORE_CTX *ctx, const char *role, char *reason, size_t reasonlen)
{
	int e = X509_STORE_CTX_get_error(ctx);
	int depth = X509_STORE_CTX_get_error_depth(ctx);
	X509 *at = X509_STORE_CTX_get_current_cert(ctx);
	char when[32];

	switch (e) {
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
		snprintf(reason, reasonlen, "%s certificate not issued by the trusted CA", role);
		return;
	case X509_V_ERR_INVALID_PURPOSE:
		snprintf(reason, reasonlen, "%s certificate not valid for client authentication",
		         role);
		return;
	case X509_V_ERR_CERT_REVOKED:
		snprintf(reason, reasonlen, "%s certificate revoked", role);
		return;
	case X509_V_ERR_CRL_HAS_EXPIRED:
		snprintf(reason, reasonlen,
		         "the CRL has expired: run exfleetctl pki crl and install the new crl.pem");
		return;
	case X509_V_ERR_CRL_NOT_YET_VALID:
		snprintf(reason, reasonlen, "the CRL is not valid yet: check the clocks");
		return;
	case X509_V_ERR_CERT_HAS_EXPIRED:
		asn1_time_text(at ? X509_get0_notAfter(at) : NULL, when, sizeof(when));
		if (depth == 0)
			snprintf(reason, reasonlen, "%s certificate expired at %s", role, when);
		else
			snprintf(reason, reasonlen, "the trusted CA expired at %s", when);
		return;
	case X509_V_ERR_CERT_NOT_YET_VALID:
		asn1_time_text(at ? X509_get0_notBefore(at) : NULL, when, sizeof(when));
		if (depth == 0)
			snprintf(reason, reasonlen, "%s certificate not valid before %s", role,
			         when);
		else
			snprintf(reason, reasonlen, "the trusted CA is not valid before %s", when);
		return;
	default:
		snprintf(reason, reasonlen, "%s certificate does not verify: %s", role,
		         X509_verify_cert_error_string(e));
		return;
	}
}

int sign_verifier_check_cert(struct sign_verifier *v, X509 *cert, enum pki_role role,
                             int64_t now_ms, char *name, char *reason, size_t reasonlen)
{
	const char *role_name = pki_role_name(role);
	X509_STORE_CTX *ctx = NULL;
	enum pki_role held;
	int rc;

	name[0] = '\0';
	if (!role_name) {
		snprintf(reason, reasonlen, "unknown role %d", (int)role);
		return UV_EINVAL;
	}
	ctx = X509_STORE_CTX_new();
	if (!ctx || !X509_STORE_CTX_init(ctx, v->store, cert, NULL)) {
		snprintf(reason, reasonlen, "verifying a certificate: out of memory");
		rc = UV_ENOMEM;
		goto out;
	}
	/* Operators and agents hold clientAuth certificates; a collector's
	 * serverAuth certificate fails here. */
	X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
	X509_STORE_CTX_set_time(ctx, 0, (time_t)(now_ms / 1000));
	if (v->crl)
		X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_CRL_CHECK);
	if (X509_verify_cert(ctx) != 1) {
		chain_reason(ctx, role_name, reason, reasonlen);
		rc = UV_EACCES;
		goto out;
	}
	if (pki_cert_identity(cert, name, SIGN_OPERATOR_MAX, &held) < 0) {
		name[0] = '\0';
		snprintf(reason, reasonlen, "signer certificate names no exfleet identity");
		rc = UV_EACCES;
		goto out;
	}
	if (held != role) {
		snprintf(reason, reasonlen, "signer '%s' has role %s, not %s", name,
		         pki_role_name(held), role_name);
		rc = UV_EACCES;
		goto out;
	}
	rc = 0;
out:
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
	return rc;
}

int sign_command_id_valid(const char *id)
{
	size_t len = strlen(id);
	return len > 0 && len <= SIGN_COMMAND_ID_MAX && strspn(id, "0123456789abcdef") == len;
}

/* The command's own times. Every operand stays far from overflow: now and
 * skew are sane, the signed times are compared, never added to. */
static int times_check(const Exfleet__CommandBody *b, int64_t now_ms, int64_t skew_ms, char *reason,
                       size_t reasonlen)
{
	char when[32];
	if (b->issued_at_ms > now_ms + skew_ms) {
		time_text(b->issued_at_ms, when, sizeof(when));
		snprintf(reason, reasonlen, "issued at %s, in the future: check the clocks", when);
		return UV_EINVAL;
	}
	if (b->expires_at_ms < now_ms - skew_ms) {
		time_text(b->expires_at_ms, when, sizeof(when));
		snprintf(reason, reasonlen, "expired at %s", when);
		return UV_ETIMEDOUT;
	}
	if (b->expires_at_ms < b->issued_at_ms) {
		snprintf(reason, reasonlen, "expires before it is issued");
		return UV_EINVAL;
	}
	/* expires >= issued here, so the unsigned difference is exact. */
	uint64_t lifetime = (uint64_t)b->expires_at_ms - (uint64_t)b->issued_at_ms;
	if (lifetime > (uint64_t)SIGN_COMMAND_LIFETIME_MAX_MS) {
		snprintf(reason, reasonlen, "lifetime of %llu s exceeds 24 h",
		         (unsigned long long)(lifetime / 1000 + (lifetime % 1000 != 0)));
		return UV_EINVAL;
	}
	return 0;
}

/* The size limits, which come before anything is parsed. */
static int sizes_check(const Exfleet__Command *cmd, char *reason, size_t reasonlen)
{
	if (cmd->body.len > SIGN_BODY_MAX) {
		snprintf(reason, reasonlen, "command body of %zu bytes exceeds %d", cmd->body.len,
		         SIGN_BODY_MAX);
		return UV_EINVAL;
	}
	if (cmd->issuer_certificate.len > SIGN_CERT_MAX) {
		snprintf(reason, reasonlen, "issuer certificate of %zu bytes exceeds %d",
		         cmd->issuer_certificate.len, SIGN_CERT_MAX);
		return UV_EINVAL;
	}
	if (cmd->signature.len > SIGN_SIGNATURE_MAX) {
		snprintf(reason, reasonlen, "signature of %zu bytes exceeds %d", cmd->signature.len,
		         SIGN_SIGNATURE_MAX);
		return UV_EINVAL;
	}
	return 0;
}

static int64_t skew_bounded(int64_t skew_ms)
{
	return skew_ms < 0 ? 0 : skew_ms > SKEW_MAX_MS ? SKEW_MAX_MS : skew_ms;
}

/* From the key algorithm on: the signature, then the body. */
static int verify_with_key(EVP_PKEY *pub, const Exfleet__Command *cmd, const char *my_host_id,
                           int64_t now_ms, int64_t skew_ms, Exfleet__CommandBody **body_out,
                           char *reason, size_t reasonlen)
{
	EVP_MD_CTX *mdctx = NULL;
	Exfleet__CommandBody *body = NULL;
	uint8_t *msg = NULL;
	size_t msg_len = 0;
	const EVP_MD *md;
	int rc;

	if (!pub || sign_key_digest(pub, &md) < 0) {
		snprintf(reason, reasonlen, "signer key is neither ECDSA P-256 nor Ed25519");
		return UV_EACCES;
	}
	msg = signed_message(cmd->body.data, cmd->body.len, &msg_len);
	mdctx = EVP_MD_CTX_new();
	if (!msg || !mdctx) {
		snprintf(reason, reasonlen, "verifying a command: out of memory");
		rc = UV_ENOMEM;
		goto out;
	}
	if (cmd->signature.len == 0 || EVP_DigestVerifyInit(mdctx, NULL, md, NULL, pub) != 1 ||
	    EVP_DigestVerify(mdctx, cmd->signature.data, cmd->signature.len, msg, msg_len) != 1) {
		snprintf(reason, reasonlen, "bad signature");
		rc = UV_EACCES;
		goto out;
	}

	body = exfleet__command_body__unpack(NULL, cmd->body.len, cmd->body.data);
	if (!body) {
		snprintf(reason, reasonlen, "command body does not decode");
		rc = UV_EINVAL;
		goto out;
	}
	if (strcmp(body->target_host_id, my_host_id) != 0) {
		char target[PKI_NAME_MAX + 1];
		printable(body->target_host_id, target, sizeof(target));
		snprintf(reason, reasonlen, "addressed to host '%s', not '%s'", target, my_host_id);
		rc = UV_EINVAL;
		goto out;
	}
	if (!sign_command_id_valid(body->id)) {
		snprintf(reason, reasonlen, "command id is not 1 to %d lower-case hex digits",
		         SIGN_COMMAND_ID_MAX);
		rc = UV_EINVAL;
		goto out;
	}
	if ((rc = times_check(body, now_ms, skew_ms, reason, reasonlen)) < 0)
		goto out;
	*body_out = body;
	body = NULL;
	rc = 0;
out:
	if (body)
		exfleet__command_body__free_unpacked(body, NULL);
	EVP_MD_CTX_free(mdctx);
	free(msg);
	ERR_clear_error();
	return rc;
}

int sign_verify_command(struct sign_verifier *v, const Exfleet__Command *cmd,
                        const char *my_host_id, int64_t now_ms, int64_t skew_ms,
                        Exfleet__CommandBody **body_out, char *operator_out, char *reason,
                        size_t reasonlen)
{
	char name[SIGN_OPERATOR_MAX];
	int rc;

	ERR_clear_error();
	*body_out = NULL;
	operator_out[0] = '\0';
	if ((rc = sizes_check(cmd, reason, reasonlen)) < 0)
		return rc;
	if (cmd->issuer_certificate.len == 0) {
		snprintf(reason, reasonlen, "no issuer certificate");
		return UV_EACCES;
	}
	const unsigned char *p = cmd->issuer_certificate.data;
	X509 *cert = d2i_X509(NULL, &p, (long)cmd->issuer_certificate.len);
	/* Trailing bytes would be unsigned data riding along: refuse them. */
	if (!cert || p != cmd->issuer_certificate.data + cmd->issuer_certificate.len) {
		snprintf(reason, reasonlen, "issuer certificate does not parse (DER)");
		rc = UV_EACCES;
	} else {
		rc = sign_verifier_check_cert(v, cert, PKI_ROLE_OPERATOR, now_ms, name, reason,
		                              reasonlen);
		snprintf(operator_out, SIGN_OPERATOR_MAX, "%s", name);
		if (rc == 0)
			rc = verify_with_key(X509_get0_pubkey(cert), cmd, my_host_id, now_ms,
			                     skew_bounded(skew_ms), body_out, reason, reasonlen);
	}
	X509_free(cert);
	ERR_clear_error();
	return rc;
}

int sign_verify_command_key(EVP_PKEY *key, const Exfleet__Command *cmd, const char *my_host_id,
                            int64_t now_ms, int64_t skew_ms, Exfleet__CommandBody **body_out,
                            char *reason, size_t reasonlen)
{
	ERR_clear_error();
	*body_out = NULL;
	int rc = sizes_check(cmd, reason, reasonlen);
	return rc < 0 ? rc
	              : verify_with_key(key, cmd, my_host_id, now_ms, skew_bounded(skew_ms),
	                                body_out, reason, reasonlen);
}
