#!/usr/bin/env bash
# End to end: a 5-minute relayed transfer is not cut by relay limits. libp2p's default
# circuit limits (2 minutes, 128 KiB) cut EdgeMesh's tunnels (kubeedge/edgemesh#400);
# edgeway's relay defaults must not. EW_LONG_SECS shortens it for local runs.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nat-lib.sh"
SECS=${EW_LONG_SECS:-300}
RATE=1000000

log "building the topology (symmetric NAT at lan-b: the path stays relayed)"
nat_topology symmetric
write_secret secret
nat_start_relay r 203.0.113.10
nat_start_nodes "$(relay_quic r 203.0.113.10)"
wait_for "pa1 to reach pb1" 20 pings a1-pa1 "$PB1"
path_is a1 b1 relayed || fail "a1's path to b1 is $(path_to a1 b1), not relayed"

log "one TCP connection, $((SECS * RATE / 1000000)) MB paced over $SECS s, through the relay"
T0=$SECONDS
before=$(relay_bytes r)
transfer a1-pa1 b1-pb1 "$PB1" $((SECS * RATE)) "$RATE"
took=$((SECONDS - T0))
through_relay=$(($(relay_bytes r) - before))
log "done after $took s; checksum ok; the relay received $through_relay bytes"
[ "$took" -ge "$((SECS - 5))" ] || fail "the transfer took $took s, not the planned $SECS s"
[ "$through_relay" -ge "$((SECS * RATE))" ] || fail "only $through_relay bytes went through the relay"
path_is a1 b1 relayed || fail "the path is $(path_to a1 b1) at the end"
log "PASS"
