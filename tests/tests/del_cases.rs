//! DEL must succeed in every case a runtime produces, and leave nothing of edgeway behind.

use edgeway_integration_tests::chain::{plugin_config, plugin_entry, ChainRuns};
use edgeway_integration_tests::world::{sandbox_ipv4, Pod, World};
use std::time::Duration;

use serde_json::{json, Value};

/// ADDs pod 1 through the bridge list at `version`; returns the pod, the result and its IP.
fn add_pod(w: &World, list: &Value) -> (Pod, Value, String) {
    let pod = w.pod(1);
    let added = w
        .runner()
        .add(list, &pod.container)
        .unwrap_or_else(|f| panic!("ADD: {f}"));
    let result = added.result();
    let ip = sandbox_ipv4(&result, "eth0");
    w.assert_attached(&pod, &ip);
    (pod, result, ip)
}

fn del_ok(w: &World, list: &Value, pod: &Pod, cached: Option<&Value>) -> ChainRuns {
    w.runner()
        .del(list, &pod.container, cached)
        .unwrap_or_else(|f| panic!("DEL must succeed: {f}"))
}

#[test]
fn repeated_del_succeeds() {
    let w = World::with_agent();
    let list = w.bridge_conflist("1.0.0");
    let (pod, result, ip) = add_pod(&w, &list);
    for _ in 0..3 {
        let runs = del_ok(&w, &list, &pod, Some(&result));
        assert!(runs.of("edgeway").stdout.is_empty());
        w.assert_detached(&pod, &ip);
    }
    w.assert_nothing_left();
}

#[test]
fn del_without_prev_result_at_0_3_1() {
    let w = World::with_agent();
    let list = w.bridge_conflist("0.3.1");
    let (pod, result, ip) = add_pod(&w, &list);
    // The runtime kept a result, but libcni sends none below 0.4.0.
    let runs = del_ok(&w, &list, &pod, Some(&result));
    assert!(
        runs.of("edgeway").stdin.get("prevResult").is_none(),
        "the runner must not send prevResult at 0.3.1"
    );
    w.assert_detached(&pod, &ip);
    w.assert_nothing_left();
}

/// containerd: DEL at StopPodSandbox with prevResult, then at RemovePodSandbox with an
/// empty CNI_NETNS and no prevResult.
#[test]
fn containerd_second_del_with_empty_netns() {
    let w = World::with_agent();
    let list = w.bridge_conflist("1.0.0");
    let (pod, result, ip) = add_pod(&w, &list);
    del_ok(&w, &list, &pod, Some(&result));
    let second = w
        .runner()
        .del(&list, &pod.container.without_netns(), None)
        .unwrap_or_else(|f| panic!("second DEL with empty CNI_NETNS: {f}"));
    assert_eq!(second.of("edgeway").stdin.get("prevResult"), None);
    w.assert_detached(&pod, &ip);
    w.assert_nothing_left();
}

/// The first DEL never came: the one with an empty CNI_NETNS and no prevResult must clean
/// up from the record alone.
#[test]
fn only_del_has_empty_netns_and_no_prev_result() {
    let w = World::with_agent();
    let list = w.bridge_conflist("1.0.0");
    let (pod, _result, ip) = add_pod(&w, &list);
    w.runner()
        .del(&list, &pod.container.without_netns(), None)
        .unwrap_or_else(|f| panic!("DEL with empty CNI_NETNS: {f}"));
    w.assert_detached(&pod, &ip);
    w.assert_nothing_left();
}

#[test]
fn del_after_the_pod_netns_is_gone() {
    let w = World::with_agent();
    let list = w.bridge_conflist("1.0.0");
    let (mut pod, result, ip) = add_pod(&w, &list);
    let netns_path = std::path::PathBuf::from(&pod.container.netns);
    pod.delete_netns();
    assert!(
        !netns_path.exists(),
        "{} still exists",
        netns_path.display()
    );
    del_ok(&w, &list, &pod, Some(&result));
    w.assert_detached(&pod, &ip);
    w.assert_nothing_left();
}

/// The record was lost (disk wiped, operator error): prevResult still names the address.
#[test]
fn del_with_the_record_missing() {
    let w = World::with_agent();
    let list = w.bridge_conflist("1.0.0");
    let (pod, result, ip) = add_pod(&w, &list);
    std::fs::remove_file(w.record_path(&pod.container)).expect("remove the record");
    del_ok(&w, &list, &pod, Some(&result));
    w.assert_detached(&pod, &ip);
    w.assert_nothing_left();
}

/// With the agent down DEL still removes rule and record, queues the unregistration on
/// disk, and the agent replays the queue when it starts.
#[test]
fn del_with_the_agent_down_is_queued_and_replayed() {
    let mut w = World::with_agent();
    let list = w.bridge_conflist("1.0.0");
    let (pod, result, ip) = add_pod(&w, &list);
    w.agent.kill9();

    del_ok(&w, &list, &pod, Some(&result));
    assert!(!w.has_pod_rule(&ip), "rule for {ip} survived the DEL");
    assert!(
        w.record(&pod.container).is_none(),
        "record survived the DEL"
    );
    let pending = w.pending_del_files();
    assert_eq!(
        pending,
        vec![format!("{}@eth0.json", pod.container.id)],
        "a pending DEL must be queued for the agent"
    );

    w.agent.start();
    assert_eq!(
        w.pending_del_files(),
        Vec::<String>::new(),
        "the agent replays the queue at start"
    );
    w.assert_detached(&pod, &ip);
    w.assert_nothing_left();
}

/// DEL straight to edgeway with neither record nor prevResult (an ADD that never got to
/// edgeway) is a no-op that succeeds.
#[test]
fn del_of_an_unknown_container_succeeds() {
    let w = World::with_agent();
    let list = w.bridge_conflist("1.0.0");
    let pod = w.pod(1);
    let conf = plugin_config(&list, plugin_entry(&list, "edgeway"), None);
    let del = w.runner().exec("DEL", &conf, &pod.container);
    del.expect_success();
    assert!(del.stdout.is_empty());
    w.assert_nothing_left();
}

/// A malformed prevResult must not fail DEL: the record is the main source.
#[test]
fn del_with_a_malformed_prev_result_succeeds() {
    let w = World::with_agent();
    let list = w.bridge_conflist("1.0.0");
    let (pod, _result, ip) = add_pod(&w, &list);
    for garbage in [
        json!("not a result"),
        json!({"cniVersion": "1.0.0", "ips": {"address": 5}}),
        json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.244.9.9/24"}}),
    ] {
        let conf = plugin_config(&list, plugin_entry(&list, "edgeway"), Some(&garbage));
        let del = w.runner().exec("DEL", &conf, &pod.container);
        del.expect_success();
        w.assert_detached(&pod, &ip);
    }
    del_ok(&w, &list, &pod, None);
    w.assert_nothing_left();
}

/// A DEL queued while the agent was down belongs to the attachment it removed. A later ADD
/// of the same container (before the agent is back) must survive the replay.
#[test]
fn a_queued_del_does_not_undo_a_newer_add() {
    let mut w = World::with_agent();
    let list = w.bridge_conflist("1.0.0");
    let (pod, result, old_ip) = add_pod(&w, &list);
    w.agent.kill9();
    del_ok(&w, &list, &pod, Some(&result));
    assert_eq!(w.pending_del_files().len(), 1, "the DEL is queued");

    let again = w
        .runner()
        .add(&list, &pod.container)
        .unwrap_or_else(|f| panic!("second ADD: {f}"));
    let result = again.result();
    let ip = sandbox_ipv4(&result, "eth0");
    assert!(w.has_pod_rule(&ip), "rule for the new address {ip}");

    w.agent.start();
    assert_eq!(w.pending_del_files(), Vec::<String>::new(), "replayed");
    w.assert_attached(&pod, &ip);
    if old_ip != ip {
        assert!(
            !w.has_pod_rule(&old_ip),
            "rule for the old address {old_ip}"
        );
    }
    del_ok(&w, &list, &pod, Some(&result));
    w.assert_nothing_left();
}

/// flannel and Calico chains (0.3.1) send DEL without prevResult. With the record lost
/// too, edgeway has only the agent's registry to learn the pod's address from; the rule
/// must still go (at the latest by the agent's next resync).
#[test]
fn del_with_the_record_missing_at_0_3_1() {
    let mut w = World::new();
    w.agent.set_resync_interval(1);
    w.agent.start();
    let list = w.bridge_conflist("0.3.1");
    let (pod, result, ip) = add_pod(&w, &list);
    std::fs::remove_file(w.record_path(&pod.container)).expect("remove the record");
    del_ok(&w, &list, &pod, Some(&result));
    w.wait_for(
        "the rule and registration of a DEL without record or prevResult to go",
        Duration::from_secs(4),
        || !w.has_pod_rule(&ip) && w.agent.attachment(&pod.container.id).is_none(),
    );
    w.assert_nothing_left();
}
