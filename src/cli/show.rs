//! `snap show`: one snapshot's record as JSON.
//!
//! Side effects: reads the repository under the shared lock; writes the
//! record to the human output.

use super::args::{FilterArgs, LockArgs};
use super::common::{damaged_facts, lock_fact};
use super::{open_repo, Cli, Out};
use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event};

/// Runs `snap show`: the record (checked against its id) pretty-printed,
/// and the `show.result` fact carrying it.
///
/// # Errors
///
/// No repository or snapshot; the lock.
pub(super) fn run(
    cli: &Cli,
    facts: &mut Emitter,
    out: &Out,
    snapshot: &str,
    filter: &FilterArgs,
    lock: &LockArgs,
) -> Result<i32> {
    let repo = open_repo(cli)?;
    let lock = repo.lock(false, lock.ms())?;
    lock_fact(facts, &repo, &lock)?;
    let resolved = repo.resolve_in(snapshot, &filter.filter());
    damaged_facts(facts, &repo)?;
    let (id, record) = resolved?;
    let text =
        serde_json::to_string_pretty(&record).map_err(|e| Error::serialise("a record", e))?;
    out.line(&text)?;
    facts.emit(
        Decision::Success,
        None,
        Event::ShowResult {
            snapshot_id: id,
            record,
        },
    )?;
    Ok(0)
}
