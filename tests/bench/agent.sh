#!/bin/sh
# Agent figures: resident memory idle and with a full 64 MiB spool, wakeups
# per minute when idle, and records per second from the host to the
# collector's store. Real binaries on loopback; bounded in time.
#   tests/bench/agent.sh BIN_DIR [RESULTS_JSON]
set -eu
BIN=$(cd "${1:-build/bin}" && pwd)
OUT=${2:-}
WORK=$(mktemp -d /tmp/exfleet-bench-agent-XXXXXX)
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
switches() { awk '/ctxt_switches/ { n += $2 } END { print n }' "/proc/$1/status"; }
stored() { sqlite3 -readonly "$F/collector.db" "SELECT COUNT(*) FROM events" 2>/dev/null || echo 0; }

F=$WORK/fleet
"$BIN/exfleet-sim" create "$F" --hosts 1 --waves 1 --seed 5 --collector 127.0.0.1:9 \
	--collector-name localhost >/dev/null
H=$(cd "$F/hosts" && ls | sed 's/\.json$//')
# Exchange as LocalSystem: after dcpromo every POP3 logon logs a 13003.
sed -i 's/"logon_account": ".*"/"logon_account": "LocalSystem"/' "$F/hosts/$H.json"
"$BIN/exfleet-sim" dcpromo "$F/hosts/$H.json" >/dev/null
sed -i 's/^listen = .*/listen = 127.0.0.1:0/' "$F/collector.ini"
"$BIN/exfleet-collector" --config "$F/collector.ini" 2>"$WORK/collector.log" &
CPID=$!
PIDS="$PIDS $CPID"
while ! grep -q "listening for agents" "$WORK/collector.log"; do sleep 0.1; done
PORT=$(grep "listening for agents" "$WORK/collector.log" | sed 's/.* on [^ ]*:\([0-9]*\),.*/\1/')
sed -i "s/^address = .*/address = 127.0.0.1:$PORT/" "$F/agents/$H.ini"
"$BIN/exfleet-agent" --config "$F/agents/$H.ini" 2>"$WORK/agent.log" &
APID=$!
PIDS="$PIDS $APID"
sleep 3

idle_rss=$(rss_kib "$APID")
s0=$(switches "$APID")
sleep 20
s1=$(switches "$APID")
wakeups=$(( (s1 - s0) * 3 ))

# Throughput: bursts of 4000 events, host file to collector's store.
rounds=5
start=$(date +%s.%N)
want=0
for i in $(seq $rounds); do
	"$BIN/exfleet-sim" logon "$F/hosts/$H.json" --pop3 4000 --imap 0 >/dev/null
	want=$((want + 4000))
	while [ "$(stored)" -lt "$want" ]; do sleep 0.05; done
done
end=$(date +%s.%N)
rate=$(awk -v n="$want" -v a="$start" -v b="$end" 'BEGIN { printf "%d", n / (b - a) }')
busy_rss=$(rss_kib "$APID")

# A full spool: the collector goes away and the host keeps logging.
kill -9 "$CPID"
target=$((64 * 1024 * 1024))
spool_bytes() { du -sb "$F/spool/$H" | cut -f1; }
start=$(date +%s)
while [ "$(spool_bytes)" -lt "$target" ] && [ $(( $(date +%s) - start )) -lt 240 ]; do
	"$BIN/exfleet-sim" logon "$F/hosts/$H.json" --pop3 4500 --imap 0 >/dev/null
	sleep 0.2
done
sleep 2
full_rss=$(rss_kib "$APID")
full_mib=$(( $(spool_bytes) / 1048576 ))
drops=$(grep -c "dropped" "$WORK/agent.log" || true)

printf '%-44s %s\n' "agent RSS, idle" "$idle_rss KiB" \
	"agent RSS, after $want events sent" "$busy_rss KiB" \
	"agent RSS, spool full ($full_mib MiB on disk)" "$full_rss KiB" \
	"agent wakeups per minute, idle" "$wakeups" \
	"events per second, host file to stored" "$rate" \
	"spool drop log lines while full" "$drops"
if [ -n "$OUT" ]; then
	printf '{"agent_rss_idle_kib": %s, "agent_rss_busy_kib": %s, "agent_rss_full_spool_kib": %s, "spool_mib": %s, "agent_wakeups_per_min_idle": %s, "agent_events_per_sec": %s}\n' \
		"$idle_rss" "$busy_rss" "$full_rss" "$full_mib" "$wakeups" "$rate" >"$OUT"
fi
