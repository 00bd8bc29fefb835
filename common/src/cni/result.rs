//! `prevResult` handling. The result stays a JSON value, so fields edgeway does not know
//! pass through untouched; only the layout differences between spec versions are converted.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{Map, Value};

use super::{CniError, CniVersion, ErrorCode};

/// Interface fields that exist only from 1.1.0 on.
const INTERFACE_FIELDS_1_1: [&str; 3] = ["mtu", "socketPath", "pciID"];
/// Route fields that exist only from 1.1.0 on.
const ROUTE_FIELDS_1_1: [&str; 5] = ["mtu", "advmss", "priority", "table", "scope"];

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(
        ErrorCode::InvalidNetworkConfig,
        format!("invalid prevResult: {}", msg.into()),
    )
}

/// The version a result is written in. libcni always sets `cniVersion`; when it is missing,
/// the layout tells: `ips[].version` exists only before 1.0.
pub fn result_version(result: &Value) -> Result<CniVersion, CniError> {
    match result.get("cniVersion") {
        Some(Value::String(s)) => s.parse().map_err(|e: super::version::UnsupportedVersion| {
            CniError::new(ErrorCode::IncompatibleVersion, format!("prevResult: {e}"))
        }),
        Some(_) => Err(invalid("cniVersion is not a string")),
        None => {
            let has_version = ips(result)?.iter().any(|ip| ip.get("version").is_some());
            Ok(if has_version {
                CniVersion::V0_4_0
            } else {
                CniVersion::V1_0_0
            })
        }
    }
}

fn ips(result: &Value) -> Result<&[Value], CniError> {
    match result.get("ips") {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(invalid("ips is not a list")),
    }
}

fn address_of(entry: &Value) -> Result<IpNetwork, CniError> {
    let s = entry
        .get("address")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("an ips[] entry has no address"))?;
    s.parse::<IpNetwork>()
        .map_err(|e| invalid(format!("ips[] address {s:?}: {e}")))
}

/// Converts a result to `to`, keeping every field that is not part of a layout difference.
pub fn convert_result(result: &Value, to: CniVersion) -> Result<Value, CniError> {
    let Value::Object(obj) = result else {
        return Err(invalid("not a JSON object"));
    };
    // Validates the source version, so an unsupported one (0.2.0's ip4/ip6 layout) is refused.
    result_version(result)?;
    let mut out = obj.clone();
    out.insert("cniVersion".into(), Value::String(to.as_str().into()));

    if let Some(list) = out.get_mut("ips") {
        match list {
            Value::Null => {}
            Value::Array(entries) => {
                for entry in entries.iter_mut() {
                    let addr = address_of(entry)?;
                    let Value::Object(e) = entry else {
                        return Err(invalid("an ips[] entry is not an object"));
                    };
                    if to.ips_carry_version() {
                        if !e.contains_key("version") {
                            let v = if addr.is_ipv4() { "4" } else { "6" };
                            e.insert("version".into(), Value::String(v.into()));
                        }
                    } else {
                        e.remove("version");
                    }
                }
            }
            _ => return Err(invalid("ips is not a list")),
        }
    }
    if !to.has_1_1_fields() {
        strip_fields(&mut out, "interfaces", &INTERFACE_FIELDS_1_1)?;
        strip_fields(&mut out, "routes", &ROUTE_FIELDS_1_1)?;
    }
    Ok(Value::Object(out))
}

fn strip_fields(out: &mut Map<String, Value>, list: &str, fields: &[&str]) -> Result<(), CniError> {
    match out.get_mut(list) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(entries)) => {
            for entry in entries.iter_mut() {
                let Value::Object(e) = entry else {
                    return Err(invalid(format!("a {list}[] entry is not an object")));
                };
                for f in fields {
                    e.remove(*f);
                }
            }
            Ok(())
        }
        Some(_) => Err(invalid(format!("{list} is not a list"))),
    }
}

/// The addresses of the sandbox interface `ifname`. An `ips[]` entry without an interface
/// index counts as the sandbox's: plugins such as flannel's older chains leave it out.
pub fn sandbox_ips(result: &Value, ifname: &str) -> Result<Vec<IpAddr>, CniError> {
    let interfaces: &[Value] = match result.get("interfaces") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid("interfaces is not a list")),
    };
    let is_sandbox = |i: &Value| {
        i.get("sandbox")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let named: Vec<usize> = interfaces
        .iter()
        .enumerate()
        .filter(|(_, i)| i.get("name").and_then(Value::as_str) == Some(ifname))
        .map(|(n, _)| n)
        .collect();
    // A host-side interface may share the name; the sandbox one wins when both exist.
    let in_sandbox: Vec<usize> = named
        .iter()
        .copied()
        .filter(|&n| is_sandbox(&interfaces[n]))
        .collect();
    let wanted = if in_sandbox.is_empty() {
        named
    } else {
        in_sandbox
    };

    let mut out = Vec::new();
    for entry in ips(result)? {
        let addr = address_of(entry)?;
        let take = match entry.get("interface") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_u64().is_some_and(|n| wanted.contains(&(n as usize))),
            Some(_) => return Err(invalid("an ips[] interface index is not a number")),
        };
        if take && !out.contains(&addr.ip()) {
            out.push(addr.ip());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A result as a 1.1.0 bridge plugin would write it, with an unknown field at every level.
    fn full_1_1() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01", "mtu": 1450, "x-vendor": 1},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/var/run/netns/p1",
                 "mtu": 1450, "socketPath": "/run/x.sock", "pciID": "0000:00:1f.6"}
            ],
            "ips": [
                {"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 2},
                {"address": "fd00:10:244:1::5/64", "gateway": "fd00:10:244:1::1", "interface": 2, "x-ip": true}
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.244.1.1", "mtu": 1400, "advmss": 1360,
                 "priority": 10, "table": 100, "scope": 0, "x-route": "kept"}
            ],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
            "x-top": {"nested": [1, 2, 3]}
        })
    }

    /// `kept_1_1`: whether the 1.1-only fields can still be there (they cannot once the
    /// result went through an older layout).
    fn check_layout(v: &Value, to: CniVersion, kept_1_1: bool) {
        assert_eq!(v["cniVersion"], to.as_str());
        for ip in v["ips"].as_array().unwrap() {
            assert_eq!(
                ip.get("version").is_some(),
                to.ips_carry_version(),
                "{to}: {ip}"
            );
        }
        let eth0 = &v["interfaces"][2];
        let route = &v["routes"][0];
        for f in INTERFACE_FIELDS_1_1 {
            assert_eq!(
                eth0.get(f).is_some(),
                kept_1_1 && to.has_1_1_fields(),
                "{to}: interface {f}"
            );
        }
        for f in ROUTE_FIELDS_1_1 {
            assert_eq!(
                route.get(f).is_some(),
                kept_1_1 && to.has_1_1_fields(),
                "{to}: route {f}"
            );
        }
        // Unknown fields survive every conversion.
        assert_eq!(v["x-top"], json!({"nested": [1, 2, 3]}));
        assert_eq!(v["interfaces"][0]["x-vendor"], 1);
        assert_eq!(v["ips"][1]["x-ip"], true);
        assert_eq!(route["x-route"], "kept");
        assert_eq!(v["dns"]["nameservers"][0], "10.96.0.10");
    }

    #[test]
    fn every_version_pair_converts() {
        for from in CniVersion::ALL {
            let source = convert_result(&full_1_1(), from).unwrap();
            let source_kept = from.has_1_1_fields();
            check_layout(&source, from, source_kept);
            for to in CniVersion::ALL {
                let out = convert_result(&source, to).unwrap();
                check_layout(&out, to, source_kept);
                // Only the layout changes: the rest of the result is equal.
                let back = convert_result(&out, from).unwrap();
                if from.has_1_1_fields() && !to.has_1_1_fields() {
                    // 1.1-only fields cannot survive a trip through an older layout.
                    assert_eq!(
                        back,
                        convert_result(&source, CniVersion::V1_0_0)
                            .and_then(|v| convert_result(&v, from))
                            .unwrap()
                    );
                } else {
                    assert_eq!(back, source, "{from} -> {to} -> {from}");
                }
            }
        }
    }

    #[test]
    fn numbers_are_passed_on_as_they_came() {
        // Found by fuzzing (prev_result): serde_json's default float parser read this one
        // ulp off the nearest double, so the printed result re-parsed as another number.
        let text = r#"{"cniVersion":"1.0.0","x-weight":111111.1111111111111111111111111111111}"#;
        let prev: Value = serde_json::from_str(text).unwrap();
        let out = convert_result(&prev, CniVersion::V1_1_0).unwrap();
        let next_plugin_reads: Value = serde_json::from_str(&out.to_string()).unwrap();
        assert_eq!(next_plugin_reads, out);
        assert_eq!(out["x-weight"], prev["x-weight"]);
    }

    #[test]
    fn version_is_derived_from_the_address() {
        let r = json!({"cniVersion": "1.0.0", "ips": [
            {"address": "10.244.0.2/24"}, {"address": "fd00::2/64"}]});
        let out = convert_result(&r, CniVersion::V0_3_1).unwrap();
        assert_eq!(out["ips"][0]["version"], "4");
        assert_eq!(out["ips"][1]["version"], "6");
    }

    #[test]
    fn refuses_unsupported_and_malformed_results() {
        let old = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}});
        let e = convert_result(&old, CniVersion::V1_0_0).unwrap_err();
        assert_eq!(e.code, ErrorCode::IncompatibleVersion);
        for bad in [
            json!("text"),
            json!({"cniVersion": "1.0.0", "ips": {}}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "not-an-ip"}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"gateway": "10.0.0.1"}]}),
            json!({"cniVersion": 1, "ips": []}),
            json!({"cniVersion": "1.0.0", "interfaces": [1]}),
        ] {
            let e = convert_result(&bad, CniVersion::V1_0_0).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidNetworkConfig, "{bad}");
        }
    }

    #[test]
    fn missing_version_is_inferred() {
        let r = json!({"ips": [{"version": "4", "address": "10.0.0.2/24"}]});
        assert_eq!(result_version(&r).unwrap(), CniVersion::V0_4_0);
        let r = json!({"ips": [{"address": "10.0.0.2/24"}]});
        assert_eq!(result_version(&r).unwrap(), CniVersion::V1_0_0);
    }

    #[test]
    fn sandbox_ips_follow_the_interface_index() {
        let ips = sandbox_ips(&full_1_1(), "eth0").unwrap();
        assert_eq!(
            ips,
            vec![
                "10.244.1.5".parse::<IpAddr>().unwrap(),
                "fd00:10:244:1::5".parse().unwrap()
            ]
        );
        assert!(sandbox_ips(&full_1_1(), "net1").unwrap().is_empty());
        // No index at all: take every address.
        let r = json!({"cniVersion": "0.3.1", "ips": [
            {"version": "4", "address": "10.244.2.7/24"}, {"version": "4", "address": "10.244.2.7/24"}]});
        assert_eq!(
            sandbox_ips(&r, "eth0").unwrap(),
            vec!["10.244.2.7".parse::<IpAddr>().unwrap()]
        );
        // A host interface with the sandbox's name does not win over the sandbox one.
        let r = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0"}, {"name": "eth0", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"address": "10.0.0.1/24", "interface": 0}, {"address": "10.0.0.2/24", "interface": 1}]});
        assert_eq!(
            sandbox_ips(&r, "eth0").unwrap(),
            vec!["10.0.0.2".parse::<IpAddr>().unwrap()]
        );
    }
}
