//! Prometheus metrics, served on `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub endpoint: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecoveryLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    Tx,
    Rx,
}

// Written by hand: the derive would print "Tx"/"Rx", and label values are lowercase by
// Prometheus convention.
impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            Direction::Tx => "tx",
            Direction::Rx => "rx",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    pub peer: String,
    pub direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub peer: String,
    pub path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Why a packet was dropped; one label value each.
pub mod drop_reason {
    pub const MALFORMED: &str = "malformed";
    pub const NO_OWNER: &str = "no_owner";
    pub const QUEUE_FULL: &str = "queue_full";
    pub const LINK_DOWN: &str = "link_down";
    pub const NOT_MEMBER: &str = "not_member";
    pub const SPOOFED_SOURCE: &str = "spoofed_source";
    pub const NOT_LOCAL_DESTINATION: &str = "not_local_destination";
    pub const TUN_WRITE: &str = "tun_write";
}

pub struct Metrics {
    pub registry: Registry,
    pub attachments: Gauge,
    pub api_requests: Family<ApiLabels, Counter>,
    pub recovery: Family<RecoveryLabels, Counter>,
    pub corrupt_files: Gauge,
    pub ready: Gauge,
    pub peers: Gauge,
    pub routes: Gauge,
    pub packets: Family<TrafficLabels, Counter>,
    pub bytes: Family<TrafficLabels, Counter>,
    pub drops: Family<ReasonLabels, Counter>,
    pub peer_path: Family<PathLabels, Gauge>,
    pub peer_rtt: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    pub announcements: Family<ReasonLabels, Counter>,
    pub auth_failures: Counter,
    /// With a cluster CA: pod IPs in peers' announcements that their grant does not cover.
    pub claims_ignored: Family<ReasonLabels, Counter>,
    /// With a cluster CA: this node's pods outside its own grant, which peers ignore.
    pub local_pods_outside_grant: Gauge,
    pub grant_not_after: Gauge,
    /// On a relay node: reservations held and circuits open on it right now.
    pub relay_reservations: Gauge,
    pub relay_circuits: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("edgeway");
        let attachments = Gauge::default();
        registry.register(
            "attachments",
            "Attachments registered on this node",
            attachments.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Local API requests by endpoint and status code",
            api_requests.clone(),
        );
        let recovery = Family::<RecoveryLabels, Counter>::default();
        registry.register(
            "recovery_actions",
            "Repairs made while reconciling stateDir and kernel rules: dropped_record, removed_rule, readded_rule, replayed_del",
            recovery.clone(),
        );
        let corrupt_files = Gauge::default();
        registry.register(
            "corrupt_state_files",
            "Files under stateDir that could not be read as records",
            corrupt_files.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 when the agent is ready", ready.clone());
        let peers = Gauge::default();
        registry.register(
            "peers",
            "Connected peers that proved cluster membership",
            peers.clone(),
        );
        let routes = Gauge::default();
        registry.register(
            "routes",
            "Routes in edgeway's table (remote pods across a LAN boundary)",
            routes.clone(),
        );
        let packets = Family::<TrafficLabels, Counter>::default();
        registry.register(
            "tunnel_packets",
            "Packets carried, by peer and direction",
            packets.clone(),
        );
        let bytes = Family::<TrafficLabels, Counter>::default();
        registry.register(
            "tunnel_bytes",
            "Bytes of IP packets carried, by peer and direction",
            bytes.clone(),
        );
        let drops = Family::<ReasonLabels, Counter>::default();
        registry.register("tunnel_drops", "Packets dropped, by reason", drops.clone());
        let peer_path = Family::<PathLabels, Gauge>::default();
        registry.register(
            "peer_path",
            "1 for the path pod traffic takes to each peer (native, direct or relayed)",
            peer_path.clone(),
        );
        let peer_rtt = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "peer_rtt_seconds",
            "Last ping round-trip time to each peer",
            peer_rtt.clone(),
        );
        let announcements = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "announcements",
            "Ownership announcements received, by outcome",
            announcements.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Peers refused for lacking the cluster credential",
            auth_failures.clone(),
        );
        let claims_ignored = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "claims_ignored",
            "Pod IPs that peers claimed outside their grant from the cluster CA: outside_grant, no_grant, invalid_grant",
            claims_ignored.clone(),
        );
        let local_pods_outside_grant = Gauge::default();
        registry.register(
            "local_pods_outside_grant",
            "This node's pod IPs that its grant does not cover: peers ignore them",
            local_pods_outside_grant.clone(),
        );
        let grant_not_after = Gauge::default();
        registry.register(
            "grant_not_after_seconds",
            "Unix time this node's grant expires; 0 without a grant",
            grant_not_after.clone(),
        );
        let relay_reservations = Gauge::default();
        registry.register(
            "relay_reservations",
            "Reservations this relay holds for agents behind NAT",
            relay_reservations.clone(),
        );
        let relay_circuits = Gauge::default();
        registry.register(
            "relay_circuits",
            "Relayed connections open through this relay",
            relay_circuits.clone(),
        );
        Metrics {
            registry,
            relay_reservations,
            relay_circuits,
            peers,
            routes,
            packets,
            bytes,
            drops,
            peer_path,
            peer_rtt,
            announcements,
            auth_failures,
            claims_ignored,
            local_pods_outside_grant,
            grant_not_after,
            attachments,
            api_requests,
            recovery,
            corrupt_files,
            ready,
        }
    }

    pub fn count_recovery(&self, action: &'static str, n: usize) {
        if n > 0 {
            self.recovery
                .get_or_create(&RecoveryLabels { action })
                .inc_by(n as u64);
        }
    }

    pub fn drop_packet(&self, reason: &'static str) {
        self.drops.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counters for one peer and direction, fetched once per link so each packet costs
    /// only atomic adds.
    pub fn traffic(&self, peer: &str, direction: Direction) -> (Counter, Counter) {
        let labels = TrafficLabels {
            peer: peer.to_string(),
            direction,
        };
        (
            self.packets.get_or_create(&labels).clone(),
            self.bytes.get_or_create(&labels).clone(),
        )
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_labels_are_lowercase() {
        let m = Metrics::new();
        m.traffic("peer-a", Direction::Rx).0.inc();
        let text = m.encode();
        assert!(
            text.contains(r#"edgeway_tunnel_packets_total{peer="peer-a",direction="rx"} 1"#),
            "{text}"
        );
    }
}
