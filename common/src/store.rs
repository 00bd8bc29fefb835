//! The on-disk state under `stateDir`, shared by the plugin and the agent:
//!
//! ```text
//! stateDir/
//!   lock                        flock: shared for each plugin call, exclusive for agent recovery
//!   attachments/<cid>@<if>.json one record per attachment
//!   pending-del/<cid>@<if>.json DELs that ran while the agent was down, replayed at its start
//! ```
//!
//! Every write goes to a temp file that is renamed into place, so a crash of the plugin or
//! the agent leaves either the old file or the new one. Files are 0600, directories 0700.
//!
//! There is no fsync, on purpose: a record describes kernel rules, which do not survive the
//! power loss or kernel crash that fsync would guard against, and the agent drops records
//! whose rules are gone. Measured here, the two fsyncs made ADD 3.5x slower than sbr under
//! disk load (docs/benchmarks.md).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::{Attachment, AttachmentKey};

const ATTACHMENTS: &str = "attachments";
const PENDING_DEL: &str = "pending-del";

/// The I/O error is part of the message, not a `source`: the plugin prints the message
/// alone, and the agent prints errors with their chain (`{:#}`), which would repeat it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {error}")]
    CreateDir { path: PathBuf, error: io::Error },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: io::Error },
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("cannot remove {path}: {error}")]
    Remove { path: PathBuf, error: io::Error },
    #[error("corrupt record {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot lock {path}: {error}")]
    Lock { path: PathBuf, error: io::Error },
}

/// A DEL that the agent has not heard of yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PendingDel {
    #[serde(flatten)]
    pub key: AttachmentKey,
    /// The generation of the record the DEL removed, if there was one.
    #[serde(default)]
    pub generation: Option<String>,
    /// Addresses whose rules the agent must make sure are gone.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    pub table: u32,
    pub priority: u32,
    pub queued_unix: u64,
}

/// A file that could not be parsed, left in place for the operator and reported.
#[derive(Debug, Clone)]
pub struct CorruptFile {
    pub path: PathBuf,
    pub reason: String,
}

/// Holds the lock on `stateDir/lock` until dropped.
pub struct StoreLock {
    _lock: Flock<File>,
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Store { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates `stateDir` and its subdirectories, 0700. One that already exists with group
    /// or other bits (kubelet makes a `DirectoryOrCreate` hostPath 0755) is tightened to
    /// 0700 as well, as far as the filesystem allows: it holds the node's private key.
    pub fn ensure_dirs(&self) -> Result<(), StoreError> {
        for d in [
            self.dir.clone(),
            self.dir.join(ATTACHMENTS),
            self.dir.join(PENDING_DEL),
        ] {
            if let Ok(meta) = fs::metadata(&d) {
                if meta.is_dir() {
                    if meta.permissions().mode() & 0o077 != 0 {
                        let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o700));
                    }
                    continue;
                }
            }
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(|error| StoreError::CreateDir { path: d, error })?;
        }
        Ok(())
    }

    fn lock(&self, arg: FlockArg) -> Result<StoreLock, StoreError> {
        let path = self.dir.join("lock");
        let opened = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path);
        let file = match opened {
            Ok(f) => f,
            // flock(2) needs no write access. On a read-only filesystem nothing can be
            // written anyway, and the agent can still rebuild its registry from the records
            // (the failing write then names the real cause).
            Err(e) if e.kind() == io::ErrorKind::ReadOnlyFilesystem => {
                File::open(&path).map_err(|_| StoreError::Lock {
                    path: path.clone(),
                    error: e,
                })?
            }
            Err(error) => {
                return Err(StoreError::Lock {
                    path: path.clone(),
                    error,
                })
            }
        };
        let lock = Flock::lock(file, arg).map_err(|(_, e)| StoreError::Lock {
            path,
            error: e.into(),
        })?;
        Ok(StoreLock { _lock: lock })
    }

    /// Taken by every plugin call; many can hold it at once.
    pub fn lock_shared(&self) -> Result<StoreLock, StoreError> {
        self.lock(FlockArg::LockShared)
    }

    /// Taken by the agent while it reconciles, so no ADD is half-done underneath it.
    pub fn lock_exclusive(&self) -> Result<StoreLock, StoreError> {
        self.lock(FlockArg::LockExclusive)
    }

    fn record_path(&self, key: &AttachmentKey) -> PathBuf {
        self.dir.join(ATTACHMENTS).join(key.file_name())
    }

    fn pending_path(&self, key: &AttachmentKey) -> PathBuf {
        self.dir.join(PENDING_DEL).join(key.file_name())
    }

    pub fn write_record(&self, a: &Attachment) -> Result<(), StoreError> {
        write_json_atomic(&self.record_path(&a.key()), a)
    }

    pub fn read_record(&self, key: &AttachmentKey) -> Result<Option<Attachment>, StoreError> {
        read_json(&self.record_path(key))
    }

    pub fn remove_record(&self, key: &AttachmentKey) -> Result<(), StoreError> {
        remove_file(&self.record_path(key))
    }

    /// Every record, and every file that could not be read as one.
    pub fn list_records(&self) -> Result<(Vec<Attachment>, Vec<CorruptFile>), StoreError> {
        let (records, corrupt) = list_json::<Attachment>(&self.dir.join(ATTACHMENTS))?;
        let mut good = Vec::with_capacity(records.len());
        let mut bad = corrupt;
        for (path, a) in records {
            // The file name is the key; a record that disagrees was edited or misplaced.
            match a.validate() {
                Ok(()) if path.file_name() == Some(a.key().file_name().as_ref()) => good.push(a),
                Ok(()) => bad.push(CorruptFile {
                    path,
                    reason: "file name does not match containerID and ifname".into(),
                }),
                Err(reason) => bad.push(CorruptFile { path, reason }),
            }
        }
        Ok((good, bad))
    }

    pub fn queue_pending_del(&self, d: &PendingDel) -> Result<(), StoreError> {
        write_json_atomic(&self.pending_path(&d.key), d)
    }

    pub fn read_pending_del(&self, key: &AttachmentKey) -> Result<Option<PendingDel>, StoreError> {
        read_json(&self.pending_path(key))
    }

    pub fn list_pending_dels(&self) -> Result<(Vec<PendingDel>, Vec<CorruptFile>), StoreError> {
        let (list, corrupt) = list_json::<PendingDel>(&self.dir.join(PENDING_DEL))?;
        Ok((list.into_iter().map(|(_, d)| d).collect(), corrupt))
    }

    pub fn remove_pending_del(&self, key: &AttachmentKey) -> Result<(), StoreError> {
        remove_file(&self.pending_path(key))
    }
}

/// Writes `value` as JSON to `path` through a temp file and a rename.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let err = |error| StoreError::Write {
        path: path.to_path_buf(),
        error,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{:016x}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("record"),
        rand::random::<u64>()
    ));
    let body = serde_json::to_vec_pretty(value).map_err(|e| err(io::Error::other(e)))?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(StoreError::Read {
                path: path.to_path_buf(),
                error,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

type Listed<T> = (Vec<(PathBuf, T)>, Vec<CorruptFile>);

fn list_json<T: DeserializeOwned>(dir: &Path) -> Result<Listed<T>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((vec![], vec![])),
        Err(error) => {
            return Err(StoreError::Read {
                path: dir.to_path_buf(),
                error,
            })
        }
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| StoreError::Read {
            path: dir.to_path_buf(),
            error,
        })?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Temp files of a write that a crash interrupted: never a record.
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match read_json::<T>(&path) {
            Ok(Some(v)) => good.push((path, v)),
            Ok(None) => {}
            Err(StoreError::Corrupt { path, reason }) => bad.push(CorruptFile { path, reason }),
            Err(e) => return Err(e),
        }
    }
    good.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((good, bad))
}

fn remove_file(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StoreError::Remove {
            path: path.to_path_buf(),
            error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PodRef;

    fn sample(cid: &str) -> Attachment {
        Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/x".into(),
            network: "net".into(),
            ips: vec!["10.244.0.9".parse().unwrap()],
            pod: PodRef::default(),
            table: 7332,
            priority: 7332,
            generation: "g".into(),
            created_unix: 0,
        }
    }

    #[test]
    fn records_are_private_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().join("state"));
        store.ensure_dirs().unwrap();
        let a = sample("c1");
        store.write_record(&a).unwrap();
        assert_eq!(store.read_record(&a.key()).unwrap(), Some(a.clone()));
        let path = store.record_path(&a.key());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        store.remove_record(&a.key()).unwrap();
        store.remove_record(&a.key()).unwrap();
        assert_eq!(store.read_record(&a.key()).unwrap(), None);
    }

    #[test]
    fn errors_name_their_cause_once() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("state"), b"").unwrap();
        let e = Store::new(tmp.path().join("state"))
            .ensure_dirs()
            .unwrap_err();
        assert!(e.to_string().contains("File exists"), "{e}");
        // A chain printer ({:#} in the agent) would print a source a second time.
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn loose_existing_dirs_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().join("state"));
        for d in ["state", "state/attachments"] {
            fs::DirBuilder::new().create(tmp.path().join(d)).unwrap();
            fs::set_permissions(tmp.path().join(d), fs::Permissions::from_mode(0o755)).unwrap();
        }
        store.ensure_dirs().unwrap();
        for d in ["state", "state/attachments", "state/pending-del"] {
            let mode = fs::metadata(tmp.path().join(d))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o700, "{d}");
        }
    }

    #[test]
    fn listing_separates_corrupt_files_and_skips_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        store.ensure_dirs().unwrap();
        store.write_record(&sample("good")).unwrap();
        let dir = tmp.path().join(ATTACHMENTS);
        fs::write(dir.join("bad@eth0.json"), b"{not json").unwrap();
        fs::write(dir.join(".half.json.1.tmp"), b"{").unwrap();
        // A valid record under another attachment's name.
        fs::write(
            dir.join("other@eth0.json"),
            serde_json::to_vec(&sample("good")).unwrap(),
        )
        .unwrap();
        let (good, bad) = store.list_records().unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(bad.len(), 2);
    }

    #[test]
    fn pending_dels_queue_and_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        store.ensure_dirs().unwrap();
        let d = PendingDel {
            key: sample("c9").key(),
            generation: Some("g".into()),
            ips: vec!["10.244.0.9".parse().unwrap()],
            table: 7332,
            priority: 7332,
            queued_unix: 5,
        };
        store.queue_pending_del(&d).unwrap();
        let (list, bad) = store.list_pending_dels().unwrap();
        assert_eq!(list, vec![d.clone()]);
        assert!(bad.is_empty());
        store.remove_pending_del(&d.key).unwrap();
        assert!(store.list_pending_dels().unwrap().0.is_empty());
    }

    #[test]
    fn shared_locks_coexist() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let a = store.lock_shared().unwrap();
        let b = store.lock_shared().unwrap();
        drop((a, b));
        let _c = store.lock_exclusive().unwrap();
    }
}
