//! Cluster membership: a peer proves it holds the cluster secret with a token bound to its
//! own peer ID, `HMAC-SHA256(secret, "edgeway-member-v1" || peer id)`. The token is useless
//! to anyone without that peer's private key, because libp2p authenticates peer IDs, and it
//! works the same over TCP and QUIC (libp2p's pnet covers only TCP).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hmac::{Hmac, Mac};
use libp2p::PeerId;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const CONTEXT: &[u8] = b"edgeway-member-v1";
/// Shorter secrets are too easy to guess offline.
const MIN_SECRET_BYTES: usize = 16;

/// The I/O error is part of the message, not a `source`: the agent prints errors with
/// their chain (`{:#}`), which would repeat it.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read cluster secret {path}: {error}")]
    Read { path: String, error: io::Error },
    #[error("cluster secret {path} is shorter than {MIN_SECRET_BYTES} bytes; generate one with `head -c 32 /dev/urandom | base64`")]
    TooShort { path: String },
}

/// The cluster secret. Its Debug output never shows the bytes, so it cannot reach a log.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|error| SecretError::Read {
            path: shown.clone(),
            error,
        })?;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %shown, "cluster secret is readable by group or others; chmod 600 it");
            }
        }
        Self::from_bytes(trim(&bytes).to_vec()).ok_or(SecretError::TooShort { path: shown })
    }

    /// `None` when the secret is too short to be one.
    pub fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() >= MIN_SECRET_BYTES).then_some(ClusterSecret(bytes))
    }

    fn mac(&self, peer: &PeerId) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(CONTEXT);
        mac.update(&peer.to_bytes());
        mac
    }

    /// The token `peer` presents to prove membership.
    pub fn token_for(&self, peer: &PeerId) -> Vec<u8> {
        self.mac(peer).finalize().into_bytes().to_vec()
    }

    /// Checks a token in constant time.
    pub fn verify(&self, peer: &PeerId, token: &[u8]) -> bool {
        self.mac(peer).verify_slice(token).is_ok()
    }
}

/// A trailing newline from `echo secret > file` is not part of the secret.
fn trim(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_secret_and_peer() {
        let s = ClusterSecret::from_bytes(b"0123456789abcdef-cluster".to_vec()).unwrap();
        let other = ClusterSecret::from_bytes(b"another-secret-0123456789".to_vec()).unwrap();
        let a = PeerId::random();
        let b = PeerId::random();
        let t = s.token_for(&a);
        assert!(s.verify(&a, &t));
        assert!(!s.verify(&b, &t), "a token must not work for another peer");
        assert!(
            !other.verify(&a, &t),
            "a token must not work under another secret"
        );
        assert!(!s.verify(&a, &t[..16]));
        assert!(!s.verify(&a, &[]));
    }

    #[test]
    fn short_secrets_are_refused_and_never_printed() {
        assert!(ClusterSecret::from_bytes(b"short".to_vec()).is_none());
        let s = ClusterSecret::from_bytes(b"super-secret-value-123".to_vec()).unwrap();
        assert!(!format!("{s:?}").contains("super"));
    }

    #[test]
    fn an_unreadable_secret_names_the_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let e = ClusterSecret::load(&dir.path().join("missing")).unwrap_err();
        let shown = format!("{:#}", anyhow::Error::from(e));
        assert!(shown.contains("cannot read cluster secret"), "{shown}");
        assert_eq!(
            shown.matches("No such file or directory").count(),
            1,
            "{shown}"
        );
    }

    #[test]
    fn file_loading_trims_the_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, b"0123456789abcdef0123\n").unwrap();
        let a = ClusterSecret::load(&p).unwrap();
        let b = ClusterSecret::from_bytes(b"0123456789abcdef0123".to_vec()).unwrap();
        let peer = PeerId::random();
        assert!(b.verify(&peer, &a.token_for(&peer)));
        std::fs::write(&p, b"tiny\n").unwrap();
        assert!(ClusterSecret::load(&p)
            .unwrap_err()
            .to_string()
            .contains("shorter"));
    }
}
