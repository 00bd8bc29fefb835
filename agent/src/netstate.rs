//! What the network loop learns and the data path and route table read: pod ownership,
//! authenticated peers, this node's pod addresses, and per-peer link facts.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use libp2p::PeerId;
use serde::Serialize;
use tokio::sync::Notify;

use crate::ownership::OwnershipTable;

/// How a peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    Direct,
    Relayed,
}

/// Every value `Path::shown` gives, for metrics that clear the others.
pub const SHOWN_PATHS: [&str; 3] = ["native", "direct", "relayed"];

impl Path {
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Relayed => "relayed",
        }
    }

    /// The path pod traffic to a peer takes: `native` (the host CNI) for a peer in this
    /// node's segment, whatever connection the agents hold, else the connection's path.
    pub fn shown(self, same_segment: bool) -> &'static str {
        if same_segment {
            "native"
        } else {
            self.as_str()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LinkFacts {
    pub path: Option<Path>,
    pub rtt: Option<Duration>,
    pub remote_addr: Option<String>,
}

pub struct NetState {
    table: RwLock<OwnershipTable>,
    members: RwLock<HashSet<PeerId>>,
    local_pods: RwLock<HashSet<IpAddr>>,
    links: Mutex<HashMap<PeerId, LinkFacts>>,
    /// Woken when the route table may need to change.
    pub routes_changed: Notify,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Writers never leave these half-updated, so a poisoned lock still holds good data.
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl NetState {
    pub fn new(table: OwnershipTable) -> Self {
        NetState {
            table: RwLock::new(table),
            members: RwLock::new(HashSet::new()),
            local_pods: RwLock::new(HashSet::new()),
            links: Mutex::new(HashMap::new()),
            routes_changed: Notify::new(),
        }
    }

    pub fn table(&self) -> RwLockReadGuard<'_, OwnershipTable> {
        read(&self.table)
    }

    pub fn table_mut(&self) -> RwLockWriteGuard<'_, OwnershipTable> {
        write(&self.table)
    }

    pub fn is_member(&self, peer: &PeerId) -> bool {
        read(&self.members).contains(peer)
    }

    pub fn set_member(&self, peer: PeerId, member: bool) -> bool {
        let mut m = write(&self.members);
        if member {
            m.insert(peer)
        } else {
            m.remove(&peer)
        }
    }

    pub fn member_count(&self) -> usize {
        read(&self.members).len()
    }

    pub fn is_local_pod(&self, ip: &IpAddr) -> bool {
        read(&self.local_pods).contains(ip)
    }

    pub fn local_pods(&self) -> Vec<IpAddr> {
        read(&self.local_pods).iter().copied().collect()
    }

    /// Returns true when the set changed.
    pub fn set_local_pods(&self, pods: HashSet<IpAddr>) -> bool {
        let mut cur = write(&self.local_pods);
        if *cur == pods {
            return false;
        }
        *cur = pods;
        true
    }

    pub fn update_link(&self, peer: PeerId, f: impl FnOnce(&mut LinkFacts)) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        f(links.entry(peer).or_default());
    }

    pub fn drop_link(&self, peer: &PeerId) {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
    }

    pub fn link(&self, peer: &PeerId) -> LinkFacts {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .cloned()
            .unwrap_or_default()
    }
}
