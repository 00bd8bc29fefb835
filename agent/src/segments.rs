//! Which destinations cross a LAN boundary. Pure: the route table asks it about every
//! remote pod, and only a "yes" puts a route to the TUN in edgeway's table.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// How this node decides whether another pod is in its own segment.
#[derive(Debug, Clone, Default)]
pub struct SegmentPolicy {
    /// This node's segment name, as announced to the others.
    pub local_segment: String,
    /// Seed 001's style: `cloudCIDR` and `edgeCIDR` together. Each CIDR is one segment, and
    /// a pod belongs to the CIDR that holds its address.
    pub segment_cidrs: Vec<IpNetwork>,
    /// Destinations that always stay on the host CNI (Service CIDR, node CIDRs, ...).
    pub native_cidrs: Vec<IpNetwork>,
}

impl SegmentPolicy {
    fn cidr_of(&self, ip: IpAddr) -> Option<IpNetwork> {
        // Longest prefix wins, so a narrower CIDR can carve a site out of a wider one.
        self.segment_cidrs
            .iter()
            .filter(|c| c.contains(ip))
            .max_by_key(|c| c.prefix())
            .copied()
    }

    /// Whether traffic from this node's pods (`local_pods`) to `dst`, a pod announced by a
    /// peer in `owner_segment`, must go through edgeway.
    pub fn crosses_segment(&self, dst: IpAddr, owner_segment: &str, local_pods: &[IpAddr]) -> bool {
        if self.native_cidrs.iter().any(|c| c.contains(dst)) {
            return false;
        }
        if let Some(dst_cidr) = self.cidr_of(dst) {
            // CIDR mode: same CIDR as one of our pods means layer-2 reachable.
            return !local_pods
                .iter()
                .any(|&p| self.cidr_of(p) == Some(dst_cidr));
        }
        owner_segment != self.local_segment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn named_segments() {
        let p = SegmentPolicy {
            local_segment: "lan-a".into(),
            ..Default::default()
        };
        assert!(!p.crosses_segment(ip("10.244.2.5"), "lan-a", &[]));
        assert!(p.crosses_segment(ip("10.244.3.5"), "lan-b", &[]));
    }

    #[test]
    fn native_cidrs_always_stay_native() {
        let p = SegmentPolicy {
            local_segment: "lan-a".into(),
            native_cidrs: vec!["10.244.3.0/24".parse().unwrap()],
            ..Default::default()
        };
        assert!(!p.crosses_segment(ip("10.244.3.5"), "lan-b", &[]));
    }

    #[test]
    fn cloud_and_edge_cidrs() {
        let p = SegmentPolicy {
            local_segment: "edge-1".into(),
            segment_cidrs: vec![
                "10.244.1.0/24".parse().unwrap(),
                "10.244.5.0/24".parse().unwrap(),
                "10.244.6.0/24".parse().unwrap(),
            ],
            ..Default::default()
        };
        let local = [ip("10.244.5.9")];
        assert!(!p.crosses_segment(ip("10.244.5.20"), "whatever", &local));
        assert!(p.crosses_segment(ip("10.244.6.20"), "edge-1", &local));
        assert!(p.crosses_segment(ip("10.244.1.3"), "cloud", &local));
        // Outside every CIDR: the announced segment names decide.
        assert!(!p.crosses_segment(ip("10.244.9.1"), "edge-1", &local));
    }

    #[test]
    fn ipv6() {
        let p = SegmentPolicy {
            local_segment: "a".into(),
            segment_cidrs: vec![
                "fd00:1::/64".parse().unwrap(),
                "fd00:2::/64".parse().unwrap(),
            ],
            ..Default::default()
        };
        assert!(p.crosses_segment(ip("fd00:2::5"), "a", &[ip("fd00:1::9")]));
        assert!(!p.crosses_segment(ip("fd00:1::5"), "b", &[ip("fd00:1::9")]));
    }
}
