//! Writes the `announce` target's seeds: announcements signed by the fixed member key,
//! which a committed file cannot be edited into by hand.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example announce_seeds` (plain stable; no
//! fuzzing flags). The output is deterministic: ed25519 signatures are.

use std::path::Path;

use edgeway_agent::ownership::{Announcement, PodClaim};
use edgeway_agent::p2p::announce;
use edgeway_agent::p2p::membership::ClusterSecret;
use edgeway_fuzz::announce::{author, secret, BODY, WIRE};

fn sample(pods: &[&str]) -> Announcement {
    Announcement {
        peer_id: author().public().to_peer_id().to_string(),
        node_name: "edge-b1".into(),
        segment: "lan-b".into(),
        seq: 1_764_000_000_000,
        pods: pods
            .iter()
            .map(|ip| PodClaim {
                ip: ip.parse().unwrap(),
                since_ms: 1_763_999_000_000,
            })
            .collect(),
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/announce");
    std::fs::create_dir_all(&dir).unwrap();
    let addrs = vec![
        "/ip4/198.51.100.7/tcp/7333".to_string(),
        "/ip4/198.51.100.7/udp/7333/quic-v1".to_string(),
    ];
    let outsider = ClusterSecret::from_bytes(b"not-this-cluster-secret".to_vec()).unwrap();
    let seal = |secret: &ClusterSecret, a: Announcement, addrs: Vec<String>| {
        announce::seal(&author(), secret, a, addrs, None)
    };
    let seeds = [
        (
            "wire-member",
            WIRE,
            announce::encode(&seal(&secret(), sample(&["10.244.3.2"]), addrs.clone())),
        ),
        (
            "wire-outsider",
            WIRE,
            announce::encode(&seal(&outsider, sample(&["10.244.3.2"]), vec![])),
        ),
        (
            "body-dual-stack",
            BODY,
            seal(
                &secret(),
                sample(&["10.244.3.2", "10.244.3.9", "fd00:10:244:3::2"]),
                addrs,
            )
            .body,
        ),
        // Unsorted: the receiver's duplicate check takes its slower path.
        (
            "body-unsorted",
            BODY,
            seal(&secret(), sample(&["10.244.3.9", "10.244.3.2"]), vec![]).body,
        ),
        (
            "body-no-pods",
            BODY,
            seal(&secret(), sample(&[]), vec![]).body,
        ),
    ];
    for (name, mode, bytes) in seeds {
        let mut file = vec![mode];
        file.extend_from_slice(&bytes);
        std::fs::write(dir.join(name), file).unwrap();
        println!("wrote {}", dir.join(name).display());
    }
}
