//! Running one method of a script (nbdkit-sh-plugin(3), "Exit codes"):
//! `SCRIPT METHOD ARGS...` with `$tmpdir` set, the data of a write on its
//! standard input, its standard output captured, and its exit code read
//! as nbdkit reads it.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};

use nbd_core::server::backend::Error;

/// How a method ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code 0, with what the method printed.
    Ok(Vec<u8>),
    /// Exit code 2: the script does not implement the method.
    Missing,
    /// Exit code 3: "false", for the methods that answer yes or no.
    False,
}

/// Runs `script method args...`, with `stdin` as its standard input
/// (nothing when empty) and `tmpdir` as `$tmpdir`. Exit codes 1 and 4 and
/// above, a signal, or a failure to run the script at all are an
/// [`Error`] whose errno and message come from the script's standard
/// error ([`script_error`]).
pub fn call(
    script: &Path,
    tmpdir: &Path,
    method: &str,
    args: &[&str],
    stdin: &[u8],
) -> Result<Outcome, Error> {
    let shown = script.display();
    crate::log::debug!("sh: calling: {shown} {method} {}", args.join(" "));
    let mut cmd = Command::new(script);
    cmd.arg(method)
        .args(args)
        .env("tmpdir", tmpdir)
        .stdin(if stdin.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: signal(2) is async-signal-safe. The server ignores
    // SIGPIPE, and a shell cannot undo an ignored signal, so the script
    // gets the default back, as under nbdkit. Having a pre_exec hook
    // also makes std fork and execvp(3), which runs a script without a
    // `#!` line with /bin/sh, as nbdkit's execvp does.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::new(libc::EIO, format!("{shown}: {e}")))?;
    let mut input = child.stdin.take();
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    // Write, and read both outputs, at the same time: a script may
    // print before it has read everything.
    let (written, stdout, stderr) = std::thread::scope(|s| {
        let writer = s.spawn(move || match input.as_mut() {
            Some(i) => i.write_all(stdin),
            None => Ok(()),
        });
        let errors = s.spawn(move || {
            let mut v = Vec::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut v);
            }
            v
        });
        let mut stdout = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut stdout);
        }
        let written = writer.join().unwrap_or(Ok(()));
        (written, stdout, errors.join().unwrap_or_default())
    });
    let status = child
        .wait()
        .map_err(|e| Error::new(libc::EIO, format!("{shown}: waitpid: {e}")))?;
    if let Err(e) = written {
        return Err(Error::new(libc::EIO, format!("{shown}: write: {e}")));
    }
    if let Some(sig) = status.signal() {
        return Err(Error::new(
            libc::EIO,
            format!("{shown}: script terminated by signal {sig}"),
        ));
    }
    let code = status.code().unwrap_or(1);
    crate::log::debug!("sh: completed: {shown} {method}: status {code}");
    match code {
        0 => Ok(Outcome::Ok(stdout)),
        2 => Ok(Outcome::Missing),
        3 => Ok(Outcome::False),
        _ => Err(script_error(&shown.to_string(), &stderr)),
    }
}

/// The errno names a script may print first on standard error, as
/// nbdkit's sh plugin knows them: those the NBD protocol has an error
/// for, and the few the server treats specially.
const ERRNO_WORDS: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("EIO", libc::EIO),
    ("ENOMEM", libc::ENOMEM),
    ("EINVAL", libc::EINVAL),
    ("ENOSPC", libc::ENOSPC),
    ("EOVERFLOW", libc::EOVERFLOW),
    ("ESHUTDOWN", libc::ESHUTDOWN),
    ("ENOTSUP", libc::ENOTSUP),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("EROFS", libc::EROFS),
    ("EDQUOT", libc::EDQUOT),
    ("EFBIG", libc::EFBIG),
];

/// A failed script's error: the errno named by the first word of its
/// standard error (any case; an unknown word, or none, is EIO), and the
/// message after that word, first line only (the whole text goes to the
/// debug log when it has more lines).
pub fn script_error(script: &str, stderr: &[u8]) -> Error {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim_end_matches('\n');
    if text.is_empty() {
        return Error::new(
            libc::EIO,
            format!(
                "{script}: script exited with error, but did not print an error message on stderr"
            ),
        );
    }
    let mut errno = libc::EIO;
    let mut rest = text;
    // nbdkit compares prefixes in this order, so EOPNOTSUPP is never
    // reached through ENOTSUP and EIO does not swallow EINVAL.
    if let Some((word, e)) = ERRNO_WORDS
        .iter()
        .find(|(w, _)| text.len() >= w.len() && text[..w.len()].eq_ignore_ascii_case(w))
    {
        let after = &text[word.len()..];
        match after.chars().next() {
            None => {
                errno = *e;
                rest = after;
            }
            Some(c) if c.is_ascii_whitespace() => {
                errno = *e;
                rest = after.trim_start_matches(|c: char| c.is_ascii_whitespace());
            }
            // EINVALID is no errno word: EIO, with the whole text.
            Some(_) => {}
        }
    }
    if rest.contains('\n') {
        crate::log::debug!("{script}: {text}");
    }
    let first = rest.lines().next().unwrap_or("");
    Error::new(errno, format!("{script}: {first}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_words() {
        let e = script_error("s", b"ENOSPC Out of space\n");
        assert_eq!((e.errno, &*e.message), (libc::ENOSPC, "s: Out of space"));
        let e = script_error("s", b"einval\n");
        assert_eq!((e.errno, &*e.message), (libc::EINVAL, "s: "));
        let e = script_error("s", b"EINVALID thing");
        assert_eq!((e.errno, &*e.message), (libc::EIO, "s: EINVALID thing"));
        let e = script_error("s", b"EOPNOTSUPP no\nmore\n");
        assert_eq!((e.errno, &*e.message), (libc::EOPNOTSUPP, "s: no"));
        let e = script_error("s", b"");
        assert_eq!(e.errno, libc::EIO);
        assert!(e.message.contains("did not print an error message"));
        let e = script_error("s", b"oops");
        assert_eq!((e.errno, &*e.message), (libc::EIO, "s: oops"));
    }

    #[test]
    fn exit_codes() {
        let dir = nix::unistd::mkdtemp("/tmp/sh-call-test-XXXXXX").unwrap();
        let script = dir.join("s");
        std::fs::write(
            &script,
            "case $1 in ok) cat; echo \"$2 $tmpdir\";; missing) exit 2;; false) exit 3;; \
             err) echo 'ENOSPC full' >&2; exit 1;; four) exit 4;; esac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        let t = dir.as_path();
        let out = call(&script, t, "ok", &["x"], b"in ").unwrap();
        assert_eq!(
            out,
            Outcome::Ok(format!("in x {}\n", t.display()).into_bytes())
        );
        assert_eq!(
            call(&script, t, "missing", &[], b"").unwrap(),
            Outcome::Missing
        );
        assert_eq!(call(&script, t, "false", &[], b"").unwrap(), Outcome::False);
        assert_eq!(
            call(&script, t, "err", &[], b"").unwrap_err().errno,
            libc::ENOSPC
        );
        assert_eq!(
            call(&script, t, "four", &[], b"").unwrap_err().errno,
            libc::EIO
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
