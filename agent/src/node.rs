//! The node-local agent state that the API, recovery and resync share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use edgeway_common::api::Readiness;
use edgeway_common::store::Store;

use crate::metrics::Metrics;
use crate::registry::Registry;

pub struct Node {
    pub name: String,
    pub store: Store,
    pub registry: Mutex<Registry>,
    pub metrics: Arc<Metrics>,
    /// Woken whenever the set of local attachments may have changed.
    pub local_changed: Arc<tokio::sync::Notify>,
    /// Set once networking has started; absent on a node-local-only agent.
    pub network: std::sync::OnceLock<crate::networking::NetInfo>,
    recovered: AtomicBool,
    problems: Mutex<Vec<String>>,
}

impl Node {
    pub fn new(name: String, store: Store) -> Self {
        Node {
            name,
            store,
            registry: Mutex::new(Registry::default()),
            metrics: Arc::new(Metrics::new()),
            local_changed: Arc::new(tokio::sync::Notify::new()),
            network: std::sync::OnceLock::new(),
            recovered: AtomicBool::new(false),
            problems: Mutex::new(Vec::new()),
        }
    }

    pub fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the map half-written, so poison is moot.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_recovered(&self) {
        self.recovered.store(true, Ordering::Release);
        self.refresh_ready();
    }

    /// Replaces the current problem list; an empty one means healthy.
    pub fn set_problems(&self, problems: Vec<String>) {
        *self.problems.lock().unwrap_or_else(|p| p.into_inner()) = problems;
        self.refresh_ready();
    }

    pub fn readiness(&self) -> Readiness {
        let mut problems = self
            .problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !self.recovered.load(Ordering::Acquire) {
            problems.insert(
                0,
                "recovery of stateDir and kernel rules has not finished".into(),
            );
        }
        Readiness {
            ready: problems.is_empty(),
            problems,
        }
    }

    fn refresh_ready(&self) {
        self.metrics.ready.set(i64::from(self.readiness().ready));
    }

    /// Updates the gauge and tells the announcer that local pods changed.
    pub fn registry_changed(&self) {
        let n = self.registry().len();
        self.metrics.attachments.set(n as i64);
        self.local_changed.notify_one();
    }
}
