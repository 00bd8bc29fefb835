//! DEL: never fails. What cannot be done now is queued for the agent to replay.

use std::collections::HashSet;
use std::net::IpAddr;

use edgeway_common::api::AttachmentKey;
use edgeway_common::cni::result::sandbox_ips;
use edgeway_common::rules::PodRule;
use edgeway_common::store::{PendingDel, Store};

use super::{open_store, rules, warn};
use crate::agent_client::AgentClient;
use crate::config::NetConf;
use crate::env::ContainerEnv;

pub fn run(conf: &NetConf, c: &ContainerEnv) {
    let key = c.key();
    // flannel and Calico chains (0.3.1) send no prevResult on DEL, and a malformed one
    // must not fail the DEL: the record is the main source.
    let prev_ips: Vec<IpAddr> = conf
        .prev_result
        .as_ref()
        .and_then(|p| sandbox_ips(p, &c.ifname).ok())
        .unwrap_or_default();

    let (store, _lock) = match open_store(conf) {
        Ok(s) => s,
        Err(e) => {
            // Without the state dir, remove what prevResult names and leave the rest to GC.
            warn(format!("DEL {}: {}", c.container_id, e.msg));
            remove_rules(&prev_ips, conf.table, conf.rule_priority, &HashSet::new());
            return;
        }
    };
    let record = match store.read_record(&key) {
        Ok(r) => r,
        Err(e) => {
            warn(format!("DEL {}: {e}; removing it", c.container_id));
            None
        }
    };
    let client = AgentClient::new(&conf.agent_socket, conf.agent_timeout);
    if let Ok(c) = &client {
        // There is something to remove, and the agent is told last: let it accept now.
        if record.is_some() || !prev_ips.is_empty() {
            c.connect_early();
        }
    }
    let mut told = None;
    let record = match record {
        Some(r) => Some(r),
        // No record and no prevResult (flannel and Calico chains below 0.4.0): the agent
        // may still know the addresses.
        None if prev_ips.is_empty() => {
            let known = match &client {
                Ok(c) => c.unregister(&key),
                Err(e) => Err(e.clone()),
            };
            let found = known.as_ref().ok().cloned().flatten();
            told = Some(known.map(drop));
            found
        }
        None => None,
    };
    let (table, priority, generation) = match &record {
        Some(r) => (r.table, r.priority, Some(r.generation.clone())),
        None => (conf.table, conf.rule_priority, None),
    };
    let mut ips: Vec<IpAddr> = record.as_ref().map(|r| r.ips.clone()).unwrap_or_default();
    for ip in prev_ips {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if record.is_none() && ips.is_empty() {
        // Repeated DEL, or an ADD that never got this far: nothing is ours.
        return;
    }

    // IPAM may have handed an address to a newer pod already; its rule is not ours to remove.
    let held = ips_held_elsewhere(&store, &key);
    let mut ok = remove_rules(&ips, table, priority, &held);
    if let Err(e) = store.remove_record(&key) {
        warn(format!("DEL {}: {e}", c.container_id));
        ok = false;
    }
    let told = match (told, &client) {
        (Some(t), _) => t,
        (None, Ok(c)) => c.unregister(&key).map(drop),
        (None, Err(e)) => Err(e.clone()),
    };
    if let Err(e) = &told {
        warn(format!("DEL {}: {e}; queued for the agent", c.container_id));
    }
    if told.is_err() || !ok {
        let mut pending = PendingDel {
            key,
            generation,
            ips: ips.into_iter().filter(|ip| !held.contains(ip)).collect(),
            table,
            priority,
            queued_unix: edgeway_common::unix_now().as_secs(),
        };
        // A repeated DEL must not erase what an earlier one queued (its generation above all).
        if let Ok(Some(earlier)) = store.read_pending_del(&pending.key) {
            pending.generation = pending.generation.or(earlier.generation);
            for ip in earlier.ips {
                if !pending.ips.contains(&ip) {
                    pending.ips.push(ip);
                }
            }
        }
        if let Err(e) = store.queue_pending_del(&pending) {
            warn(format!(
                "DEL {}: cannot queue for the agent: {e}",
                c.container_id
            ));
        }
    }
}

/// Addresses that another attachment's record still claims.
pub(super) fn ips_held_elsewhere(store: &Store, key: &AttachmentKey) -> HashSet<IpAddr> {
    match store.list_records() {
        Ok((records, _)) => records
            .into_iter()
            .filter(|r| &r.key() != key)
            .flat_map(|r| r.ips)
            .collect(),
        Err(e) => {
            warn(e);
            HashSet::new()
        }
    }
}

fn remove_rules(ips: &[IpAddr], table: u32, priority: u32, held: &HashSet<IpAddr>) -> bool {
    let mine: Vec<IpAddr> = ips
        .iter()
        .copied()
        .filter(|ip| !held.contains(ip))
        .collect();
    if mine.is_empty() {
        return true;
    }
    let mut sock = match rules::connect() {
        Ok(s) => s,
        Err(e) => {
            warn(e.msg);
            return false;
        }
    };
    let failed = rules::remove(&mut sock, &PodRule::for_ips(&mine, table, priority));
    for (rule, e) in &failed {
        warn(format!("cannot remove rule for {}: {e}", rule.ip));
    }
    failed.is_empty()
}
