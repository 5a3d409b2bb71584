/* Host status rules: one case per rule and per boundary, each asserting the
 * status and the evidence lines an admin reads. Hosts are built from the
 * wire structs on the stack, as the collector would hand them over. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "status.h"

/* 2026-11-29T10:00:00Z */
#define T0 1795946400000LL
#define PROMOTED (T0 + 118000)  /* 10:01:58Z */
#define OBSERVED (T0 + 131000)  /* 10:02:11Z */
#define REPAIRED (T0 + 1800000) /* 10:30:00Z */
#define NOW (T0 + 3600000)      /* 11:00:00Z */
#define WEEK_MS (7 * 24 * 3600 * 1000LL)

#define MEMBER EXFLEET__DOMAIN_ROLE__ROLE_MEMBER_SERVER
#define BDC EXFLEET__DOMAIN_ROLE__ROLE_BACKUP_DC
#define PDC EXFLEET__DOMAIN_ROLE__ROLE_PRIMARY_DC
#define STOPPED EXFLEET__SERVICE_STATE__SERVICE_STOPPED
#define RUNNING EXFLEET__SERVICE_STATE__SERVICE_RUNNING

enum { SA, DS, IS, MTA, IMC, ES, N_EXCHANGE };
enum { SVC_MAX = 16, EVENTS_MAX = 64, STRINGS_MAX = 4 };

static char *names[] = {"MSExchangeSA",  "MSExchangeDS",  "MSExchangeIS",
			"MSExchangeMTA", "MSExchangeIMC", "MSExchangeES"};
static char *display_names[] = {
	"Microsoft Exchange System Attendant",      "Microsoft Exchange Directory",
	"Microsoft Exchange Information Store",     "Microsoft Exchange Message Transfer Agent",
	"Microsoft Exchange Internet Mail Service", "Microsoft Exchange Event Service"};
static char *every_right[] = {"SeServiceLogonRight", "SeTcbPrivilege", "SeRestorePrivilege"};
static char *logon_right_only[] = {"SeServiceLogonRight"};

struct fixture {
	Exfleet__Snapshot snap;
	Exfleet__Service svc[SVC_MAX];
	Exfleet__Service *ptrs[SVC_MAX];
	struct status_event events[EVENTS_MAX];
	const char *strings[EVENTS_MAX][STRINGS_MAX];
	struct status_rules rules;
	struct status_input in;
	struct status_result res;
};

static struct fixture fx;

/* A host with the six Exchange services running as account, which holds
 * every required right; a DC was promoted at PROMOTED. */
static void host(struct fixture *f, Exfleet__DomainRole role, const char *account)
{
	Exfleet__Snapshot snap = EXFLEET__SNAPSHOT__INIT;
	f->snap = snap;
	f->snap.observed_at_ms = OBSERVED;
	f->snap.computer_name = "EXCH01";
	f->snap.domain = "CORP";
	f->snap.role = role;
	f->snap.exchange_version = "5.5.2653";
	f->snap.exchange_service_pack = 3;
	f->snap.services = f->ptrs;
	int builtin = strcmp(account, "LocalSystem") == 0;
	for (size_t i = 0; i < N_EXCHANGE; i++) {
		Exfleet__Service s = EXFLEET__SERVICE__INIT;
		s.name = names[i];
		s.display_name = display_names[i];
		s.state = RUNNING;
		s.start_type = EXFLEET__START_TYPE__START_AUTO;
		s.logon_account = (char *)account;
		s.account_status = builtin ? EXFLEET__ACCOUNT_STATUS__ACCOUNT_BUILTIN
					   : EXFLEET__ACCOUNT_STATUS__ACCOUNT_EXISTS;
		if (!builtin) {
			s.account_rights = every_right;
			s.n_account_rights = 3;
		}
		f->svc[i] = s;
		f->ptrs[i] = &f->svc[i];
	}
	f->snap.n_services = N_EXCHANGE;
	f->in.snapshot = &f->snap;
	f->in.promoted_at_ms = role == BDC || role == PDC ? PROMOTED : 0;
}

static Exfleet__Service *add_service(struct fixture *f, const char *name, const char *display)
{
	size_t i = f->snap.n_services++;
	Exfleet__Service s = EXFLEET__SERVICE__INIT;
	s.name = (char *)name;
	s.display_name = (char *)display;
	s.state = RUNNING;
	s.logon_account = "LocalSystem";
	s.account_status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_BUILTIN;
	f->svc[i] = s;
	f->ptrs[i] = &f->svc[i];
	return &f->svc[i];
}

static void stop(struct fixture *f, size_t i, uint32_t code)
{
	f->svc[i].state = STOPPED;
	f->svc[i].win32_exit_code = code;
}

static void event(struct fixture *f, const char *source, uint32_t id, int64_t time_ms,
		  const char *s0, const char *s1, const char *s2)
{
	size_t i = f->in.n_events++;
	const char **strs = f->strings[i];
	size_t n = 0;
	if (s0)
		strs[n++] = s0;
	if (s1)
		strs[n++] = s1;
	if (s2)
		strs[n++] = s2;
	f->events[i] = (struct status_event){
	    .log = strcmp(source, "Service Control Manager") ? "Application" : "System",
	    .source = source,
	    .event_id = id,
	    .type = EXFLEET__EVENT_TYPE__EVENT_ERROR,
	    .time_ms = time_ms,
	    .strings = strs,
	    .n_strings = n,
	};
}

/* n POP3 logons refused, one a second from start. */
static void pop3(struct fixture *f, size_t n, int64_t start)
{
	for (size_t i = 0; i < n; i++)
		event(f, "MSExchangePOP3", 13003, start + (int64_t)i * 1000, NULL, NULL, NULL);
}

/* ---- the cases ---- */

static void healthy_member(struct fixture *f)
{
	host(f, MEMBER, "CORP\\exsvc");
}

static void localsystem_dc(struct fixture *f)
{
	host(f, BDC, "LocalSystem");
}

/* Builtin by name even when the agent could not classify it. */
static void localsystem_dc_by_name(struct fixture *f)
{
	host(f, PDC, "LocalSystem");
	for (size_t i = 0; i < N_EXCHANGE; i++)
		f->svc[i].account_status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_UNKNOWN;
}

static void member_local_account(struct fixture *f)
{
	host(f, MEMBER, ".\\exsvc");
}

static void member_one_local_service(struct fixture *f)
{
	host(f, MEMBER, "CORP\\exsvc");
	f->svc[SA].logon_account = ".\\exsvc";
}

static void member_computer_name_account(struct fixture *f)
{
	host(f, MEMBER, "exch01\\exsvc");
}

/* A domain whose name starts with the computer's is not the computer. */
static void member_prefix_domain(struct fixture *f)
{
	host(f, MEMBER, "EXCH01X\\exsvc");
}

static void member_domain_prefix_of_computer(struct fixture *f)
{
	host(f, MEMBER, "EXCH\\exsvc");
}

static void member_lacks_rights(struct fixture *f)
{
	host(f, MEMBER, "CORP\\exsvc");
	for (size_t i = 0; i < N_EXCHANGE; i++) {
		f->svc[i].account_rights = logon_right_only;
		f->svc[i].n_account_rights = 1;
	}
}

static void dc_domain_account(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
}

static void dc_is_1069(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	stop(f, IS, 1069);
	stop(f, ES, 1068);
}

static void dc_is_1314(struct fixture *f)
{
	host(f, PDC, "CORP\\exsvc");
	stop(f, IS, 1314);
}

static void dc_is_1385(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	stop(f, SA, 1385);
}

/* A dependency failure alone is an outage, not the promotion's signature. */
/* What dcpromo leaves: IS and MTA fail to log on, ES cannot start without
 * IS; IMC, SA and DS happen to be stopped, without an error, or pending. */
static void dc_outage(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	stop(f, IS, 1069);
	stop(f, MTA, 1069);
	stop(f, ES, 1068);
	stop(f, IMC, 0);
	stop(f, SA, 0);
	f->svc[DS].state = EXFLEET__SERVICE_STATE__SERVICE_STOP_PENDING;
}

static void dc_es_1068(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	stop(f, ES, 1068);
}

static void dc_auth_after_promotion(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	pop3(f, 37, PROMOTED + 60000);
	for (int i = 0; i < 5; i++)
		event(f, "MSExchangeIMAP4", 13003, PROMOTED + 90000 + i, NULL, NULL, NULL);
}

static void dc_auth_before_promotion(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	pop3(f, 10, PROMOTED - 10000); /* the last one 1 s before */
}

static void dc_auth_at_promotion(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	pop3(f, 3, PROMOTED - 2000); /* only the one exactly at PROMOTED counts */
}

static void member_auth(struct fixture *f)
{
	host(f, MEMBER, "CORP\\exsvc");
	pop3(f, 12, NOW - 3600000);
}

static void dc_lacks_right(struct fixture *f)
{
	static char *rights[] = {"SeServiceLogonRight", "SeRestorePrivilege"};
	host(f, BDC, "CORP\\exsvc");
	f->svc[IS].account_rights = rights;
	f->svc[IS].n_account_rights = 2;
}

static void dc_account_missing(struct fixture *f)
{
	host(f, BDC, ".\\exsvc");
	for (size_t i = 0; i < N_EXCHANGE; i++) {
		f->svc[i].account_status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_MISSING;
		f->svc[i].n_account_rights = 0;
	}
}

static void dc_scm_7038_display_name(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	event(f, "Service Control Manager", 7038, PROMOTED + 5000,
	      "microsoft exchange information store", ".\\exsvc", "%%1326");
}

/* As the simulated dcpromo logs them: 7038 by name, 7000 by display name. */
static void dc_scm_repeats(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	for (int i = 0; i < 3; i++) {
		event(f, "Service Control Manager", 7038, PROMOTED + 1000 * i, "MSExchangeIS",
		      ".\\exsvc", "%%1326");
		event(f, "Service Control Manager", 7000, PROMOTED + 1000 * i,
		      "Microsoft Exchange Information Store", "%%1069", NULL);
	}
}

static void dc_scm_other_service(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	add_service(f, "Spooler", "Print Spooler");
	event(f, "Service Control Manager", 7000, PROMOTED + 5000, "Print Spooler", "%%1069", NULL);
}

static void dc_scm_other_id(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	event(f, "Service Control Manager", 7001, PROMOTED + 5000, "MSExchangeES",
	      "Microsoft Exchange Information Store", "%%1069");
}

/* Event ids are only unique per source. */
static void dc_scm_wrong_source(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	event(f, "MSExchangeIS", 7000, PROMOTED + 5000, "MSExchangeIS", "%%1069", NULL);
}

static void dc_scm_before_promotion(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	event(f, "Service Control Manager", 7000, PROMOTED - 1, "MSExchangeIS", "%%1069", NULL);
}

static void member_scm(struct fixture *f)
{
	host(f, MEMBER, "CORP\\exsvc");
	event(f, "Service Control Manager", 7000, NOW - 60000, "MSExchangeIS", "%%1069", NULL);
}

static void dc_unknown_promotion_old(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	f->in.promoted_at_ms = 0;
	pop3(f, 1, NOW - WEEK_MS - 1);
}

static void dc_unknown_promotion_edge(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	f->in.promoted_at_ms = 0;
	pop3(f, 1, NOW - WEEK_MS - 1);
	pop3(f, 1, NOW - WEEK_MS);
}

/* The agent's role_changed_at_ms stands in for an unknown promotion time. */
static void dc_role_changed_at(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	f->in.promoted_at_ms = 0;
	f->snap.role_changed_at_ms = PROMOTED;
	pop3(f, 2, PROMOTED - 2000);
	pop3(f, 4, PROMOTED);
}

static void retention_one_hour(struct fixture *f)
{
	host(f, MEMBER, "CORP\\exsvc");
	f->rules.retention_ms = 3600000;
	pop3(f, 3, NOW - 3600000 - 1); /* the first is just outside */
}

static void repairing_wins(struct fixture *f)
{
	host(f, BDC, ".\\exsvc");
	stop(f, IS, 1069);
	pop3(f, 5, PROMOTED + 1000);
	f->svc[SA].account_status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_MISSING;
	f->in.repair_in_flight = "9f2c41d07a3b4e55";
	f->in.repaired_at_ms = REPAIRED;
	f->in.was_affected = 1;
}

static void needs_sp_reinstall(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	pop3(f, 30, PROMOTED + 1000);
	pop3(f, 4, REPAIRED);
	f->in.repaired_at_ms = REPAIRED;
	f->in.was_affected = 1;
	f->snap.service_pack_needs_reapply = 1;
}

/* Until the services run with their rights, the repair has not succeeded. */
static void repair_incomplete(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	stop(f, IS, 1069);
	pop3(f, 4, REPAIRED + 1000);
	f->in.repaired_at_ms = REPAIRED;
	f->in.was_affected = 1;
}

static void repair_rights_missing(struct fixture *f)
{
	repair_incomplete(f);
	f->svc[IS].state = RUNNING;
	f->svc[IS].account_rights = logon_right_only;
	f->svc[IS].n_account_rights = 1;
}

static void repair_account_missing(struct fixture *f)
{
	repair_incomplete(f);
	f->svc[IS].state = RUNNING;
	f->svc[IS].logon_account = "CORP\\gone";
	f->svc[IS].account_status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_MISSING;
}

static void repaired(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	pop3(f, 30, PROMOTED + 1000);
	pop3(f, 1, REPAIRED - 1);
	event(f, "Service Control Manager", 7038, PROMOTED + 500, "MSExchangeIS", ".\\exsvc",
	      "%%1326");
	f->in.repaired_at_ms = REPAIRED;
	f->in.was_affected = 1;
}

static void repaired_never_affected(struct fixture *f)
{
	repaired(f);
	f->in.was_affected = 0;
}

static void non_exchange_stopped(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	stop(f, add_service(f, "Spooler", "Print Spooler") - f->svc, 1069);
	add_service(f, "W3SVC", "World Wide Web Publishing Service")->logon_account = ".\\iusr";
}

static void member_mta_stopped(struct fixture *f)
{
	host(f, MEMBER, "CORP\\exsvc");
	stop(f, MTA, 0);
	f->svc[IMC].state = EXFLEET__SERVICE_STATE__SERVICE_PAUSED;
}

static void no_snapshot(struct fixture *f)
{
	f->in.snapshot = NULL;
}

static void no_snapshot_auth(struct fixture *f)
{
	f->in.snapshot = NULL;
	pop3(f, 2, NOW - 1000);
}

/* IMC and ES are optional in Exchange 5.5. */
static void optional_not_installed(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	f->snap.n_services = 4;
}

static void rights_unreadable(struct fixture *f)
{
	host(f, MEMBER, "CORP\\exsvc");
	for (size_t i = 0; i < N_EXCHANGE; i++) {
		f->svc[i].rights_error = 5;
		f->svc[i].n_account_rights = 0;
	}
}

static void two_accounts(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	f->svc[IMC].logon_account = "CORP\\imcsvc";
}

/* Nine lines apply: six services down six ways, POP3, IMAP4, the rights.
 * What makes the host AFFECTED comes first, the rest of the outage after. */
static void nine_lines(struct fixture *f)
{
	host(f, BDC, "CORP\\exsvc");
	static const uint32_t codes[] = {1069, 1068, 1314, 1385, 0};
	for (size_t i = 0; i < N_EXCHANGE; i++) {
		if (i < 5)
			stop(f, i, codes[i]);
		f->svc[i].account_rights = logon_right_only;
		f->svc[i].n_account_rights = 1;
	}
	f->svc[ES].state = EXFLEET__SERVICE_STATE__SERVICE_START_PENDING;
	pop3(f, 2, PROMOTED);
	event(f, "MSExchangeIMAP4", 13003, PROMOTED, NULL, NULL, NULL);
}

static void eight_lines(struct fixture *f)
{
	nine_lines(f);
	f->in.n_events = 2;
}

/* A snapshot listing a service twice (once in other case), rules listing a
 * signature twice, the same account spelled two ways. */
static void duplicates(struct fixture *f)
{
	static const struct status_signature auth[] = {{"MSExchangePOP3", 13003},
						       {"msexchangepop3", 13003}};
	host(f, BDC, "CORP\\exsvc");
	stop(f, IS, 1069);
	Exfleet__Service *again = add_service(f, "MSExchangeIS", display_names[IS]);
	*again = f->svc[IS];
	again->name = "msexchangeis";
	f->svc[MTA].logon_account = "corp\\EXSVC";
	f->svc[MTA].account_rights = logon_right_only;
	f->svc[MTA].n_account_rights = 1;
	f->rules.auth = auth;
	f->rules.n_auth = 2;
	pop3(f, 3, PROMOTED);
}

struct status_case {
	const char *name;
	void (*setup)(struct fixture *f);
	enum host_status want;
	const char *evidence[4]; /* lines that must appear, verbatim */
	size_t n_evidence;       /* 0: not checked */
};

static const struct status_case cases[] = {
	{"healthy member server", healthy_member, HOST_HEALTHY,
	 {"all 6 Exchange services running; CORP\\exsvc holds every required right"}, 1},
	{"LocalSystem services on a DC", localsystem_dc, HOST_HEALTHY,
	 {"all 6 Exchange services running"}, 1},
	{"LocalSystem by name on a DC", localsystem_dc_by_name, HOST_HEALTHY,
	 {"all 6 Exchange services running"}, 1},
	{"member server with a local service account", member_local_account, HOST_AT_RISK,
	 {"MSExchangeSA, MSExchangeDS, MSExchangeIS, MSExchangeMTA, MSExchangeIMC, MSExchangeES "
	  "log on as local account .\\exsvc: promotion will delete it"}, 1},
	{"member server, one service on a local account", member_one_local_service, HOST_AT_RISK,
	 {"MSExchangeSA logs on as local account .\\exsvc: promotion will delete it"}, 1},
	{"member server, COMPUTERNAME\\account", member_computer_name_account, HOST_AT_RISK,
	 {"MSExchangeSA, MSExchangeDS, MSExchangeIS, MSExchangeMTA, MSExchangeIMC, MSExchangeES "
	  "log on as local account exch01\\exsvc: promotion will delete it"}, 1},
	{"member server, domain named like the computer", member_prefix_domain, HOST_HEALTHY,
	 {"all 6 Exchange services running; EXCH01X\\exsvc holds every required right"}, 1},
	{"member server, domain named like part of the computer",
	 member_domain_prefix_of_computer, HOST_HEALTHY,
	 {"all 6 Exchange services running; EXCH\\exsvc holds every required right"}, 1},
	{"member server, account lacks rights", member_lacks_rights, HOST_AT_RISK,
	 {"CORP\\exsvc lacks SeTcbPrivilege, SeRestorePrivilege"}, 1},
	{"DC, domain account with every right", dc_domain_account, HOST_HEALTHY,
	 {"all 6 Exchange services running; CORP\\exsvc holds every required right"}, 1},
	{"DC, IS stopped with 1069", dc_is_1069, HOST_AFFECTED,
	 {"MSExchangeIS stopped: 1069 The service did not start due to a logon failure. "
	  "(since 2026-11-29T10:02:11Z)",
	  "MSExchangeES stopped: 1068 The dependency service or group failed to start. "
	  "(since 2026-11-29T10:02:11Z)"}, 2},
	{"DC, IS stopped with 1314", dc_is_1314, HOST_AFFECTED,
	 {"MSExchangeIS stopped: 1314 A required privilege is not held by the client. "
	  "(since 2026-11-29T10:02:11Z)"}, 1},
	{"DC, SA stopped with 1385", dc_is_1385, HOST_AFFECTED,
	 {"MSExchangeSA stopped: 1385 Logon failure: the user has not been granted the "
	  "requested logon type at this computer. (since 2026-11-29T10:02:11Z)"}, 1},
	{"DC, outage lines by cause", dc_outage, HOST_AFFECTED,
	 {"MSExchangeIS, MSExchangeMTA stopped: 1069 The service did not start due to a logon "
	  "failure. (since 2026-11-29T10:02:11Z)",
	  "MSExchangeES stopped: 1068 The dependency service or group failed to start. "
	  "(since 2026-11-29T10:02:11Z)",
	  "MSExchangeSA, MSExchangeIMC are stopped", "MSExchangeDS is stop pending"}, 4},
	{"DC, ES stopped with 1068 only", dc_es_1068, HOST_DEGRADED,
	 {"MSExchangeES stopped: 1068 The dependency service or group failed to start. "
	  "(since 2026-11-29T10:02:11Z)"}, 1},
	{"DC, 13003 after promotion", dc_auth_after_promotion, HOST_AFFECTED,
	 {"37 x MSExchangePOP3/13003 since promotion at 2026-11-29T10:01:58Z",
	  "5 x MSExchangeIMAP4/13003 since promotion at 2026-11-29T10:01:58Z"}, 2},
	{"DC, 13003 only before promotion", dc_auth_before_promotion, HOST_HEALTHY,
	 {"all 6 Exchange services running; CORP\\exsvc holds every required right"}, 1},
	{"DC, 13003 exactly at promotion", dc_auth_at_promotion, HOST_AFFECTED,
	 {"1 x MSExchangePOP3/13003 since promotion at 2026-11-29T10:01:58Z"}, 1},
	{"member server, 13003", member_auth, HOST_DEGRADED,
	 {"12 x MSExchangePOP3/13003 in the last 7 days"}, 1},
	{"DC, account lacks a right", dc_lacks_right, HOST_AFFECTED,
	 {"CORP\\exsvc lacks SeTcbPrivilege"}, 1},
	{"DC, local account gone", dc_account_missing, HOST_AFFECTED,
	 {".\\exsvc no longer exists (local account removed by promotion)"}, 1},
	{"DC, SCM 7038 by display name", dc_scm_7038_display_name, HOST_AFFECTED,
	 {"1 x SCM 7038: MSExchangeIS could not log on as .\\exsvc: 1326 Logon failure: "
	  "unknown user name or bad password. (since promotion at 2026-11-29T10:01:58Z)"}, 1},
	{"DC, SCM repeats", dc_scm_repeats, HOST_AFFECTED,
	 {"3 x SCM 7038: MSExchangeIS could not log on as .\\exsvc: 1326 Logon failure: "
	  "unknown user name or bad password. (since promotion at 2026-11-29T10:01:58Z)",
	  "3 x SCM 7000: MSExchangeIS failed to start: 1069 The service did not start due to "
	  "a logon failure. (since promotion at 2026-11-29T10:01:58Z)"}, 2},
	{"DC, SCM 7000 naming another service", dc_scm_other_service, HOST_HEALTHY, {0}, 1},
	{"DC, SCM 7001 is not a logon failure", dc_scm_other_id, HOST_HEALTHY, {0}, 1},
	{"DC, 7000 from a source other than the SCM", dc_scm_wrong_source, HOST_HEALTHY, {0}, 1},
	{"DC, SCM before promotion", dc_scm_before_promotion, HOST_HEALTHY, {0}, 1},
	{"member server, SCM 7000 for IS", member_scm, HOST_HEALTHY, {0}, 1},
	{"DC, unknown promotion, event past retention", dc_unknown_promotion_old, HOST_HEALTHY,
	 {0}, 1},
	{"DC, unknown promotion, event at retention edge", dc_unknown_promotion_edge, HOST_AFFECTED,
	 {"1 x MSExchangePOP3/13003 in the last 7 days"}, 1},
	{"DC, promotion from role_changed_at_ms", dc_role_changed_at, HOST_AFFECTED,
	 {"4 x MSExchangePOP3/13003 since promotion at 2026-11-29T10:01:58Z"}, 1},
	{"member server, retention of one hour", retention_one_hour, HOST_DEGRADED,
	 {"2 x MSExchangePOP3/13003 in the last hour"}, 1},
	{"repair in flight wins", repairing_wins, HOST_REPAIRING,
	 {"repair command 9f2c41d07a3b4e55 in flight"}, 1},
	{"auth events after a repair", needs_sp_reinstall, HOST_NEEDS_SP_REINSTALL,
	 {"4 x MSExchangePOP3/13003 since the repair at 2026-11-29T10:30:00Z: reinstall the "
	  "service pack",
	  "the agent reports Exchange 5.5.2653 SP3 needs its service pack reapplied"}, 2},
	{"repair with IS still stopped", repair_incomplete, HOST_AFFECTED,
	 {"MSExchangeIS stopped: 1069 The service did not start due to a logon failure. "
	  "(since 2026-11-29T10:02:11Z)",
	  "4 x MSExchangePOP3/13003 since the repair at 2026-11-29T10:30:00Z"}, 2},
	{"repair with rights still missing", repair_rights_missing, HOST_AFFECTED,
	 {"CORP\\exsvc lacks SeTcbPrivilege, SeRestorePrivilege",
	  "4 x MSExchangePOP3/13003 since the repair at 2026-11-29T10:30:00Z"}, 2},
	{"repair to an account that is gone", repair_account_missing, HOST_AFFECTED,
	 {"CORP\\gone no longer exists",
	  "4 x MSExchangePOP3/13003 since the repair at 2026-11-29T10:30:00Z"}, 2},
	{"repaired, nothing since", repaired, HOST_REPAIRED,
	 {"repaired at 2026-11-29T10:30:00Z; no problem since",
	  "all 6 Exchange services running; CORP\\exsvc holds every required right"}, 2},
	{"repaired but never affected", repaired_never_affected, HOST_HEALTHY,
	 {"all 6 Exchange services running; CORP\\exsvc holds every required right"}, 1},
	{"DC, a non-Exchange service stopped", non_exchange_stopped, HOST_HEALTHY,
	 {"all 6 Exchange services running; CORP\\exsvc holds every required right"}, 1},
	{"member server, MTA stopped, IMC paused", member_mta_stopped, HOST_DEGRADED,
	 {"MSExchangeMTA is stopped", "MSExchangeIMC is paused"}, 2},
	{"no snapshot yet", no_snapshot, HOST_DEGRADED, {"no host state received yet"}, 1},
	{"no snapshot, auth events", no_snapshot_auth, HOST_DEGRADED,
	 {"no host state received yet", "2 x MSExchangePOP3/13003 in the last 7 days"}, 2},
	{"DC without IMC and ES", optional_not_installed, HOST_HEALTHY,
	 {"all 4 Exchange services running; CORP\\exsvc holds every required right"}, 1},
	{"member server, rights unreadable", rights_unreadable, HOST_HEALTHY,
	 {"all 6 Exchange services running",
	  "rights of CORP\\exsvc could not be read: 5 Access is denied."}, 2},
	{"DC, two service accounts", two_accounts, HOST_HEALTHY,
	 {"all 6 Exchange services running; their 2 accounts hold every required right"}, 1},
	{"evidence at the cap", eight_lines, HOST_AFFECTED,
	 {"MSExchangeSA stopped: 1069 The service did not start due to a logon failure. "
	  "(since 2026-11-29T10:02:11Z)",
	  "MSExchangeES is start pending",
	  "2 x MSExchangePOP3/13003 since promotion at 2026-11-29T10:01:58Z",
	  "CORP\\exsvc lacks SeTcbPrivilege, SeRestorePrivilege"}, 8},
	{"evidence past the cap", nine_lines, HOST_AFFECTED,
	 {"MSExchangeSA stopped: 1069 The service did not start due to a logon failure. "
	  "(since 2026-11-29T10:02:11Z)",
	  "2 x MSExchangePOP3/13003 since promotion at 2026-11-29T10:01:58Z", "... and 2 more"}, 8},
	{"duplicates give one line", duplicates, HOST_AFFECTED,
	 {"MSExchangeIS stopped: 1069 The service did not start due to a logon failure. "
	  "(since 2026-11-29T10:02:11Z)",
	  "3 x MSExchangePOP3/13003 since promotion at 2026-11-29T10:01:58Z",
	  "CORP\\exsvc lacks SeTcbPrivilege, SeRestorePrivilege"}, 3},
};

static void classify(struct fixture *f, void (*setup)(struct fixture *))
{
	memset(f, 0, sizeof(*f));
	status_rules_default(&f->rules);
	f->in.now_ms = NOW;
	f->in.events = f->events;
	setup(f);
	status_classify(&f->rules, &f->in, &f->res);
}

static int has_line(const struct status_result *r, const char *line)
{
	for (size_t i = 0; i < r->n_evidence; i++)
		if (strcmp(r->evidence[i], line) == 0)
			return 1;
	return 0;
}

static void print_result(const struct status_result *r)
{
	print_message("status %s\n", host_status_name(r->status));
	for (size_t i = 0; i < r->n_evidence; i++)
		print_message("  [%zu] %s\n", i, r->evidence[i]);
}

static void run_case(void **state)
{
	const struct status_case *c = *state;
	classify(&fx, c->setup);
	const struct status_result *r = &fx.res;
	if (r->status != c->want || (c->n_evidence && r->n_evidence != c->n_evidence))
		print_result(r);
	assert_string_equal(host_status_name(r->status), host_status_name(c->want));
	if (c->n_evidence)
		assert_int_equal(r->n_evidence, c->n_evidence);
	assert_true(r->n_evidence >= 1); /* every status says why */
	for (size_t i = 0; i < 4 && c->evidence[i]; i++) {
		if (!has_line(r, c->evidence[i])) {
			print_result(r);
			print_message("missing: %s\n", c->evidence[i]);
		}
		assert_true(has_line(r, c->evidence[i]));
	}
	for (size_t i = 0; i < r->n_evidence; i++) {
		assert_true(strlen(r->evidence[i]) <= 255);
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(r->evidence[i], r->evidence[j]);
	}
}

/* ---- beyond the table ---- */

static void test_cap_keeps_order(void **state)
{
	classify(&fx, nine_lines);
	/* Seven lines shown as they came, then the count of the other two. */
	assert_int_equal(fx.res.n_evidence, STATUS_EVIDENCE_MAX);
	assert_string_equal(fx.res.evidence[0],
			    "MSExchangeSA stopped: 1069 The service did not start due to a logon "
			    "failure. (since 2026-11-29T10:02:11Z)");
	assert_string_equal(fx.res.evidence[1],
			    "MSExchangeIS stopped: 1314 A required privilege is not held by the "
			    "client. (since 2026-11-29T10:02:11Z)");
	assert_string_equal(fx.res.evidence[3],
			    "2 x MSExchangePOP3/13003 since promotion at 2026-11-29T10:01:58Z");
	assert_string_equal(fx.res.evidence[4],
			    "1 x MSExchangeIMAP4/13003 since promotion at 2026-11-29T10:01:58Z");
	assert_string_equal(fx.res.evidence[5],
			    "CORP\\exsvc lacks SeTcbPrivilege, SeRestorePrivilege");
	assert_string_equal(fx.res.evidence[6],
			    "MSExchangeDS stopped: 1068 The dependency service or group failed to "
			    "start. (since 2026-11-29T10:02:11Z)");
	assert_string_equal(fx.res.evidence[7], "... and 2 more");
}

/* A host with many watched services on one local account (rules for a
 * site's own connectors): the list shortens, what it says stays. */
static void test_long_service_list(void **state)
{
	static char svc_names[12][40];
	static const char *watch[12];
	memset(&fx, 0, sizeof(fx));
	status_rules_default(&fx.rules);
	host(&fx, MEMBER, ".\\exsvc");
	fx.snap.n_services = 0;
	for (size_t i = 0; i < 12; i++) {
		snprintf(svc_names[i], sizeof(svc_names[i]), "MSExchangeConnector%02zu", i);
		watch[i] = svc_names[i];
		Exfleet__Service *s = add_service(&fx, svc_names[i], "");
		s->logon_account = ".\\exsvc";
		s->account_status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_EXISTS;
		s->account_rights = every_right;
		s->n_account_rights = 3;
	}
	fx.rules.services = watch;
	fx.rules.n_services = 12;
	fx.in.now_ms = NOW;
	status_classify(&fx.rules, &fx.in, &fx.res);
	assert_int_equal(fx.res.status, HOST_AT_RISK);
	assert_int_equal(fx.res.n_evidence, 1);
	assert_string_equal(fx.res.evidence[0],
			    "MSExchangeConnector00, MSExchangeConnector01, MSExchangeConnector02, "
			    "MSExchangeConnector03, MSExchangeConnector04, MSExchangeConnector05, "
			    "MSExchangeConnector06 and 5 more log on as local account .\\exsvc: "
			    "promotion will delete it");
}

/* Lines longer than 255 characters end in "..." after a whole word. */
static void test_long_line_cut_at_word(void **state)
{
	static char right_names[20][40];
	static const char *rights[20];
	for (size_t i = 0; i < 20; i++) {
		snprintf(right_names[i], sizeof(right_names[i]), "SeSiteSpecificPrivilege%02zu", i);
		rights[i] = right_names[i];
	}
	memset(&fx, 0, sizeof(fx));
	status_rules_default(&fx.rules);
	fx.rules.rights = rights;
	fx.rules.n_rights = 20;
	fx.in.now_ms = NOW;
	host(&fx, MEMBER, "CORP\\exsvc");
	status_classify(&fx.rules, &fx.in, &fx.res);
	assert_int_equal(fx.res.status, HOST_AT_RISK);
	assert_int_equal(fx.res.n_evidence, 1);
	const char *line = fx.res.evidence[0];
	size_t n = strlen(line);
	assert_true(n <= 255 && n > 200);
	assert_memory_equal(line, "CORP\\exsvc lacks SeSiteSpecificPrivilege00, ", 44);
	assert_string_equal(line + n - 3, "...");
	/* What precedes "..." is a whole right's name. */
	const char *last = strrchr(line, ' ');
	assert_non_null(last);
	char tail[64];
	snprintf(tail, sizeof(tail), "%.*s", (int)(line + n - 3 - (last + 1)), last + 1);
	int whole = 0;
	for (size_t i = 0; i < 20; i++)
		whole |= strcmp(tail, right_names[i]) == 0;
	assert_true(whole);
}

/* A single word too long to cut at a space is cut, and marked. */
static void test_long_word_cut(void **state)
{
	static char account[400];
	memset(&fx, 0, sizeof(fx));
	status_rules_default(&fx.rules);
	fx.in.now_ms = NOW;
	memcpy(account, "CORP\\", 5);
	memset(account + 5, 'x', 300);
	host(&fx, MEMBER, account);
	fx.svc[SA].account_rights = logon_right_only;
	fx.svc[SA].n_account_rights = 1;
	status_classify(&fx.rules, &fx.in, &fx.res);
	assert_int_equal(fx.res.status, HOST_AT_RISK);
	assert_int_equal(strlen(fx.res.evidence[0]), 255);
	assert_string_equal(fx.res.evidence[0] + 252, "...");
}

/* One service name longer than a list may be still names the service. */
static void test_long_service_name(void **state)
{
	static char name[201];
	static const char *watch[1] = {name};
	memset(name, 'S', 200);
	memset(&fx, 0, sizeof(fx));
	status_rules_default(&fx.rules);
	fx.rules.services = watch;
	fx.rules.n_services = 1;
	fx.in.now_ms = NOW;
	host(&fx, MEMBER, "CORP\\exsvc");
	fx.snap.n_services = 0;
	stop(&fx, add_service(&fx, name, "") - fx.svc, 0);
	status_classify(&fx.rules, &fx.in, &fx.res);
	assert_int_equal(fx.res.status, HOST_DEGRADED);
	assert_memory_equal(fx.res.evidence[0], name, 200);
	assert_string_equal(fx.res.evidence[0] + 200, " is stopped");
}

static void test_connectivity(void **state)
{
	const uint64_t hb = 30000;
	assert_int_equal(connectivity_of(0, 0, NOW, hb), CONN_NEVER_SEEN);
	assert_int_equal(connectivity_of(0, 1, NOW, hb), CONN_NEVER_SEEN);
	assert_int_equal(connectivity_of(NOW - 1000, 1, NOW, hb), CONN_ONLINE);
	assert_int_equal(connectivity_of(NOW - 3 * 30000, 1, NOW, hb), CONN_ONLINE);
	assert_int_equal(connectivity_of(NOW - 3 * 30000 - 1, 1, NOW, hb), CONN_OFFLINE);
	/* A closed session is offline however recent its last frame. */
	assert_int_equal(connectivity_of(NOW, 0, NOW, hb), CONN_OFFLINE);
	/* Traffic stamped ahead of the collector's clock. */
	assert_int_equal(connectivity_of(NOW + 5000, 1, NOW, hb), CONN_ONLINE);
	assert_int_equal(connectivity_of(NOW - 1000000, 1, NOW, 0), CONN_ONLINE);
	assert_int_equal(connectivity_of(1, 1, INT64_MAX, UINT64_MAX), CONN_ONLINE);
	assert_int_equal(connectivity_of(INT64_MIN + 1, 1, INT64_MAX, hb), CONN_OFFLINE);
}

static void test_names(void **state)
{
	static const char *want[] = {"HEALTHY",  "REPAIRED",           "DEGRADED", "AT_RISK",
				     "AFFECTED", "NEEDS_SP_REINSTALL", "REPAIRING"};
	for (int s = HOST_HEALTHY; s <= HOST_REPAIRING; s++) {
		assert_string_equal(host_status_name((enum host_status)s), want[s]);
		assert_int_equal(host_status_parse(want[s]), s);
	}
	assert_int_equal(host_status_parse("needs_sp_reinstall"), HOST_NEEDS_SP_REINSTALL);
	assert_int_equal(host_status_parse("At_Risk"), HOST_AT_RISK);
	assert_int_equal(host_status_parse("AT RISK"), -1);
	assert_int_equal(host_status_parse("HEALTHYX"), -1);
	assert_int_equal(host_status_parse(""), -1);
	assert_int_equal(host_status_parse(NULL), -1);
	assert_string_equal(host_status_name((enum host_status)99), "UNKNOWN");
	assert_string_equal(connectivity_name(CONN_ONLINE), "ONLINE");
	assert_string_equal(connectivity_name(CONN_OFFLINE), "OFFLINE");
	assert_string_equal(connectivity_name(CONN_NEVER_SEEN), "NEVER_SEEN");
	assert_string_equal(connectivity_name((enum connectivity)7), "UNKNOWN");
}

static void test_default_rules(void **state)
{
	struct status_rules r;
	status_rules_default(&r);
	assert_int_equal(r.n_services, 6);
	assert_string_equal(r.services[0], "MSExchangeSA");
	assert_string_equal(r.services[5], "MSExchangeES");
	assert_int_equal(r.n_auth, 2);
	assert_string_equal(r.auth[1].source, "MSExchangeIMAP4");
	assert_int_equal(r.auth[1].event_id, 13003);
	assert_int_equal(r.n_rights, 3);
	assert_int_equal(r.retention_ms, WEEK_MS);
}

int main(void)
{
	enum { N_CASES = sizeof(cases) / sizeof(cases[0]) };
	struct CMUnitTest tests[N_CASES + 8];
	for (size_t i = 0; i < N_CASES; i++)
		tests[i] = (struct CMUnitTest){.name = cases[i].name,
					       .test_func = run_case,
					       .initial_state = (void *)&cases[i]};
	tests[N_CASES] = (struct CMUnitTest)cmocka_unit_test(test_cap_keeps_order);
	tests[N_CASES + 1] = (struct CMUnitTest)cmocka_unit_test(test_long_service_list);
	tests[N_CASES + 2] = (struct CMUnitTest)cmocka_unit_test(test_long_line_cut_at_word);
	tests[N_CASES + 3] = (struct CMUnitTest)cmocka_unit_test(test_long_word_cut);
	tests[N_CASES + 4] = (struct CMUnitTest)cmocka_unit_test(test_connectivity);
	tests[N_CASES + 5] = (struct CMUnitTest)cmocka_unit_test(test_names);
	tests[N_CASES + 6] = (struct CMUnitTest)cmocka_unit_test(test_default_rules);
	tests[N_CASES + 7] = (struct CMUnitTest)cmocka_unit_test(test_long_service_name);
	return _cmocka_run_group_tests("status", tests, N_CASES + 8, NULL, NULL);
}
