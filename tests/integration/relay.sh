#!/bin/sh
# Commands travel to their host: at once when it is online, when it connects
# when it is not, and never once they have expired. Results come back and
# move each command to its final state; statuses follow what agents report.
. "$(dirname "$0")/lib.sh"

F=$WORK/fleet
"$BIN/exfleet-sim" create "$F" --hosts 2 --waves 1 --seed 11 --local-account-share 0 \
	--collector 127.0.0.1:9 --collector-name localhost >"$WORK/create.log"
set -- $(cd "$F/hosts" && ls | sed 's/\.json$//')
H1=$1 H2=$2
: >"$WORK/collector.log"
run_collector "$F/collector.ini"
for h in $H1 $H2; do
	sed -i "s/^address = .*/address = 127.0.0.1:$PORT\nreconnect_min = 100ms\nreconnect_max = 500ms/" \
		"$F/agents/$h.ini"
done
ctl() { "$BIN/exfleetctl" "$@" --store "$F/collector.db"; }
# Commands are signed by the operator exfleet-sim made ("admin").
queue() {
	ctl queue "$@" --operator-cert "$F/pki/operator/admin.crt" \
		--operator-key "$F/pki/operator/admin.key"
}
state() {
	sql "$F/collector.db" "SELECT state FROM commands WHERE command_id = '$1'"
}
wait_state() {
	wait_sql "$F/collector.db" "SELECT state FROM commands WHERE command_id = '$1'" "$2" 20
}

start a1 "$BIN/exfleet-agent" --config "$F/agents/$H1.ini"
wait_sql "$F/collector.db" "SELECT status FROM hosts WHERE host_id = '$H1'" HEALTHY

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
# as the agent would and does not deliver it (the agent's own refusal is
# tested in test_command).
"$BIN/exfleetctl" pki issue operator vera --role viewer --dir "$F/pki" >/dev/null
id4=$(ctl queue "$H1" rescan --operator-cert "$F/pki/viewer/vera.crt" \
	--operator-key "$F/pki/viewer/vera.key")
wait_state "$id4" rejected
grep -q "command $id4 for $H1 refused, not delivered: signer 'vera' has role viewer, not operator" \
	"$WORK/collector.log" || fail "the collector did not say why it refused $id4"
grep -q "command $id4 delivered" "$WORK/collector.log" && fail "a viewer's command was delivered"
# Unsigned is refused by exfleetctl itself.
ctl queue "$H1" rescan 2>"$WORK/unsigned.err" && fail "an unsigned command was queued"
grep -q "commands are signed" "$WORK/unsigned.err" || fail "$(cat "$WORK/unsigned.err")"

# The operator's view follows: promote H1, it is AFFECTED with evidence.
"$BIN/exfleet-sim" dcpromo "$F/hosts/$H1.json" >/dev/null
wait_sql "$F/collector.db" "SELECT status FROM hosts WHERE host_id = '$H1'" AFFECTED
ctl hosts --status affected >"$WORK/hosts.out"
grep -q "^$H1 .*AFFECTED .*ONLINE .*stopped: 1069" "$WORK/hosts.out" ||
	fail "exfleetctl hosts: $(cat "$WORK/hosts.out")"
ctl host "$H1" --json >"$WORK/host.json"
grep -q '"status": "AFFECTED"' "$WORK/host.json" || fail "exfleetctl host --json lacks the status"
# An unknown host is an error that names it.
ctl host NOSUCH >/dev/null 2>"$WORK/err.out" && fail "exfleetctl host NOSUCH succeeded"
grep -q "no host 'NOSUCH'" "$WORK/err.out" || fail "$(cat "$WORK/err.out")"
# The audit log holds each submission, delivery, expiry and result, chained.
ctl audit >"$WORK/audit.txt"
for want in "admin .*command.submitted.*\"command_id\":\"$id\"" \
	"$H1 .*command.result.*\"command_id\":\"$id\".*succeeded" \
	"collector .*command.expired.*$id3" \
	"collector .*command.rejected.*$id4"; do
	grep -q "$want" "$WORK/audit.txt" || fail "audit lacks '$want': $(cat "$WORK/audit.txt")"
done
ctl audit verify >"$WORK/verify.out" || fail "audit verify: $(cat "$WORK/verify.out")"
grep -q "the audit log is whole" "$WORK/verify.out" || fail "$(cat "$WORK/verify.out")"
# Someone edits an entry: verify names it and fails.
sqlite3 "$F/collector.db" "UPDATE audit SET actor = 'mallory' WHERE id = 2"
if ctl audit verify 2>"$WORK/verify.err"; then fail "audit verify missed an edited entry"; fi
grep -q "entry 2 does not match the chain" "$WORK/verify.err" || fail "$(cat "$WORK/verify.err")"
echo "relay: ok"
