//! Submitting commands: the checks libnbd makes before anything is sent,
//! and the send queue that hands headers and WRITE payloads to the driver.

use std::io::IoSlice;

use super::state::InFlight;
use super::{strict, Client, Command, CommandBuffer, Error, Event, ExportInfo, Phase};
use crate::errno::host;
use crate::limits::MAX_CLIENT_REQUEST_LEN;
use crate::wire::consts::tx_flags;
use crate::wire::request::{EncodedRequest, RequestHeader};
use crate::wire::{CmdFlags, Command as Cmd};

/// The state of NBD_CMD_DISC, which has no reply and no command slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Disc {
    #[default]
    None,
    /// Asked for; goes out after every command queued before it.
    Queued {
        header: EncodedRequest,
        sent: usize,
    },
    Sent,
}

impl Disc {
    pub(super) fn is_pending(&self) -> bool {
        matches!(self, Disc::Queued { .. })
    }
}

/// Flags each command accepts.
fn allowed_flags(kind: Cmd) -> CmdFlags {
    match kind {
        Cmd::Read => CmdFlags::DF,
        // PAYLOAD_LEN is a caller's flag for the two commands that carry a
        // payload; with strict::AUTO_FLAG the client sets it right anyway.
        Cmd::Write => CmdFlags::FUA | CmdFlags::PAYLOAD_LEN,
        Cmd::Trim => CmdFlags::FUA,
        Cmd::WriteZeroes => CmdFlags::FUA | CmdFlags::NO_HOLE | CmdFlags::FAST_ZERO,
        Cmd::BlockStatus => CmdFlags::REQ_ONE | CmdFlags::PAYLOAD_LEN,
        Cmd::Flush | Cmd::Cache | Cmd::Disc | Cmd::Unknown(_) => CmdFlags::empty(),
    }
}

/// LIBNBD_STRICT_COMMANDS: the command and its flags against what the
/// server advertised.
fn check_supported(e: &ExportInfo, c: &Command) -> Result<(), Error> {
    let ro = e.has_flag(tx_flags::READ_ONLY);
    let unsupported = |what: &str| {
        Err(Error::new(
            host::EINVAL,
            format!("server does not support {what} operations"),
        ))
    };
    match Cmd::from_wire(c.kind) {
        // libnbd 1.14 asks whether the server offers trim or zero before
        // whether the export is read-only, so a read-only export that
        // offers neither (the usual case) gives EINVAL for them.
        Cmd::Trim if !e.has_flag(tx_flags::SEND_TRIM) => return unsupported("trim"),
        Cmd::WriteZeroes if !e.has_flag(tx_flags::SEND_WRITE_ZEROES) => return unsupported("zero"),
        Cmd::Write | Cmd::Trim | Cmd::WriteZeroes if ro => {
            return Err(Error::new(
                host::EPERM,
                "server does not support write operations",
            ))
        }
        Cmd::Flush if !e.has_flag(tx_flags::SEND_FLUSH) => return unsupported("flush"),
        Cmd::Cache if !e.has_flag(tx_flags::SEND_CACHE) => return unsupported("cache"),
        Cmd::BlockStatus if e.meta_contexts.is_empty() => {
            return Err(Error::new(
                host::ENOTSUP,
                "did not negotiate any metadata contexts, either you did not call \
                 nbd_add_meta_context before connecting or the server does not support it",
            ))
        }
        _ => {}
    }
    for (flag, needs, what) in [
        (CmdFlags::FUA, tx_flags::SEND_FUA, "FUA"),
        (CmdFlags::DF, tx_flags::SEND_DF, "DF"),
        (CmdFlags::FAST_ZERO, tx_flags::SEND_FAST_ZERO, "fast zero"),
    ] {
        if CmdFlags(c.flags).contains(flag) && !e.has_flag(needs) {
            return Err(Error::new(
                host::EINVAL,
                format!("server does not support the {what} flag"),
            ));
        }
    }
    Ok(())
}

impl<C: CommandBuffer> Client<C> {
    /// Queues a command. On success returns its cookie (unique, from 1);
    /// on failure nothing was queued and `ctx` is handed back.
    pub fn submit(&mut self, command: Command, ctx: C) -> Result<u64, (Error, C)> {
        self.submit_with_payload(command, Vec::new(), ctx)
    }

    /// Queues a BLOCK_STATUS that asks only about the contexts `ids`
    /// (nbd_block_status_filter): their ids go in a payload, flagged with
    /// NBD_CMD_FLAG_PAYLOAD_LEN, so it needs extended headers and a server
    /// that offers NBD_FLAG_BLOCK_STATUS_PAYLOAD (unless strict mode's
    /// COMMANDS check is off), and every id must have been negotiated.
    pub fn submit_block_status_filter(
        &mut self,
        mut command: Command,
        ids: &[u32],
        ctx: C,
    ) -> Result<u64, (Error, C)> {
        let Some(e) = self.stage.transmission() else {
            return self.submit(command, ctx);
        };
        if !e.extended_headers {
            return Err((
                Error::new(host::ENOTSUP, "server did not negotiate extended headers"),
                ctx,
            ));
        }
        if self.config.strict & strict::COMMANDS != 0 && !e.has_flag(tx_flags::BLOCK_STATUS_PAYLOAD)
        {
            return Err((
                Error::new(
                    host::ENOTSUP,
                    "server does not support filtered block status",
                ),
                ctx,
            ));
        }
        if ids.is_empty()
            || ids
                .iter()
                .any(|id| !e.meta_contexts.iter().any(|(i, _)| i == id))
        {
            return Err((
                Error::new(
                    host::EINVAL,
                    "filter names a meta context that was not negotiated",
                ),
                ctx,
            ));
        }
        command.kind = Cmd::BlockStatus.to_wire();
        let payload = crate::wire::request::encode_block_status_payload(command.length, ids);
        self.submit_with_payload(command, payload, ctx)
    }

    /// [`Client::submit`], with a payload after the header (flagged
    /// PAYLOAD_LEN, the header's length then being the payload's).
    fn submit_with_payload(
        &mut self,
        command: Command,
        payload: Vec<u8>,
        mut ctx: C,
    ) -> Result<u64, (Error, C)> {
        if let Err(e) = self.check(&command, &mut ctx) {
            return Err((e, ctx));
        }
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        // check() bounded the length to 32 bits unless extended headers
        // carry 64.
        let flags = self.wire_flags(&command, !payload.is_empty());
        let length = if payload.is_empty() || flags & CmdFlags::PAYLOAD_LEN.bits() == 0 {
            command.length
        } else {
            payload.len() as u64
        };
        let header = RequestHeader {
            flags,
            kind: command.kind,
            cookie,
            offset: command.offset,
            length,
        }
        .encode_for(self.extended_headers());
        self.cmds.insert(
            cookie,
            InFlight {
                kind: command.kind,
                offset: command.offset,
                length: command.length,
                report_chunks: command.report_chunks,
                header,
                payload,
                ctx,
                sent: false,
                error: None,
                covered: 0,
                answered: Vec::new(),
            },
        );
        self.send_queue.push_back(cookie);
        self.stats.chunks_sent += 1;
        Ok(cookie)
    }

    /// The flags a command goes out with. With strict::AUTO_FLAG (the
    /// default) NBD_CMD_FLAG_PAYLOAD_LEN is set exactly where the server
    /// expects it, whatever the caller passed: on a request with a payload
    /// of its own (filtered block status), and on every write once
    /// extended headers are in use (their write length is the payload's
    /// either way, so the flag only states it). Without AUTO_FLAG the
    /// caller's flag goes out as given, even where it confuses the server.
    fn wire_flags(&self, c: &Command, has_payload: bool) -> u16 {
        let payload_len = CmdFlags::PAYLOAD_LEN.bits();
        if self.config.strict & strict::AUTO_FLAG == 0 {
            return c.flags;
        }
        let is_write = Cmd::from_wire(c.kind) == Cmd::Write;
        if has_payload || (is_write && self.extended_headers()) {
            c.flags | payload_len
        } else {
            c.flags & !payload_len
        }
    }

    /// libnbd's checks, in its order: state, command support, flags, zero
    /// length, alignment, bounds, then size. Each of the middle ones can
    /// be turned off by clearing its bit of [`super::Config::strict`]
    /// (nbd_set_strict_mode); the state, the 64 MiB limit and the 32-bit
    /// wire length are always checked.
    fn check(&self, c: &Command, ctx: &mut C) -> Result<(), Error> {
        match self.phase() {
            Phase::Connecting | Phase::Negotiating => {
                return Err(Error::new(host::ENOTCONN, "not connected"))
            }
            Phase::Dead => return Err(Error::new(host::EINVAL, "connection is dead")),
            Phase::Closed => return Err(Error::new(host::EINVAL, "connection is closed")),
            Phase::Ready | Phase::Processing => {}
        }
        if self.disc != Disc::None {
            return Err(after_disconnect());
        }
        let Some(e) = self.stage.transmission() else {
            return Err(Error::new(host::ENOTCONN, "not connected"));
        };
        let strict = self.config.strict;
        let kind = Cmd::from_wire(c.kind);
        if matches!(kind, Cmd::Disc | Cmd::Unknown(_)) {
            return Err(Error::new(host::EINVAL, "unknown command"));
        }
        if strict & strict::COMMANDS != 0 {
            check_supported(e, c)?;
        }
        if strict & strict::FLAGS != 0 && !(CmdFlags(c.flags) & !allowed_flags(kind)).is_empty() {
            return Err(Error::new(host::EINVAL, "invalid flag for this command"));
        }
        let no_length = kind == Cmd::Flush;
        if !no_length && strict & strict::ZERO_SIZE != 0 && c.length == 0 {
            return Err(Error::new(host::EINVAL, "count cannot be 0"));
        }
        if !no_length && strict & strict::ALIGN != 0 {
            if let Some((min, _, _)) = e.block_size {
                let min = u64::from(min.max(1));
                if !c.offset.is_multiple_of(min) || !c.length.is_multiple_of(min) {
                    return Err(Error::new(
                        host::EINVAL,
                        format!("request is unaligned to the server's minimum block size {min}"),
                    ));
                }
            }
        }
        if !no_length
            && strict & strict::BOUNDS != 0
            && (c.offset > e.size || c.length > e.size - c.offset)
        {
            let errno = if kind.writes() {
                host::ENOSPC
            } else {
                host::EINVAL
            };
            return Err(Error::new(errno, "request out of bounds"));
        }
        // strict::PAYLOAD: a write no larger than the server takes (the
        // 64 MiB limit below holds whether or not it is on).
        if kind == Cmd::Write && strict & strict::PAYLOAD != 0 && c.length > e.payload_maximum() {
            return Err(Error::new(
                host::ERANGE,
                format!(
                    "request too large: maximum payload size is {}",
                    e.payload_maximum()
                ),
            ));
        }
        let max = match kind {
            Cmd::Read | Cmd::Write => MAX_CLIENT_REQUEST_LEN,
            // Extended headers carry 64-bit effect lengths.
            _ if self.extended_headers() => u64::MAX,
            _ => u64::from(u32::MAX),
        };
        if c.length > max {
            return Err(Error::new(
                host::ERANGE,
                format!("request too large: maximum request size is {max}"),
            ));
        }
        let buf_len = match kind {
            Cmd::Read => ctx.read_buf().len(),
            Cmd::Write => ctx.write_buf().len(),
            _ => c.length as usize,
        };
        if buf_len as u64 != c.length {
            return Err(Error::new(
                host::EINVAL,
                "buffer length does not match the request",
            ));
        }
        Ok(())
    }

    /// Asks the server to disconnect, after every command already queued.
    /// Once it has gone out and every reply is in, the client is closed.
    pub fn disconnect(&mut self) -> Result<(), Error> {
        match self.phase() {
            Phase::Ready | Phase::Processing => {}
            Phase::Connecting | Phase::Negotiating => {
                return Err(Error::new(host::ENOTCONN, "not connected"))
            }
            Phase::Dead | Phase::Closed => {
                return Err(Error::new(host::EINVAL, "connection is already closed"))
            }
        }
        // libnbd: a second request is refused, even while the first is
        // still queued behind other commands.
        if self.disc != Disc::None {
            return Err(after_disconnect());
        }
        {
            let header = RequestHeader {
                flags: 0,
                kind: Cmd::Disc.to_wire(),
                cookie: 0,
                offset: 0,
                length: 0,
            }
            .encode_for(self.extended_headers());
            self.disc = Disc::Queued { header, sent: 0 };
            self.stats.chunks_sent += 1;
        }
        Ok(())
    }

    /// Fills `out` with the slices to send next, in order; returns how many
    /// it filled. Headers come from the client, WRITE payloads straight
    /// from the commands' buffers, so one `writev` sends many requests.
    pub fn send_bufs<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        if self.fatal.is_some() || self.closed || out.is_empty() {
            return 0;
        }
        if self.out_pos < self.out.len() {
            out[0] = IoSlice::new(&self.out[self.out_pos..]);
            return 1;
        }
        let mut n = 0;
        let mut skip = self.send_pos;
        for cookie in &self.send_queue {
            let Some(c) = self.cmds.get(cookie) else {
                continue;
            };
            for part in [c.header.as_bytes(), payload_of(c)] {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                out[n] = IoSlice::new(&part[skip..]);
                skip = 0;
                n += 1;
                if n == out.len() {
                    return n;
                }
            }
        }
        if let Disc::Queued { header, sent } = &self.disc {
            out[n] = IoSlice::new(&header.as_bytes()[*sent..]);
            n += 1;
        }
        n
    }

    /// The driver sent `n` bytes of what [`Client::send_bufs`] offered.
    pub fn send_done(&mut self, mut n: usize) {
        self.stats.bytes_sent += n as u64;
        if self.out_pos < self.out.len() {
            self.out_pos += n;
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
                if self.negotiation.aborting {
                    // NBD_OPT_ABORT is out; the server's answer, if any,
                    // changes nothing, so like DISC we need not wait.
                    self.closed = true;
                    self.rx = super::state::Rx::Idle;
                }
            }
            return;
        }
        while n > 0 {
            let Some(&cookie) = self.send_queue.front() else {
                break;
            };
            let total = self
                .cmds
                .get(&cookie)
                .map_or(0, |c| c.header.as_bytes().len() + payload_of(c).len());
            let left = total - self.send_pos;
            if n < left {
                self.send_pos += n;
                return;
            }
            n -= left;
            self.send_pos = 0;
            self.send_queue.pop_front();
            if let Some(c) = self.cmds.get_mut(&cookie) {
                c.sent = true;
            }
        }
        if let Disc::Queued { header, sent } = self.disc {
            let sent = sent + n;
            self.disc = if sent >= header.as_bytes().len() {
                Disc::Sent
            } else {
                Disc::Queued { header, sent }
            };
            self.close_if_disconnected();
        }
    }

    /// nbd_shutdown(LIBNBD_SHUTDOWN_ABANDON_PENDING): every command not
    /// yet started on the wire is dropped unsent and completes with
    /// ENOTCONN, as libnbd aborts its commands still to issue. A command
    /// partly sent must be finished, or the stream would be torn.
    pub fn abandon_unsent(&mut self) {
        let keep = usize::from(self.send_pos > 0);
        let abandoned: Vec<u64> = self.send_queue.drain(keep..).collect();
        for cookie in abandoned {
            if let Some(c) = self.cmds.remove(&cookie) {
                // Not sent after all (counted when it was queued).
                self.stats.chunks_sent -= 1;
                self.events.push_back(Event::Completed {
                    cookie,
                    ctx: c.ctx,
                    result: Err(Error::new(
                        host::ENOTCONN,
                        "command abandoned by nbd_shutdown before it was sent",
                    )),
                });
            }
        }
    }

    /// Whether NBD_CMD_DISC has been asked for (queued or sent).
    pub fn disconnect_requested(&self) -> bool {
        self.disc != Disc::None
    }

    /// Whether NBD_CMD_DISC has gone out: the driver may shut down its
    /// write side.
    pub fn disconnect_sent(&self) -> bool {
        self.disc == Disc::Sent
    }

    /// Whether, after NBD_CMD_DISC, the connection stays open until the
    /// server hangs up (see [`Client::close_if_disconnected`]). A driver
    /// that shuts down its write side once DISC is out (as libnbd does on
    /// a plain socket) asks for this: the server then sees its EOF, tears
    /// the connection down and closes, and only then does the client close
    /// its socket, so the server never has a new connection to serve while
    /// it is still tearing down the last one.
    pub fn set_wait_for_server_close(&mut self, wait: bool) {
        self.wait_for_server_close = wait;
    }

    /// After NBD_CMD_DISC has gone out and the last reply is in, there is
    /// nothing left to receive: the connection is closed at once, or, if
    /// the driver waits for the server to hang up, when its EOF comes
    /// (`on_eof`; anything else the server sends kills the connection).
    pub(super) fn close_if_disconnected(&mut self) {
        if self.wait_for_server_close {
            return;
        }
        if self.disc == Disc::Sent && self.cmds.is_empty() && self.fatal.is_none() {
            self.closed = true;
            self.rx = super::state::Rx::Idle;
        }
    }
}

fn payload_of<C: CommandBuffer>(c: &InFlight<C>) -> &[u8] {
    if Cmd::from_wire(c.kind) == Cmd::Write {
        c.ctx.write_buf()
    } else {
        &c.payload
    }
}

/// libnbd's refusal of any command once NBD_CMD_DISC has been requested.
fn after_disconnect() -> Error {
    Error::new(
        host::EINVAL,
        "cannot request more commands after NBD_CMD_DISC",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Config;
    use crate::wire::consts::{cmd, cmd_flags};

    /// A client in the transmission phase of a 1 MiB export with the
    /// given flags and minimum block size, in the given strict mode.
    fn ready(flags: u16, min: Option<u32>, strict: u32) -> Client<Vec<u8>> {
        let mut c = Client::new(Config {
            strict,
            ..Config::default()
        });
        c.stage = super::super::state::Stage::Transmission(ExportInfo {
            size: 1 << 20,
            flags: flags | tx_flags::HAS_FLAGS,
            block_size: min.map(|m| (m, 4096, 1 << 25)),
            structured_replies: true,
            ..Default::default()
        });
        c
    }

    fn errno(c: &mut Client<Vec<u8>>, kind: u16, flags: u16, off: u64, len: u64) -> i32 {
        let buf = if kind == cmd::READ || kind == cmd::WRITE {
            vec![0; len as usize]
        } else {
            Vec::new()
        };
        match c.submit(Command::new(kind, flags, off, len), buf) {
            Ok(_) => 0,
            Err((e, _)) => e.errno,
        }
    }

    #[test]
    fn default_is_all_checks() {
        assert_eq!(Config::default().strict, strict::ALL);
    }

    #[test]
    fn commands_bit() {
        let mut c = ready(tx_flags::READ_ONLY, None, strict::ALL);
        assert_eq!(errno(&mut c, cmd::WRITE, 0, 0, 512), host::EPERM);
        assert_eq!(errno(&mut c, cmd::FLUSH, 0, 0, 0), host::EINVAL);
        assert_eq!(
            errno(&mut c, cmd::READ, cmd_flags::DF, 0, 512),
            host::EINVAL
        );
        assert_eq!(errno(&mut c, cmd::BLOCK_STATUS, 0, 0, 512), host::ENOTSUP);
        let mut c = ready(tx_flags::READ_ONLY, None, strict::ALL & !strict::COMMANDS);
        assert_eq!(errno(&mut c, cmd::WRITE, 0, 0, 512), 0);
        assert_eq!(errno(&mut c, cmd::FLUSH, 0, 0, 0), 0);
        assert_eq!(errno(&mut c, cmd::READ, cmd_flags::DF, 0, 512), 0);
        assert_eq!(errno(&mut c, cmd::BLOCK_STATUS, 0, 0, 512), 0);
    }

    #[test]
    fn flags_bit() {
        let mut c = ready(tx_flags::SEND_FUA, None, strict::ALL);
        assert_eq!(
            errno(&mut c, cmd::READ, cmd_flags::FUA, 0, 512),
            host::EINVAL
        );
        let mut c = ready(tx_flags::SEND_FUA, None, strict::ALL & !strict::FLAGS);
        assert_eq!(errno(&mut c, cmd::READ, cmd_flags::FUA, 0, 512), 0);
    }

    #[test]
    fn zero_size_bit() {
        let mut c = ready(0, None, strict::ALL);
        assert_eq!(errno(&mut c, cmd::READ, 0, 0, 0), host::EINVAL);
        let mut c = ready(0, None, strict::ALL & !strict::ZERO_SIZE);
        assert_eq!(errno(&mut c, cmd::READ, 0, 0, 0), 0);
    }

    #[test]
    fn bounds_bit() {
        let mut c = ready(0, None, strict::ALL);
        assert_eq!(errno(&mut c, cmd::READ, 0, 1 << 20, 512), host::EINVAL);
        assert_eq!(errno(&mut c, cmd::WRITE, 0, (1 << 20) - 1, 2), host::ENOSPC);
        let mut c = ready(0, None, strict::ALL & !strict::BOUNDS);
        assert_eq!(errno(&mut c, cmd::READ, 0, 1 << 20, 512), 0);
        // The 64 MiB limit stays.
        assert_eq!(errno(&mut c, cmd::READ, 0, 0, (64 << 20) + 1), host::ERANGE);
    }

    #[test]
    fn align_bit() {
        let mut c = ready(0, Some(512), strict::ALL);
        assert_eq!(errno(&mut c, cmd::READ, 0, 1, 512), host::EINVAL);
        assert_eq!(errno(&mut c, cmd::READ, 0, 0, 100), host::EINVAL);
        assert_eq!(errno(&mut c, cmd::READ, 0, 512, 1024), 0);
        let mut c = ready(0, Some(512), strict::ALL & !strict::ALIGN);
        assert_eq!(errno(&mut c, cmd::READ, 0, 1, 512), 0);
        // No constraint advertised: nothing to check.
        let mut c = ready(0, None, strict::ALL);
        assert_eq!(errno(&mut c, cmd::READ, 0, 1, 3), 0);
    }

    #[test]
    fn payload_maximum_follows_the_servers_maximum_within_1m_to_64m() {
        let with_max = |max| ExportInfo {
            block_size: Some((1, 4096, max)),
            ..Default::default()
        };
        assert_eq!(ExportInfo::default().payload_maximum(), 64 << 20);
        assert_eq!(with_max(0).payload_maximum(), 64 << 20);
        assert_eq!(with_max(512 << 10).payload_maximum(), 1 << 20);
        assert_eq!(with_max(2 << 20).payload_maximum(), 2 << 20);
        assert_eq!(with_max(u32::MAX).payload_maximum(), 64 << 20);
    }

    #[test]
    fn payload_bit() {
        // ready() advertises a 32 MiB maximum on a 1 MiB export: bounds
        // off to reach the size checks.
        let all = strict::ALL & !strict::BOUNDS;
        let mut c = ready(0, Some(1), all);
        assert_eq!(
            errno(&mut c, cmd::WRITE, 0, 0, (32 << 20) + 1),
            host::ERANGE
        );
        assert_eq!(errno(&mut c, cmd::WRITE, 0, 0, 32 << 20), 0);
        // Reads are not payloads: only the 64 MiB limit applies.
        assert_eq!(errno(&mut c, cmd::READ, 0, 0, (32 << 20) + 1), 0);
        let mut c = ready(0, Some(1), all & !strict::PAYLOAD);
        assert_eq!(errno(&mut c, cmd::WRITE, 0, 0, (32 << 20) + 1), 0);
        assert_eq!(
            errno(&mut c, cmd::WRITE, 0, 0, (64 << 20) + 1),
            host::ERANGE
        );
    }

    #[test]
    fn auto_flag_bit() {
        let len = cmd_flags::PAYLOAD_LEN;
        let write = |flags| Command::new(cmd::WRITE, flags, 0, 512);
        let read = Command::new(cmd::READ, len, 0, 512);
        let extended = |strict| {
            let mut c = ready(0, None, strict);
            if let super::super::state::Stage::Transmission(e) = &mut c.stage {
                e.extended_headers = true;
            }
            c
        };
        // Compact headers: never PAYLOAD_LEN on a write; always on a
        // request with its own payload.
        let c = ready(0, None, strict::ALL);
        assert_eq!(c.wire_flags(&write(len), false), 0);
        assert_eq!(c.wire_flags(&read, false), 0);
        assert_eq!(c.wire_flags(&write(0), true), len);
        // Extended headers: always on a write.
        let c = extended(strict::ALL);
        assert_eq!(c.wire_flags(&write(0), false), len);
        assert_eq!(c.wire_flags(&write(len), false), len);
        // Off: the caller's flags, as given.
        let c = ready(0, None, strict::ALL & !strict::AUTO_FLAG);
        assert_eq!(c.wire_flags(&write(len), false), len);
        let c = extended(strict::ALL & !strict::AUTO_FLAG);
        assert_eq!(c.wire_flags(&write(0), false), 0);
    }
}
