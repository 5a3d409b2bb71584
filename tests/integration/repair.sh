#!/bin/sh
# The central repair, end to end: wave 1 is promoted and AFFECTED; a wrong
# password stops at verify-credentials (1326) with nothing changed; exfleetctl
# repair with the right one brings the hosts back (REPAIRED, or
# NEEDS_SP_REINSTALL while POP3 users still fail, then --service-pack), and
# the password appears in no collector or agent file. exfleetctl reaches the
# collector through its API only.
. "$(dirname "$0")/lib.sh"

F=$WORK/fleet
"$BIN/exfleet-sim" create "$F" --hosts 3 --waves 1 --seed 21 --local-account-share 0 \
	--collector 127.0.0.1:9 --collector-name localhost >"$WORK/create.log"
: >"$WORK/collector.log"
run_collector "$F/collector.ini"
hosts=$(cd "$F/hosts" && ls | sed 's/\.json$//')
for h in $hosts; do
	point_agent "$F/agents/$h.ini"
	printf '\n[commands]\nservice_pack_installer = /opt/exchange/sp3/update.exe\n' \
		>>"$F/agents/$h.ini"
	start "agent_$h" "$BIN/exfleet-agent" --config "$F/agents/$h.ini"
done
wait_sql "$F/collector.db" "SELECT COUNT(*) FROM hosts WHERE sealing_key IS NOT NULL" 3
use_operator "$F/pki" admin
signer="--crl $F/pki/crl.pem"
status_of() { sql "$F/collector.db" "SELECT status FROM hosts WHERE host_id = '$1'"; }

dcs=$(grep -l '"role": "\(backup\|primary\)_dc"' "$F"/hosts/*.json | sed 's|.*/||; s/\.json$//' || true)
set -- $(echo "$hosts" | grep -vxF "${dcs:-NONE}")
H1=$1
for h in "$@"; do "$BIN/exfleet-sim" dcpromo "$F/hosts/$h.json" >/dev/null; done
wait_sql "$F/collector.db" "SELECT COUNT(*) FROM hosts WHERE status = 'AFFECTED'" $#

# A wrong password: the plan stops at verify-credentials, the host is unchanged.
cp "$F/hosts/$H1.json" "$WORK/before.json"
echo "not-the-password" >"$WORK/wrong.txt"
if ctl repair --host "$H1" --account 'CORP\exsvc' --password-file "$WORK/wrong.txt" $signer \
	>"$WORK/wrong.out" 2>&1; then
	fail "a repair with a wrong password succeeded"
fi
grep -q "verify-credentials failed: .*1326" "$WORK/wrong.out" || fail "$(cat "$WORK/wrong.out")"
cmp -s "$WORK/before.json" "$F/hosts/$H1.json" || fail "a failed verification changed the host"

# The repair: dry run first (a viewer may look), then for real.
"$BIN/exfleetctl" pki issue operator vera --role viewer --dir "$F/pki" >/dev/null
ctl repair --status AFFECTED --account 'CORP\exsvc' --dry-run --cert "$F/pki/viewer/vera.crt" \
	--key "$F/pki/viewer/vera.key" >"$WORK/dry.out"
grep -q "^$H1: verify-credentials CORP\\\\exsvc; grant-rights" "$WORK/dry.out" || fail "$(cat "$WORK/dry.out")"
[ "$(grep -c "^EXCH" "$WORK/dry.out")" = $# ] || fail "dry run: $(cat "$WORK/dry.out")"
ctl repair --status AFFECTED --account 'CORP\exsvc' --dry-run --json |
	jq -e --argjson n $# '.dry_run and (.hosts | length) == $n' >/dev/null || fail "--dry-run --json"
# A viewer cannot send the repair's commands: refused at the first, exit 3.
expect_exit 3 ctl repair --host "$H1" --account 'CORP\exsvc' --password-file "$F/exsvc.password" \
	--cert "$F/pki/viewer/vera.crt" --key "$F/pki/viewer/vera.key"
grep -q "this needs an operator certificate" "$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
ctl repair --status AFFECTED --account 'CORP\exsvc' --password-file "$F/exsvc.password" \
	--canary 1 $signer >"$WORK/repair.out" 2>&1 || fail "repair: $(cat "$WORK/repair.out")"
grep -q "$# hosts: $# repaired, 0 failed" "$WORK/repair.out" || fail "$(cat "$WORK/repair.out")"
grep -q "repairing 1 host (canary)" "$WORK/repair.out" || fail "no canary: $(cat "$WORK/repair.out")"
# After the canary, each round's steps went out under one signature, and
# each agent checked its own command of the batch.
if [ $# -gt 2 ]; then
	grep -h "VERIFY_CREDENTIALS, signed by admin with $(($# - 2)) others" \
		"$WORK"/agent_*.log | wc -l | grep -qx "$(($# - 1))" ||
		fail "the wave's steps were not signed as one batch: $(cat "$WORK"/agent_*.log)"
fi
for h in "$@"; do wait_sql "$F/collector.db" "SELECT status FROM hosts WHERE host_id = '$h'" REPAIRED; done

# POP3 users still fail on H1 until the service pack is reapplied.
"$BIN/exfleet-sim" logon "$F/hosts/$H1.json" --pop3 5 --imap 0 >/dev/null
wait_sql "$F/collector.db" "SELECT status FROM hosts WHERE host_id = '$H1'" NEEDS_SP_REINSTALL
ctl repair --service-pack --host "$H1" $signer --json >"$WORK/sp.json" 2>"$WORK/sp.err" ||
	fail "$(cat "$WORK/sp.err" "$WORK/sp.json")"
jq -e --arg h "$H1" '.repaired == 1 and .results[0].host_id == $h' "$WORK/sp.json" >/dev/null ||
	fail "--service-pack --json: $(cat "$WORK/sp.json")"
grep -q "reapply-service-pack  *ok" "$WORK/sp.err" || fail "progress: $(cat "$WORK/sp.err")"
wait_sql "$F/collector.db" "SELECT status FROM hosts WHERE host_id = '$H1'" REPAIRED
"$BIN/exfleet-sim" logon "$F/hosts/$H1.json" --pop3 5 --imap 0 >/dev/null
sleep 2
[ "$(status_of "$H1")" = REPAIRED ] || fail "after the service pack: $(status_of "$H1")"

# The password is in no file the collector or the agents wrote.
password=$(head -n 1 "$F/exsvc.password")
if grep -rlaF "$password" "$F" "$WORK"/*.log | grep -v "exsvc.password$"; then
	fail "the password was found in the files above"
fi
ctl report waves >"$WORK/report.txt"
grep -q "REPAIRED" "$WORK/report.txt" || fail "report: $(head -20 "$WORK/report.txt")"
echo "repair: ok"
