/* The "win32" probe backend: the host read and changed through the Windows
 * APIs that exist from Windows 2000 on (LsaLookupNames2: XP/2003 on).
 *
 * Reading (read_host): the domain role (DsRoleGetPrimaryDomainInformation),
 * every Win32 service (EnumServicesStatusEx, QueryServiceConfig), the rights
 * of each service's logon account (LSA), the Exchange build (registry). When
 * the services cannot be read it serves the last good state and says so.
 * When the role differs from the one last seen, the change time is now; the
 * pair is kept in a small state file in the agent's state directory (the
 * spool directory), so a restart does not forget or invent a promotion.
 *
 * Events (read_events): the classic event log (OpenEventLog, ReadEventLog) of
 * the System and Application logs, merged oldest first. The cursor names, per
 * log, the last record delivered and its TimeGenerated:
 *   "System:1234:1700000000,Application:567:1700000100"
 * Record numbers only grow until a log is cleared, and a full log overwrites
 * its oldest records. So on resuming: a record number above the newest means
 * the log was cleared; a record whose time differs means the log was cleared
 * and has grown past it again; below the oldest means records were
 * overwritten before they were read. All three resume from the oldest record
 * and say so. The first start reads from the oldest record, like "sim".
 * Insertion strings are always sent; the message text when the source's
 * EventMessageFile can be loaded and formats the event, else "".
 *
 * Watching: a thread waits for NotifyChangeEventLog's events and wakes the
 * loop with uv_async_send (libuv has no public way to wait for a Windows
 * event object on the loop itself); a rescan timer catches everything else
 * (services have no change notification before Vista).
 *
 * Actions do what they say and then read back what they changed: an API that
 * reports success without effect (Wine's LsaAddAccountRights, say) gives a
 * failed result naming what was observed. Passwords are converted to UTF-16
 * in buffers that are wiped after use and never logged. */
#include "probe.h"

#include <dsrole.h>
#include <ntsecapi.h>
#include <winsvc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "log.h"
#include "util.h"

#define RESCAN_MS_DEFAULT 10000
#define STATE_FILE "probe-win32.state"
#define NT_OBJECT_NAME_NOT_FOUND ((NTSTATUS)0xC0000034L)
#define NT_NONE_MAPPED ((NTSTATUS)0xC0000073L)
#define NT_SOME_NOT_MAPPED ((NTSTATUS)0x00000107L)
#define EVENT_BUF_MIN (64 * 1024)
#define EVENT_BUF_MAX (1024 * 1024)
#define MSGFILE_CACHE 32
#define MESSAGE_ARGS 100
#define INSTALLER_WAIT_MS (2u * 60 * 60 * 1000)
/* Reported when an API claimed success and the read-back shows otherwise. */
#define WIN32_NOT_VERIFIED WIN32_INVALID_DATA

static const wchar_t *const log_names[] = {L"System", L"Application"};
#define NLOGS (sizeof(log_names) / sizeof(log_names[0]))

struct evlog {
	const wchar_t *name;
	char name_utf8[16];
	HANDLE h;               /* read handle, NULL until opened */
	HANDLE notify_h;        /* a second handle that NotifyChangeEventLog watches */
	HANDLE changed;         /* auto-reset event it signals */
	uint32_t last;          /* cursor: last record delivered; 0: none yet */
	uint32_t last_time;     /* its TimeGenerated */
	int trusted;            /* last/last_time were set here, not parsed */
	uint8_t *buf;           /* records read ahead of the cursor */
	DWORD cap, len, off;
	uint32_t buf_after;     /* buf+off holds the record after this number */
};

struct msgfile {
	wchar_t key[300];       /* "Log\Source\kind" */
	HMODULE mods[4];
	int n;
};

struct probe {
	uv_loop_t *loop;
	uint64_t rescan_ms;
	char *state_path;       /* NULL: the role change time is kept in memory only */
	SC_HANDLE scm;

	int role;               /* Exfleet__DomainRole last seen; 0 none */
	int64_t role_changed_at_ms;

	uint8_t *last_good;     /* the last snapshot read whole, packed */
	size_t last_good_len;
	int64_t last_good_ms;

	struct evlog logs[NLOGS];
	struct msgfile msgfiles[MSGFILE_CACHE];
	size_t n_msgfiles;

	uv_timer_t rescan;
	uv_async_t notify;
	int handles;            /* initialised, not yet closed */
	int watching;
	HANDLE stop_waiter;
	uv_thread_t waiter;
	int waiter_running;
	void (*changed_cb)(void *arg);
	void *changed_arg;
	void (*done_cb)(void *arg);
	void *done_arg;
};

/* ---- strings --------------------------------------------------------------- */

/* UTF-16 to a malloc'd UTF-8 string: n units, or up to the NUL when n < 0. */
static char *utf8_n(const wchar_t *w, int n)
{
	if (!w)
		w = L"";
	if (n < 0)
		n = (int)wcslen(w);
	int len = n ? WideCharToMultiByte(CP_UTF8, 0, w, n, NULL, 0, NULL, NULL) : 0;
	if (len < 0)
		len = 0;
	char *s = malloc((size_t)len + 1);
	if (!s)
		return NULL;
	if (len > 0)
		WideCharToMultiByte(CP_UTF8, 0, w, n, s, len, NULL, NULL);
	s[len] = '\0';
	return s;
}

static char *utf8(const wchar_t *w)
{
	return utf8_n(w, -1);
}

/* UTF-8 to a malloc'd UTF-16 string; NULL on invalid UTF-8 or no memory. */
static wchar_t *wide(const char *s)
{
	int len = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s ? s : "", -1, NULL, 0);
	if (len <= 0)
		return NULL;
	wchar_t *w = malloc((size_t)len * sizeof(wchar_t));
	if (w && MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s ? s : "", -1, w, len) != len) {
		free(w);
		return NULL;
	}
	return w;
}

/* For buffers that held a password. */
static void wide_wipe_free(wchar_t *w)
{
	if (!w)
		return;
	SecureZeroMemory(w, wcslen(w) * sizeof(wchar_t));
	free(w);
}

/* The text Windows gives for code, in the agent's words where it has them. */
static const char *error_text(uint32_t code, char *buf, size_t len)
{
	const char *known = winerr_text(code);
	if (strncmp(known, "Win32 error ", 12) != 0)
		return known;
	wchar_t *w = NULL;
	DWORD n = FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_ALLOCATE_BUFFER |
					 FORMAT_MESSAGE_IGNORE_INSERTS,
				 NULL, code, 0, (LPWSTR)&w, 0, NULL);
	if (n == 0 || !w) {
		snprintf(buf, len, "Win32 error %u", code);
		return buf;
	}
	while (n > 0 && (w[n - 1] == L'\r' || w[n - 1] == L'\n' || w[n - 1] == L' '))
		w[--n] = 0;
	char *s = utf8(w);
	LocalFree(w);
	snprintf(buf, len, "%s", s ? s : "");
	free(s);
	return buf;
}

static void result_error(struct probe_result *r, uint32_t code, const char *subject)
{
	char text[200];
	probe_result_set(r, code, "%s: %s", subject, error_text(code, text, sizeof(text)));
}

static int strings_push(char ***v, size_t *n, char *s)
{
	if (!s)
		return UV_ENOMEM;
	char **grown = realloc(*v, (*n + 1) * sizeof(char *));
	if (!grown) {
		free(s);
		return UV_ENOMEM;
	}
	*v = grown;
	(*v)[(*n)++] = s;
	return 0;
}

static void strings_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* ---- accounts and rights (LSA) ----------------------------------------- */

static int builtin_account(const char *account)
{
	return !account || !*account || _stricmp(account, "LocalSystem") == 0 ||
	       _strnicmp(account, "NT AUTHORITY\\", 13) == 0;
}

/* The name LSA understands: ".\name" is this computer's "COMPUTER\name". */
static wchar_t *lsa_name(const char *account)
{
	if (account[0] == '.' && account[1] == '\\') {
		wchar_t computer[MAX_COMPUTERNAME_LENGTH + 1];
		DWORD len = MAX_COMPUTERNAME_LENGTH + 1;
		wchar_t *rest = wide(account + 1);
		if (!rest || !GetComputerNameW(computer, &len)) {
			free(rest);
			return wide(account);
		}
		size_t total = len + wcslen(rest) + 1;
		wchar_t *w = malloc(total * sizeof(wchar_t));
		if (w)
			swprintf(w, total, L"%ls%ls", computer, rest);
		free(rest);
		return w;
	}
	return wide(account);
}

static void lsa_string(LSA_UNICODE_STRING *us, const wchar_t *w)
{
	size_t len = wcslen(w);
	if (len > 32766)
		len = 32766;
	us->Buffer = (PWSTR)w;
	us->Length = (USHORT)(len * sizeof(wchar_t));
	us->MaximumLength = (USHORT)((len + 1) * sizeof(wchar_t));
}

static uint32_t lsa_open(DWORD access, LSA_HANDLE *policy)
{
	LSA_OBJECT_ATTRIBUTES attrs;
	memset(&attrs, 0, sizeof(attrs));
	NTSTATUS st = LsaOpenPolicy(NULL, &attrs, access, policy);
	return st ? LsaNtStatusToWinError(st) : 0;
}

/* The account's SID (LocalFree'd by the caller), or WIN32_NONE_MAPPED. */
static uint32_t lsa_lookup(LSA_HANDLE policy, const char *account, PSID *sid)
{
	*sid = NULL;
	wchar_t *name = lsa_name(account);
	if (!name)
		return WIN32_NONE_MAPPED;
	LSA_UNICODE_STRING us;
	lsa_string(&us, name);
	PLSA_REFERENCED_DOMAIN_LIST domains = NULL;
	PLSA_TRANSLATED_SID2 sids = NULL;
	NTSTATUS st = LsaLookupNames2(policy, 0, 1, &us, &domains, &sids);
	uint32_t code = 0;
	if (st == NT_NONE_MAPPED || st == NT_SOME_NOT_MAPPED)
		code = WIN32_NONE_MAPPED;
	else if (st)
		code = LsaNtStatusToWinError(st);
	else if (!sids || !sids[0].Sid || sids[0].Use == SidTypeUnknown ||
		 sids[0].Use == SidTypeInvalid)
		code = WIN32_NONE_MAPPED;
	if (code == 0) {
		DWORD len = GetLengthSid(sids[0].Sid);
		*sid = LocalAlloc(LMEM_FIXED, len);
		if (!*sid || !CopySid(len, *sid, sids[0].Sid))
			code = WIN32_NOT_ENOUGH_MEMORY;
	}
	if (domains)
		LsaFreeMemory(domains);
	if (sids)
		LsaFreeMemory(sids);
	free(name);
	return code;
}

/* The rights held by sid; none is no error (STATUS_OBJECT_NAME_NOT_FOUND). */
static uint32_t lsa_rights(LSA_HANDLE policy, PSID sid, char ***rights, size_t *n)
{
	PLSA_UNICODE_STRING list = NULL;
	ULONG count = 0;
	*rights = NULL;
	*n = 0;
	NTSTATUS st = LsaEnumerateAccountRights(policy, sid, &list, &count);
	if (st == NT_OBJECT_NAME_NOT_FOUND)
		return 0;
	if (st)
		return LsaNtStatusToWinError(st);
	uint32_t code = 0;
	for (ULONG i = 0; i < count && code == 0; i++)
		if (strings_push(rights, n, utf8_n(list[i].Buffer, list[i].Length / 2)) < 0)
			code = WIN32_NOT_ENOUGH_MEMORY;
	LsaFreeMemory(list);
	if (code) {
		strings_free(*rights, *n);
		*rights = NULL;
		*n = 0;
	}
	return code;
}

/* What read_host learns about one logon account, looked up once per read. */
struct account_info {
	char *name;
	Exfleet__AccountStatus status;
	char **rights;
	size_t n_rights;
	uint32_t rights_error;
};

static void account_info_read(LSA_HANDLE policy, uint32_t policy_error, struct account_info *a)
{
	if (builtin_account(a->name)) {
		a->status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_BUILTIN;
		return;
	}
	if (policy_error) {
		a->status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_UNKNOWN;
		a->rights_error = policy_error;
		return;
	}
	PSID sid;
	uint32_t code = lsa_lookup(policy, a->name, &sid);
	if (code == WIN32_NONE_MAPPED) {
		a->status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_MISSING;
		a->rights_error = code; /* no SID, no rights to read */
		return;
	}
	if (code) {
		a->status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_UNKNOWN;
		a->rights_error = code;
		return;
	}
	a->status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_EXISTS;
	a->rights_error = lsa_rights(policy, sid, &a->rights, &a->n_rights);
	LocalFree(sid);
}

/* ---- services ------------------------------------------------------------ */

/* EnumServicesStatusEx with its buffer sized by the first call; services
 * added between two calls make it ask again (ERROR_MORE_DATA). */
static uint32_t enum_services(SC_HANDLE scm, ENUM_SERVICE_STATUS_PROCESSW **out, DWORD *count)
{
	BYTE *buf = NULL;
	DWORD size = 0;
	*out = NULL;
	*count = 0;
	for (int attempt = 0; attempt < 8; attempt++) {
		DWORD needed = 0, resume = 0;
		if (EnumServicesStatusExW(scm, SC_ENUM_PROCESS_INFO, SERVICE_WIN32, SERVICE_STATE_ALL,
					  buf, size, &needed, count, &resume, NULL)) {
			*out = (ENUM_SERVICE_STATUS_PROCESSW *)buf;
			return 0;
		}
		DWORD code = GetLastError();
		if (code != ERROR_MORE_DATA) {
			free(buf);
			return code;
		}
		/* Room for what it asked, and for a few services more. */
		size = size + needed + 4096;
		BYTE *grown = realloc(buf, size);
		if (!grown) {
			free(buf);
			return ERROR_NOT_ENOUGH_MEMORY;
		}
		buf = grown;
	}
	free(buf);
	return ERROR_MORE_DATA;
}

/* QueryServiceConfigW into a malloc'd buffer of the size it asks for. */
static uint32_t query_config(SC_HANDLE svc, QUERY_SERVICE_CONFIGW **out)
{
	DWORD size = 0, needed = 0;
	QUERY_SERVICE_CONFIGW *cfg = NULL;
	*out = NULL;
	for (int attempt = 0; attempt < 4; attempt++) {
		if (QueryServiceConfigW(svc, cfg, size, &needed)) {
			*out = cfg;
			return 0;
		}
		DWORD code = GetLastError();
		if (code != ERROR_INSUFFICIENT_BUFFER) {
			free(cfg);
			return code;
		}
		size = needed;
		void *grown = realloc(cfg, size);
		if (!grown) {
			free(cfg);
			return ERROR_NOT_ENOUGH_MEMORY;
		}
		cfg = grown;
	}
	free(cfg);
	return ERROR_INSUFFICIENT_BUFFER;
}

static uint32_t query_status(SC_HANDLE svc, SERVICE_STATUS_PROCESS *st)
{
	DWORD needed;
	return QueryServiceStatusEx(svc, SC_STATUS_PROCESS_INFO, (BYTE *)st, sizeof(*st), &needed)
		       ? 0
		       : GetLastError();
}

static const char *state_name(DWORD state)
{
	static const char *const names[] = {"unknown",	"stopped",	    "start pending",
					    "stop pending", "running",	    "continue pending",
					    "pause pending", "paused"};
	return state < sizeof(names) / sizeof(names[0]) ? names[state] : "unknown";
}

static int dependencies_wire(const wchar_t *multi, Exfleet__Service *w)
{
	for (const wchar_t *d = multi; d && *d; d += wcslen(d) + 1) {
		if (strings_push(&w->dependencies, &w->n_dependencies, utf8(d)) < 0)
			return UV_ENOMEM;
	}
	return 0;
}

static struct account_info *account_find(struct account_info **accounts, size_t *n,
					 const char *name, LSA_HANDLE policy, uint32_t policy_error)
{
	for (size_t i = 0; i < *n; i++)
		if (_stricmp((*accounts)[i].name, name) == 0)
			return &(*accounts)[i];
	struct account_info *grown = realloc(*accounts, (*n + 1) * sizeof(**accounts));
	if (!grown)
		return NULL;
	*accounts = grown;
	struct account_info *a = &grown[*n];
	memset(a, 0, sizeof(*a));
	if (!(a->name = strdup(name)))
		return NULL;
	(*n)++;
	account_info_read(policy, policy_error, a);
	return a;
}

static int copy_strings(char **from, size_t n, char ***to, size_t *nto)
{
	for (size_t i = 0; i < n; i++)
		if (strings_push(to, nto, strdup(from[i])) < 0)
			return UV_ENOMEM;
	return 0;
}

/* Every Win32 service into snap, with its configuration and its account. */
static int services_read(struct probe *p, Exfleet__Snapshot *snap, char *err, size_t errlen)
{
	ENUM_SERVICE_STATUS_PROCESSW *list;
	DWORD count;
	char text[200];
	uint32_t code = enum_services(p->scm, &list, &count);
	if (code) {
		snprintf(err, errlen, "EnumServicesStatusEx: %s", error_text(code, text, sizeof(text)));
		return UV_EIO;
	}
	LSA_HANDLE policy = NULL;
	uint32_t policy_error = lsa_open(POLICY_LOOKUP_NAMES, &policy);
	struct account_info *accounts = NULL;
	size_t n_accounts = 0;
	int rc = 0;
	if (count && !(snap->services = calloc(count, sizeof(*snap->services))))
		rc = UV_ENOMEM;
	for (DWORD i = 0; rc == 0 && i < count; i++) {
		const ENUM_SERVICE_STATUS_PROCESSW *e = &list[i];
		Exfleet__Service *w = malloc(sizeof(*w));
		if (!w) {
			rc = UV_ENOMEM;
			break;
		}
		exfleet__service__init(w);
		snap->services[snap->n_services++] = w;
		w->name = utf8(e->lpServiceName);
		w->display_name = utf8(e->lpDisplayName);
		if (!w->name || !w->display_name) {
			rc = UV_ENOMEM;
			break;
		}
		w->state = (Exfleet__ServiceState)e->ServiceStatusProcess.dwCurrentState;
		w->win32_exit_code = e->ServiceStatusProcess.dwWin32ExitCode;
		w->service_exit_code = e->ServiceStatusProcess.dwServiceSpecificExitCode;

		/* A service deleted since the enumeration is reported without
		 * its configuration. */
		SC_HANDLE svc = OpenServiceW(p->scm, e->lpServiceName, SERVICE_QUERY_CONFIG);
		QUERY_SERVICE_CONFIGW *cfg = NULL;
		if (svc) {
			query_config(svc, &cfg);
			CloseServiceHandle(svc);
		}
		const char *logon = "";
		char *logon_owned = NULL;
		int have_config = cfg != NULL;
		if (cfg) {
			w->start_type = (Exfleet__StartType)(cfg->dwStartType + 1);
			logon = logon_owned = utf8(cfg->lpServiceStartName);
			if (!logon_owned || dependencies_wire(cfg->lpDependencies, w) < 0)
				rc = UV_ENOMEM;
			free(cfg);
		}
		if (rc == 0 && !(w->logon_account = strdup(logon ? logon : "")))
			rc = UV_ENOMEM;
		if (rc == 0 && have_config) {
			struct account_info *a =
				account_find(&accounts, &n_accounts, w->logon_account, policy, policy_error);
			if (!a) {
				rc = UV_ENOMEM;
			} else {
				w->account_status = a->status;
				w->rights_error = a->rights_error;
				rc = copy_strings(a->rights, a->n_rights, &w->account_rights,
						  &w->n_account_rights);
			}
		}
		free(logon_owned);
	}
	for (size_t i = 0; i < n_accounts; i++) {
		free(accounts[i].name);
		strings_free(accounts[i].rights, accounts[i].n_rights);
	}
	free(accounts);
	if (policy)
		LsaClose(policy);
	free(list);
	if (rc < 0)
		snprintf(err, errlen, "reading the services: out of memory");
	return rc;
}

/* ---- role, computer, Exchange ------------------------------------------- */

static int role_state_load(struct probe *p)
{
	if (!p->state_path)
		return 0;
	char *text = NULL, err[256];
	size_t len;
	if (util_read_file(p->state_path, 4096, &text, &len, err, sizeof(err)) < 0)
		return 0; /* first start: nothing known */
	int role;
	long long changed;
	if (sscanf(text, "role %d changed_at_ms %lld", &role, &changed) == 2 && role >= 0 &&
	    role <= EXFLEET__DOMAIN_ROLE__ROLE_PRIMARY_DC) {
		p->role = role;
		p->role_changed_at_ms = changed;
	} else {
		log_warn("probe win32: %s is not 'role N changed_at_ms T': the domain role's change "
			 "time starts unknown",
			 p->state_path);
	}
	free(text);
	return 0;
}

static void role_state_save(struct probe *p)
{
	if (!p->state_path)
		return;
	char text[96], err[300];
	int len = snprintf(text, sizeof(text), "role %d changed_at_ms %lld\n", p->role,
			   (long long)p->role_changed_at_ms);
	if (util_write_file_atomic(p->state_path, text, (size_t)len, 0600, err, sizeof(err)) < 0)
		log_warn("probe win32: %s", err);
}

static int role_read(struct probe *p, Exfleet__Snapshot *snap, char *err, size_t errlen)
{
	DSROLE_PRIMARY_DOMAIN_INFO_BASIC *info = NULL;
	DWORD code = DsRoleGetPrimaryDomainInformation(NULL, DsRolePrimaryDomainInfoBasic,
						       (PBYTE *)&info);
	if (code != ERROR_SUCCESS || !info) {
		char text[200];
		/* Reported, and the rest of the host read all the same. */
		snprintf(err, errlen, "DsRoleGetPrimaryDomainInformation: %s; domain role unknown",
			 error_text(code, text, sizeof(text)));
		snap->domain = strdup("");
		return snap->domain ? 0 : UV_ENOMEM;
	}
	int role = (int)info->MachineRole + 1;
	snap->role = (Exfleet__DomainRole)role;
	snap->domain = utf8(info->DomainNameFlat ? info->DomainNameFlat : info->DomainNameDns);
	DsRoleFreeMemory(info);
	if (!snap->domain)
		return UV_ENOMEM;
	/* DCs keep no SAM: their local accounts went with dcpromo. */
	snap->sam_present = role < EXFLEET__DOMAIN_ROLE__ROLE_BACKUP_DC;
	if (role != p->role) {
		if (p->role != 0) {
			log_info("probe win32: domain role changed from %d to %d", p->role, role);
			p->role_changed_at_ms = util_now_ms();
		}
		p->role = role;
		role_state_save(p);
	}
	snap->role_changed_at_ms = p->role_changed_at_ms;
	return 0;
}

/* Exchange 5.5 service packs by build, as Microsoft lists them: 5.5.1960
 * RTM, 2232 SP1, 2448 SP2, 2650 SP3, 2653 SP4 (the simulated hosts of
 * agent/sim_host.c use the same: 2650 is SP3). */
static uint32_t exchange55_sp(DWORD build)
{
	static const struct {
		DWORD build;
		uint32_t sp;
	} builds[] = {{2653, 4}, {2650, 3}, {2448, 2}, {2232, 1}, {1960, 0}};
	for (size_t i = 0; i < sizeof(builds) / sizeof(builds[0]); i++)
		if (build >= builds[i].build)
			return builds[i].sp;
	return 0;
}

static int exchange_read(Exfleet__Snapshot *snap)
{
	HKEY key;
	DWORD build = 0, size = sizeof(build), type = 0;
	char version[32] = "";
	if (RegOpenKeyExW(HKEY_LOCAL_MACHINE, L"SOFTWARE\\Microsoft\\Exchange\\Setup", 0, KEY_READ,
			  &key) == ERROR_SUCCESS) {
		if (RegQueryValueExW(key, L"NewestBuild", NULL, &type, (BYTE *)&build, &size) ==
			    ERROR_SUCCESS &&
		    type == REG_DWORD && build) {
			/* 5.5 builds are below 4000; 2000 (6.0) below 6900; 2003 (6.5) above. */
			snprintf(version, sizeof(version), "%s.%lu",
				 build < 4000 ? "5.5" : build < 6900 ? "6.0" : "6.5", (unsigned long)build);
			if (build < 4000)
				snap->exchange_service_pack = exchange55_sp(build);
		}
		RegCloseKey(key);
	}
	snap->exchange_version = strdup(version);
	return snap->exchange_version ? 0 : UV_ENOMEM;
}

static int computer_read(Exfleet__Snapshot *snap)
{
	wchar_t name[MAX_COMPUTERNAME_LENGTH + 1];
	DWORD len = MAX_COMPUTERNAME_LENGTH + 1;
	snap->computer_name = GetComputerNameW(name, &len) ? utf8(name) : strdup("");
	return snap->computer_name ? 0 : UV_ENOMEM;
}

/* ---- read_host ------------------------------------------------------------ */

static int serve_last_good(struct probe *p, Exfleet__Snapshot **out, const char *why, char *err,
			   size_t errlen)
{
	if (!p->last_good) {
		snprintf(err, errlen, "%s", why);
		return UV_EIO;
	}
	*out = exfleet__snapshot__unpack(NULL, p->last_good_len, p->last_good);
	if (!*out) {
		snprintf(err, errlen, "%s; out of memory for the last good state", why);
		return UV_ENOMEM;
	}
	char when[32];
	util_format_time(p->last_good_ms, when, sizeof(when));
	snprintf(err, errlen, "%s; serving the last good state, read at %s", why, when);
	return 0;
}

static int win_read_host(struct probe *p, Exfleet__Snapshot **out, char *err, size_t errlen)
{
	char why[300] = "", role_note[300] = "";
	*out = NULL;
	err[0] = '\0';
	Exfleet__Snapshot *snap = malloc(sizeof(*snap));
	if (!snap) {
		snprintf(err, errlen, "probe win32: out of memory");
		return UV_ENOMEM;
	}
	exfleet__snapshot__init(snap);
	int rc = computer_read(snap);
	if (rc == 0)
		rc = role_read(p, snap, role_note, sizeof(role_note));
	if (rc == 0)
		rc = exchange_read(snap);
	if (rc == 0)
		rc = services_read(p, snap, why, sizeof(why));
	if (rc < 0) {
		exfleet__snapshot__free_unpacked(snap, NULL);
		return serve_last_good(p, out, why[0] ? why : "out of memory", err, errlen);
	}
	size_t len = exfleet__snapshot__get_packed_size(snap);
	uint8_t *packed = malloc(len ? len : 1);
	if (packed) {
		exfleet__snapshot__pack(snap, packed);
		free(p->last_good);
		p->last_good = packed;
		p->last_good_len = len;
		p->last_good_ms = util_now_ms();
	}
	snprintf(err, errlen, "%s", role_note);
	*out = snap;
	return 0;
}

/* ---- the event log --------------------------------------------------------- */

static void evlog_reset(struct evlog *l)
{
	l->len = l->off = 0;
	l->buf_after = 0;
}

static void evlog_close(struct evlog *l)
{
	if (l->h)
		CloseEventLog(l->h);
	l->h = NULL;
	evlog_reset(l);
}

/* Parses "Log:last:time,..." into the logs; returns 0, or -1 when the text
 * is not a cursor (then every log starts from its oldest record). */
static int cursor_parse(struct probe *p, const char *cursor)
{
	uint32_t last[NLOGS] = {0}, time[NLOGS] = {0};
	int bad = 0;
	for (const char *s = cursor; *s && !bad;) {
		const char *comma = strchr(s, ',');
		size_t n = comma ? (size_t)(comma - s) : strlen(s);
		char item[64], name[32];
		unsigned long a, b;
		if (n >= sizeof(item)) {
			bad = 1;
			break;
		}
		memcpy(item, s, n);
		item[n] = '\0';
		if (sscanf(item, "%31[^:]:%lu:%lu", name, &a, &b) != 3) {
			bad = 1;
			break;
		}
		for (size_t i = 0; i < NLOGS; i++)
			if (strcmp(name, p->logs[i].name_utf8) == 0) {
				last[i] = (uint32_t)a;
				time[i] = (uint32_t)b;
			}
		s += n + (comma ? 1 : 0);
	}
	for (size_t i = 0; i < NLOGS; i++) {
		struct evlog *l = &p->logs[i];
		uint32_t want_last = bad ? 0 : last[i], want_time = bad ? 0 : time[i];
		if (l->last == want_last && l->last_time == want_time)
			continue; /* where this process left it */
		/* A restart, or records the caller did not keep: check the
		 * position against the log before resuming from it. */
		l->last = want_last;
		l->last_time = want_time;
		l->trusted = 0;
		evlog_reset(l);
	}
	return bad ? -1 : 0;
}

static void cursor_format(const struct probe *p, char *cursor, size_t len)
{
	size_t used = 0;
	cursor[0] = '\0';
	for (size_t i = 0; i < NLOGS && used < len; i++)
		used += (size_t)snprintf(cursor + used, len - used, "%s%s:%lu:%lu", i ? "," : "",
					 p->logs[i].name_utf8, (unsigned long)p->logs[i].last,
					 (unsigned long)p->logs[i].last_time);
}

/* Reads records forward from record number start into l->buf. */
static DWORD evlog_fill(struct evlog *l, uint32_t start)
{
	for (;;) {
		DWORD read = 0, needed = 0;
		if (ReadEventLogW(l->h, EVENTLOG_SEEK_READ | EVENTLOG_FORWARDS_READ, start, l->buf,
				  l->cap, &read, &needed)) {
			l->len = read;
			l->off = 0;
			return 0;
		}
		DWORD code = GetLastError();
		if (code != ERROR_INSUFFICIENT_BUFFER || needed > EVENT_BUF_MAX)
			return code;
		uint8_t *grown = realloc(l->buf, needed);
		if (!grown)
			return ERROR_NOT_ENOUGH_MEMORY;
		l->buf = grown;
		l->cap = needed;
	}
}

static int record_ok(const EVENTLOGRECORD *r, DWORD avail)
{
	return avail >= sizeof(EVENTLOGRECORD) && r->Length >= sizeof(EVENTLOGRECORD) &&
	       r->Length <= avail;
}

/* The next record after l->last, or NULL when there is none (or on an error,
 * in note). Opens the log, checks the cursor against the log's bounds, and
 * reads ahead. */
static const EVENTLOGRECORD *evlog_peek(struct evlog *l, char *note, size_t notelen)
{
	if (l->len > l->off && l->buf_after == l->last && l->trusted) {
		const EVENTLOGRECORD *r = (const EVENTLOGRECORD *)(l->buf + l->off);
		if (record_ok(r, l->len - l->off))
			return r;
	}
	evlog_reset(l);
	for (int attempt = 0; attempt < 2; attempt++) {
		if (!l->h && !(l->h = OpenEventLogW(NULL, l->name))) {
			snprintf(note, notelen, "OpenEventLog(%s): Win32 error %lu", l->name_utf8,
				 (unsigned long)GetLastError());
			return NULL;
		}
		DWORD oldest = 0, count = 0;
		if (!GetOldestEventLogRecord(l->h, &oldest) ||
		    !GetNumberOfEventLogRecords(l->h, &count)) {
			DWORD code = GetLastError();
			evlog_close(l);
			if (attempt == 0 && code == ERROR_EVENTLOG_FILE_CHANGED)
				continue;
			snprintf(note, notelen, "%s log: cannot read its bounds: Win32 error %lu",
				 l->name_utf8, (unsigned long)code);
			return NULL;
		}
		if (count == 0)
			return NULL; /* empty; a cleared log is noticed when it grows */
		uint32_t newest = oldest + count - 1;
		uint32_t start;
		int verify = 0;
		if (l->last == 0) {
			start = oldest;
		} else if (l->trusted && l->last == newest) {
			return NULL; /* nothing new: the usual case */
		} else if (l->last > newest) {
			snprintf(note, notelen,
				 "%s log: record %lu is past the newest (%lu): the log was cleared; "
				 "reading from its oldest record",
				 l->name_utf8, (unsigned long)l->last, (unsigned long)newest);
			start = oldest;
			l->last = l->last_time = 0;
		} else if (l->last + 1 < oldest) {
			snprintf(note, notelen,
				 "%s log: records %lu to %lu were overwritten before they were read",
				 l->name_utf8, (unsigned long)l->last + 1, (unsigned long)oldest - 1);
			start = oldest;
		} else if (l->last < oldest) {
			start = oldest; /* the log wrapped exactly past our position */
		} else if (l->trusted) {
			start = l->last + 1;
		} else {
			start = l->last; /* read it again to check it is the same record */
			verify = 1;
		}
		DWORD code = evlog_fill(l, start);
		if (code == ERROR_EVENTLOG_FILE_CHANGED && attempt == 0) {
			evlog_close(l);
			l->trusted = 0;
			continue;
		}
		if (code == ERROR_HANDLE_EOF)
			return NULL;
		if (code) {
			snprintf(note, notelen, "%s log: ReadEventLog at record %lu: Win32 error %lu",
				 l->name_utf8, (unsigned long)start, (unsigned long)code);
			return NULL;
		}
		const EVENTLOGRECORD *r = (const EVENTLOGRECORD *)l->buf;
		if (!record_ok(r, l->len))
			return NULL;
		if (verify) {
			if (r->RecordNumber != l->last ||
			    (l->last_time && r->TimeGenerated != l->last_time)) {
				snprintf(note, notelen,
					 "%s log: record %lu is not the one last read: the log was "
					 "cleared; reading from its oldest record",
					 l->name_utf8, (unsigned long)l->last);
				l->last = l->last_time = 0;
				l->trusted = 1;
				evlog_reset(l);
				code = evlog_fill(l, oldest);
				if (code || !record_ok((const EVENTLOGRECORD *)l->buf, l->len))
					return NULL;
				l->buf_after = 0;
				return (const EVENTLOGRECORD *)l->buf;
			}
			l->off = r->Length; /* the record already delivered */
			l->trusted = 1;
			l->buf_after = l->last;
			if (l->off >= l->len)
				return evlog_peek(l, note, notelen);
			r = (const EVENTLOGRECORD *)(l->buf + l->off);
			return record_ok(r, l->len - l->off) ? r : NULL;
		}
		l->trusted = 1;
		l->buf_after = l->last;
		return r;
	}
	return NULL;
}

/* ---- message files -------------------------------------------------------- */

static struct msgfile *msgfile_get(struct probe *p, const wchar_t *log, const wchar_t *source,
				   const wchar_t *value)
{
	wchar_t key[300];
	swprintf(key, sizeof(key) / sizeof(key[0]), L"%ls\\%ls\\%ls", log, source, value);
	for (size_t i = 0; i < p->n_msgfiles; i++)
		if (wcscmp(p->msgfiles[i].key, key) == 0)
			return &p->msgfiles[i];
	struct msgfile *m;
	if (p->n_msgfiles == MSGFILE_CACHE) {
		/* Full: the oldest entry goes. */
		m = &p->msgfiles[0];
		for (int k = 0; k < m->n; k++)
			FreeLibrary(m->mods[k]);
		memmove(&p->msgfiles[0], &p->msgfiles[1], (MSGFILE_CACHE - 1) * sizeof(*m));
		p->n_msgfiles--;
	}
	m = &p->msgfiles[p->n_msgfiles++];
	memset(m, 0, sizeof(*m));
	wcscpy(m->key, key);

	wchar_t path[400];
	swprintf(path, sizeof(path) / sizeof(path[0]),
		 L"SYSTEM\\CurrentControlSet\\Services\\EventLog\\%ls\\%ls", log, source);
	HKEY hk;
	if (RegOpenKeyExW(HKEY_LOCAL_MACHINE, path, 0, KEY_READ, &hk) != ERROR_SUCCESS)
		return m;
	wchar_t raw[1024], expanded[2048];
	DWORD size = sizeof(raw) - sizeof(wchar_t), type = 0;
	LONG rc = RegQueryValueExW(hk, value, NULL, &type, (BYTE *)raw, &size);
	RegCloseKey(hk);
	if (rc != ERROR_SUCCESS || (type != REG_SZ && type != REG_EXPAND_SZ))
		return m;
	raw[size / sizeof(wchar_t)] = 0;
	DWORD n = ExpandEnvironmentStringsW(raw, expanded, sizeof(expanded) / sizeof(expanded[0]));
	if (n == 0 || n > sizeof(expanded) / sizeof(expanded[0]))
		return m;
	/* One or more files, separated by ';'. */
	for (wchar_t *file = expanded; *file && m->n < 4;) {
		wchar_t *semi = wcschr(file, L';');
		if (semi)
			*semi = 0;
		HMODULE mod = *file ? LoadLibraryExW(file, NULL, LOAD_LIBRARY_AS_DATAFILE) : NULL;
		if (mod)
			m->mods[m->n++] = mod;
		if (!semi)
			break;
		file = semi + 1;
	}
	return m;
}

/* Replaces each "%%N" (a parameter, e.g. the 1069 in SCM's events) with the
 * system's text for N, as Event Viewer does. */
static char *expand_parameters(char *text)
{
	if (!strstr(text, "%%"))
		return text;
	size_t cap = strlen(text) + 1024;
	char *out = malloc(cap);
	if (!out)
		return text;
	size_t used = 0;
	for (const char *s = text; *s && used + 1 < cap;) {
		if (s[0] == '%' && s[1] == '%' && s[2] >= '0' && s[2] <= '9') {
			char *end;
			unsigned long code = strtoul(s + 2, &end, 10);
			char buf[200];
			const char *t = error_text((uint32_t)code, buf, sizeof(buf));
			int w = snprintf(out + used, cap - used, "%s", t);
			used += (size_t)w < cap - used ? (size_t)w : cap - used - 1;
			s = end;
		} else {
			out[used++] = *s++;
		}
	}
	out[used] = '\0';
	free(text);
	return out;
}

/* The message for id from the source's message files, or "" when none of
 * them has it. */
static char *format_message(struct probe *p, const wchar_t *log, const wchar_t *source,
			    const wchar_t *value, DWORD id, const wchar_t **strings, size_t nstrings,
			    int with_inserts)
{
	struct msgfile *m = msgfile_get(p, log, source, value);
	/* Messages may name more inserts than the record has: the rest are "". */
	DWORD_PTR args[MESSAGE_ARGS];
	for (size_t i = 0; i < MESSAGE_ARGS; i++)
		args[i] = (DWORD_PTR)(i < nstrings ? strings[i] : L"");
	for (int k = 0; k < m->n; k++) {
		wchar_t *w = NULL;
		DWORD flags = FORMAT_MESSAGE_FROM_HMODULE | FORMAT_MESSAGE_ALLOCATE_BUFFER |
			      (with_inserts ? FORMAT_MESSAGE_ARGUMENT_ARRAY
					    : FORMAT_MESSAGE_IGNORE_INSERTS);
		DWORD n = FormatMessageW(flags, m->mods[k], id, 0, (LPWSTR)&w, 0,
					 with_inserts ? (va_list *)args : NULL);
		if (n == 0 || !w)
			continue;
		while (n > 0 && (w[n - 1] == L'\r' || w[n - 1] == L'\n' || w[n - 1] == L' '))
			w[--n] = 0;
		char *s = utf8(w);
		LocalFree(w);
		return s ? expand_parameters(s) : NULL;
	}
	return strdup("");
}

/* One record in the wire form, or NULL when out of memory. */
static Exfleet__Event *event_wire(struct probe *p, const struct evlog *l, const EVENTLOGRECORD *r)
{
	Exfleet__Event *e = malloc(sizeof(*e));
	if (!e)
		return NULL;
	exfleet__event__init(e);
	const wchar_t *end = (const wchar_t *)((const BYTE *)r + r->Length);
	const wchar_t *source = (const wchar_t *)(r + 1);
	const wchar_t *computer = source + wcsnlen(source, (size_t)(end - source)) + 1;
	if (computer >= end)
		computer = L"";
	const wchar_t *strings[MESSAGE_ARGS];
	size_t nstrings = 0;
	if (r->StringOffset >= sizeof(*r) && r->StringOffset < r->Length) {
		const wchar_t *s = (const wchar_t *)((const BYTE *)r + r->StringOffset);
		for (WORD i = 0; i < r->NumStrings && s < end && nstrings < MESSAGE_ARGS; i++) {
			strings[nstrings++] = s;
			s += wcsnlen(s, (size_t)(end - s)) + 1;
		}
	}
	e->record_number = r->RecordNumber;
	e->log = strdup(l->name_utf8);
	e->source = utf8(source);
	e->computer = utf8(computer);
	e->event_id = r->EventID & 0xFFFF;
	e->type = (Exfleet__EventType)r->EventType;
	e->category = r->EventCategory;
	e->time_generated_ms = (int64_t)r->TimeGenerated * 1000;
	e->message = format_message(p, l->name, source, L"EventMessageFile", r->EventID, strings,
				    nstrings, 1);
	e->category_name = r->EventCategory ? format_message(p, l->name, source,
							      L"CategoryMessageFile",
							      r->EventCategory, NULL, 0, 0)
					    : strdup("");
	int ok = e->log && e->source && e->computer && e->message && e->category_name;
	for (size_t i = 0; ok && i < nstrings; i++)
		ok = strings_push(&e->insertion_strings, &e->n_insertion_strings,
				  utf8_n(strings[i], (int)wcsnlen(strings[i],
								  (size_t)(end - strings[i])))) == 0;
	if (!ok) {
		exfleet__event__free_unpacked(e, NULL);
		return NULL;
	}
	return e;
}

static int win_read_events(struct probe *p, char *cursor, size_t cursor_len, size_t max,
			   Exfleet__Event ***events, size_t *n, char *err, size_t errlen)
{
	*events = NULL;
	*n = 0;
	err[0] = '\0';
	if (cursor_len < NLOGS * 40)
		return UV_EINVAL;
	if (cursor_parse(p, cursor) < 0)
		snprintf(err, errlen, "event cursor '%.48s' is not LOG:RECORD:TIME,...; reading every "
				      "log from its oldest record",
			 cursor);
	Exfleet__Event **out = NULL;
	size_t count = 0;
	int rc = 0;
	while (count < max) {
		const EVENTLOGRECORD *next = NULL;
		struct evlog *from = NULL;
		for (size_t i = 0; i < NLOGS; i++) {
			char note[300] = "";
			const EVENTLOGRECORD *r = evlog_peek(&p->logs[i], note, sizeof(note));
			if (note[0] && !err[0])
				snprintf(err, errlen, "%s", note);
			if (r && (!next || r->TimeGenerated < next->TimeGenerated)) {
				next = r;
				from = &p->logs[i];
			}
		}
		if (!next)
			break;
		Exfleet__Event **grown = realloc(out, (count + 1) * sizeof(*out));
		Exfleet__Event *e = grown ? event_wire(p, from, next) : NULL;
		if (grown)
			out = grown;
		if (!e) {
			rc = UV_ENOMEM;
			break;
		}
		out[count++] = e;
		from->last = next->RecordNumber;
		from->last_time = next->TimeGenerated;
		from->off += next->Length;
		from->buf_after = from->last;
	}
	if (rc < 0) {
		for (size_t i = 0; i < count; i++)
			exfleet__event__free_unpacked(out[i], NULL);
		free(out);
		snprintf(err, errlen, "reading the event log: out of memory");
		return rc;
	}
	cursor_format(p, cursor, cursor_len);
	*events = out;
	*n = count;
	return 0;
}

/* ---- open, close, watch ------------------------------------------------- */

static void probe_free(struct probe *p)
{
	for (size_t i = 0; i < NLOGS; i++) {
		struct evlog *l = &p->logs[i];
		evlog_close(l);
		if (l->notify_h)
			CloseEventLog(l->notify_h);
		if (l->changed)
			CloseHandle(l->changed);
		free(l->buf);
	}
	for (size_t i = 0; i < p->n_msgfiles; i++)
		for (int k = 0; k < p->msgfiles[i].n; k++)
			FreeLibrary(p->msgfiles[i].mods[k]);
	if (p->stop_waiter)
		CloseHandle(p->stop_waiter);
	if (p->scm)
		CloseServiceHandle(p->scm);
	free(p->last_good);
	free(p->state_path);
	free(p);
}

static int win_open(struct probe **out, uv_loop_t *loop, const struct probe_settings *s, char *err,
		    size_t errlen)
{
	*out = NULL;
	struct probe *p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, errlen, "probe win32: out of memory");
		return UV_ENOMEM;
	}
	p->loop = loop;
	p->rescan_ms = s && s->rescan_ms ? s->rescan_ms : RESCAN_MS_DEFAULT;
	if (s && s->state_dir && *s->state_dir) {
		size_t len = strlen(s->state_dir) + sizeof(STATE_FILE) + 2;
		if (!(p->state_path = malloc(len))) {
			probe_free(p);
			snprintf(err, errlen, "probe win32: out of memory");
			return UV_ENOMEM;
		}
		snprintf(p->state_path, len, "%s\\%s", s->state_dir, STATE_FILE);
	}
	p->scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_CONNECT | SC_MANAGER_ENUMERATE_SERVICE);
	if (!p->scm) {
		char text[200];
		snprintf(err, errlen, "probe win32: OpenSCManager: %s",
			 error_text(GetLastError(), text, sizeof(text)));
		probe_free(p);
		return UV_EACCES;
	}
	for (size_t i = 0; i < NLOGS; i++) {
		struct evlog *l = &p->logs[i];
		l->name = log_names[i];
		WideCharToMultiByte(CP_UTF8, 0, l->name, -1, l->name_utf8, sizeof(l->name_utf8), NULL,
				    NULL);
		l->cap = EVENT_BUF_MIN;
		if (!(l->buf = malloc(l->cap))) {
			probe_free(p);
			snprintf(err, errlen, "probe win32: out of memory");
			return UV_ENOMEM;
		}
	}
	role_state_load(p);
	if (loop) {
		uv_timer_init(loop, &p->rescan);
		p->rescan.data = p;
		p->handles = 1;
	}
	*out = p;
	return 0;
}

static void handle_closed_cb(uv_handle_t *handle)
{
	struct probe *p = handle->data;
	if (--p->handles > 0)
		return;
	void (*done_cb)(void *) = p->done_cb;
	void *arg = p->done_arg;
	probe_free(p);
	if (done_cb)
		done_cb(arg);
}

static void win_close(struct probe *p, void (*done_cb)(void *arg), void *arg)
{
	if (p->waiter_running) {
		SetEvent(p->stop_waiter);
		uv_thread_join(&p->waiter);
		p->waiter_running = 0;
	}
	if (p->handles == 0) {
		probe_free(p);
		if (done_cb)
			done_cb(arg);
		return;
	}
	p->done_cb = done_cb;
	p->done_arg = arg;
	p->changed_cb = NULL;
	uv_close((uv_handle_t *)&p->rescan, handle_closed_cb);
	if (p->handles == 2)
		uv_close((uv_handle_t *)&p->notify, handle_closed_cb);
}

static void rescan_cb(uv_timer_t *timer)
{
	struct probe *p = timer->data;
	if (p->changed_cb)
		p->changed_cb(p->changed_arg);
}

static void notify_cb(uv_async_t *async)
{
	struct probe *p = async->data;
	if (p->changed_cb)
		p->changed_cb(p->changed_arg);
}

/* The waiter thread: wakes the loop when a log gets a record. */
static void waiter_main(void *arg)
{
	struct probe *p = arg;
	HANDLE waits[NLOGS + 1];
	DWORD n = 0;
	waits[n++] = p->stop_waiter;
	for (size_t i = 0; i < NLOGS; i++)
		if (p->logs[i].changed)
			waits[n++] = p->logs[i].changed;
	for (;;) {
		DWORD w = WaitForMultipleObjects(n, waits, FALSE, INFINITE);
		if (w == WAIT_OBJECT_0 || w == WAIT_FAILED)
			return;
		uv_async_send(&p->notify);
	}
}

static int win_watch(struct probe *p, void (*changed_cb)(void *arg), void *arg)
{
	if (!p->loop || p->handles == 0)
		return UV_EINVAL;
	p->changed_cb = changed_cb;
	p->changed_arg = arg;
	if (p->watching)
		return 0;
	p->watching = 1;
	uv_timer_start(&p->rescan, rescan_cb, p->rescan_ms, p->rescan_ms);

	int notifying = 0;
	for (size_t i = 0; i < NLOGS; i++) {
		struct evlog *l = &p->logs[i];
		l->changed = CreateEventW(NULL, FALSE, FALSE, NULL);
		l->notify_h = OpenEventLogW(NULL, l->name);
		if (l->changed && l->notify_h && NotifyChangeEventLog(l->notify_h, l->changed)) {
			notifying++;
			continue;
		}
		if (l->changed)
			CloseHandle(l->changed);
		if (l->notify_h)
			CloseEventLog(l->notify_h);
		l->changed = l->notify_h = NULL;
	}
	if (notifying == 0 || !(p->stop_waiter = CreateEventW(NULL, TRUE, FALSE, NULL))) {
		log_warn("probe win32: no event-log change notification: rescanning every %.1f s",
			 (double)p->rescan_ms / 1000);
		return 0;
	}
	uv_async_init(p->loop, &p->notify, notify_cb);
	p->notify.data = p;
	p->handles = 2;
	if (uv_thread_create(&p->waiter, waiter_main, p) == 0)
		p->waiter_running = 1;
	else
		log_warn("probe win32: cannot start the event-log waiter: rescanning every %.1f s",
			 (double)p->rescan_ms / 1000);
	return 0;
}

/* ---- actions ---------------------------------------------------------------- */

static SC_HANDLE service_open(struct probe *p, const char *service, DWORD access,
			      struct probe_result *r)
{
	wchar_t *name = wide(service);
	if (!name) {
		probe_result_set(r, WIN32_SERVICE_DOES_NOT_EXIST, "%s: not a valid service name",
				 service);
		return NULL;
	}
	SC_HANDLE h = OpenServiceW(p->scm, name, access);
	free(name);
	if (!h)
		result_error(r, GetLastError(), service);
	return h;
}

/* Two spellings of one account: "name", ".\name" and "COMPUTER\name" are the
 * same local account; the rest compare without case. */
static int account_same(const char *a, const char *b)
{
	if (_stricmp(a, b) == 0)
		return 1;
	wchar_t computer_w[MAX_COMPUTERNAME_LENGTH + 1];
	DWORD len = MAX_COMPUTERNAME_LENGTH + 1;
	char *computer = GetComputerNameW(computer_w, &len) ? utf8(computer_w) : NULL;
	const char *na = strchr(a, '\\') ? strchr(a, '\\') + 1 : a;
	const char *nb = strchr(b, '\\') ? strchr(b, '\\') + 1 : b;
	int local_a = na == a || (na - a == 2 && a[0] == '.') ||
		      (computer && (size_t)(na - a - 1) == strlen(computer) &&
		       _strnicmp(a, computer, strlen(computer)) == 0);
	int local_b = nb == b || (nb - b == 2 && b[0] == '.') ||
		      (computer && (size_t)(nb - b - 1) == strlen(computer) &&
		       _strnicmp(b, computer, strlen(computer)) == 0);
	free(computer);
	return local_a && local_b && _stricmp(na, nb) == 0;
}

static int win_set_service_credentials(struct probe *p, const char *service, const char *account,
				       const char *password, struct probe_result *r)
{
	SC_HANDLE svc = service_open(p, service, SERVICE_CHANGE_CONFIG | SERVICE_QUERY_CONFIG, r);
	if (!svc)
		return 0;
	wchar_t *account_w = wide(account);
	wchar_t *password_w = wide(password ? password : "");
	if (!account_w || !password_w) {
		probe_result_set(r, WIN32_INVALID_DATA, "%s: account or password is not valid UTF-8",
				 service);
		goto out;
	}
	if (!ChangeServiceConfigW(svc, SERVICE_NO_CHANGE, SERVICE_NO_CHANGE, SERVICE_NO_CHANGE, NULL,
				  NULL, NULL, NULL, account_w, password_w, NULL)) {
		result_error(r, GetLastError(), service);
		goto out;
	}
	/* Read back: the account can be checked; the password cannot (that is
	 * what verify_credentials is for). */
	QUERY_SERVICE_CONFIGW *cfg;
	uint32_t code = query_config(svc, &cfg);
	if (code) {
		char text[200];
		probe_result_set(r, code, "%s: changed, but reading it back failed: %s", service,
				 error_text(code, text, sizeof(text)));
		goto out;
	}
	char *now = utf8(cfg->lpServiceStartName);
	free(cfg);
	if (!now)
		probe_result_set(r, WIN32_NOT_ENOUGH_MEMORY, NULL);
	else if (!account_same(now, account))
		probe_result_set(r, WIN32_NOT_VERIFIED,
				 "%s: ChangeServiceConfig reported success but the service logs on "
				 "as '%s', not '%s'",
				 service, now, account);
	else
		probe_result_set(r, 0, "%s: logs on as %s (password set, not readable back)",
				 service, now);
	free(now);
out:
	wide_wipe_free(password_w);
	free(account_w);
	CloseServiceHandle(svc);
	return 0;
}

static int has_right(char **rights, size_t n, const char *right)
{
	for (size_t i = 0; i < n; i++)
		if (_stricmp(rights[i], right) == 0)
			return 1;
	return 0;
}

static int win_grant_right(struct probe *p, const char *account, const char *right,
			   struct probe_result *r)
{
	LSA_HANDLE policy;
	uint32_t code = lsa_open(POLICY_LOOKUP_NAMES | POLICY_CREATE_ACCOUNT, &policy);
	if (code) {
		result_error(r, code, "LsaOpenPolicy");
		return 0;
	}
	PSID sid = NULL;
	wchar_t *right_w = wide(right);
	char **rights = NULL;
	size_t n = 0;
	if ((code = lsa_lookup(policy, account, &sid))) {
		result_error(r, code, account);
		goto out;
	}
	if (!right_w) {
		probe_result_set(r, WIN32_NO_SUCH_PRIVILEGE, "%s: not a valid right name", right);
		goto out;
	}
	LSA_UNICODE_STRING us;
	lsa_string(&us, right_w);
	NTSTATUS st = LsaAddAccountRights(policy, sid, &us, 1);
	if (st) {
		result_error(r, LsaNtStatusToWinError(st), right);
		goto out;
	}
	code = lsa_rights(policy, sid, &rights, &n);
	if (code) {
		char text[200];
		probe_result_set(r, code, "%s: granted %s, but reading the rights back failed: %s",
				 account, right, error_text(code, text, sizeof(text)));
	} else if (!has_right(rights, n, right)) {
		probe_result_set(r, WIN32_NOT_VERIFIED,
				 "%s: LsaAddAccountRights reported success but %s is not among the "
				 "account's %zu rights read back: not granted",
				 account, right, n);
	} else {
		probe_result_set(r, 0, "%s: holds %s (read back)", account, right);
	}
out:
	strings_free(rights, n);
	free(right_w);
	if (sid)
		LocalFree(sid);
	LsaClose(policy);
	return 0;
}

static int win_account_rights(struct probe *p, const char *account, char ***rights, size_t *n,
			      struct probe_result *r)
{
	*rights = NULL;
	*n = 0;
	LSA_HANDLE policy;
	uint32_t code = lsa_open(POLICY_LOOKUP_NAMES, &policy);
	if (code) {
		result_error(r, code, "LsaOpenPolicy");
		return 0;
	}
	PSID sid;
	if ((code = lsa_lookup(policy, account, &sid)) == 0) {
		code = lsa_rights(policy, sid, rights, n);
		LocalFree(sid);
	}
	LsaClose(policy);
	if (code)
		result_error(r, code, account);
	else
		probe_result_set(r, 0, NULL);
	return 0;
}

/* What the service is doing now, for a result's message. */
static void observe(SC_HANDLE svc, const char *service, const char *did, struct probe_result *r)
{
	SERVICE_STATUS_PROCESS st;
	uint32_t code = query_status(svc, &st);
	if (code)
		probe_result_set(r, 0, "%s: %s; its state could not be read back (Win32 error %u)",
				 service, did, code);
	else
		probe_result_set(r, 0, "%s: %s; now %s", service, did,
				 state_name(st.dwCurrentState));
}

static int win_start_service(struct probe *p, const char *service, struct probe_result *r)
{
	SC_HANDLE svc = service_open(p, service, SERVICE_START | SERVICE_QUERY_STATUS, r);
	if (!svc)
		return 0;
	if (!StartServiceW(svc, 0, NULL))
		result_error(r, GetLastError(), service);
	else
		observe(svc, service, "start requested", r);
	CloseServiceHandle(svc);
	return 0;
}

static int win_stop_service(struct probe *p, const char *service, struct probe_result *r)
{
	SC_HANDLE svc = service_open(p, service, SERVICE_STOP | SERVICE_QUERY_STATUS, r);
	if (!svc)
		return 0;
	SERVICE_STATUS st;
	if (!ControlService(svc, SERVICE_CONTROL_STOP, &st))
		result_error(r, GetLastError(), service);
	else
		observe(svc, service, "stop requested", r);
	CloseServiceHandle(svc);
	return 0;
}

static int win_query_service(struct probe *p, const char *service, int *state,
			     uint32_t *win32_exit_code, struct probe_result *r)
{
	*state = EXFLEET__SERVICE_STATE__SERVICE_STATE_UNKNOWN;
	*win32_exit_code = 0;
	SC_HANDLE svc = service_open(p, service, SERVICE_QUERY_STATUS, r);
	if (!svc)
		return 0;
	SERVICE_STATUS_PROCESS st;
	uint32_t code = query_status(svc, &st);
	if (code) {
		result_error(r, code, service);
	} else {
		*state = (int)st.dwCurrentState;
		*win32_exit_code = st.dwWin32ExitCode;
		probe_result_set(r, 0, NULL);
	}
	CloseServiceHandle(svc);
	return 0;
}

static int win_verify_credentials(struct probe *p, const char *account, const char *password,
				  struct probe_result *r)
{
	/* "DOM\user", ".\user" (this computer) or "user@dns.domain" (no domain). */
	const char *bs = strchr(account, '\\');
	char domain[256] = "";
	if (bs && (size_t)(bs - account) < sizeof(domain)) {
		memcpy(domain, account, (size_t)(bs - account));
		domain[bs - account] = '\0';
	}
	wchar_t *user_w = wide(bs ? bs + 1 : account);
	wchar_t *domain_w = bs ? wide(domain) : NULL;
	wchar_t *password_w = wide(password ? password : "");
	HANDLE token = NULL;
	if (!user_w || !password_w || (bs && !domain_w)) {
		probe_result_set(r, WIN32_INVALID_DATA, "%s: account or password is not valid UTF-8",
				 account);
	} else if (!LogonUserW(user_w, domain_w, password_w, LOGON32_LOGON_SERVICE,
			       LOGON32_PROVIDER_DEFAULT, &token)) {
		result_error(r, GetLastError(), account);
	} else {
		probe_result_set(r, 0, "%s: service logon accepted", account);
		CloseHandle(token);
	}
	wide_wipe_free(password_w);
	free(user_w);
	free(domain_w);
	return 0;
}

static int win_run_installer(struct probe *p, const char *path, const char *args,
			     struct probe_result *r)
{
	if (!path || !*path) {
		probe_result_set(r, WIN32_FILE_NOT_FOUND, "no service-pack installer is configured");
		return 0;
	}
	size_t len = strlen(path) + (args ? strlen(args) : 0) + 4;
	char *line = malloc(len);
	if (!line) {
		probe_result_set(r, WIN32_NOT_ENOUGH_MEMORY, NULL);
		return UV_ENOMEM;
	}
	snprintf(line, len, "\"%s\"%s%s", path, args && *args ? " " : "", args ? args : "");
	wchar_t *line_w = wide(line);
	free(line);
	STARTUPINFOW si;
	PROCESS_INFORMATION pi;
	memset(&si, 0, sizeof(si));
	si.cb = sizeof(si);
	if (!line_w) {
		probe_result_set(r, WIN32_INVALID_DATA, "%s: not valid UTF-8", path);
		return 0;
	}
	/* The seam is synchronous: the loop waits with the installer. */
	if (!CreateProcessW(NULL, line_w, NULL, NULL, FALSE, CREATE_NO_WINDOW, NULL, NULL, &si,
			    &pi)) {
		result_error(r, GetLastError(), path);
		free(line_w);
		return 0;
	}
	free(line_w);
	DWORD w = WaitForSingleObject(pi.hProcess, INSTALLER_WAIT_MS);
	DWORD exit_code = 0;
	if (w != WAIT_OBJECT_0) {
		probe_result_set(r, WAIT_TIMEOUT, "%s: still running after %u minutes; left running",
				 path, INSTALLER_WAIT_MS / 60000);
	} else if (!GetExitCodeProcess(pi.hProcess, &exit_code)) {
		result_error(r, GetLastError(), path);
	} else {
		/* Read back what an installer changes: the Exchange build. */
		Exfleet__Snapshot snap = EXFLEET__SNAPSHOT__INIT;
		exchange_read(&snap);
		const char *version = snap.exchange_version && *snap.exchange_version
					      ? snap.exchange_version
					      : "not found";
		probe_result_set(r, exit_code, "%s: exited with %lu; Exchange build now %s (SP%u)",
				 path, (unsigned long)exit_code, version, snap.exchange_service_pack);
		free(snap.exchange_version);
	}
	CloseHandle(pi.hThread);
	CloseHandle(pi.hProcess);
	return 0;
}

const struct probe_backend probe_win32_backend = {
	.name = "win32",
	.open = win_open,
	.close = win_close,
	.read_host = win_read_host,
	.read_events = win_read_events,
	.watch = win_watch,
	.set_service_credentials = win_set_service_credentials,
	.grant_right = win_grant_right,
	.account_rights = win_account_rights,
	.start_service = win_start_service,
	.stop_service = win_stop_service,
	.query_service = win_query_service,
	.verify_credentials = win_verify_credentials,
	.run_installer = win_run_installer,
};
