//! The on-disk repository, format version 1 (see `docs/FORMAT.md`).
//!
//! ```text
//! <repo>/config.json  lock  packs/<2 hex>/<id>.pack  index/<id>.idx
//!        entries/<2 hex>/<id>.jsonl  snapshots/<id>.json  tmp/
//! ```
//!
//! Side effects: creates and reads repository files through the dirfd
//! layer ([`crate::fs`]); every file it creates is `0600`, every directory
//! `0700`. Immutable files are written to `tmp/`, synced, and renamed into
//! place with `RENAME_NOREPLACE` (content-addressed names make a collision
//! mean "already stored").

pub mod check;
pub mod pack;
pub mod sidecar;
pub mod tree;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fs::{fd, DataFile, Dir, Name, RelPath};
use crate::policy::{Policy, PreservationTier};
use sidecar::EntryRecord;

/// The `format` value of `config.json`.
pub const FORMAT_NAME: &str = "snap";
/// The repository format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;
/// Target size of a pack's blob data, in bytes.
pub const PACK_TARGET: usize = 16 * 1024 * 1024;

/// Content-defined chunking parameters (FastCDC 2020), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChunkerParams {
    /// Always `"fastcdc-2020"`.
    pub algorithm: ChunkerAlgorithm,
    /// Minimum chunk size.
    pub min: u32,
    /// Average (target) chunk size.
    pub avg: u32,
    /// Maximum chunk size.
    pub max: u32,
}

/// The chunking algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ChunkerAlgorithm {
    /// FastCDC as in Xia et al. 2020, `fastcdc::v2020`.
    #[serde(rename = "fastcdc-2020")]
    FastCdc2020,
}

/// `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Config {
    /// Always `"snap"`.
    pub format: String,
    /// Format version, 1.
    pub version: u32,
    /// Random repository id, 32 hex digits.
    pub id: String,
    /// Blob and file hash: `"blake3"` (BLAKE3-256).
    pub hash: String,
    /// Chunker parameters; fixed for the life of the repository so that
    /// chunks deduplicate across snapshots.
    pub chunker: ChunkerParams,
}

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Pack id.
    pub pack: blake3::Hash,
    /// Byte offset in the pack.
    pub offset: u64,
    /// Length in bytes.
    pub length: u32,
}

/// Every blob of a repository and where it lives, as loaded from its
/// index files by [`Repo::load_index`].
///
/// Memory: 48 bytes per blob slot (the 32-byte id and a 16-byte location
/// naming its pack by number) plus 32 bytes per pack; a map keyed by id
/// with a [`BlobLocation`] value would take 80 per slot.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<blake3::Hash>,
    blobs: IdMap<Slot>,
}

/// Where a blob lives, its pack named by number in [`Index::packs`].
#[derive(Debug, Clone, Copy)]
struct Slot {
    pack: u32,
    length: u32,
    offset: u64,
}

impl Index {
    /// Where blob `id` lives.
    pub fn get(&self, id: &blake3::Hash) -> Option<BlobLocation> {
        self.blobs.get(id).map(|s| BlobLocation {
            pack: self.packs[s.pack as usize],
            offset: s.offset,
            length: s.length,
        })
    }

    /// Whether blob `id` is stored.
    pub fn contains(&self, id: &blake3::Hash) -> bool {
        self.blobs.contains_key(id)
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether no blob is stored.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}

/// One index file (`index/<id>.idx`): which blobs each pack holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct IndexFile {
    /// Index format version, 1.
    pub v: u32,
    /// Packs written by one backup.
    pub packs: Vec<IndexPack>,
}

/// One pack in an [`IndexFile`].
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IndexPack {
    /// Pack id (BLAKE3-256 hex of the pack file).
    pub id: String,
    /// The pack's blobs.
    pub blobs: Vec<IndexBlob>,
}

/// One blob in an [`IndexPack`].
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IndexBlob {
    /// Blob id (BLAKE3-256 hex of the blob bytes).
    pub id: String,
    /// Byte offset in the pack.
    pub offset: u64,
    /// Length in bytes.
    pub length: u32,
}

/// Reference from a snapshot to its entries file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EntriesRef {
    /// Entries file id (BLAKE3-256 hex of the file).
    pub id: String,
    /// Number of records in it.
    pub count: u64,
}

/// Counts kept in a snapshot record and in `backup.summary`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotStats {
    /// Regular files stored (hard link leaders included).
    pub files: u64,
    /// Directories stored (the root included).
    pub dirs: u64,
    /// Symlinks stored.
    pub symlinks: u64,
    /// Extra names of hard-linked files.
    pub hardlinks: u64,
    /// FIFOs, devices and sockets stored.
    pub special: u64,
    /// Entries left out: excluded by pattern, not kept by the tier, or
    /// unreadable.
    pub skipped: u64,
    /// Entries that could not be read (a subset of `skipped`).
    pub unreadable: u64,
    /// Content bytes of all stored files.
    pub bytes: u64,
    /// Regular files whose content was taken from the parent snapshot
    /// without reading them: same size, mtime, ctime, inode and device, and
    /// a ctime at least 1 s older than the parent's start (so a change
    /// made while the parent ran cannot hide behind an unchanged stat).
    #[serde(default)]
    pub files_unchanged: u64,
    /// Directories whose non-directory entries were copied from the
    /// parent snapshot's records as they were, without a file being
    /// opened: the same children key (the names and stat fields of every
    /// non-directory entry), all of them older than the parent's start
    /// minus 1 s, and none with more than one link. Not done at tier full,
    /// which reads every file's xattrs and inode flags again.
    #[serde(default)]
    pub dirs_unchanged: u64,
    /// Blob bytes not already in the repository.
    pub new_blob_bytes: u64,
    /// Blobs not already in the repository.
    pub new_blobs: u64,
    /// Packs written.
    pub packs: u64,
    /// Bytes this backup added to the repository in packs, index and
    /// entries files. The snapshot record (about 1 KiB) holds this count and
    /// so is not part of it.
    pub bytes_added: u64,
    /// Wall time of the backup, in milliseconds.
    pub duration_ms: u64,
}

/// `snapshots/<id>.json`: the commit record. Its id is the BLAKE3-256 of
/// the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotRecord {
    /// Record version, 1.
    pub v: u32,
    /// Start of the backup, RFC 3339 UTC with nanoseconds.
    pub time: String,
    /// Host name (`uname -n`).
    pub host: String,
    /// Absolute path of the source, UTF-8 text.
    pub source: String,
    /// Base64 of the raw source path when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_b64: Option<String>,
    /// Preservation tier used.
    pub tier: PreservationTier,
    /// User tags.
    pub tags: Vec<String>,
    /// The policy in force.
    pub policy: Policy,
    /// The previous snapshot of the same host and source, if any.
    pub parent: Option<String>,
    /// The entries file.
    pub entries: EntriesRef,
    /// Counts and sizes.
    pub stats: SnapshotStats,
    /// True when every file and directory of this snapshot was synced
    /// before this record was committed.
    pub durable: bool,
}

/// Sync accounting for one run: whether syncs are on, how many were made,
/// how long they took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Syncs {
    /// Syncs are made (policy `require_backup_durability`).
    pub enabled: bool,
    /// `fsync` calls made.
    pub count: u64,
    /// Time spent in them.
    pub elapsed: Duration,
}

impl Syncs {
    /// `fsync` of a file through io_uring when enabled.
    ///
    /// # Errors
    ///
    /// The fsync error, with `path`.
    pub async fn file(&mut self, f: &DataFile, path: impl std::fmt::Display) -> Result<()> {
        if self.enabled {
            let t = Instant::now();
            f.sync_all()
                .await
                .map_err(|e| Error::io("fsync", path, e))?;
            self.count += 1;
            self.elapsed += t.elapsed();
        }
        Ok(())
    }

    /// One `syncfs(2)` of the filesystem holding `d`, when enabled: every
    /// dirty file, inode and directory on it reaches the disk, with one
    /// cache flush instead of one per `fsync`. Since Linux 5.8 it reports
    /// writeback errors of any file on the filesystem.
    ///
    /// # Errors
    ///
    /// The syncfs error, with `path`.
    pub fn filesystem(&mut self, d: &Dir, path: impl std::fmt::Display) -> Result<()> {
        if self.enabled {
            let t = Instant::now();
            d.syncfs().map_err(|e| Error::io("syncfs", path, e))?;
            self.count += 1;
            self.elapsed += t.elapsed();
        }
        Ok(())
    }

    /// `fsync` of a directory that gained a name, when enabled.
    ///
    /// # Errors
    ///
    /// The fsync error, with `path`.
    pub fn dir(&mut self, d: &Dir, path: impl std::fmt::Display) -> Result<()> {
        if self.enabled {
            let t = Instant::now();
            crate::fs::fsync_parent_dir(d).map_err(|e| Error::io("fsync directory", path, e))?;
            self.count += 1;
            self.elapsed += t.elapsed();
        }
        Ok(())
    }
}

/// A held repository lock; released when dropped (the descriptor closes).
#[derive(Debug)]
pub struct RepoLock {
    _fd: std::os::fd::OwnedFd,
    /// `flock` attempts made, the successful one included.
    pub attempts: u32,
    /// Time spent waiting, in milliseconds.
    pub waited_ms: u64,
    /// Exclusive (writer) or shared (reader).
    pub exclusive: bool,
}

/// An open repository.
#[derive(Debug)]
pub struct Repo {
    /// The location as given.
    pub path: PathBuf,
    root: Dir,
    /// Its `config.json`.
    pub config: Config,
    /// Damaged snapshot records met so far: (path, what is wrong).
    damaged: std::sync::Mutex<Vec<(String, String)>>,
}

fn name(s: &str) -> Name {
    // Internal constant names are always valid components.
    Name::new(s.as_bytes()).expect("constant repository name")
}

/// Most bytes a `config.json` may hold.
pub const CONFIG_MAX: u64 = 64 << 10;
/// Most bytes a snapshot record may hold.
pub const RECORD_MAX: u64 = 16 << 20;
/// Most bytes an index file may hold; a backup whose index would be
/// larger writes several ([`INDEX_BLOBS_PER_FILE`]).
pub const INDEX_MAX: u64 = 1 << 30;
/// Blobs a backup lists in one index file (a row is under 150 bytes, so
/// a file stays well below [`INDEX_MAX`]).
pub const INDEX_BLOBS_PER_FILE: usize = 4 << 20;
/// Most bytes one record (line) of an entries file may hold: a file of
/// 16 TiB at the average chunk size lists about 16 million chunk ids of
/// 67 bytes each.
pub const ENTRIES_LINE_MAX: usize = 1 << 30;
/// Most bytes of a lock holder's note read for a message.
pub const LOCK_NOTE_MAX: u64 = 4096;

/// The config file's name.
const CONFIG: &str = "config.json";

const SUBDIRS: [&str; 5] = ["packs", "index", "entries", "snapshots", "tmp"];

/// The repository location when neither `--repo` nor `SNAP_REPO` is given:
/// `$XDG_DATA_HOME/snap`, else `$HOME/.local/share/snap` (XDG Base
/// Directory Specification).
///
/// # Errors
///
/// [`Error::Usage`] when neither variable is set.
pub fn default_location() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("snap"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/snap")),
        None => Err(Error::Usage(
            "no repository given: set --repo, SNAP_REPO, XDG_DATA_HOME or HOME".into(),
        )),
    }
}

/// Random hex string of `bytes` random bytes.
///
/// # Errors
///
/// The `getrandom(2)` error.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    crate::fs::random_bytes(&mut b).map_err(|e| Error::io("getrandom", "-", e))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// [`Error::Integrity`] unless `bytes` hash (BLAKE3-256) to the hex `id`.
/// Parses the records of `part`, a run of whole lines of the entries file
/// shown as `path` whose first line is number `first_line` (from 1).
///
/// # Errors
///
/// [`Error::Integrity`] naming `path:line` for a malformed record.
pub fn parse_lines(path: &str, part: &[u8], first_line: usize) -> Result<Vec<EntryRecord>> {
    lines(part)
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, line)| {
            EntryRecord::from_line(line).map_err(|detail| Error::Integrity {
                path: format!("{path}:{}", first_line + i),
                detail,
            })
        })
        .collect()
}

/// The lines of `part` without their `\n` (a last line may lack one),
/// found with memchr.
pub fn lines(part: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = part;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(nl) => (&rest[..nl], &rest[nl + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        Some(line)
    })
}

/// An entries file read a piece at a time (restore streams its snapshot's
/// this way, so its memory does not grow with the number of entries).
/// Every byte goes into a running BLAKE3; the last piece is handed out
/// only once the whole file matched its id.
pub struct EntriesReader {
    /// Bytes read at once.
    piece: usize,
    path: String,
    id: String,
    fd: std::os::fd::OwnedFd,
    hasher: blake3::Hasher,
    at: u64,
    /// A line begun in the last read, not yet ended.
    carry: Vec<u8>,
    /// Number (from 1) of the next piece's first line.
    next_line: usize,
    done: bool,
}

impl EntriesReader {
    /// The file's path, for messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The next piece: whole lines of about the piece size the reader was
    /// opened with (more when one line is longer), and the number (from 1)
    /// of its first line; `None` after the last.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for a read error, or at the end when the bytes
    /// read do not match the file's id.
    pub fn next_piece(&mut self) -> Result<Option<(Vec<u8>, usize)>> {
        if self.done {
            return Ok(None);
        }
        let mut buf = std::mem::take(&mut self.carry);
        loop {
            let old = buf.len();
            buf.resize(old + self.piece, 0);
            let n = crate::fs::read_at(&self.fd, &mut buf[old..], self.at).map_err(|e| {
                Error::Integrity {
                    path: self.path.clone(),
                    detail: format!("cannot read entries file: {e}"),
                }
            })?;
            buf.truncate(old + n);
            self.hasher.update(&buf[old..]);
            self.at += n as u64;
            if n == 0 {
                self.done = true;
                check_hash(
                    &self.hasher.finalize(),
                    &self.id,
                    &self.path,
                    "entries file",
                )?;
                if buf.is_empty() {
                    return Ok(None);
                }
                break;
            }
            if let Some(end) = memchr::memrchr(b'\n', &buf[old..]) {
                self.carry = buf.split_off(old + end + 1);
                break;
            }
            if buf.len() > ENTRIES_LINE_MAX {
                return Err(Error::Integrity {
                    path: self.path.clone(),
                    detail: format!(
                        "a line longer than {ENTRIES_LINE_MAX} bytes, more than a record may hold"
                    ),
                });
            }
        }
        let first = self.next_line;
        self.next_line += memchr::memchr_iter(b'\n', &buf).count();
        Ok(Some((buf, first)))
    }
}

/// What a committed snapshot's error says is true: `"snapshot <12 hex>
/// was committed"` (see [`Error::AfterCommit`]).
pub fn committed(id: &str) -> String {
    format!("snapshot {} was committed", &id[..12.min(id.len())])
}

/// Reads, checks (against `id`) and parses the snapshot record `n`.
///
/// # Errors
///
/// [`Error::Integrity`] for a record that is not a regular file, too
/// large, altered, malformed or of an unknown version; I/O errors.
pub(crate) fn read_record(dir: &Dir, n: &Name, id: &str, path: &str) -> Result<SnapshotRecord> {
    let bytes = dir
        .read_all(n, RECORD_MAX)
        .map_err(|e| read_error(path, e))?;
    check_id(&bytes, id, path, "snapshot record")?;
    let rec: SnapshotRecord = serde_json::from_slice(&bytes).map_err(|e| Error::Integrity {
        path: path.to_owned(),
        detail: format!("malformed snapshot record: {e}"),
    })?;
    if rec.v != 1 {
        return Err(Error::Integrity {
            path: path.to_owned(),
            detail: format!("snapshot record version {} is not supported", rec.v),
        });
    }
    Ok(rec)
}

/// A repository file that could not be read: [`Error::Integrity`] when it
/// is not what the format allows (not a regular file, too large), else
/// the I/O error.
fn read_error(path: &str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidData {
        Error::Integrity {
            path: path.to_owned(),
            detail: e.to_string(),
        }
    } else {
        Error::io("read", path, e)
    }
}

fn check_id(bytes: &[u8], id: &str, path: &str, what: &str) -> Result<()> {
    check_hash(&blake3::hash(bytes), id, path, what)
}

/// `Ok` when `hash` is `id` (hex), else [`Error::Integrity`] saying that
/// `what` at `path` does not match its id.
fn check_hash(hash: &blake3::Hash, id: &str, path: &str, what: &str) -> Result<()> {
    if hash.to_hex().as_str() == id {
        Ok(())
    } else {
        Err(Error::Integrity {
            path: path.to_owned(),
            detail: format!("{what} does not match its BLAKE3 id"),
        })
    }
}

/// A file being written in the repository's `tmp/` (see
/// [`Repo::create_tmp`]).
pub struct TmpFile {
    dir: Dir,
    name: Name,
    path: String,
    file: DataFile,
    len: u64,
}

impl TmpFile {
    /// Appends `buf` (through io_uring) and hands it back.
    ///
    /// # Errors
    ///
    /// The write error with the path; `ENOSPC` maps to `E_NO_SPACE`. The
    /// file is then removed at once, to give the space back.
    pub async fn write(&mut self, buf: Vec<u8>) -> Result<Vec<u8>> {
        let n = buf.len() as u64;
        let res = self.file.write_all_at(buf, self.len).await;
        self.appended(n, res)
    }

    /// Appends the bytes of `parts` with vectored writes (see
    /// [`DataFile::write_parts_at`]) and hands them back.
    ///
    /// # Errors
    ///
    /// As [`TmpFile::write`]; the file is removed on failure.
    pub async fn write_parts<P: AsRef<[u8]> + 'static>(&mut self, parts: Vec<P>) -> Result<Vec<P>> {
        let n: u64 = parts.iter().map(|p| p.as_ref().len() as u64).sum();
        let res = self.file.write_parts_at(parts, self.len).await;
        self.appended(n, res)
    }

    /// Counts `n` bytes appended, or removes the file after a failed
    /// write (to give the space back) and returns the error with the path.
    fn appended<T>(&mut self, n: u64, res: std::io::Result<T>) -> Result<T> {
        match res {
            Ok(t) => {
                self.len += n;
                Ok(t)
            }
            Err(e) => {
                if let Err(u) = self.dir.unlink(&self.name) {
                    eprintln!("snap: warning: could not remove {}: {u}", self.path);
                }
                Err(Error::io("write", &self.path, e))
            }
        }
    }
}

impl TmpFile {
    /// Closes and removes the file (after a failure elsewhere), warning on
    /// stderr when it cannot be removed (the next writer's `tmp/` cleanup
    /// will).
    pub async fn discard(self) {
        let _ = self.file.close().await;
        if let Err(u) = self.dir.unlink(&self.name) {
            eprintln!("snap: warning: could not remove {}: {u}", self.path);
        }
    }

    /// Starts write-out of what was written so far, without waiting (see
    /// [`DataFile::start_writeback`]): the packer does so for each pack, so
    /// the `syncfs` that makes a batch of packs durable has little left.
    ///
    /// # Errors
    ///
    /// The error with the path.
    pub async fn start_writeback(&self) -> Result<()> {
        self.file
            .start_writeback()
            .await
            .map_err(|e| Error::io("sync_file_range", &self.path, e))
    }
}

/// A hasher for maps keyed by BLAKE3 ids: the id is already uniformly
/// random, so its first 8 bytes are the hash (SipHash would cost more than
/// the lookup it serves).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // A `[u8; 32]` is hashed as its length, then its bytes.
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }

    fn write_usize(&mut self, _len: usize) {}
}

/// A map keyed by BLAKE3 ids.
pub type IdMap<V> = HashMap<blake3::Hash, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Splits `bytes` into at most `n` parts of about equal size, each ending
/// at a line end (or the end): (part, its first line's number from 1).
/// Parts of under 1 MiB are not worth a thread and stay whole.
pub fn split_lines(bytes: &[u8], n: usize) -> Vec<(&[u8], usize)> {
    let n = n.clamp(1, bytes.len() / (1 << 20) + 1);
    let mut out = Vec::with_capacity(n);
    let (mut start, mut line) = (0usize, 1usize);
    for k in 1..=n {
        let mut end = if k == n {
            bytes.len()
        } else {
            bytes.len() * k / n
        };
        if end < start {
            end = start;
        }
        while end < bytes.len() && end > 0 && bytes[end - 1] != b'\n' {
            end += 1;
        }
        if end > start {
            let part = &bytes[start..end];
            out.push((part, line));
            line += memchr::memchr_iter(b'\n', part).count();
            start = end;
        }
    }
    out
}

/// Adds the blobs of one index file ([`IndexFile`] JSON) to `map`,
/// parsing every id where it lies in `bytes`: no string is allocated per
/// id, and only one pack's blobs (48 bytes each) are held until the pack's
/// own id is known (parsed into `IndexFile` records, a 300,000-blob index
/// needed about 40 MB beside the map). Room for the file's blobs is made
/// first, counted by their `"offset"` keys, so the map does not grow (and
/// briefly exist twice) while it is filled.
///
/// # Errors
///
/// A message for malformed JSON, a missing pack id or an id that is not
/// BLAKE3-256 hex.
fn index_into(bytes: &[u8], map: &mut Index) -> serde_json::Result<()> {
    use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
    use std::fmt;

    /// A BLAKE3-256 hex id, parsed from the string in place.
    struct Hex(blake3::Hash);
    impl<'de> Deserialize<'de> for Hex {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Hex, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Hex;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a BLAKE3-256 hex id")
                }
                fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Hex, E> {
                    blake3::Hash::from_hex(s)
                        .map(Hex)
                        .map_err(|_| E::custom(format!("{s:?} is not a BLAKE3-256 hex id")))
                }
            }
            d.deserialize_str(V)
        }
    }
    #[derive(Deserialize)]
    struct Blob {
        id: Hex,
        offset: u64,
        length: u32,
    }
    #[derive(Deserialize)]
    #[serde(field_identifier, rename_all = "lowercase")]
    enum Field {
        Packs,
        Id,
        Blobs,
        #[serde(other)]
        Other,
    }
    /// The file (a map holding `packs`) or one pack (a map holding `id` and
    /// `blobs`, in either order), as `outer`.
    struct Seed<'m> {
        map: &'m mut Index,
        outer: bool,
    }
    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(if self.outer {
                "an index file"
            } else {
                "a pack"
            })
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> std::result::Result<(), A::Error> {
            let (mut id, mut blobs) = (None, Vec::<Blob>::new());
            while let Some(k) = a.next_key::<Field>()? {
                match k {
                    Field::Packs if self.outer => a.next_value_seed(Packs(&mut *self.map))?,
                    Field::Id if !self.outer => id = Some(a.next_value::<Hex>()?.0),
                    Field::Blobs if !self.outer => blobs = a.next_value()?,
                    _ => {
                        a.next_value::<IgnoredAny>()?;
                    }
                }
            }
            if self.outer {
                return Ok(());
            }
            let pack = id.ok_or_else(|| A::Error::missing_field("id"))?;
            let n = u32::try_from(self.map.packs.len())
                .map_err(|_| A::Error::custom("more than 2^32 packs"))?;
            self.map.packs.push(pack);
            for b in blobs {
                let slot = Slot {
                    pack: n,
                    length: b.length,
                    offset: b.offset,
                };
                self.map.blobs.insert(b.id.0, slot);
            }
            Ok(())
        }
    }
    struct Packs<'m>(&'m mut Index);
    impl<'de> DeserializeSeed<'de> for Packs<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for Packs<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of packs")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> std::result::Result<(), A::Error> {
            while a
                .next_element_seed(Seed {
                    map: &mut *self.0,
                    outer: false,
                })?
                .is_some()
            {}
            Ok(())
        }
    }
    map.blobs
        .reserve(memchr::memmem::find_iter(bytes, b"\"offset\"").count());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Seed { map, outer: true }.deserialize(&mut de)?;
    de.end()
}

impl Repo {
    /// Creates a new repository at `path` (parents too, `0700`), which must
    /// not exist or be an empty directory (`snap init`).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when a repository already exists there or the
    /// directory holds anything; I/O errors with the path.
    pub fn init(path: &Path) -> Result<Repo> {
        match Self::create(path, false)? {
            (repo, true) => Ok(repo),
            (_, false) => Err(Error::Usage(format!(
                "a repository already exists at {}",
                path.display()
            ))),
        }
    }

    /// Opens the repository at `path`, creating it first when there is
    /// none (the default location on first use). Returns the repository and
    /// whether this call created it. Race-free: of several processes
    /// creating one location at once, exactly one creates `config.json`
    /// (`renameat2(RENAME_NOREPLACE)` of a file written beside it, not in
    /// `tmp/`, which a lock holder empties); the others open that one.
    ///
    /// # Errors
    ///
    /// As [`Repo::init`] and [`Repo::open`].
    pub fn open_or_create(path: &Path) -> Result<(Repo, bool)> {
        Self::create(path, true)
    }

    /// [`Repo::init`] (`existing` false: a non-empty directory is refused)
    /// or [`Repo::open_or_create`] (`existing` true). The directories come
    /// first, `config.json` last: a location is a repository once it has
    /// its config.
    fn create(path: &Path, existing: bool) -> Result<(Repo, bool)> {
        use std::os::unix::fs::DirBuilderExt;
        // Creating the root (and its parents) happens before the root is
        // opened; everything after goes through the dirfd.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| Error::io("create repository directory", path.display(), e))?;
        let root =
            Dir::open_root(path).map_err(|e| Error::io("open repository", path.display(), e))?;
        let cfg = name(CONFIG);
        if root
            .stat_opt(&cfg)
            .map_err(|e| Error::io("stat", path.join(CONFIG).display(), e))?
            .is_some()
        {
            return Ok((Self::open(path)?, false));
        }
        if !existing {
            let names = root
                .list()
                .map_err(|e| Error::io("list", path.display(), e))?;
            if let Some(n) = names.first() {
                return Err(Error::Usage(format!(
                    "{} is not empty (it holds {n}) and not a snap repository; give a new or empty directory",
                    path.display()
                )));
            }
        }
        for d in SUBDIRS {
            root.ensure_dir(&name(d), 0o700)
                .map_err(|e| Error::io("mkdir", path.join(d).display(), e))?;
        }
        let lock = root
            .open_or_create_rw(&name("lock"), 0o600)
            .map_err(|e| Error::io("create", path.join("lock").display(), e))?;
        drop(lock);
        let config = Config {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id: random_hex(16)?,
            hash: "blake3".into(),
            chunker: ChunkerParams {
                algorithm: ChunkerAlgorithm::FastCdc2020,
                min: 512 * 1024,
                avg: 1024 * 1024,
                max: 8 * 1024 * 1024,
            },
        };
        let bytes = serde_json::to_vec_pretty(&config).map_err(|e| Error::Integrity {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let tmp = name(&format!(".{CONFIG}.{}.tmp", random_hex(8)?));
        let tmp_path = path.join(tmp.to_string()).display().to_string();
        let fd = root
            .create_file(&tmp, 0o600)
            .map_err(|e| Error::io("create", &tmp_path, e))?;
        let written = fd::write_all_at(&fd, &bytes, 0)
            .and_then(|()| fd::fsync(&fd))
            .map_err(|e| Error::io("write", &tmp_path, e));
        drop(fd);
        let placed = written.and_then(|()| match root.rename(&tmp, &root, &cfg, true) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io("rename", path.join(CONFIG).display(), e)),
        });
        if !matches!(placed, Ok(true)) {
            if let Err(e) = root.unlink(&tmp) {
                eprintln!("snap: warning: could not remove {tmp_path}: {e}");
            }
        }
        if !placed? {
            // Another process created it meanwhile.
            return Ok((Self::open(path)?, false));
        }
        root.sync()
            .map_err(|e| Error::io("fsync directory", path.display(), e))?;
        Ok((
            Repo {
                path: path.to_owned(),
                root,
                config,
                damaged: Default::default(),
            },
            true,
        ))
    }

    /// Opens the repository at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::RepoMissing`] when there is no directory or no
    /// `config.json`; [`Error::Integrity`] for an unreadable config or an
    /// unknown format/version.
    pub fn open(path: &Path) -> Result<Repo> {
        let missing = || Error::RepoMissing {
            path: path.display().to_string(),
        };
        let root = match Dir::open_root(path) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(Error::io("open repository", path.display(), e)),
        };
        let cfg_path = path.join("config.json").display().to_string();
        let bytes = match root.read_all(&name(CONFIG), CONFIG_MAX) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(read_error(&cfg_path, e)),
        };
        let config: Config = serde_json::from_slice(&bytes).map_err(|e| Error::Integrity {
            path: cfg_path.clone(),
            detail: format!("malformed config: {e}"),
        })?;
        if config.format != FORMAT_NAME || config.version != FORMAT_VERSION {
            return Err(Error::Integrity {
                path: cfg_path,
                detail: format!(
                    "repository format {:?} version {} is not supported (this snap reads {FORMAT_NAME:?} version {FORMAT_VERSION})",
                    config.format, config.version
                ),
            });
        }
        Ok(Repo {
            path: path.to_owned(),
            root,
            config,
            damaged: Default::default(),
        })
    }

    /// A path inside the repository, for messages.
    pub fn display(&self, rel: &str) -> String {
        self.path.join(rel).display().to_string()
    }

    /// Takes the repository lock: `flock(2)` on `lock`, exclusive for
    /// writers, shared for readers, retrying with exponential backoff
    /// (10 ms doubling to 500 ms, ±50 % jitter) for at most `wait_ms`.
    /// An exclusive holder writes `pid=… host=… started=…` into the file.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] on time-out, with the holder note; I/O errors.
    pub fn lock(&self, exclusive: bool, wait_ms: u64) -> Result<RepoLock> {
        let lock_path = self.display("lock");
        let lock_name = name("lock");
        let fd = match self.root.open_or_create_rw(&lock_name, 0o600) {
            Ok(fd) => fd,
            // A read-only repository can still be locked shared.
            Err(e) if !exclusive && e.kind() == io::ErrorKind::PermissionDenied => self
                .root
                .open_file(&lock_name)
                .map_err(|e| Error::io("open", &lock_path, e))?,
            Err(e) => return Err(Error::io("open", &lock_path, e)),
        };
        let start = Instant::now();
        let mut attempts = 0u32;
        let mut backoff_ms = 10u64;
        loop {
            attempts += 1;
            if fd::try_flock(&fd, exclusive).map_err(|e| Error::io("flock", &lock_path, e))? {
                break;
            }
            crate::interrupt::check()?;
            let waited = start.elapsed().as_millis() as u64;
            if waited >= wait_ms {
                let holder = self
                    .root
                    .read_all(&lock_name, LOCK_NOTE_MAX)
                    .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                    .map(|n| {
                        if n.is_empty() {
                            "holder wrote no note".to_owned()
                        } else {
                            n
                        }
                    })
                    .unwrap_or_else(|e| format!("holder unknown: {e}"));
                return Err(Error::Locked {
                    path: lock_path,
                    holder,
                    attempts,
                    waited_ms: waited,
                });
            }
            let mut r = [0u8; 2];
            crate::fs::random_bytes(&mut r).map_err(|e| Error::io("getrandom", "-", e))?;
            let jitter = u64::from(u16::from_le_bytes(r)) % (backoff_ms + 1);
            let sleep = (backoff_ms / 2 + jitter).min(wait_ms - waited);
            std::thread::sleep(Duration::from_millis(sleep.max(1)));
            backoff_ms = (backoff_ms * 2).min(500);
        }
        if exclusive {
            let note = format!(
                "pid={} host={} started={}\n",
                std::process::id(),
                crate::fs::hostname(),
                humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            );
            fd::truncate(&fd, 0).map_err(|e| Error::io("truncate", &lock_path, e))?;
            fd::write_all_at(&fd, note.as_bytes(), 0)
                .map_err(|e| Error::io("write", &lock_path, e))?;
        }
        Ok(RepoLock {
            _fd: fd,
            attempts,
            waited_ms: start.elapsed().as_millis() as u64,
            exclusive,
        })
    }

    /// Removes everything in `tmp/` (leftovers of a crashed run). Call with
    /// the exclusive lock held.
    ///
    /// # Errors
    ///
    /// The first removal error, with its path.
    pub fn clean_tmp(&self) -> Result<u64> {
        let tmp = self.open_dir(&["tmp"])?;
        let mut removed = 0;
        for n in tmp
            .list()
            .map_err(|e| Error::io("list", self.display("tmp"), e))?
        {
            tmp.remove_tree(&n)
                .map_err(|e| Error::io("remove", self.display(&format!("tmp/{n}")), e))?;
            removed += 1;
        }
        Ok(removed)
    }

    pub(crate) fn open_dir(&self, parts: &[&str]) -> Result<Dir> {
        let mut rel = RelPath::root();
        for p in parts {
            rel = rel.join(Name::new(p.as_bytes()).map_err(|e| Error::Integrity {
                path: self.display(p),
                detail: e.to_string(),
            })?);
        }
        self.root
            .open_path(&rel)
            .map_err(|e| Error::io("open directory", self.display(&parts.join("/")), e))
    }

    /// Writes `bytes` as the immutable file `dir/name`: into `tmp/`,
    /// `fsync` (when `syncs` is enabled), `renameat2(RENAME_NOREPLACE)` into
    /// `dir`, `fsync` of `dir`. Returns the bytes added, 0 when a file of
    /// that (content-addressed) name already exists (then nothing is
    /// written: an unchanged entries file costs no write and no fsync).
    ///
    /// # Errors
    ///
    /// I/O errors with the path; `ENOSPC` maps to `E_NO_SPACE`.
    pub async fn write_atomic(
        &self,
        dir: &RelPath,
        file: &Name,
        bytes: Vec<u8>,
        syncs: &mut Syncs,
    ) -> Result<u64> {
        if self.has(dir, file)? {
            return Ok(0);
        }
        let mut t = self.create_tmp().await?;
        t.write(bytes).await?;
        self.commit_tmp(t, dir, file, syncs).await
    }

    /// Whether `dir/file` exists (a content-addressed file already stored).
    ///
    /// # Errors
    ///
    /// I/O errors with the path.
    pub fn has(&self, dir: &RelPath, file: &Name) -> Result<bool> {
        let dest = self
            .root
            .open_path(dir)
            .map_err(|e| Error::io("open directory", self.display(&dir.to_string()), e))?;
        Ok(dest
            .stat_opt(file)
            .map_err(|e| Error::io("stat", self.display(&format!("{dir}/{file}")), e))?
            .is_some())
    }

    /// Creates a file in `tmp/` (mode `0600`) for content written a piece at
    /// a time ([`TmpFile::write`]) and put in place by
    /// [`Repo::commit_tmp`]. A run that fails leaves it for the next
    /// writer's `tmp/` cleanup.
    ///
    /// # Errors
    ///
    /// I/O errors with the path.
    pub async fn create_tmp(&self) -> Result<TmpFile> {
        let tmp = self.open_dir(&["tmp"])?;
        let name = Name::new(format!("{}.tmp", random_hex(12)?).as_bytes())
            .map_err(|e| Error::Usage(e.to_string()))?;
        let path = self.display(&format!("tmp/{name}"));
        let fd = tmp
            .create_file_uring(&name, 0o600)
            .await
            .map_err(|e| Error::io("create", &path, e))?;
        Ok(TmpFile {
            dir: tmp,
            name,
            path,
            file: DataFile::new(fd),
            len: 0,
        })
    }

    /// Puts a [`TmpFile`] in place as the immutable file `dir/file`:
    /// `fsync` (when `syncs` is enabled), `renameat2(RENAME_NOREPLACE)`,
    /// `fsync` of `dir`, as [`Repo::write_atomic`]. Returns the bytes added,
    /// 0 when a file of that (content-addressed) name already exists (the
    /// temporary file is then removed).
    ///
    /// # Errors
    ///
    /// I/O errors with the path; `ENOSPC` maps to `E_NO_SPACE`.
    pub async fn commit_tmp(
        &self,
        t: TmpFile,
        dir: &RelPath,
        file: &Name,
        syncs: &mut Syncs,
    ) -> Result<u64> {
        self.commit_tmp_as(t, dir, file, syncs, None).await
    }

    /// [`Repo::commit_tmp`]; when the rename is a commit point
    /// (`committed` says what it committed), an error after it is
    /// [`Error::AfterCommit`].
    async fn commit_tmp_as(
        &self,
        t: TmpFile,
        dir: &RelPath,
        file: &Name,
        syncs: &mut Syncs,
        committed: Option<&str>,
    ) -> Result<u64> {
        if let Err(e) = syncs.file(&t.file, &t.path).await {
            // Give the space back now (a full disk is the usual cause).
            t.discard().await;
            return Err(e);
        }
        let (added, dest) = self.place_tmp(t, dir, file).await?;
        if let Some(dest) = dest {
            syncs
                .dir(&dest, self.display(&dir.to_string()))
                .map_err(|e| match committed {
                    Some(c) => e.after_commit(c),
                    None => e,
                })?;
        }
        Ok(added)
    }

    /// The durability barrier before a commit point: one `syncfs(2)` of
    /// the repository's filesystem (when `syncs` is enabled), so every file
    /// and name the commit depends on is on disk, whoever wrote it: packs,
    /// index and entries files reused rather than written by this run (an
    /// earlier run's with `--no-durability`, or one killed before its last
    /// sync) are covered as much as this run's own.
    ///
    /// # Errors
    ///
    /// The `syncfs` error (since Linux 5.8 it reports a writeback error of
    /// any file on the filesystem; see `syncfs(2)`).
    pub fn barrier(&self, syncs: &mut Syncs) -> Result<()> {
        syncs.filesystem(&self.root, self.path.display())
    }

    /// Writes the snapshot record `bytes` as `snapshots/<id>.json`: into
    /// `tmp/`, `fsync`, `renameat2(RENAME_NOREPLACE)` — **the commit point**
    /// — then `fsync` of `snapshots/`. The caller has passed
    /// [`Repo::barrier`].
    ///
    /// # Errors
    ///
    /// Before the rename: the write, fsync or rename error (nothing is
    /// committed). After it: [`Error::AfterCommit`] (`E_UNCONFIRMED`), the
    /// snapshot is listed but its directory sync failed.
    pub async fn commit_snapshot(&self, id: &str, bytes: Vec<u8>, syncs: &mut Syncs) -> Result<()> {
        let dir = RelPath::root().join(name("snapshots"));
        let file = Name::new(format!("{id}.json").as_bytes()).map_err(|e| Error::Integrity {
            path: self.display("snapshots"),
            detail: e.to_string(),
        })?;
        let mut t = self.create_tmp().await?;
        t.write(bytes).await?;
        self.commit_tmp_as(t, &dir, &file, syncs, Some(&committed(id)))
            .await
            .map(|_| ())
    }

    /// Closes a [`TmpFile`] the caller has made durable and renames it to
    /// `dir/file` (`RENAME_NOREPLACE`) without syncing anything. Returns
    /// the bytes added and the directory that gained the name, or 0 and
    /// `None` when a file of that name exists (the temporary file is
    /// removed). On an error the temporary file is removed.
    ///
    /// # Errors
    ///
    /// Close and rename errors with the path.
    pub async fn place_tmp(
        &self,
        t: TmpFile,
        dir: &RelPath,
        file: &Name,
    ) -> Result<(u64, Option<Dir>)> {
        let dest = self
            .root
            .open_path(dir)
            .map_err(|e| Error::io("open directory", self.display(&dir.to_string()), e));
        let closed = t
            .file
            .close()
            .await
            .map_err(|e| Error::io("close", &t.path, e));
        let dest = match closed.and(dest) {
            Ok(d) => d,
            Err(e) => {
                if let Err(u) = t.dir.unlink(&t.name) {
                    eprintln!("snap: warning: could not remove {}: {u}", t.path);
                }
                return Err(e);
            }
        };
        match t.dir.rename(&t.name, &dest, file, true) {
            Ok(()) => Ok((t.len, Some(dest))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                t.dir
                    .unlink(&t.name)
                    .map_err(|e| Error::io("unlink", &t.path, e))?;
                Ok((0, None))
            }
            Err(e) => Err(Error::io(
                "rename",
                self.display(&format!("{dir}/{file}")),
                e,
            )),
        }
    }

    /// Ensures `top/<2 hex>` exists for a content-addressed id and returns
    /// its relative path; syncs `top` when the fan-out directory is new.
    ///
    /// # Errors
    ///
    /// I/O errors with the path.
    pub fn fanout_dir(&self, top: &str, id: &str, syncs: &mut Syncs) -> Result<RelPath> {
        let (rel, created) = self.fanout_dir_unsynced(top, id)?;
        if let Some(parent) = created {
            syncs.dir(&parent, self.display(top))?;
        }
        Ok(rel)
    }

    /// [`Repo::fanout_dir`] without the sync: returns the relative path
    /// and, when the fan-out directory is new, `top` (which gained a name
    /// the caller must make durable).
    ///
    /// # Errors
    ///
    /// I/O errors with the path.
    pub fn fanout_dir_unsynced(&self, top: &str, id: &str) -> Result<(RelPath, Option<Dir>)> {
        let parent = self.open_dir(&[top])?;
        let sub = &id[..2];
        let created = parent
            .ensure_dir(&name(sub), 0o700)
            .map_err(|e| Error::io("mkdir", self.display(&format!("{top}/{sub}")), e))?;
        let rel = RelPath::root().join(name(top)).join(name(sub));
        Ok((rel, created.then_some(parent)))
    }

    /// Every intact snapshot, oldest first, each checked against its id.
    /// A record that cannot be read, does not match its id, does not parse
    /// or has an unknown version is left out and remembered (see
    /// [`Repo::take_damaged`]): one damaged record does not hide the others.
    ///
    /// # Errors
    ///
    /// I/O errors listing `snapshots/`.
    pub fn snapshots(&self) -> Result<Vec<(String, SnapshotRecord)>> {
        let dir = self.open_dir(&["snapshots"])?;
        let mut out = Vec::new();
        for n in dir
            .list()
            .map_err(|e| Error::io("list", self.display("snapshots"), e))?
        {
            let fname = n.to_string();
            let Some(id) = fname.strip_suffix(".json") else {
                continue;
            };
            let path = self.display(&format!("snapshots/{fname}"));
            match read_record(&dir, &n, id, &path) {
                Ok(rec) => out.push((id.to_owned(), rec)),
                Err(e) => {
                    let mut d = self.damaged.lock().unwrap_or_else(|p| p.into_inner());
                    if !d.iter().any(|(p, _)| *p == path) {
                        d.push((path, e.to_string()));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    /// The damaged snapshot records [`Repo::snapshots`] has left out so
    /// far, as (path, what is wrong); each is handed out once.
    pub fn take_damaged(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.damaged.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves `latest`, a full id, or a unique id prefix.
    ///
    /// # Errors
    ///
    /// [`Error::SnapshotNotFound`] when nothing or more than one matches.
    pub fn resolve(&self, query: &str) -> Result<(String, SnapshotRecord)> {
        let mut all = self.snapshots()?;
        let not_found = |detail: &str| Error::SnapshotNotFound {
            query: query.to_owned(),
            detail: detail.to_owned(),
        };
        if query == "latest" {
            return all
                .pop()
                .ok_or_else(|| not_found("the repository has no snapshots"));
        }
        if query.is_empty() {
            return Err(not_found("empty snapshot id"));
        }
        let mut hits: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.starts_with(query))
            .collect();
        match hits.len() {
            0 => Err(not_found("no snapshot has this id or id prefix")),
            1 => Ok(hits.remove(0)),
            n => Err(not_found(&format!(
                "{n} snapshots share this prefix; give more digits"
            ))),
        }
    }

    /// Reads every index file into a blob map, checking each file's id.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for a file that does not match its id or does
    /// not parse; I/O errors.
    pub fn load_index(&self) -> Result<Index> {
        let mut map = Index::default();
        let dir = self.open_dir(&["index"])?;
        // One file at a time, parsed straight into the map: memory is the
        // map and the largest file, not every file and a parsed copy.
        for n in dir
            .list()
            .map_err(|e| Error::io("list", self.display("index"), e))?
        {
            let fname = n.to_string();
            let Some(id) = fname.strip_suffix(".idx") else {
                continue;
            };
            let path = self.display(&format!("index/{fname}"));
            let bytes = dir
                .read_all(&n, INDEX_MAX)
                .map_err(|e| read_error(&path, e))?;
            check_id(&bytes, id, &path, "index file")?;
            index_into(&bytes, &mut map).map_err(|e| Error::Integrity {
                path: path.clone(),
                detail: format!("malformed index: {e}"),
            })?;
        }
        Ok(map)
    }

    /// Reads and parses the entries file `id`, checking it against its id
    /// (a piece at a time, so a damaged file costs no more memory than its
    /// records and one line of at most [`ENTRIES_LINE_MAX`] bytes).
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for a missing, altered or malformed file (the
    /// record's line number is named).
    pub fn read_entries(&self, id: &str) -> Result<Vec<EntryRecord>> {
        let mut reader = self.entries_reader(id, 8 << 20)?;
        let mut out = Vec::new();
        while let Some((piece, first)) = reader.next_piece()? {
            // One part per core, split at line ends.
            let parts = split_lines(&piece, crate::par::cores());
            let path = reader.path().to_owned();
            for part in
                crate::par::map(&parts, |&(part, f)| parse_lines(&path, part, first + f - 1))
            {
                out.extend(part?);
            }
        }
        Ok(out)
    }

    /// Opens entries file `id` for reading as a stream of pieces of whole
    /// lines of about `piece` bytes, each checked into a running BLAKE3 (see [`EntriesReader`]).
    ///
    /// # Errors
    ///
    /// As [`Repo::open_entries`].
    pub fn entries_reader(&self, id: &str, piece: usize) -> Result<EntriesReader> {
        let (path, fd) = self.open_entries(id)?;
        Ok(EntriesReader {
            piece: piece.max(1),
            path,
            id: id.to_owned(),
            fd,
            hasher: blake3::Hasher::new(),
            at: 0,
            carry: Vec::new(),
            next_line: 1,
            done: false,
        })
    }

    /// Opens entries file `id` for reading a piece at a time (backup reads
    /// its parent's this way), with its path for messages. Its bytes must
    /// be checked against `id` before anything derived from them is
    /// committed.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for a malformed id or a missing file.
    pub fn open_entries(&self, id: &str) -> Result<(String, std::os::fd::OwnedFd)> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Integrity {
                path: self.display("entries"),
                detail: format!("entries id {id:?} is not a BLAKE3-256 hex id"),
            });
        }
        let path = self.entries_display(id);
        let fd = self
            .open_dir(&["entries", &id[..2]])?
            .open_file(&name(&format!("{id}.jsonl")))
            .map_err(|e| Error::Integrity {
                path: path.clone(),
                detail: format!("cannot read entries file: {e}"),
            })?;
        Ok((path, fd))
    }

    /// The path of entries file `id`, for messages
    /// (`<repo>/entries/<2 hex>/<id>.jsonl`).
    pub fn entries_display(&self, id: &str) -> String {
        self.display(&format!("entries/{}/{id}.jsonl", id.get(..2).unwrap_or("")))
    }

    /// Opens pack `id` for reading through io_uring.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] when the pack is missing; other I/O errors.
    pub fn open_pack(&self, id: &blake3::Hash) -> Result<DataFile> {
        let hex = id.to_hex();
        let rel = format!("packs/{}/{hex}.pack", &hex[..2]);
        let missing = || Error::Integrity {
            path: self.display(&rel),
            detail: "pack listed in the index is missing".into(),
        };
        let fanout = RelPath::root().join(name("packs")).join(name(&hex[..2]));
        let dir = match self.root.open_path(&fanout) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            // A symlink or a file where the fan-out directory belongs.
            Err(e)
                if e.kind() == io::ErrorKind::NotADirectory
                    || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) =>
            {
                return Err(Error::Integrity {
                    path: self.display(&format!("packs/{}", &hex[..2])),
                    detail: format!("not a directory: {e}"),
                })
            }
            Err(e) => {
                return Err(Error::io(
                    "open directory",
                    self.display(&format!("packs/{}", &hex[..2])),
                    e,
                ))
            }
        };
        match dir.open_file(&name(&format!("{hex}.pack"))) {
            Ok(fd) => Ok(DataFile::new(fd)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing()),
            Err(e) => Err(read_error(&self.display(&rel), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_lines;

    #[test]
    fn split_lines_cuts_at_line_ends_and_numbers_lines() {
        let mut text = Vec::new();
        for i in 0..100_000 {
            text.extend_from_slice(format!("line {i} {}\n", "x".repeat(i % 50)).as_bytes());
        }
        assert!(text.len() > 3 << 20);
        for n in [1, 2, 3, 7] {
            let parts = split_lines(&text, n);
            // At most one part per MiB.
            assert_eq!(parts.len(), n.min(text.len() / (1 << 20) + 1));
            assert_eq!(parts.concat_bytes(), text);
            for (part, first) in &parts {
                assert!(part.ends_with(b"\n"));
                let want = format!("line {} ", first - 1);
                assert!(part.starts_with(want.as_bytes()), "part at line {first}");
            }
        }
        // Small inputs stay whole; an empty one has no part.
        assert_eq!(split_lines(b"a\nb\n", 4), vec![(&b"a\nb\n"[..], 1)]);
        assert!(split_lines(b"", 2).is_empty());
    }

    /// Writes `text` as entries file `id` of a new repository in `dir`.
    fn entries_file(dir: &std::path::Path, id: &str, text: &[u8]) -> super::Repo {
        let repo = super::Repo::init(&dir.join("repo")).unwrap();
        let sub = dir.join(format!("repo/entries/{}", &id[..2]));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("{id}.jsonl")), text).unwrap();
        repo
    }

    #[test]
    fn entries_reader_hands_out_whole_lines_and_checks_the_id_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = Vec::new();
        for i in 0..500 {
            // Lines of 1 to 300 bytes: some longer than a piece of 64.
            text.extend_from_slice(format!("{i} {}\n", "y".repeat(i * 7 % 300)).as_bytes());
        }
        text.extend_from_slice(b"last line without a line end");
        let id = blake3::hash(&text).to_hex().to_string();
        let repo = entries_file(dir.path(), &id, &text);
        let mut r = repo.entries_reader(&id, 64).unwrap();
        let (mut all, mut pieces, mut line) = (Vec::new(), 0, 1);
        while let Some((piece, first)) = r.next_piece().unwrap() {
            assert_eq!(first, line, "piece {pieces} numbered from its first line");
            assert!(piece.starts_with(format!("{} ", first - 1).as_bytes()) || first == 501);
            line += memchr::memchr_iter(b'\n', &piece).count();
            all.extend_from_slice(&piece);
            pieces += 1;
        }
        assert_eq!(all, text);
        assert!(pieces > 100, "{pieces} pieces");
        assert!(r.next_piece().unwrap().is_none());

        // An altered file: its last piece is withheld and the id error
        // comes instead.
        let mut bad = text.clone();
        bad[10] ^= 1;
        let other = entries_file(&dir.path().join("b"), &id, &bad);
        let mut r = other.entries_reader(&id, 1 << 20).unwrap();
        let err = loop {
            match r.next_piece() {
                Ok(Some((piece, _))) => assert!(!piece.ends_with(b"without a line end")),
                Ok(None) => panic!("an altered entries file read to its end"),
                Err(e) => break e.to_string(),
            }
        };
        assert!(err.contains("does not match its BLAKE3 id"), "{err}");
    }

    #[test]
    fn lines_splits_at_line_ends() {
        let got: Vec<&[u8]> = super::lines(b"a\n\nbc\nd").collect();
        assert_eq!(got, vec![&b"a"[..], b"", b"bc", b"d"]);
        assert_eq!(super::lines(b"x\n").count(), 1);
        assert_eq!(super::lines(b"").count(), 0);
    }

    #[test]
    fn index_into_reads_every_blob_in_either_key_order_and_refuses_bad_ids() {
        use super::{index_into, BlobLocation, Index, IndexBlob, IndexFile, IndexPack};
        let id = |n: u32| blake3::hash(&n.to_le_bytes());
        let file = IndexFile {
            v: 1,
            packs: (0..3)
                .map(|p| IndexPack {
                    id: id(1000 + p).to_hex().to_string(),
                    blobs: (0..50)
                        .map(|b| IndexBlob {
                            id: id(p * 50 + b).to_hex().to_string(),
                            offset: u64::from(b) * 4096,
                            length: 4096 + b,
                        })
                        .collect(),
                })
                .collect(),
        };
        let mut map = Index::default();
        index_into(&serde_json::to_vec(&file).unwrap(), &mut map).unwrap();
        assert_eq!(map.len(), 150);
        assert!(map.contains(&id(149)) && !map.contains(&id(150)));
        assert_eq!(
            map.get(&id(2 * 50 + 7)).unwrap(),
            BlobLocation {
                pack: id(1002),
                offset: 7 * 4096,
                length: 4103
            }
        );
        // Blobs before the pack id, and an unknown key.
        let text = format!(
            r#"{{"packs":[{{"x":[1],"blobs":[{{"id":"{}","offset":5,"length":6}}],"id":"{}"}}],"v":1}}"#,
            id(7).to_hex(),
            id(8).to_hex()
        );
        index_into(text.as_bytes(), &mut map).unwrap();
        assert_eq!(map.get(&id(7)).unwrap().pack, id(8));
        assert_eq!(
            map.get(&id(2)).unwrap().pack,
            id(1000),
            "earlier files stay"
        );
        for bad in [
            r#"{"v":1,"packs":[{"id":"zz","blobs":[]}]}"#.to_owned(),
            format!(
                r#"{{"v":1,"packs":[{{"blobs":[{{"id":"{}","offset":0,"length":1}}]}}]}}"#,
                id(1).to_hex()
            ),
            r#"{"v":1,"packs":[]} trailing"#.to_owned(),
        ] {
            assert!(
                index_into(bad.as_bytes(), &mut Index::default()).is_err(),
                "{bad}"
            );
        }
    }

    trait Concat {
        fn concat_bytes(&self) -> Vec<u8>;
    }

    impl Concat for Vec<(&[u8], usize)> {
        fn concat_bytes(&self) -> Vec<u8> {
            self.iter().flat_map(|(p, _)| p.iter().copied()).collect()
        }
    }
}
