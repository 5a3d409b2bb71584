#!/bin/sh
# The wave plan and the wave report through exfleetctl and the collector's
# API: a plan imports, a plan with bad lines reports every one with its line
# number and changes nothing, and the report comes out in every format.
. "$(dirname "$0")/lib.sh"

F=$WORK/fleet
"$BIN/exfleet-sim" create "$F" --hosts 6 --waves 2 --seed 3 --local-account-share 0 \
	--collector 127.0.0.1:9 --collector-name localhost >"$WORK/create.log"
: >"$WORK/collector.log"
run_collector "$F/collector.ini"
hosts=$(cd "$F/hosts" && ls | sed 's/\.json$//')
for h in $hosts; do
	point_agent "$F/agents/$h.ini"
	start "agent_$h" "$BIN/exfleet-agent" --config "$F/agents/$h.ini"
done
use_operator "$F/pki" admin
wait_sql "$F/collector.db" "SELECT COUNT(*) FROM hosts WHERE status IS NOT NULL" 6

# A plan that also names a host that never connected.
{ cat "$F/waves.csv"; printf 'GHOST01,2,2026-12-14\r\n'; } >"$WORK/plan.csv"
ctl waves import "$WORK/plan.csv" >"$WORK/import.out" || fail "import: $(cat "$WORK/import.out")"
grep -q "imported 7 hosts in 2 waves" "$WORK/import.out" || fail "$(cat "$WORK/import.out")"
ctl waves list >"$WORK/list1.txt"
n2=$(awk -F, 'NR > 1 && $2 == 2' "$WORK/plan.csv" | wc -l)
grep -q "^2  *2026-12-14  *$n2  *0 .* 1$" "$WORK/list1.txt" ||
	fail "wave 2 with its never-seen host: $(cat "$WORK/list1.txt")"
ctl hosts --wave 2 --connectivity never_seen >"$WORK/ghost.txt"
grep -q "^GHOST01  *2  *-  *-  *NEVER_SEEN" "$WORK/ghost.txt" || fail "GHOST01: $(cat "$WORK/ghost.txt")"
# The hosts with no status yet are GHOST01 alone.
ctl hosts --status never_seen --json | jq -e 'length == 1 and .[0].host_id == "GHOST01"' \
	>/dev/null || fail "hosts --status never_seen: $(ctl hosts --status never_seen --json)"
ctl waves list --csv >"$WORK/list.csv"
head -n 1 "$WORK/list.csv" | grep -q "^wave,planned_date,hosts,promoted,HEALTHY," ||
	fail "waves list --csv header: $(head -n 1 "$WORK/list.csv")"
ctl waves list --json | jq -e 'length == 2 and .[1].wave == "2" and .[1].by_connectivity.NEVER_SEEN == 1' \
	>/dev/null || fail "waves list --json: $(ctl waves list --json)"

# Bad lines: all reported, nothing imported (exit status 1).
printf 'host,wave,planned_date\nEXCH001,1,2026-02-30\nEXCH 002,1,\nEXCH003,,2026-12-07\nEXCH001,2,\n' \
	>"$WORK/bad.csv"
expect_exit 1 ctl waves import "$WORK/bad.csv"
for want in "bad.csv:2: planned_date: '2026-02-30' is not a date" "bad.csv:3: host: 'EXCH 002'" \
	"bad.csv:4: wave: empty" "bad.csv:5: host EXCH001 is already in wave 1 (line 2)" \
	"4 errors in the plan; nothing was imported"; do
	grep -qF "$want" "$WORK/expect.err" || fail "missing '$want' in: $(cat "$WORK/expect.err")"
done
ctl waves list >"$WORK/list2.txt"
cmp -s "$WORK/list1.txt" "$WORK/list2.txt" || fail "a failed import changed the plan"
# Importing needs an operator: a viewer is refused (exit status 3).
"$BIN/exfleetctl" pki issue operator vera --role viewer --dir "$F/pki" >/dev/null
expect_exit 3 ctl waves import "$WORK/plan.csv" --cert "$F/pki/viewer/vera.crt" \
	--key "$F/pki/viewer/vera.key"
grep -q "which may only read; this needs an operator certificate" "$WORK/expect.err" ||
	fail "$(cat "$WORK/expect.err")"
# A missing file is the operation failing, not the collector's fault.
expect_exit 1 ctl waves import "$WORK/nosuch.csv"
expect_exit 2 ctl waves import
expect_exit 2 ctl waves frobnicate

# Promote wave 1, then report in every format.
for h in $(awk -F, 'NR > 1 && $2 == 1 { print $1 }' "$F/waves.csv"); do
	"$BIN/exfleet-sim" dcpromo "$F/hosts/$h.json" >/dev/null 2>&1 || true
done
n1=$(awk -F, 'NR > 1 && $2 == 1' "$F/waves.csv" | wc -l)
wait_sql "$F/collector.db" "SELECT COUNT(*) FROM hosts WHERE status = 'AFFECTED'" "$n1"
ctl report waves >"$WORK/report.txt"
grep -q "^1 .* $n1 .* $n1 " "$WORK/report.txt" || fail "report: $(head -8 "$WORK/report.txt")"
ctl report waves --format csv --output "$WORK/report.csv" 2>/dev/null
grep -q "^wave,planned_first" "$WORK/report.csv" || fail "csv header: $(head -1 "$WORK/report.csv")"
ctl report waves --format json --output "$WORK/report.json" 2>/dev/null
jq -e '.total.hosts == 7' "$WORK/report.json" >/dev/null || fail "json: hosts: $(head -c 300 "$WORK/report.json")"
ctl report waves --json --wave 2 | jq -e --argjson n "$n2" '.total.hosts == $n and (.waves | length) == 1' \
	>/dev/null || fail "--json --wave 2"
ctl report waves --format html --output "$WORK/report.html" 2>/dev/null
grep -q "<svg" "$WORK/report.html" || fail "html has no chart"
grep -q "GHOST01" "$WORK/report.html" || fail "html lacks the never-seen host"
if grep -q '<script\|src="http\|href="http' "$WORK/report.html"; then fail "html is not standalone"; fi
# --output is written whole or not at all: a failed request leaves the old file.
cp "$WORK/report.html" "$WORK/before.html"
expect_exit 1 ctl report waves --wave 9 --format html --output "$WORK/report.html"
grep -q "no host is in wave '9'" "$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
cmp -s "$WORK/before.html" "$WORK/report.html" || fail "a failed report changed the file"
expect_exit 2 ctl report waves --format pdf
expect_exit 2 ctl report hosts
echo "waves: ok"
