#!/bin/sh
# The demo: a private CA, a collector and two agents on this machine, which
# complete mutual-TLS handshakes and exchange Hello, Welcome and heartbeats.
#
#   deploy/demo.sh BIN_DIR          (make demo runs it with build/bin)
# Environment: EXFLEET_DEMO_DIR (default /tmp/exfleet-demo), EXFLEET_DEMO_PORT
# (default 17443), EXFLEET_DEMO_SECONDS (default 8).
set -eu

bin=$(cd "${1:-build/bin}" && pwd)
dir=${EXFLEET_DEMO_DIR:-/tmp/exfleet-demo}
port=${EXFLEET_DEMO_PORT:-17443}
seconds=${EXFLEET_DEMO_SECONDS:-8}
pids=""

cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

say() { printf '\n== %s\n' "$*"; }

rm -rf "$dir"
mkdir -p "$dir/logs"

say "A private CA and certificates (exfleetctl pki)"
"$bin/exfleetctl" pki init --dir "$dir/pki"
"$bin/exfleetctl" pki issue collector localhost --dir "$dir/pki"
for host in EXCH01 EXCH02; do
	"$bin/exfleetctl" pki issue agent "$host" --dir "$dir/pki"
done

cat >"$dir/collector.ini" <<INI
[collector]
id = localhost
log_level = debug
listen = 127.0.0.1:$port

[agents]
heartbeat = 2s

[tls]
ca = pki/ca.crt
cert = pki/collector/localhost.crt
key = pki/collector/localhost.key
crl = pki/crl.pem
INI

wave=1
for host in EXCH01 EXCH02; do
	cat >"$dir/$host.ini" <<INI
[agent]
host_id = $host
site = paris
wave = $wave

[collector]
address = 127.0.0.1:$port
name = localhost

[tls]
ca = pki/ca.crt
cert = pki/agent/$host.crt
key = pki/agent/$host.key
INI
	wave=$((wave + 1))
done

say "Checking the configurations"
"$bin/exfleet-collector" --config "$dir/collector.ini" --check
for host in EXCH01 EXCH02; do
	"$bin/exfleet-agent" --config "$dir/$host.ini" --check
done

say "Starting the collector and two agents for $seconds s"
"$bin/exfleet-collector" --config "$dir/collector.ini" 2>"$dir/logs/collector.log" &
pids="$pids $!"
sleep 0.5
for host in EXCH01 EXCH02; do
	"$bin/exfleet-agent" --config "$dir/$host.ini" 2>"$dir/logs/$host.log" &
	pids="$pids $!"
done
sleep "$seconds"
cleanup
pids=""

say "Collector log"
cat "$dir/logs/collector.log"
for host in EXCH01 EXCH02; do
	say "Agent $host log"
	cat "$dir/logs/$host.log"
done

welcomed=$(grep -c 'welcomed (' "$dir/logs/collector.log" || true)
say "Result"
echo "$welcomed agents completed the mutual-TLS handshake and were welcomed."
echo "Certificates, configurations and logs are in $dir"
[ "$welcomed" -ge 2 ]
