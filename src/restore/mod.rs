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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::facts::{FieldCount, RestoreSummary};
use crate::fs::{fd, Dir, Name, RelPath};
use crate::repo::format::tier;
use crate::repo::sidecar::{EntryKind, EntryRecord};
use crate::repo::storage::{FileKind, Ranged};
use crate::repo::{parse_lines, EntriesReader, Repo};

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// `latest`, a snapshot id, or a unique id prefix.
    pub snapshot: String,
    /// The directory to create; must not exist.
    pub target: PathBuf,
    /// Run id, used to name the staging directory.
    pub run_id: String,
    /// Map owners by the recorded user/group names through this host's
    /// `/etc/passwd` and `/etc/group` (falling back to the recorded ids).
    pub by_name: bool,
    /// The policy in force (reported in `restore.summary`).
    pub policy: crate::policy::Policy,
    /// When the target exists, swap the restored tree in with
    /// `renameat2(RENAME_EXCHANGE)` instead of failing.
    pub replace: bool,
    /// With `replace`: move the old tree here (same filesystem, must not
    /// exist) instead of removing it.
    pub keep_old: Option<PathBuf>,
}

/// Something restore could not apply; the entry itself was created
/// (or, for sockets, deliberately not).
#[derive(Debug, Clone)]
pub struct RestoreWarning {
    /// Path relative to the target (`.` for the target itself).
    pub path: String,
    /// What was not applied (`setxattr user.x`, `FS_IOC_SETFLAGS`, ...).
    pub op: String,
    /// Why.
    pub detail: String,
}

/// The inode flags bits a process may change (`FS_FL_USER_MODIFIABLE` in
/// `include/uapi/linux/fs.h`); others (extents, inline data, ...) are the
/// filesystem's own.
const FLAGS_MODIFIABLE: u32 = 0x0003_80FF;

/// Files handed to one worker at a time: those of one directory, up to
/// this many...
const BATCH_FILES: usize = 256;
/// ...or this many content bytes, whichever comes first. Consecutive files
/// sit next to each other in the packs, so a batch reads them in order.
const BATCH_BYTES: u64 = 8 << 20;
/// Bytes read from a pack at once; the blobs that follow are served from
/// this window.
const PACK_WINDOW: usize = 8 << 20;

/// Entries file bytes the scan before a restore reads at once (split
/// between the cores).
const SCAN_PIECE: usize = 8 << 20;
/// Entries file bytes the build reads and parses at once; at most three
/// such pieces are parsed ahead of the plan.
const BUILD_PIECE: usize = 1 << 20;

/// A regular file to create: where, and the record holding its content
/// and metadata (a hard link leader's when this name carries its content).
struct FileWork {
    rel: RelPath,
    rec: Arc<EntryRecord>,
    /// Position in creation order (for the inode flags pass).
    order: usize,
}

/// A directory whose metadata is applied once its subtree is built: its
/// record (`None` for a target directory the snapshot has no record of),
/// path and position in creation order.
type DirWork = (Option<Arc<EntryRecord>>, RelPath, usize);

/// A range of a pack held in memory.
struct Window {
    pack: blake3::Hash,
    start: u64,
    bytes: Vec<u8>,
}

/// User and group names -> ids on this host.
type IdNames = (HashMap<String, u32>, HashMap<String, u32>);

/// What the restore threads share, read-only.
struct Shared<'a> {
    repo: &'a Repo,
    index: &'a crate::repo::Index,
    staging: &'a Dir,
    chown: bool,
    progress: &'a indicatif::ProgressBar,
    /// `--by-name`: owner and group name -> id on this host.
    names: Option<&'a IdNames>,
    /// Set by the first worker that fails; the others stop.
    abort: std::sync::atomic::AtomicBool,
}

/// One restore thread's state and counts.
struct Restorer<'a> {
    sh: &'a Shared<'a>,
    packs: HashMap<blake3::Hash, Box<dyn Ranged>>,
    window: Option<Window>,
    /// A blob read alone, outside the window.
    single: Vec<u8>,
    /// Content bytes left in the current batch: a window reads no further
    /// ahead than this (the next batch is likely another worker's).
    ahead: u64,
    /// The last directory a file was created in.
    dir_cache: Option<(RelPath, Dir)>,
    summary: RestoreSummary,
    warnings: Vec<RestoreWarning>,
    /// Entries whose inode flags are set in a last pass: (creation order,
    /// path, flags, is a directory).
    flags: Vec<(usize, RelPath, u32, bool)>,
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
/// does not match its BLAKE3 id (a blob is checked before its bytes are
/// written; the entries file was checked by [`load`] before anything was
/// created, and is checked again as the build reads it, so a file changed
/// in between fails the run at its end); [`Error::Restore`] or I/O errors
/// for entries that cannot be created. In every error case the staging tree
/// is removed and no target is created.
pub fn run(
    repo: &Repo,
    opts: &RestoreOptions,
    loaded: Loaded,
    progress: &indicatif::ProgressBar,
) -> Result<(RestoreSummary, Vec<RestoreWarning>)> {
    let started = Instant::now();
    // The second read of the entries file, the one the tree is built from
    // (checked against its id again: it could have changed since the scan).
    let reader = repo.entries_reader(&loaded.record.entries.id, BUILD_PIECE)?;
    let sub = loaded.subpath.clone();

    // The target: its parent must exist, its name must not.
    let target = std::path::absolute(&opts.target)
        .map_err(|e| Error::io("resolve", opts.target.display(), e))?;
    let target_display = target.display().to_string();
    let (parent_path, target_name) = split_target(&target)?;
    let parent = Dir::open_root(&parent_path)
        .map_err(|e| Error::io("open target parent", parent_path.display(), e))?;
    let existing = parent
        .stat_opt(&target_name)
        .map_err(|e| Error::io("stat", &target_display, e))?;
    let swap = match existing {
        None => false,
        Some(_) if !opts.replace => {
            return Err(Error::TargetExists {
                path: target_display,
            })
        }
        Some(st) if st.kind != crate::fs::FileKind::Dir => {
            return Err(Error::Usage(format!(
                "--replace: {target_display} is not a directory"
            )))
        }
        Some(_) => true,
    };
    // Where the old tree goes: checked before anything is written.
    let keep_old = match (&opts.keep_old, swap) {
        (Some(k), true) => {
            let k = std::path::absolute(k).map_err(|e| Error::io("resolve", k.display(), e))?;
            let (kp, kn) = split_target(&k)?;
            let kdir = Dir::open_root(&kp).map_err(|e| Error::io("open", kp.display(), e))?;
            if kdir
                .stat_opt(&kn)
                .map_err(|e| Error::io("stat", k.display(), e))?
                .is_some()
            {
                return Err(Error::TargetExists {
                    path: k.display().to_string(),
                });
            }
            let same_fs =
                kdir.stat_self().map(|s| s.dev).ok() == parent.stat_self().map(|s| s.dev).ok();
            if !same_fs {
                return Err(Error::Usage(format!(
                    "--keep-old {} must be on the target's filesystem",
                    k.display()
                )));
            }
            Some((kdir, kn, k.display().to_string()))
        }
        _ => None,
    };
    let index = repo.load_index()?;
    let mut stale_removed = 0u64;

    // The run's names beside the target: the staging directory, and where
    // an old tree goes when --keep-old fails.
    let run_name = |prefix: &str| {
        Name::new(format!("{prefix}{}", &opts.run_id[..opts.run_id.len().min(16)]).as_bytes())
            .map_err(|e| Error::Usage(e.to_string()))
    };
    let staging_name = run_name(".snap-restore-")?;
    let staging_display = parent_path
        .join(staging_name.to_string())
        .display()
        .to_string();
    let mut not_ours = Vec::new();
    remove_stale_staging(&parent, &parent_path, &mut stale_removed, &mut not_ours)?;
    parent
        .mkdir(&staging_name, 0o700)
        .map_err(|e| Error::io("create staging directory", &staging_display, e))?;
    // Held for the whole run: a later restore beside this target removes
    // only staging directories whose lock it can take (dead runs').
    let staging_lock = parent
        .open_dir(&staging_name)
        .map_err(|e| Error::io("open staging directory", &staging_display, e))?;
    if !fd::try_flock(&staging_lock, true).map_err(|e| Error::io("flock", &staging_display, e))? {
        return Err(Error::Usage(format!(
            "staging directory {staging_display} is locked by another run"
        )));
    }
    let result = (|| {
        let staging = parent
            .open_dir(&staging_name)
            .map_err(|e| Error::io("open staging directory", &staging_display, e))?;
        progress.set_length(loaded.bytes);
        let names = if opts.by_name {
            let (u, g) = crate::sys::id_names(Path::new("/etc"))
                .map_err(|e| Error::io("read", "/etc/passwd", e))?;
            Some((u.into_iter().collect(), g.into_iter().collect()))
        } else {
            None
        };
        let shared = Shared {
            repo,
            index: &index,
            staging: &staging,
            chown: crate::sys::euid() == 0,
            progress,
            names: names.as_ref(),
            abort: std::sync::atomic::AtomicBool::new(false),
        };
        let summary = RestoreSummary {
            repo: repo.path.display().to_string(),
            snapshot_id: loaded.snapshot_id.clone(),
            target: target_display.clone(),
            policy: opts.policy.clone(),
            tier: loaded.tier,
            tier_source: loaded.tier_source.to_owned(),
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
            preservation_applied: Default::default(),
            replaced: false,
            stale_staging_removed: 0,
            old_kept: None,
            pre_restore_snapshot: None,
        };
        let mut r = Restorer::new(&shared, summary);
        // While the tree is built, a flusher thread keeps the disk busy
        // with what is already written: the kernel's own writeback starts
        // only past dirty_background_ratio (10 % of memory) or after
        // dirty_expire_centisecs (30 s), see Documentation/admin-guide/
        // sysctl/vm.rst, so without it every byte would wait for the final
        // syncfs. Measured: /usr/share restores 0.2-0.3 s faster of ~1.7 s.
        //
        // A writeback error is reported by `syncfs` once per open file
        // (errseq, Linux 5.8+; see `syncfs(2)`), so the flusher keeps the
        // first one it sees: the final `syncfs` on the same descriptor
        // would return 0.
        let building = std::sync::atomic::AtomicBool::new(true);
        let flush_error = std::sync::Mutex::new(None::<std::io::Error>);
        let built = std::thread::scope(|s| {
            s.spawn(|| {
                while building.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Err(e) = staging.syncfs() {
                        let mut first = flush_error.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert(e);
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            });
            // The flusher stops however the build ends, a panic included
            // (the scope would otherwise wait for it forever).
            let built =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.build(reader, &loaded)));
            building.store(false, std::sync::atomic::Ordering::Relaxed);
            built
        });
        let root_flags = built.map_err(|p| internal_panic(&staging_display, &*p))??;
        if let Some(e) = flush_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(Error::io("syncfs", &staging_display, e));
        }
        staging
            .syncfs()
            .map_err(|e| Error::io("syncfs", &staging_display, e))?;
        Ok((r.summary, r.warnings, root_flags))
    })();
    let (mut summary, mut warnings, root_flags) = match result {
        Ok((summary, mut warnings, root_flags)) => {
            for shown in not_ours {
                warnings.push(RestoreWarning {
                    path: shown,
                    op: "remove stale staging directory".into(),
                    detail: "left alone: another user owns it".into(),
                });
            }
            (summary, warnings, root_flags)
        }
        Err(e) => {
            remove_staging(&parent, &staging_name, &staging_lock, &staging_display);
            return Err(e);
        }
    };
    if let Err(e) = crate::interrupt::check() {
        remove_staging(&parent, &staging_name, &staging_lock, &staging_display);
        return Err(e);
    }
    let built = staging_lock
        .stat_self()
        .map_err(|e| Error::io("stat", &staging_display, e));
    // With --replace: the tree being replaced, held open, so that what is
    // removed (or kept) afterwards is that tree and not whatever another
    // process put at its name.
    let old = if swap {
        parent
            .open_dir(&target_name)
            .and_then(|d| d.stat_self().map(|st| (d, st)))
            .map_err(|e| Error::io("open", &target_display, e))
            .map(Some)
    } else {
        Ok(None)
    };
    let (built, old) = match built.and_then(|b| old.map(|o| (b, o))) {
        Ok(x) => x,
        Err(e) => {
            remove_staging(&parent, &staging_name, &staging_lock, &staging_display);
            return Err(e);
        }
    };
    let placed = if swap {
        parent.exchange(&staging_name, &parent, &target_name)
    } else {
        parent.rename(&staging_name, &parent, &target_name, true)
    };
    if let Err(e) = placed {
        remove_staging(&parent, &staging_name, &staging_lock, &staging_display);
        return Err(Error::Swap {
            from: staging_display,
            to: target_display,
            source: e,
        });
    }
    // The name must now hold the tree that was built: another process
    // that can write the parent could have swapped the staging name (for
    // a symlink, say) before the rename.
    if !holds(&parent, &target_name, &built) {
        if swap {
            // Put the old tree back where it was (the name now holds it
            // only if it is still at the staging name).
            if let Err(e) = parent.exchange(&staging_name, &parent, &target_name) {
                eprintln!("snap: warning: could not swap back {target_display}: {e}");
            }
        }
        // What was built is removed through its own descriptor, wherever
        // it was moved; nothing is removed by name.
        if let Err(e) = staging_lock.clear() {
            eprintln!("snap: warning: could not empty the staging tree: {e}");
        }
        return Err(Error::Swap {
            from: staging_display,
            to: target_display,
            source: std::io::Error::other(
                "another process replaced the staging directory before the rename; the restored tree was removed and the target left as that process made it",
            ),
        });
    }
    let committed = restored(&summary.snapshot_id, &target_display);
    if let Some((old_dir, old_st)) = old {
        // The old tree now sits under the staging name.
        summary.replaced = true;
        let old_here = holds(&parent, &staging_name, &old_st);
        match keep_old {
            Some((kdir, kn, shown)) => {
                let kept = if old_here {
                    parent.rename(&staging_name, &kdir, &kn, true)
                } else {
                    Err(std::io::Error::other(
                        "the old tree was moved away by another process",
                    ))
                };
                if let Err(e) = kept.and_then(|()| crate::fs::fsync_parent_dir(&kdir)) {
                    // Never left under a staging name, which the next
                    // restore beside the target would remove as stale.
                    let aside = run_name(".snap-old-")?;
                    let at = if old_here
                        && parent.rename(&staging_name, &parent, &aside, true).is_ok()
                    {
                        parent_path.join(aside.to_string()).display().to_string()
                    } else if old_here {
                        staging_display.clone()
                    } else {
                        "an unknown place".to_owned()
                    };
                    return Err(Error::io("keep old tree at", &shown, e)
                        .after_commit(format!("{committed}; the old tree is at {at}")));
                }
                summary.old_kept = Some(shown);
            }
            None => {
                let removed = old_dir.clear().and_then(|()| {
                    if old_here {
                        parent.rmdir(&staging_name)?;
                    }
                    Ok(())
                });
                if let Err(e) = removed {
                    warnings.push(RestoreWarning {
                        path: staging_display.clone(),
                        op: "remove old tree".into(),
                        detail: e.to_string(),
                    });
                }
            }
        }
    }
    if let Some(want) = root_flags {
        // After the rename: an immutable directory cannot be renamed.
        let res = set_flags(&staging_lock, want).and_then(|()| staging_lock.sync());
        count(&mut summary.preservation_applied.flags, res.is_ok());
        if let Err(e) = res {
            warnings.push(RestoreWarning {
                path: ".".into(),
                op: "FS_IOC_SETFLAGS".into(),
                detail: e.to_string(),
            });
        }
    }
    crate::fs::fsync_parent_dir(&parent).map_err(|e| {
        Error::io("fsync directory", parent_path.display(), e).after_commit(committed)
    })?;
    summary.durable = true;
    summary.stale_staging_removed = stale_removed;
    drop(staging_lock);
    summary.duration_ms = started.elapsed().as_millis() as u64;
    Ok((summary, warnings))
}

/// The error for an entry restore could not create or apply: a name that
/// already exists in the staging tree (which holds only what this run
/// made) is a second record of it, `E_INTEGRITY`; a full disk is
/// `E_NO_SPACE`; anything else `E_RESTORE_FAILED`.
fn entry_error(shown: &str, op: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        return integrity(
            shown,
            format!("{op}: a second record of this name in the snapshot"),
        );
    }
    if crate::error::io_error_id(&e) == crate::error::ErrorId::E_NO_SPACE {
        return Error::Io {
            op: "restore",
            path: shown.to_owned(),
            source: e,
        };
    }
    Error::Restore {
        path: shown.to_owned(),
        detail: format!("{op}: {e}"),
    }
}

/// Whether `name` in `parent` is (now) the directory `st` was taken of:
/// same device and inode, without following a symlink.
fn holds(parent: &Dir, name: &Name, st: &crate::fs::Stat) -> bool {
    parent.stat_opt(name).ok().flatten().is_some_and(|now| {
        now.kind == crate::fs::FileKind::Dir && (now.dev, now.ino) == (st.dev, st.ino)
    })
}

/// What a restore whose tree is in place says is true (see
/// [`Error::AfterCommit`]).
pub fn restored(snapshot_id: &str, target: &str) -> String {
    format!(
        "snapshot {} was restored into {target}",
        &snapshot_id[..12.min(snapshot_id.len())]
    )
}

/// The error a panicking restore thread becomes: the run fails (and its
/// staging tree is removed) instead of aborting or hanging.
fn internal_panic(staging: &str, payload: &(dyn std::any::Any + Send)) -> Error {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Error::io(
        "restore",
        staging,
        std::io::Error::other(format!("internal error: {what}")),
    )
}

/// A snapshot resolved and its entries scanned and verified, ready for
/// preflight and [`run`]. Holds no entry records: [`run`] reads the
/// entries file again, a piece at a time.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Snapshot id.
    pub snapshot_id: String,
    /// Its record.
    pub record: crate::repo::SnapshotRecord,
    /// The tier being applied.
    pub tier: crate::policy::PreservationTier,
    /// Where the tier came from: `"snapshot"` (the record's), `"policy"`
    /// (chosen by preset, policy file or flag) or `"untrusted"` (capped at
    /// extended by `restore_untrusted`).
    pub tier_source: &'static str,
    /// Policy `restore_untrusted`: set-ID bits are cleared as well.
    pub untrusted: bool,
    /// What the snapshot's entries (at that tier) ask of a restore.
    pub needs: crate::preflight::Needs,
    /// The snapshot path restored (the root: all of it). Its subtree
    /// becomes the target; a non-directory is placed inside a new target
    /// directory.
    pub subpath: RelPath,
    /// Content bytes of the entries restored (the progress total).
    pub bytes: u64,
    /// What sits at `subpath`.
    shape: Shape,
    /// Paths that hard link entries name as their leader.
    leaders: std::collections::HashSet<RelPath>,
}

/// What a restore's path is in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// A directory: it becomes the target, its subtree the target's.
    Tree,
    /// A non-directory: placed inside a new target directory.
    One,
    /// The root of a snapshot of a single file (no root record): its one
    /// entry goes inside a new target directory.
    Whole,
}

/// Where one snapshot entry goes in a restore.
enum Place {
    /// It is the restored directory itself.
    Root,
    /// At this path under the target.
    At(RelPath),
    /// Not restored.
    Skip,
}

impl Loaded {
    fn place(&self, rel: &RelPath) -> Place {
        let sub = &self.subpath;
        match self.shape {
            Shape::Tree if rel == sub => Place::Root,
            Shape::Tree => match rel.strip_prefix(sub) {
                Some(new) => Place::At(new),
                None => Place::Skip,
            },
            Shape::One if rel == sub => match rel.file_name() {
                Some(name) => Place::At(RelPath::root().join(name.clone())),
                None => Place::Skip,
            },
            Shape::One => Place::Skip,
            Shape::Whole => Place::At(rel.clone()),
        }
    }
}

fn second_record(sub: &RelPath) -> String {
    if sub.is_root() {
        "a second record for the snapshot root".into()
    } else {
        format!("a second record for {sub}")
    }
}

/// Drops every field of `r` that `tier` does not apply ([`tier::limit`]).
///
/// `untrusted` (policy `restore_untrusted`) also clears the set-user-ID and
/// set-group-ID bits.
fn limit(r: &mut EntryRecord, tier: crate::policy::PreservationTier, untrusted: bool) {
    if untrusted {
        r.mode &= !0o6000;
    }
    tier::limit(r, tier);
}

/// The fields of an entry record the scan before a restore reads,
/// borrowed from the line (chunk lists and the rest are skipped unparsed).
#[derive(serde::Deserialize)]
struct ScanLine<'a> {
    v: u32,
    #[serde(borrow)]
    path: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    path_b64: Option<std::borrow::Cow<'a, str>>,
    kind: EntryKind,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    flags: Option<u32>,
    #[serde(default, borrow)]
    xattrs: Option<std::collections::BTreeMap<std::borrow::Cow<'a, str>, serde::de::IgnoredAny>>,
    #[serde(default, borrow)]
    link: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    link_b64: Option<std::borrow::Cow<'a, str>>,
}

/// What the scan of one part of the entries file found.
#[derive(Default)]
struct ScanPart {
    needs: crate::preflight::Needs,
    /// Content bytes of entries strictly under the restored path.
    under: u64,
    /// The entry at the restored path: (kind, size).
    at: Option<(EntryKind, u64)>,
    leaders: std::collections::HashSet<RelPath>,
}

/// Resolves `query` and scans its entries file once, a piece at a time:
/// checks it against its id, finds what sits at `subpath` and what the
/// entries (limited to the restore tier) ask of the restore. `tier: None`
/// applies the snapshot's own tier. Memory stays bounded by the piece size
/// and the number of hard link leaders, not by the number of entries.
///
/// # Errors
///
/// As [`Repo::resolve`] and [`Repo::entries_reader`]; [`Error::Integrity`]
/// for a malformed record or a file that does not match its id;
/// [`Error::SnapshotNotFound`] (`E_BACKUP_MISSING`) when the snapshot holds
/// no `subpath`.
pub fn load(
    repo: &Repo,
    query: &str,
    tier: Option<crate::policy::PreservationTier>,
    subpath: Option<&RelPath>,
    untrusted: bool,
) -> Result<Loaded> {
    let (snapshot_id, record) = repo.resolve(query)?;
    let (mut tier, mut tier_source) = match tier {
        Some(t) => (t, "policy"),
        None => (record.tier, "snapshot"),
    };
    if untrusted && tier > crate::policy::PreservationTier::Extended {
        (tier, tier_source) = (crate::policy::PreservationTier::Extended, "untrusted");
    }
    let sub = subpath.cloned().unwrap_or_default();
    let sub_raw = sub.to_bytes();
    let mut reader = repo.entries_reader(&record.entries.id, SCAN_PIECE)?;
    let path = reader.path().to_owned();
    let scan = |part: &[u8], first: usize| -> Result<ScanPart> {
        let mut out = ScanPart::default();
        for (i, line) in crate::repo::lines(part).enumerate() {
            if line.is_empty() {
                continue;
            }
            let bad = |detail: String| integrity(format!("{path}:{}", first + i), detail);
            let l: ScanLine =
                serde_json::from_slice(line).map_err(|e| bad(format!("malformed record: {e}")))?;
            crate::repo::sidecar::check_version(l.v).map_err(bad)?;
            if !tier::keeps(tier, l.kind) {
                continue;
            }
            let raw: std::borrow::Cow<[u8]> = match &l.path_b64 {
                None => std::borrow::Cow::Borrowed(l.path.as_bytes()),
                Some(b) => crate::fs::stored_to_bytes(&l.path, Some(b))
                    .map_err(|e| bad(format!("invalid path: {e}")))?
                    .into(),
            };
            let tier::Fields {
                owners: extended,
                full,
            } = tier::fields(tier);
            out.needs.add(
                l.uid.filter(|_| extended),
                l.flags.filter(|_| full),
                l.kind,
                l.xattrs
                    .iter()
                    .filter(|_| full)
                    .flat_map(|x| x.keys().map(|k| k.as_ref())),
            );
            if l.kind == EntryKind::Hardlink {
                let link = l.link.as_deref().unwrap_or_default();
                let leader = RelPath::from_stored(link, l.link_b64.as_deref())
                    .map_err(|e| bad(format!("invalid hard link leader: {e}")))?;
                out.leaders.insert(leader);
            }
            let size = l.size.unwrap_or(0);
            if *raw == *sub_raw {
                if out.at.is_some() {
                    return Err(bad(second_record(&sub)));
                }
                out.at = Some((l.kind, size));
            } else if sub_raw.is_empty()
                || (raw.starts_with(&sub_raw) && raw.get(sub_raw.len()) == Some(&b'/'))
            {
                out.under += size;
            }
        }
        Ok(out)
    };
    let mut total = ScanPart::default();
    while let Some((piece, first)) = reader.next_piece()? {
        let parts = crate::repo::split_lines(&piece, crate::par::cores());
        let parts = crate::par::map(&parts, |&(part, line)| scan(part, first + line - 1));
        for part in parts {
            let part = part?;
            total.needs.merge(&part.needs);
            total.under += part.under;
            if total.at.is_some() && part.at.is_some() {
                return Err(integrity(&path, second_record(&sub)));
            }
            total.at = total.at.or(part.at);
            total.leaders.extend(part.leaders);
        }
    }
    let (shape, bytes) = match total.at {
        Some((EntryKind::Dir, _)) => (Shape::Tree, total.under),
        Some((_, size)) => (Shape::One, size),
        None if sub.is_root() => (Shape::Whole, total.under),
        None => {
            return Err(Error::SnapshotNotFound {
                query: format!("{query}:{sub}"),
                detail: format!("snapshot {} holds no path {sub}", &snapshot_id[..12]),
            })
        }
    };
    Ok(Loaded {
        snapshot_id,
        record,
        tier,
        tier_source,
        untrusted,
        needs: total.needs,
        subpath: sub,
        bytes,
        shape,
        leaders: total.leaders,
    })
}

/// Removes `.snap-restore-*` directories in `parent` left by restores that
/// died (SIGKILL, power loss): those owned by this user whose `flock` can
/// be taken, i.e. no live run holds them. Others' are named in `skipped`.
/// The removal holds a bounded number of descriptors ([`Dir::remove_tree`]).
fn remove_stale_staging(
    parent: &Dir,
    parent_path: &Path,
    removed: &mut u64,
    skipped: &mut Vec<String>,
) -> Result<()> {
    for n in parent
        .list()
        .map_err(|e| Error::io("list", parent_path.display(), e))?
    {
        if !n.as_bytes().starts_with(b".snap-restore-") {
            continue;
        }
        let shown = parent_path.join(n.to_string()).display().to_string();
        let Ok(d) = parent.open_dir(&n) else { continue };
        // Only what a restore as this user made: another user's directory
        // of that name is theirs, whatever it holds.
        if d.stat_self().ok().map(|st| st.uid) != Some(crate::sys::euid()) {
            skipped.push(shown);
            continue;
        }
        if fd::try_flock(&d, true).map_err(|e| Error::io("flock", &shown, e))? {
            drop(d);
            parent
                .remove_tree(&n)
                .map_err(|e| Error::io("remove stale staging directory", &shown, e))?;
            *removed += 1;
        }
    }
    Ok(())
}

/// Removes a staging directory after a failed restore; a failure to remove
/// it is reported on stderr (the next restore does not reuse the name).
fn remove_staging(parent: &Dir, name: &Name, staging: &Dir, display: &str) {
    // Emptied through its own descriptor, wherever another process may
    // have moved it; its name is removed only while it still names it.
    let removed = staging.clear().and_then(|()| {
        let st = staging.stat_self()?;
        if holds(parent, name, &st) {
            parent.rmdir(name)?;
        }
        Ok(())
    });
    if let Err(e) = removed {
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

fn count(c: &mut FieldCount, ok: bool) {
    if ok {
        c.applied += 1;
    } else {
        c.skipped += 1;
    }
}

/// Sets the modifiable inode flags of `fd` to `want`'s, keeping the
/// filesystem's own bits.
fn set_flags(fd: &impl std::os::fd::AsFd, want: u32) -> std::io::Result<()> {
    let current = fd::flags(fd)?;
    let new = (current & !FLAGS_MODIFIABLE) | (want & FLAGS_MODIFIABLE);
    if new != current {
        fd::set_flags(fd, new)?;
    }
    Ok(())
}

impl<'a> Restorer<'a> {
    fn new(sh: &'a Shared<'a>, summary: RestoreSummary) -> Self {
        Restorer {
            sh,
            packs: HashMap::new(),
            window: None,
            single: Vec::new(),
            ahead: 0,
            dir_cache: None,
            summary,
            warnings: Vec::new(),
            flags: Vec::new(),
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
    fn build(&mut self, mut reader: EntriesReader, loaded: &Loaded) -> Result<Option<u32>> {
        use std::sync::atomic::Ordering;
        let sh = self.sh;
        let template = self.summary.clone();
        let tier = loaded.tier;
        let untrusted = loaded.untrusted;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<FileWork>>(64);
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
    fn plan(
        &mut self,
        entries: std::sync::mpsc::Receiver<Result<Vec<EntryRecord>>>,
        loaded: &Loaded,
        tx: std::sync::mpsc::SyncSender<Vec<FileWork>>,
    ) -> Result<(Vec<DirWork>, Vec<(RelPath, RelPath)>)> {
        use crate::policy::PreservationTier as T;
        let sh = self.sh;
        let id = &loaded.record.entries.id;
        let entries_path = sh.repo.entries_display(id);
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

    /// A worker of step 2 of [`Restorer::build`]: takes batches until the
    /// plan is done, each file written and given its metadata, with its own
    /// open packs. The first worker to fail sets `abort`,
    /// which stops the others and the plan. Returns its counts, warnings,
    /// queued inode flags and result.
    #[allow(clippy::type_complexity)]
    fn worker(
        sh: &'a Shared<'a>,
        template: &RestoreSummary,
        rx: &std::sync::Mutex<std::sync::mpsc::Receiver<Vec<FileWork>>>,
    ) -> (
        RestoreSummary,
        Vec<RestoreWarning>,
        Vec<(usize, RelPath, u32, bool)>,
        Result<()>,
    ) {
        use std::sync::atomic::Ordering;
        let mut w = Restorer::new(sh, template.clone());
        let recv = || rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
            let Ok(batch) = recv() else { return Ok(()) };
            w.ahead = batch.iter().map(|f| f.rec.size.unwrap_or(0)).sum();
            for f in &batch {
                if sh.abort.load(Ordering::Relaxed) {
                    return Ok(());
                }
                w.file_work(f)?;
            }
        }))
        .unwrap_or_else(|p| Err(internal_panic(&template.target, &*p)));
        if res.is_err() {
            sh.abort.store(true, Ordering::Relaxed);
        }
        // Until the plan sees the abort and closes the channel, batches
        // are taken and dropped: a plan blocked on a full channel with no
        // worker left would wait forever.
        while recv().is_ok() {}
        (w.summary, w.warnings, w.flags, res)
    }

    /// Creates one file of a worker's batch in its directory (kept open
    /// for the files that follow in the same directory).
    fn file_work(&mut self, f: &FileWork) -> Result<()> {
        crate::interrupt::check()?;
        let sh = self.sh;
        let shown = f.rel.to_string();
        let parent = f.rel.parent().unwrap_or_default();
        let dir = match self.dir_cache.take() {
            Some((r, d)) if r == parent => d,
            _ => sh
                .staging
                .open_path(&parent)
                .map_err(|e| entry_error(&shown, "open directory", e))?,
        };
        let name = f
            .rel
            .file_name()
            .ok_or_else(|| integrity(&shown, "a file record for the snapshot root"))?;
        let res = self.file(&dir, name, &f.rec, &f.rel, f.order, &shown);
        self.dir_cache = Some((parent, dir));
        res
    }

    fn warn(&mut self, path: &str, op: impl Into<String>, detail: impl ToString) {
        self.warnings.push(RestoreWarning {
            path: path.to_owned(),
            op: op.into(),
            detail: detail.to_string(),
        });
    }

    /// The (uid, gid) to apply: by recorded name through this host's
    /// databases with `--by-name` (falling back to the recorded id), else
    /// the recorded ids. `None` when not root or the tier kept no owner.
    fn owner(&mut self, rec: &EntryRecord) -> Option<(u32, u32)> {
        let (uid, gid) = (rec.uid?, rec.gid?);
        count(&mut self.summary.preservation_applied.owner, self.sh.chown);
        if !self.sh.chown {
            return None;
        }
        Some(match self.sh.names {
            Some((users, groups)) => (
                rec.user
                    .as_ref()
                    .and_then(|n| users.get(n))
                    .copied()
                    .unwrap_or(uid),
                rec.group
                    .as_ref()
                    .and_then(|n| groups.get(n))
                    .copied()
                    .unwrap_or(gid),
            ),
            None => (uid, gid),
        })
    }

    /// Sets every recorded xattr with `set`; failures become warnings.
    /// Runs after chown, so `security.capability` survives (chown clears
    /// it, `capabilities(7)`).
    fn apply_xattrs(
        &mut self,
        rec: &EntryRecord,
        shown: &str,
        set: impl Fn(&[u8], &[u8]) -> std::io::Result<()>,
    ) -> Result<()> {
        let Some(x) = &rec.xattrs else { return Ok(()) };
        for (name, value) in x {
            let value = base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|e| integrity(shown, format!("xattr {name}: invalid base64: {e}")))?;
            let res = set(name.as_bytes(), &value);
            let p = &mut self.summary.preservation_applied;
            let field = match name.as_str() {
                "system.posix_acl_access" | "system.posix_acl_default" => &mut p.acls,
                "security.capability" => &mut p.caps,
                "security.selinux" => &mut p.selinux,
                _ => &mut p.xattrs,
            };
            count(field, res.is_ok());
            if let Err(e) = res {
                self.warn(shown, format!("setxattr {name}"), e);
            }
        }
        Ok(())
    }

    /// chown -> chmod -> xattrs -> times on an open file or directory;
    /// queues its inode flags for the last pass.
    fn apply_fd_metadata(
        &mut self,
        f: &impl std::os::fd::AsFd,
        rec: &EntryRecord,
        rel: &RelPath,
        order: usize,
        shown: &str,
    ) -> Result<()> {
        let ctx = |op: &str, e: std::io::Error| entry_error(shown, op, e);
        // A chown or chmod that would change nothing is skipped: on ext4
        // each is an inode update, and a chmod also looks up the inode's
        // ACL (`posix_acl_chmod`), while a new file usually has its owner
        // (this process) and mode (created with its permission bits)
        // already. Checked, not assumed: a set-group-ID or default-ACL
        // parent of the target changes what a new file gets.
        let now = fd::stat(f).map_err(|e| ctx("stat", e))?;
        let mut chowned = false;
        if let Some((uid, gid)) = self.owner(rec) {
            if (now.uid, now.gid) != (uid, gid) {
                fd::chown(f, uid, gid).map_err(|e| ctx("chown", e))?;
                chowned = true;
            }
        }
        // A chown may clear set-ID bits (chown(2)): the mode is then set
        // whatever it was before.
        if chowned || now.mode & 0o7777 != rec.mode & 0o7777 {
            fd::chmod(f, rec.mode).map_err(|e| ctx("chmod", e))?;
        }
        self.summary.preservation_applied.mode.applied += 1;
        self.apply_xattrs(rec, shown, |n, v| fd::set_xattr(f, n, v))?;
        fd::set_times(f, rec.atime, rec.mtime).map_err(|e| ctx("set times", e))?;
        self.summary.preservation_applied.timestamps.applied += 1;
        if let Some(flags) = rec.flags.filter(|fl| fl & FLAGS_MODIFIABLE != 0) {
            self.flags
                .push((order, rel.clone(), flags, rec.kind == EntryKind::Dir));
        }
        Ok(())
    }

    /// Sets queued inode flags, last entries first (so a directory's come
    /// after its children's). The root's are left for after the rename (an
    /// immutable directory cannot be renamed) and returned.
    fn apply_flags(&mut self) -> Option<u32> {
        let mut root = None;
        let mut queued = std::mem::take(&mut self.flags);
        queued.sort_by_key(|f| f.0);
        for (_, rel, want, is_dir) in queued.into_iter().rev() {
            if rel.is_root() {
                root = Some(want);
                continue;
            }
            let shown = rel.to_string();
            let opened = if is_dir {
                self.sh.staging.open_path(&rel).map(|d| d.into())
            } else {
                self.sh
                    .staging
                    .open_path(&rel.parent().unwrap_or_default())
                    .and_then(|p| p.open_file(rel.file_name().expect("non-root path")))
            };
            let res = opened.and_then(|fd: std::os::fd::OwnedFd| set_flags(&fd, want));
            count(&mut self.summary.preservation_applied.flags, res.is_ok());
            if let Err(e) = res {
                self.warn(&shown, "FS_IOC_SETFLAGS", e);
            }
        }
        root
    }

    /// Creates a regular file, writes its verified content (into its data
    /// extents for a sparse file, leaving the holes unwritten), applies its
    /// metadata. Creation and writes are direct syscalls (see
    /// [`Dir::create_file`]); blobs come through [`Restorer::read_blob`].
    fn file(
        &mut self,
        dir: &Dir,
        name: &Name,
        rec: &EntryRecord,
        rel: &RelPath,
        order: usize,
        shown: &str,
    ) -> Result<()> {
        // Created with its permission bits (not set-ID or sticky bits,
        // which come after the chown), so the chmod is usually skipped; the
        // staging tree (mode 0700) keeps it from other users meanwhile.
        let out = dir
            .create_file(name, rec.mode & 0o777)
            .map_err(|e| entry_error(shown, "create", e))?;
        let progress = self.sh.progress;
        // Where the stored bytes go: the data extents, or the whole file.
        let extents: Vec<(u64, u64)> = match &rec.sparse {
            Some(e) => e.iter().map(|[o, l]| (*o, *l)).collect(),
            None => vec![(0, u64::MAX)],
        };
        let (mut ei, mut within) = (0usize, 0u64);
        let mut offset = 0u64;
        let chunks = rec.chunks.as_deref().unwrap_or(&[]);
        for hex in chunks {
            let id = blake3::Hash::from_hex(hex)
                .map_err(|_| integrity(shown, format!("chunk id {hex:?} is not BLAKE3 hex")))?;
            let bytes = self.read_blob(&id)?;
            let len = bytes.len() as u64;
            if rec.sparse.is_none() {
                fd::write_all_at(&out, bytes, offset).map_err(|e| Error::io("write", shown, e))?;
            } else {
                let mut done = 0usize;
                while done < bytes.len() {
                    let Some(&(start, elen)) = extents.get(ei) else {
                        return Err(integrity(shown, "more content than the sparse map holds"));
                    };
                    let n = ((elen - within) as usize).min(bytes.len() - done);
                    fd::write_all_at(&out, &bytes[done..done + n], start + within)
                        .map_err(|e| Error::io("write", shown, e))?;
                    done += n;
                    within += n as u64;
                    if within == elen {
                        ei += 1;
                        within = 0;
                    }
                }
            }
            offset += len;
            progress.inc(len);
        }
        // Every blob was checked against its id, and the chunk list against
        // the entries file's id, which the snapshot record names: the
        // content is verified without hashing it whole a second time. A
        // one-chunk file's recorded hash must still be that chunk's id.
        let consistent = match chunks {
            [one] => rec.hash.as_deref().is_none_or(|h| h == one),
            [] => rec
                .hash
                .as_deref()
                .is_none_or(|h| h == blake3::hash(b"").to_hex().as_str()),
            _ => true,
        };
        if !consistent {
            return Err(integrity(
                shown,
                "restored content does not match the file's BLAKE3",
            ));
        }
        let stored: u64 = match &rec.sparse {
            Some(e) => e.iter().map(|[_, l]| *l).sum(),
            None => rec.size.unwrap_or(offset),
        };
        if stored != offset {
            return Err(integrity(
                shown,
                format!("restored {offset} bytes, record says {stored}"),
            ));
        }
        if let (Some(_), Some(size)) = (&rec.sparse, rec.size) {
            // Trailing holes: set the length without writing.
            fd::truncate(&out, size).map_err(|e| Error::io("truncate", shown, e))?;
            self.summary.preservation_applied.sparse.applied += 1;
        }
        self.apply_fd_metadata(&out, rec, rel, order, shown)?;
        drop(out);
        self.summary.files += 1;
        self.summary.bytes += offset;
        Ok(())
    }

    /// Reads one blob and checks it against its id before handing it out.
    ///
    /// A blob past the current window (or in another pack) starts a new
    /// window of [`PACK_WINDOW`] bytes read at once: restore walks the
    /// packs in the order backup wrote them, so the blobs after it are then
    /// served from memory. A blob before the window (a deduplicated one)
    /// is read alone, leaving the window in place.
    fn read_blob(&mut self, id: &blake3::Hash) -> Result<&[u8]> {
        let sh = self.sh;
        let loc = sh.index.get(id).ok_or_else(|| {
            integrity(
                sh.repo.display("index"),
                format!("blob {id} is in no index"),
            )
        })?;
        let len = loc.length as usize;
        let hex = loc.pack.to_hex();
        let pack_path = sh.repo.file_path(FileKind::Pack, &hex);
        let end = loc
            .offset
            .checked_add(u64::from(loc.length))
            .ok_or_else(|| {
                integrity(
                    &pack_path,
                    format!(
                        "blob {id}: offset {} + length {} overflows",
                        loc.offset, loc.length
                    ),
                )
            })?;
        let in_window = |w: &Window| {
            w.pack == loc.pack && loc.offset >= w.start && end <= w.start + w.bytes.len() as u64
        };
        let sequential = self
            .window
            .as_ref()
            .is_none_or(|w| w.pack != loc.pack || loc.offset >= w.start + w.bytes.len() as u64);
        let read_err =
            |e: std::io::Error| integrity(&pack_path, format!("cannot read blob {id}: {e}"));
        let hit = self.window.as_ref().is_some_and(in_window);
        if !hit {
            if !self.packs.contains_key(&loc.pack) {
                if self.packs.len() >= 64 {
                    self.packs.clear();
                }
                let f = sh.repo.open_pack(&loc.pack)?;
                self.packs.insert(loc.pack, f);
            }
            let pack = &self.packs[&loc.pack];
            if sequential {
                let want = (self.ahead.min(PACK_WINDOW as u64) as usize).max(len);
                let mut bytes = pack.read_vec(loc.offset, want).map_err(read_err)?;
                if bytes.len() < len {
                    bytes = pack.read_exact_at(loc.offset, len).map_err(read_err)?;
                }
                self.window = Some(Window {
                    pack: loc.pack,
                    start: loc.offset,
                    bytes,
                });
            } else {
                self.single = pack.read_exact_at(loc.offset, len).map_err(read_err)?;
            }
        }
        let bytes = if hit || sequential {
            let w = self.window.as_ref().expect("window just filled");
            let at = (loc.offset - w.start) as usize;
            &w.bytes[at..at + len]
        } else {
            &self.single[..]
        };
        if blake3::hash(bytes) != *id {
            return Err(integrity(
                pack_path,
                format!(
                    "blob {id} at offset {} does not match its BLAKE3",
                    loc.offset
                ),
            ));
        }
        self.summary.blobs_verified += 1;
        self.ahead = self.ahead.saturating_sub(len as u64);
        Ok(bytes)
    }

    /// Symlinks, FIFOs and devices: create, chown, chmod (not symlinks),
    /// xattrs, times, all without following the name. Sockets are recorded
    /// by backup but not created: a socket belongs to the process that
    /// bound it.
    fn special(&mut self, dir: &Dir, name: &Name, rec: &EntryRecord, shown: &str) -> Result<()> {
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
                .map_err(|e| ctx("chown", e))?;
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
