//! `snap backup`: lock (or create the default repository), preflight,
//! snapshot, summary line.
//!
//! Side effects: may create the default repository; writes a snapshot.

use super::args::{BackupPolicyArgs, SourceArgs};
use super::common::{count, create_repo, gate, lock_fact, mib, take_snapshot};
use super::{default_repo, repo_path, Cli, Out};
use crate::error::{Error, ErrorId, Result};
use crate::facts::Emitter;
use crate::preflight::LockState;
use crate::repo::Repo;

/// Runs `snap backup`; returns the exit code (3, `E_PARTIAL`, when
/// entries could not be read).
///
/// # Errors
///
/// Any error of the stages; after the commit point, [`Error::AfterCommit`].
pub(super) fn run(
    cli: &Cli,
    facts: &mut Emitter,
    out: &Out,
    tags: &[String],
    dry_run: bool,
    policy: &BackupPolicyArgs,
    sources: &SourceArgs,
) -> Result<i32> {
    let (policy, _) = policy.resolve()?;
    let src = &sources.paths()?;
    let path = repo_path(cli)?;
    // With a repository: lock (bounded wait), then preflight. Without
    // one: preflight first, so a STOP creates nothing. Backups take the
    // shared lock: several may write at once (their files are content
    // addressed and put create-only); prune's exclusive lock keeps it out
    // (docs/FORMAT.md, "Concurrency argument").
    // A dry run needs the repository to compare against, and never
    // creates one.
    let existing = match Repo::open(&path, &|| super::password::current(cli)) {
        Ok(r) if dry_run => Some(r.into_dry_run()),
        Ok(r) => Some(r),
        Err(Error::RepoMissing { .. }) if default_repo(cli) && !dry_run => None,
        Err(e) => return Err(e),
    };
    let (repo, lock) = match existing {
        Some(repo) => {
            let lock = repo.lock(false, policy.lock_wait_ms)?;
            lock_fact(facts, &repo, &lock)?;
            gate(
                facts,
                "backup",
                crate::preflight::backup(&path, src, &policy, LockState::Held),
                &policy,
            )?;
            (repo, lock)
        }
        None => {
            gate(
                facts,
                "backup",
                crate::preflight::backup(&path, src, &policy, LockState::Later),
                &policy,
            )?;
            let repo = create_repo(cli, &path, facts, out)?;
            let lock = repo.lock(false, policy.lock_wait_ms)?;
            lock_fact(facts, &repo, &lock)?;
            (repo, lock)
        }
    };
    let opts = crate::backup::BackupOptions {
        sources: src.clone(),
        policy,
        tags: tags.to_vec(),
    };
    // -v: each file read, as it is read (stderr under --json). A write
    // error (a closed stdout) does not stop the backup: the summary line
    // after the commit meets it too, and the run ends as on any closed
    // stdout (141), the snapshot committed.
    let tell = |c: crate::backup::Change, rel: &crate::fs::RelPath| {
        out.line(&format!("{:<8} {rel}", c.as_str())).ok();
    };
    let changes = (cli.verbose > 0).then_some(&tell as crate::backup::OnChange<'_>);
    let outcome = take_snapshot(&repo, &opts, facts, changes);
    drop(lock);
    let outcome = outcome?;
    let committed = crate::repo::committed(&outcome.snapshot_id);
    let line = summary(&outcome, &repo, dry_run);
    let st = &outcome.record.stats;
    // Nothing was committed by a dry run.
    out.note(&line).map_err(|e| {
        if dry_run {
            e
        } else {
            e.after_commit(&committed)
        }
    })?;
    if st.unreadable > 0 {
        eprintln!(
            "snap: error [{}]: {} could not be read and {} in the snapshot",
            ErrorId::E_PARTIAL.as_str(),
            count(st.unreadable, "entry", "entries"),
            match (dry_run, st.unreadable == 1) {
                (true, _) => "would not be",
                (false, true) => "is not",
                (false, false) => "are not",
            }
        );
        return Ok(ErrorId::E_PARTIAL.exit_code());
    }
    Ok(0)
}

/// The summary lines (each within 80 columns but for a long repository
/// path): what the snapshot holds, how its files compare with the parent,
/// what was added. A dry run's say what would have been.
fn summary(outcome: &crate::backup::BackupOutcome, repo: &Repo, dry_run: bool) -> String {
    let st = &outcome.record.stats;
    let holds = format!(
        "{}, {}, {}",
        count(st.files, "file", "files"),
        count(st.dirs, "dir", "dirs"),
        mib(st.bytes),
    );
    let files = format!(
        "  files: {} new, {} changed, {} unmodified",
        st.files_new, st.files_changed, st.files_unchanged
    );
    let added = format!(
        "{} ({} of new data){}",
        mib(st.bytes_added),
        mib(st.new_blob_bytes),
        super::common::transfer_text(repo.transfer()),
    );
    if dry_run {
        return format!(
            "dry run, nothing written: the snapshot would hold {holds}\n{files}\n  would add to {}: {added}",
            repo.path.display()
        );
    }
    let mut s = format!(
        "snapshot {} saved: {holds}, {:.2} s\n{files}\n  added to {}: {added}",
        &outcome.snapshot_id[..12],
        st.duration_ms as f64 / 1000.0,
        repo.path.display(),
    );
    if !outcome.record.durable {
        s.push_str("\n  not durable: syncs skipped (require_backup_durability off)");
    }
    s
}
