//! `snap restore`: lock, load the snapshot, preflight, the pre-restore
//! snapshot of a tree being replaced, restore, warnings and summary.
//!
//! Side effects: creates (or swaps in) the target tree; with `--replace`
//! and `capture_restore_snapshot`, writes a snapshot of the old tree.

use std::path::Path;

use super::args::RestorePolicyArgs;
use super::common::{
    count, damaged_facts, gate, lock_fact, mib, parse_subpath, progress_bar, take_snapshot,
};
use super::{open_repo, Cli, Out};
use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event};
use crate::fs::RelPath;
use crate::policy::Policy;
use crate::repo::Repo;

/// Runs `snap restore`; returns the exit code.
///
/// # Errors
///
/// Any error of the stages; once the target is in place,
/// [`Error::AfterCommit`].
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    cli: &Cli,
    facts: &mut Emitter,
    out: &Out,
    snapshot: &str,
    target: &Path,
    path: Option<&str>,
    filter: &crate::repo::select::Filter,
    by_name: bool,
    replace: bool,
    keep_old: Option<&Path>,
    policy: &RestorePolicyArgs,
) -> Result<i32> {
    let (mut policy, explicit) = policy.resolve()?;
    let repo = open_repo(cli)?;
    let abs_target =
        std::path::absolute(target).map_err(|e| Error::io("resolve", target.display(), e))?;
    let target_exists = crate::fs::lstat_path(&abs_target)
        .map_err(|e| Error::io("stat", abs_target.display(), e))?
        .is_some();
    // Snapshotting the old tree writes to the repository, as a backup
    // does, under the shared lock.
    let capture = replace && target_exists && policy.capture_restore_snapshot;
    let lock = repo.lock(false, policy.lock_wait_ms)?;
    lock_fact(facts, &repo, &lock)?;
    let subpath = path.map(parse_subpath).transpose()?;
    let loaded = restore_load(
        &repo,
        snapshot,
        filter,
        subpath.as_ref(),
        &mut policy,
        explicit,
    );
    damaged_facts(facts, &repo)?;
    let loaded = loaded?;
    let report = restore_preflight(
        &repo,
        &loaded,
        &abs_target,
        &policy,
        true,
        replace && target_exists,
    );
    gate(facts, "restore", report, &policy)?;
    let pre_restore = if capture {
        let opts = crate::backup::BackupOptions {
            sources: vec![abs_target.clone()],
            policy: policy.clone(),
            tags: vec![format!("pre-restore:{}", &loaded.snapshot_id[..12])],
        };
        let outcome = take_snapshot(&repo, &opts, facts, None)?;
        out.note(&format!(
            "snapshot {} saved of the tree being replaced",
            &outcome.snapshot_id[..12]
        ))?;
        Some(outcome.snapshot_id)
    } else {
        None
    };
    let pb = progress_bar(Some(0));
    let opts = crate::restore::RestoreOptions {
        snapshot: snapshot.to_owned(),
        target: target.to_owned(),
        run_id: facts.run_id().to_owned(),
        by_name,
        policy,
        replace,
        keep_old: keep_old.map(Path::to_path_buf),
    };
    let res = crate::restore::run(&repo, &opts, loaded, &pb);
    pb.finish_and_clear();
    let (mut summary, warnings) = res?;
    let committed = crate::restore::restored(&summary.snapshot_id, &summary.target);
    summary.pre_restore_snapshot = pre_restore;
    for w in &warnings {
        eprintln!("snap: warning: {} {}: {}", w.op, w.path, w.detail);
        facts
            .emit(
                Decision::Warn,
                None,
                Event::RestoreWarning {
                    path: w.path.clone(),
                    op: w.op.clone(),
                    detail: w.detail.clone(),
                },
            )
            .map_err(|e| e.after_commit(&committed))?;
    }
    summary.transfer = repo.transfer();
    let line = format!(
        "restored {} into {}\n  {}, {}, {}, {}, {}\n  {} verified in {:.2} s{}",
        &summary.snapshot_id[..12],
        summary.target,
        count(summary.files, "file", "files"),
        count(summary.dirs, "dir", "dirs"),
        count(summary.symlinks, "symlink", "symlinks"),
        count(summary.hardlinks, "hard link", "hard links"),
        mib(summary.bytes),
        count(summary.blobs_verified, "blob", "blobs"),
        summary.duration_ms as f64 / 1000.0,
        super::common::transfer_text(summary.transfer),
    );
    facts
        .emit(
            if warnings.is_empty() {
                Decision::Success
            } else {
                Decision::Warn
            },
            None,
            Event::RestoreSummary(summary),
        )
        .map_err(|e| e.after_commit(&committed))?;
    out.note(&line).map_err(|e| e.after_commit(&committed))?;
    Ok(0)
}

/// Loads the snapshot (at `subpath`) a restore would apply, at the
/// policy's tier when one was chosen, else the snapshot's, which is then
/// written into `policy`.
pub(super) fn restore_load(
    repo: &Repo,
    snapshot: &str,
    filter: &crate::repo::select::Filter,
    subpath: Option<&RelPath>,
    policy: &mut Policy,
    explicit_tier: bool,
) -> Result<crate::restore::Loaded> {
    let loaded = crate::restore::load(
        repo,
        snapshot,
        filter,
        explicit_tier.then_some(policy.tier),
        subpath,
        policy.restore_untrusted,
    )?;
    policy.tier = loaded.tier;
    Ok(loaded)
}

/// The restore preflight checks for `loaded` into `target`.
pub(super) fn restore_preflight(
    repo: &Repo,
    loaded: &crate::restore::Loaded,
    target: &std::path::Path,
    policy: &Policy,
    lock_held: bool,
    replacing: bool,
) -> crate::preflight::Report {
    crate::preflight::restore(
        &repo.path,
        target,
        &loaded.needs,
        policy,
        lock_held,
        loaded.record.stats.bytes,
        replacing,
    )
}
