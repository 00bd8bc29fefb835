//! Framing of IP packets on a byte stream: a 2-byte big-endian length, then the packet.
//! IP packets are at most 65535 bytes, so the length always fits.

/// Longest packet a frame can carry.
pub const MAX_PACKET: usize = u16::MAX as usize;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of length 0")]
    Empty,
    #[error("packet of {0} bytes does not fit a frame")]
    TooLong(usize),
}

/// Appends one frame to `out`.
pub fn encode(packet: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if packet.is_empty() {
        return Err(FrameError::Empty);
    }
    let len = u16::try_from(packet.len()).map_err(|_| FrameError::TooLong(packet.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Ok(())
}

/// Incremental decoder over a receive buffer: feed bytes, take whole packets.
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
        } else if self.start > 64 * 1024 {
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

    /// The next whole packet, if buffered. A zero length is a protocol error.
    pub fn next_packet(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 2 {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([avail[0], avail[1]]));
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if avail.len() < 2 + len {
            return Ok(None);
        }
        let from = self.start + 2;
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
        let packets: Vec<Vec<u8>> = (1..50).map(|n| vec![n as u8; n * 37]).collect();
        let mut wire = Vec::new();
        for p in &packets {
            encode(p, &mut wire).unwrap();
        }
        // Feed in awkward chunk sizes, so frames straddle reads.
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(7) {
            feed(&mut d, chunk);
            while let Some(p) = d.next_packet().unwrap() {
                got.push(p.to_vec());
            }
        }
        assert_eq!(got, packets);
    }

    #[test]
    fn bad_frames() {
        assert_eq!(encode(&[], &mut Vec::new()), Err(FrameError::Empty));
        assert_eq!(
            encode(&vec![0; MAX_PACKET + 1], &mut Vec::new()),
            Err(FrameError::TooLong(MAX_PACKET + 1))
        );
        let mut d = Decoder::default();
        feed(&mut d, &[0, 0, 1]);
        assert_eq!(d.next_packet(), Err(FrameError::Empty));
    }

    #[test]
    fn partial_read_keeps_only_what_arrived() {
        let mut d = Decoder::default();
        let spare = d.spare(10);
        spare[..3].copy_from_slice(&[0, 1, 9]);
        d.filled(10, 3);
        assert_eq!(d.next_packet().unwrap(), Some(&[9u8][..]));
        assert_eq!(d.next_packet().unwrap(), None);
    }
}
