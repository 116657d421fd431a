//! The chain's promises, with a recording plugin and recording filters:
//! open order, prepare order, close order and exactly-once, defaults that
//! pass through, capabilities remembered per connection, and connection
//! facts reaching every layer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Read, Result, ZeroFlags};
use parking_lot::Mutex;

use super::testing::info_for;
use super::{Chain, Filter, FilterHandle, OpenNext, Plugin};

type Log = Arc<Mutex<Vec<String>>>;

/// A 4 KiB disk of 0xAB that counts how often it is asked `can_write`.
struct Disk {
    log: Log,
    can_write_asked: AtomicUsize,
}

struct DiskHandle {
    log: Log,
    id: u64,
    plugin: Arc<Disk>,
}

impl Plugin for Disk {
    fn open(self: Arc<Self>, info: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        self.log.lock().push(format!(
            "open plugin {} {} tls={}",
            info.id,
            String::from_utf8_lossy(&info.export_name),
            info.tls
        ));
        Ok(Box::new(DiskHandle {
            log: Arc::clone(&self.log),
            id: info.id,
            plugin: self,
        }))
    }
}

impl Backend for DiskHandle {
    fn size(&self) -> Result<u64> {
        Ok(4096)
    }
    fn can_write(&self) -> Result<bool> {
        self.plugin.can_write_asked.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }
    fn pread(&self, buf: &mut [u8], _: u64) -> Result<()> {
        buf.fill(0xAB);
        Ok(())
    }
    fn pwrite(&self, _: &[u8], offset: u64, _: bool) -> Result<()> {
        self.log.lock().push(format!("pwrite {offset}"));
        Ok(())
    }
}

impl Drop for DiskHandle {
    fn drop(&mut self) {
        self.log.lock().push(format!("close plugin {}", self.id));
    }
}

/// A filter that writes nothing but its hooks (so every request passes
/// through the defaults), or that refuses to open, or that adds 100 to
/// write offsets.
struct Probe {
    name: &'static str,
    log: Log,
    refuse: bool,
    shift_writes: bool,
}

impl Filter for Probe {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        self.log
            .lock()
            .push(format!("open {} tls={}", self.name, info.tls));
        next.open(info)?;
        if self.refuse {
            return Err(Error::new(libc::EPERM, "refused"));
        }
        Ok(Box::new(self))
    }
}

impl FilterHandle for Probe {
    fn prepare(&self, next: &dyn Backend, _: &ConnectionInfo) -> Result<()> {
        self.log
            .lock()
            .push(format!("prepare {} size={}", self.name, next.size()?));
        Ok(())
    }
    fn close(&self, info: &ConnectionInfo) {
        self.log
            .lock()
            .push(format!("close {} {}", self.name, info.id));
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let off = if self.shift_writes {
            offset + 100
        } else {
            offset
        };
        next.pwrite(buf, off, fua)
    }
}

fn probe(name: &'static str, log: &Log) -> Probe {
    Probe {
        name,
        log: Arc::clone(log),
        refuse: false,
        shift_writes: false,
    }
}

fn disk(log: &Log) -> Arc<Disk> {
    Arc::new(Disk {
        log: Arc::clone(log),
        can_write_asked: AtomicUsize::new(0),
    })
}

#[test]
fn open_prepare_close_in_nbdkits_order() {
    let log = Log::default();
    let chain = Arc::new(Chain::new(
        disk(&log),
        vec![
            Arc::new(probe("outer", &log)),
            Arc::new(probe("inner", &log)),
        ],
    ));
    let c = chain.open(info_for(1, "x", true)).unwrap();
    drop(c);
    assert_eq!(
        *log.lock(),
        [
            "open outer tls=true",
            "open inner tls=true",
            "open plugin 1 x tls=true",
            "prepare inner size=4096",
            "prepare outer size=4096",
            "close outer 1",
            "close inner 1",
            "close plugin 1",
        ]
    );
}

#[test]
fn a_failed_open_closes_what_was_opened_once() {
    let log = Log::default();
    let refusing = Probe {
        refuse: true,
        ..probe("outer", &log)
    };
    let chain = Arc::new(Chain::new(
        disk(&log),
        vec![Arc::new(refusing), Arc::new(probe("inner", &log))],
    ));
    assert!(chain.open(info_for(2, "", false)).is_err());
    assert_eq!(
        *log.lock(),
        [
            "open outer tls=false",
            "open inner tls=false",
            "open plugin 2  tls=false",
            "close inner 2",
            "close plugin 2",
        ]
    );
}

#[test]
fn unwritten_methods_pass_through_and_reads_may_lend() {
    let log = Log::default();
    let shifting = Probe {
        shift_writes: true,
        ..probe("shift", &log)
    };
    let chain = Arc::new(Chain::new(
        disk(&log),
        vec![Arc::new(probe("plain", &log)), Arc::new(shifting)],
    ));
    let c = chain.open(info_for(3, "", false)).unwrap();
    let mut buf = [0u8; 8];
    c.pread(&mut buf, 0).unwrap();
    assert_eq!(buf, [0xAB; 8]);
    c.pwrite(&buf, 5, false).unwrap();
    c.zero(8, 0, ZeroFlags::default()).unwrap_err();
    let mut sent = 0;
    let mut send = |_: &[&[u8]]| {
        sent += 1;
        true
    };
    // The disk does not lend: the read lands in the buffer.
    let mut r = Read::lending(&mut buf, 0, &mut send);
    c.read(&mut r).unwrap();
    assert!(!r.was_lent());
    assert_eq!(sent, 0);
    assert!(log.lock().contains(&"pwrite 105".to_string()));
}

#[test]
fn capabilities_are_asked_once_per_connection() {
    let log = Log::default();
    let d = disk(&log);
    let chain = Arc::new(Chain::new(
        Arc::clone(&d) as Arc<dyn Plugin>,
        vec![Arc::new(probe("f", &log))],
    ));
    let a = chain.open(info_for(4, "", false)).unwrap();
    for _ in 0..3 {
        assert!(a.can_write().unwrap());
    }
    let b = chain.open(info_for(5, "", false)).unwrap();
    assert!(b.can_write().unwrap());
    assert!(a.can_write().unwrap());
    assert_eq!(d.can_write_asked.load(Ordering::SeqCst), 2);
}

/// Only a chain whose plugin and every filter say they never block
/// answers from memory (and has its small requests served inline).
#[test]
fn answers_from_memory_needs_every_layer() {
    let chain = |plugin: &str, filters: &[&str], args: &[&str]| {
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        super::build(plugin, &filters, &args, false)
            .unwrap()
            .answers_from_memory()
    };
    assert!(chain("memory", &[], &["size=1M"]));
    assert!(chain(
        "null",
        &["offset", "truncate"],
        &["size=1M", "offset=512"]
    ));
    assert!(chain("pattern", &["nozero", "fua"], &["size=1M"]));
    assert!(!chain("memory", &["delay"], &["size=1M", "rdelay=1"]));
    assert!(!chain(
        "memory",
        &["offset", "log"],
        &["size=1M", "logfile=/dev/null"]
    ));
    let (f, disk) = crate::scratch::temp_file(&std::env::temp_dir(), "chain-test").unwrap();
    f.set_len(512).unwrap();
    let file = format!("file={}", disk.display());
    let file_chain = chain("file", &[], &[&file]);
    std::fs::remove_file(&disk).unwrap();
    assert!(!file_chain);
}
