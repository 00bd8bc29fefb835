//! The network configuration on stdin: the CNI fields edgeway reads, and its own keys.

use std::path::PathBuf;
use std::time::Duration;

use edgeway_common::cni::{CniError, CniVersion, ErrorCode};
use edgeway_common::{
    DEFAULT_AGENT_SOCKET, DEFAULT_RULE_PRIORITY, DEFAULT_STATE_DIR, DEFAULT_TABLE,
};
use serde_json::{Map, Value};

/// What ADD does when the agent cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAgentDown {
    /// The pod starts with host-CNI networking; the agent reads the record when it is back.
    Continue,
    /// ADD is undone and answers code 11, so the runtime retries.
    Fail,
}

#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: CniVersion,
    pub name: String,
    pub prev_result: Option<Value>,
    pub agent_socket: PathBuf,
    pub state_dir: PathBuf,
    pub table: u32,
    pub rule_priority: u32,
    pub agent_timeout: Duration,
    pub on_agent_down: OnAgentDown,
    /// GC's list of attachments to keep. `None` when the runtime sent no list, which is not
    /// the same as an empty one.
    pub valid_attachments: Option<Vec<(String, String)>>,
}

fn bad(field: &str, why: impl std::fmt::Display) -> CniError {
    CniError::new(
        ErrorCode::InvalidNetworkConfig,
        format!("invalid network config: {field}: {why}"),
    )
}

fn string_field(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, CniError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(field, format!("expected a string, got {other}"))),
    }
}

fn u64_field(obj: &Map<String, Value>, field: &str) -> Result<Option<u64>, CniError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(field, format!("expected a non-negative integer, got {v}"))),
    }
}

/// Reads just `cniVersion`, for answering errors in the caller's version.
pub fn peek_version(stdin: &[u8]) -> Option<CniVersion> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str()?.parse().ok()
}

pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            ErrorCode::Decode,
            format!("cannot decode the network config on stdin: {e}"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(CniError::new(
            ErrorCode::Decode,
            "cannot decode the network config on stdin: not a JSON object",
        ));
    };

    let version = string_field(&obj, "cniVersion")?.ok_or_else(|| bad("cniVersion", "missing"))?;
    let cni_version: CniVersion = version
        .parse()
        .map_err(|e| CniError::new(ErrorCode::IncompatibleVersion, format!("{e}")))?;
    let name = string_field(&obj, "name")?.ok_or_else(|| bad("name", "missing"))?;
    edgeway_common::api::validate_network_name(&name).map_err(|e| bad("name", e))?;

    let table = match u64_field(&obj, "table")? {
        None => DEFAULT_TABLE,
        // 0 is unspecified; 253, 254 and 255 are the kernel's default, main and local tables.
        Some(t @ (0 | 253..=255)) => {
            return Err(bad("table", format!("{t} is reserved by the kernel")))
        }
        Some(t) => u32::try_from(t).map_err(|_| bad("table", "larger than 4294967295"))?,
    };
    let rule_priority = match u64_field(&obj, "rulePriority")? {
        None => DEFAULT_RULE_PRIORITY as u64,
        // The rule must come after `local` (0) and before `main` (32766).
        Some(p @ 1..=32765) => p,
        Some(p) => {
            return Err(bad(
                "rulePriority",
                format!("{p} is not in 1..=32765, before the main table"),
            ))
        }
    } as u32;
    let agent_timeout = match u64_field(&obj, "agentTimeoutMs")? {
        None => Duration::from_millis(1000),
        Some(ms @ 10..=60_000) => Duration::from_millis(ms),
        Some(ms) => return Err(bad("agentTimeoutMs", format!("{ms} is not in 10..=60000"))),
    };
    let on_agent_down = match string_field(&obj, "onAgentDown")?.as_deref() {
        None | Some("continue") => OnAgentDown::Continue,
        Some("fail") => OnAgentDown::Fail,
        Some(other) => {
            return Err(bad(
                "onAgentDown",
                format!("{other:?} is not one of \"continue\" or \"fail\""),
            ))
        }
    };
    let path_field = |field: &str, default: &str| -> Result<PathBuf, CniError> {
        let p = string_field(&obj, field)?.unwrap_or_else(|| default.to_string());
        if !p.starts_with('/') {
            return Err(bad(field, format!("{p:?} is not an absolute path")));
        }
        Ok(PathBuf::from(p))
    };

    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.clone()),
    };

    Ok(NetConf {
        cni_version,
        name,
        prev_result,
        agent_socket: path_field("agentSocket", DEFAULT_AGENT_SOCKET)?,
        state_dir: path_field("stateDir", DEFAULT_STATE_DIR)?,
        table,
        rule_priority,
        agent_timeout,
        on_agent_down,
        valid_attachments: valid_attachments(&obj)?,
    })
}

/// `cni.dev/valid-attachments` (1.1), or the older `cni.dev/attachments`.
fn valid_attachments(obj: &Map<String, Value>) -> Result<Option<Vec<(String, String)>>, CniError> {
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        let Some(list) = obj.get(key) else { continue };
        let Value::Array(list) = list else {
            return Err(bad(key, "expected a list"));
        };
        let mut out = Vec::with_capacity(list.len());
        for item in list {
            let cid = item.get("containerID").and_then(Value::as_str);
            let ifname = item.get("ifname").and_then(Value::as_str);
            match (cid, ifname) {
                (Some(c), Some(i)) => out.push((c.to_string(), i.to_string())),
                _ => {
                    return Err(bad(
                        key,
                        format!("entry {item} needs containerID and ifname"),
                    ))
                }
            }
        }
        return Ok(Some(out));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value) -> Result<NetConf, CniError> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn defaults() {
        let c =
            parse_json(json!({"cniVersion": "0.3.1", "name": "cbr0", "type": "edgeway"})).unwrap();
        assert_eq!(c.cni_version, CniVersion::V0_3_1);
        assert_eq!(c.agent_socket, PathBuf::from("/run/edgeway/agent.sock"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/edgeway"));
        assert_eq!(c.table, DEFAULT_TABLE);
        assert_eq!(c.rule_priority, DEFAULT_RULE_PRIORITY);
        assert_eq!(c.on_agent_down, OnAgentDown::Continue);
        assert_eq!(c.agent_timeout, Duration::from_millis(1000));
        assert!(c.prev_result.is_none());
        assert!(c.valid_attachments.is_none());
    }

    #[test]
    fn every_key_is_read() {
        let c = parse_json(json!({
            "cniVersion": "1.1.0", "name": "n", "type": "edgeway",
            "agentSocket": "/tmp/a.sock", "stateDir": "/tmp/s", "table": 900,
            "rulePriority": 1200, "agentTimeoutMs": 250, "onAgentDown": "fail",
            "cni.dev/valid-attachments": [{"containerID": "c", "ifname": "eth0"}],
            "prevResult": {"cniVersion": "1.1.0"}
        }))
        .unwrap();
        assert_eq!(c.agent_socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!((c.table, c.rule_priority), (900, 1200));
        assert_eq!(c.agent_timeout, Duration::from_millis(250));
        assert_eq!(c.on_agent_down, OnAgentDown::Fail);
        assert_eq!(c.valid_attachments, Some(vec![("c".into(), "eth0".into())]));
        assert!(c.prev_result.is_some());
    }

    #[test]
    fn empty_gc_list_differs_from_a_missing_one() {
        let c = parse_json(json!({"cniVersion": "1.1.0", "name": "n", "cni.dev/attachments": []}))
            .unwrap();
        assert_eq!(c.valid_attachments, Some(vec![]));
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (
                json!({"cniVersion": "0.3.1", "name": "n", "table": 254}),
                "table",
                7,
            ),
            (
                json!({"cniVersion": "0.3.1", "name": "n", "table": "x"}),
                "table",
                7,
            ),
            (
                json!({"cniVersion": "0.3.1", "name": "n", "rulePriority": 32766}),
                "rulePriority",
                7,
            ),
            (
                json!({"cniVersion": "0.3.1", "name": "n", "onAgentDown": "retry"}),
                "onAgentDown",
                7,
            ),
            (
                json!({"cniVersion": "0.3.1", "name": "n", "agentTimeoutMs": 0}),
                "agentTimeoutMs",
                7,
            ),
            (
                json!({"cniVersion": "0.3.1", "name": "n", "stateDir": "rel"}),
                "stateDir",
                7,
            ),
            (json!({"cniVersion": "0.3.1", "name": "a b"}), "name", 7),
            (json!({"cniVersion": "0.3.1"}), "name", 7),
            (json!({"name": "n"}), "cniVersion", 7),
            (json!({"cniVersion": "0.2.0", "name": "n"}), "0.2.0", 1),
            (
                json!({"cniVersion": "1.1.0", "name": "n", "cni.dev/valid-attachments": [{}]}),
                "valid-attachments",
                7,
            ),
        ];
        for (conf, field, code) in cases {
            let e = parse_json(conf.clone()).unwrap_err();
            assert_eq!(e.code.code(), code, "{conf}");
            assert!(e.msg.contains(field), "{conf}: {}", e.msg);
        }
        assert_eq!(parse(b"{").unwrap_err().code, ErrorCode::Decode);
        assert_eq!(parse(b"[1]").unwrap_err().code, ErrorCode::Decode);
    }
}
