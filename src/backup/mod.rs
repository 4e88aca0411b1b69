//! Backup: walk the source through dirfds, read files through io_uring,
//! cut them into FastCDC chunks, store new blobs in packs, and commit a
//! snapshot with the protocol of `docs/FORMAT.md`.
//!
//! Side effects: reads the source (with `O_NOATIME` where permitted, so
//! atimes are left alone) and writes packs, an index file, an entries file
//! and the snapshot record into the repository. Nothing becomes visible as a
//! snapshot until the final rename of the record.

mod pipeline;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::Instant;

use base64::Engine as _;
use globset::{GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event};
use crate::fs::{fd, DataFile, Dir, FileKind, Name, RelPath, Stat};
use crate::policy::{Policy, PreservationTier};
use crate::repo::sidecar::{DevNum, EntryKind, EntryRecord};
use crate::repo::{
    BlobLocation, EntriesRef, IndexFile, Repo, SnapshotRecord, SnapshotStats, Syncs,
};
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

/// Exclude patterns compiled for matching (see [`Policy::excludes`]).
struct Excludes {
    by_name: GlobSet,
    by_path: GlobSet,
}

impl Excludes {
    fn new(patterns: &[String]) -> Result<Self> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        for p in patterns {
            let (set, pat) = match p.strip_prefix('/') {
                Some(rest) => (&mut by_path, rest),
                None if p.contains('/') => (&mut by_path, p.as_str()),
                None => (&mut by_name, p.as_str()),
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
        })
    }

    fn matches(&self, rel: &RelPath) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let Some(name) = rel.file_name() else {
            return false;
        };
        let name_path = Path::new(std::ffi::OsStr::from_bytes(name.as_bytes()));
        if self.by_name.is_match(name_path) {
            return true;
        }
        let bytes = rel.to_bytes();
        self.by_path
            .is_match(Path::new(std::ffi::OsStr::from_bytes(&bytes)))
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
struct ParentFile {
    size: u64,
    mtime: crate::fs::Time,
    ctime: crate::fs::Time,
    ino: u64,
    dev: DevNum,
    sparse: Option<Vec<[u64; 2]>>,
    chunks: Vec<blake3::Hash>,
    hash: String,
}

/// The fields of a sidecar record the parent lookup needs, borrowed from
/// the entries file (the rest is skipped unparsed).
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
    ctime: Option<crate::fs::Time>,
    ino: Option<u64>,
    dev: Option<DevNum>,
    sparse: Option<Vec<[u64; 2]>>,
    #[serde(borrow)]
    chunks: Option<Vec<&'a str>>,
    hash: Option<String>,
}

/// The running state of the walk of one backup (the walker stage of
/// [`pipeline`]).
struct Writer<'a> {
    tier: PreservationTier,
    /// The repository's minimum chunk size: a file no larger is always
    /// one chunk.
    chunker_min: u32,
    /// To the chunker; `None` once the walk is over.
    tx: Option<SyncSender<Msg>>,
    /// Large read buffers the chunker is done with.
    reads_pool: std::sync::mpsc::Receiver<Vec<u8>>,
    known: &'a crate::repo::IdMap<BlobLocation>,
    /// Regular files of the parent snapshot by raw path.
    parent: PathMap<ParentFile>,
    stats: SnapshotStats,
    records: Vec<EntryRecord>,
    hardlinks: HashMap<((u32, u32), u64), RelPath>,
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
    facts: &'a mut Emitter,
    progress: &'a indicatif::ProgressBar,
}

/// Loads the regular files of `parent` whose content may be reused: those
/// with a full stat key and a ctime at least 1 s before the parent started
/// (see [`SnapshotStats::files_unchanged`]).
///
/// # Errors
///
/// As [`Repo::read_entries`].
fn parent_files(repo: &Repo, parent: &SnapshotRecord) -> Result<PathMap<ParentFile>> {
    let Ok(start) = humantime::parse_rfc3339(&parent.time) else {
        return Ok(PathMap::default());
    };
    let Ok(start) = start.duration_since(std::time::UNIX_EPOCH) else {
        return Ok(PathMap::default());
    };
    let settled = crate::fs::Time {
        sec: start.as_secs() as i64 - 1,
        nsec: start.subsec_nanos(),
    };
    let (path, bytes) = repo.read_entries_bytes(&parent.entries.id)?;
    let parse = |part: &[u8], first_line: usize| -> Result<Vec<(Vec<u8>, ParentFile)>> {
        let mut out = Vec::new();
        for (i, line) in part.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let r: ParentLine = serde_json::from_slice(line).map_err(|e| Error::Integrity {
                path: format!("{path}:{}", first_line + i),
                detail: format!("malformed record: {e}"),
            })?;
            if r.v != crate::repo::sidecar::SIDECAR_VERSION || r.kind != EntryKind::File {
                continue;
            }
            let (Some(size), Some(ctime), Some(ino), Some(dev), Some(chunks), Some(hash)) =
                (r.size, r.ctime, r.ino, r.dev, r.chunks, r.hash)
            else {
                continue;
            };
            if ctime >= settled {
                continue;
            }
            let Ok(chunks) = chunks
                .iter()
                .map(blake3::Hash::from_hex)
                .collect::<std::result::Result<Vec<_>, _>>()
            else {
                continue;
            };
            let Ok(rel) = RelPath::from_stored(&r.path, r.path_b64.as_deref()) else {
                continue;
            };
            out.push((
                rel.to_bytes(),
                ParentFile {
                    size,
                    mtime: r.mtime,
                    ctime,
                    ino,
                    dev,
                    sparse: r.sparse,
                    chunks,
                    hash,
                },
            ));
        }
        Ok(out)
    };
    // One part per core (the index loads beside it).
    let parts = crate::repo::split_lines(&bytes, crate::par::cores());
    let found = crate::par::map(&parts, |&(part, first)| parse(part, first))
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let mut out = PathMap::default();
    out.reserve(found.iter().map(Vec::len).sum());
    for part in found {
        out.extend(part);
    }
    Ok(out)
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
    let excludes = Excludes::new(&opts.policy.excludes)?;

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
    let host = crate::fs::hostname();
    let parent = snapshots
        .iter()
        .rev()
        .find(|(_, r)| r.host == host && r.source == src_display);
    // The index and the parent's files load side by side. Content is
    // taken from the parent only when it used the same tier (the tier
    // decides whether sparse maps are kept).
    let (known, parent_files) = std::thread::scope(|s| {
        let index = s.spawn(|| repo.load_index());
        let files = match parent {
            Some((_, rec)) if rec.tier == opts.policy.tier => parent_files(repo, rec),
            _ => Ok(PathMap::default()),
        };
        let index = crate::par::join(index);
        Ok::<_, Error>((index?, files?))
    })?;
    let parent = parent.map(|(id, _)| id.clone());
    // Owner names for tier full, from this host's /etc (first name wins).
    let (mut users, mut groups) = (HashMap::new(), HashMap::new());
    if opts.policy.tier == PreservationTier::Full {
        let (u, g) = crate::fs::id_names(Path::new("/etc"))
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
    let (packs_back_tx, packs_back) = sync_channel(2);
    let recycle = pipeline::Recycle {
        reads_back,
        packs_back,
    };
    let mut w = Writer {
        tier: opts.policy.tier,
        chunker_min: repo.config.chunker.min,
        tx: Some(tx),
        reads_pool,
        known: &known,
        parent: parent_files,
        stats: SnapshotStats::default(),
        records: Vec::new(),
        hardlinks: HashMap::new(),
        users,
        groups,
        facts,
        progress,
    };
    let durable = opts.policy.require_backup_durability;
    let chunker_params = repo.config.chunker;
    let rt_err = |e| Error::io("start io_uring runtime", repo.path.display(), e);
    let (walked, chunked, packed) = std::thread::scope(|s| {
        let known = &known;
        let chunker = std::thread::Builder::new()
            .name("snap-chunker".into())
            .spawn_scoped(s, move || {
                pipeline::chunker(rx, pack_tx, chunker_params, known, recycle)
            })
            .map_err(|e| Error::io("spawn", "chunker thread", e))?;
        let packer = std::thread::Builder::new()
            .name("snap-packer".into())
            .spawn_scoped(s, move || {
                pipeline::packer(pack_rx, repo, durable, packs_back_tx)
            })
            .map_err(|e| Error::io("spawn", "packer thread", e))?;
        let walked = crate::fs::block_on(async {
            match &root {
                SourceRoot::Dir(d) => w.walk(d, &excludes).await,
                SourceRoot::Single(pdir, name) => {
                    let st = pdir
                        .stat(name)
                        .map_err(|e| Error::io("stat", &src_display, e))?;
                    let rel = RelPath::root().join(name.clone());
                    w.entry(pdir, name, &rel, st).await
                }
            }
        })
        .map_err(rt_err)
        .and_then(|r| r);
        // Closing the channel lets the chunker flush its last pack.
        w.tx = None;
        let chunked = crate::par::join(chunker);
        let packed = crate::par::join(packer);
        Ok::<_, Error>((walked, chunked, packed))
    })?;
    // The first stage to fail names the cause; a stage whose successor
    // stopped reports only that.
    let packed = packed?;
    let chunked = chunked?;
    walked?;
    crate::fs::block_on(w.commit(
        chunked, packed, time, host, &source, opts, parent, started, repo,
    ))
    .map_err(rt_err)?
}

enum SourceRoot {
    Dir(Dir),
    Single(Dir, Name),
}

struct Frame {
    dir: Dir,
    rel: RelPath,
    children: Vec<Name>,
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

    /// Pre-order walk: a directory's record, then its subtree, children in
    /// bytewise name order. Restore relies on this order.
    async fn walk(&mut self, root: &Dir, excludes: &Excludes) -> Result<()> {
        let rel = RelPath::root();
        let st = root
            .stat_self()
            .map_err(|e| Error::io("stat", "source", e))?;
        let dup = root
            .open_path(&rel)
            .map_err(|e| Error::io("open", "source", e))?;
        let rec = self.base_record(&rel, EntryKind::Dir, &st);
        let rec = self.with_fd_meta(rec, &dup, &rel)?;
        self.records.push(rec);
        self.stats.dirs += 1;
        let children = match dup.list() {
            Ok(c) => c,
            Err(e) => return Err(Error::io("list", "source", e)),
        };
        let mut stack = vec![Frame {
            dir: dup,
            rel,
            children,
            next: 0,
            record_idx: 0,
        }];
        while let Some(top) = stack.last_mut() {
            if top.next == top.children.len() {
                let done = stack.pop().expect("non-empty stack");
                // Basic keeps directories only as parents of what they hold.
                if self.tier == PreservationTier::Basic
                    && done.record_idx != 0
                    && self.records.len() == done.record_idx + 1
                {
                    self.records.pop();
                    self.stats.dirs -= 1;
                    self.stats.skipped += 1;
                }
                continue;
            }
            crate::interrupt::check()?;
            let name = top.children[top.next].clone();
            top.next += 1;
            let rel = top.rel.join(name.clone());
            if excludes.matches(&rel) {
                self.stats.skipped += 1;
                continue;
            }
            let st = match top.dir.stat(&name) {
                Ok(s) => s,
                Err(e) => {
                    self.warn(&rel, "stat", e.to_string(), true)?;
                    continue;
                }
            };
            if st.kind == FileKind::Dir {
                let sub = match top.dir.open_dir(&name) {
                    Ok(d) => d,
                    Err(e) => {
                        self.warn(&rel, "open directory", e.to_string(), true)?;
                        continue;
                    }
                };
                let children = match sub.list() {
                    Ok(c) => c,
                    Err(e) => {
                        self.warn(&rel, "list", e.to_string(), true)?;
                        continue;
                    }
                };
                let rec = self.base_record(&rel, EntryKind::Dir, &st);
                let rec = self.with_fd_meta(rec, &sub, &rel)?;
                let record_idx = self.records.len();
                self.records.push(rec);
                self.stats.dirs += 1;
                stack.push(Frame {
                    dir: sub,
                    rel,
                    children,
                    next: 0,
                    record_idx,
                });
            } else {
                let frame = stack.last().expect("non-empty stack");
                self.entry(&frame.dir, &name, &rel, st).await?;
            }
        }
        Ok(())
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
                self.records.push(rec);
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
                self.with_name_meta(r, dir, name, rel)?
            }
            FileKind::Fifo if extended => {
                self.stats.special += 1;
                let r = self.base_record(rel, EntryKind::Fifo, &st);
                self.with_name_meta(r, dir, name, rel)?
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
                self.with_name_meta(r, dir, name, rel)?
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
        self.records.push(rec);
        Ok(())
    }

    /// The parent snapshot's content for `rel` when its stat key matches
    /// `st` and every chunk is still in the index.
    fn unchanged(&self, rel: &RelPath, st: &Stat) -> Option<&ParentFile> {
        let p = self.parent.get(&rel.to_bytes())?;
        let same = p.size == st.size
            && p.mtime == st.mtime
            && p.ctime == st.ctime
            && p.ino == st.ino
            && (p.dev.major, p.dev.minor) == st.dev;
        let stored = p.chunks.iter().all(|id| self.known.contains_key(id));
        (same && stored).then_some(p)
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
    ) -> Result<Option<EntryRecord>> {
        let mut rec = self.base_record(rel, EntryKind::File, st);
        if let Some(p) = self.unchanged(rel, st) {
            rec.size = Some(p.size);
            rec.sparse = p.sparse.clone();
            rec.chunks = Some(p.chunks.iter().map(|c| c.to_hex().to_string()).collect());
            rec.hash = Some(p.hash.clone());
            let stored = match &p.sparse {
                Some(e) => e.iter().map(|[_, l]| *l).sum(),
                None => p.size,
            };
            if self.tier == PreservationTier::Full {
                // Xattrs and inode flags are read through a descriptor,
                // opened as for reading content (O_NONBLOCK: a name swapped
                // for a FIFO since the stat cannot block the run).
                let f = match dir.open_file_read_uring(name).await {
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
            return Ok(Some(rec));
        }
        let fd = match dir.open_file_read_uring(name).await {
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
        let idx = self.records.len();
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
        Ok(Some(rec))
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
        for c in chunked.contents {
            let rec = &mut self.records[c.idx];
            rec.chunks = Some(c.chunks);
            rec.hash = Some(c.hash);
        }
        self.stats.new_blobs = chunked.new_blobs;
        self.stats.new_blob_bytes = chunked.new_blob_bytes;
        self.stats.packs = packed.packs.len() as u64;
        self.stats.bytes_added = packed.bytes_added;
        let mut syncs = packed.syncs;
        let index = IndexFile {
            v: 1,
            packs: packed.packs,
        };
        let ser = |what: &str, e: serde_json::Error| Error::Integrity {
            path: what.to_owned(),
            detail: format!("cannot serialise: {e}"),
        };
        if !index.packs.is_empty() {
            let bytes = serde_json::to_vec(&index).map_err(|e| ser("index", e))?;
            let id = blake3::hash(&bytes).to_hex().to_string();
            let fname = Name::new(format!("{id}.idx").as_bytes())
                .map_err(|e| Error::Usage(e.to_string()))?;
            let dir = RelPath::parse(b"index").map_err(|e| Error::Usage(e.to_string()))?;
            self.stats.bytes_added += repo.write_atomic(&dir, &fname, bytes, &mut syncs).await?;
        }
        // The parent's files are no longer needed: give their memory back
        // before the entries file is built.
        self.parent = PathMap::default();
        // One slice of the records per core, serialised side by side.
        let per = self.records.len().div_ceil(crate::par::cores()).max(4096);
        let slices: Vec<&[EntryRecord]> = self.records.chunks(per).collect();
        let parts = crate::par::map(&slices, |part| {
            let mut out = Vec::with_capacity(part.len() * 400);
            for r in *part {
                serde_json::to_writer(&mut out, r)?;
                out.push(b'\n');
            }
            Ok::<_, serde_json::Error>(out)
        })
        .into_iter()
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ser("entries", e))?;
        let mut hasher = blake3::Hasher::new();
        for part in &parts {
            hasher.update(part);
        }
        let entries_id = hasher.finalize().to_hex().to_string();
        let dir = repo.fanout_dir("entries", &entries_id, &mut syncs)?;
        let fname = Name::new(format!("{entries_id}.jsonl").as_bytes())
            .map_err(|e| Error::Usage(e.to_string()))?;
        self.stats.bytes_added += repo
            .write_atomic_parts(&dir, &fname, parts, &mut syncs)
            .await?
            .0;
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
                count: self.records.len() as u64,
            },
            stats: self.stats.clone(),
            durable: syncs.enabled,
        };
        let bytes = serde_json::to_vec_pretty(&record).map_err(|e| ser("snapshot", e))?;
        let snapshot_id = blake3::hash(&bytes).to_hex().to_string();
        let fname = Name::new(format!("{snapshot_id}.json").as_bytes())
            .map_err(|e| Error::Usage(e.to_string()))?;
        let dir = RelPath::parse(b"snapshots").map_err(|e| Error::Usage(e.to_string()))?;
        // Last chance to stop: nothing is visible until this rename.
        crate::interrupt::check()?;
        // The commit point: rename into snapshots/, then fsync snapshots/.
        repo.write_atomic(&dir, &fname, bytes, &mut syncs).await?;
        Ok(BackupOutcome {
            snapshot_id,
            record,
            syncs,
        })
    }
}
