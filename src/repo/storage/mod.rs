//! The storage seam: where a repository's bytes live.
//!
//! The repository format (`crate::repo`) talks to one trait, [`Backend`],
//! keyed by [`FileKind`] and id: list, read whole, read a range,
//! create-only put (saying whether the file already existed), remove, a
//! durability barrier, and the repository lock. Two implementations:
//! [`local::LocalBackend`] (a directory, through dirfds; every promise of
//! the commit protocol in `docs/FORMAT.md`) and [`memory::MemoryBackend`]
//! (for unit tests). Both pass the conformance suite in `conformance`
//! (tests only), which any further backend must pass too.
//!
//! A backend stores bytes; it does not order them. The order of puts and
//! barriers that makes a snapshot crash-safe is `crate::repo::commit`'s.
//! Side effects: those of the implementation (see each).

pub mod dry;
pub mod local;
pub mod location;
pub mod memory;
pub mod remote;

#[cfg(test)]
pub(crate) mod conformance;

use std::any::Any;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
pub use crate::repo::layout::FileKind;

/// What a create-only put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The file was created; this many bytes were added.
    Created(u64),
    /// A file of that kind and id already existed and was left as it was
    /// (content-addressed names make that "already stored"); nothing was
    /// added.
    Existed,
}

impl Put {
    /// Bytes added: the file's length when created, else 0.
    pub fn added(self) -> u64 {
        match self {
            Put::Created(n) => n,
            Put::Existed => 0,
        }
    }
}

/// Sync accounting for one run: whether syncs are made, how many were
/// made, how long they took. A backend counts each `fsync`/`syncfs` (or
/// its equivalent) it makes here.
#[derive(Debug, Clone, Copy, Default)]
pub struct Syncs {
    /// Syncs are made (policy `require_backup_durability`).
    pub enabled: bool,
    /// Syncs made.
    pub count: u64,
    /// Time spent in them.
    pub elapsed: Duration,
}

impl Syncs {
    /// Accounting with syncs on.
    pub fn on() -> Syncs {
        Syncs {
            enabled: true,
            ..Syncs::default()
        }
    }

    /// Runs the sync `f` when syncs are enabled, counting it and its time.
    ///
    /// # Errors
    ///
    /// `f`'s error.
    pub fn run(&mut self, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        if self.enabled {
            let t = Instant::now();
            f()?;
            self.count += 1;
            self.elapsed += t.elapsed();
        }
        Ok(())
    }
}

/// A stored file open for reads at any offset (a pack, an entries file).
pub trait Ranged: Send + Sync {
    /// Reads into `buf` from `offset` until `buf` is full or the file
    /// ends; returns the bytes read (fewer than `buf.len()` only at the
    /// end).
    ///
    /// # Errors
    ///
    /// The read error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// The file's length in bytes.
    ///
    /// # Errors
    ///
    /// The stat error.
    fn size(&self) -> io::Result<u64>;

    /// Reads up to `len` bytes at `offset` into a new buffer (shorter
    /// only at the end of the file). An implementation may read into
    /// uninitialised memory; this default zero-fills first.
    ///
    /// # Errors
    ///
    /// The read error.
    fn read_vec(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let n = self.read_at(&mut buf, offset)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Reads exactly `len` bytes at `offset`.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` when the file ends first; read errors.
    fn read_exact_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let buf = self.read_vec(offset, len)?;
        let n = buf.len();
        if n < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{len} bytes at offset {offset} asked, the file ends after {n}"),
            ));
        }
        Ok(buf)
    }
}

/// A file being written, not yet under its name (see [`Backend::stage`]).
/// Dropped without [`Backend::put_staged`] or [`Staged::discard`], it is
/// left to the next [`Backend::clean_staging`] (prune, `check --repair-tmp`).
pub trait Staged: Send {
    /// Appends the bytes of `parts` in order (one vectored write where the
    /// backend can).
    ///
    /// # Errors
    ///
    /// The write error (`ENOSPC` for a full disk). The staged file is then
    /// removed at once, to give the space back.
    fn append(&mut self, parts: &[&[u8]]) -> io::Result<()>;

    /// Bytes appended so far.
    fn len(&self) -> u64;

    /// Whether nothing was appended.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts writing out what was appended, without waiting (the batched
    /// barrier that follows then has little left); a hint.
    ///
    /// # Errors
    ///
    /// The error of starting write-out.
    fn start_writeback(&mut self) -> io::Result<()>;

    /// Removes the staged file, warning on stderr when it cannot.
    fn discard(self: Box<Self>);

    /// The implementation's own type, for the backend that made it.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// A held repository lock; released when dropped.
pub struct Lock {
    _guard: Box<dyn Send + Sync>,
    /// Attempts made, the successful one included.
    pub attempts: u32,
    /// Time spent waiting, in milliseconds.
    pub waited_ms: u64,
    /// Exclusive (writer) or shared (reader).
    pub exclusive: bool,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("attempts", &self.attempts)
            .field("waited_ms", &self.waited_ms)
            .field("exclusive", &self.exclusive)
            .finish()
    }
}

/// Where a repository's files live. Keyed by [`FileKind`] and id; ids
/// are checked with [`crate::repo::layout::check_id`] before they name
/// anything (`InvalidInput` otherwise). Files are immutable once put.
///
/// Errors are `std::io::Error`s: `NotFound` for a missing file,
/// `InvalidData` for a file the format does not allow (not a regular
/// file, over the bound a read gives); the repository adds the path.
pub trait Backend: Send + Sync + fmt::Debug {
    /// The location, for messages (a directory path, `memory:`).
    fn location(&self) -> String;

    /// Where `kind`/`id` lives, for messages: the location and
    /// [`crate::repo::layout::path`].
    fn path(&self, kind: FileKind, id: &str) -> String {
        format!(
            "{}/{}",
            self.location(),
            crate::repo::layout::path(kind, id)
        )
    }

    /// Makes the location ready for a new repository: its directories and
    /// lock. With `fresh`, a location that holds anything is refused:
    /// returns `Some(name)` of something it holds, and creates nothing.
    ///
    /// # Errors
    ///
    /// Create errors.
    fn prepare(&self, fresh: bool) -> io::Result<Option<String>>;

    /// The names of the files of `kind`, relative to the kind's directory
    /// (`ab/<id>.pack` for a kind that fans out), every name there, in no
    /// order; [`crate::repo::layout::id_of`] maps them to ids.
    ///
    /// # Errors
    ///
    /// List errors (a fan-out name that is not a directory included).
    fn list(&self, kind: FileKind) -> io::Result<Vec<String>>;

    /// Whether the file exists.
    ///
    /// # Errors
    ///
    /// Stat errors.
    fn exists(&self, kind: FileKind, id: &str) -> io::Result<bool>;

    /// The whole file, refused (`InvalidData`) when longer than `max`.
    ///
    /// # Errors
    ///
    /// `NotFound`, `InvalidData`, read errors.
    fn read(&self, kind: FileKind, id: &str, max: u64) -> io::Result<Vec<u8>>;

    /// The file, open for reads of any range.
    ///
    /// # Errors
    ///
    /// `NotFound`, `InvalidData`, open errors.
    fn open(&self, kind: FileKind, id: &str) -> io::Result<Box<dyn Ranged>>;

    /// `len` bytes of the file at `offset`.
    ///
    /// # Errors
    ///
    /// As [`Backend::open`] and [`Ranged::read_exact_at`].
    fn read_range(&self, kind: FileKind, id: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.open(kind, id)?.read_exact_at(offset, len)
    }

    /// Whether [`Backend::read_ahead`] does anything: a backend that reads
    /// over a network fetches announced ranges before they are read.
    fn reads_ahead(&self) -> bool {
        false
    }

    /// Announces that bytes `start..end` of file `kind`/`id` are read
    /// soon: a backend that [reads ahead](Backend::reads_ahead) starts
    /// fetching them and returns. Best effort: an error is left to the
    /// read that needs the bytes.
    fn read_ahead(&self, _kind: FileKind, _id: &str, _start: u64, _end: u64) {}

    /// A new file of `kind` to write a piece at a time; it gets its name
    /// from [`Backend::put_staged`].
    ///
    /// # Errors
    ///
    /// Create errors.
    fn stage(&self, kind: FileKind) -> io::Result<Box<dyn Staged>>;

    /// Whether this backend writes nothing ([`dry::DryRun`]).
    fn is_dry_run(&self) -> bool {
        false
    }

    /// Whether [`Backend::put_staged`] needs no barrier before it: the
    /// backend makes a file durable under its name by itself (a remote
    /// server acknowledges a whole object), so the pack writer puts each
    /// pack as soon as it is staged instead of in batches after a
    /// barrier. The barrier after the last put still comes before the
    /// index.
    fn puts_need_no_barrier(&self) -> bool {
        false
    }

    /// Puts `staged` in place as `kind`/`id`, create-only: when a file of
    /// that name exists it is left as it was, the staged one removed, and
    /// [`Put::Existed`] returned. With `sync_data` (and `syncs` enabled)
    /// the bytes are made durable first; either way the name never points
    /// at bytes that a later [`Backend::barrier`] would not cover. The
    /// new name is durable after [`Backend::sync_names`] or a barrier. On
    /// an error the staged file is removed.
    ///
    /// # Errors
    ///
    /// Sync and rename errors; `InvalidInput` for a staged file another
    /// backend made.
    fn put_staged(
        &self,
        staged: Box<dyn Staged>,
        kind: FileKind,
        id: &str,
        sync_data: bool,
        syncs: &mut Syncs,
    ) -> io::Result<Put>;

    /// Makes the name of `kind`/`id` (and a fan-out directory
    /// [`Backend::put_staged`] created for it) durable, when `syncs` is
    /// enabled.
    ///
    /// # Errors
    ///
    /// The sync error.
    fn sync_names(&self, kind: FileKind, id: &str, syncs: &mut Syncs) -> io::Result<()>;

    /// Writes `bytes` as `kind`/`id`, create-only and durable (when
    /// `syncs` is enabled): nothing is written when the file exists.
    ///
    /// # Errors
    ///
    /// As [`Backend::stage`], [`Staged::append`], [`Backend::put_staged`]
    /// and [`Backend::sync_names`].
    fn put(&self, kind: FileKind, id: &str, bytes: &[u8], syncs: &mut Syncs) -> io::Result<Put> {
        if self.exists(kind, id)? {
            return Ok(Put::Existed);
        }
        let mut s = self.stage(kind)?;
        s.append(&[bytes])?;
        let put = self.put_staged(s, kind, id, true, syncs)?;
        if put != Put::Existed {
            self.sync_names(kind, id, syncs)?;
        }
        Ok(put)
    }

    /// Replaces `config.json` with `bytes` atomically (`snap migrate`):
    /// the new file is written and made durable beside the old one, then
    /// renamed over it, and the rename made durable (when `syncs` is
    /// enabled). A crash leaves the old file or the new one, never neither
    /// or a mix.
    ///
    /// # Errors
    ///
    /// Write, sync and rename errors (the new file is removed).
    fn replace_config(&self, bytes: &[u8], syncs: &mut Syncs) -> io::Result<()>;

    /// Removes the file.
    ///
    /// # Errors
    ///
    /// `NotFound`; remove errors.
    fn remove(&self, kind: FileKind, id: &str) -> io::Result<()>;

    /// The durability barrier (when `syncs` is enabled): every file and
    /// name put so far, by this process or any other, is durable when it
    /// returns.
    ///
    /// # Errors
    ///
    /// The sync error (one of any file's, for a local filesystem).
    fn barrier(&self, syncs: &mut Syncs) -> io::Result<()>;

    /// Takes the lock at once if it is free: exclusive for writers, shared
    /// for readers. `None` when another holder has it. An exclusive holder
    /// leaves a note (see [`Backend::lock_note`]).
    ///
    /// # Errors
    ///
    /// Lock errors.
    fn try_lock(&self, exclusive: bool) -> io::Result<Option<Box<dyn Send + Sync>>>;

    /// What the exclusive holder noted (`pid=… host=… started=…`), for a
    /// message; its read error as text.
    fn lock_note(&self) -> String;

    /// The lock, for messages.
    fn lock_path(&self) -> String {
        format!("{}/{}", self.location(), crate::repo::layout::LOCK)
    }

    /// Whether the backend keeps a local cache of entries blobs
    /// ([`Backend::cached_blob`]); remote backends do.
    fn caches_blobs(&self) -> bool {
        false
    }

    /// The stored bytes of blob `id` (hex) from the local cache, if kept
    /// there. The caller verifies them (a blob's id is over its plaintext,
    /// which only the repository can open) and calls
    /// [`Backend::forget_blob`] when they do not verify.
    fn cached_blob(&self, _id: &str) -> Option<Vec<u8>> {
        None
    }

    /// Keeps the stored bytes of blob `id`, verified by the caller, in the
    /// local cache; a failure only costs a later download.
    fn keep_blob(&self, _id: &str, _stored: &[u8]) {}

    /// Removes blob `id` from the local cache, if kept there.
    fn forget_blob(&self, _id: &str) {}

    /// Names of files being written or left by a crashed run.
    ///
    /// # Errors
    ///
    /// List errors.
    fn staging(&self) -> io::Result<Vec<String>>;

    /// Removes what [`Backend::staging`] lists; returns how many. Call
    /// with the exclusive lock held.
    ///
    /// # Errors
    ///
    /// The first removal error, with the name in the message.
    fn clean_staging(&self) -> io::Result<u64>;
}

/// Takes `backend`'s lock, retrying with exponential backoff (10 ms
/// doubling to 500 ms, ±50 % jitter) for at most `wait_ms`, stopping at a
/// signal.
///
/// # Errors
///
/// [`Error::Locked`] on time-out, with the holder's note;
/// [`Error::Interrupted`]; lock errors.
pub fn lock(backend: &dyn Backend, exclusive: bool, wait_ms: u64) -> Result<Lock> {
    let lock_path = backend.lock_path();
    let start = Instant::now();
    let mut attempts = 0u32;
    let mut backoff_ms = 10u64;
    let guard = loop {
        attempts += 1;
        let got = backend
            .try_lock(exclusive)
            .map_err(|e| Error::io("flock", &lock_path, e))?;
        if let Some(g) = got {
            break g;
        }
        crate::interrupt::check()?;
        let waited = start.elapsed().as_millis() as u64;
        if waited >= wait_ms {
            return Err(Error::Locked {
                path: lock_path,
                holder: backend.lock_note(),
                attempts,
                waited_ms: waited,
            });
        }
        let mut r = [0u8; 2];
        crate::sys::random_bytes(&mut r).map_err(|e| Error::io("getrandom", "-", e))?;
        let jitter = u64::from(u16::from_le_bytes(r)) % (backoff_ms + 1);
        let sleep = (backoff_ms / 2 + jitter).min(wait_ms - waited);
        std::thread::sleep(Duration::from_millis(sleep.max(1)));
        backoff_ms = (backoff_ms * 2).min(500);
    };
    Ok(Lock {
        _guard: guard,
        attempts,
        waited_ms: start.elapsed().as_millis() as u64,
        exclusive,
    })
}

/// The staged file `staged` as the implementation's own type `T`, for
/// [`Backend::put_staged`].
///
/// # Errors
///
/// `InvalidInput` for a staged file another backend made.
pub(crate) fn own<T: Any + Send>(staged: Box<dyn Staged>) -> io::Result<Box<T>> {
    staged.into_any().downcast::<T>().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a staged file of another backend",
        )
    })
}

/// `InvalidInput` unless `id` can name a file of `kind`.
///
/// # Errors
///
/// As above.
pub(crate) fn valid(kind: FileKind, id: &str) -> io::Result<()> {
    crate::repo::layout::check_id(kind, id)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// `InvalidData` for a file of `len` bytes over `max`.
pub(crate) fn too_large(len: u64, max: u64) -> io::Error {
    crate::fs::too_large(len, max)
}
