//! The data plugin: a small disk written on the command line.
//!
//! `data=` takes nbdkit-data-plugin's format; this implements its common
//! subset: bytes (`0 1 0x55 0o17 017`), strings (`"Hello\n"` with
//! `\\ \" \n \t \r \0 \xHH` escapes), `@OFFSET` / `@+N` / `@-N` / `@^ALIGN`,
//! `leNN:`/`beNN:` words (16, 32, 64 bits), `( ... )` groups, `*N`
//! repetition and `[N:M]` slices of the item before, `<FILE` (a file's
//! contents), `EXPR -> \NAME` assignments and `\NAME` references (scoped
//! by groups), `$VAR` (a `VAR=` parameter on the command line, else an
//! environment variable, in this same format, as a nested group: every
//! parameter other than data=, raw=, base64=, size= and allocator= is such
//! a variable, as in nbdkit), `<(SCRIPT)` (the output of `/bin/sh -c
//! SCRIPT`, treated as a file's bytes; `<(SCRIPT)[:N]` reads only N bytes,
//! so an endless script works) and `#` comments. `raw=` gives the bytes
//! directly, `base64=` in base64. `size=` pads or truncates; otherwise the
//! size is the furthest position reached. The disk lives in a sparse
//! memory disk: writes are allowed and lost at exit.
//!
//! Bytes are stored as nbdkit stores them, which block status shows: a
//! single byte, a file's bytes (`<FILE`, `<FILE[N:M]`, raw=, base64=) and
//! any run holding a non-zero byte allocate the pages they touch, so even
//! zeroes written that way are not a hole (they read as ZERO without
//! HOLE); a run of two or more zero bytes (adjacent literal bytes count as
//! one run, as nbdkit merges them) only zeroes, like nbdkit's fill. A
//! `<FILE[N:M]` slice reads only bytes N to M, so `</dev/urandom[:4]`
//! works.

use super::memory::Memory;
use crate::params::Params;

use std::sync::Arc;

use super::PluginSpec;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "data",
    magic: Some("data"),
    params: &[
        ("data", "the disk's content in nbdkit's data format"),
        ("raw", "the disk's content as literal bytes"),
        ("base64", "the disk's content in base64"),
        (
            "size",
            "the size of the disk (default: the end of the data)",
        ),
        ("allocator", "how the RAM is allocated (sparse)"),
    ],
    open: |p, _| Ok(Arc::new(open(p)?)),
};

#[derive(Debug, Clone)]
enum Expr {
    /// Literal bytes (numbers, words, strings).
    Bytes(Vec<u8>),
    /// `<FILE`: read when evaluated, only the part a slice needs.
    File(String),
    /// `<(SCRIPT)`: the script's standard output, read when evaluated,
    /// only as far as a slice needs.
    Script(String),
    Abs(u64),
    Rel(i64),
    Align(u64),
    Group(Vec<Expr>),
    Repeat(Box<Expr>, u64),
    Slice(Box<Expr>, Option<u64>, Option<u64>),
    /// `EXPR -> \NAME`: binds NAME in the current scope; writes nothing.
    Assign(Box<Expr>, String),
    /// `\NAME`: the value bound to NAME here or in an enclosing scope.
    Name(String),
    /// `$VAR`: a command-line parameter or environment variable, in this
    /// same format, as a nested scope.
    Var(String),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

fn parse_int(t: &str) -> Result<u64, String> {
    let t = t.trim();
    let r = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else if let Some(o) = t.strip_prefix("0o") {
        u64::from_str_radix(o, 8)
    } else if t.len() > 1 && t.starts_with('0') {
        u64::from_str_radix(&t[1..], 8)
    } else {
        t.parse()
    };
    r.map_err(|_| format!("could not parse number: {t}"))
}

impl<'a> Parser<'a> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() {
            match self.s[self.i] {
                b' ' | b'\t' | b'\n' | b'\r' => self.i += 1,
                b'#' => {
                    while self.i < self.s.len() && self.s[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    /// A word: up to whitespace or one of the structural characters.
    fn word(&mut self) -> String {
        let st = self.i;
        while self.i < self.s.len() && !b" \t\r\n()*[]#\"".contains(&self.s[self.i]) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[st..self.i]).into_owned()
    }

    /// A name after `\\` (letters, digits, `-`, `_`) or `$` (letters,
    /// digits, `_`).
    fn name(&mut self, dash: bool) -> String {
        let st = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric()
                || self.s[self.i] == b'_'
                || (dash && self.s[self.i] == b'-'))
        {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[st..self.i]).into_owned()
    }

    fn items(&mut self, in_group: bool) -> Result<Vec<Expr>, String> {
        let mut v: Vec<Expr> = Vec::new();
        loop {
            self.skip_ws();
            let Some(&c) = self.s.get(self.i) else {
                if in_group {
                    return Err("unterminated '(' group".into());
                }
                return Ok(v);
            };
            match c {
                b')' => {
                    if !in_group {
                        return Err("')' without '('".into());
                    }
                    self.i += 1;
                    return Ok(v);
                }
                b'*' => {
                    self.i += 1;
                    self.skip_ws();
                    let n = parse_int(&self.word())?;
                    let e = v.pop().ok_or("'*' with nothing before it")?;
                    v.push(Expr::Repeat(Box::new(e), n));
                }
                b'[' => {
                    self.i += 1;
                    let st = self.i;
                    while self.i < self.s.len() && self.s[self.i] != b']' {
                        self.i += 1;
                    }
                    if self.i >= self.s.len() {
                        return Err("unterminated '[' slice".into());
                    }
                    let inner = String::from_utf8_lossy(&self.s[st..self.i]).into_owned();
                    self.i += 1;
                    let (a, b) = inner
                        .split_once(':')
                        .ok_or_else(|| format!("slice [{inner}] needs ':'"))?;
                    let a = if a.trim().is_empty() {
                        None
                    } else {
                        Some(parse_int(a)?)
                    };
                    let b = if b.trim().is_empty() {
                        None
                    } else {
                        Some(parse_int(b)?)
                    };
                    let e = v.pop().ok_or("'[' with nothing before it")?;
                    v.push(Expr::Slice(Box::new(e), a, b));
                }
                b'(' => {
                    self.i += 1;
                    v.push(Expr::Group(self.items(true)?));
                }
                b'"' => {
                    self.i += 1;
                    v.push(Expr::Bytes(self.string()?));
                }
                b'@' => {
                    self.i += 1;
                    let w = self.word();
                    v.push(if let Some(n) = w.strip_prefix('+') {
                        Expr::Rel(parse_int(n)? as i64)
                    } else if let Some(n) = w.strip_prefix('-') {
                        Expr::Rel(-(parse_int(n)? as i64))
                    } else if let Some(n) = w.strip_prefix('^') {
                        let a = parse_int(n)?;
                        if a == 0 || !a.is_power_of_two() {
                            return Err(format!("@^{n}: alignment must be a power of 2"));
                        }
                        Expr::Align(a)
                    } else {
                        Expr::Abs(parse_int(&w)?)
                    });
                }
                b'<' => {
                    self.i += 1;
                    if self.s.get(self.i) == Some(&b'(') {
                        self.i += 1;
                        v.push(Expr::Script(self.script()?));
                        continue;
                    }
                    let f = self.word();
                    if f.is_empty() {
                        return Err("'<' needs a file name".into());
                    }
                    v.push(Expr::File(f));
                }
                b'\\' => {
                    self.i += 1;
                    let n = self.name(true);
                    if n.is_empty() {
                        return Err("'\\' must be followed by a name".into());
                    }
                    v.push(Expr::Name(n));
                }
                b'$' => {
                    self.i += 1;
                    let n = self.name(false);
                    if n.is_empty() {
                        return Err("'$' must be followed by a variable name".into());
                    }
                    v.push(Expr::Var(n));
                }
                b'-' if self.s.get(self.i + 1) == Some(&b'>') => {
                    self.i += 2;
                    self.skip_ws();
                    if self.s.get(self.i) != Some(&b'\\') {
                        return Err("'->' must be followed by \\NAME".into());
                    }
                    self.i += 1;
                    let n = self.name(true);
                    if n.is_empty() {
                        return Err("'->' must be followed by \\NAME".into());
                    }
                    let e = v.pop().ok_or("'->' with nothing before it")?;
                    v.push(Expr::Assign(Box::new(e), n));
                }
                _ => {
                    let w = self.word();
                    if w.is_empty() {
                        return Err(format!("unexpected character '{}'", c as char));
                    }
                    v.push(Expr::Bytes(Self::word_bytes(&w)?));
                }
            }
        }
    }

    /// The text of `<(SCRIPT)` after its `(`, up to the matching `)`:
    /// the script may hold parentheses in matching pairs, as nbdkit says.
    fn script(&mut self) -> Result<String, String> {
        let start = self.i;
        let mut depth = 1;
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            match c {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        let text = &self.s[start..self.i - 1];
                        return Ok(String::from_utf8_lossy(text).into_owned());
                    }
                }
                _ => {}
            }
        }
        Err("unterminated '<(' script".into())
    }

    fn word_bytes(w: &str) -> Result<Vec<u8>, String> {
        for (p, bits, le) in [
            ("le16:", 16, true),
            ("be16:", 16, false),
            ("le32:", 32, true),
            ("be32:", 32, false),
            ("le64:", 64, true),
            ("be64:", 64, false),
        ] {
            if let Some(n) = w.strip_prefix(p) {
                let n = parse_int(n)?;
                let len = bits / 8;
                if bits < 64 && n >> bits != 0 {
                    return Err(format!("{w}: value does not fit in {bits} bits"));
                }
                let b = if le { n.to_le_bytes() } else { n.to_be_bytes() };
                return Ok(if le {
                    b[..len].to_vec()
                } else {
                    b[8 - len..].to_vec()
                });
            }
        }
        let n = parse_int(w).map_err(|_| format!("unknown word in data: {w}"))?;
        if n > 255 {
            return Err(format!("{w}: a byte must be between 0 and 255"));
        }
        Ok(vec![n as u8])
    }

    fn string(&mut self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return Ok(out),
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("unterminated string")?;
                    self.i += 1;
                    out.push(match e {
                        b'\\' => b'\\',
                        b'"' => b'"',
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'0' => 0,
                        b'x' => {
                            let h = self.s.get(self.i..self.i + 2).ok_or("bad \\x escape")?;
                            self.i += 2;
                            u8::from_str_radix(&String::from_utf8_lossy(h), 16)
                                .map_err(|_| "bad \\x escape")?
                        }
                        e => return Err(format!("unknown escape \\{}", e as char)),
                    });
                }
                c => out.push(c),
            }
        }
    }
}

/// What evaluated bytes do to the disk.
#[derive(Debug)]
enum Chunk {
    /// Stored: the pages they touch are allocated, even for zero bytes.
    Data(Vec<u8>),
    /// A run of zero bytes: zeroes what is there, allocates nothing.
    Zero(u64),
}

/// Where evaluated bytes go: a position, chunks written, the furthest
/// point reached.
#[derive(Default)]
struct Image {
    pos: u64,
    end: u64,
    chunks: Vec<(u64, Chunk)>,
}

/// The most bytes a repeat, a slice of a file or a group may build.
#[cfg(not(feature = "fuzzing"))]
const MAX_DENSE: u64 = 1 << 30;
#[cfg(feature = "fuzzing")]
const MAX_DENSE: u64 = 1 << 20;

/// How deep `$VAR`s may refer to others (a loop would not end).
const MAX_DEPTH: usize = 64;

/// Names bound by `-> \NAME` in one scope (a `( ... )` group or a
/// `$VAR`), over the enclosing scopes; and the command line's variables.
struct Scope<'a> {
    vars: Vec<(String, Piece)>,
    parent: Option<&'a Scope<'a>>,
    params: &'a [(String, String)],
    depth: usize,
}

impl<'a> Scope<'a> {
    fn top(params: &'a [(String, String)]) -> Self {
        Scope {
            vars: Vec::new(),
            parent: None,
            params,
            depth: 0,
        }
    }

    fn child(&self) -> Scope<'_> {
        Scope {
            vars: Vec::new(),
            parent: Some(self),
            params: self.params,
            depth: self.depth,
        }
    }

    fn lookup(&self, name: &str) -> Option<&Piece> {
        match self.vars.iter().rev().find(|(n, _)| n == name) {
            Some((_, p)) => Some(p),
            None => self.parent.and_then(|p| p.lookup(name)),
        }
    }

    /// `$VAR`: the last `VAR=` on the command line, else the environment.
    fn variable(&self, name: &str) -> Result<String, String> {
        if let Some((_, v)) = self.params.iter().rev().find(|(k, _)| k == name) {
            return Ok(v.clone());
        }
        std::env::var(name)
            .map_err(|_| format!("${name}: no such parameter or environment variable"))
    }
}

/// Bytes an expression evaluates to, and whether they come from a file.
#[derive(Clone)]
struct Piece {
    bytes: Vec<u8>,
    file: bool,
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

impl Image {
    fn advance(&mut self, n: usize) -> Result<(), String> {
        self.pos = self.pos.checked_add(n as u64).ok_or("data too large")?;
        self.end = self.end.max(self.pos);
        Ok(())
    }

    /// Writes bytes at the position, as nbdkit stores them: bytes from a
    /// file, a single byte, or any run with a non-zero byte is stored;
    /// a longer run of zeroes only zeroes (nbdkit turns it into a fill).
    fn put(&mut self, b: Vec<u8>, file: bool) -> Result<(), String> {
        let n = b.len();
        if n == 0 {
            return Ok(());
        }
        let chunk = if file || n == 1 || !all_zero(&b) {
            Chunk::Data(b)
        } else {
            Chunk::Zero(n as u64)
        };
        self.chunks.push((self.pos, chunk));
        self.advance(n)
    }

    fn eval(&mut self, exprs: &[Expr], scope: &mut Scope<'_>) -> Result<(), String> {
        // Adjacent literal bytes form one run, as in nbdkit ("0 0" is a
        // run of zeroes, "0" alone a stored byte).
        let mut run: Vec<u8> = Vec::new();
        for e in exprs {
            match e {
                Expr::Abs(_) | Expr::Rel(_) | Expr::Align(_) => {
                    self.put(std::mem::take(&mut run), false)?;
                    match e {
                        Expr::Abs(n) => self.pos = *n,
                        Expr::Rel(n) => {
                            self.pos = self
                                .pos
                                .checked_add_signed(*n)
                                .ok_or("@-N moves before the start")?
                        }
                        Expr::Align(a) => self.pos = self.pos.div_ceil(*a) * a,
                        _ => unreachable!(),
                    }
                    self.end = self.end.max(self.pos);
                }
                Expr::Assign(inner, name) => {
                    let p = piece(inner, scope)?;
                    scope.vars.push((name.clone(), p));
                }
                _ => {
                    let p = piece(e, scope)?;
                    if p.file {
                        self.put(std::mem::take(&mut run), false)?;
                        self.put(p.bytes, true)?;
                    } else {
                        if run.len() as u64 + p.bytes.len() as u64 > MAX_DENSE {
                            self.put(std::mem::take(&mut run), false)?;
                        }
                        run.extend_from_slice(&p.bytes);
                    }
                }
            }
        }
        self.put(run, false)
    }

    /// The image as contiguous bytes (for groups, repeats and slices).
    fn into_dense(self) -> Result<Vec<u8>, String> {
        if self.end > MAX_DENSE {
            return Err("a group, repeat or slice is larger than 1 GiB".into());
        }
        let mut v = vec![0u8; self.end as usize];
        for (p, c) in self.chunks {
            let p = p as usize;
            match c {
                Chunk::Data(b) => v[p..p + b.len()].copy_from_slice(&b),
                Chunk::Zero(n) => v[p..p + n as usize].fill(0),
            }
        }
        Ok(v)
    }
}

/// Reads `<FILE`, or only its `[a:b]` slice (so an endless file such as
/// /dev/urandom can be sliced).
fn read_file(f: &str, a: Option<u64>, b: Option<u64>) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    if cfg!(feature = "fuzzing") {
        // A fuzzer's `<` must not read the machine's files.
        return Err(format!("<{f}: files are not read when fuzzing"));
    }
    let err = |e: std::io::Error| format!("<{f}: {e}");
    let mut file = std::fs::File::open(f).map_err(err)?;
    let a = a.unwrap_or(0);
    if let Some(b) = b {
        if a > b {
            return Err(format!("<{f}[{a}:{b}]: the slice is out of range"));
        }
        if b - a > MAX_DENSE {
            return Err(format!("<{f}[{a}:{b}]: the slice is larger than 1 GiB"));
        }
    }
    if a > 0 && file.seek(SeekFrom::Start(a)).is_err() {
        // Not seekable (a pipe): read and drop.
        let skipped = std::io::copy(&mut (&mut file).take(a), &mut std::io::sink()).map_err(err)?;
        if skipped < a {
            return Err(format!("<{f}[{a}:]: the slice is out of range"));
        }
    }
    let mut out = Vec::new();
    match b {
        Some(b) => {
            (&mut file).take(b - a).read_to_end(&mut out).map_err(err)?;
            if (out.len() as u64) < b - a {
                return Err(format!("<{f}[{a}:{b}]: the slice is out of range"));
            }
        }
        None => {
            file.read_to_end(&mut out).map_err(err)?;
            if a > 0 && out.is_empty() && std::fs::metadata(f).map(|m| m.len() < a).unwrap_or(false)
            {
                return Err(format!("<{f}[{a}:]: the slice is out of range"));
            }
        }
    }
    Ok(out)
}

/// Runs `<(SCRIPT)` through `/bin/sh -c` and returns its output, or only
/// its `[a:b]` slice. As in nbdkit, `[:b]` stops reading at b bytes (an
/// endless script is stopped there, and its exit status then does not
/// matter) and gives what there is if the script wrote less; any other
/// slice must lie within the output.
fn run_script(script: &str, a: Option<u64>, b: Option<u64>) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    if cfg!(feature = "fuzzing") {
        // A fuzzer's `<(` must not run commands.
        return Err("<(SCRIPT): scripts are not run when fuzzing".into());
    }
    let err = |e: std::io::Error| format!("<({script}): {e}");
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(err)?;
    let mut out = Vec::new();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let limit = b.unwrap_or(MAX_DENSE + 1);
    let read = (&mut stdout).take(limit).read_to_end(&mut out);
    // Closing the pipe ends a script still writing (SIGPIPE).
    drop(stdout);
    let cut_short = out.len() as u64 == limit;
    if cut_short {
        // Only the slice was wanted: a script that keeps going is killed.
        let _ = child.kill();
    }
    let status = child.wait().map_err(err)?;
    read.map_err(err)?;
    if b.is_none() && cut_short {
        return Err(format!("<({script}): the output is larger than 1 GiB"));
    }
    if !cut_short && !status.success() {
        return Err(format!("<({script}): external command failed ({status})"));
    }
    let len = out.len() as u64;
    let start = a.unwrap_or(0);
    let end = match b {
        // `[:b]` (or `[0:b]`) takes what there is, as nbdkit does.
        Some(b) if start == 0 => b.min(len),
        Some(b) => b,
        None => len,
    };
    if start > end || end > len {
        return Err(format!(
            "<({script})[{start}:{end}]: the slice is out of range"
        ));
    }
    Ok(out[start as usize..end as usize].to_vec())
}

/// The bytes of a `( ... )` group (or of a `$VAR`), in a scope of its own.
fn group(g: &[Expr], scope: &Scope<'_>) -> Result<Piece, String> {
    let mut inner = scope.child();
    // A group of one item is that item.
    if g.len() == 1
        && !matches!(
            g[0],
            Expr::Abs(_) | Expr::Rel(_) | Expr::Align(_) | Expr::Assign(..)
        )
    {
        return piece(&g[0], &mut inner);
    }
    let mut im = Image::default();
    im.eval(g, &mut inner)?;
    Ok(Piece {
        bytes: im.into_dense()?,
        file: false,
    })
}

fn piece(e: &Expr, scope: &mut Scope<'_>) -> Result<Piece, String> {
    let bytes = |bytes| Piece { bytes, file: false };
    match e {
        Expr::Bytes(b) => Ok(bytes(b.clone())),
        Expr::File(f) => Ok(Piece {
            bytes: read_file(f, None, None)?,
            file: true,
        }),
        // A script's output is stored as a file's bytes are, as nbdkit
        // does: even zeroes from it are allocated.
        Expr::Script(s) => Ok(Piece {
            bytes: run_script(s, None, None)?,
            file: true,
        }),
        Expr::Group(g) => group(g, scope),
        Expr::Name(n) => scope
            .lookup(n)
            .cloned()
            .ok_or_else(|| format!("\\{n} is not defined")),
        Expr::Var(v) => {
            if scope.depth >= MAX_DEPTH {
                return Err(format!("${v}: variables nested too deep (a loop?)"));
            }
            let text = scope.variable(v)?;
            let exprs = Parser {
                s: text.as_bytes(),
                i: 0,
            }
            .items(false)
            .map_err(|e| format!("${v}: {e}"))?;
            let mut inner = scope.child();
            inner.depth += 1;
            group(&exprs, &inner)
        }
        Expr::Assign(..) => Err("an assignment (->) has no bytes to repeat or slice".into()),
        Expr::Repeat(inner, n) => {
            let p = piece(inner, scope)?;
            if (p.bytes.len() as u64).saturating_mul(*n) > MAX_DENSE {
                return Err("a repeat is larger than 1 GiB".into());
            }
            Ok(Piece {
                bytes: p.bytes.repeat(*n as usize),
                file: p.file && *n == 1,
            })
        }
        Expr::Slice(inner, a, b) => {
            if let Expr::File(f) = &**inner {
                return Ok(Piece {
                    bytes: read_file(f, *a, *b)?,
                    file: true,
                });
            }
            if let Expr::Script(s) = &**inner {
                return Ok(Piece {
                    bytes: run_script(s, *a, *b)?,
                    file: true,
                });
            }
            let p = piece(inner, scope)?;
            let d = p.bytes;
            let a = a.unwrap_or(0) as usize;
            let b = b.map(|b| b as usize).unwrap_or(d.len());
            if a > b || b > d.len() {
                return Err(format!("slice [{a}:{b}] is out of range"));
            }
            Ok(Piece {
                bytes: d[a..b].to_vec(),
                file: p.file,
            })
        }
        _ => Err("an offset (@) cannot be repeated or sliced".into()),
    }
}

fn base64(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\t' | b'\r' => continue,
            _ => return Err(format!("invalid base64 character '{}'", c as char)),
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// The image from data=, raw= or base64=; `vars` are the command line's
/// other parameters, the `$VAR`s of data=.
fn image(p: &mut Params, vars: &[(String, String)]) -> Result<Image, String> {
    let data = p.take("data");
    let raw = p.take("raw");
    let b64 = p.take("base64");
    let mut im = Image::default();
    match (data, raw, b64) {
        (Some(d), None, None) => {
            let exprs = Parser {
                s: d.as_bytes(),
                i: 0,
            }
            .items(false)
            .map_err(|e| p.err(e))?;
            im.eval(&exprs, &mut Scope::top(vars))
                .map_err(|e| p.err(e))?;
        }
        (None, Some(r), None) => im.put(r.into_bytes(), true)?,
        (None, None, Some(b)) => im.put(base64(&b).map_err(|e| p.err(e))?, true)?,
        (None, None, None) => {
            return Err(p.err("one of data=, raw= or base64= is required"));
        }
        _ => return Err(p.err("only one of data=, raw= or base64= may be given")),
    }
    Ok(im)
}

pub fn open(p: &mut Params) -> Result<Memory, String> {
    let size = p.take_size("size")?;
    if let Some(a) = p.take("allocator") {
        let kind = a.split(',').next().unwrap_or("");
        if !["sparse", "malloc", "zstd"].contains(&kind) {
            return Err(p.err(format!("unknown allocator '{a}'")));
        }
    }
    // data=, raw= and base64= are taken in `image`; every other parameter
    // is a variable for `$VAR`, as in nbdkit.
    let mut rest = p.take_rest();
    let (own, vars): (Vec<_>, Vec<_>) = rest
        .drain(..)
        .partition(|(k, _)| ["data", "raw", "base64"].contains(&k.as_str()));
    let mut own = Params::new("data", own);
    let im = image(&mut own, &vars)?;
    let size = size.unwrap_or(im.end);
    let m = Memory::new(size);
    for (pos, c) in im.chunks {
        if pos >= size {
            continue;
        }
        let room = size - pos;
        match c {
            Chunk::Data(b) => m.store(&b[..(room as usize).min(b.len())], pos),
            Chunk::Zero(n) => m.clear_range(pos, n.min(room)),
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(s: &str) -> Result<Vec<u8>, String> {
        let mut p = Params::new("data", vec![("data".into(), s.into())]);
        image(&mut p, &[("pattern".into(), "0x55 0xAA".into())])?.into_dense()
    }

    #[test]
    fn syntax() {
        assert_eq!(img("1 2 3").unwrap(), [1, 2, 3]);
        assert_eq!(img("@4 1").unwrap(), [0, 0, 0, 0, 1]);
        assert_eq!(img("1 @+2 5 @-1 6").unwrap(), [1, 0, 0, 6]);
        assert_eq!(img("1 @^4").unwrap(), [1, 0, 0, 0]);
        assert_eq!(
            img("( 0x55 0xAA )*3").unwrap(),
            [0x55, 0xaa, 0x55, 0xaa, 0x55, 0xaa]
        );
        assert_eq!(img("\"Hi\\n\" 017").unwrap(), [b'H', b'i', b'\n', 0o17]);
        assert_eq!(img("le32:1 be16:0x102").unwrap(), [1, 0, 0, 0, 1, 2]);
        assert_eq!(img("# c\n 9 # more\n 8").unwrap(), [9, 8]);
        assert_eq!(img("\"abcdef\"[1:3]").unwrap(), b"bc");
        assert_eq!(img("7*3").unwrap(), [7, 7, 7]);
        assert!(img("256").is_err());
        assert!(img("$no_such_variable_here").is_err());
        assert_eq!(img("$pattern*2").unwrap(), [0x55, 0xaa, 0x55, 0xaa]);
        assert_eq!(img("(1 2) -> \\a \\a 3 \\a[1:]").unwrap(), [1, 2, 3, 2]);
        // A name bound in a group is gone after it.
        assert!(img("( 1 -> \\a ) \\a").is_err());
        assert_eq!(img("1 -> \\a ( 2 -> \\a \\a ) \\a").unwrap(), [2, 1]);
        assert!(img("-> \\a").is_err());
        assert!(img("(1").is_err());
        assert!(img("foo").is_err());
        assert_eq!(img("<(echo \"(x)\")").unwrap(), b"(x)\n");
        assert!(img("<(echo (x)").is_err());
        assert_eq!(base64("aGVsbG8=").unwrap(), b"hello");
    }
}
