#include "seal.h"
#include "sign.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <uv.h>

/* An X25519 PKCS#8 PEM is about 120 bytes. Staying below util_read_file's
 * first buffer means it never reallocates, so no unwiped copy of the key
 * is left behind in freed memory. */
#define KEY_FILE_MAX 4000
#define AEAD_KEY_LEN 32

static const char seal_info[] = "exfleet-seal-v1";
static const char sealing_key_context[] = "exfleet-sealing-key-v1"; /* sizeof counts the NUL */
static const char tampered[] =
    "sealed secret does not open (tampered, or sealed to another host or command)";

static int ssl_fail(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	const char *why = e ? ERR_reason_error_string(e) : NULL;
	snprintf(err, errlen, "%s: %s", what, why ? why : "OpenSSL error");
	ERR_clear_error();
	return UV_EIO;
}

/* Answers an encrypted key with "no password" instead of prompting on a tty. */
static int no_password_cb(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

/* --- the agent's sealing key ------------------------------------------------ */

static int key_load(const char *path, EVP_PKEY **key, char *err, size_t errlen)
{
	char *data = NULL;
	size_t len = 0;
	BIO *bio = NULL;
	int rc = util_check_private_file(path, err, errlen);
	if (rc < 0)
		return rc;
	if ((rc = util_read_file(path, KEY_FILE_MAX, &data, &len, err, errlen)) < 0)
		return rc;
	bio = BIO_new_mem_buf(data, (int)len);
	*key = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_password_cb, NULL) : NULL;
	ERR_clear_error();
	if (!*key) {
		snprintf(err, errlen,
		         "%s: not a PEM private key; move it away and restart the agent to "
		         "make a new sealing key",
		         path);
		rc = UV_EINVAL;
		goto out;
	}
	if (!EVP_PKEY_is_a(*key, "X25519")) {
		snprintf(err, errlen,
		         "%s: not an X25519 key; move it away and restart the agent to make a "
		         "new sealing key",
		         path);
		EVP_PKEY_free(*key);
		*key = NULL;
		rc = UV_EINVAL;
		goto out;
	}
	rc = 0;
out:
	BIO_free(bio);
	OPENSSL_cleanse(data, len);
	free(data);
	return rc;
}

static int key_create(const char *path, EVP_PKEY **out, char *err, size_t errlen)
{
	EVP_PKEY *key = NULL;
	char *data = NULL;
	long len;
	uv_fs_t req;
	/* The secure-heap BIO clears its buffer when freed; the explicit wipe
	 * below does not depend on that. */
	BIO *bio = BIO_new(BIO_s_secmem());
	int rc;

	if (!bio)
		return ssl_fail(err, errlen, path);
	key = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	if (!key || !PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
		rc = ssl_fail(err, errlen, path);
		goto out;
	}
	len = BIO_get_mem_data(bio, &data);
	if (len <= 0 || !data) {
		rc = ssl_fail(err, errlen, path);
		goto out;
	}
	if ((rc = util_write_file_atomic(path, data, (size_t)len, 0600, err, errlen)) < 0)
		goto out;
	/* A temporary file left over with a wider mode would keep that mode:
	 * check what was made rather than trust the mode asked for. */
	if ((rc = util_check_private_file(path, err, errlen)) < 0) {
		uv_fs_unlink(NULL, &req, path, NULL);
		uv_fs_req_cleanup(&req);
		goto out;
	}
	*out = key;
	key = NULL;
	rc = 0;
out:
	len = BIO_get_mem_data(bio, &data);
	if (len > 0 && data)
		OPENSSL_cleanse(data, (size_t)len);
	BIO_free(bio);
	EVP_PKEY_free(key);
	return rc;
}

int seal_key_load_or_create(const char *path, EVP_PKEY **key, char *err, size_t errlen)
{
	uv_fs_t req;
	int rc;

	ERR_clear_error();
	*key = NULL;
	rc = uv_fs_stat(NULL, &req, path, NULL);
	uv_fs_req_cleanup(&req);
	if (rc == UV_ENOENT)
		return key_create(path, key, err, errlen);
	if (rc < 0) {
		snprintf(err, errlen, "cannot read %s: %s", path, uv_strerror(rc));
		return rc;
	}
	return key_load(path, key, err, errlen);
}

int seal_key_public(EVP_PKEY *key, uint8_t out[SEAL_KEY_LEN])
{
	size_t len = SEAL_KEY_LEN;
	if (!key || !EVP_PKEY_is_a(key, "X25519") ||
	    EVP_PKEY_get_raw_public_key(key, out, &len) != 1 || len != SEAL_KEY_LEN) {
		ERR_clear_error();
		return UV_EINVAL;
	}
	return 0;
}

/* --- the signature over it ---------------------------------------------------- */

static int host_id_valid(const char *host_id)
{
	size_t len = strlen(host_id);
	return len > 0 && len <= PKI_NAME_MAX;
}

/* "exfleet-sealing-key-v1" NUL || host_id || NUL || pub */
static uint8_t *key_message(const char *host_id, const uint8_t pub[SEAL_KEY_LEN], size_t *len)
{
	size_t host_len = strlen(host_id) + 1;
	uint8_t *msg = malloc(sizeof(sealing_key_context) + host_len + SEAL_KEY_LEN);
	if (!msg)
		return NULL;
	memcpy(msg, sealing_key_context, sizeof(sealing_key_context));
	memcpy(msg + sizeof(sealing_key_context), host_id, host_len);
	memcpy(msg + sizeof(sealing_key_context) + host_len, pub, SEAL_KEY_LEN);
	*len = sizeof(sealing_key_context) + host_len + SEAL_KEY_LEN;
	return msg;
}

int seal_key_sign(EVP_PKEY *cert_key, const char *host_id, const uint8_t pub[SEAL_KEY_LEN],
                  uint8_t **sig, size_t *sig_len, char *err, size_t errlen)
{
	EVP_MD_CTX *mdctx = NULL;
	const EVP_MD *md;
	uint8_t *msg = NULL, *buf = NULL;
	size_t msg_len = 0, len = 0;
	int rc;

	ERR_clear_error();
	*sig = NULL;
	*sig_len = 0;
	if (sign_key_digest(cert_key, &md) < 0) {
		snprintf(err, errlen, "certificate key is neither ECDSA P-256 nor Ed25519");
		return UV_EINVAL;
	}
	if (!host_id_valid(host_id)) {
		snprintf(err, errlen, "host id must be 1 to %d characters", PKI_NAME_MAX);
		return UV_EINVAL;
	}
	msg = key_message(host_id, pub, &msg_len);
	mdctx = EVP_MD_CTX_new();
	if (!msg || !mdctx) {
		snprintf(err, errlen, "signing the sealing key: out of memory");
		rc = UV_ENOMEM;
		goto out;
	}
	if (EVP_DigestSignInit(mdctx, NULL, md, NULL, cert_key) != 1 ||
	    EVP_DigestSign(mdctx, NULL, &len, msg, msg_len) != 1) {
		rc = ssl_fail(err, errlen, "signing the sealing key");
		goto out;
	}
	buf = malloc(len);
	if (!buf) {
		snprintf(err, errlen, "signing the sealing key: out of memory");
		rc = UV_ENOMEM;
		goto out;
	}
	if (EVP_DigestSign(mdctx, buf, &len, msg, msg_len) != 1) {
		rc = ssl_fail(err, errlen, "signing the sealing key");
		goto out;
	}
	*sig = buf;
	*sig_len = len;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	free(msg);
	EVP_MD_CTX_free(mdctx);
	return rc;
}

/* host_id comes through the collector: printable ASCII only in a reason. */
static void printable(const char *in, char *out, size_t len)
{
	size_t i = 0;
	for (; in[i] && i < PKI_NAME_MAX && i + 1 < len; i++)
		out[i] = in[i] >= 0x20 && in[i] < 0x7f ? in[i] : '?';
	out[i] = '\0';
}

int seal_key_verify(struct sign_verifier *v, X509 *agent_cert, const char *host_id,
                    const uint8_t pub[SEAL_KEY_LEN], const uint8_t *sig, size_t sig_len,
                    char *reason, size_t reasonlen)
{
	EVP_MD_CTX *mdctx = NULL;
	const EVP_MD *md;
	uint8_t *msg = NULL;
	size_t msg_len = 0;
	char name[SIGN_OPERATOR_MAX], wanted[PKI_NAME_MAX + 1];
	int rc;

	ERR_clear_error();
	if ((rc = sign_verifier_check_cert(v, agent_cert, PKI_ROLE_AGENT, util_now_ms(), name,
	                                   reason, reasonlen)) < 0)
		return rc;
	if (strcmp(name, host_id) != 0) {
		printable(host_id, wanted, sizeof(wanted));
		snprintf(reason, reasonlen, "agent certificate names '%s', not '%s'", name, wanted);
		return UV_EACCES;
	}
	EVP_PKEY *cert_key = X509_get0_pubkey(agent_cert);
	if (!cert_key || sign_key_digest(cert_key, &md) < 0) {
		snprintf(reason, reasonlen, "agent key is neither ECDSA P-256 nor Ed25519");
		rc = UV_EACCES;
		goto out;
	}
	msg = key_message(host_id, pub, &msg_len);
	mdctx = EVP_MD_CTX_new();
	if (!msg || !mdctx) {
		snprintf(reason, reasonlen, "verifying a sealing key: out of memory");
		rc = UV_ENOMEM;
		goto out;
	}
	if (!sig || sig_len == 0 || sig_len > SIGN_SIGNATURE_MAX ||
	    EVP_DigestVerifyInit(mdctx, NULL, md, NULL, cert_key) != 1 ||
	    EVP_DigestVerify(mdctx, sig, sig_len, msg, msg_len) != 1) {
		snprintf(reason, reasonlen, "sealing key signature does not verify");
		rc = UV_EACCES;
		goto out;
	}
	rc = 0;
out:
	free(msg);
	EVP_MD_CTX_free(mdctx);
	ERR_clear_error();
	return rc;
}

/* --- sealing ------------------------------------------------------------------ */

/* key = HKDF-SHA256(X25519(priv, peer), salt, "exfleet-seal-v1"). The shared
 * secret lives only here and is wiped before return. */
static int derive_key(EVP_PKEY *priv, EVP_PKEY *peer, const uint8_t salt[2 * SEAL_KEY_LEN],
                      uint8_t key[AEAD_KEY_LEN])
{
	uint8_t shared[SEAL_KEY_LEN];
	size_t shared_len = sizeof(shared);
	char digest[] = "SHA256";
	EVP_PKEY_CTX *pctx = NULL;
	EVP_KDF *kdf = NULL;
	EVP_KDF_CTX *kctx = NULL;
	int rc = UV_EIO;

	pctx = EVP_PKEY_CTX_new(priv, NULL);
	/* OpenSSL refuses an all-zero result, i.e. a small-order peer key. */
	if (!pctx || EVP_PKEY_derive_init(pctx) != 1 || EVP_PKEY_derive_set_peer(pctx, peer) != 1 ||
	    EVP_PKEY_derive(pctx, shared, &shared_len) != 1 || shared_len != sizeof(shared))
		goto out;
	kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	if (!kctx)
		goto out;
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, shared, sizeof(shared)),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, 2 * SEAL_KEY_LEN),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)seal_info,
	                                      sizeof(seal_info) - 1),
	    OSSL_PARAM_construct_end(),
	};
	if (EVP_KDF_derive(kctx, key, AEAD_KEY_LEN, params) != 1)
		goto out;
	rc = 0;
out:
	OPENSSL_cleanse(shared, sizeof(shared));
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	EVP_PKEY_CTX_free(pctx);
	return rc;
}

/* Associated data: host_id NUL command_id, fed in parts (either direction). */
static int gcm_aad(EVP_CIPHER_CTX *c, const char *host_id, const char *command_id)
{
	const unsigned char *host = (const unsigned char *)host_id;
	const unsigned char *cmd = (const unsigned char *)command_id;
	const unsigned char nul = 0;
	int n;
	if (EVP_CipherUpdate(c, NULL, &n, host, (int)strlen(host_id)) != 1 ||
	    EVP_CipherUpdate(c, NULL, &n, &nul, 1) != 1 ||
	    EVP_CipherUpdate(c, NULL, &n, cmd, (int)strlen(command_id)) != 1)
		return UV_EIO;
	return 0;
}

static int ids_valid(const char *host_id, const char *command_id)
{
	size_t len = strlen(command_id);
	return host_id_valid(host_id) && len > 0 && len <= SIGN_COMMAND_ID_MAX;
}

void seal_secret_free(Exfleet__SealedSecret *s)
{
	if (!s)
		return;
	free(s->ephemeral_public_key.data);
	free(s->nonce.data);
	free(s->ciphertext.data);
	exfleet__sealed_secret__init(s);
}

int seal_secret(const uint8_t agent_pub[SEAL_KEY_LEN], const char *host_id, const char *command_id,
                const uint8_t *secret, size_t len, Exfleet__SealedSecret *out, char *err,
                size_t errlen)
{
	EVP_PKEY *eph = NULL, *peer = NULL;
	EVP_CIPHER_CTX *cctx = NULL;
	uint8_t key[AEAD_KEY_LEN], salt[2 * SEAL_KEY_LEN];
	uint8_t *eph_pub = NULL, *nonce = NULL, *ct = NULL;
	size_t eph_len = SEAL_KEY_LEN;
	int n = 0, fin = 0;
	int rc;

	ERR_clear_error();
	exfleet__sealed_secret__init(out);
	if (len > SEAL_SECRET_MAX) {
		snprintf(err, errlen, "secret of %zu bytes exceeds %d", len, SEAL_SECRET_MAX);
		return UV_EINVAL;
	}
	if (!ids_valid(host_id, command_id)) {
		snprintf(err, errlen, "host id and command id must each be 1 to %d characters",
		         PKI_NAME_MAX);
		return UV_EINVAL;
	}
	eph_pub = malloc(SEAL_KEY_LEN);
	nonce = malloc(SEAL_NONCE_LEN);
	ct = malloc(len + SEAL_TAG_LEN);
	if (!eph_pub || !nonce || !ct) {
		snprintf(err, errlen, "sealing a secret: out of memory");
		rc = UV_ENOMEM;
		goto out;
	}
	peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, agent_pub, SEAL_KEY_LEN);
	if (!peer) {
		rc = ssl_fail(err, errlen, "the agent's sealing key");
		goto out;
	}
	eph = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	if (!eph || EVP_PKEY_get_raw_public_key(eph, eph_pub, &eph_len) != 1 ||
	    eph_len != SEAL_KEY_LEN) {
		rc = ssl_fail(err, errlen, "making an ephemeral key");
		goto out;
	}
	memcpy(salt, eph_pub, SEAL_KEY_LEN);
	memcpy(salt + SEAL_KEY_LEN, agent_pub, SEAL_KEY_LEN);
	if (derive_key(eph, peer, salt, key) < 0) {
		rc = ssl_fail(err, errlen, "the agent's sealing key is not usable");
		goto out;
	}
	if (RAND_bytes(nonce, SEAL_NONCE_LEN) != 1) {
		rc = ssl_fail(err, errlen, "drawing a nonce");
		goto out;
	}
	cctx = EVP_CIPHER_CTX_new();
	if (!cctx || EVP_EncryptInit_ex(cctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(cctx, EVP_CTRL_GCM_SET_IVLEN, SEAL_NONCE_LEN, NULL) != 1 ||
	    EVP_EncryptInit_ex(cctx, NULL, NULL, key, nonce) != 1 ||
	    gcm_aad(cctx, host_id, command_id) < 0 ||
	    (len > 0 && EVP_EncryptUpdate(cctx, ct, &n, secret, (int)len) != 1) ||
	    EVP_EncryptFinal_ex(cctx, ct + n, &fin) != 1 || (size_t)(n + fin) != len ||
	    EVP_CIPHER_CTX_ctrl(cctx, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_LEN, ct + len) != 1) {
		rc = ssl_fail(err, errlen, "sealing a secret");
		goto out;
	}
	out->ephemeral_public_key.data = eph_pub;
	out->ephemeral_public_key.len = SEAL_KEY_LEN;
	out->nonce.data = nonce;
	out->nonce.len = SEAL_NONCE_LEN;
	out->ciphertext.data = ct;
	out->ciphertext.len = len + SEAL_TAG_LEN;
	eph_pub = nonce = ct = NULL;
	rc = 0;
out:
	OPENSSL_cleanse(key, sizeof(key));
	EVP_CIPHER_CTX_free(cctx);
	EVP_PKEY_free(eph);
	EVP_PKEY_free(peer);
	free(eph_pub);
	free(nonce);
	free(ct);
	ERR_clear_error();
	return rc;
}

void seal_free_secret(uint8_t *p, size_t len)
{
	if (!p)
		return;
	OPENSSL_cleanse(p, len + 1);
	free(p);
}

int seal_open(EVP_PKEY *agent_key, const char *host_id, const char *command_id,
              const Exfleet__SealedSecret *in, uint8_t **secret, size_t *len, char *reason,
              size_t reasonlen)
{
	EVP_PKEY *peer = NULL;
	EVP_CIPHER_CTX *cctx = NULL;
	uint8_t key[AEAD_KEY_LEN], salt[2 * SEAL_KEY_LEN], tag[SEAL_TAG_LEN];
	uint8_t *pt = NULL;
	size_t pt_len = 0;
	int n = 0, fin = 0;
	int rc;

	ERR_clear_error();
	*secret = NULL;
	*len = 0;
	if (in->ephemeral_public_key.len != SEAL_KEY_LEN) {
		snprintf(reason, reasonlen,
		         "sealed secret malformed: ephemeral key of %zu bytes, not %d",
		         in->ephemeral_public_key.len, SEAL_KEY_LEN);
		return UV_EINVAL;
	}
	if (in->nonce.len != SEAL_NONCE_LEN) {
		snprintf(reason, reasonlen, "sealed secret malformed: nonce of %zu bytes, not %d",
		         in->nonce.len, SEAL_NONCE_LEN);
		return UV_EINVAL;
	}
	if (in->ciphertext.len < SEAL_TAG_LEN ||
	    in->ciphertext.len > SEAL_SECRET_MAX + SEAL_TAG_LEN) {
		snprintf(reason, reasonlen,
		         "sealed secret malformed: ciphertext of %zu bytes, not %d to %d",
		         in->ciphertext.len, SEAL_TAG_LEN, SEAL_SECRET_MAX + SEAL_TAG_LEN);
		return UV_EINVAL;
	}
	if (!ids_valid(host_id, command_id)) {
		snprintf(reason, reasonlen,
		         "host id and command id must each be 1 to %d characters", PKI_NAME_MAX);
		return UV_EINVAL;
	}
	if (seal_key_public(agent_key, salt + SEAL_KEY_LEN) < 0) {
		snprintf(reason, reasonlen, "the agent's sealing key is not an X25519 key");
		return UV_EINVAL;
	}
	memcpy(salt, in->ephemeral_public_key.data, SEAL_KEY_LEN);
	memcpy(tag, in->ciphertext.data + in->ciphertext.len - SEAL_TAG_LEN, SEAL_TAG_LEN);
	pt_len = in->ciphertext.len - SEAL_TAG_LEN;
	pt = malloc(pt_len + 1);
	if (!pt) {
		snprintf(reason, reasonlen, "opening a sealed secret: out of memory");
		rc = UV_ENOMEM;
		goto out;
	}
	/* From here on, every failure looks the same: which part was altered
	 * is of no use to the one who altered it. */
	peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, salt, SEAL_KEY_LEN);
	cctx = EVP_CIPHER_CTX_new();
	if (!peer || !cctx || derive_key(agent_key, peer, salt, key) < 0 ||
	    EVP_DecryptInit_ex(cctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(cctx, EVP_CTRL_GCM_SET_IVLEN, SEAL_NONCE_LEN, NULL) != 1 ||
	    EVP_DecryptInit_ex(cctx, NULL, NULL, key, in->nonce.data) != 1 ||
	    gcm_aad(cctx, host_id, command_id) < 0 ||
	    (pt_len > 0 &&
	     EVP_DecryptUpdate(cctx, pt, &n, in->ciphertext.data, (int)pt_len) != 1) ||
	    EVP_CIPHER_CTX_ctrl(cctx, EVP_CTRL_GCM_SET_TAG, SEAL_TAG_LEN, tag) != 1 ||
	    EVP_DecryptFinal_ex(cctx, pt + n, &fin) != 1 || (size_t)(n + fin) != pt_len) {
		snprintf(reason, reasonlen, "%s", tampered);
		rc = UV_EACCES;
		goto out;
	}
	pt[pt_len] = '\0';
	*secret = pt;
	*len = pt_len;
	pt = NULL;
	rc = 0;
out:
	/* Decrypted bytes whose tag did not match are wiped unseen. */
	if (pt)
		OPENSSL_cleanse(pt, pt_len + 1);
	free(pt);
	OPENSSL_cleanse(key, sizeof(key));
	EVP_CIPHER_CTX_free(cctx);
	EVP_PKEY_free(peer);
	ERR_clear_error();
	return rc;
}
