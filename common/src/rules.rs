//! The source-policy rules edgeway installs in the host namespace:
//! `from <pod ip>/32|/128 lookup <table> priority <priority> proto edgeway`.
//! The rule protocol marks them as edgeway's, so listing and cleanup never touch
//! anyone else's rules.
//!
//! This is a small synchronous netlink client over one blocking `NETLINK_ROUTE` socket.
//! The CNI plugin runs once per pod start, and an async runtime (tokio plus rtnetlink's
//! connection driver) cost it more to start than the two or three requests it sends
//! take; a rule request is answered by the kernel before `send` returns anyway.
//! Only rule messages are encoded and decoded (with `netlink-packet-route`'s rule types),
//! so the rest of that crate's parsers stay out of the plugin binary.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{Emitable, Parseable, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_core::{NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_REQUEST};
use netlink_packet_route::route::RouteProtocol;
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::AddressFamily;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};
use nix::errno::Errno;
use nix::libc;

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

impl PodRule {
    /// The rules of one attachment: one per address, all to the same table and priority.
    pub fn for_ips(ips: &[IpAddr], table: u32, priority: u32) -> Vec<PodRule> {
        ips.iter()
            .map(|&ip| PodRule {
                ip,
                table,
                priority,
            })
            .collect()
    }
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
        source: io::Error,
    },
    #[error("cannot delete rule from {ip} lookup {table}: {source}")]
    Delete {
        ip: IpAddr,
        table: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot list rules: {0}")]
    List(#[source] io::Error),
}

/// The errno of a failed request: the kernel's answer, or the socket call's own error.
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

const NLMSG_HDRLEN: usize = 16;
/// A rule dump datagram is at most a page or two; this is plenty, and checked.
const RECV_BUF: usize = 64 * 1024;

/// A blocking `NETLINK_ROUTE` socket in the current network namespace, for rule requests.
/// Requests are sent and answered one at a time.
pub struct RuleSocket {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl RuleSocket {
    /// Opens the socket in the caller's current network namespace.
    pub fn open() -> Result<Self, RuleError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(RuleError::Socket)?;
        socket.bind_auto().map_err(RuleError::Socket)?;
        Ok(RuleSocket {
            socket,
            // Any start works: replies are matched by sequence number on this socket only.
            seq: std::process::id(),
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends one rule request and returns its sequence number.
    fn send(&mut self, kind: u16, flags: u16, msg: &RuleMessage) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let packet = encode(kind, flags, self.seq, msg);
        let kernel = SocketAddr::new(0, 0);
        let sent = self.socket.send_to(&packet, &kernel, 0)?;
        if sent != packet.len() {
            return Err(io::Error::other("short netlink send"));
        }
        Ok(self.seq)
    }

    /// Receives one datagram into `self.buf`.
    fn recv(&mut self) -> io::Result<()> {
        self.buf.clear();
        let n = loop {
            match self.socket.recv(&mut self.buf, libc::MSG_TRUNC) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        if n > self.buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("netlink answer of {n} bytes does not fit {RECV_BUF}"),
            ));
        }
        Ok(())
    }

    /// Sends a request with `NLM_F_ACK` and waits for the kernel's answer to it.
    fn request_ack(&mut self, kind: u16, flags: u16, msg: &RuleMessage) -> io::Result<()> {
        let seq = self.send(kind, NLM_F_REQUEST | NLM_F_ACK | flags, msg)?;
        loop {
            self.recv()?;
            for m in Messages::new(&self.buf) {
                let m = m?;
                if m.seq != seq {
                    continue; // a late answer to an earlier request
                }
                if m.kind == NLMSG_ERROR {
                    return ack_result(m.payload);
                }
            }
        }
    }

    /// Dumps the rules of one address family and hands each to `each`.
    fn dump(&mut self, family: AddressFamily, mut each: impl FnMut(RuleMessage)) -> io::Result<()> {
        let mut msg = RuleMessage::default();
        msg.header.family = family;
        let seq = self.send(libc::RTM_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, &msg)?;
        loop {
            self.recv()?;
            for m in Messages::new(&self.buf) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_DONE => {
                        // The payload is an errno when the dump itself failed.
                        return match read_i32(m.payload) {
                            Some(e) if e < 0 => Err(io::Error::from_raw_os_error(-e)),
                            _ => Ok(()),
                        };
                    }
                    NLMSG_ERROR => ack_result(m.payload)?,
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    libc::RTM_NEWRULE => {
                        let rule = RuleMessage::parse(m.payload).map_err(|e| {
                            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
                        })?;
                        each(rule);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// One netlink message inside a datagram.
struct Message<'a> {
    kind: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages in one datagram, in order.
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(datagram: &'a [u8]) -> Self {
        Messages { rest: datagram }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = io::Result<Message<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let bad = |what: &str| {
            Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed netlink answer: {what}"),
            )))
        };
        if self.rest.len() < NLMSG_HDRLEN {
            self.rest = &[];
            return bad("truncated header");
        }
        let h = self.rest;
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len < NLMSG_HDRLEN || len > h.len() {
            self.rest = &[];
            return bad("bad message length");
        }
        let msg = Message {
            kind: u16::from_ne_bytes([h[4], h[5]]),
            seq: u32::from_ne_bytes([h[8], h[9], h[10], h[11]]),
            payload: &h[NLMSG_HDRLEN..len],
        };
        let next = (len + 3) & !3;
        self.rest = h.get(next..).unwrap_or(&[]);
        Some(Ok(msg))
    }
}

fn read_i32(b: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// An `NLMSG_ERROR` payload: errno 0 is the ACK.
fn ack_result(payload: &[u8]) -> io::Result<()> {
    match read_i32(payload) {
        Some(0) => Ok(()),
        Some(e) => Err(io::Error::from_raw_os_error(e.saturating_abs())),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed netlink answer: short error message",
        )),
    }
}

/// A netlink header followed by the rule message.
fn encode(kind: u16, flags: u16, seq: u32, msg: &RuleMessage) -> Vec<u8> {
    let len = NLMSG_HDRLEN + msg.buffer_len();
    let mut packet = vec![0u8; len];
    packet[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    packet[4..6].copy_from_slice(&kind.to_ne_bytes());
    packet[6..8].copy_from_slice(&flags.to_ne_bytes());
    packet[8..12].copy_from_slice(&seq.to_ne_bytes());
    // Port 0 in a request: the kernel fills in the sender.
    msg.emit(&mut packet[NLMSG_HDRLEN..]);
    packet
}

fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// The message that names exactly this rule, for adding it and for deleting it.
fn rule_message(rule: PodRule) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = match rule.ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.src_len = host_prefix(rule.ip);
    msg.header.action = RuleAction::ToTable;
    // Tables above 255 exist only as FRA_TABLE; the header field then stays RT_TABLE_UNSPEC.
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
    msg
}

/// Adds the rule. An identical rule already there counts as success, so a repeated ADD is safe.
pub fn add(sock: &mut RuleSocket, rule: PodRule) -> Result<(), RuleError> {
    // NLM_F_EXCL: without it the kernel would add a second, identical rule.
    match sock.request_ack(
        libc::RTM_NEWRULE,
        NLM_F_CREATE | NLM_F_EXCL,
        &rule_message(rule),
    ) {
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
pub fn delete(sock: &mut RuleSocket, rule: PodRule) -> Result<(), RuleError> {
    match sock.request_ack(libc::RTM_DELRULE, 0, &rule_message(rule)) {
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
pub fn list(sock: &mut RuleSocket) -> Result<Vec<PodRule>, RuleError> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        sock.dump(family, |msg| out.extend(parse(&msg)))
            .map_err(RuleError::List)?;
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
            RuleAttribute::Protocol(p) => ours = u8::from(*p) == EDGEWAY_PROTOCOL,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4() -> PodRule {
        PodRule {
            ip: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 5)),
            table: 7332,
            priority: 7332,
        }
    }

    fn v6() -> PodRule {
        PodRule {
            ip: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5)),
            table: 100,
            priority: 90,
        }
    }

    #[test]
    fn encoded_rule_parses_back() {
        for rule in [v4(), v6()] {
            let packet = encode(
                libc::RTM_NEWRULE,
                NLM_F_REQUEST | NLM_F_ACK,
                42,
                &rule_message(rule),
            );
            let msgs: Vec<_> = Messages::new(&packet).collect::<Result<_, _>>().unwrap();
            assert_eq!(msgs.len(), 1);
            assert_eq!(msgs[0].kind, libc::RTM_NEWRULE);
            assert_eq!(msgs[0].seq, 42);
            let flags = u16::from_ne_bytes([packet[6], packet[7]]);
            assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
            let msg = RuleMessage::parse(msgs[0].payload).unwrap();
            assert_eq!(parse(&msg), Some(rule));
        }
    }

    #[test]
    fn header_table_only_below_256() {
        let low = rule_message(v6());
        assert_eq!(low.header.table, 100);
        assert_eq!(low.header.action, RuleAction::ToTable);
        assert_eq!(low.header.src_len, 128);
        let high = rule_message(v4());
        assert_eq!(high.header.table, 0);
        assert!(high.attributes.contains(&RuleAttribute::Table(7332)));
        assert_eq!(high.header.src_len, 32);
    }

    #[test]
    fn parse_skips_foreign_and_prefix_rules() {
        let mut foreign = rule_message(v4());
        foreign
            .attributes
            .retain(|a| !matches!(a, RuleAttribute::Protocol(_)));
        foreign
            .attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Boot));
        assert_eq!(parse(&foreign), None);

        let mut subnet = rule_message(v4());
        subnet.header.src_len = 24;
        assert_eq!(parse(&subnet), None);

        let mut no_source = rule_message(v4());
        no_source
            .attributes
            .retain(|a| !matches!(a, RuleAttribute::Source(_)));
        assert_eq!(parse(&no_source), None);
    }

    fn nlmsg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn datagram_splits_into_messages_and_acks() {
        let mut d = nlmsg(NLMSG_ERROR, 7, &0i32.to_ne_bytes());
        d.extend(nlmsg(NLMSG_ERROR, 8, &(-17i32).to_ne_bytes()));
        d.extend(nlmsg(NLMSG_DONE, 9, &[1, 2, 3])); // padded to 4
        let msgs: Vec<_> = Messages::new(&d).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.iter().map(|m| m.seq).collect::<Vec<_>>(), [7, 8, 9]);
        assert!(ack_result(msgs[0].payload).is_ok());
        assert_eq!(
            errno(&ack_result(msgs[1].payload).unwrap_err()),
            Some(Errno::EEXIST as i32)
        );
        assert_eq!(msgs[2].payload, &[1, 2, 3]);
        assert!(ack_result(&[0, 0]).is_err());
    }

    #[test]
    fn malformed_datagrams_are_errors() {
        assert!(Messages::new(&[1, 2, 3]).next().unwrap().is_err());
        let mut m = nlmsg(NLMSG_ERROR, 1, &0i32.to_ne_bytes());
        m[0] = 200; // longer than the datagram
        assert!(Messages::new(&m).next().unwrap().is_err());
        m[0] = 4; // shorter than a header
        let mut it = Messages::new(&m);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }

    /// The real kernel, in a private network namespace of this test's own thread.
    #[test]
    fn kernel_round_trip_in_a_private_netns() {
        let t = std::thread::spawn(|| {
            match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                Ok(()) => {}
                // Only an unprivileged run may skip; as root (CI) this must really run.
                Err(e) if !nix::unistd::Uid::effective().is_root() => {
                    eprintln!("skipped: cannot unshare a network namespace without root: {e}");
                    return;
                }
                Err(e) => panic!("cannot unshare a network namespace as root: {e}"),
            }
            let mut s = RuleSocket::open().unwrap();
            assert!(list(&mut s).unwrap().is_empty());
            for rule in [v4(), v6()] {
                add(&mut s, rule).unwrap();
                add(&mut s, rule).unwrap(); // EEXIST is success, and no duplicate appears
            }
            let mut got = list(&mut s).unwrap();
            got.sort_by_key(|r| r.ip);
            assert_eq!(got, [v4(), v6()]);
            for rule in [v4(), v6()] {
                delete(&mut s, rule).unwrap();
                delete(&mut s, rule).unwrap(); // ENOENT is success
            }
            assert!(list(&mut s).unwrap().is_empty());

            // A dump spanning many datagrams, with someone else's rule in the middle.
            let mut foreign = rule_message(v4());
            foreign
                .attributes
                .retain(|a| !matches!(a, RuleAttribute::Protocol(_)));
            foreign
                .attributes
                .push(RuleAttribute::Protocol(RouteProtocol::Static));
            s.request_ack(libc::RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, &foreign)
                .unwrap();
            let many: Vec<PodRule> = (0..1000u32)
                .map(|n| PodRule {
                    ip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)),
                    table: 7332,
                    priority: 7332,
                })
                .collect();
            for rule in &many {
                add(&mut s, *rule).unwrap();
            }
            let mut got = list(&mut s).unwrap();
            got.sort_by_key(|r| r.ip);
            assert_eq!(got, many);
        });
        t.join().unwrap();
    }
}
