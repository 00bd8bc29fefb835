//! A minimal libcni-like runner. It executes plugins as child processes inside the node
//! namespace (`ip netns exec <node> <plugin>`), with the CNI_* environment, and runs conflists
//! the way libcni does:
//! - ADD: each plugin in order, with `name`, `cniVersion` and the previous plugin's output as
//!   `prevResult` injected into its config; the first failure stops the chain;
//! - DEL: each plugin in reverse order, with the cached result as `prevResult` only when the
//!   list's version is 0.4.0 or later; the first failure stops the chain;
//! - CHECK: each plugin in order, with the cached result as `prevResult`.
//!
//! Every run records how long the plugin took, from spawn to exit. By default plugins start
//! through `ip netns exec`; [`Runner::direct`] enters the namespace with setns(2) in the
//! child instead, as a runtime that runs plugins in the host namespace does, so the timing
//! holds the plugin alone.

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::netns::NetNs;

/// The CNI_* variables a runtime sets, removed from the inherited environment first.
const CNI_VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

/// One container attachment, as a runtime describes it to plugins.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    /// `CNI_NETNS`; empty on containerd's second DEL.
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` after the leading `IgnoreUnknown=1;` (the reference plugins reject
    /// unknown args without it), e.g. `K8S_POD_NAMESPACE=default;K8S_POD_NAME=web`.
    pub args: String,
}

impl Container {
    /// The `CNI_ARGS` value the runner sends.
    pub fn cni_args(&self) -> String {
        if self.args.is_empty() {
            "IgnoreUnknown=1".to_string()
        } else {
            format!("IgnoreUnknown=1;{}", self.args)
        }
    }

    /// The same container as containerd's second DEL sees it: no netns.
    pub fn without_netns(&self) -> Container {
        Container {
            netns: String::new(),
            ..self.clone()
        }
    }
}

/// What one plugin invocation did.
#[derive(Debug, Clone)]
pub struct PluginRun {
    /// The plugin's `type`.
    pub plugin: String,
    pub command: String,
    /// The config it read on stdin (`Value::Null` when stdin was not JSON).
    pub stdin: Value,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// From spawning the plugin to its exit (stdin written, stdout and stderr read).
    pub elapsed: Duration,
}

impl PluginRun {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout as JSON; panics with the raw output if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "{} {} printed non-JSON stdout ({e}): {:?}; stderr: {}",
                self.plugin,
                self.command,
                String::from_utf8_lossy(&self.stdout),
                self.stderr
            )
        })
    }

    /// The CNI error code printed on stdout, for a failed call.
    pub fn error_code(&self) -> u64 {
        let v = self.json();
        v.get("code").and_then(Value::as_u64).unwrap_or_else(|| {
            panic!(
                "{} {}: stdout has no numeric `code`: {v}",
                self.plugin, self.command
            )
        })
    }

    /// Panics with everything the plugin said unless it exited 0.
    pub fn expect_success(&self) -> &Self {
        assert!(
            self.success(),
            "{} {} failed ({}): stdout {} stderr {}",
            self.plugin,
            self.command,
            self.status,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
        self
    }
}

/// A chain that stopped at a failing plugin; `runs` ends with the failed call.
#[derive(Debug)]
pub struct ChainFailure {
    pub runs: Vec<PluginRun>,
}

impl ChainFailure {
    pub fn failed(&self) -> &PluginRun {
        self.runs.last().expect("a failure holds the failed run")
    }
}

impl std::fmt::Display for ChainFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.failed();
        write!(
            f,
            "{} {} failed ({}): stdout {} stderr {}",
            r.plugin,
            r.command,
            r.status,
            String::from_utf8_lossy(&r.stdout),
            r.stderr
        )
    }
}

/// The runs of a successful chain, in execution order.
#[derive(Debug)]
pub struct ChainRuns {
    pub runs: Vec<PluginRun>,
}

impl ChainRuns {
    /// The run of the plugin of this type; panics if it did not run.
    pub fn of(&self, plugin: &str) -> &PluginRun {
        self.runs
            .iter()
            .find(|r| r.plugin == plugin)
            .unwrap_or_else(|| panic!("{plugin} did not run in this chain"))
    }

    /// The chain's result: the last plugin's output (ADD only).
    pub fn result(&self) -> Value {
        self.runs.last().expect("the chain ran a plugin").json()
    }
}

/// Runs plugins inside one node namespace, finding them in `CNI_PATH`.
#[derive(Debug, Clone)]
pub struct Runner {
    node_ns: String,
    cni_path: Vec<PathBuf>,
    /// Enter the namespace with setns(2) in the child rather than through `ip netns exec`.
    direct: bool,
}

impl Runner {
    pub fn new(node: &NetNs, cni_path: Vec<PathBuf>) -> Runner {
        Runner {
            node_ns: node.name().to_string(),
            cni_path,
            direct: false,
        }
    }

    /// The same runner, but each plugin is spawned directly and moved into the node
    /// namespace by setns(2) between fork and exec, without `ip netns exec` (about 1 ms and
    /// a mount namespace per call), so [`PluginRun::elapsed`] is the plugin's own time. If
    /// the namespace cannot be entered the spawn fails: a plugin never runs elsewhere.
    pub fn direct(&self) -> Runner {
        Runner {
            direct: true,
            ..self.clone()
        }
    }

    /// `CNI_PATH` as the plugins see it.
    pub fn cni_path(&self) -> String {
        self.cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The plugin binary for `type`, found in `CNI_PATH` as libcni's FindInPath does.
    pub fn find(&self, plugin: &str) -> PathBuf {
        self.cni_path
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("plugin {plugin} not found in {}", self.cni_path()))
    }

    /// Runs `plugin` with exactly `env` (plus `CNI_PATH`) and `stdin`: the building block of
    /// the chain, and direct access for bad-input tests.
    pub fn exec_raw(&self, plugin: &str, env: &[(&str, &str)], stdin: &[u8]) -> PluginRun {
        let path = self.find(plugin);
        // Held open until the child has been spawned; O_CLOEXEC, so the plugin never sees it.
        let mut netns_file = None;
        let mut cmd = if self.direct {
            let ns_path = Path::new("/var/run/netns").join(&self.node_ns);
            let file = std::fs::File::open(&ns_path)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", ns_path.display()));
            let fd = file.as_raw_fd();
            netns_file = Some(file);
            let mut cmd = std::process::Command::new(&path);
            // SAFETY: between fork and exec this only calls setns(2), which is
            // async-signal-safe; the fd stays open in the parent until spawn returns.
            unsafe {
                cmd.pre_exec(move || {
                    let ns = BorrowedFd::borrow_raw(fd);
                    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)
                });
            }
            cmd
        } else {
            let mut cmd = std::process::Command::new("ip");
            cmd.args(["netns", "exec", &self.node_ns]).arg(&path);
            cmd
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for v in CNI_VARS {
            cmd.env_remove(v);
        }
        cmd.env("CNI_PATH", self.cni_path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        drop(netns_file);
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = stdin.to_vec();
        // A separate writer: a plugin may exit before reading everything (oversized input).
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for {}: {e}", path.display()));
        let elapsed = started.elapsed();
        let _ = writer.join();
        let command = env
            .iter()
            .find(|(k, _)| *k == "CNI_COMMAND")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        PluginRun {
            plugin: plugin.to_string(),
            command,
            stdin: serde_json::from_slice(stdin).unwrap_or(Value::Null),
            status: out.status,
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed,
        }
    }

    /// Runs one plugin config (its `type` names the binary) for a container.
    pub fn exec(&self, command: &str, conf: &Value, c: &Container) -> PluginRun {
        let plugin = conf["type"]
            .as_str()
            .unwrap_or_else(|| panic!("plugin config without a type: {conf}"));
        let args = c.cni_args();
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", c.id.as_str()),
            ("CNI_NETNS", c.netns.as_str()),
            ("CNI_IFNAME", c.ifname.as_str()),
            ("CNI_ARGS", args.as_str()),
        ];
        self.exec_raw(plugin, &env, conf.to_string().as_bytes())
    }

    /// Runs a command that takes no container (STATUS, GC) on one plugin config.
    pub fn exec_network(&self, command: &str, conf: &Value) -> PluginRun {
        let plugin = conf["type"]
            .as_str()
            .unwrap_or_else(|| panic!("plugin config without a type: {conf}"));
        self.exec_raw(
            plugin,
            &[("CNI_COMMAND", command)],
            conf.to_string().as_bytes(),
        )
    }

    /// ADD through the whole list.
    pub fn add(&self, list: &Value, c: &Container) -> Result<ChainRuns, ChainFailure> {
        let mut runs: Vec<PluginRun> = Vec::new();
        let mut prev: Option<Value> = None;
        for plugin in plugins(list) {
            let run = self.exec("ADD", &plugin_config(list, plugin, prev.as_ref()), c);
            let ok = run.success();
            if ok {
                prev = Some(run.json());
            }
            runs.push(run);
            if !ok {
                return Err(ChainFailure { runs });
            }
        }
        Ok(ChainRuns { runs })
    }

    /// DEL through the list in reverse. `cached` is the ADD result a runtime kept; like
    /// libcni, it is sent as `prevResult` only for lists at 0.4.0 or later.
    pub fn del(
        &self,
        list: &Value,
        c: &Container,
        cached: Option<&Value>,
    ) -> Result<ChainRuns, ChainFailure> {
        let prev = cached.filter(|_| version_at_least_0_4(list));
        self.run_each("DEL", list, c, prev, true)
    }

    /// CHECK through the list with the cached ADD result as `prevResult`.
    pub fn check(
        &self,
        list: &Value,
        c: &Container,
        cached: &Value,
    ) -> Result<ChainRuns, ChainFailure> {
        self.run_each("CHECK", list, c, Some(cached), false)
    }

    fn run_each(
        &self,
        command: &str,
        list: &Value,
        c: &Container,
        prev: Option<&Value>,
        reverse: bool,
    ) -> Result<ChainRuns, ChainFailure> {
        let mut order: Vec<&Value> = plugins(list).collect();
        if reverse {
            order.reverse();
        }
        let mut runs = Vec::new();
        for plugin in order {
            let run = self.exec(command, &plugin_config(list, plugin, prev), c);
            let ok = run.success();
            runs.push(run);
            if !ok {
                return Err(ChainFailure { runs });
            }
        }
        Ok(ChainRuns { runs })
    }
}

fn plugins(list: &Value) -> impl Iterator<Item = &Value> {
    list["plugins"]
        .as_array()
        .unwrap_or_else(|| panic!("conflist without plugins: {list}"))
        .iter()
}

/// A list's `cniVersion` is 0.4.0 or later (libcni's gate for prevResult on DEL and CHECK).
pub fn version_at_least_0_4(list: &Value) -> bool {
    !matches!(
        list["cniVersion"].as_str(),
        Some("0.1.0" | "0.2.0" | "0.3.0" | "0.3.1") | None
    )
}

/// What libcni's buildOneConfig hands a plugin: its own config plus the list's `name` and
/// `cniVersion`, and `prevResult` when there is one.
pub fn plugin_config(list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut conf: Map<String, Value> = plugin
        .as_object()
        .unwrap_or_else(|| panic!("plugin entry is not an object: {plugin}"))
        .clone();
    conf.insert("name".into(), list["name"].clone());
    conf.insert("cniVersion".into(), list["cniVersion"].clone());
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    Value::Object(conf)
}

/// The plugin entry of `type` in a list; panics if the list has none.
pub fn plugin_entry<'a>(list: &'a Value, plugin: &str) -> &'a Value {
    plugins(list)
        .find(|p| p["type"] == plugin)
        .unwrap_or_else(|| panic!("conflist has no {plugin} plugin: {list}"))
}

/// Reads a conflist file as JSON.
pub fn load_conflist(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}
