#!/usr/bin/env bash
# Benchmark: CNI ADD and DEL latency of `edgeway` (agent up) against Debian's `sbr`
# meta-plugin, both fed the same real prevResult from bridge + host-local, in one run.
#
# Everything happens in network namespaces this script creates (prefix ewb<pid>) and
# removes on exit; nothing is added to the root namespace. Needs root.
#
# Usage: bash bench/add-latency.sh [-n N] [--no-build] [--warmup W] [--check-every K] [--no-doc]
#   -n N            ADD+DEL cycles per plugin (default 200)
#   --no-build      use the existing release binaries
#   --warmup W      untimed warm-up cycles per plugin (default 5)
#   --check-every K verify rules/records/agent state every K-th iteration (default 20)
#   --no-doc        print the table, but do not rewrite docs/benchmarks.md
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=200
WARMUP=5
CHECK_EVERY=20
BUILD=1
WRITE_DOC=1

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        -n) N=${2:?-n needs a value}; shift 2 ;;
        -n*) N=${1#-n}; shift ;;
        --no-build) BUILD=0; shift ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        --check-every) CHECK_EVERY=${2:?}; shift 2 ;;
        --no-doc) WRITE_DOC=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "add-latency: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for v in "$N" "$WARMUP" "$CHECK_EVERY"; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "add-latency: not a number: $v" >&2; exit 2; }
done
[ "$N" -ge 10 ] || { echo "add-latency: -n must be at least 10" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "add-latency: must run as root (network namespaces)" >&2; exit 1; }

CNI_DIR=/usr/lib/cni
for p in bridge host-local sbr; do
    [ -x "$CNI_DIR/$p" ] || {
        echo "add-latency: $CNI_DIR/$p missing; apt-get install -y containernetworking-plugins" >&2
        exit 1
    }
done
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
command -v ip >/dev/null || { echo "add-latency: iproute2 (ip) missing" >&2; exit 1; }

if [ "$BUILD" = 1 ]; then
    echo "add-latency: building release binaries" >&2
    (cd "$ROOT" && cargo build --release -p edgeway-plugin -p edgeway-agent)
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
for b in edgeway edgeway-agent; do
    [ -x "$BIN/$b" ] || { echo "add-latency: $BIN/$b missing (build, or drop --no-build)" >&2; exit 1; }
done

PREFIX=ewb$$
NODE=$PREFIX-node
POD=$PREFIX-pod
TMP=$(mktemp -d "/tmp/$PREFIX.XXXXXX")
AGENT_PID=
DRIVER_PID=

stop() {  # stop <pid>: TERM, up to 5 s, then KILL; only processes this script started
    local pid=$1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop "$DRIVER_PID"
    stop "$AGENT_PID"
    # Deleting the namespaces takes the veth pair and the bridge with them.
    ip netns del "$POD" 2>/dev/null || true
    ip netns del "$NODE" 2>/dev/null || true
    if [ "$rc" -ne 0 ] && [ -s "$TMP/agent.log" ]; then
        echo "add-latency: last agent log lines:" >&2
        tail -n 20 "$TMP/agent.log" >&2
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$NODE"
ip netns add "$POD"
ip -n "$NODE" link set lo up
ip -n "$POD" link set lo up

# The real host CNI, once, for a real prevResult. IPAM state stays in our temp dir.
NET=ewbnet
CID=ewbpod0
cat >"$TMP/bridge.json" <<EOF
{"cniVersion": "1.0.0", "name": "$NET", "type": "bridge", "bridge": "ewb0",
 "isGateway": true, "ipMasq": false,
 "ipam": {"type": "host-local", "dataDir": "$TMP/ipam",
          "ranges": [[{"subnet": "10.244.77.0/24"}]],
          "routes": [{"dst": "0.0.0.0/0"}]}}
EOF
if ! CNI_COMMAND=ADD CNI_CONTAINERID=$CID CNI_NETNS=/var/run/netns/$POD CNI_IFNAME=eth0 \
    CNI_PATH=$CNI_DIR CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod0" \
    ip netns exec "$NODE" "$CNI_DIR/bridge" <"$TMP/bridge.json" >"$TMP/prev.json"; then
    echo "add-latency: bridge ADD failed:" >&2
    cat "$TMP/prev.json" >&2
    exit 1
fi

# The agent, in the node namespace, with its socket and state in the temp dir.
mkdir -p "$TMP/state"
ip netns exec "$NODE" "$BIN/edgeway-agent" run --state-dir "$TMP/state" \
    --socket "$TMP/agent.sock" --node-name bench >"$TMP/agent.log" 2>&1 &
AGENT_PID=$!  # ip netns exec execs the agent, so this is the agent's own PID
for _ in $(seq 100); do
    [ -S "$TMP/agent.sock" ] && break
    kill -0 "$AGENT_PID" 2>/dev/null || { echo "add-latency: the agent exited" >&2; exit 1; }
    sleep 0.1
done
[ -S "$TMP/agent.sock" ] || { echo "add-latency: no agent socket after 10s" >&2; exit 1; }

echo "add-latency: timing $N ADD+DEL cycles per plugin (edgeway and sbr, alternating)" >&2
# In the background and waited for, so a TERM reaches the trap at once.
ip netns exec "$NODE" "$PY" "$ROOT/bench/cni_bench.py" run \
    --prev "$TMP/prev.json" --edgeway "$BIN/edgeway" --sbr "$CNI_DIR/sbr" \
    --pod-netns "$POD" --state-dir "$TMP/state" --socket "$TMP/agent.sock" \
    --network "$NET" --container-id "$CID" --ifname eth0 \
    -n "$N" --warmup "$WARMUP" --check-every "$CHECK_EVERY" --out "$TMP/results.json" &
DRIVER_PID=$!
if ! wait "$DRIVER_PID"; then
    DRIVER_PID=
    echo "add-latency: the timing driver failed" >&2
    exit 1
fi
DRIVER_PID=
kill -0 "$AGENT_PID" 2>/dev/null || { echo "add-latency: the agent died during the run" >&2; exit 1; }

DOC_ARGS=()
[ "$WRITE_DOC" = 1 ] && DOC_ARGS=(--doc "$ROOT/docs/benchmarks.md")
"$PY" "$ROOT/bench/cni_bench.py" render --results "$TMP/results.json" --root "$ROOT" "${DOC_ARGS[@]}"
