#!/usr/bin/env bash
# End to end through NAT: two edge LANs, each behind its own MASQUERADE router, reach each
# other through a relay on the public network. Hole punching (DCUtR) is attempted; this
# test does not require it to succeed yet (see the NAT issue), only that traffic flows.
#
#                 public 203.0.113.0/24: relay R (.10)
#                   │                         │
#   NA (.1, MASQUERADE)                       NB (.2, MASQUERADE [--random-fully])
#   lan-a 198.51.100.0/24                     lan-b 198.18.0.0/24
#   A1 .11, pods 10.244.1.0/24                B1 .11, pods 10.244.3.0/24
#
# EW_NAT=symmetric makes NB use --random-fully, which behaves like a symmetric NAT.
source "$(dirname "$0")/lib.sh"
NAT_MODE=${EW_NAT:-port-preserving}

log "building the topology ($NAT_MODE NAT at lan-b)"
for n in r na nb a1 b1; do make_ns "$n"; done
make_lan pub "r 203.0.113.10/24" "na 203.0.113.1/24" "nb 203.0.113.2/24"
link_ns na lan 198.51.100.1/24 a1 eth0 198.51.100.11/24
link_ns nb lan 198.18.0.1/24 b1 eth0 198.18.0.11/24
in_ns a1 ip route add default via 198.51.100.1
in_ns b1 ip route add default via 198.18.0.1
for n in na nb; do
  in_ns "$n" sysctl -qw net.ipv4.ip_forward=1
done
in_ns na iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
if [ "$NAT_MODE" = symmetric ]; then
  in_ns nb iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE --random-fully
else
  in_ns nb iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
fi

write_secret secret
mkdir -p "$EW_TMP/r"
printf '[relay]\nenabled = true\n' > "$EW_TMP/r/extra.toml"
agent_start r public secret 203.0.113.10
R_ID=$(peer_id r)
R_QUIC="/ip4/203.0.113.10/udp/7333/quic-v1/p2p/$R_ID"
for n in a1 b1; do
  mkdir -p "$EW_TMP/$n"
  printf 'relays = ["%s"]\n' "$R_QUIC" > "$EW_TMP/$n/extra.toml"
done
# The extra lines land under [p2p], the last table agent_start writes. The bootstrap
# address has no peer ID: whoever answers there must still prove membership.
write_conflist a1 10.244.1.0/24
write_conflist b1 10.244.3.0/24
agent_start a1 lan-a secret 0.0.0.0 /ip4/203.0.113.10/tcp/7333
agent_start b1 lan-b secret 0.0.0.0 /ip4/203.0.113.10/tcp/7333

PA=$(pod_add a1 pa)
PB=$(pod_add b1 pb)
has_route() { { in_ns "$1" ip route show table 7332; } | grep "^$2 "; } >/dev/null
wait_for "a1 to route to $PB" 15 has_route a1 "$PB"
wait_for "b1 to route to $PA" 15 has_route b1 "$PA"

log "ping across two NATs"
pings() { in_ns a1-pa ping -c 1 -W 1 "$PB"; }
wait_for "pa to reach pb" 30 pings
in_ns b1-pb ping -c 3 -i 0.2 -W 2 "$PA" >/dev/null || fail "pb cannot ping pa"

path_to() { # path_to FROM NODE: the path FROM's agent uses to NODE
  api "$1" /v1/status | python3 -c '
import json, sys
for p in json.load(sys.stdin)["peers"]:
    if p["nodeName"] == sys.argv[1]:
        print(p["path"] or "down")' "$2"
}
log "a1 -> b1 path: $(path_to a1 b1)"
[ "$(path_to a1 b1)" = relayed ] || [ "$(path_to a1 b1)" = direct ] || fail "a1 has no path to b1"

log "a 20 MB transfer across both NATs, checksummed"
head -c 20000000 /dev/urandom > "$EW_TMP/payload"
want=$(sha256sum < "$EW_TMP/payload" | cut -d' ' -f1)
in_ns b1-pb python3 -c '
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5201)); s.listen(1); s.settimeout(60)
c, _ = s.accept(); c.settimeout(60); h = hashlib.sha256()
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b)
print(h.hexdigest())' > "$EW_TMP/recv.out" &
srv=$!
sleep 0.5
in_ns a1-pa python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], 5201), timeout=60)
s.sendall(open(sys.argv[2], "rb").read()); s.close()' "$PB" "$EW_TMP/payload" || fail "sending across the NATs failed"
wait "$srv" || fail "the receiver behind NB failed"
[ "$(cat "$EW_TMP/recv.out")" = "$want" ] || fail "checksum mismatch across the NATs"
log "20 MB across both NATs on the $(path_to a1 b1) path: checksum ok"
log "PASS"
