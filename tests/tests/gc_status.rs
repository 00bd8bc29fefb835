//! GC and STATUS at 1.1.0, fed to edgeway directly (the reference plugins stop at 1.0.0).
//! The attachments come from the real bridge chain at 1.0.0.

use edgeway_integration_tests::world::{sandbox_ipv4, Pod, World};
use serde_json::{json, Value};

/// Two pods ADDed through the bridge list; returns the list and (pod, result, ip) for each.
fn two_pods(w: &World) -> (Value, Vec<(Pod, Value, String)>) {
    let list = w.bridge_conflist("1.0.0");
    let pods = (1..=2)
        .map(|n| {
            let pod = w.pod(n);
            let result = w
                .runner()
                .add(&list, &pod.container)
                .unwrap_or_else(|f| panic!("ADD pod {n}: {f}"))
                .result();
            let ip = sandbox_ipv4(&result, "eth0");
            w.assert_attached(&pod, &ip);
            (pod, result, ip)
        })
        .collect();
    (list, pods)
}

/// A 1.1.0 GC config for the list's network, with `extra` keys merged in.
fn gc_conf(w: &World, list: &Value, extra: Value) -> Value {
    let network = list["name"].as_str().expect("list name");
    let mut conf = w.edgeway_conf("1.1.0", network);
    for (k, v) in extra.as_object().expect("extra keys are an object") {
        conf[k] = v.clone();
    }
    conf
}

fn gc_keeps_only_the_listed_attachment(key: &str) {
    let w = World::with_agent();
    let (list, pods) = two_pods(&w);
    let (keep, drop) = (&pods[0], &pods[1]);
    let conf = gc_conf(
        &w,
        &list,
        json!({ key: [{"containerID": keep.0.container.id, "ifname": "eth0"}] }),
    );
    let run = w.runner().exec_network("GC", &conf);
    run.expect_success();
    assert!(run.stdout.is_empty(), "GC prints nothing on success");

    w.assert_attached(&keep.0, &keep.2);
    w.assert_detached(&drop.0, &drop.2);
    assert_eq!(w.edgeway_rules().len(), 1, "only the kept pod's rule");
    assert_eq!(w.record_files().len(), 1, "only the kept pod's record");
}

#[test]
fn gc_with_valid_attachments_removes_the_unlisted_one() {
    gc_keeps_only_the_listed_attachment("cni.dev/valid-attachments");
}

#[test]
fn gc_with_the_older_attachments_key_works_too() {
    gc_keeps_only_the_listed_attachment("cni.dev/attachments");
}

#[test]
fn gc_without_a_list_removes_nothing() {
    let w = World::with_agent();
    let (list, pods) = two_pods(&w);
    let run = w
        .runner()
        .exec_network("GC", &gc_conf(&w, &list, json!({})));
    run.expect_success();
    for (pod, _, ip) in &pods {
        w.assert_attached(pod, ip);
    }
    assert_eq!(w.edgeway_rules().len(), 2);
}

#[test]
fn gc_with_an_empty_list_removes_everything_of_this_network() {
    let w = World::with_agent();
    let (list, pods) = two_pods(&w);
    let run = w.runner().exec_network(
        "GC",
        &gc_conf(&w, &list, json!({"cni.dev/valid-attachments": []})),
    );
    run.expect_success();
    for (pod, _, ip) in &pods {
        w.assert_detached(pod, ip);
    }
    w.assert_nothing_left();
}

#[test]
fn gc_leaves_other_networks_alone() {
    let w = World::with_agent();
    let (_list, pods) = two_pods(&w);
    let mut other = w.bridge_conflist("1.0.0");
    other["name"] = json!("another-net");
    let run = w.runner().exec_network(
        "GC",
        &gc_conf(&w, &other, json!({"cni.dev/valid-attachments": []})),
    );
    run.expect_success();
    for (pod, _, ip) in &pods {
        w.assert_attached(pod, ip);
    }
}

#[test]
fn status_follows_the_agent() {
    let mut w = World::with_agent();
    let conf = w.edgeway_conf("1.1.0", "edge-bridge");
    let up = w.runner().exec_network("STATUS", &conf);
    up.expect_success();
    assert!(up.stdout.is_empty(), "STATUS prints nothing when ready");

    // Hung: the socket accepts, nothing answers within agentTimeoutMs.
    w.agent.freeze(true);
    let hung = w.runner().exec_network("STATUS", &conf);
    w.agent.freeze(false);
    assert!(!hung.success(), "STATUS must fail with the agent hung");
    assert_eq!(
        hung.error_code(),
        50,
        "{}",
        String::from_utf8_lossy(&hung.stdout)
    );

    w.agent.kill9();
    let down = w.runner().exec_network("STATUS", &conf);
    assert!(!down.success(), "STATUS must fail with the agent down");
    let err = down.json();
    assert_eq!(err["code"], 50, "{err}");
    assert_eq!(err["cniVersion"], "1.1.0", "{err}");

    w.agent.start();
    w.runner().exec_network("STATUS", &conf).expect_success();
}

/// GC with the agent down still removes rules and records, and queues the unregistration,
/// which the agent replays when it starts.
#[test]
fn gc_with_the_agent_down_queues_the_unregistration() {
    let mut w = World::with_agent();
    let (list, pods) = two_pods(&w);
    w.agent.kill9();
    let (keep, drop) = (&pods[0], &pods[1]);
    let conf = gc_conf(
        &w,
        &list,
        json!({"cni.dev/valid-attachments": [{"containerID": keep.0.container.id, "ifname": "eth0"}]}),
    );
    w.runner().exec_network("GC", &conf).expect_success();
    assert!(!w.has_pod_rule(&drop.2), "GC removed the rule");
    assert!(
        w.record(&drop.0.container).is_none(),
        "GC removed the record"
    );
    assert_eq!(
        w.pending_del_files(),
        vec![format!("{}@eth0.json", drop.0.container.id)]
    );

    w.agent.start();
    assert_eq!(w.pending_del_files(), Vec::<String>::new(), "replayed");
    w.assert_attached(&keep.0, &keep.2);
    w.assert_detached(&drop.0, &drop.2);
}
