//! Backup: walk the source through dirfds, read files through io_uring,
//! cut them into FastCDC chunks, store new blobs in packs, and commit a
//! snapshot with the protocol of `docs/FORMAT.md`.
//!
//! Side effects: reads the source (with `O_NOATIME` where permitted, so
//! atimes are left alone) and writes packs, an index file, an entries file
//! and the snapshot record into the repository. Nothing becomes visible as a
//! snapshot until the final rename of the record.

mod cdc;
mod pipeline;
mod scan;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::Instant;

use base64::Engine as _;
use globset::{GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event};
use crate::fs::{fd, Dir, FileKind, Name, RelPath, Stat};
use crate::io::DataFile;
use crate::policy::{Policy, PreservationTier};
use crate::repo::sidecar::{DevNum, EntryKind, EntryRecord};
use crate::repo::storage::{Ranged, Staged};
use crate::repo::{commit, EntriesRef, IndexFile, Repo, SnapshotRecord, SnapshotStats, Syncs};
use pipeline::Msg;

/// Bytes requested per read submission.
const READ_SIZE: usize = 4 * 1024 * 1024;

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The source directory or file, as given.
    pub source: PathBuf,
    /// The policy in force.
    pub policy: Policy,
    /// Tags for the snapshot record.
    pub tags: Vec<String>,
}

/// What a committed backup produced.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The snapshot id.
    pub snapshot_id: String,
    /// The committed record.
    pub record: SnapshotRecord,
    /// Sync accounting.
    pub syncs: Syncs,
}

/// Exclude patterns compiled for matching (see [`Policy::excludes`]),
/// gitignore's rules for where a pattern applies (`gitignore(5)`,
/// "PATTERN FORMAT"): without `/` a name at any depth; with `/` the path
/// relative to the source (a leading `/` only anchors); a trailing `/`
/// matches directories only.
struct Excludes {
    by_name: GlobSet,
    by_path: GlobSet,
    dir_by_name: GlobSet,
    dir_by_path: GlobSet,
}

impl Excludes {
    /// Compiles `patterns` for a backup of `source` (absolute).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for an invalid glob, and for a pattern that can
    /// never match: an absolute path of the source (or under it), which
    /// patterns are not (they are relative to it), and an empty one.
    fn new(patterns: &[String], source: &Path) -> Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        let mut dir_by_name = GlobSetBuilder::new();
        let mut dir_by_path = GlobSetBuilder::new();
        let src = source.as_os_str().as_bytes();
        for p in patterns {
            let (dirs_only, body) = match p.strip_suffix('/') {
                Some(b) => (true, b),
                None => (false, p.as_str()),
            };
            if body.is_empty() || body == "/" {
                return Err(Error::Usage(format!(
                    "--exclude {p:?} matches nothing (an empty pattern)"
                )));
            }
            if src.len() > 1
                && body.as_bytes().starts_with(src)
                && matches!(body.as_bytes().get(src.len()), None | Some(b'/'))
            {
                let rest = &body[src.len()..];
                return Err(Error::Usage(format!(
                    "--exclude {p:?} can never match: patterns are relative to the source {}, so write {:?}",
                    source.display(),
                    if rest.is_empty() { "*".to_owned() } else { format!("{rest}{}", if dirs_only { "/" } else { "" }) }
                )));
            }
            let (set, pat) = match (body.strip_prefix('/'), dirs_only) {
                (Some(rest), false) => (&mut by_path, rest),
                (Some(rest), true) => (&mut dir_by_path, rest),
                (None, false) if body.contains('/') => (&mut by_path, body),
                (None, true) if body.contains('/') => (&mut dir_by_path, body),
                (None, false) => (&mut by_name, body),
                (None, true) => (&mut dir_by_name, body),
            };
            let glob = globset::GlobBuilder::new(pat)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::Usage(format!("invalid --exclude pattern {p:?}: {e}")))?;
            set.add(glob);
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Usage(format!("invalid --exclude patterns: {e}")))
        };
        Ok(Self {
            by_name: build(by_name)?,
            by_path: build(by_path)?,
            dir_by_name: build(dir_by_name)?,
            dir_by_path: build(dir_by_path)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.by_name.is_empty()
            && self.by_path.is_empty()
            && self.dir_by_name.is_empty()
            && self.dir_by_path.is_empty()
    }

    /// Whether the entry at `rel` (a directory when `is_dir`) is left out.
    fn matches(&self, rel: &RelPath, is_dir: bool) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let Some(name) = rel.file_name() else {
            return false;
        };
        let name_path = Path::new(std::ffi::OsStr::from_bytes(name.as_bytes()));
        if self.by_name.is_match(name_path) || (is_dir && self.dir_by_name.is_match(name_path)) {
            return true;
        }
        let bytes = rel.to_bytes();
        let path = Path::new(std::ffi::OsStr::from_bytes(&bytes));
        self.by_path.is_match(path) || (is_dir && self.dir_by_path.is_match(path))
    }
}

/// FNV-1a, for maps keyed by paths the walk produces itself (no untrusted
/// keys, so no need for SipHash's flooding resistance).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A map keyed by raw relative paths.
type PathMap<V> = HashMap<Vec<u8>, V, std::hash::BuildHasherDefault<Fnv>>;

/// The content of a file in the parent snapshot, with the stat fields
/// that tell whether it changed.
#[derive(Clone, Copy)]
struct ParentFile {
    size: u64,
    mtime: crate::fs::Time,
    atime: Option<crate::fs::Time>,
    ctime: crate::fs::Time,
    ino: u64,
    dev: DevNum,
    /// Byte offset and length (newline included) of its record in the
    /// parent's entries file.
    line: (u64, u64),
}

/// The content fields of a parent's file record, parsed only when the
/// record cannot be copied as it is.
#[derive(serde::Deserialize)]
struct ParentContent {
    sparse: Option<Vec<[u64; 2]>>,
    chunks: Vec<String>,
    hash: String,
}

/// The fields of a sidecar record the parent lookup needs, borrowed from
/// the entries file (the rest is skipped unparsed): the stat key of files,
/// the block fields of directories.
#[derive(serde::Deserialize)]
struct ParentLine<'a> {
    v: u32,
    kind: EntryKind,
    #[serde(borrow)]
    path: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    path_b64: Option<std::borrow::Cow<'a, str>>,
    size: Option<u64>,
    mtime: crate::fs::Time,
    atime: Option<crate::fs::Time>,
    ctime: Option<crate::fs::Time>,
    ino: Option<u64>,
    dev: Option<DevNum>,
    children: Option<u64>,
    #[serde(borrow)]
    children_key: Option<std::borrow::Cow<'a, str>>,
    children_ctime: Option<crate::fs::Time>,
}

/// The running state of the walk of one backup (the walker stage of
/// [`pipeline`]).
struct Writer<'a> {
    repo: &'a Repo,
    tier: PreservationTier,
    /// The repository's minimum chunk size: a file no larger is always
    /// one chunk.
    chunker_min: u32,
    /// To the chunker; `None` once the walk is over.
    tx: Option<SyncSender<Msg>>,
    /// Large read buffers the chunker is done with.
    reads_pool: std::sync::mpsc::Receiver<Vec<u8>>,
    /// The parent snapshot's entries, when it has the same source, host
    /// and tier.
    parent: Option<Parent>,
    /// The parent's block of the directory being walked.
    block: Block,
    /// Records pushed so far (a copy counts its lines).
    records: u64,
    stats: SnapshotStats,
    /// Items not yet handed to `out`, in order; the first has index
    /// `base` (indices count every item of the walk).
    pending: std::collections::VecDeque<Item>,
    base: usize,
    /// Indices of file records whose chunks the chunker has not reported.
    waiting: std::collections::BTreeSet<usize>,
    /// The chunker's reports.
    contents: std::sync::mpsc::Receiver<pipeline::FileContent>,
    out: EntriesOut,
    hardlinks: HashMap<((u32, u32), u64), RelPath>,
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
    facts: &'a mut Emitter,
    progress: &'a indicatif::ProgressBar,
}

/// A directory of the parent snapshot: where its record and its block of
/// non-directory records sit in the parent's entries file, and the key
/// the block was written under.
struct ParentDir {
    /// Byte offset and length (newline included) of the directory's own
    /// record.
    line: (u64, u64),
    /// BLAKE3 of that line, to tell whether a new record is the same.
    line_hash: blake3::Hash,
    /// Byte offset and length of its block (right after the record).
    block: (u64, u64),
    /// Records in its block.
    children: u64,
    key: blake3::Hash,
    ctime: Option<crate::fs::Time>,
}

/// Bytes read from the parent's entries file at a time.
const PARENT_READ: usize = 1 << 20;

/// The parent snapshot's entries file, open, with where each directory's
/// record and block are. Only that index is kept in memory (about 150
/// bytes per directory): a reused block is read from the file when it is
/// copied, and a changed directory reads and parses only its own block
/// (docs/FORMAT.md "Block reuse").
struct Parent {
    /// The entries file's id.
    id: String,
    /// The entries file, for error messages.
    path: String,
    file: Box<dyn Ranged>,
    /// Its length in bytes.
    size: u64,
    /// Directories by raw path.
    dirs: PathMap<ParentDir>,
    /// The parent's start minus 1 s: a ctime before it cannot hide a
    /// change made while the parent ran.
    settled: crate::fs::Time,
}

impl Parent {
    /// Reads the entries file of `rec` once, in pieces, and finds its
    /// directories by following the blocks from the root record: after a
    /// directory's record and its block comes the next directory in
    /// pre-order. A record without `children` (written before block reuse)
    /// ends the search; what was found until then is used.
    ///
    /// The bytes are not checked against the entries id on that pass:
    /// `load` sends the parent to the walker through `out`, then reads the
    /// file again to check it and returns the result, which the backup
    /// awaits before its commit. Nothing is sent when the parent's start
    /// time cannot be read.
    ///
    /// # Errors
    ///
    /// As [`Repo::open_entries`]; read errors; [`Error::Integrity`] when
    /// the file does not match its id, for a malformed directory record,
    /// or for a block past the end of the file.
    fn load(
        repo: &Repo,
        rec: &SnapshotRecord,
        out: std::sync::mpsc::SyncSender<Parent>,
    ) -> Result<()> {
        let Ok(start) = humantime::parse_rfc3339(&rec.time) else {
            return Ok(());
        };
        let Ok(start) = start.duration_since(std::time::UNIX_EPOCH) else {
            return Ok(());
        };
        let settled = crate::fs::Time {
            sec: start.as_secs() as i64 - 1,
            nsec: start.subsec_nanos(),
        };
        let id = &rec.entries.id;
        let (path, file) = repo.open_entries(id)?;
        let read_err = |e| Error::io("read", &path, e);
        let mut dirs = PathMap::default();
        // The line being assembled, its offset and index; the line index
        // of the next directory record and the directory whose block
        // ends there.
        let mut line: Vec<u8> = Vec::new();
        let (mut line_at, mut line_no) = (0u64, 0u64);
        let mut next_dir = 0u64;
        let mut open: Option<Vec<u8>> = None;
        let mut buf = vec![0u8; PARENT_READ];
        let mut at = 0u64;
        'read: loop {
            let n = file.read_at(&mut buf, at).map_err(read_err)?;
            if n == 0 {
                break;
            }
            let mut rest = &buf[..n];
            at += n as u64;
            while let Some(nl) = memchr::memchr(b'\n', rest) {
                let whole: &[u8] = if line.is_empty() {
                    &rest[..=nl]
                } else {
                    line.extend_from_slice(&rest[..=nl]);
                    &line
                };
                if line_no == next_dir {
                    if let Some(p) = open.take() {
                        if let Some(d) = dirs.get_mut(&p) {
                            let d: &mut ParentDir = d;
                            d.block.1 = line_at - d.block.0;
                        }
                    }
                    let bad = |detail: String| Error::Integrity {
                        path: format!("{path}:{}", line_no + 1),
                        detail,
                    };
                    let d: ParentLine = serde_json::from_slice(whole)
                        .map_err(|e| bad(format!("malformed record: {e}")))?;
                    let (EntryKind::Dir, Some(children), Some(key)) =
                        (d.kind, d.children, d.children_key)
                    else {
                        break 'read;
                    };
                    let key = blake3::Hash::from_hex(key.as_bytes())
                        .map_err(|e| bad(format!("invalid children_key: {e}")))?;
                    let rel = RelPath::from_stored(&d.path, d.path_b64.as_deref())
                        .map_err(|e| bad(format!("invalid path: {e}")))?;
                    let len = whole.len() as u64;
                    let raw = rel.to_bytes();
                    dirs.insert(
                        raw.clone(),
                        ParentDir {
                            line: (line_at, len),
                            line_hash: blake3::hash(whole),
                            block: (line_at + len, 0),
                            children,
                            key,
                            ctime: d.children_ctime,
                        },
                    );
                    open = Some(raw);
                    next_dir = line_no + 1 + children;
                }
                line_at += whole.len() as u64;
                line_no += 1;
                line.clear();
                rest = &rest[nl + 1..];
            }
            line.extend_from_slice(rest);
        }
        let size = file.size().map_err(|e| Error::io("stat", &path, e))?;
        if let Some(p) = open.take() {
            if let Some(d) = dirs.get_mut(&p) {
                if line_no < next_dir {
                    return Err(Error::Integrity {
                        path: path.clone(),
                        detail: format!(
                            "directory {:?} claims {} entries after it, past the end of the file",
                            String::from_utf8_lossy(&p),
                            d.children
                        ),
                    });
                }
                d.block.1 = line_at - d.block.0;
            }
        }
        let parent = Self {
            id: id.clone(),
            path: path.clone(),
            file,
            size,
            dirs,
            settled,
        };
        // The walker may have stopped already; the check still decides.
        let _ = out.send(parent);
        let (_, file) = repo.open_entries(id)?;
        let mut hasher = blake3::Hasher::new();
        let mut at = 0u64;
        loop {
            let n = file
                .read_at(&mut buf, at)
                .map_err(|e| Error::io("read", &path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        if hasher.finalize().to_hex().as_str() == id {
            Ok(())
        } else {
            Err(Error::Integrity {
                path,
                detail: "entries file does not match its BLAKE3 id".into(),
            })
        }
    }

    /// Bytes `offset..offset + len` of the entries file.
    ///
    /// # Errors
    ///
    /// The read error; [`Error::Integrity`] when the file is shorter.
    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        self.read_into(&mut out, offset)?;
        Ok(out)
    }

    /// Fills `buf` from `offset` of the entries file.
    ///
    /// # Errors
    ///
    /// As [`Parent::read`].
    fn read_into(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let n = self
            .file
            .read_at(buf, offset)
            .map_err(|e| Error::io("read", &self.path, e))?;
        if n < buf.len() {
            return Err(Error::Integrity {
                path: self.path.clone(),
                detail: "entries file is shorter than when it was indexed".into(),
            });
        }
        Ok(())
    }

    /// The records in bytes `offset..offset + len` (a block), and among
    /// them the regular files whose content may be reused: those with a
    /// full stat key and a ctime older than [`Parent::settled`] (see
    /// [`SnapshotStats::files_unchanged`]).
    ///
    /// # Errors
    ///
    /// As [`Parent::read`]; [`Error::Integrity`] for a malformed record.
    fn files(&self, offset: u64, len: u64) -> Result<Block> {
        let bytes = self.read(offset, len)?;
        let mut files = PathMap::default();
        let mut at = 0usize;
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            let start = at;
            at += line.len();
            let r: ParentLine = serde_json::from_slice(line).map_err(|e| Error::Integrity {
                path: self.path.clone(),
                detail: format!("malformed record: {e}"),
            })?;
            if r.v != crate::repo::sidecar::SIDECAR_VERSION || r.kind != EntryKind::File {
                continue;
            }
            let (Some(size), Some(ctime), Some(ino), Some(dev)) = (r.size, r.ctime, r.ino, r.dev)
            else {
                continue;
            };
            if ctime >= self.settled {
                continue;
            }
            let Ok(rel) = RelPath::from_stored(&r.path, r.path_b64.as_deref()) else {
                continue;
            };
            files.insert(
                rel.to_bytes(),
                ParentFile {
                    size,
                    mtime: r.mtime,
                    atime: r.atime,
                    ctime,
                    ino,
                    dev,
                    line: (offset + start as u64, line.len() as u64),
                },
            );
        }
        Ok(Block {
            offset,
            bytes,
            files,
        })
    }
}

/// A block of the parent's entries file being used by the walk of one
/// changed directory.
#[derive(Default)]
struct Block {
    /// Where it starts in the parent's file.
    offset: u64,
    bytes: Vec<u8>,
    /// Its reusable regular files by raw path.
    files: PathMap<ParentFile>,
}

impl Block {
    /// The record of `f` (one of `files`).
    fn line(&self, f: &ParentFile) -> &[u8] {
        let from = (f.line.0 - self.offset) as usize;
        &self.bytes[from..from + f.line.1 as usize]
    }
}

/// The new entries file, written as the walk goes: items leave the
/// walker's window in order, are serialised (or copied from the parent's
/// file) into a buffer, hashed, and written to a file in `tmp/` that the
/// commit renames to `entries/xx/<id>.jsonl`.
///
/// While every item reproduces the parent's entries file (copied blocks,
/// directory records equal to the parent's), nothing is written or hashed:
/// the output so far is the parent's first bytes. At the first difference
/// those bytes are copied in; when there is none, the snapshot names the
/// parent's entries file.
struct EntriesOut {
    /// `Some(n)` while the output is the parent's first `n` bytes.
    same: Option<u64>,
    tmp: Option<Box<dyn Staged>>,
    buf: Vec<u8>,
    hasher: blake3::Hasher,
    /// Records so far.
    count: u64,
    scratch: Vec<u8>,
}

/// Items the walker keeps waiting for the chunker before it waits itself.
const MAX_PENDING: usize = 1 << 16;

/// Bytes gathered before a write of the new entries file.
const ENTRIES_WRITE: usize = 1 << 20;

impl EntriesOut {
    fn new(parent: bool) -> Self {
        Self {
            same: parent.then_some(0),
            tmp: None,
            buf: Vec::with_capacity(ENTRIES_WRITE + (64 << 10)),
            hasher: blake3::Hasher::new(),
            count: 0,
            scratch: Vec::new(),
        }
    }

    /// Appends one item.
    ///
    /// # Errors
    ///
    /// Repository I/O errors; a record that cannot be serialised.
    fn push(&mut self, item: Item, parent: Option<&Parent>, repo: &Repo) -> Result<()> {
        self.count += match &item {
            Item::Rec(_) => 1,
            Item::Copy(c) => c.lines,
        };
        if let (Some(off), Some(p)) = (self.same, parent) {
            match &item {
                Item::Copy(Copy { offset, len, .. }) if *offset == off => {
                    self.same = Some(off + len);
                    return Ok(());
                }
                Item::Rec(r) if r.kind == EntryKind::Dir => {
                    self.scratch.clear();
                    serde_json::to_writer(&mut self.scratch, &**r).map_err(ser_err)?;
                    self.scratch.push(b'\n');
                    let same = r
                        .rel_path()
                        .ok()
                        .and_then(|rel| p.dirs.get(&rel.to_bytes()))
                        .is_some_and(|d| {
                            d.line.0 == off && blake3::hash(&self.scratch) == d.line_hash
                        });
                    if same {
                        self.same = Some(off + self.scratch.len() as u64);
                        return Ok(());
                    }
                }
                _ => {}
            }
            self.diverge(p, repo)?;
        }
        match item {
            Item::Rec(r) => {
                serde_json::to_writer(&mut self.buf, &*r).map_err(ser_err)?;
                self.buf.push(b'\n');
            }
            Item::Copy(Copy { offset, len, .. }) => {
                let p = parent.expect("a copied block has a parent");
                self.copy(p, offset, len, repo)?;
            }
        }
        if self.buf.len() >= ENTRIES_WRITE {
            self.write(repo)?;
        }
        Ok(())
    }

    /// Bytes `offset..offset + len` of the parent's file, appended.
    fn copy(&mut self, p: &Parent, offset: u64, len: u64, repo: &Repo) -> Result<()> {
        let (mut at, end) = (offset, offset + len);
        while at < end {
            let room = ENTRIES_WRITE.saturating_sub(self.buf.len()).max(64 << 10);
            let want = room.min(usize::try_from(end - at).unwrap_or(usize::MAX));
            let from = self.buf.len();
            self.buf.resize(from + want, 0);
            p.read_into(&mut self.buf[from..], at)?;
            at += want as u64;
            if self.buf.len() >= ENTRIES_WRITE {
                self.write(repo)?;
            }
        }
        Ok(())
    }

    /// The output stops being the parent's: its first bytes go in.
    fn diverge(&mut self, p: &Parent, repo: &Repo) -> Result<()> {
        if let Some(n) = self.same.take() {
            self.copy(p, 0, n, repo)?;
        }
        Ok(())
    }

    /// Hashes and writes what the buffer holds.
    fn write(&mut self, repo: &Repo) -> Result<()> {
        if self.tmp.is_none() {
            self.tmp = Some(commit::stage_entries(repo)?);
        }
        let tmp = self.tmp.as_mut().expect("created above");
        self.hasher.update(&self.buf);
        tmp.append(&[&self.buf])
            .map_err(|e| Error::io("write", repo.display("tmp (entries file)"), e))?;
        self.buf.clear();
        Ok(())
    }

    /// Puts the entries file in place: its id and the bytes added.
    ///
    /// # Errors
    ///
    /// Repository I/O errors.
    fn finish(
        mut self,
        parent: Option<&Parent>,
        repo: &Repo,
        syncs: &mut Syncs,
    ) -> Result<(String, u64)> {
        if let (Some(n), Some(p)) = (self.same, parent) {
            if n == p.size {
                return Ok((p.id.clone(), 0));
            }
            self.diverge(p, repo)?;
        }
        self.write(repo)?;
        let id = self.hasher.finalize().to_hex().to_string();
        let tmp = self.tmp.take().expect("written above");
        let added = commit::put_entries(repo, tmp, &id, syncs)?;
        Ok((id, added))
    }
}

/// Opens the source file `name` the walk stat'ed as `st` (non-blocking,
/// no symlinks: [`crate::io::open_read`]) and checks that the
/// descriptor is that regular file: a name swapped since the stat (for a
/// FIFO, which a read would wait on forever, or another file) is refused.
///
/// # Errors
///
/// The open or `fstat(2)` error; `InvalidData` for a swapped name.
async fn open_same_file(
    dir: &Dir,
    name: &Name,
    st: &Stat,
) -> std::io::Result<std::os::fd::OwnedFd> {
    let f = crate::io::open_read(dir, name).await?;
    let now = fd::stat(&f)?;
    if now.kind != FileKind::File || (now.dev, now.ino) != (st.dev, st.ino) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "changed since the walk stat'ed it (now a {:?}, inode {}; was a regular file, inode {}); not read",
                now.kind, now.ino, st.ino
            ),
        ));
    }
    Ok(f)
}

fn ser_err(e: serde_json::Error) -> Error {
    Error::Integrity {
        path: "entries".into(),
        detail: format!("cannot serialise: {e}"),
    }
}

/// Runs a backup of `opts.source` into `repo`. The caller holds the
/// exclusive repository lock.
///
/// Entries that cannot be read are left out, each reported with a
/// `backup.warning` fact; the snapshot still commits and
/// `stats.unreadable` counts them (the CLI exits 3, `E_PARTIAL`).
///
/// # Errors
///
/// [`Error::SourceMissing`] when the source does not exist (nothing is
/// written); repository I/O errors (`E_NO_SPACE` for a full disk), which
/// leave no snapshot: everything written so far sits in `tmp/` or as
/// unreferenced packs.
pub fn run(
    repo: &Repo,
    opts: &BackupOptions,
    facts: &mut Emitter,
    progress: &indicatif::ProgressBar,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let source = std::path::absolute(&opts.source)
        .map_err(|e| Error::io("resolve", opts.source.display(), e))?;
    let excludes = Excludes::new(&opts.policy.excludes, &source)?;

    // Open the source: a directory becomes the root; anything else is
    // stored as one entry named after it.
    let src_display = source.display().to_string();
    let root = match Dir::open_root(&source) {
        Ok(d) => SourceRoot::Dir(d),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::SourceMissing { path: src_display })
        }
        Err(e)
            if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
                || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) =>
        {
            let parent = source.parent().unwrap_or(Path::new("/"));
            let fname = source
                .file_name()
                .ok_or_else(|| Error::Usage(format!("source {src_display} has no file name")))?;
            use std::os::unix::ffi::OsStrExt;
            let name = Name::new(fname.as_bytes())
                .map_err(|e| Error::Usage(format!("source {src_display}: {e}")))?;
            let pdir =
                Dir::open_root(parent).map_err(|e| Error::io("open", parent.display(), e))?;
            SourceRoot::Single(pdir, name)
        }
        Err(e) => return Err(Error::io("open source", src_display, e)),
    };

    let snapshots = repo.snapshots()?;
    let host = crate::sys::hostname();
    let parent = snapshots
        .iter()
        .rev()
        .find(|(_, r)| r.host == host && r.source == src_display);
    // Content is taken from the parent only when it used the same tier
    // (the tier decides whether sparse maps are kept). Its entries load
    // while the scanners list the first directories; the index is loaded
    // by the chunker when the first chunk needs it.
    let parent_rec = match parent {
        Some((_, rec)) if rec.tier == opts.policy.tier => Some(rec),
        _ => None,
    };
    let parent = parent.map(|(id, _)| id.clone());
    // Owner names for tier full, from this host's /etc (first name wins).
    let (mut users, mut groups) = (HashMap::new(), HashMap::new());
    if opts.policy.tier == PreservationTier::Full {
        let (u, g) = crate::sys::id_names(Path::new("/etc"))
            .map_err(|e| Error::io("read", "/etc/passwd", e))?;
        for (name, id) in u {
            users.entry(id).or_insert(name);
        }
        for (name, id) in g {
            groups.entry(id).or_insert(name);
        }
    }

    let (tx, rx) = sync_channel(pipeline::DATA_QUEUE);
    let (pack_tx, pack_rx) = sync_channel(pipeline::PACK_QUEUE);
    let (reads_back, reads_pool) = sync_channel(pipeline::DATA_QUEUE);
    let (contents_tx, contents_rx) = std::sync::mpsc::channel();
    let mut w = Writer {
        repo,
        tier: opts.policy.tier,
        chunker_min: repo.config.chunker.min,
        tx: Some(tx),
        reads_pool,
        parent: None,
        block: Block::default(),
        records: 0,
        stats: SnapshotStats::default(),
        pending: std::collections::VecDeque::new(),
        base: 0,
        waiting: std::collections::BTreeSet::new(),
        contents: contents_rx,
        out: EntriesOut::new(parent_rec.is_some()),
        hardlinks: HashMap::new(),
        users,
        groups,
        facts,
        progress,
    };
    let durable = opts.policy.require_backup_durability;
    let chunker_params = repo.config.chunker;
    let rt_err = |e| Error::io("start io_uring runtime", repo.path.display(), e);
    let excluded = |rel: &RelPath, is_dir: bool| excludes.matches(rel, is_dir);
    let scanner = scan::Scanner::new((!excludes.is_empty()).then_some(&excluded as _));
    let scanner = &scanner;
    let (verified, walked, chunked, packed) = std::thread::scope(|s| {
        let (parent_tx, parent_rx) = sync_channel(1);
        let loader = parent_rec.map(|rec| s.spawn(move || Parent::load(repo, rec, parent_tx)));
        // The parent, once the loader has indexed it (a failed load is
        // reported by the loader's result).
        let load_parent = || Ok(parent_rx.recv().ok());
        let chunker = std::thread::Builder::new()
            .name("snap-chunker".into())
            .spawn_scoped(s, move || {
                pipeline::chunker(rx, pack_tx, chunker_params, repo, reads_back, contents_tx)
            })
            .map_err(|e| Error::io("spawn", "chunker thread", e))?;
        let packer = std::thread::Builder::new()
            .name("snap-packer".into())
            .spawn_scoped(s, move || pipeline::packer(pack_rx, repo, durable))
            .map_err(|e| Error::io("spawn", "packer thread", e))?;
        for i in 0..crate::par::cores() {
            std::thread::Builder::new()
                .name(format!("snap-scan-{i}"))
                .spawn_scoped(s, move || scanner.work())
                .map_err(|e| Error::io("spawn", "scanner thread", e))?;
        }
        // The scanners end with the walk, however it ends.
        struct Stop<'a, 'b>(&'a scan::Scanner<'b>);
        impl Drop for Stop<'_, '_> {
            fn drop(&mut self) {
                self.0.stop();
            }
        }
        let stop = Stop(scanner);
        let walked = crate::io::block_on(async {
            match &root {
                SourceRoot::Dir(d) => w.walk(d, scanner, load_parent).await,
                SourceRoot::Single(pdir, name) => {
                    w.parent = load_parent()?;
                    let st = pdir
                        .stat(name)
                        .map_err(|e| Error::io("stat", &src_display, e))?;
                    let rel = RelPath::root().join(name.clone());
                    if let Some(p) = &w.parent {
                        w.block = p.files(0, p.size)?;
                    }
                    w.entry(pdir, name, &rel, st).await
                }
            }
        })
        .map_err(rt_err)
        .and_then(|r| r);
        drop(stop);
        // The parent's entries were checked against their id.
        let verified = loader.map_or(Ok(()), crate::par::join);
        // Closing the channel lets the chunker flush its last pack.
        w.tx = None;
        let chunked = crate::par::join(chunker);
        let packed = crate::par::join(packer);
        Ok::<_, Error>((verified, walked, chunked, packed))
    })?;
    // The first stage to fail names the cause; a stage whose successor
    // stopped reports only that. A parent that fails its check comes first:
    // nothing built from it may commit.
    verified?;
    let packed = packed?;
    let chunked = chunked?;
    walked?;
    crate::io::block_on(w.commit(
        chunked, packed, time, host, &source, opts, parent, started, repo,
    ))
    .map_err(rt_err)?
}

enum SourceRoot {
    Dir(Dir),
    Single(Dir, Name),
}

/// One line of the new entries file.
enum Item {
    /// A record built by this backup.
    Rec(Box<EntryRecord>),
    /// Records of the parent's entries file, copied as they are (a reused
    /// block).
    Copy(Copy),
}

/// What [`Writer::file`] gives: a new record, or the parent's record of
/// an unchanged file, copied as it is.
enum FileOut {
    Rec(Box<EntryRecord>),
    Copy(Copy),
}

/// A reused block, or records of unchanged files: `len` bytes at `offset`
/// in the parent's entries file, holding `lines` records.
struct Copy {
    offset: u64,
    len: u64,
    lines: u64,
}

/// A directory being walked: its block is done, its subdirectories are
/// entered one by one.
struct Frame {
    rel: RelPath,
    subdirs: Vec<(Name, Stat)>,
    next: usize,
    record_idx: usize,
}

impl Writer<'_> {
    fn warn(&mut self, rel: &RelPath, op: &str, detail: String, skipped: bool) -> Result<()> {
        if skipped {
            self.stats.skipped += 1;
            self.stats.unreadable += 1;
        }
        self.progress
            .suspend(|| eprintln!("snap: warning: {op} {rel}: {detail}"));
        self.facts.emit(
            Decision::Warn,
            skipped.then_some(crate::error::ErrorId::E_PARTIAL),
            Event::BackupWarning {
                path: rel.to_string(),
                op: op.to_owned(),
                detail,
                entry_skipped: skipped,
            },
        )
    }

    /// Pre-order walk. Per directory: its record, then its block (its
    /// non-directory entries in bytewise name order), then each
    /// subdirectory's subtree in name order. Restore relies on a directory
    /// preceding what it holds and a hard link's leader preceding it.
    async fn walk(
        &mut self,
        root: &Dir,
        scanner: &scan::Scanner<'_>,
        load_parent: impl FnOnce() -> Result<Option<Parent>>,
    ) -> Result<()> {
        let rel = RelPath::root();
        let st = root
            .stat_self()
            .map_err(|e| Error::io("stat", "source", e))?;
        let dup = root
            .open_path(&rel)
            .map_err(|e| Error::io("open", "source", e))?;
        let listing = scanner
            .root(&rel, dup)
            .map_err(|e| Error::io("list", "source", e))?;
        self.parent = load_parent()?;
        let mut stack = vec![self.enter(listing, rel, &st).await?];
        while let Some(top) = stack.last_mut() {
            if top.next == top.subdirs.len() {
                let done = stack.pop().expect("non-empty stack");
                // Basic keeps directories only as parents of what they hold.
                if self.tier == PreservationTier::Basic
                    && done.record_idx != 0
                    && self.next_idx() == done.record_idx + 1
                {
                    // Still pending: `flush` holds back trailing directories.
                    debug_assert!(self.base <= done.record_idx);
                    self.pending.pop_back();
                    self.records -= 1;
                    self.stats.dirs -= 1;
                    self.stats.skipped += 1;
                }
                continue;
            }
            crate::interrupt::check()?;
            let (name, st) = top.subdirs[top.next].clone();
            top.next += 1;
            let rel = top.rel.join(name);
            match scanner.take(&rel) {
                scan::Scanned::Listed(listing) => {
                    let frame = self.enter(listing, rel, &st).await?;
                    stack.push(frame);
                }
                scan::Scanned::Failed(op, e) => self.warn(&rel, op, e.to_string(), true)?,
            }
        }
        Ok(())
    }

    /// Records directory `rel` (listed, every entry stat'ed) and its block,
    /// and returns the frame that walks its subdirectories.
    async fn enter(&mut self, listing: scan::Listing, rel: RelPath, st: &Stat) -> Result<Frame> {
        let scan::Listing {
            dir,
            files,
            subdirs,
            failed,
            excluded,
        } = listing;
        self.stats.skipped += excluded;
        for (name, e) in failed {
            self.warn(&rel.join(name), "stat", e.to_string(), true)?;
        }
        let rec = self.base_record(&rel, EntryKind::Dir, st);
        let rec = self.with_fd_meta(rec, &*dir, &rel)?;
        let record_idx = self.next_idx();
        self.push_rec(rec);
        let before = self.records;
        self.stats.dirs += 1;
        let (key, ctime) = self.children_key(&files);
        match self.reusable_block(&rel, &key, &files) {
            Some(copy) => {
                self.reuse_block(&files);
                self.push_copy(copy);
            }
            None => {
                let parent = self.parent.as_ref().and_then(|p| {
                    let d = p.dirs.get(&rel.to_bytes())?;
                    let any_file = files.iter().any(|(_, s)| s.kind == FileKind::File);
                    any_file.then(|| p.files(d.block.0, d.block.1))
                });
                self.block = parent.transpose()?.unwrap_or_default();
                for (name, st) in files {
                    let crel = rel.join(name.clone());
                    self.entry(&dir, &name, &crel, st).await?;
                }
                self.block = Block::default();
            }
        }
        let children = self.records - before;
        if let Some(Item::Rec(r)) = self.pending.get_mut(record_idx - self.base) {
            r.children = Some(children);
            r.children_key = Some(key.to_hex().to_string());
            r.children_ctime = ctime;
        }
        self.flush(false).await?;
        Ok(Frame {
            rel,
            subdirs,
            next: 0,
            record_idx,
        })
    }

    /// The children key of a block: BLAKE3-256 hex over, per entry in name
    /// order, the name and the stat fields a record is built from (atime
    /// only from tier extended, which records it); and the newest ctime.
    fn children_key(&self, files: &[(Name, Stat)]) -> (blake3::Hash, Option<crate::fs::Time>) {
        let mut h = blake3::Hasher::new();
        h.update(b"snap children key 1\0");
        let mut newest: Option<crate::fs::Time> = None;
        for (name, s) in files {
            let atime = if self.tier >= PreservationTier::Extended {
                s.atime
            } else {
                crate::fs::Time { sec: 0, nsec: 0 }
            };
            let kind = match s.kind {
                FileKind::File => 1u64,
                FileKind::Dir => 2,
                FileKind::Symlink => 3,
                FileKind::Fifo => 4,
                FileKind::Char => 5,
                FileKind::Block => 6,
                FileKind::Socket => 7,
            };
            let fields = [
                name.as_bytes().len() as u64,
                kind,
                u64::from(s.mode),
                u64::from(s.nlink),
                u64::from(s.uid),
                u64::from(s.gid),
                s.size,
                s.blocks,
                s.ino,
                (u64::from(s.dev.0) << 32) | u64::from(s.dev.1),
                (u64::from(s.rdev.0) << 32) | u64::from(s.rdev.1),
                s.mtime.sec as u64,
                u64::from(s.mtime.nsec),
                s.ctime.sec as u64,
                u64::from(s.ctime.nsec),
                atime.sec as u64,
                u64::from(atime.nsec),
            ];
            let mut buf = [0u8; 17 * 8];
            for (i, f) in fields.iter().enumerate() {
                buf[i * 8..i * 8 + 8].copy_from_slice(&f.to_le_bytes());
            }
            h.update(&buf);
            h.update(name.as_bytes());
            newest = newest.max(Some(s.ctime));
        }
        (h.finalize(), newest)
    }

    /// Whether this tier keeps an entry of this kind (directories aside).
    fn keeps(&self, kind: FileKind) -> bool {
        match kind {
            FileKind::File => true,
            FileKind::Symlink | FileKind::Fifo => self.tier >= PreservationTier::Extended,
            FileKind::Char | FileKind::Block | FileKind::Socket => {
                self.tier == PreservationTier::Full
            }
            FileKind::Dir => false,
        }
    }

    /// The parent's block for directory `rel` when it can be copied as it
    /// is (see [`SnapshotStats::dirs_unchanged`]): as lines of the parent's
    /// entries file.
    fn reusable_block(
        &self,
        rel: &RelPath,
        key: &blake3::Hash,
        files: &[(Name, Stat)],
    ) -> Option<Copy> {
        // Tier full reads xattrs and inode flags of every entry again.
        if self.tier == PreservationTier::Full || files.is_empty() {
            return None;
        }
        let p = self.parent.as_ref()?;
        let d = p.dirs.get(&rel.to_bytes())?;
        let settled = d.ctime.is_some_and(|c| c < p.settled);
        // A hard link's record depends on which name the walk meets first,
        // which other directories decide.
        let linked = files.iter().any(|(_, s)| s.nlink > 1);
        let kept = files.iter().filter(|(_, s)| self.keeps(s.kind)).count() as u64;
        (d.key == *key && settled && !linked && kept == d.children).then_some(Copy {
            offset: d.block.0,
            len: d.block.1,
            lines: d.children,
        })
    }

    /// Counts a copied block in the stats, as [`Writer::entry`] would have.
    fn reuse_block(&mut self, files: &[(Name, Stat)]) {
        self.stats.dirs_unchanged += 1;
        for (_, s) in files {
            match s.kind {
                _ if !self.keeps(s.kind) => self.stats.skipped += 1,
                FileKind::File => {
                    self.stats.files += 1;
                    self.stats.files_unchanged += 1;
                    self.stats.bytes += s.size;
                    self.progress.inc(s.size);
                }
                FileKind::Symlink => self.stats.symlinks += 1,
                _ => self.stats.special += 1,
            }
        }
    }

    fn base_record(&self, rel: &RelPath, kind: EntryKind, st: &Stat) -> EntryRecord {
        let mut r = EntryRecord::new(rel, kind, st.mode, st.mtime);
        if self.tier >= PreservationTier::Extended {
            r.uid = Some(st.uid);
            r.gid = Some(st.gid);
            r.atime = Some(st.atime);
        }
        if kind == EntryKind::File {
            r.ctime = Some(st.ctime);
            r.ino = Some(st.ino);
            r.dev = Some(DevNum {
                major: st.dev.0,
                minor: st.dev.1,
            });
        }
        if self.tier == PreservationTier::Full {
            r.ctime = Some(st.ctime);
            r.user = self.users.get(&st.uid).cloned();
            r.group = self.groups.get(&st.gid).cloned();
        }
        r
    }

    /// Adds what tier full reads through an open descriptor: xattrs
    /// (`flistxattr`) and inode flags (`FS_IOC_GETFLAGS`).
    fn with_fd_meta(
        &mut self,
        mut rec: EntryRecord,
        f: &impl std::os::fd::AsFd,
        rel: &RelPath,
    ) -> Result<EntryRecord> {
        if self.tier < PreservationTier::Full {
            return Ok(rec);
        }
        self.store_xattrs(&mut rec, fd::xattrs(f), rel)?;
        match fd::flags(f) {
            Ok(flags) => rec.flags = Some(flags),
            // No inode flags on this filesystem: the field stays absent.
            Err(e) if crate::fs::flags_unsupported(&e) => {}
            Err(e) => self.warn(rel, "FS_IOC_GETFLAGS", e.to_string(), false)?,
        }
        Ok(rec)
    }

    /// Adds the xattrs of an entry that cannot be opened (symlink, FIFO,
    /// device, socket), read by name without following it.
    fn with_name_meta(
        &mut self,
        mut rec: EntryRecord,
        dir: &Dir,
        name: &Name,
        rel: &RelPath,
    ) -> Result<EntryRecord> {
        if self.tier == PreservationTier::Full {
            self.store_xattrs(&mut rec, dir.xattrs_nofollow(name), rel)?;
        }
        Ok(rec)
    }

    #[allow(clippy::type_complexity)]
    fn store_xattrs(
        &mut self,
        rec: &mut EntryRecord,
        read: std::io::Result<(Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, std::io::Error)>)>,
        rel: &RelPath,
    ) -> Result<()> {
        let (ok, failed) = match read {
            Ok(x) => x,
            Err(e) => return self.warn(rel, "listxattr", e.to_string(), false),
        };
        for (name, e) in failed {
            self.warn(
                rel,
                &format!("getxattr {}", String::from_utf8_lossy(&name)),
                e.to_string(),
                false,
            )?;
        }
        let mut map = std::collections::BTreeMap::new();
        for (name, value) in ok {
            match String::from_utf8(name) {
                Ok(n) => {
                    map.insert(n, base64::engine::general_purpose::STANDARD.encode(value));
                }
                Err(n) => self.warn(
                    rel,
                    &format!("getxattr {}", String::from_utf8_lossy(n.as_bytes())),
                    "xattr name is not UTF-8; not stored".into(),
                    false,
                )?,
            }
        }
        rec.xattrs = Some(map);
        Ok(())
    }

    /// Records one non-directory entry found in `dir`.
    async fn entry(&mut self, dir: &Dir, name: &Name, rel: &RelPath, st: Stat) -> Result<()> {
        let extended = self.tier >= PreservationTier::Extended;
        if extended
            && st.nlink > 1
            && matches!(st.kind, FileKind::File | FileKind::Symlink | FileKind::Fifo)
        {
            if let Some(leader) = self.hardlinks.get(&(st.dev, st.ino)) {
                let mut rec = self.base_record(rel, EntryKind::Hardlink, &st);
                rec.set_link(&leader.clone());
                self.push_rec(rec);
                self.stats.hardlinks += 1;
                return Ok(());
            }
        }
        let rec = match st.kind {
            FileKind::File => match self.file(dir, name, rel, &st).await? {
                Some(r) => r,
                None => return Ok(()),
            },
            FileKind::Symlink if extended => {
                let target = match dir.read_link(name) {
                    Ok(t) => t,
                    Err(e) => return self.warn(rel, "readlink", e.to_string(), true),
                };
                let mut r = self.base_record(rel, EntryKind::Symlink, &st);
                r.set_target(&target);
                self.stats.symlinks += 1;
                FileOut::Rec(self.with_name_meta(r, dir, name, rel)?.into())
            }
            FileKind::Fifo if extended => {
                self.stats.special += 1;
                let r = self.base_record(rel, EntryKind::Fifo, &st);
                FileOut::Rec(self.with_name_meta(r, dir, name, rel)?.into())
            }
            FileKind::Char | FileKind::Block | FileKind::Socket
                if self.tier == PreservationTier::Full =>
            {
                let kind = match st.kind {
                    FileKind::Char => EntryKind::Char,
                    FileKind::Block => EntryKind::Block,
                    _ => EntryKind::Socket,
                };
                let mut r = self.base_record(rel, kind, &st);
                if kind != EntryKind::Socket {
                    r.rdev = Some(DevNum {
                        major: st.rdev.0,
                        minor: st.rdev.1,
                    });
                }
                self.stats.special += 1;
                FileOut::Rec(self.with_name_meta(r, dir, name, rel)?.into())
            }
            _ => {
                // Not kept by this tier.
                self.stats.skipped += 1;
                return Ok(());
            }
        };
        if extended && st.nlink > 1 {
            self.hardlinks.insert((st.dev, st.ino), rel.clone());
        }
        match rec {
            FileOut::Rec(rec) => self.push_rec(rec),
            FileOut::Copy(c) => self.push_copy(c),
        }
        Ok(())
    }

    /// The parent snapshot's content for `rel` when its stat key matches
    /// `st`. Its chunks are in the index: the commit protocol makes the
    /// parent's index files durable before its snapshot record.
    fn unchanged(&self, rel: &RelPath, st: &Stat) -> Option<ParentFile> {
        let p = *self.block.files.get(&rel.to_bytes())?;
        let same = p.size == st.size
            && p.mtime == st.mtime
            && p.ctime == st.ctime
            && p.ino == st.ino
            && (p.dev.major, p.dev.minor) == st.dev;
        same.then_some(p)
    }

    fn send(&mut self, msg: Msg) -> Result<()> {
        let tx = self.tx.as_ref().ok_or_else(pipeline::downstream_gone)?;
        tx.send(msg).map_err(|_| pipeline::downstream_gone())
    }

    /// Records one regular file: its content from the parent snapshot when
    /// unchanged, else read through io_uring and sent to the chunker.
    /// `Ok(None)` when it could not be read (reported as a warning).
    async fn file(
        &mut self,
        dir: &Dir,
        name: &Name,
        rel: &RelPath,
        st: &Stat,
    ) -> Result<Option<FileOut>> {
        let mut rec = self.base_record(rel, EntryKind::File, st);
        if let Some(p) = self.unchanged(rel, st) {
            // The record would be the parent's, byte for byte: every field
            // but atime is covered by the stat key (mode and owner changes
            // move ctime), and tier full reads xattrs and flags again.
            let atime_same = self.tier < PreservationTier::Extended || p.atime == Some(st.atime);
            if self.tier != PreservationTier::Full && atime_same {
                self.stats.files += 1;
                self.stats.files_unchanged += 1;
                self.stats.bytes += p.size;
                self.progress.inc(p.size);
                return Ok(Some(FileOut::Copy(Copy {
                    offset: p.line.0,
                    len: p.line.1,
                    lines: 1,
                })));
            }
            let c: ParentContent =
                serde_json::from_slice(self.block.line(&p)).map_err(|e| Error::Integrity {
                    path: rel.to_string(),
                    detail: format!("malformed parent record: {e}"),
                })?;
            let stored = match &c.sparse {
                Some(e) => e.iter().map(|[_, l]| *l).sum(),
                None => p.size,
            };
            rec.size = Some(p.size);
            rec.sparse = c.sparse;
            rec.chunks = Some(c.chunks);
            rec.hash = Some(c.hash);
            if self.tier == PreservationTier::Full {
                // Xattrs and inode flags are read through a descriptor,
                // opened as for reading content (O_NONBLOCK: a name swapped
                // for a FIFO since the stat cannot block the run).
                let f = match open_same_file(dir, name, st).await {
                    Ok(f) => f,
                    Err(e) => {
                        self.warn(rel, "open", e.to_string(), true)?;
                        return Ok(None);
                    }
                };
                rec = self.with_fd_meta(rec, &f, rel)?;
            }
            self.stats.files += 1;
            self.stats.files_unchanged += 1;
            self.stats.bytes += stored;
            self.progress.inc(stored);
            return Ok(Some(FileOut::Rec(rec.into())));
        }
        let fd = match open_same_file(dir, name, st).await {
            Ok(fd) => fd,
            Err(e) => {
                self.warn(rel, "open", e.to_string(), true)?;
                return Ok(None);
            }
        };
        let f = DataFile::new(fd);
        rec = self.with_fd_meta(rec, &f.as_fd(), rel)?;
        // Sparse files (tier full): read only the data extents.
        let sparse =
            if self.tier == PreservationTier::Full && st.blocks.saturating_mul(512) < st.size {
                match fd::data_extents(f.as_fd(), st.size) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        self.warn(rel, "SEEK_DATA", e.to_string(), false)?;
                        None
                    }
                }
            } else {
                None
            };
        let ranges: Vec<(u64, u64)> = match &sparse {
            Some(e) => e.clone(),
            None => vec![(0, u64::MAX)],
        };
        // The record this content belongs to: `entry` pushes it next.
        let idx = self.next_idx();
        let mut ri = 0usize;
        let mut pos = ranges.first().map_or(0, |r| r.0);
        let mut offset = 0u64; // bytes of stored content read so far
        let mut pending: Option<Vec<u8>> = None;
        // A file that may span several chunks is hashed whole here, beside
        // the chunker (which then hashes only its chunks); a smaller one's
        // hash is its one chunk's id.
        let mut whole = (st.size > u64::from(self.chunker_min)).then(blake3::Hasher::new);
        let hashed = whole.as_ref().map(|_| None);
        loop {
            crate::interrupt::check()?;
            let Some(&(start, len)) = ranges.get(ri) else {
                break;
            };
            let end = start.saturating_add(len);
            let want = match sparse {
                // Ask for one byte more than stat's size, so a file that
                // did not grow is read whole in one request.
                None => ((st.size.saturating_sub(pos)) as usize + 1).min(READ_SIZE),
                Some(_) => READ_SIZE.min((end - pos) as usize),
            };
            let buf = if want >= pipeline::RECYCLE_FROM {
                self.reads_pool.try_recv().map(|mut b| {
                    b.clear();
                    b
                })
            } else {
                Err(std::sync::mpsc::TryRecvError::Empty)
            };
            let data = match f.read_at_into(buf.unwrap_or_default(), pos, want).await {
                Ok(data) => data,
                Err(e) => {
                    if offset > 0 {
                        self.send(Msg::Discard)?;
                    }
                    self.warn(rel, "read", e.to_string(), true)?;
                    return Ok(None);
                }
            };
            // End of file (or a sparse file that shrank).
            if data.is_empty() {
                break;
            }
            let short = data.len() < want;
            if let Some(h) = whole.as_mut() {
                h.update(&data);
            }
            pos += data.len() as u64;
            offset += data.len() as u64;
            if let Some(prev) = pending.replace(data) {
                self.send(Msg::Data {
                    idx,
                    bytes: prev,
                    end: false,
                    whole: hashed,
                })?;
            }
            if pos >= end {
                ri += 1;
                match ranges.get(ri) {
                    Some(r) => pos = r.0,
                    None => break,
                }
            }
            // A short read that reached stat's size is the end of the file.
            if sparse.is_none() && short && pos >= st.size {
                break;
            }
        }
        self.send(Msg::Data {
            idx,
            bytes: pending.unwrap_or_default(),
            end: true,
            whole: whole.map(|h| Some(h.finalize())),
        })?;
        // `entry` pushes the record at `idx`; the chunker reports its chunks.
        self.waiting.insert(idx);
        f.close()
            .await
            .map_err(|e| Error::io("close", rel.to_string(), e))?;
        rec.size = Some(if sparse.is_some() { st.size } else { offset });
        rec.sparse = sparse.map(|e| e.into_iter().map(|(o, l)| [o, l]).collect());
        self.stats.files += 1;
        self.stats.bytes += offset;
        self.progress.inc(offset);
        self.progress
            .set_message(format!("{} files", self.stats.files));
        Ok(Some(FileOut::Rec(rec.into())))
    }

    fn push_rec(&mut self, rec: impl Into<Box<EntryRecord>>) {
        self.records += 1;
        self.pending.push_back(Item::Rec(rec.into()));
    }

    /// Pushes copied records, joined to the copy before them when they
    /// follow it in the parent's file (one read and one item for a run of
    /// unchanged records).
    fn push_copy(&mut self, c: Copy) {
        self.records += c.lines;
        if let Some(Item::Copy(b)) = self.pending.back_mut() {
            if b.offset + b.len == c.offset {
                b.len += c.len;
                b.lines += c.lines;
                return;
            }
        }
        self.pending.push_back(Item::Copy(c));
    }

    /// The index the next item gets.
    fn next_idx(&self) -> usize {
        self.base + self.pending.len()
    }

    /// Fills in the chunks the chunker has reported; with `wait`, waits for
    /// the first report when there is none yet.
    fn absorb(&mut self, wait: bool) {
        let mut first = wait.then(|| self.contents.recv());
        loop {
            let c = match first.take() {
                Some(Ok(c)) => c,
                // The chunker stopped; its result says why.
                Some(Err(_)) => return,
                None => match self.contents.try_recv() {
                    Ok(c) => c,
                    Err(_) => return,
                },
            };
            self.waiting.remove(&c.idx);
            if let Some(Item::Rec(rec)) = self.pending.get_mut(c.idx - self.base) {
                rec.chunks = Some(c.chunks);
                rec.hash = Some(c.hash);
            }
        }
    }

    /// Hands the items that are final to the entries file: those before
    /// the first file whose chunks are not reported yet and, at tier basic
    /// (unless `all`), before the directory records that only directory
    /// records follow yet, which the walk may still drop. The window is
    /// kept under [`MAX_PENDING`] items by waiting for the chunker.
    ///
    /// # Errors
    ///
    /// As [`EntriesOut::push`].
    async fn flush(&mut self, all: bool) -> Result<()> {
        self.absorb(false);
        let is_dir = |i: &Item| matches!(i, Item::Rec(r) if r.kind == EntryKind::Dir);
        loop {
            let mut limit = self.waiting.first().copied().unwrap_or(usize::MAX);
            if self.tier == PreservationTier::Basic && !all {
                let dirs = self.pending.iter().rev().take_while(|i| is_dir(i)).count();
                limit = limit.min(self.next_idx() - dirs);
            }
            while self.base < limit {
                let Some(item) = self.pending.pop_front() else {
                    break;
                };
                self.base += 1;
                self.out.push(item, self.parent.as_ref(), self.repo)?;
            }
            let stuck = !self.waiting.is_empty() && (all || self.pending.len() > MAX_PENDING);
            if !stuck {
                return Ok(());
            }
            let before = self.waiting.len();
            self.absorb(true);
            if self.waiting.len() == before {
                // The chunker is gone without reporting: it failed.
                return Err(pipeline::downstream_gone());
            }
        }
    }

    /// Steps 3-6 of the commit protocol, once every pack is durable: the
    /// index file, the entries file, then the snapshot record (the commit
    /// point).
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &mut self,
        chunked: pipeline::Chunked,
        packed: pipeline::Packed,
        time: String,
        host: String,
        source: &Path,
        opts: &BackupOptions,
        parent: Option<String>,
        started: Instant,
        repo: &Repo,
    ) -> Result<BackupOutcome> {
        // Every file's chunks are reported once the chunker has ended.
        self.flush(true).await?;
        self.stats.new_blobs = chunked.new_blobs;
        self.stats.new_blob_bytes = chunked.new_blob_bytes;
        self.stats.packs = packed.packs.len() as u64;
        self.stats.bytes_added = packed.bytes_added;
        let mut syncs = packed.syncs;
        let ser = |what: &str, e: serde_json::Error| Error::Integrity {
            path: what.to_owned(),
            detail: format!("cannot serialise: {e}"),
        };
        // One index file per at most INDEX_BLOBS_PER_FILE blobs, so each
        // stays within what readers accept (INDEX_MAX).
        let mut groups: Vec<Vec<crate::repo::IndexPack>> = Vec::new();
        let mut in_group = usize::MAX;
        for p in packed.packs {
            if in_group.saturating_add(p.blobs.len()) > crate::repo::INDEX_BLOBS_PER_FILE {
                groups.push(Vec::new());
                in_group = 0;
            }
            in_group += p.blobs.len();
            groups.last_mut().expect("pushed above").push(p);
        }
        for packs in groups {
            let index = IndexFile { v: 1, packs };
            let bytes = serde_json::to_vec(&index).map_err(|e| ser("index", e))?;
            self.stats.bytes_added += commit::put_index(repo, &bytes, &mut syncs)?.1;
        }
        let count = self.out.count;
        let out = std::mem::replace(&mut self.out, EntriesOut::new(false));
        let (entries_id, added) = out.finish(self.parent.as_ref(), repo, &mut syncs)?;
        self.stats.bytes_added += added;
        self.stats.duration_ms = started.elapsed().as_millis() as u64;
        use std::os::unix::ffi::OsStrExt;
        let (src_text, src_b64) = crate::fs::bytes_to_stored(source.as_os_str().as_bytes());
        let record = SnapshotRecord {
            v: 1,
            time,
            host,
            source: src_text,
            source_b64: src_b64,
            tier: opts.policy.tier,
            tags: opts.tags.clone(),
            policy: opts.policy.clone(),
            parent,
            entries: EntriesRef {
                id: entries_id,
                count,
            },
            stats: self.stats.clone(),
            durable: syncs.enabled,
        };
        let bytes = serde_json::to_vec_pretty(&record).map_err(|e| ser("snapshot", e))?;
        let snapshot_id = blake3::hash(&bytes).to_hex().to_string();
        // Last chance to stop: nothing is visible until the record is.
        crate::interrupt::check()?;
        // The barrier (everything the record names is durable before it,
        // also what this run found in place and reused: the parent's
        // entries file, packs and index files of a run without syncs or a
        // killed one), then the commit point.
        commit::commit_snapshot(repo, &snapshot_id, &bytes, &mut syncs)?;
        Ok(BackupOutcome {
            snapshot_id,
            record,
            syncs,
        })
    }
}
