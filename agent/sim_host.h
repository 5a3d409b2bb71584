/* A simulated Windows 2000 server running Exchange Server 5.5, kept in one
 * JSON file, and what happens to it in the field (KB Q255269): dcpromo,
 * reboots, POP3/IMAP4 client logons, and the repair actions the agent runs
 * through the probe. The "sim" probe backend (probe_sim.c) and exfleet-sim
 * (sim_cli.c) are built on this module.
 *
 * HOST FILE, schema 1. Every key below is required unless marked optional;
 * unknown keys, duplicate keys and values of the wrong type are errors.
 *
 * {
 *   "schema": 1,
 *   "computer_name": "EXCH001",          NetBIOS name, 1..15 of [A-Za-z0-9_-]
 *   "domain": "CORP",                    NetBIOS domain name, same rule
 *   "role": "member_server",             standalone_server | member_server |
 *                                        backup_dc | primary_dc
 *   "role_changed_at": null,             "2026-11-29T10:02:11Z" (UTC) or null
 *   "local_accounts": [ACCOUNT...],      the SAM; must be [] on a DC
 *   "domain_accounts": [ACCOUNT...],
 *   "services": [SERVICE...],            at most SIM_SERVICES_MAX
 *   "exchange": {"version": "5.5.2650", "service_pack": 3,
 *                "pop3_imap_broken": false},
 *   "event_log": {"next_record_number": 1, "records": [RECORD...]}
 * }
 * ACCOUNT: {"name": "exsvc",                without a domain; unique (case-insensitive)
 *           "password": PASSWORD,
 *           "rights": ["SeServiceLogonRight", ...]}   names from sim_right_names
 * PASSWORD: {"salt": 32 hex digits, "sha256": 64 hex digits}: SHA-256 of the
 *           16 salt bytes followed by the password's bytes. Never clear text.
 * SERVICE: {"name": "MSExchangeSA", "display_name": "...",
 *           "state": stopped | start_pending | stop_pending | running | paused,
 *           "start_type": boot | system | auto | demand | disabled,
 *           "logon_account": "LocalSystem" | ".\\exsvc" | "EXCH001\\exsvc" | "CORP\\exsvc",
 *           "password": PASSWORD or null        optional; the configured password,
 *                                               hashed with its account's salt
 *           "win32_exit_code": 0, "service_exit_code": 0,       optional, 0
 *           "dependencies": ["MSExchangeDS"],   optional; services in this file, no cycles
 *           "required_rights": ["SeTcbPrivilege"]}  optional; see "Starting a service"
 * RECORD:  {"record_number": 1..2^32-1 (increasing, below next_record_number),
 *           "log": System | Application | Security, "source": "...",
 *           "event_id": 13003, "type": error | warning | information |
 *           audit_success | audit_failure, "category": 2, "category_name": "...",
 *           "time": "2026-11-29T10:02:11Z", "insertion_strings": [...] (optional),
 *           "message": "...", "computer": "EXCH001"}
 * Files are written 0600 with two-space indentation; only the newest
 * SIM_EVENTS_KEPT records are kept. Errors name the file and the JSON path:
 *   hosts/EXCH001.json: $.services[2].state: 'runing' is not one of stopped, ...
 *   hosts/EXCH001.json:14:3: JSON syntax error: ...
 *
 * ACCOUNTS. "LocalSystem" and "NT AUTHORITY\name" are builtin: they always
 * exist, hold every right and have no password. ".\name" and
 * "COMPUTER\name" name a SAM account (missing on a DC: dcpromo removed the
 * SAM, and the service still refers to the old account); "DOMAIN\name" a
 * domain account (missing on a standalone server, which is in a workgroup);
 * a bare name is looked up in the SAM, then the domain. Rights are those
 * granted on this server, kept per account. In a snapshot a missing account
 * has account_status ACCOUNT_MISSING, no rights and rights_error 1332 (no
 * SID to read rights for); otherwise rights_error is 0.
 *
 * SERVICES made by sim_host_generate (exfleet-sim create): MSExchangeSA,
 * MSExchangeDS -> SA, MSExchangeIS -> DS, MSExchangeMTA -> DS,
 * MSExchangeIMC -> MTA (on some hosts; IMC -> MTA is this simulator's
 * choice), MSExchangeES -> IS (on most hosts, sometimes as LocalSystem), and
 * W3SVC as LocalSystem. Exchange services require SeTcbPrivilege and
 * SeRestorePrivilege. Stops go in the reverse order.
 *
 * STARTING A SERVICE (one SCM start, as StartService does):
 *   disabled -> 1058. Stopped dependencies are started first; a dependency
 *   that fails gives 1068 and SCM 7001 naming it and its error. Then the
 *   logon (LOGON32_LOGON_SERVICE) for a non-builtin account: account missing
 *   or configured password wrong -> 1326, account without SeServiceLogonRight
 *   -> 1385; each logged as SCM 7038 (that error) and 7000 (%%1069), and the
 *   service stops with win32_exit_code 1069. Then, logged on, a service whose
 *   account lacks one of its required_rights stops at once with 1314 and SCM
 *   7023 (Exchange needs SeTcbPrivilege and SeRestorePrivilege, Q152808).
 *   Otherwise it runs, exit codes 0. Successful starts and stops log nothing.
 *   Transitions are immediate: no service stays start_pending.
 *
 * POP3/IMAP4 LOGONS: refused (nothing logged) while MSExchangeIS is not
 * running; otherwise each fails with an Application error event while
 * exchange.pop3_imap_broken is set or the Information Store's account lacks
 * SeTcbPrivilege: MSExchangePOP3 13003, and, as the configured IMAP4
 * equivalent, MSExchangeIMAP4 13003 (category 2 "Authentication", "A required
 * privilege is not held by the client"). Successful logons log nothing.
 *
 * TIMES are whole seconds (as the file and EVENTLOGRECORD keep them);
 * role_changed_at and event times are the wall clock when they happen.
 *
 * Functions return 0 or a negative libuv error code; the behaviours return a
 * Win32 error code (0 on success). */
#ifndef EXFLEET_SIM_HOST_H
#define EXFLEET_SIM_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "exfleet.pb-c.h"

#define SIM_SCHEMA_VERSION 1
#define SIM_EVENTS_KEPT 5000          /* newest records kept in the file */
#define SIM_FILE_MAX (32u << 20)      /* largest host file read */
#define SIM_SERVICES_MAX 128
#define SIM_ACCOUNTS_MAX 256
#define SIM_SALT_LEN 16
#define SIM_CURSOR_MAX 16             /* longest read_events cursor, with its NUL */

#define SIM_EVENT_POP3_AUTH 13003     /* MSExchangePOP3, Q255269 */
#define SIM_EVENT_IMAP4_AUTH 13003    /* MSExchangeIMAP4: this simulator's choice */
#define SIM_SOURCE_POP3 "MSExchangePOP3"
#define SIM_SOURCE_IMAP4 "MSExchangeIMAP4"
#define SIM_SOURCE_SCM "Service Control Manager"
#define SIM_SOURCE_SETUP "MSExchangeSetup"
#define SIM_EVENT_SETUP_APPLIED 1000  /* MSExchangeSetup: service pack applied */

enum sim_role {
	SIM_ROLE_STANDALONE_SERVER,
	SIM_ROLE_MEMBER_SERVER,
	SIM_ROLE_BACKUP_DC,
	SIM_ROLE_PRIMARY_DC,
};

enum sim_state {
	SIM_STOPPED,
	SIM_START_PENDING,
	SIM_STOP_PENDING,
	SIM_RUNNING,
	SIM_PAUSED,
};

enum sim_start_type {
	SIM_START_BOOT,
	SIM_START_SYSTEM,
	SIM_START_AUTO,
	SIM_START_DEMAND,
	SIM_START_DISABLED,
};

enum sim_event_type {
	SIM_EVENT_ERROR,
	SIM_EVENT_WARNING,
	SIM_EVENT_INFORMATION,
	SIM_EVENT_AUDIT_SUCCESS,
	SIM_EVENT_AUDIT_FAILURE,
};

enum sim_account_status {
	SIM_ACCOUNT_BUILTIN,
	SIM_ACCOUNT_EXISTS,
	SIM_ACCOUNT_MISSING,
};

struct sim_strings {
	char **v;
	size_t n;
};

struct sim_password {
	int set;
	uint8_t salt[SIM_SALT_LEN];
	uint8_t sha256[32];
};

struct sim_account {
	char *name;
	struct sim_password password;
	struct sim_strings rights;
};

struct sim_service {
	char *name;
	char *display_name;
	enum sim_state state;
	enum sim_start_type start_type;
	char *logon_account;
	struct sim_password password;
	uint32_t win32_exit_code;
	uint32_t service_exit_code;
	struct sim_strings dependencies;
	struct sim_strings required_rights;
};

struct sim_event {
	uint32_t record_number;
	char *log;
	char *source;
	uint32_t event_id;
	enum sim_event_type type;
	uint32_t category;
	char *category_name;
	int64_t time_ms;
	struct sim_strings insertion_strings;
	char *message;
	char *computer;
};

struct sim_host {
	char *computer_name;
	char *domain;
	enum sim_role role;
	int64_t role_changed_at_ms;         /* 0: not known */
	struct sim_account *local_accounts;
	size_t n_local_accounts;
	struct sim_account *domain_accounts;
	size_t n_domain_accounts;
	struct sim_service *services;
	size_t n_services;
	char *exchange_version;
	uint32_t exchange_service_pack;
	int pop3_imap_broken;
	struct sim_event *events;           /* oldest first */
	size_t n_events;
	size_t events_cap;
	uint32_t next_record_number;
};

/* Names as written in the file; NULL when out of range. */
const char *sim_role_name(enum sim_role role);
const char *sim_state_name(enum sim_state state);
const char *sim_start_type_name(enum sim_start_type type);
const char *sim_event_type_name(enum sim_event_type type);
/* The Windows 2000 user rights and privileges a file may name, NULL-terminated. */
extern const char *const sim_right_names[];
#define SIM_RIGHT_SERVICE_LOGON "SeServiceLogonRight"
#define SIM_RIGHT_TCB "SeTcbPrivilege"
#define SIM_RIGHT_RESTORE "SeRestorePrivilege"

/* Parses a host document; name is the file name used in error messages.
 * Nothing is read from disk, so a fuzzer can call it. */
int sim_host_load_buffer(const char *name, const char *data, size_t len, struct sim_host **out,
			 char *err, size_t errlen);
int sim_host_load_file(const char *path, struct sim_host **out, char *err, size_t errlen);
/* The document as saved: malloc'd, NUL-terminated, ending in a newline. */
int sim_host_dump(const struct sim_host *h, char **json, size_t *len);
/* Writes path atomically (temporary file, then rename), mode 0600. */
int sim_host_save_file(const struct sim_host *h, const char *path, char *err, size_t errlen);
void sim_host_free(struct sim_host *h);

/* Read-modify-write of path under its advisory lock (path + ".lock", flock):
 * exfleet-sim and the agent's repairs change the same file. fn returns 0 to
 * save the host, 1 to leave the file untouched, or a negative code to fail
 * (the file is not written). The lock is held across load, fn and save. */
typedef int (*sim_edit_fn)(struct sim_host *h, void *arg);
int sim_host_edit(const char *path, sim_edit_fn fn, void *arg, char *err, size_t errlen);

/* Building a host (exfleet-sim create, tests). */
struct sim_host *sim_host_new(const char *computer_name, const char *domain, enum sim_role role);
/* A salted SHA-256 of password: salt from RAND_bytes when salt is NULL. */
int sim_password_hash(struct sim_password *pw, const char *password, const uint8_t *salt);
int sim_password_matches(const struct sim_password *pw, const char *password);
/* Adds a SAM (local != 0) or domain account. salt as for sim_password_hash. */
int sim_host_add_account(struct sim_host *h, int local, const char *name, const char *password,
			 const uint8_t *salt, const char *const *rights, size_t n_rights);
struct sim_service_spec {
	const char *name;
	const char *display_name;
	enum sim_state state;
	enum sim_start_type start_type;
	const char *logon_account;
	const char *password;           /* NULL for a builtin account */
	const char *const *dependencies;
	size_t n_dependencies;
	const char *const *required_rights;
	size_t n_required_rights;
};
/* The password is hashed with the salt of the account it names. */
int sim_host_add_service(struct sim_host *h, const struct sim_service_spec *spec);

/* A generated fleet member: deterministic for (opts, index), so the same
 * seed gives byte-identical host files (salts come from the seed too). */
struct sim_fleet_opts {
	uint64_t seed;
	const char *domain;             /* NetBIOS, e.g. "CORP" */
	double local_account_share;     /* 0..1: hosts whose Exchange account is .\exsvc */
	const char *password;           /* the Exchange service account's password */
};
int sim_host_generate(const struct sim_fleet_opts *o, size_t index, const char *computer_name,
		      struct sim_host **out);

/* splitmix64: small, seedable, the same on every platform. */
struct sim_rng {
	uint64_t state;
};
void sim_rng_seed(struct sim_rng *r, uint64_t seed, uint64_t stream);
uint64_t sim_rng_next(struct sim_rng *r);
/* Uniform in [0, bound), bound > 0. */
uint64_t sim_rng_below(struct sim_rng *r, uint64_t bound);

/* Lookups. sim_host_resolve sets *acct (may be NULL) for an existing account. */
enum sim_account_status sim_host_resolve(const struct sim_host *h, const char *account,
					 struct sim_account **acct);
struct sim_service *sim_host_find_service(const struct sim_host *h, const char *name);
int sim_host_is_dc(const struct sim_host *h);
/* The rights account holds (builtin: every right) as malloc'd strings;
 * returns 1332 for an account that does not exist. */
uint32_t sim_host_account_rights(const struct sim_host *h, const char *account, char ***rights,
				 size_t *n);
void sim_strings_free_array(char **v, size_t n);

/* What happens in the field. */
/* Promotes to primary_dc (backup_dc when backup): role_changed_at = now, the
 * SAM and its accounts go, the security policy is replaced (every domain
 * account loses the rights granted on this host), POP3/IMAP4 break, and the
 * host reboots. UV_EALREADY when it already is a DC. */
int sim_host_dcpromo(struct sim_host *h, int backup);
/* EventLog 6006, every service stopped (dependents first), EventLog 6005,
 * then boot, system and auto services started in dependency order. */
void sim_host_reboot(struct sim_host *h);
struct sim_logon_counts {
	uint64_t ok, failed, refused;
};
void sim_host_logon(struct sim_host *h, uint64_t pop3, uint64_t imap4, struct sim_logon_counts *pop3_out,
		    struct sim_logon_counts *imap4_out);

/* The repair actions, with Windows' error codes. */
uint32_t sim_host_start_service(struct sim_host *h, const char *service);
/* 1060 unknown, 1062 not running, 1051 while a dependent is running. */
uint32_t sim_host_stop_service(struct sim_host *h, const char *service);
/* 1060 unknown service, 1332 unknown account; the password is not checked
 * here (ChangeServiceConfig does not), only at the next start. */
uint32_t sim_host_set_service_credentials(struct sim_host *h, const char *service,
					  const char *account, const char *password);
/* 1332 unknown account, 1326 wrong password, 1385 no SeServiceLogonRight. */
uint32_t sim_host_verify_credentials(const struct sim_host *h, const char *account,
				     const char *password);
/* 1332 unknown account, 1313 unknown right; granting to builtin is a no-op. */
uint32_t sim_host_grant_right(struct sim_host *h, const char *account, const char *right);
/* Reapplies the Exchange service pack: 2 for an empty path; otherwise
 * POP3/IMAP4 work again, the service pack is at least 3, and
 * MSExchangeSetup 1000 is logged. Services and rights are untouched. */
uint32_t sim_host_run_installer(struct sim_host *h, const char *path, const char *args);

/* A service state as the wire gives it (Exfleet__ServiceState). */
Exfleet__ServiceState sim_state_wire(enum sim_state state);

/* The host as the probe reports it (every string malloc'd; free with
 * exfleet__snapshot__free_unpacked(snap, NULL)); sequence and
 * observed_at_ms are left 0. */
int sim_host_snapshot(const struct sim_host *h, Exfleet__Snapshot **out);
/* Records with a record number above the cursor, oldest first, at most max.
 * The cursor is the decimal record number of the last record returned, ""
 * before the first read; it is updated. One numbering covers all logs. When
 * the cursor is beyond the newest number ever assigned, the log was cleared
 * and reading restarts at the oldest record; records trimmed before they
 * were read are skipped. A cursor that is not a number restarts at the
 * oldest record too, with a note in err (err is "" otherwise). */
int sim_host_read_events(const struct sim_host *h, char *cursor, size_t cursor_len, size_t max,
			 Exfleet__Event ***events, size_t *n, char *err, size_t errlen);
void sim_events_free(Exfleet__Event **events, size_t n);

#endif
