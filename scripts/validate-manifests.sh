#!/usr/bin/env bash
# Validates edgeway's deployment files without a cluster:
#
#   - examples/kubernetes/*.yaml and the Helm chart charts/edgeway, rendered the way
#     `helm template` does (Helm's own install action, client-only dry run), against the
#     Kubernetes OpenAPI JSON schemas (kubernetes-validate, strict: unknown fields are
#     errors) for the oldest and the newest Kubernetes versions we claim;
#   - `helm lint --strict` of the chart, and that it refuses to render without a cluster
#     secret (and the other values it requires);
#   - that the chart renders the same objects as the plain manifests;
#   - every agent config (the ConfigMaps' agent.toml and relay.toml, examples/*.toml)
#     with the agent's own parser (`edgeway-agent check-config`), and their multiaddrs;
#   - the containers' commands, run for real against temp directories: install-cni with
#     the DaemonSets' exact args (with --watch, through a flannel-style rewrite), the
#     probes, and the agent's command line;
#   - examples/systemd/edgeway-agent.service with `systemd-analyze verify`, if present.
#
# Helm: no Linux `helm` CLI can be installed here: Debian 12 packages none, PyPI's
# helm-package ships only macOS and Windows binaries, and npm has none. So the chart is
# rendered by Helm's own Go SDK (v4.2.3), which PyPI's helm-python-sdk ships as a shared
# library (libhelm_c): the same engine and install action as `helm template`, not a
# re-implementation. Helm 3 itself is not exercised; the chart (apiVersion v2) uses
# nothing that differs between 3 and 4.
#
# Installs what it needs into a venv under ~/.cache (pinned versions, reused when
# present); safe to run repeatedly and as root. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

KUBE_VERSIONS="1.25.0 1.37.0"     # the chart's kubeVersion floor, and the newest schemas
REQUIREMENTS=(kubernetes-validate==1.37.0 helm-python-sdk==0.2.2 multiaddr==0.2.0)
CACHE=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/edgeway
VENV=$CACHE/validate-venv

say() { printf -- '--- %s\n' "$*"; }
die() { printf 'validate-manifests: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is needed"
if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "${REQUIREMENTS[*]}" ]; then
  say "installing the validators into $VENV"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 ships venv separately.
    rm -rf "$VENV"
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
      die "python3 -m venv fails; install python3-venv"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "${REQUIREMENTS[@]}"
  echo "${REQUIREMENTS[*]}" > "$VENV/.requirements"
fi
PY=$VENV/bin/python

# The real binaries check the configs (check-config) and run the containers' commands:
# install-cni, the probes. EDGEWAY_BIN may name a directory that already holds them.
if [ -n "${EDGEWAY_BIN:-}" ]; then
  BIN=$EDGEWAY_BIN
else
  say "building edgeway-agent and the plugin (a no-op when up to date)"
  cargo build --release --locked -q -p edgeway-plugin -p edgeway-agent
  BIN=$ROOT/target/release
fi
AGENT=$BIN/edgeway-agent
if [ ! -x "$AGENT" ] || [ ! -x "$BIN/edgeway" ]; then die "no edgeway-agent and edgeway in $BIN"; fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# --- manifests, chart, configs ----------------------------------------------------------------
cat > "$TMP/validate.py" <<'PY'
import base64, copy, glob, json, os, shlex, shutil, signal, subprocess, sys, time, tomllib

import yaml
import helm_python as helm
from kubernetes_validate import utils as kv
from kubernetes_validate.version import __version__ as KV_VERSION
from multiaddr import Multiaddr

ROOT, AGENT, TMP = sys.argv[1], sys.argv[2], sys.argv[3]
KUBE_VERSIONS = sys.argv[4].split()
CHART = os.path.join(ROOT, "charts/edgeway")
TEST_VALUES = os.path.join(CHART, "ci/test-values.yaml")
NS = "kube-system"
checks = 0
failures = []


def ok(what):
    global checks
    checks += 1
    print(f"ok   {what}")


def bad(what, why):
    global checks
    checks += 1
    failures.append(what)
    print(f"FAIL {what}: {why}")


def docs_of(text):
    return [d for d in yaml.safe_load_all(text) if d]


def schema_errors(doc):
    """Every reason the schemas reject doc, for each Kubernetes version; [] when valid."""
    errors = []
    for version in KUBE_VERSIONS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"k8s {version}: {path}: {e.message}")
        except (kv.SchemaNotFoundError, kv.VersionNotSupportedError, kv.InvalidSchemaError) as e:
            errors.append(f"k8s {version}: {e.message}")
    return errors


def validate_docs(source, docs):
    for doc in docs:
        name = f"{source}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        errors = schema_errors(doc)
        if errors:
            bad(f"schema {name}", "; ".join(errors))
        else:
            ok(f"schema {name} (Kubernetes {', '.join(KUBE_VERSIONS)}, strict)")


def objects(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def check_toml(source, text, multiaddrs=True):
    """The agent's own parser, then every multiaddr in p2p."""
    path = os.path.join(TMP, "check.toml")
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([AGENT, "--config", path, "check-config"], capture_output=True, text=True)
    if r.returncode != 0:
        bad(f"config {source}", r.stderr.strip())
        return None
    cfg = tomllib.loads(text)
    p2p = cfg.get("p2p", {})
    addrs = p2p.get("listen", []) + p2p.get("bootstrap", []) if multiaddrs else []
    for a in addrs:
        try:
            Multiaddr(a)
        except Exception as e:
            bad(f"config {source}", f"multiaddr {a!r}: {e}")
            return None
    ok(f"config {source} (edgeway-agent check-config, {len(addrs)} multiaddrs)")
    return cfg


def pod_spec(ds):
    return ds["spec"]["template"]["spec"]


# 0. The validator must catch a broken object, or every "ok" below means nothing.
broken = {
    "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "broken"},
    "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
        "metadata": {"labels": {"a": "b"}},
        "spec": {"hostNetwork": "yes", "containers": [{"name": "c", "image": "i", "bogus": 1}]}}},
}
if len(schema_errors(broken)) == len(KUBE_VERSIONS):
    ok("the schema check rejects a broken DaemonSet")
else:
    bad("the schema check rejects a broken DaemonSet", "it accepted it")

# 1. examples/kubernetes
plain = []
for path in sorted(glob.glob(os.path.join(ROOT, "examples/kubernetes/*.yaml"))):
    rel = os.path.relpath(path, ROOT)
    with open(path) as f:
        docs = docs_of(f.read())
    validate_docs(rel, docs)
    for d in docs:
        if d["metadata"].get("namespace") != NS:
            bad(f"{rel}: {d['kind']}/{d['metadata']['name']}", f"not in {NS}")
        if d["kind"] == "Secret":
            bad(f"{rel}: Secret/{d['metadata']['name']}", "the manifests must ship no secret")
        if d["kind"] == "ConfigMap":
            for key, text in d["data"].items():
                if key.endswith(".toml"):
                    check_toml(f"{rel}: {key}", text)
    plain += docs
plain_objs = objects(plain)
for ds in (o for o in plain if o["kind"] == "DaemonSet"):
    vols = {v["name"]: v for v in pod_spec(ds)["volumes"]}
    mode = vols["cluster-secret"]["secret"].get("defaultMode")
    if mode == 0o400:
        ok(f"DaemonSet/{ds['metadata']['name']}: the secret is mounted 0400")
    else:
        bad(f"DaemonSet/{ds['metadata']['name']}", f"secret defaultMode {mode!r} is not 0o400")

for path, multiaddrs in (("examples/agent.toml", True), ("examples/systemd/agent.toml", True)):
    with open(os.path.join(ROOT, path)) as f:
        check_toml(path, f.read(), multiaddrs)

# 2. The chart: lint, then render as `helm template` does.
with open(TEST_VALUES) as f:
    test_values = yaml.safe_load(f)


def render(values):
    """Helm's install action with a client-only dry run: `helm template`'s code path."""
    with helm.Config(namespace=NS, storage_driver="memory",
                     kubeconfig_path=os.path.join(TMP, "no-kubeconfig")) as cfg:
        release = cfg.install(CHART, "edgeway", values, namespace=NS, dry_run="client")
    return docs_of(release["manifest"]), release.get("notes", "")


for version in KUBE_VERSIONS:
    report = helm.lint(CHART, test_values, strict=True, kube_version=f"v{version}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    if problems:
        bad(f"helm lint --strict (Kubernetes {version})", json.dumps(problems))
    else:
        ok(f"helm lint --strict (Kubernetes {version})")

try:
    chart_docs, notes = render(test_values)
    ok(f"chart renders with {os.path.relpath(TEST_VALUES, ROOT)} "
       f"(Helm SDK {helm.helm_sdk_version()}, {len(chart_docs)} objects)")
except helm.HelmError as e:
    print(f"FAIL chart renders with the test values: {e}")
    sys.exit(1)
validate_docs("chart", chart_docs)
chart_objs = objects(chart_docs)
if not notes.strip():
    bad("chart NOTES.txt", "renders empty")

# The same objects as examples/kubernetes, and the same pods but for scheduling.
if set(chart_objs) == set(plain_objs):
    ok(f"chart renders the same objects as examples/kubernetes: {sorted(k for k in chart_objs)}")
else:
    bad("chart renders the same objects as examples/kubernetes",
        f"chart {sorted(chart_objs)} vs manifests {sorted(plain_objs)}")
for key in sorted(k for k in chart_objs if k[0] == "DaemonSet" and k in plain_objs):
    a, b = copy.deepcopy(pod_spec(chart_objs[key])), copy.deepcopy(pod_spec(plain_objs[key]))
    for spec in (a, b):
        # Scheduling differs by design: the chart selects relays by node name, the
        # manifests by the edgeway/relay label.
        for field in ("affinity", "nodeSelector"):
            spec.pop(field, None)
    if a == b:
        ok(f"{key[0]}/{key[1]}: the chart's pod spec matches examples/kubernetes")
    else:
        diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        bad(f"{key[0]}/{key[1]}: the chart's pod spec matches examples/kubernetes",
            f"differs in {diff}")

cm = chart_objs.get(("ConfigMap", "edgeway-config"))
for key, text in (cm or {}).get("data", {}).items():
    cfg = check_toml(f"chart ConfigMap: {key}", text)
    if cfg and key == "agent.toml":
        want = [a for r in test_values["relays"] for a in
                ([r["advertiseAddress"]] if isinstance(r["advertiseAddress"], str) else r["advertiseAddress"])]
        boot = cfg["p2p"]["bootstrap"]
        if len(boot) == 2 * len(want) and all(any(f"/{w}/" in b for b in boot) for w in want):
            ok("chart: the agents' bootstrap holds a TCP and a QUIC address per relay address")
        else:
            bad("chart: bootstrap from relays", f"{boot} for {want}")

# With clusterSecret.value the chart renders the Secret, and the pods mount it.
secret_values = copy.deepcopy(test_values)
secret_values["clusterSecret"] = {"value": "0123456789abcdef0123456789abcdef"}
try:
    docs, _ = render(secret_values)
    validate_docs("chart with clusterSecret.value", [d for d in docs if d["kind"] == "Secret"])
    secret = objects(docs).get(("Secret", "edgeway-cluster-secret"))
    data = (secret or {}).get("data", {}).get("cluster-secret", "")
    mounted = {v["name"]: v for v in pod_spec(objects(docs)[("DaemonSet", "edgeway-agent")])["volumes"]}
    if (base64.b64decode(data) == b"0123456789abcdef0123456789abcdef"
            and mounted["cluster-secret"]["secret"]["secretName"] == "edgeway-cluster-secret"):
        ok("chart with clusterSecret.value renders the Secret the pods mount")
    else:
        bad("chart with clusterSecret.value", "no matching Secret")
except helm.HelmError as e:
    bad("chart with clusterSecret.value", str(e))

# Without relays, with an explicit bootstrap: no relay workload, no relay.toml.
no_relays = copy.deepcopy(test_values)
no_relays["relays"] = []
no_relays["bootstrap"] = ["/ip4/198.51.100.10/tcp/7333", "/ip4/198.51.100.10/udp/7333/quic-v1"]
try:
    docs, _ = render(no_relays)
    validate_docs("chart without relays", docs)
    cm = objects(docs)[("ConfigMap", "edgeway-config")]
    if ("DaemonSet", "edgeway-relay") in objects(docs) or "relay.toml" in cm["data"]:
        bad("chart without relays", "still renders the relay")
    elif (cfg := check_toml("chart without relays: agent.toml", cm["data"]["agent.toml"])) and \
            cfg["p2p"]["bootstrap"] != no_relays["bootstrap"]:
        bad("chart without relays", f"bootstrap {cfg['p2p']['bootstrap']}")
    else:
        ok("chart without relays renders no relay and the given bootstrap")
except helm.HelmError as e:
    bad("chart without relays", str(e))

# 3. The containers' commands, run for real against temp directories: install-cni with
# its exact args (as the sidecar, with --watch), the probes, and the agent's command line.
HOST_CONFLIST = {
    "name": "cbr0", "cniVersion": "0.3.1",
    "plugins": [{"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
                {"type": "portmap", "capabilities": {"portMappings": True}}],
}


def wait_for(pred, secs=10.0):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def chained(conflist):
    try:
        with open(conflist) as f:
            types = [p.get("type") for p in json.load(f)["plugins"]]
    except (OSError, ValueError, KeyError):
        return False
    return types == ["flannel", "edgeway", "portmap"]


def run_commands(source, ds, configmap):
    name = f"{source}: DaemonSet/{ds['metadata']['name']}"
    work = os.path.join(TMP, "run", ds["metadata"]["name"] + "-" + source.replace("/", "_"))
    shutil.rmtree(work, ignore_errors=True)
    files = {}   # the container's config paths -> local copies, socket moved into `work`
    for c in pod_spec(ds)["containers"]:
        for m in c.get("volumeMounts", []):
            if m["name"] == "config":
                text = configmap["data"][m["subPath"]]
                moved = text.replace('"/run/edgeway/agent.sock"', json.dumps(os.path.join(work, "agent.sock")))
                if moved == text:
                    bad(name, f"{m['subPath']} has no api.socket \"/run/edgeway/agent.sock\"")
                    return
                files[m["mountPath"]] = os.path.join(work, m["subPath"])
                os.makedirs(work, exist_ok=True)
                with open(files[m["mountPath"]], "w") as f:
                    f.write(moved)

    def local(cmd):
        out = [AGENT if cmd[0] == "edgeway-agent" else cmd[0]]
        for a in cmd[1:]:
            a = files.get(a, a)
            out.append(os.path.join(work, a.lstrip("/")) if a.startswith("/host/") else a)
        return out

    def environ(c):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NODE_NAME": "node-1"}
        env.update({e["name"]: files.get(e["value"], e["value"]) for e in c.get("env", []) if "value" in e})
        return env

    for c in pod_spec(ds)["containers"]:
        cname = f"{name} container {c['name']}"
        cmd = local(c["command"] + c.get("args", []))
        if c["name"] == "install-cni":
            conf_dir = os.path.join(work, "host/etc/cni/net.d")
            bin_dir = os.path.join(work, "host/opt/cni/bin")
            os.makedirs(conf_dir), os.makedirs(bin_dir)
            conflist = os.path.join(conf_dir, "10-flannel.conflist")
            with open(conflist, "w") as f:
                json.dump(HOST_CONFLIST, f)
            if "--watch" not in cmd:
                bad(cname, "runs without --watch: a host CNI rewrite would drop edgeway")
                continue
            proc = subprocess.Popen(cmd, env=environ(c), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            try:
                installed = wait_for(lambda: chained(conflist) and os.access(os.path.join(bin_dir, "edgeway"), os.X_OK))
                # flannel's init container copies its conflist over at every restart.
                with open(conflist + ".tmp", "w") as f:
                    json.dump(HOST_CONFLIST, f)
                os.replace(conflist + ".tmp", conflist)
                reinserted = installed and wait_for(lambda: chained(conflist))
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    out, _ = proc.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out, _ = proc.communicate()
            if installed and reinserted and proc.returncode == 0:
                ok(f"{cname}: its command installs the plugin, chains it after flannel, "
                   "puts it back after a rewrite, and stops on SIGTERM")
            else:
                bad(cname, f"installed={installed} reinserted={reinserted} rc={proc.returncode}: {out.strip()[-800:]}")
            continue
        # The agent's own command line: everything up to `run` must parse.
        r = subprocess.run(cmd + ["--help"], env=environ(c), capture_output=True, text=True)
        if r.returncode == 0:
            ok(f"{cname}: the command line {c['command'] + c.get('args', [])} parses")
        else:
            bad(cname, f"{cmd}: {r.stderr.strip()}")
        for probe in ("readinessProbe", "livenessProbe"):
            pcmd = local(c[probe]["exec"]["command"])
            r = subprocess.run(pcmd, env=environ(c), capture_output=True, text=True, timeout=30)
            # With no agent behind the socket the probe must fail the way an unreachable
            # agent does (exit 1), not with a usage error (exit 2).
            if r.returncode == 1 and "cannot reach the agent" in r.stderr:
                ok(f"{cname}: the {probe} command runs, and fails while no agent answers")
            else:
                bad(f"{cname} {probe}", f"rc={r.returncode}: {r.stderr.strip()}")


for source, objs in (("examples/kubernetes", plain_objs), ("chart", chart_objs)):
    for key in sorted(k for k in objs if k[0] == "DaemonSet"):
        run_commands(source, objs[key], objs[("ConfigMap", "edgeway-config")])

# The systemd unit's commands, the same way: ExecStartPre (a one-off install-cni) and
# ExecStart's command line.
UNIT = os.path.join(ROOT, "examples/systemd/edgeway-agent.service")
work = os.path.join(TMP, "run", "systemd")
os.makedirs(os.path.join(work, "etc/cni/net.d")), os.makedirs(os.path.join(work, "opt/cni/bin"))
with open(os.path.join(ROOT, "examples/systemd/agent.toml")) as f:
    unit_config = f.read().replace('"/run/edgeway/agent.sock"', json.dumps(os.path.join(work, "agent.sock")))
with open(os.path.join(work, "agent.toml"), "w") as f:
    f.write(unit_config)
conflist = os.path.join(work, "etc/cni/net.d/10-flannel.conflist")
with open(conflist, "w") as f:
    json.dump(HOST_CONFLIST, f)
paths = {"/usr/local/bin/edgeway-agent": AGENT, "/etc/edgeway/agent.toml": os.path.join(work, "agent.toml"),
         "/opt/cni/bin": os.path.join(work, "opt/cni/bin"), "/etc/cni/net.d": os.path.join(work, "etc/cni/net.d")}
with open(UNIT) as f:
    execs = [line.split("=", 1) for line in f.read().splitlines() if line.startswith(("ExecStartPre=", "ExecStart="))]
for key, line in execs:
    cmd = [paths.get(a, a) for a in shlex.split(line.lstrip("-"))]
    if key == "ExecStartPre":
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode == 0 and chained(conflist) and os.access(os.path.join(work, "opt/cni/bin/edgeway"), os.X_OK):
            ok("edgeway-agent.service: ExecStartPre installs the plugin and chains it after flannel")
        else:
            bad("edgeway-agent.service: ExecStartPre", f"rc={r.returncode}: {r.stderr.strip()[-800:]}")
    else:
        r = subprocess.run(cmd + ["--help"], capture_output=True, text=True)
        if r.returncode == 0:
            ok(f"edgeway-agent.service: {key}'s command line parses")
        else:
            bad(f"edgeway-agent.service: {key}", r.stderr.strip())
if [k for k, _ in execs] != ["ExecStartPre", "ExecStart"]:
    bad("edgeway-agent.service", f"expected one ExecStartPre and one ExecStart, found {execs}")

# 4. What the chart must refuse.
def refuses(what, values, needle):
    try:
        render(values)
        bad(f"chart refuses {what}", "it rendered")
    except helm.HelmError as e:
        if needle in str(e):
            ok(f"chart refuses {what}")
        else:
            bad(f"chart refuses {what}", f"failed, but not with {needle!r}: {e}")


no_secret = copy.deepcopy(test_values)
del no_secret["clusterSecret"]
refuses("to render without a cluster secret", no_secret, "clusterSecret: no cluster secret")
refuses("to render with no values at all", {}, "clusterSecret: no cluster secret")
both = copy.deepcopy(test_values)
both["clusterSecret"]["value"] = "0123456789abcdef0123456789abcdef"
refuses("existingSecret and value together", both, "not both")
short = copy.deepcopy(secret_values)
short["clusterSecret"]["value"] = "short"
refuses("a secret shorter than 16 characters", short, "shorter than 16")
no_cidr = copy.deepcopy(test_values)
no_cidr["cloudCIDR"] = no_cidr["edgeCIDR"] = []
refuses("no segment CIDR", no_cidr, "cloudCIDR/edgeCIDR")
alone = copy.deepcopy(test_values)
alone["relays"] = []
refuses("no relays and no bootstrap", alone, "relays/bootstrap")
wrong = copy.deepcopy(test_values)
wrong["onAgentDown"] = "retry"
refuses("an unknown onAgentDown", wrong, "onAgentDown")

print(f"validate-manifests: {checks - len(failures)} of {checks} checks passed "
      f"(kubernetes-validate {KV_VERSION}, "
      f"Helm SDK {helm.helm_sdk_version()})")
if failures:
    print(f"validate-manifests: {len(failures)} failed: {failures}")
    sys.exit(1)
PY
say "manifests, chart and configs"
"$PY" "$TMP/validate.py" "$ROOT" "$AGENT" "$TMP" "$KUBE_VERSIONS"

# --- the systemd unit ----------------------------------------------------------------------------
UNIT=examples/systemd/edgeway-agent.service
if command -v systemd-analyze >/dev/null; then
  say "systemd-analyze verify $UNIT"
  rc=0
  out=$(systemd-analyze verify "$ROOT/$UNIT" 2>&1) || rc=$?
  # The only tolerated complaint: the binaries are not installed on this machine.
  rest=$(printf '%s\n' "$out" | grep -v -x 'edgeway-agent.service: Command /usr/local/bin/edgeway-agent is not executable: No such file or directory' | grep -v '^$' || true)
  if [ -n "$rest" ]; then
    printf '%s\n' "$out" >&2
    die "systemd-analyze verify found problems in $UNIT"
  fi
  if [ "$rc" -ne 0 ] && [ -x /usr/local/bin/edgeway-agent ]; then
    printf '%s\n' "$out" >&2
    die "systemd-analyze verify failed on $UNIT"
  fi
  echo "ok   $UNIT${out:+ (only complaint: /usr/local/bin/edgeway-agent is not installed here)}"
else
  say "systemd-analyze is not installed: $UNIT not verified"
fi
echo "validate-manifests: all checks passed"
