//! Locating the workspace's built binaries and the reference CNI plugins.

use std::path::{Path, PathBuf};

/// Where Debian's `containernetworking-plugins` puts the reference plugins.
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The Cargo workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits inside the workspace")
        .to_path_buf()
}

/// Directories that may hold the built binaries, best first: only `$EDGEWAY_BIN_DIR` when
/// it is set (a benchmark points the debug tests at release binaries this way), else the
/// profile directory of the running test executable (`<target>/<profile>/deps/<test>`),
/// then `$CARGO_TARGET_DIR/debug`, then `<workspace>/target/debug`.
fn candidate_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("EDGEWAY_BIN_DIR") {
        return vec![PathBuf::from(dir)];
    }
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            dirs.push(profile_dir.to_path_buf());
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let target = PathBuf::from(target);
        let target = if target.is_absolute() {
            target
        } else {
            workspace_root().join(target)
        };
        dirs.push(target.join("debug"));
    }
    dirs.push(workspace_root().join("target").join("debug"));
    dirs
}

/// A binary built from this workspace. Panics, naming where it looked, when it is missing.
pub fn workspace_binary(name: &str) -> PathBuf {
    let dirs = candidate_dirs();
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `{name}` binary is not built; looked in {dirs:?}. \
                 Run `cargo build --workspace` before the integration tests."
            )
        })
}

/// The `edgeway` CNI plugin.
pub fn edgeway() -> PathBuf {
    workspace_binary("edgeway")
}

/// The `edgeway-agent` binary.
pub fn edgeway_agent() -> PathBuf {
    workspace_binary("edgeway-agent")
}

/// Panics with a clear message unless the reference plugins the tests use are installed.
pub fn require_reference_plugins() {
    for p in ["bridge", "host-local", "ptp", "portmap"] {
        let path = Path::new(REFERENCE_PLUGIN_DIR).join(p);
        assert!(
            path.is_file(),
            "{} is missing: install Debian's containernetworking-plugins",
            path.display()
        );
    }
}

/// Panics with a clear message unless the tests run as root, which network namespaces need.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("/proc/self/status has an effective Uid");
    assert_eq!(
        uid, "0",
        "the integration tests create network namespaces and must run as root"
    );
}
