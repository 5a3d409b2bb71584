# Helpers for integration tests: real binaries on loopback, real certificates.
# A test sources this file, then uses BIN (the binaries) and WORK (its own
# scratch directory, removed on success, kept on failure for inspection).
set -eu

BIN=${EXFLEET_BIN:?EXFLEET_BIN must name the directory of the built binaries}
WORK=$(mktemp -d "${EXFLEET_TEST_TMP:-/tmp}/it-$(basename "$0" .sh)-XXXXXX")
PIDS=""

it_cleanup() {
	rc=$?
	for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ "$rc" = 0 ]; then
		rm -rf "$WORK"
	else
		echo "FAILED: logs and data kept in $WORK" >&2
		for f in "$WORK"/*.log; do
			[ -f "$f" ] || continue
			echo "---- $f (last 30 lines)" >&2
			tail -n 30 "$f" >&2
		done
	fi
	exit "$rc"
}
trap it_cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# start NAME CMD...: runs CMD in the background, stderr+stdout to WORK/NAME.log.
start() {
	name=$1
	shift
	"$@" >>"$WORK/$name.log" 2>&1 &
	PIDS="$PIDS $!"
	eval "PID_$name=$!"
}

# crash PID: kill -9 and wait until the process is gone (its port is free).
crash() {
	kill -9 "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# wait_log FILE PATTERN [COUNT] [SECONDS]: until FILE has COUNT lines matching.
wait_log() {
	file=$1 pattern=$2 count=${3:-1} limit=${4:-20}
	end=$(($(date +%s) + limit))
	while :; do
		n=$(grep -c -- "$pattern" "$file" 2>/dev/null || true)
		[ "${n:-0}" -ge "$count" ] && return 0
		[ "$(date +%s)" -ge "$end" ] && fail "$file: wanted $count x '$pattern' within ${limit}s, saw ${n:-0}"
		sleep 0.1
	done
}

# The PKI with a collector certificate and one for each agent host id.
make_pki() {
	"$BIN/exfleetctl" pki init --dir "$WORK/pki" >/dev/null
	"$BIN/exfleetctl" pki issue collector localhost --dir "$WORK/pki" >/dev/null
	for host in "$@"; do
		"$BIN/exfleetctl" pki issue agent "$host" --dir "$WORK/pki" >/dev/null
	done
}

# start_collector [PORT]: the collector of make_pki's deployment; sets PORT.
start_collector() {
	cat >"$WORK/collector.ini" <<INI
[collector]
id = localhost
listen = 127.0.0.1:0
log_level = debug
[agents]
heartbeat = 1s
[tls]
ca = pki/ca.crt
cert = pki/collector/localhost.crt
key = pki/collector/localhost.key
crl = pki/crl.pem
INI
	run_collector "$WORK/collector.ini" "${1:-}"
}

# make_agent_config FILE_NAME HOST_ID PORT [CERT_NAME]: an agent reading a
# simulated host (a copy of one host that exfleet-sim made).
make_agent_config() {
	if [ ! -f "$WORK/template.json" ]; then
		"$BIN/exfleet-sim" create "$WORK/template" --hosts 1 --waves 1 >/dev/null
		cp "$WORK/template/hosts/EXCH001.json" "$WORK/template.json"
	fi
	mkdir -p "$WORK/hosts"
	cp "$WORK/template.json" "$WORK/hosts/$1.json"
	cat >"$WORK/$1.ini" <<INI
[agent]
host_id = $2
log_level = debug
[collector]
address = 127.0.0.1:$3
name = localhost
reconnect_min = 100ms
reconnect_max = 1s
[tls]
ca = pki/ca.crt
cert = pki/agent/${4:-$2}.crt
key = pki/agent/${4:-$2}.key
[probe]
host_file = hosts/$1.json
[spool]
dir = spool/$1
INI
}

# run_collector INI [PORT]: starts the collector with INI and sets PORT to
# the port it listens on. Without PORT it picks one below the ephemeral range
# (32768 and up), since agents reconnecting to a dead collector on an
# ephemeral port can end up holding that very port, connected to themselves.
run_collector() {
	ini=$1
	for try in 1 2 3 4 5 6 7 8; do
		port=${2:-$(($(od -An -N2 -tu2 /dev/urandom) % 12000 + 20000))}
		# The API takes a port of the system's choosing, so that tests
		# running at once do not fight over 8443.
		grep -q '^\[api\]' "$ini" || printf '\n[api]\nlisten = 127.0.0.1:0\n' >>"$ini"
		sed -i "0,/^listen = .*/s//listen = 127.0.0.1:$port/" "$ini"
		before=$(grep -c "listening for agents\|cannot listen" "$WORK/collector.log" 2>/dev/null || true)
		start collector "$BIN/exfleet-collector" --config "$ini"
		wait_log "$WORK/collector.log" "listening for agents\|cannot listen" $((${before:-0} + 1))
		if tail -n 1 "$WORK/collector.log" | grep -q "cannot listen"; then
			[ -n "${2:-}" ] && fail "collector cannot listen on $2"
			continue
		fi
		PORT=$port
		return 0
	done
	fail "no free port for the collector"
}

# sql DB QUERY: one value from the collector's database.
sql() {
	sqlite3 -readonly "$1" "$2"
}

# wait_sql DB QUERY WANT [SECONDS]: until QUERY returns WANT.
wait_sql() {
	end=$(($(date +%s) + ${4:-30}))
	while :; do
		got=$(sql "$1" "$2" 2>/dev/null || true)
		[ "$got" = "$3" ] && return 0
		[ "$(date +%s)" -ge "$end" ] && fail "$2: wanted $3, got '$got'"
		sleep 0.2
	done
}
