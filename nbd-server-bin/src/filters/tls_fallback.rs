//! tls-fallback: with `--tls=on`, a client that did not negotiate TLS gets
//! a 512-byte read-only export holding a message (`tlsreadme=`) instead
//! of the export, as nbdkit-tls-fallback-filter(1). A client that did
//! negotiate TLS sees the layers below unchanged.
//!
//! The filter asks [`crate::conn::is_tls`] (nbdkit_is_tls) on every call,
//! and answers a plain-text client entirely by itself: no call reaches the
//! layers below for it, not even `open_connection` (nbdkit's filter does
//! not call the plugin's `.open` for such a client). Only `preconnect`,
//! which runs before the client could start TLS, goes through, as in
//! nbdkit. Whatever a plain-text client asks for, it sees only the one
//! export "" with no description, whatever name it asked for.
//!
//! As nbdkit's manual says, the filter belongs first on the command line:
//! filters above it see the plain-text clients' requests.

use std::sync::Arc;

use nbd_core::server::backend::{
    Backend, ConnectionInfo, Error, Extents, Result, ZeroFlags, EROFS,
};

use super::super::Params;

/// The size of the plain-text export, and at most the message's length.
pub const README_SIZE: usize = 512;

/// nbdkit's default message.
pub const DEFAULT_README: &str =
    "This NBD server requires TLS authentication before it will serve useful data.\n";

/// `tlsreadme=MESSAGE`: what plain-text clients read, cut to 512 bytes
/// and padded with NUL bytes to 512 (nbdkit uses strncpy into its buffer).
pub struct TlsFallback {
    inner: Arc<dyn Backend>,
    readme: Box<[u8; README_SIZE]>,
}

impl TlsFallback {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let msg = p
            .take("tlsreadme")
            .unwrap_or_else(|| DEFAULT_README.to_string());
        Ok(TlsFallback::new(inner, msg.as_bytes()))
    }

    pub fn new(inner: Arc<dyn Backend>, msg: &[u8]) -> Self {
        let mut readme = Box::new([0u8; README_SIZE]);
        // strncpy: up to the first NUL (none can come from a command
        // line), at most 512 bytes.
        let n = msg.len().min(README_SIZE);
        readme[..n].copy_from_slice(&msg[..n]);
        TlsFallback { inner, readme }
    }

    /// Whether this call is for a plain-text client.
    fn plain(&self) -> bool {
        !crate::conn::is_tls()
    }
}

/// A write-like request from a plain-text client (the server refuses them
/// first, since the export is read-only; this is the second line).
fn refused() -> Error {
    Error::new(EROFS, "tls-fallback: TLS is required to change this export")
}

/// Capabilities that are false for a plain-text client and the plugin's
/// for a TLS one.
macro_rules! plain_text_cannot {
    ($($cap:ident),* $(,)?) => {
        $(
            fn $cap(&self) -> Result<bool> {
                if self.plain() {
                    return Ok(false);
                }
                self.inner.$cap()
            }
        )*
    };
}

impl Backend for TlsFallback {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }

    fn open_connection(&self, info: &ConnectionInfo) -> Result<()> {
        if !info.tls {
            return Ok(());
        }
        self.inner.open_connection(info)
    }

    fn close_connection(&self, info: &ConnectionInfo) {
        if info.tls {
            self.inner.close_connection(info)
        }
    }

    fn list_exports(&self) -> Result<Option<Vec<(String, String)>>> {
        if self.plain() {
            return Ok(Some(vec![(String::new(), String::new())]));
        }
        self.inner.list_exports()
    }

    fn default_export(&self) -> Result<Option<String>> {
        if self.plain() {
            return Ok(Some(String::new()));
        }
        self.inner.default_export()
    }

    fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
        if self.plain() {
            return Ok(None);
        }
        self.inner.block_size()
    }

    fn size(&self) -> Result<u64> {
        if self.plain() {
            return Ok(README_SIZE as u64);
        }
        self.inner.size()
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

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if self.plain() {
            let src = usize::try_from(offset)
                .ok()
                .and_then(|o| self.readme.get(o..o.checked_add(buf.len())?))
                .ok_or_else(|| Error::new(libc::EINVAL, "tls-fallback: read beyond the end"))?;
            buf.copy_from_slice(src);
            return Ok(());
        }
        self.inner.pread(buf, offset)
    }

    fn pread_lend(
        &self,
        count: u32,
        offset: u64,
        send: &mut dyn FnMut(&[&[u8]]) -> bool,
    ) -> Option<Result<()>> {
        if self.plain() {
            // The server falls back to pread, which checks the bounds.
            return None;
        }
        self.inner.pread_lend(count, offset, send)
    }

    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        if self.plain() {
            return Err(refused());
        }
        self.inner.pwrite(buf, offset, fua)
    }

    fn flush(&self) -> Result<()> {
        if self.plain() {
            return Err(refused());
        }
        self.inner.flush()
    }

    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        if self.plain() {
            return Err(refused());
        }
        self.inner.trim(count, offset, fua)
    }

    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        if self.plain() {
            return Err(refused());
        }
        self.inner.zero(count, offset, flags)
    }

    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        if self.plain() {
            return Err(Error::new(libc::EINVAL, "tls-fallback: no cache"));
        }
        self.inner.cache(count, offset)
    }

    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        if self.plain() {
            // All data, as nbdkit says for an export without extents.
            return sink.add(offset, count as u64, 0).map(|_| ());
        }
        self.inner.extents(count, offset, sink)
    }
}


/// What the tls-fallback filter of a several-export stack (the file
/// plugin's `dir=`) sits on for plain-text clients: nothing is opened for
/// them, and the filter never calls down for them.
pub struct Unopened;

impl Backend for Unopened {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use nbd_core::server::backend::Peer;
    use nbd_core::wire::consts::{client_flags, cmd, handshake_flags, opt, rep, tx_flags};
    use nbd_core::wire::option::{
        encode_option, parse_rep_server, GoRequest, InfoReply, OptionReplyHeader,
    };
    use nbd_core::wire::request::RequestHeader;

    use crate::conn::{serve, set_tls, Server};

    /// A plugin that counts every call made to it: each default method of
    /// [`Backend`] starts by asking `next()`, and the two that do not are
    /// counted by hand. `preconnect`, which nbdkit's filter passes
    /// through too, is counted apart.
    #[derive(Default)]
    struct Tripwire {
        calls: AtomicUsize,
        preconnects: AtomicUsize,
    }

    impl Backend for Tripwire {
        fn next(&self) -> Option<&dyn Backend> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            None
        }
        fn preconnect(&self, _: &Peer) -> Result<()> {
            self.preconnects.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn open_export(&self, _: &str) -> Result<Option<Arc<dyn Backend>>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(None)
        }
        fn pread_lend(
            &self,
            _: u32,
            _: u64,
            _: &mut dyn FnMut(&[&[u8]]) -> bool,
        ) -> Option<Result<()>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            None
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
            length,
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
        let fb = TlsFallback::new(Arc::clone(&trip) as Arc<dyn Backend>, b"go away");
        let srv = Arc::new(Server {
            backend: Arc::new(fb),
            readonly: false,
            export_name: "disk".into(),
            threads: 4,
            handshake_flags: handshake_flags::ALL,
            no_sr: false,
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

    /// Called directly on a thread that is not serving a TLS client, every
    /// method answers without the layer below; once the thread's
    /// connection has TLS, each goes down.
    #[test]
    fn plain_answers_by_itself_tls_goes_down() {
        let trip = Arc::new(Tripwire::default());
        let fb = TlsFallback::new(Arc::clone(&trip) as Arc<dyn Backend>, &[b'x'; 600]);
        let info = |tls| ConnectionInfo {
            id: 1,
            peer: Peer::Other,
            export_name: b"a".to_vec(),
            readonly: false,
            tls,
        };
        let all = |fb: &TlsFallback| {
            let mut buf = [0u8; 8];
            let mut e = Extents::new();
            e.reset(0, 512, false);
            let _ = (
                fb.open_connection(&info(!fb.plain())),
                fb.list_exports(),
                fb.default_export(),
                fb.block_size(),
                fb.size(),
                fb.can_write(),
                fb.can_flush(),
                fb.can_fua(),
                fb.can_trim(),
                fb.can_zero(),
                fb.can_fast_zero(),
                fb.can_multi_conn(),
                fb.can_extents(),
                fb.can_cache(),
                fb.is_rotational(),
                fb.pread(&mut buf, 504),
                fb.pread_lend(8, 0, &mut |_| true),
                fb.pwrite(b"x", 0, false),
                fb.flush(),
                fb.trim(1, 0, false),
                fb.zero(1, 0, ZeroFlags::default()),
                fb.cache(1, 0),
                fb.extents(512, 0, &mut e),
            );
            fb.close_connection(&info(!fb.plain()));
            (buf, e)
        };
        set_tls(false);
        let (buf, e) = all(&fb);
        assert_eq!(trip.calls.load(Ordering::SeqCst), 0);
        // The message is cut to 512 bytes.
        assert_eq!(buf, [b'x'; 8]);
        assert_eq!(e.as_slice(), &[(512, 0)]);
        assert_eq!(fb.size(), Ok(512));
        assert_eq!(
            fb.list_exports(),
            Ok(Some(vec![(String::new(), String::new())]))
        );
        assert_eq!(fb.pwrite(b"x", 0, false).unwrap_err().errno, EROFS);
        assert!(fb.pread(&mut [0u8; 2], 511).is_err());

        set_tls(true);
        all(&fb);
        // Each of the 24 calls went down.
        assert_eq!(trip.calls.load(Ordering::SeqCst), 24);
        set_tls(false);
    }
}
