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

/* sizeof counts the NUL */
static const char command_context[] = SIGN_COMMAND_CONTEXT;
static const char batch_context[] = SIGN_BATCH_CONTEXT;

struct sign_verifier {
	STACK_OF(X509) * cas;
	/* store and crl are swapped whole by a reload, under lock, while
	 * checks on other threads keep the store they referenced. */
	uv_mutex_t lock;
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

/* --- batches: the hash tree ---------------------------------------------- */

#define BATCH_MESSAGE_LEN (sizeof(batch_context) + 4 + SIGN_HASH_LEN)
#define LEVELS_MAX (SIGN_PATH_MAX + 1)

/* SHA-256 with one fetched implementation, for the many small hashes of a
 * tree (an implicit fetch per hash would cost more than the hash). */
struct hasher {
	EVP_MD *md;
	EVP_MD_CTX *ctx;
};

static int hasher_open(struct hasher *h)
{
	h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
	h->ctx = EVP_MD_CTX_new();
	return h->md && h->ctx ? 0 : -1;
}

static void hasher_close(struct hasher *h)
{
	EVP_MD_CTX_free(h->ctx);
	EVP_MD_free(h->md);
}

/* SHA-256 of a || b || c; any may be empty (NULL, 0). */
static int hash3(struct hasher *h, const void *a, size_t alen, const void *b, size_t blen,
                 const void *c, size_t clen, uint8_t out[SIGN_HASH_LEN])
{
	return EVP_DigestInit_ex2(h->ctx, h->md, NULL) == 1 &&
	               (alen == 0 || EVP_DigestUpdate(h->ctx, a, alen) == 1) &&
	               (blen == 0 || EVP_DigestUpdate(h->ctx, b, blen) == 1) &&
	               (clen == 0 || EVP_DigestUpdate(h->ctx, c, clen) == 1) &&
	               EVP_DigestFinal_ex(h->ctx, out, NULL) == 1
	           ? 0
	           : -1;
}

static const uint8_t leaf_prefix = 0x00, node_prefix = 0x01;

static int leaf_hash(struct hasher *h, const ProtobufCBinaryData *body, uint8_t out[SIGN_HASH_LEN])
{
	return hash3(h, &leaf_prefix, 1, body->data, body->len, NULL, 0, out);
}

static int node_hash(struct hasher *h, const uint8_t *left, const uint8_t *right,
                     uint8_t out[SIGN_HASH_LEN])
{
	return hash3(h, &node_prefix, 1, left, SIGN_HASH_LEN, right, SIGN_HASH_LEN, out);
}

/* "exfleet-command-batch-v1" NUL || size, big-endian || root */
static void batch_message(uint32_t size, const uint8_t root[SIGN_HASH_LEN],
                          uint8_t msg[BATCH_MESSAGE_LEN])
{
	memcpy(msg, batch_context, sizeof(batch_context));
	uint8_t *p = msg + sizeof(batch_context);
	p[0] = (uint8_t)(size >> 24);
	p[1] = (uint8_t)(size >> 16);
	p[2] = (uint8_t)(size >> 8);
	p[3] = (uint8_t)size;
	memcpy(p + 4, root, SIGN_HASH_LEN);
}

/* Every node of the tree over n bodies, level by level from the leaves; the
 * root is the last. */
struct tree {
	uint8_t (*h)[SIGN_HASH_LEN];
	size_t off[LEVELS_MAX], len[LEVELS_MAX];
	size_t levels;
};

static int tree_build(struct hasher *hs, const Exfleet__Command *cmds, size_t n, struct tree *t)
{
	size_t total = 0, len = n;
	t->levels = 0;
	for (;;) {
		t->off[t->levels] = total;
		t->len[t->levels++] = len;
		total += len;
		if (len == 1)
			break;
		len = (len + 1) / 2;
	}
	t->h = malloc(total * SIGN_HASH_LEN);
	if (!t->h)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (leaf_hash(hs, &cmds[i].body, t->h[i]) < 0)
			return -1;
	for (size_t l = 1; l < t->levels; l++) {
		uint8_t(*below)[SIGN_HASH_LEN] = t->h + t->off[l - 1];
		uint8_t(*level)[SIGN_HASH_LEN] = t->h + t->off[l];
		for (size_t j = 0; j < t->len[l]; j++) {
			if (2 * j + 1 < t->len[l - 1]) {
				if (node_hash(hs, below[2 * j], below[2 * j + 1], level[j]) < 0)
					return -1;
			} else {
				memcpy(level[j], below[2 * j], SIGN_HASH_LEN); /* lone: moves up */
			}
		}
	}
	return 0;
}

/* Command i's path: its sibling on each level that has one. */
static int tree_path(const struct tree *t, size_t i, Exfleet__Command *cmd)
{
	size_t n = 0;
	uint8_t *block = malloc(LEVELS_MAX * SIGN_HASH_LEN);
	cmd->batch_path = calloc(LEVELS_MAX, sizeof(*cmd->batch_path));
	if (!block || !cmd->batch_path) {
		free(block);
		return -1;
	}
	for (size_t l = 0, m = i; l + 1 < t->levels; l++, m >>= 1) {
		size_t sibling = m ^ 1;
		if (sibling >= t->len[l])
			continue;
		cmd->batch_path[n].data = block + n * SIGN_HASH_LEN;
		cmd->batch_path[n].len = SIGN_HASH_LEN;
		memcpy(cmd->batch_path[n].data, t->h[t->off[l] + sibling], SIGN_HASH_LEN);
		n++;
	}
	cmd->n_batch_path = n; /* at least 1: a batch has two commands or more */
	return 0;
}

/* The root that cmd's body and path lead to, with the reasons of sign.h. */
static int batch_root(struct hasher *hs, const Exfleet__Command *cmd, uint8_t root[SIGN_HASH_LEN],
                      char *reason, size_t reasonlen)
{
	if (cmd->batch_size > SIGN_BATCH_MAX) {
		snprintf(reason, reasonlen, "batch of %u commands exceeds %u", cmd->batch_size,
		         SIGN_BATCH_MAX);
		return UV_EINVAL;
	}
	if (cmd->batch_index >= cmd->batch_size) {
		snprintf(reason, reasonlen, "batch index %u is not below its size %u",
		         cmd->batch_index, cmd->batch_size);
		return UV_EINVAL;
	}
	if (leaf_hash(hs, &cmd->body, root) < 0)
		return UV_ENOMEM;
	/* Up the levels: index m among the level's last + 1 nodes. */
	uint32_t m = cmd->batch_index, last = cmd->batch_size - 1;
	size_t used = 0;
	for (; last > 0; m >>= 1, last >>= 1) {
		if (!(m & 1) && m == last)
			continue; /* lone: moves up as it is */
		if (used == cmd->n_batch_path || cmd->batch_path[used].len != SIGN_HASH_LEN)
			goto misfit;
		const uint8_t *sibling = cmd->batch_path[used++].data;
		if ((m & 1 ? node_hash(hs, sibling, root, root) : node_hash(hs, root, sibling, root)) <
		    0)
			return UV_ENOMEM;
	}
	if (used == cmd->n_batch_path)
		return 0;
misfit:
	snprintf(reason, reasonlen, "batch path does not fit its index and size");
	return UV_EINVAL;
}

/* --- signing ---------------------------------------------------------------- */

void sign_command_free(Exfleet__Command *cmd)
{
	if (!cmd)
		return;
	free(cmd->body.data);
	free(cmd->signature.data);
	OPENSSL_free(cmd->issuer_certificate.data);
	if (cmd->batch_path)
		free(cmd->n_batch_path ? cmd->batch_path[0].data : NULL);
	free(cmd->batch_path);
	exfleet__command__init(cmd);
}

static int sign_message(EVP_PKEY *key, const EVP_MD *md, const uint8_t *msg, size_t msg_len,
                        ProtobufCBinaryData *sig, char *err, size_t errlen)
{
	EVP_MD_CTX *mdctx = EVP_MD_CTX_new();
	size_t len = 0;
	int rc = UV_ENOMEM;
	if (!mdctx)
		goto oom;
	if (EVP_DigestSignInit(mdctx, NULL, md, NULL, key) != 1 ||
	    EVP_DigestSign(mdctx, NULL, &len, msg, msg_len) != 1) {
		rc = ssl_fail(err, errlen, "signing a command");
		goto out;
	}
	if (!(sig->data = malloc(len)))
		goto oom;
	if (EVP_DigestSign(mdctx, sig->data, &len, msg, msg_len) != 1) {
		rc = ssl_fail(err, errlen, "signing a command");
		goto out;
	}
	sig->len = len;
	rc = 0;
	goto out;
oom:
	snprintf(err, errlen, "signing a command: out of memory");
out:
	EVP_MD_CTX_free(mdctx);
	return rc;
}

static int copy_bytes(ProtobufCBinaryData *to, const ProtobufCBinaryData *from, int openssl)
{
	to->data = openssl ? OPENSSL_malloc(from->len) : malloc(from->len);
	if (!to->data)
		return UV_ENOMEM;
	memcpy(to->data, from->data, from->len);
	to->len = from->len;
	return 0;
}

int sign_commands(const Exfleet__CommandBody *const *bodies, size_t n, EVP_PKEY *operator_key,
                  X509 *operator_cert, Exfleet__Command *out, char *err, size_t errlen)
{
	struct hasher hs = {0};
	struct tree t = {0};
	const EVP_MD *md;
	uint8_t *msg = NULL;
	size_t msg_len = 0;
	unsigned char *der = NULL;
	int rc = UV_EINVAL;

	ERR_clear_error();
	for (size_t i = 0; i < n; i++)
		exfleet__command__init(&out[i]);
	if (n == 0 || n > SIGN_BATCH_MAX) {
		snprintf(err, errlen, "a batch holds 1 to %u commands, not %zu", SIGN_BATCH_MAX, n);
		return UV_EINVAL;
	}
	if (sign_key_digest(operator_key, &md) < 0) {
		snprintf(err, errlen, "operator key is neither ECDSA P-256 nor Ed25519");
		return UV_EINVAL;
	}
	if (X509_check_private_key(operator_cert, operator_key) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "operator key does not belong to the operator certificate");
		return UV_EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		size_t body_len = exfleet__command_body__get_packed_size(bodies[i]);
		if (body_len > SIGN_BODY_MAX) {
			snprintf(err, errlen, "command body of %zu bytes exceeds %d", body_len,
			         SIGN_BODY_MAX);
			rc = UV_EINVAL;
			goto out;
		}
		if (!(out[i].body.data = malloc(body_len ? body_len : 1)))
			goto oom;
		out[i].body.len = exfleet__command_body__pack(bodies[i], out[i].body.data);
	}
	uint8_t batch_msg[BATCH_MESSAGE_LEN];
	if (n == 1) {
		if (!(msg = signed_message(out[0].body.data, out[0].body.len, &msg_len)))
			goto oom;
	} else {
		if (hasher_open(&hs) < 0 || tree_build(&hs, out, n, &t) < 0)
			goto oom;
		batch_message((uint32_t)n, t.h[t.off[t.levels - 1]], batch_msg);
		for (size_t i = 0; i < n; i++) {
			out[i].batch_size = (uint32_t)n;
			out[i].batch_index = (uint32_t)i;
			if (tree_path(&t, i, &out[i]) < 0)
				goto oom;
		}
	}
	if ((rc = sign_message(operator_key, md, msg ? msg : batch_msg,
	                       msg ? msg_len : sizeof(batch_msg), &out[0].signature, err,
	                       errlen)) < 0)
		goto out;
	int der_len = i2d_X509(operator_cert, &der);
	if (der_len <= 0) {
		rc = ssl_fail(err, errlen, "encoding the operator certificate");
		goto out;
	}
	out[0].issuer_certificate.data = der;
	out[0].issuer_certificate.len = (size_t)der_len;
	der = NULL;
	for (size_t i = 1; i < n; i++)
		if (copy_bytes(&out[i].signature, &out[0].signature, 0) < 0 ||
		    copy_bytes(&out[i].issuer_certificate, &out[0].issuer_certificate, 1) < 0)
			goto oom;
	rc = 0;
	goto out;
oom:
	rc = UV_ENOMEM;
	snprintf(err, errlen, "signing a command: out of memory");
out:
	if (rc < 0)
		for (size_t i = 0; i < n; i++)
			sign_command_free(&out[i]);
	free(t.h);
	hasher_close(&hs);
	free(msg);
	return rc;
}

int sign_command(const Exfleet__CommandBody *body, EVP_PKEY *operator_key, X509 *operator_cert,
                 Exfleet__Command *out, char *err, size_t errlen)
{
	return sign_commands(&body, 1, operator_key, operator_cert, out, err, errlen);
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
	uv_mutex_destroy(&v->lock);
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
	if (uv_mutex_init(&v->lock) != 0) {
		snprintf(err, errlen, "%s: cannot make a lock", ca_file);
		free(v);
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
	uv_mutex_lock(&v->lock);
	X509_STORE *old_store = v->store;
	X509_CRL *old_crl = v->crl;
	v->store = store;
	v->crl = crl;
	uv_mutex_unlock(&v->lock);
	X509_STORE_free(old_store); /* a check still holding it keeps it */
	X509_CRL_free(old_crl);
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
	uv_mutex_lock(&v->lock);
	X509_STORE *store = X509_STORE_up_ref(v->store) == 1 ? v->store : NULL;
	int with_crl = v->crl != NULL;
	uv_mutex_unlock(&v->lock);
	ctx = X509_STORE_CTX_new();
	if (!store || !ctx || !X509_STORE_CTX_init(ctx, store, cert, NULL)) {
		snprintf(reason, reasonlen, "verifying a certificate: out of memory");
		rc = UV_ENOMEM;
		goto out;
	}
	/* Operators and agents hold clientAuth certificates; a collector's
	 * serverAuth certificate fails here. */
	X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
	X509_STORE_CTX_set_time(ctx, 0, (time_t)(now_ms / 1000));
	if (with_crl)
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
	X509_STORE_free(store);
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

/* The signature over msg: by the memo when it remembers this certificate,
 * message and signature as good, else by a check that the memo then keeps. */
static int signature_good(EVP_PKEY *pub, const EVP_MD *md, const Exfleet__Command *cmd,
                          const uint8_t *msg, size_t msg_len, struct hasher *hs,
                          struct sign_memo *memo)
{
	uint8_t seen[SIGN_HASH_LEN];
	if (memo && hash3(hs, cmd->issuer_certificate.data, cmd->issuer_certificate.len, msg,
	                  msg_len, cmd->signature.data, cmd->signature.len, seen) < 0)
		memo = NULL; /* cannot remember: check it */
	if (memo && memo->valid && memcmp(memo->seen, seen, sizeof(seen)) == 0)
		return 1;
	EVP_MD_CTX *mdctx = EVP_MD_CTX_new();
	int good = mdctx && cmd->signature.len > 0 &&
	           EVP_DigestVerifyInit(mdctx, NULL, md, NULL, pub) == 1 &&
	           EVP_DigestVerify(mdctx, cmd->signature.data, cmd->signature.len, msg,
	                            msg_len) == 1;
	EVP_MD_CTX_free(mdctx);
	if (good && memo) {
		memcpy(memo->seen, seen, sizeof(seen));
		memo->valid = 1;
	}
	return good;
}

/* From the key algorithm on: the batch path, the signature, then the body. */
static int verify_with_key(EVP_PKEY *pub, const Exfleet__Command *cmd, const char *my_host_id,
                           int64_t now_ms, int64_t skew_ms, struct sign_memo *memo,
                           Exfleet__CommandBody **body_out, char *reason, size_t reasonlen)
{
	struct hasher hs = {0};
	Exfleet__CommandBody *body = NULL;
	uint8_t *msg = NULL, batch_msg[BATCH_MESSAGE_LEN];
	size_t msg_len = 0;
	const EVP_MD *md;
	int rc;

	if (!pub || sign_key_digest(pub, &md) < 0) {
		snprintf(reason, reasonlen, "signer key is neither ECDSA P-256 nor Ed25519");
		return UV_EACCES;
	}
	if (cmd->batch_size == 0) {
		/* Alone: batch fields would be unsigned data riding along. */
		if (cmd->batch_index != 0 || cmd->n_batch_path != 0) {
			snprintf(reason, reasonlen, "batch path does not fit its index and size");
			rc = UV_EINVAL;
			goto out;
		}
		if (!(msg = signed_message(cmd->body.data, cmd->body.len, &msg_len)))
			goto oom;
		memo = NULL; /* one signature per command: nothing to remember */
	} else {
		uint8_t root[SIGN_HASH_LEN];
		if (hasher_open(&hs) < 0)
			goto oom;
		if ((rc = batch_root(&hs, cmd, root, reason, reasonlen)) < 0)
			goto out;
		batch_message(cmd->batch_size, root, batch_msg);
	}
	if (!signature_good(pub, md, cmd, msg ? msg : batch_msg, msg ? msg_len : sizeof(batch_msg),
	                    &hs, memo)) {
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
	goto out;
oom:
	snprintf(reason, reasonlen, "verifying a command: out of memory");
	rc = UV_ENOMEM;
out:
	if (body)
		exfleet__command_body__free_unpacked(body, NULL);
	hasher_close(&hs);
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
			                     skew_bounded(skew_ms), NULL, body_out, reason,
			                     reasonlen);
	}
	X509_free(cert);
	ERR_clear_error();
	return rc;
}

int sign_verify_command_memo(EVP_PKEY *key, const Exfleet__Command *cmd, const char *my_host_id,
                             int64_t now_ms, int64_t skew_ms, struct sign_memo *memo,
                             Exfleet__CommandBody **body_out, char *reason, size_t reasonlen)
{
	ERR_clear_error();
	*body_out = NULL;
	int rc = sizes_check(cmd, reason, reasonlen);
	return rc < 0 ? rc
	              : verify_with_key(key, cmd, my_host_id, now_ms, skew_bounded(skew_ms), memo,
	                                body_out, reason, reasonlen);
}

int sign_verify_command_key(EVP_PKEY *key, const Exfleet__Command *cmd, const char *my_host_id,
                            int64_t now_ms, int64_t skew_ms, Exfleet__CommandBody **body_out,
                            char *reason, size_t reasonlen)
{
	return sign_verify_command_memo(key, cmd, my_host_id, now_ms, skew_ms, NULL, body_out,
	                                reason, reasonlen);
}
