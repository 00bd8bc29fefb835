//! Prometheus metrics, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub endpoint: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecoveryLabels {
    pub action: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub attachments: Gauge,
    pub api_requests: Family<ApiLabels, Counter>,
    pub recovery: Family<RecoveryLabels, Counter>,
    pub corrupt_files: Gauge,
    pub ready: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("edgeway");
        let attachments = Gauge::default();
        registry.register(
            "attachments",
            "Attachments registered on this node",
            attachments.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Local API requests by endpoint and status code",
            api_requests.clone(),
        );
        let recovery = Family::<RecoveryLabels, Counter>::default();
        registry.register(
            "recovery_actions",
            "Repairs made while reconciling stateDir and kernel rules: dropped_record, removed_rule, readded_rule, replayed_del",
            recovery.clone(),
        );
        let corrupt_files = Gauge::default();
        registry.register(
            "corrupt_state_files",
            "Files under stateDir that could not be read as records",
            corrupt_files.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 when the agent is ready", ready.clone());
        Metrics {
            registry,
            attachments,
            api_requests,
            recovery,
            corrupt_files,
            ready,
        }
    }

    pub fn count_recovery(&self, action: &'static str, n: usize) {
        if n > 0 {
            self.recovery
                .get_or_create(&RecoveryLabels { action })
                .inc_by(n as u64);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
