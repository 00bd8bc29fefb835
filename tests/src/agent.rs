//! `edgeway-agent run` as a child process inside the node namespace.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
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
    /// `EDGEWAY_LOG`: tracing's env-filter syntax.
    log_level: String,
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
            log_level: "info".into(),
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

    /// Replaces the agent's config file (TOML, next to its log) with `toml`. Takes effect at
    /// the next start; `--state-dir`, `--socket` and `--node-name` still override it.
    pub fn set_config(&mut self, toml: &str) {
        let path = self.log.with_file_name("agent.toml");
        std::fs::write(&path, toml)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        self.config = Some(path);
    }

    /// The log filter (`EDGEWAY_LOG`) for the next start, `info` by default.
    pub fn set_log_level(&mut self, filter: &str) {
        self.log_level = filter.to_string();
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Where the agent's stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
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
        self.spawn();
        self.wait_ready();
    }

    /// Starts the agent and waits until /readyz answers at all (200 or 503): for an agent
    /// that is expected to run but report a problem.
    pub fn start_unready(&mut self) -> http::Response {
        self.spawn();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.assert_still_running("answered /readyz");
            if let Ok(r) = http::get(&self.socket, "/readyz") {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "edgeway-agent did not answer /readyz within {READY_TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the agent and waits, at most `timeout`, for it to exit: for an agent that is
    /// expected to refuse to run. Panics, after killing it, if it is still running then.
    pub fn start_expecting_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.spawn();
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("just spawned");
            if let Some(status) = child.try_wait().expect("wait for the agent") {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!(
                    "edgeway-agent still runs after {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_still_running(&mut self, before: &str) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            self.child = None;
            panic!(
                "edgeway-agent exited with {status} before it {before}; log:\n{}",
                self.log_text()
            );
        }
    }

    /// Starts the agent without waiting for anything.
    pub fn spawn(&mut self) {
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
            .env("EDGEWAY_LOG", &self.log_level)
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
    }

    /// Waits until /readyz answers 200; panics if the agent exits first or takes too long.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            self.assert_still_running("was ready");
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

    /// `GET /readyz`: the status code and the body (`{"ready": .., "problems": [..]}`).
    pub fn readyz(&self) -> (u16, Value) {
        let r = http::get(&self.socket, "/readyz").unwrap_or_else(|e| {
            panic!(
                "GET /readyz on {}: {e}; log:\n{}",
                self.socket.display(),
                self.log_text()
            )
        });
        (r.status, r.json())
    }

    /// `GET /metrics`, as text.
    pub fn metrics(&self) -> String {
        let r = http::get(&self.socket, "/metrics")
            .unwrap_or_else(|e| panic!("GET /metrics on {}: {e}", self.socket.display()));
        assert_eq!(r.status, 200, "GET /metrics");
        String::from_utf8_lossy(&r.body).into_owned()
    }

    /// The value of the sample named exactly `name` (labels included, if any) on /metrics.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics().lines().find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse().ok()).flatten()
        })
    }

    /// The registered attachment of this container, if any.
    pub fn attachment(&self, container_id: &str) -> Option<Value> {
        self.attachments()
            .into_iter()
            .find(|a| a["containerID"] == container_id)
    }

    /// The sum of the samples whose series (name and labels, as printed) starts with
    /// `series`, e.g. `edgeway_api_requests_total{endpoint="register",code="200"}` or
    /// `edgeway_recovery_actions_total`; 0 when there is none.
    pub fn metric_sum(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(series))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
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
