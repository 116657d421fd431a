//! Replies in the transmission phase: simple replies and structured
//! chunks, checked against the command they answer.
//!
//! A server is trusted for nothing. A reply to a cookie we did not send (or
//! have not finished sending), a chunk type that does not fit the command,
//! data outside the request, a block status chunk for a context we did not
//! negotiate: each is a protocol error that kills the connection, so no
//! byte lands outside the caller's buffer and no command completes twice.

use super::state::{Dest, ReplyStep};
use super::{Client, CommandBuffer, Error, Event};
use crate::errno::{host, NbdError};
use crate::limits::MAX_BUFFERED_CHUNK;
use crate::wire::reply::{self, ReplyStart};
use crate::wire::reply::{ChunkHeader, EXTENDED_REPLY_HEADER_LEN};
use crate::wire::{ChunkType, Command};

fn proto(msg: impl Into<String>) -> Error {
    Error::new(host::EPROTO, msg)
}

impl<C: CommandBuffer> Client<C> {
    /// Waits for the next reply's header, in the negotiated form: the 16
    /// bytes simple and structured replies share, or a whole extended one.
    pub(super) fn expect_reply_header(&mut self) {
        if self.extended_headers() {
            self.expect(EXTENDED_REPLY_HEADER_LEN, ReplyStep::ExtendedReplyStart);
        } else {
            self.expect(16, ReplyStep::ReplyStart);
        }
    }

    /// Whether the connection uses extended headers.
    pub fn extended_headers(&self) -> bool {
        self.stage.facts().extended_headers
    }

    pub(super) fn reply_step(&mut self, step: ReplyStep, b: &[u8]) -> Result<(), Error> {
        match step {
            ReplyStep::ReplyStart => {
                let start: &[u8; 16] = b.try_into().map_err(|_| proto("short reply header"))?;
                self.stats.chunks_received += 1;
                match reply::parse_reply_start(start).map_err(Self::protocol_error)? {
                    ReplyStart::Simple { error, cookie } => self.simple_reply(error, cookie)?,
                    ReplyStart::Structured {
                        flags,
                        kind,
                        cookie,
                    } => {
                        if !self
                            .stage
                            .transmission()
                            .is_some_and(|e| e.structured_replies)
                        {
                            return Err(proto(
                                "server sent a structured reply without negotiating them",
                            ));
                        }
                        self.sent_command(cookie)?;
                        self.chunk = ChunkHeader {
                            flags,
                            kind: ChunkType::from_wire(kind),
                            cookie,
                            length: 0,
                        };
                        self.expect(4, ReplyStep::ChunkLength);
                    }
                }
            }
            ReplyStep::ExtendedReplyStart => {
                let b: &[u8; EXTENDED_REPLY_HEADER_LEN] =
                    b.try_into().map_err(|_| proto("short reply header"))?;
                // Each extended reply is one chunk, as libnbd counts them.
                self.stats.chunks_received += 1;
                let h = reply::parse_extended_reply_header(b).map_err(Self::protocol_error)?;
                self.sent_command(h.cookie)?;
                // Every payload we accept fits 32 bits (a READ's data is at
                // most 64 MiB, buffered chunks at most MAX_BUFFERED_CHUNK).
                let length = u32::try_from(h.length).map_err(|_| {
                    proto(format!(
                        "server sent a chunk of {} bytes, more than we accept",
                        h.length
                    ))
                })?;
                self.chunk = ChunkHeader {
                    flags: h.flags,
                    kind: ChunkType::from_wire(h.kind),
                    cookie: h.cookie,
                    length,
                };
                self.chunk_start()?;
            }
            ReplyStep::ChunkLength => {
                let length = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                self.chunk.length = length;
                self.chunk_start()?;
            }
            ReplyStep::DataOffset => {
                let offset = u64::from_be_bytes(b.try_into().map_err(|_| proto("short"))?);
                let ChunkHeader { cookie, length, .. } = self.chunk;
                let data_len = u64::from(length - 8);
                let pos = self.check_range(cookie, offset, data_len)?;
                self.cover(cookie, data_len)?;
                self.expect_payload(
                    Dest::Caller { cookie, pos },
                    data_len as usize,
                    ReplyStep::ReadDataDone,
                );
            }
            ReplyStep::ReadDataDone => {
                let ChunkHeader { cookie, length, .. } = self.chunk;
                if let Some(c) = self.cmds.get(&cookie) {
                    if c.report_chunks {
                        // The offset was checked in DataOffset; recompute it
                        // from the destination we filled.
                        self.events.push_back(Event::ReadChunk {
                            cookie,
                            offset: self.last_data_offset(cookie, length),
                            len: length - 8,
                            hole: false,
                        });
                    }
                }
                self.chunk_done();
            }
            ReplyStep::ChunkPayloadDone => {
                let payload = std::mem::take(&mut self.scratch);
                let r = self.chunk_payload(&payload);
                self.scratch = payload;
                r?;
                self.chunk_done();
            }
            ReplyStep::SimpleReadDone => {
                let cookie = self.chunk.cookie;
                self.complete(cookie);
                self.expect_reply_header();
            }
        }
        Ok(())
    }

    /// Looks up the command a reply names; it must have been sent whole.
    fn sent_command(&self, cookie: u64) -> Result<&super::state::InFlight<C>, Error> {
        match self.cmds.get(&cookie) {
            Some(c) if c.sent => Ok(c),
            Some(_) => Err(proto(format!(
                "server replied to cookie {cookie} before the request was sent"
            ))),
            None => Err(proto(format!(
                "server replied with unknown cookie {cookie}"
            ))),
        }
    }

    fn simple_reply(&mut self, error: u32, cookie: u64) -> Result<(), Error> {
        let c = self.sent_command(cookie)?;
        let (kind, length) = (c.kind, c.length);
        if let Some(e) = NbdError::from_wire(error) {
            self.fail_command(cookie, server_error(e, b""));
            self.complete(cookie);
        } else if Command::from_wire(kind) == Command::Read {
            // proto.md: once structured replies are negotiated, a READ that
            // succeeds is answered with chunks; a simple reply would leave
            // us guessing whether data follows.
            if self
                .stage
                .transmission()
                .is_some_and(|e| e.structured_replies)
            {
                return Err(proto(
                    "server sent a simple reply to a read after negotiating structured replies",
                ));
            }
            self.chunk = ChunkHeader {
                flags: 0,
                kind: ChunkType::None,
                cookie,
                length: 0,
            };
            self.expect_payload(
                Dest::Caller { cookie, pos: 0 },
                length as usize,
                ReplyStep::SimpleReadDone,
            );
            return Ok(());
        } else {
            self.complete(cookie);
        }
        self.expect_reply_header();
        Ok(())
    }

    /// The chunk's header is complete: decide where its payload goes.
    fn chunk_start(&mut self) -> Result<(), Error> {
        let ChunkHeader {
            kind,
            cookie,
            length,
            ..
        } = self.chunk;
        let done = self.chunk.done();
        let cmd_kind = Command::from_wire(self.sent_command(cookie)?.kind);
        let bad_type = || {
            proto(format!(
                "server sent chunk type {} for a command of type {}",
                kind.to_wire(),
                cmd_kind.to_wire()
            ))
        };
        match kind {
            ChunkType::OffsetData => {
                if cmd_kind != Command::Read {
                    return Err(bad_type());
                }
                if length <= 8 {
                    return Err(proto("OFFSET_DATA chunk without data"));
                }
                self.expect(8, ReplyStep::DataOffset);
            }
            ChunkType::None => {
                if length != 0 || !done {
                    return Err(proto("NONE chunk must be empty and the last"));
                }
                self.chunk_done();
            }
            _ => {
                match kind {
                    ChunkType::OffsetHole if cmd_kind != Command::Read => return Err(bad_type()),
                    ChunkType::BlockStatus | ChunkType::BlockStatusExt
                        if cmd_kind != Command::BlockStatus =>
                    {
                        return Err(bad_type())
                    }
                    // proto.md: with extended headers only the 64-bit form,
                    // without them only the 32-bit one.
                    ChunkType::BlockStatus if self.extended_headers() => {
                        return Err(proto(
                            "server sent a 32-bit block status chunk after extended headers",
                        ))
                    }
                    ChunkType::BlockStatusExt if !self.extended_headers() => {
                        return Err(proto(
                            "server sent a 64-bit block status chunk without extended headers",
                        ))
                    }
                    _ => {}
                }
                if length as usize > MAX_BUFFERED_CHUNK {
                    return Err(proto(format!(
                        "server sent a chunk of {length} bytes, more than we accept"
                    )));
                }
                self.expect_payload(Dest::Scratch, length as usize, ReplyStep::ChunkPayloadDone);
            }
        }
        Ok(())
    }

    /// A buffered chunk is complete.
    fn chunk_payload(&mut self, payload: &[u8]) -> Result<(), Error> {
        let ChunkHeader { kind, cookie, .. } = self.chunk;
        match kind {
            ChunkType::OffsetHole => {
                let (offset, len) =
                    reply::parse_offset_hole(payload).map_err(Self::protocol_error)?;
                let pos = self.check_range(cookie, offset, u64::from(len))?;
                self.cover(cookie, u64::from(len))?;
                if let Some(c) = self.cmds.get_mut(&cookie) {
                    c.ctx.read_buf()[pos..pos + len as usize].fill(0);
                    if c.report_chunks {
                        self.events.push_back(Event::ReadChunk {
                            cookie,
                            offset,
                            len,
                            hole: true,
                        });
                    }
                }
            }
            ChunkType::BlockStatus | ChunkType::BlockStatusExt => {
                let (id, extents): (u32, Vec<(u64, u64)>) = if kind == ChunkType::BlockStatus {
                    let (id, it) =
                        reply::parse_block_status(payload).map_err(Self::protocol_error)?;
                    (id, it.map(|(l, f)| (u64::from(l), u64::from(f))).collect())
                } else {
                    let (id, it) =
                        reply::parse_block_status_ext(payload).map_err(Self::protocol_error)?;
                    (id, it.collect())
                };
                let known = self
                    .stage
                    .transmission()
                    .is_some_and(|e| e.meta_contexts.iter().any(|(i, _)| *i == id));
                if !known {
                    return Err(proto(format!(
                        "server sent block status for context {id}, which was not negotiated"
                    )));
                }
                if let Some(c) = self.cmds.get_mut(&cookie) {
                    if c.answered.contains(&id) {
                        return Err(proto(format!(
                            "server sent block status for context {id} twice in one reply"
                        )));
                    }
                    c.answered.push(id);
                }
                self.events.push_back(Event::BlockStatus {
                    cookie,
                    context_id: id,
                    extents,
                });
            }
            t if t.is_error() => {
                let e =
                    reply::parse_error_chunk(t.to_wire(), payload).map_err(Self::protocol_error)?;
                if let Some(off) = e.offset {
                    self.check_range(cookie, off, 1)?;
                }
                let err = match NbdError::from_wire(e.error) {
                    Some(n) => server_error(n, e.message),
                    None => proto("server sent an error chunk with error 0"),
                };
                self.fail_command(cookie, err);
            }
            t => {
                // proto.md: a client that does not know a non-error chunk
                // type cannot trust the reply; the command fails, the
                // connection stays in sync.
                self.fail_command(cookie, proto(format!("unknown chunk type {}", t.to_wire())));
            }
        }
        Ok(())
    }

    /// Checks that `[offset, offset+len)` lies within the command's request
    /// and returns its position in the command's buffer.
    fn check_range(&self, cookie: u64, offset: u64, len: u64) -> Result<usize, Error> {
        let c = self.sent_command(cookie)?;
        let inside = offset >= c.offset
            && offset - c.offset <= c.length
            && len <= c.length - (offset - c.offset);
        if !inside {
            return Err(proto(format!(
                "server sent a chunk at offset {offset} length {len} outside the request \
                 (offset {} length {})",
                c.offset, c.length
            )));
        }
        Ok((offset - c.offset) as usize)
    }

    /// Counts `len` more bytes of data or hole for a READ: together they
    /// may not exceed the request (chunks must not overlap).
    fn cover(&mut self, cookie: u64, len: u64) -> Result<(), Error> {
        if let Some(c) = self.cmds.get_mut(&cookie) {
            c.covered += len;
            if c.covered > c.length {
                return Err(proto(format!(
                    "server sent more data and holes ({} bytes) than the request's {} bytes: \
                     overlapping chunks",
                    c.covered, c.length
                )));
            }
        }
        Ok(())
    }

    /// The absolute offset of the data chunk just received.
    fn last_data_offset(&self, cookie: u64, length: u32) -> u64 {
        match (self.rx, self.cmds.get(&cookie)) {
            (
                super::state::Rx::Payload {
                    dest: Dest::Caller { pos, .. },
                    ..
                },
                Some(c),
            ) => c.offset + pos as u64 - u64::from(length - 8),
            _ => 0,
        }
    }

    /// Records a command's first error; later ones are dropped, as libnbd does.
    fn fail_command(&mut self, cookie: u64, err: Error) {
        if let Some(c) = self.cmds.get_mut(&cookie) {
            c.error.get_or_insert(err);
        }
    }

    /// A chunk is finished: retire the command on DONE, then read on.
    fn chunk_done(&mut self) {
        let cookie = self.chunk.cookie;
        if self.chunk.done() {
            self.complete(cookie);
        }
        if self.fatal.is_none() && !self.closed {
            self.expect_reply_header();
        }
    }

    fn complete(&mut self, cookie: u64) {
        if let Some(c) = self.cmds.remove(&cookie) {
            self.events.push_back(Event::Completed {
                cookie,
                ctx: c.ctx,
                result: c.error.map_or(Ok(()), Err),
            });
        }
        self.close_if_disconnected();
    }
}

fn server_error(e: NbdError, message: &[u8]) -> Error {
    let text = String::from_utf8_lossy(message);
    if text.is_empty() {
        Error::new(e.to_errno(), "server reported an error")
    } else {
        Error::new(e.to_errno(), format!("server reported an error: {text}"))
    }
}
