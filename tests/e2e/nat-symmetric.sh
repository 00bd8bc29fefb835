#!/usr/bin/env bash
# End to end through a symmetric NAT (`MASQUERADE --random-fully` at NB; topology in
# nat-lib.sh): hole punching cannot work, so the path stays relayed and traffic still
# flows. A restarted relay, and a relay lost for good while a second one is up, both cost
# less than 10 s of traffic.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nat-lib.sh"

log "building the topology (symmetric NAT at lan-b)"
nat_topology symmetric
write_secret secret
# R2's identity is needed in the nodes' config; it stays down until the failover part.
nat_start_relay r2 203.0.113.20
R2_QUIC=$(relay_quic r2 203.0.113.20)
agent_kill r2
nat_start_relay r 203.0.113.10
nat_start_nodes "$(relay_quic r 203.0.113.10)" "$R2_QUIC"

log "ping across two NATs"
wait_for "pa1 to reach pb1" 20 pings a1-pa1 "$PB1"
in_ns b1-pb1 ping -c 3 -i 0.2 -W 2 "$PA1" >/dev/null || fail "pb1 cannot ping pa1"
path_is a1 b1 relayed || fail "a1's path to b1 is $(path_to a1 b1), not relayed"
check_overlap

log "20 MB pa1 -> pb1 through the relay, checksummed"
before=$(relay_bytes r)
transfer a1-pa1 b1-pb1 "$PB1" 20000000
through_relay=$(($(relay_bytes r) - before))
log "the relay received $through_relay bytes"
[ "$through_relay" -ge 20000000 ] || fail "only $through_relay bytes went through the relay"
log "hole punching is retried every 5 s and keeps failing: after 12 s the path is still relayed"
sleep 12
path_is a1 b1 relayed || fail "a1's path to b1 is $(path_to a1 b1) behind a symmetric NAT"
path_is b1 a1 relayed || fail "b1's path to a1 is $(path_to b1 a1) behind a symmetric NAT"
[ "$(metric r '^edgeway_relay_circuits$')" -ge 1 ] || fail "the relay reports no circuit"

# resumes_within SECONDS WHAT: pa1 reaches pb1 again within SECONDS; logs how long it took.
resumes_within() {
  local t0=$SECONDS
  wait_for "$2" "$1" pings a1-pa1 "$PB1"
  log "$2: traffic resumed after $((SECONDS - t0)) s"
}

log "kill -9 and restart of the relay"
agent_kill r KILL
agent_start r public secret 203.0.113.10
resumes_within 10 "relay restarted"
wait_for "b1 to ping pa1 again" 5 pings b1-pb1 "$PA1"
path_is a1 b1 relayed || fail "a1's path to b1 is $(path_to a1 b1) after the relay restart"

log "a second relay comes up; then the first is stopped for good"
agent_start r2 public secret 203.0.113.20
reserved_on_r2() { [ "$(metric r2 '^edgeway_relay_reservations$')" -ge 3 ]; }
wait_for "a1, a2 and b1 to reserve on r2" 20 reserved_on_r2
agent_kill r KILL
resumes_within 10 "first relay gone"
wait_for "b1 to ping pa1 again" 5 pings b1-pb1 "$PA1"
[ "$(metric r2 '^edgeway_relay_circuits$')" -ge 1 ] || fail "r2 carries no circuit after the failover"
before=$(relay_bytes r2)
transfer a1-pa1 b1-pb1 "$PB1" 5000000
log "5 MB through the second relay ($(($(relay_bytes r2) - before)) bytes received there)"
log "PASS"
