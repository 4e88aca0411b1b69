//! Calls on an open file or directory descriptor: sync, metadata,
//! xattrs, inode flags, extents, locks, positioned writes.
//!
//! Side effects: whatever the called function says.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, Mode};

use super::stat::STATX_MASK;
use super::{read_xattrs, timestamps, Stat, Time};

/// `fsync(2)`.
///
/// # Errors
///
/// The `fsync(2)` error (`EIO`, `ENOSPC`).
pub fn fsync(fd: impl AsFd) -> io::Result<()> {
    rustix::fs::fsync(fd)?;
    Ok(())
}

/// `fchown(2)`.
///
/// # Errors
///
/// The `fchown(2)` error: `EPERM` without `CAP_CHOWN`.
pub fn chown(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?;
    Ok(())
}

/// `fchmod(2)` with the permission bits `mode & 0o7777`. After a chown,
/// because `chown(2)` clears setuid/setgid.
///
/// # Errors
///
/// The `fchmod(2)` error.
pub fn chmod(fd: impl AsFd, mode: u32) -> io::Result<()> {
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?;
    Ok(())
}

/// `futimens(2)`: sets atime and mtime; `atime: None` leaves the access
/// time as it is (`UTIME_OMIT`).
///
/// # Errors
///
/// The `futimens(2)` error.
pub fn set_times(fd: impl AsFd, atime: Option<Time>, mtime: Time) -> io::Result<()> {
    rustix::fs::futimens(fd, &timestamps(atime, mtime))?;
    Ok(())
}

/// `fstat` through `statx(2)` with `AT_EMPTY_PATH`.
///
/// # Errors
///
/// The `statx(2)` error.
pub fn stat(fd: impl AsFd) -> io::Result<Stat> {
    let s = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, STATX_MASK)?;
    Ok(Stat::from_statx(&s))
}

/// Every extended attribute readable through `fd`
/// (`flistxattr(2)` + `fgetxattr(2)`), as (name bytes, value) sorted by
/// name. Names the kernel lists but refuses to read (`EPERM`, `EACCES`,
/// `ENODATA` after a race) are returned in the second list with the error.
///
/// # Errors
///
/// The `flistxattr(2)` error; `EOPNOTSUPP` when the filesystem has no
/// xattrs is mapped to an empty list.
#[allow(clippy::type_complexity)]
pub fn xattrs(fd: impl AsFd) -> io::Result<(Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, io::Error)>)> {
    let fd = fd.as_fd();
    read_xattrs(
        |buf| rustix::fs::flistxattr(fd, buf),
        |n, buf| rustix::fs::fgetxattr(fd, OsStr::from_bytes(n), buf),
    )
}

/// `fsetxattr(2)` creating or replacing `name`.
///
/// # Errors
///
/// The `fsetxattr(2)` error: `EPERM` (namespace needs a capability),
/// `EOPNOTSUPP` (filesystem without xattrs).
pub fn set_xattr(fd: impl AsFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    rustix::fs::fsetxattr(
        fd,
        OsStr::from_bytes(name),
        value,
        rustix::fs::XattrFlags::empty(),
    )?;
    Ok(())
}

/// Inode flags (`FS_IOC_GETFLAGS`, see `ioctl_iflags(2)`): the
/// `FS_*_FL` bits `lsattr(1)` shows.
///
/// # Errors
///
/// `ENOTTY`/`EOPNOTSUPP`/`EINVAL` where the filesystem has no inode
/// flags.
pub fn flags(fd: impl AsFd) -> io::Result<u32> {
    Ok(rustix::fs::ioctl_getflags(fd)?.bits())
}

/// Sets inode flags (`FS_IOC_SETFLAGS`).
///
/// # Errors
///
/// `EPERM` (immutable/append-only need `CAP_LINUX_IMMUTABLE`; any flag
/// needs ownership or `CAP_FOWNER`), `EOPNOTSUPP`.
pub fn set_flags(fd: impl AsFd, flags: u32) -> io::Result<()> {
    rustix::fs::ioctl_setflags(fd, rustix::fs::IFlags::from_bits_retain(flags))?;
    Ok(())
}

/// Clears the immutable and append-only inode flags of `fd` if set;
/// nothing on a filesystem without inode flags.
///
/// # Errors
///
/// The `FS_IOC_SETFLAGS` error (`EPERM` without `CAP_LINUX_IMMUTABLE`).
pub fn unprotect(fd: impl AsFd) -> io::Result<()> {
    const PROTECT: u32 = 0x10 | 0x20; // FS_IMMUTABLE_FL | FS_APPEND_FL
    match flags(&fd) {
        Ok(f) if f & PROTECT != 0 => set_flags(&fd, f & !PROTECT),
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::NOTTY.raw_os_error() || c == rustix::io::Errno::NOTSUP.raw_os_error() || c == rustix::io::Errno::INVAL.raw_os_error()) => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The data extents of a file of `size` bytes as (offset, length),
/// found with `lseek(2)` `SEEK_DATA`/`SEEK_HOLE`; everything between
/// them is a hole. A filesystem without hole support reports one extent.
///
/// # Errors
///
/// The `lseek(2)` error other than `ENXIO` (no data past the offset).
pub fn data_extents(fd: impl AsFd, size: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::SeekFrom;
    let fd = fd.as_fd();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(fd, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = rustix::fs::seek(fd, SeekFrom::Hole(start))?.min(size);
        out.push((start, end - start));
        pos = end;
    }
    Ok(out)
}

/// `flock(2)`: `exclusive` takes `LOCK_EX`, else `LOCK_SH`; never blocks
/// (`LOCK_NB`). Returns `Ok(false)` when another holder has it.
///
/// # Errors
///
/// Any `flock(2)` error other than `EWOULDBLOCK`.
pub fn try_flock(fd: impl AsFd, exclusive: bool) -> io::Result<bool> {
    let op = if exclusive {
        rustix::fs::FlockOperation::NonBlockingLockExclusive
    } else {
        rustix::fs::FlockOperation::NonBlockingLockShared
    };
    match rustix::fs::flock(fd, op) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `ftruncate(2)`.
///
/// # Errors
///
/// The `ftruncate(2)` error.
pub fn truncate(fd: impl AsFd, len: u64) -> io::Result<()> {
    rustix::fs::ftruncate(fd, len)?;
    Ok(())
}

/// Synchronous `pwrite(2)` of all of `buf` at `offset` (small control
/// files such as the lock holder note).
///
/// # Errors
///
/// The `pwrite(2)` error.
pub fn write_all_at(fd: impl AsFd, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    let fd = fd.as_fd();
    while !buf.is_empty() {
        let n = rustix::io::pwrite(fd, buf, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Most iovecs one `pwritev(2)` takes (`IOV_MAX`, `UIO_MAXIOV` in
/// `include/uapi/linux/uio.h`).
const IOV_MAX: usize = 1024;

/// Writes the bytes of `parts` back to back from `offset` with
/// `pwritev(2)` (1,024 parts per call at most), resuming after a short
/// write inside the part it stopped in. The parts' bytes go to the
/// page cache straight from where they lie: the caller need not copy
/// them into one buffer first.
///
/// # Errors
///
/// The first failed call's error (`ENOSPC`, `EIO`); `WriteZero` when
/// a call writes nothing.
pub fn write_parts_at(fd: impl AsFd, parts: &[&[u8]], mut offset: u64) -> io::Result<()> {
    let fd = fd.as_fd();
    // The next part to write, and how much of it is written.
    let (mut next, mut skip) = (0usize, 0usize);
    let mut iov = Vec::with_capacity(parts.len().min(IOV_MAX));
    while next < parts.len() {
        iov.clear();
        for (i, p) in parts[next..].iter().take(IOV_MAX).enumerate() {
            iov.push(io::IoSlice::new(if i == 0 { &p[skip..] } else { p }));
        }
        if iov.iter().all(|v| v.is_empty()) {
            next += iov.len();
            skip = 0;
            continue;
        }
        let mut n = rustix::io::pwritev(fd, &iov, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        offset += n as u64;
        for v in &iov {
            if n < v.len() {
                skip += n;
                break;
            }
            n -= v.len();
            next += 1;
            skip = 0;
        }
    }
    Ok(())
}

/// `close(2)`, with its error: on a network filesystem a delayed write
/// error may surface only here (see `close(2)`, "Dealing with error
/// returns from close()"). The descriptor is gone either way; it is never
/// closed again.
///
/// # Errors
///
/// The `close(2)` error (`EIO`, `ENOSPC`, `EDQUOT`).
pub fn close(fd: OwnedFd) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` came out of an `OwnedFd`, so it is open and nothing
    // else owns it; it is closed exactly once, here.
    if unsafe { libc::close(raw) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts write-out of the file's dirty pages (`sync_file_range(2)`
/// with `SYNC_FILE_RANGE_WRITE`, offset 0 and length 0: to the end)
/// and returns without waiting for it to finish. Not a durability
/// guarantee (see the man page): a later `fsync`/`syncfs` is, and finds
/// little left to write.
///
/// # Errors
///
/// The `sync_file_range(2)` error (`EIO`, `ENOSPC`).
pub fn start_writeback(fd: impl AsFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor borrowed for the call;
    // no memory is passed.
    let r =
        unsafe { libc::sync_file_range(fd.as_fd().as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
