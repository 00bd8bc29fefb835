//! A crashed agent (kill -9) comes back with every registration, and the rules stay.

use edgeway_integration_tests::world::{sandbox_ipv4, World};
use serde_json::Value;

#[test]
fn kill_9_and_restart_keeps_every_registration() {
    let mut w = World::with_agent();
    let list = w.bridge_conflist("1.0.0");
    let mut pods = Vec::new();
    for n in 1..=5 {
        let pod = w.pod(n);
        let added = w
            .runner()
            .add(&list, &pod.container)
            .unwrap_or_else(|f| panic!("ADD pod {n}: {f}"));
        let result = added.result();
        let ip = sandbox_ipv4(&result, "eth0");
        w.assert_attached(&pod, &ip);
        pods.push((pod, result, ip));
    }
    let before = sorted(w.agent.attachments());
    assert_eq!(before.len(), 5);

    let old_pid = w.agent.pid().expect("agent runs");
    w.agent.kill9();
    assert!(!w.agent.is_running());
    for (_, _, ip) in &pods {
        assert!(w.has_pod_rule(ip), "rule for {ip} must outlive the agent");
    }
    w.agent.start();
    assert_ne!(w.agent.pid(), Some(old_pid), "a new agent process");

    assert_eq!(
        sorted(w.agent.attachments()),
        before,
        "the restarted agent lists the same attachments, generations included"
    );
    for (pod, _, ip) in &pods {
        w.assert_attached(pod, ip);
    }
    assert_eq!(w.edgeway_rules().len(), 5);

    for (pod, result, ip) in &pods {
        w.runner()
            .del(&list, &pod.container, Some(result))
            .unwrap_or_else(|f| panic!("DEL: {f}"));
        w.assert_detached(pod, ip);
    }
    w.assert_nothing_left();
}

fn sorted(mut list: Vec<Value>) -> Vec<Value> {
    list.sort_by_key(|a| a["containerID"].as_str().unwrap_or_default().to_string());
    list
}
