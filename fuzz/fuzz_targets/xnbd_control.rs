//! The control protocol of xnbd-server's proxy (`xnbd::control`), as the
//! server reads a command line. Invariants: no panic, and a line that
//! reads as a request is written back (`Request::line`, what xnbd-bgctl
//! sends) as a line that reads as the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbd_server_bin::xnbd::control::Request;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Request::parse(line) {
        let again = Request::parse(&r.line());
        assert_eq!(again.as_ref(), Ok(&r), "{:?}", r.line());
    }
});
