//! ADD: rules, then the record, then the agent. A failing step undoes the earlier ones.

use std::net::IpAddr;

use edgeway_common::api::Attachment;
use edgeway_common::cni::result::{convert_result, sandbox_ips};
use edgeway_common::cni::{CniError, ErrorCode};
use edgeway_common::rules::PodRule;
use edgeway_common::rules::RuleSocket;

use super::{open_store, rules, warn};
use crate::agent_client::{AgentClient, AgentError};
use crate::config::{NetConf, OnAgentDown};
use crate::env::ContainerEnv;

/// What ADD prints and the addresses it steers, from `prevResult` alone. It has no side
/// effects, so the fuzz target runs it too.
pub fn prepare(conf: &NetConf, c: &ContainerEnv) -> Result<(String, Vec<IpAddr>), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "no prevResult: edgeway must be chained after an IP-assigning plugin \
             (bridge, ptp, flannel, calico, ...) in a .conflist",
        )
    })?;
    let result = convert_result(prev, conf.cni_version)?;
    let ips = sandbox_ips(&result, &c.ifname)?;
    Ok((result.to_string(), ips))
}

pub fn run(conf: &NetConf, c: &ContainerEnv) -> Result<String, CniError> {
    let (output, ips) = prepare(conf, c)?;
    if ips.is_empty() {
        // Nothing to steer; the pod keeps host-CNI networking, which is never worth a failed ADD.
        warn(format!(
            "prevResult has no address for {}; nothing to do for {}",
            c.ifname, c.container_id
        ));
        return Ok(output);
    }

    // Connected now, so the agent accepts while the rules and the record are being done.
    let client = AgentClient::new(&conf.agent_socket, conf.agent_timeout);
    if let Ok(c) = &client {
        c.connect_early();
    }
    // A state dir that cannot hold the record is handled like an agent that is down:
    // `continue` starts the pod on host-CNI networking alone (no record could back a rule),
    // `fail` refuses it.
    let state_fault = |e: CniError| match conf.on_agent_down {
        OnAgentDown::Continue => {
            warn(format!(
                "{}; {} starts with host-CNI networking only (onAgentDown is \"continue\")",
                e.msg, c.container_id
            ));
            Ok(output.clone())
        }
        OnAgentDown::Fail => Err(e.with_details("onAgentDown is \"fail\"")),
    };
    let (store, _lock) = match open_store(conf) {
        Ok(s) => s,
        Err(e) => return state_fault(e),
    };
    let mut sock = rules::connect()?;
    let wanted = PodRule::for_ips(&ips, conf.table, conf.rule_priority);
    let previous = store.read_record(&c.key()).ok().flatten();
    rules::install(&mut sock, &wanted)?;

    let attachment = Attachment {
        container_id: c.container_id.clone(),
        ifname: c.ifname.clone(),
        netns: c.netns.clone(),
        network: conf.name.clone(),
        ips,
        pod: c.pod.clone(),
        table: conf.table,
        priority: conf.rule_priority,
        generation: generation(),
        created_unix: edgeway_common::unix_now().as_secs(),
    };
    if let Err(e) = store.write_record(&attachment) {
        rules::remove(&mut sock, &wanted);
        return state_fault(CniError::new(ErrorCode::StateStore, e.to_string()));
    }

    let undo = |sock: &mut RuleSocket| {
        rules::remove(sock, &wanted);
        if let Err(e) = store.remove_record(&attachment.key()) {
            warn(format!("undo: {e}"));
        }
    };
    let registered = match client {
        Ok(client) => client.register(&attachment),
        Err(e) => Err(e),
    };
    match registered {
        Ok(()) => {}
        Err(AgentError::Down { .. }) if conf.on_agent_down == OnAgentDown::Continue => {
            // The record is on disk; the agent picks it up when it starts.
        }
        Err(e @ AgentError::Down { .. }) => {
            undo(&mut sock);
            return Err(CniError::new(ErrorCode::TryAgainLater, e.to_string())
                .with_details("onAgentDown is \"fail\""));
        }
        Err(e @ AgentError::Rejected { .. }) => {
            undo(&mut sock);
            return Err(CniError::new(ErrorCode::AgentRejected, e.to_string()));
        }
    }

    // A repeated ADD with new addresses leaves no rule behind for the old ones.
    if let Some(old) = previous {
        let stale: Vec<_> = old
            .ips
            .iter()
            .copied()
            .filter(|ip| !attachment.ips.contains(ip))
            .collect();
        rules::remove(
            &mut sock,
            &PodRule::for_ips(&stale, old.table, old.priority),
        );
    }
    Ok(output)
}

/// A fresh random generation tag, straight from the kernel: `rand::random` would seed a
/// ChaCha generator, whose SIMD detection (CPUID, which traps under a hypervisor) costs
/// more than the whole `getrandom` call.
fn generation() -> String {
    use rand::TryRngCore;
    let mut b = [0u8; 16];
    match rand::rngs::OsRng.try_fill_bytes(&mut b) {
        Ok(()) => format!("{:032x}", u128::from_ne_bytes(b)),
        Err(_) => format!("{:032x}", rand::random::<u128>()),
    }
}
