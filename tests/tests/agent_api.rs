//! The agent's local API as a client sees it: who may connect, and what a bad request gets.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use edgeway_integration_tests::http;
use edgeway_integration_tests::world::{sandbox_ipv4, World};

/// The socket is a root-only 0600 socket: no other user can register pods.
#[test]
fn socket_is_private() {
    let w = World::with_agent();
    let meta = std::fs::metadata(w.socket()).expect("agent socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
}

/// Bad requests get a 4xx with a reason, and change nothing.
#[test]
fn bad_requests_get_4xx_with_a_reason() {
    let w = World::with_agent();
    let sock = w.socket();
    let cases: [(&str, &str, Option<&[u8]>, u16); 5] = [
        ("POST", "/v1/attachments", Some(b"{not json"), 400),
        ("POST", "/v1/attachments", Some(br#"{"containerID":"a"}"#), 400),
        (
            "POST",
            "/v1/attachments",
            Some(
                br#"{"containerID":"a/../b","ifname":"eth0","netns":"","network":"n","ips":["10.244.0.9"],"table":7332,"priority":7332,"generation":"g","createdUnix":0}"#,
            ),
            400,
        ),
        // Well-formed, but no record under stateDir backs it: not announced.
        (
            "POST",
            "/v1/attachments",
            Some(
                br#"{"containerID":"ghost","ifname":"eth0","netns":"","network":"n","ips":["10.244.0.9"],"table":7332,"priority":7332,"generation":"g","createdUnix":0}"#,
            ),
            409,
        ),
        ("GET", "/v1/nothing-here", None, 404),
    ];
    for (method, path, body, want) in cases {
        let r = http::request(&sock, method, path, body).expect("request");
        assert_eq!(
            r.status,
            want,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let reason = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(!reason.is_empty(), "{method} {path}: no reason given");
    }
    let r = http::request(&sock, "DELETE", "/v1/attachments/bad%2Fid/eth0", None).expect("request");
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(http::get(&sock, "/v1/attachments")
        .unwrap()
        .json()
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(http::get(&sock, "/healthz").unwrap().status, 200);
}

/// CHECK fails clearly when the attachment record is gone, even with the rule in place.
#[test]
fn check_fails_when_the_record_is_gone() {
    let w = World::with_agent();
    let list = w.bridge_conflist("1.0.0");
    let pod = w.pod(1);
    let c = &pod.container;
    let result = w
        .runner()
        .add(&list, c)
        .unwrap_or_else(|f| panic!("ADD: {f}"))
        .result();
    let ip = sandbox_ipv4(&result, "eth0");
    w.assert_attached(&pod, &ip);
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
