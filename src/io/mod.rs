//! File data through io_uring (compio): the runtime ([`block_on`]), the
//! file type whose reads are submitted to it ([`DataFile`]), and the
//! custom operation compio does not ship ([`open_read`]).
//! Backup reads source files this way; everything else (the repository's
//! local backend, restore's writes) uses synchronous `crate::fs` calls. A
//! second I/O backend (for hosts without io_uring) goes beside this one.
//!
//! Side effects: each [`block_on`] creates an io_uring instance; the
//! operations do what they say.

#![allow(unsafe_code)]

mod uring;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

pub use uring::open_read;

/// A file whose data moves through io_uring (compio): reads, writes and
/// `fsync` are submitted to the ring of the current compio runtime.
///
/// Built from a descriptor opened with `O_NOFOLLOW` (by [`open_read`] or
/// `crate::fs`).
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

    /// Reads up to `len` bytes at `offset` (IORING_OP_READ), appended to
    /// `buf` after its current length, so a caller can recycle buffers
    /// (no fresh pages to fault in for every read). Fewer bytes than `len`
    /// appended means end of file or a short read (the caller reads again
    /// at the new offset).
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
        use compio::buf::{IntoInner, IoBuf};
        use compio::io::AsyncReadAt;
        let start = buf.len();
        buf.reserve(len);
        let compio::BufResult(res, slice) = self
            .file
            .read_at(buf.slice(start..start + len), offset)
            .await;
        res?;
        Ok(slice.into_inner())
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
