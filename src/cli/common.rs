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

/// Whether progress bars may be drawn: false under `-q/--quiet` and
/// `--no-progress`.
pub(super) static PROGRESS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(true);

pub(super) fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    if !PROGRESS.load(std::sync::atomic::Ordering::Relaxed) || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb =
        indicatif::ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
    pb.set_style(crate::human::progress_style(total.is_some()));
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

/// `", 12.3 MiB uploaded, 0.1 MiB downloaded"` for a remote repository's
/// traffic, else nothing.
pub(super) fn transfer_text(t: Option<crate::facts::TransferBytes>) -> String {
    t.map(|t| {
        format!(
            ", {} uploaded, {} downloaded",
            mib(t.uploaded),
            mib(t.downloaded)
        )
    })
    .unwrap_or_default()
}

pub(super) use crate::human::{count, size as mib};

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
            sources: outcome.record.sources.clone(),
            parent: outcome.record.parent.clone(),
            tags: outcome.record.tags.clone(),
            policy: outcome.policy.clone(),
            backup_durable: outcome.record.durable && !repo.is_dry_run(),
            io_backend: crate::io::choice()?.backend,
            fsync_count: outcome.syncs.count,
            fsync_ms: outcome.syncs.elapsed.as_millis() as u64,
            encrypted: repo.crypto().is_encrypted(),
            transfer: repo.transfer(),
            dry_run: repo.is_dry_run(),
            stats: outcome.record.stats.clone(),
        }),
    )
}

/// Emits a `repo.damaged` warning (and a line on stderr) for each
/// snapshot record the command had to leave out; returns how many.
pub(super) fn damaged_facts(facts: &mut Emitter, repo: &Repo) -> Result<usize> {
    let damaged = repo.take_damaged();
    let n = damaged.len();
    for (path, detail) in damaged {
        eprintln!(
            "snap: warning: damaged snapshot record {path} left out: {detail} (see `snap check`)"
        );
        facts.emit(Decision::Warn, None, Event::RepoDamaged { path, detail })?;
    }
    Ok(n)
}

/// The summary of snapshot `id` that `list.result` carries.
pub(super) fn snapshot_summary(
    id: &str,
    r: &crate::repo::SnapshotRecord,
) -> crate::facts::SnapshotSummary {
    crate::facts::SnapshotSummary {
        id: id.to_owned(),
        short_id: id.get(..12).unwrap_or(id).to_owned(),
        time: r.time.clone(),
        host: r.host.clone(),
        source: r.source.clone(),
        sources: r.sources.clone(),
        tags: r.tags.clone(),
        tier: r.tier,
        parent: r.parent.clone(),
        files: r.stats.files,
        dirs: r.stats.dirs,
        symlinks: r.stats.symlinks,
        entries: r.entries.count,
        bytes: r.stats.bytes,
        durable: r.durable,
    }
}

/// The summary of entry `r` (at `rel`) that `ls.entry` and `find.match`
/// carry.
pub(super) fn entry_summary(
    r: &crate::repo::sidecar::EntryRecord,
    rel: &RelPath,
) -> crate::facts::EntrySummary {
    crate::facts::EntrySummary {
        path: String::from_utf8_lossy(&rel.to_bytes()).into_owned(),
        kind: r.kind,
        mode: r.mode,
        uid: r.uid,
        gid: r.gid,
        user: r.user.clone(),
        group: r.group.clone(),
        size: r.size,
        mtime: utc_time(r.mtime.sec, r.mtime.nsec),
        target: r.target.clone(),
    }
}

/// The path of entry `r` in its entries file, checked.
///
/// # Errors
///
/// [`Error::Integrity`] naming the entries file for an invalid path.
pub(super) fn entry_path(
    repo: &Repo,
    entries: &crate::repo::EntriesRef,
    r: &crate::repo::sidecar::EntryRecord,
) -> Result<RelPath> {
    r.rel_path().map_err(|e| Error::Integrity {
        path: repo.entries_display(entries),
        detail: format!("invalid path {:?}: {e}", r.path),
    })
}

/// `sec` seconds (and `nsec` nanoseconds, shown when not 0) since the
/// epoch as `YYYY-MM-DDTHH:MM:SS[.nnnnnnnnn]Z` (UTC, the proleptic
/// Gregorian calendar), for any `i64`: years before 1 and after 9999 are
/// written with as many digits as they need (and a sign before year 0),
/// where RFC 3339 stops. Days to civil date by Howard Hinnant's
/// `civil_from_days` ("chrono-Compatible Low-Level Date Algorithms").
pub(super) fn utc_time(sec: i64, nsec: u32) -> String {
    let sec = i128::from(sec);
    let (days, rem) = (sec.div_euclid(86_400), sec.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    let frac = if nsec == 0 {
        String::new()
    } else {
        format!(".{nsec:09}")
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A record time as the tables show it: local, with the zone's offset
/// (`YYYY-MM-DD HH:MM:SS +HHMM`, [`crate::human::local_time`]).
pub(super) fn short_time(t: &str) -> String {
    crate::human::local_time(t)
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
            encrypted: repo.crypto().is_encrypted(),
        },
    )?;
    out.note(&format!(
        "created {}repository {} at {}{how}",
        if repo.crypto().is_encrypted() {
            "encrypted "
        } else {
            ""
        },
        repo.config.id,
        repo.path.display()
    ))
}

/// Creates the default repository the caller found missing (`repo.init`
/// fact and a line saying so); opens it instead when another process
/// created it meanwhile.
pub(super) fn create_repo(
    cli: &super::Cli,
    path: &std::path::Path,
    facts: &mut Emitter,
    out: &Out,
) -> Result<Repo> {
    let (repo, created) = Repo::open_or_create(path, &|| super::password::current(cli))?;
    if created {
        announce_init(facts, out, &repo, " (the default location)")?;
    }
    Ok(repo)
}

/// Takes a snapshot of `opts.sources` into `repo` (the caller holds the
/// shared lock) with a progress bar: runs the backup, emits the damaged-record facts and, once committed, the
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
    changes: Option<crate::backup::OnChange<'_>>,
) -> Result<crate::backup::BackupOutcome> {
    // `tmp/` is left alone: another backup may be writing there. What a
    // killed run left is removed by prune and `check --repair-tmp`, under
    // the exclusive lock.
    let pb = progress_bar(None);
    let outcome = crate::backup::run(repo, opts, facts, &pb, changes);
    pb.finish_and_clear();
    let damaged = damaged_facts(facts, repo);
    let outcome = outcome.and_then(|o| damaged.map(|_| o));
    if let Err(e) = &outcome {
        if !repo.is_dry_run()
            && matches!(
                e,
                Error::Io { .. } | Error::Integrity { .. } | Error::Interrupted
            )
        {
            eprintln!(
                "snap: note: packs this run had already placed stay in {} with no index and no snapshot; `snap check` counts them as garbage packs, and `snap prune` removes them",
                repo.display(crate::repo::layout::PACKS)
            );
        }
    }
    let outcome = outcome?;
    let committed = crate::repo::committed(&outcome.snapshot_id);
    backup_summary_fact(facts, repo, &outcome).map_err(|e| e.after_commit(&committed))?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes in binary units, counts with the noun in their number.
    #[test]
    fn sizes_and_plurals_for_people() {
        assert_eq!(mib(0), "0 B");
        assert_eq!(mib(1536), "1.50 KiB");
        assert_eq!(mib(5 << 30), "5.00 GiB");
        assert_eq!(count(0, "file", "files"), "0 files");
        assert_eq!(count(1, "entry", "entries"), "1 entry");
        assert_eq!(count(2, "entry", "entries"), "2 entries");
    }
}
