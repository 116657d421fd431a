//! What a server runs requests against: a backend as one connection sees
//! it.
//!
//! nbdkit's model: a plugin at the bottom, filters over it, opened for
//! each connection. The server binary builds that chain (nbd-server-bin's
//! `chain` module); this crate only needs its top, as a [`Backend`], to run
//! requests ([`crate::server::request::execute`]) and describe the export
//! ([`crate::server::negotiate::Caps::from_backend`]). A filter sees the
//! layers below it as a `Backend` too (nbdkit's `next`).
//!
//! Requests of one connection run on several worker threads: all methods
//! take `&self` and may run in parallel.

use std::borrow::Cow;
use std::fmt;
use std::os::fd::BorrowedFd;

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
        self.reset_range(offset, u64::from(count), req_one)
    }

    /// Prepares for a query of `length` bytes at `offset`: more than 4 GiB
    /// with extended headers, asked of the backend a piece at a time.
    pub fn reset_range(&mut self, offset: u64, length: u64, req_one: bool) {
        self.start = offset;
        self.end = offset.saturating_add(length);
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
    /// query's length (so they fit 32 bits unless the query was longer,
    /// which only extended headers allow).
    pub fn as_slice(&self) -> &[(u64, u32)] {
        &self.list
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether the client asked for one extent only (REQ_ONE).
    pub fn req_one(&self) -> bool {
        self.req_one
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

/// The facts of one connection that every layer of a backend chain may
/// ask about (nbdkit's `nbdkit_export_name`, `nbdkit_is_tls`,
/// `nbdkit_peer_*`): handed to each layer when the chain is opened for
/// the connection, never kept in thread-locals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// A number unique to this connection within the server's lifetime.
    pub id: u64,
    pub peer: Peer,
    /// The export the client asked for (after the server resolved the
    /// empty name to the default export); empty before one is chosen.
    pub export_name: Vec<u8>,
    /// The server runs read-only (-r).
    pub readonly: bool,
    /// The client negotiated TLS (nbdkit_is_tls()).
    pub tls: bool,
}

/// Where a lent read's data goes: called with slices that, in order, make
/// up the data; returns `false` when it could not be delivered.
pub type Lend<'a> = dyn FnMut(&[&[u8]]) -> bool + 'a;

/// A read on its way down a backend chain: `buf.len()` bytes at `offset`,
/// for the caller's buffer, and perhaps a way to send the data without
/// copying it (`lend`).
///
/// A layer that passes the read on unchanged (or only moves its offset)
/// keeps zero-copy possible all the way to the plugin. A layer that looks
/// at or changes the data takes [`Read::buf`], which turns lending off for
/// the layers below: they then fill the buffer. So a filter cannot be
/// bypassed by accident.
pub struct Read<'a> {
    pub offset: u64,
    buf: &'a mut [u8],
    lend: Option<&'a mut Lend<'a>>,
    send_file: Option<&'a mut SendFile<'a>>,
    lent: bool,
}

/// Where a read answered from a file goes (see [`Backend::pread_file`]):
/// called once with the file's descriptor and the offset in it of the
/// read's data; sends those bytes (with sendfile(2), say) and returns
/// `false` when they could not be delivered.
pub type SendFile<'a> = dyn FnMut(BorrowedFd<'_>, u64) -> bool + 'a;

impl<'a> Read<'a> {
    /// A read into `buf`.
    pub fn new(buf: &'a mut [u8], offset: u64) -> Self {
        Read {
            offset,
            buf,
            lend: None,
            send_file: None,
            lent: false,
        }
    }

    /// A read into `buf` that a plugin may instead answer by lending its
    /// storage to `send` (see [`Backend::pread_lend`]).
    pub fn lending(buf: &'a mut [u8], offset: u64, send: &'a mut Lend<'a>) -> Self {
        Read {
            offset,
            buf,
            lend: Some(send),
            send_file: None,
            lent: false,
        }
    }

    /// Lets a plugin whose data is a file's bytes answer by naming the
    /// file range instead (see [`Backend::pread_file`]); tried before
    /// lending. Like lending, taking [`Read::buf`] turns it off.
    pub fn sending_files(mut self, send: &'a mut SendFile<'a>) -> Self {
        self.send_file = Some(send);
        self
    }

    /// The number of bytes to read.
    pub fn count(&self) -> u32 {
        self.buf.len() as u32
    }

    /// The buffer to fill. Taking it turns lending off: the data will be
    /// copied into it.
    pub fn buf(&mut self) -> &mut [u8] {
        self.lend = None;
        self.send_file = None;
        self.buf
    }

    /// Whether the data was sent by lending or from a file (the buffer
    /// was not filled).
    pub fn was_lent(&self) -> bool {
        self.lent
    }
}

/// A backend as one connection sees it: the plugin's handle for the
/// connection, or the chain of filters over it, or, to a filter, the
/// layers below it (nbdkit's `nbdkit_next`). [`crate::server::request`]
/// runs requests against it.
///
/// Every method has a default that gives the answer of a plugin that
/// supports nothing beyond reading, so a plugin writes what it supports.
/// Requests of one connection may run in parallel: methods take `&self`.
pub trait Backend: Send + Sync {
    fn size(&self) -> Result<u64>;

    /// Block size constraints (minimum, preferred, maximum) for
    /// NBD_INFO_BLOCK_SIZE, or `None` for the server's defaults.
    fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
        Ok(None)
    }

    /// Drops and re-establishes whatever the backend holds open (the retry
    /// filter calls it after a failure, before retrying).
    fn reopen(&self) -> Result<()> {
        Ok(())
    }

    fn can_write(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_flush(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_fua(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_trim(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_zero(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_fast_zero(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_extents(&self) -> Result<bool> {
        Ok(false)
    }
    fn can_cache(&self) -> Result<bool> {
        Ok(false)
    }
    fn is_rotational(&self) -> Result<bool> {
        Ok(false)
    }
    /// The export's description for NBD_INFO_DESCRIPTION, if it has
    /// one (nbdkit's `export_description`).
    fn export_description(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// Reads `buf.len()` bytes at `offset`.
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// Optional zero-copy read. A backend that can lend its storage calls
    /// `send` with slices that, in order and over one or more calls, make
    /// up exactly the `count` bytes at `offset`, then returns `Some(Ok(()))`.
    /// It may fail only before its first call of `send`. `send` returns
    /// `false` when the data could not be delivered; the backend then stops
    /// and returns `Some(Ok(()))`. `None` means "not supported": the data
    /// is read with [`Backend::pread`].
    fn pread_lend(
        &self,
        count: u32,
        offset: u64,
        send: &mut dyn FnMut(&[&[u8]]) -> bool,
    ) -> Option<Result<()>> {
        let _ = (count, offset, send);
        None
    }

    /// Optional: the `count` bytes at `offset` are, unchanged, the bytes
    /// of an open file at the returned offset, so the server may send
    /// them from the file (sendfile(2)) without reading them into memory.
    /// `None` (the default): they are not, or not all of them are there
    /// now (a file shorter than the range): the read goes on by lending
    /// or [`Backend::pread`], which report such a failure.
    fn pread_file(&self, count: u32, offset: u64) -> Option<(BorrowedFd<'_>, u64)> {
        let _ = (count, offset);
        None
    }

    /// Optional: reads `buf.len()` bytes at `offset` as [`Backend::pread`]
    /// does, but only if that needs no wait for a device (the data is in
    /// the page cache, or in memory). `None`: it would wait, or the
    /// backend cannot tell; nothing was reported and the caller reads
    /// with `pread` where waiting does no harm. The server calls it on the
    /// thread that reads a connection's requests, which must not stall.
    fn pread_nowait(&self, buf: &mut [u8], offset: u64) -> Option<Result<()>> {
        let _ = (buf, offset);
        None
    }

    /// Reads as `r` asks: from a file when `r` allows it and the backend
    /// names one, else lent when `r` allows it and the backend can lend,
    /// else into `r`'s buffer. A chain of layers overrides this to pass
    /// `r` down; a plugin keeps the default.
    fn read(&self, r: &mut Read<'_>) -> Result<()> {
        if let Some(send) = r.send_file.take() {
            if let Some((fd, at)) = self.pread_file(r.count(), r.offset) {
                // As with lending, a failure to deliver is the sink's
                // to report: the read itself is done.
                send(fd, at);
                r.lend = None;
                r.lent = true;
                return Ok(());
            }
        }
        if let Some(send) = r.lend.take() {
            if let Some(res) = self.pread_lend(r.count(), r.offset, send) {
                r.lent = res.is_ok();
                return res;
            }
        }
        self.pread(r.buf, r.offset)
    }

    /// Writes `buf` at `offset`; with `fua`, stably.
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let _ = (buf, offset, fua);
        Err(Error::new(EROFS, "pwrite not implemented"))
    }

    fn flush(&self) -> Result<()> {
        Err(Error::new(host::EINVAL, "flush not implemented"))
    }

    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        let _ = (count, offset, fua);
        Err(Error::new(host::EINVAL, "trim not implemented"))
    }

    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        let _ = (count, offset, flags);
        Err(Error::new(host::EINVAL, "zero not implemented"))
    }

    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        let _ = (count, offset);
        Ok(())
    }

    /// Describes `count` bytes at `offset` (see [`Extents`]). The default
    /// for a plugin without extents reports everything as data.
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        sink.add(offset, count as u64, 0).map(|_| ())
    }
}

/// A shared backend serves as a connection's handle: a plugin whose
/// state is the same for every connection hands out clones of one `Arc`.
impl<T: Backend + ?Sized> Backend for std::sync::Arc<T> {
    fn size(&self) -> Result<u64> {
        (**self).size()
    }
    fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
        (**self).block_size()
    }
    fn reopen(&self) -> Result<()> {
        (**self).reopen()
    }
    fn can_write(&self) -> Result<bool> {
        (**self).can_write()
    }
    fn can_flush(&self) -> Result<bool> {
        (**self).can_flush()
    }
    fn can_fua(&self) -> Result<bool> {
        (**self).can_fua()
    }
    fn can_trim(&self) -> Result<bool> {
        (**self).can_trim()
    }
    fn can_zero(&self) -> Result<bool> {
        (**self).can_zero()
    }
    fn can_fast_zero(&self) -> Result<bool> {
        (**self).can_fast_zero()
    }
    fn can_multi_conn(&self) -> Result<bool> {
        (**self).can_multi_conn()
    }
    fn can_extents(&self) -> Result<bool> {
        (**self).can_extents()
    }
    fn can_cache(&self) -> Result<bool> {
        (**self).can_cache()
    }
    fn is_rotational(&self) -> Result<bool> {
        (**self).is_rotational()
    }
    fn export_description(&self) -> Result<Option<String>> {
        (**self).export_description()
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        (**self).pread(buf, offset)
    }
    fn pread_lend(
        &self,
        count: u32,
        offset: u64,
        send: &mut dyn FnMut(&[&[u8]]) -> bool,
    ) -> Option<Result<()>> {
        (**self).pread_lend(count, offset, send)
    }
    fn pread_file(&self, count: u32, offset: u64) -> Option<(BorrowedFd<'_>, u64)> {
        (**self).pread_file(count, offset)
    }
    fn pread_nowait(&self, buf: &mut [u8], offset: u64) -> Option<Result<()>> {
        (**self).pread_nowait(buf, offset)
    }
    fn read(&self, r: &mut Read<'_>) -> Result<()> {
        (**self).read(r)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        (**self).pwrite(buf, offset, fua)
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        (**self).trim(count, offset, fua)
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        (**self).zero(count, offset, flags)
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        (**self).cache(count, offset)
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        (**self).extents(count, offset, sink)
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
        fn pread(&self, buf: &mut [u8], _: u64) -> Result<()> {
            buf.fill(7);
            Ok(())
        }
        fn pread_lend(
            &self,
            count: u32,
            _: u64,
            send: &mut dyn FnMut(&[&[u8]]) -> bool,
        ) -> Option<Result<()>> {
            send(&[&vec![9u8; count as usize]]);
            Some(Ok(()))
        }
    }

    #[test]
    fn reads_lend_until_a_layer_takes_the_buffer() {
        let mut buf = [0u8; 4];
        let mut got: Vec<u8> = Vec::new();
        let mut send = |s: &[&[u8]]| {
            got.extend(s.iter().flat_map(|x| x.iter()));
            true
        };
        let mut r = Read::lending(&mut buf, 0, &mut send);
        Plugin.read(&mut r).unwrap();
        assert!(r.was_lent());
        assert_eq!(got, [9; 4]);
        let mut got2 = 0;
        let mut send2 = |_: &[&[u8]]| {
            got2 += 1;
            true
        };
        let mut r = Read::lending(&mut buf, 0, &mut send2);
        r.buf();
        Plugin.read(&mut r).unwrap();
        assert!(!r.was_lent());
        assert_eq!(buf, [7; 4]);
        assert_eq!(got2, 0);
        let mut e = Extents::new();
        e.reset(0, 42, false);
        Plugin.extents(42, 0, &mut e).unwrap();
        assert_eq!(e.as_slice(), &[(42, 0)]);
    }

    /// A plugin whose data is a file's, 100 bytes into it.
    struct FromFile(std::fs::File);
    impl Backend for FromFile {
        fn size(&self) -> Result<u64> {
            Ok(42)
        }
        fn pread(&self, buf: &mut [u8], _: u64) -> Result<()> {
            buf.fill(7);
            Ok(())
        }
        fn pread_file(&self, _: u32, offset: u64) -> Option<(BorrowedFd<'_>, u64)> {
            use std::os::fd::AsFd;
            Some((self.0.as_fd(), offset + 100))
        }
    }

    #[test]
    fn reads_name_the_file_until_a_layer_takes_the_buffer() {
        let p = FromFile(std::fs::File::open("/dev/null").unwrap());
        let mut buf = [0u8; 4];
        let mut at = Vec::new();
        let mut lend = |_: &[&[u8]]| panic!("lent instead of named");
        let mut file = |_: BorrowedFd<'_>, offset: u64| {
            at.push(offset);
            true
        };
        let mut r = Read::lending(&mut buf, 5, &mut lend).sending_files(&mut file);
        p.read(&mut r).unwrap();
        assert!(r.was_lent());
        assert_eq!(at, [105]);
        let mut file2 = |_: BorrowedFd<'_>, _: u64| panic!("named after the buffer was taken");
        let mut r = Read::new(&mut buf, 5).sending_files(&mut file2);
        r.buf();
        p.read(&mut r).unwrap();
        assert!(!r.was_lent());
        assert_eq!(buf, [7; 4]);
    }
}
