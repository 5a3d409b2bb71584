#include "tls.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "util.h"

#define CLOSE_GRACE_MS 2000
#define TICKET_ROTATION_DEFAULT_MS (24ull * 3600 * 1000)
#define TICKET_LIFETIME_MAX_S (7 * 24 * 3600) /* TLS 1.3's limit */
#define TICKET_FILE_MAX 4096
#define STEP_WHY_MAX 200

struct write_req {
	uv_write_t req;
	size_t len, cap;
	char data[];
};

void tls_limits_default(struct tls_limits *l)
{
	l->max_frame = FRAME_MAX_DEFAULT;
	l->write_high = 1u << 20;
	l->write_low = 256u << 10;
	l->write_max = 8u << 20;
	l->handshake_timeout_ms = 10000;
	l->offload_handshake = 0;
}

/* The first error on OpenSSL's queue, as text; clears the queue. */
static void ssl_error_text(char *buf, size_t len)
{
	unsigned long e = ERR_peek_error();
	if (e == 0)
		snprintf(buf, len, "no detail from OpenSSL");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
}

/* ---- session tickets (server) ----
 *
 * Keys of our own rather than OpenSSL's per-process random ones, so that a
 * ticket outlives a restart: the reconnect storm after one is when resuming
 * pays. The file holds the current key (seals new tickets) and the one
 * before (still opens tickets); a ticket lives one rotation period, and a
 * key opens tickets for two, so every ticket can be opened for its whole
 * life. Keys are wiped when the context is freed. */

struct ticket_key {
	int64_t created_ms;
	unsigned char name[16];
	unsigned char aes[32];
	unsigned char hmac[32];
};

struct ticket_keys {
	uv_mutex_t lock;          /* handshakes may run on the thread pool */
	char path[1024];
	uint64_t rotation_ms;
	int n;                    /* keys held: 1 or 2 */
	struct ticket_key key[2]; /* [0] current, [1] previous */
	int save_failed;          /* said once, not at every ticket */
};

static int ticket_idx = -1;

static void ticket_keys_free_ex(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
				void *argp)
{
	if (!ptr)
		return;
	uv_mutex_destroy(&((struct ticket_keys *)ptr)->lock);
	OPENSSL_cleanse(ptr, sizeof(struct ticket_keys));
	free(ptr);
}

static int hex_decode(const char *hex, unsigned char *out, size_t len)
{
	if (strlen(hex) != 2 * len)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int v = 0;
		for (int k = 0; k < 2; k++) {
			char ch = hex[2 * i + (size_t)k];
			int d = ch >= '0' && ch <= '9'   ? ch - '0'
				: ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
				: ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
							 : -1;
			if (d < 0)
				return -1;
			v = v * 16 + d;
		}
		out[i] = (unsigned char)v;
	}
	return 0;
}

static int ticket_key_make(struct ticket_key *k, int64_t now_ms)
{
	k->created_ms = now_ms;
	return RAND_bytes(k->name, sizeof(k->name)) == 1 &&
			       RAND_bytes(k->aes, sizeof(k->aes)) == 1 &&
			       RAND_bytes(k->hmac, sizeof(k->hmac)) == 1
		       ? 0
		       : -1;
}

static int ticket_keys_save(struct ticket_keys *t, char *err, size_t errlen)
{
	char text[1024], name[33], aes[65], hmac[65];
	size_t used = (size_t)snprintf(text, sizeof(text),
				       "# exfleet-collector TLS session ticket keys: secret, keep "
				       "it mode 0600\n# created_ms name aes256 hmac_sha256; the "
				       "first seals new tickets\n");
	for (int i = 0; i < t->n; i++) {
		util_hex(t->key[i].name, sizeof(t->key[i].name), name);
		util_hex(t->key[i].aes, sizeof(t->key[i].aes), aes);
		util_hex(t->key[i].hmac, sizeof(t->key[i].hmac), hmac);
		used += (size_t)snprintf(text + used, sizeof(text) - used, "%lld %s %s %s\n",
					 (long long)t->key[i].created_ms, name, aes, hmac);
	}
	int rc = util_write_file_atomic(t->path, text, used, 0600, err, errlen);
	OPENSSL_cleanse(text, sizeof(text));
	OPENSSL_cleanse(aes, sizeof(aes));
	OPENSSL_cleanse(hmac, sizeof(hmac));
	return rc;
}

/* A new current key once the current one is a rotation period old. */
static void ticket_keys_rotate(struct ticket_keys *t, int64_t now_ms)
{
	if (now_ms - t->key[0].created_ms < (int64_t)t->rotation_ms)
		return;
	struct ticket_key fresh;
	if (ticket_key_make(&fresh, now_ms) < 0) {
		ERR_clear_error();
		return;
	}
	t->key[1] = t->key[0];
	t->key[0] = fresh;
	t->n = 2;
	OPENSSL_cleanse(&fresh, sizeof(fresh));
	char err[256];
	if (ticket_keys_save(t, err, sizeof(err)) < 0) {
		if (!t->save_failed)
			log_warn("TLS session tickets: %s: tickets sealed from now on will not "
				 "survive a restart",
				 err);
		t->save_failed = 1;
	} else {
		t->save_failed = 0;
		log_info("TLS session tickets: new key in %s", t->path);
	}
}

/* Reads the keys, or makes the file; rotates when due. */
static int ticket_keys_load(struct ticket_keys *t, char *err, size_t errlen)
{
	char *data = NULL, why[300];
	size_t len = 0;
	int64_t now = util_now_ms();
	int rc = util_read_file(t->path, TICKET_FILE_MAX, &data, &len, why, sizeof(why));
	if (rc == UV_ENOENT) {
		if (ticket_key_make(&t->key[0], now) < 0) {
			snprintf(err, errlen, "%s: no randomness for a ticket key", t->path);
			return -1;
		}
		t->n = 1;
		if (ticket_keys_save(t, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "ticket_keys: %s", why);
			return -1;
		}
		return 0;
	}
	if (rc < 0) {
		snprintf(err, errlen, "ticket_keys: %s", why);
		return -1;
	}
	if (util_check_private_file(t->path, err, errlen) < 0) {
		OPENSSL_cleanse(data, len);
		free(data);
		return -1;
	}
	int line = 0, bad = 0;
	for (char *save = NULL, *l = strtok_r(data, "\n", &save); l && !bad;
	     l = strtok_r(NULL, "\n", &save)) {
		line++;
		if (l[0] == '#' || l[0] == '\0')
			continue;
		char name[40], aes[72], hmac[72];
		long long created;
		struct ticket_key *k = &t->key[t->n < 2 ? t->n : 1];
		if (t->n == 2 || sscanf(l, "%lld %39s %71s %71s", &created, name, aes, hmac) != 4 ||
		    hex_decode(name, k->name, sizeof(k->name)) < 0 ||
		    hex_decode(aes, k->aes, sizeof(k->aes)) < 0 ||
		    hex_decode(hmac, k->hmac, sizeof(k->hmac)) < 0) {
			bad = line;
		} else {
			k->created_ms = created;
			t->n++;
		}
		OPENSSL_cleanse(aes, sizeof(aes));
		OPENSSL_cleanse(hmac, sizeof(hmac));
	}
	OPENSSL_cleanse(data, len);
	free(data);
	if (bad || t->n == 0) {
		snprintf(err, errlen,
			 "%s:%d: not a ticket key line (created_ms, then name, AES and HMAC keys in "
			 "hex); remove the file and a new one is made (agents then make one full "
			 "handshake)",
			 t->path, bad ? bad : line);
		return -1;
	}
	ticket_keys_rotate(t, now);
	return 0;
}

/* OpenSSL asks for the key to seal a ticket with (enc) or to open one. */
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
			 EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	struct ticket_keys *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ticket_idx);
	struct ticket_key k;
	int rc = 1, found = 0;
	if (!t)
		return -1;
	/* A copy, so that a rotation on another thread changes nothing under us. */
	uv_mutex_lock(&t->lock);
	if (enc) {
		ticket_keys_rotate(t, util_now_ms());
		k = t->key[0];
		found = 1;
	} else {
		for (int i = 0; i < t->n && !found; i++) {
			if (memcmp(key_name, t->key[i].name, sizeof(t->key[i].name)) == 0) {
				k = t->key[i];
				found = 1;
				rc = i == 0 ? 1 : 2; /* sealed with the old key: a new ticket */
			}
		}
	}
	uv_mutex_unlock(&t->lock);
	if (!found)
		return 0; /* a key we no longer hold: a full handshake */
	if (enc) {
		if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1)
			rc = -1;
		else
			memcpy(key_name, k.name, sizeof(k.name));
	}
	if (rc > 0 && (enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv)
			   : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv)) != 1)
		rc = -1;
	if (rc > 0) {
		OSSL_PARAM params[] = {
			OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac,
							  sizeof(k.hmac)),
			OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
			OSSL_PARAM_construct_end(),
		};
		if (EVP_MAC_CTX_set_params(hctx, params) != 1)
			rc = -1;
	}
	OPENSSL_cleanse(&k, sizeof(k));
	return rc;
}

/* --- the CRL in force ------------------------------------------------------- */

/* A context's CRL, handed to OpenSSL at each verification by the store's
 * CRL lookup and swapped whole by tls_ctx_reload_crl: a handshake in flight
 * on the thread pool keeps the reference it took. */
struct crl_holder {
	uv_mutex_t lock;
	X509_CRL *crl;
};

static int crl_index = -1;
static uv_once_t crl_index_once = UV_ONCE_INIT;

static void crl_holder_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			    void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	struct crl_holder *h = ptr;
	if (!h)
		return;
	X509_CRL_free(h->crl);
	uv_mutex_destroy(&h->lock);
	free(h);
}

static void crl_index_new(void)
{
	crl_index = X509_STORE_get_ex_new_index(0, NULL, NULL, NULL, crl_holder_free);
}

static struct crl_holder *crl_holder_of(X509_STORE *store)
{
	uv_once(&crl_index_once, crl_index_new);
	return crl_index < 0 ? NULL : X509_STORE_get_ex_data(store, crl_index);
}

/* The CRL in force, referenced (NULL: none). */
static X509_CRL *crl_get1(struct crl_holder *h)
{
	uv_mutex_lock(&h->lock);
	X509_CRL *crl = h->crl;
	if (crl && X509_CRL_up_ref(crl) != 1)
		crl = NULL;
	uv_mutex_unlock(&h->lock);
	return crl;
}

/* The CRL in force for ctx, referenced (NULL: none). */
static X509_CRL *ctx_crl_get1(SSL_CTX *ctx)
{
	struct crl_holder *h = crl_holder_of(SSL_CTX_get_cert_store(ctx));
	return h ? crl_get1(h) : NULL;
}

/* 1 when crl (may be NULL) is the one of cert's issuer. */
static int crl_covers(X509_CRL *crl, X509 *cert)
{
	return crl && X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(cert)) == 0;
}

/* 1 when crl covers cert and lists it. */
static int crl_lists(X509_CRL *crl, X509 *cert)
{
	X509_REVOKED *rev = NULL;
	return crl_covers(crl, cert) && X509_CRL_get0_by_cert(crl, &rev, cert) == 1;
}

static STACK_OF(X509_CRL) *lookup_crls(const X509_STORE_CTX *sctx, const X509_NAME *issuer)
{
	struct crl_holder *h = crl_holder_of(X509_STORE_CTX_get0_store(sctx));
	STACK_OF(X509_CRL) *out = sk_X509_CRL_new_null();
	X509_CRL *crl = h && out ? crl_get1(h) : NULL;
	if (crl && X509_NAME_cmp(X509_CRL_get_issuer(crl), issuer) == 0 && sk_X509_CRL_push(out, crl))
		crl = NULL;
	X509_CRL_free(crl);
	return out;
}

/* Reads a CRL that one of store's CA certificates signed. */
static X509_CRL *crl_read(X509_STORE *store, const char *path, char *err, size_t errlen)
{
	char why[256];
	BIO *bio = BIO_new_file(path, "r");
	X509_CRL *crl = bio ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	if (!crl) {
		ssl_error_text(why, sizeof(why));
		snprintf(err, errlen, "%s: cannot load CRL: %s", path, why);
		return NULL;
	}
	int signed_by_ca = 0;
	X509_STORE_lock(store);
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);
	for (int i = 0; !signed_by_ca && i < sk_X509_OBJECT_num(objs); i++) {
		X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
		signed_by_ca = ca &&
			       X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) == 0 &&
			       X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1;
	}
	X509_STORE_unlock(store);
	ERR_clear_error();
	if (!signed_by_ca) {
		snprintf(err, errlen, "%s: CRL not signed by the trusted CA", path);
		X509_CRL_free(crl);
		return NULL;
	}
	return crl;
}

/* Puts path's CRL in force for ctx's verifications from now on. */
static int crl_install(SSL_CTX *ctx, const char *path, size_t *revoked, char *err, size_t errlen)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	X509_CRL *crl = crl_read(store, path, err, errlen);
	if (!crl)
		return -1;
	struct crl_holder *h = crl_holder_of(store);
	if (!h) {
		h = calloc(1, sizeof(*h));
		if (!h || uv_mutex_init(&h->lock) != 0 || crl_index < 0 ||
		    !X509_STORE_set_ex_data(store, crl_index, h)) {
			free(h);
			X509_CRL_free(crl);
			snprintf(err, errlen, "%s: out of memory", path);
			return -1;
		}
		X509_STORE_set_lookup_crls(store, lookup_crls);
		X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
	}
	if (revoked) {
		STACK_OF(X509_REVOKED) *list = X509_CRL_get_REVOKED(crl);
		*revoked = list ? (size_t)sk_X509_REVOKED_num(list) : 0;
	}
	uv_mutex_lock(&h->lock);
	X509_CRL *old = h->crl;
	h->crl = crl;
	uv_mutex_unlock(&h->lock);
	X509_CRL_free(old);
	return 0;
}

int tls_ctx_reload_crl(SSL_CTX *ctx, const char *crl_file, size_t *revoked, char *err,
		       size_t errlen)
{
	ERR_clear_error();
	if (!crl_holder_of(SSL_CTX_get_cert_store(ctx))) {
		snprintf(err, errlen, "no CRL was configured to reload");
		return -1;
	}
	return crl_install(ctx, crl_file, revoked, err, errlen);
}

int tls_ctx_revoked(SSL_CTX *ctx, X509 *cert)
{
	X509_CRL *crl = cert ? ctx_crl_get1(ctx) : NULL;
	int revoked = crl_lists(crl, cert);
	X509_CRL_free(crl);
	return revoked;
}

/* A resumed session skips certificate verification, so what can have
 * changed since its ticket was sealed is checked here: the certificate's
 * validity, its CA's, and the CRL (revoked, or itself expired). The ticket
 * is authentic (our key sealed it), so the signatures checked at the full
 * handshake need no second look. 1 when it may resume. */
static int session_still_valid(SSL_CTX *ctx, SSL_SESSION *sess)
{
	X509 *cert = SSL_SESSION_get0_peer(sess);
	if (!cert || X509_cmp_current_time(X509_get0_notBefore(cert)) >= 0 ||
	    X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0)
		return 0;
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	int ok = 1, issuer_ok = 0;
	X509_STORE_lock(store);
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);
	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
		if (ca && X509_check_issued(ca, cert) == X509_V_OK)
			issuer_ok |= X509_cmp_current_time(X509_get0_notAfter(ca)) > 0;
	}
	X509_STORE_unlock(store);
	X509_CRL *crl = ctx_crl_get1(ctx);
	const ASN1_TIME *next = crl_covers(crl, cert) ? X509_CRL_get0_nextUpdate(crl) : NULL;
	if (crl_lists(crl, cert) || (next && X509_cmp_current_time(next) <= 0))
		ok = 0;
	X509_CRL_free(crl);
	ERR_clear_error();
	return ok && issuer_ok;
}

static SSL_TICKET_RETURN ticket_decrypted_cb(SSL *ssl, SSL_SESSION *sess,
					     const unsigned char *keyname, size_t keyname_len,
					     SSL_TICKET_STATUS status, void *arg)
{
	switch (status) {
	case SSL_TICKET_SUCCESS:
	case SSL_TICKET_SUCCESS_RENEW:
		if (!session_still_valid(SSL_get_SSL_CTX(ssl), sess)) {
			log_debug("TLS session ticket of a certificate that is revoked or out of "
				  "its validity: a full handshake instead");
			return SSL_TICKET_RETURN_IGNORE_RENEW;
		}
		/* Renewed every time: each session gets its own ticket, as
		 * fresh as the session. */
		return SSL_TICKET_RETURN_USE_RENEW;
	case SSL_TICKET_EMPTY:
	case SSL_TICKET_NO_DECRYPT:
		return SSL_TICKET_RETURN_IGNORE_RENEW;
	default:
		return SSL_TICKET_RETURN_ABORT;
	}
}

int tls_ctx_enable_tickets(SSL_CTX *ctx, const char *keys_file, uint64_t rotation_ms, char *err,
			   size_t errlen)
{
	if (ticket_idx < 0)
		ticket_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ticket_keys_free_ex);
	struct ticket_keys *t = calloc(1, sizeof(*t));
	if (ticket_idx < 0 || !t) {
		free(t);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	uv_mutex_init(&t->lock);
	snprintf(t->path, sizeof(t->path), "%s", keys_file);
	t->rotation_ms = rotation_ms ? rotation_ms : TICKET_ROTATION_DEFAULT_MS;
	if (t->rotation_ms > TICKET_LIFETIME_MAX_S * 1000ull)
		t->rotation_ms = TICKET_LIFETIME_MAX_S * 1000ull;
	if (ticket_keys_load(t, err, errlen) < 0 || SSL_CTX_set_ex_data(ctx, ticket_idx, t) != 1) {
		ticket_keys_free_ex(NULL, t, NULL, 0, 0, NULL);
		return -1;
	}
	uint64_t lifetime_s = t->rotation_ms / 1000;
	SSL_CTX_set_timeout(ctx, (long)(lifetime_s ? lifetime_s : 1));
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
	SSL_CTX_set_session_ticket_cb(ctx, NULL, ticket_decrypted_cb, NULL);
	/* One per session: an agent keeps only its newest. */
	SSL_CTX_set_num_tickets(ctx, 1);
	return 0;
}

uint64_t tls_ctx_ticket_lifetime_ms(SSL_CTX *ctx)
{
	struct ticket_keys *t = ticket_idx < 0 ? NULL : SSL_CTX_get_ex_data(ctx, ticket_idx);
	return t ? t->rotation_ms : 0;
}

/* Client: the server's tickets go to the connection's owner. */
static int new_session_cb(SSL *ssl, SSL_SESSION *session)
{
	struct tls_conn *c = SSL_get_app_data(ssl);
	if (!c || !c->ops || !c->ops->session_cb)
		return 0;
	return c->ops->session_cb(c, session);
}

void tls_ctx_keep_sessions(SSL_CTX *ctx)
{
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
}

int tls_ctx_new(SSL_CTX **out, int server, const struct tls_config *cfg, char *err,
		size_t errlen)
{
	char why[256];
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		ssl_error_text(why, sizeof(why));
		snprintf(err, errlen, "cannot create TLS context: %s", why);
		return -1;
	}
	SSL_CTX_set_min_proto_version(ctx, cfg->allow_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
	/* Idle sessions give their record buffers back. Only the certificate
	 * file's own chain is sent: both ends trust the one exfleet CA, so
	 * building a chain to it in every handshake (a signature check) and
	 * sending it (parsed and held by the peer for the whole session)
	 * would be wasted. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				      SSL_MODE_NO_AUTO_CHAIN);

	if (util_check_private_file(cfg->key_file, err, errlen) < 0)
		goto fail;
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
		ssl_error_text(why, sizeof(why));
		snprintf(err, errlen, "%s: cannot load certificate: %s", cfg->cert_file, why);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1) {
		ssl_error_text(why, sizeof(why));
		snprintf(err, errlen, "%s: cannot load private key: %s", cfg->key_file, why);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "%s: key does not match certificate %s", cfg->key_file,
			 cfg->cert_file);
		goto fail;
	}
	if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1) {
		ssl_error_text(why, sizeof(why));
		snprintf(err, errlen, "%s: cannot load CA certificate: %s", cfg->ca_file, why);
		goto fail;
	}
	if (cfg->crl_file && cfg->crl_file[0] &&
	    crl_install(ctx, cfg->crl_file, NULL, err, errlen) < 0)
		goto fail;
	if (server) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
		/* Tell clients which CA to pick a certificate for. */
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->ca_file);
		if (names)
			SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"exfleet", 7);
		/* Tickets carry the session, so no server-side cache holds one
		 * per agent. */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		/* No tickets unless tls_ctx_enable_tickets says. */
		SSL_CTX_set_num_tickets(ctx, 0);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		tls_ctx_keep_sessions(ctx);
	}
	ERR_clear_error();
	*out = ctx;
	return 0;
fail:
	SSL_CTX_free(ctx);
	return -1;
}

/* peer starts as the address alone; the verified name goes in front. */
static void conn_set_peer_name(struct tls_conn *c)
{
	char addr[TLS_ADDR_MAX];
	snprintf(addr, sizeof(addr), "%s", tls_conn_addr(c));
	snprintf(c->peer, sizeof(c->peer), "%s %s", c->peer_name, addr);
	c->addr_at = (unsigned char)(strlen(c->peer_name) + 1);
}

/* Kept when memory for the text cannot be had: a close must not fail. */
static char reason_lost[] = "(reason lost: out of memory)";

static void reason_free(char *why)
{
	if (why != reason_lost)
		free(why);
}

static void handle_close_cb(uv_handle_t *h)
{
	struct tls_conn *c = h->data;
	if (--c->handles_open > 0)
		return;
	SSL_free(c->ssl); /* and its BIO */
	c->ssl = NULL;
	free(c->step_why);
	c->step_why = NULL;
	free(c->in_copy);
	c->in_copy = NULL;
	c->in = NULL;
	c->in_len = 0;
	free(c->out);
	c->out = NULL;
	frame_reader_free(&c->frames);
	/* The owner may free c, or connect it again, in close_cb. */
	char *why = c->close_reason;
	if (c->ops->close_cb)
		c->ops->close_cb(c);
	reason_free(why);
}

static void conn_close_handles(struct tls_conn *c)
{
	if (!uv_is_closing((uv_handle_t *)&c->tcp))
		uv_close((uv_handle_t *)&c->tcp, handle_close_cb);
	if (!uv_is_closing((uv_handle_t *)&c->timer))
		uv_close((uv_handle_t *)&c->timer, handle_close_cb);
}

static void close_deadline_cb(uv_timer_t *t)
{
	conn_close_handles(t->data);
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
	conn_close_handles(req->data);
}

static void update_reading(struct tls_conn *c);
static void conn_pump(struct tls_conn *c);

/* The connection's BIO. OpenSSL reads ciphertext from c->in and writes it
 * into c->out, the write request the next flush hands to libuv: memory
 * BIOs would copy every byte once more, and keep buffers as large as the
 * largest flight (the handshake's) for the whole session. */
static uv_once_t conn_bio_once = UV_ONCE_INIT;
static BIO_METHOD *conn_bio_method;

static int conn_bio_read(BIO *b, char *buf, int len)
{
	struct tls_conn *c = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (c->in_len == 0) {
		BIO_set_retry_read(b);
		return -1;
	}
	size_t n = len > 0 && (size_t)len < c->in_len ? (size_t)len : c->in_len;
	memcpy(buf, c->in, n);
	c->in += n;
	c->in_len -= n;
	if (c->in_len == 0 && c->in_copy) {
		free(c->in_copy);
		c->in_copy = NULL;
		c->in = NULL;
	}
	return (int)n;
}

static int conn_bio_write(BIO *b, const char *data, int len)
{
	struct tls_conn *c = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	struct write_req *w = c->out;
	size_t need = (w ? w->len : 0) + (size_t)len;
	if (!w || need > w->cap) {
		size_t cap = w && w->cap * 2 > need ? w->cap * 2 : need;
		struct write_req *grown = realloc(w, sizeof(*w) + cap);
		if (!grown)
			return -1;
		if (!w)
			grown->len = 0;
		grown->cap = cap;
		c->out = w = grown;
	}
	memcpy(w->data + w->len, data, (size_t)len);
	w->len += (size_t)len;
	return len;
}

static long conn_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)num;
	(void)ptr;
	struct tls_conn *c = BIO_get_data(b);
	switch (cmd) {
	case BIO_CTRL_FLUSH:
	case BIO_CTRL_DUP:
		return 1;
	case BIO_CTRL_PENDING:
		return (long)c->in_len;
	case BIO_CTRL_WPENDING:
		return c->out ? (long)c->out->len : 0;
	default:
		return 0;
	}
}

static void conn_bio_method_new(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "exfleet conn");
	if (m && (BIO_meth_set_read(m, conn_bio_read) != 1 ||
		  BIO_meth_set_write(m, conn_bio_write) != 1 ||
		  BIO_meth_set_ctrl(m, conn_bio_ctrl) != 1)) {
		BIO_meth_free(m);
		m = NULL;
	}
	conn_bio_method = m;
}

/* Keeps the input not yet taken, followed by data: a copy of our own. */
static int input_keep(struct tls_conn *c, const uint8_t *data, size_t len)
{
	uint8_t *copy = malloc(c->in_len + len);
	if (!copy)
		return -1;
	if (c->in_len)
		memcpy(copy, c->in, c->in_len);
	if (len)
		memcpy(copy + c->in_len, data, len);
	free(c->in_copy);
	c->in_copy = copy;
	c->in = copy;
	c->in_len += len;
	return 0;
}

static void write_cb(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct tls_conn *c = req->data;
	c->write_queued -= w->len;
	free(w);
	if (status < 0) {
		if (status != UV_ECANCELED)
			tls_conn_close(c, LOG_INFO, "write failed: %s", uv_strerror(status));
		return;
	}
	if ((c->paused & TLS_PAUSE_WRITE) && c->write_queued <= c->limits.write_low)
		tls_conn_resume(c, TLS_PAUSE_WRITE);
	if (c->write_queued == 0 && c->state == TLS_READY && c->ops->drained_cb)
		c->ops->drained_cb(c);
}

/* Queues what OpenSSL has produced on the socket: 0, or a libuv error
 * (it is dropped then). */
static int write_output(struct tls_conn *c)
{
	struct write_req *w = c->out;
	if (!w)
		return 0;
	c->out = NULL;
	w->req.data = c;
	uv_buf_t buf = uv_buf_init(w->data, (unsigned)w->len);
	int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, write_cb);
	if (rc < 0) {
		free(w);
		return rc;
	}
	c->write_queued += w->len;
	return 0;
}

/* Moves OpenSSL's output to the socket and applies the queue's marks. */
static int conn_flush(struct tls_conn *c)
{
	int rc = write_output(c);
	if (rc < 0) {
		tls_conn_close(c, LOG_INFO, "write failed: %s", uv_strerror(rc));
		return -1;
	}
	if (c->write_queued > c->limits.write_max) {
		tls_conn_close(c, LOG_WARN, "peer is not reading: %zu bytes queued, limit %zu",
			       c->write_queued, c->limits.write_max);
		return -1;
	}
	if (c->write_queued > c->limits.write_high)
		tls_conn_pause(c, TLS_PAUSE_WRITE);
	return 0;
}

static void close_now(struct tls_conn *c, enum log_level level);

void tls_conn_close(struct tls_conn *c, enum log_level level, const char *fmt, ...)
{
	if (c->state == TLS_CLOSING || c->close_held)
		return;
	/* Only a closing connection holds its reason: an idle one is smaller. */
	char *why = malloc(TLS_REASON_MAX);
	if (why) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, TLS_REASON_MAX, fmt, ap);
		va_end(ap);
	}
	reason_free(c->close_reason);
	c->close_reason = why ? why : reason_lost;
	if (c->step_busy) {
		/* The SSL object is on the thread pool: close once it is back. */
		c->close_held = 1;
		c->close_level = level;
		return;
	}
	close_now(c, level);
}

static void close_now(struct tls_conn *c, enum log_level level)
{
	enum tls_state was = c->state;
	c->state = TLS_CLOSING;
	log_msg(level, c->peer, "closed: %s", c->close_reason);

	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = 0;
	}
	/* Say goodbye properly where we can: close_notify and what is queued
	 * (a Welcome with a refusal, an alert) go out before the socket closes,
	 * bounded by a deadline for peers that do not read. */
	if (was == TLS_READY || was == TLS_HANDSHAKE) {
		if (was == TLS_READY)
			SSL_shutdown(c->ssl);
		ERR_clear_error();
		write_output(c); /* best effort: the socket closes either way */
	}
	if (was != TLS_IDLE && was != TLS_CONNECTING) {
		c->shutdown_req.data = c;
		if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, shutdown_cb) == 0) {
			uv_timer_stop(&c->timer);
			uv_timer_start(&c->timer, close_deadline_cb, CLOSE_GRACE_MS, 0);
			return;
		}
	}
	conn_close_handles(c);
}

/* Why a handshake failed, from this thread's OpenSSL error queue. */
static void handshake_failure(struct tls_conn *c, char *why, size_t len)
{
	long verify = SSL_get_verify_result(c->ssl);
	unsigned long e = ERR_peek_error();
	if (verify != X509_V_OK) {
		snprintf(why, len, "certificate rejected: %s", X509_verify_cert_error_string(verify));
		ERR_clear_error();
	} else if (ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST ||
		   ERR_GET_REASON(e) == SSL_R_WRONG_VERSION_NUMBER ||
		   ERR_GET_REASON(e) == SSL_R_UNKNOWN_PROTOCOL) {
		snprintf(why, len, "not a TLS client (plaintext or HTTP)");
		ERR_clear_error();
	} else {
		ssl_error_text(why, len);
	}
}

static void conn_handshake_failed(struct tls_conn *c)
{
	char why[256];
	handshake_failure(c, why, sizeof(why));
	tls_conn_close(c, LOG_WARN, "TLS handshake failed: %s", why);
}

static void conn_verified(struct tls_conn *c)
{
	X509 *cert = SSL_get0_peer_certificate(c->ssl);
	enum pki_role role;
	if (!cert || pki_cert_identity(cert, c->peer_name, sizeof(c->peer_name), &role) < 0) {
		tls_conn_close(c, LOG_WARN, "peer certificate has no exfleet identity (CN, OU)");
		return;
	}
	c->peer_role = (int)role;
	c->resumed = SSL_session_reused(c->ssl) == 1;
	if (SSL_is_server(c->ssl) && SSL_CTX_get_num_tickets(SSL_get_SSL_CTX(c->ssl)) > 0)
		c->ticket_ms = util_now_ms();
	conn_set_peer_name(c);
	uv_timer_stop(&c->timer);
	c->state = TLS_READY;
	log_msg(LOG_DEBUG, c->peer, "TLS session established (%s, %s%s)", SSL_get_version(c->ssl),
		SSL_get_cipher_name(c->ssl), c->resumed ? ", resumed" : "");
	if (c->ops->ready_cb)
		c->ops->ready_cb(c);
}

/* Hands whole frames to the owner until it pauses, closes, or input runs out. */
static void conn_read_frames(struct tls_conn *c)
{
	while (c->state == TLS_READY && !(c->paused & TLS_PAUSE_OWNER)) {
		const uint8_t *payload;
		size_t len;
		int rc = frame_reader_next(&c->frames, &payload, &len);
		if (rc < 0) {
			tls_conn_close(c, LOG_WARN, "protocol error: %s (%u bytes, limit %zu)",
				       frame_strerror(rc), c->frames.bad_length, c->frames.max_frame);
			return;
		}
		if (rc == 1) {
			c->frames_in++;
			c->ops->frame_cb(c, payload, len);
			continue;
		}
		uint8_t *space;
		size_t avail;
		if (frame_reader_space(&c->frames, &space, &avail) < 0) {
			tls_conn_close(c, LOG_ERR, "out of memory for an incoming frame");
			return;
		}
		size_t n = 0;
		rc = SSL_read_ex(c->ssl, space, avail, &n);
		if (rc == 1) {
			frame_reader_commit(&c->frames, n);
			continue;
		}
		int err = SSL_get_error(c->ssl, rc);
		if (err == SSL_ERROR_WANT_READ) {
			/* Idle sessions hold no frame buffer: thousands of them
			 * would otherwise keep 16 KiB each. */
			if (frame_reader_pending(&c->frames) == 0)
				frame_reader_free(&c->frames);
			break;
		}
		if (err == SSL_ERROR_ZERO_RETURN) {
			size_t pending = frame_reader_pending(&c->frames);
			if (pending)
				tls_conn_close(c, LOG_WARN, "peer ended the session mid-frame (%zu bytes)",
					       pending);
			else
				tls_conn_close(c, LOG_INFO, "peer ended the session");
			return;
		}
		char why[256];
		ssl_error_text(why, sizeof(why));
		tls_conn_close(c, LOG_WARN, "TLS error: %s", why);
		return;
	}
	/* Reading may have produced output (key updates, tickets). */
	if (c->state == TLS_READY)
		conn_flush(c);
}

static void step_work_cb(uv_work_t *req)
{
	struct tls_conn *c = req->data;
	ERR_clear_error();
	c->step_rc = SSL_do_handshake(c->ssl);
	c->step_err = c->step_rc == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, c->step_rc);
	if (c->step_rc != 1 && c->step_err != SSL_ERROR_WANT_READ &&
	    c->step_err != SSL_ERROR_WANT_WRITE && (c->step_why = malloc(STEP_WHY_MAX)))
		handshake_failure(c, c->step_why, STEP_WHY_MAX);
	ERR_clear_error();
}

static void step_after_cb(uv_work_t *req, int status)
{
	struct tls_conn *c = req->data;
	c->step_busy = 0;
	c->paused &= ~(unsigned)TLS_PAUSE_STEP;
	if (c->close_held) {
		c->close_held = 0;
		close_now(c, c->close_level);
		return;
	}
	if (c->step_rc == 1) {
		/* The step checked the peer against the CRL in force when it
		 * ran: one read again meanwhile is the one in force now. */
		if (SSL_is_server(c->ssl) &&
		    tls_ctx_revoked(c->ctx, SSL_get0_peer_certificate(c->ssl))) {
			tls_conn_close(c, LOG_WARN,
				       "TLS handshake failed: certificate rejected: certificate revoked");
			return;
		}
		if (conn_flush(c) < 0)
			return;
		conn_verified(c);
		if (c->state == TLS_READY) {
			update_reading(c);
			conn_read_frames(c);
		}
		return;
	}
	if (c->step_err != SSL_ERROR_WANT_READ && c->step_err != SSL_ERROR_WANT_WRITE) {
		tls_conn_close(c, LOG_WARN, "TLS handshake failed: %s",
			       c->step_why ? c->step_why : "out of memory");
		return;
	}
	if (conn_flush(c) == 0)
		update_reading(c);
}

static void conn_pump(struct tls_conn *c)
{
	if (c->state == TLS_HANDSHAKE && c->step_busy)
		return;
	if (c->state == TLS_HANDSHAKE && c->limits.offload_handshake) {
		/* Not read meanwhile: the input is the step's. */
		c->step.data = c;
		c->step_busy = 1;
		c->paused |= TLS_PAUSE_STEP;
		update_reading(c);
		if (uv_queue_work(c->tcp.loop, &c->step, step_work_cb, step_after_cb) == 0)
			return;
		step_work_cb(&c->step);
		step_after_cb(&c->step, 0);
		return;
	}
	if (c->state == TLS_HANDSHAKE) {
		ERR_clear_error();
		int rc = SSL_do_handshake(c->ssl);
		if (rc == 1) {
			if (conn_flush(c) < 0)
				return;
			conn_verified(c);
		} else {
			int err = SSL_get_error(c->ssl, rc);
			if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
				conn_handshake_failed(c);
				return;
			}
			conn_flush(c);
			return;
		}
	}
	if (c->state == TLS_READY)
		conn_read_frames(c);
}

static _Thread_local char read_buf[65536];

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	/* The bytes go straight into OpenSSL's input BIO, so one buffer per
	 * thread serves every connection. */
	*buf = uv_buf_init(read_buf, sizeof(read_buf));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct tls_conn *c = s->data;
	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread != UV_EOF) {
			tls_conn_close(c, LOG_INFO, "read failed: %s", uv_strerror((int)nread));
		} else if (c->state == TLS_HANDSHAKE) {
			tls_conn_close(c, LOG_WARN, "peer closed the connection during the handshake");
		} else {
			size_t pending = frame_reader_pending(&c->frames);
			if (pending)
				tls_conn_close(c, LOG_WARN,
					       "connection closed mid-frame (%zu bytes pending)", pending);
			else
				tls_conn_close(c, LOG_INFO, "connection closed by peer");
		}
		return;
	}
	/* Handled from the loop's buffer where it can be; copied when it is
	 * to wait (input before it not yet taken, a handshake step on the
	 * thread pool), and what is left afterwards is kept. */
	const uint8_t *data = (const uint8_t *)buf->base;
	if (c->in_len > 0 || c->state == TLS_HANDSHAKE) {
		if (input_keep(c, data, (size_t)nread) < 0) {
			tls_conn_close(c, LOG_ERR, "out of memory buffering input");
			return;
		}
	} else {
		c->in = data;
		c->in_len = (size_t)nread;
	}
	conn_pump(c);
	if (c->step_busy)
		return; /* the input is the step's, on the thread pool, until it is back */
	if (c->in_len > 0 && !c->in_copy && c->state != TLS_CLOSING &&
	    input_keep(c, NULL, 0) < 0)
		tls_conn_close(c, LOG_ERR, "out of memory buffering input");
	if (!c->in_copy) {
		c->in = NULL;
		c->in_len = 0;
	}
}

static void update_reading(struct tls_conn *c)
{
	if (c->state != TLS_HANDSHAKE && c->state != TLS_READY)
		return;
	int want = c->paused == 0;
	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
			c->reading = 1;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = 0;
	}
}

void tls_conn_pause(struct tls_conn *c, unsigned reason)
{
	c->paused |= reason;
	update_reading(c);
}

void tls_conn_resume(struct tls_conn *c, unsigned reason)
{
	c->paused &= ~reason;
	update_reading(c);
	/* Frames may be waiting in OpenSSL or the frame buffer already. */
	if (c->paused == 0 && c->state == TLS_READY)
		conn_read_frames(c);
}

static void handshake_timeout_cb(uv_timer_t *t)
{
	struct tls_conn *c = t->data;
	tls_conn_close(c, LOG_WARN, "TLS handshake timed out after %llu ms",
		       (unsigned long long)c->limits.handshake_timeout_ms);
}

/* The SSL object and its BIO: made when the handshake is to start, so
 * that a connection held back costs no more than its socket. */
static int conn_ssl_new(struct tls_conn *c, int server)
{
	uv_once(&conn_bio_once, conn_bio_method_new);
	BIO *bio = conn_bio_method ? BIO_new(conn_bio_method) : NULL;
	c->ssl = bio ? SSL_new(c->ctx) : NULL;
	if (!c->ssl) {
		BIO_free(bio);
		return UV_ENOMEM;
	}
	BIO_set_data(bio, c);
	BIO_set_init(bio, 1);
	SSL_set_bio(c->ssl, bio, bio);
	SSL_set_app_data(c->ssl, c);
	if (server)
		SSL_set_accept_state(c->ssl);
	else
		SSL_set_connect_state(c->ssl);
	return 0;
}

static int conn_init(struct tls_conn *c, uv_loop_t *loop, SSL_CTX *ctx,
		     const struct tls_limits *limits, const struct tls_conn_ops *ops, int server,
		     int with_ssl)
{
	void *owner = c->data;
	memset(c, 0, sizeof(*c));
	c->data = owner;
	c->ops = ops;
	c->ctx = ctx;
	c->peer_role = -1;
	if (limits)
		c->limits = *limits;
	else
		tls_limits_default(&c->limits);
	frame_reader_init(&c->frames, c->limits.max_frame);
	if (with_ssl && conn_ssl_new(c, server) < 0)
		return UV_ENOMEM;
	uv_tcp_init(loop, &c->tcp);
	uv_timer_init(loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->handles_open = 2;
	return 0;
}

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		uv_ip4_name(in, host, sizeof(host));
		port = ntohs(in->sin_port);
		snprintf(out, len, "%s:%d", host, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		uv_ip6_name(in6, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		snprintf(out, len, "[%s]:%d", host, port);
	} else {
		snprintf(out, len, "?");
	}
}

static void conn_start_handshake(struct tls_conn *c)
{
	c->state = TLS_HANDSHAKE;
	uv_timer_start(&c->timer, handshake_timeout_cb, c->limits.handshake_timeout_ms, 0);
	update_reading(c);
}

static int conn_accept(struct tls_conn *c, uv_stream_t *server, SSL_CTX *ctx,
		       const struct tls_limits *limits, const struct tls_conn_ops *ops, int start)
{
	int rc = conn_init(c, server->loop, ctx, limits, ops, 1, start);
	if (rc < 0)
		return rc;
	rc = uv_accept(server, (uv_stream_t *)&c->tcp);
	if (rc < 0) {
		c->state = TLS_IDLE;
		tls_conn_close(c, LOG_WARN, "accept failed: %s", uv_strerror(rc));
		return 0;
	}
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0)
		format_addr(&ss, c->peer, TLS_ADDR_MAX);
	else
		snprintf(c->peer, TLS_ADDR_MAX, "?");
	uv_tcp_nodelay(&c->tcp, 1);
	if (start)
		conn_start_handshake(c);
	else
		c->state = TLS_CONNECTING; /* held: closes without a goodbye */
	return 0;
}

int tls_conn_accept(struct tls_conn *c, uv_stream_t *server, SSL_CTX *ctx,
		    const struct tls_limits *limits, const struct tls_conn_ops *ops)
{
	return conn_accept(c, server, ctx, limits, ops, 1);
}

int tls_conn_accept_held(struct tls_conn *c, uv_stream_t *server, SSL_CTX *ctx,
			 const struct tls_limits *limits, const struct tls_conn_ops *ops)
{
	return conn_accept(c, server, ctx, limits, ops, 0);
}

void tls_conn_start(struct tls_conn *c)
{
	if (c->state != TLS_CONNECTING)
		return;
	if (conn_ssl_new(c, 1) < 0) {
		tls_conn_close(c, LOG_ERR, "out of memory for a TLS session");
		return;
	}
	conn_start_handshake(c);
}

static void connect_cb(uv_connect_t *req, int status)
{
	struct tls_conn *c = req->data;
	if (c->state != TLS_CONNECTING)
		return;
	if (status < 0) {
		c->state = TLS_IDLE; /* nothing to flush */
		tls_conn_close(c, LOG_INFO, "cannot connect: %s", uv_strerror(status));
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	conn_start_handshake(c);
	conn_pump(c);
}

int tls_conn_connect_from(struct tls_conn *c, uv_loop_t *loop, const struct sockaddr *addr,
			  const struct sockaddr *bind_addr, SSL_CTX *ctx, const char *server_name,
			  const struct tls_limits *limits, const struct tls_conn_ops *ops)
{
	int rc = conn_init(c, loop, ctx, limits, ops, 0, 1);
	if (rc < 0)
		return rc;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, addr, addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						      : sizeof(struct sockaddr_in));
	format_addr(&ss, c->peer, TLS_ADDR_MAX);
	/* The collector's certificate must name the host we meant to reach. */
	if (SSL_set1_host(c->ssl, server_name) != 1 ||
	    SSL_set_tlsext_host_name(c->ssl, server_name) != 1) {
		ERR_clear_error();
		c->state = TLS_IDLE;
		tls_conn_close(c, LOG_ERR, "invalid server name '%s'", server_name);
		return 0;
	}
	if (bind_addr) {
		rc = uv_tcp_bind(&c->tcp, bind_addr, 0);
		if (rc < 0) {
			c->state = TLS_IDLE;
			tls_conn_close(c, LOG_INFO,
				       "cannot connect: cannot bind the source address: %s",
				       uv_strerror(rc));
			return 0;
		}
	}
	c->state = TLS_CONNECTING;
	c->connect_req.data = c;
	rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, connect_cb);
	if (rc < 0) {
		c->state = TLS_IDLE;
		tls_conn_close(c, LOG_INFO, "cannot connect: %s", uv_strerror(rc));
	}
	return 0;
}

int tls_conn_connect(struct tls_conn *c, uv_loop_t *loop, const struct sockaddr *addr,
		     SSL_CTX *ctx, const char *server_name, const struct tls_limits *limits,
		     const struct tls_conn_ops *ops)
{
	return tls_conn_connect_from(c, loop, addr, NULL, ctx, server_name, limits, ops);
}

int tls_conn_new_ticket(struct tls_conn *c)
{
	if (c->state != TLS_READY || !SSL_is_server(c->ssl) ||
	    SSL_CTX_get_num_tickets(SSL_get_SSL_CTX(c->ssl)) == 0)
		return UV_EINVAL;
	ERR_clear_error();
	/* Queued by the first call, written by the second. */
	if (SSL_new_session_ticket(c->ssl) != 1 || SSL_do_handshake(c->ssl) != 1) {
		char why[256];
		ssl_error_text(why, sizeof(why));
		tls_conn_close(c, LOG_WARN, "cannot send a session ticket: %s", why);
		return UV_EPIPE;
	}
	c->ticket_ms = util_now_ms();
	return conn_flush(c) < 0 ? UV_EPIPE : 0;
}

int tls_conn_send(struct tls_conn *c, uint8_t *frame, size_t len)
{
	if (c->state != TLS_READY)
		return UV_ENOTCONN;
	if (len == 0 || len > c->limits.max_frame)
		return UV_EMSGSIZE;
	frame_put_header(frame, (uint32_t)len);
	ERR_clear_error();
	size_t written = 0;
	if (SSL_write_ex(c->ssl, frame, FRAME_HEADER + len, &written) != 1) {
		char why[256];
		ssl_error_text(why, sizeof(why));
		tls_conn_close(c, LOG_WARN, "TLS write failed: %s", why);
		return UV_EPIPE;
	}
	c->frames_out++;
	return conn_flush(c) < 0 ? UV_EPIPE : 0;
}
