//! GC: remove this network's attachments that the runtime no longer lists.

use edgeway_common::cni::{CniError, ErrorCode};
use edgeway_common::rules::PodRule;
use edgeway_common::store::PendingDel;

use super::del::ips_held_elsewhere;
use super::{open_store, rules, warn};
use crate::agent_client::AgentClient;
use crate::config::NetConf;

pub fn run(conf: &NetConf) -> Result<(), CniError> {
    // No list at all means the runtime cannot say what is valid: remove nothing.
    let Some(valid) = &conf.valid_attachments else {
        return Ok(());
    };
    let (store, _lock) = open_store(conf)?;
    let (records, corrupt) = store
        .list_records()
        .map_err(|e| CniError::new(ErrorCode::StateStore, e.to_string()))?;
    for c in corrupt {
        warn(format!(
            "skipping corrupt record {}: {}",
            c.path.display(),
            c.reason
        ));
    }
    let stale: Vec<_> = records
        .into_iter()
        .filter(|r| r.network == conf.name)
        .filter(|r| {
            !valid
                .iter()
                .any(|(cid, ifname)| *cid == r.container_id && *ifname == r.ifname)
        })
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let mut sock = rules::connect()?;
    let client = AgentClient::new(&conf.agent_socket, conf.agent_timeout).ok();
    let mut failures = Vec::new();
    for r in &stale {
        let key = r.key();
        let held = ips_held_elsewhere(&store, &key);
        let mine: Vec<_> = r
            .ips
            .iter()
            .copied()
            .filter(|ip| !held.contains(ip))
            .collect();
        for (rule, e) in rules::remove(&mut sock, &PodRule::for_ips(&mine, r.table, r.priority)) {
            failures.push(format!("{}: rule for {}: {e}", r.container_id, rule.ip));
        }
        if let Err(e) = store.remove_record(&key) {
            failures.push(format!("{}: {e}", r.container_id));
            continue;
        }
        let told = match &client {
            Some(c) => c.unregister(&key).is_ok(),
            None => false,
        };
        if !told {
            let pending = PendingDel {
                key,
                generation: Some(r.generation.clone()),
                ips: mine,
                table: r.table,
                priority: r.priority,
                queued_unix: edgeway_common::unix_now().as_secs(),
            };
            if let Err(e) = store.queue_pending_del(&pending) {
                failures.push(format!("{}: {e}", r.container_id));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::Netlink,
            format!(
                "GC could not remove {} of {} stale attachments",
                failures.len(),
                stale.len()
            ),
        )
        .with_details(failures.join("; ")))
    }
}
