//! The ip filter: lets clients in or refuses them by their address (or,
//! over a Unix socket, their process, user and group; over vsock, their
//! CID and port) before the handshake (nbdkit-ip-filter(1)).
//!
//! `allow=RULE[,...]`, `deny=RULE[,...]` (repeatable): a client matching
//! an allow rule is let in; else one matching a deny rule is refused;
//! else it is let in (nbdkit-ip-filter(1)'s order). Literal addresses,
//! CIDR ranges, all/any, anyipv4/anyipv6, anyunix (or unix), anyvsock
//! (or vsock), pid:N, uid:N, gid:N, vsock-cid:N, vsock-port:N.

use std::net::IpAddr;
use std::sync::Arc;

use nbd_core::server::backend::{ConnectionInfo, Error, Peer, Result};

use crate::chain::{Below, Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "ip",
    params: &[
        (
            "allow",
            "rules of the clients let in (comma-separated; repeatable)",
        ),
        (
            "deny",
            "rules of the clients refused (comma-separated; repeatable)",
        ),
        ("ip-rules", "not supported: use allow= and deny="),
    ],
    open: |p, _| Ok(Arc::new(Ip::open(p)?)),
};

#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    Any,
    AnyV4,
    AnyV6,
    AnyUnix,
    AnyVsock,
    Net(IpAddr, u8),
    Pid(i32),
    Uid(u32),
    Gid(u32),
    VsockCid(u32),
    VsockPort(u32),
}

fn num<T: std::str::FromStr>(kind: &str, v: &str) -> std::result::Result<T, String> {
    v.parse()
        .map_err(|_| format!("could not parse {kind}: {v}"))
}

pub fn parse_rule(r: &str) -> std::result::Result<Rule, String> {
    let r = r.trim();
    Ok(match r {
        "all" | "any" => Rule::Any,
        "allipv4" | "anyipv4" => Rule::AnyV4,
        "allipv6" | "anyipv6" => Rule::AnyV6,
        "allunix" | "anyunix" | "unix" => Rule::AnyUnix,
        "allvsock" | "anyvsock" | "vsock" => Rule::AnyVsock,
        _ => {
            if let Some(v) = r.strip_prefix("pid:") {
                Rule::Pid(num("pid", v)?)
            } else if let Some(v) = r.strip_prefix("uid:") {
                Rule::Uid(num("uid", v)?)
            } else if let Some(v) = r.strip_prefix("gid:") {
                Rule::Gid(num("gid", v)?)
            } else if let Some(v) = r.strip_prefix("vsock-cid:") {
                Rule::VsockCid(num("vsock CID", v)?)
            } else if let Some(v) = r.strip_prefix("vsock-port:") {
                Rule::VsockPort(num("vsock port", v)?)
            } else if r.starts_with("security:") {
                return Err(format!(
                    "{r}: security labels are not supported by this nbdkit"
                ));
            } else {
                let (a, bits) = match r.split_once('/') {
                    Some((a, b)) => (a, Some(b)),
                    None => (r, None),
                };
                let addr: IpAddr = a
                    .parse()
                    .map_err(|_| format!("could not parse IP address or rule: {r}"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let bits = match bits {
                    None => max,
                    Some(b) => match b.parse::<u8>() {
                        Ok(n) if n <= max => n,
                        _ => return Err(format!("bad prefix length in {r} (0 to {max})")),
                    },
                };
                Rule::Net(addr, bits)
            }
        }
    })
}

fn in_net(a: IpAddr, net: IpAddr, bits: u8) -> bool {
    // An IPv4-mapped IPv6 peer (::ffff:a.b.c.d) matches IPv4 rules.
    let a = match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(a),
        v4 => v4,
    };
    match (a, net) {
        (IpAddr::V4(x), IpAddr::V4(n)) => {
            let m = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(x) & m == u32::from(n) & m
        }
        (IpAddr::V6(x), IpAddr::V6(n)) => {
            let m = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(x) & m == u128::from(n) & m
        }
        _ => false,
    }
}

pub fn matches(rule: &Rule, peer: &Peer) -> bool {
    match (rule, peer) {
        (Rule::Any, _) => true,
        (Rule::AnyV4, Peer::Tcp(a)) => {
            a.is_ipv4() || matches!(a.ip(), IpAddr::V6(v) if v.to_ipv4_mapped().is_some())
        }
        (Rule::AnyV6, Peer::Tcp(a)) => {
            matches!(a.ip(), IpAddr::V6(v) if v.to_ipv4_mapped().is_none())
        }
        (Rule::AnyUnix, Peer::Unix { .. }) => true,
        (Rule::AnyVsock, Peer::Vsock { .. }) => true,
        (Rule::Net(n, b), Peer::Tcp(a)) => in_net(a.ip(), *n, *b),
        (Rule::Pid(p), Peer::Unix { pid: Some(x), .. }) => p == x,
        (Rule::Uid(u), Peer::Unix { uid: Some(x), .. }) => u == x,
        (Rule::Gid(g), Peer::Unix { gid: Some(x), .. }) => g == x,
        (Rule::VsockCid(c), Peer::Vsock { cid, .. }) => c == cid,
        (Rule::VsockPort(p), Peer::Vsock { port, .. }) => p == port,
        _ => false,
    }
}

/// The rules of the values of `key` (each a comma-separated list).
fn parse_rules(
    p: &Params,
    key: &str,
    values: Vec<String>,
) -> std::result::Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for v in values {
        for r in v.split(',').filter(|r| !r.trim().is_empty()) {
            rules.push(parse_rule(r).map_err(|e| p.err(format!("{key}: {e}")))?);
        }
    }
    Ok(rules)
}

pub struct Ip {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

impl Ip {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let allow = p.take_all("allow");
        let allow = parse_rules(p, "allow", allow)?;
        let deny = p.take_all("deny");
        let deny = parse_rules(p, "deny", deny)?;
        if let Some(r) = p.take("ip-rules") {
            return Err(p.err(format!("ip-rules={r}: not supported; use allow= and deny=")));
        }
        Ok(Ip { allow, deny })
    }

    pub fn permits(&self, peer: &Peer) -> bool {
        if self.allow.iter().any(|r| matches(r, peer)) {
            return true;
        }
        !self.deny.iter().any(|r| matches(r, peer))
    }
}

impl Filter for Ip {
    fn preconnect(&self, next: &Below<'_>, info: &ConnectionInfo) -> Result<()> {
        if !self.permits(&info.peer) {
            return Err(Error::new(
                libc::EPERM,
                format!("ip: client not permitted: {:?}", info.peer),
            ));
        }
        next.preconnect(info)
    }

    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for Ip {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use crate::plugins::null::Null;

    fn ip(allow: &str, deny: &str) -> Ip {
        let mut pairs = vec![];
        if !allow.is_empty() {
            pairs.push(("allow".to_string(), allow.to_string()));
        }
        if !deny.is_empty() {
            pairs.push(("deny".to_string(), deny.to_string()));
        }
        let mut p = Params::new("ip", pairs);
        Ip::open(&mut p).unwrap()
    }

    fn tcp(s: &str) -> Peer {
        Peer::Tcp(s.parse().unwrap())
    }
    fn unix(uid: u32, gid: u32) -> Peer {
        Peer::Unix {
            pid: Some(1),
            uid: Some(uid),
            gid: Some(gid),
        }
    }

    #[test]
    fn ip_rules() {
        let f = ip("127.0.0.1,::1", "all");
        assert!(f.permits(&tcp("127.0.0.1:5")));
        assert!(f.permits(&tcp("[::1]:5")));
        assert!(f.permits(&tcp("[::ffff:127.0.0.1]:5")));
        assert!(!f.permits(&tcp("127.0.0.2:5")));
        assert!(!f.permits(&unix(0, 0)));
        let f = ip("", "8.0.0.0/8");
        assert!(!f.permits(&tcp("8.1.2.3:1")));
        assert!(f.permits(&tcp("9.1.2.3:1")));
        let f = ip("uid:1000", "all");
        assert!(f.permits(&unix(1000, 5)));
        assert!(!f.permits(&unix(0, 5)));
        let f = ip("gid:5,anyipv6", "anyunix,anyipv4");
        assert!(f.permits(&unix(0, 5)));
        assert!(!f.permits(&unix(0, 6)));
        assert!(f.permits(&tcp("[2001:db8::1]:1")));
        assert!(!f.permits(&tcp("1.2.3.4:1")));
        let f = ip("vsock-cid:3", "vsock");
        assert!(f.permits(&Peer::Vsock { cid: 3, port: 1 }));
        assert!(!f.permits(&Peer::Vsock { cid: 4, port: 1 }));
        let f = ip("2001:db8::/32", "all");
        assert!(f.permits(&tcp("[2001:db8:1::5]:1")));
        assert!(!f.permits(&tcp("[2001:db9::5]:1")));
        assert!(parse_rule("1.2.3.4/33").is_err());
        assert!(parse_rule("bogus").is_err());
        assert!(parse_rule("uid:x").is_err());
    }

    #[test]
    fn preconnect_refuses_through_the_chain() {
        let chain = Chain::new(Arc::new(Null::new(0)), vec![Arc::new(ip("", "anyunix"))]);
        let info = |peer| ConnectionInfo {
            id: 1,
            peer,
            export_name: vec![],
            readonly: false,
            tls: false,
        };
        assert_eq!(
            chain.preconnect(&info(unix(0, 0))).unwrap_err().errno,
            libc::EPERM
        );
        assert!(chain.preconnect(&info(tcp("1.2.3.4:1"))).is_ok());
    }
}
