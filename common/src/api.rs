//! The plugin-to-agent API, served by the agent as HTTP on its unix socket.
//!
//! | method | path | body | answer |
//! | --- | --- | --- | --- |
//! | POST | `/v1/attachments` | [`Attachment`] | 200 with the stored attachment |
//! | DELETE | `/v1/attachments/{containerID}/{ifname}` | — | 200, also when unknown |
//! | GET | `/v1/attachments` | — | a list of [`Attachment`] |
//! | GET | `/healthz`, `/readyz` | — | [`Readiness`] |
//! | GET | `/metrics` | — | Prometheus text |

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub const ATTACHMENTS_PATH: &str = "/v1/attachments";
pub const READYZ_PATH: &str = "/readyz";

/// The Kubernetes pod behind an attachment, from `CNI_ARGS` `K8S_POD_*`. Empty outside Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// One container interface that edgeway has set up. The plugin writes it to `stateDir` and
/// registers it with the agent; it is what the agent announces as pod ownership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    /// The CNI network name, so GC only touches its own network's attachments.
    pub network: String,
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub pod: PodRef,
    /// Routing table and rule priority the rules were installed with.
    pub table: u32,
    pub priority: u32,
    /// Random per ADD. A queued DEL only removes the attachment it was queued for,
    /// not a later ADD of the same container and interface.
    pub generation: String,
    pub created_unix: u64,
}

impl Attachment {
    pub fn key(&self) -> AttachmentKey {
        AttachmentKey {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }

    /// Checks what a file name or a rule is built from.
    pub fn validate(&self) -> Result<(), String> {
        validate_container_id(&self.container_id)?;
        validate_ifname(&self.ifname)?;
        validate_network_name(&self.network).map_err(|e| format!("network: {e}"))?;
        if self.ips.is_empty() {
            return Err("ips: at least one address is required".into());
        }
        if self.generation.is_empty() || self.generation.len() > 64 {
            return Err("generation: must be 1 to 64 characters".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentKey {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl AttachmentKey {
    /// A file name that cannot collide: container IDs never contain `@`.
    pub fn file_name(&self) -> String {
        format!("{}@{}.json", self.container_id, self.ifname)
    }
}

/// What DELETE `/v1/attachments/{containerID}/{ifname}` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnregisterResponse {
    /// The attachment the agent forgot, if it knew it.
    pub removed: Option<Attachment>,
}

/// What `/readyz` and `/healthz` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// What the agent answers on a 4xx or 5xx.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Longest container ID accepted: record file names (`<id>@<ifname>.json` plus a temp
/// suffix) must stay under the 255-byte file name limit. Runtimes use 64 hex digits.
pub const MAX_CONTAINER_ID: usize = 200;

/// The CNI spec's rule for container IDs: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn validate_container_id(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    match chars.next() {
        None => Err("containerID is empty".into()),
        Some(c) if !c.is_ascii_alphanumeric() => Err(format!(
            "containerID {id:?} must start with a letter or digit"
        )),
        _ if !chars.all(is_id_char) || id.len() > MAX_CONTAINER_ID => Err(format!(
            "containerID {id:?} may hold only letters, digits, '_', '.' and '-', at most {MAX_CONTAINER_ID} of them"
        )),
        _ => Ok(()),
    }
}

/// Network names follow the same rule as container IDs.
pub fn validate_network_name(name: &str) -> Result<(), String> {
    validate_container_id(name).map_err(|e| e.replacen("containerID", "network name", 1))
}

/// Linux interface names: 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > 15 {
        return Err(format!("interface name {name:?} is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is not allowed"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "interface name {name:?} contains '/', ':' or whitespace"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        for ok in ["a", "abc123", "A.b_c-d", "0f3e"] {
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "a@b", "a;b", "../x"] {
            assert!(validate_container_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "net1", "a", "veth@x", "123456789012345"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "1234567890123456",
            "a\nb",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attachment_round_trips_and_refuses_unknown_fields() {
        let a = Attachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/p".into(),
            network: "edge".into(),
            ips: vec!["10.244.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            pod: PodRef {
                namespace: Some("default".into()),
                name: Some("web".into()),
                uid: None,
            },
            table: 7332,
            priority: 7332,
            generation: "g1".into(),
            created_unix: 1,
        };
        let s = serde_json::to_string(&a).unwrap();
        assert!(s.contains("\"containerID\":\"c1\""));
        assert_eq!(serde_json::from_str::<Attachment>(&s).unwrap(), a);
        let mut v: serde_json::Value = serde_json::from_str(&s).unwrap();
        v["surprise"] = 1.into();
        assert!(serde_json::from_value::<Attachment>(v).is_err());
        assert_eq!(a.key().file_name(), "c1@eth0.json");
    }
}
