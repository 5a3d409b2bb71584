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
	printf 'FAIL: %s\n' "$*" >&2
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

# random_port: a port below the ephemeral range (32768 and up), since agents
# reconnecting to a dead collector on an ephemeral port can end up holding
# that very port, connected to themselves.
random_port() {
	echo $(($(od -An -N2 -tu2 /dev/urandom) % 12000 + 20000))
}

# api_listen INI ADDRESS: sets [api] listen in INI, adding what is missing.
api_listen() {
	awk -v addr="$2" '
		/^\[/ { if (in_api && !done) { print "listen = " addr; done = 1 }
			in_api = ($0 == "[api]") }
		in_api && /^listen *=/ { if (!done) print "listen = " addr; done = 1; next }
		{ print }
		END { if (!done) { if (!in_api) print "\n[api]"; print "listen = " addr } }' \
		"$1" >"$1.tmp" && mv "$1.tmp" "$1"
}

# run_collector INI [PORT]: starts the collector with INI and sets PORT to
# the port it listens on for agents (random below the ephemeral range unless
# given), and API_PORT and API_URL to its HTTPS API's (random too, so that
# tests running at once do not fight over 8443). The URL names localhost, the
# name of the tests' collector certificates.
run_collector() {
	ini=$1
	for try in 1 2 3 4 5 6 7 8; do
		port=${2:-$(random_port)}
		api_port=$(random_port)
		[ "$api_port" = "$port" ] && continue
		api_listen "$ini" "127.0.0.1:$api_port"
		sed -i "0,/^listen = .*/s//listen = 127.0.0.1:$port/" "$ini"
		before=$(grep -c "listening for agents\|cannot listen" "$WORK/collector.log" 2>/dev/null || true)
		refused=$(grep -c "cannot listen" "$WORK/collector.log" 2>/dev/null || true)
		refused_agents=$(grep -c "\[collector\] listen: cannot" "$WORK/collector.log" 2>/dev/null || true)
		start collector "$BIN/exfleet-collector" --config "$ini"
		wait_log "$WORK/collector.log" "listening for agents\|cannot listen" $((${before:-0} + 1))
		if [ "$(grep -c "cannot listen" "$WORK/collector.log")" -gt "${refused:-0}" ]; then
			crash "$PID_collector"
			[ -n "${2:-}" ] && [ "$(grep -c "\[collector\] listen: cannot" "$WORK/collector.log")" \
				-gt "${refused_agents:-0}" ] && fail "collector cannot listen on $2"
			continue
		fi
		PORT=$port
		API_PORT=$api_port
		API_URL=https://localhost:$api_port
		return 0
	done
	fail "no free port for the collector"
}

# exfleetctl reads no configuration of the person running the tests.
XDG_CONFIG_HOME=$WORK/config
export XDG_CONFIG_HOME

# point_agent INI [RECONNECT_MIN RECONNECT_MAX]: the agent configuration
# INI reaches run_collector's port, retrying that fast when given.
point_agent() {
	if [ $# -ge 3 ]; then
		sed -i "s/^address = .*/address = 127.0.0.1:$PORT\nreconnect_min = $2\nreconnect_max = $3/" "$1"
	else
		sed -i "s/^address = .*/address = 127.0.0.1:$PORT/" "$1"
	fi
}

# use_operator PKI_DIR NAME [ROLE]: exfleetctl's default configuration
# (ctl.ini) names the CA of PKI_DIR and NAME's certificate, issued first with
# ROLE (default operator) when PKI_DIR has none. ctl then reaches
# run_collector's API.
use_operator() {
	role=${3:-operator}
	dir=operator
	[ "$role" = viewer ] && dir=viewer
	[ -f "$1/$dir/$2.crt" ] ||
		"$BIN/exfleetctl" pki issue operator "$2" --role "$role" --dir "$1" >/dev/null
	mkdir -p "$XDG_CONFIG_HOME/exfleet"
	cat >"$XDG_CONFIG_HOME/exfleet/ctl.ini" <<INI
[collector]
ca = $1/ca.crt
cert = $1/$dir/$2.crt
key = $1/$dir/$2.key
INI
}

# ctl ARGS...: exfleetctl against run_collector's API, as use_operator set up
# (a --url in ARGS is overridden).
ctl() {
	"$BIN/exfleetctl" "$@" --url "$API_URL"
}

# expect_exit CODE CMD...: CMD must exit with CODE; its stderr is in
# $WORK/expect.err afterwards.
expect_exit() {
	want=$1
	shift
	set +e
	"$@" >"$WORK/expect.out" 2>"$WORK/expect.err"
	got=$?
	set -e
	[ "$got" = "$want" ] || fail "$*: exit status $got, not $want: $(cat "$WORK/expect.err")"
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
