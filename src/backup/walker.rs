//! The walker: the source walked through dirfds in the entries file's
//! order, a record built per entry (the tier says which fields), file
//! contents handed to the chunker (`read.rs`), unchanged blocks and files
//! reused from the parent (`parent.rs`), records handed to the entries
//! file in order (`entries.rs`).
//!
//! Side effects: reads the source (statx, listings, xattrs, inode flags);
//! emits `backup.warning` facts.

use std::collections::HashMap;
use std::sync::mpsc::SyncSender;

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event};
use crate::fs::{fd, Dir, FileKind, Name, RelPath, Stat};
use crate::policy::PreservationTier;
use crate::repo::format::tier;
use crate::repo::sidecar::{DevNum, EntryKind, EntryRecord};
use crate::repo::{Repo, SnapshotStats};

use super::entries::{EntriesOut, Item, Reused};
use super::parent::{Block, Parent};
use super::{pipeline, scan};
use pipeline::Msg;

/// Items the walker keeps waiting for the chunker before it waits itself.
pub(super) const MAX_PENDING: usize = 1 << 16;

/// The running state of the walk of one backup (the walker stage of
/// [`pipeline`]).
pub(super) struct Walker<'a> {
    pub(super) repo: &'a Repo,
    pub(super) tier: PreservationTier,
    /// The repository's minimum chunk size: a file no larger is always
    /// one chunk.
    pub(super) chunker_min: u32,
    /// To the chunker; `None` once the walk is over.
    pub(super) tx: Option<SyncSender<Msg>>,
    /// Large read buffers the chunker is done with.
    pub(super) reads_pool: std::sync::mpsc::Receiver<Vec<u8>>,
    /// The parent snapshot's entries, when it has the same source, host
    /// and tier.
    pub(super) parent: Option<Parent>,
    /// The parent's block of the directory being walked.
    pub(super) block: Block,
    /// Records pushed so far (a copy counts its lines).
    pub(super) records: u64,
    pub(super) stats: SnapshotStats,
    /// Items not yet handed to `out`, in order; the first has index
    /// `base` (indices count every item of the walk).
    pub(super) pending: std::collections::VecDeque<Item>,
    pub(super) base: usize,
    /// Indices of file records whose chunks the chunker has not reported.
    pub(super) waiting: std::collections::BTreeSet<usize>,
    /// The chunker's reports.
    pub(super) contents: std::sync::mpsc::Receiver<pipeline::FileContent>,
    pub(super) out: EntriesOut,
    pub(super) hardlinks: HashMap<((u32, u32), u64), RelPath>,
    pub(super) users: HashMap<u32, String>,
    pub(super) groups: HashMap<u32, String>,
    pub(super) facts: &'a mut Emitter,
    pub(super) progress: &'a indicatif::ProgressBar,
    /// Told of each regular file read ([`super::OnChange`]).
    pub(super) changes: Option<super::OnChange<'a>>,
}

/// What [`Walker::file`] gives: a new record, or the parent's record of
/// an unchanged file, copied as it is.
pub(super) enum FileOut {
    Rec(Box<EntryRecord>),
    Reused(Reused),
}

/// A directory being walked: its block is done, its subdirectories are
/// entered one by one.
pub(super) struct Frame {
    pub(super) rel: RelPath,
    pub(super) subdirs: Vec<(Name, Stat)>,
    pub(super) next: usize,
    pub(super) record_idx: usize,
}

impl Walker<'_> {
    pub(super) fn warn(
        &mut self,
        rel: &RelPath,
        op: &str,
        detail: String,
        skipped: bool,
    ) -> Result<()> {
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
    pub(super) async fn walk(
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
                if !tier::keeps_empty_dirs(self.tier)
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
    pub(super) async fn enter(
        &mut self,
        listing: scan::Listing,
        rel: RelPath,
        st: &Stat,
    ) -> Result<Frame> {
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

    /// Whether this tier keeps a non-directory entry of this kind
    /// ([`tier::keeps`]).
    pub(super) fn keeps(&self, kind: FileKind) -> bool {
        kind != FileKind::Dir && tier::keeps(self.tier, entry_kind(kind))
    }

    /// The record of an entry with the stat fields this tier keeps
    /// ([`tier::fields`]).
    pub(super) fn base_record(&self, rel: &RelPath, kind: EntryKind, st: &Stat) -> EntryRecord {
        let keep = tier::fields(self.tier);
        let mut r = EntryRecord::new(rel, kind, st.mode, st.mtime);
        if keep.owners {
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
        if keep.full {
            r.ctime = Some(st.ctime);
            r.user = self.users.get(&st.uid).cloned();
            r.group = self.groups.get(&st.gid).cloned();
        }
        r
    }

    /// Adds what tier full reads through an open descriptor: xattrs
    /// (`flistxattr`) and inode flags (`FS_IOC_GETFLAGS`).
    pub(super) fn with_fd_meta(
        &mut self,
        mut rec: EntryRecord,
        f: &impl std::os::fd::AsFd,
        rel: &RelPath,
    ) -> Result<EntryRecord> {
        if !tier::fields(self.tier).full {
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
    pub(super) fn with_name_meta(
        &mut self,
        mut rec: EntryRecord,
        dir: &Dir,
        name: &Name,
        rel: &RelPath,
    ) -> Result<EntryRecord> {
        if tier::fields(self.tier).full {
            self.store_xattrs(&mut rec, dir.xattrs_nofollow(name), rel)?;
        }
        Ok(rec)
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn store_xattrs(
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
    pub(super) async fn entry(
        &mut self,
        dir: &Dir,
        name: &Name,
        rel: &RelPath,
        st: Stat,
    ) -> Result<()> {
        if !self.keeps(st.kind) {
            self.stats.skipped += 1;
            return Ok(());
        }
        // Hard links are kept as links with the owners (from extended).
        let extended = tier::fields(self.tier).owners;
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
            FileKind::Symlink => {
                let target = match dir.read_link(name) {
                    Ok(t) => t,
                    Err(e) => return self.warn(rel, "readlink", e.to_string(), true),
                };
                let mut r = self.base_record(rel, EntryKind::Symlink, &st);
                r.set_target(&target);
                self.stats.symlinks += 1;
                FileOut::Rec(self.with_name_meta(r, dir, name, rel)?.into())
            }
            FileKind::Fifo => {
                self.stats.special += 1;
                let r = self.base_record(rel, EntryKind::Fifo, &st);
                FileOut::Rec(self.with_name_meta(r, dir, name, rel)?.into())
            }
            FileKind::Char | FileKind::Block | FileKind::Socket => {
                let kind = entry_kind(st.kind);
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
            FileKind::Dir => {
                // Directories are entered by the walk, never recorded here.
                self.stats.skipped += 1;
                return Ok(());
            }
        };
        if extended && st.nlink > 1 {
            self.hardlinks.insert((st.dev, st.ino), rel.clone());
        }
        match rec {
            FileOut::Rec(rec) => self.push_rec(rec),
            FileOut::Reused(c) => self.push_copy(c),
        }
        Ok(())
    }

    pub(super) fn send(&mut self, msg: Msg) -> Result<()> {
        let tx = self.tx.as_ref().ok_or_else(pipeline::downstream_gone)?;
        tx.send(msg).map_err(|_| pipeline::downstream_gone())
    }

    pub(super) fn push_rec(&mut self, rec: impl Into<Box<EntryRecord>>) {
        self.records += 1;
        self.pending.push_back(Item::Rec(rec.into()));
    }

    /// Pushes copied records, joined to the copy before them when they
    /// follow it in the parent's file (one read and one item for a run of
    /// unchanged records).
    pub(super) fn push_copy(&mut self, c: Reused) {
        self.records += c.lines;
        if let Some(Item::Reused(b)) = self.pending.back_mut() {
            if b.offset + b.len == c.offset {
                b.len += c.len;
                b.lines += c.lines;
                return;
            }
        }
        self.pending.push_back(Item::Reused(c));
    }

    /// The index the next item gets.
    pub(super) fn next_idx(&self) -> usize {
        self.base + self.pending.len()
    }

    /// Fills in the chunks the chunker has reported; with `wait`, waits for
    /// the first report when there is none yet.
    pub(super) fn absorb(&mut self, wait: bool) {
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
    pub(super) async fn flush(&mut self, all: bool) -> Result<()> {
        self.absorb(false);
        let is_dir = |i: &Item| matches!(i, Item::Rec(r) if r.kind == EntryKind::Dir);
        loop {
            let mut limit = self.waiting.first().copied().unwrap_or(usize::MAX);
            if !tier::keeps_empty_dirs(self.tier) && !all {
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
}

/// The record kind of a non-link entry of kind `k`.
pub(super) fn entry_kind(k: FileKind) -> EntryKind {
    match k {
        FileKind::File => EntryKind::File,
        FileKind::Dir => EntryKind::Dir,
        FileKind::Symlink => EntryKind::Symlink,
        FileKind::Fifo => EntryKind::Fifo,
        FileKind::Char => EntryKind::Char,
        FileKind::Block => EntryKind::Block,
        FileKind::Socket => EntryKind::Socket,
    }
}
