//! `install-cni --watch`: keeps edgeway's entry in the primary config while host CNIs
//! rewrite their files (flannel's init container runs `cp -f` at every restart, Calico
//! rewrites its config when it starts, Cilium's `cni.exclusive` reverts foreign edits).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use serde_json::{Map, Value};

use super::confdir::{self, Attempt};
use super::conflist::ConfKind;
use super::CniInstallError;

/// Tuning of the watch loop.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Quiet time after the last event before the file is looked at.
    pub debounce: Duration,
    /// A steady stream of events still gets looked at this often.
    pub max_delay: Duration,
    /// Warn when the entry had to be put back more than this many times ...
    pub revert_warn_after: usize,
    /// ... within this window.
    pub revert_window: Duration,
    /// Look at the directory this often even without events (missed events, a re-created
    /// directory).
    pub resync: Duration,
    /// How long the former primary config may stay invalid (a `cp -f` in progress truncates
    /// it first) before the next valid file is taken as the primary one.
    pub invalid_grace: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            revert_warn_after: 5,
            revert_window: Duration::from_secs(60),
            resync: Duration::from_secs(60),
            invalid_grace: Duration::from_secs(3),
        }
    }
}

/// Counters of a running watcher.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Writes of the entry (inserted, moved back into place, or its settings restored).
    pub writes: AtomicU64,
    /// Writes into a file we had already patched: someone reverted our edit.
    pub reverts: AtomicU64,
    /// "something keeps removing edgeway's entry" warnings logged.
    pub revert_warnings: AtomicU64,
}

#[derive(Debug)]
enum Msg {
    Fs(notify::Result<notify::Event>),
    Stop,
}

/// Stops a watcher from another thread or task.
#[derive(Debug, Clone)]
pub struct WatchStopper(Sender<Msg>);

impl WatchStopper {
    pub fn stop(&self) {
        let _ = self.0.send(Msg::Stop);
    }
}

/// A running watcher thread; dropping it stops it.
#[derive(Debug)]
pub struct WatchHandle {
    stopper: WatchStopper,
    thread: Option<JoinHandle<()>>,
    #[allow(dead_code)] // read through `stats()`
    stats: Arc<WatchStats>,
}

impl WatchHandle {
    pub fn stopper(&self) -> WatchStopper {
        self.stopper.clone()
    }

    #[allow(dead_code)] // for tests and for `run`'s metrics
    pub fn stats(&self) -> &WatchStats {
        &self.stats
    }

    /// Waits for the thread to end (after [`WatchStopper::stop`]).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the CNI config watcher panicked");
            }
        }
    }

    /// Stops the watcher and waits for it; takes at most one reconcile.
    #[allow(dead_code)] // for `run`; the CLI stops it through a `WatchStopper`
    pub fn stop(self) {
        self.stopper.stop();
        self.join();
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stopper.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts watching `conf_dir` (inotify through `notify`) on its own thread. It checks the
/// primary config once at start, then after every burst of changes (debounced), and puts
/// `entry` back when it is missing, misplaced or changed. Errors only if the directory
/// cannot be watched.
pub fn spawn_watcher(
    conf_dir: &Path,
    entry: Map<String, Value>,
    opts: WatchOptions,
) -> Result<WatchHandle, CniInstallError> {
    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    let watch_err = |error| CniInstallError::Watch {
        dir: conf_dir.to_path_buf(),
        error,
    };
    let mut watcher = notify::recommended_watcher(move |ev| {
        let _ = events.send(Msg::Fs(ev));
    })
    .map_err(watch_err)?;
    watcher
        .watch(conf_dir, RecursiveMode::NonRecursive)
        .map_err(watch_err)?;
    let stats = Arc::new(WatchStats::default());
    let mut state = Reconciler {
        dir: conf_dir.to_path_buf(),
        entry,
        opts,
        ours: None,
        last_primary: None,
        invalid_since: None,
        reverts: VecDeque::new(),
        last_warning: None,
        stats: stats.clone(),
    };
    // The first look, before returning: the caller knows the file has been checked, and
    // what is in place now counts as ours.
    let first = state.reconcile();
    let thread = std::thread::Builder::new()
        .name("edgeway-cni-watch".into())
        .spawn(move || state.run(rx, watcher, first))
        .map_err(|error| CniInstallError::Watch {
            dir: conf_dir.to_path_buf(),
            error: notify::Error::io(error),
        })?;
    tracing::info!(dir = %conf_dir.display(), "watching for rewrites of the primary CNI config");
    Ok(WatchHandle {
        stopper: WatchStopper(tx),
        thread: Some(thread),
        stats,
    })
}

/// What the loop does after a reconcile.
enum Next {
    /// Nothing pending: wait for events (or the periodic resync).
    Idle,
    /// Look again shortly (a file was mid-rewrite).
    Soon,
}

struct Reconciler {
    dir: PathBuf,
    entry: Map<String, Value>,
    opts: WatchOptions,
    /// The file we last wrote and what we wrote: its own events are recognised by content.
    ours: Option<(PathBuf, Vec<u8>)>,
    last_primary: Option<PathBuf>,
    invalid_since: Option<Instant>,
    reverts: VecDeque<Instant>,
    last_warning: Option<Instant>,
    stats: Arc<WatchStats>,
}

impl Reconciler {
    fn run(mut self, rx: Receiver<Msg>, mut watcher: notify::RecommendedWatcher, first: Next) {
        let mut watching = true;
        let mut due = Instant::now() + self.wait_after(first, watching);
        let mut burst: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if now >= due {
                if !watching {
                    // The directory went away; watch it again once it is back.
                    watching = watcher
                        .watch(&self.dir, RecursiveMode::NonRecursive)
                        .is_ok();
                }
                let next = self.reconcile();
                due = Instant::now() + self.wait_after(next, watching);
                burst = None;
                continue;
            }
            match rx.recv_timeout(due - now) {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
                Ok(Msg::Fs(ev)) => {
                    match &ev {
                        Ok(ev) if !self.relevant(ev) => continue,
                        Ok(ev) => {
                            if matches!(ev.kind, EventKind::Remove(_))
                                && ev.paths.iter().any(|p| p == &self.dir)
                            {
                                tracing::warn!(dir = %self.dir.display(), "the CNI conf dir was removed; waiting for it to come back");
                                watching = false;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(dir = %self.dir.display(), "watch error, checking the directory: {e}")
                        }
                    }
                    let now = Instant::now();
                    let start = *burst.get_or_insert(now);
                    due = (now + self.opts.debounce).min(start + self.opts.max_delay);
                }
            }
        }
        tracing::info!(dir = %self.dir.display(), "stopped watching the CNI conf dir");
    }

    fn wait_after(&self, next: Next, watching: bool) -> Duration {
        match next {
            Next::Idle if watching => self.opts.resync,
            Next::Idle => Duration::from_secs(1),
            Next::Soon => self.opts.debounce.max(Duration::from_millis(50)),
        }
    }

    /// Events that can change which file is primary or what it holds. Opens and reads
    /// (ours included) are not.
    fn relevant(&self, ev: &notify::Event) -> bool {
        if ev.need_rescan() {
            return true;
        }
        match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return false,
            _ => {}
        }
        ev.paths
            .iter()
            .any(|p| p == &self.dir || ConfKind::of(p).is_some())
    }

    /// One bounded pass: scan, then at most one patch of the primary config.
    fn reconcile(&mut self) -> Next {
        let scanned = match confdir::scan(&self.dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{e}");
                return Next::Idle;
            }
        };
        // The former primary config is there but invalid: most likely mid-rewrite (`cp -f`
        // truncates first). Do not patch the next file meanwhile; give it a moment.
        let former_invalid = self
            .last_primary
            .as_ref()
            .is_some_and(|last| scanned.iter().any(|c| &c.path == last && c.parsed.is_err()));
        if former_invalid {
            let since = *self.invalid_since.get_or_insert_with(Instant::now);
            if since.elapsed() < self.opts.invalid_grace {
                tracing::debug!(dir = %self.dir.display(), "the primary CNI config is being rewritten; looking again shortly");
                return Next::Soon;
            }
        }
        self.invalid_since = None;
        let i = match confdir::primary(&self.dir, &scanned) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("{e}; waiting for the host CNI to write one");
                return Next::Idle;
            }
        };
        let c = &scanned[i];
        if let Some((path, bytes)) = &self.ours {
            if path == &c.path && bytes == &c.bytes {
                // Our own write.
                self.last_primary = Some(c.path.clone());
                return Next::Idle;
            }
        }
        match confdir::insert(c, &self.entry) {
            Ok(done) => {
                self.entry = done.entry.clone();
                self.last_primary = Some(done.file.clone());
                if done.changed {
                    self.stats.writes.fetch_add(1, Ordering::Relaxed);
                    let reverted = self
                        .ours
                        .as_ref()
                        .is_some_and(|(p, _)| p == &done.file || p == &c.path);
                    let what = if done.was_missing {
                        "re-inserted"
                    } else {
                        "restored"
                    };
                    tracing::info!(file = %done.file.display(), "{what} edgeway's entry");
                    if reverted {
                        self.count_revert(&done.file);
                    }
                    self.ours = done.written.map(|w| (done.file.clone(), w));
                } else {
                    // In place already: what is there now is the state to defend.
                    self.ours = Some((c.path.clone(), c.bytes.clone()));
                }
                Next::Idle
            }
            Err(Attempt::Raced(_)) => Next::Soon,
            Err(Attempt::Failed(e)) => {
                tracing::error!("cannot put edgeway's entry back: {e}");
                Next::Idle
            }
        }
    }

    fn count_revert(&mut self, file: &Path) {
        let now = Instant::now();
        let window = self.opts.revert_window;
        self.reverts.push_back(now);
        while self
            .reverts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.reverts.pop_front();
        }
        let n = self.reverts.len();
        let quiet = self
            .last_warning
            .is_some_and(|t| now.duration_since(t) < window);
        if n > self.opts.revert_warn_after && !quiet {
            self.last_warning = Some(now);
            self.stats.revert_warnings.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "something keeps removing edgeway's entry from {} ({n} times in {} s); check flannel's/Calico's/Cilium's cni.exclusive settings",
                file.display(),
                window.as_secs()
            );
        }
        self.stats.reverts.fetch_add(1, Ordering::Relaxed);
    }
}
