//! The interface every plugin and filter implements.
//!
//! nbdkit's model: a plugin is the bottom of a stack, a filter is a backend
//! wrapping another backend. Every method of [`Backend`] has a default that
//! delegates to [`Backend::next`] when there is a next layer, and otherwise
//! gives the answer of a plugin that supports nothing beyond reading. So a
//! plugin implements what it supports, and a filter returns its inner layer
//! from `next()` and overrides only what it changes.
//!
//! Backends are shared by every connection and every worker thread: all
//! methods take `&self` and may run in parallel.

use std::borrow::Cow;
use std::fmt;

use crate::errno::host;
/// Read-only file system: what a write to a read-only plugin fails with.
pub const EROFS: i32 = 30;
use crate::wire::consts::allocation;

/// An error from a backend: the errno to report and a message for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub errno: i32,
    pub message: Cow<'static, str>,
}

impl Error {
    pub fn new(errno: i32, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            errno,
            message: message.into(),
        }
    }

    /// An error with no message beyond its errno.
    pub const fn errno(errno: i32) -> Self {
        Error {
            errno,
            message: Cow::Borrowed(""),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "errno {}", self.errno)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Flags of a WRITE_ZEROES as the backend sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZeroFlags {
    /// The client allows punching a hole (it did not send NO_HOLE).
    pub may_trim: bool,
    /// Force unit access: the data must be stable when this returns.
    pub fua: bool,
    /// The client wants a quick failure (ENOTSUP) rather than a slow zero.
    pub fast: bool,
}

/// The answer to a block status query, collected without allocating per
/// request: the server keeps one per worker and [`Extents::reset`]s it.
///
/// A backend calls [`Extents::add`] with extents in ascending order,
/// starting at or before the queried offset. Extents are clipped to the
/// query, adjacent extents of the same type are merged, and `add` returns
/// `false` once nothing more is wanted (the query is covered, or REQ_ONE
/// and an extent of another type than the first arrived), so the backend
/// can stop early. With REQ_ONE, extents of the first one's type are still
/// merged into it, so the single extent sent is as long as it can be.
#[derive(Clone, Debug, Default)]
pub struct Extents {
    start: u64,
    end: u64,
    next: u64,
    req_one: bool,
    full: bool,
    list: Vec<(u64, u32)>,
}

impl Extents {
    pub fn new() -> Self {
        Self::default()
    }

    /// Prepares for a query of `count` bytes at `offset`.
    pub fn reset(&mut self, offset: u64, count: u32, req_one: bool) {
        self.start = offset;
        self.end = offset.saturating_add(count as u64);
        self.next = offset;
        self.req_one = req_one;
        self.full = false;
        self.list.clear();
    }

    /// The offset the next extent must start at (at or before).
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// The end of the query.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Whether the backend should keep adding extents.
    pub fn wants_more(&self) -> bool {
        self.next < self.end && !self.full
    }

    /// Records that `length` bytes at `offset` have `flags`
    /// (`allocation::HOLE`, `allocation::ZERO`). Errors if the extent leaves
    /// a gap after what was already recorded.
    pub fn add(&mut self, offset: u64, length: u64, flags: u32) -> Result<bool> {
        if !self.wants_more() {
            return Ok(false);
        }
        if offset > self.next {
            return Err(Error::new(host::EINVAL, "extents: gap in extent list"));
        }
        let end = offset.saturating_add(length).min(self.end);
        if end <= self.next {
            return Ok(true);
        }
        let len = end - self.next;
        let flags = flags & (allocation::HOLE | allocation::ZERO);
        match self.list.last_mut() {
            Some((l, f)) if *f == flags => *l += len,
            Some(_) if self.req_one => {
                self.full = true;
                return Ok(false);
            }
            _ => self.list.push((len, flags)),
        }
        self.next = end;
        Ok(self.wants_more())
    }

    /// The extents as (length, flags); their lengths sum to at most the
    /// query's count and fit in 32 bits.
    pub fn as_slice(&self) -> &[(u64, u32)] {
        &self.list
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Offset of the query.
    pub fn start(&self) -> u64 {
        self.start
    }
}

/// Who is on the other end of a connection, for filters that decide by it
/// (ip) or report it (log, stats).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Tcp(std::net::SocketAddr),
    /// A Unix socket peer with its credentials (SO_PEERCRED), when known.
    Unix {
        pid: Option<i32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Vsock {
        cid: u32,
        port: u32,
    },
    /// `-s`: standard input and output; also socket pairs and anything else.
    Other,
}

/// What the server tells the backend stack when a client has negotiated
/// an export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// A number unique to this connection within the server's lifetime.
    pub id: u64,
    pub peer: Peer,
    pub export_name: Vec<u8>,
    /// The server runs read-only (-r).
    pub readonly: bool,
    /// The client negotiated TLS (nbdkit_is_tls()).
    pub tls: bool,
}

/// A plugin or filter. See the module documentation for delegation.
///
/// The connection hooks follow nbdkit's order: `preconnect` when a client
/// connects, before any byte of the handshake (a filter may refuse the
/// client here, costing nothing more); `open_connection` once the client
/// has negotiated an export; `close_connection` when it goes, exactly once
/// for every successful `open_connection`. By default each delegates to
/// the next layer, so a filter that does not care needs nothing.
pub trait Backend: Send + Sync {
    fn preconnect(&self, peer: &Peer) -> Result<()> {
        self.next().map_or(Ok(()), |n| n.preconnect(peer))
    }

    fn open_connection(&self, info: &ConnectionInfo) -> Result<()> {
        self.next().map_or(Ok(()), |n| n.open_connection(info))
    }

    fn close_connection(&self, info: &ConnectionInfo) {
        if let Some(n) = self.next() {
            n.close_connection(info)
        }
    }

    /// The exports this stack offers, as (name, description), for
    /// NBD_OPT_LIST. `None` (the default of a plugin): no list of its own;
    /// the server lists its `-e` name and serves any name with this
    /// backend. Delegated by default.
    fn list_exports(&self) -> Result<Option<Vec<(String, String)>>> {
        self.next().map_or(Ok(None), |n| n.list_exports())
    }

    /// The export the empty name means, when the backend lists its own
    /// exports. Delegated by default.
    fn default_export(&self) -> Result<Option<String>> {
        self.next().map_or(Ok(None), |n| n.default_export())
    }

    /// The backend serving export `name`, for a stack with several exports
    /// (`Some`), or `None` when this backend serves every name itself. The
    /// server asks once per connection, at NBD_OPT_GO/INFO/EXPORT_NAME, and
    /// serves that connection with what it got. Not delegated: a stack
    /// with filters re-applies them over the plugin's per-export backend
    /// (see nbd-server-bin's `open_stack`).
    fn open_export(&self, name: &str) -> Result<Option<std::sync::Arc<dyn Backend>>> {
        let _ = name;
        Ok(None)
    }

    /// Block size constraints (minimum, preferred, maximum) for
    /// NBD_INFO_BLOCK_SIZE, or `None` for the server's defaults.
    /// Delegated by default.
    fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
        self.next().map_or(Ok(None), |n| n.block_size())
    }

    /// Drops and re-establishes whatever the backend holds open (the retry
    /// filter calls it after a failure, before retrying). Delegated by
    /// default; a plugin with nothing to reopen keeps the default `Ok`.
    fn reopen(&self) -> Result<()> {
        self.next().map_or(Ok(()), |n| n.reopen())
    }

    /// The layer below, for filters. Plugins keep the default `None`.
    fn next(&self) -> Option<&dyn Backend> {
        None
    }

    /// A name for messages.
    fn name(&self) -> &str {
        match self.next() {
            Some(n) => n.name(),
            None => "plugin",
        }
    }

    fn size(&self) -> Result<u64> {
        match self.next() {
            Some(n) => n.size(),
            None => Err(Error::new(host::EIO, "size not implemented")),
        }
    }

    fn can_write(&self) -> Result<bool> {
        self.next().map_or(Ok(false), |n| n.can_write())
    }
    fn can_flush(&self) -> Result<bool> {
        self.next().map_or(Ok(false), |n| n.can_flush())
    }
    fn can_fua(&self) -> Result<bool> {
        self.next().map_or(Ok(false), |n| n.can_fua())
    }
    fn can_trim(&self) -> Result<bool> {
        self.next().map_or(Ok(false), |n| n.can_trim())
    }
    fn can_zero(&self) -> Result<bool> {
        self.next().map_or(Ok(false), |n| n.can_zero())
    }
    fn can_fast_zero(&self) -> Result<bool> {
        self.next().map_or(Ok(false), |n| n.can_fast_zero())
    }
    fn can_multi_conn(&self) -> Result<bool> {
        self.next().map_or(Ok(false), |n| n.can_multi_conn())
    }
    fn can_extents(&self) -> Result<bool> {
        self.next().map_or(Ok(false), |n| n.can_extents())
    }
    fn can_cache(&self) -> Result<bool> {
        self.next().map_or(Ok(false), |n| n.can_cache())
    }
    fn is_rotational(&self) -> Result<bool> {
        self.next().map_or(Ok(false), |n| n.is_rotational())
    }

    /// Reads `buf.len()` bytes at `offset`.
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        match self.next() {
            Some(n) => n.pread(buf, offset),
            None => Err(Error::new(host::EIO, "pread not implemented")),
        }
    }

    /// Optional zero-copy read. A backend that can lend its storage calls
    /// `send` with slices that, in order and over one or more calls, make
    /// up exactly the `count` bytes at `offset`, then returns `Some(Ok(()))`.
    /// It may fail only before its first call of `send`. `send` returns
    /// `false` when the data could not be delivered; the backend then stops
    /// and returns `Some(Ok(()))`. `None` means "not supported": the server
    /// uses [`Backend::pread`]. Not delegated by default: a filter that
    /// changes data must not be bypassed, so each layer opts in.
    fn pread_lend(
        &self,
        count: u32,
        offset: u64,
        send: &mut dyn FnMut(&[&[u8]]) -> bool,
    ) -> Option<Result<()>> {
        let _ = (count, offset, send);
        None
    }

    /// Writes `buf` at `offset`; with `fua`, stably.
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        match self.next() {
            Some(n) => n.pwrite(buf, offset, fua),
            None => Err(Error::new(EROFS, "pwrite not implemented")),
        }
    }

    fn flush(&self) -> Result<()> {
        match self.next() {
            Some(n) => n.flush(),
            None => Err(Error::new(host::EINVAL, "flush not implemented")),
        }
    }

    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        match self.next() {
            Some(n) => n.trim(count, offset, fua),
            None => Err(Error::new(host::EINVAL, "trim not implemented")),
        }
    }

    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        match self.next() {
            Some(n) => n.zero(count, offset, flags),
            None => Err(Error::new(host::EINVAL, "zero not implemented")),
        }
    }

    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        match self.next() {
            Some(n) => n.cache(count, offset),
            None => Ok(()),
        }
    }

    /// Describes `count` bytes at `offset` (see [`Extents`]). The default
    /// for a plugin without extents reports everything as data.
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        match self.next() {
            Some(n) => n.extents(count, offset, sink),
            None => sink.add(offset, count as u64, 0).map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_clip_merge_and_stop() {
        let mut e = Extents::new();
        e.reset(100, 1000, false);
        assert!(e.add(0, 150, 0).unwrap());
        assert!(e.add(150, 50, 0).unwrap()); // merged
        assert!(e.add(200, 100, 3).unwrap());
        assert!(!e.add(300, 10_000, 0).unwrap()); // clipped, covered
        assert_eq!(e.as_slice(), &[(100, 0), (100, 3), (800, 0)]);
        assert!(!e.add(2000, 1, 0).unwrap());
    }

    #[test]
    fn extents_req_one_and_gaps() {
        let mut e = Extents::new();
        e.reset(0, 4096, true);
        assert!(e.add(0, 512, 3).unwrap());
        assert!(e.add(512, 512, 3).unwrap());
        assert!(!e.add(1024, 512, 0).unwrap());
        assert!(!e.wants_more());
        assert_eq!(e.as_slice(), &[(1024, 3)]);
        e.reset(0, 4096, false);
        assert!(e.add(10, 5, 0).is_err());
    }

    struct Plugin;
    impl Backend for Plugin {
        fn size(&self) -> Result<u64> {
            Ok(42)
        }
        fn can_write(&self) -> Result<bool> {
            Ok(true)
        }
    }
    struct ReadOnlyFilter(Plugin);
    impl Backend for ReadOnlyFilter {
        fn next(&self) -> Option<&dyn Backend> {
            Some(&self.0)
        }
        fn can_write(&self) -> Result<bool> {
            Ok(false)
        }
    }

    #[test]
    fn filters_delegate() {
        let f = ReadOnlyFilter(Plugin);
        assert_eq!(f.size(), Ok(42));
        assert_eq!(f.can_write(), Ok(false));
        assert!(Plugin.can_write().unwrap());
        let mut e = Extents::new();
        e.reset(0, 42, false);
        f.extents(42, 0, &mut e).unwrap();
        assert_eq!(e.as_slice(), &[(42, 0)]);
    }
}
