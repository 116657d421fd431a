//! The two lists a plugin fills through the server's functions: the
//! extents of a block status query (`struct nbdkit_extents`,
//! `nbdkit_add_extent`) and the exports of NBD_OPT_LIST (`struct
//! nbdkit_exports`, `nbdkit_add_export`). Their C-callable functions are in
//! `exports.rs`; the rules they enforce are nbdkit's (server/extents.c,
//! server/exports.c), with its error messages.

use std::ffi::CString;

/// The most extents one query keeps (nbdkit's MAX_EXTENTS).
const MAX_EXTENTS: usize = 1024 * 1024;
/// The most exports one list holds.
const MAX_EXPORTS: usize = 10000;
/// The longest export name or description, as NBD allows.
const MAX_STRING: usize = 4096;

/// One extent: offset, length, type (`NBDKIT_EXTENT_HOLE|ZERO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub kind: u32,
}

/// `struct nbdkit_extents`: the extents of `[start, end)`.
#[derive(Debug)]
pub struct ExtentsList {
    start: u64,
    end: u64,
    /// Where the next extent must start (`None` before the first).
    next: Option<u64>,
    pub list: Vec<Extent>,
}

impl ExtentsList {
    /// `nbdkit_extents_new`.
    pub fn new(start: u64, end: u64) -> Result<ExtentsList, String> {
        if start > i64::MAX as u64 || end > i64::MAX as u64 {
            return Err(format!(
                "nbdkit_extents_new: start ({start}) or end ({end}) > INT64_MAX"
            ));
        }
        if start >= end {
            return Err(format!(
                "nbdkit_extents_new: start ({start}) >= end ({end})"
            ));
        }
        Ok(ExtentsList {
            start,
            end,
            next: None,
            list: Vec::new(),
        })
    }

    /// `nbdkit_add_extent`: extents come in ascending, contiguous order;
    /// what lies before `start` or after `end` is dropped, and the first
    /// kept extent must cover `start`.
    pub fn add(&mut self, offset: u64, mut length: u64, kind: u32) -> Result<(), String> {
        if self.next.is_some_and(|n| n != offset) {
            return Err(
                "nbdkit_add_extent: extents must be added in ascending order and must be contiguous"
                    .into(),
            );
        }
        self.next = Some(offset.saturating_add(length));
        if length == 0 || offset >= self.end || self.list.len() >= MAX_EXTENTS {
            return Ok(());
        }
        length = length.min(self.end - offset);
        let mut offset = offset;
        if self.list.is_empty() {
            if offset + length <= self.start {
                return Ok(());
            }
            if offset > self.start {
                return Err(format!(
                    "nbdkit_add_extent: first extent must not be > start ({})",
                    self.start
                ));
            }
            length -= self.start - offset;
            offset = self.start;
        }
        match self.list.last_mut() {
            Some(last) if last.kind == kind => last.length += length,
            _ => self.list.push(Extent {
                offset,
                length,
                kind,
            }),
        }
        Ok(())
    }

    /// Keeps the first `n` extents only; the next one added must start
    /// where they end (`nbdkit_extents_aligned` cutting a list short).
    pub fn truncate(&mut self, n: usize) {
        self.list.truncate(n);
        self.next = self.list.last().map(|e| e.offset + e.length);
    }
}

/// `struct nbdkit_exports`: (name, description) pairs, and whether the
/// plugin asked for the default export to be listed too.
#[derive(Debug, Default)]
pub struct ExportsList {
    pub list: Vec<(CString, Option<CString>)>,
    pub use_default: bool,
}

impl ExportsList {
    /// The list as (name, description) pairs, lossily as UTF-8, without
    /// the default export (see `use_default`).
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.list
            .iter()
            .map(|(n, d)| {
                (
                    n.to_string_lossy().into_owned(),
                    d.as_ref()
                        .map(|d| d.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    /// `nbdkit_add_export`.
    pub fn add(&mut self, name: &[u8], description: Option<&[u8]>) -> Result<(), String> {
        if self.list.len() >= MAX_EXPORTS {
            return Err("nbdkit_add_export: too many exports".into());
        }
        if name.len() > MAX_STRING {
            return Err("nbdkit_add_export: export name too long".into());
        }
        if description.is_some_and(|d| d.len() > MAX_STRING) {
            return Err("nbdkit_add_export: export description too long".into());
        }
        // Both come from C strings, so neither holds a NUL.
        let name = CString::new(name).unwrap_or_default();
        let description = description.map(|d| CString::new(d).unwrap_or_default());
        self.list.push((name, description));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_are_clipped_merged_and_checked() {
        let mut e = ExtentsList::new(100, 1000).unwrap();
        e.add(0, 50, 3).unwrap(); // before start: dropped
        e.add(50, 100, 0).unwrap(); // clipped to start at 100
        e.add(150, 50, 0).unwrap(); // merged
        e.add(200, 5000, 3).unwrap(); // clipped at end
        assert_eq!(
            e.list,
            [
                Extent {
                    offset: 100,
                    length: 100,
                    kind: 0
                },
                Extent {
                    offset: 200,
                    length: 800,
                    kind: 3
                }
            ]
        );
        assert!(e.add(9000, 1, 0).is_err()); // not contiguous
        let mut e = ExtentsList::new(100, 1000).unwrap();
        assert!(e.add(200, 10, 0).is_err()); // does not cover start
        assert!(ExtentsList::new(5, 5).is_err());
    }

    #[test]
    fn exports_are_limited() {
        let mut x = ExportsList::default();
        x.add(b"a", Some(b"first")).unwrap();
        assert!(x.add(&[b'n'; 4097], None).is_err());
        assert_eq!(x.list.len(), 1);
    }
}
