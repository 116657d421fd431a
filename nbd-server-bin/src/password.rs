//! Password parameters as nbdkit reads them (nbdkit_read_password in
//! nbdkit-plugin(3)): `password=SECRET` is the password itself, `-` asks
//! for it on the terminal, `+FILE` reads it from a file, and `-FD` from
//! an inherited file descriptor (then closed). From a file or descriptor
//! the password is everything up to the first newline.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::os::unix::io::FromRawFd;

/// The password `value` stands for.
pub fn read_password(value: &str) -> Result<String, String> {
    if value == "-" {
        return prompt();
    }
    if let Some(path) = value.strip_prefix('+') {
        let mut s = String::new();
        File::open(path)
            .and_then(|mut f| f.read_to_string(&mut s))
            .map_err(|e| format!("open: {path}: {e}"))?;
        return Ok(first_line(s));
    }
    if let Some(fd) = value.strip_prefix('-') {
        let fd: i32 = fd
            .parse()
            .map_err(|_| format!("could not parse file descriptor: {value}"))?;
        // Standard input, output and error are the server's own.
        if fd <= 2 {
            return Err(format!(
                "cannot use password=-{fd}: that is a standard stream"
            ));
        }
        // SAFETY: the caller handed us this descriptor to read and close;
        // fcntl checks that it is open before File takes it over.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(format!(
                "password=-{fd}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut f = unsafe { File::from_raw_fd(fd) };
        let mut s = String::new();
        f.read_to_string(&mut s)
            .map_err(|e| format!("read: password=-{fd}: {e}"))?;
        return Ok(first_line(s));
    }
    Ok(value.to_string())
}

fn first_line(mut s: String) -> String {
    if let Some(n) = s.find('\n') {
        s.truncate(n);
    }
    s
}

/// Asks on the terminal, with echo off while the password is typed.
fn prompt() -> Result<String, String> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| format!("password=-: no terminal to ask on: {e}"))?;
    use std::os::unix::io::AsRawFd;
    let fd = tty.as_raw_fd();
    // SAFETY: termios calls on a descriptor we hold open; the struct is
    // filled by tcgetattr before use.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            None
        } else {
            let old = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(fd, libc::TCSAFLUSH, &t);
            Some(old)
        }
    };
    let mut out = &tty;
    let _ = out.write_all(b"password: ");
    let mut line = String::new();
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    if let Some(old) = saved {
        // SAFETY: restores the settings read above on the same descriptor.
        unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &old) };
    }
    let _ = out.write_all(b"\n");
    r.map_err(|e| format!("password=-: {e}"))?;
    Ok(first_line(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_file_and_descriptor() {
        assert_eq!(read_password("s3cret").unwrap(), "s3cret");
        let dir = std::env::temp_dir().join(format!("pw-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "from-file\nignored\n").unwrap();
        assert_eq!(
            read_password(&format!("+{}", f.display())).unwrap(),
            "from-file"
        );
        assert!(read_password("+/nonexistent/pw").is_err());
        let mut fds = [0; 2];
        // SAFETY: pipe fills the two-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the write end is ours; File closes it.
        let mut w = unsafe { File::from_raw_fd(fds[1]) };
        w.write_all(b"from-fd\n").unwrap();
        drop(w);
        assert_eq!(read_password(&format!("-{}", fds[0])).unwrap(), "from-fd");
        // (Not read twice: once closed, its number may already belong to
        // another test's file in this process.)
        assert!(read_password("-1").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
