//! TUN to peers: each packet goes to its destination's owner over one long-lived stream
//! per peer, through a bounded queue. A full queue drops the packet and counts it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc::{self, error::TrySendError};
use tun_rs::AsyncDevice;

use super::transport::{Transport, TransportSelector};
use super::{frame, packet};
use crate::metrics::{drop_reason, Direction, Metrics};
use crate::netstate::NetState;

/// Frames are gathered up to this many bytes before one write: a few offload
/// super-packets, or a few hundred plain ones.
const BATCH_BYTES: usize = 256 * 1024;
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// A link with no packet for this long closes; the next packet opens a new one.
const LINK_IDLE: Duration = Duration::from_secs(60);

pub async fn pump_tun_to_peers(
    tun: Arc<AsyncDevice>,
    net: Arc<NetState>,
    transports: TransportSelector,
    metrics: Arc<Metrics>,
    queue_len: usize,
) -> std::io::Result<()> {
    let local = net.table().local_peer().to_string();
    let mut peer_ids: HashMap<String, PeerId> = HashMap::new();
    let mut links: HashMap<PeerId, mpsc::Sender<Vec<u8>>> = HashMap::new();
    // The TUN hands over a virtio-net header, then the packet (see `frame`).
    let mut buf = vec![0u8; frame::MAX_BODY];
    loop {
        let n = tun.recv(&mut buf).await?;
        let pkt = &buf[..n];
        let Some((_, dst)) = pkt.get(frame::HDR_LEN..).and_then(packet::addresses) else {
            metrics.drop_packet(drop_reason::MALFORMED);
            continue;
        };
        let owner = {
            let table = net.table();
            match table.owner_of(dst) {
                Some(p) if p.peer_id != local => match peer_ids.get(&p.peer_id) {
                    Some(id) => Some(*id),
                    None => p.peer_id.parse::<PeerId>().ok().inspect(|id| {
                        peer_ids.insert(p.peer_id.clone(), *id);
                    }),
                },
                _ => None,
            }
        };
        let Some(peer) = owner else {
            metrics.drop_packet(drop_reason::NO_OWNER);
            continue;
        };
        let spawn = || {
            let (tx, rx) = mpsc::channel(queue_len);
            tokio::spawn(run_link(
                peer,
                transports.for_peer(&peer),
                rx,
                metrics.clone(),
            ));
            tx
        };
        let tx = links.entry(peer).or_insert_with(spawn);
        let pkt = match tx.try_send(pkt.to_vec()) {
            Ok(()) => continue,
            Err(TrySendError::Full(_)) => {
                metrics.drop_packet(drop_reason::QUEUE_FULL);
                continue;
            }
            // The link ended after idling: start a new one for this packet.
            Err(TrySendError::Closed(pkt)) => pkt,
        };
        let tx = spawn();
        if tx.try_send(pkt).is_err() {
            metrics.drop_packet(drop_reason::LINK_DOWN);
        }
        links.insert(peer, tx);
    }
}

/// Owns the channel to one peer. Opens it once and reuses it; reopens after a failure.
async fn run_link(
    peer: PeerId,
    mut transport: Transport,
    mut rx: mpsc::Receiver<Vec<u8>>,
    metrics: Arc<Metrics>,
) {
    let (packets, bytes): (Counter, Counter) = metrics.traffic(&peer.to_string(), Direction::Tx);
    let mut out = Vec::with_capacity(BATCH_BYTES + frame::MAX_BODY + 4);
    let mut last_packet = tokio::time::Instant::now();
    'reopen: loop {
        // A peer nobody sends to is not worth a connection: a departed node is not
        // redialled forever.
        if last_packet.elapsed() > LINK_IDLE {
            return;
        }
        let mut sink = match transport.open(peer).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, transport = transport.name(), "cannot open packet channel: {e}");
                if !drain_while_down(&mut rx, &metrics, &mut last_packet).await {
                    return;
                }
                continue 'reopen;
            }
        };
        tracing::debug!(%peer, transport = transport.name(), "packet channel open");
        while let Ok(Some(first)) = tokio::time::timeout(LINK_IDLE, rx.recv()).await {
            last_packet = tokio::time::Instant::now();
            out.clear();
            let mut count = 0u64;
            let mut payload = 0u64;
            let mut next = Some(first);
            while let Some(pkt) = next.take() {
                if frame::encode(&pkt, &mut out).is_ok() {
                    count += 1;
                    payload += (pkt.len() - frame::HDR_LEN) as u64;
                }
                if out.len() < BATCH_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            if let Err(e) = sink.write_batch(&out).await {
                tracing::debug!(%peer, "packet channel broke: {e}");
                metrics
                    .drops
                    .get_or_create(&crate::metrics::ReasonLabels {
                        reason: drop_reason::LINK_DOWN,
                    })
                    .inc_by(count);
                continue 'reopen;
            }
            packets.inc_by(count);
            bytes.inc_by(payload);
        }
        return;
    }
}

/// Drops what is queued while the peer is unreachable, then waits before a retry.
/// Returns false when the link is no longer wanted.
async fn drain_while_down(
    rx: &mut mpsc::Receiver<Vec<u8>>,
    metrics: &Metrics,
    last_packet: &mut tokio::time::Instant,
) -> bool {
    let deadline = tokio::time::sleep(RETRY_AFTER);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return true,
            pkt = rx.recv() => match pkt {
                Some(_) => {
                    *last_packet = tokio::time::Instant::now();
                    metrics.drop_packet(drop_reason::LINK_DOWN);
                }
                None => return false,
            },
        }
    }
}
