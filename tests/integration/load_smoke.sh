#!/bin/sh
# exfleet-loadgen keeps working, every scenario at a few hundred agents:
# connect (welcomed and held), ingest (every event acknowledged), fanout (a
# signed command to each, every result acknowledged), promote (a wave broken
# at once, each host listed AFFECTED by the API), resume (every session comes
# back on its ticket), and storm (all back by themselves after the collector
# is killed with -9 and restarted, resuming with the tickets it sealed before).
. "$(dirname "$0")/lib.sh"

make_pki
start_collector
crash "$PID_collector"
sed -i 's/^log_level = debug/log_level = info/' "$WORK/collector.ini"
# A small store queue, so that sessions pause and resume on it: the relay's
# bookkeeping of a fan-out alone fills it.
printf '[store]\nqueue_high = 64\nqueue_low = 16\n' >>"$WORK/collector.ini"
run_collector "$WORK/collector.ini"
lg() {
	"$BIN/exfleet-loadgen" --collector "127.0.0.1:$PORT" --pki "$WORK/pki" --quiet "$@"
}
field() { # field JSON_FILE KEY: the first number/bool with that key, crudely
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

# fanout: the relay checks each command's signature, so every one must be
# an operator's; each result is stored and acknowledged.
lg --agents 200 --scenario fanout --store "$WORK/collector.db" --issue-after 0.2 --deadline 60 \
	--prefix FAN --json "$WORK/fanout.json" 2>"$WORK/fanout.log" ||
	fail "fanout: $(tail -n 5 "$WORK/fanout.log")"
[ "$(field "$WORK/fanout.json" commands_received)" = 200 ] || fail "fanout: commands not received"
results=$(sql "$WORK/collector.db" "SELECT COUNT(*) FROM commands WHERE host_id LIKE 'FAN%' AND state = 'succeeded'")
[ "$results" = 200 ] || fail "fanout: $results of 200 commands succeeded in the store"
echo "fanout: 200 results, p99 $(tr -d ' \n' <"$WORK/fanout.json" | grep -o '"result_acked_ms":{[^}]*' | grep -o '"p99":[0-9.]*' | cut -d: -f2) ms after issue"
# Each delivery and each result went on the audit log, and its chain holds.
use_operator "$WORK/pki" auditor viewer
ctl audit verify >"$WORK/verify.out" || fail "audit verify: $(cat "$WORK/verify.out")"
grep -q "the audit log is whole" "$WORK/verify.out" || fail "$(cat "$WORK/verify.out")"

# promote: the operators' view, through the API with a viewer certificate.
api=$(grep -o "HTTPS API for operators on [0-9.:]*" "$WORK/collector.log" | tail -n 1 | awk '{ print $NF }')
[ -n "$api" ] || fail "promote: the collector's log names no API address"
lg --agents 200 --scenario promote --api "$api" --issue-after 0.2 --deadline 60 \
	--prefix PROMO --json "$WORK/promote.json" 2>"$WORK/promote.log" ||
	fail "promote: $(tail -n 5 "$WORK/promote.log")"
[ "$(field "$WORK/promote.json" detected)" = 200 ] || fail "promote: not every host listed AFFECTED"
affected=$(sql "$WORK/collector.db" "SELECT COUNT(*) FROM hosts WHERE host_id LIKE 'PROMO%' AND status = 'AFFECTED' AND role = 5")
[ "$affected" = 200 ] || fail "promote: $affected of 200 hosts AFFECTED in the store"
echo "promote: 200 hosts AFFECTED, seen p99 $(tr -d ' \n' <"$WORK/promote.json" | grep -o '"detection_seen_ms":{[^}]*' | grep -o '"p99":[0-9.]*' | cut -d: -f2) ms after the auth events"

lg --agents 200 --scenario resume --deadline 60 --prefix RESUME --json "$WORK/resume.json" \
	2>"$WORK/resume.log" || fail "resume: $(tail -n 5 "$WORK/resume.log")"
tr -d ' \n' <"$WORK/resume.json" | grep -q '"resume":{[^}]*"resumed":200' ||
	fail "resume: not all 200 resumed: $(tr -d ' \n' <"$WORK/resume.json" | grep -o '"resume":{[^}]*')"
echo "resume: 200 back, all resumed"

lg --agents 300 --scenario storm --deadline 90 --prefix STORM --json "$WORK/storm.json" \
	>"$WORK/storm.out" 2>"$WORK/storm.log" &
lgpid=$!
wait_log "$WORK/storm.log" "storm: armed" 1 60
crash "$PID_collector"
sleep 1
run_collector "$WORK/collector.ini" "$PORT"
wait "$lgpid" || fail "storm: $(tail -n 5 "$WORK/storm.log")"
[ "$(field "$WORK/storm.json" recovered)" = 300 ] &&
	[ "$(field "$WORK/storm.json" within_deadline)" = true ] ||
	fail "storm: $(field "$WORK/storm.json" recovered) of 300 back"
# The tickets sealed before the crash still open: every agent resumed.
resumed=$(field "$WORK/storm.json" resumed)
[ "$resumed" -ge 300 ] || fail "storm: only $resumed handshakes resumed after the restart"
echo "storm: 300 agents back in $(field "$WORK/storm.json" recovery_s) s, $resumed resumed"
echo "load_smoke: ok"
