//! Our nbdkit binary, driven by a raw client: round trips on both plugins,
//! block status, and hostile input (after which a second client must still
//! be served).

mod common;
mod psk;

use std::io::Write;

use common::*;
use nbd_core::errno::host::{EINVAL, ENOSPC, EPERM};
use nbd_core::limits::{MAX_OPTIONS, MAX_OPTION_LEN, MAX_REQUEST_LEN};
use nbd_core::wire::consts::{allocation, cmd, cmd_flags, opt, rep, tx_flags};
use nbd_core::wire::option::{GoRequest, OptionHeader};
use nbd_core::wire::request::RequestHeader;

const HZ: u32 = allocation::HOLE | allocation::ZERO;

fn round_trip(c: &mut Client) {
    let size = c.size;
    let data = pattern(300_000, 1);
    c.write(4096, &data);
    assert_eq!(c.read(4096, data.len() as u32), data);
    // FUA write, flush.
    let r = c.cmd(cmd::WRITE, cmd_flags::FUA, 0, 512, &[9u8; 512]);
    assert_eq!(r.error, 0);
    assert_eq!(c.cmd(cmd::FLUSH, 0, 0, 0, &[]).error, 0);
    assert_eq!(c.read(0, 512), vec![9u8; 512]);
    // Trim (contents unspecified afterwards), zero with and without holes.
    assert_eq!(c.cmd(cmd::TRIM, 0, 65536, 65536, &[]).error, 0);
    assert_eq!(c.cmd(cmd::WRITE_ZEROES, 0, 4096, 10_000, &[]).error, 0);
    assert_eq!(
        c.cmd(cmd::WRITE_ZEROES, cmd_flags::NO_HOLE, 200_000, 1000, &[])
            .error,
        0
    );
    let back = c.read(4096, 300_000);
    assert_eq!(back[..10_000], vec![0u8; 10_000][..]);
    assert_eq!(back[200_000 - 4096..201_000 - 4096], vec![0u8; 1000][..]);
    assert_eq!(back[201_000 - 4096..], data[201_000 - 4096..]);
    // Last byte, cache.
    c.write(size - 1, &[7]);
    assert_eq!(c.read(size - 1, 1), vec![7]);
    assert_eq!(c.cmd(cmd::CACHE, 0, 0, 4096, &[]).error, 0);
    // Pipelined requests come back complete (in any order).
    let mut cookies = Vec::new();
    for i in 0..32u64 {
        cookies.push(c.send(cmd::READ, 0, i * 4096, 4096, &[]));
    }
    for _ in 0..32 {
        let (ck, r) = c.recv();
        assert!(cookies.contains(&ck));
        assert_eq!(r.error, 0);
        assert_eq!(r.data.len(), 4096);
    }
}

#[test]
fn memory_round_trip_structured_and_simple() {
    let srv = Server::start(&["memory", "size=1M"]);
    for structured in [true, false] {
        let mut c = Client::connect(srv.raw(), structured, structured);
        assert_eq!(c.size, 1 << 20);
        let want = tx_flags::HAS_FLAGS
            | tx_flags::SEND_FLUSH
            | tx_flags::SEND_FUA
            | tx_flags::SEND_TRIM
            | tx_flags::SEND_WRITE_ZEROES
            | tx_flags::CAN_MULTI_CONN
            | tx_flags::SEND_CACHE
            | tx_flags::SEND_FAST_ZERO;
        let df = if structured { tx_flags::SEND_DF } else { 0 };
        assert_eq!(c.flags, want | df);
        round_trip(&mut c);
        c.disconnect();
    }
}

#[test]
fn file_round_trip() {
    let dir = TempDir::new("file");
    let path = dir.path().join("disk.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let srv = Server::start(&["file", path.to_str().unwrap()]);
    let mut c = srv.client();
    round_trip(&mut c);
    let data = pattern(8192, 5);
    c.write(500_000, &data);
    assert_eq!(c.cmd(cmd::FLUSH, 0, 0, 0, &[]).error, 0);
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk.len(), 1 << 20);
    assert_eq!(&on_disk[500_000..508_192], &data[..]);
    c.disconnect();
}

#[test]
fn block_status_sparse_memory() {
    let srv = Server::start(&["memory", "1T"]);
    let mut c = srv.client();
    assert_eq!(c.size, 1 << 40);
    c.write(1 << 20, &[1u8; 65536]);
    let r = c.cmd(cmd::BLOCK_STATUS, 0, 0, 4 << 20, &[]);
    assert_eq!(r.error, 0);
    assert_eq!(
        r.extents,
        vec![(1 << 20, HZ), (65536, 0), ((3 << 20) - 65536, HZ)]
    );
    let r = c.cmd(cmd::BLOCK_STATUS, cmd_flags::REQ_ONE, 0, 4 << 20, &[]);
    assert_eq!(r.extents, vec![(1 << 20, HZ)]);
    // Zeroing deallocates.
    assert_eq!(c.cmd(cmd::WRITE_ZEROES, 0, 1 << 20, 65536, &[]).error, 0);
    let r = c.cmd(cmd::BLOCK_STATUS, 0, 0, 4 << 20, &[]);
    assert_eq!(r.extents, vec![(4 << 20, HZ)]);
    // Past the end, and without the context.
    let r = c.cmd(cmd::BLOCK_STATUS, 0, (1 << 40) - 1, 2, &[]);
    assert_eq!(r.error, EINVAL as u32);
    let mut c2 = Client::connect(srv.raw(), true, false);
    assert_eq!(
        c2.cmd(cmd::BLOCK_STATUS, 0, 0, 512, &[]).error,
        EINVAL as u32
    );
}

#[test]
fn block_status_sparse_file() {
    let dir = TempDir::new("sparse");
    let path = dir.path().join("sparse.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(8 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[3u8; 1 << 20], 2 << 20).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let srv = Server::start(&["file", &format!("file={}", path.display())]);
    let mut c = srv.client();
    let r = c.cmd(cmd::BLOCK_STATUS, 0, 0, 8 << 20, &[]);
    assert_eq!(r.error, 0);
    assert_eq!(r.extents, vec![(2 << 20, HZ), (1 << 20, 0), (5 << 20, HZ)]);
    // Trim punches a hole.
    assert_eq!(c.cmd(cmd::TRIM, 0, 2 << 20, 1 << 20, &[]).error, 0);
    let r = c.cmd(cmd::BLOCK_STATUS, 0, 0, 8 << 20, &[]);
    assert_eq!(r.extents, vec![(8 << 20, HZ)]);
}

/// After hostile input on one connection, a fresh client still works.
fn second_client_works(srv: &mut Server) {
    srv.still_alive();
    let mut c = srv.client();
    c.write(0, b"still here");
    assert_eq!(c.read(0, 10), b"still here");
    c.disconnect();
}

#[test]
fn bad_option_magic_closes() {
    let mut srv = Server::start(&["memory", "1M"]);
    let mut s = srv.raw();
    greet(&mut s, 3);
    s.write_all(&[0x55u8; 16]).unwrap();
    assert!(is_closed(&mut s));
    second_client_works(&mut srv);
}

#[test]
fn bad_request_magic_closes() {
    let mut srv = Server::start(&["memory", "1M"]);
    let mut c = srv.client();
    c.s.write_all(&[0xaau8; 28]).unwrap();
    assert!(is_closed(&mut c.s));
    second_client_works(&mut srv);
}

#[test]
fn unknown_client_flags_close() {
    let mut srv = Server::start(&["memory", "1M"]);
    let mut s = srv.raw();
    greet(&mut s, 1 << 7);
    assert!(is_closed(&mut s));
    second_client_works(&mut srv);
}

#[test]
fn too_long_option_is_refused() {
    let mut srv = Server::start(&["memory", "1M"]);
    let mut s = srv.raw();
    greet(&mut s, 3);
    let len = MAX_OPTION_LEN + 1;
    let mut o = Vec::new();
    OptionHeader {
        option: opt::LIST,
        len: len as u32,
    }
    .encode(&mut o);
    o.resize(16 + len, 0);
    s.write_all(&o).unwrap();
    let (o, t, _) = option_reply(&mut s);
    assert_eq!((o, t), (opt::LIST, rep::ERR_TOO_BIG));
    // The stream is still in sync: LIST works.
    send_option(&mut s, opt::LIST, &[]);
    let (_, t, p) = option_reply(&mut s);
    assert_eq!(t, rep::SERVER);
    assert_eq!(p, be32(0));
    assert_eq!(option_reply(&mut s).1, rep::ACK);
    second_client_works(&mut srv);
}

#[test]
fn too_many_options_close() {
    let mut srv = Server::start(&["memory", "1M"]);
    let mut s = srv.raw();
    greet(&mut s, 3);
    for _ in 0..MAX_OPTIONS {
        send_option(&mut s, 1000, &[]);
        assert_eq!(option_reply(&mut s).1, rep::ERR_UNSUP);
    }
    // The server has hung up: this write may fail.
    let _ = s.write_all(&[0u8; 16]);
    assert!(is_closed(&mut s));
    second_client_works(&mut srv);
}

#[test]
fn long_export_name_is_invalid() {
    let mut srv = Server::start(&["memory", "1M"]);
    let mut s = srv.raw();
    greet(&mut s, 3);
    let name = vec![b'n'; 5000];
    let g = GoRequest {
        export_name: &name,
        info_requests: vec![],
    }
    .encode();
    send_option(&mut s, opt::GO, &g);
    assert_eq!(option_reply(&mut s).1, rep::ERR_INVALID);
    send_option(&mut s, opt::EXPORT_NAME, &name);
    assert!(is_closed(&mut s));
    second_client_works(&mut srv);
}

#[test]
fn request_errors_keep_the_connection() {
    let mut srv = Server::start(&["memory", "1M"]);
    let mut c = srv.client();
    let size = c.size;
    // Past the end.
    assert_eq!(c.cmd(cmd::READ, 0, size - 10, 20, &[]).error, EINVAL as u32);
    let r = c.cmd(cmd::WRITE, 0, size - 1, 2, &[1, 2]);
    assert_eq!(r.error, ENOSPC as u32);
    assert_eq!(
        c.cmd(cmd::WRITE_ZEROES, 0, size, 1, &[]).error,
        ENOSPC as u32
    );
    // Unknown command, bad flags.
    assert_eq!(c.cmd(42, 0, 0, 0, &[]).error, EINVAL as u32);
    assert_eq!(c.cmd(cmd::READ, 1 << 9, 0, 1, &[]).error, EINVAL as u32);
    assert_eq!(
        c.cmd(cmd::WRITE, cmd_flags::REQ_ONE, 0, 1, &[0]).error,
        EINVAL as u32
    );
    // Too large: READ refused (a WRITE that long closes: tests/limits.rs).
    let r = c.cmd(cmd::READ, 0, 0, MAX_REQUEST_LEN + 1, &[]);
    assert_eq!(r.error, EINVAL as u32);
    assert!(!r.message.is_empty());
    c.write(0, b"in sync");
    assert_eq!(c.read(0, 7), b"in sync");
    c.disconnect();
    second_client_works(&mut srv);
}

#[test]
fn write_to_read_only_export_is_drained() {
    let mut srv = Server::start(&["-r", "memory", "1M"]);
    let mut c = srv.client();
    assert_ne!(c.flags & tx_flags::READ_ONLY, 0);
    let r = c.cmd(cmd::WRITE, 0, 0, 65536, &[1u8; 65536]);
    assert_eq!(r.error, EPERM as u32);
    assert_eq!(c.cmd(cmd::TRIM, 0, 0, 512, &[]).error, EPERM as u32);
    assert_eq!(c.cmd(cmd::WRITE_ZEROES, 0, 0, 512, &[]).error, EPERM as u32);
    assert_eq!(c.read(0, 16), vec![0u8; 16]);
    c.disconnect();
    srv.still_alive();
}

#[test]
fn huge_write_closes() {
    let mut srv = Server::start(&["memory", "1G"]);
    let mut c = srv.client();
    let h = RequestHeader {
        flags: 0,
        kind: cmd::WRITE,
        cookie: 1,
        offset: 0,
        length: u64::from(u32::MAX),
    };
    c.s.write_all(&h.encode()).unwrap();
    assert!(is_closed(&mut c.s));
    second_client_works(&mut srv);
}

#[test]
fn hang_up_mid_payload() {
    let mut srv = Server::start(&["memory", "1M"]);
    {
        let mut c = srv.client();
        let h = RequestHeader {
            flags: 0,
            kind: cmd::WRITE,
            cookie: 1,
            offset: 0,
            length: 65536,
        };
        c.s.write_all(&h.encode()).unwrap();
        c.s.write_all(&[5u8; 1000]).unwrap();
        // Dropped here: the server sees EOF in the middle of the payload.
    }
    // And a hang-up in the middle of the handshake.
    {
        let mut s = srv.raw();
        greet(&mut s, 3);
        s.write_all(&[0x49, 0x48]).unwrap();
    }
    second_client_works(&mut srv);
}

#[test]
fn list_and_info() {
    let srv = Server::start(&["-e", "disk", "memory", "1M"]);
    let mut s = srv.raw();
    greet(&mut s, 3);
    send_option(&mut s, opt::LIST, &[]);
    let (_, t, p) = option_reply(&mut s);
    assert_eq!(t, rep::SERVER);
    assert_eq!(&p[4..], b"disk");
    assert_eq!(option_reply(&mut s).1, rep::ACK);
    send_option(&mut s, opt::STARTTLS, &[]);
    assert_eq!(option_reply(&mut s).1, rep::ERR_POLICY);
    send_option(&mut s, opt::ABORT, &[]);
    assert_eq!(option_reply(&mut s).1, rep::ACK);
    assert!(is_closed(&mut s));
}

/// Real libnbd (python3-libnbd) keeps 64 requests in flight, reads and
/// writes of 512 B to 128 KiB mixed, for 30 rounds, and checks every
/// read against what it wrote; then reads the whole disk back. On the
/// memory plugin the small requests are served inline and their replies
/// batched, the large ones by the worker pool; the file plugin takes the
/// pool for all.
const SIXTY_FOUR_IN_FLIGHT: &str = r#"
import nbd, os, random, sys
h = nbd.NBD()
h.set_uri_allow_local_file(True)
h.connect_uri(sys.argv[1])
size = h.get_size()
rng = random.Random(16)
model = bytearray(size)
block = 128 * 1024
checked = 0
for rnd in range(30):
    cmds = []
    # Distinct blocks within a round: no read races a write.
    for b in rng.sample(range(size // block), 64):
        n = rng.choice([512, 4096, 4096, 65536, block])
        off = b * block + rng.randrange(0, block - n + 1, 512)
        if rng.random() < 0.5:
            data = rng.randbytes(n)
            model[off:off + n] = data
            cmds.append((h.aio_pwrite(data, off), None, None))
        else:
            buf = nbd.Buffer(n)
            cmds.append((h.aio_pread(buf, off), buf, bytes(model[off:off + n])))
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c, buf, want in cmds:
        assert h.aio_command_completed(c)
        if buf is not None:
            assert buf.to_bytearray() == want, "read differs"
            checked += 1
for off in range(0, size, 1 << 20):
    assert h.pread(1 << 20, off) == model[off:off + (1 << 20)], "disk differs"
h.shutdown()
print("reads checked", checked > 500)
"#;

fn sixty_four_in_flight(srv_args: &[&str], uri: impl Fn(&Server) -> String) {
    require("nbdinfo", "libnbd-bin");
    let dir = TempDir::new("inflight");
    let script = dir.path().join("inflight.py");
    std::fs::write(&script, SIXTY_FOUR_IN_FLIGHT).unwrap();
    let srv = Server::start(srv_args);
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(uri(&srv))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{srv_args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "reads checked True\n");
}

#[test]
fn sixty_four_in_flight_memory() {
    sixty_four_in_flight(&["memory", "16M"], Server::uri);
}

#[test]
fn sixty_four_in_flight_file() {
    let dir = TempDir::new("inflight-file");
    let disk = dir.path().join("disk");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    sixty_four_in_flight(&["file", disk.to_str().unwrap()], Server::uri);
}

#[test]
fn sixty_four_in_flight_memory_tls() {
    let dir = TempDir::new("inflight-tls");
    let keys = psk::make_keys(dir.path());
    let psk_arg = format!("--tls-psk={}", keys.display());
    sixty_four_in_flight(&["--tls=require", &psk_arg, "memory", "16M"], |srv| {
        psk::tls_uri(srv.sock.to_str().unwrap(), "", &keys)
    });
}
