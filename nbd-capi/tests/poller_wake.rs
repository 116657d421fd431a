//! A thread blocked in poll(2) waiting for its reply is woken when
//! another thread queues a write too big to send at once, and sends the
//! rest. The fake server (on a socketpair) answers the first thread's
//! read only after it has the whole write, so without the wake-up both
//! would wait for ever (the server's read timeout turns that into a
//! failure). Guards the eventfd that the driver makes only once
//! transmission has started (`Connection::wake_fd`).

mod common;

use common::*;
use nbd::*;
use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::raw::c_void;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = 0x8000_0001;
const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const EXPORT_SIZE: u64 = 64 << 20;
/// Far more than a Unix socket's buffers hold.
const WRITE_LEN: usize = 16 << 20;
const READ_LEN: usize = 512;

fn opt_reply(s: &mut UnixStream, opt: u32, kind: u32, data: &[u8]) {
    let mut r = REPLY_MAGIC.to_be_bytes().to_vec();
    r.extend_from_slice(&opt.to_be_bytes());
    r.extend_from_slice(&kind.to_be_bytes());
    r.extend_from_slice(&(data.len() as u32).to_be_bytes());
    r.extend_from_slice(data);
    s.write_all(&r).unwrap();
}

fn simple_reply(s: &mut UnixStream, cookie: &[u8], data: &[u8]) {
    let mut r = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
    r.extend_from_slice(&0u32.to_be_bytes());
    r.extend_from_slice(cookie);
    r.extend_from_slice(data);
    s.write_all(&r).unwrap();
}

/// A handshake refusing every option but NBD_OPT_GO (so: simple replies),
/// then: the read's request, a word to the test that it is in, the whole
/// write, and only then the answers to both.
fn fake_server(mut s: UnixStream, read_is_in: mpsc::Sender<()>) {
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
            opt_reply(&mut s, opt, REP_ERR_UNSUP, &[]);
            continue;
        }
        let mut info = 0u16.to_be_bytes().to_vec(); // NBD_INFO_EXPORT
        info.extend_from_slice(&EXPORT_SIZE.to_be_bytes());
        info.extend_from_slice(&1u16.to_be_bytes()); // HAS_FLAGS, writable
        opt_reply(&mut s, opt, REP_INFO, &info);
        opt_reply(&mut s, opt, REP_ACK, &[]);
        break;
    }
    let mut read = [0u8; 28];
    s.read_exact(&mut read).unwrap();
    assert_eq!(u16::from_be_bytes([read[6], read[7]]), CMD_READ);
    read_is_in.send(()).unwrap();
    // Not a timing assertion: only turns a deadlock into a failure.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut write = [0u8; 28];
    s.read_exact(&mut write).unwrap();
    assert_eq!(u16::from_be_bytes([write[6], write[7]]), CMD_WRITE);
    let mut payload = vec![0u8; WRITE_LEN];
    s.read_exact(&mut payload)
        .expect("the rest of the write never came: the poller was not woken");
    assert!(payload.iter().all(|&b| b == 0x5a));
    simple_reply(&mut s, &write[8..16], &[]);
    simple_reply(&mut s, &read[8..16], &[0xa5; READ_LEN]);
    // Until the client closes.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

struct Handle(*mut nbd_handle);
// SAFETY: libnbd handles may be used from any thread; the handle lives
// until both threads are done with it.
unsafe impl Send for Handle {}

#[test]
fn a_big_write_from_another_thread_wakes_the_poller() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || fake_server(theirs, tx));
    let h = unsafe { nbd_create() };
    assert!(!h.is_null());
    assert_eq!(
        unsafe { nbd_connect_socket(h, ours.into_raw_fd()) },
        0,
        "{}",
        last_error()
    );
    let reader = {
        let h = Handle(h);
        std::thread::spawn(move || {
            let h = h;
            let mut buf = vec![0u8; READ_LEN];
            let r = unsafe { nbd_pread(h.0, buf.as_mut_ptr().cast::<c_void>(), READ_LEN, 0, 0) };
            assert_eq!(r, 0, "pread: {}", last_error());
            assert!(buf.iter().all(|&b| b == 0xa5));
        })
    };
    rx.recv().unwrap();
    let data = vec![0x5au8; WRITE_LEN];
    let none = nbd_completion_callback {
        callback: None,
        user_data: std::ptr::null_mut(),
        free: None,
    };
    let cookie =
        unsafe { nbd_aio_pwrite(h, data.as_ptr().cast::<c_void>(), WRITE_LEN, 0, none, 0) };
    assert!(cookie > 0, "aio_pwrite: {}", last_error());
    // Only the reader's thread drives the connection now.
    reader.join().unwrap();
    while unsafe { nbd_aio_command_completed(h, cookie as u64) } == 0 {
        assert_eq!(unsafe { nbd_poll(h, -1) }, 1, "{}", last_error());
    }
    unsafe { nbd_close(h) };
    server.join().unwrap();
}
