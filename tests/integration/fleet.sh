#!/bin/sh
# A fleet of real agents (200 by default) on loopback. Before the migration
# every host is HEALTHY or, when an Exchange service runs as a local account,
# AT_RISK; after dcpromo of wave 1 every host of that wave is AFFECTED and the
# others are unchanged. Then the collector is killed with -9 while events
# pour in and restarted: all agents come back by themselves, and every
# forwarded event is stored exactly once.
. "$(dirname "$0")/lib.sh"

N=${EXFLEET_FLEET_HOSTS:-200}
F=$WORK/fleet
"$BIN/exfleet-sim" create "$F" --hosts "$N" --waves 4 --seed 42 --local-account-share 0.3 \
	--collector 127.0.0.1:9 --collector-name localhost >"$WORK/create.log"
hosts=$(cd "$F/hosts" && ls | sed 's/\.json$//')
: >"$WORK/collector.log"
printf '\n[agents]\nheartbeat = 2s\nmax_handshakes = 32\n' >>"$F/collector.ini"
run_collector "$F/collector.ini"
for h in $hosts; do
	point_agent "$F/agents/$h.ini" 200ms 2s
	start "agent_$h" "$BIN/exfleet-agent" --config "$F/agents/$h.ini"
done

# What each host should be, from the simulated hosts themselves.
local_account_hosts=$(grep -l '"logon_account": "\(\.\|EXCH[0-9]*\)\\\\' "$F"/hosts/*.json |
	sed 's|.*/||; s/\.json$//' | sort)
expect_before() {
	for h in $hosts; do
		if echo "$local_account_hosts" | grep -qx "$h"; then echo "$h AT_RISK"; else echo "$h HEALTHY"; fi
	done
}
observed() {
	sql "$F/collector.db" "SELECT host_id || ' ' || COALESCE(status, '-') FROM hosts ORDER BY host_id"
}
wait_statuses() {
	end=$(($(date +%s) + 90))
	while :; do
		observed >"$WORK/observed.txt"
		cmp -s "$WORK/observed.txt" "$1" && return 0
		if [ "$(date +%s)" -ge "$end" ]; then
			diff "$1" "$WORK/observed.txt" | head -20 >&2
			fail "statuses differ from $1"
		fi
		sleep 0.5
	done
}
expect_before >"$WORK/expected_before.txt"
wait_statuses "$WORK/expected_before.txt"
echo "before: $(grep -c AT_RISK "$WORK/expected_before.txt") AT_RISK, $(grep -c HEALTHY "$WORK/expected_before.txt") HEALTHY"

# Wave 1's member and standalone servers (a few hosts are domain controllers
# already, before any migration).
dcs=$(grep -l '"role": "\(backup\|primary\)_dc"' "$F"/hosts/*.json | sed 's|.*/||; s/\.json$//')
wave1=$(awk -F, 'NR > 1 && $2 == 1 { print $1 }' "$F/waves.csv" | grep -vxF "$dcs")
for h in $wave1; do "$BIN/exfleet-sim" dcpromo "$F/hosts/$h.json" >/dev/null; done
expect_before | while read -r h s; do
	if echo "$wave1" | grep -qx "$h"; then echo "$h AFFECTED"; else echo "$h $s"; fi
done >"$WORK/expected_after.txt"
wait_statuses "$WORK/expected_after.txt"
echo "after dcpromo of wave 1: $(grep -c AFFECTED "$WORK/expected_after.txt") AFFECTED"

# Events pour in from 20 hosts (LocalSystem, so POP3 logons log 13003)...
burst=$(echo "$hosts" | grep -vxF "$dcs" | tail -n 20)
for h in $burst; do
	sed -i 's/"logon_account": ".*"/"logon_account": "LocalSystem"/' "$F/hosts/$h.json"
	"$BIN/exfleet-sim" reboot "$F/hosts/$h.json" >/dev/null
	"$BIN/exfleet-sim" dcpromo "$F/hosts/$h.json" >/dev/null
	"$BIN/exfleet-sim" logon "$F/hosts/$h.json" --pop3 1000 --imap 0 >/dev/null &
	logons="${logons:-} $!"
done
end=$(($(date +%s) + 60))
while [ "$(sql "$F/collector.db" "SELECT COUNT(*) FROM events WHERE event_id = 13003")" -lt 500 ]; do
	if [ "$(date +%s)" -ge "$end" ]; then fail "the logon events did not arrive"; fi
	sleep 0.05
done
# ... and the collector dies in the middle.
crash "$PID_collector"
for p in $logons; do wait "$p"; done
echo "collector killed with $(sql "$F/collector.db" "SELECT COUNT(*) FROM events WHERE event_id = 13003") of $((20 * 1000)) logon events stored"
restart=$(date +%s)
run_collector "$F/collector.ini" "$PORT"
wait_sql "$F/collector.db" "SELECT COUNT(*) FROM hosts WHERE last_seen >= ${restart}000" "$N" 60
echo "all $N agents back within $(($(date +%s) - restart)) s of the restart"
for h in $hosts; do
	n=$(grep -c '"type": "\(error\|warning\)"' "$F/hosts/$h.json" || true)
	wait_sql "$F/collector.db" \
		"SELECT COUNT(*) || '/' || COUNT(DISTINCT record_number) FROM events WHERE host_id = '$h'" \
		"$n/$n" 60
done
echo "every forwarded event stored exactly once"
echo "fleet: ok"
