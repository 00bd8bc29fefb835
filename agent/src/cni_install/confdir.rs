//! The CNI conf dir: finding the primary config, and patching it on disk.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::conflist::{self, ConfKind};
use super::fsutil::{self, Keep};
use super::CniInstallError;

/// One `.conf`/`.conflist` file as read from the conf dir.
#[derive(Debug)]
pub(crate) struct Candidate {
    pub path: PathBuf,
    pub kind: ConfKind,
    pub bytes: Vec<u8>,
    pub meta: Metadata,
    /// The parsed top-level object, or why the file is not a valid network config.
    pub parsed: Result<Map<String, Value>, String>,
}

/// Reads the conf dir's `.conf` and `.conflist` files in lexical (byte) order, as libcni
/// does, up to and including the first valid one: the primary config, if any, is the last
/// element and the only `Ok` one. Other files, directories and files that vanish while we
/// look are left out.
pub(crate) fn scan(dir: &Path) -> Result<Vec<Candidate>, CniInstallError> {
    let list_err = |error: io::Error| CniInstallError::ListDir {
        dir: dir.to_path_buf(),
        error,
    };
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(list_err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(list_err)?;
    names.retain(|p| ConfKind::of(p).is_some());
    names.sort_by(|a, b| {
        let key = |p: &Path| {
            p.file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default()
        };
        key(a).cmp(&key(b))
    });
    let mut out = Vec::new();
    for path in names {
        let Some(c) = read_candidate(&path)? else {
            continue;
        };
        let valid = c.parsed.is_ok();
        out.push(c);
        if valid {
            break;
        }
    }
    Ok(out)
}

/// Reads one config file; `None` if it is not a regular `.conf`/`.conflist` file (any
/// more).
pub(crate) fn read_candidate(path: &Path) -> Result<Option<Candidate>, CniInstallError> {
    let Some(kind) = ConfKind::of(path) else {
        return Ok(None);
    };
    let read_err = |error| CniInstallError::Read {
        path: path.to_path_buf(),
        error,
    };
    let meta = match fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let parsed = conflist::parse(kind, &bytes);
    Ok(Some(Candidate {
        path: path.to_path_buf(),
        kind,
        bytes,
        meta,
        parsed,
    }))
}

/// The primary config among scanned candidates. Invalid files before it are logged (they
/// are left untouched); without a valid file, the error names every invalid one.
pub(crate) fn primary(dir: &Path, scanned: &[Candidate]) -> Result<usize, CniInstallError> {
    for c in scanned {
        if let Err(reason) = &c.parsed {
            tracing::warn!(file = %c.path.display(), "skipping an invalid CNI network config (left untouched): {reason}");
        }
    }
    match scanned.last() {
        Some(c) if c.parsed.is_ok() => Ok(scanned.len() - 1),
        _ => Err(CniInstallError::NoPrimary {
            dir: dir.to_path_buf(),
            skipped: scanned
                .iter()
                .map(|c| (c.path.clone(), c.parsed.clone().err().unwrap_or_default()))
                .collect(),
        }),
    }
}

/// What patching the primary config did.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOutcome {
    /// The file that holds edgeway's entry now (a wrapped `.conf` becomes a `.conflist`).
    pub file: PathBuf,
    /// Whether anything was written; `false` when the entry was already in place.
    pub changed: bool,
    /// The `.conf` that was wrapped into `file` and removed.
    pub wrapped_from: Option<PathBuf>,
    /// The entry as it now stands in `file`.
    pub entry: Map<String, Value>,
    /// Whether `file` held no edgeway entry before.
    pub was_missing: bool,
    /// The bytes written to `file`, when `changed`.
    pub(crate) written: Option<Vec<u8>>,
}

/// Why one attempt at patching did not go through.
pub(crate) enum Attempt {
    Failed(CniInstallError),
    /// The file changed between our read and our write; scan again.
    Raced(PathBuf),
}

impl From<CniInstallError> for Attempt {
    fn from(e: CniInstallError) -> Self {
        Attempt::Failed(e)
    }
}

/// Checks, right before the rename, that the file still holds what we patched, so a
/// concurrent rewrite by the host CNI is not lost under our stale copy.
fn unchanged_since_read(c: &Candidate) -> Result<(), Attempt> {
    match fs::read(&c.path) {
        Ok(now) if now == c.bytes => Ok(()),
        Ok(_) => Err(Attempt::Raced(c.path.clone())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Attempt::Raced(c.path.clone())),
        Err(error) => Err(Attempt::Failed(CniInstallError::Read {
            path: c.path.clone(),
            error,
        })),
    }
}

/// Puts `entry` into a valid candidate (see [`conflist::with_entry`]), wrapping a `.conf`.
pub(crate) fn insert(c: &Candidate, entry: &Map<String, Value>) -> Result<PatchOutcome, Attempt> {
    let parsed = c
        .parsed
        .as_ref()
        .map_err(|reason| CniInstallError::Invalid {
            path: c.path.clone(),
            reason: reason.clone(),
        })?;
    let list = match c.kind {
        ConfKind::Conflist => parsed.clone(),
        ConfKind::Conf => {
            let stem = c.path.file_stem().map(|s| s.to_string_lossy().into_owned());
            conflist::wrap(parsed, stem.as_deref().unwrap_or("cni"))
        }
    };
    let inserted =
        conflist::with_entry(&list, entry).map_err(|reason| CniInstallError::Invalid {
            path: c.path.clone(),
            reason,
        })?;
    let bytes = conflist::to_bytes(&inserted.conflist);
    let mut outcome = PatchOutcome {
        file: c.path.clone(),
        changed: false,
        wrapped_from: None,
        entry: inserted.entry,
        was_missing: inserted.was_missing,
        written: None,
    };
    let keep = Keep::like(&c.meta);
    match c.kind {
        ConfKind::Conflist => {
            // Compare serialized forms: key order counts, the file's own formatting does not.
            if bytes == conflist::to_bytes(parsed) {
                return Ok(outcome);
            }
            unchanged_since_read(c)?;
            fsutil::write_atomic(&c.path, &bytes, keep)?;
        }
        ConfKind::Conf => {
            let target = c.path.with_extension("conflist");
            check_wrap_target(&c.path, &target)?;
            unchanged_since_read(c)?;
            // The new file first: at no moment is there neither.
            fsutil::write_atomic(&target, &bytes, keep)?;
            match fs::remove_file(&c.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(Attempt::Failed(CniInstallError::Remove {
                        path: c.path.clone(),
                        error,
                    }))
                }
            }
            outcome.file = target;
            outcome.wrapped_from = Some(c.path.clone());
        }
    }
    outcome.changed = true;
    outcome.written = Some(bytes);
    Ok(outcome)
}

/// Wrapping `x.conf` writes `x.conflist`; that file may be replaced only if it is ours
/// from an earlier wrap (it holds an edgeway entry), never someone else's network.
fn check_wrap_target(conf: &Path, target: &Path) -> Result<(), CniInstallError> {
    let bytes = match fs::read(target) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(CniInstallError::Read {
                path: target.to_path_buf(),
                error,
            })
        }
    };
    match conflist::parse(ConfKind::Conflist, &bytes) {
        Ok(list) if conflist::entry_count(&list) > 0 => Ok(()),
        _ => Err(CniInstallError::WrapTarget {
            conf: conf.to_path_buf(),
            target: target.to_path_buf(),
        }),
    }
}

/// Removes every edgeway entry from a valid candidate; `Ok(false)` when it holds none.
fn remove(c: &Candidate) -> Result<bool, Attempt> {
    let Ok(parsed) = &c.parsed else {
        return Ok(false);
    };
    // A `.conf` is one plugin: it is edgeway's entry or holds none; either way, not ours
    // to rewrite.
    if c.kind != ConfKind::Conflist {
        return Ok(false);
    }
    let Some(list) = conflist::without_entry(parsed) else {
        return Ok(false);
    };
    if conflist::parse(ConfKind::Conflist, &conflist::to_bytes(&list)).is_err() {
        // Only edgeway was in the list: leave the file as it is rather than write an
        // invalid one.
        return Err(Attempt::Failed(CniInstallError::Invalid {
            path: c.path.clone(),
            reason: "edgeway is its only plugin; not removing it".into(),
        }));
    }
    unchanged_since_read(c)?;
    fsutil::write_atomic(&c.path, &conflist::to_bytes(&list), Keep::like(&c.meta))?;
    Ok(true)
}

const ATTEMPTS: usize = 5;
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Removes edgeway's entries from one `.conflist`, reading it again if it changes under
/// us. An invalid file is left untouched.
pub(crate) fn remove_from(path: &Path) -> Result<bool, CniInstallError> {
    for _ in 0..ATTEMPTS {
        let Some(c) = read_candidate(path)? else {
            return Ok(false);
        };
        if let Err(reason) = &c.parsed {
            tracing::debug!(file = %path.display(), "not a valid network config, left untouched: {reason}");
            return Ok(false);
        }
        match remove(&c) {
            Ok(done) => return Ok(done),
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::Raced(_)) => std::thread::sleep(RETRY_PAUSE),
        }
    }
    Err(CniInstallError::KeepsChanging {
        path: path.to_path_buf(),
    })
}

/// Runs `step` on the primary config, scanning again when the file changed under us.
pub(crate) fn with_primary<T>(
    dir: &Path,
    mut step: impl FnMut(&Candidate) -> Result<T, Attempt>,
) -> Result<T, CniInstallError> {
    let mut raced = None;
    for _ in 0..ATTEMPTS {
        let scanned = scan(dir)?;
        let i = primary(dir, &scanned)?;
        match step(&scanned[i]) {
            Ok(v) => return Ok(v),
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::Raced(path)) => {
                tracing::debug!(file = %path.display(), "changed while being patched; reading it again");
                raced = Some(path);
                std::thread::sleep(RETRY_PAUSE);
            }
        }
    }
    Err(CniInstallError::KeepsChanging {
        path: raced.unwrap_or_else(|| dir.to_path_buf()),
    })
}
