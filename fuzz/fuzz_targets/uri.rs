//! The NBD URI parser (`nbd_core::uri`). Invariants: no panic; what parses
//! and can be rendered (as nbd_get_uri renders a connection back) parses
//! again to the same endpoint, export name and TLS mode; percent-encoding
//! then decoding gives back the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbd_core::uri::{self, Permitted, UriParts};

fuzz_target!(|data: &[u8]| {
    let enc = uri::percent_encode(data, b"/:@");
    assert_eq!(uri::percent_decode(&enc).as_deref(), Some(data));
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = uri::parse_query(s);
    }

    let Ok(u) = uri::parse(data) else {
        return;
    };
    let _ = uri::check_allowed(&u, &Permitted::DEFAULT);
    let parts = UriParts {
        tls: u.tls,
        user: u.user.as_ref().map(|c| c.to_bytes()),
        export_name: u.export_name.to_bytes(),
        tls_certificates: u.tls_certificates.as_ref().map(|c| c.to_bytes()),
        tls_psk_file: u.tls_psk_file.as_ref().map(|c| c.to_bytes()),
    };
    let Ok(rendered) = uri::render(&u.endpoint, &parts) else {
        return;
    };
    let again = uri::parse(rendered.as_bytes())
        .unwrap_or_else(|e| panic!("{rendered:?}, rendered from {u:?}, does not parse: {e}"));
    assert_eq!(again.endpoint, u.endpoint, "{rendered:?}");
    assert_eq!(again.export_name, u.export_name, "{rendered:?}");
    assert_eq!(again.tls, u.tls, "{rendered:?}");
    assert_eq!(again.user, u.user, "{rendered:?}");
});
