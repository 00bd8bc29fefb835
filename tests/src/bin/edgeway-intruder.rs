//! A real libp2p peer WITHOUT the cluster credential, for the end-to-end tests: it connects
//! to an agent, skips the membership handshake, opens edgeway's packet stream anyway and
//! writes framed ICMP echo requests into it. The agent must refuse every one of them.
//!
//! Usage: edgeway-intruder <victim multiaddr with /p2p/ID> <source ip> <destination ip> <count>

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, SwarmBuilder};

const PACKETS: StreamProtocol = StreamProtocol::new("/edgeway/packets/2");
/// The virtio-net header that precedes each packet in a frame; zero means "no offload".
const VNET_HDR: [u8; 10] = [0; 10];

/// An ICMP echo request with valid header checksums.
fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    fn checksum(b: &[u8]) -> u16 {
        let mut sum: u32 = b
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(b"edgeway-intruder");
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    ip
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: edgeway-intruder <victim multiaddr with /p2p/ID> <source ip> <destination ip> <count>");
        std::process::exit(2);
    }
    let victim_addr: Multiaddr = args[1].parse()?;
    let victim: PeerId = victim_addr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .ok_or("the multiaddr needs /p2p/<peer id>")?;
    let (src, dst): (Ipv4Addr, Ipv4Addr) = (args[2].parse()?, args[3].parse()?);
    let count: u16 = args[4].parse()?;

    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    let mut control = swarm.behaviour().new_control();
    swarm.dial(victim_addr)?;
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == victim => {
                    return true
                }
                SwarmEvent::OutgoingConnectionError { .. } => return false,
                _ => {}
            }
        }
    })
    .await
    .unwrap_or(false);
    if !connected {
        eprintln!("intruder: could not connect");
        std::process::exit(1);
    }
    // The swarm must keep running while the stream is used.
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let mut written = 0;
    match control.open_stream(victim, PACKETS).await {
        Ok(mut stream) => {
            for seq in 0..count {
                let pkt = icmp_echo(src, dst, seq);
                let mut frame = ((VNET_HDR.len() + pkt.len()) as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&VNET_HDR);
                frame.extend_from_slice(&pkt);
                if stream.write_all(&frame).await.is_err() || stream.flush().await.is_err() {
                    break;
                }
                written += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Err(e) => eprintln!("intruder: stream refused: {e}"),
    }
    println!("frames written: {written}");
    Ok(())
}
