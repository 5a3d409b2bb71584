#!/bin/sh
# The dashboard in a real browser. Headless Chromium signs in through a
# one-time link and loads the dashboard from a running collector; the fleet
# counts, the wave bars and the host table it renders must be the API's
# (/api/v1/summary, /api/v1/waves, the wave report, /api/v1/hosts), it must
# refresh without reloading, and a host's page must show its evidence and
# the exfleetctl command that repairs it, which exfleetctl then takes as it
# is (--dry-run). A used link gets the page that says so, a browser without
# the cookie the not-signed-in message.
# Screenshots go to the build directory: screenshots/dashboard*.png.

# Before lib.sh, whose exit trap would call a skip a failure.
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROMIUM" ]; then
	echo "dashboard: SKIPPED: no chromium (deploy/deps.sh installs Debian's)" >&2
	exit 77
fi
. "$(dirname "$0")/lib.sh"

SHOTS=$(dirname "$BIN")/screenshots
mkdir -p "$SHOTS" "$WORK/home"

# ---- a fleet with several statuses ----
# seed 5: wave 1 is EXCH001-003 (two local service accounts), wave 2 is
# EXCH004-006, EXCH006 on a local account (AT_RISK); GHOST01 is planned only.
F=$WORK/fleet
"$BIN/exfleet-sim" create "$F" --hosts 6 --waves 2 --seed 5 \
	--collector 127.0.0.1:9 --collector-name localhost >"$WORK/create.log"
printf '\n[agents]\nheartbeat = 1s\n' >>"$F/collector.ini"
: >"$WORK/collector.log"
run_collector "$F/collector.ini"
API=$(sed -n 's/.*HTTPS API for operators on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/collector.log" |
	tail -n 1)
[ -n "$API" ] || fail "the collector logged no API address"
hosts=$(cd "$F/hosts" && ls | sed 's/\.json$//')
for h in $hosts; do
	point_agent "$F/agents/$h.ini"
	start "agent_$h" "$BIN/exfleet-agent" --config "$F/agents/$h.ini"
done
wait_sql "$F/collector.db" "SELECT COUNT(*) FROM hosts WHERE status IS NOT NULL" 6

# api PATH [CURL ARGS]: the API as the operator's certificate sees it.
api() {
	path=$1
	shift
	curl -sS --max-time 10 --resolve "localhost:$API:127.0.0.1" --cacert "$F/pki/ca.crt" \
		--cert "$F/pki/operator/admin.crt" --key "$F/pki/operator/admin.key" "$@" \
		"https://localhost:$API$path"
}

# The operator's exfleetctl, configured as on a workstation (ctl.ini).
mkdir -p "$WORK/xdg/exfleet"
cat >"$WORK/xdg/exfleet/ctl.ini" <<INI
[collector]
url = https://localhost:$API
ca = $F/pki/ca.crt
cert = $F/pki/operator/admin.crt
key = $F/pki/operator/admin.key
INI
ctl() {
	XDG_CONFIG_HOME=$WORK/xdg "$BIN/exfleetctl" "$@"
}

{ cat "$F/waves.csv"; printf 'GHOST01,2,2026-12-14\r\n'; } >"$WORK/plan.csv"
api "/api/v1/waves?name=plan.csv" -X POST -H 'Content-Type: text/csv' \
	--data-binary @"$WORK/plan.csv" >"$WORK/import.json"
[ "$(jq -r .imported "$WORK/import.json")" = 7 ] || fail "import: $(cat "$WORK/import.json")"

for h in EXCH001 EXCH002 EXCH003; do "$BIN/exfleet-sim" dcpromo "$F/hosts/$h.json" >/dev/null; done
"$BIN/exfleet-sim" logon "$F/hosts/EXCH002.json" --pop3 2 --imap 1 >/dev/null
wait_sql "$F/collector.db" "SELECT COUNT(*) FROM hosts WHERE status = 'AFFECTED'" 3
wait_sql "$F/collector.db" "SELECT status FROM hosts WHERE host_id = 'EXCH006'" AT_RISK
# One agent goes away: OFFLINE after three heartbeats.
crash "$PID_agent_EXCH005"
end=$(($(date +%s) + 20))
until [ "$(api /api/v1/summary | jq -r .by_connectivity.OFFLINE)" = 1 ]; do
	[ "$(date +%s)" -lt "$end" ] || fail "EXCH005 never became OFFLINE"
	sleep 0.3
done

# ---- the browser ----
# browse NAME URL [FLAGS]: one headless run; the DOM as it stands after
# the virtual time budget in WORK/NAME.html, Chromium's log in NAME.err.
# Virtual time runs the page's timers without waiting for them; the
# timeout bounds the real time, and kills the whole process group.
browse() {
	name=$1 url=$2
	shift 2
	HOME=$WORK/home XDG_CONFIG_HOME=$WORK/home XDG_CACHE_HOME=$WORK/home \
		timeout -k 5 60 "$CHROMIUM" --headless=new --no-sandbox --disable-gpu \
		--ignore-certificate-errors --no-first-run --no-default-browser-check \
		--disable-extensions --disable-sync --disable-background-networking \
		--hide-scrollbars --window-size=1400,1000 --enable-logging=stderr --log-level=0 \
		--virtual-time-budget=15000 "$@" --dump-dom "$url" >"$WORK/$name.html" \
		2>"$WORK/$name.err" || fail "chromium ($name, $url): exit status $?"
	kill -0 "$PID_collector" 2>/dev/null ||
		fail "the collector died while the browser loaded $url"
}

# No script error, no CSP violation, nothing refused.
console_clean() {
	if grep "CONSOLE" "$WORK/$1.err" >"$WORK/$1.console"; then
		fail "$1: the page logged: $(cat "$WORK/$1.console")"
	fi
}

# tags NAME REGEX: each start tag in the DOM matching REGEX ("<div class=..."),
# one a line, without the '>'.
tags() {
	sed 's/</\n</g' "$WORK/$1.html" | sed -n 's/^\(<[a-z][^>]*\)>.*/\1/p' | grep -E -- "$2" || true
}
# attr NAME: the value of attribute NAME of the tag on stdin.
attr() {
	sed -n "s/.* $1=\"\([^\"]*\)\".*/\1/p"
}
# text NAME ID: the text in the element with that id (no nested markup).
text() {
	sed -n "s/.*id=\"$2\"[^>]*>\([^<]*\)<.*/\1/p" "$WORK/$1.html" | head -n 1
}
# The data-count-* attribute of a status: AT_RISK -> data-count-at-risk.
count_attr() {
	echo "data-count-$(echo "$1" | tr 'A-Z_' 'a-z-')"
}

ctl dashboard --json >"$WORK/link.json" || fail "exfleetctl dashboard failed"
link=$(jq -r .url "$WORK/link.json")
ORIGIN=${link%%/signin\?token=*}
[ "$ORIGIN" = "https://localhost:$API" ] || fail "no sign-in link: $(cat "$WORK/link.json")"

# Sign in: the link sets the cookie and forwards to /, which renders.
browse fleet "$link" --user-data-dir="$WORK/chrome" \
	--screenshot="$SHOTS/dashboard.png"
grep -q "signed in to the dashboard" "$WORK/collector.log" || fail "no sign-in in the log"
grep -q '<body data-state="ready"' "$WORK/fleet.html" ||
	fail "the dashboard did not render: $(tags fleet '^<body')"
console_clean fleet
[ -s "$SHOTS/dashboard.png" ] || fail "no screenshot"

# It refreshed (the budget spans more than one 10 s period) without
# reloading: one GET /, several summaries.
pages=$(grep -c "(operator, dashboard) GET / 200" "$WORK/collector.log" || true)
polls=$(grep -c "(operator, dashboard) GET /api/v1/summary 200" "$WORK/collector.log" || true)
[ "$pages" = 1 ] || fail "the page was loaded $pages times"
[ "$polls" -ge 2 ] || fail "the page read the summary $polls times: no refresh"
[ -n "$(tags fleet 'id="updated"' | attr data-updated)" ] || fail "no 'updated' time"
grep -q 'id="updated"[^>]*>updated [0-2][0-9]:[0-5][0-9]:[0-5][0-9]<' "$WORK/fleet.html" ||
	fail "no 'updated HH:MM:SS'"

# The API as the page read it; the fleet is still, so nothing moved since.
api /api/v1/summary >"$WORK/summary.json"
api "/api/v1/waves?limit=500" >"$WORK/waves.json"
api "/api/v1/waves/report?format=json" >"$WORK/report.json"
api "/api/v1/hosts?limit=500" >"$WORK/hosts.json"

# Fleet tiles: one per status (with NEVER_SEEN, the hosts with none) and
# per connectivity, each with the API's count.
want=$(jq -r .hosts "$WORK/summary.json")
got=$(tags fleet 'id="fleet-total"' | attr data-hosts)
[ "$got" = "$want" ] || fail "fleet total: page $got, API $want"
[ "$want" = 7 ] || fail "the API counts $want hosts, not 7"
for axis in status connectivity; do
	prefix=$([ $axis = status ] && echo st || echo cn)
	keys=$(jq -r ".by_$axis | keys[]" "$WORK/summary.json")
	[ -n "$keys" ] || fail "summary has no by_$axis"
	for k in $keys; do
		want=$(jq -r ".by_$axis.$k" "$WORK/summary.json")
		got=$(tags fleet "class=\"tile $prefix-$k[ \"]" | attr data-count)
		[ "$got" = "$want" ] || fail "$axis tile $k: page '$got', API $want"
	done
	n=$(tags fleet "class=\"tile $prefix-" | wc -l)
	[ "$n" = "$(echo "$keys" | wc -l)" ] || fail "$n $axis tiles for $(echo $keys)"
done
[ "$(jq -r .by_status.AFFECTED "$WORK/summary.json")" = 3 ] || fail "not 3 AFFECTED"

# Wave bars: per wave its hosts, promoted and done (the report's), a count
# per status, and one segment per non-zero count, its width the share.
nwaves=$(jq '.items | length' "$WORK/waves.json")
[ "$nwaves" = 2 ] || fail "the API has $nwaves waves"
[ "$(tags fleet 'class="wave"' | wc -l)" = "$nwaves" ] || fail "not $nwaves wave rows"
sed 's/<div class="wave" /\n&/g' "$WORK/fleet.html" >"$WORK/fleet.waves"
for i in $(seq 0 $((nwaves - 1))); do
	jq ".items[$i]" "$WORK/waves.json" >"$WORK/wave.json"
	w=$(jq -r .wave "$WORK/wave.json")
	total=$(jq -r .hosts "$WORK/wave.json")
	row=$(tags fleet "class=\"wave\" .*data-wave=\"$w\"")
	[ -n "$row" ] || fail "no bar for wave $w"
	[ "$(echo "$row" | attr data-total)" = "$total" ] || fail "wave $w: total"
	[ "$(echo "$row" | attr data-promoted)" = "$(jq -r .promoted "$WORK/wave.json")" ] ||
		fail "wave $w: promoted"
	done_want=$(jq -r --arg w "$w" '.waves[] | select(.wave == $w) | .done' "$WORK/report.json")
	[ "$(echo "$row" | attr data-done)" = "$done_want" ] ||
		fail "wave $w: done $(echo "$row" | attr data-done), report $done_want"
	# Hosts without a status (planned, never seen) are the rest.
	jq -r '.by_status | to_entries[] | "\(.key) \(.value)"' "$WORK/wave.json" >"$WORK/wave.counts"
	echo "NEVER_SEEN $((total - $(jq '[.by_status[]] | add' "$WORK/wave.json")))" >>"$WORK/wave.counts"
	grep "^<div class=\"wave\" [^>]*data-wave=\"$w\"" "$WORK/fleet.waves" >"$WORK/wave.html"
	while read -r st n; do
		got=$(echo "$row" | attr "$(count_attr "$st")")
		[ "$got" = "$n" ] || fail "wave $w $st: page '$got', API $n"
		seg=$(sed 's/</\n</g' "$WORK/wave.html" | grep "^<button [^>]*class=\"seg st-$st\"" || true)
		if [ "$n" = 0 ]; then
			[ -z "$seg" ] || fail "wave $w: a segment for $st, which has none"
			continue
		fi
		[ "$(echo "$seg" | attr data-count)" = "$n" ] || fail "wave $w $st: segment count"
		width=$(echo "$seg" | sed -n 's/.*style="width: \([0-9.]*\)%;".*/\1/p')
		awk -v got="$width" -v n="$n" -v t="$total" \
			'BEGIN { d = got - n * 100 / t; exit !(got != "" && d < 0.01 && d > -0.01) }' ||
			fail "wave $w $st: segment width '$width'%, want $n of $total"
	done <"$WORK/wave.counts"
done
grep -q 'class="wave" [^>]*data-wave="2"[^>]*data-count-never-seen="1"' "$WORK/fleet.html" ||
	grep -q 'class="wave" [^>]*data-count-never-seen="1"[^>]*data-wave="2"' "$WORK/fleet.html" ||
	fail "GHOST01 is not counted in wave 2"

# The host table: every host once, with the API's status.
[ "$(tags fleet '^<tr data-host=' | wc -l)" = "$(jq -r .total "$WORK/hosts.json")" ] ||
	fail "the table has $(tags fleet '^<tr data-host=' | wc -l) rows"
jq -r '.items[] | "\(.host_id) \(.status // "NEVER_SEEN")"' "$WORK/hosts.json" |
	while read -r h st; do
		got=$(tags fleet "^<tr data-host=\"$h\"" | attr data-status)
		[ "$got" = "$st" ] || fail "table: $h is '$got', API $st"
	done

# ---- a host's page, in the same browser (the cookie) ----
H=EXCH001 # promoted; its services logged on as EXCH001\exsvc, now gone
browse host "$ORIGIN/#/host/$H" --user-data-dir="$WORK/chrome" \
	--window-size=1400,1700 --screenshot="$SHOTS/dashboard-host.png"
console_clean host
[ "$(text host host-id)" = "$H" ] || fail "host page: '$(text host host-id)'"
head=$(tags host 'class="panel host-head')
[ "$(echo "$head" | attr data-status)" = AFFECTED ] || fail "host page status: $head"
api "/api/v1/hosts/$H" >"$WORK/host.json"
jq -r '.evidence[]' "$WORK/host.json" | head -n 3 | while read -r line; do
	grep -qF "<li>$(printf "%s" "$line" | sed 's/&/\&amp;/g; s/</\&lt;/g; s/>/\&gt;/g')</li>" \
		"$WORK/host.html" || fail "host page lacks evidence '$line'"
done
cmd="exfleetctl repair --host $H --account 'CORP\\exsvc'"
grep -qF "<code id=\"repair-command\">$cmd</code>" "$WORK/host.html" ||
	fail "no repair command '$cmd': $(sed -n 's/.*\(<code id="repair-command">[^<]*\).*/\1/p' \
		"$WORK/host.html")"
# The page's command as the operator would paste it into a shell.
shown=$(sed -n 's/.*<code id="repair-command">\([^<]*\)<\/code>.*/\1/p' "$WORK/host.html")
eval "ctl ${shown#exfleetctl } --dry-run" >"$WORK/dry.out" 2>&1 ||
	fail "the page's command: $(cat "$WORK/dry.out")"
grep -q "^$H: verify-credentials CORP\\\\exsvc; grant-rights" "$WORK/dry.out" &&
	grep -q "dry run: 1 host, nothing sent" "$WORK/dry.out" || fail "dry run: $(cat "$WORK/dry.out")"
for s in $(jq -r '.services[].name' "$WORK/host.json"); do
	[ -n "$(tags host "^<tr data-service=\"$s\"")" ] || fail "host page lacks service $s"
done
[ "$(tags host '^<tr data-command=' | wc -l)" = "$(jq '.commands.items | length' "$WORK/host.json")" ] ||
	fail "host page: commands"

# ---- what others see ----
# The link again: spent.
browse used "$link" --user-data-dir="$WORK/chrome-used"
grep -q "This sign-in link no longer works" "$WORK/used.html" &&
	grep -q "already been used" "$WORK/used.html" || fail "a used link: $(head -c 600 "$WORK/used.html")"
grep -q '<body data-state' "$WORK/used.html" && fail "a used link opened the dashboard"
# No cookie: the page says how to sign in, and shows nothing of the fleet.
browse anonymous "$ORIGIN/" --user-data-dir="$WORK/chrome-anonymous" \
	--screenshot="$SHOTS/dashboard-signed-out.png"
grep -q '<body data-state="signed-out"' "$WORK/anonymous.html" || fail "no signed-out state"
grep -q 'Not signed in: run <code>exfleetctl dashboard</code> on your' "$WORK/anonymous.html" ||
	fail "no not-signed-in message"
[ -z "$(tags anonymous 'class="tile ')" ] || fail "fleet tiles shown without signing in"
grep -q 'id="fleet-view" hidden' "$WORK/anonymous.html" || fail "the fleet view is not hidden"

# A signed-in browser asking for a page that does not exist gets a 404.
browse missing "$ORIGIN/no-such-page" --user-data-dir="$WORK/chrome"
api /healthz >/dev/null || fail "the collector stopped answering"
echo "dashboard: ok (screenshots in $SHOTS)"
