//! The only module that touches filesystem syscalls.
//!
//! A [`Dir`] is a capability: an open directory file descriptor (dirfd) from
//! which only single validated [`Name`]s can be reached, always with
//! `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`, so nothing here follows a symlink out
//! of the tree it works in. The one path-based call is [`Dir::open_root`],
//! which opens the root a command works on.
//!
//! Calls go through `rustix`, synchronously, in the same fd-relative style
//! (statx on a dirfd, getdents, xattrs, fchown, futimens, renameat2 flags,
//! flock, pread/pwritev). What moves through io_uring (source file reads
//! in backup) is in [`crate::io`]; process facts (ids, capabilities,
//! umask, host name, randomness) are in [`crate::sys`].
//!
//! - `dir`: [`Dir`] and its `*at` methods, tree removal with bounded
//!   descriptors;
//! - [`fd`]: calls on an open descriptor (sync, metadata, xattrs, inode
//!   flags, extents, locks, positioned writes);
//! - `stat`: [`Stat`], [`FileKind`], [`Time`];
//! - `name`: [`Name`] and [`RelPath`], the validated names and paths;
//! - here: reads bounded by the format, output files the user names, and
//!   path-based stats of what the user named (`lstat_path`, `writable`).
//!
//! Side effects: whatever the called method says; nothing is cached.

#![allow(unsafe_code)]

mod dir;
pub mod fd;
mod name;
mod stat;

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, Timespec, Timestamps};

pub use dir::{open_dir_nofollow, Dir, REMOVE_DEPTH};
pub use name::{bytes_to_stored, stored_to_bytes, Name, NameError, RelPath};
pub use stat::{FileKind, Stat, Time};

fn os(name: &Name) -> &OsStr {
    OsStr::from_bytes(name.as_bytes())
}

/// Refuses an output descriptor that is not a regular file, and clears
/// the `O_NONBLOCK` it was opened with.
fn regular_output(fd: &OwnedFd) -> io::Result<()> {
    let t = FileType::from_raw_mode(rustix::fs::fstat(fd)?.st_mode);
    if t != FileType::RegularFile {
        return Err(not_regular(t));
    }
    let fl = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, fl - OFlags::NONBLOCK)?;
    Ok(())
}

/// Opens the file at `path` the user named for appended output (`--facts
/// FILE`), creating it `0600`: `O_APPEND|O_NOFOLLOW|O_NONBLOCK`, so a
/// symlink planted at that name (in a shared directory, by another user)
/// is not followed and a FIFO does not block; anything but a regular file
/// is refused. Like [`Dir::open_root`], a path-based open: leading
/// components may be symlinks the user chose.
///
/// # Errors
///
/// The `open(2)`/`fstat(2)` error; `ELOOP` for a symlink; [`not_regular`].
pub fn open_append(path: &Path) -> io::Result<std::fs::File> {
    let flags = OFlags::WRONLY
        | OFlags::CREATE
        | OFlags::APPEND
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK
        | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::from_raw_mode(0o600))?;
    regular_output(&fd)?;
    Ok(std::fs::File::from(fd))
}

/// The error for a name that is not a regular file where one was
/// expected (`InvalidData`, naming what it is).
pub fn not_regular(t: FileType) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a regular file ({t:?})"),
    )
}

/// The error for a file larger than what its format allows.
pub fn too_large(size: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{size} bytes, more than the {max} this file may hold"),
    )
}

/// Reads `fd` from its offset to the end, at most `max` bytes, into a
/// vector sized for the `size` bytes `fstat(2)` saw (it grows only if the
/// file did; files in `/proc` report 0).
///
/// # Errors
///
/// The `read(2)` error; [`too_large`] past `max` bytes.
fn read_to_end_max(fd: impl AsFd, size: u64, max: u64) -> io::Result<Vec<u8>> {
    let cap = usize::try_from(size.min(max))
        .unwrap_or(0)
        .saturating_add(1);
    let mut out = Vec::with_capacity(cap);
    loop {
        if out.len() as u64 > max {
            return Err(too_large(out.len() as u64, max));
        }
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        let n = rustix::io::read(&fd, rustix::buffer::spare_capacity(&mut out))?;
        if n == 0 {
            return Ok(out);
        }
    }
}

/// Reads up to `buf.len()` bytes of `fd` at `offset` with `pread(2)`,
/// retrying short reads; returns fewer only at end of file.
///
/// # Errors
///
/// The `pread(2)` error.
pub fn read_at(fd: impl AsFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = rustix::io::pread(&fd, &mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// Reads up to `len` bytes at `offset` with `pread(2)` into a new buffer
/// that is not zero-filled first (the kernel writes into its spare
/// capacity), repeating short reads; shorter only at the end of the file.
///
/// # Errors
///
/// The `pread(2)` error.
pub fn read_vec_at(fd: impl AsFd, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let (done, at) = (buf.len(), offset + buf.len() as u64);
        let n = rustix::io::pread(&fd, &mut buf.spare_capacity_mut()[..len - done], at)?
            .0
            .len();
        if n == 0 {
            break;
        }
        // SAFETY: `pread` initialised the first `n` spare bytes.
        unsafe { buf.set_len(buf.len() + n) };
    }
    Ok(buf)
}

/// `fsync(2)` on a directory that gained or lost a name, so the change to
/// its entries is durable (the name itself lives in the parent's data; see
/// `fsync(2)`: "Calling fsync() does not necessarily ensure that the entry in
/// the directory containing the file has also reached disk").
///
/// # Errors
///
/// The `fsync(2)` error (`EIO`, `ENOSPC`, ...). Never ignored by callers.
pub fn fsync_parent_dir(parent: &Dir) -> io::Result<()> {
    rustix::fs::fsync(parent)?;
    Ok(())
}

/// Lists then reads xattrs with the given `*listxattr`/`*getxattr` calls,
/// growing buffers on `ERANGE`.
#[allow(clippy::type_complexity)]
fn read_xattrs(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&[u8], &mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<(Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, io::Error)>)> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match list(&mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need = list(&mut [])?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(e.into()),
        }
    };
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let mut buf = vec![0u8; 256];
        let res = loop {
            match get(name, &mut buf) {
                Ok(len) => {
                    buf.truncate(len);
                    break Ok(buf);
                }
                Err(rustix::io::Errno::RANGE) => match get(name, &mut []) {
                    Ok(need) => buf.resize(need.max(buf.len() * 2), 0),
                    Err(e) => break Err(io::Error::from(e)),
                },
                Err(e) => break Err(io::Error::from(e)),
            }
        };
        match res {
            Ok(v) => ok.push((name.to_vec(), v)),
            Err(e) => failed.push((name.to_vec(), e)),
        }
    }
    ok.sort();
    Ok((ok, failed))
}

fn timestamps(atime: Option<Time>, mtime: Time) -> Timestamps {
    Timestamps {
        last_access: match atime {
            Some(a) => Timespec {
                tv_sec: a.sec,
                tv_nsec: i64::from(a.nsec),
            },
            None => Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
        },
        last_modification: Timespec {
            tv_sec: mtime.sec,
            tv_nsec: i64::from(mtime.nsec),
        },
    }
}

/// `lstat` of a path the user named (a source or repository location, not
/// a name inside a tree): the parent is opened as a root and the last
/// component stat'ed without following it. `Ok(None)` when it does not
/// exist.
///
/// # Errors
///
/// The `openat(2)`/`statx(2)` error other than `ENOENT`/`ENOTDIR`.
pub fn lstat_path(path: &Path) -> io::Result<Option<Stat>> {
    use std::os::unix::ffi::OsStrExt;
    let missing = |e: &io::Error| {
        e.kind() == io::ErrorKind::NotFound
            || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
    };
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) => (
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            },
            n,
        ),
        _ => return Dir::open_root(path).and_then(|d| d.stat_self()).map(Some),
    };
    let name =
        Name::new(name.as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    match Dir::open_root(parent) {
        Ok(d) => match d.stat(&name) {
            Ok(s) => Ok(Some(s)),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(e),
        },
        Err(e) if missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether this process may create names in the directory `path`
/// (`access(2)` with `W_OK|X_OK`, real ids as the kernel defines it).
///
/// # Errors
///
/// The `access(2)` error: `EACCES`, `EROFS`, `EPERM` (immutable).
pub fn writable(path: &Path) -> io::Result<()> {
    rustix::fs::access(
        path,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    )?;
    Ok(())
}

/// Errors meaning "this filesystem has no inode flags" (`ioctl_iflags(2)`):
/// `ENOTTY`, `EOPNOTSUPP`, `EINVAL`, `ENOSYS`.
pub fn flags_unsupported(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(e.raw_os_error(), Some(c) if c == Errno::NOTTY.raw_os_error()
        || c == Errno::NOTSUP.raw_os_error()
        || c == Errno::INVAL.raw_os_error()
        || c == Errno::NOSYS.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A tree deeper than the descriptor limit (20,000 here; 1,024 on many
    /// hosts) is removed: `remove_tree` holds at most `REMOVE_DEPTH`.
    #[test]
    fn remove_tree_of_a_tree_deeper_than_the_descriptor_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open_root(tmp.path()).unwrap();
        let top = Name::new(b"deep").unwrap();
        let a = Name::new(b"a").unwrap();
        root.mkdir(&top, 0o700).unwrap();
        let mut cur = root.open_dir(&top).unwrap();
        for i in 0..25_000 {
            cur.mkdir(&a, 0o700).unwrap();
            if i % 1000 == 0 {
                std::fs::write(format!("/proc/self/fd/{}/f", cur.fd.as_raw_fd()), b"x").unwrap();
            }
            cur = cur.open_dir(&a).unwrap();
        }
        drop(cur);
        root.remove_tree(&top).unwrap();
        assert!(root.stat_opt(&top).unwrap().is_none());
        assert!(root.list().unwrap().is_empty());
    }

    #[test]
    fn vectored_writes_put_every_part_in_order_beyond_one_call() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_root(tmp.path()).unwrap();
        // 2,500 parts (three calls), some empty.
        let parts: Vec<Vec<u8>> = (0..2500u32)
            .map(|i| vec![(i % 251) as u8; (i as usize * 7) % 61])
            .collect();
        let want: Vec<u8> = parts.concat();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let f = dir.create_file(&Name::new(b"v").unwrap(), 0o600).unwrap();
        fd::write_parts_at(&f, &refs, 10).unwrap();
        fd::write_parts_at(&f, &[b"", b""], 0).unwrap();
        fd::start_writeback(&f).unwrap();
        let got = std::fs::read(tmp.path().join("v")).unwrap();
        assert_eq!(&got[..10], &[0u8; 10]);
        assert!(got[10..] == want[..], "content differs");
    }
}
