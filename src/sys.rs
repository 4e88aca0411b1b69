//! Facts about this process and host, and randomness: effective ids and
//! capabilities, the umask, the host name, user and group names, random
//! bytes. No module but this one asks them of the kernel.
//!
//! Side effects: none, except [`umask`], which sets the umask and sets it
//! back (the only way to read it without `/proc`).

use std::io;
use std::path::Path;

use rustix::fs::Mode;

use crate::fs::{Dir, Name};

/// Fills `buf` with random bytes from `getrandom(2)`.
///
/// # Errors
///
/// The `getrandom(2)` error.
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        filled +=
            rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(())
}

/// The node name from `uname(2)`.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Who runs this process, for a key file: `$USER` when set, else
/// `uid <n>` (the real uid, `getuid(2)`).
pub fn username() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()))
}

/// Reads one line from the terminal on standard input with echo turned
/// off (`termios(3)`: `ECHO` cleared for the read, restored after),
/// after writing `prompt` to stderr. `None` when standard input is not a
/// terminal. The line is returned without its newline.
///
/// # Errors
///
/// `tcgetattr`/`tcsetattr` and read errors.
pub fn read_password_from_terminal(
    prompt: &str,
) -> io::Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Ok(None);
    }
    let mut err = std::io::stderr().lock();
    write!(err, "{prompt}")?;
    err.flush()?;
    let old = rustix::termios::tcgetattr(&stdin)?;
    let mut quiet = old.clone();
    quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)?;
    let mut line = zeroize::Zeroizing::new(Vec::new());
    let read = stdin.lock().read_until(b'\n', &mut line);
    let restored = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &old);
    writeln!(err)?;
    read?;
    restored?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(Some(line))
}

/// The process umask (`umask(2)` read by setting it and setting it back).
pub fn umask() -> u32 {
    let old = rustix::process::umask(Mode::from_raw_mode(0o022));
    rustix::process::umask(old);
    old.bits()
}

/// The (name, id) pairs of `passwd` and `group` in the directory `etc`
/// (normally `/etc`), read through a dirfd. Only the files are consulted,
/// not NSS (LDAP, sssd); a missing file gives an empty list.
///
/// # Errors
///
/// An error opening `etc` or reading an existing file.
#[allow(clippy::type_complexity)]
pub fn id_names(etc: &Path) -> io::Result<(Vec<(String, u32)>, Vec<(String, u32)>)> {
    let dir = Dir::open_root(etc)?;
    let read = |file: &str| -> io::Result<Vec<(String, u32)>> {
        let name = Name::new(file.as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let text = match dir.read_all(&name, 64 << 20) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let id = f.nth(1)?.parse().ok()?;
                (!name.is_empty() && !name.starts_with('#')).then(|| (name.to_owned(), id))
            })
            .collect())
    };
    Ok((read("passwd")?, read("group")?))
}

/// [`id_names`] as maps from id to name, users then groups, the first
/// name of an id winning (as `ls -l` and `getpwuid(3)` show it).
///
/// # Errors
///
/// As [`id_names`].
#[allow(clippy::type_complexity)]
pub fn names_by_id(
    etc: &Path,
) -> io::Result<(
    std::collections::HashMap<u32, String>,
    std::collections::HashMap<u32, String>,
)> {
    let (u, g) = id_names(etc)?;
    let first = |list: Vec<(String, u32)>| {
        let mut m = std::collections::HashMap::new();
        for (name, id) in list {
            m.entry(id).or_insert(name);
        }
        m
    };
    Ok((first(u), first(g)))
}

/// Whether a process `pid` exists on this machine (in this PID
/// namespace): `kill(pid, 0)` succeeds or fails with `EPERM`, not `ESRCH`
/// (`kill(2)`).
pub fn process_exists(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(p),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Random hex string of `bytes` random bytes.
///
/// # Errors
///
/// The `getrandom(2)` error.
pub fn random_hex(bytes: usize) -> io::Result<String> {
    let mut b = vec![0u8; bytes];
    random_bytes(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The effective capability set of this process (`CapEff` in
/// `/proc/self/status`, see `proc_pid_status(5)`); 0 when unreadable.
pub fn effective_caps() -> u64 {
    // `/proc/self` is a symlink, which `open_root` (O_NOFOLLOW) refuses.
    let own = format!("/proc/{}", rustix::process::getpid().as_raw_nonzero());
    let Ok(dir) = Dir::open_root(Path::new(&own)) else {
        return 0;
    };
    let Ok(name) = Name::new(b"status") else {
        return 0;
    };
    let Ok(text) = dir.read_all(&name, 1 << 20) else {
        return 0;
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0)
}

/// The effective user id of this process, asked of the kernel once (snap
/// never changes its ids; restore's scan asks per entry).
pub fn euid() -> u32 {
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *EUID.get_or_init(|| rustix::process::geteuid().as_raw())
}

/// The effective group id of this process (`getegid(2)`).
pub fn egid() -> u32 {
    rustix::process::getegid().as_raw()
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit,
/// as many programs that keep many descriptors open do (see
/// `getrlimit(2)`), and returns the soft limit in force. A failure leaves
/// the limit as it was.
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    if lim.current != lim.maximum && setrlimit(Resource::Nofile, raised).is_ok() {
        return lim.maximum.unwrap_or(u64::MAX);
    }
    lim.current.unwrap_or(u64::MAX)
}

/// The local civil time of `sec` seconds since the epoch, in this host's
/// zone (`TZ`, else `/etc/localtime`), from `localtime_r(3)`; UTC when
/// the C library cannot convert it (a year out of its range).
#[allow(unsafe_code)]
pub fn local_civil(sec: i64) -> crate::retention::Civil {
    let t: libc::time_t = sec;
    // SAFETY: `tm` is plain data that localtime_r fills; both pointers are
    // valid for the call, and a null return leaves `tm` unused.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    extern "C" {
        // tzset(3): POSIX does not require localtime_r to read TZ.
        fn tzset();
    }
    let ok = unsafe {
        tzset();
        !libc::localtime_r(&t, &mut tm).is_null()
    };
    if !ok {
        return crate::retention::Civil::utc(sec);
    }
    crate::retention::Civil {
        year: i64::from(tm.tm_year) + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
        offset: tm.tm_gmtoff,
    }
}
