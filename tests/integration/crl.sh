#!/bin/sh
# Revocation without a restart. An agent looks at its CRL before each
# command: a revoked operator's command is refused at once. SIGHUP makes the
# collector read [tls] crl again: a damaged file changes nothing; after a
# revocation the agent's session is closed and its next connection refused,
# the other agent stays, and the API refuses the revoked operator.
. "$(dirname "$0")/lib.sh"

F=$WORK/fleet
"$BIN/exfleet-sim" create "$F" --hosts 2 --waves 1 --seed 13 --local-account-share 0 \
	--collector 127.0.0.1:9 --collector-name localhost >"$WORK/create.log"
set -- $(cd "$F/hosts" && ls | sed 's/\.json$//')
H1=$1 H2=$2
: >"$WORK/collector.log"
run_collector "$F/collector.ini"
for h in $H1 $H2; do
	point_agent "$F/agents/$h.ini" 100ms 500ms
	start "agent_$h" "$BIN/exfleet-agent" --config "$F/agents/$h.ini"
done
wait_log "$WORK/collector.log" "welcomed" 2
use_operator "$F/pki" rex
ctl hosts >/dev/null || fail "rex cannot read the hosts"

# A damaged CRL: refused with the file named, the one before stays.
cp "$F/pki/crl.pem" "$WORK/crl.good"
echo "not a CRL" >"$F/pki/crl.pem"
kill -HUP "$PID_collector"
wait_log "$WORK/collector.log" "SIGHUP: \[tls\] crl: .*crl.pem: cannot load CRL.*stays in force"
cp "$WORK/crl.good" "$F/pki/crl.pem"

# rex revoked, the collector not told yet: it takes rex's command, and the
# agent, which looks at its CRL before each command, refuses it.
"$BIN/exfleetctl" pki revoke rex --dir "$F/pki" >/dev/null
id=$(ctl queue "$H2" rescan)
wait_sql "$F/collector.db" "SELECT state FROM commands WHERE command_id = '$id'" rejected
wait_log "$WORK/agent_$H2.log" "\[tls\] crl .* read again for operators' commands"
wait_log "$WORK/agent_$H2.log" "command $id.*operator certificate revoked"

# H1 revoked too: in force at SIGHUP, no restart.
"$BIN/exfleetctl" pki revoke "$H1" --dir "$F/pki" >/dev/null
kill -HUP "$PID_collector"
wait_log "$WORK/collector.log" "SIGHUP: CRL .* read again: 2 certificates revoked; 1 agent session closed"
wait_log "$WORK/collector.log" "\[$H1 .*closed: certificate revoked: session closed"
# It comes back, with its ticket or without: refused each time.
wait_log "$WORK/collector.log" "certificate rejected: certificate revoked" 2
grep -q "\[$H2 .*closed" "$WORK/collector.log" && fail "$H2 lost its session"
kill -0 "$PID_collector" || fail "the collector stopped"
expect_exit 3 ctl hosts
use_operator "$F/pki" admin
ctl hosts --json | jq -e --arg h "$H2" 'map(select(.host_id == $h)) | length == 1' >/dev/null ||
	fail "admin cannot read the hosts after the reload"
echo "crl: ok"
