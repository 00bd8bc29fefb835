//! The one task that owns the libp2p swarm: membership, ownership gossip, anti-entropy
//! sync, liveness and link facts. Everything else reads [`NetState`] or talks to it
//! through the notifications it waits on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{autonat, dcutr, relay};
use libp2p::{identify, ping, Multiaddr, PeerId, Swarm};
use tokio::sync::Notify;

use super::announce::{self, Opened, SignedAnnouncement};
use super::behaviour::{
    Behaviour, BehaviourEvent, ControlRequest, ControlResponse, OWNERSHIP_TOPIC,
};
use super::membership::ClusterSecret;
use crate::metrics::{PathLabels, PeerLabels, ReasonLabels};
use crate::netstate::{NetState, Path};
use crate::node::Node;
use crate::ownership::{ApplyOutcome, LocalAnnouncer, PodClaim};

/// A peer that has not proved membership this long after connecting is dropped.
const AUTH_DEADLINE: Duration = Duration::from_secs(10);
/// How far ahead of our clock an announcement may be dated (clock skew between nodes).
const MAX_CLOCK_AHEAD_MS: u64 = 5 * 60 * 1000;
/// Bootstrap peers and known members we are not connected to are redialled this often.
const REDIAL_EVERY: Duration = Duration::from_secs(5);

pub struct NetworkConfig {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// Relays to hold a reservation on (listening on `<relay>/p2p-circuit`).
    pub relays: Vec<Multiaddr>,
    pub announce_every: Duration,
    pub node_name: String,
}

pub struct Network {
    swarm: Swarm<Behaviour>,
    key: Keypair,
    secret: ClusterSecret,
    node: Arc<Node>,
    net: Arc<NetState>,
    config: NetworkConfig,
    topic: IdentTopic,
    announcer: LocalAnnouncer,
    /// The newest signed announcement of each peer (ours included), served to syncs.
    signed: HashMap<String, SignedAnnouncement>,
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    awaiting_hello: HashMap<PeerId, Instant>,
    last_redial: Instant,
    /// Open connections per peer, so a direct one can replace relayed ones.
    connections: HashMap<PeerId, Vec<(ConnectionId, Path)>>,
    /// Our circuit listeners, one per relay: a closed one is re-opened (re-reserved).
    relay_listeners: HashMap<ListenerId, Multiaddr>,
    /// Who answered at each bootstrap address given without a peer ID.
    bootstrap_peers: HashMap<Multiaddr, PeerId>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether another host could dial this address: not loopback, not a wildcard.
fn is_reachable_elsewhere(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback() || ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_loopback() || ip.is_unspecified(),
        _ => false,
    })
}

fn path_of(endpoint: &ConnectedPoint) -> Path {
    if endpoint
        .get_remote_address()
        .iter()
        .any(|p| matches!(p, Protocol::P2pCircuit))
    {
        Path::Relayed
    } else {
        Path::Direct
    }
}

impl Network {
    pub fn new(
        swarm: Swarm<Behaviour>,
        key: Keypair,
        secret: ClusterSecret,
        node: Arc<Node>,
        net: Arc<NetState>,
        config: NetworkConfig,
        segment: String,
    ) -> Self {
        let peer = key.public().to_peer_id().to_string();
        Network {
            announcer: LocalAnnouncer::new(peer, config.node_name.clone(), segment),
            swarm,
            key,
            secret,
            node,
            net,
            config,
            topic: IdentTopic::new(OWNERSHIP_TOPIC),
            signed: HashMap::new(),
            addrs: HashMap::new(),
            awaiting_hello: HashMap::new(),
            last_redial: Instant::now() - REDIAL_EVERY,
            connections: HashMap::new(),
            relay_listeners: HashMap::new(),
            bootstrap_peers: HashMap::new(),
        }
    }

    pub fn local_peer(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Runs until the task is aborted. Safe to cancel: all state is rebuilt at start.
    pub async fn run(mut self, local_changed: Arc<Notify>) -> anyhow::Result<()> {
        for addr in self.config.listen.clone() {
            self.swarm
                .listen_on(addr.clone())
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        }
        self.swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&self.topic)?;
        self.announce();
        let mut announce_tick = tokio::time::interval(self.config.announce_every);
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        // A burst of ADDs becomes one announcement, without pausing the swarm meanwhile.
        let mut announce_at: Option<tokio::time::Instant> = None;
        loop {
            let due = announce_at.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                _ = local_changed.notified(), if announce_at.is_none() => {
                    announce_at = Some(tokio::time::Instant::now() + Duration::from_millis(20));
                }
                _ = tokio::time::sleep_until(due), if announce_at.is_some() => {
                    announce_at = None;
                    self.announce();
                }
                _ = announce_tick.tick() => {
                    self.announce();
                    self.sync_with_random_member();
                }
                _ = housekeeping.tick() => self.housekeeping(),
            }
        }
    }

    fn own_addrs(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .swarm
            .external_addresses()
            .chain(self.swarm.listeners())
            .filter(|a| is_reachable_elsewhere(a))
            .map(|a| a.to_string())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Publishes this node's full pod set with a fresh sequence number.
    fn announce(&mut self) {
        let claims: Vec<PodClaim> = self
            .node
            .registry()
            .list()
            .into_iter()
            .flat_map(|a| {
                let since_ms = a.created_unix.saturating_mul(1000);
                a.ips.into_iter().map(move |ip| PodClaim { ip, since_ms })
            })
            .collect();
        let local: std::collections::HashSet<_> = claims.iter().map(|c| c.ip).collect();
        if self.net.set_local_pods(local) {
            self.net.routes_changed.notify_one();
        }
        let announcement = self.announcer.announce(claims, now_ms());
        let outcome = self.net.table_mut().set_local(announcement.clone());
        if let ApplyOutcome::Rejected(reason) = outcome {
            tracing::error!("own announcement rejected: {reason}");
            return;
        }
        let signed = announce::seal(
            &self.key,
            &self.secret,
            announcement.clone(),
            self.own_addrs(),
        );
        let bytes = announce::encode(&signed);
        self.signed.insert(announcement.peer_id.clone(), signed);
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes)
        {
            Ok(_)
            | Err(gossipsub::PublishError::NoPeersSubscribedToTopic)
            | Err(gossipsub::PublishError::Duplicate) => {}
            Err(e) => tracing::debug!("publish announcement: {e}"),
        }
    }

    fn sync_with_random_member(&mut self) {
        let members: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .filter(|p| self.net.is_member(p))
            .copied()
            .collect();
        if members.is_empty() {
            return;
        }
        let pick = members[rand::random_range(0..members.len())];
        self.request_sync(pick);
    }

    fn request_sync(&mut self, peer: PeerId) {
        let digest = self.net.table().digest();
        self.swarm
            .behaviour_mut()
            .control
            .send_request(&peer, ControlRequest::Sync { digest });
    }

    /// Listens through every relay we hold no reservation on; run again after a relay
    /// restart or a lost connection, so the reservation comes back.
    fn reserve_on_relays(&mut self) {
        for relay in self.config.relays.clone() {
            if self.relay_listeners.values().any(|r| *r == relay) {
                continue;
            }
            match self
                .swarm
                .listen_on(relay.clone().with(Protocol::P2pCircuit))
            {
                Ok(id) => {
                    self.relay_listeners.insert(id, relay);
                }
                Err(e) => tracing::warn!(%relay, "cannot listen through relay: {e}"),
            }
        }
    }

    /// Records a connection's path; a direct connection retires the relayed ones, so the
    /// packet stream (re)opens on the direct path.
    fn connection_opened(&mut self, peer: PeerId, id: ConnectionId, path: Path) {
        let conns = self.connections.entry(peer).or_default();
        conns.push((id, path));
        if conns.iter().any(|(_, p)| *p == Path::Direct) {
            let relayed: Vec<ConnectionId> = conns
                .iter()
                .filter(|(_, p)| *p == Path::Relayed)
                .map(|(c, _)| *c)
                .collect();
            for c in relayed {
                tracing::info!(%peer, "direct connection up; closing the relayed one");
                self.swarm.close_connection(c);
            }
        }
        self.refresh_path(peer);
    }

    fn connection_closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(conns) = self.connections.get_mut(&peer) {
            conns.retain(|(c, _)| *c != id);
            if conns.is_empty() {
                self.connections.remove(&peer);
            }
        }
        self.refresh_path(peer);
    }

    /// The peer's path is direct if any direct connection is open, else relayed.
    fn refresh_path(&mut self, peer: PeerId) {
        let path = self.connections.get(&peer).and_then(|conns| {
            if conns.iter().any(|(_, p)| *p == Path::Direct) {
                Some(Path::Direct)
            } else {
                conns.first().map(|_| Path::Relayed)
            }
        });
        let before = self.net.link(&peer).path;
        self.net.update_link(peer, |l| l.path = path);
        if before == path {
            return;
        }
        let metrics = &self.node.metrics;
        for p in [Path::Direct, Path::Relayed] {
            let labels = PathLabels {
                peer: peer.to_string(),
                path: p.as_str(),
            };
            if Some(p) == path && self.net.is_member(&peer) {
                metrics.peer_path.get_or_create(&labels).set(1);
            } else {
                metrics.peer_path.remove(&labels);
            }
        }
        if let (Some(b), Some(a)) = (before, path) {
            tracing::info!(%peer, from = b.as_str(), to = a.as_str(), "path changed");
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        let expired = self.net.table_mut().expire(now);
        for (peer, ips) in &expired {
            tracing::info!(%peer, pods = ips.len(), "peer unseen past the grace period; forgetting its pods");
            self.signed.remove(peer);
        }
        if !expired.is_empty() {
            self.net.routes_changed.notify_one();
        }
        let late: Vec<PeerId> = self
            .awaiting_hello
            .iter()
            .filter(|(_, since)| now.duration_since(**since) > AUTH_DEADLINE)
            .map(|(p, _)| *p)
            .collect();
        for peer in late {
            tracing::warn!(%peer, "peer did not prove cluster membership in time; disconnecting");
            self.node.metrics.auth_failures.inc();
            self.awaiting_hello.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        if now.duration_since(self.last_redial) >= REDIAL_EVERY {
            self.last_redial = now;
            self.reserve_on_relays();
            self.redial();
        }
    }

    /// Keeps a connection to every bootstrap peer and every member that owns pods.
    fn redial(&mut self) {
        for addr in self.config.bootstrap.clone() {
            // Without /p2p/ in the config, the peer is the one we reached there before.
            let peer = addr
                .iter()
                .find_map(|p| match p {
                    Protocol::P2p(id) => Some(id),
                    _ => None,
                })
                .or_else(|| self.bootstrap_peers.get(&addr).copied());
            if peer.is_some_and(|p| self.swarm.is_connected(&p)) {
                continue;
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, "dial bootstrap: {e}");
            }
        }
        let local = self.local_peer();
        let wanted: Vec<PeerId> = self
            .net
            .table()
            .peers()
            .filter(|p| p.pods > 0)
            .filter_map(|p| p.peer_id.parse().ok())
            .filter(|p| *p != local)
            .collect();
        for peer in wanted {
            if self.swarm.is_connected(&peer) {
                continue;
            }
            if let Some(addrs) = self.addrs.get(&peer) {
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(addrs.clone())
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(%peer, "dial member: {e}");
                }
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                // A relay is public by definition, and libp2p's relay refuses reservations
                // until it knows an external address of its own.
                let concrete = is_reachable_elsewhere(&address)
                    && !address.iter().any(|p| matches!(p, Protocol::P2pCircuit));
                if self.swarm.behaviour().relay_server.is_enabled() && concrete {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.net.update_link(peer_id, |l| {
                    l.remote_addr = Some(endpoint.get_remote_address().to_string());
                });
                if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                    // The swarm may have appended /p2p/<id> to what we dialled.
                    let mut dialled = address.clone();
                    if matches!(dialled.iter().last(), Some(Protocol::P2p(_))) {
                        dialled.pop();
                    }
                    if self.config.bootstrap.contains(&dialled) {
                        self.bootstrap_peers.insert(dialled, peer_id);
                    }
                }
                self.connection_opened(peer_id, connection_id, path_of(&endpoint));
                if num_established.get() == 1 {
                    self.awaiting_hello.insert(peer_id, Instant::now());
                    let hello = ControlRequest::Hello {
                        token: self.secret.token_for(&self.local_peer()),
                        node_name: self.config.node_name.clone(),
                    };
                    self.swarm
                        .behaviour_mut()
                        .control
                        .send_request(&peer_id, hello);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.connection_closed(peer_id, connection_id);
                if num_established == 0 {
                    self.awaiting_hello.remove(&peer_id);
                    if self.net.set_member(peer_id, false) {
                        tracing::info!(peer = %peer_id, "member disconnected");
                    }
                    self.net.drop_link(&peer_id);
                    self.node.metrics.peer_rtt.remove(&PeerLabels {
                        peer: peer_id.to_string(),
                    });
                    self.node.metrics.peers.set(self.net.member_count() as i64);
                }
            }
            SwarmEvent::NewExternalAddrCandidate { address } => {
                tracing::debug!(%address, "external address candidate");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::debug!(%address, "external address confirmed");
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(relay) = self.relay_listeners.remove(&listener_id) {
                    tracing::warn!(%relay, ?reason, "lost the reservation on a relay; will re-reserve");
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some(relay) = self.relay_listeners.get(&listener_id) {
                    tracing::warn!(%relay, "relay listener error: {error}");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(
                relay::client::Event::ReservationReqAccepted {
                    relay_peer_id,
                    renewal: false,
                    ..
                },
            )) => {
                tracing::info!(relay = %relay_peer_id, "reserved a slot on the relay");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => match result {
                Ok(_) => tracing::info!(peer = %remote_peer_id, "hole punched: direct connection"),
                Err(e) => {
                    tracing::info!(peer = %remote_peer_id, "hole punching failed, staying relayed: {e}")
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged {
                old,
                new,
            })) => {
                tracing::info!(?old, ?new, "reachability changed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, "outgoing connection failed: {error}");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Control(ev)) => self.on_control(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let verdict = if self.net.is_member(&propagation_source) {
                    match announce::decode(&message.data) {
                        Ok(signed) => self.accept_signed(signed),
                        Err(e) => {
                            tracing::debug!("undecodable announcement: {e}");
                            MessageAcceptance::Reject
                        }
                    }
                } else {
                    MessageAcceptance::Reject
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, verdict);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => {
                self.net.update_link(peer, |l| l.rtt = Some(rtt));
                // Members only: a stranger cycling peer IDs must not grow /metrics.
                if self.net.is_member(&peer) {
                    self.node
                        .metrics
                        .peer_rtt
                        .get_or_create(&PeerLabels {
                            peer: peer.to_string(),
                        })
                        .set(rtt.as_secs_f64());
                    self.net
                        .table_mut()
                        .peer_seen(&peer.to_string(), Instant::now());
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(e),
            })) => {
                // libp2p never closes a connection whose pings fail; a peer that vanished
                // without a FIN would hold our streams forever. Closing lets us redial.
                tracing::info!(%peer, "ping failed ({e}); closing the connection");
                self.swarm.close_connection(connection);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                tracing::debug!(peer = %peer_id, observed = %info.observed_addr, "identified");
                for addr in info.listen_addrs {
                    self.swarm.add_peer_address(peer_id, addr);
                }
            }
            _ => {}
        }
    }

    fn on_control(&mut self, ev: request_response::Event<ControlRequest, ControlResponse>) {
        match ev {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_request(peer, request, channel),
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => match response {
                ControlResponse::Welcome => {}
                ControlResponse::Denied(reason) => {
                    tracing::warn!(%peer, "peer refused us: {reason}; is the cluster secret the same on both nodes?")
                }
                ControlResponse::Announcements(list) => {
                    if self.net.is_member(&peer) {
                        for signed in list {
                            self.accept_signed(signed);
                        }
                    }
                }
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "control request failed: {error}");
            }
            _ => {}
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        request: ControlRequest,
        channel: ResponseChannel<ControlResponse>,
    ) {
        let response = match request {
            ControlRequest::Hello { token, node_name } => {
                if self.secret.verify(&peer, &token) {
                    self.awaiting_hello.remove(&peer);
                    if self.net.set_member(peer, true) {
                        tracing::info!(%peer, node = %node_name, "peer proved cluster membership");
                        self.node.metrics.peers.set(self.net.member_count() as i64);
                        let link = self.net.link(&peer);
                        if let Some(path) = link.path {
                            self.node
                                .metrics
                                .peer_path
                                .get_or_create(&PathLabels {
                                    peer: peer.to_string(),
                                    path: path.as_str(),
                                })
                                .set(1);
                        }
                        self.request_sync(peer);
                    }
                    ControlResponse::Welcome
                } else {
                    tracing::warn!(%peer, node = %node_name, "peer presented an invalid cluster membership token; disconnecting");
                    self.node.metrics.auth_failures.inc();
                    self.awaiting_hello.remove(&peer);
                    let _ = self.swarm.behaviour_mut().control.send_response(
                        channel,
                        ControlResponse::Denied("invalid cluster membership token".into()),
                    );
                    let _ = self.swarm.disconnect_peer_id(peer);
                    return;
                }
            }
            ControlRequest::Sync { digest } if self.net.is_member(&peer) => {
                let newer = self.net.table().newer_than(&digest);
                ControlResponse::Announcements(
                    newer
                        .iter()
                        .filter_map(|a| self.signed.get(&a.peer_id).cloned())
                        .collect(),
                )
            }
            ControlRequest::Sync { .. } => {
                ControlResponse::Denied("prove cluster membership first".into())
            }
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .control
            .send_response(channel, response);
    }

    /// Checks and merges one announcement, from gossip or from a sync.
    fn accept_signed(&mut self, signed: SignedAnnouncement) -> MessageAcceptance {
        let count = |net: &Node, reason: &'static str| {
            net.metrics
                .announcements
                .get_or_create(&ReasonLabels { reason })
                .inc()
        };
        let Opened {
            announcement,
            author,
            addrs,
        } = match announce::open(&self.secret, &signed) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("refused announcement: {e}");
                count(&self.node, "refused");
                return MessageAcceptance::Reject;
            }
        };
        // Conflicts go to the newest claim, and the author picks its own timestamps: one far
        // in the future would win every address. Refuse clocks that run ahead.
        if announcement.seq > now_ms().saturating_add(MAX_CLOCK_AHEAD_MS) {
            tracing::warn!(peer = %author, seq = announcement.seq, "announcement is dated in the future; refused");
            count(&self.node, "refused");
            return MessageAcceptance::Reject;
        }
        let peer_key = announcement.peer_id.clone();
        let outcome = self.net.table_mut().apply(announcement, Instant::now());
        match outcome {
            ApplyOutcome::Accepted { added, removed } => {
                count(&self.node, "accepted");
                tracing::debug!(peer = %author, added = added.len(), removed = removed.len(), "ownership changed");
                let addrs: Vec<Multiaddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
                for a in &addrs {
                    self.swarm.add_peer_address(author, a.clone());
                }
                self.addrs.insert(author, addrs);
                self.signed.insert(peer_key, signed);
                self.net.routes_changed.notify_one();
                MessageAcceptance::Accept
            }
            ApplyOutcome::Stale => MessageAcceptance::Ignore,
            ApplyOutcome::Local { seq } => {
                // Our own old announcement: make sure the next one outbids it.
                self.announcer.observe_own_seq(seq);
                MessageAcceptance::Ignore
            }
            ApplyOutcome::Rejected(reason) => {
                tracing::warn!(peer = %author, "rejected announcement: {reason}");
                count(&self.node, "rejected");
                MessageAcceptance::Reject
            }
        }
    }
}
