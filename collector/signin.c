/* One-time sign-in tokens and dashboard sessions (signin.h). A small table
 * searched in full: it holds at most a few hundred operators' entries. */
#include "signin.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <uv.h>

enum kind { FREE, TOKEN, USED, SESSION };

struct entry {
	enum kind kind;
	unsigned char digest[32];
	struct signin_identity who;
};

struct signin {
	struct entry *entries;
	size_t max;
	int64_t token_ttl_ms, session_ttl_ms;
};

struct signin *signin_new(size_t max, int64_t token_ttl_ms, int64_t session_ttl_ms)
{
	struct signin *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->entries = calloc(max ? max : 1, sizeof(*s->entries));
	if (!s->entries) {
		free(s);
		return NULL;
	}
	s->max = max ? max : 1;
	s->token_ttl_ms = token_ttl_ms;
	s->session_ttl_ms = session_ttl_ms;
	return s;
}

void signin_free(struct signin *s)
{
	if (!s)
		return;
	OPENSSL_cleanse(s->entries, s->max * sizeof(*s->entries));
	free(s->entries);
	free(s);
}

static void digest(const char *secret, unsigned char out[32])
{
	unsigned int len = 32;
	EVP_Digest(secret, strlen(secret), out, &len, EVP_sha256(), NULL);
}

/* 32 random bytes as base64url without padding: 0 or UV_EIO. */
static int new_secret(char *out)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char raw[33] = {0};
	if (RAND_bytes(raw, 32) != 1)
		return UV_EIO;
	size_t n = 0;
	for (size_t i = 0; i < 33; i += 3) {
		uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
		for (int k = 18; k >= 0 && n < SIGNIN_SECRET_LEN; k -= 6)
			out[n++] = alphabet[(v >> k) & 63];
	}
	out[n] = '\0';
	OPENSSL_cleanse(raw, sizeof(raw));
	return 0;
}

static struct entry *find(struct signin *s, const char *secret)
{
	if (strlen(secret) != SIGNIN_SECRET_LEN)
		return NULL;
	unsigned char d[32];
	digest(secret, d);
	for (size_t i = 0; i < s->max; i++)
		if (s->entries[i].kind != FREE &&
		    CRYPTO_memcmp(s->entries[i].digest, d, sizeof(d)) == 0)
			return &s->entries[i];
	return NULL;
}

/* A free slot, after forgetting what has expired; when none is free, the
 * entry closest to expiry makes room. */
static struct entry *slot(struct signin *s, int64_t now_ms)
{
	struct entry *soonest = NULL;
	for (size_t i = 0; i < s->max; i++) {
		struct entry *e = &s->entries[i];
		if (e->kind != FREE && e->who.expires_ms <= now_ms)
			e->kind = FREE;
		if (e->kind == FREE)
			return e;
		if (!soonest || e->who.expires_ms < soonest->who.expires_ms)
			soonest = e;
	}
	return soonest;
}

/* Keeps the digest of a fresh secret in a slot. */
static int add(struct signin *s, enum kind kind, const struct signin_identity *who,
	       int64_t now_ms, char *secret)
{
	if (new_secret(secret) < 0)
		return UV_EIO;
	struct entry *e = slot(s, now_ms);
	if (!e)
		return UV_ENOMEM; /* a table of no entries: signin_new makes one at least */
	memset(e, 0, sizeof(*e));
	e->kind = kind;
	digest(secret, e->digest);
	e->who = *who;
	return 0;
}

int signin_mint(struct signin *s, struct signin_identity *who, int64_t now_ms, char *token)
{
	who->expires_ms = now_ms + s->token_ttl_ms;
	return add(s, TOKEN, who, now_ms, token);
}

int signin_redeem(struct signin *s, const char *token, int64_t now_ms, char *session,
		  struct signin_identity *who)
{
	struct entry *e = find(s, token);
	if (!e || e->kind == SESSION)
		return UV_ENOENT;
	if (e->kind == USED)
		return UV_EALREADY;
	if (e->who.expires_ms <= now_ms) {
		e->kind = FREE;
		return UV_ETIMEDOUT;
	}
	/* Used before anything else can fail: a token works once at most. */
	e->kind = USED;
	*who = e->who;
	who->expires_ms = now_ms + s->session_ttl_ms;
	return add(s, SESSION, who, now_ms, session);
}

int signin_session(struct signin *s, const char *session, int64_t now_ms,
		   struct signin_identity *who)
{
	struct entry *e = find(s, session);
	if (!e || e->kind != SESSION)
		return UV_ENOENT;
	if (e->who.expires_ms <= now_ms) {
		e->kind = FREE;
		return UV_ENOENT;
	}
	*who = e->who;
	return 0;
}

void signin_end(struct signin *s, const char *session)
{
	struct entry *e = find(s, session);
	if (e && e->kind == SESSION)
		memset(e, 0, sizeof(*e));
}
