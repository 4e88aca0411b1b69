//! `snap check`: verify the repository and report what is wrong.
//!
//! Side effects: reads the repository; with `--repair-tmp`, empties
//! `tmp/` under the exclusive lock.

use super::args::LockArgs;
use super::common::{count, lock_fact, mib};
use super::{open_repo, Cli, Out};
use crate::error::{ErrorId, Result};
use crate::facts::{Decision, Emitter, Event};

/// Runs `snap check`; returns 0, or 90 (`E_INTEGRITY`) when a problem was
/// found.
///
/// # Errors
///
/// What prevents checking at all: no repository, the lock, a directory
/// that cannot be listed.
pub(super) fn run(
    cli: &Cli,
    facts: &mut Emitter,
    out: &Out,
    read_data: bool,
    repair_tmp: bool,
    lock: &LockArgs,
) -> Result<i32> {
    let repo = open_repo(cli)?;
    let lock = repo.lock(repair_tmp, lock.ms())?;
    lock_fact(facts, &repo, &lock)?;
    let report = crate::repo::check::run(&repo, read_data, repair_tmp)?;
    for p in &report.problems {
        eprintln!("snap: check: {}: {}", p.path, p.detail);
    }
    let ok = report.problem_count == 0;
    // Quiet hides the line when there is nothing to report.
    let say = |s: &str| if ok { out.note(s) } else { out.line(s) };
    say(&format!(
        "checked {}, {}, {},\n  {}, {}{}\n  {}; {}, {}, {} in tmp/{}",
        count(report.snapshots, "snapshot", "snapshots"),
        count(report.index_files, "index file", "index files"),
        count(report.packs, "pack", "packs"),
        count(report.blobs, "blob", "blobs"),
        count(report.references, "reference", "references"),
        if report.read_data {
            format!(", {} read", mib(report.bytes_read))
        } else {
            String::new()
        },
        if ok {
            "no problems".to_owned()
        } else {
            count(report.problem_count, "problem", "problems")
        },
        count(report.garbage_packs, "garbage pack", "garbage packs"),
        count(report.unused_blobs, "unused blob", "unused blobs"),
        count(report.tmp_entries, "entry", "entries"),
        if repair_tmp {
            format!(" ({} removed)", report.tmp_removed)
        } else {
            String::new()
        },
    ))?;
    facts.emit(
        if ok {
            Decision::Success
        } else {
            Decision::Failure
        },
        (!ok).then_some(ErrorId::E_INTEGRITY),
        Event::CheckResult {
            repo: repo.path.display().to_string(),
            io_backend: crate::io::choice()?.backend,
            report,
        },
    )?;
    Ok(if ok {
        0
    } else {
        ErrorId::E_INTEGRITY.exit_code()
    })
}
