//! Installer tests on temp directories; no root needed.

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::conflist::{self, ConfKind};
use super::*;

/// One of the repository's example conflists with its edgeway entry taken out: what the
/// host CNI writes before edgeway is installed.
fn before(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conflist")
        .join(name);
    let list = conflist::parse(ConfKind::Conflist, &fs::read(&path).unwrap()).unwrap();
    let list = conflist::without_entry(&list).expect("the example has an edgeway entry");
    conflist::to_bytes(&list)
}

fn entry() -> Map<String, Value> {
    EntrySettings {
        agent_socket: "/run/edgeway-test/agent.sock".into(),
        state_dir: "/var/lib/edgeway-test".into(),
        table: 7400,
        on_agent_down: OnAgentDown::Continue,
    }
    .to_entry()
    .unwrap()
}

fn read_list(path: &Path) -> Map<String, Value> {
    conflist::parse(ConfKind::Conflist, &fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn types(list: &Map<String, Value>) -> Vec<String> {
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap().to_string())
        .collect()
}

fn edgeway_of(list: &Map<String, Value>) -> Map<String, Value> {
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| conflist::is_edgeway(p))
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

fn no_temp_files(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".edgeway-"))
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

/// Polls `cond` for up to 5 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}");
}

/// The entry count of `path`, if it is a valid conflist right now.
fn count(path: &Path) -> Option<usize> {
    let bytes = fs::read(path).ok()?;
    conflist::parse(ConfKind::Conflist, &bytes)
        .ok()
        .map(|l| conflist::entry_count(&l))
}

/// Patches `name` (from conflist/) in a fresh dir, checks the chain and that every other
/// plugin and key is untouched.
fn patch_example(name: &str, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let original = before(name);
    write(&path, &original, 0o644);
    let out = insert_entry(dir.path(), &entry()).unwrap();
    assert_eq!(out.file, path);
    assert!(out.changed && out.was_missing && out.wrapped_from.is_none());
    let list = read_list(&path);
    assert_eq!(types(&list), expected);
    assert_eq!(Value::Object(edgeway_of(&list)), Value::Object(entry()));
    // Everything else is as it was, key order included.
    let orig = conflist::parse(ConfKind::Conflist, &original).unwrap();
    assert_eq!(
        conflist::to_bytes(&conflist::without_entry(&list).unwrap()),
        conflist::to_bytes(&orig)
    );
    assert_eq!(
        list.keys().collect::<Vec<_>>(),
        orig.keys().collect::<Vec<_>>()
    );
    // A second run changes nothing.
    let ino = fs::metadata(&path).unwrap().ino();
    let again = insert_entry(dir.path(), &entry()).unwrap();
    assert!(!again.changed);
    assert_eq!(fs::metadata(&path).unwrap().ino(), ino);
    no_temp_files(dir.path());
}

#[test]
fn flannel_conflist() {
    patch_example("10-flannel.conflist", &["flannel", "edgeway", "portmap"]);
}

#[test]
fn calico_conflist() {
    patch_example(
        "10-calico.conflist",
        &["calico", "edgeway", "bandwidth", "portmap"],
    );
}

#[test]
fn bridge_spiderpool_conflist() {
    patch_example(
        "10-bridge-spiderpool.conflist",
        &["bridge", "edgeway", "portmap"],
    );
}

#[test]
fn other_examples() {
    patch_example(
        "10-bridge-host-local.conflist",
        &["bridge", "edgeway", "portmap"],
    );
    patch_example(
        "10-ptp-calico-style.conflist",
        &["ptp", "edgeway", "portmap"],
    );
}

#[test]
fn conf_is_wrapped_into_a_conflist() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("10-mynet.conf");
    let conf_json = json!({
        "cniVersion": "1.0.0",
        "name": "mynet",
        "type": "bridge",
        "bridge": "cni0",
        "ipam": {"type": "host-local", "subnet": "10.244.1.0/24"}
    });
    write(&conf, &serde_json::to_vec(&conf_json).unwrap(), 0o640);
    let out = insert_entry(dir.path(), &entry()).unwrap();
    let target = dir.path().join("10-mynet.conflist");
    assert_eq!(out.file, target);
    assert_eq!(out.wrapped_from.as_deref(), Some(conf.as_path()));
    assert!(!conf.exists(), "the .conf is removed");
    assert_eq!(mode(&target), 0o640, "the .conf's mode is kept");
    let list = read_list(&target);
    assert_eq!(list["name"], "mynet");
    assert_eq!(list["cniVersion"], "1.0.0");
    assert_eq!(types(&list), ["bridge", "edgeway"]);
    assert_eq!(
        list["plugins"][0],
        json!({"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.244.1.0/24"}})
    );
    assert!(!insert_entry(dir.path(), &entry()).unwrap().changed);
    no_temp_files(dir.path());
}

#[test]
fn conf_is_not_wrapped_over_someone_elses_conflist() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("10-a.conf");
    let other = dir.path().join("10-a.conflist");
    let conf_bytes = br#"{"name":"a","type":"bridge"}"#;
    let other_bytes = br#"{"name":"b","plugins":[{"type":"ptp"}]}"#;
    write(&conf, conf_bytes, 0o644);
    write(&other, other_bytes, 0o644);
    let err = insert_entry(dir.path(), &entry()).unwrap_err();
    assert!(matches!(err, CniInstallError::WrapTarget { .. }), "{err}");
    assert!(err.to_string().contains("10-a.conflist"), "{err}");
    assert_eq!(fs::read(&conf).unwrap(), conf_bytes);
    assert_eq!(fs::read(&other).unwrap(), other_bytes);
}

#[test]
fn existing_entry_is_updated_never_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("10-bridge.conflist");
    // The repository's example (entry with rulePriority/agentTimeoutMs), plus a stray
    // second entry at the tail, as a naive `jq '.plugins += [...]'` would leave.
    let mut list = read_list(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../conflist/10-bridge-host-local.conflist"),
    );
    list["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "edgeway", "table": 1}));
    write(&path, &conflist::to_bytes(&list), 0o644);
    let out = insert_entry(dir.path(), &entry()).unwrap();
    assert!(out.changed && !out.was_missing);
    let list = read_list(&path);
    assert_eq!(types(&list), ["bridge", "edgeway", "portmap"]);
    assert_eq!(
        Value::Object(edgeway_of(&list)),
        json!({
            "type": "edgeway",
            "agentSocket": "/run/edgeway-test/agent.sock",
            "stateDir": "/var/lib/edgeway-test",
            "table": 7400,
            "rulePriority": 7332,
            "agentTimeoutMs": 1000,
            "onAgentDown": "continue"
        })
    );
    // Once more, with other settings: still one entry.
    let mut e = entry();
    e.insert("onAgentDown".into(), "fail".into());
    insert_entry(dir.path(), &e).unwrap();
    let list = read_list(&path);
    assert_eq!(conflist::entry_count(&list), 1);
    assert_eq!(edgeway_of(&list)["onAgentDown"], "fail");
}

#[test]
fn malformed_file_is_left_untouched_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("10-flannel.conflist");
    let bytes = b"{\n  \"name\": \"cbr0\",\n  \"plugins\": [\n    {\"type\": \"flannel\"\n";
    write(&path, bytes, 0o600);
    let ino = fs::metadata(&path).unwrap().ino();
    let err = insert_entry(dir.path(), &entry()).unwrap_err();
    assert!(matches!(err, CniInstallError::NoPrimary { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("10-flannel.conflist") && msg.contains("not valid JSON"),
        "{msg}"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "byte for byte");
    assert_eq!(fs::metadata(&path).unwrap().ino(), ino);
    assert_eq!(mode(&path), 0o600);
    // Valid JSON that is no network config is no better.
    write(&path, br#"{"name":"cbr0","plugins":[]}"#, 0o600);
    let err = insert_entry(dir.path(), &entry()).unwrap_err();
    assert!(err.to_string().contains("\"plugins\" is empty"), "{err}");
    no_temp_files(dir.path());
}

#[test]
fn malformed_file_is_skipped_for_the_next_valid_one() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("05-broken.conflist");
    write(&bad, b"not json", 0o644);
    let good = dir.path().join("10-flannel.conflist");
    write(&good, &before("10-flannel.conflist"), 0o644);
    let out = insert_entry(dir.path(), &entry()).unwrap();
    assert_eq!(out.file, good);
    assert_eq!(fs::read(&bad).unwrap(), b"not json");
}

#[test]
fn empty_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("README"), "x").unwrap();
    let err = insert_entry(dir.path(), &entry()).unwrap_err();
    assert!(matches!(err, CniInstallError::NoPrimary { .. }), "{err}");
    let err = insert_entry(&dir.path().join("missing"), &entry()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn primary_is_the_lexically_first_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let other = br#"{"name":"x","plugins":[{"type":"bridge"}]}"#;
    // Not candidates: other extensions, a directory, a temp file.
    write(&d.join("00-a.json"), other, 0o644);
    write(&d.join("00-notes.txt"), b"hello", 0o644);
    write(&d.join("00-b.conflist.bak"), other, 0o644);
    fs::create_dir(d.join("01-dir.conflist")).unwrap();
    write(&d.join("20-z.conf"), br#"{"name":"z","type":"ptp"}"#, 0o644);
    write(
        &d.join("10-calico.conflist"),
        &before("10-calico.conflist"),
        0o644,
    );
    write(&d.join("10-Calico.conflist"), b"{", 0o644); // 'C' < 'c', invalid: skipped
    write(&d.join("9-late.conflist"), other, 0o644); // '9' > '1': later
    assert_eq!(find_primary(d).unwrap(), d.join("10-calico.conflist"));
    insert_entry(d, &entry()).unwrap();
    assert_eq!(
        types(&read_list(&d.join("10-calico.conflist")))[1],
        "edgeway"
    );
    for (name, bytes) in [
        ("00-a.json", &other[..]),
        ("00-b.conflist.bak", &other[..]),
        ("9-late.conflist", &other[..]),
        ("10-Calico.conflist", b"{"),
        ("20-z.conf", br#"{"name":"z","type":"ptp"}"#),
    ] {
        assert_eq!(fs::read(d.join(name)).unwrap(), bytes, "{name} untouched");
    }
}

#[test]
fn mode_is_kept_and_the_write_is_a_rename() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("10-flannel.conflist");
    write(&path, &before("10-flannel.conflist"), 0o640);
    let ino = fs::metadata(&path).unwrap().ino();
    let mut held = fs::File::open(&path).unwrap();
    insert_entry(dir.path(), &entry()).unwrap();
    assert_eq!(mode(&path), 0o640);
    assert_ne!(
        fs::metadata(&path).unwrap().ino(),
        ino,
        "replaced by rename"
    );
    // A reader that had the old file open still reads the old, complete content.
    let mut old = vec![];
    held.read_to_end(&mut old).unwrap();
    assert_eq!(old, before("10-flannel.conflist"));
    assert_eq!(
        fs::metadata(&path).unwrap().uid(),
        nix::unistd::getuid().as_raw()
    );
}

#[test]
fn uninstall_removes_only_our_entry_and_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, bin) = (dir.path().join("net.d"), dir.path().join("bin"));
    fs::create_dir_all(&conf).unwrap();
    fs::create_dir_all(&bin).unwrap();
    let primary = conf.join("10-calico.conflist");
    let original = before("10-calico.conflist");
    write(&primary, &original, 0o640);
    let unrelated = conf.join("99-loopback.conf");
    write(
        &unrelated,
        br#"{"cniVersion":"0.3.1","name":"lo","type":"loopback"}"#,
        0o644,
    );
    fs::write(bin.join("portmap"), b"portmap").unwrap();
    let src = dir.path().join("edgeway");
    fs::write(&src, b"edgeway v1").unwrap();
    let opts = InstallOptions {
        bin_dir: bin.clone(),
        conf_dir: conf.clone(),
        plugin_binary: src,
        entry: entry(),
    };
    install(&opts).unwrap();
    assert!(bin.join("edgeway").exists());

    // --upgrade: nothing moves.
    let report = uninstall(&conf, &bin, true).unwrap();
    assert_eq!(report, UninstallReport::default());
    assert!(bin.join("edgeway").exists());
    assert_eq!(count(&primary), Some(1));

    let report = uninstall(&conf, &bin, false).unwrap();
    assert_eq!(report.entries_removed_from, std::slice::from_ref(&primary));
    assert!(report.binary_removed);
    assert!(!bin.join("edgeway").exists());
    assert_eq!(fs::read(bin.join("portmap")).unwrap(), b"portmap");
    assert_eq!(
        fs::read(&primary).unwrap(),
        original,
        "back to the host CNI's own content"
    );
    assert_eq!(mode(&primary), 0o640);
    assert_eq!(
        fs::read(&unrelated).unwrap(),
        br#"{"cniVersion":"0.3.1","name":"lo","type":"loopback"}"#
    );
    // Again: nothing to do, no error.
    assert_eq!(
        uninstall(&conf, &bin, false).unwrap(),
        UninstallReport::default()
    );
    no_temp_files(&conf);
    no_temp_files(&bin);
}

#[test]
fn binary_is_installed_by_rename() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("opt/cni/bin");
    let (v1, v2) = (dir.path().join("v1"), dir.path().join("v2"));
    fs::write(&v1, b"edgeway v1").unwrap();
    fs::write(&v2, b"edgeway v2, longer").unwrap();
    let out = install_binary(&v1, &bin).unwrap();
    let dst = bin.join("edgeway");
    assert_eq!(
        out,
        BinaryOutcome {
            path: dst.clone(),
            changed: true
        }
    );
    assert_eq!(mode(&dst), 0o755);
    let ino = fs::metadata(&dst).unwrap().ino();
    // Same content: no copy.
    assert!(!install_binary(&v1, &bin).unwrap().changed);
    assert_eq!(fs::metadata(&dst).unwrap().ino(), ino);
    // The old binary is "busy": held open, as by a running plugin.
    let mut busy = fs::File::open(&dst).unwrap();
    assert!(install_binary(&v2, &bin).unwrap().changed);
    assert_ne!(
        fs::metadata(&dst).unwrap().ino(),
        ino,
        "a rename, not an in-place write"
    );
    assert_eq!(fs::read(&dst).unwrap(), b"edgeway v2, longer");
    let mut old = vec![];
    busy.read_to_end(&mut old).unwrap();
    assert_eq!(old, b"edgeway v1");
    assert_eq!(mode(&dst), 0o755);
    no_temp_files(&bin);
    let err = install_binary(&dir.path().join("nope"), &bin).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn binary_is_replaced_while_it_runs() {
    let (sleep, truebin) = (Path::new("/bin/sleep"), Path::new("/bin/true"));
    if !sleep.exists() || !truebin.exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    install_binary(sleep, dir.path()).unwrap();
    let dst = dir.path().join("edgeway");
    let mut child = match std::process::Command::new(&dst).arg("30").spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot run from the temp dir ({e}); skipping");
            return;
        }
    };
    // Writing into the running file would fail with ETXTBSY; the rename does not.
    let busy = fs::OpenOptions::new().write(true).open(&dst);
    let out = install_binary(truebin, dir.path());
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = busy {
        assert_eq!(e.raw_os_error(), Some(nix::libc::ETXTBSY), "{e}");
    }
    assert!(out.unwrap().changed);
    assert!(fsutil::same_contents(truebin, &dst).unwrap());
}

fn fast() -> WatchOptions {
    WatchOptions {
        debounce: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        ..WatchOptions::default()
    }
}

#[test]
fn rewrite_while_watching_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("10-flannel.conflist");
    let original = dir.path().join("flannel-original.json");
    fs::write(&original, before("10-flannel.conflist")).unwrap();
    fs::copy(&original, &path).unwrap();
    let out = insert_entry(dir.path(), &entry()).unwrap();
    let watcher = spawn_watcher(dir.path(), out.entry, WatchOptions::default()).unwrap();
    // flannel's init container: `cp -f` over the patched file.
    fs::copy(&original, &path).unwrap();
    eventually("the entry is back after cp -f", || count(&path) == Some(1));
    assert_eq!(types(&read_list(&path)), ["flannel", "edgeway", "portmap"]);
    // Calico-style: a new file renamed into place, with the entry at the tail.
    let mut list = conflist::without_entry(&read_list(&path)).unwrap();
    list["plugins"]
        .as_array_mut()
        .unwrap()
        .push(Value::Object(entry()));
    let tmp = dir.path().join("calico.tmp");
    fs::write(&tmp, conflist::to_bytes(&list)).unwrap();
    fs::rename(&tmp, &path).unwrap();
    eventually("the entry moves back after the IP plugin", || {
        fs::read(&path)
            .ok()
            .and_then(|b| conflist::parse(ConfKind::Conflist, &b).ok())
            .is_some_and(|l| types(&l) == ["flannel", "edgeway", "portmap"])
    });
    eventually("both rewrites are counted as reverts", || {
        watcher
            .stats()
            .reverts
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    });
    let t = Instant::now();
    watcher.stop();
    assert!(t.elapsed() < Duration::from_secs(2), "stops promptly");
    no_temp_files(dir.path());
}

#[test]
fn rewritten_conf_is_wrapped_again_while_watching() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("10-bridge.conf");
    let conf_bytes =
        br#"{"cniVersion":"0.3.1","name":"br","type":"bridge","ipam":{"type":"host-local"}}"#;
    write(&conf, conf_bytes, 0o644);
    let out = insert_entry(dir.path(), &entry()).unwrap();
    let list_path = dir.path().join("10-bridge.conflist");
    assert_eq!(out.file, list_path);
    let _watcher = spawn_watcher(dir.path(), out.entry, fast()).unwrap();
    // The host CNI writes its .conf again: it sorts first and would win.
    write(&conf, conf_bytes, 0o644);
    eventually("the .conf is wrapped again", || {
        !conf.exists() && count(&list_path) == Some(1)
    });
}

#[test]
fn half_written_primary_does_not_make_the_next_file_primary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("10-flannel.conflist");
    let later = dir.path().join("99-loopback.conf");
    let later_bytes = br#"{"cniVersion":"0.3.1","name":"lo","type":"loopback"}"#;
    write(&path, &before("10-flannel.conflist"), 0o644);
    write(&later, later_bytes, 0o644);
    let out = insert_entry(dir.path(), &entry()).unwrap();
    let _watcher = spawn_watcher(dir.path(), out.entry, fast()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // `cp -f` caught between its truncate and its write.
    fs::write(&path, b"{\"name\": \"cbr0\", \"plu").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        fs::read(&later).unwrap(),
        later_bytes,
        "the next file is not patched meanwhile"
    );
    assert!(!dir.path().join("99-loopback.conflist").exists());
    fs::write(&path, before("10-flannel.conflist")).unwrap();
    eventually("the entry is back", || count(&path) == Some(1));
    assert_eq!(fs::read(&later).unwrap(), later_bytes);
}

#[test]
fn fifty_rewrites_end_with_exactly_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("10-calico.conflist");
    let original = before("10-calico.conflist");
    write(&path, &original, 0o640);
    let out = insert_entry(dir.path(), &entry()).unwrap();
    let opts = WatchOptions {
        revert_warn_after: 3,
        ..fast()
    };
    let watcher = spawn_watcher(dir.path(), out.entry, opts).unwrap();
    for i in 0..50 {
        fs::write(&path, &original).unwrap();
        std::thread::sleep(Duration::from_millis(10 + (i % 4) * 15));
        let bytes = fs::read(&path).unwrap();
        let list = conflist::parse(ConfKind::Conflist, &bytes)
            .unwrap_or_else(|e| panic!("rewrite {i}: invalid file: {e}"));
        assert!(
            conflist::entry_count(&list) <= 1,
            "rewrite {i}: duplicated entry"
        );
    }
    eventually("the entry is back", || count(&path) == Some(1));
    std::thread::sleep(Duration::from_millis(300));
    let list = read_list(&path);
    assert_eq!(types(&list), ["calico", "edgeway", "bandwidth", "portmap"]);
    assert_eq!(mode(&path), 0o640);
    assert!(
        watcher
            .stats()
            .revert_warnings
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1,
        "so many reverts are warned about"
    );
    watcher.stop();
    no_temp_files(dir.path());
}

#[test]
fn repeated_reverts_are_warned_about_once_per_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("10-flannel.conflist");
    let original = before("10-flannel.conflist");
    write(&path, &original, 0o644);
    let out = insert_entry(dir.path(), &entry()).unwrap();
    let opts = WatchOptions {
        revert_warn_after: 2,
        ..fast()
    };
    let watcher = spawn_watcher(dir.path(), out.entry, opts).unwrap();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    for i in 1..=5 {
        fs::write(&path, &original).unwrap();
        eventually("the entry is back", || count(&path) == Some(1));
        eventually("the revert is counted", || {
            load(&watcher.stats().reverts) >= i
        });
        let warned = load(&watcher.stats().revert_warnings);
        assert_eq!(warned, u64::from(i > 2), "after {i} reverts");
    }
}

#[test]
fn entry_settings_come_from_the_agent_config() {
    let config = crate::config::Config::default();
    let e = EntrySettings::from_config(&config, OnAgentDown::Fail)
        .to_entry()
        .unwrap();
    assert_eq!(
        Value::Object(e),
        json!({
            "type": "edgeway",
            "agentSocket": config.api.socket.to_str().unwrap(),
            "stateDir": config.state_dir.to_str().unwrap(),
            "table": config.tunnel.table,
            "onAgentDown": "fail"
        })
    );
    let opts = InstallOptions::from_config(
        &config,
        "/b".into(),
        "/c".into(),
        None,
        OnAgentDown::Continue,
    )
    .unwrap();
    let exe_dir: PathBuf = std::env::current_exe().unwrap().parent().unwrap().into();
    assert_eq!(opts.plugin_binary, exe_dir.join("edgeway"));
}

#[test]
fn watcher_inserts_once_the_host_cni_writes_its_config() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        insert_entry(dir.path(), &entry()),
        Err(CniInstallError::NoPrimary { .. })
    ));
    let _watcher = spawn_watcher(dir.path(), entry(), fast()).unwrap();
    let path = dir.path().join("10-flannel.conflist");
    // flannel's init container, writing its file for the first time.
    write(&path, &before("10-flannel.conflist"), 0o644);
    eventually("the entry goes in", || count(&path) == Some(1));
    assert_eq!(types(&read_list(&path)), ["flannel", "edgeway", "portmap"]);
}
