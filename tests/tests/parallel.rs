//! 200 pods ADDed at once, then DELed at once, through the real chain of bridge with
//! host-local, edgeway and portmap, with the agent running: no registration lost, nothing
//! left behind (no rule, record, pending DEL, registration or host-local reservation). It
//! also prints the ADD and DEL latency percentiles, of edgeway's own call and of the whole
//! chain: benchmark output, not assertions (`bash bench/pod-load.sh` runs it at several
//! concurrency levels with release binaries).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use edgeway_integration_tests::chain::{ChainRuns, Container, Runner};
use edgeway_integration_tests::world::{sandbox_ipv4, Pod, World};
use serde_json::{json, Value};

const PODS: usize = 200;

/// How many ADDs (then DELs) run at once: all of them, unless `EW_LOAD_CONCURRENCY` asks for
/// a smaller pool.
fn concurrency() -> usize {
    match std::env::var("EW_LOAD_CONCURRENCY") {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|c| (1..=PODS).contains(c))
            .unwrap_or_else(|| panic!("EW_LOAD_CONCURRENCY must be 1..={PODS}, not {v:?}")),
        Err(_) => PODS,
    }
}

/// The agent's resync interval for the load test: 1 s unless `EW_LOAD_RESYNC_SECS` says.
fn resync_secs() -> u64 {
    match std::env::var("EW_LOAD_RESYNC_SECS") {
        Ok(v) => v
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=3600).contains(s))
            .unwrap_or_else(|| panic!("EW_LOAD_RESYNC_SECS must be 1..=3600, not {v:?}")),
        Err(_) => 1,
    }
}

/// One chain call: its result and how long edgeway's own call and the whole chain took.
struct Timed {
    result: Value,
    edgeway: Duration,
    chain: Duration,
}

/// Runs `op` for every pod on a pool of `workers` threads that start together (a barrier),
/// and returns the timed calls in pod order.
fn wave(
    pods: &[Pod],
    workers: usize,
    op: impl Fn(&Container, usize) -> (ChainRuns, Value) + Sync,
) -> (Vec<Timed>, Duration) {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Timed>>> = Mutex::new((0..pods.len()).map(|_| None).collect());
    let barrier = Barrier::new(workers + 1);
    let started = std::thread::scope(|s| {
        for _ in 0..workers {
            let (next, out, barrier, op) = (&next, &out, &barrier, &op);
            s.spawn(move || {
                barrier.wait();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(pod) = pods.get(i) else { break };
                    let t0 = Instant::now();
                    let (runs, result) = op(&pod.container, i);
                    let chain = t0.elapsed();
                    let edgeway = runs.of("edgeway").elapsed;
                    out.lock().expect("no worker panicked")[i] = Some(Timed {
                        result,
                        edgeway,
                        chain,
                    });
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    let wall = started.elapsed();
    let timed = out
        .into_inner()
        .expect("no worker panicked")
        .into_iter()
        .map(|t| t.expect("every pod ran"))
        .collect();
    (timed, wall)
}

/// `p` in 0..=100 of the sorted samples (nearest rank), in milliseconds.
fn percentile_ms(sorted: &[Duration], p: usize) -> f64 {
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

/// One line a benchmark can grep: `LOAD <cmd> pods=.. concurrency=.. edgeway_p50_ms=.. ...`.
fn report(cmd: &str, timed: &[Timed], workers: usize, wall: Duration) {
    let stats = |name: &str, pick: fn(&Timed) -> Duration| {
        let mut v: Vec<Duration> = timed.iter().map(pick).collect();
        v.sort();
        let p = |q| percentile_ms(&v, q);
        format!(
            "{name}_p50_ms={:.1} {name}_p99_ms={:.1} {name}_max_ms={:.1}",
            p(50),
            p(99),
            p(100)
        )
    };
    let e = stats("edgeway", |t| t.edgeway);
    let c = stats("chain", |t| t.chain);
    eprintln!(
        "LOAD {cmd} pods={} concurrency={workers} resync_s={} {e} {c} wall_ms={:.0} per_s={:.0}",
        timed.len(),
        resync_secs(),
        wall.as_secs_f64() * 1000.0,
        timed.len() as f64 / wall.as_secs_f64()
    );
}

#[test]
fn two_hundred_parallel_adds_then_dels() {
    let workers = concurrency();
    let mut w = World::new();
    // The periodic resync re-reads stateDir every second, so it runs several times during
    // each wave: it must neither lose a fresh registration nor revive a deleted one. The
    // API counters below prove each registration took the live path, not a resync.
    // (`EW_LOAD_RESYNC_SECS` sets another interval, e.g. the agent's default 10.)
    w.agent.set_resync_interval(resync_secs());
    w.agent.start();
    let list = w.bridge_conflist("1.0.0");
    assert_eq!(
        list["plugins"].as_array().map(Vec::len),
        Some(3),
        "bridge + edgeway + portmap"
    );
    // Namespaces are setup, not the thing under test: create them up front.
    let pods: Vec<Pod> = (1..=PODS).map(|n| w.pod(n)).collect();
    // Plugins enter the node namespace with setns(2), as under a runtime, so the timings
    // hold no `ip netns exec`.
    let runner: Runner = w.runner().direct();

    let (added, wall) = wave(&pods, workers, |c, _| {
        let runs = runner
            .add(&list, c)
            .unwrap_or_else(|f| panic!("ADD {}: {f}", c.id));
        let result = runs.result();
        (runs, result)
    });
    report("ADD", &added, workers, wall);

    let ips: BTreeSet<String> = added
        .iter()
        .map(|t| sandbox_ipv4(&t.result, "eth0"))
        .collect();
    assert_eq!(ips.len(), PODS, "host-local hands out distinct addresses");
    let reserved: BTreeSet<String> = w.ipam_reservations().into_iter().collect();
    assert_eq!(
        reserved, ips,
        "host-local holds exactly the pods' addresses"
    );
    let attachments = w.agent.attachments();
    assert_eq!(attachments.len(), PODS, "the agent lists each pod once");
    let registered: BTreeSet<String> = attachments
        .iter()
        .map(|a| a["containerID"].as_str().unwrap_or_default().to_string())
        .collect();
    let expected: BTreeSet<String> = pods.iter().map(|p| p.container.id.clone()).collect();
    assert_eq!(registered, expected, "the agent lists every pod");
    assert_eq!(w.record_files().len(), PODS, "one record per pod");
    assert_eq!(w.pending_del_files(), Vec::<String>::new(), "no DEL queued");
    assert_eq!(
        w.agent
            .metric_sum(r#"edgeway_api_requests_total{endpoint="register",code="200"}"#),
        PODS as f64,
        "every ADD registered with the agent itself, within agentTimeoutMs"
    );
    let rules = w.edgeway_rules();
    assert_eq!(rules.len(), PODS, "one rule per pod address: {rules:?}");
    let rule_ips: BTreeSet<String> = rules.into_iter().map(|r| r.src).collect();
    assert_eq!(rule_ips, ips, "one rule per pod address");
    for ip in &ips {
        assert!(w.has_pod_rule(ip), "rule for {ip}");
    }

    let (deleted, wall) = wave(&pods, workers, |c, i| {
        let runs = runner
            .del(&list, c, Some(&added[i].result))
            .unwrap_or_else(|f| panic!("DEL {}: {f}", c.id));
        (runs, Value::Null)
    });
    report("DEL", &deleted, workers, wall);
    w.assert_nothing_left();
    let api = |series: &str| w.agent.metric_sum(series);
    assert_eq!(
        api(r#"edgeway_api_requests_total{endpoint="unregister",code="200"}"#),
        PODS as f64,
        "every DEL told the agent itself"
    );
    for ep in ["register", "unregister"] {
        let all = api(&format!(r#"edgeway_api_requests_total{{endpoint="{ep}""#));
        assert_eq!(all, PODS as f64, "{ep} requests answered other than 200");
    }
    assert_eq!(
        api("edgeway_recovery_actions_total"),
        0.0,
        "the resync had nothing to repair"
    );
    assert_eq!(
        w.ipam_reservations(),
        Vec::<String>::new(),
        "host-local reservations left"
    );
    let rules6 = w.ip_in_node(&["-6", "rule", "show"]);
    assert!(
        !rules6.contains("proto 237"),
        "IPv6 edgeway rules left: {rules6}"
    );
    let veths = w.ip_in_node(&["-o", "link", "show", "type", "veth"]);
    assert_eq!(veths, "", "host-side veths left");
}

/// Pods ADDed and DELed while the agent resyncs its registry from `stateDir` (every second
/// here). Right after a successful ADD the agent must list the pod, and right after a
/// successful DEL it must not. Idle records make each resync's directory listing slow, which
/// widens the window the race needs; they are never touched otherwise. Stops at the first
/// inconsistency.
#[test]
fn registrations_survive_a_concurrent_resync() {
    const IDLE: usize = 3000;
    const WORKERS: usize = 6;
    let mut w = World::new();
    w.agent.set_resync_interval(1);
    w.agent.start();
    let mut list = w.bridge_conflist("1.0.0");
    for p in list["plugins"].as_array_mut().expect("plugins") {
        if p["type"] == "edgeway" {
            // A successful ADD then proves the registration reached the agent.
            p["onAgentDown"] = json!("fail");
            p["agentTimeoutMs"] = json!(10_000);
        }
    }
    let dir = w.state_dir().join("attachments");
    std::fs::create_dir_all(&dir).expect("create the attachments dir");
    for i in 0..IDLE {
        let id = format!("idle{i}");
        let record = json!({
            "containerID": id, "ifname": "eth0", "netns": "", "network": "idle",
            "ips": [format!("10.244.{}.{}", 200 + i / 250, 1 + i % 250)],
            "pod": {}, "table": 7332, "priority": 7332, "generation": "g", "createdUnix": 0
        });
        std::fs::write(dir.join(format!("{id}@eth0.json")), record.to_string())
            .expect("write an idle record");
    }
    w.wait_for(
        "the agent to pick up the idle records",
        Duration::from_secs(5),
        || w.agent.attachments().len() == IDLE,
    );

    let pods: Vec<Pod> = (1..=WORKERS).map(|n| w.pod(n)).collect();
    let (lost, stale, cycles) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let end = Instant::now() + Duration::from_secs(8);
    std::thread::scope(|s| {
        for pod in &pods {
            let (w, list, lost, stale, cycles) = (&w, &list, &lost, &stale, &cycles);
            s.spawn(move || {
                let c = &pod.container;
                let anomaly = || lost.load(Ordering::Relaxed) + stale.load(Ordering::Relaxed) > 0;
                while Instant::now() < end && !anomaly() {
                    let result = w
                        .runner()
                        .add(list, c)
                        .unwrap_or_else(|f| panic!("ADD {}: {f}", c.id))
                        .result();
                    if w.agent.attachment(&c.id).is_none() {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    w.runner()
                        .del(list, c, Some(&result))
                        .unwrap_or_else(|f| panic!("DEL {}: {f}", c.id));
                    assert_eq!(
                        w.pending_del_files(),
                        Vec::<String>::new(),
                        "DEL told the agent"
                    );
                    if w.agent.attachment(&c.id).is_some() {
                        stale.fetch_add(1, Ordering::Relaxed);
                    }
                    cycles.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let (lost, stale, cycles) = (lost.into_inner(), stale.into_inner(), cycles.into_inner());
    assert!(cycles > 0);
    assert_eq!(
        (lost, stale),
        (0, 0),
        "in {cycles} ADD/DEL cycles: {lost} registrations missing right after ADD, \
         {stale} still listed right after DEL"
    );
}
