#!/bin/sh
# exfleetctl as a client of the collector's API: every command's --help,
# the exit status of each kind of failure (2 usage, 3 cannot reach or
# authenticate, 1 the operation failed) with a message that says what to do,
# ctl.ini and its precedence, and the dashboard's sign-in link.
. "$(dirname "$0")/lib.sh"

make_pki
P=$WORK/pki
"$BIN/exfleetctl" pki issue operator alice --role operator --dir "$P" >/dev/null
"$BIN/exfleetctl" pki issue operator vera --role viewer --dir "$P" >/dev/null
"$BIN/exfleetctl" pki issue operator rex --role operator --dir "$P" >/dev/null
"$BIN/exfleetctl" pki revoke rex --dir "$P" >/dev/null
"$BIN/exfleetctl" pki init --dir "$WORK/other" >/dev/null
"$BIN/exfleetctl" pki issue operator eve --role operator --dir "$WORK/other" >/dev/null
: >"$WORK/collector.log"
start_collector
use_operator "$P" alice

# ---- help: every command listed has its own, and it is what help CMD prints ----
commands=$("$BIN/exfleetctl" --help | sed -n '/^commands:/,/^$/p' | awk 'NF > 1 { print $1 }')
[ "$(echo "$commands" | wc -l)" -ge 12 ] || fail "exfleetctl --help lists: $commands"
for c in $commands; do
	"$BIN/exfleetctl" "$c" --help >"$WORK/help.txt" || fail "$c --help failed"
	head -n 1 "$WORK/help.txt" | grep -q "^usage: exfleetctl $c" || fail "$c --help: $(head -n 2 "$WORK/help.txt")"
	"$BIN/exfleetctl" help "$c" | cmp -s - "$WORK/help.txt" || fail "help $c differs from $c --help"
	if [ "$c" != pki ]; then
		grep -q -- "--url URL" "$WORK/help.txt" || fail "$c --help lacks the connection flags"
		grep -q "3 the collector" "$WORK/help.txt" || fail "$c --help lacks the exit status"
	fi
done
for c in hosts events commands audit; do
	"$BIN/exfleetctl" "$c" --help | grep -q -- "--json | --csv" || fail "$c --help lacks --csv"
done

# ---- 2: usage ----
expect_exit 2 "$BIN/exfleetctl"
expect_exit 2 "$BIN/exfleetctl" frobnicate
grep -q "unknown command" "$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
expect_exit 2 ctl hosts --status BROKEN
grep -q "'BROKEN' is not a status; see exfleetctl hosts --help" "$WORK/expect.err" ||
	fail "$(cat "$WORK/expect.err")"
expect_exit 2 ctl hosts --json --csv
grep -q "hosts: choose one of --json and --csv; see exfleetctl hosts --help" "$WORK/expect.err" ||
	fail "$(cat "$WORK/expect.err")"
expect_exit 2 ctl audit --json --csv
expect_exit 2 ctl waves list --csv --json
grep -q "waves list: choose one of --json and --csv; see exfleetctl waves --help" \
	"$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
expect_exit 2 ctl hosts --bogus
expect_exit 2 ctl host
expect_exit 2 ctl events --limit lots
grep -q "events: --limit 'lots' is not a number (0 for all); see exfleetctl events --help" \
	"$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
expect_exit 2 ctl audit --limit -1
expect_exit 2 ctl commands --limit 5x
expect_exit 2 ctl commands --state done
expect_exit 2 ctl queue EXCH001
expect_exit 2 ctl queue EXCH001 reboot
expect_exit 2 ctl hosts --timeout soon
expect_exit 2 ctl repair --account 'CORP\exsvc'
expect_exit 2 ctl audit verify --csv
expect_exit 2 "$BIN/exfleetctl" hosts --url "http://localhost:$API_PORT"
grep -q "is not an https:// URL" "$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"

# ---- connection settings: ctl.ini, flags over it, its errors ----
ctl hosts --json | jq -e '. == []' >/dev/null || fail "an empty fleet is not []"
ctl hosts --csv | head -n 1 | grep -q "^host_id,wave," || fail "hosts --csv has no header"
[ "$(ctl hosts)" = "(no hosts yet)" ] || fail "empty fleet: $(ctl hosts)"
# The file's url, overridden by the flag.
printf 'url = https://localhost:1\n' >>"$XDG_CONFIG_HOME/exfleet/ctl.ini"
ctl hosts >/dev/null || fail "--url did not override ctl.ini"
expect_exit 3 "$BIN/exfleetctl" hosts
grep -q "cannot reach the collector at https://localhost:1" "$WORK/expect.err" ||
	fail "ctl.ini's url was not used: $(cat "$WORK/expect.err")"
# ~ in a path is the home directory; relative paths are the file's.
mkdir -p "$WORK/home/.exfleet" "$WORK/conf"
cp "$P/operator/alice.crt" "$P/operator/alice.key" "$WORK/home/.exfleet/"
cp "$P/ca.crt" "$WORK/conf/"
cat >"$WORK/conf/ctl.ini" <<INI
[collector]
url = $API_URL
ca = ca.crt
cert = ~/.exfleet/alice.crt
key = ~/.exfleet/alice.key
timeout = 10s
INI
HOME=$WORK/home "$BIN/exfleetctl" hosts --config "$WORK/conf/ctl.ini" >/dev/null ||
	fail "--config with ~ and relative paths"
# A key others can read is refused, naming the file, line, section and key.
chmod 644 "$WORK/home/.exfleet/alice.key"
expect_exit 2 env HOME="$WORK/home" "$BIN/exfleetctl" hosts --config "$WORK/conf/ctl.ini"
grep -q "conf/ctl.ini:5: \[collector\] key: .*alice.key: private key is accessible by group or others" \
	"$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
expect_exit 2 ctl hosts --key "$WORK/home/.exfleet/alice.key" --cert "$WORK/home/.exfleet/alice.crt"
grep -q "run: chmod 600" "$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
# A config file named but missing is an error; a default one that is missing is not.
expect_exit 2 ctl hosts --config "$WORK/nosuch.ini"
grep -q "cannot read $WORK/nosuch.ini" "$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
XDG_CONFIG_HOME=$WORK/empty ctl hosts --ca "$P/ca.crt" --cert "$P/operator/alice.crt" \
	--key "$P/operator/alice.key" >/dev/null || fail "no default ctl.ini should be fine"
expect_exit 2 env XDG_CONFIG_HOME="$WORK/empty" "$BIN/exfleetctl" hosts --url "$API_URL"
grep -q "no CA certificate to check the collector: give --ca FILE, or set ca in \[collector\] of $WORK/empty/exfleet/ctl.ini" \
	"$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
printf '[collector]\nadress = x\n' >"$WORK/typo.ini"
expect_exit 2 ctl hosts --config "$WORK/typo.ini"
grep -q "typo.ini:2: \[collector\] unknown key 'adress'" "$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
use_operator "$P" alice

# ---- 3: cannot reach, or not accepted ----
# Nothing listens.
dead=$(random_port)
expect_exit 3 "$BIN/exfleetctl" hosts --url "https://localhost:$dead"
grep -q "cannot reach the collector at https://localhost:$dead: Connection refused; is exfleet-collector running" \
	"$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
# The collector's certificate is for localhost, not the address.
expect_exit 3 "$BIN/exfleetctl" hosts --url "https://127.0.0.1:$API_PORT"
grep -q "the collector's certificate does not name 127.0.0.1" "$WORK/expect.err" ||
	fail "$(cat "$WORK/expect.err")"
# Our CA is not the collector's.
expect_exit 3 ctl hosts --ca "$WORK/other/ca.crt"
grep -q "the collector's certificate is not from the CA in $WORK/other/ca.crt (unknown CA)" \
	"$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
# Our certificate is from another CA, or revoked: the collector hangs up.
expect_exit 3 ctl hosts --cert "$WORK/other/operator/eve.crt" --key "$WORK/other/operator/eve.key"
grep -q "refuses our certificate $WORK/other/operator/eve.crt (not from the deployment's CA, revoked" \
	"$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
grep -q "TLS handshake refused: unknown CA.*(operator eve)" "$WORK/collector.log" ||
	fail "the collector did not log eve's refusal"
expect_exit 3 ctl hosts --cert "$P/operator/rex.crt" --key "$P/operator/rex.key"
grep -q "TLS handshake refused: .*revoked.*(operator rex)" "$WORK/collector.log" ||
	fail "the collector did not log rex's revocation"
# A viewer reads, but may not post: 403, and which certificate is needed.
ctl hosts --cert "$P/viewer/vera.crt" --key "$P/viewer/vera.key" >/dev/null || fail "a viewer cannot read"
expect_exit 3 ctl queue EXCH001 rescan --cert "$P/viewer/vera.crt" --key "$P/viewer/vera.key"
grep -q "'vera' has role viewer, which may only read; this needs an operator certificate" \
	"$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
# A collector that accepts connections but never answers: --timeout.
kill -STOP "$PID_collector"
t0=$(date +%s)
set +e
ctl hosts --timeout 1s >/dev/null 2>"$WORK/timeout.err"
rc=$?
set -e
kill -CONT "$PID_collector"
[ "$rc" = 3 ] || fail "a silent collector: exit status $rc: $(cat "$WORK/timeout.err")"
[ $(($(date +%s) - t0)) -le 5 ] || fail "--timeout 1s took $(($(date +%s) - t0)) s"
grep -q "no answer to the TLS handshake within 1 s" "$WORK/timeout.err" || fail "$(cat "$WORK/timeout.err")"

# ---- 1: the collector answered no ----
expect_exit 1 ctl host NOSUCH
grep -q "^exfleetctl host: no host 'NOSUCH' has connected or is planned$" "$WORK/expect.err" ||
	fail "$(cat "$WORK/expect.err")"
expect_exit 1 ctl command 0123abcd
grep -q "no command '0123abcd'" "$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"
expect_exit 1 ctl queue NOSUCH rescan
grep -q "no host 'NOSUCH' has connected or is in a wave plan" "$WORK/expect.err" ||
	fail "$(cat "$WORK/expect.err")"
expect_exit 1 ctl events --since 2026-13-01
grep -q "since: '2026-13-01' is not a time" "$WORK/expect.err" || fail "$(cat "$WORK/expect.err")"

# ---- the dashboard's sign-in link ----
ctl dashboard >"$WORK/link.txt"
grep -q "^Open this link within 5 minutes; it works once:$" "$WORK/link.txt" || fail "$(cat "$WORK/link.txt")"
grep -q "^  $API_URL/signin?token=[A-Za-z0-9_-]*$" "$WORK/link.txt" || fail "$(cat "$WORK/link.txt")"
ctl dashboard --json --cert "$P/viewer/vera.crt" --key "$P/viewer/vera.key" >"$WORK/link.json"
jq -e --arg u "$API_URL/signin?token=" '(.url | startswith($u)) and .name == "vera" and .role == "viewer"' \
	"$WORK/link.json" >/dev/null || fail "dashboard --json: $(cat "$WORK/link.json")"
# The link a viewer got signs in once.
url=$(jq -r .url "$WORK/link.json")
code=$(curl -s -o /dev/null -w '%{http_code}' --resolve "localhost:$API_PORT:127.0.0.1" \
	--cacert "$P/ca.crt" "$url")
[ "$code" = 200 ] || fail "the sign-in link answered $code"
code=$(curl -s -o /dev/null -w '%{http_code}' --resolve "localhost:$API_PORT:127.0.0.1" \
	--cacert "$P/ca.crt" "$url")
[ "$code" = 410 ] || fail "a used sign-in link answered $code, not 410"

# pki list speaks JSON and CSV too; rex's revocation shows in both.
"$BIN/exfleetctl" pki list --dir "$P" --json >"$WORK/pki.json"
jq -e 'map(select(.name == "rex")) | length == 1 and .[0].status == "revoked"
	and (.[0].revoked_at | length) == 20' "$WORK/pki.json" >/dev/null ||
	fail "pki list --json: $(cat "$WORK/pki.json")"
jq -e 'map(select(.name == "alice"))[0] | .status == "valid" and .role == "operator"
	and .revoked_at == null' "$WORK/pki.json" >/dev/null || fail "pki list --json: alice"
"$BIN/exfleetctl" pki list --dir "$P" --csv >"$WORK/pki.csv"
[ "$(head -n 1 "$WORK/pki.csv")" = "serial,role,name,expires,status,revoked_at" ] ||
	fail "pki list --csv header: $(head -n 1 "$WORK/pki.csv")"
grep -q "^[0-9a-f]*,operator,rex,[0-9TZ:-]*,revoked,[0-9TZ:-]*$" "$WORK/pki.csv" ||
	fail "pki list --csv: $(cat "$WORK/pki.csv")"
[ "$(grep -c . "$WORK/pki.csv")" = "$(($(jq length "$WORK/pki.json") + 1))" ] ||
	fail "pki list --csv and --json disagree"
expect_exit 2 "$BIN/exfleetctl" pki list --dir "$P" --json --csv

# Agent keys are Ed25519 unless --algo says otherwise; a wrong --algo issues
# nothing.
"$BIN/exfleetctl" pki issue agent EXCH01 --dir "$P" >/dev/null
openssl pkey -in "$P/agent/EXCH01.key" -noout -text | grep -q "ED25519 Private-Key" ||
	fail "agent key is not Ed25519"
"$BIN/exfleetctl" pki issue agent EXCH02 --algo ecdsa --dir "$P" >/dev/null
openssl pkey -in "$P/agent/EXCH02.key" -noout -text | grep -q "ASN1 OID: prime256v1" ||
	fail "pki issue --algo ecdsa: agent key is not P-256"
expect_exit 2 "$BIN/exfleetctl" pki issue agent EXCH03 --algo rsa --dir "$P"
grep -q "algo 'rsa': use ecdsa or ed25519" "$WORK/expect.err" ||
	fail "pki issue --algo rsa: $(cat "$WORK/expect.err")"
[ ! -e "$P/agent/EXCH03.key" ] || fail "pki issue --algo rsa wrote a key"
echo "ctl: ok"
