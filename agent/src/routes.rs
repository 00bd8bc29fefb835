//! edgeway's routing table: one route to the TUN for each remote pod across a LAN boundary.
//! Routes carry edgeway's protocol number, so nothing else in the table is ever touched.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use edgeway_common::rules::EDGEWAY_PROTOCOL;
use futures::{StreamExt, TryStreamExt};
use ipnetwork::IpNetwork;
use nix::errno::Errno;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot list routes in table {table}: {source}")]
    List {
        table: u32,
        source: rtnetlink::Error,
    },
    #[error("cannot add route {dst} to table {table}: {source}")]
    Add {
        dst: IpNetwork,
        table: u32,
        source: rtnetlink::Error,
    },
    #[error("cannot delete route {dst} from table {table}: {source}")]
    Delete {
        dst: IpNetwork,
        table: u32,
        source: rtnetlink::Error,
    },
    #[error("cannot watch routes: {0}")]
    Watch(std::io::Error),
}

/// Opens an rtnetlink connection in the current network namespace. Its driver runs on the
/// caller's tokio runtime, which must be current.
pub fn connect() -> std::io::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
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

/// What one reconcile changed, and what it could not.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub added: usize,
    pub removed: usize,
    pub failures: Vec<RouteError>,
}

/// What to add and what to remove to turn `actual` into `desired`.
pub fn diff(
    desired: &BTreeSet<IpNetwork>,
    actual: &BTreeSet<IpNetwork>,
) -> (Vec<IpNetwork>, Vec<IpNetwork>) {
    (
        desired.difference(actual).copied().collect(),
        actual.difference(desired).copied().collect(),
    )
}

/// A host route for one pod address.
pub fn host_route(ip: IpAddr) -> IpNetwork {
    IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("full-length prefix is valid")
}

#[derive(Clone)]
pub struct RouteTable {
    handle: Handle,
    table: u32,
    ifindex: u32,
}

impl RouteTable {
    pub fn new(handle: Handle, table: u32, ifindex: u32) -> Self {
        RouteTable {
            handle,
            table,
            ifindex,
        }
    }

    fn message(&self, dst: IpNetwork) -> RouteMessage {
        let proto = RouteProtocol::Other(EDGEWAY_PROTOCOL);
        match dst {
            IpNetwork::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(n.network(), n.prefix())
                .table_id(self.table)
                .output_interface(self.ifindex)
                .protocol(proto)
                .build(),
            IpNetwork::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(n.network(), n.prefix())
                .table_id(self.table)
                .output_interface(self.ifindex)
                .protocol(proto)
                .build(),
        }
    }

    /// edgeway's routes currently in the table, IPv4 and IPv6.
    pub async fn list(&self) -> Result<BTreeSet<IpNetwork>, RouteError> {
        let mut out = BTreeSet::new();
        let probes = [
            RouteMessageBuilder::<Ipv4Addr>::new()
                .table_id(self.table)
                .build(),
            RouteMessageBuilder::<Ipv6Addr>::new()
                .table_id(self.table)
                .build(),
        ];
        for probe in probes {
            let mut stream = self.handle.route().get(probe).execute();
            while let Some(msg) = stream.try_next().await.map_err(|source| RouteError::List {
                table: self.table,
                source,
            })? {
                if let Some(dst) = ours(&msg, self.table) {
                    out.insert(dst);
                }
            }
        }
        Ok(out)
    }

    pub async fn add(&self, dst: IpNetwork) -> Result<(), RouteError> {
        match self
            .handle
            .route()
            .add(self.message(dst))
            .replace()
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(Errno::EEXIST as i32) => Ok(()),
            Err(source) => Err(RouteError::Add {
                dst,
                table: self.table,
                source,
            }),
        }
    }

    pub async fn delete(&self, dst: IpNetwork) -> Result<(), RouteError> {
        match self.handle.route().del(self.message(dst)).execute().await {
            Ok(()) => Ok(()),
            Err(e)
                if errno(&e) == Some(Errno::ESRCH as i32)
                    || errno(&e) == Some(Errno::ENOENT as i32) =>
            {
                Ok(())
            }
            Err(source) => Err(RouteError::Delete {
                dst,
                table: self.table,
                source,
            }),
        }
    }

    /// Makes the table hold exactly `desired`; returns (added, removed).
    /// Deletes go first and one failing route never stops the others: a route that cannot
    /// be added (IPv6 off on the TUN, say) must not keep a deleted pod's route alive.
    pub async fn reconcile(&self, desired: &BTreeSet<IpNetwork>) -> Result<Reconciled, RouteError> {
        let actual = self.list().await?;
        let (add, del) = diff(desired, &actual);
        let mut done = Reconciled::default();
        for dst in &del {
            match self.delete(*dst).await {
                Ok(()) => done.removed += 1,
                Err(e) => done.failures.push(e),
            }
        }
        for dst in &add {
            match self.add(*dst).await {
                Ok(()) => done.added += 1,
                Err(e) => done.failures.push(e),
            }
        }
        Ok(done)
    }

    /// Removes every route edgeway owns in the table: at clean shutdown, and at start after a crash.
    pub async fn flush(&self) -> Result<usize, RouteError> {
        let done = self.reconcile(&BTreeSet::new()).await?;
        match done.failures.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(done.removed),
        }
    }
}

fn ours(msg: &RouteMessage, table: u32) -> Option<IpNetwork> {
    let mut msg_table = u32::from(msg.header.table);
    let mut dst = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => msg_table = *t,
            RouteAttribute::Destination(a) => {
                dst = match a {
                    rtnetlink::packet_route::route::RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
                    rtnetlink::packet_route::route::RouteAddress::Inet6(v6) => {
                        Some(IpAddr::V6(*v6))
                    }
                    _ => None,
                }
            }
            _ => {}
        }
    }
    if msg_table != table || msg.header.protocol != RouteProtocol::Other(EDGEWAY_PROTOCOL) {
        return None;
    }
    IpNetwork::new(dst?, msg.header.destination_prefix_length).ok()
}

/// Wakes `changed` whenever a route of ours leaves the table, whoever removed it, so the
/// reconciler puts it back (as Kilo does).
pub fn watch_deletions(table: u32, changed: Arc<Notify>) -> Result<(), RouteError> {
    let (conn, _handle, mut messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ])
    .map_err(RouteError::Watch)?;
    tokio::spawn(conn);
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(r)) = msg.payload {
                if ours(&r, table).is_some() {
                    changed.notify_one();
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_adds_and_removes() {
        let n = |s: &str| s.parse::<IpNetwork>().unwrap();
        let desired: BTreeSet<_> =
            [n("10.244.2.5/32"), n("10.244.2.6/32"), n("fd00::5/128")].into();
        let actual: BTreeSet<_> = [n("10.244.2.6/32"), n("10.244.9.9/32")].into();
        let (add, del) = diff(&desired, &actual);
        assert_eq!(add, vec![n("10.244.2.5/32"), n("fd00::5/128")]);
        assert_eq!(del, vec![n("10.244.9.9/32")]);
    }

    #[test]
    fn host_routes() {
        assert_eq!(host_route("10.244.0.1".parse().unwrap()).prefix(), 32);
        assert_eq!(host_route("fd00::1".parse().unwrap()).prefix(), 128);
    }
}
