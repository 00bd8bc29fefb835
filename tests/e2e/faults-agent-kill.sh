#!/usr/bin/env bash
# Faults (issue 7): kill -9 of an agent during a cross-LAN TCP stream, once on the sender's
# node and once on the receiver's. The agent is restarted at once, as a supervisor would
# (systemd Restart=always, a DaemonSet). Must hold: every registration (and pod rule) is
# kept; traffic resumes within 5 s of the restart; the inner TCP connection survives (the
# same connection completes, checksum ok).
#
#   lan-a 198.51.100.0/24                   lan-b 203.0.113.0/24
#   A1 .11 (pods pa1, pa2) ── R (.1 / .1) ── B1 .21 (pods pb1, pb2)
# R routes the underlays, not the pod CIDRs: pod traffic between the LANs goes through
# edgeway (a direct libp2p path).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/faults-lib.sh"

CMD="bash tests/e2e/faults-agent-kill.sh"
RESUME_BOUND=5   # issue 7: traffic resumes within 5 s of the restart
RATE=2000000     # the stream's pace, bytes/s
BYTES=30000000   # 15 s at that pace

two_lans
# Each agent bootstraps through the other (no peer ID needed: membership is proved anyway).
start_a1() { agent_start a1 lan-a secret 198.51.100.11 /ip4/203.0.113.21/tcp/7333; }
start_b1() { agent_start b1 lan-b secret 203.0.113.21 /ip4/198.51.100.11/tcp/7333; }
start_a1
start_b1
PA1=$(pod_add a1 pa1)
PA2=$(pod_add a1 pa2)
PB1=$(pod_add b1 pb1)
PB2=$(pod_add b1 pb2)
wait_for "a1 to route to $PB1" 20 has_route a1 "$PB1"
wait_for "b1 to route to $PA1" 20 has_route b1 "$PA1"
pings() { in_ns "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1; }
wait_for "pa1 to reach pb1" 10 pings a1-pa1 "$PB1"
wait_for "pb2 to reach pa2" 10 pings b1-pb2 "$PA2"

# kill_during_stream NODE ROLE START_FN: a paced stream pa1 -> pb1; once it runs, kill -9
# of NODE's agent, immediate restart, and the checks.
kill_during_stream() {
  local node=$1 role=$2 start=$3
  local fault="kill -9 of the ${role}'s agent during a cross-LAN TCP stream"
  local tag="kill-$node" regs_before regs_after rules_before rules_after r0 t_kill t_restart
  local resume_ms outage_ms ok=1 why="" nregs
  log "$fault: ${BYTES} bytes pa1 -> pb1 at ${RATE} B/s, agent $node killed mid-stream"
  stream_start "$tag" a1-pa1 b1-pb1 "$PB1" "$BYTES" "$RATE"
  mark_logs
  if ! measure 30 received_over "$tag" 4000000; then
    fault_fail "$fault" "not run: before the kill, the stream did not carry 4 MB within 30 s ($(received "$tag") bytes); the agents logged: $(log_evidence)" "$CMD"
    kill "$STREAM_SND" "$STREAM_RCV" 2>/dev/null || true
    return 0
  fi
  regs_before=$(registrations "$node")
  rules_before=$(pod_rules "$node")
  nregs=$(count_registrations "$regs_before")
  mark_logs
  t_kill=$(now_ms)
  agent_kill "$node" KILL
  # What was in flight when the agent died may still land; traffic "resumes" when the
  # receiver has 256 KiB more than it had once the agent was gone.
  r0=$(received "$tag")
  log "agent $node killed at $r0 bytes; restarting it"
  t_restart=$(now_ms)
  "$start"
  api_up "$node"
  if measure 30 received_over "$tag" $((r0 + 262144)); then
    resume_ms=$(($(now_ms) - t_restart))
    outage_ms=$(($(now_ms) - t_kill))
    log "traffic resumed $(secs "$resume_ms") s after the restart ($(secs "$outage_ms") s after the kill)"
    [ "$resume_ms" -le $((RESUME_BOUND * 1000)) ] || { ok=0; why="traffic resumed $(secs "$resume_ms") s after the restart, over ${RESUME_BOUND} s"; }
  else
    resume_ms=""
    ok=0; why="traffic did not resume within 30 s of the restart ($(received "$tag") bytes received, $r0 at the kill)"
  fi
  regs_after=$(registrations "$node") || regs_after="(API down)"
  rules_after=$(pod_rules "$node")
  local lost
  lost=$(python3 -c '
import json, sys
try:
    b, a = json.loads(sys.argv[1]), json.loads(sys.argv[2])
except ValueError:
    print(len(json.loads(sys.argv[1]))); sys.exit()
print(len([x for x in b if x not in a]))' "$regs_before" "$regs_after")
  if [ "$regs_before" != "$regs_after" ]; then
    ok=0; why="${why:+$why; }registrations changed over the restart: before $regs_before after $regs_after"
  fi
  if [ "$rules_before" != "$rules_after" ]; then
    ok=0; why="${why:+$why; }pod rules changed over the restart: before [$rules_before] after [$rules_after]"
  fi
  if ! stream_finish "$tag" 60; then
    ok=0; why="${why:+$why; }the inner TCP connection did not survive: $STREAM_ERR"
  else
    log "the same TCP connection completed, ${BYTES} bytes, checksum ok"
  fi
  [ "$ok" -eq 1 ] || why="$why; since the kill the agents logged: $(log_evidence)"
  if [ "$ok" -eq 1 ]; then
    result "$fault" "resumed $(secs "$resume_ms") s after the restart ($(secs "$outage_ms") s after the kill; bound ${RESUME_BOUND} s); lost $lost of $nregs registrations; same TCP connection completed, checksum ok" "$CMD"
  else
    fault_fail "$fault" "$why" "$CMD"
  fi
}

kill_during_stream a1 sender start_a1
kill_during_stream b1 receiver start_b1

# After both restarts, the other pods still reach each other both ways.
wait_for "pa2 to reach pb2" 10 pings a1-pa2 "$PB2"
wait_for "pb1 to reach pa1" 10 pings b1-pb1 "$PA1"
print_results
