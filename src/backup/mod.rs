//! Backup: walk the source through dirfds, read files through io_uring,
//! cut them into FastCDC chunks, store new blobs in packs, and commit a
//! snapshot with the protocol of `docs/FORMAT.md`.
//!
//! - [`run`] (here): the stages started and joined, then the commit
//!   (index, entries file, record, through `crate::repo::commit`);
//! - `walker`: the walk in entries-file order, one record per entry;
//! - `read`: a source file's content, read and sent to the chunker;
//! - `parent`: the parent snapshot, for reusing unchanged files and blocks;
//! - `entries`: the new entries file, written as the walk goes;
//! - `excludes`: `--exclude` patterns;
//! - `scan`: scanner threads listing directories ahead of the walker;
//! - `pipeline` and `cdc`: the chunker and packer threads.
//!
//! Side effects: reads the source (with `O_NOATIME` where permitted, so
//! atimes are left alone) and writes packs, an index file, an entries file
//! and the snapshot record into the repository. Nothing becomes visible as a
//! snapshot until the record is put.

mod cdc;
pub mod copy;
mod entries;
mod excludes;
mod parent;
mod pipeline;
mod read;
mod scan;
pub mod sources;
mod walker;

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::facts::Emitter;
use crate::fs::{Dir, Name, RelPath};
use crate::policy::Policy;
use crate::repo::format::tier;
use crate::repo::{commit, IndexFile, Repo, SnapshotRecord, SnapshotStats, Syncs};

use entries::EntriesOut;
use excludes::Excludes;
use parent::{Block, Parent};
use walker::Walker;

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The source directories or files, as given (at least one; several
    /// are walked from their deepest common directory, [`sources`]).
    pub sources: Vec<PathBuf>,
    /// The policy in force.
    pub policy: Policy,
    /// Tags for the snapshot record.
    pub tags: Vec<String>,
}

/// What a backup did with a regular file it read (`snap backup -v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The parent snapshot has no regular file at its path (or there is
    /// no parent): [`SnapshotStats::files_new`].
    New,
    /// The parent snapshot has it, and it was read again:
    /// [`SnapshotStats::files_changed`].
    Changed,
}

impl Change {
    /// `new` or `changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Changed => "changed",
        }
    }
}

/// Told of each regular file a backup reads, with its path under the
/// snapshot's root, on the walking thread, in walk order.
pub type OnChange<'a> = &'a dyn Fn(Change, &RelPath);

/// What a committed backup produced.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The snapshot id.
    pub snapshot_id: String,
    /// The committed record.
    pub record: SnapshotRecord,
    /// The policy the backup ran under.
    pub policy: Policy,
    /// Sync accounting.
    pub syncs: Syncs,
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
    changes: Option<OnChange<'_>>,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let sources = sources::Sources::new(&opts.sources)?;
    let source = sources.root.clone();
    let excludes = Excludes::new(&opts.policy.excludes, &source)?;
    let if_present = opts
        .policy
        .exclude_if_present
        .iter()
        .map(|n| {
            Name::new(n.as_bytes()).map_err(|e| {
                Error::Usage(format!("--exclude-if-present {n:?}: not a file name ({e})"))
            })
        })
        .collect::<Result<Vec<_>>>()?;

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
    let wanted: Vec<Vec<u8>> = sources
        .paths
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    let parent = snapshots
        .iter()
        .rev()
        .find(|(_, r)| r.host == host && r.source_paths() == wanted);
    // Content is taken from the parent only when it used the same tier
    // (the tier decides whether sparse maps are kept). Its entries load
    // while the scanners list the first directories; the index is loaded
    // by the chunker when the first chunk needs it.
    let parent_rec = match parent {
        Some((_, rec)) if rec.tier == opts.policy.tier => Some(rec),
        _ => None,
    };
    let parent = parent.map(|(id, _)| id.clone());
    tracing::info!(
        root = %sources.root.display(),
        sources = sources.paths.len(),
        parent = parent.as_deref().unwrap_or("none"),
        parent_used = parent_rec.is_some(),
        "backup starts"
    );
    // Owner names for tier full, from this host's /etc (first name wins).
    let (users, groups) = if tier::fields(opts.policy.tier).full {
        crate::sys::names_by_id(Path::new("/etc"))
            .map_err(|e| Error::io("read", "/etc/passwd", e))?
    } else {
        (HashMap::new(), HashMap::new())
    };

    let (tx, rx) = sync_channel(pipeline::DATA_QUEUE);
    let (pack_tx, pack_rx) = sync_channel(pipeline::PACK_QUEUE);
    let (reads_back, reads_pool) = sync_channel(pipeline::DATA_QUEUE);
    let (contents_tx, contents_rx) = std::sync::mpsc::channel();
    let mut w = Walker {
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
        out: EntriesOut::new(
            parent_rec.is_some(),
            (repo.config.version >= 3)
                .then(|| {
                    entries::MetaOut::new(
                        opts.policy.compression,
                        opts.policy.require_backup_durability,
                    )
                })
                .transpose()?,
        ),
        hardlinks: HashMap::new(),
        users,
        groups,
        facts,
        progress,
        changes,
    };
    let durable = opts.policy.require_backup_durability;
    let compression = opts.policy.compression;
    let chunker_params = repo.config.chunker;
    let excluded = |rel: &RelPath, is_dir: bool| excludes.matches(rel, is_dir);
    let rules = scan::DirRules {
        one_file_system: opts.policy.one_file_system,
        exclude_caches: opts.policy.exclude_caches,
        if_present: if_present.clone(),
    };
    let scanner = scan::Scanner::new(
        (!excludes.is_empty()).then_some(&excluded as _),
        rules,
        sources.selection.as_ref(),
    );
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
            .spawn_scoped(s, move || {
                pipeline::packer(pack_rx, repo, durable, compression)
            })
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
        // The progress total, counted beside the walk when a bar is drawn.
        if !progress.is_hidden() {
            match &root {
                SourceRoot::Dir(d) => {
                    if let Ok(dup) = d.open_path(&RelPath::root()) {
                        std::thread::Builder::new()
                            .name("snap-count".into())
                            .spawn_scoped(s, move || {
                                if let Some(total) = scanner.count(dup) {
                                    progress.set_length(total);
                                    progress.set_style(crate::human::progress_style(true));
                                }
                            })
                            .map_err(|e| Error::io("spawn", "count thread", e))?;
                    }
                }
                SourceRoot::Single(pdir, name) => {
                    if let Ok(st) = pdir.stat(name) {
                        progress.set_length(st.size);
                        progress.set_style(crate::human::progress_style(true));
                    }
                }
            }
        }
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
    tracing::info!(
        files = w.stats.files,
        dirs = w.stats.dirs,
        packs = packed.packs.len(),
        ms = started.elapsed().as_millis() as u64,
        "walk, chunking and packs done"
    );
    crate::io::block_on(w.commit(
        chunked, packed, time, host, &sources, opts, parent, started, repo,
    ))?
}

pub(super) enum SourceRoot {
    Dir(Dir),
    Single(Dir, Name),
}

impl Walker<'_> {
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
        sources: &sources::Sources,
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
        let ser = |what: &str, e: serde_json::Error| Error::serialise(what, e);
        // The entries first: in format 3 their blobs go into packs of
        // their own, which the index lists with the data packs.
        let out = std::mem::replace(&mut self.out, EntriesOut::new(false, None));
        let done = out.finish(self.parent.as_ref(), repo, &mut syncs)?;
        self.stats.bytes_added += done.added;
        let mut all_packs = packed.packs;
        all_packs.extend(done.packs);
        for packs in commit::index_groups(all_packs) {
            let index = IndexFile { v: 1, packs };
            let bytes = serde_json::to_vec(&index).map_err(|e| ser("index", e))?;
            self.stats.bytes_added += commit::put_index(repo, &bytes, &mut syncs)?.1;
        }
        self.stats.duration_ms = started.elapsed().as_millis() as u64;
        let (src_text, src_b64) = crate::fs::bytes_to_stored(sources.root.as_os_str().as_bytes());
        // Several sources are each kept; one is the root itself.
        let (list, list_b64) = if sources.selection.is_some() {
            SnapshotRecord::stored_sources(&sources.paths)
        } else {
            (Vec::new(), None)
        };
        let record = SnapshotRecord {
            v: 1,
            time,
            host,
            source: src_text,
            source_b64: src_b64,
            sources: list,
            sources_b64: list_b64,
            tier: opts.policy.tier,
            tags: opts.tags.clone(),
            policy: (&opts.policy).into(),
            parent,
            entries: done.entries,
            stats: self.stats.clone(),
            durable: syncs.enabled,
            original: None,
        };
        let plain = serde_json::to_vec_pretty(&record).map_err(|e| ser("snapshot", e))?;
        let (snapshot_id, bytes) = commit::seal_snapshot(repo, plain)?;
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
            policy: opts.policy.clone(),
            syncs,
        })
    }
}
