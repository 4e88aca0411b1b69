//! Restore: rebuild a snapshot (or one path of it) in a staging directory
//! beside the target, then put it in place with one
//! `renameat2(RENAME_NOREPLACE)`.
//!
//! Side effects: creates `<parent>/.snap-restore-<run id>` and everything
//! beneath it, `syncfs`, renames it to the target and fsyncs the parent.
//! On any failure the staging directory is removed and no target appears.
//!
//! Order per entry (entries arrive in pre-order, so a directory's children
//! follow it): content -> chown -> chmod -> xattrs -> times; a directory
//! gets its metadata after all of its children.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::facts::RestoreSummary;
use crate::fs::{fd, DataFile, Dir, Name, RelPath};
use crate::repo::sidecar::{EntryKind, EntryRecord};
use crate::repo::{BlobLocation, Repo};

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// `latest`, a snapshot id, or a unique id prefix.
    pub snapshot: String,
    /// The directory to create; must not exist.
    pub target: PathBuf,
    /// Restore only this path of the snapshot (its subtree becomes the
    /// target; a non-directory is placed inside a new target directory).
    pub subpath: Option<RelPath>,
    /// Run id, used to name the staging directory.
    pub run_id: String,
}

struct Frame {
    rel: RelPath,
    dir: Dir,
    record: Option<usize>,
}

struct Restorer<'a> {
    repo: &'a Repo,
    records: &'a [EntryRecord],
    index: HashMap<blake3::Hash, BlobLocation>,
    packs: HashMap<blake3::Hash, DataFile>,
    staging: &'a Dir,
    chown: bool,
    summary: RestoreSummary,
    warnings: Vec<String>,
    progress: &'a indicatif::ProgressBar,
}

fn integrity(path: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::Integrity {
        path: path.into(),
        detail: detail.into(),
    }
}

/// Restores a snapshot. The caller holds a shared repository lock.
///
/// # Errors
///
/// [`Error::SnapshotNotFound`] (`E_BACKUP_MISSING`) for an unknown snapshot
/// or path; [`Error::TargetExists`] when the target exists (it is left
/// untouched); [`Error::Integrity`] when a blob, pack, index or entries file
/// does not match its BLAKE3 id (checked before any byte reaches the
/// staging tree); [`Error::Restore`] or I/O errors for entries that cannot
/// be created. In every error case no target is created.
pub fn run(
    repo: &Repo,
    opts: &RestoreOptions,
    progress: &indicatif::ProgressBar,
) -> Result<(RestoreSummary, Vec<String>)> {
    let started = Instant::now();
    let (snapshot_id, record) = repo.resolve(&opts.snapshot)?;
    let records = repo.read_entries(&record.entries.id)?;
    let entries_path = repo.display(&format!("entries/{}", record.entries.id));
    let mut rels = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        rels.push(r.rel_path().map_err(|e| {
            integrity(
                format!("{entries_path}:{}", i + 1),
                format!("invalid path {:?}: {e}", r.path),
            )
        })?);
    }

    // Which records, and where each lands relative to the target.
    let sub = opts.subpath.clone().unwrap_or_default();
    let root_idx = rels.iter().position(|r| *r == sub);
    let mut selected: Vec<(usize, RelPath)> = Vec::new();
    let root_record = match root_idx {
        Some(i) if records[i].kind == EntryKind::Dir => {
            for (j, rel) in rels.iter().enumerate() {
                if j != i {
                    if let Some(new) = rel.strip_prefix(&sub) {
                        selected.push((j, new));
                    }
                }
            }
            Some(i)
        }
        Some(i) => {
            let name = sub
                .file_name()
                .cloned()
                .ok_or_else(|| integrity(&entries_path, "non-directory root entry"))?;
            selected.push((i, RelPath::root().join(name)));
            None
        }
        None if sub.is_root() => {
            // A snapshot of a single file: its one entry sits at the top.
            for (j, rel) in rels.iter().enumerate() {
                selected.push((j, rel.clone()));
            }
            None
        }
        None => {
            return Err(Error::SnapshotNotFound {
                query: format!("{}:{sub}", opts.snapshot),
                detail: format!("snapshot {} holds no path {sub}", &snapshot_id[..12]),
            })
        }
    };

    // The target: its parent must exist, its name must not.
    let target = std::path::absolute(&opts.target)
        .map_err(|e| Error::io("resolve", opts.target.display(), e))?;
    let target_display = target.display().to_string();
    let (parent_path, target_name) = split_target(&target)?;
    let parent = Dir::open_root(&parent_path)
        .map_err(|e| Error::io("open target parent", parent_path.display(), e))?;
    if parent
        .stat_opt(&target_name)
        .map_err(|e| Error::io("stat", &target_display, e))?
        .is_some()
    {
        return Err(Error::TargetExists {
            path: target_display,
        });
    }
    let index = repo.load_index()?;

    let staging_name = Name::new(
        format!(
            ".snap-restore-{}",
            &opts.run_id[..opts.run_id.len().min(16)]
        )
        .as_bytes(),
    )
    .map_err(|e| Error::Usage(e.to_string()))?;
    let staging_display = parent_path
        .join(staging_name.to_string())
        .display()
        .to_string();
    parent
        .mkdir(&staging_name, 0o700)
        .map_err(|e| Error::io("create staging directory", &staging_display, e))?;
    let result = (|| {
        let staging = parent
            .open_dir(&staging_name)
            .map_err(|e| Error::io("open staging directory", &staging_display, e))?;
        let total: u64 = selected.iter().filter_map(|(i, _)| records[*i].size).sum();
        progress.set_length(total);
        let mut r = Restorer {
            repo,
            records: &records,
            index,
            packs: HashMap::new(),
            staging: &staging,
            chown: crate::fs::euid() == 0,
            summary: RestoreSummary {
                repo: repo.path.display().to_string(),
                snapshot_id: snapshot_id.clone(),
                target: target_display.clone(),
                path: if sub.is_root() {
                    String::new()
                } else {
                    sub.to_string()
                },
                entries: 0,
                files: 0,
                dirs: 0,
                symlinks: 0,
                hardlinks: 0,
                special: 0,
                skipped: 0,
                bytes: 0,
                blobs_verified: 0,
                durable: false,
                duration_ms: 0,
            },
            warnings: Vec::new(),
            progress,
        };
        let by_path: HashMap<&RelPath, usize> =
            rels.iter().enumerate().map(|(i, r)| (r, i)).collect();
        crate::fs::block_on(r.build(&selected, root_record, &by_path))
            .map_err(|e| Error::io("start io_uring runtime", &staging_display, e))??;
        staging
            .syncfs()
            .map_err(|e| Error::io("syncfs", &staging_display, e))?;
        Ok((r.summary, r.warnings))
    })();
    let (mut summary, warnings) = match result {
        Ok(x) => x,
        Err(e) => {
            remove_staging(&parent, &staging_name, &staging_display);
            return Err(e);
        }
    };
    match parent.rename(&staging_name, &parent, &target_name, true) {
        Ok(()) => {}
        Err(e) => {
            remove_staging(&parent, &staging_name, &staging_display);
            return Err(Error::Swap {
                from: staging_display,
                to: target_display,
                source: e,
            });
        }
    }
    crate::fs::fsync_parent_dir(&parent)
        .map_err(|e| Error::io("fsync directory", parent_path.display(), e))?;
    summary.durable = true;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    Ok((summary, warnings))
}

/// Removes a staging directory after a failed restore; a failure to remove
/// it is reported on stderr (the next restore does not reuse the name).
fn remove_staging(parent: &Dir, name: &Name, display: &str) {
    if let Err(e) = parent.remove_tree(name) {
        eprintln!(
            "snap: warning: could not remove staging directory {display}: {e}; remove it by hand"
        );
    }
}

fn split_target(target: &Path) -> Result<(PathBuf, Name)> {
    use std::os::unix::ffi::OsStrExt;
    let bad = || {
        Error::Usage(format!(
            "restore target {} must name a new directory",
            target.display()
        ))
    };
    let fname = target.file_name().ok_or_else(bad)?;
    let name = Name::new(fname.as_bytes()).map_err(|_| bad())?;
    let parent = target.parent().ok_or_else(bad)?.to_path_buf();
    Ok((parent, name))
}

impl Restorer<'_> {
    async fn build(
        &mut self,
        selected: &[(usize, RelPath)],
        root_record: Option<usize>,
        by_path: &HashMap<&RelPath, usize>,
    ) -> Result<()> {
        let root = self
            .staging
            .open_path(&RelPath::root())
            .map_err(|e| Error::io("open", &self.summary.target, e))?;
        let mut stack = vec![Frame {
            rel: RelPath::root(),
            dir: root,
            record: root_record,
        }];
        self.summary.entries += 1;
        self.summary.dirs += 1;
        let mut created: HashSet<RelPath> = HashSet::new();
        let new_of: HashMap<usize, &RelPath> = selected.iter().map(|(i, r)| (*i, r)).collect();
        for (idx, rel) in selected {
            let rec = &self.records[*idx];
            let parent_rel = rel.parent().unwrap_or_default();
            while stack.last().is_some_and(|f| f.rel != parent_rel) {
                let f = stack.pop().expect("non-empty");
                self.finish_dir(&f)?;
            }
            let Some(top) = stack.last() else {
                return Err(integrity(
                    self.repo.display("entries"),
                    format!("entry {:?} appears outside of its directory", rec.path),
                ));
            };
            let Some(name) = rel.file_name().cloned() else {
                return Err(integrity(
                    self.repo.display("entries"),
                    "a second record for the snapshot root",
                ));
            };
            let shown = rel.to_string();
            let ctx = |op: &str, e: std::io::Error| Error::Restore {
                path: shown.clone(),
                detail: format!("{op}: {e}"),
            };
            match rec.kind {
                EntryKind::Dir => {
                    top.dir.mkdir(&name, 0o700).map_err(|e| ctx("mkdir", e))?;
                    let dir = top
                        .dir
                        .open_dir(&name)
                        .map_err(|e| ctx("open directory", e))?;
                    self.summary.dirs += 1;
                    stack.push(Frame {
                        rel: rel.clone(),
                        dir,
                        record: Some(*idx),
                    });
                }
                EntryKind::File => {
                    self.file(&top.dir, &name, rec, &shown).await?;
                    created.insert(rel.clone());
                }
                EntryKind::Hardlink => {
                    let leader = rec
                        .link_path()
                        .map_err(|e| integrity(&shown, format!("invalid hard link leader: {e}")))?
                        .ok_or_else(|| integrity(&shown, "hard link without leader"))?;
                    let leader_new = by_path.get(&leader).and_then(|i| new_of.get(i)).copied();
                    match leader_new.filter(|l| created.contains(*l)) {
                        Some(lrel) => {
                            let lparent = self
                                .staging
                                .open_path(&lrel.parent().unwrap_or_default())
                                .map_err(|e| ctx("open leader directory", e))?;
                            let lname = lrel.file_name().ok_or_else(|| {
                                integrity(&shown, "hard link leader is the snapshot root")
                            })?;
                            top.dir
                                .hard_link(&lparent, lname, &name)
                                .map_err(|e| ctx("link", e))?;
                            self.summary.hardlinks += 1;
                        }
                        None => {
                            // The leader is outside the restored path: this
                            // name carries the content itself.
                            let li = *by_path.get(&leader).ok_or_else(|| {
                                integrity(
                                    &shown,
                                    format!("hard link leader {leader} not in snapshot"),
                                )
                            })?;
                            let lrec = &self.records[li];
                            match lrec.kind {
                                EntryKind::File => self.file(&top.dir, &name, lrec, &shown).await?,
                                EntryKind::Symlink | EntryKind::Fifo => {
                                    self.special(&top.dir, &name, lrec, &shown)?
                                }
                                other => {
                                    return Err(integrity(
                                        &shown,
                                        format!("hard link leader {leader} is a {other:?} entry"),
                                    ))
                                }
                            }
                        }
                    }
                    created.insert(rel.clone());
                }
                _ => {
                    self.special(&top.dir, &name, rec, &shown)?;
                    created.insert(rel.clone());
                }
            }
            self.summary.entries += 1;
        }
        while let Some(f) = stack.pop() {
            if f.rel.is_root() && f.record.is_none() {
                // A synthetic target directory: as mkdir(1) would make it.
                fd::chmod(&f.dir, 0o777 & !crate::fs::umask())
                    .map_err(|e| Error::io("chmod", &self.summary.target, e))?;
                continue;
            }
            self.finish_dir(&f)?;
        }
        Ok(())
    }

    /// Directory metadata, after its children: chown, chmod, xattrs, times.
    fn finish_dir(&mut self, f: &Frame) -> Result<()> {
        let Some(i) = f.record else { return Ok(()) };
        let rec = &self.records[i];
        let shown = if f.rel.is_root() {
            ".".to_owned()
        } else {
            f.rel.to_string()
        };
        self.apply_fd_metadata(&f.dir, rec, &shown)
    }

    fn apply_fd_metadata(
        &mut self,
        f: &impl std::os::fd::AsFd,
        rec: &EntryRecord,
        shown: &str,
    ) -> Result<()> {
        let ctx = |op: &str, e: std::io::Error| Error::Restore {
            path: shown.to_owned(),
            detail: format!("{op}: {e}"),
        };
        if let (true, Some(uid), Some(gid)) = (self.chown, rec.uid, rec.gid) {
            fd::chown(f, uid, gid).map_err(|e| ctx("chown", e))?;
        }
        fd::chmod(f, rec.mode).map_err(|e| ctx("chmod", e))?;
        if let Some(x) = &rec.xattrs {
            for (name, value) in x {
                let value = base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .map_err(|e| integrity(shown, format!("xattr {name}: invalid base64: {e}")))?;
                if let Err(e) = fd::set_xattr(f, name.as_bytes(), &value) {
                    self.warnings.push(format!("{shown}: setxattr {name}: {e}"));
                }
            }
        }
        fd::set_times(f, rec.atime, rec.mtime).map_err(|e| ctx("set times", e))?;
        Ok(())
    }

    /// Creates a regular file, writes its verified content, applies its
    /// metadata.
    async fn file(&mut self, dir: &Dir, name: &Name, rec: &EntryRecord, shown: &str) -> Result<()> {
        let fd = dir
            .create_file_uring(name, 0o600)
            .await
            .map_err(|e| Error::Restore {
                path: shown.to_owned(),
                detail: format!("create: {e}"),
            })?;
        let mut out = DataFile::new(fd);
        let mut offset = 0u64;
        let mut whole = blake3::Hasher::new();
        let chunks = rec.chunks.as_deref().unwrap_or(&[]);
        for hex in chunks {
            let id = blake3::Hash::from_hex(hex)
                .map_err(|_| integrity(shown, format!("chunk id {hex:?} is not BLAKE3 hex")))?;
            let bytes = self.read_blob(&id).await?;
            if chunks.len() > 1 {
                whole.update(&bytes);
            }
            let len = bytes.len() as u64;
            out.write_all_at(bytes, offset)
                .await
                .map_err(|e| Error::io("write", shown, e))?;
            offset += len;
            self.progress.inc(len);
        }
        let got = match chunks {
            [one] => blake3::Hash::from_hex(one).ok(),
            [] => Some(blake3::hash(b"")),
            _ => Some(whole.finalize()),
        };
        if let (Some(want), Some(got)) = (&rec.hash, got) {
            if want.as_str() != got.to_hex().as_str() {
                return Err(integrity(
                    shown,
                    "restored content does not match the file's BLAKE3",
                ));
            }
        }
        if rec.size.is_some_and(|s| s != offset) {
            return Err(integrity(
                shown,
                format!("restored {offset} bytes, record says {:?}", rec.size),
            ));
        }
        self.apply_fd_metadata(&out.as_fd(), rec, shown)?;
        out.close()
            .await
            .map_err(|e| Error::io("close", shown, e))?;
        self.summary.files += 1;
        self.summary.bytes += offset;
        Ok(())
    }

    /// Reads one blob and checks it against its id before handing it out.
    async fn read_blob(&mut self, id: &blake3::Hash) -> Result<Vec<u8>> {
        let loc = *self.index.get(id).ok_or_else(|| {
            integrity(
                self.repo.display("index"),
                format!("blob {id} is in no index"),
            )
        })?;
        if !self.packs.contains_key(&loc.pack) {
            if self.packs.len() >= 64 {
                self.packs.clear();
            }
            let f = self.repo.open_pack(&loc.pack)?;
            self.packs.insert(loc.pack, f);
        }
        let pack = &self.packs[&loc.pack];
        let hex = loc.pack.to_hex();
        let pack_path = self
            .repo
            .display(&format!("packs/{}/{hex}.pack", &hex[..2]));
        let bytes = pack
            .read_exact_at(loc.offset, loc.length as usize)
            .await
            .map_err(|e| integrity(&pack_path, format!("cannot read blob {id}: {e}")))?;
        if blake3::hash(&bytes) != *id {
            return Err(integrity(
                pack_path,
                format!(
                    "blob {id} at offset {} does not match its BLAKE3",
                    loc.offset
                ),
            ));
        }
        self.summary.blobs_verified += 1;
        Ok(bytes)
    }

    /// Symlinks, FIFOs; devices and sockets are not created (counted).
    fn special(&mut self, dir: &Dir, name: &Name, rec: &EntryRecord, shown: &str) -> Result<()> {
        let ctx = |op: &str, e: std::io::Error| Error::Restore {
            path: shown.to_owned(),
            detail: format!("{op}: {e}"),
        };
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
            _ => {
                self.summary.skipped += 1;
                self.warnings.push(format!(
                    "{shown}: {:?} entries are not restored by this version",
                    rec.kind
                ));
                return Ok(());
            }
        }
        if let (true, Some(uid), Some(gid)) = (self.chown, rec.uid, rec.gid) {
            dir.chown_nofollow(name, uid, gid)
                .map_err(|e| ctx("chown", e))?;
        }
        if rec.kind == EntryKind::Fifo {
            dir.chmod_at(name, rec.mode).map_err(|e| ctx("chmod", e))?;
        }
        dir.set_times_nofollow(name, rec.atime, rec.mtime)
            .map_err(|e| ctx("set times", e))?;
        Ok(())
    }
}
