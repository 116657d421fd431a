//! Filters that act on connections: limit, exitlast, exitwhen, ip.
//! They work through the connection hooks of [`Backend`]
//! (`preconnect`, `open_connection`, `close_connection`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Peer, Result};

use super::super::{shutdown, Params};
use super::flags::lend_through;
use super::parse_duration;

// ---- limit ----

/// `limit=N` (default 1; 0 means no limit): at most N clients at once;
/// one more is refused when it opens the export.
pub struct Limit {
    inner: Arc<dyn Backend>,
    limit: u64,
    count: AtomicU64,
}

impl Limit {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let limit = p
            .take_with("limit", |v| {
                v.parse::<u64>()
                    .map_err(|_| format!("could not parse number: {v}"))
            })?
            .unwrap_or(1);
        Ok(Limit {
            inner,
            limit,
            count: AtomicU64::new(0),
        })
    }
}

impl Backend for Limit {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    lend_through!();
    fn open_connection(&self, info: &ConnectionInfo) -> Result<()> {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        if self.limit > 0 && n >= self.limit {
            self.count.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::new(
                libc::EBUSY,
                format!(
                    "limit: too many clients connected, connection rejected (limit={})",
                    self.limit
                ),
            ));
        }
        if let Err(e) = self.inner.open_connection(info) {
            self.count.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }
    fn close_connection(&self, info: &ConnectionInfo) {
        self.inner.close_connection(info);
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

// ---- exitlast ----

/// Asks the server to exit (see [`shutdown`]) when the last client
/// disconnects.
pub struct ExitLast {
    inner: Arc<dyn Backend>,
    count: AtomicU64,
}

impl ExitLast {
    pub fn new(inner: Arc<dyn Backend>) -> ExitLast {
        ExitLast {
            inner,
            count: AtomicU64::new(0),
        }
    }
}

impl Backend for ExitLast {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    lend_through!();
    fn open_connection(&self, info: &ConnectionInfo) -> Result<()> {
        self.inner.open_connection(info)?;
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn close_connection(&self, info: &ConnectionInfo) {
        self.inner.close_connection(info);
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            shutdown::request();
        }
    }
}

// ---- exitwhen ----

#[derive(Debug, Clone)]
enum Event {
    Created(PathBuf),
    Deleted(PathBuf),
    PipeClosed(i32),
    ProcessExits(i32),
    Script(String),
}

/// `exit-when-file-created=`, `exit-when-file-deleted=`,
/// `exit-when-pipe-closed=FD`, `exit-when-process-exits=PID`,
/// `exit-when-script=SCRIPT` (exit status 88 means "exit"), checked every
/// `exit-when-poll=SECS` (default 60, fractions allowed). When an event
/// happens the server exits at once if no client is connected, else new
/// clients are refused and it exits when the last one goes.
pub struct ExitWhen {
    inner: Arc<dyn Backend>,
    state: Arc<ExitState>,
}

struct ExitState {
    events: Vec<Event>,
    poll: Duration,
    fired: AtomicBool,
    count: AtomicU64,
    /// The process the poller runs in (a fork loses threads).
    poller_pid: AtomicI32,
}

impl ExitState {
    fn check(&self) -> bool {
        self.events.iter().any(|e| match e {
            Event::Created(p) => p.exists(),
            Event::Deleted(p) => !p.exists(),
            Event::PipeClosed(fd) => {
                let mut pfd = libc::pollfd {
                    fd: *fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll of one descriptor with no wait.
                let r = unsafe { libc::poll(&mut pfd, 1, 0) };
                r > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
            }
            // SAFETY: kill with signal 0 only checks the process exists.
            Event::ProcessExits(pid) => (unsafe { libc::kill(*pid, 0) }) != 0,
            Event::Script(s) => std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(s)
                .status()
                .map(|st| st.code() == Some(88))
                .unwrap_or(false),
        })
    }

    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        if self.count.load(Ordering::SeqCst) == 0 {
            shutdown::request();
        }
    }

    fn ensure_poller(self: &Arc<Self>) {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        if self.poller_pid.swap(me, Ordering::SeqCst) == me {
            return;
        }
        let st = Arc::clone(self);
        std::thread::spawn(move || loop {
            if st.check() {
                st.fire();
                return;
            }
            std::thread::sleep(st.poll);
        });
    }
}

impl ExitWhen {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let mut events = Vec::new();
        for v in p.take_all("exit-when-file-created") {
            events.push(Event::Created(v.into()));
        }
        for v in p.take_all("exit-when-file-deleted") {
            events.push(Event::Deleted(v.into()));
        }
        for v in p.take_all("exit-when-pipe-closed") {
            events.push(Event::PipeClosed(
                v.parse()
                    .map_err(|_| p.err(format!("bad file descriptor: {v}")))?,
            ));
        }
        for v in p.take_all("exit-when-process-exits") {
            events.push(Event::ProcessExits(
                v.parse()
                    .map_err(|_| p.err(format!("bad process ID: {v}")))?,
            ));
        }
        for v in p.take_all("exit-when-script") {
            events.push(Event::Script(v));
        }
        let poll = p
            .take_with("exit-when-poll", parse_duration)?
            .unwrap_or(Duration::from_secs(60));
        if poll.is_zero() {
            return Err(p.err("exit-when-poll must be greater than 0"));
        }
        let state = Arc::new(ExitState {
            events,
            poll,
            fired: AtomicBool::new(false),
            count: AtomicU64::new(0),
            poller_pid: AtomicI32::new(0),
        });
        if !state.events.is_empty() {
            state.ensure_poller();
        }
        Ok(ExitWhen { inner, state })
    }
}

impl Backend for ExitWhen {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    lend_through!();
    fn preconnect(&self, peer: &Peer) -> Result<()> {
        if !self.state.events.is_empty() {
            self.state.ensure_poller();
        }
        self.inner.preconnect(peer)
    }
    fn open_connection(&self, info: &ConnectionInfo) -> Result<()> {
        if self.state.fired.load(Ordering::SeqCst) {
            return Err(Error::new(
                libc::ESHUTDOWN,
                "exitwhen: exit condition met, refusing new clients",
            ));
        }
        self.inner.open_connection(info)?;
        self.state.count.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn close_connection(&self, info: &ConnectionInfo) {
        self.inner.close_connection(info);
        if self.state.count.fetch_sub(1, Ordering::SeqCst) == 1
            && self.state.fired.load(Ordering::SeqCst)
        {
            shutdown::request();
        }
    }
}

// ---- ip ----

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

/// `allow=RULE[,...]`, `deny=RULE[,...]` (repeatable): a client matching
/// an allow rule is let in; else one matching a deny rule is refused;
/// else it is let in (nbdkit-ip-filter(1)'s order). Literal addresses,
/// CIDR ranges, all/any, anyipv4/anyipv6, anyunix (or unix), anyvsock
/// (or vsock), pid:N, uid:N, gid:N, vsock-cid:N, vsock-port:N.
pub struct Ip {
    inner: Arc<dyn Backend>,
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

impl Ip {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let mut lists = [Vec::new(), Vec::new()];
        for (i, k) in ["allow", "deny"].iter().enumerate() {
            for v in p.take_all(k) {
                for r in v.split(',').filter(|r| !r.trim().is_empty()) {
                    lists[i].push(parse_rule(r).map_err(|e| p.err(format!("{k}: {e}")))?);
                }
            }
        }
        if let Some(r) = p.take("ip-rules") {
            return Err(p.err(format!("ip-rules={r}: not supported; use allow= and deny=")));
        }
        let [allow, deny] = lists;
        Ok(Ip { inner, allow, deny })
    }

    pub fn permits(&self, peer: &Peer) -> bool {
        if self.allow.iter().any(|r| matches(r, peer)) {
            return true;
        }
        !self.deny.iter().any(|r| matches(r, peer))
    }
}

impl Backend for Ip {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    lend_through!();
    fn preconnect(&self, peer: &Peer) -> Result<()> {
        if !self.permits(peer) {
            return Err(Error::new(
                libc::EPERM,
                format!("ip: client not permitted: {peer:?}"),
            ));
        }
        self.inner.preconnect(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::simple::Null;

    fn ip(allow: &str, deny: &str) -> Ip {
        let mut pairs = vec![];
        if !allow.is_empty() {
            pairs.push(("allow".to_string(), allow.to_string()));
        }
        if !deny.is_empty() {
            pairs.push(("deny".to_string(), deny.to_string()));
        }
        let mut p = Params::new("ip", pairs);
        Ip::open(&mut p, Arc::new(Null::new(0))).unwrap()
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

    fn info(id: u64) -> ConnectionInfo {
        ConnectionInfo {
            id,
            peer: Peer::Other,
            export_name: vec![],
            readonly: false,
            tls: false,
        }
    }

    #[test]
    fn exitlast_asks_for_shutdown_after_the_last_close() {
        fn handler() {}
        crate::backend::shutdown::set_handler(handler);
        let e = ExitLast::new(Arc::new(Null::new(0)));
        e.open_connection(&info(1)).unwrap();
        e.open_connection(&info(2)).unwrap();
        e.close_connection(&info(1));
        assert!(!shutdown::requested());
        e.close_connection(&info(2));
        assert!(shutdown::requested());
    }

    #[test]
    fn limit_counts_connections() {
        let mut p = Params::new("limit", vec![("limit".into(), "2".into())]);
        let l = Limit::open(&mut p, Arc::new(Null::new(0))).unwrap();
        l.open_connection(&info(1)).unwrap();
        l.open_connection(&info(2)).unwrap();
        assert_eq!(l.open_connection(&info(3)).unwrap_err().errno, libc::EBUSY);
        l.close_connection(&info(1));
        l.open_connection(&info(4)).unwrap();
    }
}
