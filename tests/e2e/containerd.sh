#!/usr/bin/env bash
# End to end through containerd's CRI plugin (containerd 1.6, runc), driven over the CRI gRPC
# API like the kubelet does, on node a1 whose conflist chains bridge + host-local + edgeway.
# containerd calls DEL twice for each pod: at StopPodSandbox (with the netns and prevResult)
# and at RemovePodSandbox (with an empty CNI_NETNS and no prevResult). Both must succeed,
# with the agent up and with it down, and leave nothing behind.
#
#   lan-a (198.51.100.0/24)                        lan-b (203.0.113.0/24)
#   a1: containerd, pods 10.244.1.0/24 ── R ── b1: pods 10.244.3.0/24 (reference plugins)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib-runtime.sh"

command -v containerd >/dev/null || fail "containerd is not installed (apt-get install containerd runc)"
log "$(containerd --version); $(runc --version | head -n1)"
cri_client_setup

rt_two_lans

log "containerd on a1, in a1's namespaces, with per-run config, root, state and CNI config dir"
rt_node_shell a1 /run/netns /run/containerd /var/lib/cni
containerd_config a1
cp "$EW_TMP/a1/net.conflist" "$EW_TMP/a1/containerd/net.d/10-edge-bridge.conflist"
containerd_start a1
log "CRI: $(cri a1 version)"
CGROUP="/$EW_PREFIX-containerd"
LOGS="$EW_TMP/a1/containerd/logs"

queued() { test -e "$EW_TMP/a1/state/pending-del/$1@eth0.json"; }
# del_calls SANDBOX: the edgeway DELs containerd made for it, one line each.
del_calls() { calls DEL "$1"; }

log "RunPodSandbox: ADD"
P1=$(cri a1 runp p1 "$LOGS" "$CGROUP") || fail "RunPodSandbox p1 failed"
rt_track "$(cri_field a1 "$P1" pid)"
IP1=$(cri_field a1 "$P1" ip)
NETNS1=$(cri_field a1 "$P1" netns)
[ "$(cri_field a1 "$P1" state)" = SANDBOX_READY ] || fail "p1 is not ready"
[ -n "$IP1" ] && [ -n "$NETNS1" ] || fail "p1 has no IP or netns: $(cri a1 inspectp "$P1")"
calls ADD "$P1" | grep -q "netns=$NETNS1 ifname=eth0 prev=yes rc=0" || fail "no successful edgeway ADD for p1: $(cat "$RT_CALLS")"
has_rule "$IP1" || fail "no rule 'from $IP1 lookup 7332' in a1 for p1"
registered "$P1" "$IP1" || fail "a1's agent has no registration for p1 ($IP1): $(api a1 /v1/attachments)"
record "$P1" || fail "no attachment record for p1"
log "p1 is $IP1 in $NETNS1: rule, record and registration present"

log "cross-LAN from the pod's network namespace"
wait_for "b1 to route to p1 ($IP1)" 5 has_route b1 "$IP1"
wait_for "a1 to route to pb1 ($PB1)" 5 has_route a1 "$PB1"
rt_in a1 nsenter --net="$NETNS1" ping -c 3 -i 0.2 -W 2 "$PB1" >/dev/null || fail "p1 cannot ping pb1 ($PB1)"
PORT=$((20000 + RANDOM % 1000))
head -c 5000000 /dev/urandom > "$EW_TMP/payload"
WANT=$(sha256sum < "$EW_TMP/payload" | cut -d' ' -f1)
in_ns b1-pb1 timeout 30 python3 -c '
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); s.settimeout(20)
c, _ = s.accept(); c.settimeout(20); h = hashlib.sha256()
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b)
print(h.hexdigest())' "$PORT" > "$EW_TMP/recv.out" &
SRV=$!
EW_PIDS+=("$SRV")
listening() { in_ns b1-pb1 ss -Hltn "sport = :$PORT" | grep -q .; }
wait_for "pb1's receiver" 5 listening
rt_in a1 nsenter --net="$NETNS1" timeout 30 python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.sendall(open(sys.argv[3], "rb").read()); s.close()' "$PB1" "$PORT" "$EW_TMP/payload" || fail "p1 could not send to pb1"
wait "$SRV" || fail "pb1's receiver failed"
[ "$(cat "$EW_TMP/recv.out")" = "$WANT" ] || fail "p1 -> pb1: checksum mismatch"
log "5 MB p1 -> pb1 over TCP: checksum ok"

log "StopPodSandbox: the first DEL, with the netns and prevResult"
cri a1 stopp "$P1" || fail "StopPodSandbox p1 failed"
[ "$(del_calls "$P1" | wc -l)" -eq 1 ] || fail "expected one DEL after StopPodSandbox: $(del_calls "$P1")"
del_calls "$P1" | grep -q "netns=$NETNS1 ifname=eth0 prev=yes rc=0" || fail "first DEL of p1: $(del_calls "$P1")"
has_rule "$IP1" && fail "p1's rule survived StopPodSandbox"
unregistered "$P1" || fail "p1 still registered after StopPodSandbox"
record "$P1" && fail "p1's record survived StopPodSandbox"
wait_for "b1 to forget p1's $IP1" 5 no_route b1 "$IP1"

log "RemovePodSandbox: the second DEL, with an empty netns and no prevResult"
cri a1 rmp "$P1" || fail "RemovePodSandbox p1 failed"
[ "$(del_calls "$P1" | wc -l)" -eq 2 ] || fail "expected a second DEL after RemovePodSandbox: $(del_calls "$P1")"
del_calls "$P1" | tail -n1 | grep -q "netns= ifname=eth0 prev=no rc=0" || fail "second DEL of p1: $(del_calls "$P1")"
queued "$P1" && fail "the second DEL of p1 queued work although the agent is up"
log "p1's edgeway calls:"
grep "cid=$P1" "$RT_CALLS" | sed 's/^/    /' >&2
unregistered "$P1" || fail "p1 registered again"

log "the same with the agent down: both DELs succeed and are replayed when it is back"
P2=$(cri a1 runp p2 "$LOGS" "$CGROUP") || fail "RunPodSandbox p2 failed"
rt_track "$(cri_field a1 "$P2" pid)"
IP2=$(cri_field a1 "$P2" ip)
registered "$P2" "$IP2" || fail "p2 ($IP2) not registered"
wait_for "b1 to route to p2 ($IP2)" 5 has_route b1 "$IP2"
agent_kill a1
cri a1 stopp "$P2" || fail "StopPodSandbox p2 failed with the agent down"
cri a1 rmp "$P2" || fail "RemovePodSandbox p2 failed with the agent down"
[ "$(del_calls "$P2" | grep -c 'rc=0')" -eq 2 ] || fail "expected two successful DELs of p2: $(del_calls "$P2")"
del_calls "$P2" | head -n1 | grep -q 'prev=yes rc=0' || fail "first DEL of p2: $(del_calls "$P2")"
del_calls "$P2" | tail -n1 | grep -q 'netns= ifname=eth0 prev=no rc=0' || fail "second DEL of p2: $(del_calls "$P2")"
has_rule "$IP2" && fail "p2's rule survived its DELs"
record "$P2" && fail "p2's record survived its DELs"
queued "$P2" || fail "p2's DEL was not queued for the agent"
agent_start a1 lan-a secret 198.51.100.11
drained() { [ -z "$(ls -A "$EW_TMP/a1/state/pending-del")" ]; }
wait_for "a1 to replay its queued DELs" 10 drained
unregistered "$P2" || fail "p2 registered after the agent restart"
wait_for "b1 to forget p2's $IP2" 10 no_route b1 "$IP2"

log "nothing leaks"
[ -z "$(cri a1 pods)" ] || fail "containerd still lists sandboxes: $(cri a1 pods)"
[ -z "$(ls -A "$EW_TMP/a1/state/attachments")" ] || fail "records left: $(ls "$EW_TMP/a1/state/attachments")"
in_ns a1 ip rule | grep -q 'proto 237' && fail "edgeway rules left in a1: $(in_ns a1 ip rule)"
[ -z "$(in_ns a1 ip link show master br-a1)" ] || fail "pod veths left on a1's bridge: $(in_ns a1 ip link show master br-a1)"
for c in "$P1" "$P2"; do
  rt_in a1 ls /var/lib/cni/results 2>/dev/null | grep -q "$c" && fail "libcni's cache still holds $c"
  grep -rlq "$c" "$EW_TMP/a1/ipam" && fail "host-local still holds an address for $c"
done
rt_in a1 test -e "$NETNS1" && fail "p1's netns $NETNS1 was left behind"
log "edgeway calls made by containerd: $(awk '{print $1}' "$RT_CALLS" | sort | uniq -c | tr -s ' \n' ' ')"

log "PASS"
