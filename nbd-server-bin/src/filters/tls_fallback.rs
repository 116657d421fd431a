//! The tls-fallback filter: with `--tls=on`, a client that did not
//! negotiate TLS gets a 512-byte read-only export holding a message
//! (`tlsreadme=`) instead of the export, as nbdkit-tls-fallback-filter(1).
//! A client that did negotiate TLS sees the layers below unchanged.
//!
//! The filter decides by the connection's `tls` when it is opened, and
//! answers a plain-text client entirely by itself: no call reaches the
//! layers below for it, not even their `open` (nbdkit's filter does not
//! call the plugin's `.open` for such a client). Only `preconnect`, which
//! runs before the client could start TLS, goes through, as in nbdkit.
//! Whatever a plain-text client asks for, it sees only the one export ""
//! with no description, whatever name it asked for.
//!
//! As nbdkit's manual says, the filter belongs first on the command line:
//! filters above it see the plain-text clients' requests. (A stack that
//! serves connections one at a time is refused: see
//! `chain::build::check_thread_model`.)

use std::sync::Arc;

use nbd_core::server::backend::{
    Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags, EROFS,
};

use crate::chain::{Below, Filter, FilterHandle, OpenNext};

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "tls-fallback",
    params: &[(
        "tlsreadme",
        "the message clients without TLS read (at most 512 bytes)",
    )],
    open: |p, _| {
        let msg = p
            .take("tlsreadme")
            .unwrap_or_else(|| DEFAULT_README.to_string());
        Ok(Arc::new(TlsFallback::new(msg.as_bytes())))
    },
};

/// The size of the plain-text export, and at most the message's length.
pub const README_SIZE: usize = 512;

/// nbdkit's default message.
pub const DEFAULT_README: &str =
    "This NBD server requires TLS authentication before it will serve useful data.\n";

/// `tlsreadme=MESSAGE`: what plain-text clients read, cut to 512 bytes
/// and padded with NUL bytes to 512 (nbdkit uses strncpy into its buffer).
pub struct TlsFallback {
    readme: Box<[u8; README_SIZE]>,
}

impl TlsFallback {
    pub fn new(msg: &[u8]) -> Self {
        let mut readme = Box::new([0u8; README_SIZE]);
        // strncpy: up to the first NUL (none can come from a command
        // line), at most 512 bytes.
        let n = msg.len().min(README_SIZE);
        readme[..n].copy_from_slice(&msg[..n]);
        TlsFallback { readme }
    }
}

impl Filter for TlsFallback {
    fn list_exports(
        &self,
        next: &Below<'_>,
        info: &ConnectionInfo,
    ) -> Result<Option<Vec<(String, String)>>> {
        if !info.tls {
            return Ok(Some(vec![(String::new(), String::new())]));
        }
        next.list_exports(info)
    }

    fn default_export(&self, next: &Below<'_>, info: &ConnectionInfo) -> Result<Option<String>> {
        if !info.tls {
            return Ok(Some(String::new()));
        }
        next.default_export(info)
    }

    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        if !info.tls {
            // The layers below stay closed: the plugin never sees this
            // connection.
            return Ok(Box::new(PlainText(self)));
        }
        next.open(info)?;
        Ok(Box::new(WithTls))
    }
}

/// A client with TLS: everything passes through.
struct WithTls;

impl FilterHandle for WithTls {}

/// A plain-text client: the readme, and nothing below.
struct PlainText(Arc<TlsFallback>);

/// A write-like request from a plain-text client (the server refuses them
/// first, since the export is read-only; this is the second line).
fn refused() -> Error {
    Error::new(EROFS, "tls-fallback: TLS is required to change this export")
}

/// Capabilities that are false for a plain-text client.
macro_rules! plain_text_cannot {
    ($($cap:ident),* $(,)?) => {
        $(
            fn $cap(&self, _: &dyn Backend) -> Result<bool> {
                Ok(false)
            }
        )*
    };
}

impl FilterHandle for PlainText {
    fn size(&self, _: &dyn Backend) -> Result<u64> {
        Ok(README_SIZE as u64)
    }

    fn block_size(&self, _: &dyn Backend) -> Result<Option<(u32, u32, u32)>> {
        Ok(None)
    }

    /// Nothing below is open, so nothing to reopen.
    fn reopen(&self, _: &dyn Backend) -> Result<()> {
        Ok(())
    }

    // A plain-text client sees a read-only export that can do nothing else.
    plain_text_cannot!(
        can_write,
        can_flush,
        can_fua,
        can_trim,
        can_zero,
        can_fast_zero,
        can_multi_conn,
        can_extents,
        can_cache,
        is_rotational
    );

    fn pread(&self, _: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let offset = r.offset;
        let buf = r.buf();
        let src = usize::try_from(offset)
            .ok()
            .and_then(|o| self.0.readme.get(o..o.checked_add(buf.len())?))
            .ok_or_else(|| Error::new(libc::EINVAL, "tls-fallback: read beyond the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn pwrite(&self, _: &dyn Backend, _: &[u8], _: u64, _: bool) -> Result<()> {
        Err(refused())
    }

    fn flush(&self, _: &dyn Backend) -> Result<()> {
        Err(refused())
    }

    fn trim(&self, _: &dyn Backend, _: u32, _: u64, _: bool) -> Result<()> {
        Err(refused())
    }

    fn zero(&self, _: &dyn Backend, _: u32, _: u64, _: ZeroFlags) -> Result<()> {
        Err(refused())
    }

    fn cache(&self, _: &dyn Backend, _: u32, _: u64) -> Result<()> {
        Err(Error::new(libc::EINVAL, "tls-fallback: no cache"))
    }

    fn extents(&self, _: &dyn Backend, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        // All data, as nbdkit says for an export without extents.
        sink.add(offset, count as u64, 0).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read as _, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use nbd_core::server::backend::Peer;
    use nbd_core::wire::consts::{client_flags, cmd, handshake_flags, opt, rep, tx_flags};
    use nbd_core::wire::option::{
        encode_option, parse_rep_server, GoRequest, InfoReply, OptionReplyHeader,
    };
    use nbd_core::wire::request::RequestHeader;

    use crate::chain::testing::info_for;
    use crate::chain::{Chain, Plugin};
    use crate::conn::{serve, Server};

    /// A plugin that counts every call made to it. `preconnect`, which
    /// nbdkit's filter passes through too, is counted apart.
    #[derive(Default)]
    struct Tripwire {
        calls: AtomicUsize,
        preconnects: AtomicUsize,
    }

    impl Tripwire {
        fn hit(&self) {
            self.calls.fetch_add(1, Ordering::SeqCst);
        }
    }

    macro_rules! counted_caps {
        ($($cap:ident),* $(,)?) => {
            $(
                fn $cap(&self) -> Result<bool> {
                    self.hit();
                    Ok(false)
                }
            )*
        };
    }

    impl Backend for Tripwire {
        fn size(&self) -> Result<u64> {
            self.hit();
            Ok(1 << 20)
        }
        fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
            self.hit();
            Ok(None)
        }
        fn reopen(&self) -> Result<()> {
            self.hit();
            Ok(())
        }
        counted_caps!(
            can_write,
            can_flush,
            can_fua,
            can_trim,
            can_zero,
            can_fast_zero,
            can_multi_conn,
            can_cache,
            is_rotational
        );
        // True, so that extents calls travel down too (a layer without
        // extents is answered "all data" above it).
        fn can_extents(&self) -> Result<bool> {
            self.hit();
            Ok(true)
        }
        fn pread(&self, buf: &mut [u8], _: u64) -> Result<()> {
            self.hit();
            buf.fill(0);
            Ok(())
        }
        fn pread_lend(
            &self,
            _: u32,
            _: u64,
            _: &mut dyn FnMut(&[&[u8]]) -> bool,
        ) -> Option<Result<()>> {
            self.hit();
            None
        }
        fn read(&self, r: &mut Read<'_>) -> Result<()> {
            self.hit();
            r.buf().fill(0);
            Ok(())
        }
        fn pwrite(&self, _: &[u8], _: u64, _: bool) -> Result<()> {
            self.hit();
            Ok(())
        }
        fn flush(&self) -> Result<()> {
            self.hit();
            Ok(())
        }
        fn trim(&self, _: u32, _: u64, _: bool) -> Result<()> {
            self.hit();
            Ok(())
        }
        fn zero(&self, _: u32, _: u64, _: ZeroFlags) -> Result<()> {
            self.hit();
            Ok(())
        }
        fn cache(&self, _: u32, _: u64) -> Result<()> {
            self.hit();
            Ok(())
        }
        fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
            self.hit();
            sink.add(offset, count as u64, 0).map(|_| ())
        }
    }

    impl Plugin for Tripwire {
        fn preconnect(&self, _: &ConnectionInfo) -> Result<()> {
            self.preconnects.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn list_exports(&self, _: &ConnectionInfo) -> Result<Option<Vec<(String, String)>>> {
            self.hit();
            Ok(None)
        }
        fn default_export(&self, _: &ConnectionInfo) -> Result<Option<String>> {
            self.hit();
            Ok(None)
        }
        fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
            self.hit();
            Ok(Box::new(self))
        }
    }

    fn read_n(s: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        s.read_exact(&mut v).unwrap();
        v
    }

    /// Option replies up to the final one: (type, payload) each.
    fn replies(s: &mut UnixStream, option: u32, payload: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut o = Vec::new();
        encode_option(&mut o, option, payload);
        s.write_all(&o).unwrap();
        let mut v = Vec::new();
        loop {
            let h: [u8; 20] = read_n(s, 20).try_into().unwrap();
            let h = OptionReplyHeader::decode(&h).unwrap();
            let p = read_n(s, h.len as usize);
            v.push((h.reply_type, p));
            if !matches!(h.reply_type, rep::SERVER | rep::INFO) {
                return v;
            }
        }
    }

    fn request(s: &mut UnixStream, kind: u16, offset: u64, length: u32, payload: &[u8]) {
        let h = RequestHeader {
            flags: 0,
            kind,
            cookie: 9,
            offset,
            length: length.into(),
        };
        s.write_all(&h.encode()).unwrap();
        s.write_all(payload).unwrap();
    }

    /// The error of a simple reply.
    fn simple_reply(s: &mut UnixStream) -> u32 {
        let r = read_n(s, 16);
        u32::from_be_bytes(r[4..8].try_into().unwrap())
    }

    /// A whole plain-text session (list, info, go under a name nobody
    /// serves, read, write, flush, disconnect) reaches nothing below the
    /// filter but `preconnect`.
    #[test]
    fn a_plain_text_client_never_reaches_the_plugin() {
        let trip = Arc::new(Tripwire::default());
        let fb = Arc::new(TlsFallback::new(b"go away"));
        let srv = Arc::new(Server {
            chain: Arc::new(Chain::new(Arc::clone(&trip) as _, vec![fb])),
            readonly: false,
            export_name: "disk".into(),
            threads: 4,
            handshake_flags: handshake_flags::ALL,
            no_sr: false,
            no_eh: false,
            oldstyle: false,
            limits: Default::default(),
        });
        let (mut s, theirs) = UnixStream::pair().unwrap();
        let h = std::thread::spawn(move || {
            let wr = File::from(std::os::unix::io::OwnedFd::from(theirs));
            let rd = wr.try_clone().unwrap();
            serve(srv, rd, wr, 1, Peer::Other);
        });
        read_n(&mut s, 18);
        s.write_all(&client_flags::ALL.to_be_bytes()).unwrap();

        let list = replies(&mut s, opt::LIST, &[]);
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(list[0].0, rep::SERVER);
        assert_eq!(parse_rep_server(&list[0].1).unwrap(), (&b""[..], &b""[..]));
        assert_eq!(list[1].0, rep::ACK);

        let go = GoRequest {
            export_name: b"secret",
            info_requests: vec![],
        }
        .encode();
        for o in [opt::INFO, opt::GO] {
            let r = replies(&mut s, o, &go);
            assert_eq!(r.last().unwrap().0, rep::ACK, "{r:?}");
            let export = r.iter().find_map(|(t, p)| match InfoReply::decode(p) {
                Ok(InfoReply::Export { size, flags }) if *t == rep::INFO => Some((size, flags)),
                _ => None,
            });
            let (size, flags) = export.unwrap();
            assert_eq!(size, 512);
            assert_ne!(flags & tx_flags::READ_ONLY, 0);
            assert_eq!(flags & (tx_flags::SEND_FLUSH | tx_flags::SEND_CACHE), 0);
        }

        request(&mut s, cmd::READ, 0, 512, &[]);
        assert_eq!(simple_reply(&mut s), 0);
        let data = read_n(&mut s, 512);
        assert_eq!(&data[..7], b"go away");
        assert!(data[7..].iter().all(|&b| b == 0));
        request(&mut s, cmd::WRITE, 0, 3, b"abc");
        assert_eq!(simple_reply(&mut s), libc::EPERM as u32);
        request(&mut s, cmd::FLUSH, 0, 0, &[]);
        assert_ne!(simple_reply(&mut s), 0);
        request(&mut s, cmd::READ, 500, 13, &[]);
        assert_ne!(simple_reply(&mut s), 0);
        request(&mut s, cmd::DISC, 0, 0, &[]);
        h.join().unwrap();

        assert_eq!(
            trip.calls.load(Ordering::SeqCst),
            0,
            "the plugin was called"
        );
        assert_eq!(trip.preconnects.load(Ordering::SeqCst), 1);
    }

    /// Opened for a plain-text connection, the chain answers every call
    /// without the plugin; opened for a TLS one, each call goes down.
    #[test]
    fn plain_answers_by_itself_tls_goes_down() {
        let trip = Arc::new(Tripwire::default());
        let fb = Arc::new(TlsFallback::new(&[b'x'; 600]));
        let chain = Arc::new(Chain::new(Arc::clone(&trip) as _, vec![fb]));
        let info = |tls| info_for(1, "a", tls);
        let all = |tls: bool| {
            let mut buf = [0u8; 8];
            let mut e = Extents::new();
            e.reset(0, 512, false);
            let _ = (
                chain.list_exports(&info(tls)),
                chain.default_export(&info(tls)),
            );
            let c = chain.open(info(tls)).unwrap();
            let mut send = |_: &[&[u8]]| true;
            let mut lent = [0u8; 8];
            let _ = (
                c.block_size(),
                c.size(),
                c.reopen(),
                c.can_write(),
                c.can_flush(),
                c.can_fua(),
                c.can_trim(),
                c.can_zero(),
                c.can_fast_zero(),
                c.can_multi_conn(),
                c.can_extents(),
                c.can_cache(),
                c.is_rotational(),
                c.pread(&mut buf, 504),
                c.read(&mut Read::lending(&mut lent, 0, &mut send)),
                c.pwrite(b"x", 0, false),
                c.flush(),
                c.trim(1, 0, false),
                c.zero(1, 0, ZeroFlags::default()),
                c.cache(1, 0),
                c.extents(512, 0, &mut e),
            );
            (buf, e, c)
        };
        let (buf, e, c) = all(false);
        assert_eq!(trip.calls.load(Ordering::SeqCst), 0);
        // The message is cut to 512 bytes.
        assert_eq!(buf, [b'x'; 8]);
        assert_eq!(e.as_slice(), &[(512, 0)]);
        assert_eq!(c.size(), Ok(512));
        assert_eq!(
            chain.list_exports(&info(false)),
            Ok(Some(vec![(String::new(), String::new())]))
        );
        assert_eq!(chain.default_export(&info(false)), Ok(Some(String::new())));
        assert_eq!(c.pwrite(b"x", 0, false).unwrap_err().errno, EROFS);
        assert!(c.pread(&mut [0u8; 2], 511).is_err());
        drop(c);
        assert_eq!(trip.calls.load(Ordering::SeqCst), 0);

        all(true);
        // Each of the 24 calls went down: list, default, open and the 21
        // of the connection.
        assert_eq!(trip.calls.load(Ordering::SeqCst), 24);
    }
}
