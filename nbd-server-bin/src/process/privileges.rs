//! Dropping privileges after binding (`-u USER`, `-g GROUP`) and locking
//! the process into memory (`--swap`), as nbdkit(1) does them.

use nix::unistd::{Gid, Group, Uid, User};

/// A user given as a name or a numeric uid; the message is nbdkit's.
pub fn parse_user(s: &str) -> Result<Uid, String> {
    if let Ok(Some(u)) = User::from_name(s) {
        return Ok(u.uid);
    }
    s.parse::<u32>()
        .map(Uid::from_raw)
        .map_err(|_| format!("-u option: {s} is not a valid user name or uid"))
}

/// A group given as a name or a numeric gid; the message is nbdkit's.
pub fn parse_group(s: &str) -> Result<Gid, String> {
    if let Ok(Some(g)) = Group::from_name(s) {
        return Ok(g.gid);
    }
    s.parse::<u32>()
        .map(Gid::from_raw)
        .map_err(|_| format!("-g option: {s} is not a valid group name or gid"))
}

/// Becomes `group` and then `user` (the group first: once the user is
/// not root, the group can no longer be changed). The supplementary
/// groups are reduced to the new group, so root's do not linger.
pub fn change(user: Option<Uid>, group: Option<Gid>) -> Result<(), String> {
    if let Some(g) = group {
        nix::unistd::setgroups(&[g]).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setgid(g).map_err(|e| format!("setgid: {e}"))?;
    }
    if let Some(u) = user {
        nix::unistd::setuid(u).map_err(|e| format!("setuid: {e}"))?;
    }
    Ok(())
}

/// `--swap`: the export may be swap space of this very machine, so no
/// page of the server may need the disk it serves to be paged back in.
pub fn lock_in_memory() -> Result<(), String> {
    // SAFETY: mlockall takes flags only.
    let r = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if r == -1 {
        return Err(format!("mlockall: {}", nix::errno::Errno::last().desc()));
    }
    Ok(())
}
