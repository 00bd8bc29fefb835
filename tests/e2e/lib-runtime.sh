#!/usr/bin/env bash
# Helpers for the end-to-end scripts that drive edgeway through a real container runtime
# (podman.sh, containerd.sh). Source it after lib.sh.
#
# A runtime runs inside a node's network namespace, so that the CNI plugins it calls
# (bridge, host-local, edgeway) act on the node and never on the root namespace. It cannot
# simply be started with `ip netns exec` for every command: each `ip netns exec` makes a new
# mount namespace, and the runtime's own mounts (the containers' network namespaces under
# /run/netns, shm) would be invisible to its next command. So each node gets one long-lived
# "node shell": a process started by `ip netns exec` (the node's netns and its own mount
# namespace with the node's /sys) that also mounts the cgroup hierarchies runc needs
# (`ip netns exec` remounts /sys without them). Every runtime command enters that shell's
# network and mount namespaces with nsenter, after checking that it really is the node's
# namespace and not ours.
#
# Nothing global is configured: every config, storage, state and socket path lives under
# $EW_TMP, and the runtimes are pointed at them by flags and environment variables.

if [ "${BASH_SOURCE[0]}" = "$0" ] || [ -z "${EW_TMP:-}" ]; then
  echo "lib-runtime.sh is a library: source it after lib.sh" >&2
  exit 2
fi

RT_CNI_DIR="$EW_TMP/rt-cni"
RT_CALLS="$EW_TMP/cni-calls.log"
RT_ROOTFS="$EW_TMP/rootfs"
RT_NODES=()
RT_TEARDOWN=() # functions run at exit, before lib.sh's cleanup
: > "$RT_CALLS"

# A plugin dir with the reference plugins and edgeway behind a wrapper that runs the real
# plugin with the same stdin and stdout, and logs every call the runtime makes: command,
# container, netns, whether prevResult came, exit status and, on failure, the CNI error code.
mkdir -p "$RT_CNI_DIR"
for p in /usr/lib/cni/*; do ln -sf "$p" "$RT_CNI_DIR/"; done
cat > "$RT_CNI_DIR/edgeway" <<EOF
#!/bin/sh
in=\$(cat)
prev=no
case "\$in" in *'"prevResult"'*) prev=yes ;; esac
out=\$(printf '%s' "\$in" | "$EW_CNI_DIR/edgeway")
rc=\$?
printf '%s\n' "\$out"
code=
[ "\$rc" -eq 0 ] || code=\$(printf '%s' "\$out" | sed -n 's/.*"code": *\\([0-9]*\\).*/\\1/p' | head -n1)
printf '%s cid=%s netns=%s ifname=%s prev=%s rc=%s%s\n' "\$CNI_COMMAND" "\${CNI_CONTAINERID:-}" \\
  "\${CNI_NETNS:-}" "\${CNI_IFNAME:-}" "\$prev" "\$rc" "\${code:+ code=\$code}" >> "$RT_CALLS"
exit \$rc
EOF
chmod 755 "$RT_CNI_DIR/edgeway"

# calls COMMAND CID: the logged edgeway calls of that command for that container.
calls() { grep "^$1 cid=$2 " "$RT_CALLS" || true; }

# rt_two_lans: node a1 (lan-a, where the runtime runs) and node b1 (lan-b, with pod pb1)
# behind router r, which routes the underlays but no pod CIDR. Sets BOOT and PB1.
rt_two_lans() {
  two_lans
  agent_start a1 lan-a secret 198.51.100.11
  BOOT="/ip4/198.51.100.11/tcp/7333/p2p/$(peer_id a1)"
  agent_start b1 lan-b secret 203.0.113.21 "$BOOT"
  wait_for "a1 and b1 to meet" 15 members a1 1
  PB1=$(pod_add b1 pb1)
}

# What the runtime tests check on node a1: routes, rules, registrations and records.
has_rule() { in_ns a1 ip rule | grep "from $1 lookup 7332" >/dev/null; }
# registered CID IP: the agent lists the attachment with that address.
registered() {
  api a1 /v1/attachments | python3 -c '
import json, sys
cid, ip = sys.argv[1], sys.argv[2]
sys.exit(0 if any(a["containerID"] == cid and ip in a["ips"] for a in json.load(sys.stdin)) else 1)' "$1" "$2"
}
unregistered() { ! api a1 /v1/attachments | grep -q "$1"; }
record() { test -e "$EW_TMP/a1/state/attachments/$1@eth0.json"; }

# rt_rootfs: a busybox root filesystem (BRIEF.md's test world).
rt_rootfs() {
  mkdir -p "$RT_ROOTFS/bin" "$RT_ROOTFS"/{proc,sys,dev,etc,tmp,run,data}
  cp /bin/busybox "$RT_ROOTFS/bin/busybox"
}

# rt_node_shell NODE [DIR...]: starts the node shell (see the top of this file). Each DIR
# gets a tmpfs of its own in the shell's mount namespace, for the fixed paths a runtime
# writes to whatever its config says (libcni's cache /var/lib/cni, runc's state under /run):
# what the runtime leaves there vanishes with the shell. A missing DIR is created empty first
# (a mount point needs one), and left in place.
rt_node_shell() {
  local node=$1 ready="$EW_TMP/rt-$1.ready" script="$EW_TMP/rt-$1-mounts.sh" pid dir
  shift
  # The /sys submounts of our own namespace (the cgroup hierarchies), to be mounted again
  # over the node's fresh /sys.
  awk '$2 ~ "^/sys/." {printf "mkdir -p %s && mount -t %s -o %s %s %s\n", $2, $3, $4, $1, $2}' \
    /proc/self/mounts > "$script"
  for dir in "$@"; do
    echo "mkdir -p '$dir' && mount -t tmpfs -o mode=0755 ew-private '$dir'" >> "$script"
  done
  echo "touch '$ready'" >> "$script"
  # A simple command, so that $! is the shell itself (ip execs sh, sh execs sleep).
  ip netns exec "$(ns "$node")" sh -ec ". '$script'; exec sleep ${RT_SHELL_SECS:-600}" </dev/null >/dev/null 2>&1 &
  pid=$!
  EW_PIDS+=("$pid")
  eval "RT_SHELL_${node//-/_}=$pid"
  RT_NODES+=("$node")
  wait_for "node shell $node" 10 test -e "$ready"
  rt_check_shell "$node"
}

rt_shell_pid() { local v="RT_SHELL_${1//-/_}"; echo "${!v:-}"; }

# rt_check_shell NODE: refuses to go on unless the node shell is alive, in the node's
# network namespace, and not in ours.
rt_check_shell() {
  local pid want have self
  pid=$(rt_shell_pid "$1")
  [ -n "$pid" ] || fail "no node shell for $1"
  want="net:[$(stat -L -c %i "/run/netns/$(ns "$1")")]"
  have=$(readlink "/proc/$pid/ns/net") || fail "node shell of $1 (pid $pid) is gone"
  self=$(readlink /proc/self/ns/net)
  [ "$have" = "$want" ] && [ "$have" != "$self" ] || fail "node shell of $1 is in $have, not in $(ns "$1") ($want)"
}

# rt_in NODE CMD...: runs CMD in the node shell's network and mount namespaces.
rt_in() {
  local node=$1
  shift
  rt_check_shell "$node"
  nsenter -t "$(rt_shell_pid "$node")" -m -n -- "$@"
}

# rt_track PID: remember a container process, so that it is killed at exit if the runtime
# failed to remove it. The start time guards against PID reuse.
rt_track() {
  local start
  start=$(awk '{print $22}' "/proc/$1/stat" 2>/dev/null) || return 0
  echo "$1 $start" >> "$EW_TMP/rt-pids"
}

rt_exit() {
  local rc=$? f pid start now
  set +e # a failing step here must not skip lib.sh's cleanup
  if [ -z "${EW_KEEP_ON_FAIL:-}" ] || [ "$rc" -eq 0 ]; then
    for f in "${RT_TEARDOWN[@]}"; do "$f" || true; done
    if [ -f "$EW_TMP/rt-pids" ]; then
      while read -r pid start; do
        now=$(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null) || continue
        [ "$now" = "$start" ] && { log "killing leftover container process $pid"; kill -9 "$pid" 2>/dev/null || true; }
      done < "$EW_TMP/rt-pids"
    fi
  fi
  (exit "$rc") # cleanup reads the exit status from $?
  cleanup
}
trap rt_exit EXIT

# rt_rmdir_cgroups NAME: removes the (empty) cgroups named NAME that this run's runtime
# created under every hierarchy, deepest first. rmdir never removes a non-empty cgroup.
rt_rmdir_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/"$1"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  return 0
}

# ---- podman ---------------------------------------------------------------------------

# podman_setup NODE: a podman of its own for NODE: containers.conf, storage.conf, storage,
# run root, libpod tmp dir, file locks and events, and a CNI config dir
# ($EW_TMP/NODE/podman/net.d) that holds only this run's conflists.
podman_setup() {
  local node=$1 d="$EW_TMP/$1/podman"
  mkdir -p "$d/net.d"
  cat > "$d/containers.conf" <<EOF
[containers]
log_driver = "k8s-file"
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$d/events.log"
lock_type = "file"
tmp_dir = "$d/tmp"
static_dir = "$d/storage/libpod"
volume_path = "$d/storage/volumes"
[network]
network_backend = "cni"
network_config_dir = "$d/net.d"
cni_plugin_dirs = ["$RT_CNI_DIR"]
# Never used (every run names its network), but kept inside the test's pod range.
default_network = "unused-$EW_PREFIX"
default_subnet = "10.244.250.0/24"
EOF
  cat > "$d/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$d/storage"
runroot = "$d/run"
EOF
  RT_PODMAN_NODES+=("$node")
}
RT_PODMAN_NODES=()

# pm NODE ARGS...: podman for NODE, in the node's namespaces, with the per-run config.
pm() {
  local node=$1 d="$EW_TMP/$1/podman"
  shift
  rt_in "$node" env CONTAINERS_CONF="$d/containers.conf" CONTAINERS_STORAGE_CONF="$d/storage.conf" \
    podman --root "$d/storage" --runroot "$d/run" --storage-driver vfs --tmpdir "$d/tmp" \
    --network-config-dir "$d/net.d" --cgroup-manager cgroupfs --events-backend file --runtime runc "$@"
}

# pm_run NODE ARGS...: `podman run` with the container's cgroups under a per-run parent.
pm_run() {
  local node=$1
  shift
  pm "$node" run --cgroup-parent "/$EW_PREFIX-podman" "$@"
}

# pm_ip NODE CONTAINER: the container's IPv4 address on eth0, as the container sees it.
pm_ip() {
  pm "$1" exec "$2" /bin/busybox ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1
}

podman_teardown() {
  local node
  for node in "${RT_PODMAN_NODES[@]}"; do
    pm "$node" rm -af -t 0 >/dev/null 2>&1 || log "podman rm -af on $node failed"
  done
  rt_rmdir_cgroups "$EW_PREFIX-podman"
}
RT_TEARDOWN+=(podman_teardown)

# ---- containerd (CRI) -----------------------------------------------------------------

# The CRI client: PyPI's container-runtime-interface-api (generated CRI v1 stubs over grpcio),
# in a venv under ~/.cache, reused while the pinned versions match (as
# scripts/validate-manifests.sh does). Debian has no crictl.
CRI_REQUIREMENTS=(container-runtime-interface-api==2.0.1 grpcio==1.85.3 protobuf==6.33.6)
CRI_VENV=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/edgeway/cri-venv
CRI_PY="$EW_TMP/cri.py"
RT_CONTAINERD_NODES=()

cri_client_setup() {
  if [ "$(cat "$CRI_VENV/.requirements" 2>/dev/null)" != "${CRI_REQUIREMENTS[*]}" ]; then
    log "installing the CRI client into $CRI_VENV"
    rm -rf "$CRI_VENV"
    mkdir -p "$(dirname "$CRI_VENV")"
    python3 -m venv "$CRI_VENV" || fail "python3 -m venv failed (apt-get install python3-venv)"
    "$CRI_VENV/bin/pip" install -q --disable-pip-version-check "${CRI_REQUIREMENTS[@]}" ||
      fail "pip install ${CRI_REQUIREMENTS[*]} failed"
    echo "${CRI_REQUIREMENTS[*]}" > "$CRI_VENV/.requirements"
  fi
  # A crictl-like command line over the library's RuntimeService stub.
  cat > "$CRI_PY" <<'PY'
import json, sys
import grpc
from cri_api.v1 import api_pb2 as api, api_pb2_grpc as rpc

sock, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
rt = rpc.RuntimeServiceStub(grpc.insecure_channel("unix://" + sock))
T = 60
try:
    if cmd == "version":
        r = rt.Version(api.VersionRequest(version="v1"), timeout=T)
        print(r.runtime_name, r.runtime_version, r.runtime_api_version)
    elif cmd == "runp":  # runp NAME LOGDIR CGROUP_PARENT -> sandbox id
        name, logdir, cgparent = args
        ns = api.NamespaceOption(network=api.POD, pid=api.CONTAINER, ipc=api.POD)
        cfg = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, uid=name + "-uid", namespace="default"),
            hostname=name, log_directory=logdir,
            linux=api.LinuxPodSandboxConfig(
                cgroup_parent=cgparent,
                security_context=api.LinuxSandboxSecurityContext(namespace_options=ns)))
        print(rt.RunPodSandbox(api.RunPodSandboxRequest(config=cfg), timeout=T).pod_sandbox_id)
    elif cmd == "stopp":
        rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=args[0]), timeout=T)
    elif cmd == "rmp":
        rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=args[0]), timeout=T)
    elif cmd == "inspectp":  # -> {"state", "ip", "netns", "pid"}
        r = rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=args[0], verbose=True), timeout=T)
        info = json.loads(r.info.get("info", "{}"))
        netns = [n.get("path", "") for n in info.get("runtimeSpec", {}).get("linux", {}).get("namespaces", [])
                 if n.get("type") == "network"]
        print(json.dumps({"state": api.PodSandboxState.Name(r.status.state), "ip": r.status.network.ip,
                          "netns": netns[0] if netns else "", "pid": info.get("pid", 0)}))
    elif cmd == "pods":
        for p in rt.ListPodSandbox(api.ListPodSandboxRequest(), timeout=T).items:
            print(p.id, api.PodSandboxState.Name(p.state), p.metadata.name)
    else:
        sys.exit("unknown command " + cmd)
except grpc.RpcError as e:
    print("%s: %s" % (e.code().name, e.details()), file=sys.stderr)
    sys.exit(1)
PY
}

# cri NODE ARGS...: the CRI client against NODE's containerd.
cri() {
  local node=$1
  shift
  "$CRI_VENV/bin/python" "$CRI_PY" "$EW_TMP/$node/containerd/containerd.sock" "$@"
}
# cri_field NODE SANDBOX FIELD: one field of `inspectp`.
cri_field() {
  cri "$1" inspectp "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$3"
}

# containerd_pause_image FILE REF: a docker-archive image holding busybox, whose entrypoint
# sleeps: the pod sandbox ("pause") image, built here since no registry is reachable.
containerd_pause_image() {
  python3 - "$1" "$2" <<'PY'
import hashlib, io, json, sys, tarfile
out, ref = sys.argv[1:]
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w") as t:
    for d in ("bin", "proc", "sys", "dev", "etc", "tmp", "run"):
        i = tarfile.TarInfo(d); i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)
    t.add("/bin/busybox", arcname="bin/busybox")
layer = layer.getvalue()
diff = "sha256:" + hashlib.sha256(layer).hexdigest()
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Entrypoint": ["/bin/busybox", "sleep", "2147483647"]},
    "rootfs": {"type": "layers", "diff_ids": [diff]},
}).encode()
manifest = json.dumps([{"Config": "config.json", "RepoTags": [ref], "Layers": ["layer.tar"]}]).encode()
with tarfile.open(out, "w") as t:
    for name, data in (("layer.tar", layer), ("config.json", config), ("manifest.json", manifest)):
        i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))
PY
}

# containerd_config NODE: containerd's config for NODE: its own root, state, sockets, the
# native snapshotter, runc with cgroupfs, and a CNI config dir of its own
# ($EW_TMP/NODE/containerd/net.d, which must hold the conflist before containerd starts).
containerd_config() {
  local d="$EW_TMP/$1/containerd"
  mkdir -p "$d/net.d" "$d/logs"
  cat > "$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.overlayfs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$CONTAINERD_PAUSE"
  disable_apparmor = true
  # Sandboxes get oom_score_adj -998 otherwise, which needs CAP_SYS_RESOURCE (not held here).
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/bin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$RT_CNI_DIR"
    conf_dir = "$d/net.d"
    max_conf_num = 1
TOML
}
CONTAINERD_PAUSE="localhost/edgeway-e2e-pause:1"

# containerd_start NODE: starts NODE's containerd in the node shell and imports the pause
# image.
containerd_start() {
  local node=$1 d="$EW_TMP/$1/containerd" pid
  rt_check_shell "$node"
  # A simple command, so that $! is containerd (nsenter without -p execs it).
  nsenter -t "$(rt_shell_pid "$node")" -m -n -- containerd --config "$d/config.toml" --log-level info \
    </dev/null >> "$EW_TMP/$node-containerd.log" 2>&1 &
  pid=$!
  EW_PIDS+=("$pid")
  eval "RT_CONTAINERD_${node//-/_}=$pid"
  RT_CONTAINERD_NODES+=("$node")
  containerd_up() { cri "$node" version; }
  wait_for "containerd on $node" 20 containerd_up
  containerd_pause_image "$d/pause.tar" "$CONTAINERD_PAUSE"
  rt_in "$node" ctr --address "$d/containerd.sock" -n k8s.io images import --snapshotter native \
    "$d/pause.tar" >/dev/null || fail "ctr images import failed"
}

containerd_teardown() {
  local node id state rest pid v
  for node in "${RT_CONTAINERD_NODES[@]}"; do
    while read -r id state rest; do
      [ -n "$id" ] || continue
      cri "$node" stopp "$id" || log "StopPodSandbox $id on $node failed"
      cri "$node" rmp "$id" || log "RemovePodSandbox $id on $node failed"
    done < <(cri "$node" pods 2>/dev/null || true)
    v="RT_CONTAINERD_${node//-/_}"
    pid=${!v:-}
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  rt_rmdir_cgroups "$EW_PREFIX-containerd"
}
RT_TEARDOWN+=(containerd_teardown)
