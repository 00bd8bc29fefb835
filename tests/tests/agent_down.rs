//! `onAgentDown`: what ADD does when the agent is not running.

use edgeway_integration_tests::world::{sandbox_ipv4, World};
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn continue_adds_without_the_agent_and_the_agent_picks_it_up() {
    let mut w = World::new();
    assert!(!w.agent.is_running());
    assert!(!w.socket().exists(), "no agent socket");
    let list = w.on_agent_down_conflist("continue");
    let pod = w.pod(1);

    let added = w
        .runner()
        .add(&list, &pod.container)
        .unwrap_or_else(|f| panic!("ADD with onAgentDown=continue: {f}"));
    let result = added.result();
    let ip = sandbox_ipv4(&result, "eth0");
    assert_eq!(added.of("edgeway").json(), added.of("bridge").json());
    assert!(w.has_pod_rule(&ip), "rule for {ip}");
    assert!(w.record(&pod.container).is_some(), "record on disk");

    w.agent.start();
    w.assert_attached(&pod, &ip);

    w.runner()
        .del(&list, &pod.container, Some(&result))
        .unwrap_or_else(|f| panic!("DEL: {f}"));
    w.assert_detached(&pod, &ip);
    w.assert_nothing_left();
}

#[test]
fn fail_refuses_the_add_with_code_11_and_leaves_nothing() {
    let mut w = World::new();
    let list = w.on_agent_down_conflist("fail");
    let pod = w.pod(1);

    let failure = w
        .runner()
        .add(&list, &pod.container)
        .expect_err("ADD with onAgentDown=fail and no agent must fail");
    let failed = failure.failed();
    assert_eq!(failed.plugin, "edgeway", "the chain stops at edgeway");
    assert!(!failed.success());
    let err = failed.json();
    assert_eq!(err["code"], 11, "try again later: {err}");
    assert_eq!(err["cniVersion"], "1.0.0", "{err}");
    assert!(err["msg"].as_str().is_some_and(|m| !m.is_empty()), "{err}");
    assert!(
        !failure.runs.iter().any(|r| r.plugin == "portmap"),
        "nothing runs after the failed plugin"
    );

    let bridge_out = failure.runs[0].json();
    let ip = sandbox_ipv4(&bridge_out, "eth0");
    assert!(!w.has_pod_rule(&ip), "the failed ADD left a rule for {ip}");
    assert_eq!(w.edgeway_rules(), vec![], "no edgeway rule at all");
    assert_eq!(w.record_files(), Vec::<String>::new(), "no record");

    // The runtime tears the failed attachment down with DEL and no cached result.
    let del = w
        .runner()
        .del(&list, &pod.container, None)
        .unwrap_or_else(|f| panic!("DEL after the failed ADD: {f}"));
    assert!(del.of("edgeway").success());
    w.agent.start();
    w.assert_nothing_left();
}

/// A hung agent (SIGSTOP: the socket accepts, nothing answers) must not hang the pod:
/// ADD continues after `agentTimeoutMs`, DEL queues, and both return in time.
#[test]
fn a_hung_agent_delays_add_and_del_by_at_most_the_timeout() {
    let mut w = World::with_agent();
    let mut list = w.on_agent_down_conflist("continue");
    for p in list["plugins"].as_array_mut().expect("plugins") {
        if p["type"] == "edgeway" {
            p["agentTimeoutMs"] = json!(300);
        }
    }
    let pod = w.pod(1);
    w.agent.freeze(true);

    let started = Instant::now();
    let added = w
        .runner()
        .add(&list, &pod.container)
        .unwrap_or_else(|f| panic!("ADD with a hung agent: {f}"));
    let add_took = started.elapsed();
    let result = added.result();
    let ip = sandbox_ipv4(&result, "eth0");
    assert!(w.has_pod_rule(&ip), "rule for {ip}");
    assert!(w.record(&pod.container).is_some(), "record on disk");

    let started = Instant::now();
    w.runner()
        .del(&list, &pod.container, Some(&result))
        .unwrap_or_else(|f| panic!("DEL with a hung agent: {f}"));
    let del_took = started.elapsed();
    assert!(!w.has_pod_rule(&ip), "DEL removed the rule");
    assert_eq!(w.pending_del_files().len(), 1, "DEL queued for the agent");
    for (what, took) in [("ADD", add_took), ("DEL", del_took)] {
        assert!(
            took < Duration::from_secs(3),
            "{what} took {took:?} with agentTimeoutMs 300"
        );
    }

    w.agent.freeze(false);
    w.agent.restart();
    w.assert_detached(&pod, &ip);
    w.assert_nothing_left();
}
