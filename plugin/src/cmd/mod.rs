//! One file per CNI command, and the dispatch between them.

mod add;
mod check;
mod del;
mod gc;
mod rules;
mod status;

pub use add::prepare as prepare_add;

use edgeway_common::cni::version::SUPPORTED_VERSIONS;
use edgeway_common::cni::{CniError, CniVersion, ErrorCode};
use edgeway_common::store::{Store, StoreLock};
use serde_json::json;

use crate::config::{self, NetConf};
use crate::env::{self, Command, ContainerEnv};

/// One invocation, read and checked but not acted on yet.
#[derive(Debug)]
pub enum Request {
    Version,
    Add(NetConf, ContainerEnv),
    Del(NetConf, ContainerEnv),
    Check(NetConf, ContainerEnv),
    Status(NetConf),
    Gc(NetConf),
}

/// Reads the environment and stdin, touching no file, socket or netlink, so that the fuzz
/// target checks exactly what every invocation starts with.
pub fn parse(get: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Request, CniError> {
    let cmd = env::command(get)?;
    if cmd == Command::Version {
        return Ok(Request::Version);
    }
    let conf = config::parse(stdin)?;
    gate(cmd, conf.cni_version)?;
    Ok(match cmd {
        Command::Add => Request::Add(conf, env::container(cmd, get)?),
        Command::Del => Request::Del(conf, env::container(cmd, get)?),
        Command::Check => Request::Check(conf, env::container(cmd, get)?),
        Command::Status => Request::Status(conf),
        Command::Gc => Request::Gc(conf),
        Command::Version => unreachable!("answered above"),
    })
}

/// Runs one plugin invocation and returns what goes to stdout.
pub fn run(get: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<String, CniError> {
    match parse(get, stdin)? {
        Request::Version => Ok(version(stdin)),
        Request::Add(conf, c) => add::run(&conf, &c),
        Request::Del(conf, c) => {
            del::run(&conf, &c);
            Ok(String::new())
        }
        Request::Check(conf, c) => check::run(&conf, &c).map(|()| String::new()),
        Request::Status(conf) => status::run(&conf).map(|()| String::new()),
        Request::Gc(conf) => gc::run(&conf).map(|()| String::new()),
    }
}

/// VERSION needs no valid config: podman probes it with whatever it has.
pub fn version(stdin: &[u8]) -> String {
    let v = config::peek_version(stdin).unwrap_or(CniVersion::LATEST);
    json!({"cniVersion": v.as_str(), "supportedVersions": SUPPORTED_VERSIONS}).to_string()
}

/// The reference skel's gates: CHECK from 0.4.0, STATUS and GC from 1.1.0.
fn gate(cmd: Command, v: CniVersion) -> Result<(), CniError> {
    let needs = match cmd {
        Command::Check => CniVersion::V0_4_0,
        Command::Status | Command::Gc => CniVersion::V1_1_0,
        _ => return Ok(()),
    };
    if v < needs {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("config version {v} does not allow {cmd:?}; it needs {needs} or later"),
        ));
    }
    Ok(())
}

/// Opens `stateDir` under a shared lock, so agent recovery never sees half an ADD.
fn open_store(conf: &NetConf) -> Result<(Store, StoreLock), CniError> {
    let store = Store::new(&conf.state_dir);
    let io =
        |e: edgeway_common::store::StoreError| CniError::new(ErrorCode::StateStore, e.to_string());
    store.ensure_dirs().map_err(io)?;
    let lock = store.lock_shared().map_err(io)?;
    Ok((store, lock))
}

/// stderr reaches the runtime's log; nothing the runtime parses goes there.
fn warn(msg: impl std::fmt::Display) {
    eprintln!("edgeway: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_follow_the_skel() {
        for v in CniVersion::ALL {
            assert_eq!(gate(Command::Check, v).is_ok(), v >= CniVersion::V0_4_0);
            assert_eq!(gate(Command::Status, v).is_ok(), v >= CniVersion::V1_1_0);
            assert_eq!(gate(Command::Gc, v).is_ok(), v >= CniVersion::V1_1_0);
            assert!(gate(Command::Add, v).is_ok());
            assert!(gate(Command::Del, v).is_ok());
        }
        assert_eq!(
            gate(Command::Check, CniVersion::V0_3_1).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );
    }

    #[test]
    fn version_lists_exactly_the_supported_strings() {
        let v: serde_json::Value = serde_json::from_str(&version(b"")).unwrap();
        assert_eq!(
            v["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        assert_eq!(v["cniVersion"], "1.1.0");
        let v: serde_json::Value =
            serde_json::from_str(&version(br#"{"cniVersion":"0.3.1"}"#)).unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
    }
}
