//! A small harness for edgeway's integration tests. It drives the real reference CNI
//! plugins (`/usr/lib/cni`) and the built `edgeway` plugin through the example conflists,
//! with `edgeway-agent` running, all inside network namespaces the test creates.
//!
//! - [`bins`]: where the built binaries and the reference plugins are;
//! - [`netns`]: a network namespace that is deleted on drop, failure included;
//! - [`chain`]: a minimal libcni-like runner for conflists;
//! - [`agent`]: `edgeway-agent` as a child process, with kill -9 and restart;
//! - [`http`]: GET over the agent's unix socket;
//! - [`mounts`]: a tmpfs or a read-only bind mount in a private mount namespace of one thread;
//! - [`rules`]: `ip -j rule show` in a namespace, parsed;
//! - [`world`]: one simulated node (namespace, agent, state and IPAM dirs, conflists, pods).
//!
//! Needs root (CAP_NET_ADMIN) and Debian's `containernetworking-plugins`. Nothing is ever
//! added to the root namespace.

pub mod agent;
pub mod bins;
pub mod chain;
pub mod http;
pub mod mounts;
pub mod netns;
pub mod rules;
pub mod world;

use std::process::{Command, Output};

/// Runs a setup command and panics with its stderr if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
