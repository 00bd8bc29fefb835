#!/usr/bin/env bash
# End to end: with a cluster CA, a member that announces pod IPs outside its grant cannot
# take them over on a third node; an agent without a CA shows what would happen otherwise.
#
#   a1 (CA, grant 10.244.1.0/24) ─┐
#   b1 (CA, grant 10.244.3.0/24) ─┤  the "bad member": it holds the cluster secret and a
#                                 │  valid grant, then claims a1's pod IP
#   c1 (CA, grant 10.244.5.0/24) ─┼─ R   a third node that checks grants
#   c2 (grant 10.244.6.0/24)     ─┤      a third node without the CA: the control
#   d1 (no grant)                ─┤      a member without a grant
#   e1 (grant for 25 s)          ─┘      a grant that expires while its node is up
# Every node is its own segment, so every pod path goes through edgeway.
source "$(dirname "$0")/lib.sh"

log "building the topology"
make_ns r
in_ns r sysctl -qw net.ipv4.ip_forward=1
i=1
for n in a1 b1 c1 c2 d1 e1; do
  make_ns "$n"
  link_ns r "l-$n" "198.18.$i.1/24" "$n" eth0 "198.18.$i.10/24"
  in_ns "$n" ip route add default via "198.18.$i.1"
  i=$((i + 1))
done
ip_of() { in_ns "$1" ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }

write_secret secret
write_conflist a1 10.244.1.0/24
write_conflist b1 10.244.3.0/24
write_conflist c1 10.244.5.0/24
write_conflist c2 10.244.6.0/24
write_conflist d1 10.244.7.0/24
write_conflist e1 10.244.8.0/24

log "the operator makes a CA and grants a1, b1, c1 and c2 their pod ranges"
in_ns a1 "$EW_BIN/edgeway-agent" ca init --key "$EW_TMP/ca.key" --public "$EW_TMP/ca.pub"
[ "$(stat -c %a "$EW_TMP/ca.key")" = 600 ] || fail "the CA key is not 0600"
peer_of() { # peer_of NODE: the node's peer ID, made before its agent first starts
  mkdir -p "$EW_TMP/$1"
  printf 'stateDir = "%s"\n' "$EW_TMP/$1/state" > "$EW_TMP/$1/id.toml"
  in_ns "$1" "$EW_BIN/edgeway-agent" --config "$EW_TMP/$1/id.toml" peer-id
}
grant() { # grant NODE CIDR [no-ca|SECS]
  local valid=()
  case "${3:-}" in [0-9]*) valid=(--valid-secs "$3") ;; esac
  in_ns "$1" "$EW_BIN/edgeway-agent" ca grant --key "$EW_TMP/ca.key" "${valid[@]}" \
    --peer-id "$(peer_of "$1")" --pod-cidr "$2" --out "$EW_TMP/$1/grant.json" 2>/dev/null
  printf 'grantFile = "%s"\n' "$EW_TMP/$1/grant.json" > "$EW_TMP/$1/extra.toml"
  [ "${3:-}" = no-ca ] || printf 'clusterCaFile = "%s"\n' "$EW_TMP/ca.pub" >> "$EW_TMP/$1/extra.toml"
}
grant a1 10.244.1.0/24
grant b1 10.244.3.0/24
grant c1 10.244.5.0/24
grant c2 10.244.6.0/24 no-ca

log "a grant for another peer is a config error that names the field"
cp "$EW_TMP/c1/extra.toml" "$EW_TMP/c1/extra.good"
printf 'clusterCaFile = "%s"\ngrantFile = "%s"\n' "$EW_TMP/ca.pub" "$EW_TMP/a1/grant.json" > "$EW_TMP/c1/extra.toml"
cat > "$EW_TMP/c1/bad.toml" <<TOML
stateDir = "$EW_TMP/c1/state"
[api]
socket = "$EW_TMP/c1/bad.sock"
[p2p]
clusterSecretFile = "$EW_TMP/secret"
$(cat "$EW_TMP/c1/extra.toml")
TOML
rc=0
in_ns c1 timeout 20 "$EW_BIN/edgeway-agent" --config "$EW_TMP/c1/bad.toml" run > "$EW_TMP/c1-bad.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "the agent did not refuse another peer's grant (rc $rc)"
grep -q "p2p.grantFile.*not for this one" "$EW_TMP/c1-bad.log" || fail "the error does not name p2p.grantFile: $(cat "$EW_TMP/c1-bad.log")"
mv "$EW_TMP/c1/extra.good" "$EW_TMP/c1/extra.toml"

agent_start a1 lan-a secret "$(ip_of a1)"
BOOT="/ip4/$(ip_of a1)/tcp/7333/p2p/$(peer_id a1)"
agent_start b1 lan-b secret "$(ip_of b1)" "$BOOT"
agent_start c1 lan-c secret "$(ip_of c1)" "$BOOT"
agent_start c2 lan-d secret "$(ip_of c2)" "$BOOT"
agent_start d1 lan-e secret "$(ip_of d1)" "$BOOT"
# The others meet through a1; they dial each other once they own pods.
wait_for "a1 to see 4 members" 20 members a1 4

log "pods inside their grants are routed everywhere"
PA1=$(pod_add a1 pa1)
PB1=$(pod_add b1 pb1)
PC1=$(pod_add c1 pc1)
PC2=$(pod_add c2 pc2)
PD1=$(pod_add d1 pd1)
for n in b1 c1 c2; do wait_for "$n to route to a1's $PA1" 5 has_route "$n" "$PA1"; done
wait_for "c1 to route to b1's $PB1" 5 has_route c1 "$PB1"
reach() { in_ns "$1" ping -c 1 -W 1 "$2"; }
wait_for "pc1 to reach pa1" 10 reach c1-pc1 "$PA1"
wait_for "pc2 to reach pa1" 10 reach c2-pc2 "$PA1"
wait_for "pc1 to reach pb1" 10 reach c1-pc1 "$PB1"

log "d1 has no grant: agents with the CA ignore its pod, c2 (no CA) routes it"
ignored() { [ "$(metric "$1" "edgeway_claims_ignored_total\\{reason=\"$2\"\\}")" -ge "$3" ]; }
wait_for "c1 to count d1's claim as no_grant" 10 ignored c1 no_grant 1
wait_for "c2 to route d1's pod" 5 has_route c2 "$PD1"
no_route c1 "$PD1" || fail "c1 routes d1's ungranted pod $PD1"
no_route a1 "$PD1" || fail "a1 routes d1's ungranted pod $PD1"
[ "$(metric d1 '^edgeway_local_pods_outside_grant$')" = 0 ] || fail "d1 checks no grant, yet counts pods outside one"

log "a grant that expires takes its pods off the checking nodes, though its node stays up"
grant e1 10.244.8.0/24 25
agent_start e1 lan-f secret "$(ip_of e1)" "$BOOT"
PE1=$(pod_add e1 pe1)
wait_for "c1 to route to e1's $PE1" 10 has_route c1 "$PE1"
EXPIRES=$(python3 -c 'import json,sys; print(json.loads(json.load(open(sys.argv[1]))["body"])["notAfterUnix"])' "$EW_TMP/e1/grant.json")
[ "$(metric e1 '^edgeway_grant_not_after_seconds$')" = "$EXPIRES" ] || fail "e1 does not show its grant's expiry"
invalid_before=$(metric c1 'edgeway_claims_ignored_total\{reason="invalid_grant"\}')
wait_for "c1 to drop e1's pod once the grant expires" 40 no_route c1 "$PE1"
NOW=$(date +%s)
[ "$NOW" -gt "$EXPIRES" ] || fail "c1 dropped e1's pod before its grant expired ($NOW <= $EXPIRES)"
log "dropped $((NOW - EXPIRES)) s after expiry"
[ "$(metric c1 'edgeway_claims_ignored_total\{reason="invalid_grant"\}')" -gt "$invalid_before" ] || fail "c1 did not count the expired grant's claim"
has_route c2 "$PE1" || fail "c2 (no CA) lost e1's pod too"
lapsed() { [ "$(metric e1 '^edgeway_local_pods_outside_grant$')" = 1 ]; }
wait_for "e1 to report its pod outside its (expired) grant" 15 lapsed

log "b1, a member with a valid grant, claims a1's pod $PA1 and an unallocated 10.244.9.9"
sleep 1 # claims are dated in whole seconds: b1's must be the newer one
BAD=$(python3 -c 'import json,sys,time; print(json.dumps({"containerID": "takeover", "ifname": "eth0",
  "netns": "/run/netns/none", "network": "edgeway-e2e", "ips": [sys.argv[1], "10.244.9.9"],
  "table": 7332, "priority": 7332, "generation": "g1", "createdUnix": int(time.time())}))' "$PA1")
# As the plugin does: the record first (the agent insists on it), then the registration.
echo "$BAD" > "$EW_TMP/b1/state/attachments/takeover@eth0.json"
curl -sf --max-time 5 --unix-socket "$EW_TMP/b1/agent.sock" -H 'Content-Type: application/json' \
  -d "$BAD" http://agent/v1/attachments > /dev/null || fail "registering the takeover on b1 failed"
# The claim reaches c2 (no CA), where the newest claim wins: this shows the attack is live.
taken() { ! reach c2-pc2 "$PA1"; }
wait_for "the takeover to show on c2, which has no CA" 15 taken
has_route c2 10.244.9.9 || fail "c2 (no CA) does not route b1's claim on 10.244.9.9: is the attack live?"

outside() { [ "$(metric b1 '^edgeway_local_pods_outside_grant$')" = 2 ]; }
wait_for "b1 to report its 2 pod IPs outside its grant" 10 outside

log "c1 ignores both claims, counts them, and still reaches a1's pod"
wait_for "c1 to count b1's claims outside its grant" 10 ignored c1 outside_grant 2
for i in 1 2 3 4 5; do
  reach c1-pc1 "$PA1" > /dev/null || fail "pc1 lost pa1 to b1's claim (try $i)"
  sleep 0.5
done
no_route c1 10.244.9.9 || fail "c1 routes b1's claim on 10.244.9.9"
reach c1-pc1 "$PB1" > /dev/null || fail "pc1 lost b1's own pod"
api b1 /v1/status > /dev/null || fail "b1 stopped answering"

log "PASS"
