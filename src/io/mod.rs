//! File data through io_uring (compio) where the kernel allows it, and
//! through plain blocking syscalls where it does not: the backend choice
//! ([`choice`], `SNAP_IO`), the runtime ([`block_on`]), the file type whose
//! reads go to the chosen backend ([`DataFile`]), and the `openat2` open
//! ([`open_read`]).
//!
//! Backup reads source files this way; everything else (the repository's
//! local backend, restore's writes) uses synchronous `crate::fs` calls on
//! both backends.
//!
//! Why a blocking fallback rather than compio's poll driver: the backup
//! walker awaits one operation at a time (an open, then reads of that
//! file, then its close), so io_uring saves syscall transitions but never
//! has two of snap's operations in flight; a blocking `pread` does the same
//! work in the same order on the same thread. compio's poll driver would
//! run each regular-file read as a blocking call anyway, on its thread
//! pool (compio-driver 0.11 `sys/poll/op.rs`: `ReadAt::pre_submit` returns
//! `Decision::Blocking` on Linux), adding a hand-off to another thread and
//! a wake-up back for every read. The fallback needs no runtime: its
//! futures are ready on the first poll.
//!
//! Side effects: [`choice`] creates and drops one io_uring instance to
//! probe (once per process); each [`block_on`] on io_uring creates one;
//! the operations do what they say.

#![allow(unsafe_code)]

mod uring;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fs::{Dir, Name};

/// The I/O backend backup's file reads go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// io_uring through compio.
    IoUring,
    /// Blocking syscalls (`openat2`, `pread`, `close`) on the calling
    /// thread.
    Fallback,
}

impl Backend {
    /// The name in facts: `io_uring` or `fallback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Fallback => "fallback",
        }
    }
}

/// The backend this process uses and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The backend.
    pub backend: Backend,
    /// Why it was chosen (`SNAP_IO`, or the probe's result).
    pub reason: String,
}

/// What `SNAP_IO` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Auto,
    Uring,
    Fallback,
}

static CHOICE: OnceLock<std::result::Result<Choice, (bool, String)>> = OnceLock::new();

/// The backend, chosen once per process from `SNAP_IO` (`auto`, the
/// default; `uring`; `fallback`): `auto` probes with `io_uring_setup(2)`
/// and falls back when the kernel refuses (`EPERM` under
/// `kernel.io_uring_disabled` or a seccomp profile such as Docker's since
/// 25, `ENOSYS` without io_uring).
///
/// # Errors
///
/// [`Error::IoUringUnavailable`] (`E_IO_URING`) when `SNAP_IO=uring` and
/// the probe fails; [`Error::Usage`] for any other value of `SNAP_IO`.
pub fn choice() -> Result<&'static Choice> {
    let c = CHOICE.get_or_init(|| {
        let raw = std::env::var_os("SNAP_IO");
        let wanted = match raw.as_deref().map(|v| v.to_string_lossy()) {
            None => Wanted::Auto,
            Some(v) if v.is_empty() || v == "auto" => Wanted::Auto,
            Some(v) if v == "uring" => Wanted::Uring,
            Some(v) if v == "fallback" => Wanted::Fallback,
            Some(v) => {
                return Err((
                    false,
                    format!("SNAP_IO={v:?}: give auto, uring or fallback"),
                ))
            }
        };
        if wanted == Wanted::Fallback {
            return Ok(Choice {
                backend: Backend::Fallback,
                reason: "SNAP_IO=fallback".into(),
            });
        }
        match probe() {
            Ok(()) => Ok(Choice {
                backend: Backend::IoUring,
                reason: if wanted == Wanted::Uring {
                    "SNAP_IO=uring; io_uring_setup succeeded".into()
                } else {
                    "io_uring_setup succeeded".into()
                },
            }),
            Err(why) if wanted == Wanted::Uring => Err((true, why)),
            Err(why) => Ok(Choice {
                backend: Backend::Fallback,
                reason: why,
            }),
        }
    });
    match c {
        Ok(c) => Ok(c),
        Err((true, why)) => Err(Error::IoUringUnavailable {
            detail: why.clone(),
        }),
        Err((false, why)) => Err(Error::Usage(why.clone())),
    }
}

/// Tries to set up a small io_uring; the error says why not, with the
/// value of `/proc/sys/kernel/io_uring_disabled` when it is set
/// (`Documentation/admin-guide/sysctl/kernel.rst`).
fn probe() -> std::result::Result<(), String> {
    match io_uring::IoUring::new(4) {
        Ok(_) => Ok(()),
        Err(e) => {
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| v != "0");
            Err(match sysctl {
                Some(v) => format!("io_uring_setup failed: {e} (kernel.io_uring_disabled = {v})"),
                None => format!("io_uring_setup failed: {e}"),
            })
        }
    }
}

/// The backend of this process; [`Backend::Fallback`] when [`choice`]
/// fails (callers that must report that error call [`choice`] first).
fn backend() -> Backend {
    choice().map_or(Backend::Fallback, |c| c.backend)
}

/// A file whose data moves through the chosen backend: on io_uring,
/// reads and the close are submitted to the ring of the current compio
/// runtime; on the fallback, they are `pread(2)` and `close(2)`.
///
/// Built from a descriptor opened with `O_NOFOLLOW` (by [`open_read`] or
/// `crate::fs`).
pub struct DataFile {
    inner: Inner,
}

enum Inner {
    Uring(compio::fs::File),
    Blocking(OwnedFd),
}

impl DataFile {
    /// Hands `fd` to the backend. On io_uring, must run inside a
    /// [`block_on`].
    pub fn new(fd: OwnedFd) -> Self {
        let inner = match backend() {
            // SAFETY: `into_raw_fd` transfers ownership of a valid open
            // descriptor; `File` takes over closing it exactly once.
            Backend::IoUring => {
                Inner::Uring(unsafe { compio::fs::File::from_raw_fd(fd.into_raw_fd()) })
            }
            Backend::Fallback => Inner::Blocking(fd),
        };
        Self { inner }
    }

    /// The descriptor, for metadata calls in [`fd`].
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.inner {
            Inner::Uring(f) => f.as_fd(),
            Inner::Blocking(fd) => fd.as_fd(),
        }
    }

    /// Reads up to `len` bytes at `offset` (IORING_OP_READ, or `pread(2)`),
    /// appended to `buf` after its current length, so a caller can
    /// recycle buffers (no fresh pages to fault in for every read). Fewer
    /// bytes than `len` appended means end of file or a short read (the
    /// caller reads again at the new offset).
    ///
    /// # Errors
    ///
    /// The read error; the buffer is dropped.
    pub async fn read_at_into(
        &self,
        mut buf: Vec<u8>,
        offset: u64,
        len: usize,
    ) -> io::Result<Vec<u8>> {
        let start = buf.len();
        buf.reserve(len);
        match &self.inner {
            Inner::Uring(file) => {
                use compio::buf::{IntoInner, IoBuf};
                use compio::io::AsyncReadAt;
                let compio::BufResult(res, slice) =
                    file.read_at(buf.slice(start..start + len), offset).await;
                res?;
                Ok(slice.into_inner())
            }
            Inner::Blocking(fd) => {
                let n = loop {
                    match rustix::io::pread(fd, &mut buf.spare_capacity_mut()[..len], offset) {
                        Ok((filled, _)) => break filled.len(),
                        Err(rustix::io::Errno::INTR) => continue,
                        Err(e) => return Err(e.into()),
                    }
                };
                // SAFETY: `pread` initialised the first `n` bytes of the
                // spare capacity.
                unsafe { buf.set_len(start + n) };
                Ok(buf)
            }
        }
    }

    /// Closes the descriptor (IORING_OP_CLOSE, or `close(2)`).
    ///
    /// # Errors
    ///
    /// The close error (on NFS, a delayed write error).
    pub async fn close(self) -> io::Result<()> {
        match self.inner {
            Inner::Uring(f) => f.close().await,
            Inner::Blocking(fd) => {
                // SAFETY: `into_raw_fd` gives up ownership; the descriptor
                // is closed exactly once, here, and its error checked.
                let raw = fd.into_raw_fd();
                match unsafe { libc_close(raw) } {
                    0 => Ok(()),
                    _ => Err(io::Error::last_os_error()),
                }
            }
        }
    }
}

unsafe extern "C" {
    #[link_name = "close"]
    fn libc_close(fd: i32) -> i32;
}

/// Opens the regular file `name` for reading, resolved beneath `dir` with
/// no symlinks (`openat2(2)` with `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
/// RESOLVE_NO_MAGICLINKS`; on io_uring as `IORING_OP_OPENAT2`):
/// `O_RDONLY|O_NOFOLLOW|O_NOCTTY|O_NONBLOCK`, plus `O_NOATIME` where
/// permitted (owner or `CAP_FOWNER`, `open(2)`) so a backup leaves atimes
/// alone. `O_NONBLOCK` keeps a name swapped for a FIFO since the walk from
/// blocking the run.
///
/// # Errors
///
/// The open error: `EACCES`, `ELOOP` (a symlink), `ENOENT`.
pub async fn open_read(dir: &Dir, name: &Name) -> io::Result<OwnedFd> {
    match backend() {
        Backend::IoUring => uring::open_read(dir, name).await,
        Backend::Fallback => uring::open_read_blocking(dir, name),
    }
}

/// Runs `f` to completion on the chosen backend: a single-threaded compio
/// runtime (one io_uring), or, on the fallback, on this thread (its
/// operations block and complete before they return, so `f` is ready at
/// the first poll; it is polled again should it not be).
///
/// # Errors
///
/// [`choice`]'s errors; `io::Error` (as [`Error::Io`]) when the ring
/// cannot be created; `f`'s own output otherwise.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    match choice()?.backend {
        Backend::IoUring => {
            let rt = compio::runtime::Runtime::new()
                .map_err(|e| Error::io("start io_uring runtime", "io_uring", e))?;
            Ok(rt.block_on(f))
        }
        Backend::Fallback => {
            let mut f = std::pin::pin!(f);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            loop {
                if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                    return Ok(v);
                }
                std::thread::yield_now();
            }
        }
    }
}
