//! nbd_stats_*: the library's own counts against what went over the
//! socket, measured by a relay between the library and Debian's nbdkit,
//! and the chunk counts a known sequence of calls must give.

mod common;

use common::*;
use nbd::*;
use std::io::{Read, Write};
use std::os::fd::{IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

/// Copies `from` to `to` until EOF, then ends `to`'s writing side;
/// returns the bytes copied.
fn pump(mut from: UnixStream, mut to: UnixStream) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    if to.write_all(&buf[..k]).is_err() {
                        break;
                    }
                    n += k as u64;
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
        n
    })
}

/// `nbdkit -s ARGS` behind a relay that counts each direction. Returns
/// the library's end of the relay, the server, and the two counters
/// (library to server, server to library), which finish once both sides
/// have closed.
fn relayed_nbdkit(
    args: &[&str],
) -> (
    OwnedFd,
    std::process::Child,
    JoinHandle<u64>,
    JoinHandle<u64>,
) {
    let (lib_end, relay_lib) = UnixStream::pair().unwrap();
    let (relay_srv, srv_end) = UnixStream::pair().unwrap();
    let srv_out: OwnedFd = srv_end.try_clone().unwrap().into();
    let srv_in: OwnedFd = srv_end.into();
    let child = Command::new(NBDKIT)
        .arg("-s")
        .args(args)
        .stdin(Stdio::from(srv_in))
        .stdout(Stdio::from(srv_out))
        .spawn()
        .unwrap();
    let up = pump(
        relay_lib.try_clone().unwrap(),
        relay_srv.try_clone().unwrap(),
    );
    let down = pump(relay_srv, relay_lib);
    (lib_end.into(), child, up, down)
}

struct Stats {
    bytes_sent: u64,
    chunks_sent: u64,
    bytes_received: u64,
    chunks_received: u64,
}

fn stats(h: *mut nbd_handle) -> Stats {
    unsafe {
        Stats {
            bytes_sent: nbd_stats_bytes_sent(h),
            chunks_sent: nbd_stats_chunks_sent(h),
            bytes_received: nbd_stats_bytes_received(h),
            chunks_received: nbd_stats_chunks_received(h),
        }
    }
}

/// A request header: magic, flags, type, cookie, offset, length.
const REQUEST: u64 = 28;
/// A simple reply: magic, error, cookie.
const SIMPLE_REPLY: u64 = 16;
/// A structured reply chunk's header: magic, flags, type, cookie, length.
const CHUNK_HEADER: u64 = 20;
/// An option's header: magic, option, length.
const OPTION: u64 = 16;

#[test]
fn counts_match_the_wire_and_the_protocol() {
    if !have_nbdkit() {
        eprintln!("skipped: {NBDKIT} is not installed");
        return;
    }
    let (sock, mut child, up, down) = relayed_nbdkit(&["memory", "1M"]);
    let h = unsafe { nbd_create() };
    assert!(!h.is_null());
    let s = stats(h);
    assert_eq!(
        (
            s.bytes_sent,
            s.chunks_sent,
            s.bytes_received,
            s.chunks_received
        ),
        (0, 0, 0, 0),
        "before connecting"
    );
    let r = unsafe { nbd_connect_socket(h, sock.into_raw_fd()) };
    assert_eq!(r, 0, "{}", last_error());
    unsafe { assert_eq!(nbd_get_structured_replies_negotiated(h), 1) };

    // The handshake: we send the client flags (not a chunk), then
    // EXTENDED_HEADERS (which nbdkit 1.32 refuses), STRUCTURED_REPLY and
    // GO, each one chunk; GO's payload is the export name's length (4),
    // the empty name, the number of info requests (2) and
    // NBD_INFO_BLOCK_SIZE (2).
    let s = stats(h);
    assert_eq!(s.chunks_sent, 3);
    assert_eq!(s.bytes_sent, 4 + OPTION + OPTION + (OPTION + 4 + 2 + 2));
    // Received: the greeting is the only chunk; option replies are not
    // counted as chunks (as in libnbd). The greeting is 18 bytes
    // (NBDMAGIC, IHAVEOPT, handshake flags); the option replies follow.
    assert_eq!(s.chunks_received, 1);
    assert!(s.bytes_received > 18 + 20 * 3, "{}", s.bytes_received);
    let handshake = s;

    // A read (with structured replies: one OFFSET_DATA chunk, its offset
    // then the data), a write, a flush: one request and one reply each.
    let mut buf = vec![0u8; 4096];
    let data = vec![0x5au8; 512];
    unsafe {
        assert_eq!(nbd_pread(h, buf.as_mut_ptr().cast(), 4096, 0, 0), 0);
        let s = stats(h);
        assert_eq!(s.chunks_sent, handshake.chunks_sent + 1);
        assert_eq!(s.bytes_sent, handshake.bytes_sent + REQUEST);
        assert_eq!(s.chunks_received, handshake.chunks_received + 1);
        assert_eq!(
            s.bytes_received,
            handshake.bytes_received + CHUNK_HEADER + 8 + 4096
        );
        assert_eq!(nbd_pwrite(h, data.as_ptr().cast(), 512, 512, 0), 0);
        assert_eq!(nbd_flush(h, 0), 0);
        let s = stats(h);
        assert_eq!(s.chunks_sent, handshake.chunks_sent + 3);
        assert_eq!(
            s.bytes_sent,
            handshake.bytes_sent + 3 * REQUEST + 512,
            "a write's payload is part of its chunk"
        );
        assert_eq!(s.chunks_received, handshake.chunks_received + 3);
        assert_eq!(
            s.bytes_received,
            handshake.bytes_received + CHUNK_HEADER + 8 + 4096 + 2 * SIMPLE_REPLY
        );
        // NBD_CMD_DISC is a request too, with no reply.
        assert_eq!(nbd_shutdown(h, 0), 0, "{}", last_error());
    }
    // The counters outlive the connection.
    let end = stats(h);
    assert_eq!(end.chunks_sent, handshake.chunks_sent + 4);
    assert_eq!(end.chunks_received, handshake.chunks_received + 3);
    unsafe { nbd_close(h) };
    let on_wire_up = up.join().unwrap();
    let on_wire_down = down.join().unwrap();
    let _ = child.wait();
    assert_eq!(
        end.bytes_sent, on_wire_up,
        "bytes sent, ours vs the relay's"
    );
    assert_eq!(
        end.bytes_received, on_wire_down,
        "bytes received, ours vs the relay's"
    );
}
