#!/bin/sh
# exfleet-loadgen keeps working: a few hundred simulated agents connect and
# are welcomed, ingest events that are all acknowledged, and come back by
# themselves after the collector is killed with -9 and restarted (storm).
. "$(dirname "$0")/lib.sh"

make_pki
start_collector
sed -i 's/^log_level = debug/log_level = info/' "$WORK/collector.ini"
lg() {
	"$BIN/exfleet-loadgen" --collector "127.0.0.1:$PORT" --pki "$WORK/pki" --quiet "$@"
}
field() { # field JSON_FILE KEY: a top-level or dotted number/bool, crudely
	tr -d ' \n' <"$1" | grep -o "\"$2\":[^,}]*" | head -n 1 | cut -d: -f2
}

lg --agents 300 --scenario connect --hold 2 --deadline 60 --json "$WORK/connect.json" \
	2>"$WORK/connect.log" || fail "connect: $(tail -n 5 "$WORK/connect.log")"
[ "$(field "$WORK/connect.json" goal_met)" = true ] || fail "connect: goal not met"
echo "connect: 300 welcomed in $(field "$WORK/connect.json" time_to_all_welcomed_s) s"

lg --agents 200 --scenario ingest --events-per-sec 20 --batch 10 --duration 5 --deadline 60 \
	--prefix INGEST --json "$WORK/ingest.json" 2>"$WORK/ingest.log" ||
	fail "ingest: $(tail -n 5 "$WORK/ingest.log")"
[ "$(field "$WORK/ingest.json" goal_met)" = true ] || fail "ingest: goal not met"
stored=$(sql "$WORK/collector.db" "SELECT COUNT(*) FROM events WHERE host_id LIKE 'INGEST%'")
acked=$(tr -d ' \n' <"$WORK/ingest.json" | grep -o '"events":{[^}]*' | grep -o '"acked":[0-9]*' | cut -d: -f2)
[ "$stored" -ge "$acked" ] || fail "ingest: $acked events acknowledged but only $stored stored"
echo "ingest: $acked events acknowledged, $stored stored"

lg --agents 300 --scenario storm --deadline 90 --prefix STORM --json "$WORK/storm.json" \
	>"$WORK/storm.out" 2>"$WORK/storm.log" &
lgpid=$!
wait_log "$WORK/storm.log" "storm: armed" 1 60
crash "$PID_collector"
sleep 1
start_collector "$PORT"
wait "$lgpid" || fail "storm: $(tail -n 5 "$WORK/storm.log")"
[ "$(field "$WORK/storm.json" recovered)" = 300 ] &&
	[ "$(field "$WORK/storm.json" within_deadline)" = true ] ||
	fail "storm: $(field "$WORK/storm.json" recovered) of 300 back"
echo "storm: 300 agents back in $(field "$WORK/storm.json" recovery_s) s"
echo "load_smoke: ok"
