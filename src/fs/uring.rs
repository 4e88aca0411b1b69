//! Custom io_uring operations that compio does not ship: `IORING_OP_WRITEV`
//! of many buffers, `IORING_OP_SYNC_FILE_RANGE`, and `IORING_OP_OPENAT2`
//! relative to a dirfd, with `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
//! RESOLVE_NO_MAGICLINKS` (see `openat2(2)` and `io_uring_enter(2)`), so a
//! name can only ever resolve to an entry directly beneath the dirfd.
//!
//! Side effects: opens (and may create) the named file.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;

use compio::driver::{OpCode, OpEntry};
use io_uring::{opcode, types};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::{Dir, Name};

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

/// One `sync_file_range(2)` submission (`IORING_OP_SYNC_FILE_RANGE`) over
/// the whole file with `SYNC_FILE_RANGE_WRITE`: starts write-out of the
/// file's dirty pages without waiting for it.
struct StartWriteback {
    fd: RawFd,
}

// SAFETY: the entry holds no pointer; `fd` is borrowed from a `DataFile`
// that outlives the awaited submission.
unsafe impl OpCode for StartWriteback {
    fn create_entry(self: Pin<&mut Self>) -> OpEntry {
        /// `SYNC_FILE_RANGE_WRITE` from `include/uapi/linux/fs.h`.
        const SYNC_FILE_RANGE_WRITE: u32 = 2;
        opcode::SyncFileRange::new(types::Fd(self.fd), 0)
            .offset(0)
            .flags(SYNC_FILE_RANGE_WRITE)
            .build()
            .into()
    }
}

impl super::DataFile {
    /// Starts write-out of the file's dirty pages (`sync_file_range(2)`
    /// with `SYNC_FILE_RANGE_WRITE`, offset 0 and length 0: to the end)
    /// and returns without waiting for it to finish. Not a durability
    /// guarantee (see the man page): a later `fsync` is, and finds little
    /// left to write.
    ///
    /// # Errors
    ///
    /// The submission's error (`EIO`, `ENOSPC`).
    pub async fn start_writeback(&self) -> io::Result<()> {
        let op = StartWriteback { fd: self.raw_fd() };
        compio::runtime::submit(op).await.0.map(|_| ())
    }
}

/// `struct iovec` from `include/uapi/linux/uio.h`.
#[repr(C)]
struct Iovec {
    base: *const u8,
    len: usize,
}

/// One `pwritev(2)` submission (`IORING_OP_WRITEV`) of `iov`, which points
/// into `parts`.
struct WriteV<P> {
    fd: RawFd,
    offset: u64,
    iov: Vec<Iovec>,
    parts: Vec<P>,
}

// SAFETY: the entry points at `iov`, whose entries point at the bytes of
// `parts`: each part lives in the vector's heap buffer (which does not move
// when the op does) and its `as_ref` bytes are there or in memory it owns.
// compio keeps the op, and so both, alive until the completion arrives. `fd` is borrowed from a `DataFile` that outlives the awaited
// submission.
unsafe impl<P: 'static> OpCode for WriteV<P> {
    fn create_entry(self: Pin<&mut Self>) -> OpEntry {
        opcode::Writev::new(
            types::Fd(self.fd),
            self.iov.as_ptr().cast(),
            self.iov.len() as u32,
        )
        .offset(self.offset)
        .build()
        .into()
    }
}

/// Most iovecs one `writev` takes (`IOV_MAX`, `UIO_MAXIOV` in
/// `include/uapi/linux/uio.h`).
const IOV_MAX: usize = 1024;

impl super::DataFile {
    /// Writes the bytes of `parts` back to back from `offset`, through
    /// `IORING_OP_WRITEV` (1,024 parts per submission at most), and
    /// resubmits the rest after a short write; returns `parts`. The parts'
    /// bytes go to the page cache straight from where they lie: the caller
    /// need not copy them into one buffer first.
    ///
    /// # Errors
    ///
    /// The first failed submission's error (`ENOSPC`, `EIO`); `WriteZero`
    /// when a submission writes nothing.
    pub async fn write_parts_at<P: AsRef<[u8]> + 'static>(
        &self,
        parts: Vec<P>,
        offset: u64,
    ) -> io::Result<Vec<P>> {
        let mut op = WriteV {
            fd: self.raw_fd(),
            offset,
            iov: Vec::new(),
            parts,
        };
        // The next part to write, and how much of it is written.
        let (mut next, mut skip) = (0, 0);
        while next < op.parts.len() {
            op.iov.clear();
            for part in op.parts[next..].iter().take(IOV_MAX) {
                let b = part.as_ref();
                let b = if op.iov.is_empty() { &b[skip..] } else { b };
                op.iov.push(Iovec {
                    base: b.as_ptr(),
                    len: b.len(),
                });
            }
            let compio::BufResult(res, back) = compio::runtime::submit(op).await;
            op = back;
            let n = res?;
            if n == 0 && op.iov.iter().any(|v| v.len > 0) {
                return Err(io::ErrorKind::WriteZero.into());
            }
            op.offset += n as u64;
            advance(op.iov.iter().map(|v| v.len), n, &mut next, &mut skip);
        }
        Ok(op.parts)
    }
}

/// Moves (`next`, `skip`), the first part not yet written whole and how
/// much of it is, past `n` bytes written from iovecs of `lens` (the first
/// of which starts `skip` bytes into part `next`).
fn advance(lens: impl Iterator<Item = usize>, mut n: usize, next: &mut usize, skip: &mut usize) {
    for len in lens {
        if n < len {
            *skip += n;
            return;
        }
        n -= len;
        *next += 1;
        *skip = 0;
    }
}

fn resolve() -> u64 {
    (ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS).bits()
}

async fn open_at(dir: &Dir, name: &Name, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
    let path = CString::new(name.as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let op = OpenAt2 {
        dirfd: dir.fd.as_raw_fd(),
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

impl Dir {
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
    pub async fn open_file_read_uring(&self, name: &Name) -> io::Result<OwnedFd> {
        let base = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK;
        match open_at(self, name, base | OFlags::NOATIME, 0).await {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
                open_at(self, name, base, 0).await
            }
            other => other,
        }
    }

    /// Creates the regular file `name` through io_uring
    /// (`IORING_OP_OPENAT2`): `O_RDWR|O_CREAT|O_EXCL|O_NOFOLLOW` with `mode`
    /// (before umask).
    ///
    /// # Errors
    ///
    /// The open error: `EEXIST`, `ENOSPC`.
    pub async fn create_file_uring(&self, name: &Name, mode: u32) -> io::Result<OwnedFd> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        open_at(self, name, flags, mode).await
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
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
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

    #[test]
    fn openat2_refuses_symlinks_and_creates_beneath() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", tmp.path().join("l")).unwrap();
        let dir = Dir::open_root(tmp.path()).unwrap();
        crate::fs::block_on(async {
            let f = Name::new(b"f").unwrap();
            dir.open_file_read_uring(&f).await.unwrap();
            let l = Name::new(b"l").unwrap();
            let e = dir.open_file_read_uring(&l).await.unwrap_err();
            assert_eq!(
                e.raw_os_error(),
                Some(rustix::io::Errno::LOOP.raw_os_error())
            );
            let n = Name::new(b"new").unwrap();
            dir.create_file_uring(&n, 0o600).await.unwrap();
            let again = dir.create_file_uring(&n, 0o600).await.unwrap_err();
            assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
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

    #[test]
    fn vectored_writes_put_every_part_in_order_beyond_one_submission() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_root(tmp.path()).unwrap();
        // 2,500 parts (three submissions), some empty.
        let parts: Vec<Vec<u8>> = (0..2500u32)
            .map(|i| vec![(i % 251) as u8; (i as usize * 7) % 61])
            .collect();
        let want: Vec<u8> = parts.concat();
        crate::fs::block_on(async {
            let n = Name::new(b"v").unwrap();
            let f = super::super::DataFile::new(dir.create_file_uring(&n, 0o600).await.unwrap());
            let back = f.write_parts_at(parts, 10).await.unwrap();
            assert_eq!(back.len(), 2500);
        })
        .unwrap();
        let got = std::fs::read(tmp.path().join("v")).unwrap();
        assert_eq!(&got[..10], &[0u8; 10]);
        assert!(got[10..] == want[..], "content differs");
    }

    #[test]
    fn a_short_write_resumes_inside_the_part_it_stopped_in() {
        // Parts 3..: the first iovec starts 2 bytes into part 3.
        let (mut next, mut skip) = (3, 2);
        advance([5, 3, 4].into_iter(), 6, &mut next, &mut skip);
        assert_eq!((next, skip), (4, 1));
        advance([2, 4].into_iter(), 2, &mut next, &mut skip);
        assert_eq!((next, skip), (5, 0));
        advance([4].into_iter(), 0, &mut next, &mut skip);
        assert_eq!((next, skip), (5, 0));
        // Empty parts are passed whatever was written.
        advance([0, 0, 4].into_iter(), 1, &mut next, &mut skip);
        assert_eq!((next, skip), (7, 1));
    }
}
