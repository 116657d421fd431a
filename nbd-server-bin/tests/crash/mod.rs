//! The machinery of the crash-consistency tests (crash_consistency.rs,
//! crash_xnbd.rs): a writing client that records what the server promised
//! durable, a loop that kills the server with SIGKILL at a random moment,
//! restarts it on the same files and checks every such write.
//!
//! Honest scope: SIGKILL ends the process, not the machine. Whatever
//! reached the kernel by write(2) stays in the page cache and is read
//! back after the restart, fsync or not. So these tests catch the
//! server's own failings: data held in user space and acknowledged, a
//! flush acknowledged before the writes it covers were handed to the
//! kernel, reordering, a bitmap that claims a block before its data was
//! written. They do not prove that fdatasync is called at the right time
//! for a power failure; that needs a block device that drops unsynced
//! writes (dm-log-writes, dm-flakey), which is not available here.
//!
//! Each run is seeded (printed; set CRASH_SEED to repeat one). Set
//! CRASH_ITERATIONS for a longer run (default 6 kills per stack).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use nbd_core::wire::consts::{cmd, cmd_flags, tx_flags};

use crate::common::*;

pub const BS: u64 = 4096;
/// Blocks in the test disk (2 MiB).
pub const NBLOCKS: u64 = 512;
/// Requests the writer keeps in flight.
pub const DEPTH: usize = 8;
/// Name of the writer threads: their panics (the server vanished under
/// them, which is the point) are not printed.
pub const WRITER: &str = "crash-writer";

/// A small deterministic generator (xorshift64*), so a seed repeats a run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn seed() -> u64 {
    let s = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed: {s} (CRASH_SEED={s} repeats it)");
    s
}

pub fn iterations() -> usize {
    std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// The content of block `block` as written by write number `seq`
/// (0: the content the disk starts with): the sequence number and the
/// block number, then bytes that depend on both, so that any block read
/// back says which write it came from, and a torn or misplaced one shows.
pub fn block_data(block: u64, seq: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(BS as usize);
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&block.to_le_bytes());
    let mut x =
        (seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ block.wrapping_mul(0xff51_afd7_ed55_8ccd)) | 1;
    while v.len() < BS as usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

/// The write a block read back came from, if it is whole.
pub fn decode(block: u64, data: &[u8]) -> Option<u64> {
    let seq = u64::from_le_bytes(data[..8].try_into().unwrap());
    (block_data(block, seq) == data).then_some(seq)
}

pub fn initial_disk() -> Vec<u8> {
    (0..NBLOCKS).flat_map(|b| block_data(b, 0)).collect()
}

/// When an acknowledged write is promised to survive.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Promise {
    /// With FUA, or before an acknowledged FLUSH.
    FlushOrFua,
    /// Once acknowledged.
    EveryAck,
    /// Never: the disk reads as it started after every restart.
    Nothing,
}

/// What the client knows of each block: the newest write promised durable
/// (`floor`, 0 for the starting content) and every write sent since, any of
/// which may be what a restart finds.
pub struct Model {
    promise: Promise,
    floor: Vec<u64>,
    candidates: Vec<Vec<u64>>,
    /// Acknowledged writes a FLUSH sent from now on covers.
    unflushed: Vec<(u64, u64)>,
    next_seq: u64,
    /// A failure seen by the writer (an error reply): fails the test.
    failure: Option<String>,
    /// Requests acknowledged, for the log.
    acks: u64,
    /// Blocks with a write in flight, on any connection: one at a time per
    /// block, so that the order of a block's writes is their order of
    /// sending.
    busy: HashSet<u64>,
    /// The writes that were write-zeroes: their block reads as zeros.
    zeroes: HashSet<u64>,
    /// Blocks found zeroed after a restart, for the log.
    zero_reads: u64,
}

impl Model {
    fn new(promise: Promise) -> Model {
        Model {
            promise,
            floor: vec![0; NBLOCKS as usize],
            candidates: vec![vec![0]; NBLOCKS as usize],
            unflushed: Vec::new(),
            next_seq: 1,
            failure: None,
            acks: 0,
            busy: HashSet::new(),
            zeroes: HashSet::new(),
            zero_reads: 0,
        }
    }

    fn durable(&mut self, block: u64, seq: u64) {
        let b = block as usize;
        // A block has one write in flight at most, so a newer write was
        // sent after this one and may still land over it.
        if seq > self.floor[b] {
            self.floor[b] = seq;
            self.candidates[b].retain(|&s| s >= seq);
        }
    }

    /// Checks a disk read back after a restart, and takes it as the new
    /// starting point (it is what the next server finds too).
    fn verify(&mut self, disk: &[u8], what: &str) {
        let mut bad = Vec::new();
        for b in 0..NBLOCKS {
            let data = &disk[(b * BS) as usize..((b + 1) * BS) as usize];
            // All zeros: the newest write-zeroes that may have landed.
            let got = if data.iter().all(|&x| x == 0) {
                let c = &self.candidates[b as usize];
                self.zero_reads += 1;
                c.iter().rev().find(|s| self.zeroes.contains(s)).copied()
            } else {
                decode(b, data)
            };
            let ok = match (self.promise, got) {
                (_, None) => false,
                (Promise::Nothing, Some(s)) => s == 0,
                (_, Some(s)) => self.candidates[b as usize].contains(&s),
            };
            if !ok {
                bad.push(format!(
                    "block {b}: read {}, durable is write {}, may be any of {:?}",
                    got.map_or("torn or foreign data".into(), |s| format!("write {s}")),
                    self.floor[b as usize],
                    self.candidates[b as usize]
                ));
            }
            if let Some(s) = got {
                self.floor[b as usize] = s;
                self.candidates[b as usize] = vec![s];
            }
        }
        self.unflushed.clear();
        assert!(
            bad.is_empty(),
            "{what}: {} blocks lost acknowledged data:\n{}",
            bad.len(),
            bad.join("\n")
        );
    }
}

/// Hides the panics of writer threads (their server was killed under
/// them); every other panic is printed as usual.
pub fn quiet_writers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let old = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(WRITER) {
                old(info)
            }
        }));
    });
}

pub enum Op {
    Write { block: u64, seq: u64, fua: bool },
    Flush { covers: Vec<(u64, u64)> },
}

/// Writes random blocks (and zeroes some), FUA now and then, FLUSH now and then, `DEPTH`
/// requests in flight, until the connection breaks; records what was
/// acknowledged in `model`. Several writers may share one model when the
/// server advertises multi-conn: then a FLUSH on one connection covers the
/// writes acknowledged on every connection before it was sent.
pub fn writer(mut c: Client, model: Arc<Mutex<Model>>, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut inflight: HashMap<u64, Op> = HashMap::new();
    loop {
        while inflight.len() < DEPTH {
            let mut m = model.lock().unwrap();
            let (cookie, op) = if rng.below(12) == 0 {
                let covers = std::mem::take(&mut m.unflushed);
                drop(m);
                let Ok(c) = catch_unwind(AssertUnwindSafe(|| c.send(cmd::FLUSH, 0, 0, 0, &[])))
                else {
                    return;
                };
                (c, Op::Flush { covers })
            } else {
                let block = loop {
                    let b = rng.below(NBLOCKS);
                    if !m.busy.contains(&b) {
                        break b;
                    }
                };
                let seq = m.next_seq;
                m.next_seq += 1;
                // Sent, so possibly on the disk from now on.
                m.candidates[block as usize].push(seq);
                m.busy.insert(block);
                // One write in ten is a write-zeroes, half of them allowed
                // to punch a hole.
                let zero = rng.below(10) == 0;
                if zero {
                    m.zeroes.insert(seq);
                }
                drop(m);
                let fua = rng.below(4) == 0;
                let mut flags = if fua { cmd_flags::FUA } else { 0 };
                let sent = if zero {
                    if rng.below(2) == 0 {
                        flags |= cmd_flags::NO_HOLE;
                    }
                    catch_unwind(AssertUnwindSafe(|| {
                        c.send(cmd::WRITE_ZEROES, flags, block * BS, BS as u32, &[])
                    }))
                } else {
                    let data = block_data(block, seq);
                    catch_unwind(AssertUnwindSafe(|| {
                        c.send(cmd::WRITE, flags, block * BS, BS as u32, &data)
                    }))
                };
                let Ok(c) = sent else {
                    return;
                };
                (c, Op::Write { block, seq, fua })
            };
            inflight.insert(cookie, op);
        }
        let Ok((cookie, reply)) = catch_unwind(AssertUnwindSafe(|| c.recv())) else {
            return;
        };
        let op = inflight
            .remove(&cookie)
            .expect("a reply to a request in flight");
        let mut m = model.lock().unwrap();
        if reply.error != 0 {
            m.failure = Some(format!(
                "error {} ({}) from the server",
                reply.error,
                String::from_utf8_lossy(&reply.message)
            ));
            return;
        }
        m.acks += 1;
        match op {
            Op::Write { block, seq, fua } => {
                m.busy.remove(&block);
                if m.promise == Promise::EveryAck || fua {
                    m.durable(block, seq);
                } else {
                    m.unflushed.push((block, seq));
                }
            }
            Op::Flush { covers } => {
                for (b, s) in covers {
                    m.durable(b, s);
                }
            }
        }
    }
}

pub fn sigkill(pid: u32) {
    // SAFETY: kill(2) on a child of ours that has not been reaped yet.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

/// A server under test: started on the same files each time, a raw
/// client to it, and its pid to kill.
pub trait Target {
    fn start(&mut self) -> (u32, Client);
    /// Another client of the running server.
    fn connect(&self) -> Client;
    /// Reaps the killed server.
    fn reap(&mut self);
}

/// Our nbdkit on a Unix socket with `args`.
pub struct Nbdkit {
    pub args: Vec<String>,
    pub srv: Option<Server>,
}

impl Target for Nbdkit {
    fn start(&mut self) -> (u32, Client) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let srv = Server::start(&args);
        let c = srv.client();
        let pid = srv.pid();
        self.srv = Some(srv);
        (pid, c)
    }
    fn connect(&self) -> Client {
        self.srv.as_ref().expect("started").client()
    }
    fn reap(&mut self) {
        self.srv = None;
    }
}

/// Reads the whole disk through a fresh client.
pub fn read_disk(c: &mut Client) -> Vec<u8> {
    let mut disk = Vec::with_capacity((NBLOCKS * BS) as usize);
    for chunk in 0..NBLOCKS / 64 {
        disk.extend(c.read(chunk * 64 * BS, (64 * BS) as u32));
    }
    disk
}

/// The loop: start, write under a client, kill at a random moment,
/// restart, verify. `during` runs beside the writer (xnbd-bgctl).
pub fn crash_loop(
    what: &str,
    target: &mut dyn Target,
    promise: Promise,
    mut during: impl FnMut(&mut Rng) -> Option<Child>,
) {
    quiet_writers();
    let mut rng = Rng::new(seed());
    let model = Arc::new(Mutex::new(Model::new(promise)));
    let (mut acks, mut zero_reads) = (0, 0);
    for i in 0..iterations() {
        let (pid, c) = target.start();
        // Two connections where a flush on one covers both.
        let mut clients = vec![c];
        if clients[0].flags & tx_flags::CAN_MULTI_CONN != 0 {
            clients.push(target.connect());
        }
        let helper = during(&mut rng);
        let writers: Vec<_> = clients
            .into_iter()
            .map(|c| {
                let wseed = rng.next();
                let m = model.clone();
                std::thread::Builder::new()
                    .name(WRITER.into())
                    .spawn(move || writer(c, m, wseed))
                    .unwrap()
            })
            .collect();
        let wait = Duration::from_millis(20 + rng.below(400));
        std::thread::sleep(wait);
        sigkill(pid);
        target.reap();
        for w in writers {
            let _ = w.join();
        }
        if let Some(mut h) = helper {
            let _ = h.kill();
            let _ = h.wait();
        }
        let (pid2, mut c) = target.start();
        let disk = read_disk(&mut c);
        {
            let mut m = model.lock().unwrap();
            m.busy.clear();
            if let Some(f) = m.failure.take() {
                panic!("{what}, round {i}: {f}");
            }
            acks = m.acks;
            zero_reads = m.zero_reads;
            m.verify(&disk, &format!("{what}, round {i} (killed after {wait:?})"));
        }
        // The verifying server dies the same way: its reads are no writes.
        sigkill(pid2);
        target.reap();
    }
    // Enough happened for the test to mean something.
    assert!(acks > 50, "{what}: only {acks} requests acknowledged");
    eprintln!(
        "{what}: {acks} requests acknowledged, all durable ones found \
         ({zero_reads} blocks read back zeroed)"
    );
}

/// A private directory with the test disk in it.
pub fn disk(tag: &str) -> (TempDir, PathBuf) {
    let d = TempDir::new(tag);
    let img = d.path().join("disk.img");
    std::fs::write(&img, initial_disk()).unwrap();
    (d, img)
}

pub fn nbdkit(args: &[&str]) -> Nbdkit {
    Nbdkit {
        args: args.iter().map(|s| s.to_string()).collect(),
        srv: None,
    }
}
