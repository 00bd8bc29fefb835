//! TUN to peers: each packet goes to its destination's owner over one long-lived stream
//! per peer, through a bounded queue. A full queue drops the packet and counts it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// How much may wait for one peer: whichever bound is hit first drops new packets.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub packets: usize,
    pub bytes: usize,
}

/// The pump's end of one peer's queue.
struct Link {
    tx: mpsc::Sender<Vec<u8>>,
    /// Bytes in the queue: added here, taken off by `run_link`.
    queued: Arc<AtomicUsize>,
}

impl Link {
    /// Queues a packet, or hands it back when the link has ended (it idled out).
    fn offer(&self, pkt: Vec<u8>, limit: usize, metrics: &Metrics) -> Option<Vec<u8>> {
        if self.tx.is_closed() {
            return Some(pkt);
        }
        let len = pkt.len();
        if self.queued.load(Ordering::Relaxed) + len > limit {
            metrics.drop_packet(drop_reason::QUEUE_FULL);
            return None;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        match self.tx.try_send(pkt) {
            Ok(()) => None,
            Err(e) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => {
                        metrics.drop_packet(drop_reason::QUEUE_FULL);
                        None
                    }
                    TrySendError::Closed(pkt) => Some(pkt),
                }
            }
        }
    }
}

pub async fn pump_tun_to_peers(
    tun: Arc<AsyncDevice>,
    net: Arc<NetState>,
    transports: TransportSelector,
    metrics: Arc<Metrics>,
    queue: QueueLimits,
) -> std::io::Result<()> {
    let local = net.table().local_peer().to_string();
    let mut peer_ids: HashMap<String, PeerId> = HashMap::new();
    let mut links: HashMap<PeerId, Link> = HashMap::new();
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
            let (tx, rx) = mpsc::channel(queue.packets);
            let queued = Arc::new(AtomicUsize::new(0));
            tokio::spawn(run_link(
                peer,
                transports.for_peer(&peer),
                rx,
                queued.clone(),
                metrics.clone(),
            ));
            Link { tx, queued }
        };
        let link = links.entry(peer).or_insert_with(spawn);
        // The link ended after idling: start a new one for this packet.
        let Some(pkt) = link.offer(pkt.to_vec(), queue.bytes, &metrics) else {
            continue;
        };
        let link = spawn();
        if link.offer(pkt, queue.bytes, &metrics).is_some() {
            metrics.drop_packet(drop_reason::LINK_DOWN);
        }
        links.insert(peer, link);
    }
}

/// The link's end of its queue: takes the bytes it dequeues off the pump's count.
struct Queue {
    rx: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    fn taken(&self, pkt: Vec<u8>) -> Vec<u8> {
        self.queued.fetch_sub(pkt.len(), Ordering::Relaxed);
        pkt
    }

    async fn recv(&mut self) -> Option<Vec<u8>> {
        let pkt = self.rx.recv().await?;
        Some(self.taken(pkt))
    }

    fn try_recv(&mut self) -> Option<Vec<u8>> {
        let pkt = self.rx.try_recv().ok()?;
        Some(self.taken(pkt))
    }
}

/// Owns the channel to one peer. Opens it once and reuses it; reopens after a failure.
async fn run_link(
    peer: PeerId,
    mut transport: Transport,
    rx: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
) {
    let mut rx = Queue { rx, queued };
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
                    next = rx.try_recv();
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
    rx: &mut Queue,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dropped(metrics: &Metrics, reason: &'static str) -> u64 {
        metrics
            .drops
            .get_or_create(&crate::metrics::ReasonLabels { reason })
            .get()
    }

    #[test]
    fn the_byte_bound_drops_before_the_count_bound() {
        let metrics = Metrics::new();
        let (tx, rx) = mpsc::channel(100);
        let link = Link {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
        };
        // Two 64 KiB super-packets fit a 128 KiB budget; the third is dropped.
        for _ in 0..3 {
            assert!(link.offer(vec![0; 64 << 10], 128 << 10, &metrics).is_none());
        }
        assert_eq!(dropped(&metrics, drop_reason::QUEUE_FULL), 1);
        // The link side gives the bytes back as it dequeues.
        let mut queue = Queue {
            rx,
            queued: link.queued.clone(),
        };
        assert!(queue.try_recv().is_some());
        assert_eq!(link.queued.load(Ordering::Relaxed), 64 << 10);
        assert!(link.offer(vec![0; 64 << 10], 128 << 10, &metrics).is_none());
        assert_eq!(dropped(&metrics, drop_reason::QUEUE_FULL), 1);
        // A closed link hands the packet back, so a new one can take it.
        drop(queue);
        assert_eq!(
            link.offer(vec![1; 10], 128 << 10, &metrics),
            Some(vec![1; 10])
        );
    }
}
