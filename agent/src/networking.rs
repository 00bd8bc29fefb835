//! Starts the cross-LAN half of the agent: identity, TUN, route table, swarm and data path.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use libp2p::Multiaddr;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::netstate::NetState;
use crate::node::Node;
use crate::ownership::OwnershipTable;
use crate::p2p::behaviour::{build_swarm, NatOptions, RelayLimits, PACKETS_PROTOCOL};
use crate::p2p::grants::GrantPolicy;
use crate::p2p::membership::ClusterSecret;
use crate::p2p::network::{Network, NetworkConfig};
use crate::routes::RouteTable;
use crate::segments::SegmentPolicy;
use crate::{dataplane, p2p, route_sync, tunnel};

/// This node's network identity, for the status API.
pub struct NetInfo {
    pub peer_id: String,
    pub segment: String,
    pub state: Arc<NetState>,
}

pub struct Networking {
    tasks: Vec<JoinHandle<()>>,
    routes: RouteTable,
}

fn parse_addrs(field: &str, list: &[String]) -> anyhow::Result<Vec<Multiaddr>> {
    list.iter()
        .map(|a| {
            a.parse()
                .with_context(|| format!("invalid config: {field}: {a:?} is not a multiaddr"))
        })
        .collect()
}

pub async fn start(
    config: &Config,
    node: Arc<Node>,
    secret_file: &std::path::Path,
) -> anyhow::Result<Networking> {
    let secret = ClusterSecret::load(secret_file)?;
    let listen = parse_addrs("p2p.listen", &config.p2p.listen)?;
    let bootstrap = parse_addrs("p2p.bootstrap", &config.p2p.bootstrap)?;
    let relays = parse_addrs("p2p.relays", &config.p2p.relays)?;
    node.store.ensure_dirs()?;
    let key = p2p::identity::load_or_create(&config.state_dir.join("identity.key"))?;
    let peer_id = key.public().to_peer_id();
    let grants = GrantPolicy::load(
        config.p2p.cluster_ca_file.as_deref(),
        config.p2p.grant_file.as_deref(),
        &peer_id,
        edgeway_common::unix_now().as_secs(),
    )?;

    let tun = tunnel::open(&config.tunnel.device, config.tunnel.mtu)?;
    let handle = crate::routes::connect().context("cannot open a netlink socket")?;
    let routes = RouteTable::new(handle, config.tunnel.table, tun.ifindex);
    let stale = routes.flush().await?;
    if stale > 0 {
        tracing::info!(stale, "removed routes a previous run left behind");
    }
    let tun_dev = Arc::new(tun.device);

    let r = &config.relay;
    let nat = NatOptions {
        relay_server: r.enabled.then(|| RelayLimits {
            max_reservations: r.max_reservations,
            max_circuits: r.max_circuits,
            max_circuits_per_peer: r.max_circuits_per_peer,
            reservation_duration: Duration::from_secs(r.reservation_duration_secs),
            max_circuit_duration: Duration::from_secs(r.max_circuit_duration_secs),
            max_circuit_bytes: r.max_circuit_bytes,
        }),
        hole_punching: config.p2p.hole_punching,
    };
    let swarm = build_swarm(key.clone(), &nat)?;
    let control = swarm.behaviour().stream.new_control();
    let incoming = control
        .clone()
        .accept(PACKETS_PROTOCOL)
        .context("packet protocol registered twice")?;

    let grace = Duration::from_secs(config.p2p.peer_grace_secs);
    let net = Arc::new(NetState::new(OwnershipTable::new(
        peer_id.to_string(),
        grace,
    )));
    let policy = SegmentPolicy {
        local_segment: config.segment.clone(),
        segment_cidrs: config
            .cloud_cidr
            .iter()
            .chain(&config.edge_cidr)
            .copied()
            .collect(),
        native_cidrs: config.native_cidrs.clone(),
    };
    let _ = node.network.set(NetInfo {
        peer_id: peer_id.to_string(),
        segment: config.segment.clone(),
        state: net.clone(),
    });
    tracing::info!(%peer_id, segment = %config.segment, device = %tun.name, "networking starting");

    let network = Network::new(
        swarm,
        key,
        secret,
        node.clone(),
        net.clone(),
        NetworkConfig {
            listen,
            bootstrap,
            relays,
            announce_every: Duration::from_secs(config.p2p.announce_interval_secs),
            upgrade_retry: config
                .p2p
                .hole_punching
                .then(|| Duration::from_secs(config.p2p.upgrade_retry_secs)),
            node_name: node.name.clone(),
            grants,
        },
        config.segment.clone(),
    );
    let metrics = node.metrics.clone();
    let local_changed = node.local_changed.clone();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = network.run(local_changed).await {
            tracing::error!("p2p network stopped: {e:#}");
        }
    }));
    tasks.push(tokio::spawn(dataplane::rx::accept_streams(
        incoming,
        tun_dev.clone(),
        net.clone(),
        metrics.clone(),
    )));
    let queue = dataplane::tx::QueueLimits {
        packets: config.tunnel.queue_len,
        bytes: config.tunnel.queue_bytes,
    };
    let (tx_net, tx_metrics) = (net.clone(), metrics.clone());
    let transports = dataplane::transport::TransportSelector::new(control);
    tasks.push(tokio::spawn(async move {
        if let Err(e) =
            dataplane::tx::pump_tun_to_peers(tun_dev, tx_net, transports, tx_metrics, queue).await
        {
            tracing::error!("reading the TUN failed: {e}");
        }
    }));
    tasks.push(tokio::spawn(route_sync::run(
        routes.clone(),
        config.tunnel.table,
        net,
        policy,
        metrics,
    )));
    Ok(Networking { tasks, routes })
}

impl Networking {
    /// Stops the tasks and removes the routes this agent owns.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        match self.routes.flush().await {
            Ok(n) => tracing::info!(removed = n, "routes removed"),
            Err(e) => tracing::warn!("cannot remove routes at shutdown: {e}"),
        }
    }
}
