//! One simulated node: its own network namespace, temp dirs for edgeway's state, the agent
//! socket and host-local's leases, an agent (not started until asked), the example conflists
//! patched to use all of those, and pods (each a namespace of its own).
//!
//! Everything carries a unique prefix, and everything is torn down on drop: the agent is
//! killed by PID, the namespaces are deleted (which removes the bridge, veths and rules
//! inside them), and the temp dir is removed.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::agent::Agent;
use crate::bins;
use crate::chain::{load_conflist, Container, Runner};
use crate::netns::{self, NetNs};
use crate::rules::{self, Rule};

/// Example conflists, relative to the workspace root.
pub const BRIDGE_CONFLIST: &str = "conflist/10-bridge-host-local.conflist";
pub const PTP_CONFLIST: &str = "conflist/10-ptp-calico-style.conflist";

pub struct World {
    // Fields drop in order: the agent dies before its namespace goes, the dir goes last.
    pub agent: Agent,
    runner: Runner,
    node: NetNs,
    prefix: String,
    octet: u32,
    dir: TempDir,
}

/// A pod: a namespace of its own and the attachment a runtime would ask for.
pub struct Pod {
    pub name: String,
    pub container: Container,
    netns: Option<NetNs>,
}

impl Pod {
    /// Deletes the pod's namespace now, as a runtime does before a late DEL.
    pub fn delete_netns(&mut self) {
        self.netns = None;
    }
}

impl World {
    /// A node whose agent is not running yet.
    pub fn new() -> World {
        bins::require_root();
        bins::require_reference_plugins();
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale_leftovers);
        let (prefix, n) = netns::unique_prefix();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .expect("create the test's temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("create the plugin dir");
        std::os::unix::fs::symlink(bins::edgeway(), bin.join("edgeway"))
            .expect("link edgeway into the plugin dir");
        let node = NetNs::create(&format!("{prefix}-node"));
        let runner = Runner::new(&node, vec![bin, PathBuf::from(bins::REFERENCE_PLUGIN_DIR)]);
        let agent = Agent::new(
            &node,
            bins::edgeway_agent(),
            &dir.path().join("state"),
            &dir.path().join("agent.sock"),
            &format!("{prefix}-node"),
            &dir.path().join("agent.log"),
        );
        World {
            agent,
            runner,
            node,
            prefix,
            octet: n % 250 + 1,
            dir,
        }
    }

    /// A node with its agent running and ready.
    pub fn with_agent() -> World {
        let mut w = World::new();
        w.agent.start();
        w
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn node_ns(&self) -> &str {
        self.node.name()
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// `ip -n <node> <args...>`, checked; returns stdout.
    pub fn ip_in_node(&self, args: &[&str]) -> String {
        self.node.ip(args)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    /// host-local's `dataDir`: one directory per network, holding a file per reserved address.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// The addresses host-local holds reserved, over every network: the files under
    /// `<dataDir>/<network>/` named like an IP address (`last_reserved_ip.0` and `lock` are
    /// bookkeeping, not reservations).
    pub fn ipam_reservations(&self) -> Vec<String> {
        let Ok(networks) = std::fs::read_dir(self.ipam_dir()) else {
            return vec![];
        };
        let mut ips: Vec<String> = networks
            .filter_map(Result::ok)
            .filter(|n| n.path().is_dir())
            .filter_map(|n| std::fs::read_dir(n.path()).ok())
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
            .collect();
        ips.sort();
        ips
    }

    /// This world's pod subnet, inside 10.244.0.0/16.
    pub fn subnet(&self) -> String {
        format!("10.244.{}.0/24", self.octet)
    }

    /// This world's bridge name (at most 15 bytes).
    pub fn bridge(&self) -> String {
        let name = format!("ewb{}", self.prefix.trim_start_matches("ewt"));
        name.chars().take(15).collect()
    }

    /// `conflist/10-bridge-host-local.conflist` at `version`, with this world's bridge,
    /// subnet, host-local data dir, state dir and agent socket.
    pub fn bridge_conflist(&self, version: &str) -> Value {
        let mut list = load_conflist(&bins::workspace_root().join(BRIDGE_CONFLIST));
        list["cniVersion"] = json!(version);
        let bridge = self.bridge();
        self.patch(&mut list, |p| {
            if p["type"] == "bridge" {
                p["bridge"] = json!(bridge);
            }
        });
        list
    }

    /// The bridge + host-local list at 1.0.0 with edgeway's `onAgentDown` set.
    pub fn on_agent_down_conflist(&self, on_agent_down: &str) -> Value {
        let mut list = self.bridge_conflist("1.0.0");
        for p in list["plugins"].as_array_mut().expect("plugins") {
            if p["type"] == "edgeway" {
                p["onAgentDown"] = json!(on_agent_down);
            }
        }
        assert_eq!(
            crate::chain::plugin_entry(&list, "edgeway")["onAgentDown"],
            on_agent_down
        );
        list
    }

    /// `conflist/10-ptp-calico-style.conflist` (0.3.1) with this world's subnet, host-local
    /// data dir, state dir and agent socket.
    pub fn ptp_conflist(&self) -> Value {
        let mut list = load_conflist(&bins::workspace_root().join(PTP_CONFLIST));
        self.patch(&mut list, |_| {});
        list
    }

    /// Points IPAM and edgeway at this world's dirs; panics if the list lacks either, so a
    /// changed example conflist cannot make a test vacuous.
    fn patch(&self, list: &mut Value, extra: impl Fn(&mut Value)) {
        let subnet = self.subnet();
        let ipam_dir = self.ipam_dir().display().to_string();
        let (mut ipam, mut edgeway) = (0, 0);
        let plugins = list["plugins"]
            .as_array_mut()
            .expect("conflist has a plugins list");
        for p in plugins.iter_mut() {
            extra(p);
            if p["ipam"]["type"] == "host-local" {
                p["ipam"]["ranges"] = json!([[{"subnet": subnet}]]);
                p["ipam"]["dataDir"] = json!(ipam_dir);
                ipam += 1;
            }
            if p["type"] == "edgeway" {
                p["stateDir"] = json!(self.state_dir());
                p["agentSocket"] = json!(self.socket());
                edgeway += 1;
            }
        }
        assert_eq!(
            (ipam, edgeway),
            (1, 1),
            "expected one host-local IPAM and one edgeway entry in {list}"
        );
    }

    /// A bare edgeway config, for feeding the plugin directly (STATUS, GC, 1.1.0).
    pub fn edgeway_conf(&self, version: &str, network: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": network,
            "type": "edgeway",
            "stateDir": self.state_dir(),
            "agentSocket": self.socket(),
        })
    }

    /// Creates pod `n`: a namespace `<prefix>-p<n>`, container ID `<prefix>c<n>`, `eth0`,
    /// and Kubernetes pod args `default/web-<n>`.
    pub fn pod(&self, n: usize) -> Pod {
        let ns = NetNs::create(&format!("{}-p{n}", self.prefix));
        let name = format!("web-{n}");
        Pod {
            container: Container {
                id: format!("{}c{n}", self.prefix),
                netns: ns.path().display().to_string(),
                ifname: "eth0".into(),
                args: format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_UID=uid-{n}"),
            },
            name,
            netns: Some(ns),
        }
    }

    /// `<stateDir>/attachments/<containerID>@<ifname>.json`.
    pub fn record_path(&self, c: &Container) -> PathBuf {
        self.state_dir()
            .join("attachments")
            .join(format!("{}@{}.json", c.id, c.ifname))
    }

    /// The record of this attachment, if the file exists.
    pub fn record(&self, c: &Container) -> Option<Value> {
        let text = std::fs::read_to_string(self.record_path(c)).ok()?;
        Some(serde_json::from_str(&text).expect("a record is JSON"))
    }

    /// File names under `<stateDir>/attachments` (temp files excluded).
    pub fn record_files(&self) -> Vec<String> {
        json_files(&self.state_dir().join("attachments"))
    }

    /// File names under `<stateDir>/pending-del`.
    pub fn pending_del_files(&self) -> Vec<String> {
        json_files(&self.state_dir().join("pending-del"))
    }

    /// edgeway's rules (proto 237) in the node namespace.
    pub fn edgeway_rules(&self) -> Vec<Rule> {
        rules::edgeway_rules(self.node_ns())
    }

    pub fn has_pod_rule(&self, ip: &str) -> bool {
        rules::has_pod_rule(self.node_ns(), ip)
    }

    /// Rule, record and registration (with the pod's Kubernetes name) all exist.
    pub fn assert_attached(&self, pod: &Pod, ip: &str) {
        let c = &pod.container;
        assert!(
            self.has_pod_rule(ip),
            "no `from {ip} lookup 7332 proto 237` rule in {}: {:?}",
            self.node_ns(),
            rules::list(self.node_ns())
        );
        let record = self
            .record(c)
            .unwrap_or_else(|| panic!("no record at {}", self.record_path(c).display()));
        assert_eq!(record["ips"], json!([ip]), "record {record}");
        let a = self.agent.attachment(&c.id).unwrap_or_else(|| {
            panic!(
                "agent does not list {}: {:?}",
                c.id,
                self.agent.attachments()
            )
        });
        assert_eq!(a["ifname"], c.ifname.as_str(), "{a}");
        assert_eq!(a["ips"], json!([ip]), "{a}");
        assert_eq!(a["pod"]["namespace"], "default", "{a}");
        assert_eq!(a["pod"]["name"], pod.name.as_str(), "{a}");
    }

    /// Rule, record and registration are all gone. The agent must be running.
    pub fn assert_detached(&self, pod: &Pod, ip: &str) {
        let c = &pod.container;
        assert!(
            !self.has_pod_rule(ip),
            "rule for {ip} is still in {}",
            self.node_ns()
        );
        assert!(
            self.record(c).is_none(),
            "record {} is still there",
            self.record_path(c).display()
        );
        assert_eq!(
            self.agent.attachment(&c.id),
            None,
            "agent still lists {}",
            c.id
        );
    }

    /// No edgeway rule, no record, no pending DEL, no registration. The agent must be running.
    pub fn assert_nothing_left(&self) {
        assert_eq!(self.edgeway_rules(), vec![], "edgeway rules left behind");
        assert_eq!(self.record_files(), Vec::<String>::new(), "records left");
        assert_eq!(
            self.pending_del_files(),
            Vec::<String>::new(),
            "pending DELs left"
        );
        assert_eq!(
            self.agent.attachments(),
            Vec::<Value>::new(),
            "registrations left"
        );
    }

    /// Waits until `cond` holds, or panics with `what` after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

/// Namespaces and temp dirs of earlier test processes that were killed before their
/// destructors ran.
fn sweep_stale_leftovers() {
    netns::sweep_stale();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if netns::is_stale(&name) && e.path().is_dir() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn json_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// The IPv4 address (without prefix length) that a result gives the sandbox interface
/// `ifname`: the `ips[]` entry whose `interface` index points at that interface.
pub fn sandbox_ipv4(result: &Value, ifname: &str) -> String {
    let interfaces = result["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("result has no interfaces: {result}"));
    let index = interfaces
        .iter()
        .position(|i| i["name"] == ifname && i["sandbox"].as_str().is_some_and(|s| !s.is_empty()))
        .unwrap_or_else(|| panic!("result has no sandbox interface {ifname}: {result}"));
    result["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("result has no ips: {result}"))
        .iter()
        .filter(|ip| ip["interface"].as_u64() == Some(index as u64))
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next())
        .find(|a| a.contains('.'))
        .unwrap_or_else(|| panic!("result has no IPv4 address on {ifname}: {result}"))
        .to_string()
}
