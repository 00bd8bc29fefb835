//! Ownership announcements from the wire (`p2p::announce::decode`), opened and checked
//! (`open`) and merged into an ownership table, as the network loop does with gossip.
//!
//! Input: one byte, then either the gossipsub payload (`WIRE`) or a body (`BODY`) that is
//! signed here with the fixed member key, so that `open` gets past the signature and
//! parses what a member could send. See `edgeway_fuzz::announce`.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use edgeway_agent::ownership::{ApplyOutcome, OwnershipTable};
use edgeway_agent::p2p::announce::{self, OpenError, SignedAnnouncement, MAX_SIGNED_BYTES};
use edgeway_agent::p2p::grants::{self, ClusterCa};
use edgeway_agent::p2p::membership::ClusterSecret;
use edgeway_fuzz::announce::{author, secret, BODY};
use libfuzzer_sys::fuzz_target;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::Multiaddr;

fn fixed() -> &'static (Keypair, ClusterSecret) {
    static FIXED: OnceLock<(Keypair, ClusterSecret)> = OnceLock::new();
    FIXED.get_or_init(|| (author(), secret()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (key, secret) = fixed();
    let wire = if mode == BODY {
        announce::encode(&SignedAnnouncement {
            body: rest.to_vec(),
            signature: key.sign(rest).unwrap(),
            public_key: key.public().encode_protobuf(),
        })
    } else {
        rest.to_vec()
    };
    let signed = match announce::decode(&wire) {
        Ok(s) => s,
        Err(e) => {
            assert!(matches!(e, OpenError::Malformed(_) | OpenError::TooLarge));
            assert!(
                mode != BODY || wire.len() > MAX_SIGNED_BYTES,
                "own encoding refused: {e}"
            );
            return;
        }
    };
    assert_eq!(
        announce::decode(&announce::encode(&signed)),
        Ok(signed.clone())
    );

    let opened = match announce::open(secret, &signed) {
        Ok(o) => o,
        Err(e) => {
            assert!(mode != BODY || !matches!(e, OpenError::BadSignature), "{e}");
            return;
        }
    };
    // Only the holder of the key behind the claimed peer id can have written it.
    let signer = PublicKey::try_decode_protobuf(&signed.public_key)
        .unwrap()
        .to_peer_id();
    assert_eq!(opened.author, signer);
    assert_eq!(opened.announcement.peer_id, signer.to_string());
    for a in &opened.addrs {
        let _ = a.parse::<Multiaddr>();
    }

    // A grant from the wire: checking it never panics, whatever it holds.
    let mut a = opened.announcement;
    if let Some(grant) = &opened.grant {
        let ca = ClusterCa::decode(&ClusterCa::encode(&key.public())).unwrap();
        let checked = ca.check(grant, &signer, 0);
        if let Ok(body) = checked {
            let before = a.pods.len();
            let dropped = grants::keep_granted(&mut a.pods, &body.pod_cidrs);
            assert_eq!(before, a.pods.len() + dropped.len());
        }
    }
    let valid = a.validate();
    let mut table = OwnershipTable::new("fuzz-local".into(), Duration::from_secs(60));
    match table.apply(a.clone(), Instant::now()) {
        ApplyOutcome::Accepted { added, removed } => {
            assert!(valid.is_ok() && removed.is_empty());
            assert_eq!(added.len(), a.pods.len());
            for pod in &a.pods {
                assert!(table.owns(&a.peer_id, pod.ip), "{} not owned", pod.ip);
            }
        }
        ApplyOutcome::Rejected(reason) => assert_eq!(valid, Err(reason)),
        other => panic!("a first announcement is accepted or rejected, not {other:?}"),
    }
});
