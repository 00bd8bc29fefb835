//! The agent's config file (TOML). Every key is optional; a bad one is named in the error.

use std::path::{Path, PathBuf};

use edgeway_common::{DEFAULT_AGENT_SOCKET, DEFAULT_STATE_DIR, DEFAULT_TABLE};
use ipnetwork::IpNetwork;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// This node's name; defaults to `$NODE_NAME`, then the host name.
    pub node_name: Option<String>,
    /// Must match the plugin's `stateDir`.
    pub state_dir: PathBuf,
    pub api: ApiConfig,
    /// Seconds between resyncs of the registry against `stateDir` and the pending-DEL queue.
    pub resync_interval_secs: u64,
    /// This node's segment (LAN). Pods in other segments are reached through edgeway.
    pub segment: String,
    /// Seed 001's style of declaring segments: each CIDR is one segment.
    #[serde(rename = "cloudCIDR")]
    pub cloud_cidr: Vec<IpNetwork>,
    #[serde(rename = "edgeCIDR")]
    pub edge_cidr: Vec<IpNetwork>,
    /// Destinations that always stay on the host CNI.
    #[serde(rename = "nativeCIDRs")]
    pub native_cidrs: Vec<IpNetwork>,
    pub tunnel: TunnelConfig,
    pub p2p: P2pConfig,
    pub relay: RelayConfig,
}

/// The relay role, for agents on nodes with a public address (seed 001's `relayNodes`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Serve circuit relay v2 and help hole punching for agents behind NAT.
    pub enabled: bool,
    pub max_reservations: usize,
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    pub reservation_duration_secs: u64,
    /// How long one relayed connection may live. libp2p's default of 2 minutes cut
    /// EdgeMesh's tunnels (kubeedge/edgemesh#400); pod traffic needs hours.
    pub max_circuit_duration_secs: u64,
    /// Bytes one relayed connection may carry; 0 is unlimited. libp2p's default is 128 KiB.
    pub max_circuit_bytes: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: false,
            max_reservations: 1024,
            max_circuits: 1024,
            max_circuits_per_peer: 64,
            reservation_duration_secs: 3600,
            max_circuit_duration_secs: 24 * 3600,
            max_circuit_bytes: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TunnelConfig {
    pub device: String,
    /// At least the host CNI's pod MTU; packets ride inside streams, so the underlay MTU does not bound it.
    pub mtu: u16,
    /// Must match the plugin's `table`.
    pub table: u32,
    /// Packets queued per peer before new ones are dropped and counted.
    pub queue_len: usize,
    /// Bytes queued per peer before new packets are dropped and counted: with offload a
    /// packet can be 64 KiB, so a count alone does not bound memory.
    pub queue_bytes: usize,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            device: "edgeway0".into(),
            mtu: 1500,
            table: DEFAULT_TABLE,
            queue_len: 1024,
            queue_bytes: 4 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct P2pConfig {
    /// Multiaddrs to listen on: TCP and QUIC.
    pub listen: Vec<String>,
    /// Multiaddrs of other agents (with `/p2p/<peer id>`) to dial at start.
    pub bootstrap: Vec<String>,
    /// File holding the cluster secret. Without it the agent runs node-local only:
    /// no TUN, no peers. There is no default secret.
    pub cluster_secret_file: Option<PathBuf>,
    /// Seconds after which an unreachable peer's pods are forgotten.
    pub peer_grace_secs: u64,
    /// Seconds between re-announcements of this node's pods.
    pub announce_interval_secs: u64,
    /// Relays (multiaddrs with `/p2p/<peer id>`) to keep a reservation on, so peers behind
    /// NAT can reach this node. Prefer QUIC addresses: hole punching works best over UDP.
    pub relays: Vec<String>,
    /// Try to upgrade relayed connections to direct ones (DCUtR).
    pub hole_punching: bool,
    /// Seconds between upgrade attempts for a peer reached only through a relay.
    pub upgrade_retry_secs: u64,
    /// The cluster CA's public key (`edgeway-agent ca init`). When set, a peer's pod
    /// claims count only inside the CIDRs its grant lists; unset, any member may claim any
    /// pod IP, and the newest claim wins.
    pub cluster_ca_file: Option<PathBuf>,
    /// This node's grant from the cluster CA (`edgeway-agent ca grant`), sent with its
    /// announcements. Peers that check grants ignore the pods of a node without one (fine
    /// for a relay). Without `clusterCaFile` it is sent but peers' grants are not checked.
    pub grant_file: Option<PathBuf>,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: vec![
                "/ip4/0.0.0.0/tcp/7333".into(),
                "/ip4/0.0.0.0/udp/7333/quic-v1".into(),
            ],
            bootstrap: vec![],
            cluster_secret_file: None,
            peer_grace_secs: 60,
            announce_interval_secs: 15,
            relays: vec![],
            hole_punching: true,
            upgrade_retry_secs: 30,
            cluster_ca_file: None,
            grant_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Must match the plugin's `agentSocket`.
    pub socket: PathBuf,
    /// A group allowed to use the socket. Unset: the socket is 0600 and root-only;
    /// set: it is 0660 and owned by this group.
    pub group: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            api: ApiConfig::default(),
            resync_interval_secs: 10,
            segment: "default".into(),
            cloud_cidr: vec![],
            edge_cidr: vec![],
            native_cidrs: vec![],
            tunnel: TunnelConfig::default(),
            p2p: P2pConfig::default(),
            relay: RelayConfig::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from(DEFAULT_AGENT_SOCKET),
            group: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        // toml's message names the key and shows the offending line.
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let absolute = |field: &'static str, p: &Path| {
            if p.is_absolute() {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    field,
                    reason: format!("{} is not an absolute path", p.display()),
                })
            }
        };
        absolute("stateDir", &self.state_dir)?;
        absolute("api.socket", &self.api.socket)?;
        for (field, p) in [
            ("p2p.clusterCaFile", &self.p2p.cluster_ca_file),
            ("p2p.grantFile", &self.p2p.grant_file),
        ] {
            if let Some(p) = p {
                absolute(field, p)?;
            }
        }
        if !(1..=3600).contains(&self.resync_interval_secs) {
            return Err(ConfigError::Invalid {
                field: "resyncIntervalSecs",
                reason: format!("{} is not in 1..=3600", self.resync_interval_secs),
            });
        }
        let invalid =
            |field: &'static str, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.segment.is_empty() || self.segment.len() > 63 {
            return invalid("segment", "must be 1 to 63 characters".into());
        }
        let dev = &self.tunnel.device;
        if dev.is_empty() || dev.len() > 15 || dev.contains(['/', ':', ' ']) {
            return invalid(
                "tunnel.device",
                format!("{dev:?} is not a valid interface name"),
            );
        }
        if self.tunnel.mtu < 1280 {
            return invalid(
                "tunnel.mtu",
                format!("{} is below 1280, the IPv6 minimum", self.tunnel.mtu),
            );
        }
        if matches!(self.tunnel.table, 0 | 253..=255) {
            return invalid(
                "tunnel.table",
                format!("{} is reserved by the kernel", self.tunnel.table),
            );
        }
        if !(16..=1_000_000).contains(&self.tunnel.queue_len) {
            return invalid(
                "tunnel.queueLen",
                format!("{} is not in 16..=1000000", self.tunnel.queue_len),
            );
        }
        if !((64 << 10)..=(256 << 20)).contains(&self.tunnel.queue_bytes) {
            return invalid(
                "tunnel.queueBytes",
                format!("{} is not in 65536..=268435456", self.tunnel.queue_bytes),
            );
        }
        if !(5..=86_400).contains(&self.p2p.peer_grace_secs) {
            return invalid(
                "p2p.peerGraceSecs",
                format!("{} is not in 5..=86400", self.p2p.peer_grace_secs),
            );
        }
        if !(1..=3600).contains(&self.p2p.announce_interval_secs) {
            return invalid(
                "p2p.announceIntervalSecs",
                format!("{} is not in 1..=3600", self.p2p.announce_interval_secs),
            );
        }
        if !(2..=3600).contains(&self.p2p.upgrade_retry_secs) {
            return invalid(
                "p2p.upgradeRetrySecs",
                format!("{} is not in 2..=3600", self.p2p.upgrade_retry_secs),
            );
        }
        let r = &self.relay;
        if r.max_circuit_duration_secs == 0 || r.max_circuit_duration_secs > u64::from(u32::MAX) {
            return invalid(
                "relay.maxCircuitDurationSecs",
                format!("{} is not in 1..=4294967295", r.max_circuit_duration_secs),
            );
        }
        if r.reservation_duration_secs < 60 {
            return invalid(
                "relay.reservationDurationSecs",
                format!("{} is below 60", r.reservation_duration_secs),
            );
        }
        if r.max_reservations == 0 || r.max_circuits == 0 || r.max_circuits_per_peer == 0 {
            return invalid(
                "relay",
                "maxReservations, maxCircuits and maxCircuitsPerPeer must be above 0".into(),
            );
        }
        for (field, list) in [
            ("p2p.listen", &self.p2p.listen),
            ("p2p.bootstrap", &self.p2p.bootstrap),
            ("p2p.relays", &self.p2p.relays),
        ] {
            for a in list {
                let addr: libp2p::Multiaddr = a.parse().map_err(|e| ConfigError::Invalid {
                    field,
                    reason: format!("{a:?} is not a multiaddr: {e}"),
                })?;
                // A circuit through a relay names the relay, so its address needs the peer ID.
                let has_peer = addr
                    .iter()
                    .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)));
                if field == "p2p.relays" && !has_peer {
                    return invalid(field, format!("{a:?} lacks /p2p/<peer id>"));
                }
            }
        }
        if let Some(name) = &self.node_name {
            if name.is_empty() || name.len() > 253 {
                return Err(ConfigError::Invalid {
                    field: "nodeName",
                    reason: "must be 1 to 253 characters".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/edgeway"));
        assert_eq!(c.api.socket, PathBuf::from("/run/edgeway/agent.sock"));
        assert!(c.api.group.is_none());
    }

    #[test]
    fn keys_are_read() {
        let c = Config::parse(
            "nodeName = \"edge-1\"\nstateDir = \"/tmp/s\"\nresyncIntervalSecs = 3\n[api]\nsocket = \"/tmp/a.sock\"\ngroup = \"edgeway\"\n",
        )
        .unwrap();
        assert_eq!(c.node_name.as_deref(), Some("edge-1"));
        assert_eq!(c.api.group.as_deref(), Some("edgeway"));
        assert_eq!(c.resync_interval_secs, 3);
    }

    #[test]
    fn errors_name_the_field() {
        for (text, field) in [
            ("stateDir = 5", "stateDir"),
            ("stateDir = \"rel\"", "stateDir"),
            ("[api]\nsocket = \"x\"", "api.socket"),
            ("[api]\nsockett = \"/x\"", "sockett"),
            ("resyncIntervalSecs = 0", "resyncIntervalSecs"),
            ("nodeName = \"\"", "nodeName"),
            ("cloudCIDR = [\"10.244.1.0/33\"]", "cloudCIDR"),
            ("[tunnel]\nmtu = 500", "tunnel.mtu"),
            ("[tunnel]\ntable = 254", "tunnel.table"),
            ("[p2p]\npeerGraceSecs = 1", "p2p.peerGraceSecs"),
            ("[p2p]\nclusterSecret = \"x\"", "clusterSecret"),
            ("[p2p]\nlisten = [\"/ip4/1.2.3.4/tcpx/1\"]", "p2p.listen"),
            (
                "[p2p]\nbootstrap = [\"/ip4/198.51.100.1/tcpp/7333\"]",
                "p2p.bootstrap",
            ),
            (
                "[p2p]\nrelays = [\"/ip4/203.0.113.1/udp/7333/quic-v1\"]",
                "p2p.relays",
            ),
            (
                "[relay]\nmaxCircuitDurationSecs = 0",
                "relay.maxCircuitDurationSecs",
            ),
            ("[relay]\nmaxCircuits = 0", "relay"),
            ("[p2p]\ngrantFile = \"g.json\"", "p2p.grantFile"),
            ("[p2p]\nclusterCaFile = \"ca.pub\"", "p2p.clusterCaFile"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(field), "{text:?}: {e}");
        }
    }
}
