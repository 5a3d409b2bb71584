/* Host status: the rules of DESIGN.md "Host status (collector)" as a pure
 * function of a host's stored state and recent events. No I/O, no clock:
 * the caller passes the time, so every rule is testable without sockets.
 *
 * Health rules, first match wins:
 *   REPAIRING           a repair command is in flight
 *   NEEDS_SP_REINSTALL  after a credential repair the Exchange services run and
 *                       their accounts hold every right, yet auth-privilege
 *                       events still occur (at or after repaired_at_ms); a
 *                       successful service pack reapply must advance
 *                       repaired_at_ms too, or this outlives the fix
 *   AFFECTED            a domain controller with, in its window: an Exchange
 *                       service stopped with 1069/1314/1385, SCM 7000/7013/
 *                       7038/7041 naming one, auth-privilege events, or a
 *                       service account that lacks a right or no longer exists
 *   AT_RISK             not a DC, and an Exchange service logs on as a local
 *                       account, or its account lacks a right or is gone
 *   DEGRADED            an Exchange service is not running, or auth-privilege
 *                       events in the window; also: no snapshot received yet
 *   REPAIRED            was_affected, repaired_at_ms set, nothing above holds
 *   HEALTHY             nothing above holds
 *
 * The window events must fall in starts at the latest of: the promotion (for
 * a DC whose promotion time is known) or now - retention_ms (otherwise), and
 * repaired_at_ms. Events before a promotion describe the member server the
 * host was and never count. An event exactly at the start counts.
 *
 * Only the services in rules->services count; a watched service absent from
 * the snapshot is not installed (IMC and ES are optional) and is ignored. */
#ifndef EXFLEET_STATUS_H
#define EXFLEET_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "exfleet.pb-c.h"

enum host_status {
	HOST_HEALTHY,
	HOST_REPAIRED,
	HOST_DEGRADED,
	HOST_AT_RISK,
	HOST_AFFECTED,
	HOST_NEEDS_SP_REINSTALL,
	HOST_REPAIRING,
};

/* "HEALTHY", "REPAIRED", ..., "NEEDS_SP_REINSTALL", "REPAIRING"; "UNKNOWN"
 * for a value outside the enum. */
const char *host_status_name(enum host_status s);
/* The status named (case-insensitive), or -1 when unknown or NULL. */
int host_status_parse(const char *name);

enum connectivity { CONN_ONLINE, CONN_OFFLINE, CONN_NEVER_SEEN };

/* "ONLINE", "OFFLINE", "NEVER_SEEN"; "UNKNOWN" outside the enum. */
const char *connectivity_name(enum connectivity c);
/* NEVER_SEEN when last_seen_ms is 0; ONLINE when a session is open and
 * traffic came at most 3 heartbeat intervals ago (exactly 3 is still ONLINE;
 * traffic stamped after now_ms, clock skew, is ONLINE); OFFLINE otherwise.
 * A heartbeat_ms of 0 (no interval known) leaves it to session_open. */
enum connectivity connectivity_of(int64_t last_seen_ms, int session_open, int64_t now_ms,
				  uint64_t heartbeat_ms);

struct status_signature {
	const char *source;
	uint32_t event_id;
};

/* What the rules look for; defaults are Exchange 5.5's. The arrays are not
 * copied: they must outlive every status_classify call that uses them. */
struct status_rules {
	const char *const *services; /* short names: MSExchangeSA, ... */
	size_t n_services;
	const struct status_signature *auth; /* auth-privilege events */
	size_t n_auth;
	const char *const *rights; /* rights every service account needs */
	size_t n_rights;
	int64_t retention_ms; /* look-back when the promotion time is
			       * unknown; 0 or less: 7 days */
};

/* MSExchangeSA, DS, IS, MTA, IMC, ES; MSExchangePOP3/13003 and
 * MSExchangeIMAP4/13003; SeServiceLogonRight, SeTcbPrivilege,
 * SeRestorePrivilege; 7 days. */
void status_rules_default(struct status_rules *r);

/* One stored event the rules look at; strings are its insertion strings
 * (SCM gives error codes as "%%1069"). */
struct status_event {
	const char *log;
	const char *source;
	uint32_t event_id;
	int type; /* Exfleet__EventType */
	int64_t time_ms;
	const char *const *strings;
	size_t n_strings;
};

struct status_input {
	const Exfleet__Snapshot *snapshot; /* current host state; NULL: none yet */
	int64_t promoted_at_ms;            /* 0: unknown; then a DC's snapshot
					    * role_changed_at_ms is used if set */
	const struct status_event *events; /* recent events, oldest first */
	size_t n_events;
	int64_t now_ms;
	const char *repair_in_flight; /* id of a repair command in flight, or NULL */
	int64_t repaired_at_ms;       /* last successful credential repair (or service
				       * pack reapply: see NEEDS_SP_REINSTALL); 0: none */
	int was_affected;             /* the host was AFFECTED before that repair */
};

#define STATUS_EVIDENCE_MAX 8

/* evidence holds distinct lines, most telling first, each at most 255
 * characters (longer ones end in "..." at a word boundary); when more lines
 * apply than fit, the last one reads "... and N more". */
struct status_result {
	enum host_status status;
	char evidence[STATUS_EVIDENCE_MAX][256];
	size_t n_evidence;
};

void status_classify(const struct status_rules *rules, const struct status_input *in,
		     struct status_result *out);

#endif
