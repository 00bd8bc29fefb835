//! The plugin's whole input: the CNI_* environment and the network config on stdin.
//!
//! Input: `NAME=value` lines (the environment), an empty line, then stdin. It runs what
//! every invocation runs before it acts (`cmd::parse`), and for ADD what it passes on
//! (`cmd::prepare_add`); nothing here touches a file, a socket or netlink.

#![no_main]

use std::collections::HashMap;

use edgeway_common::api::{
    validate_container_id, validate_ifname, validate_network_name, Attachment,
};
use edgeway_common::cni::result::{convert_result, sandbox_ips};
use edgeway_common::cni::version::SUPPORTED_VERSIONS;
use edgeway_common::cni::CniVersion;
use edgeway_fuzz::check_cni_error;
use edgeway_plugin::cmd::{self, Request};
use edgeway_plugin::config::{self, NetConf};
use edgeway_plugin::env::ContainerEnv;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// What parsing may answer: incompatible version, bad environment, undecodable stdin,
/// invalid config.
const PARSE_CODES: [u32; 4] = [1, 4, 6, 7];
/// What ADD's `prevResult` conversion may answer.
const RESULT_CODES: [u32; 2] = [1, 7];

/// Splits the input into the environment and stdin. As with `std::env::var`, a value
/// that is not UTF-8 reads as unset, and the first of two equal names wins (`getenv`).
fn split(data: &[u8]) -> (HashMap<String, String>, &[u8]) {
    let (head, stdin) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut env = HashMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(eq) = line.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (Ok(k), Ok(v)) = (
            std::str::from_utf8(&line[..eq]),
            std::str::from_utf8(&line[eq + 1..]),
        ) else {
            continue;
        };
        // An environment cannot hold NUL.
        if !k.contains('\0') && !v.contains('\0') {
            env.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
    }
    (env, stdin)
}

fn check_conf(conf: &NetConf, stdin: &[u8]) {
    // Errors are answered in the version `peek_version` finds: the one that was parsed.
    assert_eq!(config::peek_version(stdin), Some(conf.cni_version));
    assert!(validate_network_name(&conf.name).is_ok(), "{:?}", conf.name);
    assert!(!matches!(conf.table, 0 | 253..=255), "table {}", conf.table);
    assert!((1..=32765).contains(&conf.rule_priority));
    assert!((10..=60_000).contains(&conf.agent_timeout.as_millis()));
    assert!(conf.agent_socket.is_absolute() && conf.state_dir.is_absolute());
}

fn check_container(c: &ContainerEnv, del: bool) {
    assert!(validate_container_id(&c.container_id).is_ok());
    assert!(validate_ifname(&c.ifname).is_ok());
    assert!(del || !c.netns.is_empty());
    assert!(!c.key().file_name().contains('/'));
}

/// ADD: what goes to stdout must be a result the next plugin can read, in the config's
/// version, and the agent must accept the attachment the plugin would register.
fn check_add(conf: &NetConf, c: &ContainerEnv) {
    let (out, ips) = match cmd::prepare_add(conf, c) {
        Ok(r) => r,
        Err(e) => return check_cni_error(&e, &RESULT_CODES, "ADD prevResult"),
    };
    let passed_on: Value = serde_json::from_str(&out).expect("ADD output re-parses");
    assert_eq!(passed_on["cniVersion"], conf.cni_version.as_str());
    assert_eq!(
        convert_result(&passed_on, conf.cni_version).as_ref(),
        Ok(&passed_on),
        "converting the output again changes it"
    );
    assert_eq!(sandbox_ips(&passed_on, &c.ifname).as_ref(), Ok(&ips));
    for (i, ip) in ips.iter().enumerate() {
        assert!(!ips[..i].contains(ip), "{ip} twice");
    }
    if ips.is_empty() {
        return;
    }
    let a = Attachment {
        container_id: c.container_id.clone(),
        ifname: c.ifname.clone(),
        netns: c.netns.clone(),
        network: conf.name.clone(),
        ips,
        pod: c.pod.clone(),
        table: conf.table,
        priority: conf.rule_priority,
        generation: format!("{:032x}", 1u128),
        created_unix: 1,
    };
    a.validate()
        .unwrap_or_else(|e| panic!("the agent refuses what the plugin registers: {e}"));
    let wire = serde_json::to_vec(&a).unwrap();
    assert_eq!(serde_json::from_slice::<Attachment>(&wire).unwrap(), a);
}

fuzz_target!(|data: &[u8]| {
    let (env, stdin) = split(data);
    let get = |k: &str| env.get(k).cloned();
    let request = match cmd::parse(&get, stdin) {
        Ok(r) => r,
        Err(e) => return check_cni_error(&e, &PARSE_CODES, "parse"),
    };
    match request {
        Request::Version => {
            let v: Value = serde_json::from_str(&cmd::version(stdin)).unwrap();
            assert_eq!(
                v["supportedVersions"],
                serde_json::json!(SUPPORTED_VERSIONS)
            );
            let answered = config::peek_version(stdin).unwrap_or(CniVersion::LATEST);
            assert_eq!(v["cniVersion"], answered.as_str());
        }
        Request::Add(conf, c) => {
            check_conf(&conf, stdin);
            check_container(&c, false);
            check_add(&conf, &c);
        }
        Request::Del(conf, c) => {
            check_conf(&conf, stdin);
            check_container(&c, true);
            // DEL ignores a prevResult it cannot read; reading it must not panic.
            if let Some(prev) = &conf.prev_result {
                let _ = sandbox_ips(prev, &c.ifname);
            }
        }
        Request::Check(conf, c) => {
            check_conf(&conf, stdin);
            check_container(&c, false);
            assert!(conf.cni_version >= CniVersion::V0_4_0);
            if let Some(Err(e)) = conf.prev_result.as_ref().map(|p| sandbox_ips(p, &c.ifname)) {
                check_cni_error(&e, &RESULT_CODES, "CHECK prevResult");
            }
        }
        Request::Status(conf) | Request::Gc(conf) => {
            check_conf(&conf, stdin);
            assert!(conf.cni_version >= CniVersion::V1_1_0);
        }
    }
});
