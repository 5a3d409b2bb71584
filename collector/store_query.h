/* Read-only queries of the collector's store, for its HTTPS API.
 *
 * A query handle is a connection of its own, opened read-only beside the
 * store's writer (WAL lets it read while the writer commits). It lives on
 * the loop thread, so every query is bounded: a request opens a snapshot
 * with store_query_begin, which also starts the time budget; a query still
 * running when the budget is spent stops with UV_ETIMEDOUT rather than hold
 * the loop (and with it every agent session).
 *
 * Rows come back as JSON objects keyed by column name: SQL integers as JSON
 * integers, text as strings, NULL as null, and the columns that hold JSON
 * text (evidence, rights, steps, strings) parsed. Lists are paged; each
 * list also gives the number of rows that match without paging.
 *
 * The SQL lives here and in store_sqlite.c, nowhere else. Functions return
 * 0 or a negative libuv error code with a message in err: UV_ETIMEDOUT when
 * the budget ran out, UV_EIO when SQLite failed, UV_ENOMEM. */
#ifndef EXFLEET_STORE_QUERY_H
#define EXFLEET_STORE_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct store_query;

/* Opens path read-only, refusing a database whose schema version is not
 * STORE_SCHEMA_VERSION. budget_ms bounds each snapshot (0: 1000 ms). */
int store_query_open(struct store_query **out, const char *path, uint64_t budget_ms, char *err,
		     size_t errlen);
void store_query_close(struct store_query *q);

/* A consistent view for one request: every query until store_query_end
 * sees the same state of the store, and they share one time budget. */
int store_query_begin(struct store_query *q, char *err, size_t errlen);
void store_query_end(struct store_query *q);

/* The store answers and still has the schema this collector knows. */
int store_query_ping(struct store_query *q, char *err, size_t errlen);

struct store_page {
	int64_t limit;  /* rows at most, >= 1 */
	int64_t offset; /* rows skipped, >= 0 */
};

/* Connectivity follows connectivity_of() (status.h) from last_seen, as if
 * a session were open; a host in a wave plan that never connected is
 * NEVER_SEEN. */
struct store_clock {
	int64_t now_ms;
	uint64_t heartbeat_ms;
};

/* The fleet: every host that connected, and every host of a wave plan.
 * Filters are exact; NULL matches anything. status is a canonical name
 * (host_status_name), connectivity "ONLINE", "OFFLINE" or "NEVER_SEEN".
 * Rows: host_id, wave (the plan's, else the agent's label), site,
 * planned_date, status, status_since, evidence, promoted_at, last_seen,
 * connectivity; ordered by host_id. */
struct store_host_filter {
	const char *status;       /* a status, or NEVER_SEEN: none yet */
	const char *connectivity;
	const char *wave;
	const char *site;
};
int store_query_hosts(struct store_query *q, const struct store_clock *clock,
		      const struct store_host_filter *f, const struct store_page *p, json_t **items,
		      int64_t *total, char *err, size_t errlen);

/* One host, or *host NULL when neither connected nor planned: the fleet
 * row's columns and first_seen, agent_version, platform, role, domain,
 * role_changed_at, sam_present, exchange_version, exchange_sp,
 * sp_needs_reapply, highest_seq, spool_dropped, repaired_at. */
int store_query_host(struct store_query *q, const struct store_clock *clock, const char *host_id,
		     json_t **host, char *err, size_t errlen);
/* Its services (name, display_name, state, start_type, logon_account,
 * win32_exit_code, service_exit_code, account_status, rights,
 * rights_error), by name; a host has a handful. */
int store_query_host_services(struct store_query *q, const char *host_id, json_t **items,
			      char *err, size_t errlen);
/* Its status changes (at, status, evidence), newest first. */
int store_query_host_history(struct store_query *q, const char *host_id,
			     const struct store_page *p, json_t **items, int64_t *total, char *err,
			     size_t errlen);

/* Events, newest first (time_generated, then host and sequence). since_ms
 * is inclusive, until_ms exclusive; has_* says whether each is set. */
struct store_event_filter {
	const char *host_id;
	const char *source;
	int has_event_id, has_since, has_until;
	int64_t event_id;
	int64_t since_ms, until_ms;
};
int store_query_events(struct store_query *q, const struct store_event_filter *f,
		       const struct store_page *p, json_t **items, int64_t *total, char *err,
		       size_t errlen);

/* Waves, ordered by name (numbers numerically; hosts with no wave last):
 * wave, planned_date (the plan's earliest), hosts, promoted, done (promoted
 * and HEALTHY or REPAIRED, as the wave report counts it), by_status
 * {STATUS: n for every status}, by_connectivity {ONLINE, OFFLINE,
 * NEVER_SEEN: n}. */
int store_query_waves(struct store_query *q, const struct store_clock *clock,
		      const struct store_page *p, json_t **items, int64_t *total, char *err,
		      size_t errlen);

/* Commands, newest first: command_id, host_id, action, issuer, issued_at,
 * expires_at, state, state_since and the agent's latest result for it as
 * result_status, result_reason, result_started_at, result_finished_at,
 * result_received_at, result_steps (all null while there is none). */
struct store_command_filter {
	const char *host_id;
	const char *state;
};
int store_query_commands(struct store_query *q, const struct store_command_filter *f,
			 const struct store_page *p, json_t **items, int64_t *total, char *err,
			 size_t errlen);
/* One command as above, or *command NULL when unknown. */
int store_query_command(struct store_query *q, const char *command_id, json_t **command,
			char *err, size_t errlen);

/* *known: 1 when host_id connected once or is in a wave plan. */
int store_query_host_known(struct store_query *q, const char *host_id, int *known, char *err,
			   size_t errlen);

/* The audit log, newest first: id, at, actor, action, detail, prev_hash, hash. */
int store_query_audit(struct store_query *q, const struct store_page *p, json_t **items,
		      int64_t *total, char *err, size_t errlen);

/* Counts for monitoring: {"hosts_by_status": {STATUS: n}, "hosts_by_connectivity":
 * {...}, "commands_by_state": {state: n}, "spool_dropped": n (the sum of
 * what each host's agent last reported dropping)}. Only states and
 * statuses that occur are present. */
int store_query_counts(struct store_query *q, const struct store_clock *clock, json_t **counts,
		       char *err, size_t errlen);

/* Walks the audit log and checks every entry's hash and its link to the
 * one before: *entries read, *first_bad the id of the first entry that does
 * not check (0 when the chain is whole). */
int store_query_audit_verify(struct store_query *q, int64_t *entries, int64_t *first_bad,
			     char *err, size_t errlen);

/* What an operator needs to seal a password to host_id, from the agent's
 * last Hello, base64: {"public_key", "signature", "agent_certificate"
 * (DER)}; *sealing NULL when the host is unknown or sent none. */
int store_query_host_sealing(struct store_query *q, const char *host_id, json_t **sealing,
			     char *err, size_t errlen);

/* Per host, for the wave report (report.h), in host order: host_id, wave,
 * planned_date, site, status, connectivity, promoted_at, detected_at (the
 * first AFFECTED or NEEDS_SP_REINSTALL at or after the promotion),
 * repaired_at (the first REPAIRED after that), evidence. */
int store_query_report(struct store_query *q, const struct store_clock *clock, json_t **items,
		       char *err, size_t errlen);

#endif
