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
//! Side effects: whatever the called method says; nothing is cached.

#![allow(unsafe_code)]

mod name;

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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
    /// 512-byte blocks allocated (`st_blocks`); fewer than `size / 512`
    /// means the file has holes.
    pub blocks: u64,
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
            blocks: s.stx_blocks,
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

impl From<Dir> for OwnedFd {
    fn from(d: Dir) -> OwnedFd {
        d.fd
    }
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

/// Directory levels [`Dir::remove_tree`] and [`Dir::clear`] descend
/// before moving a subtree up (bounds the descriptors they hold).
pub const REMOVE_DEPTH: usize = 16;

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
    ///
    /// Reads through this descriptor's own file offset, rewound first (one
    /// `lseek(2)`; no second descriptor is opened, unlike `opendir(3)`), so
    /// two threads must not list the same `Dir` at once.
    pub fn list(&self) -> io::Result<Vec<Name>> {
        rustix::fs::seek(&self.fd, rustix::fs::SeekFrom::Start(0))?;
        // Room for at least 100 entries of the longest name (255 bytes).
        let mut buf = Vec::<u8>::with_capacity(32 * 1024);
        let mut d = rustix::fs::RawDir::new(&self.fd, buf.spare_capacity_mut());
        let mut out = Vec::new();
        while let Some(ent) = d.next() {
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

    /// Opens the existing regular file `name` read-only with
    /// `O_NOFOLLOW|O_NONBLOCK` (a FIFO planted at the name cannot block the
    /// open, see `fifo(7)`) and refuses anything but a regular file.
    ///
    /// # Errors
    ///
    /// The `openat(2)`/`fstat(2)` error; [`io::ErrorKind::InvalidData`]
    /// ([`not_regular`]) when `name` is not a regular file.
    pub fn open_file(&self, name: &Name) -> io::Result<OwnedFd> {
        Ok(self.open_regular(name)?.0)
    }

    /// [`Dir::open_file`], with the size its one `fstat(2)` saw.
    fn open_regular(&self, name: &Name) -> io::Result<(OwnedFd, u64)> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(self, os(name), flags, Mode::empty())?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(not_regular(FileType::from_raw_mode(st.st_mode)));
        }
        Ok((fd, u64::try_from(st.st_size).unwrap_or(0)))
    }

    /// Opens (creating it `mode`, or truncating it) the regular file `name`
    /// for writing output the user asked for (`snap schema --out DIR`):
    /// `O_NOFOLLOW|O_NONBLOCK`, so a symlink planted at the name is not
    /// followed and a FIFO does not block (`ENXIO` without a reader, see
    /// `open(2)`); anything but a regular file is refused.
    ///
    /// # Errors
    ///
    /// The `openat(2)`/`fstat(2)`/`ftruncate(2)` error; `ELOOP` for a
    /// symlink; [`not_regular`].
    pub fn create_output(&self, name: &Name, mode: u32) -> io::Result<OwnedFd> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(self, os(name), flags, Mode::from_raw_mode(mode))?;
        regular_output(&fd)?;
        rustix::fs::ftruncate(&fd, 0)?;
        Ok(fd)
    }

    /// Reads the whole regular file `name` (opened as [`Dir::open_file`])
    /// with synchronous `read(2)`, if it holds at most `max` bytes; for
    /// control files (config, records, index files).
    ///
    /// # Errors
    ///
    /// As [`Dir::open_file`]; [`io::ErrorKind::InvalidData`] when the file
    /// holds more than `max` bytes (checked before anything is allocated,
    /// and again as it is read); the `read(2)` error.
    pub fn read_all(&self, name: &Name, max: u64) -> io::Result<Vec<u8>> {
        let (fd, size) = self.open_regular(name)?;
        if size > max {
            return Err(too_large(size, max));
        }
        read_to_end_max(&fd, size, max)
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

    /// `renameat2(2)` with `RENAME_EXCHANGE`: atomically swaps `name` here
    /// with `other` in `other_dir` (both must exist).
    ///
    /// # Errors
    ///
    /// The `renameat2(2)` error: `EINVAL` where the filesystem has no
    /// `RENAME_EXCHANGE`, `EXDEV`, `EBUSY` (a mount point), `EPERM`
    /// (immutable).
    pub fn exchange(&self, name: &Name, other_dir: &Dir, other: &Name) -> io::Result<()> {
        rustix::fs::renameat_with(self, os(name), other_dir, os(other), RenameFlags::EXCHANGE)?;
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

    /// `unlinkat(2)` with `AT_REMOVEDIR`: removes the empty directory `name`.
    ///
    /// # Errors
    ///
    /// The `unlinkat(2)` error: `ENOTEMPTY`, `ENOTDIR` (not a directory).
    pub fn rmdir(&self, name: &Name) -> io::Result<()> {
        rustix::fs::unlinkat(self, os(name), AtFlags::REMOVEDIR)?;
        Ok(())
    }

    /// Removes `name` and, when it is a directory, everything beneath it,
    /// through dirfds only (symlinks are unlinked, never followed). Clears
    /// immutable/append-only inode flags that stand in the way (a failed
    /// restore may have set them; needs `CAP_LINUX_IMMUTABLE`). Holds at
    /// most [`REMOVE_DEPTH`] descriptors whatever the depth of the tree
    /// (see [`Dir::clear`]).
    ///
    /// # Errors
    ///
    /// The first `unlinkat(2)`/`openat(2)`/`getdents64(2)`/`renameat2(2)`/
    /// `ioctl(2)` error.
    pub fn remove_tree(&self, name: &Name) -> io::Result<()> {
        self.remove_entry(name, None, 0)
    }

    /// Removes everything beneath this directory, which itself stays.
    /// A directory [`REMOVE_DEPTH`] levels down is first renamed up into
    /// this directory (`renameat2(RENAME_NOREPLACE)` under a fresh
    /// `.snap-rm-*` name) and removed from there, so a tree nested
    /// 30,000 levels deep costs no more descriptors than a shallow one.
    ///
    /// # Errors
    ///
    /// As [`Dir::remove_tree`].
    pub fn clear(&self) -> io::Result<()> {
        fd::unprotect(self)?;
        let mut hoisted = 0u64;
        loop {
            let names = self.list()?;
            let before = hoisted;
            for child in &names {
                self.remove_entry(child, Some((self, &mut hoisted)), 1)?;
            }
            if hoisted == before {
                return Ok(());
            }
        }
    }

    /// Removes `name` (a directory with its subtree) at `depth` below the
    /// directory being cleared (`top`, with its count of hoisted names).
    fn remove_entry(
        &self,
        name: &Name,
        mut top: Option<(&Dir, &mut u64)>,
        depth: usize,
    ) -> io::Result<()> {
        let perm = |e: &io::Error| e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error());
        match self.stat_opt(name)? {
            None => return Ok(()),
            Some(st) if st.kind != FileKind::Dir => {
                return match self.unlink(name) {
                    Err(e) if perm(&e) => {
                        fd::unprotect(self)?;
                        if st.kind == FileKind::File {
                            fd::unprotect(self.open_file(name)?)?;
                        }
                        self.unlink(name)
                    }
                    other => other,
                };
            }
            Some(_) => {}
        }
        let sub = self.open_dir(name)?;
        fd::unprotect(&sub)?;
        match top.as_mut() {
            Some((top_dir, n)) if depth >= REMOVE_DEPTH => {
                // Too deep: move it up, to be removed as a child of `top`.
                loop {
                    **n += 1;
                    let fresh =
                        Name::new(format!(".snap-rm-{}-{}", std::process::id(), **n).as_bytes())
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                    match self.rename(name, top_dir, &fresh, true) {
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                        Err(e) if perm(&e) => {
                            fd::unprotect(self)?;
                            self.rename(name, top_dir, &fresh, true)?;
                            return Ok(());
                        }
                        other => return other,
                    }
                }
            }
            _ => {}
        }
        if top.is_none() {
            // `sub` is the directory being removed: clear it with itself
            // as the top.
            sub.clear()?;
        } else {
            for child in sub.list()? {
                sub.remove_entry(&child, top.as_mut().map(|(d, n)| (*d, &mut **n)), depth + 1)?;
            }
        }
        drop(sub);
        match rustix::fs::unlinkat(self, os(name), AtFlags::REMOVEDIR) {
            Err(rustix::io::Errno::PERM) => {
                fd::unprotect(self)?;
                rustix::fs::unlinkat(self, os(name), AtFlags::REMOVEDIR)?;
            }
            other => other?,
        }
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

    /// The `/proc/self/fd/<dirfd>/<name>` path: resolving it goes through
    /// this open dirfd (the magic link) and then `name` only, so it reaches
    /// exactly the entry this `Dir` holds, for the path-only `l*xattr(2)`
    /// calls that do not follow a final symlink.
    fn proc_path(&self, name: &Name) -> Vec<u8> {
        use std::os::fd::AsRawFd;
        let mut p = format!("/proc/self/fd/{}/", self.fd.as_raw_fd()).into_bytes();
        p.extend_from_slice(name.as_bytes());
        p
    }

    /// Every extended attribute of `name` itself, not following a symlink
    /// (`llistxattr(2)`/`lgetxattr(2)` through [`Dir::proc_path`]); for
    /// symlinks, FIFOs and devices, which cannot be opened for
    /// `fgetxattr(2)`. Same shape as [`fd::xattrs`].
    ///
    /// # Errors
    ///
    /// The `llistxattr(2)` error; `EOPNOTSUPP` maps to an empty list.
    #[allow(clippy::type_complexity)]
    pub fn xattrs_nofollow(
        &self,
        name: &Name,
    ) -> io::Result<(Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, io::Error)>)> {
        let path = self.proc_path(name);
        let path = OsStr::from_bytes(&path);
        read_xattrs(
            |buf| rustix::fs::llistxattr(path, buf),
            |n, buf| rustix::fs::lgetxattr(path, OsStr::from_bytes(n), buf),
        )
    }

    /// `lsetxattr(2)` on `name` itself (a symlink is not followed).
    ///
    /// # Errors
    ///
    /// The `lsetxattr(2)` error: `EPERM` (`user.*` on a symlink, or a
    /// namespace that needs a capability), `EOPNOTSUPP`.
    pub fn set_xattr_nofollow(&self, name: &Name, xname: &[u8], value: &[u8]) -> io::Result<()> {
        let path = self.proc_path(name);
        rustix::fs::lsetxattr(
            OsStr::from_bytes(&path),
            OsStr::from_bytes(xname),
            value,
            rustix::fs::XattrFlags::empty(),
        )?;
        Ok(())
    }

    /// `mknodat(2)` of a character (`block == false`) or block device.
    ///
    /// # Errors
    ///
    /// The `mknodat(2)` error: `EPERM` without `CAP_MKNOD`.
    pub fn mknod(
        &self,
        name: &Name,
        block: bool,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        let kind = if block {
            FileType::BlockDevice
        } else {
            FileType::CharacterDevice
        };
        rustix::fs::mknodat(
            self,
            os(name),
            kind,
            Mode::from_raw_mode(mode),
            rustix::fs::makedev(major, minor),
        )?;
        Ok(())
    }

    /// Bytes in use on the filesystem holding this directory
    /// (`(f_blocks - f_bfree) * f_frsize`, `statvfs(3)`).
    ///
    /// # Errors
    ///
    /// The `fstatfs(2)` error.
    pub fn used_bytes(&self) -> io::Result<u64> {
        let s = rustix::fs::fstatvfs(self)?;
        Ok(s.f_blocks
            .saturating_sub(s.f_bfree)
            .saturating_mul(s.f_frsize))
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

/// Metadata calls on an open file or directory descriptor.
pub mod fd {
    use super::*;

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
    pub fn xattrs(
        fd: impl AsFd,
    ) -> io::Result<(Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, io::Error)>)> {
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
        let r = unsafe {
            libc::sync_file_range(fd.as_fd().as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
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

impl Dir {
    /// Creates the regular file `name` with a direct `openat2(2)`
    /// (`RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS`):
    /// `O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW` with `mode` (before umask);
    /// `openat(2)` with the same flags on kernels without `openat2`.
    ///
    /// Restore creates files this way rather than through io_uring: an
    /// `O_CREAT` open is always handed to an io-wq worker thread
    /// (`io_openat_force_async` in `io_uring/openclose.c`), and on ext4 the
    /// wake-up and switch per file cost more than the open itself (measured
    /// in `docs/BENCHMARKS.md`).
    ///
    /// # Errors
    ///
    /// The open error: `EEXIST`, `ENOSPC`, `ELOOP`.
    pub fn create_file(&self, name: &Name, mode: u32) -> io::Result<OwnedFd> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let path = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.as_bytes());
        let how = rustix::fs::ResolveFlags::BENEATH
            | rustix::fs::ResolveFlags::NO_SYMLINKS
            | rustix::fs::ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(self, path, flags, Mode::from_raw_mode(mode), how) {
            Err(rustix::io::Errno::NOSYS) => Ok(rustix::fs::openat(
                self,
                path,
                flags,
                Mode::from_raw_mode(mode),
            )?),
            other => Ok(other?),
        }
    }
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
