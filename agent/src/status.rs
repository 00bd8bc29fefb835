//! The node's status as `/v1/status` reports it: identity, local pods, and every peer
//! with its path, RTT and traffic.

use serde::Serialize;

use crate::metrics::{Direction, TrafficLabels};
use crate::node::Node;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub node: String,
    pub peer_id: Option<String>,
    pub segment: Option<String>,
    pub ready: bool,
    pub local_pods: Vec<LocalPod>,
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalPod {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub ips: Vec<std::net::IpAddr>,
    pub pod: edgeway_common::api::PodRef,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    pub peer_id: String,
    pub node_name: String,
    pub segment: String,
    pub connected: bool,
    /// `native` for a peer in this node's segment (its pods are reached through the host
    /// CNI), else `direct` or `relayed`; absent while not connected.
    pub path: Option<&'static str>,
    pub rtt_ms: Option<f64>,
    /// The underlay address of the connection (a `/p2p-circuit` one when relayed).
    pub remote_addr: Option<String>,
    pub pods: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub packets_out: u64,
}

pub fn collect(node: &Node) -> Status {
    let local_pods = node
        .registry()
        .list()
        .into_iter()
        .map(|a| LocalPod {
            container_id: a.container_id,
            ifname: a.ifname,
            ips: a.ips,
            pod: a.pod,
        })
        .collect();
    let mut status = Status {
        node: node.name.clone(),
        peer_id: None,
        segment: None,
        ready: node.readiness().ready,
        local_pods,
        peers: vec![],
    };
    let Some(net) = node.network.get() else {
        return status;
    };
    status.peer_id = Some(net.peer_id.clone());
    status.segment = Some(net.segment.clone());
    let infos: Vec<_> = net
        .state
        .table()
        .peers()
        .filter(|p| p.peer_id != net.peer_id)
        .cloned()
        .collect();
    for info in infos {
        let peer: Option<libp2p::PeerId> = info.peer_id.parse().ok();
        let link = peer.map(|p| net.state.link(&p)).unwrap_or_default();
        let connected = peer.is_some_and(|p| net.state.is_member(&p));
        let count = |direction: Direction, bytes: bool| {
            let labels = TrafficLabels {
                peer: info.peer_id.clone(),
                direction,
            };
            let family = if bytes {
                &node.metrics.bytes
            } else {
                &node.metrics.packets
            };
            family.get_or_create(&labels).get()
        };
        status.peers.push(PeerStatus {
            connected,
            path: link
                .path
                .filter(|_| connected)
                .map(|p| p.shown(info.segment == net.segment)),
            rtt_ms: link
                .rtt
                .filter(|_| connected)
                .map(|d| d.as_secs_f64() * 1000.0),
            remote_addr: link.remote_addr.clone().filter(|_| connected),
            bytes_in: count(Direction::Rx, true),
            bytes_out: count(Direction::Tx, true),
            packets_in: count(Direction::Rx, false),
            packets_out: count(Direction::Tx, false),
            peer_id: info.peer_id,
            node_name: info.node_name,
            segment: info.segment,
            pods: info.pods,
        });
    }
    status
}
