//! `snap find`: which snapshots hold an entry whose name (or, for a
//! pattern with `/`, whose path) matches a glob, as restic `find` does.
//!
//! Side effects: reads the repository under the shared lock.

use super::args::{FilterArgs, LockArgs};
use super::common::{damaged_facts, entry_path, entry_summary, lock_fact, short_time};
use super::{open_repo, Cli, Out};
use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event};

/// Runs `snap find`.
///
/// # Errors
///
/// A pattern that is not a glob (usage); no repository or snapshot; the
/// lock; a damaged entries file.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    cli: &Cli,
    facts: &mut Emitter,
    out: &Out,
    pattern: &str,
    ids: &[String],
    filter: &FilterArgs,
    lock: &LockArgs,
) -> Result<i32> {
    let whole_path = pattern.contains('/');
    let glob = globset::GlobBuilder::new(pattern.trim_start_matches('/'))
        .literal_separator(whole_path)
        .build()
        .map_err(|e| Error::Usage(format!("pattern {pattern:?}: {e}")))?
        .compile_matcher();
    let repo = open_repo(cli)?;
    let lk = repo.lock(false, lock.ms())?;
    lock_fact(facts, &repo, &lk)?;
    let filter = filter.filter();
    let snaps = if ids.is_empty() {
        let mut all = repo.snapshots()?;
        all.retain(|(_, r)| filter.matches(r));
        all
    } else {
        let mut v = Vec::new();
        for q in ids {
            v.push(repo.resolve_in(q, &filter)?);
        }
        v
    };
    damaged_facts(facts, &repo)?;
    let (mut matches, mut matched) = (0u64, 0u64);
    for (id, rec) in &snaps {
        crate::interrupt::check()?;
        let mut here = 0u64;
        for r in repo.read_entries(&rec.entries)? {
            let rel = entry_path(&repo, &rec.entries, &r)?;
            if rel.is_root() {
                continue;
            }
            let bytes = rel.to_bytes();
            let subject: &[u8] = if whole_path {
                &bytes
            } else {
                bytes.rsplit(|&b| b == b'/').next().unwrap_or(&bytes)
            };
            let subject = String::from_utf8_lossy(subject);
            if !glob.is_match(subject.as_ref()) {
                continue;
            }
            if here == 0 {
                out.line(&format!(
                    "snapshot {} of {} at {}:",
                    &id[..12],
                    rec.source,
                    short_time(&rec.time)
                ))?;
            }
            here += 1;
            let e = entry_summary(&r, &rel);
            out.line(&format!(
                "  /{}  {:?}  {} bytes  {}",
                e.path,
                e.kind,
                e.size.unwrap_or(0),
                e.mtime
            ))?;
            facts.emit(
                Decision::Success,
                None,
                Event::FindMatch {
                    snapshot_id: id.clone(),
                    entry: e,
                },
            )?;
        }
        matches += here;
        matched += u64::from(here > 0);
    }
    facts.emit(
        Decision::Success,
        None,
        Event::FindResult {
            pattern: pattern.to_owned(),
            snapshots: snaps.len() as u64,
            matches,
            snapshots_matched: matched,
        },
    )?;
    Ok(0)
}
