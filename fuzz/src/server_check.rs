//! The checker of `server_stream`: given what a client sent and what the
//! server answered, reads both as the protocol frames them and checks
//! that every request the server accepted got exactly one final reply,
//! and no reply answers a request that was not sent.
//!
//! The client's bytes are arbitrary, so the checker follows the server's
//! own reading rules: negotiation reads option by option (the server's
//! replies tell where transmission starts, and whether in the compact or
//! the extended form), then each request is a header plus the payload
//! `request::payload` says is read. A request is accepted when its header
//! and payload were read in full.

use nbd_core::server::request::{payload, Payload, TxContext};
use nbd_core::wire::consts::{
    client_flags, cmd, handshake_flags, opt, rep, EXTENDED_REPLY_MAGIC, NBDMAGIC,
    OPTION_REPLY_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC,
};
use nbd_core::wire::request::{RequestHeader, EXTENDED_REQUEST_HEADER_LEN, REQUEST_HEADER_LEN};

/// A cursor over bytes.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.i..self.i.checked_add(n)?)?;
        self.i += n;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_be_bytes(s.try_into().unwrap()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|s| u64::from_be_bytes(s.try_into().unwrap()))
    }
    fn rest(&self) -> usize {
        self.b.len() - self.i
    }
}

/// How the client's stream ended, as the server read it.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The client closed, or sent NBD_CMD_DISC, at a request boundary.
    Clean,
    /// A bad header, a cut payload or a write too large: the server
    /// hangs up, and replies to requests in flight may be lost.
    Violation,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Whether the connection reached transmission.
    pub transmission: bool,
    /// Requests accepted and final replies seen.
    pub accepted: usize,
    pub answered: usize,
}

/// Checks `output` (the server's bytes) against `input` (the client's).
/// `oldstyle`: the server greets oldstyle. `parallel`: the server runs
/// more than one worker, so replies may come in any order, and after a
/// protocol violation replies to requests in flight may be lost.
pub fn check(
    input: &[u8],
    output: &[u8],
    oldstyle: bool,
    parallel: bool,
) -> Result<Outcome, String> {
    let mut inp = Cur { b: input, i: 0 };
    let mut out = Cur { b: output, i: 0 };
    let mut o = Outcome::default();
    let Some(form) = negotiation(&mut inp, &mut out, oldstyle)? else {
        return Ok(o);
    };
    o.transmission = true;

    // Only the header form matters to `payload`.
    let ctx = TxContext {
        size: 0,
        tx_flags: 0,
        structured_replies: form.structured,
        extended_headers: form.extended,
        meta_context: None,
    };
    // Requests the server accepted: (cookie, kind, length).
    let mut accepted = Vec::new();
    let mut end = End::Clean;
    while inp.rest() > 0 {
        let header_len = if form.extended {
            EXTENDED_REQUEST_HEADER_LEN
        } else {
            REQUEST_HEADER_LEN
        };
        let Some(hb) = inp.take(header_len) else {
            end = End::Violation;
            break;
        };
        let decoded = if form.extended {
            RequestHeader::decode_extended(hb.try_into().unwrap())
        } else {
            RequestHeader::decode(hb.try_into().unwrap())
        };
        let Ok(h) = decoded else {
            end = End::Violation;
            break;
        };
        if h.kind == cmd::DISC {
            break;
        }
        let need = match payload(&h, &ctx) {
            Payload::None => 0,
            Payload::Receive(n) | Payload::Discard(n) => n as usize,
            Payload::Disconnect => {
                end = End::Violation;
                break;
            }
        };
        if inp.take(need).is_none() {
            end = End::Violation;
            break;
        }
        accepted.push((h.cookie, h.kind, h.length));
    }
    o.accepted = accepted.len();
    if parallel {
        let mut cookies: Vec<u64> = accepted.iter().map(|r| r.0).collect();
        cookies.sort_unstable();
        cookies.dedup();
        if cookies.len() != accepted.len() {
            // Out of order, a reused cookie does not say which request a
            // simple reply answers, nor so how much data follows it.
            return Ok(o);
        }
    }

    // Final replies, matched to accepted requests by cookie (a client may
    // reuse a cookie; each reply then takes one of them). After a
    // violation, a parallel server's hang-up may cut a reply short.
    let lenient = end == End::Violation && parallel;
    let mut open = accepted.clone();
    if let Err(e) = replies(&mut out, &mut open, form, &mut o) {
        if !(lenient && e.starts_with("cut")) {
            return Err(e);
        }
    }
    if !open.is_empty() && (end == End::Clean || !parallel) {
        return Err(format!(
            "{} of {} accepted requests unanswered (stream ended {end:?}): {:x?}",
            open.len(),
            accepted.len(),
            &open[..open.len().min(8)]
        ));
    }
    Ok(o)
}

/// Reads the replies in `out`, closing the requests of `open` they
/// finish. An error starting with "cut" is a reply that ends early.
fn replies(
    out: &mut Cur,
    open: &mut Vec<(u64, u16, u64)>,
    form: Form,
    o: &mut Outcome,
) -> Result<(), String> {
    while out.rest() > 0 {
        let magic = out.u32().ok_or("cut reply magic")?;
        let (cookie, done, data) = match magic {
            // With extended headers every reply is an extended chunk.
            SIMPLE_REPLY_MAGIC if !form.extended => {
                let error = out.u32().ok_or("cut simple reply")?;
                let cookie = out.u64().ok_or("cut simple reply")?;
                let req = open.iter().find(|r| r.0 == cookie);
                let data = match req {
                    Some(&(_, kind, len)) if kind == cmd::READ && error == 0 => len as usize,
                    _ => 0,
                };
                (cookie, true, data)
            }
            STRUCTURED_REPLY_MAGIC if form.structured && !form.extended => {
                let flags = out.u16().ok_or("cut chunk header")?;
                let _kind = out.u16().ok_or("cut chunk header")?;
                let cookie = out.u64().ok_or("cut chunk header")?;
                let len = out.u32().ok_or("cut chunk header")?;
                (cookie, flags & 1 != 0, len as usize)
            }
            EXTENDED_REPLY_MAGIC if form.extended => {
                let flags = out.u16().ok_or("cut extended chunk header")?;
                let _kind = out.u16().ok_or("cut extended chunk header")?;
                let cookie = out.u64().ok_or("cut extended chunk header")?;
                let _offset = out.u64().ok_or("cut extended chunk header")?;
                let len = out.u64().ok_or("cut extended chunk header")?;
                let len = usize::try_from(len)
                    .map_err(|_| format!("an extended chunk of {len} bytes"))?;
                (cookie, flags & 1 != 0, len)
            }
            m => return Err(format!("reply magic {m:#x} at byte {}", out.i - 4)),
        };
        out.take(data)
            .ok_or_else(|| format!("cut: the reply to cookie {cookie:#x} ends in its data"))?;
        let Some(k) = open.iter().position(|r| r.0 == cookie) else {
            return Err(format!(
                "a reply to cookie {cookie:#x}, which no open request has"
            ));
        };
        if done {
            open.remove(k);
            o.answered += 1;
        }
    }
    Ok(())
}

/// The reply and request forms negotiated.
#[derive(Clone, Copy, Debug, Default)]
struct Form {
    structured: bool,
    /// Extended headers: 32-byte requests, every reply an extended chunk.
    extended: bool,
}

/// Follows negotiation. `Ok(Some(form))` when transmission starts,
/// `Ok(None)` when the server (rightly) closed before it.
fn negotiation(inp: &mut Cur, out: &mut Cur, oldstyle: bool) -> Result<Option<Form>, String> {
    if oldstyle {
        // NBDMAGIC, the oldstyle magic, size, flags, 124 zeroes.
        return Ok(out.take(152).map(|_| Form::default()));
    }
    let Some(g) = out.take(18) else {
        return Ok(None);
    };
    if u64::from_be_bytes(g[..8].try_into().unwrap()) != NBDMAGIC {
        return Err("greeting without NBDMAGIC".into());
    }
    let sflags = u16::from_be_bytes([g[16], g[17]]);
    let Some(cflags) = inp.u32() else {
        return Ok(None);
    };
    let no_zeroes =
        cflags & client_flags::NO_ZEROES != 0 && sflags & handshake_flags::NO_ZEROES != 0;
    let mut form = Form::default();
    loop {
        let Some(_magic) = inp.u64() else {
            return Ok(None);
        };
        let (Some(code), Some(len)) = (inp.u32(), inp.u32()) else {
            return Ok(None);
        };
        if inp.take(len as usize).is_none() {
            return Ok(None);
        }
        if code == opt::EXPORT_NAME {
            // Size, flags, and the zeroes unless both sides dropped them;
            // or nothing, when the server refuses the export by hanging up.
            let want = if no_zeroes { 10 } else { 134 };
            return Ok(out.take(want).map(|_| form));
        }
        // Replies to this option, up to its final one.
        loop {
            let Some(magic) = out.u64() else {
                return Ok(None);
            };
            if magic != OPTION_REPLY_MAGIC {
                return Err(format!("option reply magic {magic:#x}"));
            }
            let ropt = out.u32().ok_or("cut option reply")?;
            let rtype = out.u32().ok_or("cut option reply")?;
            let rlen = out.u32().ok_or("cut option reply")?;
            out.take(rlen as usize).ok_or("cut option reply payload")?;
            if ropt != code {
                return Err(format!("reply for option {ropt} to option {code}"));
            }
            if rtype == rep::ACK {
                match code {
                    opt::STRUCTURED_REPLY => form.structured = true,
                    opt::EXTENDED_HEADERS => {
                        form.extended = true;
                        form.structured = true;
                    }
                    opt::GO => return Ok(Some(form)),
                    _ => {}
                }
                break;
            }
            if rtype & rep::ERR_BIT != 0 {
                break;
            }
        }
    }
}
