//! Reading the addresses of a raw IP packet from the TUN, without copying it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Source and destination of an IPv4 or IPv6 packet, or `None` for anything else
/// (too short, another version), which the caller drops and counts.
pub fn addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let dst: [u8; 4] = packet[16..20].try_into().ok()?;
            Some((Ipv4Addr::from(src).into(), Ipv4Addr::from(dst).into()))
        }
        6 if packet.len() >= 40 => {
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            Some((Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_ipv6() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[10, 244, 1, 2]);
        v4[16..20].copy_from_slice(&[10, 244, 2, 3]);
        assert_eq!(
            addresses(&v4),
            Some(("10.244.1.2".parse().unwrap(), "10.244.2.3".parse().unwrap()))
        );
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[8..24].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        v6[24..40].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            addresses(&v6),
            Some(("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap()))
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(addresses(&[]), None);
        assert_eq!(addresses(&[0x45; 19]), None);
        assert_eq!(addresses(&[0x60; 39]), None);
        assert_eq!(addresses(&[0x00; 60]), None);
    }
}
