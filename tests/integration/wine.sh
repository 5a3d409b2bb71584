#!/bin/sh
# exfleet-agent.exe (make windows) under Wine, as an administrator would run
# it: install.cmd installs it as the service 'exfleet', it reports over mutual
# TLS to a Linux collector on loopback, runs operator-signed commands, and is
# stopped and uninstalled.
#
# What Wine really implements, and so what this test counts: the service
# control manager (enumeration, configuration, start and stop of real service
# processes), the agent as a service (StartServiceCtrlDispatcher, stop
# within the wait hint), libuv, OpenSSL's TLS, protobuf-c. What Wine only
# pretends to do passes nothing here: the domain role (always a standalone
# workstation), the rights of an account (LsaAddAccountRights succeeds
# without effect: the test requires the agent to report that as a failed
# verification), LogonUser (any password; verify-credentials "succeeds"),
# the event log (never readable), service passwords, and service
# dependencies (QueryServiceConfig gives none). The test checks that these
# are at most reported, and the README's check list covers them on Windows.
#
# EXFLEET_WIN_AGENT names exfleet-agent.exe. Wine and the MinGW compiler come
# with deploy/deps.sh: without them this test fails rather than skips.
. "$(dirname "$0")/lib.sh"

EXE=${EXFLEET_WIN_AGENT:-}
[ -n "$EXE" ] || fail "EXFLEET_WIN_AGENT is not set: it names build-win/bin/exfleet-agent.exe (make windows)"
[ -f "$EXE" ] || fail "$EXE is missing: build it with 'make windows'"
for tool in wine wineserver wineboot x86_64-w64-mingw32-gcc sqlite3 timeout; do
	command -v "$tool" >/dev/null 2>&1 ||
		fail "'$tool' is missing: deploy/deps.sh installs it (make deps); the Windows test cannot run"
done

HOST=WINE1
export WINEPREFIX="$WORK/wineprefix" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
unset DISPLAY WAYLAND_DISPLAY
C=$WINEPREFIX/drive_c

# One wine command, bounded; its output goes to WORK/wine.log.
w() {
	printf '> wine %s\n' "$*" >>"$WORK/wine.log"
	timeout 60 wine "$@" >>"$WORK/wine.log" 2>&1
}

# This prefix's wineserver (and with it every Wine process of the prefix)
# ends with the test; the exported WINEPREFIX keeps -k to this prefix. On
# failure the logs stay, but not the 700 MB of the prefix's Windows.
wine_cleanup() {
	[ -d "$WINEPREFIX" ] || return 0
	timeout 30 wineserver -k >/dev/null 2>&1 || true
	timeout 30 wineserver -w >/dev/null 2>&1 || true
	for f in "$C/ProgramData/exfleet/logs/agent.log" "$C/exfleet-test/starts.log"; do
		[ -f "$f" ] && cp "$f" "$WORK/$(basename "$f" .log)-wine.log"
	done
	rm -rf "$WINEPREFIX"
}
# Then lib.sh's cleanup, with the test's exit status (set +e: a failed
# status must not end the trap before the processes are killed).
cleanup() {
	rc=$?
	set +e
	wine_cleanup
	(exit "$rc")
	it_cleanup
}
trap cleanup EXIT

# One value of the service's state as Wine's own sc reports it.
sc_state() {
	timeout 30 wine sc query "$1" 2>/dev/null | sed -n 's/^ *STATE *: *[0-9]* *\([A-Z_]*\).*/\1/p'
}

# ---- the collector, its API, an operator --------------------------------
make_pki "$HOST"
start_collector
DB=$WORK/collector.db
# Commands are signed by an operator, whose certificate also reaches the
# API (lib.sh: use_operator, ctl).
use_operator "$WORK/pki" admin

# ---- a Wine prefix, with a test service of our own ----------------------
t0=$(date +%s)
timeout 120 wineboot -i >>"$WORK/wine.log" 2>&1 || fail "wineboot -i failed or took over 120 s"
# The first boot's own processes end first: services started while they
# run never get their start acknowledged (1053 after 10 s, Wine 8).
timeout 60 wineserver -w || fail "Wine's first boot did not end within 60 s"
# Persistent until wine_cleanup: Wine would otherwise end the service
# processes whenever no ordinary Wine process is left.
timeout 30 wineserver -p >>"$WORK/wine.log" 2>&1 || fail "wineserver -p failed"
echo "wine: prefix ready in $(($(date +%s) - t0)) s"

# A service that notes each start and stop with its process id: a restart
# is proven by the file, not by what the SCM or the agent say. It is
# registered as MSExchangeSA, so that the host has an Exchange service for
# exfleetctl repair to plan with.
mkdir -p "$C/exfleet-test"
cat >"$WORK/exfleettest.c" <<'C'
#include <windows.h>
#include <stdio.h>

static SERVICE_STATUS_HANDLE handle;
static SERVICE_STATUS status;
static HANDLE stop;
static const char *path = "C:\\exfleet-test\\starts.log";
static char name[64] = "exfleettest";

static void note(const char *what)
{
	FILE *f = fopen(path, "a");
	if (f) {
		fprintf(f, "%s %lu\n", what, (unsigned long)GetCurrentProcessId());
		fclose(f);
	}
}

static void set_state(DWORD state)
{
	status.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
	status.dwCurrentState = state;
	status.dwControlsAccepted = state == SERVICE_RUNNING ? SERVICE_ACCEPT_STOP : 0;
	SetServiceStatus(handle, &status);
}

static DWORD WINAPI handler(DWORD control, DWORD type, LPVOID data, LPVOID context)
{
	if (control == SERVICE_CONTROL_STOP) {
		set_state(SERVICE_STOP_PENDING);
		SetEvent(stop);
	}
	return NO_ERROR;
}

static void WINAPI service_main(DWORD argc, LPSTR *argv)
{
	handle = RegisterServiceCtrlHandlerExA(name, handler, NULL);
	stop = CreateEventA(NULL, TRUE, FALSE, NULL);
	note("start");
	set_state(SERVICE_RUNNING);
	WaitForSingleObject(stop, INFINITE);
	note("stop");
	set_state(SERVICE_STOPPED);
}

/* exfleettest.exe [SERVICE_NAME] */
int main(int argc, char **argv)
{
	if (argc > 1)
		snprintf(name, sizeof(name), "%s", argv[1]);
	SERVICE_TABLE_ENTRYA table[] = {{name, service_main}, {NULL, NULL}};
	return StartServiceCtrlDispatcherA(table) ? 0 : 1;
}
C
x86_64-w64-mingw32-gcc -O2 -Wall -Wextra -Werror -Wno-unused-parameter \
	-o "$C/exfleet-test/exfleettest.exe" "$WORK/exfleettest.c" ||
	fail "the MinGW compiler cannot build the test service"
w sc create MSExchangeSA binpath= 'C:\exfleet-test\exfleettest.exe MSExchangeSA' start= demand \
	displayname= "exfleet test service" || fail "sc create MSExchangeSA failed"
w sc start MSExchangeSA || fail "sc start MSExchangeSA failed"
wait_log "$C/exfleet-test/starts.log" "^start " 1 30
[ "$(sc_state MSExchangeSA)" = RUNNING ] || fail "MSExchangeSA: sc query says $(sc_state MSExchangeSA)"

# ---- install and start the agent as install.cmd does --------------------
src=$WORK/install
mkdir -p "$src"
cp "$EXE" "$src/exfleet-agent.exe"
cp "$WORK/pki/ca.crt" "$src/ca.crt"
cp "$WORK/pki/agent/$HOST.crt" "$src/agent.crt"
cp "$WORK/pki/agent/$HOST.key" "$src/agent.key"
cat >"$src/agent.ini" <<INI
[agent]
host_id = $HOST
log_level = debug
[collector]
address = 127.0.0.1:$PORT
name = localhost
reconnect_min = 100ms
reconnect_max = 1s
[tls]
ca = keys\\ca.crt
cert = keys\\agent.crt
key = keys\\agent.key
[probe]
backend = win32
rescan = 1s
[services]
watched = MSExchangeSA, RpcSs, PlugPlay, Eventlog, Spooler, exfleet
[spool]
dir = spool
INI
cp "$(dirname "$0")/../../deploy/windows/install.cmd" "$src/install.cmd"
t0=$(date +%s)
w cmd /c 'Z:'"$(echo "$src" | tr / '\\')"'\install.cmd' 'Z:'"$(echo "$src" | tr / '\\')" ||
	fail "install.cmd failed (see wine.log)"
grep -q "service 'exfleet' installed" "$WORK/wine.log" || fail "install.cmd did not install the service"
# Recovery actions: Wine 8 accepts them and keeps nothing. The agent must
# not take that for done: either it read them back, and the SCM's registry
# holds them, or it said it could not.
svckey='HKLM\System\CurrentControlSet\Services\exfleet'
if grep -q "recovery actions read back" "$WORK/wine.log"; then
	w reg query "$svckey" /v FailureActions || fail "install read back recovery actions the SCM does not hold"
else
	grep -q "warning: the recovery actions were accepted but read back as" "$WORK/wine.log" ||
		fail "install neither confirmed the recovery actions nor warned"
fi
[ -f "$C/Program Files/exfleet/exfleet-agent.exe" ] || fail "install.cmd did not copy the agent"
[ -f "$C/ProgramData/exfleet/keys/agent.key" ] || fail "install.cmd did not copy the key"

# The service process reaches the collector over mutual TLS.
wait_log "$WORK/collector.log" "Hello: agent .* on win32" 1 60
wait_sql "$DB" "SELECT platform FROM hosts WHERE host_id = '$HOST'" win32 30
wait_sql "$DB" "SELECT COUNT(*) FROM services WHERE host_id = '$HOST' AND name = 'MSExchangeSA'" 1 60
echo "wine: installed, started and reporting in $(($(date +%s) - t0)) s"
[ "$(sc_state exfleet)" = RUNNING ] || fail "the exfleet service: sc query says $(sc_state exfleet)"

# The service as install registered it, read through the SCM by the agent:
# automatic start (3), LocalSystem, running (4).
wait_sql "$DB" "SELECT state || ' ' || start_type || ' ' || logon_account FROM services
	WHERE host_id = '$HOST' AND name = 'exfleet'" "4 3 LocalSystem" 30

# ---- the snapshot holds Wine's real services ----------------------------
# Service states as the store has them (4 running, 1 stopped); RpcSs and
# PlugPlay run in every Wine prefix, Spooler does not.
wait_sql "$DB" "SELECT state FROM services WHERE host_id = '$HOST' AND name = 'MSExchangeSA'" 4
wait_sql "$DB" "SELECT state FROM services WHERE host_id = '$HOST' AND name = 'RpcSs'" 4
wait_sql "$DB" "SELECT state FROM services WHERE host_id = '$HOST' AND name = 'PlugPlay'" 4
wait_sql "$DB" "SELECT state FROM services WHERE host_id = '$HOST' AND name = 'Spooler'" 1
[ "$(sql "$DB" "SELECT display_name FROM services WHERE host_id = '$HOST' AND name = 'MSExchangeSA'")" = \
	"exfleet test service" ] || fail "MSExchangeSA's display name is not the one sc create gave"
[ "$(sql "$DB" "SELECT start_type || ' ' || logon_account FROM services WHERE host_id = '$HOST' AND name = 'MSExchangeSA'")" = \
	"4 LocalSystem" ] || fail "MSExchangeSA is not the demand-start LocalSystem service sc create made"
# Spooler's exit code as Wine's own sc query gives it (1077 in a new prefix).
spooler_exit=$(timeout 30 wine sc query Spooler 2>/dev/null | sed -n 's/^ *WIN32_EXIT_CODE *: *\([0-9]*\).*/\1/p')
[ -n "$spooler_exit" ] || fail "sc query Spooler gave no exit code"
wait_sql "$DB" "SELECT win32_exit_code FROM services WHERE host_id = '$HOST' AND name = 'Spooler'" "$spooler_exit"
# A change made behind the agent's back shows up at its next rescan.
w sc stop MSExchangeSA || fail "sc stop MSExchangeSA failed"
wait_sql "$DB" "SELECT state FROM services WHERE host_id = '$HOST' AND name = 'MSExchangeSA'" 1 30
w sc start MSExchangeSA || fail "sc start MSExchangeSA failed"
wait_sql "$DB" "SELECT state FROM services WHERE host_id = '$HOST' AND name = 'MSExchangeSA'" 4 30
# The same through the operators' API.
ctl host "$HOST" --json >"$WORK/host.json" 2>"$WORK/host.err" ||
	fail "exfleetctl host: $(cat "$WORK/host.err")"
grep -q '"MSExchangeSA"' "$WORK/host.json" || fail "the API's host lacks MSExchangeSA"
grep -q '"RpcSs"' "$WORK/host.json" || fail "the API's host lacks RpcSs"

# ---- RESTART_SERVICES, signed by the operator ---------------------------
starts_before=$(grep -c '^start ' "$C/exfleet-test/starts.log")
pid_before=$(grep '^start ' "$C/exfleet-test/starts.log" | tail -n 1 | cut -d' ' -f2)
id=$(ctl queue "$HOST" restart MSExchangeSA 2>"$WORK/queue.err") ||
	fail "exfleetctl queue: $(cat "$WORK/queue.err")"
wait_sql "$DB" "SELECT state FROM commands WHERE command_id = '$id'" succeeded 60
grep -q "command $id delivered" "$WORK/collector.log" || fail "no delivery of $id logged"
steps=$(sql "$DB" "SELECT steps FROM command_results WHERE command_id = '$id'")
echo "$steps" | grep -q '"step":"stop","target":"MSExchangeSA"' || fail "no stop step: $steps"
echo "$steps" | grep -q '"step":"start","target":"MSExchangeSA"' || fail "no start step: $steps"
# The service really went down and came up again, as a new process.
wait_log "$C/exfleet-test/starts.log" "^start " $((starts_before + 1)) 10
grep -q "^stop $pid_before\$" "$C/exfleet-test/starts.log" || fail "MSExchangeSA $pid_before never stopped"
pid_after=$(grep '^start ' "$C/exfleet-test/starts.log" | tail -n 1 | cut -d' ' -f2)
[ "$pid_after" != "$pid_before" ] || fail "MSExchangeSA was not restarted: still process $pid_before"
[ "$(sc_state MSExchangeSA)" = RUNNING ] || fail "after the restart sc query says $(sc_state MSExchangeSA)"

# ---- GRANT_RIGHTS: Wine's LsaAddAccountRights does nothing ---------------
# Through exfleetctl repair, the operator's route to GRANT_RIGHTS: its first
# step, verify-credentials, "succeeds" because Wine's LogonUser accepts any
# password (not counted); grant-rights must then fail on the read-back.
account=".\\$(id -un)"
echo "any password" >"$WORK/password.txt"
if ctl repair --host "$HOST" --account "$account" --password-file "$WORK/password.txt" \
	--crl "$WORK/pki/crl.pem" --expires 1m >"$WORK/repair.out" 2>&1; then
	fail "a repair whose rights were never granted succeeded: $(cat "$WORK/repair.out")"
fi
grep -q "grant-rights failed: .*LsaAddAccountRights reported success but SeServiceLogonRight is not among" \
	"$WORK/repair.out" || fail "grant-rights did not fail on the read-back: $(cat "$WORK/repair.out")"
grant=$(sql "$DB" "SELECT command_id FROM commands WHERE host_id = '$HOST' AND action = 'GRANT_RIGHTS'")
[ -n "$grant" ] || fail "no GRANT_RIGHTS command in the store"
[ "$(sql "$DB" "SELECT state FROM commands WHERE command_id = '$grant'")" = failed ] ||
	fail "GRANT_RIGHTS is $(sql "$DB" "SELECT state FROM commands WHERE command_id = '$grant'")"
gsteps=$(sql "$DB" "SELECT steps FROM command_results WHERE command_id = '$grant'")
echo "$gsteps" | grep -q '"ok":true' && fail "a grant-rights step counted as done: $gsteps"
echo "$gsteps" | grep -q '"win32_error":13' || fail "grant-rights is not a failed verification (13): $gsteps"
# The password was sealed to the agent and wiped: the Windows agent wrote
# it nowhere.
if grep -rlaF "any password" "$C/ProgramData/exfleet" "$WORK/collector.log" "$DB"*; then
	fail "the password was found in the files above"
fi
# Nothing after grant-rights was sent.
[ "$(sql "$DB" "SELECT COUNT(*) FROM commands WHERE host_id = '$HOST' AND action = 'SET_SERVICE_CREDENTIALS'")" = 0 ] ||
	fail "set-service-credentials went out after a failed grant"

# ---- the event source ---------------------------------------------------
# Wine's event log keeps no records, so what Event Viewer would show is
# checked at its source: the registered EventMessageFile formats event 1 as
# the agent's own text (FormatMessage and resources are real in Wine).
msgfile=$(timeout 30 wine reg query 'HKLM\System\CurrentControlSet\Services\EventLog\Application\exfleet' \
	/v EventMessageFile 2>/dev/null | sed -n 's/^ *EventMessageFile *REG_[A-Z_]* *\(.*[^\r]\)\r*$/\1/p')
[ -n "$msgfile" ] || fail "the event source 'exfleet' has no EventMessageFile"
cat >"$WORK/msgcheck.c" <<'C'
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>

/* msgcheck FILE ID TEXT: FILE's message ID formatted with TEXT as %1. */
int main(int argc, char **argv)
{
	char out[512];
	DWORD_PTR args[] = {(DWORD_PTR)(argc > 3 ? argv[3] : "")};
	HMODULE m = argc > 3 ? LoadLibraryExA(argv[1], NULL, LOAD_LIBRARY_AS_DATAFILE) : NULL;
	if (!m || !FormatMessageA(FORMAT_MESSAGE_FROM_HMODULE | FORMAT_MESSAGE_ARGUMENT_ARRAY, m,
				  (DWORD)strtoul(argv[2], NULL, 0), 0, out, sizeof(out),
				  (va_list *)args)) {
		fprintf(stderr, "msgcheck: %s: error %lu\n", argc > 1 ? argv[1] : "?",
			(unsigned long)GetLastError());
		return 1;
	}
	printf("[%s]\n", out);
	return 0;
}
C
x86_64-w64-mingw32-gcc -O2 -Wall -Wextra -Werror -o "$C/exfleet-test/msgcheck.exe" "$WORK/msgcheck.c" ||
	fail "the MinGW compiler cannot build msgcheck"
timeout 30 wine 'C:\exfleet-test\msgcheck.exe' "$msgfile" 1 "agent text 42" >"$WORK/msgcheck.out" 2>&1 ||
	fail "event 1 of $msgfile does not format: $(cat "$WORK/msgcheck.out")"
grep -q '^\[agent text 42' "$WORK/msgcheck.out" || fail "event 1 formats as $(cat "$WORK/msgcheck.out")"

# ---- stop and uninstall --------------------------------------------------
t0=$(date +%s)
w net stop exfleet || fail "net stop exfleet failed"
[ "$(sc_state exfleet)" = STOPPED ] || fail "after net stop: $(sc_state exfleet)"
timeout 30 wine sc query exfleet 2>/dev/null | grep -q 'WIN32_EXIT_CODE *: *0 ' ||
	fail "the agent stopped with an error: $(timeout 30 wine sc query exfleet 2>&1)"
[ $(($(date +%s) - t0)) -le 30 ] || fail "the agent took over its 30 s wait hint to stop"
grep -q "agent stopped" "$C/ProgramData/exfleet/logs/agent.log" ||
	fail "the agent's log does not show a clean stop"
w "C:\\Program Files\\exfleet\\exfleet-agent.exe" uninstall || fail "exfleet-agent uninstall failed"
grep -q "service 'exfleet' removed" "$WORK/wine.log" || fail "uninstall did not say it removed the service"
if timeout 30 wine sc query exfleet >"$WORK/sc-after.txt" 2>&1 && grep -q 'STATE' "$WORK/sc-after.txt"; then
	fail "the service 'exfleet' still exists after uninstall"
fi
if timeout 30 wine reg query 'HKLM\System\CurrentControlSet\Services\EventLog\Application\exfleet' \
	>/dev/null 2>&1; then
	fail "uninstall left the event source 'exfleet' registered"
fi
w sc stop MSExchangeSA || true
w sc delete MSExchangeSA || fail "sc delete MSExchangeSA failed"
echo "wine: ok (pretend under Wine, not counted: domain role, account rights, LogonUser, event log, service passwords, dependencies)"
