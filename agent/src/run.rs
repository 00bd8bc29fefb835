//! `edgeway-agent run`: wires the node state, recovery, resync and the API together.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use edgeway_common::store::Store;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::node::Node;
use crate::{api, recovery};

#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    /// This node's name (overrides `nodeName`).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Overrides `stateDir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Overrides `api.socket`.
    #[arg(long)]
    socket: Option<PathBuf>,
}

pub fn run(mut config: Config, args: RunArgs) -> anyhow::Result<()> {
    if let Some(n) = args.node_name {
        config.node_name = Some(n);
    }
    if let Some(d) = args.state_dir {
        config.state_dir = d;
    }
    if let Some(s) = args.socket {
        config.api.socket = s;
    }
    config.validate()?;
    let name = config
        .node_name
        .clone()
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_else(|| "unknown".into());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(serve(config, name))
}

async fn serve(config: Config, name: String) -> anyhow::Result<()> {
    let node = Arc::new(Node::new(name, Store::new(&config.state_dir)));
    let listener = api::bind(&config.api.socket, config.api.group.as_deref())
        .with_context(|| format!("cannot serve the API on {}", config.api.socket.display()))?;
    tracing::info!(node = %node.name, socket = %config.api.socket.display(), state_dir = %config.state_dir.display(), "edgeway-agent starting");

    let server = axum::serve(listener, api::router(node.clone()));
    let maintenance = tokio::spawn(maintain(
        node.clone(),
        Duration::from_secs(config.resync_interval_secs),
    ));
    let networking = match &config.p2p.cluster_secret_file {
        Some(secret) => match crate::networking::start(&config, node.clone(), secret).await {
            Ok(n) => Some(n),
            Err(e) => {
                // No agent will answer here: a plugin must find no socket, not a dead one.
                let _ = std::fs::remove_file(&config.api.socket);
                return Err(e);
            }
        },
        None => {
            tracing::warn!("p2p.clusterSecretFile is not set: running node-local only, without cross-LAN networking");
            None
        }
    };

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let served = server.with_graceful_shutdown(shutdown).await;
    maintenance.abort();
    if let Some(n) = networking {
        n.stop().await;
    }
    // Pod rules stay: they belong to the pods, and the next agent start reconciles them.
    let _ = std::fs::remove_file(&config.api.socket);
    tracing::info!("edgeway-agent stopped");
    served.context("API server failed")
}

/// What the state-dir probe writes: one page, about what a record occupies on disk.
const PROBE_BYTES: usize = 4096;

/// Recovers once, then keeps the registry and the pending-DEL queue in step with the disk.
async fn maintain(node: Arc<Node>, every: Duration) {
    let mut rules = loop {
        match edgeway_common::rules::RuleSocket::open() {
            Ok(s) => break s,
            Err(e) => {
                node.set_problems(vec![e.to_string()]);
                tokio::time::sleep(every).await;
            }
        }
    };
    loop {
        match reconcile(&node, &mut rules, true).await {
            Ok(mut failures) => {
                failures.extend(state_dir_problems(&node.store));
                node.set_problems(failures);
                break;
            }
            Err(e) => {
                tracing::error!("recovery failed, retrying: {e:#}");
                node.set_problems(vec![format!("recovery failed: {e:#}")]);
                tokio::time::sleep(every).await;
            }
        }
    }
    node.set_recovered();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let unwritable = state_dir_problems(&node.store);
        let problems = if !unwritable.is_empty() {
            // A DEL meanwhile may have failed to remove its record: reading the records back
            // now would bring that pod back. The registry stays as the API left it.
            unwritable
        } else {
            match reconcile(&node, &mut rules, false).await {
                Ok(failures) => failures,
                Err(e) => vec![format!("resync failed: {e:#}")],
            }
        };
        node.set_problems(problems);
    }
}

async fn with_exclusive_lock<T>(
    store: &Store,
    f: impl AsyncFnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let s = store.clone();
    let lock = tokio::task::spawn_blocking(move || {
        s.ensure_dirs()?;
        s.lock_exclusive()
    })
    .await??;
    let out = f().await;
    drop(lock);
    out
}

/// Makes registry, records, queued DELs and kernel rules agree, under the store's
/// exclusive lock so no plugin call is half-done meanwhile. At start (`startup`), records
/// whose rules are all gone are dropped: the node rebooted. Later, a missing rule is put back
/// instead, since someone else removed it.
async fn reconcile(
    node: &Node,
    rules: &mut edgeway_common::rules::RuleSocket,
    startup: bool,
) -> anyhow::Result<Vec<String>> {
    let store = &node.store;
    let mut report = recovery::Report::default();
    let changed = with_exclusive_lock(store, async || {
        // Synchronous: a few small files and rule requests the kernel answers at once.
        recovery::replay_pending_dels(store, rules, &mut report)?;
        // Read under the lock, so it holds every registration whose ADD has finished.
        let known = node.registry().list();
        let kept = recovery::reconcile_rules(store, rules, startup, &known, &mut report)?;
        // Replaced while the lock is held: a registration racing with the listing would be lost.
        Ok(node.registry().replace_all(kept))
    })
    .await?;
    for c in &report.corrupt {
        tracing::warn!(path = %c.path.display(), reason = %c.reason, "corrupt state file left in place");
    }
    if report.kept_unclaimed_rules > 0 {
        tracing::warn!(
            rules = report.kept_unclaimed_rules,
            "edgeway rules without a readable record left in place: a corrupt record may claim them"
        );
    }
    let m = &node.metrics;
    m.count_recovery("replayed_del", report.replayed_dels);
    m.count_recovery("dropped_record", report.dropped_records);
    m.count_recovery("removed_rule", report.removed_rules);
    m.count_recovery("readded_rule", report.readded_rules);
    m.corrupt_files.set(report.corrupt.len() as i64);
    if changed || startup {
        node.registry_changed();
    }
    if startup || report.any_repair() {
        tracing::info!(
            attachments = node.registry().len(),
            replayed_dels = report.replayed_dels,
            dropped_records = report.dropped_records,
            removed_rules = report.removed_rules,
            readded_rules = report.readded_rules,
            corrupt_files = report.corrupt.len(),
            "{}",
            if startup {
                "recovered node state"
            } else {
                "repaired node state"
            }
        );
    }
    for f in &report.failures {
        tracing::warn!("repair failed, will retry: {f}");
    }
    Ok(report.failures)
}

/// A state dir the plugin cannot write to means ADDs fail: report it on /readyz.
///
/// The probe writes as much as a record takes on disk: an empty file needs only an inode,
/// so on a full filesystem it succeeds while every record write fails.
fn state_dir_problems(store: &Store) -> Vec<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let probe = store.dir().join(".write-probe");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|mut f| f.write_all(&[0u8; PROBE_BYTES]));
    // Also after a failed write: on a full disk the empty file is made.
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => vec![],
        Err(e) => vec![format!(
            "stateDir {} is not writable: {e}",
            store.dir().display()
        )],
    }
}
