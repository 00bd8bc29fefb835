//! Signed ownership announcements. The author signs the announcement with its libp2p key,
//! and it carries the author's membership token, so any agent can relay it (gossip or
//! anti-entropy sync) and every receiver can still check who wrote it and that the author
//! belongs to the cluster.

use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::grants::Grant;
use super::membership::ClusterSecret;
use crate::ownership::Announcement;

/// Announcements are small (a few pods per node); this bounds what a peer can make us parse.
pub const MAX_SIGNED_BYTES: usize = 512 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAnnouncement {
    /// JSON of [`Body`]; signed as bytes, so re-encoding can never break a signature.
    pub body: Vec<u8>,
    pub signature: Vec<u8>,
    /// The author's public key, protobuf-encoded. It must hash to the announcement's peer ID.
    pub public_key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    announcement: Announcement,
    membership_token: Vec<u8>,
    /// Where the author listens, so receivers can dial it without a DHT.
    #[serde(default)]
    addrs: Vec<String>,
    /// The author's grant from the cluster CA, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grant: Option<Grant>,
}

/// An announcement that passed every check, with the author's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub announcement: Announcement,
    pub author: PeerId,
    pub addrs: Vec<String>,
    /// Not checked here: only agents with a cluster CA can, and do.
    pub grant: Option<Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("announcement is larger than {MAX_SIGNED_BYTES} bytes")]
    TooLarge,
    #[error("announcement does not decode: {0}")]
    Malformed(String),
    #[error("announcement's key does not belong to peer {0}")]
    WrongKey(String),
    #[error("announcement signature is invalid")]
    BadSignature,
    #[error("author {0} holds no valid cluster membership token")]
    NotAMember(String),
}

pub fn seal(
    key: &Keypair,
    secret: &ClusterSecret,
    announcement: Announcement,
    addrs: Vec<String>,
    grant: Option<Grant>,
) -> SignedAnnouncement {
    let peer = key.public().to_peer_id();
    let body = Body {
        membership_token: secret.token_for(&peer),
        announcement,
        addrs,
        grant,
    };
    let body = serde_json::to_vec(&body).expect("announcement serializes");
    SignedAnnouncement {
        signature: key.sign(&body).expect("ed25519 signing cannot fail"),
        public_key: key.public().encode_protobuf(),
        body,
    }
}

/// Verifies signature, authorship and membership, and returns the announcement.
pub fn open(secret: &ClusterSecret, signed: &SignedAnnouncement) -> Result<Opened, OpenError> {
    if signed.body.len() + signed.signature.len() + signed.public_key.len() > MAX_SIGNED_BYTES {
        return Err(OpenError::TooLarge);
    }
    let key = PublicKey::try_decode_protobuf(&signed.public_key)
        .map_err(|e| OpenError::Malformed(e.to_string()))?;
    if !key.verify(&signed.body, &signed.signature) {
        return Err(OpenError::BadSignature);
    }
    let body: Body =
        serde_json::from_slice(&signed.body).map_err(|e| OpenError::Malformed(e.to_string()))?;
    let author = key.to_peer_id();
    let claimed: PeerId =
        body.announcement.peer_id.parse().map_err(|_| {
            OpenError::Malformed(format!("peer id {:?}", body.announcement.peer_id))
        })?;
    if claimed != author {
        return Err(OpenError::WrongKey(body.announcement.peer_id));
    }
    if !secret.verify(&author, &body.membership_token) {
        return Err(OpenError::NotAMember(author.to_string()));
    }
    Ok(Opened {
        announcement: body.announcement,
        author,
        addrs: body.addrs,
        grant: body.grant,
    })
}

/// Decodes a signed announcement from the wire (gossipsub payload).
pub fn decode(bytes: &[u8]) -> Result<SignedAnnouncement, OpenError> {
    if bytes.len() > MAX_SIGNED_BYTES {
        return Err(OpenError::TooLarge);
    }
    serde_json::from_slice(bytes).map_err(|e| OpenError::Malformed(e.to_string()))
}

pub fn encode(signed: &SignedAnnouncement) -> Vec<u8> {
    serde_json::to_vec(signed).expect("signed announcement serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::PodClaim;

    fn secret(s: &[u8]) -> ClusterSecret {
        ClusterSecret::from_bytes(s.to_vec()).unwrap()
    }

    fn sample(peer: &PeerId) -> Announcement {
        Announcement {
            peer_id: peer.to_string(),
            node_name: "b1".into(),
            segment: "lan-b".into(),
            seq: 7,
            pods: vec![PodClaim {
                ip: "10.244.3.2".parse().unwrap(),
                since_ms: 1,
            }],
        }
    }

    #[test]
    fn round_trip_through_the_wire() {
        let s = secret(b"cluster-secret-0123456789");
        let key = Keypair::generate_ed25519();
        let a = sample(&key.public().to_peer_id());
        let addrs = vec!["/ip4/198.51.100.7/tcp/7333".to_string()];
        let wire = encode(&seal(&key, &s, a.clone(), addrs.clone(), None));
        let opened = open(&s, &decode(&wire).unwrap()).unwrap();
        assert_eq!(opened.announcement, a);
        assert_eq!(opened.addrs, addrs);
        assert_eq!(opened.author, key.public().to_peer_id());
    }

    #[test]
    fn outsiders_and_forgers_are_refused() {
        let s = secret(b"cluster-secret-0123456789");
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();

        // Signed properly, but without the cluster secret.
        let outsider = seal(
            &key,
            &secret(b"some-other-secret-0123456"),
            sample(&peer),
            vec![],
            None,
        );
        assert_eq!(
            open(&s, &outsider),
            Err(OpenError::NotAMember(peer.to_string()))
        );

        // A member claiming to speak for someone else.
        let victim = PeerId::random();
        let forged = seal(&key, &s, sample(&victim), vec![], None);
        assert_eq!(
            open(&s, &forged),
            Err(OpenError::WrongKey(victim.to_string()))
        );

        // Tampered body.
        let mut tampered = seal(&key, &s, sample(&peer), vec![], None);
        let text = String::from_utf8(tampered.body.clone())
            .unwrap()
            .replace("10.244.3.2", "10.244.9.9");
        tampered.body = text.into_bytes();
        assert_eq!(open(&s, &tampered), Err(OpenError::BadSignature));

        assert!(matches!(decode(b"{"), Err(OpenError::Malformed(_))));
        assert_eq!(
            decode(&vec![b' '; MAX_SIGNED_BYTES + 1]),
            Err(OpenError::TooLarge)
        );
    }
}
