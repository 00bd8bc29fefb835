//! `edgeway-agent run` as a child process inside the node namespace.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http;
use crate::netns::NetNs;

/// How long an agent may take to answer 200 on /readyz after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// An agent process. Not running until [`Agent::start`]; killed (SIGKILL, by PID) on drop.
pub struct Agent {
    node_ns: String,
    binary: PathBuf,
    state_dir: PathBuf,
    socket: PathBuf,
    node_name: String,
    log: PathBuf,
    /// `--config` file, when a test needs non-default agent settings.
    config: Option<PathBuf>,
    child: Option<Child>,
}

impl Agent {
    pub fn new(
        node: &NetNs,
        binary: PathBuf,
        state_dir: &Path,
        socket: &Path,
        node_name: &str,
        log: &Path,
    ) -> Agent {
        Agent {
            node_ns: node.name().to_string(),
            binary,
            state_dir: state_dir.to_path_buf(),
            socket: socket.to_path_buf(),
            node_name: node_name.to_string(),
            log: log.to_path_buf(),
            config: None,
            child: None,
        }
    }

    /// Makes the agent resync its registry and pending-DEL queue with the disk every
    /// `secs` seconds (default 10), through a config file next to its log. Takes effect at
    /// the next start.
    pub fn set_resync_interval(&mut self, secs: u64) {
        let path = self.log.with_file_name("agent.toml");
        std::fs::write(&path, format!("resyncIntervalSecs = {secs}\n"))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        self.config = Some(path);
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The agent's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the agent and waits until /readyz answers 200.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the agent is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let log_err = log.try_clone().expect("clone the log file handle");
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.node_ns]).arg(&self.binary);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("run")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--node-name")
            .arg(&self.node_name)
            .env_remove("EDGEWAY_CONFIG")
            .env("EDGEWAY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // If the test process dies without running destructors (Ctrl-C), the kernel kills
        // the agent too. `ip netns exec` execs the agent in place, so the setting carries over.
        // The signal follows the spawning thread, which is the test's own and outlives it.
        // SAFETY: between fork and exec this only calls prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "edgeway-agent exited with {status} before it was ready; log:\n{}",
                    self.log_text()
                );
            }
            match http::get(&self.socket, "/readyz") {
                Ok(r) if r.status == 200 => return,
                Ok(r) => last = format!("{}: {}", r.status, String::from_utf8_lossy(&r.body)),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "edgeway-agent not ready within {READY_TIMEOUT:?} (last /readyz: {last}); log:\n{}",
            self.log_text()
        );
    }

    /// kill -9 by PID, then reaps the process. The socket file stays behind, as after a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process dies of SIGKILL too; SIGCONT is harmless otherwise.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) by PID: a hung agent that keeps its socket.
    pub fn freeze(&self, frozen: bool) {
        use nix::sys::signal::{kill, Signal};
        let pid = self.pid().expect("the agent runs");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("PIDs fit in i32"));
        let sig = if frozen {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(pid, sig).unwrap_or_else(|e| panic!("kill -{sig} {pid}: {e}"));
    }

    /// kill -9, then start again and wait for readiness.
    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }

    /// `GET /v1/attachments`.
    pub fn attachments(&self) -> Vec<Value> {
        let r = http::get(&self.socket, "/v1/attachments").unwrap_or_else(|e| {
            panic!(
                "GET /v1/attachments on {}: {e}; log:\n{}",
                self.socket.display(),
                self.log_text()
            )
        });
        assert_eq!(
            r.status,
            200,
            "GET /v1/attachments: {}",
            String::from_utf8_lossy(&r.body)
        );
        match r.json() {
            Value::Array(list) => list,
            other => panic!("GET /v1/attachments is not a list: {other}"),
        }
    }

    /// The registered attachment of this container, if any.
    pub fn attachment(&self, container_id: &str) -> Option<Value> {
        self.attachments()
            .into_iter()
            .find(|a| a["containerID"] == container_id)
    }

    /// The agent's log so far, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}
