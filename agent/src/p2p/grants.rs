//! Pod-range grants: the cluster CA's signed statement that one peer may claim pod IPs in
//! some CIDRs. The cluster secret proves membership, but every member holds it, so it
//! cannot say which pods a member owns. With `p2p.clusterCaFile` set, a claim counts only
//! inside the author's grant, so a member cannot take over another node's pod IPs.
//!
//! The CA is an Ed25519 key kept off the nodes; the nodes hold only its public half.

use std::net::IpAddr;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ipnetwork::IpNetwork;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::ownership::PodClaim;

/// A grant is a few CIDRs: this bounds what an announcement can make us parse.
pub const MAX_GRANT_BYTES: usize = 8 * 1024;
pub const MAX_GRANT_CIDRS: usize = 64;

/// A grant as it is stored and sent: `body` is signed as bytes, so re-encoding can never
/// break the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    /// JSON of [`GrantBody`].
    pub body: String,
    /// The CA's Ed25519 signature of `body`, base64.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantBody {
    pub peer_id: String,
    pub pod_cidrs: Vec<IpNetwork>,
    /// Unix seconds after which the grant no longer counts.
    pub not_after_unix: u64,
}

impl GrantBody {
    pub fn expired(&self, now_unix: u64) -> bool {
        now_unix > self.not_after_unix
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("grant is larger than {MAX_GRANT_BYTES} bytes")]
    TooLarge,
    #[error("grant does not decode: {0}")]
    Malformed(String),
    #[error("grant is not signed by the cluster CA")]
    BadSignature,
    #[error("grant is for peer {0}, not for this one")]
    OtherPeer(String),
    #[error("grant expired at unix time {0}")]
    Expired(u64),
    #[error("grant lists more than {MAX_GRANT_CIDRS} CIDRs")]
    TooManyCidrs,
}

/// The cluster CA's public key: what every agent checks grants against.
#[derive(Debug, Clone)]
pub struct ClusterCa(PublicKey);

impl ClusterCa {
    /// Reads the one-line base64 public key that `edgeway-agent ca init` writes.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read cluster CA {}: {e}", path.display()))?;
        Self::decode(text.trim()).map_err(|e| {
            anyhow::anyhow!("cluster CA {} is not a CA public key: {e}", path.display())
        })
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        let bytes = B64.decode(text).map_err(|e| e.to_string())?;
        let key = PublicKey::try_decode_protobuf(&bytes).map_err(|e| e.to_string())?;
        // Other key types would verify too; the CA is documented, and made, as Ed25519.
        key.clone()
            .try_into_ed25519()
            .map_err(|_| "not an Ed25519 key".to_string())?;
        Ok(ClusterCa(key))
    }

    pub fn encode(key: &PublicKey) -> String {
        B64.encode(key.encode_protobuf())
    }

    /// Checks that `grant` is the CA's and for `author`, whatever its expiry.
    pub fn verify(&self, grant: &Grant, author: &PeerId) -> Result<GrantBody, GrantError> {
        if grant.body.len() + grant.signature.len() > MAX_GRANT_BYTES {
            return Err(GrantError::TooLarge);
        }
        let signature = B64
            .decode(&grant.signature)
            .map_err(|e| GrantError::Malformed(format!("signature: {e}")))?;
        if !self.0.verify(grant.body.as_bytes(), &signature) {
            return Err(GrantError::BadSignature);
        }
        grant.body_for(author)
    }

    /// [`verify`](Self::verify), and still valid at `now_unix`.
    pub fn check(
        &self,
        grant: &Grant,
        author: &PeerId,
        now_unix: u64,
    ) -> Result<GrantBody, GrantError> {
        let body = self.verify(grant, author)?;
        if body.expired(now_unix) {
            return Err(GrantError::Expired(body.not_after_unix));
        }
        Ok(body)
    }

    /// What a peer's claims are limited to, given the grant its announcement carried.
    pub fn allowed(&self, grant: Option<&Grant>, author: &PeerId, now_unix: u64) -> Allowed {
        match grant {
            None => Allowed::NoGrant,
            Some(g) => match self.check(g, author, now_unix) {
                Ok(body) => Allowed::Granted(body),
                Err(e) => Allowed::Invalid(e),
            },
        }
    }
}

impl Grant {
    /// The body, if it is for `peer`; the signature is not looked at.
    fn body_for(&self, peer: &PeerId) -> Result<GrantBody, GrantError> {
        let body: GrantBody =
            serde_json::from_str(&self.body).map_err(|e| GrantError::Malformed(e.to_string()))?;
        if body.peer_id != peer.to_string() {
            return Err(GrantError::OtherPeer(body.peer_id));
        }
        if body.pod_cidrs.len() > MAX_GRANT_CIDRS {
            return Err(GrantError::TooManyCidrs);
        }
        Ok(body)
    }
}

/// Which CIDRs a peer's claims may fall in, and why the others do not count.
pub enum Allowed {
    Granted(GrantBody),
    NoGrant,
    Invalid(GrantError),
}

impl Allowed {
    pub fn cidrs(&self) -> &[IpNetwork] {
        match self {
            Allowed::Granted(body) => &body.pod_cidrs,
            _ => &[],
        }
    }

    /// The metric label for claims this leaves out.
    pub fn reason(&self) -> &'static str {
        match self {
            Allowed::Granted(_) => "outside_grant",
            Allowed::NoGrant => "no_grant",
            Allowed::Invalid(_) => "invalid_grant",
        }
    }
}

/// An agent's grant settings: the CA it checks peers' grants against, if any, and its own
/// grant, if any. A grant without a CA is carried but not enforced here, so that grants
/// can be handed out first and enforcement turned on afterwards, node by node.
pub struct GrantPolicy {
    pub ca: Option<ClusterCa>,
    /// This node's grant, sent with each announcement.
    pub own: Option<(Grant, GrantBody)>,
}

impl GrantPolicy {
    /// Loads the CA and this node's grant (`None` when neither is set). The grant must be
    /// for `local` and, with a CA, signed by it. An expired one is kept, with a warning:
    /// the node's pods go unrouted elsewhere, but the agent still serves its node.
    pub fn load(
        ca_file: Option<&Path>,
        grant_file: Option<&Path>,
        local: &PeerId,
        now_unix: u64,
    ) -> anyhow::Result<Option<Self>> {
        if ca_file.is_none() && grant_file.is_none() {
            return Ok(None);
        }
        let ca = match ca_file {
            Some(path) => Some(
                ClusterCa::load(path)
                    .map_err(|e| anyhow::anyhow!("invalid config: p2p.clusterCaFile: {e:#}"))?,
            ),
            None => None,
        };
        let own = match grant_file {
            None => None,
            Some(path) => {
                let grant = load_grant(path)
                    .map_err(|e| anyhow::anyhow!("invalid config: p2p.grantFile: {e:#}"))?;
                let body = match &ca {
                    Some(ca) => ca.verify(&grant, local),
                    None => grant.body_for(local),
                }
                .map_err(|e| {
                    anyhow::anyhow!("invalid config: p2p.grantFile: {}: {e}", path.display())
                })?;
                Some((grant, body))
            }
        };
        let policy = GrantPolicy { ca, own };
        policy.log_start(now_unix);
        Ok(Some(policy))
    }

    fn log_start(&self, now_unix: u64) {
        match (&self.ca, &self.own) {
            (Some(_), None) => tracing::info!(
                "cluster CA set and no p2p.grantFile: peers that check grants ignore this node's pods (fine for a relay)"
            ),
            (None, Some(_)) => tracing::warn!(
                "p2p.grantFile without p2p.clusterCaFile: this node sends its grant but does not check peers' grants"
            ),
            _ => {}
        }
        if let Some((_, body)) = &self.own {
            if body.expired(now_unix) {
                tracing::warn!(
                    not_after_unix = body.not_after_unix,
                    "this node's grant has expired: peers that check grants ignore its pods; renew it"
                );
            } else {
                tracing::info!(cidrs = ?body.pod_cidrs, not_after_unix = body.not_after_unix, "this node's grant");
            }
        }
    }

    pub fn own_grant(&self) -> Option<Grant> {
        self.own.as_ref().map(|(g, _)| g.clone())
    }

    /// What peers that check grants accept of this node's pods right now.
    pub fn own_cidrs(&self, now_unix: u64) -> &[IpNetwork] {
        match &self.own {
            Some((_, body)) if !body.expired(now_unix) => &body.pod_cidrs,
            _ => &[],
        }
    }

    pub fn own_not_after(&self) -> Option<u64> {
        self.own.as_ref().map(|(_, b)| b.not_after_unix)
    }
}

/// Signs a grant with the CA's key.
pub fn issue(ca: &Keypair, body: &GrantBody) -> Grant {
    let body = serde_json::to_string(body).expect("grant serializes");
    let signature = ca
        .sign(body.as_bytes())
        .expect("ed25519 signing cannot fail");
    Grant {
        body,
        signature: B64.encode(signature),
    }
}

fn load_grant(path: &Path) -> anyhow::Result<Grant> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read grant {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("grant {} does not decode: {e}", path.display()))
}

pub fn covers(cidrs: &[IpNetwork], ip: IpAddr) -> bool {
    cidrs.iter().any(|c| c.contains(ip))
}

/// The IPs no CIDR in `cidrs` covers.
pub fn outside(cidrs: &[IpNetwork], ips: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    ips.into_iter().filter(|ip| !covers(cidrs, *ip)).collect()
}

/// Keeps the claims inside `cidrs`; returns the IPs it dropped.
pub fn keep_granted(pods: &mut Vec<PodClaim>, cidrs: &[IpNetwork]) -> Vec<IpAddr> {
    let mut dropped = Vec::new();
    pods.retain(|p| {
        let inside = covers(cidrs, p.ip);
        if !inside {
            dropped.push(p.ip);
        }
        inside
    });
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(peer: &PeerId, cidrs: &[&str], not_after_unix: u64) -> GrantBody {
        GrantBody {
            peer_id: peer.to_string(),
            pod_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            not_after_unix,
        }
    }

    #[test]
    fn a_grant_holds_for_its_peer_until_it_expires() {
        let ca_key = Keypair::generate_ed25519();
        let ca = ClusterCa::decode(&ClusterCa::encode(&ca_key.public())).unwrap();
        let peer = PeerId::random();
        let grant = issue(
            &ca_key,
            &body(&peer, &["10.244.1.0/24", "fd00:1::/64"], 1000),
        );
        let wire: Grant = serde_json::from_str(&serde_json::to_string(&grant).unwrap()).unwrap();
        let got = ca.check(&wire, &peer, 999).unwrap();
        assert_eq!(got.pod_cidrs.len(), 2);
        assert_eq!(ca.check(&wire, &peer, 1001), Err(GrantError::Expired(1000)));
        assert_eq!(
            ca.check(&wire, &PeerId::random(), 999),
            Err(GrantError::OtherPeer(peer.to_string()))
        );
    }

    #[test]
    fn forged_and_tampered_grants_are_refused() {
        let ca_key = Keypair::generate_ed25519();
        let ca = ClusterCa::decode(&ClusterCa::encode(&ca_key.public())).unwrap();
        let peer = PeerId::random();
        // Signed by some other key, for the same peer.
        let forged = issue(
            &Keypair::generate_ed25519(),
            &body(&peer, &["10.0.0.0/8"], 9),
        );
        assert_eq!(ca.check(&forged, &peer, 1), Err(GrantError::BadSignature));
        // Widened after signing.
        let mut widened = issue(&ca_key, &body(&peer, &["10.244.1.0/24"], 9));
        widened.body = widened.body.replace("10.244.1.0/24", "10.0.0.0/8");
        assert_eq!(ca.check(&widened, &peer, 1), Err(GrantError::BadSignature));
        let mut garbled = issue(&ca_key, &body(&peer, &[], 9));
        garbled.signature = "!!".into();
        assert!(matches!(
            ca.check(&garbled, &peer, 1),
            Err(GrantError::Malformed(_))
        ));
        let mut huge = issue(&ca_key, &body(&peer, &[], 9));
        huge.body = " ".repeat(MAX_GRANT_BYTES);
        assert_eq!(ca.check(&huge, &peer, 1), Err(GrantError::TooLarge));
        assert!(ClusterCa::decode("not base64!").is_err());
    }

    #[test]
    fn a_node_starts_with_its_expired_grant_but_not_with_another_peers() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = Keypair::generate_ed25519();
        let ca_file = dir.path().join("ca.pub");
        std::fs::write(&ca_file, ClusterCa::encode(&ca_key.public()) + "\n").unwrap();
        let me = PeerId::random();
        let write = |name: &str, body: &GrantBody| {
            let path = dir.path().join(name);
            std::fs::write(&path, serde_json::to_string(&issue(&ca_key, body)).unwrap()).unwrap();
            path
        };
        let expired = write("expired.json", &body(&me, &["10.244.1.0/24"], 100));
        let policy = GrantPolicy::load(Some(&ca_file), Some(&expired), &me, 200)
            .unwrap()
            .unwrap();
        assert!(
            policy.own_cidrs(200).is_empty(),
            "peers ignore an expired grant"
        );
        assert_eq!(policy.own_cidrs(50).len(), 1);

        let theirs = write(
            "theirs.json",
            &body(&PeerId::random(), &["10.244.1.0/24"], 900),
        );
        let e = GrantPolicy::load(Some(&ca_file), Some(&theirs), &me, 200)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("p2p.grantFile") && e.contains("not for this one"),
            "{e}"
        );
        let e = GrantPolicy::load(Some(&dir.path().join("none")), None, &me, 200)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("p2p.clusterCaFile"), "{e}");
        assert!(GrantPolicy::load(None, None, &me, 200).unwrap().is_none());
    }

    #[test]
    fn only_claims_inside_the_grant_are_kept() {
        let cidrs: Vec<IpNetwork> = vec!["10.244.1.0/24".parse().unwrap()];
        let claim = |ip: &str| PodClaim {
            ip: ip.parse().unwrap(),
            since_ms: 1,
        };
        let mut pods = vec![claim("10.244.1.2"), claim("10.244.3.7"), claim("fd00::2")];
        let dropped = keep_granted(&mut pods, &cidrs);
        assert_eq!(pods, vec![claim("10.244.1.2")]);
        assert_eq!(
            dropped,
            vec![
                "10.244.3.7".parse::<IpAddr>().unwrap(),
                "fd00::2".parse().unwrap()
            ]
        );
        let mut none = vec![claim("10.244.1.2")];
        assert_eq!(keep_granted(&mut none, &[]).len(), 1);
        assert!(none.is_empty());
    }
}
