//! `snap list`: the snapshots, oldest first.
//!
//! Side effects: reads the repository under the shared lock.

use super::args::{FilterArgs, LockArgs};
use super::common::{damaged_facts, lock_fact, mib, short_time, snapshot_summary};
use super::{open_repo, Cli, Out};
use crate::error::Result;
use crate::facts::{Decision, Emitter, Event};

/// Runs `snap list`.
///
/// # Errors
///
/// No repository; the lock; an unlistable `snapshots/`.
pub(super) fn run(
    cli: &Cli,
    facts: &mut Emitter,
    out: &Out,
    filter: &FilterArgs,
    lock: &LockArgs,
) -> Result<i32> {
    let repo = open_repo(cli)?;
    let lock = repo.lock(false, lock.ms())?;
    lock_fact(facts, &repo, &lock)?;
    let filter = filter.filter();
    let mut snaps = repo.snapshots()?;
    snaps.retain(|(_, r)| filter.matches(r));
    damaged_facts(facts, &repo)?;
    out.line(&format!(
        "{:<12}  {:<25}  {:<10}  {:<8}  {:>7}  {:>10}  {:<10}  source",
        "id", "time", "host", "tier", "files", "size", "tags"
    ))?;
    for (id, r) in &snaps {
        out.line(&format!(
            "{:<12}  {:<25}  {:<10}  {:<8}  {:>7}  {:>10}  {:<10}  {}",
            &id[..12],
            short_time(&r.time),
            r.host,
            r.tier.as_str(),
            r.stats.files,
            mib(r.stats.bytes),
            r.tags.join(","),
            r.sources_text()
        ))?;
    }
    facts.emit(
        Decision::Success,
        None,
        Event::ListResult {
            repo: repo.path.display().to_string(),
            snapshots: snaps.len() as u64,
            items: snaps
                .iter()
                .map(|(id, r)| snapshot_summary(id, r))
                .collect(),
        },
    )?;
    Ok(0)
}
