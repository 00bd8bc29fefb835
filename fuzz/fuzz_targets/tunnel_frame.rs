//! The tunnel's wire format as a peer can send it: the framed stream of virtio-net header
//! and packet (`dataplane::frame`, `/edgeway/packets/2`), and the addresses read from each
//! packet (`dataplane::packet`).
//!
//! Input: one byte for how often the rest repeats (so that the decoder's compaction past
//! one whole frame is reached), one byte seeding the read sizes, then the stream. The
//! decoder, fed in arbitrary reads, must yield exactly what a plain walk over the whole
//! stream finds. Another wire format (a UDP datagram path, say) gets its own function
//! beside `stream`, taking a packet through `packet`.

#![no_main]

use std::net::IpAddr;

use edgeway_agent::dataplane::frame::{self, Decoder, FrameError, HDR_LEN, MAX_BODY};
use edgeway_agent::dataplane::packet;
use libfuzzer_sys::fuzz_target;

/// Read sizes the decoder is asked for; the receive loop itself asks for 256 KiB.
const WANTS: [usize; 7] = [1, 3, 4, 61, 1500, 9000, 256 * 1024];

/// The frame bodies of a whole stream, and the error that ends it, if one does.
fn walk(stream: &[u8]) -> (Vec<&[u8]>, Option<FrameError>) {
    let mut rest = stream;
    let mut out = Vec::new();
    while let Some(len) = rest.first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        if len <= HDR_LEN {
            return (out, Some(FrameError::Empty(len)));
        }
        if len > MAX_BODY {
            return (out, Some(FrameError::TooLong(len)));
        }
        let Some(body) = rest.get(4..4 + len) else {
            break;
        };
        out.push(body);
        rest = &rest[4 + len..];
    }
    (out, None)
}

fn stream(stream: &[u8], mut seed: u32) {
    let (expected, error) = walk(stream);
    let mut next_rand = move || {
        // xorshift: cheap, and the same input always takes the same reads.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed as usize
    };
    let mut d = Decoder::default();
    let (mut off, mut got, mut failed) = (0, 0, None);
    'read: while off < stream.len() {
        let want = WANTS[next_rand() % WANTS.len()];
        let n = (1 + next_rand() % want).min(stream.len() - off);
        let spare = d.spare(want);
        assert_eq!(spare.len(), want);
        spare[..n].copy_from_slice(&stream[off..off + n]);
        d.filled(want, n);
        off += n;
        loop {
            match d.next_body() {
                Ok(Some(body)) => {
                    assert_eq!(Some(&body), expected.get(got), "frame {got}");
                    packet(body);
                    got += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break 'read;
                }
            }
        }
    }
    if failed.is_none() {
        // End of stream, as the receive loop sees it: a read of nothing.
        d.spare(WANTS[6]);
        d.filled(WANTS[6], 0);
        assert_eq!(d.next_body(), Ok(None));
    }
    assert_eq!((got, failed), (expected.len(), error));
}

/// What the data path reads from a frame body (virtio-net header, then the IP packet),
/// checked against the header layout: IPv4 addresses at bytes 12 and 16, IPv6 at 8 and 24.
fn packet(body: &[u8]) {
    let mut framed = Vec::new();
    frame::encode(body, &mut framed).expect("a decoded body frames again");
    assert_eq!(&framed[4..], body);
    let p = &body[HDR_LEN..];
    let at = |i: usize, n: usize| p.get(i..i + n).unwrap().to_vec();
    let octets = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    match (p[0] >> 4, packet::addresses(p)) {
        (4, Some((src, dst))) => assert_eq!((octets(src), octets(dst)), (at(12, 4), at(16, 4))),
        (6, Some((src, dst))) => assert_eq!((octets(src), octets(dst)), (at(8, 16), at(24, 16))),
        (v, Some(_)) => panic!("addresses from an IPv{v} packet"),
        (v, None) => assert!(!matches!((v, p.len()), (4, 20..) | (6, 40..))),
    }
}

fuzz_target!(|data: &[u8]| {
    let [repeat, seed, rest @ ..] = data else {
        return;
    };
    let mut wire = Vec::with_capacity(rest.len() * (usize::from(repeat % 64) + 1));
    for _ in 0..=repeat % 64 {
        wire.extend_from_slice(rest);
    }
    stream(&wire, u32::from(*seed) | 0x100);
});
