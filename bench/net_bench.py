#!/usr/bin/env python3
"""Measurement driver and report writer for bench/net-bench.sh (standard library only).

`run --spec SPEC --out RESULTS` measures the paths that net-bench.sh built. It runs in the
root namespace and enters the pod namespaces with `ip netns exec` for iperf3 and ping; it
never sends anything itself. For each path it:
  - waits (bounded) until the client pod pings the server pod, then warms up with 1 s of iperf3;
  - samples the idle CPU of every agent and Nebula process over one window, all paths idle;
  - runs iperf3 single-stream and multi-stream TCP, N runs each, interleaved across paths
    (the path order rotates every round), sampling utime+stime of the path's processes
    and the relay host's interface counters around every run;
  - pings the server pod (idle path) and keeps every RTT sample;
  - reads VmHWM/VmRSS and, for edgeway, the agent's path from /v1/status, before and after.

`render --results RESULTS --root ROOT [--doc FILE --svg FILE]` prints the tables, and with
--doc rewrites only the section between the net-bench markers in docs/benchmarks.md (the
other sections, e.g. bench/add-latency.sh's, are kept), and writes the SVG chart.
"""

import argparse
import datetime
import html
import http.client
import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time

# The agent's API client and the machine/version helpers, shared with the ADD latency benchmark.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cni_bench  # noqa: E402
from cni_bench import UnixHTTPConnection, cmd_out, cpu_model, dpkg_version  # noqa: E402

PORT = 5201
CLK_TCK = os.sysconf("SC_CLK_TCK")
HEADING = "## Network: native vs edgeway (direct, relayed) vs Nebula"
START = "<!-- net-bench:start -->"
END = "<!-- net-bench:end -->"
DOC_INTRO = (
    "# edgeway benchmarks\n\n"
    "Figures come from a noisy 2-vCPU virtual machine: read the medians and the ratios "
    "between plugins measured in the same run, not the absolute values.\n"
)
SVG_NAME = "benchmarks-throughput.svg"


def log(msg):
    print(f"{time.strftime('%H:%M:%S')} [net-bench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- run helpers


def netns(ns, *cmd):
    return ["ip", "netns", "exec", ns, *cmd]


def proc_ticks(pid):
    """utime + stime of a live process, in clock ticks; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def proc_mem_kb(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def link_bytes(ns, dev):
    try:
        out = subprocess.run(netns(ns, "cat", f"/sys/class/net/{dev}/statistics/rx_bytes",
                                   f"/sys/class/net/{dev}/statistics/tx_bytes"),
                             capture_output=True, text=True, timeout=10).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def agent_path(status_spec):
    """The sender agent's view of the peer: its `path`, plus any other path-like keys
    (a newer agent may report e.g. a fast-path transport beside it)."""
    try:
        c = UnixHTTPConnection(status_spec["socket"])
        c.request("GET", "/v1/status")
        r = c.getresponse()
        body = r.read()
        c.close()
        st = json.loads(body)
    except (OSError, ValueError, http.client.HTTPException) as e:
        return f"unknown ({e.__class__.__name__})"
    for p in st.get("peers", []):
        if p.get("nodeName") == status_spec["peer"]:
            path = p.get("path") or "down"
            extra = [f"{k}={v}" for k, v in sorted(p.items())
                     if k != "path" and re.search(r"path|transport|fast", k, re.I)
                     and isinstance(v, (str, int, float, bool)) and v is not None]
            return path + (f" ({', '.join(extra)})" if extra else "")
    return "no such peer"


def ping_once(p):
    r = subprocess.run(netns(p["client_ns"], "ping", "-n", "-c", "1", "-W", "1", p["server_ip"]),
                       capture_output=True, timeout=10)
    return r.returncode == 0


def start_server(p, logf):
    srv = subprocess.Popen(
        netns(p["server_ns"], "iperf3", "-s", "-p", str(PORT), "--idle-timeout", "60"),
        stdout=logf, stderr=logf)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run(netns(p["server_ns"], "ss", "-Htln", f"sport = :{PORT}"),
                             capture_output=True, text=True, timeout=10).stdout
        if out.strip():
            return srv
        if srv.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"iperf3 server in {p['server_ns']} did not start")


def stop(proc):
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def iperf(p, streams, duration, omit, relay):
    """One iperf3 run from the client pod to the server pod; CPU and relay bytes around it."""
    cmd = netns(p["client_ns"], "iperf3", "-c", p["server_ip"], "-p", str(PORT), "-J",
                "-t", str(duration), "-P", str(streams), "--connect-timeout", "3000")
    if omit:
        cmd += ["-O", str(omit)]
    procs = p["procs"]
    t_before = {k: proc_ticks(pid) for k, pid in procs.items()}
    lb = link_bytes(relay["ns"], relay["dev"])
    w0 = time.monotonic()
    res = {"streams": streams, "ok": False}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True,
                             timeout=duration + omit + 30).stdout
    except subprocess.TimeoutExpired:
        out = ""
        res["error"] = "timed out"
    wall = time.monotonic() - w0
    t_after = {k: proc_ticks(pid) for k, pid in procs.items()}
    la = link_bytes(relay["ns"], relay["dev"])
    res["wall"] = wall
    res["cpu_ticks"] = {k: (t_after[k] - t_before[k]) if t_after[k] is not None and
                        t_before[k] is not None else None for k in procs}
    if lb and la:
        res["relay_rx_bytes"] = la[0] - lb[0]
    if out:
        try:
            j = json.loads(out)
        except ValueError:
            j = {"error": "iperf3 printed no JSON"}
        if "error" in j:
            res["error"] = j["error"]
        else:
            end = j["end"]
            res["bps"] = end["sum_received"]["bits_per_second"]
            res["bytes"] = end["sum_received"]["bytes"]
            res["sent_bytes"] = end["sum_sent"]["bytes"]
            res["retransmits"] = end["sum_sent"].get("retransmits")
            res["seconds"] = end["sum_received"]["seconds"]
            res["ok"] = res["bps"] > 0
    return res


def ping_series(p, count, interval):
    deadline = int(count * max(interval, 0.002) + 10)
    r = subprocess.run(netns(p["client_ns"], "ping", "-n", "-c", str(count), "-i", str(interval),
                             "-W", "1", "-w", str(deadline), p["server_ip"]),
                       capture_output=True, text=True, timeout=deadline + 10)
    rtts = [float(m) for m in re.findall(r"time=([0-9.]+) ms", r.stdout)]
    return {"sent": count, "rtt_ms": rtts}


def system_load():
    d = {}
    try:
        d["loadavg1"] = float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    try:
        for line in open("/proc/pressure/cpu"):
            if line.startswith("some"):
                d["cpu_some_avg60"] = float(re.search(r"avg60=([0-9.]+)", line).group(1))
    except (OSError, AttributeError, ValueError):
        pass
    return d


def cmd_run(a):
    spec = json.load(open(a.spec))
    cfg = spec["config"]
    relay = spec["relay_host"]
    paths = spec["paths"]
    out = {"spec": spec, "paths": {}, "load_before": system_load(),
           "started": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    logf = open(os.path.join(os.path.dirname(os.path.abspath(a.out)), "iperf3-servers.log"), "a")
    servers = {}
    # Memory before any traffic (the warm-ups below are traffic).
    mem_start = {k: proc_mem_kb(pid) for k, pid in spec["idle_procs"].items()}
    try:
        for p in paths:
            r = out["paths"][p["key"]] = {"runs": [], "warmup": None}
            servers[p["key"]] = start_server(p, logf)
            deadline = time.monotonic() + 60
            while not ping_once(p):
                if time.monotonic() > deadline:
                    r["skipped"] = "no ping reply within 60 s"
                    break
                time.sleep(0.5)
            if "skipped" in r:
                log(f"{p['key']}: {r['skipped']}; skipping it")
                continue
            w = iperf(p, 1, 1, 0, relay)
            r["warmup"] = {"ok": w["ok"], "error": w.get("error")}
            log(f"{p['key']}: reachable; warm-up {'ok' if w['ok'] else w.get('error')}")
        active = [p for p in paths if "skipped" not in out["paths"][p["key"]]]
        for p in active:
            if "status" in p:
                out["paths"][p["key"]]["path_before"] = agent_path(p["status"])
                log(f"{p['key']}: agent reports path {out['paths'][p['key']]['path_before']}")

        # Idle: everything up and connected, no traffic.
        time.sleep(2)
        idle = spec["idle_procs"]
        t0 = {k: proc_ticks(pid) for k, pid in idle.items()}
        w0 = time.monotonic()
        log(f"idle CPU over {cfg['idle']} s")
        time.sleep(cfg["idle"])
        wall = time.monotonic() - w0
        t1 = {k: proc_ticks(pid) for k, pid in idle.items()}
        out["idle"] = {k: {"cpu_pct": (100.0 * (t1[k] - t0[k]) / CLK_TCK / wall)
                           if t0[k] is not None and t1[k] is not None else None,
                           "mem_before_load_kb": mem_start[k]} for k in idle}
        out["idle_wall"] = wall

        n, total = cfg["runs"], 2 * cfg["runs"] * len(active)
        i = 0
        for streams in (1, cfg["streams"]):
            for rep in range(n):
                order = active[rep % len(active):] + active[:rep % len(active)] if active else []
                for p in order:
                    i += 1
                    res = iperf(p, streams, cfg["duration"], cfg["omit"], relay)
                    out["paths"][p["key"]]["runs"].append(res)
                    shown = (f"{res['bps'] / 1e9:.3f} Gbit/s" if res["ok"]
                             else f"FAILED ({res.get('error', '?')})")
                    log(f"[{i}/{total}] {p['key']:16} {streams} stream(s): {shown}")
                    if not res["ok"]:
                        # A failed client can leave the server busy: restart it.
                        stop(servers[p["key"]])
                        servers[p["key"]] = start_server(p, logf)
        for p in active:
            r = out["paths"][p["key"]]
            r["ping"] = ping_series(p, cfg["pings"], cfg["ping_interval"])
            rtts = r["ping"]["rtt_ms"]
            log(f"{p['key']}: {len(rtts)}/{cfg['pings']} pings, p50 "
                f"{statistics.median(rtts) if rtts else float('nan'):.3f} ms")
            if "status" in p:
                r["path_after"] = agent_path(p["status"])
        out["mem"] = {}
        for p in paths:
            for k, pid in p["procs"].items():
                out["mem"][k] = proc_mem_kb(pid)
        for k, pid in idle.items():
            out["mem"].setdefault(k, proc_mem_kb(pid))
        out["load_after"] = system_load()
        out["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    finally:
        for s in servers.values():
            stop(s)
        logf.close()
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


# --------------------------------------------------------------------------- render


def q(xs, pct):
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[pct - 1]


def edgeway_version(root, bin_dir):
    """Version and commit of the tree the binaries were built from (the git work tree
    holding bin_dir, e.g. <repo>/target/release), else of root."""
    tree = cmd_out("git", "-C", bin_dir, "rev-parse", "--show-toplevel") if os.path.isdir(bin_dir) else ""
    version = cni_bench.edgeway_version(tree or root)
    if not tree:
        version += " (the binaries are not inside a git work tree: their commit is unknown)"
    return version


def summarize(res, cfg):
    """Per-path figures from the raw results."""
    s = {}
    for key, r in res["paths"].items():
        d = {"skipped": r.get("skipped")}
        for name, streams in (("single", 1), ("multi", cfg["streams"])):
            runs = [x for x in r["runs"] if x["streams"] == streams]
            ok = [x for x in runs if x["ok"]]
            g = sorted(x["bps"] / 1e9 for x in ok)
            m = {"n": len(runs), "ok": len(ok), "gbps": g,
                 "median": statistics.median(g) if g else None}
            cpu = {}
            for x in runs:
                for k, t in x["cpu_ticks"].items():
                    c = cpu.setdefault(k, [0, 0.0, True])
                    if t is None:
                        c[2] = False
                    else:
                        c[0] += t
                        c[1] += x["wall"]
            m["cpu_pct"] = {k: (100.0 * c[0] / CLK_TCK / c[1]) if c[2] and c[1] else None
                            for k, c in cpu.items()}
            moved = sum(x["bytes"] for x in ok)
            core_s = sum(sum(t for t in x["cpu_ticks"].values() if t) for x in ok) / CLK_TCK
            m["core_s_per_gb"] = (core_s / (moved / 1e9)) if moved and any(
                x["cpu_ticks"] for x in ok) else None
            shares = [x["relay_rx_bytes"] / x["sent_bytes"] for x in ok
                      if x.get("relay_rx_bytes") is not None and x.get("sent_bytes")]
            m["relay_share"] = statistics.median(shares) if shares else None
            m["retransmits"] = statistics.median([x["retransmits"] for x in ok
                                                  if x.get("retransmits") is not None] or [0])
            d[name] = m
        rtts = (r.get("ping") or {}).get("rtt_ms") or []
        d["rtt"] = {"n": len(rtts), "sent": (r.get("ping") or {}).get("sent", 0),
                    "p50": statistics.median(rtts) if rtts else None,
                    "p99": q(rtts, 99) if len(rtts) >= 2 else (rtts[0] if rtts else None)}
        d["path_before"] = r.get("path_before")
        d["path_after"] = r.get("path_after")
        s[key] = d
    return s


def f2(x, nd=2):
    return "—" if x is None else f"{x:.{nd}f}"


def ratio(a, b):
    return None if a is None or not b else a / b


def fx(x):
    if x is None:
        return "—"
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×"


def gbps_cell(m):
    if m["median"] is None:
        return f"failed (0/{m['n']})"
    g = m["gbps"]
    rng = f" ({g[0]:.2f}–{g[-1]:.2f})" if len(g) > 1 else ""
    bad = f", {m['n'] - m['ok']} failed" if m["ok"] < m["n"] else ""
    return f"**{m['median']:.3f}**{rng}{bad}"


def path_cell(spec_path, d):
    if spec_path["kind"] == "native":
        return "host routes"
    if spec_path["kind"] == "nebula":
        share = d["single"]["relay_share"]
        if share is None:
            return "—"
        return f"{'relayed' if share > 0.5 else 'direct'} (from bytes)"
    b, a = d.get("path_before"), d.get("path_after")
    if b is None:
        return "—"
    return f"`{b}`" if a in (None, b) else f"`{b}` → `{a}`"


def relay_cell(m):
    share = m["relay_share"]
    return "—" if share is None else f"{100 * share:.0f}%"


def nice_ticks(lo_v, hi_v):
    """1-2-5 ticks covering [lo_v, hi_v] on a log axis: (axis_lo, axis_hi, ticks)."""
    steps = []
    for k in range(-4, 5):
        for m in (1, 2, 5):
            steps.append(m * 10.0 ** k)
    lo = max([t for t in steps if t <= lo_v] or [steps[0]])
    hi = min([t for t in steps if t >= hi_v] or [steps[-1]])
    return lo, hi, [t for t in steps if lo <= t <= hi * 1.0001]


def svg_chart(spec, s, cfg, subtitle):
    """Horizontal grouped bars on a log scale, one group per path, with min–max whiskers
    and a marker at the issue's target (3x Nebula's single stream)."""
    keys = [p["key"] for p in spec["paths"]]
    labels = {p["key"]: p["label"] for p in spec["paths"]}
    vals = [x for k in keys for m in ("single", "multi") for x in s[k][m]["gbps"] if x > 0]
    neb = s.get("nebula-direct", {}).get("single", {}).get("median")
    if neb:
        vals.append(3 * neb)
    lo, hi, ticks = nice_ticks(min(vals) / 1.2, max(vals) * 1.1) if vals else (0.01, 100, [0.01, 100])
    left, right, top, bar, gap = 190, 150, 98, 16, 14
    width = 860
    plot_w = width - left - right
    group_h = 2 * bar + gap
    bottom = top + len(keys) * group_h
    height = bottom + 48

    def x(v):
        v = min(max(v, lo), hi)
        return left + plot_w * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    def num(v):
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"

    e = html.escape
    colors = {"single": "#4C78A8", "multi": "#F58518"}
    names = {"single": "1 stream", "multi": f"{cfg['streams']} streams"}
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{left}" y="22" font-size="15" font-weight="bold">iperf3 TCP throughput, pod to pod '
         f'(Gbit/s, log scale)</text>',
         f'<text x="{left}" y="40" fill="#555">{e(subtitle)}</text>',
         f'<rect x="{left}" y="52" width="12" height="12" fill="{colors["single"]}"/>',
         f'<text x="{left + 16}" y="62">{names["single"]}</text>',
         f'<rect x="{left + 90}" y="52" width="12" height="12" fill="{colors["multi"]}"/>',
         f'<text x="{left + 106}" y="62">{names["multi"]}</text>',
         f'<text x="{left + 190}" y="62" fill="#555">bar: median; whisker: min–max of '
         f'{cfg["runs"]} runs; label: median (× Nebula direct)</text>']
    for t in ticks:
        xv = x(t)
        major = abs(math.log10(t) - round(math.log10(t))) < 1e-9
        o.append(f'<line x1="{xv:.1f}" y1="{top - 6}" x2="{xv:.1f}" y2="{bottom}" '
                 f'stroke="{"#ccc" if major else "#eee"}"/>')
        o.append(f'<text x="{xv:.1f}" y="{bottom + 16}" text-anchor="middle" '
                 f'fill="{"#333" if major else "#888"}">{t:g}</text>')
    o.append(f'<text x="{left + plot_w / 2:.0f}" y="{bottom + 36}" text-anchor="middle" '
             f'fill="#333">Gbit/s</text>')
    if neb:
        xt = x(3 * neb)
        o.append(f'<line x1="{xt:.1f}" y1="{top - 10}" x2="{xt:.1f}" y2="{bottom}" stroke="#2a2" '
                 f'stroke-width="1.5" stroke-dasharray="5,4"/>')
        o.append(f'<text x="{xt + 4:.1f}" y="{top - 12}" fill="#2a2">target for edgeway direct: '
                 f'3× Nebula ({num(3 * neb)})</text>')
    for gi, k in enumerate(keys):
        y0 = top + gi * group_h
        o.append(f'<text x="{left - 8}" y="{y0 + bar + 4}" text-anchor="end">{e(labels[k])}</text>')
        for mi, m in enumerate(("single", "multi")):
            d = s[k][m]
            y = y0 + mi * bar
            if d["median"] is None:
                o.append(f'<text x="{left + 4}" y="{y + bar - 4}" fill="#b00">'
                         f'{"skipped" if s[k]["skipped"] else "failed"}</text>')
                continue
            xv = x(d["median"])
            o.append(f'<rect x="{left}" y="{y + 1}" width="{max(xv - left, 1):.1f}" '
                     f'height="{bar - 2}" fill="{colors[m]}"/>')
            g, xt = d["gbps"], xv
            if len(g) > 1:
                x1, x2 = x(g[0]), x(g[-1])
                ym = y + bar / 2
                o.append(f'<line x1="{x1:.1f}" y1="{ym:.1f}" x2="{x2:.1f}" y2="{ym:.1f}" stroke="#222"/>')
                for xe in (x1, x2):
                    o.append(f'<line x1="{xe:.1f}" y1="{ym - 4:.1f}" x2="{xe:.1f}" y2="{ym + 4:.1f}" '
                             f'stroke="#222"/>')
                xt = max(xv, x2)
            nm = s.get("nebula-direct", {}).get(m, {}).get("median")
            rel = f" ({fx(d['median'] / nm)})" if nm and k != "nebula-direct" else ""
            o.append(f'<text x="{xt + 5:.1f}" y="{y + bar - 4}" fill="#222">{num(d["median"])}{rel}</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


def replace_section(doc, body):
    block = f"{HEADING}\n{START}\n{body.rstrip()}\n{END}\n"
    if not doc.strip():
        return DOC_INTRO + "\n" + block
    if START in doc and END in doc and doc.index(START) < doc.index(END):
        # Only what lies between the markers is ours; the heading before them stays as it is.
        a, b = doc.index(START), doc.index(END) + len(END)
        return doc[:a] + f"{START}\n{body.rstrip()}\n{END}" + doc[b:]
    return doc.rstrip("\n") + "\n\n" + block


def cmd_render(a):
    res = json.load(open(a.results))
    spec, cfg = res["spec"], res["spec"]["config"]
    s = summarize(res, cfg)
    P = cfg["streams"]
    neb, nat = s.get("nebula-direct"), s.get("native")

    def med(key, m):
        return s[key][m]["median"] if key in s else None

    rows = []
    for p in spec["paths"]:
        k, d = p["key"], s[p["key"]]
        r = d["rtt"]
        added = (r["p50"] - nat["rtt"]["p50"]) if k != "native" and r["p50"] is not None and \
            nat and nat["rtt"]["p50"] is not None else None
        loss = (f", {r['sent'] - r['n']} lost" if r["n"] < r["sent"] else "")
        if d["skipped"]:
            rows.append(f"| {p['label']} | skipped: {d['skipped']} |" + " — |" * 10)
            continue
        rows.append(
            f"| {p['label']} | {path_cell(p, d)} | {relay_cell(d['single'])} "
            f"| {gbps_cell(d['single'])} | {fx(ratio(d['single']['median'], med('nebula-direct', 'single')))} "
            f"| {fx(ratio(d['single']['median'], med('native', 'single')))} "
            f"| {gbps_cell(d['multi'])} | {fx(ratio(d['multi']['median'], med('nebula-direct', 'multi')))} "
            f"| {fx(ratio(d['multi']['median'], med('native', 'multi')))} "
            f"| {f2(r['p50'], 3)} | {f2(r['p99'], 3)}{loss} "
            f"| {'—' if added is None else f'{added:+.3f}'} |")
    table = (
        f"| path | data path (edgeway: agent API) | via relay host | 1 stream Gbit/s (min–max) | ×Nebula | ×native "
        f"| {P} streams Gbit/s (min–max) | ×Nebula | ×native | RTT p50 ms | RTT p99 ms "
        f"| p50 over native ms |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        + "\n".join(rows) + "\n")

    # CPU and memory, per process.
    mem, idle = res.get("mem", {}), res.get("idle", {})
    prow = []
    seen = set()
    for p in spec["paths"]:
        d = s[p["key"]]
        for proc in p["procs"]:
            base = re.sub(r" \(.*\)$", "", proc)
            idle_key = next((k for k in idle if k.startswith(base)), None)
            ip = idle[idle_key]["cpu_pct"] if idle_key else None
            before = idle[idle_key]["mem_before_load_kb"].get("VmHWM") if idle_key else None
            hwm = mem.get(proc, {}).get("VmHWM")
            prow.append(
                f"| {p['label']} | {proc} | {f2(ip)} | {f2(d['single']['cpu_pct'].get(proc), 1)} "
                f"| {f2(d['multi']['cpu_pct'].get(proc), 1)} "
                f"| {f2(before / 1000 if before else None, 1)} | {f2(hwm / 1000 if hwm else None, 1)} |")
            seen.add(idle_key)
    for k, v in idle.items():
        if k not in seen:
            h = mem.get(k, {}).get("VmHWM")
            prow.append(f"| (idle only) | {k} | {f2(v['cpu_pct'])} | — | — "
                        f"| {f2(v['mem_before_load_kb'].get('VmHWM', 0) / 1000, 1)} "
                        f"| {f2(h / 1000 if h else None, 1)} |")
    ptable = (
        f"| path | process | idle CPU % | CPU % (1 stream) | CPU % ({P} streams) "
        "| peak RSS MB before load | peak RSS MB after load |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(prow) + "\n")
    eff = []
    for p in spec["paths"]:
        if not p["procs"]:
            continue
        d = s[p["key"]]
        eff.append(f"{p['label']}: {f2(d['single']['core_s_per_gb'])} (1 stream), "
                   f"{f2(d['multi']['core_s_per_gb'])} ({P} streams)")

    # Targets from issue 6.
    ed, er = s.get("edgeway-direct"), s.get("edgeway-relayed")
    agents = [k for k in idle if k.startswith("agent ")]
    rss_agents = [(mem.get(k, {}).get("VmHWM") or 0) / 1000 for k in mem if k.startswith("agent ")]
    idle_agents = [(idle[k]["cpu_pct"], k) for k in agents if idle[k]["cpu_pct"] is not None]
    t = []

    def target(name, want, got_txt, ok):
        t.append(f"| {name} | {want} | {got_txt} | {'not measured' if ok is None else ('**MET**' if ok else '**NOT MET**')} |")

    r1 = ratio(ed and ed["single"]["median"], neb and neb["single"]["median"])
    target("edgeway direct, single-stream TCP", "≥ 3× Nebula",
           f"{fx(r1)} ({f2(ed and ed['single']['median'], 3)} vs {f2(neb and neb['single']['median'], 3)} Gbit/s)",
           None if r1 is None else r1 >= 3)
    r2 = ratio(er and er["single"]["median"], neb and neb["single"]["median"])
    nr = s.get("nebula-relayed")
    r2b = ratio(er and er["single"]["median"], nr and nr["single"]["median"])
    target("edgeway relayed, single-stream TCP", "≥ 1× Nebula",
           f"{fx(r2)} of Nebula direct ({f2(er and er['single']['median'], 3)} Gbit/s); "
           f"{fx(r2b)} of Nebula relayed", None if r2 is None else r2 >= 1)
    added = (ed["rtt"]["p50"] - nat["rtt"]["p50"]) if ed and nat and ed["rtt"]["p50"] is not None \
        and nat["rtt"]["p50"] is not None else None
    target("p50 RTT added over native, direct path", "≤ 0.25 ms",
           "—" if added is None else f"{added:+.3f} ms ({f2(ed['rtt']['p50'], 3)} vs {f2(nat['rtt']['p50'], 3)} ms)",
           None if added is None else added <= 0.25)
    worst_rss = max(rss_agents) if rss_agents else None
    target("agent RSS under load (peak, VmHWM, any agent)", "≤ 50 MB",
           f"{f2(worst_rss, 1)} MB", None if worst_rss is None else worst_rss <= 50)
    worst_idle = max(idle_agents) if idle_agents else None
    target("idle agent CPU (highest agent)", "< 1%",
           "—" if worst_idle is None else f"{worst_idle[0]:.2f}% ({worst_idle[1]})",
           None if worst_idle is None else worst_idle[0] < 1)
    ttable = "| measure | target | measured | |\n| --- | --- | --- | --- |\n" + "\n".join(t) + "\n"

    date = datetime.datetime.fromisoformat(res["started"]).strftime("%Y-%m-%d %H:%M UTC")
    bin_dir = spec["bin"]
    version = edgeway_version(a.root, bin_dir)
    rel_bin = os.path.relpath(bin_dir, a.root) if bin_dir.startswith(a.root + "/") else bin_dir
    nebv = cmd_out("nebula", "-version").replace("Version: ", "") or "unknown"
    iperfv = (cmd_out("iperf3", "--version").splitlines() or ["iperf3 ?"])[0]
    lb, la = res.get("load_before", {}), res.get("load_after", {})

    def load_str(d):
        parts = []
        if "loadavg1" in d:
            parts.append(f"load average {d['loadavg1']:.1f}")
        if "cpu_some_avg60" in d:
            parts.append(f"CPU pressure {d['cpu_some_avg60']:.0f}%")
        return ", ".join(parts) or "n/a"

    cmdline = "bash bench/net-bench.sh"
    for flag, key, default in (("-n", "runs", 5), ("-t", "duration", 5), ("-P", "streams", 4),
                               ("--omit", "omit", 0), ("--pings", "pings", 200),
                               ("--ping-interval", "ping_interval", 0.01), ("--idle", "idle", 10)):
        if cfg[key] != default:
            cmdline += f" {flag} {cfg[key]}"
    if cfg["nat_a"] != "port-preserving":
        cmdline += f" --nat-a {cfg['nat_a']}"
    m = re.search(r"git (\w+)", version)
    subtitle = (f"{date}, edgeway {version.split(' (')[0]} git {m.group(1) if m else '?'}, "
                f"{os.cpu_count()} vCPU, {cfg['runs']} runs × {cfg['duration']} s per bar")

    body = f"""<!-- Written by bench/net-bench.sh: everything between the net-bench markers is replaced on each run. -->

- Date: {date}
- Machine: {cmd_out('nproc') or '?'} vCPU (nproc), {cpu_model()}, kernel {platform.release()}; {load_str(lb)} at the start, {load_str(la)} at the end (other work shares this machine)
- edgeway: {version}, release binaries from `{rel_bin}`, agents logging at `{cfg['agent_log']}`
- Nebula {nebv} (Debian `nebula` {dpkg_version('nebula')}, default data-path settings: MTU 1300, `routines: 1`, `cipher: aes`), {iperfv}
- Runs: iperf3 TCP from a pod on one node to a pod on the other, {cfg['runs']} runs of {cfg['duration']} s for 1 stream and {cfg['runs']} for {P} streams (`-P {P}`) per path{f', first {cfg["omit"]} s omitted' if cfg['omit'] else ''}; the runs are interleaved across the paths (round robin, the order rotating each round) so that a noisy moment hits every path alike. Figures are medians, with min–max in brackets, in Gbit/s as the receiver counted them. RTT: {cfg['pings']} pings at {cfg['ping_interval'] * 1000:g} ms intervals per path, on an otherwise idle path. Idle CPU: all agents and Nebula processes over {res.get('idle_wall', cfg['idle']):.0f} s, connected, no traffic.
- Reproduce (as root, from the repository root): `{cmdline}` (`--no-build` to skip cargo, `--no-doc` to only print)

Topology (all network namespaces of one run, `ewnb<pid>-*`):

```text
                 public switch 203.0.113.0/24
  ┌──────────────┬──────────────┬──────────────┬───────────────────┐
  pub .10        d1 .21         d2 .22         na .1 NAT           nb .2 NAT --random-fully
  relay agent,   agent,         agent,         │ 198.51.100.0/24   │ 198.18.0.0/24
  Nebula         Nebula         Nebula         e1 .11              e2 .11
  lighthouse                                   agent, Nebula       agent, Nebula
  and relay
```

Each path runs pod to pod, from a pod on d1 to a pod on d2 (native, direct rows) or from e1 to
e2 (relayed rows); every pod is made by the real `bridge` + `host-local` plugins.
- **native**: pods on their own bridge, routed between d1 and d2 by host routes (flannel
  host-gw style): the limit of this machine for this hop count.
- **edgeway**: pods chained through `edgeway` (bridge + host-local + edgeway conflist);
  the agents run in different segments. d1 and d2 reach each other directly; e1 and e2 sit
  behind NAT routers (e2's with `MASQUERADE --random-fully`, so hole punching fails) and
  hold reservations on the relay agent in `pub`. The *data path* column is what the sending
  agent reports in `/v1/status` (`peers[].path`) before the runs (and after, if it changed).
- **Nebula**: pod to pod as well: each node's certificate carries its Nebula pods' subnet
  (`-subnets`), and `tun.unsafe_routes` routes the other node's pod subnet through
  `nebula1`. The throwaway CA and certificates are made in the run's temp dir. The
  lighthouse in `pub` is also a Nebula relay (`am_relay`), and e1 and e2 list it in
  `relay.relays`.
- **via relay host**: bytes received on `pub`'s interface during the single-stream runs, as a
  share of the bytes iperf3 sent (median): about 100% or more (tunnel headers, the ACKs
  coming back, retransmissions) means the path really went through `pub`, about 0% that it
  did not. Nebula has no status API for this, so its data path column is read from it.
- CPU is `utime + stime` from `/proc/PID/stat` over the runs, in % of one core (100% = one
  core; the machine has {os.cpu_count()}). Peak RSS is `VmHWM` from `/proc/PID/status`
  (MB = 10^6 bytes), read when the paths are idle, before any load, and after all runs.

{table}
![iperf3 throughput per path](benchmarks-throughput.svg)

CPU and memory (relay processes are the ones in `pub`):

{ptable}
CPU per data moved, core-seconds per GB (sum of the path's processes listed above):
{'; '.join(eff)}.

Targets (issue 6), judged on this run:

{ttable}"""
    print(table)
    print(ptable)
    print(ttable)
    if a.svg:
        with open(a.svg + ".tmp", "w") as fh:
            fh.write(svg_chart(spec, s, cfg, subtitle))
        os.replace(a.svg + ".tmp", a.svg)
        print(f"wrote {a.svg}", file=sys.stderr)
    if a.doc:
        try:
            doc = open(a.doc).read()
        except FileNotFoundError:
            doc = ""
        new = replace_section(doc, body)
        with open(a.doc + ".tmp", "w") as fh:
            fh.write(new)
        os.replace(a.doc + ".tmp", a.doc)
        print(f"wrote {a.doc}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--spec", required=True)
    r.add_argument("--out", required=True)
    d = sub.add_parser("render")
    d.add_argument("--results", required=True)
    d.add_argument("--root", required=True)
    d.add_argument("--doc")
    d.add_argument("--svg")
    a = ap.parse_args()
    {"run": cmd_run, "render": cmd_render}[a.cmd](a)


if __name__ == "__main__":
    main()
