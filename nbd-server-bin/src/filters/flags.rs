//! Filters that change what the layer below offers or how requests reach
//! it: nozero, nocache, noextents, noparallel, multi-conn, fua, blocksize,
//! blocksize-policy and protect.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Result, ZeroFlags};

use super::super::{parse_size, Params};

macro_rules! lend_through {
    () => {
        fn pread_lend(
            &self,
            count: u32,
            offset: u64,
            send: &mut dyn FnMut(&[&[u8]]) -> bool,
        ) -> Option<Result<()>> {
            self.inner.pread_lend(count, offset, send)
        }
    };
}
pub(crate) use lend_through;

static ZEROES: [u8; 64 * 1024] = [0; 64 * 1024];

/// Writes `count` zero bytes at `offset` with pwrite.
pub fn write_zeroes(b: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
    let mut done = 0u64;
    while done < count as u64 {
        let n = (count as u64 - done).min(ZEROES.len() as u64) as usize;
        let last = done + n as u64 == count as u64;
        b.pwrite(&ZEROES[..n], offset + done, fua && last)?;
        done += n as u64;
    }
    Ok(())
}

// ---- nozero ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum ZeroMode {
    None,
    Emulate,
    NoTrim,
    Plugin,
}
#[derive(Clone, Copy, PartialEq, Eq)]
enum FastMode {
    Default,
    Slow,
    Ignore,
    None,
}

/// `zeromode=none|emulate|notrim|plugin`, `fastzeromode=default|slow|ignore|none`.
pub struct NoZero {
    inner: Arc<dyn Backend>,
    mode: ZeroMode,
    fast: FastMode,
}

impl NoZero {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let mode = match p
            .take_enum("zeromode", &["none", "emulate", "notrim", "plugin"])?
            .as_deref()
        {
            Some("emulate") => ZeroMode::Emulate,
            Some("notrim") => ZeroMode::NoTrim,
            Some("plugin") => ZeroMode::Plugin,
            _ => ZeroMode::None,
        };
        let fast = match p
            .take_enum("fastzeromode", &["default", "slow", "ignore", "none"])?
            .as_deref()
        {
            Some("slow") => FastMode::Slow,
            Some("ignore") => FastMode::Ignore,
            Some("none") => FastMode::None,
            _ => FastMode::Default,
        };
        Ok(NoZero { inner, mode, fast })
    }
}

impl Backend for NoZero {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    lend_through!();
    fn can_zero(&self) -> Result<bool> {
        match self.mode {
            ZeroMode::None => Ok(false),
            ZeroMode::Emulate => self.inner.can_write(),
            _ => self.inner.can_zero(),
        }
    }
    fn can_fast_zero(&self) -> Result<bool> {
        match (self.fast, self.mode) {
            (FastMode::None, _) | (_, ZeroMode::None) => Ok(false),
            (FastMode::Slow | FastMode::Ignore, _) => Ok(true),
            // Emulated zeroes are writes: never fast, say so quickly.
            (FastMode::Default, ZeroMode::Emulate) => Ok(true),
            (FastMode::Default, _) => self.inner.can_fast_zero(),
        }
    }
    fn zero(&self, count: u32, offset: u64, mut flags: ZeroFlags) -> Result<()> {
        if flags.fast {
            match self.fast {
                FastMode::Slow => return Err(Error::new(libc::ENOTSUP, "fast zero disabled")),
                FastMode::Ignore => flags.fast = false,
                _ if self.mode == ZeroMode::Emulate => {
                    return Err(Error::new(libc::ENOTSUP, "emulated zero is not fast"))
                }
                _ => {}
            }
        }
        match self.mode {
            ZeroMode::Emulate | ZeroMode::None => {
                write_zeroes(&*self.inner, count, offset, flags.fua)
            }
            ZeroMode::NoTrim => {
                flags.may_trim = false;
                self.inner.zero(count, offset, flags)
            }
            ZeroMode::Plugin => self.inner.zero(count, offset, flags),
        }
    }
}

// ---- nocache ----

/// `cachemode=none|emulate|nop`.
pub struct NoCache {
    inner: Arc<dyn Backend>,
    mode: String,
}

impl NoCache {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let mode = p
            .take_enum("cachemode", &["none", "emulate", "nop"])?
            .unwrap_or_else(|| "none".into());
        Ok(NoCache { inner, mode })
    }
}

impl Backend for NoCache {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    lend_through!();
    fn can_cache(&self) -> Result<bool> {
        Ok(self.mode != "none")
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        match self.mode.as_str() {
            "emulate" => {
                let mut buf = vec![0u8; (count as usize).min(1 << 20)];
                let mut done = 0u64;
                while done < count as u64 {
                    let n = (count as u64 - done).min(buf.len() as u64) as usize;
                    self.inner.pread(&mut buf[..n], offset + done)?;
                    done += n as u64;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

// ---- noextents ----

/// Hides the layer's extents: everything is reported as data, as
/// nbdkit-noextents-filter(1) describes.
pub struct NoExtents(pub Arc<dyn Backend>);

impl Backend for NoExtents {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.0)
    }
    fn pread_lend(
        &self,
        count: u32,
        offset: u64,
        send: &mut dyn FnMut(&[&[u8]]) -> bool,
    ) -> Option<Result<()>> {
        self.0.pread_lend(count, offset, send)
    }
    fn can_extents(&self) -> Result<bool> {
        Ok(false)
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        sink.add(offset, count as u64, 0).map(|_| ())
    }
}

// ---- noparallel ----

/// `serialize=requests|all-requests|connections`: one request (or one
/// connection) at a time.
pub struct NoParallel {
    inner: Arc<dyn Backend>,
    connections: bool,
    lock: Mutex<()>,
    busy: Mutex<bool>,
    freed: Condvar,
}

impl NoParallel {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let a = p.take_enum("serialize", &["requests", "all-requests", "connections"])?;
        let b = p.take_enum("serialise", &["requests", "all-requests", "connections"])?;
        let mode = b.or(a).unwrap_or_else(|| "requests".into());
        Ok(NoParallel {
            inner,
            connections: mode == "connections",
            lock: Mutex::new(()),
            busy: Mutex::new(false),
            freed: Condvar::new(),
        })
    }
    fn one<T>(&self, f: impl FnOnce() -> T) -> T {
        let _g = self.lock.lock();
        f()
    }
}

impl Backend for NoParallel {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    fn can_multi_conn(&self) -> Result<bool> {
        if self.connections {
            Ok(false)
        } else {
            self.inner.can_multi_conn()
        }
    }
    fn open_connection(&self, info: &ConnectionInfo) -> Result<()> {
        if self.connections {
            let mut b = self.busy.lock();
            while *b {
                self.freed.wait(&mut b);
            }
            *b = true;
        }
        let r = self.inner.open_connection(info);
        if r.is_err() && self.connections {
            *self.busy.lock() = false;
            self.freed.notify_one();
        }
        r
    }
    fn close_connection(&self, info: &ConnectionInfo) {
        self.inner.close_connection(info);
        if self.connections {
            *self.busy.lock() = false;
            self.freed.notify_one();
        }
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.one(|| self.inner.pread(buf, offset))
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.one(|| self.inner.pwrite(buf, offset, fua))
    }
    fn flush(&self) -> Result<()> {
        self.one(|| self.inner.flush())
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.one(|| self.inner.trim(count, offset, fua))
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.one(|| self.inner.zero(count, offset, flags))
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        self.one(|| self.inner.cache(count, offset))
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        self.one(|| self.inner.extents(count, offset, sink))
    }
}

// ---- multi-conn ----

/// `multi-conn-mode=auto|emulate|plugin|unsafe|disable`. Every connection
/// of this server shares one backend stack, so a flush through any
/// connection flushes what every connection wrote: emulation is simply
/// advertising multi-conn when the stack can flush.
pub struct MultiConn {
    inner: Arc<dyn Backend>,
    mode: String,
}

impl MultiConn {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let mode = p
            .take_enum(
                "multi-conn-mode",
                &["auto", "emulate", "plugin", "unsafe", "disable"],
            )?
            .unwrap_or_else(|| "auto".into());
        p.take_bool("multi-conn-track-dirty")?;
        p.take_bool("multi-conn-exportname")?;
        Ok(MultiConn { inner, mode })
    }
}

impl Backend for MultiConn {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    lend_through!();
    fn can_multi_conn(&self) -> Result<bool> {
        match self.mode.as_str() {
            "disable" => Ok(false),
            "plugin" => self.inner.can_multi_conn(),
            "auto" => Ok(self.inner.can_multi_conn()?
                || self.inner.can_flush()?
                || !self.inner.can_write()?),
            _ => Ok(true),
        }
    }
    fn can_flush(&self) -> Result<bool> {
        if self.mode == "emulate" {
            return Ok(true);
        }
        self.inner.can_flush()
    }
    fn flush(&self) -> Result<()> {
        if self.mode == "emulate" && !self.inner.can_flush()? {
            return Ok(());
        }
        self.inner.flush()
    }
}

// ---- fua ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum FuaMode {
    None,
    Emulate,
    Native,
    Force,
    Pass,
    Discard,
}

/// `fuamode=none|emulate|native|force|pass|discard` (nbdkit 1.32.5 rejects
/// `none`, which its manual lists; we accept it).
pub struct Fua {
    inner: Arc<dyn Backend>,
    mode: FuaMode,
}

impl Fua {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let mode = match p
            .take_enum(
                "fuamode",
                &["none", "emulate", "native", "force", "pass", "discard"],
            )?
            .as_deref()
        {
            Some("none") => FuaMode::None,
            Some("native") => FuaMode::Native,
            Some("force") => FuaMode::Force,
            Some("pass") => FuaMode::Pass,
            Some("discard") => FuaMode::Discard,
            _ => FuaMode::Emulate,
        };
        Ok(Fua { inner, mode })
    }

    /// (fua to pass down, flush afterwards).
    fn plan(&self, fua: bool) -> Result<(bool, bool)> {
        Ok(match self.mode {
            FuaMode::Pass => (fua, false),
            FuaMode::Native => (fua, false),
            FuaMode::Force => (true, false),
            FuaMode::Discard => (false, false),
            FuaMode::None | FuaMode::Emulate => {
                if !fua {
                    (false, false)
                } else if self.inner.can_fua()? {
                    (true, false)
                } else {
                    (false, true)
                }
            }
        })
    }
}

impl Backend for Fua {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    lend_through!();
    fn can_fua(&self) -> Result<bool> {
        match self.mode {
            FuaMode::None => Ok(false),
            FuaMode::Pass => self.inner.can_fua(),
            FuaMode::Emulate => Ok(self.inner.can_fua()? || self.inner.can_flush()?),
            _ => Ok(true),
        }
    }
    fn can_flush(&self) -> Result<bool> {
        match self.mode {
            FuaMode::Discard => Ok(true),
            _ => self.inner.can_flush(),
        }
    }
    fn flush(&self) -> Result<()> {
        match self.mode {
            // discard: the client's flushes are dropped too, as nbdkit does.
            FuaMode::Discard => Ok(()),
            _ => self.inner.flush(),
        }
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let (f, flush) = self.plan(fua)?;
        self.inner.pwrite(buf, offset, f)?;
        if flush {
            self.inner.flush()?;
        }
        Ok(())
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        let (f, flush) = self.plan(fua)?;
        self.inner.trim(count, offset, f)?;
        if flush {
            self.inner.flush()?;
        }
        Ok(())
    }
    fn zero(&self, count: u32, offset: u64, mut flags: ZeroFlags) -> Result<()> {
        let (f, flush) = self.plan(flags.fua)?;
        flags.fua = f;
        self.inner.zero(count, offset, flags)?;
        if flush {
            self.inner.flush()?;
        }
        Ok(())
    }
}

// ---- blocksize ----

/// `minblock=` (power of 2, default 1), `maxdata=` (default 64M),
/// `maxlen=` (default 4G - minblock): the layer below sees only requests
/// aligned to minblock (unaligned reads and writes become
/// read-modify-write of whole blocks) and no longer than maxdata (reads,
/// writes) or maxlen (trim, zero, cache). The size is rounded down to
/// minblock.
pub struct BlockSize {
    inner: Arc<dyn Backend>,
    min: u64,
    maxdata: u64,
    maxlen: u64,
    rmw: Mutex<()>,
}

impl BlockSize {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let min = p.take_size("minblock")?.unwrap_or(1);
        if min == 0 || !min.is_power_of_two() || min > 64 << 20 {
            return Err(p.err(format!("minblock must be a power of 2 up to 64M: {min}")));
        }
        let maxdata = p.take_size("maxdata")?.unwrap_or(64 << 20);
        if maxdata < min || maxdata % min != 0 || maxdata > 1 << 31 {
            return Err(p.err(format!(
                "maxdata must be a multiple of minblock up to 2G: {maxdata}"
            )));
        }
        let maxlen = p
            .take_size("maxlen")?
            .unwrap_or(((1u64 << 32) - 1) / min * min);
        if maxlen < min || maxlen % min != 0 {
            return Err(p.err(format!("maxlen must be a multiple of minblock: {maxlen}")));
        }
        let _ = parse_size;
        Ok(BlockSize {
            inner,
            min,
            maxdata,
            maxlen,
            rmw: Mutex::new(()),
        })
    }

    fn aligned(&self, offset: u64, len: u64) -> bool {
        (offset | len) & (self.min - 1) == 0
    }

    /// Runs `f(offset, len)` over `[offset, offset+len)` (aligned) in
    /// pieces of at most `max`.
    fn chunks(
        &self,
        offset: u64,
        len: u64,
        max: u64,
        mut f: impl FnMut(u64, u64, bool) -> Result<()>,
    ) -> Result<()> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(max);
            f(offset + done, n, done + n == len)?;
            done += n;
        }
        Ok(())
    }

    /// Splits `[offset, offset+len)` into (block start, range in block) for
    /// unaligned head and tail and one aligned middle.
    fn pieces(&self, offset: u64, len: u64) -> Vec<(u64, u64, bool)> {
        // (offset, len, is_partial)
        let mut v = Vec::new();
        let end = offset + len;
        let mut pos = offset;
        if pos & (self.min - 1) != 0 {
            let bend = (pos / self.min + 1) * self.min;
            let e = bend.min(end);
            v.push((pos, e - pos, true));
            pos = e;
        }
        let mid_end = end / self.min * self.min;
        if mid_end > pos {
            v.push((pos, mid_end - pos, false));
            pos = mid_end;
        }
        if pos < end {
            v.push((pos, end - pos, true));
        }
        v
    }
}

impl Backend for BlockSize {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    fn size(&self) -> Result<u64> {
        Ok(self.inner.size()? / self.min * self.min)
    }
    fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
        // We accept anything: what we advertise is only a preference.
        Ok(Some((
            1,
            self.min.max(4096) as u32,
            self.maxdata.min(1 << 25).max(self.min) as u32,
        )))
    }
    fn pread_lend(
        &self,
        count: u32,
        offset: u64,
        send: &mut dyn FnMut(&[&[u8]]) -> bool,
    ) -> Option<Result<()>> {
        if self.aligned(offset, count as u64) && count as u64 <= self.maxdata {
            self.inner.pread_lend(count, offset, send)
        } else {
            None
        }
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut block = vec![
            0u8;
            if self.aligned(offset, buf.len() as u64) {
                0
            } else {
                self.min as usize
            }
        ];
        for (o, n, partial) in self.pieces(offset, buf.len() as u64) {
            let r = (o - offset) as usize..(o - offset + n) as usize;
            if partial {
                let bstart = o / self.min * self.min;
                self.inner.pread(&mut block, bstart)?;
                let s = (o - bstart) as usize;
                buf[r].copy_from_slice(&block[s..s + n as usize]);
            } else {
                let dst = &mut buf[r];
                self.chunks(o, n, self.maxdata, |co, cn, _| {
                    let s = (co - o) as usize;
                    self.inner.pread(&mut dst[s..s + cn as usize], co)
                })?;
            }
        }
        Ok(())
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let pieces = self.pieces(offset, buf.len() as u64);
        let last = pieces.len().saturating_sub(1);
        for (i, (o, n, partial)) in pieces.into_iter().enumerate() {
            let f = fua && i == last;
            let src = &buf[(o - offset) as usize..(o - offset + n) as usize];
            if partial {
                let _g = self.rmw.lock();
                let bstart = o / self.min * self.min;
                let mut block = vec![0u8; self.min as usize];
                self.inner.pread(&mut block, bstart)?;
                let s = (o - bstart) as usize;
                block[s..s + n as usize].copy_from_slice(src);
                self.inner.pwrite(&block, bstart, f)?;
            } else {
                self.chunks(o, n, self.maxdata, |co, cn, l| {
                    let s = (co - o) as usize;
                    self.inner.pwrite(&src[s..s + cn as usize], co, f && l)
                })?;
            }
        }
        Ok(())
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        // Trim is advisory: only the aligned middle is passed down.
        for (o, n, partial) in self.pieces(offset, count as u64) {
            if !partial {
                self.chunks(o, n, self.maxlen, |co, cn, l| {
                    self.inner.trim(cn as u32, co, fua && l)
                })?;
            }
        }
        if fua {
            self.inner.flush()?;
        }
        Ok(())
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        for (o, n, partial) in self.pieces(offset, count as u64) {
            if partial {
                if flags.fast {
                    return Err(Error::new(libc::ENOTSUP, "unaligned fast zero"));
                }
                self.pwrite(&ZEROES[..n as usize], o, flags.fua)?;
            } else {
                self.chunks(o, n, self.maxlen, |co, cn, _| {
                    self.inner.zero(cn as u32, co, flags)
                })?;
            }
        }
        Ok(())
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        let start = offset / self.min * self.min;
        let end = (offset + count as u64).div_ceil(self.min) * self.min;
        self.chunks(start, end - start, self.maxlen, |co, cn, _| {
            self.inner.cache(cn as u32, co)
        })
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        let start = offset / self.min * self.min;
        let end = (offset + count as u64).div_ceil(self.min) * self.min;
        let len = (end - start)
            .min(self.maxlen)
            .min(u32::MAX as u64 / self.min * self.min);
        self.inner.extents(len as u32, start, sink)
    }
}

// ---- blocksize-policy ----

/// `blocksize-minimum=`, `blocksize-preferred=`, `blocksize-maximum=`
/// (advertised through [`Backend::block_size`]), `blocksize-error-policy=
/// allow|error` (with `error`, requests that break them fail EINVAL) and
/// `blocksize-write-disconnect=` (accepted; not enforced).
pub struct BlockSizePolicy {
    inner: Arc<dyn Backend>,
    min: Option<u64>,
    pref: Option<u64>,
    max: Option<u64>,
    error: bool,
}

impl BlockSizePolicy {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let min = p.take_size("blocksize-minimum")?;
        let pref = p.take_size("blocksize-preferred")?;
        let max = p.take_size("blocksize-maximum")?;
        let error = p
            .take_enum("blocksize-error-policy", &["allow", "error"])?
            .as_deref()
            == Some("error");
        p.take_size("blocksize-write-disconnect")?;
        for (k, v) in [("minimum", min), ("preferred", pref)] {
            if let Some(v) = v {
                if v == 0 || !v.is_power_of_two() || v > 1 << 25 {
                    return Err(p.err(format!("blocksize-{k} must be a power of 2 up to 32M: {v}")));
                }
            }
        }
        if let (Some(a), Some(b)) = (min, max) {
            if b < a || b % a != 0 {
                return Err(p.err("blocksize-maximum must be a multiple of blocksize-minimum"));
            }
        }
        Ok(BlockSizePolicy {
            inner,
            min,
            pref,
            max,
            error,
        })
    }

    fn check(&self, count: u64, offset: u64, data: bool) -> Result<()> {
        if !self.error {
            return Ok(());
        }
        let (min, _, max) = self.sizes()?;
        let min = min as u64;
        if (offset | count) & (min - 1) != 0 {
            return Err(Error::new(
                libc::EINVAL,
                "request is not aligned to the minimum block size",
            ));
        }
        if data && count > max as u64 {
            return Err(Error::new(
                libc::EINVAL,
                "request is larger than the maximum block size",
            ));
        }
        Ok(())
    }

    fn sizes(&self) -> Result<(u32, u32, u32)> {
        let (imin, ipref, imax) = self.inner.block_size()?.unwrap_or((1, 4096, 32 << 20));
        let min = self.min.map(|v| v as u32).unwrap_or(imin);
        let pref = self.pref.map(|v| v as u32).unwrap_or(ipref).max(min);
        let max = self
            .max
            .map(|v| v.min(u32::MAX as u64) as u32)
            .unwrap_or(imax)
            .max(min);
        Ok((min, pref, max))
    }
}

impl Backend for BlockSizePolicy {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
        self.sizes().map(Some)
    }
    fn pread_lend(
        &self,
        count: u32,
        offset: u64,
        send: &mut dyn FnMut(&[&[u8]]) -> bool,
    ) -> Option<Result<()>> {
        if let Err(e) = self.check(count as u64, offset, true) {
            return Some(Err(e));
        }
        self.inner.pread_lend(count, offset, send)
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check(buf.len() as u64, offset, true)?;
        self.inner.pread(buf, offset)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.check(buf.len() as u64, offset, true)?;
        self.inner.pwrite(buf, offset, fua)
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.check(count as u64, offset, false)?;
        self.inner.trim(count, offset, fua)
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.check(count as u64, offset, false)?;
        self.inner.zero(count, offset, flags)
    }
}

// ---- protect ----

/// `protect=START-END` (inclusive; `START-` to the end, `-END` from 0,
/// `~RANGE` for everything outside it; may be repeated): writes, trims and
/// zeroes that would change a protected byte fail EPERM; writes that leave
/// it unchanged are allowed.
pub struct Protect {
    inner: Arc<dyn Backend>,
    /// Protected half-open ranges, sorted, merged.
    ranges: Vec<(u64, u64)>,
}

fn parse_range(v: &str) -> std::result::Result<(u64, u64), String> {
    let (a, b) = v
        .split_once('-')
        .ok_or_else(|| format!("could not parse range (expecting START-END): {v}"))?;
    let a = if a.trim().is_empty() {
        0
    } else {
        parse_size(a)?
    };
    let b = if b.trim().is_empty() {
        u64::MAX
    } else {
        parse_size(b)?.checked_add(1).ok_or("range end too large")?
    };
    if b <= a {
        return Err(format!("range end is before its start: {v}"));
    }
    Ok((a, b))
}

impl Protect {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let mut ranges = Vec::new();
        for v in p.take_all("protect") {
            let (inv, r) = match v.strip_prefix('~') {
                Some(r) => (true, r),
                None => (false, v.as_str()),
            };
            let (a, b) = parse_range(r).map_err(|e| p.err(e))?;
            if inv {
                if a > 0 {
                    ranges.push((0, a));
                }
                if b < u64::MAX {
                    ranges.push((b, u64::MAX));
                }
            } else {
                ranges.push((a, b));
            }
        }
        ranges.sort();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(l) if a <= l.1 => l.1 = l.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Ok(Protect {
            inner,
            ranges: merged,
        })
    }

    /// Fails EPERM if writing `new` (None: zeroes) at `offset` would change
    /// a protected byte.
    fn check(&self, offset: u64, len: u64, new: Option<&[u8]>) -> Result<()> {
        let end = offset + len;
        for &(a, b) in &self.ranges {
            let s = a.max(offset);
            let e = b.min(end);
            if s >= e {
                continue;
            }
            let mut cur = vec![0u8; (e - s) as usize];
            self.inner.pread(&mut cur, s)?;
            let same = match new {
                Some(n) => cur[..] == n[(s - offset) as usize..(e - offset) as usize],
                None => cur.iter().all(|&x| x == 0),
            };
            if !same {
                return Err(Error::new(
                    libc::EPERM,
                    "protect: write to a protected range",
                ));
            }
        }
        Ok(())
    }
}

impl Backend for Protect {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    lend_through!();
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.check(offset, buf.len() as u64, Some(buf))?;
        self.inner.pwrite(buf, offset, fua)
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.check(offset, count as u64, None)?;
        self.inner.trim(count, offset, fua)
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.check(offset, count as u64, None)?;
        self.inner.zero(count, offset, flags)
    }
}
