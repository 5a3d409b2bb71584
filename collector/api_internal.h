/* What api.c (the server: TLS, connections, routing, errors, logging) shares
 * with the resource files api_fleet.c, api_commands.c and api_metrics.c.
 * Not part of the API's public surface (api.h). */
#ifndef EXFLEET_API_INTERNAL_H
#define EXFLEET_API_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "api.h"
#include "log.h"
#include "store_query.h"

/* h2o.h is not included here: the resource files see requests only
 * through struct api_request and the functions below. */
struct st_h2o_req_t;

/* The caller, from the client certificate of the connection. */
struct api_identity {
	int authenticated;  /* a verified certificate with an exfleet identity */
	char name[65];      /* its CN */
	int role;           /* enum pki_role */
	int via_session;    /* a dashboard session's cookie, not a certificate */
};

struct api_param {
	const char *name;   /* decoded; valid while the request is */
	const char *value;
};

#define API_PARAMS_MAX 16

struct api_request {
	struct api *api;
	struct st_h2o_req_t *req;
	const struct api_identity *who;
	int has_cert;       /* the connection presented a verified certificate */
	const char *path;   /* normalised, without the query; NUL-terminated */
	const char *id;     /* the path's {id}, or NULL */
	struct api_param params[API_PARAMS_MAX];
	size_t nparams;
	const char *body;   /* request body (not NUL-terminated) */
	size_t body_len;
	const char *content_type; /* or NULL */
};

/* ---- what the resources may use ---- */

const struct api_config *api_cfg(const struct api *a);
struct store_query *api_store(const struct api *a);

/* Sends a JSON body (the reference is taken) or an error: each returns 0,
 * as handlers do once they have answered. */
int api_send_json(struct api_request *r, int status, json_t *body);
int api_send_text(struct api_request *r, int status, const char *content_type, const char *text,
		  size_t len);
/* An HTML page for browsers, with the headers that keep it to itself
 * (CSP default-src 'self', no framing, no referrer). */
int api_send_html(struct api_request *r, int status, const char *html, size_t len);
int api_error(struct api_request *r, int status, const char *code, const char *fmt, ...)
	LOG_PRINTF(4, 5);
/* The same, for helpers that answer and then return -1 to their caller. */
int api_refuse(struct api_request *r, int status, const char *code, const char *fmt, ...)
	LOG_PRINTF(4, 5);
/* Adds a response header (name in lower case) before the answer is sent. */
void api_add_header(struct api_request *r, const char *name, const char *value);
/* The store failed: 503 when it ran out of time or cannot be read. */
int api_store_error(struct api_request *r, int rc, const char *err);

/* Refuses (400) any query parameter not in allowed (NULL-terminated),
 * naming it and the ones the endpoint takes. Returns 0 when all are known,
 * -1 once it has answered. */
int api_params_only(struct api_request *r, const char *const *allowed);
/* The value of a parameter, or NULL when absent. */
const char *api_param(const struct api_request *r, const char *name);
/* limit (default 100, 1..page_max) and offset (default 0, >= 0): 0, or -1
 * once it has answered 400. */
int api_page(struct api_request *r, struct store_page *p);
/* An optional integer parameter in [min, max]: 0 (with *set), or -1 once
 * it has answered 400. */
int api_param_int(struct api_request *r, const char *name, int64_t min, int64_t max,
		  int64_t *value, int *set);
/* An optional time: milliseconds since 1970 or ISO-8601 UTC
 * (2026-11-29T10:02:11Z, with optional .mmm, or a date 2026-11-29). */
int api_param_time(struct api_request *r, const char *name, int64_t *ms, int *set);
/* Parses "2026-11-29T10:02:11Z" and the forms above: 0 or -1. */
int api_parse_time(const char *text, int64_t *ms);

/* {"items": [...], "total": n, "limit": l, "offset": o, "next": o+l or null} */
int api_send_page(struct api_request *r, json_t *items, int64_t total, const struct store_page *p);

/* The clock connectivity is judged by. */
void api_clock(const struct api *a, struct store_clock *clock);
/* The fleet's counts by status, connectivity and command state
 * (store_query_counts) as of *clock, which it sets, in a read transaction
 * of their own: 0 or a store error with err. */
int api_counts(const struct api *a, struct store_clock *clock, json_t **counts, char *err,
	       size_t errlen);

/* Replaces key's integer value in o by the name of that value in the
 * protobuf enum (e.g. 4 -> "SERVICE_RUNNING"); leaves it when unknown. */
void api_enum_name(json_t *o, const char *key, const ProtobufCEnumDescriptor *desc);
/* Replaces key's integer value by true or false (null stays null). */
void api_bool(json_t *o, const char *key);

/* ---- the resources ---- */

int api_get_hosts(struct api_request *r);
int api_get_host(struct api_request *r);
int api_get_events(struct api_request *r);
int api_get_waves(struct api_request *r);
int api_get_audit(struct api_request *r);
int api_get_commands(struct api_request *r);
int api_get_command(struct api_request *r);
int api_post_commands(struct api_request *r);
int api_get_metrics(struct api_request *r);
int api_get_healthz(struct api_request *r);
int api_get_summary(struct api_request *r);
int api_get_sealing(struct api_request *r);
int api_post_waves(struct api_request *r);
int api_get_report(struct api_request *r);
int api_get_audit_verify(struct api_request *r);
/* The dashboard: its files, sign-in links, sessions. */
int api_get_asset(struct api_request *r);
int api_get_signin(struct api_request *r);
int api_post_signin_links(struct api_request *r);
int api_post_signout(struct api_request *r);

struct signin;
struct signin *api_signin(const struct api *a);
/* The value of the request's cookie name, in the request's pool; NULL when
 * it sent none. */
const char *api_cookie(const struct api_request *r, const char *name);
#define API_SESSION_COOKIE "exfleet_session"


/* Commands as the API shows them: the result_* columns folded into a
 * "result" object (null while none), enum values named. */
void api_command_json(json_t *command);

#endif
