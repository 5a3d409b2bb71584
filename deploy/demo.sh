#!/bin/sh
# The demo: a simulated fleet of Exchange 5.5 servers going through the first
# wave of a domain migration. A collector with SQLite and one agent per host
# run on this machine over mutual TLS; wave 1 is promoted with dcpromo (KB
# Q255269) and its POP3/IMAP users try to log on; the demo shows each host's
# status change, with its evidence, as the collector classifies it.
#
#   deploy/demo.sh BIN_DIR [--keep]   (make demo runs it with build/bin;
#                                      make demo KEEP=1 adds --keep)
# --keep leaves the collector and agents running at the end, with a sign-in
# link for the dashboard, until Ctrl-C.
# Environment: EXFLEET_DEMO_DIR (default /tmp/exfleet-demo), EXFLEET_DEMO_HOSTS
# (default 50), EXFLEET_DEMO_WAVES (default 3), EXFLEET_DEMO_PORT (default 17443,
# for agents; the collector's HTTPS API, which exfleetctl uses, is on the next
# port, or EXFLEET_DEMO_API_PORT).
set -eu

bin=$(cd "${1:-build/bin}" && pwd)
keep=0
case "${2:-}" in
--keep) keep=1 ;;
"") ;;
*) echo "usage: deploy/demo.sh BIN_DIR [--keep]" >&2; exit 2 ;;
esac
dir=${EXFLEET_DEMO_DIR:-/tmp/exfleet-demo}
hosts=${EXFLEET_DEMO_HOSTS:-50}
waves=${EXFLEET_DEMO_WAVES:-3}
port=${EXFLEET_DEMO_PORT:-17443}
api_port=${EXFLEET_DEMO_API_PORT:-$((port + 1))}
api_url=https://localhost:$api_port
pids=""

cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

say() { printf '\n== %s\n' "$*"; }
# exfleetctl talks to the collector's API as operator 'admin' (see ctl.ini below).
ctl() { "$bin/exfleetctl" "$@" --config "$dir/ctl.ini"; }
# The fleet as the API shows it (exfleetctl hosts --json), through a jq filter.
fleet() { ctl hosts --json 2>/dev/null | jq -r "$1" 2>/dev/null || true; }
by_status() { fleet 'group_by(.status)[] | "  \(.[0].status): \(length)"'; }
# Prints the collector's status changes logged since line $1 of its log.
changes() {
	tail -n "+$1" "$dir/logs/collector.log" | grep ' status: ' |
		sed 's/^\([^ ]*\)T\([0-9:]*\)\.[0-9]*Z .* status: /  \2  /' | cut -c1-160
}

rm -rf "$dir"
say "A simulated fleet: $hosts Exchange 5.5 servers in $waves waves, with a private CA"
"$bin/exfleet-sim" create "$dir" --hosts "$hosts" --waves "$waves" --seed 2026 \
	--collector "127.0.0.1:$port" --collector-name localhost
mkdir -p "$dir/logs"
# Short heartbeats so the demo's connectivity column is current.
sed -i 's/^\[collector\]$/&\nlog_level = info/' "$dir/collector.ini"
printf '\n[agents]\nheartbeat = 5s\n' >>"$dir/collector.ini"
printf '\n[api]\nlisten = 127.0.0.1:%s\n' "$api_port" >>"$dir/collector.ini"
cat >"$dir/ctl.ini" <<INI
[collector]
url = $api_url
ca = pki/ca.crt
cert = pki/operator/admin.crt
key = pki/operator/admin.key
INI

say "Starting the collector and $hosts agents"
"$bin/exfleet-collector" --config "$dir/collector.ini" 2>"$dir/logs/collector.log" &
pids="$pids $!"
sleep 0.5
for ini in "$dir"/agents/*.ini; do
	host=$(basename "$ini" .ini)
	"$bin/exfleet-agent" --config "$ini" 2>"$dir/logs/$host.log" &
	pids="$pids $!"
done
end=$(($(date +%s) + 30))
while [ "$(fleet '[.[] | select(.status != null)] | length')" != "$hosts" ]; do
	[ "$(date +%s)" -ge "$end" ] && break
	sleep 0.5
done
echo "$(fleet 'length') of $hosts hosts reported; before the migration:"
by_status

wave1=$(awk -F, 'NR > 1 && $2 == 1 { print $1 }' "$dir/waves.csv")
n1=$(echo "$wave1" | wc -w)
say "Wave 1 ($n1 hosts): dcpromo, then users try POP3 and IMAP"
mark=$(($(wc -l <"$dir/logs/collector.log") + 1))
for host in $wave1; do
	"$bin/exfleet-sim" dcpromo "$dir/hosts/$host.json" >/dev/null
	"$bin/exfleet-sim" logon "$dir/hosts/$host.json" --pop3 20 --imap 5 >/dev/null
done
echo "promoted: $(echo $wave1)"

say "What the collector saw, as it happened"
end=$(($(date +%s) + 20))
while :; do
	left=$(fleet '[.[] | select(.wave == "1" and .promoted_at == null)] | length')
	[ "$left" = 0 ] && break
	[ "$(date +%s)" -ge "$end" ] && break
	sleep 0.5
done
sleep 1
changes "$mark"

say "The fleet now (exfleetctl hosts)"
ctl hosts | cut -c1-150
echo
by_status

first=$(echo "$wave1" | head -n 1)
say "One host in detail (exfleetctl host $first)"
ctl host "$first" | sed -n '1,/^recent events/p' | cut -c1-150

say "The wave report before the repair (exfleetctl waves import, report waves)"
ctl waves import "$dir/waves.csv"
ctl report waves | sed -n '1,/^Hosts that need attention/p' | grep -v '^Hosts that need' | cut -c1-150

say "The repair of wave 1 (exfleetctl repair --wave 1, signed by operator 'admin')"
ctl repair --wave 1 --account 'CORP\exsvc' --password-file "$dir/exsvc.password" \
	--canary 3 --max-failure-rate 0 --crl "$dir/pki/crl.pem" | grep -v ' ok$' || true
sleep 2

say "The wave report after the repair"
ctl report waves | sed -n '1,/^Hosts that need attention/p' | grep -v '^Hosts that need' | cut -c1-150
ctl report waves --format html --output "$dir/wave-report.html"

if [ "$keep" = 1 ]; then
	say "The dashboard (exfleetctl dashboard): the collector runs until Ctrl-C"
	ctl dashboard
	echo "Your browser will not know the demo's private CA ($dir/pki/ca.crt):"
	echo "import it, or accept the warning for this demo. From another machine:"
	echo "  ssh -L $api_port:127.0.0.1:$api_port THIS-HOST, then open the link there."
	echo "Another link: $bin/exfleetctl dashboard --config $dir/ctl.ini"
	echo "The wave report, as a page to mail or print: $dir/wave-report.html"
	echo "Press Ctrl-C to stop the collector and the $hosts agents."
	trap 'cleanup; echo; echo "Stopped. Data, configurations and logs are in $dir"; exit 0' INT TERM
	while :; do sleep 1; done
fi

cleanup
pids=""
say "Done. Data, configurations and logs are in $dir"
echo "The wave report, as a page to mail or print: $dir/wave-report.html"
echo "The dashboard: run 'make demo KEEP=1' (deploy/demo.sh $1 --keep) to keep this"
echo "collector running at the end, with a sign-in link, until Ctrl-C."
echo "Look again: start $bin/exfleet-collector --config $dir/collector.ini, then"
echo "  $bin/exfleetctl hosts --config $dir/ctl.ini"
