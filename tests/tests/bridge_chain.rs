//! bridge + host-local + edgeway (+ portmap), from `conflist/10-bridge-host-local.conflist`,
//! at every spec version the reference plugins speak; and edgeway at 1.1.0 fed a bridge
//! 1.0.0 result, as libcni would hand it over.

use edgeway_integration_tests::chain::{plugin_config, plugin_entry};
use edgeway_integration_tests::world::{sandbox_ipv4, Pod, World};
use serde_json::json;

/// ADD, CHECK (0.4.0 and later), DEL through the whole conflist at `version`.
fn bridge_chain_round_trip(version: &str) {
    let w = World::with_agent();
    let list = w.bridge_conflist(version);
    let pod = w.pod(1);
    let c = &pod.container;

    let added = w
        .runner()
        .add(&list, c)
        .unwrap_or_else(|f| panic!("ADD at {version}: {f}"));
    let bridge_out = added.of("bridge").json();
    let edgeway_out = added.of("edgeway").json();
    assert_eq!(
        bridge_out["cniVersion"], version,
        "bridge answered {bridge_out}"
    );
    // Same version on both sides: edgeway passes prevResult on unchanged.
    assert_eq!(
        edgeway_out, bridge_out,
        "edgeway must pass the bridge result on unchanged at {version}"
    );
    assert_eq!(added.result(), bridge_out, "portmap passes it on too");

    let ip = sandbox_ipv4(&bridge_out, "eth0");
    assert!(ip.starts_with("10.244."), "{ip}");
    w.assert_attached(&pod, &ip);
    let record = w.record(c).expect("record exists");
    assert_eq!(record["network"], list["name"]);
    assert_eq!(record["netns"], c.netns.as_str());

    let result = added.result();
    if version != "0.3.0" && version != "0.3.1" {
        w.runner()
            .check(&list, c, &result)
            .unwrap_or_else(|f| panic!("CHECK at {version}: {f}"));
    }

    w.runner()
        .del(&list, c, Some(&result))
        .unwrap_or_else(|f| panic!("DEL at {version}: {f}"));
    w.assert_detached(&pod, &ip);
    w.assert_nothing_left();
}

#[test]
fn bridge_chain_0_3_0() {
    bridge_chain_round_trip("0.3.0");
}

#[test]
fn bridge_chain_0_3_1() {
    bridge_chain_round_trip("0.3.1");
}

#[test]
fn bridge_chain_0_4_0() {
    bridge_chain_round_trip("0.4.0");
}

#[test]
fn bridge_chain_1_0_0() {
    bridge_chain_round_trip("1.0.0");
}

/// The reference plugins refuse 1.1.0, so bridge runs at 1.0.0 and edgeway gets a 1.1.0
/// config with that result as prevResult.
#[test]
fn edgeway_1_1_0_after_bridge_1_0_0() {
    let w = World::with_agent();
    let list = w.bridge_conflist("1.0.0");
    let pod = w.pod(1);
    let c = &pod.container;
    let bridge_conf = plugin_config(&list, plugin_entry(&list, "bridge"), None);
    let bridge = w.runner().exec("ADD", &bridge_conf, c);
    bridge.expect_success();
    let bridge_out = bridge.json();
    assert_eq!(bridge_out["cniVersion"], "1.0.0");

    let mut list_1_1 = list.clone();
    list_1_1["cniVersion"] = json!("1.1.0");
    let edgeway_entry = plugin_entry(&list_1_1, "edgeway");
    let conf = plugin_config(&list_1_1, edgeway_entry, Some(&bridge_out));
    let add = w.runner().exec("ADD", &conf, c);
    add.expect_success();
    // 1.1.0 only adds optional fields, so the conversion changes just cniVersion.
    let mut expected = bridge_out.clone();
    expected["cniVersion"] = json!("1.1.0");
    assert_eq!(add.json(), expected);

    let ip = sandbox_ipv4(&bridge_out, "eth0");
    w.assert_attached(&pod, &ip);

    let check_conf = plugin_config(&list_1_1, edgeway_entry, Some(&add.json()));
    w.runner().exec("CHECK", &check_conf, c).expect_success();

    let del = w.runner().exec("DEL", &check_conf, c);
    del.expect_success();
    assert!(del.stdout.is_empty(), "DEL prints nothing on success");
    w.assert_detached(&pod, &ip);
    w.runner()
        .exec(
            "DEL",
            &plugin_config(&list, plugin_entry(&list, "bridge"), Some(&bridge_out)),
            c,
        )
        .expect_success();
    w.assert_nothing_left();
}

/// A 1.0.0 list whose bridge answered in 0.4.0 layout: edgeway converts it to 1.0.0,
/// dropping `ips[].version` and keeping everything else.
#[test]
fn edgeway_converts_an_older_prev_result_to_the_list_version() {
    let w = World::with_agent();
    let list_0_4 = w.bridge_conflist("0.4.0");
    let pod = w.pod(1);
    let c = &pod.container;
    let bridge = w.runner().exec(
        "ADD",
        &plugin_config(&list_0_4, plugin_entry(&list_0_4, "bridge"), None),
        c,
    );
    bridge.expect_success();
    let bridge_out = bridge.json();
    assert!(
        bridge_out["ips"][0].get("version").is_some(),
        "a 0.4.0 result carries ips[].version: {bridge_out}"
    );

    let list_1_0 = w.bridge_conflist("1.0.0");
    let conf = plugin_config(
        &list_1_0,
        plugin_entry(&list_1_0, "edgeway"),
        Some(&bridge_out),
    );
    let add = w.runner().exec("ADD", &conf, c);
    add.expect_success();
    let mut expected = bridge_out.clone();
    expected["cniVersion"] = json!("1.0.0");
    for ip in expected["ips"].as_array_mut().expect("ips") {
        ip.as_object_mut().expect("ip entry").remove("version");
    }
    assert_eq!(add.json(), expected);

    let ip = sandbox_ipv4(&bridge_out, "eth0");
    w.assert_attached(&pod, &ip);
    w.runner().exec("DEL", &conf, c).expect_success();
    w.assert_detached(&pod, &ip);
}

/// One pod through the 1.0.0 bridge chain, attached: (world's conflist, pod, result, IPv4).
fn attached_pod(w: &World) -> (serde_json::Value, Pod, serde_json::Value, String) {
    let list = w.bridge_conflist("1.0.0");
    let pod = w.pod(1);
    let result = w
        .runner()
        .add(&list, &pod.container)
        .unwrap_or_else(|f| panic!("ADD: {f}"))
        .result();
    let ip = sandbox_ipv4(&result, "eth0");
    w.assert_attached(&pod, &ip);
    (list, pod, result, ip)
}

/// CHECK notices when edgeway's rule was removed behind its back.
#[test]
fn check_fails_when_the_rule_is_gone() {
    let w = World::with_agent();
    let (list, pod, result, ip) = attached_pod(&w);
    let c = &pod.container;
    w.runner()
        .check(&list, c, &result)
        .unwrap_or_else(|f| panic!("CHECK with everything in place: {f}"));

    w.ip_in_node(&[
        "rule", "del", "from", &ip, "lookup", "7332", "priority", "7332",
    ]);
    assert!(!w.has_pod_rule(&ip));
    let failure = w
        .runner()
        .check(&list, c, &result)
        .expect_err("CHECK must fail without the rule");
    let failed = failure.failed();
    assert_eq!(failed.plugin, "edgeway");
    let err = failed.json();
    assert!(
        err["msg"].as_str().is_some_and(|m| m.contains(&ip)),
        "the message names the address: {err}"
    );
    assert!(err["code"].as_u64().is_some_and(|c| c != 0), "{err}");

    w.runner()
        .del(&list, c, Some(&result))
        .unwrap_or_else(|f| panic!("DEL: {f}"));
    w.assert_detached(&pod, &ip);
}

/// CHECK fails clearly when the attachment record is gone, even with the rule in place.
#[test]
fn check_fails_when_the_record_is_gone() {
    let w = World::with_agent();
    let (list, pod, result, ip) = attached_pod(&w);
    let c = &pod.container;
    std::fs::remove_file(w.record_path(c)).expect("remove the record");
    let failure = w
        .runner()
        .check(&list, c, &result)
        .expect_err("CHECK must fail without the record");
    let err = failure.failed().json();
    assert_eq!(err["code"], 103, "{err}");
    assert!(
        err["msg"].as_str().is_some_and(|m| m.contains("record")),
        "{err}"
    );
    w.runner()
        .del(&list, c, Some(&result))
        .unwrap_or_else(|f| panic!("DEL: {f}"));
    assert!(!w.has_pod_rule(&ip));
}
