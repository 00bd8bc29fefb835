//! The one task that owns the libp2p swarm: membership, ownership gossip, anti-entropy
//! sync, liveness and link facts. Everything else reads [`NetState`] or talks to it
//! through the notifications it waits on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{autonat, dcutr, relay};
use libp2p::{identify, ping, Multiaddr, PeerId, Swarm};
use tokio::sync::Notify;

use super::announce::{self, Opened, SignedAnnouncement};
use super::behaviour::{
    Behaviour, BehaviourEvent, ControlRequest, ControlResponse, OWNERSHIP_TOPIC,
};
use super::grants::{self, GrantPolicy};
use super::membership::ClusterSecret;
use super::paths::{Action, PathSelector};
use crate::metrics::{PathLabels, PeerLabels, ReasonLabels};
use crate::netstate::{NetState, Path, SHOWN_PATHS};
use crate::node::Node;
use crate::ownership::{ApplyOutcome, LocalAnnouncer, PodClaim, RejectReason};

/// A peer that has not proved membership this long after connecting is dropped.
const AUTH_DEADLINE: Duration = Duration::from_secs(10);
/// How far ahead of our clock an announcement may be dated (clock skew between nodes).
const MAX_CLOCK_AHEAD_MS: u64 = 5 * 60 * 1000;
/// Bootstrap peers and known members we are not connected to are redialled this often.
const REDIAL_EVERY: Duration = Duration::from_secs(5);
/// A member lost this recently is redialled every second: its relay may be back, or its
/// reservation renewed, at any moment.
const FAST_REDIAL_FOR: Duration = Duration::from_secs(30);

pub struct NetworkConfig {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// Relays to hold a reservation on (listening on `<relay>/p2p-circuit`).
    pub relays: Vec<Multiaddr>,
    pub announce_every: Duration,
    /// `None` when hole punching is off: no upgrade attempts for relayed peers.
    pub upgrade_retry: Option<Duration>,
    pub node_name: String,
    /// This node's grant and, with a cluster CA, the check of peers' grants.
    pub grants: Option<GrantPolicy>,
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
    /// Peers that accepted our hello, and the hellos still unanswered.
    welcomed: HashSet<PeerId>,
    hellos_in_flight: HashMap<PeerId, OutboundRequestId>,
    /// Random per start of this agent, and the last value each peer sent.
    boot: u64,
    peer_boots: HashMap<PeerId, u64>,
    last_redial: Instant,
    /// On a relay: reservations held, per agent.
    relay_reservations: HashMap<PeerId, u32>,
    /// Members whose last connection closed, and when.
    lost: HashMap<PeerId, Instant>,
    /// Open connections per peer and their paths: a direct one replaces relayed ones.
    paths: PathSelector,
    /// Our circuit listeners, one per relay: a closed one is re-opened (re-reserved).
    relay_listeners: HashMap<ListenerId, Multiaddr>,
    /// Who answered at each bootstrap address given without a peer ID.
    bootstrap_peers: HashMap<Multiaddr, PeerId>,
    /// Local pod IPs outside our own grant, as last warned about.
    outside_grant: Vec<std::net::IpAddr>,
    /// A reservation was lost, or a relay came back: re-reserve on the relays we are
    /// connected to at the next tick, not at the next full round.
    reserve_soon: bool,
    /// With a CA: when each peer's grant expires, and its claims we last ignored.
    grant_expiry: HashMap<PeerId, u64>,
    ignored_claims: HashMap<PeerId, Vec<std::net::IpAddr>>,
}

fn now_ms() -> u64 {
    edgeway_common::unix_now().as_millis() as u64
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
    // An inbound circuit's remote address is only `/p2p/<peer>`: the circuit shows in
    // the local address, which `is_relayed` looks at.
    if endpoint.is_relayed() {
        Path::Relayed
    } else {
        Path::Direct
    }
}

/// The claims a grant check left out, and what the peer's grant allowed.
type GrantCheck = (Vec<std::net::IpAddr>, grants::Allowed);

/// The peer an address names with `/p2p/<id>`, if it does.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The address to show for a connection: the circuit for an inbound relayed one.
fn shown_addr(endpoint: &ConnectedPoint) -> String {
    match endpoint {
        ConnectedPoint::Listener { local_addr, .. } if endpoint.is_relayed() => {
            local_addr.to_string()
        }
        _ => endpoint.get_remote_address().to_string(),
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
        let paths = PathSelector::new(config.upgrade_retry);
        let not_after = config.grants.as_ref().and_then(GrantPolicy::own_not_after);
        node.metrics
            .grant_not_after
            .set(not_after.unwrap_or(0) as i64);
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
            welcomed: HashSet::new(),
            hellos_in_flight: HashMap::new(),
            boot: rand::random(),
            peer_boots: HashMap::new(),
            last_redial: Instant::now() - REDIAL_EVERY,
            lost: HashMap::new(),
            relay_reservations: HashMap::new(),
            paths,
            relay_listeners: HashMap::new(),
            bootstrap_peers: HashMap::new(),
            outside_grant: Vec::new(),
            reserve_soon: false,
            grant_expiry: HashMap::new(),
            ignored_claims: HashMap::new(),
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
        self.check_own_grant(&claims);
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
            self.config.grants.as_ref().and_then(GrantPolicy::own_grant),
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

    /// Peers ignore our pods outside our grant: say so once each time that set changes.
    fn check_own_grant(&mut self, claims: &[PodClaim]) {
        let Some(policy) = &self.config.grants else {
            return;
        };
        let cidrs = policy.own_cidrs(now_ms() / 1000);
        let outside = grants::outside(cidrs, claims.iter().map(|c| c.ip));
        self.node
            .metrics
            .local_pods_outside_grant
            .set(outside.len() as i64);
        if !outside.is_empty() && outside != self.outside_grant {
            tracing::warn!(
                ?outside,
                grant = ?cidrs,
                "local pods outside this node's grant: peers that check grants will not route to them"
            );
        }
        self.outside_grant = outside;
    }

    /// A grant that expires takes the peer's claims with it, even if the peer goes quiet.
    fn expire_grants(&mut self) {
        let now = now_ms() / 1000;
        let expired: Vec<PeerId> = self
            .grant_expiry
            .iter()
            .filter(|(_, not_after)| now > **not_after)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            self.grant_expiry.remove(&peer);
            let ips = self.net.table_mut().forget(&peer.to_string());
            self.signed.remove(&peer.to_string());
            tracing::warn!(%peer, pods = ips.len(), "peer's grant expired; ignoring its pods");
            self.node
                .metrics
                .claims_ignored
                .get_or_create(&ReasonLabels {
                    reason: "invalid_grant",
                })
                .inc_by(ips.len() as u64);
            self.net.routes_changed.notify_one();
        }
    }

    /// Filters a peer's claims to its grant; `Ok(None)` when this node checks no grants.
    /// The whole announcement is validated first, so that a bad one is refused here
    /// exactly as on nodes that check no grants.
    fn apply_grant(
        &self,
        announcement: &mut crate::ownership::Announcement,
        grant: Option<&grants::Grant>,
        author: &PeerId,
    ) -> Result<Option<GrantCheck>, RejectReason> {
        let Some(ca) = self.config.grants.as_ref().and_then(|g| g.ca.as_ref()) else {
            return Ok(None);
        };
        announcement.validate()?;
        let allowed = ca.allowed(grant, author, now_ms() / 1000);
        let dropped = grants::keep_granted(&mut announcement.pods, allowed.cidrs());
        Ok(Some((dropped, allowed)))
    }

    /// Counts claims left out by `apply_grant`, and says so when that set changes.
    fn note_grant(&mut self, author: PeerId, checked: Option<GrantCheck>) {
        let Some((dropped, allowed)) = checked else {
            return;
        };
        match &allowed {
            grants::Allowed::Granted(body) => self.grant_expiry.insert(author, body.not_after_unix),
            _ => self.grant_expiry.remove(&author),
        };
        if dropped.is_empty() {
            self.ignored_claims.remove(&author);
            return;
        }
        let reason = allowed.reason();
        self.node
            .metrics
            .claims_ignored
            .get_or_create(&ReasonLabels { reason })
            .inc_by(dropped.len() as u64);
        if self.ignored_claims.get(&author) != Some(&dropped) {
            let why = match &allowed {
                grants::Allowed::Invalid(e) => e.to_string(),
                _ => reason.to_string(),
            };
            tracing::warn!(peer = %author, ?dropped, %why, "ignoring pod claims the peer's grant does not cover");
            self.ignored_claims.insert(author, dropped);
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

    fn is_relay(&self, peer: &PeerId) -> bool {
        self.config
            .relays
            .iter()
            .any(|r| r.iter().any(|p| p == Protocol::P2p(*peer)))
    }

    /// A member's hello: a restart shows in a new boot value (its older connections are
    /// then dead), and a peer that asks for our hello, or restarted, has forgotten it.
    fn peer_hello(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        boot: u64,
        want_hello: bool,
        was_member: bool,
    ) {
        let restarted = self
            .peer_boots
            .insert(peer, boot)
            .is_some_and(|before| before != boot);
        // A member that asks for our hello has lost every connection it had to us, so
        // ours that are older than this one are dead too: its relay went away, say, and
        // we have not noticed yet. Replies sent on them would be lost until they time out.
        let lost_us = want_hello && was_member;
        if restarted || lost_us {
            tracing::info!(%peer, restarted, "peer restarted or lost us; closing our older connections to it");
            for old in self.paths.connections(&peer) {
                if old != connection {
                    self.swarm.close_connection(old);
                }
            }
        }
        if restarted || want_hello {
            self.welcomed.remove(&peer);
            self.send_hello(peer);
        }
    }

    /// Proves our membership to a connected peer that has not welcomed us yet, once at a
    /// time; it is sent again if the connection carrying it closes first.
    fn send_hello(&mut self, peer: PeerId) {
        if self.welcomed.contains(&peer)
            || self.hellos_in_flight.contains_key(&peer)
            || !self.swarm.is_connected(&peer)
        {
            return;
        }
        let hello = ControlRequest::Hello {
            token: self.secret.token_for(&self.local_peer()),
            node_name: self.config.node_name.clone(),
            boot: self.boot,
            want_hello: !self.net.is_member(&peer),
        };
        let id = self
            .swarm
            .behaviour_mut()
            .control
            .send_request(&peer, hello);
        self.hellos_in_flight.insert(peer, id);
    }

    /// Listens through every relay we hold no reservation on; run again after a relay
    /// restart or a lost connection, so the reservation comes back.
    /// Listens through every relay we hold no reservation on; with `connected_only`, only
    /// through those we are connected to (a relay that is down is tried at the full round).
    fn reserve_on_relays(&mut self, connected_only: bool) {
        for relay in self.config.relays.clone() {
            if self.relay_listeners.values().any(|r| *r == relay) {
                continue;
            }
            if connected_only && !peer_of(&relay).is_some_and(|p| self.swarm.is_connected(&p)) {
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

    fn connection_opened(&mut self, peer: PeerId, id: ConnectionId, endpoint: &ConnectedPoint) {
        let addr = shown_addr(endpoint);
        let actions = self
            .paths
            .opened(peer, id, path_of(endpoint), addr, Instant::now());
        self.perform(actions);
        self.refresh_path(peer);
    }

    fn connection_closed(&mut self, peer: PeerId, id: ConnectionId) {
        self.paths.closed(peer, id);
        self.refresh_path(peer);
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Close(peer, conn) => {
                    tracing::debug!(%peer, ?conn, "closing a relayed connection that is no longer needed");
                    self.swarm.close_connection(conn);
                }
                Action::TryUpgrade(peer) => self.try_upgrade(peer),
            }
        }
    }

    /// Dials a relayed-only peer directly, in case it became reachable, and opens a fresh
    /// relayed connection, on which the peer starts hole punching again.
    fn try_upgrade(&mut self, peer: PeerId) {
        let Some(addrs) = self.addrs.get(&peer) else {
            return;
        };
        let (relayed, direct): (Vec<Multiaddr>, Vec<Multiaddr>) =
            addrs.iter().cloned().partition(is_circuit);
        tracing::debug!(%peer, direct = direct.len(), relayed = relayed.len(), "trying to upgrade a relayed path");
        for candidates in [direct, relayed.into_iter().take(1).collect()] {
            if candidates.is_empty() {
                continue;
            }
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::Always)
                .addresses(candidates)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, "upgrade dial: {e}");
            }
        }
    }

    /// The peer's path is direct if any direct connection is open, else relayed.
    fn refresh_path(&mut self, peer: PeerId) {
        let current = self.paths.current(&peer);
        let path = current.map(|(p, _)| p);
        let addr = current.map(|(_, a)| a.to_string());
        let before = self.net.link(&peer).path;
        self.net.update_link(peer, |l| {
            l.path = path;
            l.remote_addr = addr;
        });
        if before == path {
            return;
        }
        self.publish_path(peer);
        if let (Some(b), Some(a)) = (before, path) {
            tracing::info!(%peer, from = b.as_str(), to = a.as_str(), "path changed");
        }
    }

    /// Sets `edgeway_peer_path` to the one path a member's pod traffic takes: `native` for
    /// a peer in our own segment, else its connection's path.
    fn publish_path(&self, peer: PeerId) {
        let key = peer.to_string();
        let shown = self
            .net
            .link(&peer)
            .path
            .filter(|_| self.net.is_member(&peer))
            .map(|p| {
                p.shown(
                    self.net
                        .table()
                        .announcement(&key)
                        .is_some_and(|a| a.segment == self.announcer.segment()),
                )
            });
        for path in SHOWN_PATHS {
            let labels = PathLabels {
                peer: key.clone(),
                path,
            };
            if Some(path) == shown {
                self.node.metrics.peer_path.get_or_create(&labels).set(1);
            } else {
                self.node.metrics.peer_path.remove(&labels);
            }
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        self.expire_grants();
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
        let actions = self.paths.tick(now);
        self.perform(actions);
        self.lost
            .retain(|_, at| now.duration_since(*at) < FAST_REDIAL_FOR);
        let full = now.duration_since(self.last_redial) >= REDIAL_EVERY;
        if full {
            self.last_redial = now;
            self.reserve_on_relays(false);
        } else if std::mem::take(&mut self.reserve_soon) {
            self.reserve_on_relays(true);
        }
        self.redial(full);
    }

    fn redial_bootstrap(&mut self) {
        for addr in self.config.bootstrap.clone() {
            // Without /p2p/ in the config, the peer is the one we reached there before.
            let peer = peer_of(&addr).or_else(|| self.bootstrap_peers.get(&addr).copied());
            if peer.is_some_and(|p| self.swarm.is_connected(&p)) {
                continue;
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, "dial bootstrap: {e}");
            }
        }
    }

    /// Keeps a connection to every bootstrap peer and every member that owns pods; `full`
    /// every REDIAL_EVERY, else only members lost in the last FAST_REDIAL_FOR.
    fn redial(&mut self, full: bool) {
        if full {
            self.redial_bootstrap();
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
            if self.swarm.is_connected(&peer) || !(full || self.lost.contains_key(&peer)) {
                continue;
            }
            let Some(addrs) = self.addrs.get(&peer) else {
                continue;
            };
            let (circuits, direct): (Vec<Multiaddr>, Vec<Multiaddr>) =
                addrs.iter().cloned().partition(is_circuit);
            // Circuits are dialled on their own and anew each time: a dial still waiting
            // on an address that NAT silently drops must not hold up a relay that is back.
            // Direct addresses wait for the full round.
            let mut dials = vec![(circuits, PeerCondition::Always)];
            if full {
                dials.push((direct, PeerCondition::DisconnectedAndNotDialing));
            }
            for (addrs, condition) in dials {
                if addrs.is_empty() {
                    continue;
                }
                let opts = DialOpts::peer_id(peer)
                    .condition(condition)
                    .addresses(addrs)
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
                let concrete = is_reachable_elsewhere(&address) && !is_circuit(&address);
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
                self.connection_opened(peer_id, connection_id, &endpoint);
                if self.is_relay(&peer_id) {
                    self.reserve_soon = true;
                }
                if num_established.get() == 1 {
                    self.awaiting_hello.insert(peer_id, Instant::now());
                }
                self.send_hello(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                cause,
            } => {
                self.connection_closed(peer_id, connection_id);
                if let Some(cause) = &cause {
                    tracing::debug!(peer = %peer_id, relayed = endpoint.is_relayed(), "connection closed: {cause}");
                    // A relay that breaks one connection (a TCP reset or EOF: it restarted
                    // or died) has lost them all, but a QUIC one, and every circuit over
                    // it, would hold on until its idle timeout. Drop them now, so the
                    // reservation and the circuits come back at once.
                    if num_established > 0 && self.is_relay(&peer_id) {
                        tracing::info!(relay = %peer_id, "a relay connection broke; reconnecting to it");
                        let _ = self.swarm.disconnect_peer_id(peer_id);
                    }
                }
                if num_established == 0 {
                    self.awaiting_hello.remove(&peer_id);
                    self.welcomed.remove(&peer_id);
                    self.hellos_in_flight.remove(&peer_id);
                    if self.net.set_member(peer_id, false) {
                        tracing::info!(peer = %peer_id, "member disconnected");
                    }
                    self.net.drop_link(&peer_id);
                    // Redial at the next ticks, not in up to REDIAL_EVERY: a lost relay
                    // or path must not cost seconds of traffic.
                    self.last_redial = Instant::now() - REDIAL_EVERY;
                    self.lost.insert(peer_id, Instant::now());
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
                    self.reserve_soon = true;
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
                // Peers behind NAT reach us only through this circuit: tell them now, not
                // at the next announcement.
                self.announce();
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayServer(ev)) => self.on_relay_server(ev),
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

    /// Keeps the relay gauges current; libp2p reports no relayed bytes, so those come
    /// from the underlay (see the NAT end-to-end test).
    fn on_relay_server(&mut self, ev: relay::Event) {
        let m = &self.node.metrics;
        match ev {
            relay::Event::ReservationReqAccepted {
                renewed: false,
                src_peer_id,
                ..
            } => {
                tracing::debug!(peer = %src_peer_id, "relay: reservation accepted");
                *self.relay_reservations.entry(src_peer_id).or_default() += 1;
            }
            // libp2p also reports the close of a reservation it never confirmed: count
            // per peer, never below zero.
            relay::Event::ReservationClosed { src_peer_id }
            | relay::Event::ReservationTimedOut { src_peer_id } => {
                if let Some(n) = self.relay_reservations.get_mut(&src_peer_id) {
                    *n -= 1;
                    if *n == 0 {
                        self.relay_reservations.remove(&src_peer_id);
                    }
                }
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, "relay: circuit opened");
                m.relay_circuits.inc();
            }
            relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                error,
            } => {
                tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, ?error, "relay: circuit closed");
                m.relay_circuits.dec();
            }
            _ => {}
        }
        let held: u32 = self.relay_reservations.values().sum();
        m.relay_reservations.set(i64::from(held));
    }

    fn on_control(&mut self, ev: request_response::Event<ControlRequest, ControlResponse>) {
        match ev {
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
            } => self.on_request(peer, connection_id, request, channel),
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => match response {
                ControlResponse::Welcome => {
                    self.hellos_in_flight.remove(&peer);
                    self.welcomed.insert(peer);
                }
                ControlResponse::Denied(reason) => {
                    self.hellos_in_flight.remove(&peer);
                    // The peer lost our membership (it restarted, say): prove it again.
                    if self.welcomed.remove(&peer) {
                        self.send_hello(peer);
                    }
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
            request_response::Event::OutboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                tracing::debug!(%peer, "control request failed: {error}");
                // The hello rode on a connection that closed (a relayed one retired, say):
                // without another one the peer drops us after AUTH_DEADLINE.
                if self.hellos_in_flight.get(&peer) == Some(&request_id) {
                    self.hellos_in_flight.remove(&peer);
                    self.send_hello(peer);
                }
            }
            _ => {}
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: ControlRequest,
        channel: ResponseChannel<ControlResponse>,
    ) {
        let response = match request {
            ControlRequest::Hello {
                token,
                node_name,
                boot,
                want_hello,
            } => {
                if self.secret.verify(&peer, &token) {
                    self.awaiting_hello.remove(&peer);
                    let was_member = !self.net.set_member(peer, true);
                    if !was_member {
                        tracing::info!(%peer, node = %node_name, "peer proved cluster membership");
                        self.node.metrics.peers.set(self.net.member_count() as i64);
                        self.publish_path(peer);
                        self.request_sync(peer);
                    }
                    // After set_member, so a hello sent back does not ask for another.
                    self.peer_hello(peer, connection, boot, want_hello, was_member);
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
            mut announcement,
            author,
            addrs,
            grant,
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
        // Every member holds the secret, so only the CA can say which pods one owns.
        let peer_key = announcement.peer_id.clone();
        let (outcome, checked) = match self.apply_grant(&mut announcement, grant.as_ref(), &author)
        {
            Err(reason) => (ApplyOutcome::Rejected(reason), None),
            Ok(checked) => (
                self.net.table_mut().apply(announcement, Instant::now()),
                checked,
            ),
        };
        match outcome {
            ApplyOutcome::Accepted { added, removed } => {
                count(&self.node, "accepted");
                self.note_grant(author, checked);
                tracing::debug!(peer = %author, added = added.len(), removed = removed.len(), "ownership changed");
                let addrs: Vec<Multiaddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
                for a in &addrs {
                    self.swarm.add_peer_address(author, a.clone());
                }
                self.addrs.insert(author, addrs);
                self.signed.insert(peer_key, signed);
                self.publish_path(author);
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
