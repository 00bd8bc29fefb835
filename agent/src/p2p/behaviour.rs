//! The libp2p swarm: transports, the composed behaviour, and edgeway's protocol names.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    autonat, dcutr, gossipsub, identify, noise, ping, relay, tcp, yamux, StreamProtocol, Swarm,
    SwarmBuilder,
};
use serde::{Deserialize, Serialize};

use super::announce::SignedAnnouncement;

pub const CONTROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/edgeway/control/1");
/// Version 2: frames carry the TUN's virtio-net header (see `dataplane::frame`).
pub const PACKETS_PROTOCOL: StreamProtocol = StreamProtocol::new("/edgeway/packets/2");
pub const OWNERSHIP_TOPIC: &str = "edgeway/ownership/1";

/// Control requests between agents. Nothing but `Hello` is served before a peer proves membership.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Proves membership: the token is bound to the sender's peer ID.
    Hello {
        token: Vec<u8>,
        node_name: String,
        /// Random per agent start: a new value means the peer restarted, so its older
        /// connections are dead and it has forgotten our membership.
        #[serde(default)]
        boot: u64,
        /// The sender does not hold the receiver as a member (it started, or lost every
        /// connection): the receiver must send its own hello again.
        #[serde(default)]
        want_hello: bool,
    },
    /// Anti-entropy: "here is the (peer, seq) I know; send me what is newer".
    Sync { digest: Vec<(String, u64)> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlResponse {
    Welcome,
    Announcements(Vec<SignedAnnouncement>),
    Denied(String),
}

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub control: request_response::json::Behaviour<ControlRequest, ControlResponse>,
    pub stream: libp2p_stream::Behaviour,
    /// Reserves a slot on relays and dials through them.
    pub relay_client: relay::client::Behaviour,
    /// Serves as a relay; only on nodes run with the relay role.
    pub relay_server: Toggle<relay::Behaviour>,
    /// Upgrades relayed connections to direct ones (hole punching), unless turned off.
    pub dcutr: Toggle<dcutr::Behaviour>,
    /// Learns whether this node is reachable from outside.
    pub autonat: autonat::Behaviour,
}

/// What the swarm needs to know about NAT traversal.
#[derive(Debug, Clone)]
pub struct NatOptions {
    /// `Some` on a relay node: the limits for the circuits it carries.
    pub relay_server: Option<RelayLimits>,
    pub hole_punching: bool,
}

/// Limits a relay puts on the circuits it carries. libp2p's defaults (2 minutes, 128 KiB per
/// circuit) cut pod traffic mid-flow, as EdgeMesh's tunnels learned (kubeedge/edgemesh#400).
#[derive(Debug, Clone)]
pub struct RelayLimits {
    pub max_reservations: usize,
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    pub reservation_duration: Duration,
    pub max_circuit_duration: Duration,
    /// 0 means unlimited.
    pub max_circuit_bytes: u64,
}

impl RelayLimits {
    fn to_config(&self) -> relay::Config {
        relay::Config {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: 4,
            reservation_duration: self.reservation_duration,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.max_circuit_duration,
            max_circuit_bytes: self.max_circuit_bytes,
            ..Default::default()
        }
    }
}

fn gossipsub_config() -> gossipsub::Config {
    gossipsub::ConfigBuilder::default()
        // Messages are signed by their author and handed to us before they are forwarded.
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        // Clusters of a few nodes must form a mesh too.
        .mesh_n_low(1)
        .mesh_n(4)
        .mesh_n_high(8)
        .mesh_outbound_min(1)
        .heartbeat_initial_delay(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_secs(1))
        .max_transmit_size(super::announce::MAX_SIGNED_BYTES)
        .build()
        .expect("static gossipsub config is valid")
}

fn yamux_config() -> yamux::Config {
    yamux::Config::default()
}

pub fn build_swarm(key: Keypair, nat: &NatOptions) -> anyhow::Result<Swarm<Behaviour>> {
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux_config,
        )?
        .with_quic_config(|mut quic| {
            // A relay or peer that dies sends nothing: only QUIC's idle timeout notices.
            // Keep-alives every second let a 5 s timeout (five missed in a row) stand for
            // "gone", so circuits through a dead relay close, and are redialled, within
            // 10 s, while a busy node does not drop live connections.
            quic.keep_alive_interval = Duration::from_secs(1);
            quic.max_idle_timeout = 5_000;
            quic
        })
        // Bootstrap peers and relays may be given by DNS name (`/dns/relay.example.com/...`).
        .with_dns()?
        .with_relay_client(noise::Config::new, yamux_config)?
        .with_behaviour(|key, relay_client| {
            let peer = key.public().to_peer_id();
            let identify = identify::Behaviour::new(
                identify::Config::new("/edgeway/1".into(), key.public())
                    .with_agent_version(format!("edgeway-agent/{}", env!("CARGO_PKG_VERSION"))),
            );
            let ping = ping::Behaviour::new(
                ping::Config::new()
                    // A failed ping closes the connection (see the network loop), so
                    // these bound how long a dead relay or path holds traffic up.
                    .with_interval(Duration::from_secs(1))
                    .with_timeout(Duration::from_secs(4)),
            );
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub_config(),
            )
            .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
            let control = request_response::json::Behaviour::new(
                [(CONTROL_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
            );
            Ok(Behaviour {
                identify,
                ping,
                gossipsub,
                control,
                stream: libp2p_stream::Behaviour::new(),
                relay_client,
                relay_server: nat
                    .relay_server
                    .as_ref()
                    .map(|limits| relay::Behaviour::new(peer, limits.to_config()))
                    .into(),
                dcutr: nat
                    .hole_punching
                    .then(|| dcutr::Behaviour::new(peer))
                    .into(),
                autonat: autonat::Behaviour::new(
                    peer,
                    autonat::Config {
                        // Test clusters live on documentation ranges; real ones on public IPs.
                        only_global_ips: false,
                        ..Default::default()
                    },
                ),
            })
        })?
        // Connections carry pod traffic at any moment; keep them even when idle.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}
