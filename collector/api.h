/* The collector's HTTPS API: libh2o on the collector's own libuv loop.
 *
 * A listener of its own (default 127.0.0.1:8443), TLS 1.3 with the
 * collector's certificate. Operators present a client certificate from the
 * deployment's CA (CRL honoured): role viewer may read, role operator may
 * also submit commands. A certificate that does not verify fails the
 * handshake; a missing one, or another role, gets a JSON 401 or 403.
 * Browsers sign in to the read-only dashboard (served at /) with a
 * one-time link an operator's certificate minted; the session is a cookie.
 * Reads go to the store through a read-only connection of the API's own;
 * live counters, command submission and wave imports go through the
 * collector's callbacks. Every API response is JSON except /metrics
 * (Prometheus text) and the wave report's other formats; every error is
 * {"error": {"code": "...", "message": "..."}}. */
#ifndef EXFLEET_API_H
#define EXFLEET_API_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* Live counters of the agent server, read for each /metrics scrape. */
struct api_stats {
	/* Agent connections by state (enum agent_state). */
	uint64_t sessions_waiting;
	uint64_t sessions_handshake;
	uint64_t sessions_hello;
	uint64_t sessions_ready;
	uint64_t handshakes_in_progress;
	uint64_t handshakes_completed; /* since start */
	uint64_t records_stored;       /* agent messages committed (store_committed) */
	uint64_t acks_sent;
	uint64_t store_queue_depth;
	uint64_t backpressure_pauses;  /* times agent sessions stopped reading */
	uint64_t shed;                 /* connections and sessions turned away */
	uint64_t emfile;               /* accepts that failed for want of descriptors */
};

/* A command an operator submitted, already checked: the envelope decodes as
 * an Exfleet__Command whose body decodes as an Exfleet__CommandBody with an
 * action, for host_id, with this id, not yet expired. */
struct api_command {
	const char *host_id;
	const char *command_id;   /* 1 to 64 hexadecimal characters */
	const char *action;       /* "RESCAN", "SET_SERVICE_CREDENTIALS", ... */
	int64_t issued_at_ms;
	int64_t expires_at_ms;
	const char *submitted_by; /* the operator's certificate name (CN) */
	const uint8_t *envelope;  /* the encoded Exfleet__Command, as received */
	size_t len;
};

struct store_wave;

struct api_config {
	const char *listen;       /* host:port; port 0 takes any free port */
	const char *ca_file;      /* the deployment CA: client certificates chain to it */
	const char *cert_file;    /* the collector's certificate and key */
	const char *key_file;
	const char *crl_file;     /* may be NULL */
	const char *store_path;   /* the collector's SQLite database */
	uint64_t heartbeat_ms;    /* agents' interval: 3 missed mean OFFLINE */
	size_t max_body;          /* request body, bytes; beyond: 413 */
	unsigned page_max;        /* largest limit= a list accepts */
	unsigned max_connections; /* API connections at once; beyond, closed */
	uint64_t query_budget_ms; /* store time one request may take; beyond: 503 */
	uint64_t signin_ttl_ms;   /* a dashboard sign-in link works this long, once */
	uint64_t session_ttl_ms;  /* a dashboard session (its cookie) lasts this long */

	/* Fills out with the collector's counters. May be NULL (all zero). */
	void (*stats)(struct api_stats *out, void *arg);
	/* Stores c for the relay to deliver. Returns 0, UV_EEXIST when the
	 * command id is already used (409), UV_EACCES when its signature is
	 * not an operator's (403), UV_EINVAL or UV_ETIMEDOUT when it is
	 * malformed or expired (400), or another negative code with a message
	 * in err (503). May be NULL: submission is then refused. */
	int (*submit_command)(const struct api_command *c, char *err, size_t errlen, void *arg);
	/* Replaces the wave plan with these entries, all or nothing, and
	 * audits it as by's. Returns 0, or a negative code with a message in
	 * err (503). May be NULL: imports are then refused. */
	int (*import_waves)(const struct store_wave *plan, size_t n, const char *by, char *err,
			    size_t errlen, void *arg);
	void *arg;                /* for the callbacks */
};

/* listen 127.0.0.1:8443, heartbeat 30 s, max_body 1 MiB, page_max 500,
 * max_connections 256, query_budget_ms 1000, sign-in links 5 minutes,
 * sessions 8 hours; files and callbacks unset. */
void api_config_default(struct api_config *cfg);

struct api;

/* Loads the TLS context, opens the store to read and starts listening.
 * cfg is copied; its strings need not outlive the call. Returns 0, or a
 * negative libuv error code with a message naming the key or file in err;
 * a listener that could not listen is still closing then, so run the loop
 * before closing it. */
int api_start(struct api **out, uv_loop_t *loop, const struct api_config *cfg, char *err,
	      size_t errlen);

/* The address listened on, with the port the system chose for port 0. */
const char *api_address(const struct api *a);
int api_port(const struct api *a);

/* Reads the CRL again (crl_file, as [tls] crl names it): in force for the
 * API's next connections. 0, or -1 with err, the CRL before staying in force. */
int api_reload_crl(struct api *a, const char *crl_file, char *err, size_t errlen);

/* Stops listening, ends every connection (a response being written is
 * cut short), releases everything, then calls done (may be NULL) on the
 * loop. The loop must run for that to happen. */
void api_stop(struct api *a, void (*done)(void *arg), void *arg);

#endif
