//! Replies collected while requests are being read, sent with one write.
//!
//! A thread serving a connection's small requests inline (see conn.rs)
//! appends each reply here instead of writing it at once, and sends the
//! batch when it is about to wait for the client (its read buffer is
//! empty), when the batch has grown past [`BATCH_LIMIT`], or before it
//! hands the connection's reading over to another thread. One `write` of
//! the contiguous batch then carries every reply to the requests that
//! arrived together: one system call, and over TLS one pass through the
//! session's record writer, instead of one per request. No reply waits
//! longer than it takes to serve the requests already read.

use std::io::{self, Write};

/// A batch at least this large is sent before the next request is read:
/// 16 replies of 4 KiB share one write, and the client gets the first of
/// them after 16 requests' service time at most, so it can send more
/// while the server serves the rest (with a 256 KiB limit a client that
/// sent 64 requests at once waited for all 64 before it could refill).
pub const BATCH_LIMIT: usize = 64 * 1024;

/// The encoded replies not yet sent: the first `len` bytes of `buf`.
/// `buf` only grows (zero-filled once), so that appending a READ's data
/// space costs no fill per request.
#[derive(Default)]
pub struct ReplyBatch {
    buf: Vec<u8>,
    len: usize,
}

impl ReplyBatch {
    pub fn new() -> ReplyBatch {
        ReplyBatch {
            // Room for a last reply of up to 64 KiB past the limit.
            buf: vec![0; BATCH_LIMIT + 64 * 1024 + 64],
            len: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch should be sent before anything more is added.
    pub fn is_full(&self) -> bool {
        self.len >= BATCH_LIMIT
    }

    /// Appends `bytes` (a reply header, or a whole reply).
    pub fn push(&mut self, bytes: &[u8]) {
        self.grow(bytes.len()).copy_from_slice(bytes);
    }

    /// Appends `n` bytes for the caller to fill (a READ's data, read by
    /// the backend straight into the batch) and returns them. They hold
    /// whatever an earlier batch left there.
    pub fn grow(&mut self, n: usize) -> &mut [u8] {
        let at = self.len;
        if self.buf.len() < at + n {
            self.buf.resize(at + n, 0);
        }
        self.len = at + n;
        &mut self.buf[at..at + n]
    }

    /// Drops everything appended after the batch was `mark` bytes long:
    /// a reply begun before its request failed.
    pub fn truncate(&mut self, mark: usize) {
        self.len = self.len.min(mark);
    }

    /// The bytes to send.
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Sends the whole batch to `w` and empties it. On an error the batch
    /// is emptied too: the connection is over, nothing more goes out.
    pub fn flush_to(&mut self, w: &mut impl Write) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let r = write_all(w, self.bytes());
        self.len = 0;
        r
    }
}

fn write_all(w: &mut impl Write, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match w.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `step` bytes per call, fails with
    /// EINTR every other call, and counts its calls.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = b.len().min(self.step);
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn many_replies_go_out_in_one_write_in_order() {
        let mut b = ReplyBatch::new();
        let mut want = Vec::new();
        for i in 0..64u8 {
            let reply = [i; 16];
            b.push(&reply);
            want.extend_from_slice(&reply);
        }
        let mut w = Trickle {
            got: Vec::new(),
            step: usize::MAX,
            calls: 0,
        };
        b.flush_to(&mut w).unwrap();
        assert_eq!(w.calls, 1);
        assert_eq!(w.got, want);
        assert!(b.is_empty());
        // An empty batch writes nothing.
        b.flush_to(&mut w).unwrap();
        assert_eq!(w.calls, 1);
    }

    #[test]
    fn short_and_interrupted_writes_send_everything() {
        let mut b = ReplyBatch::new();
        b.push(b"header");
        b.grow(5).copy_from_slice(b"data!");
        let mut w = Trickle {
            got: Vec::new(),
            step: 3,
            calls: 0,
        };
        b.flush_to(&mut w).unwrap();
        assert_eq!(w.got, b"headerdata!");
        assert!(b.is_empty());
    }

    #[test]
    fn a_failed_reply_is_taken_back() {
        let mut b = ReplyBatch::new();
        b.push(b"first");
        let mark = b.len();
        b.push(b"second-header");
        b.grow(4096);
        b.truncate(mark);
        b.push(b"error");
        assert_eq!(b.bytes(), b"firsterror");
    }

    #[test]
    fn full_at_the_limit() {
        let mut b = ReplyBatch::new();
        b.grow(BATCH_LIMIT - 1);
        assert!(!b.is_full());
        b.push(b"x");
        assert!(b.is_full());
    }

    #[test]
    fn a_write_error_empties_the_batch() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut b = ReplyBatch::new();
        b.push(b"lost");
        assert_eq!(
            b.flush_to(&mut Broken).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        assert!(b.is_empty());
    }
}
