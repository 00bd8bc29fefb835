//! How packets travel to one peer. Chosen per peer when its link starts, so a faster
//! transport (the UDP datagram path for direct peers) can sit beside the libp2p stream,
//! which stays the fallback and the relay path.

use std::io;
use std::time::Duration;

use futures::AsyncWriteExt;
use libp2p::PeerId;

use crate::p2p::behaviour::PACKETS_PROTOCOL;

const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// A way to reach peers.
#[derive(Clone)]
pub enum Transport {
    /// One long-lived libp2p stream per peer, over whatever connection libp2p holds
    /// (TCP+noise+yamux, QUIC, or a relay circuit).
    Libp2pStream(libp2p_stream::Control),
}

/// An open channel to one peer that takes batches of frames.
pub enum Sink {
    Libp2pStream(libp2p::Stream),
}

impl Transport {
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Libp2pStream(_) => "libp2p-stream",
        }
    }

    pub async fn open(&mut self, peer: PeerId) -> io::Result<Sink> {
        match self {
            Transport::Libp2pStream(control) => {
                match tokio::time::timeout(
                    OPEN_TIMEOUT,
                    control.open_stream(peer, PACKETS_PROTOCOL),
                )
                .await
                {
                    Ok(Ok(s)) => Ok(Sink::Libp2pStream(s)),
                    Ok(Err(e)) => Err(io::Error::other(e)),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "opening the packet stream timed out",
                    )),
                }
            }
        }
    }
}

impl Sink {
    /// Writes already-framed packets; a batch is one write and one flush.
    pub async fn write_batch(&mut self, frames: &[u8]) -> io::Result<()> {
        match self {
            Sink::Libp2pStream(s) => {
                s.write_all(frames).await?;
                s.flush().await
            }
        }
    }
}

/// Picks the transport for each peer.
#[derive(Clone)]
pub struct TransportSelector {
    stream: Transport,
}

impl TransportSelector {
    pub fn new(control: libp2p_stream::Control) -> Self {
        TransportSelector {
            stream: Transport::Libp2pStream(control),
        }
    }

    pub fn for_peer(&self, _peer: &PeerId) -> Transport {
        self.stream.clone()
    }
}
