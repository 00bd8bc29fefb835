//! Installing and removing one attachment's rules, all or nothing.

use std::net::IpAddr;

use edgeway_common::cni::{CniError, ErrorCode};
use edgeway_common::rules::{self, PodRule};
use rtnetlink::Handle;

pub fn connect() -> Result<Handle, CniError> {
    rules::connect().map_err(|e| CniError::new(ErrorCode::Netlink, e.to_string()))
}

pub fn for_ips(ips: &[IpAddr], table: u32, priority: u32) -> Vec<PodRule> {
    ips.iter()
        .map(|&ip| PodRule {
            ip,
            table,
            priority,
        })
        .collect()
}

/// Adds every rule; on the first failure removes the ones it added and reports it.
pub async fn install(handle: &Handle, wanted: &[PodRule]) -> Result<(), CniError> {
    for (n, rule) in wanted.iter().enumerate() {
        if let Err(e) = rules::add(handle, *rule).await {
            remove(handle, &wanted[..n]).await;
            return Err(CniError::new(ErrorCode::Netlink, e.to_string()));
        }
    }
    Ok(())
}

/// Removes every rule it can and returns the ones it could not.
pub async fn remove(handle: &Handle, list: &[PodRule]) -> Vec<(PodRule, String)> {
    let mut failed = Vec::new();
    for rule in list {
        if let Err(e) = rules::delete(handle, *rule).await {
            failed.push((*rule, e.to_string()));
        }
    }
    failed
}
