//! `prevResult` conversion between the spec versions' layouts, on any JSON.
//!
//! Input: the `prevResult` JSON alone, so every mutation lands in the result. A converted
//! result must re-parse, keep every field that is not a layout difference, name the same
//! sandbox addresses, and equal a direct conversion when converted again.

#![no_main]

use edgeway_common::cni::result::{convert_result, result_version, sandbox_ips};
use edgeway_common::cni::CniVersion;
use edgeway_fuzz::check_cni_error;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// Incompatible version, invalid config.
const CODES: [u32; 2] = [1, 7];
const INTERFACE_FIELDS_1_1: [&str; 3] = ["mtu", "socketPath", "pciID"];
const ROUTE_FIELDS_1_1: [&str; 5] = ["mtu", "advmss", "priority", "table", "scope"];

fn entries<'a>(v: &'a Value, list: &str) -> &'a [Value] {
    v.get(list)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Every key of `from` is in `to` with the same value, except `dropped` ones.
fn kept(from: &Map<String, Value>, to: &Map<String, Value>, dropped: &[&str], what: &str) {
    for (k, v) in from {
        if !dropped.contains(&k.as_str()) {
            assert_eq!(to.get(k), Some(v), "{what}: {k} changed");
        }
    }
}

/// `out` is `input` in `to`'s layout, with nothing else changed.
fn check_layout(input: &Value, out: &Value, to: CniVersion) {
    let (Value::Object(i), Value::Object(o)) = (input, out) else {
        panic!("an object converts to an object");
    };
    assert_eq!(o.get("cniVersion"), Some(&Value::from(to.as_str())));
    kept(
        i,
        o,
        &["cniVersion", "ips", "interfaces", "routes"],
        "top level",
    );
    assert_eq!(
        i.len() + usize::from(!i.contains_key("cniVersion")),
        o.len()
    );

    let lists: [(&str, &[&str]); 3] = [
        ("ips", &["version"]),
        ("interfaces", &INTERFACE_FIELDS_1_1),
        ("routes", &ROUTE_FIELDS_1_1),
    ];
    for (list, layout_fields) in lists {
        let (before, after) = (entries(input, list), entries(out, list));
        assert_eq!(before.len(), after.len(), "{list}[] lost entries");
        for (b, a) in before.iter().zip(after) {
            match (b, a) {
                (Value::Object(b), Value::Object(a)) => {
                    kept(b, a, layout_fields, list);
                    if list == "ips" {
                        assert_eq!(a.contains_key("version"), to.ips_carry_version());
                    } else if !to.has_1_1_fields() {
                        assert!(layout_fields.iter().all(|f| !a.contains_key(*f)));
                    }
                }
                (b, a) => assert_eq!(b, a, "{list}[]"),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let source = result_version(&input);
    let mut converted = Vec::new();
    for to in CniVersion::ALL {
        match convert_result(&input, to) {
            Ok(out) => {
                check_layout(&input, &out, to);
                // The next plugin in the chain reads what edgeway printed.
                let text = out.to_string();
                let reparsed: Value = serde_json::from_str(&text).expect("output re-parses");
                assert_eq!(reparsed, out, "printing changed the result: {text}");
                assert_eq!(
                    convert_result(&out, to).as_ref(),
                    Ok(&out),
                    "not idempotent"
                );
                assert_eq!(result_version(&out), Ok(to));
                converted.push((to, out));
            }
            Err(e) => check_cni_error(&e, &CODES, "convert_result"),
        }
    }
    if converted.is_empty() {
        return;
    }
    assert!(
        source.is_ok(),
        "converted a result whose version is refused"
    );

    // The layout never changes which addresses belong to the sandbox interface.
    let mut names = vec!["eth0".to_string()];
    names.extend(
        entries(&input, "interfaces")
            .iter()
            .filter_map(|i| i.get("name")?.as_str().map(str::to_string))
            .take(4),
    );
    for (_, out) in &converted {
        for name in &names {
            assert_eq!(sandbox_ips(out, name), sandbox_ips(&input, name), "{name}");
        }
    }

    // Two steps equal one when the first step drops nothing the second would keep.
    let had_versions = entries(&input, "ips")
        .iter()
        .any(|ip| ip.get("version").is_some());
    for (a, via_a) in &converted {
        for (b, direct) in &converted {
            let keeps_1_1 = a.has_1_1_fields() || !b.has_1_1_fields();
            let keeps_version = a.ips_carry_version() || !b.ips_carry_version() || !had_versions;
            if keeps_1_1 && keeps_version {
                assert_eq!(
                    convert_result(via_a, *b).as_ref(),
                    Ok(direct),
                    "{a} then {b} differs from {b}"
                );
            }
        }
    }
});
