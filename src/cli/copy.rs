//! `snap copy --from REPO [SNAPSHOT...]`: snapshots of another repository
//! copied into this one (`crate::backup::copy`).
//!
//! Side effects: reads the source under its shared lock; writes the
//! destination under its exclusive lock.

use std::path::{Path, PathBuf};

use super::args::{FilterArgs, LockArgs};
use super::common::{count, damaged_facts, lock_fact, mib, transfer_text};
use super::{open_repo, Cli, Out};
use crate::error::{Error, Result};
use crate::facts::{CopiedSnapshot, Decision, Emitter, Event};
use crate::repo::Repo;

/// What `snap copy` was asked.
pub(super) struct Args<'a> {
    pub from: &'a PathBuf,
    pub password_file: Option<&'a Path>,
    pub password_command: Option<&'a str>,
    pub snapshots: &'a [String],
    pub filter: &'a FilterArgs,
    pub lock: &'a LockArgs,
}

/// Runs `snap copy`.
///
/// # Errors
///
/// Either repository missing or locked, a source snapshot that does not
/// resolve, the errors of [`crate::backup::copy::copy_snapshot`]; an error
/// after some snapshots were committed says which
/// ([`Error::AfterCommit`]).
pub(super) fn run(cli: &Cli, facts: &mut Emitter, out: &Out, a: &Args<'_>) -> Result<i32> {
    let src = Repo::open(a.from, &|| {
        super::password::from_source(a.password_file, a.password_command)
    })?;
    let dst = open_repo(cli)?;
    if src.config.id == dst.config.id {
        return Err(Error::Usage(format!(
            "{} and {} are the same repository",
            a.from.display(),
            dst.path.display()
        )));
    }
    let src_lock = src.lock(false, a.lock.ms())?;
    lock_fact(facts, &src, &src_lock)?;
    let dst_lock = dst.lock(true, a.lock.ms())?;
    lock_fact(facts, &dst, &dst_lock)?;
    let filter = a.filter.filter();
    let mut wanted = if a.snapshots.is_empty() {
        let mut all = src.snapshots()?;
        all.retain(|(_, r)| filter.matches(r));
        all
    } else {
        a.snapshots
            .iter()
            .map(|q| src.resolve_in(q, &filter))
            .collect::<Result<Vec<_>>>()?
    };
    wanted.sort_by(|x, y| x.1.time.cmp(&y.1.time).then(x.0.cmp(&y.0)));
    wanted.dedup_by(|x, y| x.0 == y.0);
    damaged_facts(facts, &src)?;
    // What the destination holds already: copies name their original.
    let have: std::collections::HashSet<String> = dst
        .snapshots()?
        .into_iter()
        .flat_map(|(id, r)| [Some(id), r.original])
        .flatten()
        .collect();
    damaged_facts(facts, &dst)?;
    let mut copied: Vec<CopiedSnapshot> = Vec::new();
    let mut skipped = Vec::new();
    for (id, rec) in &wanted {
        let original = rec.original.clone().unwrap_or_else(|| id.clone());
        if have.contains(&original) || have.contains(id) {
            out.note(&format!(
                "snapshot {} is in {} already: skipped",
                &id[..12],
                dst.path.display()
            ))?;
            skipped.push(id.clone());
            continue;
        }
        let done =
            crate::backup::copy::copy_snapshot(&src, &dst, id, rec, true).map_err(
                |e| match copied.last() {
                    Some(c) => e.after_commit(format!(
                        "{} of {} snapshots were copied (the last: {})",
                        copied.len(),
                        wanted.len(),
                        &c.snapshot_id[..12]
                    )),
                    None => e,
                },
            )?;
        // Committed: an error from here on says so.
        let committed = crate::repo::committed(&done.snapshot_id);
        out.note(&format!(
            "snapshot {} copied as {}: {}, {} added",
            &id[..12],
            &done.snapshot_id[..12],
            count(done.blobs_added, "new blob", "new blobs"),
            mib(done.bytes_added)
        ))
        .map_err(|e| e.after_commit(&committed))?;
        copied.push(CopiedSnapshot {
            source_id: id.clone(),
            snapshot_id: done.snapshot_id,
            blobs_added: done.blobs_added,
            bytes_added: done.bytes_added,
        });
    }
    drop((src_lock, dst_lock));
    let transfer = dst.transfer().or(src.transfer());
    let after = |e: Error| match copied.last() {
        Some(c) => e.after_commit(format!(
            "{} snapshots were copied (the last: {})",
            copied.len(),
            &c.snapshot_id[..12]
        )),
        None => e,
    };
    out.note(&format!(
        "copied {} from {} into {}, {} already there{}",
        count(copied.len() as u64, "snapshot", "snapshots"),
        a.from.display(),
        dst.path.display(),
        skipped.len(),
        transfer_text(transfer)
    ))
    .map_err(after)?;
    let event = Event::CopyResult {
        repo: dst.path.display().to_string(),
        from: a.from.display().to_string(),
        copied: copied.clone(),
        skipped,
        transfer,
    };
    facts.emit(Decision::Success, None, event).map_err(after)?;
    Ok(0)
}
