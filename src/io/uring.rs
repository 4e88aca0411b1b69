//! Custom io_uring operations that compio does not ship:
//! `IORING_OP_OPENAT2` relative to a dirfd, with `RESOLVE_BENEATH|
//! RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS` (see `openat2(2)` and
//! `io_uring_enter(2)`), so a name can only ever resolve to an entry
//! directly beneath the dirfd.
//!
//! The fallback backend's blocking twin ([`open_read_blocking`]) is here
//! too, so both open with the same flags.
//!
//! Side effects: opens (and may create) the named file.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;

use compio::driver::{OpCode, OpEntry};
use io_uring::{opcode, types};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::fs::{Dir, Name};

/// One `openat2` submission. Owns the path and `open_how` so their
/// addresses stay valid while the kernel reads them.
struct OpenAt2 {
    dirfd: RawFd,
    path: CString,
    how: types::OpenHow,
}

// SAFETY: the entry points at `path` and `how`, which compio keeps in the
// pinned, heap-allocated op until the completion arrives; `dirfd` is
// borrowed from a `Dir` that outlives the awaited submission (callers
// await it to completion and never drop the future early).
unsafe impl OpCode for OpenAt2 {
    fn create_entry(self: Pin<&mut Self>) -> OpEntry {
        opcode::OpenAt2::new(types::Fd(self.dirfd), self.path.as_ptr(), &self.how)
            .build()
            .into()
    }
}

fn resolve() -> u64 {
    (ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS).bits()
}

async fn open_at(dir: &Dir, name: &Name, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
    let path = CString::new(name.as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let op = OpenAt2 {
        dirfd: dir.as_fd().as_raw_fd(),
        path,
        how: types::OpenHow::new()
            .flags(u64::from((flags | OFlags::CLOEXEC).bits()))
            .mode(u64::from(mode))
            .resolve(resolve()),
    };
    let compio::BufResult(res, _op) = compio::runtime::submit(op).await;
    match res {
        // SAFETY: a successful openat2 returns a new descriptor that nothing
        // else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        // Kernels before 5.6 know neither the opcode nor openat2(2): the
        // same open through the synchronous path, still O_NOFOLLOW.
        Err(e) if matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::NOSYS.raw_os_error() || c == rustix::io::Errno::INVAL.raw_os_error()) => {
            Ok(rustix::fs::openat(
                dir,
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.as_bytes()),
                flags | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            )?)
        }
        Err(e) => Err(e),
    }
}

/// [`open_read`] with blocking `openat2(2)` calls, for the fallback
/// backend: the same flags and resolution.
///
/// # Errors
///
/// As [`open_read`].
pub fn open_read_blocking(dir: &Dir, name: &Name) -> io::Result<OwnedFd> {
    let base = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK;
    match open_at_blocking(dir, name, base | OFlags::NOATIME) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
            open_at_blocking(dir, name, base)
        }
        other => other,
    }
}

fn open_at_blocking(dir: &Dir, name: &Name, flags: OFlags) -> io::Result<OwnedFd> {
    let path = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.as_bytes());
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    loop {
        match rustix::fs::openat2(dir, path, flags | OFlags::CLOEXEC, Mode::empty(), how) {
            Ok(fd) => return Ok(fd),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            // Kernels before 5.6 have no openat2(2): still O_NOFOLLOW.
            Err(rustix::io::Errno::NOSYS) => {
                return Ok(rustix::fs::openat(
                    dir,
                    path,
                    flags | OFlags::CLOEXEC,
                    Mode::empty(),
                )?)
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Opens the regular file `name` for reading through io_uring
/// (`IORING_OP_OPENAT2`, resolved beneath this dirfd, no symlinks):
/// `O_RDONLY|O_NOFOLLOW|O_NOCTTY|O_NONBLOCK`, plus `O_NOATIME` where
/// permitted (owner or `CAP_FOWNER`, `open(2)`) so a backup leaves atimes
/// alone. `O_NONBLOCK` keeps a name swapped for a FIFO since the walk from
/// blocking the run.
///
/// # Errors
///
/// The open error: `EACCES`, `ELOOP` (a symlink), `ENOENT`.
pub async fn open_read(dir: &Dir, name: &Name) -> io::Result<OwnedFd> {
    let base = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK;
    match open_at(dir, name, base | OFlags::NOATIME, 0).await {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
            open_at(dir, name, base, 0).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openat2_refuses_symlinks_and_creates_beneath() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", tmp.path().join("l")).unwrap();
        let dir = Dir::open_root(tmp.path()).unwrap();
        // The blocking twin, whatever the backend.
        let l = Name::new(b"l").unwrap();
        open_read_blocking(&dir, &Name::new(b"f").unwrap()).unwrap();
        let e = open_read_blocking(&dir, &l).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error())
        );
        // The backend's open (io_uring's op, or the fallback under
        // SNAP_IO=fallback).
        crate::io::block_on(async {
            let f = Name::new(b"f").unwrap();
            crate::io::open_read(&dir, &f).await.unwrap();
            let e = crate::io::open_read(&dir, &l).await.unwrap_err();
            assert_eq!(
                e.raw_os_error(),
                Some(rustix::io::Errno::LOOP.raw_os_error())
            );
            let n = Name::new(b"new").unwrap();
            dir.create_file(&n, 0o600).unwrap();
            let again = dir.create_file(&n, 0o600).unwrap_err();
            assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
            let e = dir.create_file(&l, 0o600).unwrap_err();
            assert_eq!(
                e.kind(),
                io::ErrorKind::AlreadyExists,
                "a symlink name is taken"
            );
            dir.create_file(&Name::new(b"sync").unwrap(), 0o600)
                .unwrap();
        })
        .unwrap();
    }
}
