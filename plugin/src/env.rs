//! The CNI_* environment variables.

use edgeway_common::api::{validate_container_id, validate_ifname, AttachmentKey, PodRef};
use edgeway_common::cni::{CniError, ErrorCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

/// Per-container variables, present for ADD, DEL and CHECK.
#[derive(Debug, Clone)]
pub struct ContainerEnv {
    pub container_id: String,
    pub ifname: String,
    /// Empty on containerd's second DEL.
    pub netns: String,
    pub pod: PodRef,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidEnvironment, msg)
}

impl ContainerEnv {
    pub fn key(&self) -> AttachmentKey {
        AttachmentKey {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }
}

pub fn command(get: &dyn Fn(&str) -> Option<String>) -> Result<Command, CniError> {
    match get("CNI_COMMAND").as_deref() {
        Some("ADD") => Ok(Command::Add),
        Some("DEL") => Ok(Command::Del),
        Some("CHECK") => Ok(Command::Check),
        Some("VERSION") => Ok(Command::Version),
        Some("STATUS") => Ok(Command::Status),
        Some("GC") => Ok(Command::Gc),
        Some(other) => Err(invalid(format!("unknown CNI_COMMAND {other:?}"))),
        None => Err(invalid("CNI_COMMAND is not set")),
    }
}

pub fn container(
    cmd: Command,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<ContainerEnv, CniError> {
    let required = |name: &str| {
        get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid(format!("{name} is not set")))
    };
    let container_id = required("CNI_CONTAINERID")?;
    validate_container_id(&container_id).map_err(|e| invalid(format!("CNI_CONTAINERID: {e}")))?;
    let ifname = required("CNI_IFNAME")?;
    validate_ifname(&ifname).map_err(|e| invalid(format!("CNI_IFNAME: {e}")))?;
    let netns = if cmd == Command::Del {
        get("CNI_NETNS").unwrap_or_default()
    } else {
        required("CNI_NETNS")?
    };
    let pod = pod_from_args(&get("CNI_ARGS").unwrap_or_default())?;
    Ok(ContainerEnv {
        container_id,
        ifname,
        netns,
        pod,
    })
}

/// `CNI_ARGS` is `KEY=VALUE;KEY=VALUE`; the pod comes from `K8S_POD_*`.
fn pod_from_args(args: &str) -> Result<PodRef, CniError> {
    let mut pod = PodRef::default();
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| invalid(format!("CNI_ARGS: {pair:?} is not KEY=VALUE")))?;
        let v = Some(v.to_string()).filter(|v| !v.is_empty());
        match k {
            "K8S_POD_NAMESPACE" => pod.namespace = v,
            "K8S_POD_NAME" => pod.name = v,
            "K8S_POD_UID" => pod.uid = v,
            _ => {}
        }
    }
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn commands() {
        assert_eq!(
            command(&env(&[("CNI_COMMAND", "GC")])).unwrap(),
            Command::Gc
        );
        assert_eq!(
            command(&env(&[])).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
        assert_eq!(
            command(&env(&[("CNI_COMMAND", "add")])).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
    }

    #[test]
    fn container_vars() {
        let ok = env(&[
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u-1;K8S_POD_INFRA_CONTAINER_ID=abc"),
        ]);
        let c = container(Command::Add, &ok).unwrap();
        assert_eq!(c.pod.namespace.as_deref(), Some("default"));
        assert_eq!(c.pod.name.as_deref(), Some("web-0"));
        assert_eq!(c.pod.uid.as_deref(), Some("u-1"));

        let del = env(&[
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", ""),
        ]);
        assert_eq!(container(Command::Del, &del).unwrap().netns, "");
        assert!(container(Command::Add, &del).is_err());

        for bad in [
            env(&[("CNI_IFNAME", "eth0"), ("CNI_NETNS", "/n")]),
            env(&[
                ("CNI_CONTAINERID", "a/b"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/n"),
            ]),
            env(&[
                ("CNI_CONTAINERID", "a"),
                ("CNI_IFNAME", "bad/if"),
                ("CNI_NETNS", "/n"),
            ]),
            env(&[
                ("CNI_CONTAINERID", "a"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/n"),
                ("CNI_ARGS", "novalue"),
            ]),
        ] {
            assert_eq!(
                container(Command::Add, &bad).unwrap_err().code,
                ErrorCode::InvalidEnvironment
            );
        }
    }
}
