#!/bin/sh
# Commands travel to their host: at once when it is online, when it connects
# when it is not, and never once they have expired. Results come back and
# move each command to its final state; statuses follow what agents report.
# exfleetctl submits and reads them through the collector's API only.
. "$(dirname "$0")/lib.sh"

F=$WORK/fleet
"$BIN/exfleet-sim" create "$F" --hosts 2 --waves 1 --seed 11 --local-account-share 0 \
	--collector 127.0.0.1:9 --collector-name localhost >"$WORK/create.log"
set -- $(cd "$F/hosts" && ls | sed 's/\.json$//')
H1=$1 H2=$2
# Lists come two to a page here (the API refuses exfleetctl's limit=500):
# exfleetctl must fall back to the collector's page size and follow "next".
printf '\n[api]\npage_max = 2\n' >>"$F/collector.ini"
: >"$WORK/collector.log"
run_collector "$F/collector.ini"
for h in $H1 $H2; do
	point_agent "$F/agents/$h.ini" 100ms 500ms
done
# Commands are signed by the operator exfleet-sim made ("admin"), whose
# certificate also connects to the API.
use_operator "$F/pki" admin
queue() { ctl queue "$@"; }
# The collector takes commands only for hosts it knows: connected, or planned.
ctl waves import "$F/waves.csv" >/dev/null
state() {
	sql "$F/collector.db" "SELECT state FROM commands WHERE command_id = '$1'"
}
wait_state() {
	wait_sql "$F/collector.db" "SELECT state FROM commands WHERE command_id = '$1'" "$2" 20
}

start a1 "$BIN/exfleet-agent" --config "$F/agents/$H1.ini"
wait_sql "$F/collector.db" "SELECT status FROM hosts WHERE host_id = '$H1'" HEALTHY
# Connected, the agent runs its loop and one pool thread (it resolved the
# collector's name there), not libuv's default four.
threads=$(awk '/^Threads:/ { print $2 }' "/proc/$PID_a1/status")
[ "$threads" = 2 ] || fail "agent runs $threads threads, not 2"

# Online: delivered at once, the restart succeeds (dependents come along).
id=$(queue "$H1" restart MSExchangeIS)
wait_state "$id" succeeded
grep -q "command $id delivered" "$WORK/collector.log" || fail "no delivery logged"
steps=$(sql "$F/collector.db" "SELECT steps FROM command_results WHERE command_id = '$id'")
echo "$steps" | grep -q '"step":"stop","target":"MSExchangeES"' ||
	fail "MSExchangeES was not stopped before MSExchangeIS: $steps"

# Offline: it waits; an expired one never goes out.
id2=$(queue "$H2" rescan)
id3=$(queue "$H2" rescan --expires 1s)
sleep 2.5
[ "$(state "$id2")" = queued ] || fail "command for an offline host is $(state "$id2")"
wait_state "$id3" expired
start a2 "$BIN/exfleet-agent" --config "$F/agents/$H2.ini"
wait_state "$id2" succeeded
[ "$(state "$id3")" = expired ] || fail "an expired command went out"

# A viewer's signature does not make a command run: the collector checks it
# as the agent would and refuses it at submission (exit status 1, the reason
# said); nothing is stored or delivered (the agent's own refusal is tested in
# test_command).
"$BIN/exfleetctl" pki issue operator vera --role viewer --dir "$F/pki" >/dev/null
expect_exit 1 ctl queue "$H1" rescan --operator-cert "$F/pki/viewer/vera.crt" \
	--operator-key "$F/pki/viewer/vera.key"
grep -q "exfleetctl queue: envelope: signer 'vera' has role viewer, not operator" "$WORK/expect.err" ||
	fail "the refusal does not say why: $(cat "$WORK/expect.err")"
[ "$(sql "$F/collector.db" "SELECT COUNT(*) FROM commands")" = 3 ] ||
	fail "a refused command was stored"
# ... but the attempt is in the audit log: who submitted it, and why not.
[ "$(sql "$F/collector.db" "SELECT COUNT(*) FROM audit WHERE actor = 'admin'
	AND action = 'command.refused' AND detail LIKE '%signer ''vera'' has role viewer%'
	AND detail LIKE '%\"host_id\":\"$H1\"%'")" = 1 ] ||
	fail "the refused command is not audited: $(sql "$F/collector.db" "SELECT * FROM audit")"
# Submitting with a viewer's certificate is refused before any signature is
# looked at: 403, exit status 3, naming the certificate needed.
expect_exit 3 ctl queue "$H1" rescan --cert "$F/pki/viewer/vera.crt" --key "$F/pki/viewer/vera.key"
grep -q "'vera' has role viewer, which may only read" "$WORK/expect.err" ||
	fail "$(cat "$WORK/expect.err")"
grep -q "this needs an operator certificate" "$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
# Half a signer is a usage error.
expect_exit 2 ctl queue "$H1" rescan --operator-cert "$F/pki/viewer/vera.crt"

# What exfleetctl shows of commands: the list, one command with its steps.
ctl commands --host "$H1" >"$WORK/commands.txt"
grep -q "^$id  *$H1  *RESTART_SERVICES  *succeeded .* admin" "$WORK/commands.txt" ||
	fail "exfleetctl commands: $(cat "$WORK/commands.txt")"
ctl commands --state expired --csv >"$WORK/commands.csv"
head -n 1 "$WORK/commands.csv" | grep -q "^command_id,host_id,action,issuer," ||
	fail "commands --csv header: $(head -n 1 "$WORK/commands.csv")"
[ "$(grep -c "^$id3,$H2,RESCAN," "$WORK/commands.csv")" = 1 ] ||
	fail "commands --csv: $(cat "$WORK/commands.csv")"
[ "$(wc -l <"$WORK/commands.csv")" = 2 ] || fail "--state expired: $(cat "$WORK/commands.csv")"
ctl command "$id" >"$WORK/command.txt"
grep -q "stop  *MSExchangeES  *ok" "$WORK/command.txt" || fail "command: $(cat "$WORK/command.txt")"
ctl command "$id" --json | jq -e --arg id "$id" '.command_id == $id and .result.status == "COMMAND_SUCCEEDED"' \
	>/dev/null || fail "command --json"
ctl commands --json | jq -e 'type == "array" and length == 3' >/dev/null || fail "commands --json"

# The operator's view follows: promote H1, it is AFFECTED with evidence.
"$BIN/exfleet-sim" dcpromo "$F/hosts/$H1.json" >/dev/null
wait_sql "$F/collector.db" "SELECT status FROM hosts WHERE host_id = '$H1'" AFFECTED
ctl hosts --status affected >"$WORK/hosts.out"
grep -q "^$H1 .*AFFECTED .*ONLINE .*stopped: 1069" "$WORK/hosts.out" ||
	fail "exfleetctl hosts: $(cat "$WORK/hosts.out")"
[ "$(wc -l <"$WORK/hosts.out")" = 2 ] || fail "--status affected: $(cat "$WORK/hosts.out")"
ctl host "$H1" >"$WORK/host.txt"
grep -q "^status    AFFECTED since " "$WORK/host.txt" || fail "host: $(cat "$WORK/host.txt")"
grep -q "^role      domain controller of " "$WORK/host.txt" || fail "host: $(cat "$WORK/host.txt")"
grep -q "^  MSExchangeSA .*stopped .*exit 1069" "$WORK/host.txt" || fail "host: $(cat "$WORK/host.txt")"
ctl host "$H1" --json >"$WORK/host.json"
jq -e '.status == "AFFECTED" and (.evidence | length) > 0' "$WORK/host.json" >/dev/null ||
	fail "exfleetctl host --json: $(cat "$WORK/host.json")"
ctl hosts --csv >"$WORK/hosts.csv"
head -n 1 "$WORK/hosts.csv" | grep -q "^host_id,wave,site,planned_date,status," ||
	fail "hosts --csv header: $(head -n 1 "$WORK/hosts.csv")"
grep -q "^$H1,.*,AFFECTED,.*,ONLINE," "$WORK/hosts.csv" || fail "hosts --csv: $(cat "$WORK/hosts.csv")"
ctl hosts --json | jq -e 'type == "array" and length == 2' >/dev/null || fail "hosts --json"
ctl hosts --connectivity online --status healthy >"$WORK/online.txt"
grep -q "^$H2 .*HEALTHY .*ONLINE" "$WORK/online.txt" || fail "--connectivity: $(cat "$WORK/online.txt")"
grep -q "^$H1 " "$WORK/online.txt" && fail "--status healthy listed $H1"
# Events: the dcpromo's service failures, filtered and in every format.
ctl events --host "$H1" --source "Service Control Manager" --since 1h >"$WORK/events.txt"
grep -q "^[0-9T:-]*Z  *$H1  *Service Control Manager  *7000  *error" "$WORK/events.txt" ||
	fail "events: $(cat "$WORK/events.txt")"
grep -qv "Service Control Manager\|^TIME" "$WORK/events.txt" && fail "--source let others through"
ctl events --host "$H1" --limit 2 --json | jq -e 'type == "array" and length == 2' >/dev/null ||
	fail "events --limit 2 --json"
ctl events --host "$H1" --id 7000 --csv >"$WORK/events.csv"
head -n 1 "$WORK/events.csv" | grep -q "^time_generated,host_id,log,source,event_id," ||
	fail "events --csv header: $(head -n 1 "$WORK/events.csv")"
grep -q ",$H1,System,Service Control Manager,7000,EVENT_ERROR," "$WORK/events.csv" ||
	fail "events --csv: $(cat "$WORK/events.csv")"
[ "$(ctl events --until 2000-01-01 | head -n 1)" = "(no events match)" ] || fail "--until"
# An unknown host is an error that names it: exit status 1.
expect_exit 1 ctl host NOSUCH
grep -q "no host 'NOSUCH'" "$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
# The audit log holds each submission, delivery, expiry and result, chained.
ctl audit >"$WORK/audit.txt"
for want in "admin .*command.submitted.*\"command_id\":\"$id\"" \
	"$H1 .*command.result.*\"command_id\":\"$id\".*succeeded" \
	"collector .*command.expired.*$id3"; do
	grep -q "$want" "$WORK/audit.txt" || fail "audit lacks '$want': $(cat "$WORK/audit.txt")"
done
ctl audit --csv >"$WORK/audit.csv"
head -n 1 "$WORK/audit.csv" | grep -q "^id,at,actor,action,detail,prev_hash,hash" ||
	fail "audit --csv header: $(head -n 1 "$WORK/audit.csv")"
ctl audit --json --limit 1 | jq -e 'length == 1 and (.[0].hash | length) > 0' >/dev/null ||
	fail "audit --json --limit 1"
ctl audit verify >"$WORK/verify.out" || fail "audit verify: $(cat "$WORK/verify.out")"
grep -q "the audit log is whole" "$WORK/verify.out" || fail "$(cat "$WORK/verify.out")"
# Someone edits an entry: verify names it and fails.
sqlite3 "$F/collector.db" "UPDATE audit SET actor = 'mallory' WHERE id = 2"
expect_exit 1 ctl audit verify
grep -q "entry 2 does not match the chain" "$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
ctl audit verify --json 2>/dev/null | jq -e '.intact == false and .first_bad == 2' >/dev/null ||
	fail "audit verify --json"
echo "relay: ok"
