//! The only module that touches filesystem syscalls.
//!
//! A [`Dir`] is a capability: an open directory file descriptor (dirfd) from
//! which only single validated [`Name`]s can be reached, always with
//! `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`, so nothing here follows a symlink out
//! of the tree it works in. The one path-based call is [`Dir::open_root`],
//! which opens the root a command works on.
//!
//! File data moves through io_uring with compio ([`DataFile`]); namespace and
//! metadata calls that io_uring does not cover (statx on a dirfd, getdents,
//! xattrs, fchown, futimens, renameat2 flags, flock) go through `rustix`,
//! synchronously, in the same fd-relative style.
//!
//! Side effects: whatever the called method says; nothing is cached.

#![allow(unsafe_code)]

mod name;
mod uring;

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, StatxFlags, Timespec, Timestamps};

pub use name::{bytes_to_stored, stored_to_bytes, Name, NameError, RelPath};

/// A time as seconds and nanoseconds since the Unix epoch, as `statx(2)`
/// reports it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub struct Time {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub sec: i64,
    /// Nanoseconds, 0..=999_999_999.
    pub nsec: u32,
}

/// The kind of a directory entry, from the `S_IFMT` bits of `st_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Unix domain socket.
    Socket,
}

/// What one `statx(2)` call reports about an entry; taken once per entry
/// during the walk and carried with it afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Entry kind.
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Hard link count.
    pub nlink: u32,
    /// Inode number.
    pub ino: u64,
    /// Device holding the inode, as (major, minor).
    pub dev: (u32, u32),
    /// Device number of a char/block device, as (major, minor).
    pub rdev: (u32, u32),
    /// Last access.
    pub atime: Time,
    /// Last content modification.
    pub mtime: Time,
    /// Last status change.
    pub ctime: Time,
}

impl Stat {
    fn from_statx(s: &rustix::fs::Statx) -> Self {
        let t = |x: rustix::fs::StatxTimestamp| Time {
            sec: x.tv_sec,
            nsec: x.tv_nsec,
        };
        let fmt = u32::from(s.stx_mode) & 0o170_000;
        let kind = match FileType::from_raw_mode(fmt) {
            FileType::Directory => FileKind::Dir,
            FileType::Symlink => FileKind::Symlink,
            FileType::Fifo => FileKind::Fifo,
            FileType::CharacterDevice => FileKind::Char,
            FileType::BlockDevice => FileKind::Block,
            FileType::Socket => FileKind::Socket,
            _ => FileKind::File,
        };
        Self {
            kind,
            mode: u32::from(s.stx_mode) & 0o7777,
            uid: s.stx_uid,
            gid: s.stx_gid,
            size: s.stx_size,
            nlink: s.stx_nlink,
            ino: s.stx_ino,
            dev: (s.stx_dev_major, s.stx_dev_minor),
            rdev: (s.stx_rdev_major, s.stx_rdev_minor),
            atime: t(s.stx_atime),
            mtime: t(s.stx_mtime),
            ctime: t(s.stx_ctime),
        }
    }
}

fn os(name: &Name) -> &OsStr {
    OsStr::from_bytes(name.as_bytes())
}

const STATX_MASK: StatxFlags = StatxFlags::BASIC_STATS;

/// An open directory (dirfd), opened `O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC`.
///
/// Every method takes a single validated [`Name`] relative to this directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Opens `path` as a directory without following a final symlink
/// (`open(2)` with `O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC`), with `O_NOATIME`
/// where permitted (owner or `CAP_FOWNER`) so listing it leaves its atime
/// alone. Relative to `dir` when given, else to the current directory.
///
/// # Errors
///
/// The `open(2)` error: `ENOENT`, `ENOTDIR`, `ELOOP` (the name is a
/// symlink), `EACCES`.
pub fn open_dir_nofollow(dir: Option<&Dir>, name: &OsStr) -> io::Result<Dir> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let base = match dir {
        Some(d) => d.fd.as_fd(),
        None => rustix::fs::CWD,
    };
    let fd = match rustix::fs::openat(base, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::openat(base, name, flags, Mode::empty())?,
        other => other?,
    };
    Ok(Dir { fd })
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

impl Dir {
    /// Opens the root a command works on. This is the only path-based open:
    /// everything beneath it is reached through `*at` calls.
    ///
    /// `path` may hold symlinks in its leading components (the user named
    /// it); the final component must be a real directory.
    ///
    /// # Errors
    ///
    /// As [`open_dir_nofollow`].
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        open_dir_nofollow(None, path.as_os_str())
    }

    /// Opens the child directory `name` with `O_NOFOLLOW`.
    ///
    /// # Errors
    ///
    /// As [`open_dir_nofollow`]; `ELOOP`/`ENOTDIR` when `name` is a symlink.
    pub fn open_dir(&self, name: &Name) -> io::Result<Dir> {
        open_dir_nofollow(Some(self), os(name))
    }

    /// Opens `path` beneath this directory one component at a time, each with
    /// `O_NOFOLLOW`. The root path returns a duplicate of this dirfd.
    ///
    /// # Errors
    ///
    /// As [`open_dir_nofollow`] for the first component that fails.
    pub fn open_path(&self, path: &RelPath) -> io::Result<Dir> {
        let mut cur = Dir {
            fd: rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)?,
        };
        for c in path.components() {
            cur = cur.open_dir(c)?;
        }
        Ok(cur)
    }

    /// `statx(2)` of `name` with `AT_SYMLINK_NOFOLLOW`.
    ///
    /// # Errors
    ///
    /// The `statx(2)` error, e.g. `ENOENT`.
    pub fn stat(&self, name: &Name) -> io::Result<Stat> {
        let s = rustix::fs::statx(self, os(name), AtFlags::SYMLINK_NOFOLLOW, STATX_MASK)?;
        Ok(Stat::from_statx(&s))
    }

    /// `statx(2)` of `name`, `Ok(None)` when it does not exist.
    ///
    /// # Errors
    ///
    /// Any `statx(2)` error other than `ENOENT`.
    pub fn stat_opt(&self, name: &Name) -> io::Result<Option<Stat>> {
        match self.stat(name) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `statx(2)` of this directory itself (`AT_EMPTY_PATH`).
    ///
    /// # Errors
    ///
    /// The `statx(2)` error.
    pub fn stat_self(&self) -> io::Result<Stat> {
        let s = rustix::fs::statx(self, "", AtFlags::EMPTY_PATH, STATX_MASK)?;
        Ok(Stat::from_statx(&s))
    }

    /// The names in this directory (`getdents64(2)`), without `.` and `..`,
    /// sorted bytewise so walks are deterministic.
    ///
    /// # Errors
    ///
    /// The `getdents64(2)` error; a name that fails [`Name::new`] (the kernel
    /// never returns one) as `InvalidData`.
    pub fn list(&self) -> io::Result<Vec<Name>> {
        let mut d = rustix::fs::Dir::read_from(self)?;
        let mut out = Vec::new();
        while let Some(ent) = d.read() {
            let ent = ent?;
            let b = ent.file_name().to_bytes();
            if b == b"." || b == b".." {
                continue;
            }
            out.push(Name::new(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?);
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Opens the existing regular file `name` read-only with `O_NOFOLLOW`.
    ///
    /// # Errors
    ///
    /// The `openat(2)` error.
    pub fn open_file(&self, name: &Name) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(rustix::fs::openat(self, os(name), flags, Mode::empty())?)
    }

    /// Reads the whole regular file `name` (opened `O_NOFOLLOW`) with
    /// synchronous `read(2)`; for small control files (config, records).
    ///
    /// # Errors
    ///
    /// The `openat(2)`/`read(2)` error.
    pub fn read_all(&self, name: &Name) -> io::Result<Vec<u8>> {
        let fd = self.open_file(name)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = rustix::io::read(&fd, &mut buf[..])?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Opens or creates `name` read-write without truncating (for the
    /// repository lock file), `O_NOFOLLOW`.
    ///
    /// # Errors
    ///
    /// The `openat(2)` error.
    pub fn open_or_create_rw(&self, name: &Name, mode: u32) -> io::Result<OwnedFd> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(rustix::fs::openat(
            self,
            os(name),
            flags,
            Mode::from_raw_mode(mode),
        )?)
    }

    /// `mkdirat(2)` with `mode` (before umask).
    ///
    /// # Errors
    ///
    /// The `mkdirat(2)` error: `EEXIST`, `ENOSPC`.
    pub fn mkdir(&self, name: &Name, mode: u32) -> io::Result<()> {
        rustix::fs::mkdirat(self, os(name), Mode::from_raw_mode(mode))?;
        Ok(())
    }

    /// Creates `name` as a directory unless it exists as one; returns whether
    /// it was created (so the caller knows this directory gained a name).
    ///
    /// # Errors
    ///
    /// The `mkdirat(2)` error, or `ENOTDIR` when `name` exists but is not a
    /// directory.
    pub fn ensure_dir(&self, name: &Name, mode: u32) -> io::Result<bool> {
        match self.mkdir(name, mode) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if self.stat(name)?.kind == FileKind::Dir {
                    Ok(false)
                } else {
                    Err(io::Error::from_raw_os_error(
                        rustix::io::Errno::NOTDIR.raw_os_error(),
                    ))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `symlinkat(2)`: creates `name` pointing at `target` (raw bytes, not
    /// interpreted or followed).
    ///
    /// # Errors
    ///
    /// The `symlinkat(2)` error.
    pub fn symlink(&self, target: &[u8], name: &Name) -> io::Result<()> {
        rustix::fs::symlinkat(OsStr::from_bytes(target), self, os(name))?;
        Ok(())
    }

    /// `readlinkat(2)`: the raw target bytes of the symlink `name`.
    ///
    /// # Errors
    ///
    /// The `readlinkat(2)` error (`EINVAL` when not a symlink).
    pub fn read_link(&self, name: &Name) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(self, os(name), Vec::new())?.into_bytes())
    }

    /// `linkat(2)` without `AT_SYMLINK_FOLLOW`: makes `name` here a hard link
    /// to `old_name` in `old_dir` (a symlink is linked as itself, never
    /// followed).
    ///
    /// # Errors
    ///
    /// The `linkat(2)` error.
    pub fn hard_link(&self, old_dir: &Dir, old_name: &Name, name: &Name) -> io::Result<()> {
        rustix::fs::linkat(old_dir, os(old_name), self, os(name), AtFlags::empty())?;
        Ok(())
    }

    /// `mknodat(2)` for a FIFO with `mode`.
    ///
    /// # Errors
    ///
    /// The `mknodat(2)` error.
    pub fn mkfifo(&self, name: &Name, mode: u32) -> io::Result<()> {
        rustix::fs::mknodat(self, os(name), FileType::Fifo, Mode::from_raw_mode(mode), 0)?;
        Ok(())
    }

    /// `renameat2(2)` of `name` here to `new_name` in `new_dir`.
    /// `noreplace` sets `RENAME_NOREPLACE`: fail with `EEXIST` rather than
    /// replace an existing name.
    ///
    /// # Errors
    ///
    /// The `renameat2(2)` error: `EEXIST`, `EXDEV`, `EINVAL` (flag
    /// unsupported by the filesystem).
    pub fn rename(
        &self,
        name: &Name,
        new_dir: &Dir,
        new_name: &Name,
        noreplace: bool,
    ) -> io::Result<()> {
        let flags = if noreplace {
            RenameFlags::NOREPLACE
        } else {
            RenameFlags::empty()
        };
        rustix::fs::renameat_with(self, os(name), new_dir, os(new_name), flags)?;
        Ok(())
    }

    /// `unlinkat(2)` of a non-directory.
    ///
    /// # Errors
    ///
    /// The `unlinkat(2)` error.
    pub fn unlink(&self, name: &Name) -> io::Result<()> {
        rustix::fs::unlinkat(self, os(name), AtFlags::empty())?;
        Ok(())
    }

    /// Removes `name` and, when it is a directory, everything beneath it,
    /// through dirfds only (symlinks are unlinked, never followed).
    ///
    /// # Errors
    ///
    /// The first `unlinkat(2)`/`openat(2)`/`getdents64(2)` error.
    pub fn remove_tree(&self, name: &Name) -> io::Result<()> {
        match self.stat_opt(name)? {
            None => return Ok(()),
            Some(st) if st.kind != FileKind::Dir => return self.unlink(name),
            Some(_) => {}
        }
        let sub = self.open_dir(name)?;
        for child in sub.list()? {
            sub.remove_tree(&child)?;
        }
        rustix::fs::unlinkat(self, os(name), AtFlags::REMOVEDIR)?;
        Ok(())
    }

    /// `fsync(2)` of this directory.
    ///
    /// # Errors
    ///
    /// The `fsync(2)` error.
    pub fn sync(&self) -> io::Result<()> {
        fsync_parent_dir(self)
    }

    /// `syncfs(2)`: flushes the whole filesystem holding this directory.
    ///
    /// # Errors
    ///
    /// The `syncfs(2)` error (reports writeback errors since Linux 5.8).
    pub fn syncfs(&self) -> io::Result<()> {
        rustix::fs::syncfs(self)?;
        Ok(())
    }

    /// `fchownat(2)` with `AT_SYMLINK_NOFOLLOW` (changes a symlink itself).
    ///
    /// # Errors
    ///
    /// The `fchownat(2)` error: `EPERM` without `CAP_CHOWN`.
    pub fn chown_nofollow(&self, name: &Name, uid: u32, gid: u32) -> io::Result<()> {
        rustix::fs::chownat(
            self,
            os(name),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// `fchmodat(2)` on a non-symlink entry this run created (a FIFO).
    ///
    /// # Errors
    ///
    /// The `fchmodat(2)` error.
    pub fn chmod_at(&self, name: &Name, mode: u32) -> io::Result<()> {
        rustix::fs::chmodat(self, os(name), Mode::from_raw_mode(mode), AtFlags::empty())?;
        Ok(())
    }

    /// `utimensat(2)` with `AT_SYMLINK_NOFOLLOW`: sets atime and mtime of
    /// `name` itself (a symlink's own times). `atime: None` leaves the
    /// access time as it is (`UTIME_OMIT`).
    ///
    /// # Errors
    ///
    /// The `utimensat(2)` error.
    pub fn set_times_nofollow(
        &self,
        name: &Name,
        atime: Option<Time>,
        mtime: Time,
    ) -> io::Result<()> {
        rustix::fs::utimensat(
            self,
            os(name),
            &timestamps(atime, mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// Free bytes available to this process on the filesystem holding this
    /// directory (`fstatvfs(3)`: `f_bavail * f_frsize`).
    ///
    /// # Errors
    ///
    /// The `fstatfs(2)` error.
    pub fn available_bytes(&self) -> io::Result<u64> {
        let s = rustix::fs::fstatvfs(self)?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }
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

/// Metadata calls on an open file or directory descriptor.
pub mod fd {
    use super::*;

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
    pub fn xattrs(
        fd: impl AsFd,
    ) -> io::Result<(Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, io::Error)>)> {
        let fd = fd.as_fd();
        let mut list = vec![0u8; 4096];
        let n = loop {
            match rustix::fs::flistxattr(fd, &mut list[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => {
                    let need = rustix::fs::flistxattr(fd, &mut [0u8; 0][..])?;
                    list.resize(need.max(list.len() * 2), 0);
                }
                Err(rustix::io::Errno::NOTSUP) => return Ok((Vec::new(), Vec::new())),
                Err(e) => return Err(e.into()),
            }
        };
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        for name in list[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
            match get_xattr(fd, name) {
                Ok(v) => ok.push((name.to_vec(), v)),
                Err(e) => failed.push((name.to_vec(), e)),
            }
        }
        ok.sort();
        Ok((ok, failed))
    }

    fn get_xattr(fd: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
        let name = OsStr::from_bytes(name);
        let mut buf = vec![0u8; 256];
        loop {
            match rustix::fs::fgetxattr(fd, name, &mut buf[..]) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(rustix::io::Errno::RANGE) => {
                    let need = rustix::fs::fgetxattr(fd, name, &mut [0u8; 0][..])?;
                    buf.resize(need.max(buf.len() * 2), 0);
                }
                Err(e) => return Err(e.into()),
            }
        }
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
}

/// A file whose data moves through io_uring (compio): reads, writes and
/// `fsync` are submitted to the ring of the current compio runtime.
///
/// Built from a descriptor this module opened with `O_NOFOLLOW`.
pub struct DataFile {
    file: compio::fs::File,
}

impl DataFile {
    /// Hands `fd` to the compio runtime. Must run inside a compio runtime.
    pub fn new(fd: OwnedFd) -> Self {
        // SAFETY: `into_raw_fd` transfers ownership of a valid open
        // descriptor; `File` takes over closing it exactly once.
        let file = unsafe { compio::fs::File::from_raw_fd(fd.into_raw_fd()) };
        Self { file }
    }

    /// The descriptor, for metadata calls in [`fd`].
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Reads up to `len` bytes at `offset` (IORING_OP_READ) into a new
    /// buffer; a short or empty buffer means end of file (or a short read,
    /// which callers handle by reading again at the new offset).
    ///
    /// # Errors
    ///
    /// The read error (`EIO`, `EAGAIN` for a FIFO opened non-blocking).
    pub async fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use compio::io::AsyncReadAt;
        let buf = Vec::with_capacity(len);
        let compio::BufResult(res, mut buf) = self.file.read_at(buf, offset).await;
        let n = res?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Reads exactly `len` bytes at `offset` into a new buffer.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` when the file is shorter; the read error otherwise.
    pub async fn read_exact_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use compio::io::AsyncReadAtExt;
        let buf = Vec::with_capacity(len);
        let compio::BufResult(res, buf) = self.file.read_exact_at(buf, offset).await;
        res?;
        Ok(buf)
    }

    /// Writes all of `buf` at `offset` (IORING_OP_WRITE, repeated on short
    /// writes) and gives the buffer back.
    ///
    /// # Errors
    ///
    /// The write error (`ENOSPC`, `EIO`).
    pub async fn write_all_at(&mut self, buf: Vec<u8>, offset: u64) -> io::Result<Vec<u8>> {
        use compio::io::AsyncWriteAtExt;
        let compio::BufResult(res, buf) = self.file.write_all_at(buf, offset).await;
        res?;
        Ok(buf)
    }

    /// `fsync` through io_uring (IORING_OP_FSYNC).
    ///
    /// # Errors
    ///
    /// The fsync error; callers never ignore it.
    pub async fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all().await
    }

    /// Closes the descriptor through io_uring (IORING_OP_CLOSE).
    ///
    /// # Errors
    ///
    /// The close error (on NFS, a delayed write error).
    pub async fn close(self) -> io::Result<()> {
        self.file.close().await
    }
}

/// Runs `f` on a single-threaded compio runtime (one io_uring).
///
/// # Errors
///
/// `io::Error` when the ring cannot be created (io_uring disabled:
/// `/proc/sys/kernel/io_uring_disabled`); `f`'s own output otherwise.
pub fn block_on<F: std::future::Future>(f: F) -> io::Result<F::Output> {
    let rt = compio::runtime::Runtime::new()?;
    Ok(rt.block_on(f))
}

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

/// The process umask (`umask(2)` read by setting it and setting it back).
pub fn umask() -> u32 {
    let old = rustix::process::umask(Mode::from_raw_mode(0o022));
    rustix::process::umask(old);
    old.bits()
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}
