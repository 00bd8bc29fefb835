//! Atomic file replacement: a temp file in the target's directory, fsync, rename, fsync of
//! the directory. Readers (the container runtime, a running `execve`) see the old file or
//! the new one, never a half-written one, and a running binary never gives "text file busy".

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::CniInstallError;

/// Temp files start with a dot and end in `.tmp`, so no runtime takes them for a config.
const TMP_PREFIX: &str = ".edgeway-";
const TMP_SUFFIX: &str = ".tmp";

/// What the replaced file keeps of the old one.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    pub mode: u32,
    /// `(uid, gid)`; `None` leaves the temp file's owner (the caller's).
    pub owner: Option<(u32, u32)>,
}

impl Keep {
    pub fn like(meta: &Metadata) -> Keep {
        Keep {
            mode: meta.mode() & 0o7777,
            owner: Some((meta.uid(), meta.gid())),
        }
    }
}

/// Replaces `path` with whatever `fill` writes, atomically, with `keep`'s mode and owner.
pub fn replace_with(
    path: &Path,
    keep: Keep,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), CniInstallError> {
    let write_err = |error: io::Error| CniInstallError::Write {
        path: path.to_path_buf(),
        error,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .suffix(TMP_SUFFIX)
        .tempfile_in(dir)
        .map_err(write_err)?;
    fill(tmp.as_file_mut()).map_err(write_err)?;
    let file = tmp.as_file();
    if let Some((uid, gid)) = keep.owner {
        let current = file.metadata().map_err(write_err)?;
        if (current.uid(), current.gid()) != (uid, gid) {
            if let Err(e) = std::os::unix::fs::fchown(file, Some(uid), Some(gid)) {
                tracing::warn!(file = %path.display(), "cannot keep the owner {uid}:{gid}: {e}");
            }
        }
    }
    // After fchown, which may clear set-id bits.
    file.set_permissions(fs::Permissions::from_mode(keep.mode))
        .map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    // Make the rename itself durable; a failure here loses nothing already visible.
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), "cannot fsync the directory: {e}");
    }
    Ok(())
}

/// [`replace_with`] for bytes held in memory.
pub fn write_atomic(path: &Path, contents: &[u8], keep: Keep) -> Result<(), CniInstallError> {
    replace_with(path, keep, |f| f.write_all(contents))
}

/// Whether two files hold the same bytes. A missing `b` is simply different.
pub fn same_contents(a: &Path, b: &Path) -> io::Result<bool> {
    let mut fb = match File::open(b) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut fa = File::open(a)?;
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
