//! Every decoder of `nbd_core::wire` on the same bytes. Invariants: no
//! panic, and where a message has an encoder, what decodes re-encodes to
//! the same bytes (a decoder that accepts what it would never write, or
//! loses part of what it read, is caught here).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbd_core::wire::consts::chunk;
use nbd_core::wire::handshake::{
    parse_export_name_reply, parse_greeting_prefix, parse_oldstyle_rest, EXPORT_NAME_REPLY_LEN,
    GREETING_PREFIX_LEN, OLDSTYLE_REST_LEN,
};
use nbd_core::wire::option::{
    encode_rep_meta_context, encode_rep_server, parse_rep_meta_context, parse_rep_server,
    GoRequest, InfoReply, MetaContextRequest, OptionHeader, OptionReplyHeader, OPTION_HEADER_LEN,
    OPTION_REPLY_HEADER_LEN,
};
use nbd_core::wire::reply::{
    parse_block_status, parse_error_chunk, parse_offset_hole, parse_reply_start,
};
use nbd_core::wire::request::{RequestHeader, REQUEST_HEADER_LEN};

/// The first `N` bytes, when there are that many.
fn head<const N: usize>(d: &[u8]) -> Option<&[u8; N]> {
    d.get(..N).map(|s| s.try_into().unwrap())
}

fuzz_target!(|data: &[u8]| {
    // Fixed-size headers.
    if let Some(b) = head::<OPTION_HEADER_LEN>(data) {
        if let Ok(h) = OptionHeader::decode(b) {
            let mut v = Vec::new();
            h.encode(&mut v);
            assert_eq!(&v[..], &b[..]);
        }
    }
    if let Some(b) = head::<OPTION_REPLY_HEADER_LEN>(data) {
        if let Ok(h) = OptionReplyHeader::decode(b) {
            let mut v = Vec::new();
            h.encode(&mut v);
            assert_eq!(&v[..], &b[..]);
        }
    }
    if let Some(b) = head::<REQUEST_HEADER_LEN>(data) {
        if let Ok(h) = RequestHeader::decode(b) {
            assert_eq!(&h.encode(), b);
            let _ = (h.command(), h.cmd_flags());
        }
    }
    if let Some(b) = head::<16>(data) {
        let _ = parse_reply_start(b);
    }
    if let Some(b) = head::<GREETING_PREFIX_LEN>(data) {
        let _ = parse_greeting_prefix(b);
    }
    if let Some(b) = head::<OLDSTYLE_REST_LEN>(data) {
        let _ = parse_oldstyle_rest(b);
    }
    if let Some(b) = head::<EXPORT_NAME_REPLY_LEN>(data) {
        let _ = parse_export_name_reply(b);
    }

    // Option payloads.
    if let Ok(g) = GoRequest::decode(data) {
        assert_eq!(g.encode(), data);
    }
    if let Ok(m) = MetaContextRequest::decode(data) {
        assert_eq!(m.encode(), data);
    }
    if let Ok(i) = InfoReply::decode(data) {
        if !matches!(i, InfoReply::Unknown(_)) {
            assert_eq!(i.encode(), data);
        }
    }
    if let Ok((name, description)) = parse_rep_server(data) {
        assert_eq!(encode_rep_server(name, description), data);
    }
    if let Ok((id, name)) = parse_rep_meta_context(data) {
        assert_eq!(encode_rep_meta_context(id, name), data);
    }

    // Chunk payloads.
    for kind in [chunk::ERROR, chunk::ERROR_OFFSET, 0x8005] {
        if let Ok(e) = parse_error_chunk(kind, data) {
            assert!(e.message.len() <= data.len());
        }
    }
    let _ = parse_offset_hole(data);
    if let Ok((_, extents)) = parse_block_status(data) {
        assert_eq!(extents.count(), (data.len() - 4) / 8);
    }
});
