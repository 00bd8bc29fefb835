//! Path selection per peer, as a state machine fed connection events and the clock. The
//! network loop carries out the actions it returns.
//!
//! - A direct connection wins: opening one retires the peer's relayed connections.
//! - A peer reached only through a relay gets a fresh upgrade attempt after `retry_every`,
//!   then after twice, four times ... as long (up to 16 times): a direct dial, and a new
//!   relayed connection, on which the peer starts hole punching again (DCUtR only runs
//!   when a relayed connection opens). libp2p opens a stream on a random connection, so
//!   each attempt can cost a packet stream on the spare connection: a peer behind a
//!   symmetric NAT is not disturbed every `retry_every`.
//! - Extra relayed connections that an attempt left behind are closed once it has had
//!   time to finish; the oldest one stays, because the packet streams ride on it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use libp2p::PeerId;

use crate::netstate::Path;

/// How long an upgrade attempt may take before its spare relayed connection is closed.
pub const ATTEMPT_SETTLE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Close(PeerId, ConnectionId),
    /// Dial the peer directly, and through a relay, even though it is connected.
    TryUpgrade(PeerId),
}

#[derive(Debug)]
struct Conn {
    id: ConnectionId,
    path: Path,
    remote_addr: String,
    opened: Instant,
}

/// Upgrade attempts back off up to `retry_every` times 2^MAX_BACKOFF_DOUBLINGS.
const MAX_BACKOFF_DOUBLINGS: u32 = 4;

#[derive(Debug, Default)]
struct PeerPaths {
    conns: Vec<Conn>,
    last_attempt: Option<Instant>,
    /// Attempts since the peer was last reached directly.
    attempts: u32,
}

impl PeerPaths {
    fn has_direct(&self) -> bool {
        self.conns.iter().any(|c| c.path == Path::Direct)
    }
}

#[derive(Debug)]
pub struct PathSelector {
    peers: HashMap<PeerId, PeerPaths>,
    /// `None`: no upgrade attempts after the first (hole punching is off).
    retry_every: Option<Duration>,
}

impl PathSelector {
    pub fn new(retry_every: Option<Duration>) -> Self {
        PathSelector {
            peers: HashMap::new(),
            retry_every,
        }
    }

    pub fn opened(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        path: Path,
        remote_addr: String,
        now: Instant,
    ) -> Vec<Action> {
        let p = self.peers.entry(peer).or_default();
        // The first relayed connection runs hole punching by itself: count it as an attempt.
        if p.conns.is_empty() && path == Path::Relayed {
            p.last_attempt = Some(now);
        }
        p.conns.push(Conn {
            id,
            path,
            remote_addr,
            opened: now,
        });
        if path == Path::Direct {
            p.attempts = 0;
        } else {
            // A late relayed connection (the peer's own upgrade attempt) is not needed.
            return if p.has_direct() {
                vec![Action::Close(peer, id)]
            } else {
                vec![]
            };
        }
        p.conns
            .iter()
            .filter(|c| c.path == Path::Relayed)
            .map(|c| Action::Close(peer, c.id))
            .collect()
    }

    pub fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.conns.retain(|c| c.id != id);
            if p.conns.is_empty() {
                self.peers.remove(&peer);
            }
        }
    }

    /// The connection pod traffic prefers: the oldest direct one, else the oldest relayed
    /// one; `None` when not connected.
    pub fn current(&self, peer: &PeerId) -> Option<(Path, &str)> {
        let p = self.peers.get(peer)?;
        p.conns
            .iter()
            .find(|c| c.path == Path::Direct)
            .or(p.conns.first())
            .map(|c| (c.path, c.remote_addr.as_str()))
    }

    pub fn connections(&self, peer: &PeerId) -> Vec<ConnectionId> {
        self.peers
            .get(peer)
            .map(|p| p.conns.iter().map(|c| c.id).collect())
            .unwrap_or_default()
    }

    pub fn path(&self, peer: &PeerId) -> Option<Path> {
        self.current(peer).map(|(path, _)| path)
    }

    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for (peer, p) in &mut self.peers {
            if p.has_direct() {
                continue;
            }
            let settled = p
                .last_attempt
                .is_none_or(|t| now.duration_since(t) >= ATTEMPT_SETTLE);
            if settled && p.conns.len() > 1 {
                let oldest = p.conns.iter().min_by_key(|c| c.opened).map(|c| c.id);
                actions.extend(
                    p.conns
                        .iter()
                        .filter(|c| Some(c.id) != oldest)
                        .map(|c| Action::Close(*peer, c.id)),
                );
            }
            let Some(every) = self.retry_every else {
                continue;
            };
            let wait = every * 2u32.pow(p.attempts.min(MAX_BACKOFF_DOUBLINGS));
            if p.last_attempt.is_none_or(|t| now.duration_since(t) >= wait) {
                p.last_attempt = Some(now);
                p.attempts += 1;
                actions.push(Action::TryUpgrade(*peer));
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    fn addr() -> String {
        "/ip4/203.0.113.2/udp/7333/quic-v1".into()
    }

    #[test]
    fn direct_retires_relayed() {
        let (peer, t0) = (PeerId::random(), Instant::now());
        let mut s = PathSelector::new(Some(Duration::from_secs(30)));
        assert!(s
            .opened(peer, conn(1), Path::Relayed, addr(), t0)
            .is_empty());
        assert_eq!(s.path(&peer), Some(Path::Relayed));
        let actions = s.opened(
            peer,
            conn(2),
            Path::Direct,
            addr(),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(actions, vec![Action::Close(peer, conn(1))]);
        assert_eq!(s.path(&peer), Some(Path::Direct));
        s.closed(peer, conn(1));
        assert_eq!(s.path(&peer), Some(Path::Direct));
        // A direct peer is never asked to upgrade.
        assert!(s.tick(t0 + Duration::from_secs(600)).is_empty());
        s.closed(peer, conn(2));
        assert_eq!(s.path(&peer), None);
    }

    #[test]
    fn relayed_peer_retries_and_spare_connections_close() {
        let (peer, t0) = (PeerId::random(), Instant::now());
        let mut s = PathSelector::new(Some(Duration::from_secs(30)));
        s.opened(peer, conn(1), Path::Relayed, addr(), t0);
        // The first connection's own hole punching counts: no attempt before 30 s.
        assert!(s.tick(t0 + Duration::from_secs(29)).is_empty());
        let at = t0 + Duration::from_secs(30);
        assert_eq!(s.tick(at), vec![Action::TryUpgrade(peer)]);
        // The attempt's relayed connection opens, hole punching fails...
        s.opened(
            peer,
            conn(2),
            Path::Relayed,
            addr(),
            at + Duration::from_secs(1),
        );
        assert!(s.tick(at + Duration::from_secs(10)).is_empty());
        // ...and once it has had time, the spare one closes and the oldest stays.
        assert_eq!(
            s.tick(at + ATTEMPT_SETTLE),
            vec![Action::Close(peer, conn(2))]
        );
        s.closed(peer, conn(2));
        assert_eq!(s.path(&peer), Some(Path::Relayed));
        // The next attempt waits twice as long, the one after four times.
        assert!(s.tick(at + Duration::from_secs(59)).is_empty());
        let at = at + Duration::from_secs(60);
        assert_eq!(s.tick(at), vec![Action::TryUpgrade(peer)]);
        assert!(s.tick(at + Duration::from_secs(119)).is_empty());
        assert_eq!(
            s.tick(at + Duration::from_secs(120)),
            vec![Action::TryUpgrade(peer)]
        );
    }

    #[test]
    fn no_retries_without_hole_punching() {
        let (peer, t0) = (PeerId::random(), Instant::now());
        let mut s = PathSelector::new(None);
        s.opened(peer, conn(1), Path::Relayed, addr(), t0);
        assert!(s.tick(t0 + Duration::from_secs(3600)).is_empty());
    }

    #[test]
    fn a_relayed_connection_beside_a_direct_one_closes() {
        let (peer, t0) = (PeerId::random(), Instant::now());
        let mut s = PathSelector::new(Some(Duration::from_secs(30)));
        s.opened(peer, conn(1), Path::Direct, addr(), t0);
        assert_eq!(
            s.opened(peer, conn(2), Path::Relayed, addr(), t0),
            vec![Action::Close(peer, conn(2))]
        );
    }

    #[test]
    fn a_peer_reached_directly_first_is_not_retried() {
        let (peer, t0) = (PeerId::random(), Instant::now());
        let mut s = PathSelector::new(Some(Duration::from_secs(1)));
        assert!(s.opened(peer, conn(1), Path::Direct, addr(), t0).is_empty());
        assert!(s.tick(t0 + Duration::from_secs(5)).is_empty());
    }
}
