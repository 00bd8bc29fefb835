//! Framing of tunnel packets on a byte stream (`/edgeway/packets/2`): a 4-byte big-endian
//! length, then the packet as the TUN hands it over with offloads on: a virtio-net header
//! followed by an IP packet of up to 65535 bytes, which may be a TCP segmentation-offload
//! super-packet. The header travels so the receiving kernel can segment or checksum the
//! packet itself; a 2-byte length would not fit it beside a 65535-byte packet.

pub use tun_rs::VIRTIO_NET_HDR_LEN as HDR_LEN;

/// Longest IP packet a frame can carry.
pub const MAX_PACKET: usize = u16::MAX as usize;
/// Longest frame body: the virtio-net header and the packet.
pub const MAX_BODY: usize = HDR_LEN + MAX_PACKET;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes holds no packet after its {HDR_LEN}-byte header")]
    Empty(usize),
    #[error("frame of {0} bytes is longer than {MAX_BODY}")]
    TooLong(usize),
}

fn check(len: usize) -> Result<(), FrameError> {
    if len <= HDR_LEN {
        Err(FrameError::Empty(len))
    } else if len > MAX_BODY {
        Err(FrameError::TooLong(len))
    } else {
        Ok(())
    }
}

/// Appends one frame to `out`; `body` is the virtio-net header and the packet.
pub fn encode(body: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    check(body.len())?;
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Incremental decoder over a receive buffer: feed bytes, take whole frame bodies.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    /// Space to read into; call [`Decoder::filled`] with the count read.
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > MAX_BODY {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + want, 0);
        &mut self.buf[len..]
    }

    /// Records that `n` bytes of the last [`Decoder::spare`] were filled; drops the rest.
    pub fn filled(&mut self, want: usize, n: usize) {
        let len = self.buf.len();
        self.buf.truncate(len - want + n);
    }

    /// The next whole frame body (header and packet), if buffered. A length that cannot
    /// be a frame is a protocol error: the stream is out of step and must close.
    pub fn next_body(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let avail = &self.buf[self.start..];
        let Some(len) = avail.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*len) as usize;
        check(len)?;
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let from = self.start + 4;
        self.start = from + len;
        Ok(Some(&self.buf[from..from + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut Decoder, bytes: &[u8]) {
        let spare = d.spare(bytes.len());
        spare.copy_from_slice(bytes);
        d.filled(bytes.len(), bytes.len());
    }

    #[test]
    fn round_trip_in_pieces() {
        let bodies: Vec<Vec<u8>> = (1..50).map(|n| vec![n as u8; HDR_LEN + n * 37]).collect();
        let mut wire = Vec::new();
        for b in &bodies {
            encode(b, &mut wire).unwrap();
        }
        // A super-packet of the largest size passes too.
        let big = vec![7u8; MAX_BODY];
        encode(&big, &mut wire).unwrap();
        // Feed in awkward chunk sizes, so frames straddle reads.
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(977) {
            feed(&mut d, chunk);
            while let Some(b) = d.next_body().unwrap() {
                got.push(b.to_vec());
            }
        }
        assert_eq!(got.pop().as_deref(), Some(&big[..]));
        assert_eq!(got, bodies);
    }

    #[test]
    fn bad_frames() {
        assert_eq!(
            encode(&[0; HDR_LEN], &mut Vec::new()),
            Err(FrameError::Empty(HDR_LEN))
        );
        assert_eq!(
            encode(&vec![0; MAX_BODY + 1], &mut Vec::new()),
            Err(FrameError::TooLong(MAX_BODY + 1))
        );
        let mut d = Decoder::default();
        feed(&mut d, &[0, 0, 0, 0, 1]);
        assert_eq!(d.next_body(), Err(FrameError::Empty(0)));
        let mut d = Decoder::default();
        feed(&mut d, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_body(), Err(FrameError::TooLong(u32::MAX as usize)));
    }

    #[test]
    fn partial_read_keeps_only_what_arrived() {
        let mut d = Decoder::default();
        let spare = d.spare(64);
        let body = [9u8; HDR_LEN + 1];
        spare[..4].copy_from_slice(&(body.len() as u32).to_be_bytes());
        spare[4..4 + body.len()].copy_from_slice(&body);
        d.filled(64, 4 + body.len());
        assert_eq!(d.next_body().unwrap(), Some(&body[..]));
        assert_eq!(d.next_body().unwrap(), None);
    }
}
