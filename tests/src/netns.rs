//! Named network namespaces (`ip netns add`), deleted when the guard drops.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::run_ok;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name prefix unique to this process and call: `ewt<pid>x<n>`. Every namespace, bridge
/// and directory of one test world carries it, so parallel tests and parallel runs never meet.
pub fn unique_prefix() -> (String, u32) {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (format!("ewt{}x{n}", std::process::id()), n)
}

/// A network namespace created by the test. Dropping it runs `ip netns delete`, which also
/// removes every interface and rule inside it.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// `ip netns add <name>` and brings `lo` up.
    pub fn create(name: &str) -> NetNs {
        run_ok(Command::new("ip").args(["netns", "add", name]));
        let ns = NetNs {
            name: name.to_string(),
        };
        run_ok(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]));
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path runtimes pass as `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `ip netns exec <name> <program>`: `ip` execs the program in place, so the child's PID
    /// is the program's own.
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `ip -n <name> <args...>`, checked.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run_ok(Command::new("ip").args(["-n", &self.name]).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let deleted = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
        match deleted {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns delete {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("warning: ip netns delete {}: {e}", self.name),
        }
    }
}

/// The PID in a name this harness made (`ewt<pid>x<n>-...`), or `None` for any other name.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("ewt")?;
    let (pid, rest) = rest.split_once('x')?;
    let (n, _) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Whether a name belongs to an earlier test process that is gone, so nothing can clean
/// it up any more.
pub fn is_stale(name: &str) -> bool {
    owner_pid(name).is_some_and(|pid| {
        pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
}

/// Deletes the namespaces of earlier test processes that died without running destructors
/// (Ctrl-C, SIGKILL). Namespaces of live processes are never touched.
pub fn sweep_stale() {
    for name in list_with_prefix("ewt").into_iter().filter(|n| is_stale(n)) {
        eprintln!("deleting namespace {name} left by a dead test process");
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
    }
}

/// Names of every namespace whose name starts with `prefix`.
pub fn list_with_prefix(prefix: &str) -> Vec<String> {
    let out = run_ok(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_harness_names_have_an_owner() {
        assert_eq!(owner_pid("ewt123x4-node"), Some(123));
        assert_eq!(owner_pid("ewt123x4-p17"), Some(123));
        for other in [
            "ewt123x4",
            "ewtx4-node",
            "ewt12ax4-node",
            "cni-1234",
            "ewt123-node",
        ] {
            assert_eq!(owner_pid(other), None, "{other}");
        }
        assert!(!is_stale(&format!("ewt{}x0-node", std::process::id())));
    }
}
