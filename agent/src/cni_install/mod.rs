//! `edgeway-agent install-cni` and `uninstall-cni`: puts the `edgeway` plugin binary into
//! the CNI bin dir and chains edgeway into the node's primary network config, following
//! Istio's install-cni (BRIEF.md, "Conflist patching"):
//!
//! - the binary is written to a temp file in the bin dir and renamed over the old one, so a
//!   running plugin never gives "text file busy"; identical content is not copied;
//! - the primary config is the lexically first valid `.conf` or `.conflist` of the conf dir,
//!   as the runtime (libcni) picks it; invalid files are skipped with a warning and never
//!   touched;
//! - edgeway's entry is removed, then inserted right after the plugin that assigns IPs, so
//!   it is never duplicated and always sits before `portmap`, `bandwidth` and the like;
//! - a `.conf` is wrapped into a `.conflist` of the same name;
//! - every write goes through a temp file in the same directory, fsync and rename, and
//!   keeps the file's mode and owner; key order and every other plugin stay as they were;
//! - `--watch` keeps the entry in place while host CNIs rewrite their file ([`watch`]).
//!
//! From the agent itself (for example `run`), the same is:
//!
//! ```ignore
//! let opts = cni_install::InstallOptions::from_config(&config, bin_dir, conf_dir, plugin, OnAgentDown::Continue)?;
//! let report = cni_install::install(&opts)?;
//! let watcher = cni_install::spawn_watcher(&opts.conf_dir, report.patch.entry, WatchOptions::default())?;
//! // ... at shutdown: watcher.stop() (dropping the `watch::WatchHandle` does the same).
//! ```

mod confdir;
pub mod conflist;
mod fsutil;
pub mod watch;

#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Map, Value};

use crate::config::Config;
pub use confdir::PatchOutcome;
pub use conflist::PLUGIN_TYPE;
pub use watch::{spawn_watcher, WatchOptions};

#[derive(Debug, thiserror::Error)]
pub enum CniInstallError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: io::Error },
    #[error("cannot remove {path}: {error}")]
    Remove { path: PathBuf, error: io::Error },
    #[error("cannot list {dir}: {error}")]
    ListDir { dir: PathBuf, error: io::Error },
    #[error("invalid cni network config {path}: {reason}; left untouched")]
    Invalid { path: PathBuf, reason: String },
    #[error("no valid cni network config (.conf or .conflist) in {dir}{}", skipped_list(.skipped))]
    NoPrimary {
        dir: PathBuf,
        /// The invalid candidates, with why; all left untouched.
        skipped: Vec<(PathBuf, String)>,
    },
    #[error(
        "cannot wrap {conf} into a conflist: {target} already exists and holds no edgeway entry"
    )]
    WrapTarget { conf: PathBuf, target: PathBuf },
    #[error("{path} kept changing while being patched; try again")]
    KeepsChanging { path: PathBuf },
    #[error("plugin binary {path}: {error}")]
    PluginBinary { path: PathBuf, error: io::Error },
    #[error("cannot find the agent's own executable to locate the plugin binary next to it (use --plugin-binary): {0}")]
    CurrentExe(io::Error),
    #[error("{what} {path} is not valid utf-8 and cannot go into the conflist entry")]
    NonUtf8 { what: &'static str, path: PathBuf },
    #[error("cannot watch {dir}: {error}")]
    Watch { dir: PathBuf, error: notify::Error },
}

fn skipped_list(skipped: &[(PathBuf, String)]) -> String {
    skipped
        .iter()
        .map(|(p, why)| format!("; {} is invalid: {why} (left untouched)", p.display()))
        .collect()
}

/// The plugin's `onAgentDown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnAgentDown {
    /// The pod starts with host-CNI networking; the agent picks it up when it is back.
    Continue,
    /// ADD is undone and answers "try again later".
    Fail,
}

impl OnAgentDown {
    fn as_str(self) -> &'static str {
        match self {
            OnAgentDown::Continue => "continue",
            OnAgentDown::Fail => "fail",
        }
    }
}

/// The settings edgeway's conflist entry carries; they must match the agent's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySettings {
    pub agent_socket: PathBuf,
    pub state_dir: PathBuf,
    pub table: u32,
    pub on_agent_down: OnAgentDown,
}

impl EntrySettings {
    /// `agentSocket` = `api.socket`, `stateDir` = `stateDir`, `table` = `tunnel.table`.
    pub fn from_config(config: &Config, on_agent_down: OnAgentDown) -> EntrySettings {
        EntrySettings {
            agent_socket: config.api.socket.clone(),
            state_dir: config.state_dir.clone(),
            table: config.tunnel.table,
            on_agent_down,
        }
    }

    /// The entry's keys. Keys an existing entry has beyond these (`rulePriority`,
    /// `agentTimeoutMs`) are kept when it is rewritten.
    pub fn to_entry(&self) -> Result<Map<String, Value>, CniInstallError> {
        let utf8 = |what, p: &Path| {
            p.to_str()
                .map(|s| Value::String(s.to_string()))
                .ok_or_else(|| CniInstallError::NonUtf8 {
                    what,
                    path: p.to_path_buf(),
                })
        };
        let mut m = Map::new();
        m.insert("type".into(), PLUGIN_TYPE.into());
        m.insert(
            "agentSocket".into(),
            utf8("agentSocket", &self.agent_socket)?,
        );
        m.insert("stateDir".into(), utf8("stateDir", &self.state_dir)?);
        m.insert("table".into(), self.table.into());
        m.insert("onAgentDown".into(), self.on_agent_down.as_str().into());
        Ok(m)
    }
}

/// Everything [`install`] needs.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    /// The `edgeway` binary to install.
    pub plugin_binary: PathBuf,
    pub entry: Map<String, Value>,
}

impl InstallOptions {
    /// `plugin_binary: None` means `edgeway` next to the running executable.
    pub fn from_config(
        config: &Config,
        bin_dir: PathBuf,
        conf_dir: PathBuf,
        plugin_binary: Option<PathBuf>,
        on_agent_down: OnAgentDown,
    ) -> Result<InstallOptions, CniInstallError> {
        let plugin_binary = match plugin_binary {
            Some(p) => p,
            None => default_plugin_binary()?,
        };
        Ok(InstallOptions {
            bin_dir,
            conf_dir,
            plugin_binary,
            entry: EntrySettings::from_config(config, on_agent_down).to_entry()?,
        })
    }
}

/// `edgeway` in the directory of the running executable.
pub fn default_plugin_binary() -> Result<PathBuf, CniInstallError> {
    let exe = std::env::current_exe().map_err(CniInstallError::CurrentExe)?;
    let dir = exe.parent().ok_or_else(|| {
        CniInstallError::CurrentExe(io::Error::other(format!(
            "{} has no directory",
            exe.display()
        )))
    })?;
    Ok(dir.join(PLUGIN_TYPE))
}

/// What [`install_binary`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryOutcome {
    pub path: PathBuf,
    /// `false`: the installed binary already had the same content.
    pub changed: bool,
}

/// Installs `src` as `bin_dir/edgeway` (mode 0755) through a temp file and a rename; a
/// running copy keeps its old inode, so there is no "text file busy". Skips the copy when
/// the content is the same. Creates `bin_dir` if needed.
pub fn install_binary(src: &Path, bin_dir: &Path) -> Result<BinaryOutcome, CniInstallError> {
    let bad_src = |error| CniInstallError::PluginBinary {
        path: src.to_path_buf(),
        error,
    };
    let meta = fs::metadata(src).map_err(bad_src)?;
    if !meta.is_file() {
        return Err(bad_src(io::Error::other("not a regular file")));
    }
    let dst = bin_dir.join(PLUGIN_TYPE);
    if fsutil::same_contents(src, &dst).map_err(|error| CniInstallError::Read {
        path: dst.clone(),
        error,
    })? {
        return Ok(BinaryOutcome {
            path: dst,
            changed: false,
        });
    }
    fs::create_dir_all(bin_dir).map_err(|error| CniInstallError::Write {
        path: bin_dir.to_path_buf(),
        error,
    })?;
    let mut input = fs::File::open(src).map_err(bad_src)?;
    let keep = fsutil::Keep {
        mode: 0o755,
        owner: None,
    };
    fsutil::replace_with(&dst, keep, |out| io::copy(&mut input, out).map(drop))?;
    Ok(BinaryOutcome {
        path: dst,
        changed: true,
    })
}

/// Removes `bin_dir/edgeway`; `false` if it was not there.
pub fn remove_binary(bin_dir: &Path) -> Result<bool, CniInstallError> {
    let path = bin_dir.join(PLUGIN_TYPE);
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(CniInstallError::Remove { path, error }),
    }
}

/// The lexically first valid `.conf`/`.conflist` in `conf_dir`.
#[allow(dead_code)] // API for the agent's own use; the CLI goes through `insert_entry`
pub fn find_primary(conf_dir: &Path) -> Result<PathBuf, CniInstallError> {
    let scanned = confdir::scan(conf_dir)?;
    let i = confdir::primary(conf_dir, &scanned)?;
    Ok(scanned[i].path.clone())
}

/// Chains `entry` into the primary config (see the module docs).
pub fn insert_entry(
    conf_dir: &Path,
    entry: &Map<String, Value>,
) -> Result<PatchOutcome, CniInstallError> {
    confdir::with_primary(conf_dir, |c| confdir::insert(c, entry))
}

/// Removes edgeway's entry from every valid `.conflist` in `conf_dir` that holds one (the
/// primary one, and any former primary: once the binary is gone, each would fail ADD).
/// Other plugins and other files are not touched. Returns the files rewritten.
pub fn remove_entries(conf_dir: &Path) -> Result<Vec<PathBuf>, CniInstallError> {
    let mut names: Vec<PathBuf> = match fs::read_dir(conf_dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(error) => {
            return Err(CniInstallError::ListDir {
                dir: conf_dir.to_path_buf(),
                error,
            })
        }
    };
    names.retain(|p| conflist::ConfKind::of(p) == Some(conflist::ConfKind::Conflist));
    names.sort();
    let mut rewritten = vec![];
    for path in names {
        if confdir::remove_from(&path)? {
            tracing::info!(file = %path.display(), "removed edgeway's entry");
            rewritten.push(path);
        }
    }
    Ok(rewritten)
}

/// What [`install`] did.
#[derive(Debug, Clone)]
pub struct InstallReport {
    #[allow(dead_code)] // for callers other than the CLI, which logs it in `install`
    pub binary: BinaryOutcome,
    pub patch: PatchOutcome,
}

/// Installs the binary, then the entry (in this order: an entry without its binary would
/// fail every pod's ADD).
pub fn install(opts: &InstallOptions) -> Result<InstallReport, CniInstallError> {
    let binary = install_binary(&opts.plugin_binary, &opts.bin_dir)?;
    if binary.changed {
        tracing::info!(binary = %binary.path.display(), from = %opts.plugin_binary.display(), "installed the edgeway plugin");
    } else {
        tracing::info!(binary = %binary.path.display(), "the edgeway plugin is up to date");
    }
    let patch = insert_entry(&opts.conf_dir, &opts.entry)?;
    match (&patch.wrapped_from, patch.changed) {
        (Some(conf), _) => {
            tracing::info!(file = %patch.file.display(), from = %conf.display(), "wrapped the .conf into a .conflist with edgeway's entry")
        }
        (None, true) => {
            tracing::info!(file = %patch.file.display(), "chained edgeway into the primary CNI config")
        }
        (None, false) => {
            tracing::info!(file = %patch.file.display(), "edgeway's entry is already in place")
        }
    }
    Ok(InstallReport { binary, patch })
}

/// What [`uninstall`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UninstallReport {
    pub entries_removed_from: Vec<PathBuf>,
    pub binary_removed: bool,
}

/// Removes edgeway's entries, then its binary. With `upgrade`, removes nothing: during a
/// rolling upgrade the next agent reinstalls both, and meanwhile new pods must not be
/// created without edgeway (an entry without its binary would fail them instead, so the
/// binary stays too; the new one replaces it atomically). If an entry cannot be removed,
/// the binary stays.
pub fn uninstall(
    conf_dir: &Path,
    bin_dir: &Path,
    upgrade: bool,
) -> Result<UninstallReport, CniInstallError> {
    if upgrade {
        tracing::info!("upgrade: leaving edgeway's conflist entry and binary in place");
        return Ok(UninstallReport::default());
    }
    let entries_removed_from = remove_entries(conf_dir)?;
    if entries_removed_from.is_empty() {
        tracing::info!(dir = %conf_dir.display(), "no edgeway entry to remove");
    }
    let binary_removed = remove_binary(bin_dir)?;
    if binary_removed {
        tracing::info!(binary = %bin_dir.join(PLUGIN_TYPE).display(), "removed the edgeway plugin");
    }
    Ok(UninstallReport {
        entries_removed_from,
        binary_removed,
    })
}

/// Where CNI lives on the node.
#[derive(clap::Args, Debug, Clone)]
pub struct CniDirs {
    /// Directory of the CNI plugin binaries.
    #[arg(long, env = "EDGEWAY_CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// Directory of the CNI network configs.
    #[arg(long, env = "EDGEWAY_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct InstallArgs {
    #[command(flatten)]
    pub dirs: CniDirs,
    /// The edgeway plugin binary to install [default: `edgeway` next to this executable].
    #[arg(long, env = "EDGEWAY_PLUGIN_BINARY")]
    pub plugin_binary: Option<PathBuf>,
    /// The entry's `onAgentDown`.
    #[arg(long, env = "EDGEWAY_ON_AGENT_DOWN", value_enum, default_value_t = OnAgentDown::Continue)]
    pub on_agent_down: OnAgentDown,
    /// Keep running, and put the entry back whenever the host CNI rewrites its config
    /// (for a sidecar container). Stops on SIGTERM or SIGINT.
    #[arg(long, env = "EDGEWAY_CNI_WATCH")]
    pub watch: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub dirs: CniDirs,
    /// Rolling upgrade: leave the entry and the binary in place, so that pods created
    /// before the new agent reinstalls them still get edgeway.
    #[arg(long, env = "EDGEWAY_CNI_UPGRADE")]
    pub upgrade: bool,
}

/// `edgeway-agent install-cni`.
pub fn run_install(config: &Config, args: InstallArgs) -> anyhow::Result<()> {
    let opts = InstallOptions::from_config(
        config,
        args.dirs.cni_bin_dir,
        args.dirs.cni_conf_dir,
        args.plugin_binary,
        args.on_agent_down,
    )?;
    if !args.watch {
        install(&opts)?;
        return Ok(());
    }
    // As a sidecar, the agent may well start before the host CNI has written its config:
    // then wait for it instead of failing.
    fs::create_dir_all(&opts.conf_dir).map_err(|error| CniInstallError::Write {
        path: opts.conf_dir.clone(),
        error,
    })?;
    let entry = match install(&opts) {
        Ok(report) => report.patch.entry,
        Err(e @ CniInstallError::NoPrimary { .. }) => {
            tracing::warn!("{e}; edgeway's entry goes in once the host CNI writes its config");
            opts.entry.clone()
        }
        Err(e) => return Err(e.into()),
    };
    let watcher = spawn_watcher(&opts.conf_dir, entry, WatchOptions::default())?;
    let stopper = watcher.stopper();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut done = tokio::task::spawn_blocking(move || watcher.join());
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = &mut done => anyhow::bail!("the CNI config watcher stopped unexpectedly"),
        }
        tracing::info!("signal received, stopping");
        stopper.stop();
        let _ = done.await;
        Ok(())
    })
}

/// `edgeway-agent uninstall-cni`.
pub fn run_uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    uninstall(
        &args.dirs.cni_conf_dir,
        &args.dirs.cni_bin_dir,
        args.upgrade,
    )?;
    Ok(())
}
