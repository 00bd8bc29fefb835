#!/usr/bin/env bash
# End to end through a real runtime: podman 4.3 with its CNI backend and runc, running busybox
# containers on node a1, whose conflist chains bridge + host-local + edgeway. Shows ADD and
# DEL through podman, the rule and the registration, cross-LAN traffic from inside a
# container, `podman network disconnect` / `connect`, DEL while the agent is down, and the
# DEL podman sends after an ADD that failed.
#
#   lan-a (198.51.100.0/24)                    lan-b (203.0.113.0/24)
#   a1: podman, pods 10.244.1.0/24 ── R ── b1: pods 10.244.3.0/24 (reference plugins)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib-runtime.sh"

command -v podman >/dev/null || fail "podman is not installed (apt-get install podman runc)"
log "$(podman --version); $(runc --version | head -n1)"

rt_two_lans

log "podman on a1, in a1's namespaces, with per-run config, storage and CNI config dir"
rt_rootfs
rt_node_shell a1 /run/netns /run/runc /var/lib/cni
podman_setup a1
NETD="$EW_TMP/a1/podman/net.d"
cp "$EW_TMP/a1/net.conflist" "$NETD/10-edge-bridge.conflist"
# A second network whose edgeway entry refuses to start a pod while the agent is down.
python3 - "$EW_TMP/a1/net.conflist" "$NETD/20-edge-fail.conflist" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["name"] = "edge-fail"
c["plugins"][0]["bridge"] = c["plugins"][0]["bridge"][:13] + "-f"
c["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.244.11.0/24"}]]
c["plugins"][1]["onAgentDown"] = "fail"
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY
NET=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$NETD/10-edge-bridge.conflist")
pm a1 network ls --format "{{.Name}}" >"$EW_TMP/netls.out" 2>&1 || fail "podman network ls: $(cat "$EW_TMP/netls.out")"
grep -qx "$NET" "$EW_TMP/netls.out" || fail "podman does not see network $NET: $(cat "$EW_TMP/netls.out")"
DATA="$EW_TMP/data"
mkdir -p "$DATA"


log "ADD through podman run"
pm_run a1 -d --name c1 --network "$NET" -v "$DATA:/data" --rootfs "$RT_ROOTFS" /bin/busybox sleep 300 >/dev/null ||
  fail "podman run c1 failed"
CID1=$(pm a1 inspect -f '{{.Id}}' c1)
rt_track "$(pm a1 inspect -f '{{.State.Pid}}' c1)"
IP1=$(pm_ip a1 c1)
[ -n "$IP1" ] || fail "c1 has no IPv4 address"
calls ADD "$CID1" | grep -q 'prev=yes rc=0' || fail "no successful edgeway ADD for c1: $(cat "$RT_CALLS")"
has_rule "$IP1" || fail "no rule 'from $IP1 lookup 7332' in a1 for c1"
registered "$CID1" "$IP1" || fail "a1's agent has no registration for c1 ($IP1): $(api a1 /v1/attachments)"
record "$CID1" || fail "no attachment record for c1"
log "c1 is $IP1: rule, record and registration present"
wait_for "b1 to route to c1 ($IP1)" 5 has_route b1 "$IP1"
wait_for "a1 to route to pb1 ($PB1)" 5 has_route a1 "$PB1"

log "cross-LAN from inside the container"
pm a1 exec c1 /bin/busybox ping -c 3 -i 0.2 -W 2 "$PB1" >/dev/null || fail "c1 cannot ping pb1 ($PB1) across LANs"
head -c 10000000 /dev/urandom > "$DATA/payload"
WANT=$(sha256sum < "$DATA/payload" | cut -d' ' -f1)
PORT=$((20000 + RANDOM % 1000))
# container -> pb1: busybox nc sends, a receiver in pb1 checksums.
in_ns b1-pb1 timeout 30 python3 -c '
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); s.settimeout(20)
c, _ = s.accept(); c.settimeout(20); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
print(h.hexdigest(), n)' "$PORT" > "$EW_TMP/recv.out" &
SRV=$!
EW_PIDS+=("$SRV")
listening() { in_ns b1-pb1 ss -Hltn "sport = :$PORT" | grep -q .; }
wait_for "pb1's receiver" 5 listening
pm a1 exec c1 /bin/busybox sh -c "/bin/busybox timeout 30 /bin/busybox nc $PB1 $PORT < /data/payload" ||
  fail "c1 could not send to pb1"
wait "$SRV" || fail "pb1's receiver failed"
[ "$(cut -d' ' -f1 "$EW_TMP/recv.out")" = "$WANT" ] || fail "c1 -> pb1: checksum mismatch ($(cat "$EW_TMP/recv.out"))"
log "10 MB c1 -> pb1 over TCP: checksum ok"
# pb1 -> container: busybox nc listens in c1, pb1 connects and sends.
pm a1 exec -d c1 /bin/busybox sh -c "/bin/busybox timeout 30 /bin/busybox nc -l -p $PORT > /data/recv" >/dev/null
c1_listening() { pm a1 exec c1 /bin/busybox netstat -ltn | grep -q ":$PORT "; }
wait_for "c1's listener" 5 c1_listening
in_ns b1-pb1 timeout 30 python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.sendall(open(sys.argv[3], "rb").read()); s.close()' "$IP1" "$PORT" "$DATA/payload" || fail "pb1 could not send to c1"
received() { [ "$(sha256sum < "$DATA/recv" | cut -d' ' -f1)" = "$WANT" ]; }
wait_for "c1 to hold pb1's 10 MB" 10 received
log "10 MB pb1 -> c1 over TCP: checksum ok"
# Bytes, not packets: with segmentation offload one packet may be a 64 KiB super-packet.
[ "$(metric a1 'edgeway_tunnel_bytes_total\{.*direction="tx"')" -ge 10000000 ] || fail "a1's tunnel did not carry the transfer"

log "podman network disconnect: the rule and the registration go away"
pm a1 network disconnect "$NET" c1 || fail "podman network disconnect failed"
calls DEL "$CID1" | grep -q 'rc=0' || fail "no successful edgeway DEL for c1"
has_rule "$IP1" && fail "rule for $IP1 still there after disconnect"
unregistered "$CID1" || fail "c1 still registered after disconnect"
record "$CID1" && fail "c1's record still there after disconnect"
pm a1 exec c1 /bin/busybox ip link show eth0 >/dev/null 2>&1 && fail "c1 still has eth0 after disconnect"
wait_for "b1 to forget c1's $IP1" 5 no_route b1 "$IP1"

log "podman network connect: they come back"
pm a1 network connect "$NET" c1 || fail "podman network connect failed"
IP1B=$(pm_ip a1 c1)
[ -n "$IP1B" ] || fail "c1 has no address after connect"
[ "$(calls ADD "$CID1" | grep -c 'rc=0')" -eq 2 ] || fail "expected a second edgeway ADD for c1"
has_rule "$IP1B" || fail "no rule for $IP1B after connect"
registered "$CID1" "$IP1B" || fail "c1 ($IP1B) not registered after connect"
record "$CID1" || fail "no record for c1 after connect"
wait_for "b1 to route to c1's $IP1B" 5 has_route b1 "$IP1B"
pm a1 exec c1 /bin/busybox ping -c 2 -i 0.2 -W 2 "$PB1" >/dev/null || fail "c1 cannot ping pb1 after connect"
log "c1 is back as $IP1B and reaches pb1"

log "podman run --rm: a short-lived container reaches pb1, then its DEL cleans up"
pm_run a1 --rm --cidfile "$EW_TMP/once.cid" --network "$NET" --rootfs "$RT_ROOTFS" /bin/busybox sh -c \
  "i=0; while [ \$i -lt 20 ]; do /bin/busybox ping -c 1 -W 1 $PB1 >/dev/null && exit 0; i=\$((i+1)); done; exit 1" ||
  fail "a fresh container could not reach pb1 within 20 pings"
CID2=$(cat "$EW_TMP/once.cid")
calls ADD "$CID2" | grep -q 'rc=0' || fail "no edgeway ADD for the --rm container"
calls DEL "$CID2" | grep -q 'rc=0' || fail "no successful edgeway DEL for the --rm container"
unregistered "$CID2" || fail "the --rm container is still registered"
record "$CID2" && fail "the --rm container left a record"
[ "$(in_ns a1 ip rule | grep -c 'proto 237')" -eq 1 ] || fail "expected only c1's rule: $(in_ns a1 ip rule)"

log "agent down: ADD on the onAgentDown=fail network fails, and podman's DEL after it succeeds"
agent_kill a1
pm_run a1 -d --name cfail --cidfile "$EW_TMP/fail.cid" --network edge-fail --rootfs "$RT_ROOTFS" \
  /bin/busybox sleep 300 > "$EW_TMP/fail.out" 2>&1 && fail "podman run on edge-fail succeeded with the agent down"
grep -q 'onAgentDown' "$EW_TMP/fail.out" || fail "podman did not report edgeway's error: $(cat "$EW_TMP/fail.out")"
CIDF=$(cat "$EW_TMP/fail.cid")
calls ADD "$CIDF" | grep -q 'rc=0' && fail "edgeway ADD for cfail succeeded"
calls ADD "$CIDF" | grep -q 'code=11' || fail "edgeway's ADD for cfail did not answer code 11: $(calls ADD "$CIDF")"
# podman's teardown of the failed setup: a DEL, after the ADD, that succeeds.
awk -v c="cid=$CIDF" '$2 == c && $1 != "VERSION" {print $1}' "$RT_CALLS" | tr '\n' ' ' | grep -q 'ADD DEL' ||
  fail "no DEL after cfail's failed ADD: $(grep "$CIDF" "$RT_CALLS")"
calls DEL "$CIDF" | grep -vq 'rc=0' && fail "a DEL for cfail failed: $(calls DEL "$CIDF")"
in_ns a1 ip rule | grep -q 'from 10.244.11.' && fail "cfail's failed ADD left a rule: $(in_ns a1 ip rule)"
record "$CIDF" && fail "cfail's failed ADD left a record"
grep -rlq "$CIDF" "$EW_TMP/a1/ipam/edge-fail" && fail "cfail's address is still reserved in host-local"
[ -z "$(in_ns a1 ip link show master br-a1-f 2>/dev/null)" ] || fail "cfail's veth is still on the bridge"
pm a1 rm cfail >/dev/null || fail "podman rm cfail failed"
log "failed ADD: podman reported the error; DEL ran and succeeded; no rule, record or address left:"
grep "cid=$CIDF" "$RT_CALLS" | grep -v '^VERSION' | sed 's/^/    /' >&2

log "agent down: podman rm -f c1 (DEL) succeeds and is queued"
pm a1 rm -f -t 0 c1 >/dev/null || fail "podman rm -f c1 failed with the agent down"
calls DEL "$CID1" | tail -n1 | grep -q 'rc=0' || fail "edgeway DEL for c1 failed with the agent down"
has_rule "$IP1B" && fail "c1's rule survived its DEL"
record "$CID1" && fail "c1's record survived its DEL"
test -e "$EW_TMP/a1/state/pending-del/$CID1@eth0.json" || fail "c1's DEL was not queued for the agent"

log "agent back: the queued DEL is replayed, nothing leaks"
agent_start a1 lan-a secret 198.51.100.11
drained() { [ -z "$(ls -A "$EW_TMP/a1/state/pending-del")" ]; }
wait_for "a1 to replay its queued DELs" 10 drained
unregistered "$CID1" || fail "c1 registered again after the agent restart"
unregistered "$CIDF" || fail "cfail registered after the agent restart"
[ -z "$(ls -A "$EW_TMP/a1/state/attachments")" ] || fail "records left: $(ls "$EW_TMP/a1/state/attachments")"
in_ns a1 ip rule | grep -q 'proto 237' && fail "edgeway rules left in a1: $(in_ns a1 ip rule)"
[ -z "$(pm a1 ps -aq)" ] || fail "podman still lists containers"
for c in "$CID1" "$CID2" "$CIDF"; do
  rt_in a1 ls /var/lib/cni/results 2>/dev/null | grep -q "$c" && fail "libcni's cache still holds $c"
done
wait_for "b1 to forget c1's $IP1B" 10 no_route b1 "$IP1B"
grep -q '^VERSION ' "$RT_CALLS" && log "podman probed VERSION $(grep -c '^VERSION ' "$RT_CALLS") times"
log "edgeway calls made by podman: $(awk '{print $1}' "$RT_CALLS" | sort | uniq -c | tr -s ' \n' ' ')"

log "PASS"
