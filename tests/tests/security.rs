//! Security of the node-local surfaces (issue 7): the API socket refuses other users, key
//! and state files are private, and no secret reaches a log.
//!
//! Tested elsewhere: an unauthenticated peer is refused and cannot inject packets, and a
//! spoofed source is dropped (tests/e2e/cross-lan.sh, with `edgeway-intruder`); forged,
//! tampered and outsider announcements are refused (unit tests in agent/src/p2p/announce.rs
//! and agent/src/ownership.rs); with a cluster CA, claims outside a member's grant are
//! ignored on every node (tests/e2e/grants.sh, unit tests in agent/src/p2p/grants.rs).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edgeway_integration_tests::world::{sandbox_ipv4, World};
use serde_json::Value;

/// nobody:nogroup on Debian.
const NOBODY: u32 = 65534;

/// A Python that any user can run (root's may live under /root).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// As uid/gid `NOBODY`, with no other group unless `with_group`, connects to `socket` and
/// sends GET /readyz; returns what the client printed: `errno=<n>` or the status line.
fn connect_as_nobody(socket: &Path, with_group: bool) -> String {
    const CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("errno=%d %s" % (e.errno, e.strerror))
    sys.exit(0)
s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
print(s.recv(4096).split(b"\r\n")[0].decode())
"#;
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"));
    if with_group {
        cmd.arg(format!("--groups={NOBODY}"));
    } else {
        cmd.arg("--clear-groups");
    }
    let out = cmd
        .args(["--inh-caps=-all", "--", python(), "-c", CLIENT])
        .arg(socket)
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "the client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A non-root user cannot reach the API, so cannot register pods or read the node's state;
/// only the configured `api.group` can. The directories on the way are opened up for the
/// test (0711: traversable, not listable), so the socket's own mode is what refuses.
#[test]
fn the_api_socket_refuses_other_users() {
    let mut w = World::new();
    let dir = w.socket().parent().expect("socket dir").to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    w.agent.start();
    let mode = std::fs::metadata(w.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode");
    let got = connect_as_nobody(&w.socket(), false);
    assert_eq!(got, "errno=13 Permission denied", "nobody on a 0600 socket");
    assert!(w.agent.attachments().is_empty(), "nothing was registered");

    // Control: the same user in `api.group` gets in, so the refusal above is the socket's
    // mode and not something else in the way.
    w.agent.kill9();
    w.agent.set_config("[api]\ngroup = \"nogroup\"\n");
    w.agent.start();
    let meta = std::fs::metadata(w.socket()).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o660,
        "socket mode with api.group"
    );
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), NOBODY);
    let got = connect_as_nobody(&w.socket(), true);
    assert!(got.starts_with("HTTP/1.1 200"), "api.group member: {got}");
    let got = connect_as_nobody(&w.socket(), false);
    // Still nobody's primary group: setpriv's --regid keeps it.
    assert!(got.starts_with("HTTP/1.1 200"), "gid nogroup: {got}");
}

/// Every path under `root` with its mode (lowest 9 bits).
fn walk(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    // Bounded: a state dir holds a handful of entries here.
    for _ in 0..10_000 {
        let Some(p) = todo.pop() else { break };
        let meta = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), meta.permissions().mode() & 0o777, meta.is_dir()));
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

fn secret_file(w: &World, text: &str) -> PathBuf {
    use std::io::Write;
    let path = w.socket().with_file_name("cluster-secret");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    writeln!(f, "{text}").unwrap();
    path
}

/// identity.key, the records, the queued DELs and the lock are 0600, and every directory
/// under stateDir is 0700, even when stateDir already existed 0755 (kubelet creates a
/// `DirectoryOrCreate` hostPath that way).
#[test]
fn key_and_state_files_are_private() {
    let mut w = World::new();
    let state = w.state_dir();
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&state)
        .unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = secret_file(&w, "c2VjdXJpdHktdGVzdC1zZWNyZXQtMDEyMzQ1Njc4OQ==");
    w.agent.set_config(&format!(
        "[p2p]\nlisten = [\"/ip4/127.0.0.1/tcp/7333\"]\nclusterSecretFile = \"{}\"\n",
        secret.display()
    ));
    w.agent.start();
    let list = w.bridge_conflist("1.0.0");
    let pods: Vec<_> = (1..=2).map(|n| w.pod(n)).collect();
    let mut results = Vec::new();
    for pod in &pods {
        let added = w
            .runner()
            .add(&list, &pod.container)
            .unwrap_or_else(|f| panic!("ADD: {f}"));
        let result = added.result();
        w.assert_attached(pod, &sandbox_ipv4(&result, "eth0"));
        results.push(result);
    }
    // A DEL while the agent is down leaves a queued entry.
    w.agent.kill9();
    w.runner()
        .del(&list, &pods[1].container, Some(&results[1]))
        .unwrap_or_else(|f| panic!("DEL: {f}"));
    assert_eq!(w.pending_del_files().len(), 1);

    let entries = walk(&state);
    let names: Vec<String> = entries
        .iter()
        .map(|(p, _, _)| p.strip_prefix(&state).unwrap().display().to_string())
        .collect();
    for want in ["identity.key", "lock", "attachments", "pending-del"] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("attachments/")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("pending-del/")),
        "{names:?}"
    );
    for (path, mode, is_dir) in &entries {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:o}", path.display());
    }
    w.agent.start();
    w.runner()
        .del(&list, &pods[0].container, Some(&results[0]))
        .unwrap_or_else(|f| panic!("DEL: {f}"));
    w.assert_nothing_left();
}

/// A veth pair between two node namespaces, 198.18.0.1/24 and 198.18.0.2/24.
fn link(a: &World, b: &World) {
    a.ip_in_node(&[
        "link",
        "add",
        "ewsec0",
        "type",
        "veth",
        "peer",
        "name",
        "ewsec1",
        "netns",
        b.node_ns(),
    ]);
    a.ip_in_node(&["addr", "add", "198.18.0.1/24", "dev", "ewsec0"]);
    a.ip_in_node(&["link", "set", "ewsec0", "up"]);
    b.ip_in_node(&["addr", "add", "198.18.0.2/24", "dev", "ewsec1"]);
    b.ip_in_node(&["link", "set", "ewsec1", "up"]);
}

fn agent_config(ip: &str, segment: &str, secret: &Path, bootstrap: &str) -> String {
    format!(
        "segment = \"{segment}\"\n[p2p]\nlisten = [\"/ip4/{ip}/tcp/7333\"]\n\
         bootstrap = [{bootstrap}]\nclusterSecretFile = \"{}\"\nannounceIntervalSecs = 1\n",
        secret.display()
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Two agents at debug level join each other with a known cluster secret and exchange a
/// pod. Neither log, nor the plugin's output, nor the API's answers contain the secret, in
/// the form in the file or as hex or base64 of its bytes (the secret is the file's text; its
/// decoded bytes are checked too).
#[test]
fn no_secret_reaches_a_log() {
    let mut a = World::new();
    let mut b = World::new();
    link(&a, &b);
    // 32 random-looking bytes, base64 as the README makes them.
    let raw: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(73).wrapping_add(29))
        .collect();
    let text = base64(&raw);
    let secret_a = secret_file(&a, &text);
    let secret_b = secret_file(&b, &text);
    a.agent
        .set_config(&agent_config("198.18.0.1", "lan-a", &secret_a, ""));
    b.agent.set_config(&agent_config(
        "198.18.0.2",
        "lan-b",
        &secret_b,
        "\"/ip4/198.18.0.1/tcp/7333\"",
    ));
    for w in [&mut a, &mut b] {
        w.agent.set_log_level("debug");
        w.agent.start();
    }
    let list = b.bridge_conflist("1.0.0");
    let pod = b.pod(1);
    let added = b
        .runner()
        .add(&list, &pod.container)
        .unwrap_or_else(|f| panic!("ADD: {f}"));
    let ip = sandbox_ipv4(&added.result(), "eth0");

    // The join: a learns b's pod, which needs membership proven both ways.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let r = edgeway_integration_tests::http::get(&a.socket(), "/v1/status").unwrap();
        let status: Value = r.json();
        let learned = status["peers"].as_array().is_some_and(|peers| {
            peers
                .iter()
                .any(|p| p["connected"] == true && p["pods"].as_u64() == Some(1))
        });
        if learned {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a never learned b's pod {ip}: {status}; a's log:\n{}\nb's log:\n{}",
            a.agent.log_text(),
            b.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let del = b
        .runner()
        .del(&list, &pod.container, Some(&added.result()))
        .unwrap_or_else(|f| panic!("DEL: {f}"));

    let forms = [
        text.clone(),
        hex(text.as_bytes()),
        base64(text.as_bytes()),
        hex(&raw),
        // Any 12-character run of the secret's text: a partial leak counts too.
        text[10..22].to_string(),
    ];
    let mut outputs: Vec<(String, String)> = vec![
        ("a's log".into(), a.agent.log_text()),
        ("b's log".into(), b.agent.log_text()),
        ("a's /v1/status".into(), status.to_string()),
        ("a's /metrics".into(), a.agent.metrics()),
    ];
    for r in added.runs.iter().chain(&del.runs) {
        outputs.push((
            format!("{} {}", r.plugin, r.command),
            format!("{}{}", String::from_utf8_lossy(&r.stdout), r.stderr),
        ));
    }
    let logs = a.agent.log_text().len() + b.agent.log_text().len();
    assert!(
        logs > 10_000,
        "debug logs are too short to mean anything: {logs} bytes"
    );
    for (what, body) in &outputs {
        for form in &forms {
            assert!(
                !body.contains(form.as_str()),
                "{what} contains the cluster secret ({form})"
            );
        }
    }
}
