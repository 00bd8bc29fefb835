//! Keeps edgeway's routing table equal to "every remote pod across a LAN boundary", and
//! puts back whatever someone else removes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::IpNetwork;

use crate::metrics::Metrics;
use crate::netstate::NetState;
use crate::routes::{host_route, watch_deletions, RouteTable};
use crate::segments::SegmentPolicy;

/// A full comparison with the kernel runs at least this often, even without a trigger.
const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// The routes the table should hold now.
pub fn desired_routes(net: &NetState, policy: &SegmentPolicy) -> BTreeSet<IpNetwork> {
    let local_pods = net.local_pods();
    let table = net.table();
    let me = table.local_peer().to_string();
    let mut out = BTreeSet::new();
    for peer in table.peers().filter(|p| p.peer_id != me) {
        let Some(a) = table.announcement(&peer.peer_id) else {
            continue;
        };
        for claim in &a.pods {
            // A pod of this node is never reached through the tunnel, whoever else claims
            // its address: a member announcing it could otherwise draw the node's own
            // pod-to-pod traffic to itself.
            if local_pods.contains(&claim.ip) {
                continue;
            }
            // Only the winning claim routes; a losing one belongs to a pod that is gone.
            if table.owns(&peer.peer_id, claim.ip)
                && policy.crosses_segment(claim.ip, &peer.segment, &local_pods)
            {
                out.insert(host_route(claim.ip));
            }
        }
    }
    out
}

pub async fn run(
    routes: RouteTable,
    table_id: u32,
    net: Arc<NetState>,
    policy: SegmentPolicy,
    metrics: Arc<Metrics>,
) {
    let deleted = Arc::new(tokio::sync::Notify::new());
    if let Err(e) = watch_deletions(table_id, deleted.clone()) {
        tracing::warn!("cannot watch route deletions, relying on periodic checks: {e}");
    }
    let mut tick = tokio::time::interval(RECHECK_EVERY);
    loop {
        tokio::select! {
            _ = net.routes_changed.notified() => {}
            _ = deleted.notified() => tracing::info!("a route of ours was removed from table {table_id}; restoring"),
            _ = tick.tick() => {}
        }
        let desired = desired_routes(&net, &policy);
        match routes.reconcile(&desired).await {
            Ok(done) => {
                if done.added + done.removed > 0 {
                    tracing::info!(
                        added = done.added,
                        removed = done.removed,
                        total = desired.len(),
                        "route table updated"
                    );
                }
                for e in &done.failures {
                    tracing::warn!("route table: {e}");
                }
                metrics.routes.set(desired.len() as i64);
            }
            Err(e) => tracing::warn!("route table reconcile failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;
    use crate::ownership::{Announcement, OwnershipTable, PodClaim};

    fn claim(ip: &str, since_ms: u64) -> PodClaim {
        PodClaim {
            ip: ip.parse().unwrap(),
            since_ms,
        }
    }

    #[test]
    fn a_local_pod_claimed_by_another_member_is_not_routed_away() {
        let net = NetState::new(OwnershipTable::new("me".into(), Duration::from_secs(60)));
        let local: HashSet<_> = ["10.244.1.2".parse().unwrap()].into();
        net.set_local_pods(local);
        // A member in another segment claims our pod's address with a newer timestamp,
        // beside a pod of its own.
        let liar = Announcement {
            peer_id: "liar".into(),
            node_name: "liar".into(),
            segment: "lan-b".into(),
            seq: 5_000,
            pods: vec![claim("10.244.1.2", 4_000), claim("10.244.3.2", 1_000)],
        };
        net.table_mut().apply(liar, std::time::Instant::now());
        let policy = SegmentPolicy {
            local_segment: "lan-a".into(),
            ..Default::default()
        };
        let routes = desired_routes(&net, &policy);
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            vec![host_route("10.244.3.2".parse().unwrap())],
            "only the member's own pod is routed through the tunnel"
        );
    }
}
