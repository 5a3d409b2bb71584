/* Dashboard sign-in without certificates in browsers. An operator's
 * certificate buys a one-time token (exfleetctl dashboard); opening the
 * link exchanges it for a session, which the browser keeps in a cookie.
 * Both carry the name and role of the certificate that minted them.
 *
 * Only SHA-256 digests of tokens and session keys are kept, in memory: a
 * copy of the collector's memory or store signs nobody in, and a restart
 * signs everyone out. A used token is remembered until it would have
 * expired, so that opening a link twice says "already used". Pure apart
 * from the random bytes: times come from the caller. */
#ifndef EXFLEET_SIGNIN_H
#define EXFLEET_SIGNIN_H

#include <stddef.h>
#include <stdint.h>

/* 32 random bytes, base64url without padding. */
#define SIGNIN_SECRET_LEN 43
#define SIGNIN_NAME_MAX 64

struct signin_identity {
	char name[SIGNIN_NAME_MAX + 1];
	int role;              /* enum pki_role */
	int64_t expires_ms;
};

struct signin;

/* At most max tokens and sessions at once (the oldest-expiring goes when
 * full); tokens live token_ttl_ms, sessions session_ttl_ms. NULL when out
 * of memory. */
struct signin *signin_new(size_t max, int64_t token_ttl_ms, int64_t session_ttl_ms);
void signin_free(struct signin *s);

/* A new one-time token for who (its expires_ms is set) into
 * token[SIGNIN_SECRET_LEN + 1]. 0, or UV_EIO when no random bytes. */
int signin_mint(struct signin *s, struct signin_identity *who, int64_t now_ms, char *token);

/* Exchanges a token for a session key (session[SIGNIN_SECRET_LEN + 1]) and
 * fills who. 0; UV_ENOENT for a token never minted (or forgotten);
 * UV_EALREADY for one already used; UV_ETIMEDOUT for one expired. */
int signin_redeem(struct signin *s, const char *token, int64_t now_ms, char *session,
		  struct signin_identity *who);

/* The identity of a session key: 0, or UV_ENOENT when unknown or expired. */
int signin_session(struct signin *s, const char *session, int64_t now_ms,
		   struct signin_identity *who);

/* Ends a session (sign out); unknown keys are ignored. */
void signin_end(struct signin *s, const char *session);

#endif
