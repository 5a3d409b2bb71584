/* The Windows service wrapper around the agent (the commands: winsvc.h).
 *
 * The service runs the same agent_main as the foreground program. The
 * service control manager's STOP (or SHUTDOWN) arrives on the dispatcher's
 * thread: the handler reports STOP_PENDING with a wait hint and calls
 * agent_request_stop, which wakes the agent's loop (uv_async_send); the loop
 * closes the session, syncs the spool and returns, and the service reports
 * STOPPED, well inside the hint. A service has no console: its log lines go
 * to %ProgramData%\exfleet\logs\agent.log, and a failed start or a stop with
 * an error also to the Application event log under the source "exfleet". */
#include <uv.h>

#include <shellapi.h>
#include <shlobj.h>
#include <winsvc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "agent.h"
#include "log.h"
#include "messages.h" /* windows/messages.mc: MSG_EXFLEET_TEXT, "%1" */
#include "winservice.h"

#define SERVICE_NAME L"exfleet"
#define DISPLAY_NAME L"exfleet agent"
#define DESCRIPTION                                                                                \
	L"Watches this Exchange server's services, accounts and event log and reports to the "   \
	L"exfleet collector over mutual TLS."
#define EVENT_SOURCE_KEY L"SYSTEM\\CurrentControlSet\\Services\\EventLog\\Application\\exfleet"
#define START_WAIT_HINT_MS 30000
#define STOP_WAIT_HINT_MS 30000
#define UNINSTALL_STOP_WAIT_MS 60000
#define PATH_UTF8 (MAX_PATH * 3 + 1)

static SERVICE_STATUS_HANDLE status_handle;
static SERVICE_STATUS status;
static CRITICAL_SECTION status_lock;
static char service_config[PATH_UTF8];   /* the --config of "run" */
static char service_log[PATH_UTF8];

static const char usage[] =
	"\n"
	"As a Windows service (run these as an administrator):\n"
	"  exfleet-agent install [--config FILE]   register the 'exfleet' service: LocalSystem,\n"
	"                                          automatic start, restarted on failure; the\n"
	"                                          configuration is checked first\n"
	"  exfleet-agent uninstall                 stop the service and remove it\n"
	"  exfleet-agent run [--config FILE]       what the service control manager starts\n"
	"FILE defaults to %ProgramData%\\exfleet\\agent.ini; the service logs to\n"
	"%ProgramData%\\exfleet\\logs\\agent.log and serious errors to the Application event log.\n";

/* ---- small helpers ---------------------------------------------------------- */

static char *to_utf8(const wchar_t *w)
{
	int len = WideCharToMultiByte(CP_UTF8, 0, w, -1, NULL, 0, NULL, NULL);
	char *s = malloc(len > 0 ? (size_t)len : 1);
	if (!s)
		return NULL;
	if (len <= 0 || !WideCharToMultiByte(CP_UTF8, 0, w, -1, s, len, NULL, NULL))
		s[0] = '\0';
	return s;
}

static wchar_t *to_wide(const char *s)
{
	int len = MultiByteToWideChar(CP_UTF8, 0, s, -1, NULL, 0);
	wchar_t *w = malloc((len > 0 ? (size_t)len : 1) * sizeof(wchar_t));
	if (!w)
		return NULL;
	if (len <= 0 || !MultiByteToWideChar(CP_UTF8, 0, s, -1, w, len))
		w[0] = 0;
	return w;
}

static const char *win_error(DWORD code)
{
	static char text[256];
	wchar_t *w = NULL;
	DWORD n = FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_ALLOCATE_BUFFER |
					 FORMAT_MESSAGE_IGNORE_INSERTS,
				 NULL, code, 0, (LPWSTR)&w, 0, NULL);
	while (n > 0 && (w[n - 1] == L'\r' || w[n - 1] == L'\n' || w[n - 1] == L' '))
		w[--n] = 0;
	char *s = n ? to_utf8(w) : NULL;
	snprintf(text, sizeof(text), "%s (Win32 error %lu)", s && *s ? s : "error",
		 (unsigned long)code);
	free(s);
	if (w)
		LocalFree(w);
	return text;
}

/* %ProgramData%\exfleet\NAME (Windows 2000/XP: All Users\Application Data). */
static int data_path(const char *name, char *out, size_t len)
{
	wchar_t base[MAX_PATH];
	if (SHGetFolderPathW(NULL, CSIDL_COMMON_APPDATA, NULL, SHGFP_TYPE_CURRENT, base) != S_OK)
		return -1;
	char *b = to_utf8(base);
	if (!b)
		return -1;
	int n = snprintf(out, len, "%s\\exfleet%s%s", b, name[0] ? "\\" : "", name);
	free(b);
	return n > 0 && (size_t)n < len ? 0 : -1;
}

static int absolute_path(const char *path, char *out, size_t len)
{
	wchar_t *w = to_wide(path);
	wchar_t full[MAX_PATH * 2];
	DWORD n = w ? GetFullPathNameW(w, MAX_PATH * 2, full, NULL) : 0;
	free(w);
	if (n == 0 || n >= MAX_PATH * 2)
		return -1;
	char *s = to_utf8(full);
	int rc = s && strlen(s) < len ? 0 : -1;
	if (rc == 0)
		snprintf(out, len, "%s", s);
	free(s);
	return rc;
}

/* The --config value in argv[from..], or the default; 0 or -1. */
static int config_arg(int argc, char **argv, int from, char *out, size_t len)
{
	for (int i = from; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			return absolute_path(argv[i + 1], out, len);
		fprintf(stderr, "exfleet-agent: %s: unknown argument '%s'\n", argv[from - 1], argv[i]);
		return -1;
	}
	if (data_path("agent.ini", out, len) < 0) {
		fprintf(stderr, "exfleet-agent: cannot find the ProgramData folder; give --config\n");
		return -1;
	}
	return 0;
}

static void event_log(WORD type, const char *text)
{
	HANDLE src = RegisterEventSourceW(NULL, SERVICE_NAME);
	wchar_t *w = to_wide(text);
	if (src && w) {
		const wchar_t *strings[] = {w};
		ReportEventW(src, type, 0, MSG_EXFLEET_TEXT, NULL, 1, 0, strings, NULL);
	}
	if (src)
		DeregisterEventSource(src);
	free(w);
}

/* ---- the service itself ------------------------------------------------------ */

static void report(DWORD state, DWORD win32_exit, DWORD service_exit, DWORD wait_hint)
{
	EnterCriticalSection(&status_lock);
	status.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
	status.dwCurrentState = state;
	status.dwWin32ExitCode = win32_exit;
	status.dwServiceSpecificExitCode = service_exit;
	status.dwWaitHint = wait_hint;
	status.dwControlsAccepted =
		state == SERVICE_RUNNING ? SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN : 0;
	status.dwCheckPoint = state == SERVICE_START_PENDING || state == SERVICE_STOP_PENDING
				      ? status.dwCheckPoint + 1
				      : 0;
	SetServiceStatus(status_handle, &status);
	LeaveCriticalSection(&status_lock);
}

static DWORD WINAPI control_handler(DWORD control, DWORD type, LPVOID data, LPVOID context)
{
	switch (control) {
	case SERVICE_CONTROL_STOP:
	case SERVICE_CONTROL_SHUTDOWN:
		report(SERVICE_STOP_PENDING, NO_ERROR, 0, STOP_WAIT_HINT_MS);
		agent_request_stop();
		return NO_ERROR;
	case SERVICE_CONTROL_INTERROGATE:
		return NO_ERROR;
	default:
		return ERROR_CALL_NOT_IMPLEMENTED;
	}
}

/* The agent's log lines to the log file (agent_main keeps the stream and
 * sets the configured level). */
static void log_to_file(void)
{
	char base[PATH_UTF8], dir[PATH_UTF8];
	if (data_path("", base, sizeof(base)) < 0 || data_path("logs", dir, sizeof(dir)) < 0 ||
	    snprintf(service_log, sizeof(service_log), "%s\\agent.log", dir) >= (int)sizeof(service_log))
		return;
	wchar_t *wbase = to_wide(base), *wdir = to_wide(dir), *wlog = to_wide(service_log);
	if (wbase && wdir && wlog) {
		CreateDirectoryW(wbase, NULL);
		CreateDirectoryW(wdir, NULL);
		/* Not freopen(stderr): a service's stderr has no descriptor,
		 * and the C runtime refuses to reopen it. */
		FILE *f = _wfopen(wlog, L"a");
		if (f) {
			setvbuf(f, NULL, _IONBF, 0);
			log_init(f, LOG_INFO);
		} else {
			service_log[0] = '\0';
		}
	}
	free(wbase);
	free(wdir);
	free(wlog);
}

static void WINAPI service_main(DWORD argc, LPWSTR *argv)
{
	status_handle = RegisterServiceCtrlHandlerExW(SERVICE_NAME, control_handler, NULL);
	if (!status_handle)
		return;
	report(SERVICE_START_PENDING, NO_ERROR, 0, START_WAIT_HINT_MS);
	log_to_file();
	/* Running once the loop is about to start; a configuration error
	 * ends it at once with the agent's exit status. */
	report(SERVICE_RUNNING, NO_ERROR, 0, 0);
	char *args[] = {"exfleet-agent", "--config", service_config, NULL};
	int rc = agent_main(3, args);
	if (rc != 0) {
		char text[PATH_UTF8 * 2 + 64];
		snprintf(text, sizeof(text),
			 "The exfleet agent stopped with exit status %d. Its log is %s; the "
			 "configuration is %s (check it with: exfleet-agent --config FILE --check).",
			 rc, service_log[0] ? service_log : "(none)", service_config);
		event_log(EVENTLOG_ERROR_TYPE, text);
	}
	report(SERVICE_STOPPED, rc ? ERROR_SERVICE_SPECIFIC_ERROR : NO_ERROR, (DWORD)rc, 0);
}

static int cmd_run(int argc, char **argv)
{
	if (config_arg(argc, argv, 2, service_config, sizeof(service_config)) < 0)
		return 2;
	InitializeCriticalSection(&status_lock);
	SERVICE_TABLE_ENTRYW table[] = {{(LPWSTR)SERVICE_NAME, service_main}, {NULL, NULL}};
	if (!StartServiceCtrlDispatcherW(table)) {
		DWORD code = GetLastError();
		if (code == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT)
			fprintf(stderr,
				"exfleet-agent: 'run' is for the service control manager; to run in "
				"this console use: exfleet-agent --config FILE --foreground\n");
		else
			fprintf(stderr, "exfleet-agent: StartServiceCtrlDispatcher: %s\n",
				win_error(code));
		return 1;
	}
	return 0;
}

/* ---- install, uninstall ------------------------------------------------------ */

/* The source's messages are in this program (windows/messages.mc), so that
 * Event Viewer shows the agent's text rather than "the description for
 * Event ID 1 cannot be found". */
static void register_event_source(const wchar_t *exe)
{
	HKEY key;
	if (RegCreateKeyExW(HKEY_LOCAL_MACHINE, EVENT_SOURCE_KEY, 0, NULL, 0, KEY_SET_VALUE, NULL,
			    &key, NULL) != ERROR_SUCCESS) {
		fprintf(stderr, "exfleet-agent: warning: cannot register the event source 'exfleet'\n");
		return;
	}
	DWORD types = EVENTLOG_ERROR_TYPE | EVENTLOG_WARNING_TYPE | EVENTLOG_INFORMATION_TYPE;
	LONG rc = RegSetValueExW(key, L"TypesSupported", 0, REG_DWORD, (const BYTE *)&types,
				 sizeof(types));
	if (rc == ERROR_SUCCESS)
		rc = RegSetValueExW(key, L"EventMessageFile", 0, REG_EXPAND_SZ, (const BYTE *)exe,
				    (DWORD)((wcslen(exe) + 1) * sizeof(wchar_t)));
	if (rc != ERROR_SUCCESS)
		fprintf(stderr, "exfleet-agent: warning: the event source 'exfleet' is incomplete: %s\n",
			win_error((DWORD)rc));
	RegCloseKey(key);
}

/* The recovery actions as the service control manager kept them: 1 when
 * they are the ones set, 0 when they differ or cannot be read back (Wine
 * accepts them and keeps nothing). */
static int failure_actions_kept(SC_HANDLE svc, const SERVICE_FAILURE_ACTIONSW *want, char *seen,
				size_t seen_len)
{
	DWORD needed = 0;
	BYTE *buf = NULL;
	int kept = 0;
	snprintf(seen, seen_len, "none");
	if (!QueryServiceConfig2W(svc, SERVICE_CONFIG_FAILURE_ACTIONS, NULL, 0, &needed)) {
		DWORD code = GetLastError();
		if (code != ERROR_INSUFFICIENT_BUFFER) {
			snprintf(seen, seen_len, "not readable: %s", win_error(code));
			return 0;
		}
	}
	if (needed == 0 || !(buf = malloc(needed)))
		return 0;
	if (!QueryServiceConfig2W(svc, SERVICE_CONFIG_FAILURE_ACTIONS, buf, needed, &needed)) {
		snprintf(seen, seen_len, "not readable: %s", win_error(GetLastError()));
		goto out;
	}
	const SERVICE_FAILURE_ACTIONSW *got = (const SERVICE_FAILURE_ACTIONSW *)buf;
	kept = got->dwResetPeriod == want->dwResetPeriod && got->cActions == want->cActions;
	for (DWORD i = 0; kept && i < got->cActions; i++)
		kept = got->lpsaActions[i].Type == want->lpsaActions[i].Type &&
		       got->lpsaActions[i].Delay == want->lpsaActions[i].Delay;
	snprintf(seen, seen_len, "%lu action(s), reset after %lu s", (unsigned long)got->cActions,
		 (unsigned long)got->dwResetPeriod);
out:
	free(buf);
	return kept;
}

static int cmd_install(int argc, char **argv)
{
	char config[PATH_UTF8];
	if (config_arg(argc, argv, 2, config, sizeof(config)) < 0)
		return 2;
	/* The same check an administrator would run: refuse a service that
	 * could only fail to start. */
	char *check[] = {"exfleet-agent", "--config", config, "--check", NULL};
	if (agent_main(4, check) != 0) {
		fprintf(stderr, "exfleet-agent: not installed: fix %s first\n", config);
		return 1;
	}
	wchar_t exe[MAX_PATH * 2];
	DWORD n = GetModuleFileNameW(NULL, exe, MAX_PATH * 2);
	if (n == 0 || n >= MAX_PATH * 2) {
		fprintf(stderr, "exfleet-agent: cannot find this program's path\n");
		return 1;
	}
	wchar_t *config_w = to_wide(config);
	size_t len = wcslen(exe) + (config_w ? wcslen(config_w) : 0) + 32;
	wchar_t *command = malloc(len * sizeof(wchar_t));
	if (!config_w || !command) {
		free(config_w);
		free(command);
		return 1;
	}
	swprintf(command, len, L"\"%ls\" run --config \"%ls\"", exe, config_w);
	free(config_w);

	int rc = 1;
	SC_HANDLE svc = NULL;
	SC_HANDLE scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_CONNECT | SC_MANAGER_CREATE_SERVICE);
	if (!scm) {
		fprintf(stderr, "exfleet-agent: OpenSCManager: %s (run as an administrator)\n",
			win_error(GetLastError()));
		goto out;
	}
	/* NULL account: LocalSystem. */
	svc = CreateServiceW(scm, SERVICE_NAME, DISPLAY_NAME, SERVICE_ALL_ACCESS,
			     SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START, SERVICE_ERROR_NORMAL,
			     command, NULL, NULL, L"Tcpip\0\0", NULL, NULL);
	if (!svc) {
		DWORD code = GetLastError();
		fprintf(stderr, "exfleet-agent: CreateService: %s%s\n", win_error(code),
			code == ERROR_SERVICE_EXISTS ? "; run 'exfleet-agent uninstall' first" : "");
		goto out;
	}
	SERVICE_DESCRIPTIONW desc = {(LPWSTR)DESCRIPTION};
	ChangeServiceConfig2W(svc, SERVICE_CONFIG_DESCRIPTION, &desc);
	/* Restart after 1 minute, twice, then after 5; forget failures after a day. */
	SC_ACTION actions[] = {{SC_ACTION_RESTART, 60000},
			       {SC_ACTION_RESTART, 60000},
			       {SC_ACTION_RESTART, 300000}};
	SERVICE_FAILURE_ACTIONSW failure = {86400, NULL, NULL, 3, actions};
	char seen[300];
	if (!ChangeServiceConfig2W(svc, SERVICE_CONFIG_FAILURE_ACTIONS, &failure))
		fprintf(stderr, "exfleet-agent: warning: recovery actions not set: %s\n",
			win_error(GetLastError()));
	else if (!failure_actions_kept(svc, &failure, seen, sizeof(seen)))
		fprintf(stderr,
			"exfleet-agent: warning: the recovery actions were accepted but read back "
			"as %s; set them with: sc failure exfleet reset= 86400 "
			"actions= restart/60000/restart/60000/restart/300000\n",
			seen);
	else
		printf("exfleet-agent: recovery actions read back: restart after 1, 1 and 5 "
		       "minutes, failures forgotten after a day\n");
	register_event_source(exe);
	printf("exfleet-agent: service 'exfleet' installed (LocalSystem, automatic start)\n"
	       "  start it with: sc start exfleet   (or: net start exfleet)\n");
	rc = 0;
out:
	free(command);
	if (svc)
		CloseServiceHandle(svc);
	if (scm)
		CloseServiceHandle(scm);
	return rc;
}

static int cmd_uninstall(int argc, char **argv)
{
	if (argc > 2) {
		fprintf(stderr, "exfleet-agent: uninstall: unknown argument '%s'\n", argv[2]);
		return 2;
	}
	int rc = 1;
	SC_HANDLE svc = NULL;
	SC_HANDLE scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_CONNECT);
	if (!scm) {
		fprintf(stderr, "exfleet-agent: OpenSCManager: %s\n", win_error(GetLastError()));
		goto out;
	}
	svc = OpenServiceW(scm, SERVICE_NAME, SERVICE_STOP | SERVICE_QUERY_STATUS | DELETE);
	if (!svc) {
		fprintf(stderr, "exfleet-agent: the service 'exfleet': %s\n",
			win_error(GetLastError()));
		goto out;
	}
	SERVICE_STATUS st;
	if (ControlService(svc, SERVICE_CONTROL_STOP, &st)) {
		printf("exfleet-agent: stopping the service\n");
		for (DWORD waited = 0; waited < UNINSTALL_STOP_WAIT_MS; waited += 250) {
			if (!QueryServiceStatus(svc, &st) || st.dwCurrentState == SERVICE_STOPPED)
				break;
			Sleep(250);
		}
		if (st.dwCurrentState != SERVICE_STOPPED)
			fprintf(stderr, "exfleet-agent: warning: the service did not stop within %d s\n",
				UNINSTALL_STOP_WAIT_MS / 1000);
	}
	if (!DeleteService(svc)) {
		fprintf(stderr, "exfleet-agent: DeleteService: %s\n", win_error(GetLastError()));
		goto out;
	}
	RegDeleteKeyW(HKEY_LOCAL_MACHINE, EVENT_SOURCE_KEY);
	printf("exfleet-agent: service 'exfleet' removed (its files in %%ProgramData%%\\exfleet "
	       "are kept)\n");
	rc = 0;
out:
	if (svc)
		CloseServiceHandle(svc);
	if (scm)
		CloseServiceHandle(scm);
	return rc;
}

/* ---- the command line --------------------------------------------------------- */

/* The agent's own command line, with the default --config where none is
 * given and one is needed. */
static int cmd_agent(int argc, char **argv)
{
	int help = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			help = 1;
		if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--version") == 0 ||
		    strcmp(argv[i], "--config-reference") == 0 || help) {
			int rc = agent_main(argc, argv);
			if (help)
				fputs(usage, stdout);
			return rc;
		}
	}
	char config[PATH_UTF8];
	if (data_path("agent.ini", config, sizeof(config)) < 0)
		return agent_main(argc, argv);
	char **args = calloc((size_t)argc + 3, sizeof(char *));
	if (!args)
		return 1;
	args[0] = argv[0];
	args[1] = "--config";
	args[2] = config;
	for (int i = 1; i < argc; i++)
		args[i + 2] = argv[i];
	int rc = agent_main(argc + 2, args);
	free(args);
	return rc;
}

int winsvc_main(int argc, char **argv)
{
	/* argv as UTF-8, which the agent (and libuv) take paths in, rather
	 * than in the ANSI code page the C runtime gave it. */
	int wargc = 0;
	wchar_t **wargv = CommandLineToArgvW(GetCommandLineW(), &wargc);
	char **args = NULL;
	if (wargv && wargc > 0 && (args = calloc((size_t)wargc + 1, sizeof(char *)))) {
		int i;
		for (i = 0; i < wargc && (args[i] = to_utf8(wargv[i])); i++)
			;
		if (i == wargc) {
			argc = wargc;
			argv = args;
		}
	}
	if (wargv)
		LocalFree(wargv);

	int rc;
	if (argc >= 2 && strcmp(argv[1], "install") == 0)
		rc = cmd_install(argc, argv);
	else if (argc >= 2 && strcmp(argv[1], "uninstall") == 0)
		rc = cmd_uninstall(argc, argv);
	else if (argc >= 2 && strcmp(argv[1], "run") == 0)
		rc = cmd_run(argc, argv);
	else
		rc = cmd_agent(argc, argv);
	for (int i = 0; args && args[i]; i++)
		free(args[i]);
	free(args);
	return rc;
}
