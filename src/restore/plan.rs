//! Steps 1 to 5 of building the tree in the staging directory (see
//! [`Restorer::build`]): the plan in entry order (directories, symlinks,
//! FIFOs and devices at once; regular files batched for the workers), hard
//! links, directory metadata, inode flags.
//!
//! Side effects: creates the tree beneath the staging directory.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fs::{fd, Dir, Name, RelPath};
use crate::repo::format::tier;
use crate::repo::sidecar::{EntryKind, EntryRecord};
use crate::repo::{parse_lines, EntriesReader};

use super::load::{limit, second_record, Loaded, Place};
use super::metadata::{chown_error, count};
use super::{entry_error, integrity, Restorer, Shared};

/// Files handed to one worker at a time: those of one directory, up to
/// this many...
pub(super) const BATCH_FILES: usize = 256;
/// ...or this many content bytes, whichever comes first. Consecutive files
/// sit next to each other in the packs, so a batch reads them in order.
pub(super) const BATCH_BYTES: u64 = 8 << 20;

/// A regular file to create: where, and the record holding its content
/// and metadata (a hard link leader's when this name carries its content).
pub(super) struct FileWork {
    pub(super) rel: RelPath,
    pub(super) rec: Arc<EntryRecord>,
    /// Position in creation order (for the inode flags pass).
    pub(super) order: usize,
}

/// Batches announced to a backend that reads ahead
/// ([`crate::repo::Repo::reads_ahead`]) and not yet taken by a worker, at most.
pub(super) const ANNOUNCED_AHEAD: usize = 2;

/// A directory whose metadata is applied once its subtree is built: its
/// record (`None` for a target directory the snapshot has no record of),
/// path and position in creation order.
pub(super) type DirWork = (Option<Arc<EntryRecord>>, RelPath, usize);

impl<'a> Restorer<'a> {
    /// Between the plan and the workers when the backend reads ahead:
    /// announces the pack bytes of each batch ([`crate::repo::Repo::read_ahead`]) and
    /// passes it on, at most [`ANNOUNCED_AHEAD`] batches before the
    /// workers take them. Only bytes past those announced before in the
    /// same pack are announced: a blob behind them is a deduplicated one,
    /// which a worker reads alone. Ends when the plan is done, the workers
    /// are gone or one of them failed.
    fn announce(
        sh: &Shared<'_>,
        rx: &std::sync::mpsc::Receiver<Vec<FileWork>>,
        tx: &std::sync::mpsc::SyncSender<Vec<FileWork>>,
    ) {
        use std::sync::atomic::Ordering;
        let mut frontier: HashMap<blake3::Hash, u64> = HashMap::new();
        while let Ok(batch) = rx.recv() {
            if sh.abort.load(Ordering::Relaxed) {
                return;
            }
            let mut runs: Vec<(blake3::Hash, u64, u64)> = Vec::new();
            let ids = batch
                .iter()
                .flat_map(|f| f.rec.chunks.as_deref().unwrap_or(&[]))
                .filter_map(|hex| blake3::Hash::from_hex(hex).ok());
            for id in ids {
                let Some(loc) = sh.index.get(&id) else {
                    continue;
                };
                let end = loc.offset.saturating_add(u64::from(loc.length));
                let seen = frontier.entry(loc.pack).or_insert(0);
                if loc.offset < *seen {
                    continue;
                }
                *seen = end;
                match runs.last_mut() {
                    Some((p, _, e)) if *p == loc.pack => *e = end,
                    _ => runs.push((loc.pack, loc.offset, end)),
                }
            }
            for (pack, start, end) in runs {
                sh.repo.read_ahead(&pack, start, end);
            }
            if tx.send(batch).is_err() {
                return;
            }
        }
    }

    /// Builds the selected entries in the staging directory; returns the
    /// target root's inode flags, which are set after the rename.
    ///
    /// 1. In entry order: directories, symlinks, FIFOs and devices, and the
    ///    list of regular files.
    /// 2. Regular files (content, then chown, chmod, xattrs, times) on one
    ///    worker thread per core, in batches of consecutive files.
    /// 3. Hard links, once every leader exists.
    /// 4. Directory metadata, children before parents.
    /// 5. Inode flags, last entry first.
    pub(super) fn build(
        &mut self,
        mut reader: EntriesReader,
        loaded: &Loaded,
    ) -> Result<Option<u32>> {
        use std::sync::atomic::Ordering;
        let sh = self.sh;
        let template = self.summary.clone();
        let tier = loaded.tier;
        let untrusted = loaded.untrusted;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<FileWork>>(64);
        // From a backend that reads ahead, batches pass through the
        // announcer first, a few batches ahead of the workers.
        let (announce, rx) = if sh.repo.reads_ahead() {
            let (atx, arx) = std::sync::mpsc::sync_channel::<Vec<FileWork>>(ANNOUNCED_AHEAD);
            (Some((rx, atx)), arx)
        } else {
            (None, rx)
        };
        let rx = std::sync::Mutex::new(rx);
        // Parsed pieces of the entries file, a few ahead of the plan.
        let (etx, erx) = std::sync::mpsc::sync_channel::<Result<Vec<EntryRecord>>>(2);
        let workers = crate::par::cores();
        let (planned, results) = std::thread::scope(|s| {
            s.spawn(move || loop {
                let piece = reader.next_piece().and_then(|p| {
                    p.map(|(bytes, first)| {
                        let mut records = parse_lines(reader.path(), &bytes, first)?;
                        for r in &mut records {
                            limit(r, tier, untrusted);
                        }
                        Ok(records)
                    })
                    .transpose()
                });
                let Some(piece) = piece.transpose() else {
                    break;
                };
                let failed = piece.is_err();
                // A closed channel means the plan stopped; it reports why.
                if etx.send(piece).is_err() || failed {
                    break;
                }
            });
            if let Some((rx, atx)) = announce {
                s.spawn(move || Self::announce(sh, &rx, &atx));
            }
            let handles: Vec<_> = (0..workers)
                .map(|_| s.spawn(|| Self::worker(sh, &template, &rx)))
                .collect();
            let planned = self.plan(erx, loaded, tx);
            if planned.is_err() {
                sh.abort.store(true, Ordering::Relaxed);
            }
            let results: Vec<_> = handles.into_iter().map(crate::par::join).collect();
            (planned, results)
        });
        let mut first_err = None;
        for (summary, warnings, flags, res) in results {
            self.summary.files += summary.files;
            self.summary.bytes += summary.bytes;
            self.summary.blobs_verified += summary.blobs_verified;
            self.summary
                .preservation_applied
                .add(&summary.preservation_applied);
            self.warnings.extend(warnings);
            self.flags.extend(flags);
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        // A worker's failure stops the plan too: report the worker's.
        if let Some(e) = first_err {
            return Err(e);
        }
        let (dirs, links) = planned?;
        for (rel, lrel) in &links {
            crate::interrupt::check()?;
            let shown = rel.to_string();
            let ctx = |op: &str, e: std::io::Error| entry_error(&shown, op, e);
            let parent_of = |r: &RelPath| sh.staging.open_path(&r.parent().unwrap_or_default());
            let ldir = parent_of(lrel).map_err(|e| ctx("open leader directory", e))?;
            let dir = parent_of(rel).map_err(|e| ctx("open directory", e))?;
            let (Some(lname), Some(name)) = (lrel.file_name(), rel.file_name()) else {
                return Err(integrity(&shown, "hard link leader is the snapshot root"));
            };
            dir.hard_link(&ldir, lname, name)
                .map_err(|e| ctx("link", e))?;
            self.summary.hardlinks += 1;
        }
        for (rec, rel, order) in dirs.iter().rev() {
            crate::interrupt::check()?;
            let shown = if rel.is_root() {
                ".".to_owned()
            } else {
                rel.to_string()
            };
            let dir = sh
                .staging
                .open_path(rel)
                .map_err(|e| entry_error(&shown, "open directory", e))?;
            match rec {
                Some(r) => self.apply_fd_metadata(&dir, r, rel, *order, &shown)?,
                // A synthetic target directory: as mkdir(1) would make it.
                None if rel.is_root() => fd::chmod(&dir, 0o777 & !crate::sys::umask())
                    .map_err(|e| Error::io("chmod", &self.summary.target, e))?,
                None => {}
            }
        }
        Ok(self.apply_flags())
    }

    /// Step 1 of [`Restorer::build`], on the calling thread: directories,
    /// symlinks, FIFOs and devices in entry order as the parsed pieces of
    /// the entries file arrive; regular files go to the workers in batches
    /// as soon as their directory exists. Returns the directories as
    /// (record, path, creation order) in pre-order, and the hard links to
    /// make as (new name, leader's path).
    ///
    /// Memory: a piece of records at a time, plus the directories, the
    /// hard link leaders' records and the files queued for the workers.
    #[allow(clippy::type_complexity)]
    pub(super) fn plan(
        &mut self,
        entries: std::sync::mpsc::Receiver<Result<Vec<EntryRecord>>>,
        loaded: &Loaded,
        tx: std::sync::mpsc::SyncSender<Vec<FileWork>>,
    ) -> Result<(Vec<DirWork>, Vec<(RelPath, RelPath)>)> {
        use crate::policy::PreservationTier as T;
        let sh = self.sh;
        let entries_path = sh.repo.entries_display(&loaded.record.entries);
        let root = sh
            .staging
            .open_path(&RelPath::root())
            .map_err(|e| Error::io("open", &self.summary.target, e))?;
        let mut stack: Vec<(RelPath, Dir)> = vec![(RelPath::root(), root)];
        self.summary.entries += 1;
        self.summary.dirs += 1;
        let mut dirs: Vec<DirWork> = vec![(None, RelPath::root(), 0)];
        let mut links: Vec<(RelPath, RelPath)> = Vec::new();
        // Hard link leaders seen so far: their record, and where they were
        // created when they were.
        let mut leaders: HashMap<RelPath, (Arc<EntryRecord>, Option<RelPath>)> = HashMap::new();
        let mut batch: Vec<FileWork> = Vec::new();
        let mut batch_bytes = 0u64;
        let gone = || Error::Interrupted;
        let (mut n, mut order) = (0usize, 0usize);
        for piece in entries {
            for rec in piece? {
                n += 1;
                crate::interrupt::check()?;
                if sh.abort.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(gone());
                }
                let snap_rel = rec.rel_path().map_err(|e| {
                    integrity(
                        format!("{entries_path} record {n}"),
                        format!("invalid path {:?}: {e}", rec.path),
                    )
                })?;
                let is_leader = loaded.leaders.contains(&snap_rel);
                if is_leader {
                    leaders.insert(snap_rel.clone(), (Arc::new(rec.clone()), None));
                }
                if !tier::keeps(loaded.tier, rec.kind) {
                    continue;
                }
                let rel = match loaded.place(&snap_rel) {
                    Place::Skip => continue,
                    Place::Root if dirs[0].0.is_some() => {
                        return Err(integrity(&entries_path, second_record(&loaded.subpath)))
                    }
                    Place::Root => {
                        dirs[0].0 = Some(Arc::new(rec));
                        continue;
                    }
                    Place::At(rel) => rel,
                };
                order += 1;
                let parent_rel = rel.parent().unwrap_or_default();
                while stack.last().is_some_and(|f| f.0 != parent_rel) {
                    stack.pop();
                }
                let Some((_, top)) = stack.last() else {
                    return Err(integrity(
                        &entries_path,
                        format!("entry {:?} appears outside of its directory", rec.path),
                    ));
                };
                let Some(name) = rel.file_name().cloned() else {
                    return Err(integrity(
                        &entries_path,
                        "a second record for the snapshot root",
                    ));
                };
                let shown = rel.to_string();
                let ctx = |op: &str, e: std::io::Error| entry_error(&shown, op, e);
                // The record whose content and metadata a file takes.
                let mut file_from: Option<Arc<EntryRecord>> = None;
                match rec.kind {
                    EntryKind::Dir => {
                        top.mkdir(&name, 0o700).map_err(|e| ctx("mkdir", e))?;
                        let dir = top.open_dir(&name).map_err(|e| ctx("open directory", e))?;
                        self.summary.dirs += 1;
                        dirs.push((Some(Arc::new(rec)), rel.clone(), order));
                        stack.push((rel, dir));
                        self.summary.entries += 1;
                        continue;
                    }
                    EntryKind::File => file_from = Some(Arc::new(rec)),
                    EntryKind::Hardlink => {
                        let leader = rec
                            .link_path()
                            .map_err(|e| {
                                integrity(&shown, format!("invalid hard link leader: {e}"))
                            })?
                            .ok_or_else(|| integrity(&shown, "hard link without leader"))?;
                        let Some((lrec, at)) = leaders.get(&leader) else {
                            return Err(integrity(
                                &shown,
                                format!(
                                    "hard link leader {leader} is not in the snapshot before it"
                                ),
                            ));
                        };
                        if !tier::keeps(loaded.tier, lrec.kind) || lrec.kind == EntryKind::Socket {
                            // Its leader's kind is not restored at this
                            // tier (a socket never is: it is recorded
                            // only), so neither is this name.
                            continue;
                        }
                        match (at, lrec.kind) {
                            // Basic keeps no hard links: every name carries
                            // its leader's content, with its own metadata.
                            (_, EntryKind::File) if loaded.tier < T::Extended => {
                                let mut own = rec;
                                own.kind = EntryKind::File;
                                own.chunks = lrec.chunks.clone();
                                own.hash = lrec.hash.clone();
                                own.size = lrec.size;
                                own.link = None;
                                own.link_b64 = None;
                                file_from = Some(Arc::new(own));
                            }
                            (Some(at), _) => links.push((rel.clone(), at.clone())),
                            // The leader is outside the restored path: this
                            // name carries the content itself.
                            (None, EntryKind::File) => file_from = Some(lrec.clone()),
                            (
                                None,
                                EntryKind::Symlink
                                | EntryKind::Fifo
                                | EntryKind::Char
                                | EntryKind::Block,
                            ) => {
                                let lrec = lrec.clone();
                                self.special(top, &name, &lrec, &shown)?;
                            }
                            (None, other) => {
                                return Err(integrity(
                                    &shown,
                                    format!("hard link leader {leader} is a {other:?} entry"),
                                ))
                            }
                        }
                    }
                    _ => self.special(top, &name, &rec, &shown)?,
                }
                if is_leader {
                    if let Some(l) = leaders.get_mut(&snap_rel) {
                        l.1 = Some(rel.clone());
                    }
                }
                if let Some(from) = file_from {
                    // A batch holds one directory's files where it can, so
                    // the workers do not queue on the same directory's lock.
                    if batch
                        .last()
                        .is_some_and(|f: &FileWork| f.rel.parent() != rel.parent())
                    {
                        tx.send(std::mem::take(&mut batch)).map_err(|_| gone())?;
                        batch_bytes = 0;
                    }
                    batch_bytes += from.size.unwrap_or(0);
                    batch.push(FileWork {
                        rel,
                        rec: from,
                        order,
                    });
                    if batch.len() >= BATCH_FILES || batch_bytes >= BATCH_BYTES {
                        tx.send(std::mem::take(&mut batch)).map_err(|_| gone())?;
                        batch_bytes = 0;
                    }
                }
                self.summary.entries += 1;
            }
        }
        if !batch.is_empty() {
            tx.send(batch).map_err(|_| gone())?;
        }
        Ok((dirs, links))
    }

    /// Symlinks, FIFOs and devices: create, chown, chmod (not symlinks),
    /// xattrs, times, all without following the name. Sockets are recorded
    /// by backup but not created: a socket belongs to the process that
    /// bound it.
    pub(super) fn special(
        &mut self,
        dir: &Dir,
        name: &Name,
        rec: &EntryRecord,
        shown: &str,
    ) -> Result<()> {
        let ctx = |op: &str, e: std::io::Error| entry_error(shown, op, e);
        match rec.kind {
            EntryKind::Symlink => {
                let target = rec
                    .target_bytes()
                    .map_err(|e| integrity(shown, e))?
                    .ok_or_else(|| integrity(shown, "symlink without target"))?;
                dir.symlink(&target, name).map_err(|e| ctx("symlink", e))?;
                self.summary.symlinks += 1;
            }
            EntryKind::Fifo => {
                dir.mkfifo(name, 0o600).map_err(|e| ctx("mkfifo", e))?;
                self.summary.special += 1;
            }
            EntryKind::Char | EntryKind::Block => {
                let dev = rec
                    .rdev
                    .ok_or_else(|| integrity(shown, "device without rdev"))?;
                let made = dir.mknod(
                    name,
                    rec.kind == EntryKind::Block,
                    0o600,
                    dev.major,
                    dev.minor,
                );
                count(&mut self.summary.preservation_applied.devices, made.is_ok());
                if let Err(e) = made {
                    self.summary.skipped += 1;
                    self.warn(shown, "mknod", e);
                    return Ok(());
                }
                self.summary.special += 1;
            }
            _ => {
                self.summary.skipped += 1;
                self.summary.preservation_applied.devices.skipped += 1;
                self.warn(shown, "create socket", "sockets are recorded, not restored");
                return Ok(());
            }
        }
        if let Some((uid, gid)) = self.owner(rec) {
            dir.chown_nofollow(name, uid, gid)
                .map_err(|e| chown_error(shown, uid, gid, e))?;
        }
        if rec.kind != EntryKind::Symlink {
            dir.chmod_at(name, rec.mode).map_err(|e| ctx("chmod", e))?;
            self.summary.preservation_applied.mode.applied += 1;
        }
        self.apply_xattrs(rec, shown, |n, v| dir.set_xattr_nofollow(name, n, v))?;
        dir.set_times_nofollow(name, rec.atime, rec.mtime)
            .map_err(|e| ctx("set times", e))?;
        self.summary.preservation_applied.timestamps.applied += 1;
        Ok(())
    }
}
