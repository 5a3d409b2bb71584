#!/bin/sh
# The real collector and agents on loopback: mutual TLS, Hello/Welcome,
# heartbeats both ways, an agent whose certificate names another host is
# refused before it connects, a revoked agent is refused, and agents
# come back by themselves after the collector restarts.
. "$(dirname "$0")/lib.sh"

make_pki EXCH01 EXCH02 GONE01
"$BIN/exfleetctl" pki revoke GONE01 --dir "$WORK/pki" >/dev/null
start_collector
for a in EXCH01 EXCH02 GONE01; do
	make_agent_config "$a" "$a" "$PORT"
done
# An agent claiming to be EXCH03 with EXCH02's certificate.
make_agent_config IMPOSTOR EXCH03 "$PORT" EXCH02
for a in EXCH01 EXCH02 GONE01; do
	start "$a" "$BIN/exfleet-agent" --config "$WORK/$a.ini"
done

wait_log "$WORK/collector.log" "welcomed (" 2
wait_log "$WORK/EXCH01.log" "welcomed by collector localhost"
wait_log "$WORK/EXCH02.log" "welcomed by collector localhost"
# Heartbeats flow both ways (1 s interval).
wait_log "$WORK/collector.log" "\[EXCH01 .*received Heartbeat" 2
wait_log "$WORK/EXCH01.log" "received Heartbeat" 2

wait_log "$WORK/collector.log" "TLS handshake failed: certificate rejected: certificate revoked"

# The agent refuses to run with a certificate for another host (the
# collector's own check of Hello against the certificate is a unit test).
for mode in --check ""; do
	if "$BIN/exfleet-agent" --config "$WORK/IMPOSTOR.ini" $mode 2>"$WORK/check.out"; then
		fail "agent $mode accepted a host id that does not match the certificate"
	fi
	grep -q "host_id: 'EXCH03' does not match the certificate's subject 'EXCH02'" \
		"$WORK/check.out" || fail "unexpected message: $(cat "$WORK/check.out")"
done

# The collector's --check writes nothing (no store, no ticket keys), and
# refuses ticket keys that others may read.
{ cat "$WORK/collector.ini"; printf '[store]\npath = check.db\n'; } >"$WORK/check.ini"
"$BIN/exfleet-collector" --config "$WORK/check.ini" --check >"$WORK/check.out" 2>&1 ||
	fail "collector --check: $(cat "$WORK/check.out")"
[ ! -e "$WORK/check.db" ] && [ ! -e "$WORK/check.db.ticket-keys" ] ||
	fail "collector --check wrote files: $(ls "$WORK")"
[ -f "$WORK/collector.db.ticket-keys" ] || fail "the running collector has no ticket keys file"
chmod 644 "$WORK/collector.db.ticket-keys"
if "$BIN/exfleet-collector" --config "$WORK/collector.ini" --check >"$WORK/check.out" 2>&1; then
	fail "collector --check accepted ticket keys others may read"
fi
grep -q "ticket_keys: .*collector.db.ticket-keys" "$WORK/check.out" ||
	fail "unexpected message: $(cat "$WORK/check.out")"
chmod 600 "$WORK/collector.db.ticket-keys"

# Restart the collector: both agents reconnect on their own.
crash "$PID_collector"
wait_log "$WORK/EXCH01.log" "reconnecting in"
start_collector "$PORT"
wait_log "$WORK/EXCH01.log" "welcomed by collector localhost" 2
wait_log "$WORK/EXCH02.log" "welcomed by collector localhost" 2
echo "handshake: ok"
