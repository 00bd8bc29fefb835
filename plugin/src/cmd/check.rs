//! CHECK: the record exists, matches prevResult, and every rule is in the kernel.

use edgeway_common::cni::result::sandbox_ips;
use edgeway_common::cni::{CniError, ErrorCode};
use edgeway_common::rules as kernel_rules;
use edgeway_common::rules::PodRule;

use super::{open_store, rules};
use crate::config::NetConf;
use crate::env::ContainerEnv;

pub fn run(conf: &NetConf, c: &ContainerEnv) -> Result<(), CniError> {
    let failed = |msg: String| CniError::new(ErrorCode::CheckFailed, msg);
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "no prevResult: edgeway must be chained after an IP-assigning plugin",
        )
    })?;
    let ips = sandbox_ips(prev, &c.ifname)?;
    if ips.is_empty() {
        return Ok(());
    }
    let (store, _lock) = open_store(conf)?;
    let key = c.key();
    let record = store
        .read_record(&key)
        .map_err(|e| failed(e.to_string()))?
        .ok_or_else(|| {
            failed(format!(
                "no edgeway record for container {} interface {}",
                c.container_id, c.ifname
            ))
        })?;
    for ip in &ips {
        if !record.ips.contains(ip) {
            return Err(failed(format!(
                "edgeway record for {} lacks address {ip}",
                c.container_id
            )));
        }
    }
    let mut sock = rules::connect()?;
    let present = kernel_rules::list(&mut sock)
        .map_err(|e| CniError::new(ErrorCode::Netlink, e.to_string()))?;
    for rule in PodRule::for_ips(&record.ips, record.table, record.priority) {
        if !present.contains(&rule) {
            return Err(failed(format!(
                "rule from {} lookup {} priority {} is missing",
                rule.ip, rule.table, rule.priority
            )));
        }
    }
    Ok(())
}
