//! Policy rules in a namespace, read with `ip -n <ns> -j rule show` and parsed.

use std::process::Command;

use serde_json::Value;

use crate::run_ok;

/// The protocol number edgeway stamps on its rules (`proto 237`).
pub const EDGEWAY_PROTO: &str = "237";
/// edgeway's default routing table and rule priority.
pub const DEFAULT_TABLE: u32 = 7332;

/// One IPv4 rule as `ip -j rule show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub priority: u32,
    /// `src` with `/srclen` appended when it is not a host address.
    pub src: String,
    pub table: String,
    /// `None` when the rule has no protocol (the kernel's own rules).
    pub protocol: Option<String>,
}

impl Rule {
    fn from_json(v: &Value) -> Rule {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let src = text("src").unwrap_or_default();
        let src = match v.get("srclen").and_then(Value::as_u64) {
            Some(len) if len != 32 => format!("{src}/{len}"),
            _ => src,
        };
        Rule {
            priority: v.get("priority").and_then(Value::as_u64).unwrap_or(0) as u32,
            src,
            table: text("table").unwrap_or_default(),
            protocol: text("protocol"),
        }
    }

    /// The rule edgeway installs for a pod address with the default table and priority:
    /// `from <ip> lookup 7332 priority 7332 proto 237`.
    pub fn is_edgeway_rule_for(&self, ip: &str) -> bool {
        self.src == ip
            && self.table == DEFAULT_TABLE.to_string()
            && self.priority == DEFAULT_TABLE
            && self.protocol.as_deref() == Some(EDGEWAY_PROTO)
    }
}

/// Every IPv4 rule in the namespace.
pub fn list(ns: &str) -> Vec<Rule> {
    let out = run_ok(Command::new("ip").args(["-n", ns, "-j", "rule", "show"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ip -j rule show printed non-JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    v.as_array()
        .expect("ip -j rule show prints a list")
        .iter()
        .map(Rule::from_json)
        .collect()
}

/// The rules carrying edgeway's protocol.
pub fn edgeway_rules(ns: &str) -> Vec<Rule> {
    list(ns)
        .into_iter()
        .filter(|r| r.protocol.as_deref() == Some(EDGEWAY_PROTO))
        .collect()
}

/// Whether `from <ip> lookup 7332 priority 7332 proto 237` exists in the namespace.
pub fn has_pod_rule(ns: &str, ip: &str) -> bool {
    list(ns).iter().any(|r| r.is_edgeway_rule_for(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_ip_json() {
        let r = Rule::from_json(
            &json!({"priority":7332,"src":"10.244.9.9","table":"7332","protocol":"237"}),
        );
        assert!(r.is_edgeway_rule_for("10.244.9.9"));
        let r = Rule::from_json(&json!({"priority":0,"src":"all","table":"local"}));
        assert_eq!(r.protocol, None);
        let r = Rule::from_json(&json!({"priority":5,"src":"10.0.0.0","srclen":8,"table":"9"}));
        assert_eq!(r.src, "10.0.0.0/8");
    }
}
