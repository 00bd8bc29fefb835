//! Bad input gets a CNI error on stdout and a non-zero exit; VERSION lists exactly the
//! supported versions.

use edgeway_integration_tests::chain::{plugin_config, plugin_entry, PluginRun};
use edgeway_integration_tests::world::World;
use serde_json::{json, Value};

const VALID_ID: &str = "ewtcontainer1";

/// The env of an ADD/DEL/CHECK for a container whose netns is the node's own (edgeway
/// never enters it).
fn container_env<'a>(command: &'a str, id: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bad",
        ),
    ]
}

/// Asserts a failed call: non-zero exit, and a spec error object on stdout with `code`.
fn assert_cni_error(label: &str, run: &PluginRun, code: u64) -> Value {
    assert!(
        !run.success(),
        "{label}: must exit non-zero; stdout {}",
        String::from_utf8_lossy(&run.stdout)
    );
    let err = run.json();
    assert_eq!(err["code"], code, "{label}: {err}");
    assert!(
        err["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{label}: msg: {err}"
    );
    assert!(err["cniVersion"].is_string(), "{label}: cniVersion: {err}");
    err
}

#[test]
fn bad_input_answers_with_cni_errors() {
    let w = World::with_agent();
    let list = w.bridge_conflist("1.0.0");
    let edgeway = plugin_entry(&list, "edgeway");
    let no_prev = plugin_config(&list, edgeway, None).to_string();
    let netns = format!("/var/run/netns/{}", w.node_ns());
    let r = w.runner();

    let run = r.exec_raw(
        "edgeway",
        &container_env("ADD", VALID_ID, &netns),
        b"{\"cniVersion\": \"1.0.0\", \"name\": ",
    );
    assert_cni_error("malformed JSON", &run, 6);

    let mut env = container_env("ADD", VALID_ID, &netns);
    env.retain(|(k, _)| *k != "CNI_COMMAND");
    let run = r.exec_raw("edgeway", &env, no_prev.as_bytes());
    assert_cni_error("missing CNI_COMMAND", &run, 4);

    for bad_id in ["bad/id", "-starts-with-dash", "has space", ""] {
        let run = r.exec_raw(
            "edgeway",
            &container_env("ADD", bad_id, &netns),
            no_prev.as_bytes(),
        );
        assert_cni_error(&format!("CNI_CONTAINERID {bad_id:?}"), &run, 4);
    }

    let run = r.exec_raw(
        "edgeway",
        &container_env("ADD", VALID_ID, &netns),
        no_prev.as_bytes(),
    );
    let err = assert_cni_error("ADD without prevResult", &run, 7);
    let msg = err["msg"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        msg.contains("chain"),
        "the message must mention chaining: {err}"
    );
    assert_eq!(
        err["cniVersion"], "1.0.0",
        "answered in the caller's version"
    );

    let list_0_3_1 = w.bridge_conflist("0.3.1");
    let check_0_3_1 = plugin_config(
        &list_0_3_1,
        plugin_entry(&list_0_3_1, "edgeway"),
        Some(&json!({"cniVersion": "0.3.1", "ips": []})),
    );
    let run = r.exec_raw(
        "edgeway",
        &container_env("CHECK", VALID_ID, &netns),
        check_0_3_1.to_string().as_bytes(),
    );
    let err = assert_cni_error("CHECK at 0.3.1", &run, 1);
    assert_eq!(err["cniVersion"], "0.3.1");

    // 2 MiB of otherwise valid JSON: a config is a few KiB.
    let mut big = plugin_config(&list, edgeway, None);
    big["padding"] = json!("x".repeat(2 << 20));
    let run = r.exec_raw(
        "edgeway",
        &container_env("ADD", VALID_ID, &netns),
        big.to_string().as_bytes(),
    );
    assert_cni_error("2 MiB stdin", &run, 6);

    // None of the refused calls touched the node.
    w.assert_nothing_left();
}

#[test]
fn version_lists_exactly_the_supported_versions() {
    let w = World::new();
    for stdin in [
        b"{\"cniVersion\":\"1.0.0\"}".as_slice(),
        b"{\"cniVersion\":\"0.3.1\"}",
        b"",
    ] {
        // podman probes VERSION with CNI_NETNS=dummy.
        let run = w.runner().exec_raw(
            "edgeway",
            &[("CNI_COMMAND", "VERSION"), ("CNI_NETNS", "dummy")],
            stdin,
        );
        run.expect_success();
        let v = run.json();
        assert_eq!(
            v["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]),
            "stdin {:?}: {v}",
            String::from_utf8_lossy(stdin)
        );
        assert!(v["cniVersion"].is_string(), "{v}");
    }
}
