//! The node's attachments as the agent knows them. Pure state: no I/O.

use std::collections::BTreeMap;

use edgeway_common::api::{Attachment, AttachmentKey};

#[derive(Debug, Default)]
pub struct Registry {
    attachments: BTreeMap<AttachmentKey, Attachment>,
}

/// What a change did, so callers can count and log it.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Added,
    Updated,
    Unchanged,
}

impl Registry {
    pub fn upsert(&mut self, a: Attachment) -> Change {
        match self.attachments.insert(a.key(), a.clone()) {
            None => Change::Added,
            Some(old) if old == a => Change::Unchanged,
            Some(_) => Change::Updated,
        }
    }

    /// Removes and returns the attachment.
    pub fn take(&mut self, key: &AttachmentKey) -> Option<Attachment> {
        self.attachments.remove(key)
    }

    /// Makes the registry equal to `records` (what `stateDir` holds); true if that changed it.
    pub fn replace_all(&mut self, records: Vec<Attachment>) -> bool {
        let fresh: BTreeMap<_, _> = records.into_iter().map(|a| (a.key(), a)).collect();
        let changed = fresh != self.attachments;
        self.attachments = fresh;
        changed
    }

    pub fn list(&self) -> Vec<Attachment> {
        self.attachments.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.attachments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attachments.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeway_common::api::PodRef;

    fn att(cid: &str, gen: &str) -> Attachment {
        Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
            netns: String::new(),
            network: "n".into(),
            ips: vec!["10.244.0.2".parse().unwrap()],
            pod: PodRef::default(),
            table: 1,
            priority: 1,
            generation: gen.into(),
            created_unix: 0,
        }
    }

    #[test]
    fn upsert_and_remove() {
        let mut r = Registry::default();
        assert_eq!(r.upsert(att("a", "1")), Change::Added);
        assert_eq!(r.upsert(att("a", "1")), Change::Unchanged);
        assert_eq!(r.upsert(att("a", "2")), Change::Updated);
        assert_eq!(r.take(&att("a", "2").key()), Some(att("a", "2")));
        assert_eq!(r.take(&att("a", "2").key()), None);
    }

    #[test]
    fn replace_all_reports_the_difference() {
        let mut r = Registry::default();
        r.upsert(att("a", "1"));
        r.upsert(att("b", "1"));
        assert!(r.replace_all(vec![att("b", "1"), att("c", "1")]));
        assert!(!r.replace_all(vec![att("b", "1"), att("c", "1")]));
        let keys: Vec<_> = r.list().iter().map(|a| a.container_id.clone()).collect();
        assert_eq!(keys, ["b", "c"]);
    }
}
