//! The server against a hostile client: the real connection code
//! (`nbd_server_bin::conn::serve`) over the real backend chain with the
//! memory plugin, on a socket pair. The first byte picks the server's
//! settings (read-only, --no-sr, --oldstyle, one worker or four, --no-eh),
//! the
//! rest is what the client sends, after which the client half-closes.
//! Invariants: no panic, no allocation over -malloc_limit_mb, the server
//! ends, and every request it accepted is answered exactly once (see
//! `nbd_fuzz::server_check`).
#![no_main]

use std::fs::File;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Once};

use libfuzzer_sys::fuzz_target;
use nbd_core::server::backend::Peer;
use nbd_core::wire::consts::handshake_flags;
use nbd_server_bin::chain;
use nbd_server_bin::conn::{serve, Server};

static INIT: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    INIT.call_once(|| {
        // libFuzzer's main is not Rust's: a write to a closed socket
        // would kill the process instead of failing.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        nbd_server_bin::log::set_dest(nbd_server_bin::cli::LogDest::Null);
    });
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let readonly = mode & 1 != 0;
    let oldstyle = mode & 4 != 0;
    let threads = if mode & 8 != 0 { 4 } else { 1 };
    let chain =
        chain::build("memory", &[], &["size=1M".to_string()], readonly).expect("the memory plugin");
    let srv = Arc::new(Server {
        chain,
        readonly,
        export_name: String::new(),
        threads,
        handshake_flags: handshake_flags::ALL,
        no_sr: mode & 2 != 0,
        no_eh: mode & 16 != 0,
        oldstyle,
        limits: Default::default(),
    });

    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let server = std::thread::spawn(move || {
        let wr = File::from(OwnedFd::from(theirs));
        let rd = wr.try_clone().expect("dup");
        serve(srv, rd, wr, 1, Peer::Other);
    });
    let mut to_server = ours.try_clone().expect("dup");
    let client_input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // The server may hang up before reading everything.
        let _ = to_server.write_all(&client_input);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let mut output = Vec::new();
    let mut ours = ours;
    let _ = ours.read_to_end(&mut output);
    writer.join().expect("writer");
    server.join().expect("server");

    if let Err(e) = nbd_fuzz::server_check::check(input, &output, oldstyle, threads > 1) {
        panic!("{e}");
    }
});
