//! Installing and removing one attachment's rules, all or nothing.

use edgeway_common::cni::{CniError, ErrorCode};
use edgeway_common::rules::{self, PodRule, RuleSocket};

pub fn connect() -> Result<RuleSocket, CniError> {
    RuleSocket::open().map_err(|e| CniError::new(ErrorCode::Netlink, e.to_string()))
}

/// Adds every rule; on the first failure removes the ones it added and reports it.
pub fn install(sock: &mut RuleSocket, wanted: &[PodRule]) -> Result<(), CniError> {
    for (n, rule) in wanted.iter().enumerate() {
        if let Err(e) = rules::add(sock, *rule) {
            remove(sock, &wanted[..n]);
            return Err(CniError::new(ErrorCode::Netlink, e.to_string()));
        }
    }
    Ok(())
}

/// Removes every rule it can and returns the ones it could not.
pub fn remove(sock: &mut RuleSocket, list: &[PodRule]) -> Vec<(PodRule, String)> {
    let mut failed = Vec::new();
    for rule in list {
        if let Err(e) = rules::delete(sock, *rule) {
            failed.push((*rule, e.to_string()));
        }
    }
    failed
}
