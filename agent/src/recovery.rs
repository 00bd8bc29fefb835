//! Rebuilding node state from what the disk and the kernel hold, after a restart or a crash.
//!
//! The agent holds `stateDir`'s exclusive lock meanwhile, so no plugin call is half-done.
//!
//! Both steps are synchronous: they read a few small files and send a few rule requests,
//! each answered by the kernel at once, so they run directly on the maintenance task
//! (which already does the same file I/O) rather than through `spawn_blocking`.

use std::collections::HashSet;
use std::net::IpAddr;

use edgeway_common::api::Attachment;
use edgeway_common::rules::{self, PodRule, RuleSocket};
use edgeway_common::store::{CorruptFile, Store, StoreError};

#[derive(Debug, Default)]
pub struct Report {
    pub replayed_dels: usize,
    pub dropped_records: usize,
    pub removed_rules: usize,
    pub readded_rules: usize,
    pub corrupt: Vec<CorruptFile>,
    /// Edgeway rules no readable record claims, left in place because a corrupt record
    /// may be theirs.
    pub kept_unclaimed_rules: usize,
    /// Repairs that failed; retried on the next pass and shown on `/readyz`.
    pub failures: Vec<String>,
}

impl Report {
    pub fn any_repair(&self) -> bool {
        self.replayed_dels + self.dropped_records + self.removed_rules + self.readded_rules > 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rules(#[from] rules::RuleError),
}

fn rules_of(a: &Attachment) -> Vec<PodRule> {
    PodRule::for_ips(&a.ips, a.table, a.priority)
}

/// Replays DELs queued while the agent was away. A queued DEL removes a record only if it is
/// the generation it was queued for, and a rule only if no other record claims its address.
pub fn replay_pending_dels(
    store: &Store,
    sock: &mut RuleSocket,
    report: &mut Report,
) -> Result<(), RecoveryError> {
    let (pending, corrupt) = store.list_pending_dels()?;
    report.corrupt.extend(corrupt);
    if pending.is_empty() {
        return Ok(());
    }
    let (records, _) = store.list_records()?;
    for d in pending {
        let current = records.iter().find(|r| r.key() == d.key);
        // Without a generation the DEL never saw a record: whatever record exists now came
        // from a later ADD and stays.
        let stale_record =
            current.filter(|r| d.generation.as_deref().is_some_and(|g| g == r.generation));
        let held: HashSet<IpAddr> = records
            .iter()
            .filter(|r| stale_record.is_none_or(|s| s.key() != r.key()))
            .flat_map(|r| r.ips.iter().copied())
            .collect();
        let mut targets = PodRule::for_ips(&d.ips, d.table, d.priority);
        // One entry that cannot be replayed stays queued for the next pass and does not
        // hold up the others.
        let replayed = (|| -> Result<(), RecoveryError> {
            if let Some(r) = stale_record {
                targets.extend(rules_of(r));
                store.remove_record(&r.key())?;
            }
            for rule in targets.into_iter().filter(|r| !held.contains(&r.ip)) {
                rules::delete(sock, rule)?;
            }
            store.remove_pending_del(&d.key)?;
            Ok(())
        })();
        match replayed {
            Ok(()) => report.replayed_dels += 1,
            Err(e) => report
                .failures
                .push(format!("queued DEL of {}: {e}", d.key.container_id)),
        }
    }
    Ok(())
}

/// Makes records and kernel rules agree: an edgeway rule that no record claims is removed,
/// and a record missing rules gets them back, except that with `drop_ruleless` a record
/// whose rules are all gone is dropped instead (after a reboot).
///
/// A record that has become unreadable loses nothing: an attachment in `known` (what the
/// agent already holds) whose record file is corrupt is kept, rules included; and while a
/// corrupt record that no known attachment explains remains, no unclaimed rule is removed,
/// since it may be that record's. The corrupt files are reported and left in place.
pub fn reconcile_rules(
    store: &Store,
    sock: &mut RuleSocket,
    drop_ruleless: bool,
    known: &[Attachment],
    report: &mut Report,
) -> Result<Vec<Attachment>, RecoveryError> {
    let (mut records, corrupt) = store.list_records()?;
    let mut unexplained = 0;
    for c in &corrupt {
        let name = c.path.file_name().map(|n| n.to_string_lossy().into_owned());
        let held = known.iter().find(|a| {
            name.as_deref() == Some(a.key().file_name().as_str())
                && !records.iter().any(|r| r.key() == a.key())
        });
        match held {
            Some(a) => records.push(a.clone()),
            None => unexplained += 1,
        }
    }
    report.corrupt.extend(corrupt);
    let installed: HashSet<PodRule> = rules::list(sock)?.into_iter().collect();

    let mut kept = Vec::with_capacity(records.len());
    for a in records {
        let present = rules_of(&a)
            .into_iter()
            .filter(|r| installed.contains(r))
            .count();
        if present == 0 && drop_ruleless {
            match store.remove_record(&a.key()) {
                Ok(()) => report.dropped_records += 1,
                Err(e) => report.failures.push(e.to_string()),
            }
            continue;
        }
        for rule in rules_of(&a).into_iter().filter(|r| !installed.contains(r)) {
            match rules::add(sock, rule) {
                Ok(()) => report.readded_rules += 1,
                Err(e) => report.failures.push(e.to_string()),
            }
        }
        kept.push(a);
    }
    let claimed: HashSet<PodRule> = kept.iter().flat_map(rules_of).collect();
    if unexplained > 0 {
        report.kept_unclaimed_rules = installed.difference(&claimed).count();
        return Ok(kept);
    }
    for rule in installed.difference(&claimed) {
        match rules::delete(sock, *rule) {
            Ok(()) => report.removed_rules += 1,
            Err(e) => report.failures.push(e.to_string()),
        }
    }
    Ok(kept)
}
