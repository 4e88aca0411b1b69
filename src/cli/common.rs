//! What several commands share: the progress bar, sizes in MiB, the
//! lock, preflight, backup summary, damaged-record and repository-creation
//! facts, and the lines that go with them.
//!
//! Side effects: emits facts; writes lines to the human output and
//! stderr.

use std::io::IsTerminal;

use super::Out;
use crate::error::{Error, ErrorId, Result};
use crate::facts::{BackupSummary, Decision, Emitter, Event};
use crate::fs::RelPath;
use crate::policy::Policy;
use crate::repo::Repo;

pub(super) fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb =
        indicatif::ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {elapsed_precise} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style);
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

pub(super) fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

pub(super) fn parse_subpath(p: &str) -> Result<RelPath> {
    let trimmed = p.trim_matches('/');
    RelPath::parse(trimmed.as_bytes())
        .map_err(|e| Error::Usage(format!("invalid snapshot path {p:?}: {e}")))
}

pub(super) fn lock_fact(
    facts: &mut Emitter,
    repo: &Repo,
    lock: &crate::repo::RepoLock,
) -> Result<()> {
    facts.emit(
        Decision::Success,
        None,
        Event::LockAcquired {
            repo: repo.path.display().to_string(),
            mode: if lock.exclusive {
                "exclusive"
            } else {
                "shared"
            }
            .into(),
            lock_attempts: lock.attempts,
            lock_wait_ms: lock.waited_ms,
        },
    )
}

/// Emits one `preflight.check` per check and the `preflight.summary`;
/// any stop becomes [`Error::Policy`] (exit 10, `E_POLICY`).
pub(super) fn gate(
    facts: &mut Emitter,
    op: &str,
    report: crate::preflight::Report,
    policy: &Policy,
) -> Result<()> {
    use crate::preflight::CheckResult;
    for c in &report.checks {
        let decision = match c.result {
            CheckResult::Pass => Decision::Success,
            CheckResult::Warn => Decision::Warn,
            CheckResult::Stop => Decision::Failure,
        };
        let id = (c.result == CheckResult::Stop).then_some(ErrorId::E_POLICY);
        if c.result != CheckResult::Pass {
            eprintln!(
                "snap: preflight {:?}: {} {}: {}",
                c.result, c.check, c.path, c.detail
            );
        }
        facts.emit(decision, id, Event::PreflightCheck(c.clone()))?;
    }
    let stopped = report.count(CheckResult::Stop);
    facts.emit(
        if stopped > 0 {
            Decision::Failure
        } else if report.count(CheckResult::Warn) > 0 {
            Decision::Warn
        } else {
            Decision::Success
        },
        (stopped > 0).then_some(ErrorId::E_POLICY),
        Event::PreflightSummary {
            operation: op.to_owned(),
            passed: report.count(CheckResult::Pass) as u64,
            warned: report.count(CheckResult::Warn) as u64,
            stopped: stopped as u64,
            policy: policy.clone(),
        },
    )?;
    if stopped > 0 {
        let why: Vec<String> = report
            .checks
            .iter()
            .filter(|c| c.result == CheckResult::Stop)
            .map(|c| format!("{} {}: {}", c.check, c.path, c.detail))
            .collect();
        return Err(Error::Policy(why.join("; ")));
    }
    Ok(())
}

/// Emits `backup.summary` for a committed snapshot (`warn` with
/// `E_PARTIAL` when entries were unreadable).
pub(super) fn backup_summary_fact(
    facts: &mut Emitter,
    repo: &Repo,
    outcome: &crate::backup::BackupOutcome,
) -> Result<()> {
    let partial = outcome.record.stats.unreadable > 0;
    facts.emit(
        if partial {
            Decision::Warn
        } else {
            Decision::Success
        },
        partial.then_some(ErrorId::E_PARTIAL),
        Event::BackupSummary(BackupSummary {
            repo: repo.path.display().to_string(),
            snapshot_id: outcome.snapshot_id.clone(),
            source: outcome.record.source.clone(),
            parent: outcome.record.parent.clone(),
            tags: outcome.record.tags.clone(),
            policy: outcome.record.policy.clone(),
            backup_durable: outcome.record.durable,
            fsync_count: outcome.syncs.count,
            fsync_ms: outcome.syncs.elapsed.as_millis() as u64,
            stats: outcome.record.stats.clone(),
        }),
    )
}

/// Emits a `repo.damaged` warning (and a line on stderr) for each
/// snapshot record the command had to leave out.
pub(super) fn damaged_facts(facts: &mut Emitter, repo: &Repo) -> Result<()> {
    for (path, detail) in repo.take_damaged() {
        eprintln!(
            "snap: warning: damaged snapshot record {path} left out: {detail} (see `snap check`)"
        );
        facts.emit(Decision::Warn, None, Event::RepoDamaged { path, detail })?;
    }
    Ok(())
}

/// The `repo.init` fact and the line saying a repository was created
/// (`how` follows the location, e.g. " (the default location)").
pub(super) fn announce_init(facts: &mut Emitter, out: &Out, repo: &Repo, how: &str) -> Result<()> {
    facts.emit(
        Decision::Success,
        None,
        Event::RepoInit {
            repo: repo.path.display().to_string(),
            repo_id: repo.config.id.clone(),
        },
    )?;
    out.line(&format!(
        "created repository {} at {}{how}",
        repo.config.id,
        repo.path.display()
    ))
}

/// Creates the default repository the caller found missing (`repo.init`
/// fact and a line saying so); opens it instead when another process
/// created it meanwhile.
pub(super) fn create_repo(path: &std::path::Path, facts: &mut Emitter, out: &Out) -> Result<Repo> {
    let (repo, created) = Repo::open_or_create(path)?;
    if created {
        announce_init(facts, out, &repo, " (the default location)")?;
    }
    Ok(repo)
}

/// Takes a snapshot of `opts.source` into `repo` (the caller holds the
/// exclusive lock) with a progress bar: empties `tmp/` first, then runs
/// the backup, emits the damaged-record facts and, once committed, the
/// `backup.summary` fact. `snap backup` and `snap restore --replace`
/// (the pre-restore snapshot) both take their snapshots here.
///
/// # Errors
///
/// The backup's error (after a note on stderr naming the packs a failed
/// run leaves, for an I/O, integrity or signal failure); an error
/// emitting the summary is [`Error::AfterCommit`].
pub(super) fn take_snapshot(
    repo: &Repo,
    opts: &crate::backup::BackupOptions,
    facts: &mut Emitter,
) -> Result<crate::backup::BackupOutcome> {
    repo.clean_tmp()?;
    let pb = progress_bar(None);
    let outcome = crate::backup::run(repo, opts, facts, &pb);
    pb.finish_and_clear();
    let damaged = damaged_facts(facts, repo);
    let outcome = outcome.and_then(|o| damaged.map(|()| o));
    if let Err(e) = &outcome {
        if matches!(
            e,
            Error::Io { .. } | Error::Integrity { .. } | Error::Interrupted
        ) {
            eprintln!(
                "snap: note: packs this run had already placed stay in {} with no index and no snapshot; `snap check` counts them as garbage packs, and removing garbage is `snap prune`'s job (not in this release yet)",
                repo.display(crate::repo::layout::PACKS)
            );
        }
    }
    let outcome = outcome?;
    let committed = crate::repo::committed(&outcome.snapshot_id);
    backup_summary_fact(facts, repo, &outcome).map_err(|e| e.after_commit(&committed))?;
    Ok(outcome)
}
