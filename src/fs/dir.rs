//! [`Dir`], the directory capability: an open dirfd from which only
//! single validated [`Name`]s are reached, with `O_NOFOLLOW` /
//! `AT_SYMLINK_NOFOLLOW`; bounded-descriptor removal of trees.
//!
//! Side effects: whatever the called method says.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};

use super::stat::STATX_MASK;
use super::{
    fd, fsync_parent_dir, not_regular, os, read_to_end_max, read_xattrs, regular_output,
    timestamps, too_large, FileKind, Name, RelPath, Stat, Time,
};

/// An open directory (dirfd), opened `O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC`.
///
/// Every method takes a single validated [`Name`] relative to this directory.
#[derive(Debug)]
pub struct Dir {
    pub(super) fd: OwnedFd,
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

    /// The first `n` bytes (fewer when the file is shorter) of the
    /// regular file `name`, opened as [`Dir::open_file`]; for tag files
    /// (`CACHEDIR.TAG`).
    ///
    /// # Errors
    ///
    /// As [`Dir::open_file`]; the `pread(2)` error.
    pub fn read_prefix(&self, name: &Name, n: usize) -> io::Result<Vec<u8>> {
        let (fd, _) = self.open_regular(name)?;
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match rustix::io::pread(&fd, &mut buf[got..], got as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        buf.truncate(got);
        Ok(buf)
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
