#!/bin/sh
# The demo: a simulated fleet (exfleet-sim), a collector with SQLite and one
# agent per host, all on this machine over mutual TLS. One host is promoted
# to a domain controller (KB Q255269) and its POP3 users try to log on; the
# demo shows what the collector stored.
#
#   deploy/demo.sh BIN_DIR          (make demo runs it with build/bin)
# Environment: EXFLEET_DEMO_DIR (default /tmp/exfleet-demo), EXFLEET_DEMO_HOSTS
# (default 4), EXFLEET_DEMO_PORT (default 17443).
set -eu

bin=$(cd "${1:-build/bin}" && pwd)
dir=${EXFLEET_DEMO_DIR:-/tmp/exfleet-demo}
hosts=${EXFLEET_DEMO_HOSTS:-4}
port=${EXFLEET_DEMO_PORT:-17443}
pids=""

cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

say() { printf '\n== %s\n' "$*"; }
db() { sqlite3 -readonly "$dir/collector.db" "$@"; }

rm -rf "$dir"
say "A simulated fleet of $hosts Exchange 5.5 servers, with a private CA"
"$bin/exfleet-sim" create "$dir" --hosts "$hosts" --waves 2 --seed 1 \
	--collector "127.0.0.1:$port" --collector-name localhost
mkdir -p "$dir/logs"

say "Starting the collector and $hosts agents"
"$bin/exfleet-collector" --config "$dir/collector.ini" 2>"$dir/logs/collector.log" &
pids="$pids $!"
sleep 0.5
for ini in "$dir"/agents/*.ini; do
	host=$(basename "$ini" .ini)
	"$bin/exfleet-agent" --config "$ini" 2>"$dir/logs/$host.log" &
	pids="$pids $!"
done
sleep 2
grep "welcomed" "$dir/logs/collector.log" | sed 's/^[^ ]* //'

first=$(cd "$dir/hosts" && ls | head -n 1 | sed 's/\.json$//')
say "dcpromo on $first, then a reboot and 20 POP3 logons"
"$bin/exfleet-sim" dcpromo "$dir/hosts/$first.json"
"$bin/exfleet-sim" logon "$dir/hosts/$first.json" --pop3 20 --imap 5
sleep 2

say "What the collector stored"
db -header -column "SELECT host_id, site, wave, CASE WHEN role >= 5 THEN 'DC' ELSE 'member' END AS role,
	highest_seq AS records FROM hosts ORDER BY host_id"
echo
db -header -column "SELECT name, CASE state WHEN 4 THEN 'running' WHEN 1 THEN 'stopped' ELSE state END AS state,
	win32_exit_code AS exit, logon_account, account_status FROM services WHERE host_id = '$first'"
echo
db -header -column "SELECT source, event_id, COUNT(*) AS n FROM events WHERE host_id = '$first'
	GROUP BY source, event_id ORDER BY n DESC"
cleanup
pids=""
say "Data and logs are in $dir"
