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

# start_collector [PORT]: starts the collector (on a port the system picks
# when none is given) and sets PORT to the port it listens on.
start_collector() {
	cat >"$WORK/collector.ini" <<INI
[collector]
id = localhost
listen = 127.0.0.1:${1:-0}
log_level = debug
[agents]
heartbeat = 1s
[tls]
ca = pki/ca.crt
cert = pki/collector/localhost.crt
key = pki/collector/localhost.key
crl = pki/crl.pem
INI
	before=$(grep -c "listening for agents" "$WORK/collector.log" 2>/dev/null || true)
	start collector "$BIN/exfleet-collector" --config "$WORK/collector.ini"
	wait_log "$WORK/collector.log" "listening for agents" $((${before:-0} + 1))
	PORT=$(grep "listening for agents" "$WORK/collector.log" | tail -n 1 | sed 's/.*:\([0-9]*\)$/\1/')
}

# make_agent_config FILE_NAME HOST_ID PORT [CERT_NAME]
make_agent_config() {
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
INI
}
