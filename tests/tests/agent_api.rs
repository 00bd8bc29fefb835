//! The agent's local API as a client sees it: who may connect, and what a bad request gets.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use edgeway_integration_tests::http;
use edgeway_integration_tests::world::World;

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
