//! The client against a hostile server: the first byte picks the client's
//! settings (option mode, structured replies, a meta context, strictness,
//! full info), the rest is what the server sends. Invariants: no panic,
//! no allocation over libFuzzer's -malloc_limit_mb, no endless loop, and
//! the same transcript whether the bytes arrive as the client asks for
//! them or cut into small pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbd_fuzz::client_script::run;
use nbd_fuzz::splits::Schedule;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, server)) = data.split_first() else {
        return;
    };
    let whole = run(mode, server, Schedule::Whole);
    let cut = run(mode, server, Schedule::drawn_from(data));
    assert_eq!(
        whole, cut,
        "the transcript depends on how the bytes were cut"
    );
});
