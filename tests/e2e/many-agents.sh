#!/usr/bin/env bash
# End to end at scale: N agents (default 10) in one simulated cluster, each node a namespace
# behind one router, spread over S segments (default 4), each with P pods (default 1) created
# through bridge + host-local + edgeway. Asserts, within generous bounds:
#   - membership: from the last agent start until every agent lists the N-1 others in
#     /v1/status (agents dial only members that own pods, so before the pods they know each
#     other through gossip but need not be connected);
#   - routes: from the last pod ADD until every agent's table 7332 holds exactly the pods of
#     the other segments (none of its own segment's), and then until every agent is
#     connected to all N-1 others;
#   - one more pod: from its ADD until every agent of the other segments routes it;
# and prints those times, plus each agent's memory (VmRSS, VmHWM: min/median/max) and CPU.
# bench/many-agents.sh runs the same with 50 release agents and prints the figures.
#
# Why 10 by default: CI runs debug binaries, whose unoptimised crypto and per-peer work cost
# about 5x the CPU of a release agent (10 settled debug agents take ~70% of one vCPU), and on
# 2 vCPUs 20 debug agents starve each other: pings time out, membership proofs miss their
# 10 s deadline, peers are dropped and redialled, and routes keep flapping for minutes.
# With EW_BIN=target/release, EW_AGENTS=20 converges in about a second.
#
#   router r ─┬─ n1   198.18.1.2/24 (r: 198.18.1.1), pods 10.244.1.0/24, segment seg0
#             ├─ n2   198.18.2.2/24 (r: 198.18.2.1), pods 10.244.2.0/24, segment seg1
#             └─ ...  node i in segment seg((i-1) mod S); every agent bootstraps from n1
# A star rather than one flat switch: the kernel's ARP table is shared by all namespaces and
# capped by gc_thresh3 (1024 by default). N nodes on one L2 segment need N(N-1) neighbour
# entries, and at 40 nodes it overflowed ("neighbor table overflow!"), leaving node pairs
# unable to reach each other; the star needs about 2N.
#
# Knobs (environment): EW_AGENTS, EW_SEGMENTS, EW_PODS_PER_NODE, EW_BOUND_SECS (each
# convergence bound, default 45), EW_IDLE_SECS (measure the idle cluster's CPU over this
# window; default 0 = skip), EW_BIN (binaries; default target/debug).
source "$(dirname "$0")/lib.sh"

N=${EW_AGENTS:-10}
S=${EW_SEGMENTS:-4}
P=${EW_PODS_PER_NODE:-1}
BOUND=${EW_BOUND_SECS:-45}
IDLE=${EW_IDLE_SECS:-0}
for v in "$N" "$S" "$P" "$BOUND" "$IDLE"; do [[ $v =~ ^[0-9]+$ ]] || fail "not a number: $v"; done
[ "$N" -ge 2 ] && [ "$N" -le 200 ] || fail "EW_AGENTS must be 2..200"
[ "$S" -ge 2 ] && [ "$S" -le "$N" ] || fail "EW_SEGMENTS must be 2..EW_AGENTS"
[ "$P" -ge 1 ] && [ "$P" -le 20 ] || fail "EW_PODS_PER_NODE must be 1..20"
[ "$BOUND" -le 600 ] && [ "$IDLE" -le 120 ] || fail "bounds too large"
now_ns() { date +%s%N; }
# Times the kernel's (machine-wide) ARP table was full, summed over CPUs.
arp_table_fulls() {
  python3 -c 'print(sum(int(l.split()[-1], 16) for l in open("/proc/net/stat/arp_cache").readlines()[1:]))'
}
ARP_FULLS0=$(arp_table_fulls)
secs_since() { python3 -c 'import sys,time; print("%.1f" % ((time.time_ns() - int(sys.argv[1])) / 1e9))' "$1"; }

# The convergence checker: one process polls every node (its table 7332 through `ip -n`,
# its members through /v1/status on the socket), so a sweep costs no interpreter starts.
cat > "$EW_TMP/converge.py" <<'PY'
import http.client, json, socket, subprocess, sys, time

class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("agent", timeout=5)
        self.path_ = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.path_)

def status(sock):
    c = Unix(sock)
    try:
        c.request("GET", "/v1/status")
        r = c.getresponse()
        return json.loads(r.read())
    finally:
        c.close()

def routes(ns):
    out = subprocess.run(["ip", "-n", ns, "-4", "route", "show", "table", "7332"],
                         capture_output=True, text=True).stdout
    return {l.split()[0] for l in out.splitlines() if l.strip()}

# converge.py SPEC MODE T0_NS TIMEOUT [EXTRA_IP]
# MODE known: every node's /v1/status lists the N-1 others. MODE mesh: every node is connected
# to the N-1 others (an agent dials only members that own pods, so this needs pods). MODE
# routes: every node's table holds exactly the other segments' pods. MODE one: every node of
# another segment routes EXTRA_IP.
spec = json.load(open(sys.argv[1]))
mode, t0, timeout = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
extra = sys.argv[5] if len(sys.argv) > 5 else None
n = len(spec)
extra_seg = next((s["segment"] for s in spec if extra in s["pods"]), None)

def want(node):
    return {ip for o in spec if o["segment"] != node["segment"] for ip in o["pods"]}

def ok(node):
    if mode in ("known", "mesh"):
        try:
            st = status(node["sock"])
        except OSError:
            return False, "no answer"
        peers = {p["nodeName"] for p in st["peers"] if mode == "known" or p.get("connected")}
        return len(peers) == n - 1, "%d/%d peers %s" % (len(peers), n - 1, mode)
    if mode == "routes":
        have, w = routes(node["ns"]), want(node)
        return have == w, "%d/%d routes, %d wrong" % (len(have & w), len(w), len(have - w))
    if node["segment"] == extra_seg:
        return True, ""
    return extra in routes(node["ns"]), "no route to " + extra

deadline = time.monotonic() + timeout
pending = list(spec)
sweeps = 0
while True:
    sweeps += 1
    last = {}
    still = []
    for node in pending:
        good, why = ok(node)
        if not good:
            still.append(node)
            last[node["name"]] = why
    if not still:
        # Converged node by node: one full sweep confirms they all hold at once.
        bad = [s["name"] for s in spec if not ok(s)[0]]
        if not bad:
            print("%.2f" % ((time.time_ns() - t0) / 1e9))
            sys.exit(0)
        still = [s for s in spec if s["name"] in bad]
    pending = still
    if time.monotonic() > deadline:
        print("not converged after %.0f s (%d sweeps): %d of %d nodes: %s" % (
            timeout, sweeps, len(pending), n,
            ", ".join("%s (%s)" % (k, v) for k, v in list(last.items())[:8])), file=sys.stderr)
        sys.exit(1)
    time.sleep(0.2)
PY

# add_pods.py PREFIX TMP CNI_DIR WORKERS NODE:POD...: each pod a namespace PREFIX-NODE-POD and
# an ADD through TMP/NODE/net.conflist the way libcni runs it (as lib.sh's pod_add does),
# from one interpreter and WORKERS at a time; appends each pod's IPv4 address to TMP/NODE/pods.
cat > "$EW_TMP/add_pods.py" <<'PY'
import concurrent.futures, json, os, subprocess, sys
prefix, tmp, cni, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def add(job):
    node, pod = job.split(":")
    ns = "%s-%s-%s" % (prefix, node, pod)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    conf = json.load(open(os.path.join(tmp, node, "net.conflist")))
    prev = None
    for p in conf["plugins"]:
        p = dict(p, name=conf["name"], cniVersion=conf["cniVersion"])
        if prev is not None:
            p["prevResult"] = prev
        env = dict(os.environ, CNI_COMMAND="ADD", CNI_CONTAINERID=pod + node, CNI_IFNAME="eth0",
                   CNI_NETNS="/run/netns/" + ns, CNI_PATH=cni,
                   CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=%s-%s" % (node, pod))
        r = subprocess.run(["ip", "netns", "exec", "%s-%s" % (prefix, node), os.path.join(cni, p["type"])],
                           input=json.dumps(p), capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise SystemExit("ADD %s/%s: %s failed: %s %s" % (node, pod, p["type"], r.stdout, r.stderr))
        prev = json.loads(r.stdout)
    return node, prev["ips"][0]["address"].split("/")[0]
with concurrent.futures.ThreadPoolExecutor(workers) as ex:
    for node, ip in ex.map(add, sys.argv[5:]):
        with open(os.path.join(tmp, node, "pods"), "a") as f:
            f.write(ip + "\n")
PY

addr() { echo "198.18.$1.2"; }
seg() { echo "seg$((($1 - 1) % S))"; }

log "building $N nodes behind one router, $S segments, $P pod(s) per node, binaries in $EW_BIN"
T_BUILD=$(now_ns)
make_ns r
in_ns r sysctl -qw net.ipv4.ip_forward=1
for ((i = 1; i <= N; i++)); do
  make_ns "n$i"
  link_ns r "n$i" "198.18.$i.1/24" "n$i" eth0 "$(addr "$i")/24"
  in_ns "n$i" ip route add 198.18.0.0/15 via "198.18.$i.1"
done
write_secret secret
for ((i = 1; i <= N; i++)); do write_conflist "n$i" "10.244.$i.0/24"; done
log "topology ready in $(secs_since "$T_BUILD") s"

T_FIRST_AGENT=$(now_ns)
agent_start n1 "$(seg 1)" secret "$(addr 1)"
BOOT="/ip4/$(addr 1)/tcp/7333/p2p/$(peer_id n1)"
for ((i = 2; i <= N; i++)); do agent_start "n$i" "$(seg "$i")" secret "$(addr "$i")" "$BOOT"; done
T_LAST_AGENT=$(now_ns)
START_SECS=$(secs_since "$T_FIRST_AGENT")
log "$N agents started in $START_SECS s"

spec() { # spec FILE: nodes, segments, sockets and pod IPs as converge.py reads them
  python3 - "$EW_TMP" "$EW_PREFIX" "$N" "$S" > "$1" <<'PY'
import json, os, sys
tmp, prefix, n, s = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = []
for i in range(1, n + 1):
    f = os.path.join(tmp, "n%d" % i, "pods")
    pods = open(f).read().split() if os.path.exists(f) else []
    out.append({"name": "n%d" % i, "ns": "%s-n%d" % (prefix, i), "segment": "seg%d" % ((i - 1) % s),
                "sock": os.path.join(tmp, "n%d" % i, "agent.sock"), "pods": pods})
json.dump(out, sys.stdout)
PY
}
converge() { # converge MODE T0 [EXTRA_IP] -> seconds since T0, or fails the test
  spec "$EW_TMP/spec.json"
  python3 "$EW_TMP/converge.py" "$EW_TMP/spec.json" "$1" "$2" "$BOUND" "${3:-}" \
    || fail "$1 did not converge within $BOUND s"
}

KNOWN_SECS=$(converge known "$T_LAST_AGENT")
log "every agent knows the $((N - 1)) others $KNOWN_SECS s after the last agent start"

log "creating $((N * P)) pods through bridge + host-local + edgeway"
JOBS=()
for ((k = 1; k <= P; k++)); do for ((i = 1; i <= N; i++)); do JOBS+=("n$i:p$k"); done; done
T_FIRST_ADD=$(now_ns)
python3 "$EW_TMP/add_pods.py" "$EW_PREFIX" "$EW_TMP" "$EW_CNI_DIR" 4 "${JOBS[@]}" || fail "pod ADDs failed"
T_LAST_ADD=$(now_ns)
ADD_SECS=$(secs_since "$T_FIRST_ADD")
ROUTES_SECS=$(converge routes "$T_LAST_ADD")
EXPECT=$(((N - (N + S - 1) / S) * P)) # routes on n1, whose segment is the largest
log "routes converged $ROUTES_SECS s after the last ADD (pods added in $ADD_SECS s; n1 routes $EXPECT pods)"
MESH_SECS=$(converge mesh "$T_LAST_ADD")
log "every agent is connected to the $((N - 1)) others $MESH_SECS s after the last ADD"
[ "$(in_ns n1 ip route show table 7332 | wc -l)" -eq "$EXPECT" ] || fail "n1 routes $(in_ns n1 ip route show table 7332 | wc -l) pods, not $EXPECT"

log "one more pod on n1, in a settled cluster"
XIP=$(pod_add n1 extra)
T_X=$(now_ns)
echo "$XIP" >> "$EW_TMP/n1/pods"
ONE_SECS=$(converge one "$T_X" "$XIP")
log "every agent of another segment routes $XIP $ONE_SECS s after its ADD"

IDLE_CPU=skipped
if [ "$IDLE" -gt 0 ]; then
  sleep 5 # past the last announcements and dials of the pod wave
  cpu_ticks() { local t=0 pid; for pid in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo "$t"; }
  PIDS=()
  for ((i = 1; i <= N; i++)); do PIDS+=("$(agent_pid "n$i")"); done
  c0=$(cpu_ticks "${PIDS[@]}")
  sleep "$IDLE"
  c1=$(cpu_ticks "${PIDS[@]}")
  IDLE_CPU=$(python3 -c 'import sys,os; print("%.1f%%" % (100.0 * int(sys.argv[1]) / os.sysconf("SC_CLK_TCK") / int(sys.argv[2])))' $((c1 - c0)) "$IDLE")
  log "the settled cluster used $IDLE_CPU of one vCPU over ${IDLE} s, all $N agents together"
fi

# Memory and CPU of every agent; every one must still be running.
for ((i = 1; i <= N; i++)); do
  pid=$(agent_pid "n$i")
  kill -0 "$pid" 2>/dev/null || fail "agent n$i (pid $pid) died"
  awk '/^VmRSS:|^VmHWM:/ {printf "%s %s ", $1, $2} END {print ""}' "/proc/$pid/status"
  awk '{print "cpu_ticks", $14 + $15}' "/proc/$pid/stat"
done > "$EW_TMP/mem.txt"
MEM=$(python3 - "$EW_TMP/mem.txt" <<'PY'
import os, statistics, sys
rss, hwm, cpu = [], [], []
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "cpu_ticks":
        cpu.append(int(f[1]) / os.sysconf("SC_CLK_TCK"))
    else:
        d = dict(zip(f[::2], f[1::2]))
        rss.append(int(d["VmRSS:"]) / 1024)
        hwm.append(int(d["VmHWM:"]) / 1024)
fmt = lambda v, u: "min %.1f / median %.1f / max %.1f %s" % (min(v), statistics.median(v), max(v), u)
print("VmRSS %s; VmHWM %s; CPU since start %s" % (fmt(rss, "MiB"), fmt(hwm, "MiB"), fmt(cpu, "s")))
PY
)
log "agent memory: $MEM"

fulls=$(($(arp_table_fulls) - ARP_FULLS0))
[ "$fulls" -eq 0 ] || log "warning: the kernel's ARP table was full $fulls times during this run (it is shared by every namespace on the machine)"

echo "MANY-AGENTS agents=$N segments=$S pods=$((N * P + 1)) binaries=$EW_BIN start_all=${START_SECS}s" \
  "known_after_last_start=${KNOWN_SECS}s routes_after_last_add=${ROUTES_SECS}s" \
  "mesh_after_last_add=${MESH_SECS}s" \
  "one_pod_to_all=${ONE_SECS}s idle_cpu=$IDLE_CPU | $MEM"
log "PASS"
