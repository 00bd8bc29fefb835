//! The source-policy rules edgeway installs in the host namespace:
//! `from <pod ip>/32|/128 lookup <table> priority <priority> proto edgeway`.
//! The rule protocol marks them as edgeway's, so listing and cleanup never touch
//! anyone else's rules.

use std::io;
use std::net::IpAddr;

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, IpVersion};

/// Protocol number stamped on every rule and route edgeway owns (`ip rule` shows `proto 237`).
/// It is unassigned in iproute2's `rt_protos`, and routing daemons use 186–192.
pub const EDGEWAY_PROTOCOL: u8 = 237;

/// One rule, as edgeway installs it for one pod address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PodRule {
    pub ip: IpAddr,
    pub table: u32,
    pub priority: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("cannot add rule from {ip} lookup {table}: {source}")]
    Add {
        ip: IpAddr,
        table: u32,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot delete rule from {ip} lookup {table}: {source}")]
    Delete {
        ip: IpAddr,
        table: u32,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot list rules: {0}")]
    List(#[source] rtnetlink::Error),
}

/// Opens a netlink connection in the current network namespace. Its driver runs on the
/// caller's tokio runtime, which must be current.
pub fn connect() -> Result<Handle, RuleError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(RuleError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The errno of a netlink error answer, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().raw_os_error(),
        _ => None,
    }
}

fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// Adds the rule. An identical rule already there counts as success, so a repeated ADD is safe.
pub async fn add(handle: &Handle, rule: PodRule) -> Result<(), RuleError> {
    let base = handle
        .rule()
        .add()
        .table_id(rule.table)
        .priority(rule.priority)
        .action(RuleAction::ToTable);
    let mark = RuleAttribute::Protocol(RouteProtocol::Other(EDGEWAY_PROTOCOL));
    let result = match rule.ip {
        IpAddr::V4(a) => {
            let mut r = base.v4().source_prefix(a, 32);
            r.message_mut().attributes.push(mark);
            r.execute().await
        }
        IpAddr::V6(a) => {
            let mut r = base.v6().source_prefix(a, 128);
            r.message_mut().attributes.push(mark);
            r.execute().await
        }
    };
    finish_add(result, rule)
}

fn finish_add(r: Result<(), rtnetlink::Error>, rule: PodRule) -> Result<(), RuleError> {
    match r {
        Err(e) if errno(&e) == Some(Errno::EEXIST as i32) => Ok(()),
        Err(source) => Err(RuleError::Add {
            ip: rule.ip,
            table: rule.table,
            source,
        }),
        Ok(()) => Ok(()),
    }
}

/// Deletes the rule. A rule that is already gone counts as success, so DEL can repeat.
pub async fn delete(handle: &Handle, rule: PodRule) -> Result<(), RuleError> {
    let mut msg = RuleMessage::default();
    msg.header.family = match rule.ip {
        IpAddr::V4(_) => rtnetlink::packet_route::AddressFamily::Inet,
        IpAddr::V6(_) => rtnetlink::packet_route::AddressFamily::Inet6,
    };
    msg.header.src_len = host_prefix(rule.ip);
    msg.header.action = RuleAction::ToTable;
    if rule.table < 256 {
        msg.header.table = rule.table as u8;
    }
    msg.attributes.push(RuleAttribute::Source(rule.ip));
    msg.attributes.push(RuleAttribute::Table(rule.table));
    msg.attributes.push(RuleAttribute::Priority(rule.priority));
    msg.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::Other(
            EDGEWAY_PROTOCOL,
        )));
    match handle.rule().del(msg).execute().await {
        Err(e) if errno(&e) == Some(Errno::ENOENT as i32) => Ok(()),
        Err(source) => Err(RuleError::Delete {
            ip: rule.ip,
            table: rule.table,
            source,
        }),
        Ok(()) => Ok(()),
    }
}

/// Every rule in this namespace that carries edgeway's protocol, IPv4 and IPv6.
pub async fn list(handle: &Handle) -> Result<Vec<PodRule>, RuleError> {
    let mut out = Vec::new();
    for family in [IpVersion::V4, IpVersion::V6] {
        let mut stream = handle.rule().get(family).execute();
        while let Some(msg) = stream.try_next().await.map_err(RuleError::List)? {
            if let Some(rule) = parse(&msg) {
                out.push(rule);
            }
        }
    }
    Ok(out)
}

fn parse(msg: &RuleMessage) -> Option<PodRule> {
    let mut ip = None;
    let mut table = u32::from(msg.header.table);
    let mut priority = 0;
    let mut ours = false;
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::Source(a) => ip = Some(*a),
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Protocol(RouteProtocol::Other(p)) => ours = *p == EDGEWAY_PROTOCOL,
            _ => {}
        }
    }
    let ip = ip?;
    (ours && msg.header.src_len == host_prefix(ip)).then_some(PodRule {
        ip,
        table,
        priority,
    })
}
