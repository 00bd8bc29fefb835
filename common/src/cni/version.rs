//! The CNI spec versions edgeway speaks, and the command gates between them.

use std::fmt;
use std::str::FromStr;

/// A CNI spec version edgeway supports. Ordered, so gates read as comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// Exactly the strings VERSION lists. CRI-O drops a network whose version no plugin lists verbatim.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

impl CniVersion {
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Before 1.0 every `ips[]` entry carries `version`.
    pub fn ips_carry_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// 1.1 adds interface `mtu`, `socketPath`, `pciID` and route `mtu`, `advmss`, `priority`, `table`, `scope`.
    pub fn has_1_1_fields(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported CNI version {0:?}; edgeway supports 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0")]
pub struct UnsupportedVersion(pub String);

impl FromStr for CniVersion {
    type Err = UnsupportedVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnsupportedVersion(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_the_listed_strings() {
        for s in SUPPORTED_VERSIONS {
            assert_eq!(s.parse::<CniVersion>().unwrap().as_str(), s);
        }
        for bad in ["0.2.0", "1.0", "1.0.0 ", "v1.0.0", "", "0.1.0", "1.2.0"] {
            assert!(bad.parse::<CniVersion>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn versions_are_ordered() {
        let mut sorted = CniVersion::ALL;
        sorted.sort();
        assert_eq!(sorted, CniVersion::ALL);
        assert!(CniVersion::V0_4_0 < CniVersion::V1_0_0);
    }
}
