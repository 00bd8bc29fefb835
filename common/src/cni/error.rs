//! CNI error codes and the error JSON a plugin prints on stdout.

use serde::Serialize;

/// Every CNI error code edgeway can answer with, mapped in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion,
    UnsupportedField,
    UnknownContainer,
    InvalidEnvironment,
    Io,
    Decode,
    InvalidNetworkConfig,
    TryAgainLater,
    NotAvailable,
    NotAvailableDamaged,
    /// Netlink refused a rule change.
    Netlink,
    /// The attachment store under `stateDir` failed.
    StateStore,
    /// The agent answered, and refused the request.
    AgentRejected,
    /// CHECK found the attachment incomplete.
    CheckFailed,
}

impl ErrorCode {
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decode => 6,
            ErrorCode::InvalidNetworkConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::NotAvailableDamaged => 51,
            ErrorCode::Netlink => 100,
            ErrorCode::StateStore => 101,
            ErrorCode::AgentRejected => 102,
            ErrorCode::CheckFailed => 103,
        }
    }
}

/// A CNI error as the spec prints it: `{cniVersion, code, msg, details}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The JSON the plugin prints on stdout, in `cni_version` (or the latest, when unknown).
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_string(&Wire {
            cni_version,
            code: self.code.code(),
            msg: &self.msg,
            details: &self.details,
        })
        .expect("error JSON always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_spec() {
        let expected = [
            (ErrorCode::IncompatibleVersion, 1),
            (ErrorCode::UnsupportedField, 2),
            (ErrorCode::UnknownContainer, 3),
            (ErrorCode::InvalidEnvironment, 4),
            (ErrorCode::Io, 5),
            (ErrorCode::Decode, 6),
            (ErrorCode::InvalidNetworkConfig, 7),
            (ErrorCode::TryAgainLater, 11),
            (ErrorCode::NotAvailable, 50),
            (ErrorCode::NotAvailableDamaged, 51),
        ];
        for (code, n) in expected {
            assert_eq!(code.code(), n);
        }
        for own in [
            ErrorCode::Netlink,
            ErrorCode::StateStore,
            ErrorCode::AgentRejected,
            ErrorCode::CheckFailed,
        ] {
            assert!(
                own.code() >= 100,
                "{own:?} must use the plugin-specific range"
            );
        }
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(ErrorCode::Decode, "bad stdin").with_details("line 1");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("0.3.1")).unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["code"], 6);
        assert_eq!(v["msg"], "bad stdin");
        assert_eq!(v["details"], "line 1");
    }
}
