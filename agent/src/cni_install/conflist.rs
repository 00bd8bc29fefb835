//! Pure JSON work on CNI network configs: validation, where edgeway's entry goes, adding
//! and removing it, and wrapping a `.conf` into a `.conflist`. No file system here.

use std::path::Path;

use serde_json::{Map, Value};

/// The `type` of edgeway's entry, and the name of its binary in the CNI bin dir.
pub const PLUGIN_TYPE: &str = "edgeway";

/// Main plugins that assign the pod's addresses themselves, without an `ipam` key in the
/// conflist (flannel delegates to bridge + host-local, Calico and Cilium run their own IPAM).
const IP_ASSIGNING_TYPES: &[&str] = &[
    "flannel",
    "calico",
    "bridge",
    "ptp",
    "macvlan",
    "ipvlan",
    "host-device",
    "vlan",
    "tap",
    "dummy",
    "cilium-cni",
    "kube-router",
    "weave-net",
    "antrea",
    "aws-cni",
    "azure-vnet",
    "kube-ovn",
];

/// The two file kinds a CNI runtime reads from its conf dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfKind {
    /// One plugin object (`.conf`).
    Conf,
    /// A list: `{name, cniVersion, plugins: [...]}` (`.conflist`).
    Conflist,
}

impl ConfKind {
    /// The kind a runtime gives the file by its name; `None` for files it ignores.
    pub fn of(path: &Path) -> Option<ConfKind> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("conf") => Some(ConfKind::Conf),
            Some("conflist") => Some(ConfKind::Conflist),
            _ => None,
        }
    }
}

/// Parses and checks a network config the way libcni does: a `.conflist` needs a string
/// `name` and a non-empty `plugins` array of objects with a non-empty string `type`; a
/// `.conf` is one such object. The error is a short reason, without the file name.
pub fn parse(kind: ConfKind, bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("not a JSON object".into());
    };
    match kind {
        ConfKind::Conf => {
            check_plugin(&Value::Object(map.clone())).map_err(|e| e.to_string())?;
        }
        ConfKind::Conflist => {
            match map.get("name") {
                Some(Value::String(_)) => {}
                Some(_) => return Err("\"name\" is not a string".into()),
                None => return Err("no \"name\"".into()),
            }
            let plugins = match map.get("plugins") {
                Some(Value::Array(p)) => p,
                Some(_) => return Err("\"plugins\" is not an array".into()),
                None => return Err("no \"plugins\" array".into()),
            };
            if plugins.is_empty() {
                return Err("\"plugins\" is empty".into());
            }
            for (i, p) in plugins.iter().enumerate() {
                check_plugin(p).map_err(|e| format!("plugins[{i}]: {e}"))?;
            }
        }
    }
    Ok(map)
}

fn check_plugin(plugin: &Value) -> Result<(), &'static str> {
    let Value::Object(p) = plugin else {
        return Err("not a JSON object");
    };
    match p.get("type") {
        Some(Value::String(t)) if !t.is_empty() => Ok(()),
        Some(Value::String(_)) => Err("\"type\" is empty"),
        Some(_) => Err("\"type\" is not a string"),
        None => Err("no \"type\""),
    }
}

fn plugin_type(plugin: &Value) -> Option<&str> {
    plugin.get("type").and_then(Value::as_str)
}

/// Whether a plugin object is edgeway's entry.
pub fn is_edgeway(plugin: &Value) -> bool {
    plugin_type(plugin) == Some(PLUGIN_TYPE)
}

/// Where edgeway goes in a chain that holds no edgeway entry: right after the first plugin
/// that assigns IPs (it has an `ipam` key, or its type is a known IP-assigning main
/// plugin), else right after the first plugin. So it sits before `portmap`, `bandwidth`,
/// `tuning` and the like.
pub fn insert_index(plugins: &[Value]) -> usize {
    plugins
        .iter()
        .position(|p| {
            p.get("ipam").is_some()
                || plugin_type(p).is_some_and(|t| IP_ASSIGNING_TYPES.contains(&t))
        })
        .map_or(1, |i| i + 1)
        .min(plugins.len())
}

/// The result of [`with_entry`].
#[derive(Debug, Clone, PartialEq)]
pub struct Inserted {
    /// The conflist with exactly one edgeway entry, at [`insert_index`].
    pub conflist: Map<String, Value>,
    /// The entry as written: the first existing edgeway entry's keys (so an operator's
    /// `rulePriority` or `agentTimeoutMs` survive), overridden by `entry`'s.
    pub entry: Map<String, Value>,
    /// Whether the list held no edgeway entry before.
    pub was_missing: bool,
}

/// Removes every edgeway entry from a (valid) conflist, then inserts one at
/// [`insert_index`]: the entry is never duplicated, and a misplaced one moves. Everything
/// else, key order included, stays as it was. Errors when no other plugin is left.
pub fn with_entry(
    conflist: &Map<String, Value>,
    entry: &Map<String, Value>,
) -> Result<Inserted, String> {
    let mut out = conflist.clone();
    let Some(Value::Array(plugins)) = out.get_mut("plugins") else {
        return Err("no \"plugins\" array".into());
    };
    let existing = plugins
        .iter()
        .find(|p| is_edgeway(p))
        .and_then(Value::as_object)
        .cloned();
    let was_missing = existing.is_none();
    plugins.retain(|p| !is_edgeway(p));
    if plugins.is_empty() {
        return Err("no plugin besides edgeway to chain it after".into());
    }
    let mut merged = existing.unwrap_or_default();
    for (k, v) in entry {
        merged.insert(k.clone(), v.clone());
    }
    // `type` first, as every CNI example writes it.
    if let Some(t) = merged.shift_remove("type") {
        let mut ordered = Map::new();
        ordered.insert("type".into(), t);
        ordered.extend(merged);
        merged = ordered;
    }
    let at = insert_index(plugins);
    plugins.insert(at, Value::Object(merged.clone()));
    Ok(Inserted {
        conflist: out,
        entry: merged,
        was_missing,
    })
}

/// Removes every edgeway entry; `None` when there is none (nothing to write).
pub fn without_entry(conflist: &Map<String, Value>) -> Option<Map<String, Value>> {
    let mut out = conflist.clone();
    let Some(Value::Array(plugins)) = out.get_mut("plugins") else {
        return None;
    };
    let before = plugins.len();
    plugins.retain(|p| !is_edgeway(p));
    (plugins.len() != before).then_some(out)
}

/// Wraps a single-plugin `.conf` into a conflist: `name` and `cniVersion` are lifted out of
/// the plugin to the list (the runtime passes them to every plugin anyway). A `.conf`
/// without a name gets `fallback_name`.
pub fn wrap(conf: &Map<String, Value>, fallback_name: &str) -> Map<String, Value> {
    let mut plugin = conf.clone();
    let name = plugin
        .shift_remove("name")
        .unwrap_or_else(|| Value::String(fallback_name.to_string()));
    let version = plugin.shift_remove("cniVersion");
    let mut list = Map::new();
    list.insert("name".into(), name);
    if let Some(v) = version {
        list.insert("cniVersion".into(), v);
    }
    list.insert("plugins".into(), Value::Array(vec![Value::Object(plugin)]));
    list
}

/// How many edgeway entries a conflist holds.
pub fn entry_count(conflist: &Map<String, Value>) -> usize {
    conflist
        .get("plugins")
        .and_then(Value::as_array)
        .map_or(0, |p| p.iter().filter(|p| is_edgeway(p)).count())
}

/// The bytes written for a config: two-space pretty JSON and a final newline.
pub fn to_bytes(map: &Map<String, Value>) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(map).expect("a JSON map always serializes");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn types(list: &Map<String, Value>) -> Vec<String> {
        list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn parse_checks_like_libcni() {
        assert!(parse(
            ConfKind::Conflist,
            br#"{"name":"n","plugins":[{"type":"bridge"}]}"#
        )
        .is_ok());
        for (bytes, why) in [
            (&b"{"[..], "not valid JSON"),
            (b"[]", "not a JSON object"),
            (br#"{"plugins":[{"type":"bridge"}]}"#, "no \"name\""),
            (br#"{"name":"n","plugins":[]}"#, "empty"),
            (br#"{"name":"n","plugins":{}}"#, "not an array"),
            (br#"{"name":"n","plugins":[{"type":""}]}"#, "plugins[0]"),
            (
                br#"{"name":"n","plugins":[{"type":"a"},{"mtu":1}]}"#,
                "plugins[1]",
            ),
        ] {
            let e = parse(ConfKind::Conflist, bytes).unwrap_err();
            assert!(e.contains(why), "{e} should mention {why}");
        }
        assert!(parse(ConfKind::Conf, br#"{"name":"n","type":"bridge"}"#).is_ok());
        assert!(parse(ConfKind::Conf, br#"{"name":"n"}"#).is_err());
    }

    #[test]
    fn insert_index_follows_the_ip_assigning_plugin() {
        let p = |v: Value| v.as_array().unwrap().clone();
        assert_eq!(
            insert_index(&p(json!([{"type":"flannel"},{"type":"portmap"}]))),
            1
        );
        assert_eq!(
            insert_index(&p(
                json!([{"type":"tuning"},{"type":"custom","ipam":{}},{"type":"portmap"}])
            )),
            2
        );
        assert_eq!(
            insert_index(&p(json!([{"type":"foo"},{"type":"portmap"}]))),
            1
        );
        assert_eq!(insert_index(&p(json!([{"type":"foo"}]))), 1);
    }

    #[test]
    fn with_entry_never_duplicates_and_merges() {
        let list = obj(json!({"name":"n","plugins":[
            {"type":"bridge","ipam":{}},
            {"type":"portmap"},
            {"type":"edgeway","rulePriority":9000,"table":1},
            {"type":"edgeway"}
        ]}));
        let entry = obj(json!({"type":"edgeway","table":7332}));
        let out = with_entry(&list, &entry).unwrap();
        assert!(!out.was_missing);
        assert_eq!(types(&out.conflist), ["bridge", "edgeway", "portmap"]);
        assert_eq!(
            out.entry,
            obj(json!({"type":"edgeway","rulePriority":9000,"table":7332}))
        );
        // Idempotent.
        let again = with_entry(&out.conflist, &entry).unwrap();
        assert_eq!(again.conflist, out.conflist);
        assert_eq!(
            without_entry(&again.conflist).map(|l| types(&l)),
            Some(vec!["bridge".into(), "portmap".into()])
        );
        assert_eq!(
            without_entry(&without_entry(&again.conflist).unwrap()),
            None
        );
    }

    #[test]
    fn with_entry_refuses_an_edgeway_only_list() {
        let list = obj(json!({"name":"n","plugins":[{"type":"edgeway"}]}));
        assert!(with_entry(&list, &obj(json!({"type":"edgeway"}))).is_err());
    }

    #[test]
    fn wrap_lifts_name_and_version() {
        let conf = obj(
            json!({"cniVersion":"0.3.1","name":"mynet","type":"bridge","ipam":{"type":"host-local"}}),
        );
        let list = wrap(&conf, "fallback");
        assert_eq!(
            Value::Object(list),
            json!({"name":"mynet","cniVersion":"0.3.1","plugins":[{"type":"bridge","ipam":{"type":"host-local"}}]})
        );
        let list = wrap(&obj(json!({"type":"bridge"})), "fallback");
        assert_eq!(
            Value::Object(list),
            json!({"name":"fallback","plugins":[{"type":"bridge"}]})
        );
    }
}
