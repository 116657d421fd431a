//! The client of `client_replies`: `nbd_core::client::Client` driven
//! through a fixed script (handshake, option mode, reads, writes, block
//! status, disconnect) against server bytes the fuzzer chooses, cut into
//! pieces by a [`Schedule`]. Everything the client tells its driver is
//! written into a transcript, so two schedules can be compared.

use std::io::IoSlice;

use nbd_core::client::{self, Client, Command, Config, Event, Phase, UserOption};
use nbd_core::wire::consts::{cmd, cmd_flags, CONTEXT_BASE_ALLOCATION};

use crate::splits::Schedule;

/// The client's settings, from the first byte of the input.
pub fn config(mode: u8) -> Config {
    Config {
        export_name: b"fuzz".to_vec(),
        opt_mode: mode & 1 != 0,
        request_structured_replies: mode & 2 != 0,
        meta_contexts: if mode & 4 != 0 {
            vec![CONTEXT_BASE_ALLOCATION.as_bytes().to_vec()]
        } else {
            Vec::new()
        },
        // Without strict checks the client sends what the server did not
        // advertise, so more reply paths are reached.
        strict: if mode & 8 != 0 {
            client::strict::ALL
        } else {
            0
        },
        full_info: mode & 16 != 0,
        ..Config::default()
    }
}

/// The commands sent once the client is ready: a small read reported
/// chunk by chunk, a write, block status, flush, trim, a read large enough
/// to be received straight into its buffer (16 KiB, the core's threshold), write zeroes and cache.
fn commands() -> Vec<(Command, Vec<u8>)> {
    let mut small_read = Command::new(cmd::READ, 0, 0, 512);
    small_read.report_chunks = true;
    vec![
        (small_read, vec![0; 512]),
        (
            Command::new(cmd::WRITE, cmd_flags::FUA, 512, 512),
            (0..512).map(|i| i as u8).collect(),
        ),
        (Command::new(cmd::BLOCK_STATUS, 0, 0, 4096), Vec::new()),
        (Command::new(cmd::FLUSH, 0, 0, 0), Vec::new()),
        (Command::new(cmd::TRIM, 0, 0, 4096), Vec::new()),
        (Command::new(cmd::READ, 0, 0, 16384), vec![0; 16384]),
        (Command::new(cmd::WRITE_ZEROES, 0, 8192, 4096), Vec::new()),
        (Command::new(cmd::CACHE, 0, 0, 4096), Vec::new()),
    ]
}

/// The options run in option mode, in order.
const OPTIONS: [UserOption; 4] = [
    UserOption::List,
    UserOption::ListMetaContext,
    UserOption::Info,
    UserOption::Go,
];

/// Runs the script against `server` (the bytes the server sends) cut by
/// `sched`; returns the transcript.
pub fn run(mode: u8, server: &[u8], mut sched: Schedule) -> Vec<String> {
    let mut c: Client<Vec<u8>> = Client::new(config(mode));
    let mut log = Vec::new();
    let mut sent = Vec::new();
    let mut pos = 0;
    let mut next_option = 0;
    let mut submitted = false;
    // Every turn sends, reads at least one byte, or stops: a bound on
    // turns is a bound the core must not need to exceed.
    for _ in 0..(server.len() + 1000) * 4 {
        send_all(&mut c, &mut sent);
        while let Some(e) = c.poll_event() {
            log.push(describe(e));
        }
        match c.phase() {
            Phase::Dead | Phase::Closed => break,
            Phase::Negotiating if next_option < OPTIONS.len() => {
                let o = OPTIONS[next_option];
                next_option += 1;
                log.push(format!("option {o:?}: {:?}", c.start_user_option(o)));
                continue;
            }
            Phase::Ready if !submitted => {
                submitted = true;
                for (command, buf) in commands() {
                    match c.submit(command, buf) {
                        Ok(cookie) => log.push(format!("submit {command:?}: cookie {cookie}")),
                        Err((e, _)) => log.push(format!("submit {command:?}: {e:?}")),
                    }
                }
                // At once, not when the replies are in: the client reads
                // ahead, so when it is seen idle depends on the cuts.
                log.push(format!("disconnect: {:?}", c.disconnect()));
                continue;
            }
            _ => {}
        }
        if c.wants_write() {
            continue;
        }
        if !c.wants_read() {
            log.push("stopped: nothing to read or write".into());
            break;
        }
        if pos == server.len() {
            c.recv_done(0);
            continue;
        }
        let buf = c.recv_buf();
        if buf.is_empty() {
            log.push("stopped: wants to read into an empty buffer".into());
            break;
        }
        let n = sched.next(buf.len().min(server.len() - pos));
        buf[..n].copy_from_slice(&server[pos..pos + n]);
        pos += n;
        c.recv_done(n);
    }
    while let Some(e) = c.poll_event() {
        log.push(describe(e));
    }
    log.push(format!(
        "end: phase {:?}, fatal {:?}, protocol {:?}, export {:?}, in flight {}",
        c.phase(),
        c.fatal_error(),
        c.protocol(),
        c.export(),
        c.in_flight()
    ));
    // How far into the server's bytes the client read before it stopped
    // is not compared: a client that reads ahead may take in more before
    // it finds a fatal error.
    log.push(format!(
        "sent {} bytes, sum {:#x}",
        sent.len(),
        checksum(&sent)
    ));
    log
}

/// Sends everything the client has to send (the "socket" takes it all).
fn send_all(c: &mut Client<Vec<u8>>, sent: &mut Vec<u8>) {
    while c.wants_write() {
        let mut slices = [IoSlice::new(&[]); 8];
        let k = c.send_bufs(&mut slices);
        let n: usize = slices[..k].iter().map(|s| s.len()).sum();
        for s in &slices[..k] {
            sent.extend_from_slice(s);
        }
        if n == 0 {
            break;
        }
        c.send_done(n);
    }
}

fn describe(e: Event<Vec<u8>>) -> String {
    match e {
        Event::Completed {
            cookie,
            ctx,
            result,
        } => {
            // The buffer's content matters (a read's data), not its Debug.
            let sum = ctx
                .iter()
                .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            format!(
                "completed {cookie}: {result:?}, buffer {} sum {sum:#x}",
                ctx.len()
            )
        }
        other => format!("{other:?}"),
    }
}

fn checksum(b: &[u8]) -> u64 {
    b.iter()
        .fold(0u64, |h, &x| h.wrapping_mul(31).wrapping_add(u64::from(x)))
}
