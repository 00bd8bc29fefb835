//! Pieces shared by the `edgeway` CNI plugin and `edgeway-agent`.
//!
//! - [`cni`]: spec versions, error codes and `prevResult` conversion;
//! - [`api`]: the plugin-to-agent HTTP API over the agent's unix socket;
//! - [`store`]: attachment records and the pending-DEL queue under `stateDir`;
//! - [`rules`]: the source-policy rules edgeway installs, through netlink.

pub mod api;
pub mod cni;
pub mod rules;
pub mod store;

/// Default path of the agent's local API socket.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/edgeway/agent.sock";
/// Default directory for attachment records and the pending-DEL queue.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/edgeway";
/// Default routing table for cross-LAN destinations (see README, "Routing table and rule priority").
pub const DEFAULT_TABLE: u32 = 7332;
/// Default priority of the `from <pod ip> lookup <table>` rules: after `local` (0), before `main` (32766).
pub const DEFAULT_RULE_PRIORITY: u32 = 7332;

/// Time since the Unix epoch; zero on a clock set before 1970.
pub fn unix_now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
