#!/usr/bin/env bash
# End to end through port-preserving NAT (see nat-lib.sh for the topology): the relay
# brings the two sites together, hole punching makes the path direct within 15 s, and then
# the relay carries none of the pod traffic. A TCP connection started on the relayed path
# survives the upgrade to direct.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nat-lib.sh"

log "building the topology (port-preserving NAT at both sites)"
nat_topology port-preserving
write_secret secret
nat_start_relay r 203.0.113.10
T0=$SECONDS
nat_start_nodes "$(relay_quic r 203.0.113.10)"

wait_for "a1's path to b1 to become direct" 15 path_is a1 b1 direct
log "a1 -> b1 is direct $((SECONDS - T0)) s after the agents started"
[ $((SECONDS - T0)) -le 15 ] || fail "hole punching took longer than 15 s"
log "ping across two NATs"
wait_for "pa1 to reach pb1" 10 pings a1-pa1 "$PB1"
in_ns b1-pb1 ping -c 3 -i 0.2 -W 2 "$PA1" >/dev/null || fail "pb1 cannot ping pa1"
wait_for "b1's path to a1 to become direct" 5 path_is b1 a1 direct
check_overlap

log "20 MB pa1 -> pb1 on the direct path, checksummed, while watching the relay's counters"
before=$(relay_bytes r)
transfer a1-pa1 b1-pb1 "$PB1" 20000000
through_relay=$(($(relay_bytes r) - before))
log "the relay received $through_relay bytes during the 20 MB transfer"
[ "$through_relay" -lt 2000000 ] || fail "the relay carried $through_relay bytes of a direct transfer"
path_is a1 b1 direct || fail "the path left direct during the transfer"

log "blocking the direct path at NA: the agents fall back to the relay"
in_ns na iptables -I FORWARD -s 203.0.113.2 -j DROP
in_ns na iptables -I FORWARD -d 203.0.113.2 -j DROP
wait_for "a1's path to b1 to become relayed" 20 path_is a1 b1 relayed
wait_for "pa1 to reach pb1 through the relay" 10 pings a1-pa1 "$PB1"

log "a 24 MB transfer paced over 12 s starts relayed; the direct path opens again after 3 s"
before=$(relay_bytes r)
transfer a1-pa1 b1-pb1 "$PB1" 24000000 2000000 &
xfer=$!
sleep 3
in_ns na iptables -D FORWARD -s 203.0.113.2 -j DROP
in_ns na iptables -D FORWARD -d 203.0.113.2 -j DROP
T1=$SECONDS
wait_for "a1's path to b1 to become direct again" 15 path_is a1 b1 direct
log "upgraded to direct $((SECONDS - T1)) s after the NA rules were lifted"
wait "$xfer" || fail "the TCP connection did not survive the upgrade from relayed to direct"
log "the transfer finished on one TCP connection, checksum ok; the relay carried $(($(relay_bytes r) - before)) bytes of it"
path_is a1 b1 direct || fail "the path is $(path_to a1 b1) after the upgrade"
metric a1 'edgeway_peer_path' >/dev/null
api a1 /metrics | grep -E '^edgeway_peer_path\{.*path="direct"' >/dev/null || fail "edgeway_peer_path shows no direct path on a1"
api a1 /metrics | grep -E '^edgeway_peer_rtt_seconds\{' >/dev/null || fail "edgeway_peer_rtt_seconds missing on a1"
log "PASS"
