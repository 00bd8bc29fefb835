//! 100 pods ADDed at once, then DELed at once: no registration lost, nothing left behind.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgeway_integration_tests::chain::ChainRuns;
use edgeway_integration_tests::world::{sandbox_ipv4, Pod, World};
use serde_json::{json, Value};

const PODS: usize = 100;

#[test]
fn hundred_parallel_adds_then_dels() {
    let mut w = World::new();
    // This test is about the plugin-to-agent path under load. The agent's periodic resync
    // races with concurrent ADD/DEL (see `registrations_survive_a_concurrent_resync`), so it
    // is kept out of the way here to keep this test deterministic.
    w.agent.set_resync_interval(3600);
    w.agent.start();
    let list = w.bridge_conflist("1.0.0");
    // Namespaces are setup, not the thing under test: create them up front.
    let pods: Vec<Pod> = (1..=PODS).map(|n| w.pod(n)).collect();

    let started = Instant::now();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|pod| {
                let (w, list) = (&w, &list);
                s.spawn(move || {
                    w.runner()
                        .add(list, &pod.container)
                        .map(|r: ChainRuns| r.result())
                        .unwrap_or_else(|f| panic!("ADD {}: {f}", pod.container.id))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    });
    eprintln!("{PODS} parallel ADDs took {:?}", started.elapsed());

    let ips: BTreeSet<String> = results.iter().map(|r| sandbox_ipv4(r, "eth0")).collect();
    assert_eq!(ips.len(), PODS, "host-local hands out distinct addresses");
    let registered: BTreeSet<String> = w
        .agent
        .attachments()
        .iter()
        .map(|a| a["containerID"].as_str().unwrap_or_default().to_string())
        .collect();
    let expected: BTreeSet<String> = pods.iter().map(|p| p.container.id.clone()).collect();
    assert_eq!(registered, expected, "the agent lists every pod");
    assert_eq!(w.record_files().len(), PODS, "one record per pod");
    let rule_ips: BTreeSet<String> = w.edgeway_rules().into_iter().map(|r| r.src).collect();
    assert_eq!(rule_ips, ips, "one rule per pod address");
    for ip in &ips {
        assert!(w.has_pod_rule(ip), "rule for {ip}");
    }

    let started = Instant::now();
    std::thread::scope(|s| {
        for (pod, result) in pods.iter().zip(&results) {
            let (w, list) = (&w, &list);
            s.spawn(move || {
                w.runner()
                    .del(list, &pod.container, Some(result))
                    .unwrap_or_else(|f| panic!("DEL {}: {f}", pod.container.id));
            });
        }
    });
    eprintln!("{PODS} parallel DELs took {:?}", started.elapsed());
    w.assert_nothing_left();
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
