#!/bin/sh
# The agent never loses a record and the collector never stores one twice:
# events made while the collector is absent arrive once it starts; a
# collector killed with -9 mid-stream and restarted, and an agent killed with
# -9 mid-stream and restarted, end with every forwarded event stored exactly
# once (no record number twice, none missing).
. "$(dirname "$0")/lib.sh"

F=$WORK/fleet
"$BIN/exfleet-sim" create "$F" --hosts 3 --waves 1 --seed 7 --local-account-share 0.5 \
	--collector 127.0.0.1:9 --collector-name localhost >"$WORK/create.log"
hosts=$(cd "$F/hosts" && ls | sed 's/\.json$//')
for h in $hosts; do
	sed -i 's/^address = .*/&\nreconnect_min = 100ms\nreconnect_max = 500ms/' "$F/agents/$h.ini"
	sed -i 's/^\[probe\]$/&\nrescan = 1s/' "$F/agents/$h.ini"
done
set -- $hosts
H1=$1 H2=$2 H3=$3
# H2 and H3 run Exchange as LocalSystem: promotion leaves the services
# running, so every POP3 logon afterwards logs a 13003 (bursts to test with).
for h in $H2 $H3; do
	sed -i 's/"logon_account": ".*"/"logon_account": "LocalSystem"/' "$F/hosts/$h.json"
done

# Events the agent forwards by default: errors and warnings (13003 is an error).
expected() {
	grep -c '"type": "\(error\|warning\)"' "$F/hosts/$1.json" || true
}
stored() {
	sql "$F/collector.db" "SELECT COUNT(*) || '/' || COUNT(DISTINCT record_number) FROM events WHERE host_id = '$1'"
}
wait_all_stored() {
	for h in $hosts; do
		n=$(expected "$h")
		wait_sql "$F/collector.db" \
			"SELECT COUNT(*) || '/' || COUNT(DISTINCT record_number) FROM events WHERE host_id = '$h'" \
			"$n/$n" 60
	done
}
# Until the burst has begun to arrive (more than the few events before it).
wait_some_stored() {
	end=$(($(date +%s) + 30))
	while [ "$(sql "$F/collector.db" "SELECT COUNT(*) FROM events WHERE host_id = '$1'")" -lt 50 ]; do
		if [ "$(date +%s)" -ge "$end" ]; then fail "$1: the burst did not arrive"; fi
	done
}
start_agent() {
	start "agent_$1" "$BIN/exfleet-agent" --config "$F/agents/$1.ini"
}

# 1. The collector is absent: agents spool what happens.
for h in $hosts; do start_agent "$h"; done
"$BIN/exfleet-sim" dcpromo "$F/hosts/$H1.json" >/dev/null
"$BIN/exfleet-sim" reboot "$F/hosts/$H1.json" >/dev/null
wait_log "$WORK/agent_$H1.log" "reconnecting in"
sleep 1

# 2. It starts: everything arrives, once.
: >"$WORK/collector.log"
run_collector "$F/collector.ini"
for h in $hosts; do sed -i "s/^address = .*/address = 127.0.0.1:$PORT/" "$F/agents/$h.ini"; done
# The agents were started with the old address: restart them (nothing lost).
for h in $hosts; do eval "kill \$PID_agent_$h"; done
sleep 0.5
for h in $hosts; do start_agent "$h"; done
[ "$(expected "$H1")" -ge 6 ] || fail "dcpromo and a reboot logged only $(expected "$H1") errors"
wait_all_stored
echo "phase 2: $(stored "$H1") events of $H1 stored"

# 3. The collector dies with -9 in the middle of a burst and comes back.
"$BIN/exfleet-sim" dcpromo "$F/hosts/$H2.json" >/dev/null
"$BIN/exfleet-sim" logon "$F/hosts/$H2.json" --pop3 4000 --imap 0 >/dev/null
wait_some_stored "$H2"
crash "$PID_collector"
echo "phase 3: collector killed with $(stored "$H2") events of $H2 stored"
sleep 0.5
run_collector "$F/collector.ini" "$PORT"
wait_all_stored
echo "phase 3: $(stored "$H2") events of $H2 stored"

# 4. An agent dies with -9 in the middle of a burst and comes back.
"$BIN/exfleet-sim" dcpromo "$F/hosts/$H3.json" >/dev/null
"$BIN/exfleet-sim" logon "$F/hosts/$H3.json" --pop3 4000 --imap 0 >/dev/null
wait_some_stored "$H3"
eval "crash \$PID_agent_$H3"
echo "phase 4: agent killed with $(stored "$H3") events of $H3 stored"
sleep 0.3
start_agent "$H3"
wait_all_stored
echo "phase 4: $(stored "$H3") events of $H3 stored"

# Snapshots arrived too: the promoted hosts are domain controllers.
for h in $H1 $H2 $H3; do
	wait_sql "$F/collector.db" "SELECT role >= 5 FROM hosts WHERE host_id = '$h'" 1
done
echo "agent_durability: ok"
