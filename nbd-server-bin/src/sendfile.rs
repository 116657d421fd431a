//! Sending a READ's data straight from a file to the socket with
//! sendfile(2): the kernel moves the page cache's pages to the socket, and
//! the data never passes through our memory (nbdkit reads it into a
//! buffer and writes that).
//!
//! Used for plain (non-TLS) connections only, since TLS must encrypt
//! every byte in user space, and for reads of at least [`SENDFILE_MIN`]
//! bytes, below which the extra system call (the reply header is written
//! first, then the data is sent) costs more than the copy it saves.
//! `NBDKIT_NO_SENDFILE=1` turns it off, to compare the two paths, and
//! `NBDKIT_SENDFILE_MIN=BYTES` moves the threshold.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// The shortest read sent with sendfile(2); shorter ones are copied.
/// Measured (BENCHMARKS.md, "File plugin reads"): sendfile costs the
/// server less CPU per byte than copying in every run from 32 KiB up;
/// the two tie at 16 KiB, and sendfile costs more at 8 KiB and below
/// (it makes three system calls, the reply header, the size check and
/// sendfile, where copying makes two).
pub const SENDFILE_MIN: usize = 32 * 1024;

/// The most one sendfile(2) call moves on Linux.
const MAX_CHUNK: usize = 0x7fff_f000;

/// Whether `NBDKIT_NO_SENDFILE` turns sendfile off: any value but empty or
/// "0".
pub fn disabled_by_env() -> bool {
    std::env::var_os("NBDKIT_NO_SENDFILE").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The shortest read sent with sendfile(2): [`SENDFILE_MIN`], or
/// `NBDKIT_SENDFILE_MIN` (bytes), which bench/file-reads.sh sets to
/// measure both paths at every request size.
pub fn threshold() -> usize {
    std::env::var("NBDKIT_SENDFILE_MIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SENDFILE_MIN)
}

/// Sends a READ's reply: `header` (the simple reply, or the data chunk's
/// header), then `count` bytes of `file` at `offset`, as
/// [`send_file_range`] does. On a TCP socket the header is sent with
/// MSG_MORE, so that it leaves in the same segment as the data's start
/// rather than alone (connections have TCP_NODELAY).
pub fn send_reply(
    out: RawFd,
    header: &[u8],
    file: BorrowedFd<'_>,
    offset: u64,
    count: usize,
    works: &AtomicBool,
) -> io::Result<()> {
    send_more(out, header)?;
    send_file_range(out, file, offset, count, works)
}

/// Writes `data` whole, telling a socket that more follows.
fn send_more(out: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: sends from `data`, which has `data.len()` bytes.
        let n = unsafe {
            libc::send(
                out,
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            data = &data[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => wait_writable(out)?,
            // Not a socket (-s on a pipe): a plain write.
            Some(libc::ENOTSOCK) => return write_all(out, data),
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Sends `count` bytes of `file` at `offset` to `out` (a socket or a
/// pipe, blocking or not), after whatever was written to `out` before.
///
/// When the kernel cannot sendfile between these two (EINVAL, ENOSYS),
/// the rest is copied through a buffer instead, and `works` is cleared so
/// that the connection stops trying. An error means the data was not all
/// sent (the stream to the client is then cut short and the connection
/// must end); a file that ends before `offset + count` (truncated under
/// us) is such an error, `UnexpectedEof`: never are other bytes sent in
/// place of the file's.
pub fn send_file_range(
    out: RawFd,
    file: BorrowedFd<'_>,
    offset: u64,
    count: usize,
    works: &AtomicBool,
) -> io::Result<()> {
    let mut at = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut left = count;
    while left > 0 {
        // SAFETY: both descriptors are open for the call; `at` is ours.
        let n = unsafe { libc::sendfile(out, file.as_raw_fd(), &mut at, left.min(MAX_CHUNK)) };
        if n > 0 {
            left -= n as usize;
            continue;
        }
        if n == 0 {
            return Err(truncated());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => wait_writable(out)?,
            Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                works.store(false, Ordering::Relaxed);
                return copy_range(out, file, at as u64, left);
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file ended before the data sent for a read",
    )
}

/// The copying path, for descriptors sendfile(2) does not join.
fn copy_range(
    out: RawFd,
    file: BorrowedFd<'_>,
    mut offset: u64,
    mut left: usize,
) -> io::Result<()> {
    let mut buf = vec![0u8; left.min(256 * 1024)];
    while left > 0 {
        let want = left.min(buf.len());
        // SAFETY: reads at most `want` bytes into `buf`, which has them.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                want,
                offset as libc::off_t,
            )
        };
        match n {
            0 => return Err(truncated()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => {
                write_all(out, &buf[..n as usize])?;
                offset += n as u64;
                left -= n as usize;
            }
        }
    }
    Ok(())
}

fn write_all(out: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writes from `data`, which has `data.len()` bytes.
        let n = unsafe { libc::write(out, data.as_ptr().cast(), data.len()) };
        if n > 0 {
            data = &data[n as usize..];
            continue;
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => wait_writable(out)?,
            _ => return Err(e),
        }
    }
    Ok(())
}

/// For a non-blocking socket that is full: waits until it takes more.
fn wait_writable(out: RawFd) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd: out,
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd, ours.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn file_of(data: &[u8]) -> File {
        let mut f = crate::scratch::hidden_file(&std::env::temp_dir(), "sendfile-unit-").unwrap();
        f.write_all(data).unwrap();
        f
    }

    /// Sends a range to a non-blocking socket whose reader is slow, so
    /// that sendfile stops short and hits EAGAIN many times.
    #[test]
    fn partial_sends_on_a_non_blocking_socket() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect();
        let f = file_of(&data);
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut chunk = [0u8; 10_000];
            loop {
                let n = b.read(&mut chunk).unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&chunk[..n]);
                std::thread::yield_now();
            }
        });
        let works = AtomicBool::new(true);
        send_file_range(a.as_raw_fd(), f.as_fd(), 12_345, 2_900_000, &works).unwrap();
        drop(a);
        assert_eq!(reader.join().unwrap(), &data[12_345..12_345 + 2_900_000]);
        assert!(works.load(Ordering::Relaxed));
    }

    /// A file shorter than the range: an error after what the file had,
    /// never other bytes in place of the missing ones.
    #[test]
    fn a_short_file_is_an_error() {
        let f = file_of(&[5u8; 1000]);
        let (a, mut b) = UnixStream::pair().unwrap();
        let works = AtomicBool::new(true);
        let e = send_file_range(a.as_raw_fd(), f.as_fd(), 200, 4096, &works).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, [5u8; 800]);
    }

    /// A reply to a pipe (`-s` on a pipe): the header is written, not
    /// sent, and sendfile(2) fills the pipe.
    #[test]
    fn a_reply_into_a_pipe() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let f = file_of(&data);
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills two descriptors, which the Files own.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (mut r, w) = unsafe {
            use std::os::fd::FromRawFd;
            (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
        };
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            got
        });
        let works = AtomicBool::new(true);
        send_reply(w.as_raw_fd(), b"HEADER", f.as_fd(), 7, 250_000, &works).unwrap();
        drop(w);
        let got = t.join().unwrap();
        assert_eq!(&got[..6], b"HEADER");
        assert_eq!(&got[6..], &data[7..250_007]);
    }

    /// What the connection falls back to when sendfile(2) refuses the
    /// pair of descriptors: the same bytes, copied.
    #[test]
    fn the_copy_fallback_sends_the_same_bytes() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let f = file_of(&data);
        let (a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        copy_range(a.as_raw_fd(), f.as_fd(), 10, 99_000).unwrap();
        drop(a);
        assert_eq!(t.join().unwrap(), &data[10..99_010]);
    }
}
