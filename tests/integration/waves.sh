#!/bin/sh
# The wave plan and the wave report through exfleetctl: a plan imports, a
# plan with bad lines reports every one with its line number and changes
# nothing, and the report comes out in every format.
. "$(dirname "$0")/lib.sh"

F=$WORK/fleet
"$BIN/exfleet-sim" create "$F" --hosts 6 --waves 2 --seed 3 --local-account-share 0 \
	--collector 127.0.0.1:9 --collector-name localhost >"$WORK/create.log"
: >"$WORK/collector.log"
run_collector "$F/collector.ini"
hosts=$(cd "$F/hosts" && ls | sed 's/\.json$//')
for h in $hosts; do
	sed -i "s/^address = .*/address = 127.0.0.1:$PORT/" "$F/agents/$h.ini"
	start "agent_$h" "$BIN/exfleet-agent" --config "$F/agents/$h.ini"
done
ctl() { "$BIN/exfleetctl" "$@" --store "$F/collector.db"; }
wait_sql "$F/collector.db" "SELECT COUNT(*) FROM hosts WHERE status IS NOT NULL" 6

# A plan that also names a host that never connected.
{ cat "$F/waves.csv"; printf 'GHOST01,2,2026-12-14\r\n'; } >"$WORK/plan.csv"
ctl waves import "$WORK/plan.csv" >"$WORK/import.out" || fail "import: $(cat "$WORK/import.out")"
grep -q "imported 7 hosts" "$WORK/import.out" || fail "$(cat "$WORK/import.out")"
ctl waves list >"$WORK/list1.txt"
grep -q "^2 .*GHOST01 .*NEVER_SEEN" "$WORK/list1.txt" || fail "GHOST01 not listed: $(cat "$WORK/list1.txt")"

# Bad lines: all reported, nothing imported.
printf 'host,wave,planned_date\nEXCH001,1,2026-02-30\nEXCH 002,1,\nEXCH003,,2026-12-07\nEXCH001,2,\n' \
	>"$WORK/bad.csv"
if ctl waves import "$WORK/bad.csv" 2>"$WORK/bad.err"; then fail "a bad plan was imported"; fi
for want in "bad.csv:2: planned_date: '2026-02-30' is not a date" "bad.csv:3: host: 'EXCH 002'" \
	"bad.csv:4: wave: empty" "bad.csv:5: host EXCH001 is already in wave 1 (line 2)" \
	"4 bad lines; nothing was imported"; do
	grep -qF "$want" "$WORK/bad.err" || fail "missing '$want' in: $(cat "$WORK/bad.err")"
done
ctl waves list >"$WORK/list2.txt"
cmp -s "$WORK/list1.txt" "$WORK/list2.txt" || fail "a failed import changed the plan"

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
grep -q '"hosts": 7' "$WORK/report.json" || fail "json: hosts"
ctl report waves --format html --output "$WORK/report.html" 2>/dev/null
grep -q "<svg" "$WORK/report.html" || fail "html has no chart"
grep -q "GHOST01" "$WORK/report.html" || fail "html lacks the never-seen host"
if grep -q '<script\|src="http\|href="http' "$WORK/report.html"; then fail "html is not standalone"; fi
ctl report waves --format pdf 2>/dev/null && fail "--format pdf accepted"
echo "waves: ok"
