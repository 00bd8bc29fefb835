#!/usr/bin/env bash
# Helpers shared by the faults-*.sh end-to-end scripts (issue 7, "Faults"). Source it after
# lib.sh. Every fault is measured with a bounded poll and recorded with `result`; the
# scripts print one `RESULT | fault | result | command` line per fault at the end, and
# exit non-zero if any check failed (after running the remaining faults, for evidence).

FAULT_RESULTS=()
FAULT_FAILED=0

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# secs MS -> "1.234"
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# measure BOUND_SECS CMD...: polls CMD every 0.1 s for at most BOUND_SECS (from now);
# sets MEASURED_MS to the time it took; returns 1 on timeout.
measure() {
  local bound=$1; shift
  local t0 end
  t0=$(now_ms)
  end=$((t0 + bound * 1000))
  until "$@" >/dev/null 2>&1; do
    MEASURED_MS=$(($(now_ms) - t0))
    [ "$(now_ms)" -lt "$end" ] || return 1
    sleep 0.1
  done
  MEASURED_MS=$(($(now_ms) - t0))
}

# result FAULT RESULT COMMAND: records one summary line.
result() { FAULT_RESULTS+=("RESULT | $1 | $2 | $3"); log "RESULT | $1 | $2"; }

# fault_fail FAULT RESULT COMMAND: records a failed check and carries on with the next fault.
fault_fail() {
  FAULT_FAILED=1
  result "$1" "FAIL: $2" "$3"
  log "FAIL: $1: $2"
}

# FAULTS_LOG_DIR=DIR keeps the agents' logs and the ping timelines, for evidence, however
# the script ends; then lib.sh's cleanup runs as before, with the same exit status.
keep_logs() {
  [ -n "${FAULTS_LOG_DIR:-}" ] || return 0
  mkdir -p "$FAULTS_LOG_DIR"
  cp "$EW_TMP"/*.log "$EW_TMP"/*.ping "$FAULTS_LOG_DIR"/ 2>/dev/null || true
}
trap 'rc=$?; set +e; keep_logs; (exit $rc); cleanup' EXIT

# print_results: the summary, then PASS or a non-zero exit.
print_results() {
  local line
  echo "--- summary"
  for line in "${FAULT_RESULTS[@]}"; do echo "$line"; done
  [ "$FAULT_FAILED" -eq 0 ] || fail "at least one fault check failed (see the RESULT lines above)"
  log "PASS"
}

# api_up NODE: the (restarted) agent answers on its socket. agent_start only waits for the
# socket file, which a killed agent leaves behind.
api_up() { wait_for "agent $1's API to answer" 10 api "$1" /healthz; }

# registrations NODE: the node's attachments, canonical JSON (sorted), one line.
registrations() {
  api "$1" /v1/attachments | python3 -c '
import json, sys
v = json.load(sys.stdin)
if isinstance(v, dict):
    v = v.get("attachments", v)
if isinstance(v, list):
    v = sorted(v, key=lambda a: json.dumps(a, sort_keys=True))
print(json.dumps(v, sort_keys=True))'
}
count_registrations() {
  python3 -c '
import json, sys
v = json.loads(sys.argv[1])
print(len(v) if isinstance(v, list) else len(v.get("attachments", [])))' "$1"
}
# pod_rules NODE: edgeway's pod rules in the node (sorted).
pod_rules() { { in_ns "$1" ip rule; in_ns "$1" ip -6 rule; } | grep 'proto 237' | sort; }

# stream_start TAG FROM_NS TO_NS TO_IP BYTES RATE: one paced TCP connection from FROM_NS to
# TO_IP, in the background. The receiver writes its byte count to $EW_TMP/TAG.progress
# about every 50 ms, and its sha256 to $EW_TMP/TAG.sum at the end. Sets STREAM_SND and
# STREAM_RCV (PIDs) and STREAM_WANT (the payload's sha256).
stream_start() {
  local tag=$1 from=$2 to=$3 ip=$4 bytes=$5 rate=$6 port=$((21000 + RANDOM % 1000))
  head -c "$bytes" /dev/urandom > "$EW_TMP/$tag.payload"
  STREAM_WANT=$(sha256sum < "$EW_TMP/$tag.payload" | cut -d' ' -f1)
  echo 0 > "$EW_TMP/$tag.progress"
  rm -f "$EW_TMP/$tag.sum"
  # ip netns exec execs python, so $! is python itself: cleanup can end it by PID.
  ip netns exec "$(ns "$to")" python3 -c '
import hashlib, os, socket, sys, time
port, prog, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def report(n):
    with open(prog + ".tmp", "w") as f: f.write("%d\n" % n)
    os.replace(prog + ".tmp", prog)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(1); s.settimeout(30)
c, _ = s.accept(); c.settimeout(60); h = hashlib.sha256(); n = 0; last = 0.0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
    t = time.monotonic()
    if t - last >= 0.05:
        report(n); last = t
report(n)
open(out, "w").write(h.hexdigest() + "\n")' "$port" "$EW_TMP/$tag.progress" "$EW_TMP/$tag.sum" &
  STREAM_RCV=$!
  EW_PIDS+=("$STREAM_RCV")
  ip netns exec "$(ns "$from")" python3 "$EW_ROOT/tests/e2e/paced-send.py" "$ip" "$port" "$EW_TMP/$tag.payload" "$rate" 2>> "$EW_TMP/$tag-sender.log" &
  STREAM_SND=$!
  EW_PIDS+=("$STREAM_SND")
}

# received TAG: bytes the stream's receiver has counted so far.
received() { cat "$EW_TMP/$1.progress" 2>/dev/null || echo 0; }
received_over() { [ "$(received "$1")" -gt "$2" ]; }

# stream_finish TAG BOUND_SECS: waits (bounded) for both ends; 0 if the one connection
# completed with the right checksum. Leaves a reason in STREAM_ERR.
stream_finish() {
  local tag=$1 bound=$2 rc=0
  STREAM_ERR=""
  alive() { kill -0 "$STREAM_SND" 2>/dev/null || kill -0 "$STREAM_RCV" 2>/dev/null; }
  if ! measure "$bound" eval '! alive'; then
    kill "$STREAM_SND" "$STREAM_RCV" 2>/dev/null || true
    STREAM_ERR="the stream did not finish within ${bound}s ($(received "$tag") bytes received)"
  fi
  wait "$STREAM_SND" || rc=1
  if [ "$rc" -ne 0 ] && [ -z "$STREAM_ERR" ]; then
    STREAM_ERR="the sender failed: the TCP connection broke ($(tail -n 1 "$EW_TMP/$tag-sender.log" 2>/dev/null))"
  fi
  wait "$STREAM_RCV" || { rc=1; [ -n "$STREAM_ERR" ] || STREAM_ERR="the receiver failed"; }
  if [ -z "$STREAM_ERR" ] && [ "$(cat "$EW_TMP/$tag.sum" 2>/dev/null)" != "$STREAM_WANT" ]; then
    STREAM_ERR="checksum mismatch"
  fi
  [ -z "$STREAM_ERR" ]
}

# pinger_start TAG FROM_NS TO_IP: a background ping every 0.2 s with arrival timestamps,
# to $EW_TMP/TAG.ping. Sets PINGER (PID).
pinger_start() {
  ip netns exec "$(ns "$2")" ping -D -n -i 0.2 -W 1 "$3" > "$EW_TMP/$1.ping" 2>&1 &
  PINGER=$!
  EW_PIDS+=("$PINGER")
}
pinger_stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# replied_after TAG EPOCH_MS: a ping reply arrived after EPOCH_MS. Sets REPLY_MS.
replied_after() {
  REPLY_MS=$(awk -v t="$2" '/bytes from/ {
      ts = $1; gsub(/[][]/, "", ts)
      if (ts * 1000 > t + 0) { printf "%.0f\n", ts * 1000; found = 1; exit } }
    END { exit !found }' "$EW_TMP/$1.ping")
}
# last_reply TAG: arrival time (epoch ms) of the last reply so far, or 0.
last_reply() {
  awk '/bytes from/ { ts = $1; gsub(/[][]/, "", ts) } END { printf "%.0f\n", ts * 1000 }' "$EW_TMP/$1.ping"
}

# mark_logs / log_evidence: what the agents logged since mark_logs about the known ways a
# recovery goes slow, for a FAIL message (counts per node and pattern).
declare -A FAULT_LOG_MARK
mark_logs() {
  local f
  for f in "$EW_TMP"/*-agent.log; do FAULT_LOG_MARK[$f]=$(wc -l < "$f"); done
}
log_evidence() {
  local f node pat n out=""
  local pats=("has not proved membership; refused" "did not prove cluster membership in time"
    "peer refused us: prove cluster membership first" "at capacity" "ping failed")
  for f in "$EW_TMP"/*-agent.log; do
    node=$(basename "$f" -agent.log)
    for pat in "${pats[@]}"; do
      n=$(tail -n +$((${FAULT_LOG_MARK[$f]:-0} + 1)) "$f" | grep -c -- "$pat" || true)
      [ "$n" -eq 0 ] || out="$out${out:+, }$node ${n}x '$pat'"
    done
  done
  case "$out" in
    *"has not proved membership; refused"*)
      out="$out. A connected member's packet streams were refused as a non-member's until the 10 s membership deadline dropped the connection: the two agents disagree on membership (per-peer hello state in agent/src/p2p/network.rs)" ;;
  esac
  echo "${out:-nothing unusual in the agent logs}"
}
