#!/usr/bin/env python3
"""Timing driver and report writer for bench/add-latency.sh.

`run` is meant to execute inside the benchmark's node network namespace
(`ip netns exec NODE python3 cni_bench.py run ...`), so no per-call `ip netns exec`
is timed. It invokes `edgeway` and Debian's `sbr` with the same prevResult,
alternating the plugin order per iteration, and times each invocation from spawn
to exit with time.perf_counter_ns().

`render` turns the JSON results into a markdown table (stdout) and rewrites the
benchmark's section of docs/benchmarks.md, keeping every other section.
"""

import argparse
import datetime
import gc
import http.client
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time

SECTION = "## CNI ADD/DEL latency: edgeway vs sbr"
DOC_INTRO = (
    "# edgeway benchmarks\n\n"
    "Figures come from a noisy 2-vCPU virtual machine: read the medians and the ratios "
    "between plugins measured in the same run, not the absolute values.\n"
)
SBR_TABLE = 100  # sbr's first table; restored to empty after every sbr DEL


def die(msg):
    print(f"cni_bench: {msg}", file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------------------- run


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=2.0):
        super().__init__("edgeway-agent", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def agent_get(sock_path, path):
    c = UnixHTTPConnection(sock_path)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_agent_ready(sock_path, timeout_s):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            status, body = agent_get(sock_path, "/readyz")
            if status == 200:
                return
            last = f"{status} {body[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    die(f"agent at {sock_path} not ready after {timeout_s}s: {last}")


def system_load():
    """1-minute load average and I/O pressure (PSI "some" avg60, %), when available."""
    out = {}
    try:
        out["loadavg1"] = float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError):
        pass
    try:
        for line in open("/proc/pressure/io"):
            if line.startswith("some"):
                out["io_some_avg60"] = float(re.search(r"avg60=([\d.]+)", line).group(1))
    except (OSError, AttributeError, ValueError):
        pass
    return out


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def pod_ip(prev, ifname):
    """The first address prevResult gives the sandbox interface `ifname`."""
    ifaces = prev.get("interfaces", [])
    for ip in prev.get("ips", []):
        i = ip.get("interface")
        if i is not None and ifaces[i].get("name") == ifname and ifaces[i].get("sandbox"):
            return ip["address"].split("/")[0]
    die(f"prevResult has no address for sandbox interface {ifname}")


class Plugin:
    def __init__(self, name, binary, conf, env):
        self.name = name
        self.binary = binary
        self.stdin = json.dumps(conf).encode()
        self.env_add = dict(env, CNI_COMMAND="ADD")
        self.env_del = dict(env, CNI_COMMAND="DEL")
        self.add_ns = []
        self.del_ns = []

    def invoke(self, op):
        env = self.env_add if op == "ADD" else self.env_del
        t0 = time.perf_counter_ns()
        p = subprocess.run(
            [self.binary], input=self.stdin, capture_output=True, env=env
        )
        t1 = time.perf_counter_ns()
        if p.returncode != 0:
            die(
                f"{self.name} {op} exited {p.returncode}\n"
                f"stdout: {p.stdout.decode(errors='replace')}\n"
                f"stderr: {p.stderr.decode(errors='replace')[-2000:]}"
            )
        return t1 - t0, p


def cmd_run(a):
    prev = json.load(open(a.prev))
    ip = pod_ip(prev, a.ifname)
    netns_path = f"/var/run/netns/{a.pod_netns}"
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_CONTAINERID": a.container_id,
        "CNI_NETNS": netns_path,
        "CNI_IFNAME": a.ifname,
        "CNI_PATH": "/usr/lib/cni",
        "CNI_ARGS": (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod0;"
            f"K8S_POD_UID=00000000-0000-4000-8000-0000000000b0;"
            f"K8S_POD_INFRA_CONTAINER_ID={a.container_id}"
        ),
    }
    base = {"cniVersion": prev.get("cniVersion", "1.0.0"), "name": a.network}
    ew = Plugin(
        "edgeway",
        a.edgeway,
        dict(
            base,
            type="edgeway",
            stateDir=a.state_dir,
            agentSocket=a.socket,
            prevResult=prev,
        ),
        env,
    )
    sbr = Plugin("sbr", a.sbr, dict(base, type="sbr", prevResult=prev), env)
    null = Plugin("spawn baseline (/bin/true)", "/bin/true", {}, env)

    wait_agent_ready(a.socket, 20)

    # sbr moves the interface's main-table routes into its own table and its DEL only
    # removes the rule, so a second ADD in the same pod would fail on EEXIST. Between sbr
    # iterations (untimed) we put the pod back exactly as the bridge plugin left it.
    def pod_routes(fam):
        return [
            l.strip()
            for l in sh("ip", "-n", a.pod_netns, fam, "route", "show", "table", "main").splitlines()
            if f" dev {a.ifname}" in f" {l}"
        ]

    v4 = sorted(pod_routes("-4"), key=lambda l: " via " in l)  # link routes before gateways
    v6 = sorted(pod_routes("-6"), key=lambda l: " via " in l)
    baseline_routes = sh("ip", "-n", a.pod_netns, "route", "show", "table", "all")
    if not any(l.startswith("default via") for l in v4):
        die(f"pod has no default route; sbr needs a gateway:\n{baseline_routes}")
    restore_script = "".join(
        [f"route del {r} table {SBR_TABLE}\n" for r in v4 + v6]
        + [f"route add {r}\n" for r in v4 + v6]
    ).encode()

    def restore_pod():
        p = subprocess.run(
            ["ip", "-n", a.pod_netns, "-batch", "-"], input=restore_script, capture_output=True
        )
        if p.returncode != 0:
            die(f"cannot restore the pod's routes after sbr DEL: {p.stderr.decode()}")

    def rules_node():
        return sh("ip", "rule", "show")

    def rules_pod():
        return sh("ip", "-n", a.pod_netns, "rule", "show")

    def ew_rule_present():
        return any(
            re.search(rf"\bfrom {re.escape(ip)} .*\bproto 237\b", l) for l in rules_node().splitlines()
        )

    def sbr_rule_present():
        return any(
            re.search(rf"\bfrom {re.escape(ip)} lookup {SBR_TABLE}\b", l)
            for l in rules_pod().splitlines()
        )

    record = os.path.join(a.state_dir, "attachments", f"{a.container_id}@{a.ifname}.json")
    pending_dir = os.path.join(a.state_dir, "pending-del")

    def agent_has_pod():
        try:
            status, body = agent_get(a.socket, "/v1/attachments")
        except OSError as e:
            die(f"cannot reach the agent at {a.socket}: {e}")
        if status != 200:
            die(f"agent /v1/attachments answered {status}: {body[:200]!r}")
        return any(x.get("containerId", x.get("containerID")) == a.container_id for x in json.loads(body))

    checks = {"edgeway": 0, "sbr": 0}

    def check(plugin, after):
        if plugin is ew:
            if after == "ADD":
                if not ew_rule_present():
                    die(f"edgeway ADD: no 'from {ip} ... proto 237' rule:\n{rules_node()}")
                if not os.path.exists(record):
                    die(f"edgeway ADD: no record {record}")
                if not agent_has_pod():
                    die("edgeway ADD: the agent does not list the attachment")
            else:
                if ew_rule_present():
                    die(f"edgeway DEL: rule for {ip} still there:\n{rules_node()}")
                if os.path.exists(record):
                    die(f"edgeway DEL: record {record} still there")
                if os.listdir(pending_dir):
                    die(f"edgeway DEL: queued a pending DEL (agent unreachable?): {os.listdir(pending_dir)}")
                if agent_has_pod():
                    die("edgeway DEL: the agent still lists the attachment")
        elif plugin is sbr:
            if after == "ADD":
                if not sbr_rule_present():
                    die(f"sbr ADD: no 'from {ip} lookup {SBR_TABLE}' rule in the pod:\n{rules_pod()}")
            else:
                if sbr_rule_present():
                    die(f"sbr DEL: rule still there:\n{rules_pod()}")
                now = sh("ip", "-n", a.pod_netns, "route", "show", "table", "all")
                if now != baseline_routes:
                    die(f"pod routes differ from the baseline after restore:\n{now}\n--- baseline:\n{baseline_routes}")
        checks[plugin.name] += 1

    def cycle(plugin, record_it, do_check):
        for op in ("ADD", "DEL"):
            ns, _ = plugin.invoke(op)
            if record_it:
                (plugin.add_ns if op == "ADD" else plugin.del_ns).append(ns)
            if plugin is sbr and op == "DEL":
                restore_pod()
            if do_check:
                check(plugin, op)

    # Correctness first: both plugins succeed (exit 0) and do what they should.
    for p in (ew, sbr):
        cycle(p, False, True)
    for i in range(a.warmup):
        for p in ((ew, sbr) if i % 2 == 0 else (sbr, ew)):
            cycle(p, False, False)

    load_before = system_load()
    gc.disable()
    t_start = time.time()
    for i in range(a.n):
        do_check = a.check_every > 0 and (i + 1) % a.check_every == 0
        for p in ((ew, sbr) if i % 2 == 0 else (sbr, ew)):
            cycle(p, True, do_check)
        # Harness overhead: the same subprocess.run path around a process that does nothing.
        ns, _ = null.invoke("ADD")
        null.add_ns.append(ns)
    wall = time.time() - t_start
    gc.enable()
    load_after = system_load()
    for p in (ew, sbr):
        cycle(p, False, True)

    out = {
        "n": a.n,
        "warmup": a.warmup,
        "check_every": a.check_every,
        "checks": checks,
        "wall_seconds": wall,
        "load_before": load_before,
        "load_after": load_after,
        "pod_ip": ip,
        "cni_version": base["cniVersion"],
        "edgeway": {"add_ns": ew.add_ns, "del_ns": ew.del_ns},
        "sbr": {"add_ns": sbr.add_ns, "del_ns": sbr.del_ns},
        "spawn_baseline": {"ns": null.add_ns},
    }
    with open(a.out, "w") as f:
        json.dump(out, f)
    print(
        f"cni_bench: {a.n} iterations in {wall:.1f}s, "
        f"{checks['edgeway']} edgeway and {checks['sbr']} sbr correctness checks passed",
        file=sys.stderr,
    )


# ------------------------------------------------------------------------ render


def stats(ns):
    ms = [x / 1e6 for x in ns]
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"median": statistics.median(ms), "p90": q[89], "p99": q[98], "min": min(ms)}


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def dpkg_version(pkg):
    try:
        out = subprocess.run(["dpkg", "-s", pkg], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    m = re.search(r"^Version:\s*(\S+)", out, re.M)
    return m.group(1) if m else "unknown"


def cmd_out(*args, cwd=None):
    try:
        return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def edgeway_version(root):
    version = "unknown"
    try:
        m = re.search(r'^version\s*=\s*"([^"]+)"', open(os.path.join(root, "Cargo.toml")).read(), re.M)
        version = m.group(1) if m else version
    except OSError:
        pass
    commit = cmd_out("git", "rev-parse", "--short", "HEAD", cwd=root)
    dirty = cmd_out("git", "status", "--porcelain", "--untracked-files=no", cwd=root)
    if commit:
        version += f" (git {commit}{', with uncommitted changes' if dirty else ''})"
    return version


def replace_section(doc, section):
    if not doc.strip():
        return DOC_INTRO + "\n" + section
    if not doc.lstrip().startswith("# edgeway benchmarks"):
        doc = DOC_INTRO + "\n" + doc.lstrip()
    lines = doc.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.rstrip() == SECTION), None)
    if start is None:
        return doc.rstrip("\n") + "\n\n" + section
    end = next(
        (i for i in range(start + 1, len(lines)) if re.match(r"^#{1,2} ", lines[i])), len(lines)
    )
    tail = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + tail if tail else "")


def cmd_render(a):
    r = json.load(open(a.results))
    ew_add, ew_del = stats(r["edgeway"]["add_ns"]), stats(r["edgeway"]["del_ns"])
    sb_add, sb_del = stats(r["sbr"]["add_ns"]), stats(r["sbr"]["del_ns"])
    spawn = stats(r["spawn_baseline"]["ns"])
    ratio_add = ew_add["median"] / sb_add["median"]
    ratio_del = ew_del["median"] / sb_del["median"]
    met = ratio_add <= 0.5

    def f(x):
        return f"{x:.2f}"

    table = (
        "| op | edgeway median | edgeway p90 | edgeway p99 | sbr median | sbr p90 | sbr p99 "
        "| edgeway/sbr (medians) |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        f"| ADD | {f(ew_add['median'])} | {f(ew_add['p90'])} | {f(ew_add['p99'])} "
        f"| {f(sb_add['median'])} | {f(sb_add['p90'])} | {f(sb_add['p99'])} | {ratio_add:.2f} |\n"
        f"| DEL | {f(ew_del['median'])} | {f(ew_del['p90'])} | {f(ew_del['p99'])} "
        f"| {f(sb_del['median'])} | {f(sb_del['p90'])} | {f(sb_del['p99'])} | {ratio_del:.2f} |\n"
    )
    verdict = (
        f"**Target (edgeway ADD median <= half of sbr's): "
        f"{'MET' if met else 'NOT MET'}.** edgeway's ADD median is {f(ew_add['median'])} ms, "
        f"{ratio_add:.2f}x sbr's {f(sb_add['median'])} ms "
        f"(the target is 0.50x or less, i.e. <= {f(sb_add['median'] / 2)} ms)."
    )

    lb, la = r.get("load_before", {}), r.get("load_after", {})

    def load_str(d):
        parts = []
        if "loadavg1" in d:
            parts.append(f"load average {d['loadavg1']:.1f}")
        if "io_some_avg60" in d:
            parts.append(f"I/O pressure {d['io_some_avg60']:.1f}%")
        return ", ".join(parts) or "n/a"

    load_line = (
        f"- Machine load during the run (other work shares this machine): "
        f"{load_str(lb)} at the start, {load_str(la)} at the end "
        f"(PSI `some avg60` from /proc/pressure/io)"
    )
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "bash bench/add-latency.sh" + (f" -n {r['n']}" if r["n"] != 200 else "")
    section = f"""{SECTION}

- Date: {date}
- Machine: {os.cpu_count()} vCPU ({cmd_out('nproc') or '?'} online), {cpu_model()}, kernel {platform.release()}
- edgeway: {edgeway_version(a.root)}, release build; agent up (`edgeway-agent run` in the node namespace)
- sbr: Debian containernetworking-plugins {dpkg_version('containernetworking-plugins')} (`/usr/lib/cni/sbr`)
- Iterations: N = {r['n']} ADD+DEL cycles per plugin after {r['warmup']} warm-up cycles; correctness checked every {r['check_every']}th iteration and before and after the run ({r['checks']['edgeway']} edgeway, {r['checks']['sbr']} sbr checks passed)
{load_line}
- Reproduce (as root, from the repository root): `{cmd}`

Both plugins get the same network config name, cniVersion {r['cni_version']} and the same
`prevResult`: the real output of Debian's `bridge` + `host-local` ADD for one pod namespace
(pod address {r['pod_ip']} in 10.244.0.0/16). A Python driver runs inside the benchmark's
"node" network namespace and times each plugin invocation from spawn to exit
(`time.perf_counter_ns()` around `subprocess.run`, stdin and stdout/stderr piped as a
runtime does), alternating which plugin goes first on each iteration. edgeway installs its
`from <pod ip> lookup 7332 proto 237` rule in the node namespace, writes its record under
`stateDir`, and registers with the agent over its unix socket; sbr enters the pod namespace,
adds its `from <pod ip> lookup 100` rule and moves the pod's routes into table 100. sbr's
DEL does not move them back, so between sbr cycles the driver restores the pod's routes
(untimed). Times are milliseconds.

{table}
Spawn baseline: the same harness around `/bin/true` takes {f(spawn['median'])} ms median
(p90 {f(spawn['p90'])} ms); it is included in every figure above, for both plugins.

{verdict}
"""
    print(table)
    print(f"spawn baseline (/bin/true): median {f(spawn['median'])} ms, p90 {f(spawn['p90'])} ms")
    print()
    print(verdict)
    if a.doc:
        try:
            doc = open(a.doc).read()
        except FileNotFoundError:
            doc = ""
        new = replace_section(doc, section)
        tmp = a.doc + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(new)
        os.replace(tmp, a.doc)
        print(f"\nwrote {a.doc}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--prev", required=True)
    r.add_argument("--edgeway", required=True)
    r.add_argument("--sbr", required=True)
    r.add_argument("--pod-netns", required=True, help="name under /var/run/netns")
    r.add_argument("--state-dir", required=True)
    r.add_argument("--socket", required=True)
    r.add_argument("--network", default="ewbnet")
    r.add_argument("--container-id", default="ewbpod0")
    r.add_argument("--ifname", default="eth0")
    r.add_argument("-n", type=int, default=200)
    r.add_argument("--warmup", type=int, default=5)
    r.add_argument("--check-every", type=int, default=20)
    r.add_argument("--out", required=True)
    r.set_defaults(func=cmd_run)
    d = sub.add_parser("render")
    d.add_argument("--results", required=True)
    d.add_argument("--root", required=True)
    d.add_argument("--doc", default="")
    d.set_defaults(func=cmd_render)
    a = ap.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
