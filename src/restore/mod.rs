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

mod load;
mod metadata;
mod plan;
mod staging;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::facts::RestoreSummary;
use crate::fs::{Dir, RelPath};
use crate::repo::storage::Ranged;
use crate::repo::{EntriesReader, Repo};

pub use load::{load, Loaded};
use metadata::{count, set_flags};
use staging::{Staging, Target};
use worker::Window;

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

/// Entries file bytes the build reads and parses at once; at most three
/// such pieces are parsed ahead of the plan.
const BUILD_PIECE: usize = 1 << 20;

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
    /// The plaintext of the last compressed blob read.
    plain: Vec<u8>,
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
    let reader = repo.entries_reader(&loaded.record.entries, BUILD_PIECE)?;
    let target = Target::resolve(opts)?;
    let index = repo.index()?;
    let (staging, stale_removed, not_ours) = Staging::create(&target, &opts.run_id)?;
    let built = staging
        .open()
        .and_then(|dir| build_in(repo, opts, &loaded, &index, &dir, &target, progress, reader))
        .and_then(|b| crate::interrupt::check().map(|()| b));
    let (mut summary, mut warnings, root_flags) = match built {
        Ok(b) => b,
        Err(e) => {
            staging.remove(&target);
            return Err(e);
        }
    };
    for shown in not_ours {
        warnings.push(RestoreWarning {
            path: shown,
            op: "remove stale staging directory".into(),
            detail: "left alone: another user owns it".into(),
        });
    }
    staging.put_in_place(&target, &opts.run_id, &mut summary, &mut warnings)?;
    let committed = restored(&summary.snapshot_id, &target.display);
    if let Some(want) = root_flags {
        // After the rename: an immutable directory cannot be renamed.
        let res = set_flags(&staging.lock, want).and_then(|()| staging.lock.sync());
        count(&mut summary.preservation_applied.flags, res.is_ok());
        if let Err(e) = res {
            warnings.push(RestoreWarning {
                path: ".".into(),
                op: "FS_IOC_SETFLAGS".into(),
                detail: e.to_string(),
            });
        }
    }
    crate::fs::fsync_parent_dir(&target.parent).map_err(|e| {
        Error::io("fsync directory", target.parent_path.display(), e).after_commit(committed)
    })?;
    summary.durable = true;
    summary.stale_staging_removed = stale_removed;
    drop(staging);
    summary.duration_ms = started.elapsed().as_millis() as u64;
    Ok((summary, warnings))
}

/// Builds the snapshot's tree in the staging directory `staging` and makes
/// it durable: the restore threads, with a flusher thread keeping the disk
/// busy meanwhile, then one `syncfs`. Returns the counts, the warnings and
/// the target root's inode flags (set after the rename).
///
/// # Errors
///
/// The first error of the build; a writeback error the flusher or the
/// final `syncfs` saw.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn build_in(
    repo: &Repo,
    opts: &RestoreOptions,
    loaded: &Loaded,
    index: &crate::repo::Index,
    staging: &Dir,
    target: &Target,
    progress: &indicatif::ProgressBar,
    reader: EntriesReader,
) -> Result<(RestoreSummary, Vec<RestoreWarning>, Option<u32>)> {
    let staging_display = target.staging_display(&opts.run_id);
    let sub = &loaded.subpath;
    progress.set_length(loaded.bytes);
    tracing::info!(
        staging = %staging_display,
        bytes = loaded.bytes,
        "restore builds the tree in its staging directory"
    );
    let names = if opts.by_name {
        let (u, g) = crate::sys::id_names(Path::new("/etc"))
            .map_err(|e| Error::io("read", "/etc/passwd", e))?;
        Some((u.into_iter().collect(), g.into_iter().collect()))
    } else {
        None
    };
    let shared = Shared {
        repo,
        index,
        staging,
        chown: crate::sys::euid() == 0,
        progress,
        names: names.as_ref(),
        abort: std::sync::atomic::AtomicBool::new(false),
    };
    let summary = RestoreSummary {
        repo: repo.path.display().to_string(),
        io_backend: crate::io::choice()?.backend,
        encrypted: repo.crypto().is_encrypted(),
        transfer: None,
        snapshot_id: loaded.snapshot_id.clone(),
        target: target.display.clone(),
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
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.build(reader, loaded)));
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
    Error::Internal(format!(
        "a restore thread panicked building {staging}: {what}"
    ))
}

impl<'a> Restorer<'a> {
    fn new(sh: &'a Shared<'a>, summary: RestoreSummary) -> Self {
        Restorer {
            sh,
            packs: HashMap::new(),
            window: None,
            single: Vec::new(),
            plain: Vec::new(),
            ahead: 0,
            dir_cache: None,
            summary,
            warnings: Vec::new(),
            flags: Vec::new(),
        }
    }

    fn warn(&mut self, path: &str, op: impl Into<String>, detail: impl ToString) {
        self.warnings.push(RestoreWarning {
            path: path.to_owned(),
            op: op.into(),
            detail: detail.to_string(),
        });
    }
}
