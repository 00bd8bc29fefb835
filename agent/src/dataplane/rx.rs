//! Peers to TUN: accepts packet streams from members only, and drops every packet whose
//! source the sending peer does not own or whose destination is not a pod on this node.

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, StreamExt};
use libp2p::{PeerId, Stream};
use tun_rs::AsyncDevice;

use super::frame::{self, Decoder};
use super::packet;
use crate::metrics::{drop_reason, Direction, Metrics};
use crate::netstate::NetState;

/// How long a stream from a connected peer may wait for its membership proof.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(2);

pub async fn accept_streams(
    mut incoming: libp2p_stream::IncomingStreams,
    tun: Arc<AsyncDevice>,
    net: Arc<NetState>,
    metrics: Arc<Metrics>,
) {
    // Polled without pause: libp2p-stream drops inbound streams nobody is waiting for.
    while let Some((peer, stream)) = incoming.next().await {
        let (tun, net, metrics) = (tun.clone(), net.clone(), metrics.clone());
        tokio::spawn(async move {
            if !await_membership(&net, &peer).await {
                tracing::warn!(%peer, "packet stream from a peer that has not proved membership; refused");
                metrics.drop_packet(drop_reason::NOT_MEMBER);
                return;
            }
            read_stream(peer, stream, tun, net, metrics).await;
        });
    }
}

/// A reconnecting peer opens its packet stream as soon as it has our welcome, which can be
/// before we have checked its own hello: give that a moment instead of refusing the
/// stream and costing the peer a reopen.
async fn await_membership(net: &NetState, peer: &PeerId) -> bool {
    const STEP: Duration = Duration::from_millis(50);
    for _ in 0..(MEMBERSHIP_WAIT.as_millis() / STEP.as_millis()) {
        if net.is_member(peer) {
            return true;
        }
        tokio::time::sleep(STEP).await;
    }
    net.is_member(peer)
}

async fn read_stream(
    peer: PeerId,
    mut stream: Stream,
    tun: Arc<AsyncDevice>,
    net: Arc<NetState>,
    metrics: Arc<Metrics>,
) {
    let peer_s = peer.to_string();
    let (packets, bytes) = metrics.traffic(&peer_s, Direction::Rx);
    let mut decoder = Decoder::default();
    const READ: usize = 256 * 1024;
    loop {
        let spare = decoder.spare(READ);
        let n = match stream.read(spare).await {
            Ok(0) | Err(_) => {
                decoder.filled(READ, 0);
                break;
            }
            Ok(n) => n,
        };
        decoder.filled(READ, n);
        loop {
            let body = match decoder.next_body() {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, "bad frame, closing stream: {e}");
                    metrics.drop_packet(drop_reason::MALFORMED);
                    return;
                }
            };
            if !net.is_member(&peer) {
                metrics.drop_packet(drop_reason::NOT_MEMBER);
                return;
            }
            // A super-packet's segments all carry the header checked here.
            let Some((src, dst)) = packet::addresses(&body[frame::HDR_LEN..]) else {
                metrics.drop_packet(drop_reason::MALFORMED);
                continue;
            };
            // A pod of this node never sends from elsewhere, whoever claims its address.
            if !net.table().owns(&peer_s, src) || net.is_local_pod(&src) {
                metrics.drop_packet(drop_reason::SPOOFED_SOURCE);
                continue;
            }
            if !net.is_local_pod(&dst) {
                metrics.drop_packet(drop_reason::NOT_LOCAL_DESTINATION);
                continue;
            }
            // The kernel checks the virtio-net header as it does a VM guest's.
            match tun.send(body).await {
                Ok(_) => {
                    packets.inc();
                    bytes.inc_by((body.len() - frame::HDR_LEN) as u64);
                }
                Err(_) => metrics.drop_packet(drop_reason::TUN_WRITE),
            }
        }
    }
}
