//! Faults of `stateDir` and the agent's files (issue 7): a full or read-only state dir, a
//! corrupt attachment record, a corrupt identity key, a short or missing cluster secret.
//!
//! For each, what an operator needs: a clear error (a CNI error on stdout with edgeway's
//! code 101 for the state dir, a message naming the file), pod creation that does not hang
//! or leave half an attachment behind, the problem on `/readyz` and `/metrics` while the
//! agent runs (or a clean exit naming the file when it cannot run), no panic anywhere, and
//! nothing lost: every other record, rule and registration stays.
//!
//! Mounts (a small tmpfs, a read-only bind mount) are made only on this test's own temp dir
//! and inside a private mount namespace of the test's thread ([`PrivateMounts`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgeway_integration_tests::chain::PluginRun;
use edgeway_integration_tests::mounts::PrivateMounts;
use edgeway_integration_tests::world::{sandbox_ipv4, Pod, World};
use serde_json::Value;

/// Every plugin run's stderr and the agent's log, checked for panics at the end.
#[derive(Default)]
struct Outputs(Vec<(String, String)>);

impl Outputs {
    fn runs(&mut self, what: &str, runs: &[PluginRun]) {
        for r in runs {
            self.0.push((
                format!("{what}: {} {}", r.plugin, r.command),
                r.stderr.clone(),
            ));
        }
    }

    fn assert_no_panic(&self, w: &World) {
        let log = w.agent.log_text();
        assert!(!log.contains("panicked"), "the agent panicked:\n{log}");
        for (what, stderr) in &self.0 {
            assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
        }
    }
}

/// ADD through the list; the result and the pod's IPv4 address.
fn add_ok(w: &World, list: &Value, pod: &Pod, out: &mut Outputs) -> (Value, String) {
    let added = w
        .runner()
        .add(list, &pod.container)
        .unwrap_or_else(|f| panic!("ADD {}: {f}", pod.name));
    out.runs("ADD", &added.runs);
    let result = added.result();
    let ip = sandbox_ipv4(&result, "eth0");
    (result, ip)
}

fn del_ok(w: &World, list: &Value, pod: &Pod, cached: Option<&Value>, out: &mut Outputs) {
    let del = w
        .runner()
        .del(list, &pod.container, cached)
        .unwrap_or_else(|f| panic!("DEL {} must never fail: {f}", pod.name));
    out.runs("DEL", &del.runs);
}

/// An ADD that must stop at edgeway with `code`; returns edgeway's error and the address
/// the host CNI had given the pod.
fn add_fails(w: &World, list: &Value, pod: &Pod, code: u64, out: &mut Outputs) -> (Value, String) {
    let failure = w
        .runner()
        .add(list, &pod.container)
        .expect_err("this ADD must fail");
    out.runs("failed ADD", &failure.runs);
    let failed = failure.failed();
    assert_eq!(failed.plugin, "edgeway", "the chain stops at edgeway");
    let err = failed.json();
    assert_eq!(err["code"], code, "{err}; stderr {}", failed.stderr);
    assert_eq!(err["cniVersion"], "1.0.0", "{err}");
    let ip = sandbox_ipv4(&failure.runs[0].json(), "eth0");
    (err, ip)
}

/// Waits, at most `secs`, for /readyz to answer 503 with a problem containing every one of
/// `words`; returns the problems.
fn wait_unready_with(w: &World, secs: u64, words: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (status, body) = w.agent.readyz();
        let problems: Vec<String> = body["problems"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|p| p.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if status == 503
            && body["ready"] == false
            && problems
                .iter()
                .any(|p| words.iter().all(|word| p.contains(word)))
        {
            return problems;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never reported a problem with {words:?} within {secs} s; last answer \
             {status} {body}; log:\n{}",
            w.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fills the filesystem holding `dir` with one file, in 4 KiB writes, bounded by
/// `max_kib`; returns the file.
fn fill(dir: &Path, max_kib: usize) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create the filler file");
    let chunk = [0u8; 4096];
    for _ in 0..=max_kib / 4 {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.flush()) {
            assert_eq!(e.raw_os_error(), Some(nix::libc::ENOSPC), "{e}");
            return path;
        }
    }
    panic!("{} did not fill up within {max_kib} KiB", dir.display());
}

fn create_private_dir(dir: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
}

/// A full state dir: ADD fails at once with code 101 naming the file and the cause, undoes
/// its rule, and leaves no record; the agent says so on /readyz; DEL still succeeds; the
/// pod that was there before keeps everything; and once there is room again, everything
/// works with no manual step.
#[test]
fn a_full_state_dir_fails_add_with_101_and_shows_on_readyz() {
    let mut w = World::new();
    let list = w.on_agent_down_conflist("fail");
    let pods: Vec<Pod> = (1..=3).map(|n| w.pod(n)).collect();
    let mut out = Outputs::default();
    let state = w.state_dir();
    create_private_dir(&state);
    let mut mounts = PrivateMounts::enter();
    mounts.tmpfs(&state, 256);
    w.agent.set_resync_interval(1);
    w.agent.start();

    let (result1, ip1) = add_ok(&w, &list, &pods[0], &mut out);
    w.assert_attached(&pods[0], &ip1);

    let filler = fill(&state, 1024);
    let (err, ip2) = add_fails(&w, &list, &pods[1], 101, &mut out);
    let msg = err["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("No space left on device"), "the cause: {err}");
    assert!(
        msg.contains(&w.record_path(&pods[1].container).display().to_string()),
        "the message names the record file: {err}"
    );
    assert!(!w.has_pod_rule(&ip2), "the failed ADD left its rule");
    assert_eq!(
        w.record(&pods[1].container),
        None,
        "the failed ADD left a record"
    );
    // The runtime tears the failed attachment down with DEL and no cached result.
    del_ok(&w, &list, &pods[1], None, &mut out);

    let problems = wait_unready_with(&w, 5, &["stateDir", "No space left on device"]);
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&state.display().to_string())),
        "the problem names the state dir: {problems:?}"
    );
    assert_eq!(w.agent.metric("edgeway_ready"), Some(0.0));

    // Nothing lost: the earlier pod keeps its rule, record and registration.
    w.assert_attached(&pods[0], &ip1);

    // DEL with the disk full and the agent down: it cannot queue for the agent, and still
    // succeeds and removes the rule and the record.
    w.agent.kill9();
    del_ok(&w, &list, &pods[0], Some(&result1), &mut out);
    assert!(!w.has_pod_rule(&ip1), "DEL removed the rule");
    assert_eq!(w.record(&pods[0].container), None, "DEL removed the record");

    // Room again: the agent is ready, and pods come and go as usual.
    std::fs::remove_file(&filler).expect("remove the filler");
    w.agent.start();
    w.assert_detached(&pods[0], &ip1);
    let (result3, ip3) = add_ok(&w, &list, &pods[2], &mut out);
    w.assert_attached(&pods[2], &ip3);
    del_ok(&w, &list, &pods[2], Some(&result3), &mut out);
    w.assert_nothing_left();
    out.assert_no_panic(&w);
    drop(mounts);
}

/// A read-only state dir (a filesystem remounted read-only after errors, say): ADD fails
/// with code 101 naming the cause; a restarted agent still rebuilds its registry from the
/// records it can read and reports the problem; DEL succeeds; after the fault is repaired
/// and the agent restarts, nothing is left over.
#[test]
fn a_read_only_state_dir_fails_add_with_101_and_keeps_the_registry() {
    let mut w = World::new();
    let list = w.on_agent_down_conflist("fail");
    // flannel's and Calico's version: DEL comes without prevResult.
    let list_0_3_1 = w.bridge_conflist("0.3.1");
    let pods: Vec<Pod> = (1..=3).map(|n| w.pod(n)).collect();
    let mut out = Outputs::default();
    let state = w.state_dir();
    let mut mounts = PrivateMounts::enter();
    w.agent.set_resync_interval(1);
    w.agent.start();
    let (result1, ip1) = add_ok(&w, &list, &pods[0], &mut out);
    w.assert_attached(&pods[0], &ip1);
    let (_, ip3) = add_ok(&w, &list_0_3_1, &pods[2], &mut out);
    w.assert_attached(&pods[2], &ip3);

    // The agent restarts onto the read-only dir (processes started earlier keep their view).
    w.agent.kill9();
    mounts.read_only(&state);
    w.agent.start_unready();
    wait_unready_with(&w, 5, &["Read-only file system"]);
    assert_eq!(w.agent.metric("edgeway_ready"), Some(0.0));
    // Nothing lost: the registration is rebuilt from the record, and the rule stays.
    wait_until("the agent to list pod 1 again", 5, || {
        w.agent.attachment(&pods[0].container.id).is_some()
    });
    assert!(w.has_pod_rule(&ip1));

    let (err, ip2) = add_fails(&w, &list, &pods[1], 101, &mut out);
    let msg = err["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("Read-only file system"), "the cause: {err}");
    assert!(
        msg.contains(&state.display().to_string()),
        "the message names a file under stateDir: {err}"
    );
    assert!(!w.has_pod_rule(&ip2), "the failed ADD left its rule");
    del_ok(&w, &list, &pods[1], None, &mut out);

    // DEL removes the rule and tells the agent, though the record cannot be removed.
    del_ok(&w, &list, &pods[0], Some(&result1), &mut out);
    assert!(!w.has_pod_rule(&ip1), "DEL removed the rule");
    assert_eq!(w.agent.attachment(&pods[0].container.id), None);
    // Without prevResult, only the record names the rules: DEL still finds them.
    del_ok(&w, &list_0_3_1, &pods[2], None, &mut out);
    assert!(
        !w.has_pod_rule(&ip3),
        "DEL without prevResult left the rule"
    );
    assert_eq!(w.agent.attachment(&pods[2].container.id), None);
    // The agent's resync must not bring the deleted pods back from their stale records.
    std::thread::sleep(Duration::from_millis(2500));
    for (pod, ip) in [(&pods[0], &ip1), (&pods[2], &ip3)] {
        assert!(
            !w.has_pod_rule(ip),
            "a resync re-added the rule of a deleted pod from its stale record"
        );
        assert_eq!(
            w.agent.attachment(&pod.container.id),
            None,
            "a resync re-registered a deleted pod from its stale record"
        );
    }

    // Repaired, restarted: the stale record (its rules are gone) is dropped.
    w.agent.kill9();
    mounts.unmount(&state);
    w.agent.start();
    w.assert_nothing_left();
    out.assert_no_panic(&w);
    drop(mounts);
}

/// With `onAgentDown: continue`, a broken state dir costs the pod edgeway's part only, as
/// an absent agent does: the pod starts with its host-CNI result, and edgeway leaves no
/// rule behind (no record could back one).
#[test]
fn continue_still_starts_the_pod_when_the_state_dir_is_broken() {
    let w = World::new();
    let list = w.on_agent_down_conflist("continue");
    let pods: Vec<Pod> = (1..=2).map(|n| w.pod(n)).collect();
    let mut out = Outputs::default();
    let state = w.state_dir();
    create_private_dir(&state);
    let mut mounts = PrivateMounts::enter();
    mounts.tmpfs(&state, 256);
    // Full.
    let filler = fill(&state, 1024);
    let (result, ip) = add_ok(&w, &list, &pods[0], &mut out);
    assert!(!w.has_pod_rule(&ip), "no record backs a rule for {ip}");
    assert_eq!(w.record(&pods[0].container), None);
    del_ok(&w, &list, &pods[0], Some(&result), &mut out);
    std::fs::remove_file(filler).unwrap();
    // Read-only.
    mounts.read_only(&state);
    let (result, ip) = add_ok(&w, &list, &pods[1], &mut out);
    assert!(!w.has_pod_rule(&ip), "no record backs a rule for {ip}");
    del_ok(&w, &list, &pods[1], Some(&result), &mut out);
    out.assert_no_panic(&w);
    drop(mounts);
}

/// A corrupt record (bit rot, a hand edit): the agent counts it on /metrics and names it in
/// its log, leaves it in place, and loses nothing: the other pod keeps everything, and the
/// pod whose record went bad keeps its rule and its registration. DEL of that pod still
/// succeeds and clears the file.
#[test]
fn a_corrupt_record_is_reported_and_nothing_is_lost() {
    let mut w = World::new();
    let list = w.on_agent_down_conflist("continue");
    let pods: Vec<Pod> = (1..=2).map(|n| w.pod(n)).collect();
    let mut out = Outputs::default();
    w.agent.set_resync_interval(1);
    w.agent.start();
    let (result1, ip1) = add_ok(&w, &list, &pods[0], &mut out);
    let (result2, ip2) = add_ok(&w, &list, &pods[1], &mut out);
    w.assert_attached(&pods[1], &ip2);

    let bad = w.record_path(&pods[1].container);
    std::fs::write(&bad, br#"{"containerID": "ewt"#).expect("corrupt the record");
    wait_until("edgeway_corrupt_state_files to count the file", 5, || {
        w.agent.metric("edgeway_corrupt_state_files") == Some(1.0)
    });
    let log = w.agent.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("corrupt") && l.contains(&bad.display().to_string())),
        "the log names the corrupt file {}:\n{log}",
        bad.display()
    );
    // Two more resyncs: nothing is repaired away meanwhile.
    std::thread::sleep(Duration::from_millis(2500));
    w.assert_attached(&pods[0], &ip1);
    assert!(
        w.has_pod_rule(&ip2),
        "the agent removed the rule of the pod whose record is corrupt"
    );
    assert!(
        w.agent.attachment(&pods[1].container.id).is_some(),
        "the agent dropped the registration of the pod whose record is corrupt"
    );
    assert!(bad.exists(), "the corrupt file is left for the operator");
    // A corrupt file does not make the node unready: ADDs work, and an unready agent would
    // make CNI STATUS fail (code 50), which stops every pod start on the node.
    assert_eq!(w.agent.readyz().0, 200, "{:?}", w.agent.readyz().1);

    // A restart knows nothing of that pod but must not remove a rule it cannot account for.
    w.agent.restart();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(w.agent.metric("edgeway_corrupt_state_files"), Some(1.0));
    w.assert_attached(&pods[0], &ip1);
    assert!(
        w.has_pod_rule(&ip2),
        "the restarted agent removed the rule of the pod whose record is corrupt"
    );

    // The runtime deletes the pod: DEL succeeds, and the rule and the file go.
    del_ok(&w, &list, &pods[1], Some(&result2), &mut out);
    assert!(!w.has_pod_rule(&ip2));
    assert!(!bad.exists(), "DEL removed the corrupt record");
    wait_until("edgeway_corrupt_state_files to drop to 0", 5, || {
        w.agent.metric("edgeway_corrupt_state_files") == Some(0.0)
    });
    del_ok(&w, &list, &pods[0], Some(&result1), &mut out);
    w.assert_nothing_left();
    out.assert_no_panic(&w);
}

/// The agent's config with networking: a cluster secret file, loopback listener.
fn networking_config(secret: &Path) -> String {
    format!(
        "segment = \"lan-a\"\nresyncIntervalSecs = 1\n[p2p]\nlisten = [\"/ip4/127.0.0.1/tcp/7333\"]\n\
         clusterSecretFile = \"{}\"\n",
        secret.display()
    )
}

fn write_good_secret(path: &Path) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("write the cluster secret");
    f.write_all(b"dGVzdC1jbHVzdGVyLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm\n")
        .unwrap();
}

/// Asserts the agent exited non-zero, with a message naming `file`, without a panic, and
/// without leaving its socket behind.
fn assert_clean_refusal(w: &World, status: std::process::ExitStatus, file: &Path, words: &[&str]) {
    let log = w.agent.log_text();
    assert!(
        !status.success(),
        "the agent must not run: {status}; log:\n{log}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "a clean exit, not a signal: {status}"
    );
    assert!(!log.contains("panicked"), "the agent panicked:\n{log}");
    // The log gathers every start: the last final message is this one's.
    let line = log
        .lines()
        .rev()
        .find(|l| l.starts_with("edgeway-agent: ") && l.contains(&file.display().to_string()))
        .unwrap_or_else(|| panic!("no final message naming {}:\n{log}", file.display()));
    for word in words {
        assert!(line.contains(word), "{word:?} missing from {line:?}");
    }
    assert!(
        !w.socket().exists(),
        "the agent left its socket {} behind",
        w.socket().display()
    );
}

/// A corrupt identity key: the agent refuses to start with a message naming the file and
/// the fix, and never replaces the key on its own (that would silently change the node's
/// identity). Meanwhile pods follow `onAgentDown`, and nothing on disk is lost. Moving the
/// key away, as the message says, brings the agent back with every registration.
#[test]
fn a_corrupt_identity_key_stops_the_agent_with_a_clear_message() {
    let mut w = World::new();
    let secret = w.socket().with_file_name("cluster-secret");
    write_good_secret(&secret);
    w.agent.set_config(&networking_config(&secret));
    let mut out = Outputs::default();
    let pods: Vec<Pod> = (1..=3).map(|n| w.pod(n)).collect();
    // A pod set up while the agent was down: its record waits on disk.
    let (result1, ip1) = add_ok(
        &w,
        &w.on_agent_down_conflist("continue"),
        &pods[0],
        &mut out,
    );

    let key = w.state_dir().join("identity.key");
    for garbage in [&b""[..], b"\x08\x01\x12\x40short", b"not a key at all\n"] {
        std::fs::write(&key, garbage).unwrap();
        let status = w.agent.start_expecting_exit(Duration::from_secs(15));
        assert_clean_refusal(&w, status, &key, &["corrupt", "move it away"]);
        assert_eq!(
            std::fs::read(&key).unwrap(),
            garbage,
            "the key was replaced"
        );
    }

    // Pods meanwhile follow onAgentDown, and the earlier pod keeps its rule and record.
    let (err, _) = add_fails(
        &w,
        &w.on_agent_down_conflist("fail"),
        &pods[1],
        11,
        &mut out,
    );
    assert!(err["msg"].as_str().is_some_and(|m| !m.is_empty()), "{err}");
    let (result3, ip3) = add_ok(
        &w,
        &w.on_agent_down_conflist("continue"),
        &pods[2],
        &mut out,
    );
    assert!(w.has_pod_rule(&ip1) && w.has_pod_rule(&ip3));
    assert!(w.record(&pods[0].container).is_some());

    std::fs::rename(&key, key.with_extension("key.bad")).unwrap();
    w.agent.start();
    w.assert_attached(&pods[0], &ip1);
    w.assert_attached(&pods[2], &ip3);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key)
        .expect("a new key")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the new identity key's mode");
    let list = w.on_agent_down_conflist("continue");
    del_ok(&w, &list, &pods[0], Some(&result1), &mut out);
    del_ok(&w, &list, &pods[2], Some(&result3), &mut out);
    del_ok(&w, &list, &pods[1], None, &mut out);
    w.assert_nothing_left();
    out.assert_no_panic(&w);
}

/// A cluster secret that is missing, empty, too short, or not a file: the agent refuses to
/// start with a message naming the file, and nothing on disk changes.
#[test]
fn a_bad_cluster_secret_stops_the_agent_with_a_clear_message() {
    let mut w = World::new();
    let mut out = Outputs::default();
    let pod = w.pod(1);
    let (result, ip) = add_ok(&w, &w.on_agent_down_conflist("continue"), &pod, &mut out);
    let secret = w.socket().with_file_name("cluster-secret");
    w.agent.set_config(&networking_config(&secret));

    /// A label, the file's content (`None`: no file), and what the message must say.
    type Case<'a> = (&'a str, Option<&'a [u8]>, &'a [&'a str]);
    let cases: [Case; 4] = [
        ("missing", None, &["cannot read cluster secret"]),
        (
            "empty",
            Some(b""),
            &["shorter than 16 bytes", "head -c 32 /dev/urandom"],
        ),
        ("short", Some(b"tiny-secret\n"), &["shorter than 16 bytes"]),
        (
            "whitespace",
            Some(b" \n\n    \t\n"),
            &["shorter than 16 bytes"],
        ),
    ];
    for (label, content, words) in cases {
        let _ = std::fs::remove_file(&secret);
        if let Some(bytes) = content {
            std::fs::write(&secret, bytes).unwrap();
        }
        let status = w.agent.start_expecting_exit(Duration::from_secs(15));
        assert_clean_refusal(&w, status, &secret, words);
        assert!(
            w.record(&pod.container).is_some(),
            "{label}: the record is kept"
        );
        assert!(w.has_pod_rule(&ip), "{label}: the rule is kept");
    }
    std::fs::remove_file(&secret).unwrap();
    std::fs::create_dir(&secret).unwrap();
    let status = w.agent.start_expecting_exit(Duration::from_secs(15));
    assert_clean_refusal(&w, status, &secret, &["cannot read cluster secret"]);
    std::fs::remove_dir(&secret).unwrap();

    write_good_secret(&secret);
    w.agent.start();
    w.assert_attached(&pod, &ip);
    del_ok(
        &w,
        &w.on_agent_down_conflist("continue"),
        &pod,
        Some(&result),
        &mut out,
    );
    w.assert_nothing_left();
    out.assert_no_panic(&w);
}

/// First start on a full state dir: the identity key cannot be written. The agent stops
/// with a message naming the key, and leaves no partial key or temp file, so the next
/// start (with room) makes a whole one.
#[test]
fn a_full_state_dir_at_first_start_leaves_no_partial_key() {
    let mut w = World::new();
    let secret = w.socket().with_file_name("cluster-secret");
    write_good_secret(&secret);
    w.agent.set_config(&networking_config(&secret));
    let state = w.state_dir();
    create_private_dir(&state);
    let mut mounts = PrivateMounts::enter();
    mounts.tmpfs(&state, 64);
    let filler = fill(&state, 256);

    let key = state.join("identity.key");
    let status = w.agent.start_expecting_exit(Duration::from_secs(15));
    assert_clean_refusal(
        &w,
        status,
        &key,
        &["cannot write identity key", "No space left"],
    );
    let left: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("identity"))
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "partial identity files left behind"
    );

    std::fs::remove_file(filler).unwrap();
    w.agent.start();
    assert!(key.is_file());
    w.assert_nothing_left();
    drop(mounts);
}
