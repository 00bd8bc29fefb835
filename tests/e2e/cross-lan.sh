#!/usr/bin/env bash
# End to end: pods in two LANs reach each other by pod IP through edgeway, same-LAN
# traffic never enters the tunnel, and spoofers and outsiders are refused.
#
#   lan-a (198.51.100.0/24)                          lan-b (203.0.113.0/24)
#   A1 (pods 10.244.1.0/24) ─┐                    ┌─ B1 (pods 10.244.3.0/24)
#   A2 (pods 10.244.2.0/24) ─┴─ switch ── R ──────┘
# R routes the underlays but not the pod CIDRs; A1 and A2 route each other's pods natively.
source "$(dirname "$0")/lib.sh"

log "building the topology"
for n in r a1 a2 b1; do make_ns "$n"; done
make_lan sw "a1 198.51.100.11/24" "a2 198.51.100.12/24" "r 198.51.100.1/24"
in_ns r ip link set eth0 name lana
link_ns r lanb 203.0.113.1/24 b1 eth0 203.0.113.21/24
in_ns r sysctl -qw net.ipv4.ip_forward=1
in_ns a1 ip route add default via 198.51.100.1
in_ns a2 ip route add default via 198.51.100.1
in_ns b1 ip route add default via 203.0.113.1
# lan-a is one segment: pod CIDRs route natively, as flannel host-gw would.
in_ns a1 ip route add 10.244.2.0/24 via 198.51.100.12
in_ns a2 ip route add 10.244.1.0/24 via 198.51.100.11

write_secret secret
write_conflist a1 10.244.1.0/24 fd00:10:244:1::/64
write_conflist a2 10.244.2.0/24
write_conflist b1 10.244.3.0/24 fd00:10:244:3::/64
agent_start a1 lan-a secret 198.51.100.11
A1_ID=$(peer_id a1)
BOOT="/ip4/198.51.100.11/tcp/7333/p2p/$A1_ID"
agent_start a2 lan-a secret 198.51.100.12 "$BOOT"
agent_start b1 lan-b secret 203.0.113.21 "$BOOT"
wait_for "a1 to see 2 members" 15 members a1 2

log "creating pods through bridge + host-local + edgeway"
PA1=$(pod_add a1 pa1)
PA2=$(pod_add a2 pa2)
PB1=$(pod_add b1 pb1)
T0=$(date +%s%N) # the ADD has returned on b1
wait_for "a1 to route to $PB1" 5 has_route a1 "$PB1"
LEARN_MS=$((($(date +%s%N) - T0) / 1000000))
log "a1 learned b1's pod in ${LEARN_MS} ms"
[ "$LEARN_MS" -le 2000 ] || fail "a1 learned the new pod after ${LEARN_MS} ms, over 2 s"
wait_for "b1 to route to $PA1" 5 has_route b1 "$PA1"
# Same segment and local pods are never in the table.
in_ns a1 ip route show table 7332 | grep "$PA2" >/dev/null && fail "a1 routes same-segment pod $PA2 through edgeway"
in_ns a1 ip rule | grep "from $PA1 lookup 7332" >/dev/null || fail "rule for $PA1 missing"

log "ping across LANs, both ways"
in_ns a1-pa1 ping -c 3 -i 0.2 -W 2 "$PB1" >/dev/null || fail "pa1 cannot ping pb1"
in_ns b1-pb1 ping -c 3 -i 0.2 -W 2 "$PA1" >/dev/null || fail "pb1 cannot ping pa1"

transfer() { # transfer FROM_NS TO_NS TO_IP: 20 MB over TCP, checksummed on both ends
  local from=$1 to=$2 ip=$3 port=$((20000 + RANDOM % 1000))
  head -c 20000000 /dev/urandom > "$EW_TMP/payload"
  local want got
  want=$(sha256sum < "$EW_TMP/payload" | cut -d' ' -f1)
  in_ns "$to" python3 -c '
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); s.settimeout(30)
c, _ = s.accept(); c.settimeout(30); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
print(h.hexdigest(), n)' "$port" > "$EW_TMP/recv.out" &
  local srv=$!
  EW_PIDS+=("$srv")
  sleep 0.5
  in_ns "$from" python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.sendall(open(sys.argv[3], "rb").read()); s.close()' "$ip" "$port" "$EW_TMP/payload" || fail "sending to $ip failed"
  wait "$srv" || fail "receiver on $to failed"
  got=$(cut -d' ' -f1 "$EW_TMP/recv.out")
  [ "$got" = "$want" ] || fail "checksum mismatch $from -> $to: $(cat "$EW_TMP/recv.out")"
  log "20 MB $from -> $to: checksum ok"
}
log "IPv6 pod addresses cross too"
PA1_6=$(pod_ip6 a1 pa1)
PB1_6=$(pod_ip6 b1 pb1)
[ -n "$PA1_6" ] && [ -n "$PB1_6" ] || fail "pods have no IPv6 address"
wait_for "a1 to route to $PB1_6" 5 has_route a1 "$PB1_6"
in_ns a1 ip -6 rule | grep "from $PA1_6 lookup 7332" >/dev/null || fail "IPv6 rule for $PA1_6 missing"
ping6s() { in_ns a1-pa1 ping -6 -c 1 -W 1 "$PB1_6"; }
wait_for "pa1 to ping pb1 over IPv6" 10 ping6s
in_ns b1-pb1 ping -6 -c 3 -i 0.2 -W 2 "$PA1_6" >/dev/null || fail "pb1 cannot ping pa1 over IPv6"

transfer a1-pa1 b1-pb1 "$PB1"
transfer b1-pb1 a1-pa1 "$PA1"
# The counters the next checks compare must be live: the transfers went through them.
# (With segmentation offload one counted packet may be a 64 KiB super-packet: count bytes.)
[ "$(metric a1 'edgeway_tunnel_bytes_total\{.*direction="rx"')" -ge 20000000 ] || fail "a1's rx byte counter did not count the transfer"
[ "$(metric b1 'edgeway_tunnel_bytes_total\{.*direction="tx"')" -ge 20000000 ] || fail "b1's tx byte counter did not count the transfer"

log "same-LAN traffic stays native"
before_a1=$(metric a1 '^edgeway_tunnel_packets_total\{')
before_a2=$(metric a2 '^edgeway_tunnel_packets_total\{')
in_ns a1-pa1 ping -c 5 -i 0.2 -W 2 "$PA2" >/dev/null || fail "pa1 cannot ping same-LAN pa2"
in_ns a2-pa2 ping -c 5 -i 0.2 -W 2 "$PA1" >/dev/null || fail "pa2 cannot ping same-LAN pa1"
[ "$(metric a1 '^edgeway_tunnel_packets_total\{')" = "$before_a1" ] || fail "a1 tunnel counters moved on same-LAN traffic"
[ "$(metric a2 '^edgeway_tunnel_packets_total\{')" = "$before_a2" ] || fail "a2 tunnel counters moved on same-LAN traffic"

log "a spoofed source is dropped and counted"
# b1 sends from an address no agent owns, through its own edgeway table.
in_ns b1 ip addr add 10.244.3.250/32 dev lo
in_ns b1 ip rule add from 10.244.3.250 lookup 7332 priority 7000
spoofed_before=$(metric a1 'edgeway_tunnel_drops_total\{reason="spoofed_source"\}')
in_ns b1 ping -c 3 -i 0.2 -W 1 -I 10.244.3.250 "$PA1" >/dev/null 2>&1 && fail "a spoofed ping got an answer"
spoofed_after=$(metric a1 'edgeway_tunnel_drops_total\{reason="spoofed_source"\}')
[ "$spoofed_after" -ge $((spoofed_before + 3)) ] || fail "spoofed packets not counted ($spoofed_before -> $spoofed_after)"
in_ns b1 ip rule del from 10.244.3.250 lookup 7332 priority 7000

log "an agent without the cluster credential is refused, and cannot inject packets"
INTRUDER_SRC=10.244.9.77
make_ns x1
link_ns r lanx 203.0.113.129/25 x1 eth0 203.0.113.130/25
in_ns r ip addr del 203.0.113.1/24 dev lanb
in_ns r ip addr add 203.0.113.1/25 dev lanb
in_ns b1 ip addr del 203.0.113.21/24 dev eth0
in_ns b1 ip addr add 203.0.113.21/25 dev eth0
in_ns b1 ip route replace default via 203.0.113.1
in_ns x1 ip route add default via 203.0.113.129
write_secret wrong-secret
fails_before=$(metric a1 '^edgeway_auth_failures_total$')
write_conflist x1 10.244.9.0/24
agent_start x1 lan-x wrong-secret 203.0.113.130 "$BOOT"
PX1=$(pod_add x1 px1)
refused() { [ "$(metric a1 '^edgeway_auth_failures_total$')" -gt "$fails_before" ]; }
wait_for "a1 to refuse x1" 15 refused
sleep 2
api a1 /v1/status | grep "$PX1" >/dev/null && fail "a1 learned the outsider's pod $PX1"
has_route a1 "$PX1" && fail "a1 routes to the outsider's pod"
in_ns x1-px1 ping -c 2 -i 0.2 -W 1 "$PA1" >/dev/null 2>&1 && fail "the outsider's pod reached pa1"
agent_kill x1
# A raw libp2p peer without the credential opens a packet stream to a1 and writes into it.
rx_before=$(metric a1 'edgeway_tunnel_packets_total\{.*direction="rx"')
refused_before=$(metric a1 'edgeway_tunnel_drops_total\{reason="not_member"\}')
in_ns x1 "$EW_BIN/edgeway-intruder" "$BOOT" "$INTRUDER_SRC" "$PA1" 5 >> "$EW_TMP/intruder.log" 2>&1 || true
# A stream from a connected peer gets 2 s to be backed by a membership proof.
refused() { [ "$(metric a1 'edgeway_tunnel_drops_total\{reason="not_member"\}')" -gt "$refused_before" ]; }
wait_for "a1 to refuse the intruder's packet stream ($(cat "$EW_TMP/intruder.log"))" 5 refused
[ "$(metric a1 'edgeway_tunnel_packets_total\{.*direction="rx"')" = "$rx_before" ] || fail "a1 accepted packets from the intruder"

log "deleting pb1 removes its route from a1 within 2 s"
pod_del b1 pb1
T0=$(date +%s%N) # the DEL has returned on b1
wait_for "a1 to drop $PB1" 5 no_route a1 "$PB1"
GONE_MS=$((($(date +%s%N) - T0) / 1000000))
log "route gone after ${GONE_MS} ms"
[ "$GONE_MS" -le 2000 ] || fail "route left after ${GONE_MS} ms, over 2 s"

log "kill -9 of b1's agent: traffic resumes after restart, with no manual step"
PB2=$(pod_add b1 pb2)
wait_for "a1 to route to $PB2" 5 has_route a1 "$PB2"
agent_kill b1 KILL
agent_start b1 lan-b secret 203.0.113.21 "$BOOT"
pings() { in_ns a1-pa1 ping -c 1 -W 1 "$PB2"; }
wait_for "pa1 to reach pb2 after b1's restart" 20 pings
api b1 /v1/attachments | grep pb2 >/dev/null || fail "b1 lost pb2's registration over kill -9"

log "a clean shutdown removes the routes and the TUN; pod rules stay with their pods"
agent_kill a1 TERM
gone() { ! in_ns a1 ip link show edgeway0; }
wait_for "a1's TUN to go away" 10 gone
[ -z "$(in_ns a1 ip route show table 7332)" ] || fail "a1 left routes behind: $(in_ns a1 ip route show table 7332)"
in_ns a1 ip rule | grep "from $PA1 lookup 7332" >/dev/null || fail "a clean agent stop removed pa1's rule"

log "PASS"
