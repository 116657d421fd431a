//! The `nbdkit_next *` a C filter is handed: the layers below it, as a C
//! object starting with `struct nbdkit_next_ops`, whose functions call
//! our chain's next layer with nbdkit's conventions (-1 and `*err` for a
//! failed request, the `NBDKIT_ZERO_*` and `NBDKIT_FUA_*` levels, extents
//! into the filter's own `struct nbdkit_extents`).
//!
//! One object stays valid as long as the layers it reaches are open, so a
//! filter may keep the pointer (in its handle, or for a thread of its
//! own), as nbdkit allows.

use std::os::raw::{c_char, c_int, c_void};

use nbd_core::server::backend::{Backend, Error, Extents, ZeroFlags};

use super::abi::{FLAG_FAST_ZERO, FLAG_FUA, FLAG_MAY_TRIM, FLAG_REQ_ONE, LEVEL_NATIVE, LEVEL_NONE};
use super::context;
use super::filter_abi::{NextOps, ZERO_NATIVE, ZERO_NONE};
use super::lists::ExtentsList;

/// The next layer as a filter sees it. `ops` must come first: the filter
/// calls `next->pread (next, ...)` with the address of this object.
#[repr(C)]
pub struct NextObj {
    ops: NextOps,
    target: Box<dyn Backend>,
    /// The layers below were opened read-only: as in nbdkit's backend.c,
    /// they cannot write, so they cannot trim, zero or FUA either,
    /// whatever they would answer.
    readonly: bool,
}

impl NextObj {
    /// A new object on the heap, for `target` (opened read-only or not);
    /// the caller owns it (see [`NextObj::free`]).
    pub fn new_raw(target: Box<dyn Backend>, readonly: bool) -> *mut NextOps {
        Box::into_raw(Box::new(NextObj {
            ops: OPS,
            target,
            readonly,
        })) as *mut NextOps
    }

    /// Frees an object made by [`NextObj::new_raw`] (NULL is nothing),
    /// closing what it holds.
    ///
    /// # Safety
    /// `p` came from `new_raw` and is not used afterwards.
    pub unsafe fn free(p: *mut NextOps) {
        if !p.is_null() {
            drop(Box::from_raw(p as *mut NextObj));
        }
    }
}

/// # Safety
/// `n` is a live object of [`NextObj::new_raw`].
unsafe fn target<'a>(n: *mut NextOps) -> &'a dyn Backend {
    &*(*(n as *const NextObj)).target
}

/// A failed request: -1, its errno in `*err`.
unsafe fn fail(err: *mut c_int, e: Error) -> c_int {
    if !err.is_null() {
        *err = if e.errno != 0 { e.errno } else { libc::EIO };
    }
    -1
}

fn status(r: nbd_core::server::backend::Result<()>, err: *mut c_int) -> c_int {
    match r {
        Ok(()) => 0,
        // SAFETY: `err` is the filter's int, or NULL.
        Err(e) => unsafe { fail(err, e) },
    }
}

fn yes_no(r: nbd_core::server::backend::Result<bool>) -> c_int {
    match r {
        Ok(b) => b as c_int,
        Err(_) => -1,
    }
}

/// A level (zero, FUA, cache): what the layers below do, they do natively
/// as far as a filter can tell (emulation happens at the bottom).
fn level(r: nbd_core::server::backend::Result<bool>, yes: c_int, no: c_int) -> c_int {
    match r {
        Ok(true) => yes,
        Ok(false) => no,
        Err(_) => -1,
    }
}

unsafe extern "C" fn prepare(_: *mut NextOps) -> c_int {
    // Our layers below are prepared when they are opened.
    0
}
unsafe extern "C" fn finalize(_: *mut NextOps) -> c_int {
    // And finalized when they are closed.
    0
}
unsafe extern "C" fn get_size(n: *mut NextOps) -> i64 {
    match target(n).size() {
        Ok(s) => s as i64,
        Err(_) => -1,
    }
}
unsafe extern "C" fn export_description(n: *mut NextOps) -> *const c_char {
    match target(n).export_description() {
        Ok(Some(d)) => context::intern(std::ffi::CString::new(d).unwrap_or_default()),
        _ => std::ptr::null(),
    }
}
unsafe extern "C" fn block_size(
    n: *mut NextOps,
    minimum: *mut u32,
    preferred: *mut u32,
    maximum: *mut u32,
) -> c_int {
    match target(n).block_size() {
        Ok(b) => {
            let (a, p, m) = b.unwrap_or((0, 0, 0));
            *minimum = a;
            *preferred = p;
            *maximum = m;
            0
        }
        Err(_) => -1,
    }
}
unsafe extern "C" fn can_write(n: *mut NextOps) -> c_int {
    if (*(n as *const NextObj)).readonly {
        return 0;
    }
    yes_no(target(n).can_write())
}

/// nbdkit's rule for what needs writing: without it, the answer is "no"
/// (or the error asking it gave).
unsafe fn unless_writable(n: *mut NextOps) -> Option<c_int> {
    match can_write(n) {
        1 => None,
        r => Some(r),
    }
}
unsafe extern "C" fn can_flush(n: *mut NextOps) -> c_int {
    yes_no(target(n).can_flush())
}
unsafe extern "C" fn is_rotational(n: *mut NextOps) -> c_int {
    yes_no(target(n).is_rotational())
}
unsafe extern "C" fn can_trim(n: *mut NextOps) -> c_int {
    if let Some(r) = unless_writable(n) {
        return r;
    }
    yes_no(target(n).can_trim())
}
unsafe extern "C" fn can_zero(n: *mut NextOps) -> c_int {
    if let Some(r) = unless_writable(n) {
        return r;
    }
    level(target(n).can_zero(), ZERO_NATIVE, ZERO_NONE)
}
unsafe extern "C" fn can_fast_zero(n: *mut NextOps) -> c_int {
    // A layer that cannot zero cannot zero fast.
    match can_zero(n) {
        ZERO_NONE => return 0,
        -1 => return -1,
        _ => {}
    }
    yes_no(target(n).can_fast_zero())
}
unsafe extern "C" fn can_extents(n: *mut NextOps) -> c_int {
    yes_no(target(n).can_extents())
}
unsafe extern "C" fn can_fua(n: *mut NextOps) -> c_int {
    if let Some(r) = unless_writable(n) {
        return r;
    }
    level(target(n).can_fua(), LEVEL_NATIVE, LEVEL_NONE)
}
unsafe extern "C" fn can_multi_conn(n: *mut NextOps) -> c_int {
    yes_no(target(n).can_multi_conn())
}
unsafe extern "C" fn can_cache(n: *mut NextOps) -> c_int {
    level(target(n).can_cache(), LEVEL_NATIVE, LEVEL_NONE)
}

unsafe extern "C" fn pread(
    n: *mut NextOps,
    buf: *mut c_void,
    count: u32,
    offset: u64,
    _flags: u32,
    err: *mut c_int,
) -> c_int {
    let buf = std::slice::from_raw_parts_mut(buf as *mut u8, count as usize);
    status(target(n).pread(buf, offset), err)
}
unsafe extern "C" fn pwrite(
    n: *mut NextOps,
    buf: *const c_void,
    count: u32,
    offset: u64,
    flags: u32,
    err: *mut c_int,
) -> c_int {
    let buf = std::slice::from_raw_parts(buf as *const u8, count as usize);
    status(target(n).pwrite(buf, offset, flags & FLAG_FUA != 0), err)
}
unsafe extern "C" fn flush(n: *mut NextOps, _flags: u32, err: *mut c_int) -> c_int {
    status(target(n).flush(), err)
}
unsafe extern "C" fn trim(
    n: *mut NextOps,
    count: u32,
    offset: u64,
    flags: u32,
    err: *mut c_int,
) -> c_int {
    status(target(n).trim(count, offset, flags & FLAG_FUA != 0), err)
}
unsafe extern "C" fn zero(
    n: *mut NextOps,
    count: u32,
    offset: u64,
    flags: u32,
    err: *mut c_int,
) -> c_int {
    let zf = ZeroFlags {
        may_trim: flags & FLAG_MAY_TRIM != 0,
        fua: flags & FLAG_FUA != 0,
        fast: flags & FLAG_FAST_ZERO != 0,
    };
    status(target(n).zero(count, offset, zf), err)
}
unsafe extern "C" fn cache(
    n: *mut NextOps,
    count: u32,
    offset: u64,
    _flags: u32,
    err: *mut c_int,
) -> c_int {
    status(target(n).cache(count, offset), err)
}

/// The extents of `count` bytes at `offset` from the layers below, added
/// to the filter's list `extents` (nbdkit_add_extent's rules).
unsafe extern "C" fn extents(
    n: *mut NextOps,
    count: u32,
    offset: u64,
    flags: u32,
    extents: *mut c_void,
    err: *mut c_int,
) -> c_int {
    let list = &mut *(extents as *mut ExtentsList);
    status(query_extents(target(n), count, offset, flags, list), err)
}

/// Asks `b` for the extents of `count` bytes at `offset` and adds them to
/// `list`.
pub fn query_extents(
    b: &dyn Backend,
    count: u32,
    offset: u64,
    flags: u32,
    list: &mut ExtentsList,
) -> nbd_core::server::backend::Result<()> {
    let mut sink = Extents::new();
    sink.reset(offset, count, flags & FLAG_REQ_ONE != 0);
    b.extents(count, offset, &mut sink)?;
    let mut at = sink.start();
    for &(len, kind) in sink.as_slice() {
        list.add(at, len, kind)
            .map_err(|m| Error::new(libc::EINVAL, m))?;
        at += len;
    }
    Ok(())
}

const OPS: NextOps = NextOps {
    prepare,
    finalize,
    get_size,
    export_description,
    block_size,
    can_write,
    can_flush,
    is_rotational,
    can_trim,
    can_zero,
    can_fast_zero,
    can_extents,
    can_fua,
    can_multi_conn,
    can_cache,
    pread,
    pwrite,
    flush,
    trim,
    zero,
    extents,
    cache,
};

/// `nbdkit_extents_full`: the extents of the whole range, asking `next` as
/// often as it takes (each answer may cover only the start of what is
/// left). NULL with `*err` set on failure.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_extents_full(
    next: *mut NextOps,
    count: u32,
    offset: u64,
    flags: u32,
    err: *mut c_int,
) -> *mut c_void {
    // All the information the layer below is willing to give.
    let flags = flags & !FLAG_REQ_ONE;
    let (mut count, mut offset) = (count, offset);
    let mut ret = match ExtentsList::new(offset, offset + count as u64) {
        Ok(l) => l,
        Err(m) => {
            crate::log::error!("{m}");
            *err = libc::ERANGE;
            return std::ptr::null_mut();
        }
    };
    while count > 0 {
        let end = offset + count as u64;
        let mut t = match ExtentsList::new(offset, end) {
            Ok(t) => t,
            Err(m) => {
                crate::log::error!("{m}");
                *err = libc::ERANGE;
                return std::ptr::null_mut();
            }
        };
        let tp = &mut t as *mut ExtentsList as *mut c_void;
        if ((*next).extents)(next, count, offset, flags, tp, err) == -1 {
            return std::ptr::null_mut();
        }
        if t.list.is_empty() {
            // A layer that answers nothing would loop for ever.
            crate::log::error!("extents: plugin must return at least one extent");
            *err = libc::EIO;
            return std::ptr::null_mut();
        }
        for e in &t.list {
            if let Err(m) = ret.add(e.offset, e.length, e.kind) {
                crate::log::error!("{m}");
                *err = libc::ERANGE;
                return std::ptr::null_mut();
            }
            let n = e.length.min(count as u64) as u32;
            count -= n;
            offset += n as u64;
        }
    }
    Box::into_raw(Box::new(ret)) as *mut c_void
}

/// `nbdkit_extents_aligned`: the extents of the range, with every extent
/// a multiple of `align` bytes (`count` and `offset` are): an unaligned
/// extent past the first `align` bytes ends the list early, rounded
/// down; within them, extents are merged (their types ANDed) until
/// `align` bytes are covered, asking `next` for more where needed.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_extents_aligned(
    next: *mut NextOps,
    count: u32,
    offset: u64,
    flags: u32,
    align: u32,
    extents: *mut c_void,
    err: *mut c_int,
) -> c_int {
    let align64 = align as u64;
    if ((*next).extents)(next, count, offset, flags, extents, err) == -1 {
        return -1;
    }
    let exts = &mut *(extents as *mut ExtentsList);
    let Some(i) = exts.list.iter().position(|e| e.length % align64 != 0) else {
        return 0;
    };
    let e = exts.list[i];
    if e.offset + e.length > offset + align64 {
        // Unaligned past the first block: cut here, rounded down.
        exts.list[i].length -= e.length % align64;
        let keep = i + (exts.list[i].length != 0) as usize;
        exts.truncate(keep);
        return 0;
    }
    // Within the first block (so this is the first extent): merge until
    // it covers `align` bytes.
    let mut first = e;
    let mut rest: std::collections::VecDeque<_> = exts.list.drain(1..).collect();
    while first.length < align64 {
        if let Some(x) = rest.pop_front() {
            first.length += x.length;
            first.kind &= x.kind;
            continue;
        }
        let at = first.offset + first.length;
        let mut more = match ExtentsList::new(at, offset + align64) {
            Ok(l) => l,
            Err(m) => {
                crate::log::error!("{m}");
                *err = libc::ERANGE;
                return -1;
            }
        };
        let mp = &mut more as *mut ExtentsList as *mut c_void;
        let want = (align64 - first.length) as u32;
        if ((*next).extents)(next, want, at, flags & !FLAG_REQ_ONE, mp, err) == -1 {
            return -1;
        }
        if more.list.is_empty() {
            crate::log::error!("extents: plugin must return at least one extent");
            *err = libc::EIO;
            return -1;
        }
        rest.extend(more.list.drain(..));
    }
    first.length = align64;
    exts.list.clear();
    exts.list.push(first);
    exts.truncate(1);
    0
}
