//! The node's libp2p identity: a random Ed25519 key, made on first start and kept 0600 in
//! `stateDir`. Never derived from the node name, so no one can predict it.

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::identity::Keypair;

/// The I/O error is part of the message, not a `source`: the agent prints errors with
/// their chain (`{:#}`), which would repeat it.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read identity key {path}: {error}")]
    Read { path: String, error: io::Error },
    #[error("identity key {path} is corrupt ({reason}); move it away to make a new identity")]
    Corrupt { path: String, reason: String },
    #[error("cannot write identity key {path}: {error}")]
    Write { path: String, error: io::Error },
}

pub fn load_or_create(path: &Path) -> Result<Keypair, IdentityError> {
    let shown = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => {
            // Tighten a key someone loosened; the key itself is still good.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Corrupt {
                path: shown,
                reason: e.to_string(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().expect("ed25519 keys encode");
            write_private(path, &bytes)
                .map_err(|error| IdentityError::Write { path: shown, error })?;
            Ok(key)
        }
        Err(error) => Err(IdentityError::Read { path: shown, error }),
    }
}

/// Writes through a 0600 temp file and a rename, so a crash never leaves half a key.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        // Half a key (a full disk, say) must not stay behind.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let a = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let other = load_or_create(&dir.path().join("other.key")).unwrap();
        assert_ne!(a.public().to_peer_id(), other.public().to_peer_id());
    }

    #[test]
    fn corrupt_key_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        std::fs::write(&path, b"garbage").unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("corrupt"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"garbage");
    }
}
