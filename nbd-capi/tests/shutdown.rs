//! nbd_shutdown on a plain socket behaves as libnbd's: once NBD_CMD_DISC
//! is out the client shuts down its write side (so the server sees EOF
//! at once), and nbd_shutdown returns only after the server has closed.
//! The server here is a minimal fake on a socketpair, so that the test
//! can see the EOF and decide when to close.

mod common;

use common::*;
use nbd::*;
use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = 0x8000_0001;
const CMD_DISC: u16 = 2;

fn reply(s: &mut UnixStream, opt: u32, kind: u32, data: &[u8]) {
    let mut r = REPLY_MAGIC.to_be_bytes().to_vec();
    r.extend_from_slice(&opt.to_be_bytes());
    r.extend_from_slice(&kind.to_be_bytes());
    r.extend_from_slice(&(data.len() as u32).to_be_bytes());
    r.extend_from_slice(data);
    s.write_all(&r).unwrap();
}

/// Serves one handshake (every option but NBD_OPT_GO refused), expects
/// NBD_CMD_DISC, then EOF while the client is still in nbd_shutdown.
/// Returns whether nbd_shutdown had returned before we closed.
fn fake_server(mut s: UnixStream, returned: Arc<AtomicBool>) -> bool {
    s.write_all(b"NBDMAGICIHAVEOPT\0\x03").unwrap();
    let mut flags = [0u8; 4];
    s.read_exact(&mut flags).unwrap();
    loop {
        let mut h = [0u8; 16];
        s.read_exact(&mut h).unwrap();
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(h[12..16].try_into().unwrap()) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        if opt != OPT_GO {
            reply(&mut s, opt, REP_ERR_UNSUP, &[]);
            continue;
        }
        let mut info = 0u16.to_be_bytes().to_vec(); // NBD_INFO_EXPORT
        info.extend_from_slice(&(1u64 << 20).to_be_bytes());
        info.extend_from_slice(&1u16.to_be_bytes()); // HAS_FLAGS
        reply(&mut s, opt, REP_INFO, &info);
        reply(&mut s, opt, REP_ACK, &[]);
        break;
    }
    // A simple request header: NBD_CMD_DISC.
    let mut req = [0u8; 28];
    s.read_exact(&mut req).unwrap();
    assert_eq!(u16::from_be_bytes([req[6], req[7]]), CMD_DISC);
    // The client's write side is shut: EOF, not a hang.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = [0u8; 1];
    assert_eq!(s.read(&mut rest).unwrap(), 0, "expected EOF after DISC");
    // The client waits for us to close.
    std::thread::sleep(Duration::from_millis(200));
    let early = returned.load(Ordering::SeqCst);
    drop(s);
    early
}

#[test]
fn shutdown_half_closes_and_waits_for_the_server() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let returned = Arc::new(AtomicBool::new(false));
    let r2 = returned.clone();
    let server = std::thread::spawn(move || fake_server(theirs, r2));
    unsafe {
        let h = nbd_create();
        assert!(!h.is_null());
        assert_eq!(
            nbd_connect_socket(h, ours.into_raw_fd()),
            0,
            "{}",
            last_error()
        );
        assert_eq!(nbd_get_size(h), 1 << 20);
        assert_eq!(nbd_shutdown(h, 0), 0, "{}", last_error());
        returned.store(true, Ordering::SeqCst);
        assert_eq!(nbd_aio_is_closed(h), 1);
        nbd_close(h);
    }
    let returned_early = server.join().unwrap();
    assert!(
        !returned_early,
        "nbd_shutdown returned before the server closed"
    );
}
