//! The staging directory beside the target, and the target's name:
//! where a restore builds, how a dead run's staging directory is removed,
//! how a name is checked to still hold the tree that was built.
//!
//! Side effects: removes stale staging directories (only those whose lock
//! can be taken) and failed runs' staging trees.

use std::path::{Path, PathBuf};

use super::{restored, RestoreOptions, RestoreWarning};
use crate::error::{Error, Result};
use crate::facts::RestoreSummary;
use crate::fs::{fd, Dir, Name};

/// The restore target: its parent (open), its name, and what is at it.
pub(super) struct Target {
    /// The absolute target path, for messages.
    pub(super) display: String,
    /// The parent's path.
    pub(super) parent_path: PathBuf,
    /// The parent, open: everything beside the target goes through it.
    pub(super) parent: Dir,
    /// The target's name in the parent.
    pub(super) name: Name,
    /// `--replace` of an existing directory: the built tree is swapped in.
    pub(super) swap: bool,
    /// `--keep-old`: where the old tree goes (its directory, name, path).
    keep_old: Option<(Dir, Name, String)>,
}

impl Target {
    /// Resolves `opts.target` (and `--keep-old`): its parent must exist;
    /// its name must not, unless `--replace` names a directory there.
    /// Everything is checked before anything is written.
    ///
    /// # Errors
    ///
    /// [`Error::TargetExists`] (also for a `--keep-old` that exists);
    /// [`Error::Usage`] for a `--replace` of a non-directory or a
    /// `--keep-old` on another filesystem; I/O errors with the path.
    pub(super) fn resolve(opts: &RestoreOptions) -> Result<Target> {
        let target = std::path::absolute(&opts.target)
            .map_err(|e| Error::io("resolve", opts.target.display(), e))?;
        let display = target.display().to_string();
        let (parent_path, name) = split_target(&target)?;
        let parent = Dir::open_root(&parent_path)
            .map_err(|e| Error::io("open target parent", parent_path.display(), e))?;
        let existing = parent
            .stat_opt(&name)
            .map_err(|e| Error::io("stat", &display, e))?;
        let swap = match existing {
            None => false,
            Some(_) if !opts.replace => return Err(Error::TargetExists { path: display }),
            Some(st) if st.kind != crate::fs::FileKind::Dir => {
                return Err(Error::Usage(format!(
                    "--replace: {display} is not a directory"
                )))
            }
            Some(_) => true,
        };
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
        Ok(Target {
            display,
            parent_path,
            parent,
            name,
            swap,
            keep_old,
        })
    }

    /// A name of this run beside the target: `prefix` and the run id's
    /// first 16 characters (`.snap-restore-…` for the staging directory,
    /// `.snap-old-…` for an old tree a failed `--keep-old` leaves).
    fn run_name(run_id: &str, prefix: &str) -> Result<Name> {
        Name::new(format!("{prefix}{}", &run_id[..run_id.len().min(16)]).as_bytes())
            .map_err(|e| Error::Internal(format!("run name {prefix}: {e}")))
    }

    /// The staging directory's path, for messages.
    pub(super) fn staging_display(&self, run_id: &str) -> String {
        let name = Self::run_name(run_id, STAGING_PREFIX)
            .map(|n| n.to_string())
            .unwrap_or_default();
        self.parent_path.join(name).display().to_string()
    }
}

/// The prefix of a staging directory's name.
const STAGING_PREFIX: &str = ".snap-restore-";

/// A staging directory beside the target, locked (`flock`) for the run.
pub(super) struct Staging {
    name: Name,
    display: String,
    /// The staging directory, open and locked: a later restore beside
    /// the target removes only staging directories whose lock it can take
    /// (dead runs'). After the rename it is the restored tree.
    pub(super) lock: Dir,
}

impl Staging {
    /// Removes dead runs' staging directories beside the target, then
    /// creates and locks this run's. Returns it, how many stale ones were
    /// removed, and the paths of those left alone (another user's).
    ///
    /// # Errors
    ///
    /// List, create, open and lock errors with the path.
    pub(super) fn create(t: &Target, run_id: &str) -> Result<(Staging, u64, Vec<String>)> {
        let name = Target::run_name(run_id, STAGING_PREFIX)?;
        let display = t.parent_path.join(name.to_string()).display().to_string();
        let (mut removed, mut not_ours) = (0u64, Vec::new());
        remove_stale_staging(&t.parent, &t.parent_path, &mut removed, &mut not_ours)?;
        t.parent
            .mkdir(&name, 0o700)
            .map_err(|e| Error::io("create staging directory", &display, e))?;
        let lock = t
            .parent
            .open_dir(&name)
            .map_err(|e| Error::io("open staging directory", &display, e))?;
        if !fd::try_flock(&lock, true).map_err(|e| Error::io("flock", &display, e))? {
            return Err(Error::Usage(format!(
                "staging directory {display} is locked by another run"
            )));
        }
        Ok((
            Staging {
                name,
                display,
                lock,
            },
            removed,
            not_ours,
        ))
    }

    /// A second descriptor of the staging directory, to build in.
    ///
    /// # Errors
    ///
    /// The open error.
    pub(super) fn open(&self) -> Result<Dir> {
        self.lock
            .open_path(&crate::fs::RelPath::root())
            .map_err(|e| Error::io("open staging directory", &self.display, e))
    }

    /// Removes the staging tree after a failure (see [`remove_staging`]).
    pub(super) fn remove(&self, t: &Target) {
        remove_staging(&t.parent, &self.name, &self.lock, &self.display);
    }

    /// Puts the built tree in place: `renameat2(RENAME_NOREPLACE)` to the
    /// target, or `RENAME_EXCHANGE` with the tree it replaces; checks that
    /// the target then holds the tree that was built (a process that can
    /// write the parent could have swapped the staging name); then moves
    /// the old tree to `--keep-old` or removes it through its own
    /// descriptor. Sets `replaced` and `old_kept` in `summary`; a failure
    /// to remove the old tree is a warning.
    ///
    /// # Errors
    ///
    /// [`Error::Swap`] when the rename fails or the name does not hold the
    /// built tree (the staging tree is then removed, the target left as it
    /// was); after the rename, a failed `--keep-old` is
    /// [`Error::AfterCommit`] saying where the old tree is.
    pub(super) fn put_in_place(
        &self,
        t: &Target,
        run_id: &str,
        summary: &mut RestoreSummary,
        warnings: &mut Vec<RestoreWarning>,
    ) -> Result<()> {
        let (parent, staging_name) = (&t.parent, &self.name);
        let built = self
            .lock
            .stat_self()
            .map_err(|e| Error::io("stat", &self.display, e));
        // With --replace: the tree being replaced, held open, so that what
        // is removed (or kept) afterwards is that tree and not whatever
        // another process put at its name.
        let old = if t.swap {
            parent
                .open_dir(&t.name)
                .and_then(|d| d.stat_self().map(|st| (d, st)))
                .map_err(|e| Error::io("open", &t.display, e))
                .map(Some)
        } else {
            Ok(None)
        };
        let (built, old) = match built.and_then(|b| old.map(|o| (b, o))) {
            Ok(x) => x,
            Err(e) => {
                self.remove(t);
                return Err(e);
            }
        };
        let placed = if t.swap {
            parent.exchange(staging_name, parent, &t.name)
        } else {
            parent.rename(staging_name, parent, &t.name, true)
        };
        if let Err(e) = placed {
            self.remove(t);
            return Err(Error::Swap {
                from: self.display.clone(),
                to: t.display.clone(),
                source: e,
            });
        }
        // The name must now hold the tree that was built: another process
        // that can write the parent could have swapped the staging name
        // (for a symlink, say) before the rename.
        if !holds(parent, &t.name, &built) {
            if t.swap {
                // Put the old tree back where it was (the name now holds it
                // only if it is still at the staging name).
                if let Err(e) = parent.exchange(staging_name, parent, &t.name) {
                    eprintln!("snap: warning: could not swap back {}: {e}", t.display);
                }
            }
            // What was built is removed through its own descriptor,
            // wherever it was moved; nothing is removed by name.
            if let Err(e) = self.lock.clear() {
                eprintln!("snap: warning: could not empty the staging tree: {e}");
            }
            return Err(Error::Swap {
                from: self.display.clone(),
                to: t.display.clone(),
                source: std::io::Error::other(
                    "another process replaced the staging directory before the rename; the restored tree was removed and the target left as that process made it",
                ),
            });
        }
        let committed = restored(&summary.snapshot_id, &t.display);
        let Some((old_dir, old_st)) = old else {
            return Ok(());
        };
        // The old tree now sits under the staging name.
        summary.replaced = true;
        let old_here = holds(parent, staging_name, &old_st);
        match &t.keep_old {
            Some((kdir, kn, shown)) => {
                let kept = if old_here {
                    parent.rename(staging_name, kdir, kn, true)
                } else {
                    Err(std::io::Error::other(
                        "the old tree was moved away by another process",
                    ))
                };
                if let Err(e) = kept.and_then(|()| crate::fs::fsync_parent_dir(kdir)) {
                    // Never left under a staging name, which the next
                    // restore beside the target would remove as stale.
                    let aside = Target::run_name(run_id, ".snap-old-")?;
                    let at =
                        if old_here && parent.rename(staging_name, parent, &aside, true).is_ok() {
                            t.parent_path.join(aside.to_string()).display().to_string()
                        } else if old_here {
                            self.display.clone()
                        } else {
                            "an unknown place".to_owned()
                        };
                    return Err(Error::io("keep old tree at", shown, e)
                        .after_commit(format!("{committed}; the old tree is at {at}")));
                }
                summary.old_kept = Some(shown.clone());
            }
            None => {
                let removed = old_dir.clear().and_then(|()| {
                    if old_here {
                        parent.rmdir(staging_name)?;
                    }
                    Ok(())
                });
                if let Err(e) = removed {
                    warnings.push(RestoreWarning {
                        path: self.display.clone(),
                        op: "remove old tree".into(),
                        detail: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Whether `name` in `parent` is (now) the directory `st` was taken of:
/// same device and inode, without following a symlink.
fn holds(parent: &Dir, name: &Name, st: &crate::fs::Stat) -> bool {
    parent.stat_opt(name).ok().flatten().is_some_and(|now| {
        now.kind == crate::fs::FileKind::Dir && (now.dev, now.ino) == (st.dev, st.ino)
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
