//! Passwords given as a parameter, with nbdkit_read_password(3)'s forms:
//! `SECRET` is the password itself, `+FILE` reads it from a file, `-FD`
//! from an inherited file descriptor (which is then closed), and `-`
//! asks for it on the terminal with echo off. A trailing newline read
//! from a file, descriptor or terminal is not part of the password.

use std::fs::File;
use std::io::{self, BufRead as _, Read as _, Write as _};
use std::os::unix::io::FromRawFd;

/// The password `value` stands for; errors in nbdkit's words.
pub fn read_password(value: &str) -> Result<Vec<u8>, String> {
    let mut pw = if value == "-" {
        from_terminal()?
    } else if let Some(fd) = value.strip_prefix('-').and_then(|v| v.parse::<i32>().ok()) {
        from_fd(fd)?
    } else if let Some(path) = value.strip_prefix('+') {
        std::fs::read(path).map_err(|e| format!("open {path}: {e}"))?
    } else {
        return Ok(value.as_bytes().to_vec());
    };
    if pw.last() == Some(&b'\n') {
        pw.pop();
    }
    Ok(pw)
}

fn from_fd(fd: i32) -> Result<Vec<u8>, String> {
    if fd < 0 {
        return Err(format!("invalid file descriptor: {fd}"));
    }
    // SAFETY: the user handed us this inherited descriptor to read the
    // password from; it is ours to read and close, as in nbdkit.
    let mut f = unsafe { File::from_raw_fd(fd) };
    let mut pw = Vec::new();
    f.read_to_end(&mut pw)
        .map_err(|e| format!("reading password from file descriptor {fd}: {e}"))?;
    Ok(pw)
}

fn from_terminal() -> Result<Vec<u8>, String> {
    let stdin = io::stdin();
    // SAFETY: isatty and the termios calls only look at descriptor 0.
    if unsafe { libc::isatty(0) } == 0 {
        return Err("stdin is not a tty, cannot read password interactively".into());
    }
    let mut old = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr fills `old` on success, checked.
    let have = unsafe { libc::tcgetattr(0, old.as_mut_ptr()) } == 0;
    if have {
        // SAFETY: initialised by the successful tcgetattr.
        let mut quiet = unsafe { old.assume_init() };
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: a valid termios for descriptor 0.
        unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &quiet) };
    }
    print!("password: ");
    let _ = io::stdout().flush();
    let mut line = Vec::new();
    let r = stdin.lock().read_until(b'\n', &mut line);
    if have {
        // SAFETY: puts back the settings read above.
        unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, old.as_ptr()) };
        println!();
    }
    r.map_err(|e| format!("reading password: {e}"))?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::io::IntoRawFd;

    #[test]
    fn literal_file_and_fd() {
        assert_eq!(read_password("s3cret").unwrap(), b"s3cret");
        let dir = std::env::temp_dir().join(format!("pw-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "from file\n").unwrap();
        let arg = format!("+{}", f.display());
        assert_eq!(read_password(&arg).unwrap(), b"from file");
        let fd = File::open(&f).unwrap().into_raw_fd();
        assert_eq!(read_password(&format!("-{fd}")).unwrap(), b"from file");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(read_password("+/nonexistent/pw").is_err());
    }
}
