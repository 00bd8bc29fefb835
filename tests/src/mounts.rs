//! Mounts for fault tests (a full or a read-only `stateDir`), made in a private mount
//! namespace of the calling thread alone.
//!
//! [`PrivateMounts::enter`] moves the current thread (not the process: it unshares its own
//! `fs` state first) into a new mount namespace whose mounts are all private, so nothing
//! mounted there is ever seen by the host or by other tests. Processes the thread starts
//! afterwards (the agent, the plugins through `ip netns exec`) inherit that namespace and see
//! the mounts; processes started before do not. Dropping the guard lazily unmounts what it
//! mounted and puts the thread back into its original namespace. If the test process dies
//! without running destructors, the namespace dies with the last process in it, and the
//! kernel drops its mounts.
//!
//! Create the world's namespaces (node and pods) before entering: `ip netns add` bind-mounts
//! the namespace file, and such a mount made inside would be invisible outside.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sched::{setns, unshare, CloneFlags};

use crate::run_ok;

pub struct PrivateMounts {
    original: File,
    cwd: Option<PathBuf>,
    mounted: Vec<PathBuf>,
}

impl PrivateMounts {
    /// Enters a fresh mount namespace, private from `/` down, on this thread only.
    pub fn enter() -> PrivateMounts {
        let original =
            File::open("/proc/thread-self/ns/mnt").expect("open this thread's mount namespace");
        let cwd = std::env::current_dir().ok();
        // CLONE_FS first: the thread stops sharing root and cwd with the other threads, which
        // CLONE_NEWNS needs, and which keeps the other threads in the host's namespace.
        unshare(CloneFlags::CLONE_FS).expect("unshare(CLONE_FS)");
        unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
        let guard = PrivateMounts {
            original,
            cwd,
            mounted: Vec::new(),
        };
        // Without this the new namespace's mounts stay peers of the host's, and a mount made
        // here would propagate out.
        run_ok(Command::new("mount").args(["--make-rprivate", "/"]));
        guard
    }

    /// Mounts a tmpfs of `size_kib` KiB, mode 0700, on the existing directory `dir`.
    pub fn tmpfs(&mut self, dir: &Path, size_kib: u32) {
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size_kib}k,mode=0700"))
                .arg("edgeway-test-tmpfs")
                .arg(dir),
        );
        self.mounted.push(dir.to_path_buf());
    }

    /// Makes `dir` read-only: a bind mount of itself, remounted read-only.
    pub fn read_only(&mut self, dir: &Path) {
        run_ok(Command::new("mount").arg("--bind").arg(dir).arg(dir));
        self.mounted.push(dir.to_path_buf());
        run_ok(
            Command::new("mount")
                .args(["-o", "remount,bind,ro"])
                .arg(dir),
        );
    }

    /// Unmounts the last mount made on `dir`.
    pub fn unmount(&mut self, dir: &Path) {
        let at = self
            .mounted
            .iter()
            .rposition(|d| d == dir)
            .unwrap_or_else(|| panic!("nothing mounted on {}", dir.display()));
        self.mounted.remove(at);
        run_ok(Command::new("umount").arg(dir));
    }
}

impl Drop for PrivateMounts {
    fn drop(&mut self) {
        for dir in self.mounted.drain(..).rev() {
            // Lazy: an agent still running here may hold files open under it.
            match Command::new("umount").arg("-l").arg(&dir).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "warning: umount -l {}: {}",
                    dir.display(),
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => eprintln!("warning: umount -l {}: {e}", dir.display()),
            }
        }
        if let Err(e) = setns(&self.original, CloneFlags::CLONE_NEWNS) {
            eprintln!("warning: cannot return to the original mount namespace: {e}");
        }
        // setns(2) into a mount namespace moves the thread's cwd to its root.
        if let Some(cwd) = &self.cwd {
            let _ = std::env::set_current_dir(cwd);
        }
    }
}
