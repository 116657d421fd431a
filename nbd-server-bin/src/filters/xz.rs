//! The xz filter (nbdkit-xz-filter(1)): the layer below holds an xz
//! file; the client sees its uncompressed contents, read-only, with
//! random access.
//!
//! An xz file is a run of streams, each made of blocks that can be
//! decompressed on their own, followed by an index of their sizes. When a
//! connection opens, the indexes are read from the end of the file
//! backwards (the format's fixed fields, parsed here); a read then finds the blocks that hold its range, reads only
//! those from below and decompresses each through liblzma (the xz2
//! crate). The last `xz-max-depth` blocks decoded (default 8) are kept,
//! per connection. A file with a block bigger than `xz-max-block`
//! (default 512M) is refused, since a block is decoded whole in memory.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result};

use crate::chain::{Filter, FilterHandle, OpenNext};

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "xz",
    params: &[
        (
            "xz-max-block",
            "the largest block of the file the filter accepts (default 512M)",
        ),
        (
            "xz-max-depth",
            "how many decoded blocks each connection keeps (default 8)",
        ),
    ],
    open: |p, _| {
        let max_block = p.take_size("xz-max-block")?.unwrap_or(512 << 20);
        let max_depth = match p.take("xz-max-depth") {
            None => 8,
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if n >= 1 => n as usize,
                Ok(_) => return Err("'xz-max-depth' parameter must be >= 1".into()),
                Err(_) => return Err(p.err(format!("could not parse number: {v}"))),
            },
        };
        Ok(Arc::new(Xz {
            max_block,
            max_depth,
        }))
    },
};

/// The magic bytes that start a stream header, and end a stream footer.
const HEADER_MAGIC: &[u8; 6] = b"\xfd7zXZ\0";
const FOOTER_MAGIC: &[u8; 2] = b"YZ";
/// Stream header and footer are 12 bytes each.
const HEADER_SIZE: u64 = 12;

struct Xz {
    max_block: u64,
    max_depth: usize,
}

/// One block of the file: where its bytes are, what they decode to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Block {
    /// Offset of the block (its header) in the compressed file.
    offset: u64,
    /// Its bytes in the file: header, data, padding and check.
    total_size: u64,
    /// The block's "unpadded size" as the index records it.
    unpadded: u64,
    /// Offset and size of what it decodes to.
    plain_offset: u64,
    plain_size: u64,
    /// The header of the stream it belongs to (its flags say which check
    /// the block carries).
    stream_header: [u8; HEADER_SIZE as usize],
}

/// The filter opened for one connection.
struct Handle {
    max_block: u64,
    max_depth: usize,
    /// Every non-empty block, in order of their uncompressed offsets.
    blocks: Mutex<Vec<Block>>,
    size: Mutex<u64>,
    /// The blocks decoded last, the most recent first: (block number,
    /// bytes).
    cache: Mutex<VecDeque<(usize, Arc<Vec<u8>>)>>,
}

impl Filter for Xz {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(&ConnectionInfo {
            readonly: true,
            ..info.clone()
        })?;
        Ok(Box::new(Handle {
            max_block: self.max_block,
            max_depth: self.max_depth,
            blocks: Mutex::new(Vec::new()),
            size: Mutex::new(0),
            cache: Mutex::new(VecDeque::new()),
        }))
    }
}

fn fail(msg: impl Into<String>) -> Error {
    Error::new(libc::EINVAL, format!("xz: {}", msg.into()))
}

fn read_below(next: &dyn Backend, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len as usize];
    next.pread(&mut b, offset)?;
    Ok(b)
}

/// A variable-length integer of the xz format at `b[*pos..]`: 7 bits a
/// byte, least significant first, at most 9 bytes.
fn varint(b: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let byte = *b.get(*pos).ok_or_else(|| fail("truncated index"))?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(fail("invalid number in the index"))
}

fn crc32(b: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(b);
    c.sum()
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads the indexes of every stream of the file below, from its end
/// backwards; returns the non-empty blocks in file order.
fn read_index(next: &dyn Backend) -> Result<Vec<Block>> {
    let size = next.size()?;
    if size < 2 * HEADER_SIZE || read_below(next, 0, 6)? != HEADER_MAGIC {
        return Err(fail("not an xz file"));
    }
    let mut streams = Vec::new();
    let mut end = size;
    while end > 0 {
        // Stream padding: zeros, in multiples of 4 bytes.
        if end % 4 != 0 {
            return Err(fail("invalid stream padding"));
        }
        let word = read_below(next, end - 4, 4)?;
        if word == [0; 4] {
            end -= 4;
            continue;
        }
        if end < 2 * HEADER_SIZE {
            return Err(fail("truncated xz file"));
        }
        let footer = read_below(next, end - HEADER_SIZE, HEADER_SIZE)?;
        if &footer[10..12] != FOOTER_MAGIC || le32(&footer[0..4]) != crc32(&footer[4..10]) {
            return Err(fail("invalid stream footer"));
        }
        let index_size = (le32(&footer[4..8]) as u64 + 1) * 4;
        let index_end = end - HEADER_SIZE;
        let index_start = index_end
            .checked_sub(index_size)
            .filter(|s| *s >= HEADER_SIZE)
            .ok_or_else(|| fail("invalid index size"))?;
        let index = read_below(next, index_start, index_size)?;
        let records = parse_index(&index)?;
        let blocks_size: u64 = records.iter().map(|(u, _)| u.div_ceil(4) * 4).sum();
        let stream_start = index_start
            .checked_sub(blocks_size + HEADER_SIZE)
            .ok_or_else(|| fail("index does not fit in the file"))?;
        let header = read_below(next, stream_start, HEADER_SIZE)?;
        if &header[..6] != HEADER_MAGIC
            || le32(&header[8..12]) != crc32(&header[6..8])
            || header[6..8] != footer[8..10]
        {
            return Err(fail("invalid stream header"));
        }
        streams.push((
            stream_start,
            <[u8; 12]>::try_from(&header[..]).unwrap_or_default(),
            records,
        ));
        end = stream_start;
    }
    // Streams were found last first.
    let mut blocks = Vec::new();
    let mut plain_offset = 0;
    for (start, header, records) in streams.into_iter().rev() {
        let mut offset = start + HEADER_SIZE;
        for (unpadded, plain_size) in records {
            let total_size = unpadded.div_ceil(4) * 4;
            if plain_size > 0 {
                blocks.push(Block {
                    offset,
                    total_size,
                    unpadded,
                    plain_offset,
                    plain_size,
                    stream_header: header,
                });
            }
            offset += total_size;
            plain_offset += plain_size;
        }
    }
    Ok(blocks)
}

/// The records of an index: (unpadded size, uncompressed size) per block.
fn parse_index(b: &[u8]) -> Result<Vec<(u64, u64)>> {
    let n = b.len();
    if n < 8 || b[0] != 0 || le32(&b[n - 4..]) != crc32(&b[..n - 4]) {
        return Err(fail("invalid index"));
    }
    let mut pos = 1;
    let count = varint(b, &mut pos)?;
    let mut records = Vec::new();
    for _ in 0..count {
        let unpadded = varint(b, &mut pos)?;
        let plain = varint(b, &mut pos)?;
        if unpadded < 5 {
            return Err(fail("invalid index"));
        }
        records.push((unpadded, plain));
    }
    // Index padding up to a multiple of 4, then the CRC32.
    if pos.div_ceil(4) * 4 != n - 4 || b[pos..n - 4].iter().any(|&x| x != 0) {
        return Err(fail("invalid index"));
    }
    Ok(records)
}

/// Decodes `block`, whose bytes are `data`: liblzma's stream decoder is
/// given the stream's header and then the block. It must take the whole
/// block, checked (the check follows the data), and give exactly the
/// size the index says.
fn decode(block: &Block, data: &[u8]) -> Result<Vec<u8>> {
    let mut dec = xz2::stream::Stream::new_stream_decoder(u64::MAX, 0)
        .map_err(|e| fail(format!("lzma_stream_decoder: {e}")))?;
    let mut out = Vec::with_capacity(block.plain_size as usize);
    let input: Vec<u8> = block.stream_header.iter().chain(data).copied().collect();
    let mut consumed = 0usize;
    while consumed < input.len() {
        let before = (dec.total_in(), dec.total_out());
        dec.process_vec(&input[consumed..], &mut out, xz2::stream::Action::Run)
            .map_err(|e| fail(format!("lzma_code: {e}")))?;
        consumed = dec.total_in() as usize;
        if out.len() as u64 > block.plain_size {
            return Err(fail("block is bigger than the index says"));
        }
        if (dec.total_in(), dec.total_out()) == before {
            if out.len() == out.capacity() {
                out.reserve(4096);
            } else {
                break;
            }
        }
    }
    if consumed != input.len() || out.len() as u64 != block.plain_size {
        return Err(fail("block does not match the index"));
    }
    Ok(out)
}

impl Handle {
    /// The decoded block number `i`, from the cache or from below.
    fn block(&self, next: &dyn Backend, blocks: &[Block], i: usize) -> Result<Arc<Vec<u8>>> {
        let mut cache = self.cache.lock();
        if let Some(at) = cache.iter().position(|(n, _)| *n == i) {
            let hit = cache.remove(at).unwrap_or_default();
            let data = Arc::clone(&hit.1);
            cache.push_front(hit);
            return Ok(data);
        }
        let b = &blocks[i];
        let raw = read_below(next, b.offset, b.total_size)?;
        let data = Arc::new(decode(b, &raw)?);
        cache.push_front((i, Arc::clone(&data)));
        cache.truncate(self.max_depth);
        Ok(data)
    }
}

impl FilterHandle for Handle {
    fn prepare(&self, next: &dyn Backend, _: &ConnectionInfo) -> Result<()> {
        let blocks = read_index(next)?;
        let largest = blocks.iter().map(|b| b.plain_size).max().unwrap_or(0);
        if largest > self.max_block {
            return Err(fail(format!(
                "xz file largest block is bigger than maxblock: \
                 maxblock = {} (bytes), largest block in xz file = {largest} (bytes); \
                 recompress the xz file with smaller blocks (see nbdkit-xz-filter(1)) \
                 or make xz-max-block bigger",
                self.max_block
            )));
        }
        *self.size.lock() = blocks.last().map_or(0, |b| b.plain_offset + b.plain_size);
        *self.blocks.lock() = blocks;
        Ok(())
    }

    answers!(
        true: can_multi_conn, can_cache;
        false: can_write, can_extents;
    );

    fn size(&self, _: &dyn Backend) -> Result<u64> {
        Ok(*self.size.lock())
    }

    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let offset = r.offset;
        let buf = r.buf();
        let blocks = self.blocks.lock();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            // The block whose range holds `pos`: the last one starting at
            // or before it.
            let i = blocks.partition_point(|b| b.plain_offset <= pos);
            let b = i
                .checked_sub(1)
                .map(|i| (i, &blocks[i]))
                .filter(|(_, b)| pos < b.plain_offset + b.plain_size)
                .ok_or_else(|| Error::new(libc::EIO, "xz: read beyond the end"))?;
            let data = self.block(next, &blocks, b.0)?;
            let inb = (pos - b.1.plain_offset) as usize;
            let n = (data.len() - inb).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&data[inb..inb + n]);
            done += n;
        }
        Ok(())
    }

    fn cache(&self, _: &dyn Backend, _: u32, _: u64) -> Result<()> {
        Ok(())
    }

    fn extents(&self, _: &dyn Backend, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        // The extents below are those of the compressed file: all data.
        sink.add(offset, count as u64, 0).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::Arc;

    use nbd_core::server::backend::Backend;

    use crate::chain::testing::{filter_over, info};
    use crate::plugins::memory::Memory;

    /// `data` as an xz stream of one block, through liblzma (files of
    /// many blocks, made by xz(1), are in the integration tests).
    fn xz(data: &[u8]) -> Vec<u8> {
        let mut w = xz2::write::XzEncoder::new(Vec::new(), 1);
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn disk(bytes: &[u8]) -> Arc<Memory> {
        let mem = Arc::new(Memory::new(bytes.len() as u64));
        mem.pwrite(bytes, 0, false).unwrap();
        mem
    }

    #[test]
    fn reads_through_the_index_and_across_streams() {
        let a: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..70_000u32).map(|i| (i * 3 % 17) as u8).collect();
        // Two streams, with stream padding between them.
        let mut file = xz(&a);
        file.extend_from_slice(&[0; 8]);
        file.extend(xz(&b));
        let chain = filter_over(&super::FILTER, &[], disk(&file) as _);
        let c = chain.open(info()).unwrap();
        assert_eq!(c.size().unwrap(), (a.len() + b.len()) as u64);
        assert!(!c.can_write().unwrap());
        let mut whole = a.clone();
        whole.extend(&b);
        let mut buf = vec![0u8; 5000];
        for off in [0, 199_000, 150_000, 265_000] {
            c.pread(&mut buf, off).unwrap();
            assert_eq!(buf, whole[off as usize..off as usize + 5000]);
        }
    }

    #[test]
    fn refuses_bad_files_and_big_blocks() {
        let chain = filter_over(&super::FILTER, &[], disk(&[7u8; 4096]) as _);
        let e = chain.open(info()).err().unwrap();
        assert_eq!(e.message, "xz: not an xz file");

        let data = vec![1u8; 100_000];
        let f = xz(&data);
        let args = [("xz-max-block", "64K")];
        let chain = filter_over(&super::FILTER, &args, disk(&f) as _);
        let e = chain.open(info()).err().unwrap();
        assert!(e.message.contains("largest block is bigger"), "{e}");

        let mut corrupt = f.clone();
        let n = corrupt.len();
        corrupt[n - 20] ^= 0xff;
        let chain = filter_over(&super::FILTER, &[], disk(&corrupt) as _);
        assert!(chain.open(info()).is_err());
    }
}
