#!/usr/bin/env bash
# The NAT topology shared by the nat-*.sh end-to-end scripts. Source it after lib.sh.
#
#             public 203.0.113.0/24: relays R (.10) and R2 (.20)
#               │                               │
#   NA (.1, MASQUERADE)                         NB (.2, MASQUERADE [--random-fully])
#   lan-a 198.51.100.0/24                       lan-b 198.51.100.0/24 (the same range)
#   A1 .11 pods 10.244.1.0/24                   B1 .12 pods 10.244.3.0/24
#   A2 .12 pods 10.244.2.0/24
#
# The two private underlays overlap on purpose: B1 and A2 share 198.51.100.12, so a dial
# of B1's private address from LAN A reaches A2, and must not be taken for B1. There is no
# route between the LANs' private ranges. NB_NAT=symmetric makes NB use --random-fully,
# which behaves like a symmetric NAT.

# nat_topology NB_NAT: namespaces, links, NAT rules, and relay R's byte counters.
nat_topology() {
  local nb_nat=$1 n
  for n in r r2 na nb a1 a2 b1; do make_ns "$n"; done
  make_lan pub "r 203.0.113.10/24" "r2 203.0.113.20/24" "na 203.0.113.1/24" "nb 203.0.113.2/24"
  # make_lan names every node's port eth0; NA needs a second one for its LAN.
  in_ns na ip link set eth0 down
  in_ns na ip link set eth0 name wan
  in_ns na ip link set wan up
  make_lan swa "na 198.51.100.1/24" "a1 198.51.100.11/24" "a2 198.51.100.12/24"
  link_ns nb lan 198.51.100.1/24 b1 eth0 198.51.100.12/24
  for n in a1 a2 b1; do in_ns "$n" ip route add default via 198.51.100.1; done
  # lan-a is one segment: its pod CIDRs route natively, as flannel host-gw would.
  in_ns a1 ip route add 10.244.2.0/24 via 198.51.100.12
  in_ns a2 ip route add 10.244.1.0/24 via 198.51.100.11
  for n in na nb; do in_ns "$n" sysctl -qw net.ipv4.ip_forward=1; done
  in_ns na iptables -t nat -A POSTROUTING -s 198.51.100.0/24 -o "$(nat_wan na)" -j MASQUERADE
  if [ "$nb_nat" = symmetric ]; then
    in_ns nb iptables -t nat -A POSTROUTING -s 198.51.100.0/24 -o "$(nat_wan nb)" -j MASQUERADE --random-fully
  else
    in_ns nb iptables -t nat -A POSTROUTING -s 198.51.100.0/24 -o "$(nat_wan nb)" -j MASQUERADE
  fi
  # Like any home or carrier router, both drop what arrives unsolicited from the outside.
  # Without this, a hole-punching packet that reaches the router before its own peer's
  # first packet leaves is delivered to the router itself, and the conntrack entry it
  # leaves behind takes the port the outgoing packet needed: Linux then renumbers it.
  for n in na nb; do
    in_ns "$n" iptables -A INPUT -i "$(nat_wan "$n")" -m conntrack --ctstate NEW,INVALID -j DROP
    in_ns "$n" iptables -A FORWARD -i "$(nat_wan "$n")" -m conntrack --ctstate NEW,INVALID -j DROP
  done
  # Byte counters for what each relay receives from the two sites' public addresses.
  for n in r r2; do
    in_ns "$n" iptables -N EWRELAYED
    in_ns "$n" iptables -A INPUT -j EWRELAYED
    in_ns "$n" iptables -A EWRELAYED -s 203.0.113.1
    in_ns "$n" iptables -A EWRELAYED -s 203.0.113.2
  done
}

# nat_wan ROUTER: the router's interface on the public network.
nat_wan() {
  local dev
  dev=$(ip -n "$(ns "$1")" -o -4 addr show | awk '$4 ~ /^203\.0\.113\./ {print $2; exit}')
  echo "${dev%%@*}"
}

# relay_bytes RELAY: bytes the relay has received from both sites.
relay_bytes() {
  in_ns "$1" iptables -nvxL EWRELAYED | awk 'NR > 2 {s += $2} END {printf "%d\n", s}'
}

# nat_start_relay NODE IP: an agent with the relay role on the public network.
nat_start_relay() {
  mkdir -p "$EW_TMP/$1"
  printf '[relay]\nenabled = true\n' > "$EW_TMP/$1/extra.toml"
  agent_start "$1" public secret "$2"
}

# relay_quic NODE IP: the relay's QUIC multiaddr, with its peer ID.
relay_quic() { echo "/ip4/$2/udp/7333/quic-v1/p2p/$(peer_id "$1")"; }

# nat_start_nodes RELAY_QUIC_ADDR...: A1, A2 and B1 with reservations on the given relays,
# bootstrapping through R, each with one pod. Sets PA1, PA2 and PB1.
nat_start_nodes() {
  local relays="" r n
  for r in "$@"; do relays="$relays\"$r\","; done
  for n in a1 a2 b1; do
    mkdir -p "$EW_TMP/$n"
    # The extra lines land under [p2p], the last table agent_start writes.
    printf 'relays = [%s]\nupgradeRetrySecs = %s\n' "${relays%,}" "${EW_UPGRADE_RETRY:-5}" > "$EW_TMP/$n/extra.toml"
  done
  write_conflist a1 10.244.1.0/24
  write_conflist a2 10.244.2.0/24
  write_conflist b1 10.244.3.0/24
  # The bootstrap address has no peer ID: whoever answers there must still prove membership.
  agent_start a1 lan-a secret 0.0.0.0 /ip4/203.0.113.10/tcp/7333
  agent_start a2 lan-a secret 0.0.0.0 /ip4/203.0.113.10/tcp/7333
  agent_start b1 lan-b secret 0.0.0.0 /ip4/203.0.113.10/tcp/7333
  PA1=$(pod_add a1 pa1)
  PA2=$(pod_add a2 pa2)
  PB1=$(pod_add b1 pb1)
  wait_for "a1 to route to $PB1" 20 has_route a1 "$PB1"
  wait_for "b1 to route to $PA1" 20 has_route b1 "$PA1"
}


# peer_field FROM NODE FIELD: a field of FROM's status entry for NODE ("down" when unset).
peer_field() {
  api "$1" /v1/status | python3 -c '
import json, sys
for p in json.load(sys.stdin)["peers"]:
    if p["nodeName"] == sys.argv[1]:
        v = p.get(sys.argv[2])
        print("down" if v is None else v)
        break
else:
    print("unknown")' "$2" "$3"
}
path_to() { peer_field "$1" "$2" path; }
path_is() { [ "$(path_to "$1" "$2")" = "$3" ]; }

pings() { in_ns "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1; }

# check_overlap: the overlapping private ranges did not confuse anyone.
check_overlap() {
  log "overlapping private underlays: A2 and B1 are both 198.51.100.12"
  wait_for "pa1 to reach pa2 natively" 10 pings a1-pa1 "$PA2"
  has_route a1 "$PA2" && fail "a1 routes same-LAN pod $PA2 through edgeway"
  [ "$(path_to a1 a2)" = native ] || fail "a1's path to a2 is $(path_to a1 a2), not native"
  local addr
  addr=$(peer_field a1 b1 remoteAddr)
  case "$addr" in
    *198.51.100.*) fail "a1 reaches b1 at a private address of its own LAN: $addr" ;;
  esac
  log "a1 reaches b1 at $addr; a2 natively"
}

# transfer FROM_NS TO_NS TO_IP BYTES [RATE_BYTES_PER_S]: one TCP connection, checksummed.
# Paced when RATE is given, so it spans a path change.
transfer() {
  local from=$1 to=$2 ip=$3 bytes=$4 rate=${5:-0} port=$((20000 + RANDOM % 1000)) srv want
  head -c "$bytes" /dev/urandom > "$EW_TMP/payload"
  want=$(sha256sum < "$EW_TMP/payload" | cut -d' ' -f1)
  in_ns "$to" python3 -c '
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); s.settimeout(30)
c, _ = s.accept(); c.settimeout(60); h = hashlib.sha256()
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b)
print(h.hexdigest())' "$port" > "$EW_TMP/recv.out" &
  srv=$!
  in_ns "$from" python3 "$EW_ROOT/tests/e2e/paced-send.py" "$ip" "$port" "$EW_TMP/payload" "$rate" || fail "sending to $ip failed: the TCP connection broke"
  wait "$srv" || fail "the receiver in $to failed"
  [ "$(cat "$EW_TMP/recv.out")" = "$want" ] || fail "checksum mismatch from $from to $to"
}
