//! `snap forget` and `snap prune`: the snapshot lifecycle.
//!
//! Side effects: under the exclusive lock, removes snapshot records (made
//! durable with a barrier before anything else happens) and, with
//! `--prune` or as `snap prune`, the repository files no remaining
//! snapshot needs ([`crate::repo::prune`]); emits `forget.result` and
//! `prune.result`.

use std::collections::BTreeMap;

use super::args::{FilterArgs, KeepArgs, LockArgs};
use super::common::{count, damaged_facts, lock_fact, mib, short_time};
use super::{open_repo, Cli, Out};
use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event, ForgetItem};
use crate::repo::prune::PruneOptions;
use crate::repo::select::{GroupBy, GroupKey};
use crate::repo::storage::{FileKind, Syncs};
use crate::repo::{Repo, SnapshotRecord};
use crate::retention::{self, Item};

/// What `snap forget` was asked.
pub(super) struct ForgetArgs<'a> {
    /// Snapshots named on the command line.
    pub ids: &'a [String],
    /// The retention policy.
    pub keep: &'a KeepArgs,
    /// The filter.
    pub filter: &'a FilterArgs,
    /// `--group-by`.
    pub group_by: Option<GroupBy>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--prune`, and how.
    pub prune: Option<PruneOptions>,
}

fn item(id: &str, r: &SnapshotRecord, group: &str, reasons: Vec<String>) -> ForgetItem {
    ForgetItem {
        snapshot_id: id.to_owned(),
        time: r.time.clone(),
        host: r.host.clone(),
        source: r.source.clone(),
        tags: r.tags.clone(),
        group: group.to_owned(),
        reasons,
    }
}

/// Which snapshots the policy keeps: (kept, removed), each with its group
/// and reasons. Times are bucketed in the host's local time zone.
fn plan(snaps: &[(String, SnapshotRecord)], a: &ForgetArgs) -> (Vec<ForgetItem>, Vec<ForgetItem>) {
    let rules = a.keep.rules();
    let filter = a.filter.filter();
    let by = a.group_by.unwrap_or_default();
    let mut groups: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    for (n, (_, r)) in snaps.iter().enumerate() {
        if filter.matches(r) {
            groups.entry(by.key(r)).or_default().push(n);
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let (mut kept, mut removed) = (Vec::new(), Vec::new());
    for (key, members) in groups {
        let group = key.to_string();
        // A time that does not parse (not one this build writes) sorts as
        // the oldest and is kept: nothing is removed on a guess.
        let mut odd = Vec::new();
        let mut timed = Vec::new();
        let mut items = Vec::new();
        for &n in &members {
            let r = &snaps[n].1;
            match retention::parse_utc_ns(&r.time) {
                Some(t) => {
                    let sec = t.div_euclid(1_000_000_000) as i64;
                    timed.push(n);
                    items.push(Item {
                        time_ns: t,
                        civil: crate::sys::local_civil(sec),
                        tags: r.tags.clone(),
                    });
                }
                None => odd.push(n),
            }
        }
        for n in odd {
            let (id, r) = &snaps[n];
            kept.push(item(id, r, &group, vec!["time unreadable".into()]));
        }
        for (k, verdict) in timed
            .iter()
            .zip(retention::apply(&items, &rules, now))
            .rev()
        {
            let (id, r) = &snaps[*k];
            match verdict {
                Some(reasons) => kept.push(item(id, r, &group, reasons)),
                None => removed.push(item(id, r, &group, Vec::new())),
            }
        }
    }
    (kept, removed)
}

/// Runs `snap forget`.
///
/// # Errors
///
/// Usage errors for ids given with a policy, or neither; no repository;
/// the lock; a named snapshot not found; removal and sync errors; then
/// those of prune.
pub(super) fn run(
    cli: &Cli,
    facts: &mut Emitter,
    out: &Out,
    a: &ForgetArgs,
    lock: &LockArgs,
) -> Result<i32> {
    let policy = a.keep.given() || a.group_by.is_some() || !a.filter.filter().is_empty();
    if !a.ids.is_empty() && policy {
        return Err(Error::Usage(
            "give snapshot ids or a policy (--keep-*, --host/--tag/--path, --group-by), not both"
                .into(),
        ));
    }
    if a.ids.is_empty() && a.keep.rules().is_empty() {
        return Err(Error::Usage(
            "no snapshot ids and no --keep-* rule: refusing to remove every snapshot (give ids, or e.g. --keep-last 7)".into(),
        ));
    }
    let repo = open_repo(cli)?;
    let lk = repo.lock(true, lock.ms())?;
    lock_fact(facts, &repo, &lk)?;
    let snaps = repo.snapshots()?;
    let damaged = damaged_facts(facts, &repo)?;
    let (kept, removed) = if a.ids.is_empty() {
        plan(&snaps, a)
    } else {
        let mut removed: Vec<ForgetItem> = Vec::new();
        for q in a.ids {
            let (id, r) = repo.resolve(q)?;
            if !removed.iter().any(|i| i.snapshot_id == id) {
                removed.push(item(&id, &r, "named", Vec::new()));
            }
        }
        let kept = snaps
            .iter()
            .filter(|(id, _)| !removed.iter().any(|i| i.snapshot_id == *id))
            .map(|(id, r)| item(id, r, "not named", Vec::new()))
            .collect();
        // Named ids print as one group.
        (kept, removed)
    };
    if a.ids.is_empty() {
        print_table(out, &kept, &removed)?;
    } else {
        for i in &removed {
            out.note(&format!(
                "{} {}  {}  {}  {}",
                if a.dry_run { "would remove" } else { "remove" },
                &i.snapshot_id[..12],
                short_time(&i.time),
                i.host,
                i.source
            ))?;
        }
    }
    if !a.dry_run && !removed.is_empty() {
        let store = repo.store();
        // After the first removal an error says how many went (exit 4,
        // E_UNCONFIRMED, as an error after a backup's commit point).
        let partly = |done: usize, e: Error| {
            if done == 0 {
                e
            } else {
                e.after_commit(format!(
                    "{done} of {} snapshot records were removed",
                    removed.len()
                ))
            }
        };
        for (done, i) in removed.iter().enumerate() {
            crate::interrupt::check().map_err(|e| partly(done, e))?;
            match store.remove(FileKind::Snapshot, &i.snapshot_id) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(partly(
                        done,
                        Error::io(
                            "remove",
                            repo.file_path(FileKind::Snapshot, &i.snapshot_id),
                            e,
                        ),
                    ))
                }
            }
        }
        // The removals are durable before prune (or anything) relies on
        // them: a record that came back after a power cut would name
        // blobs prune had deleted.
        store
            .barrier(&mut Syncs::on())
            .map_err(|e| partly(removed.len(), Error::io("syncfs", repo.path.display(), e)))?;
    }
    let committed = format!(
        "{} snapshot records were removed",
        if a.dry_run { 0 } else { removed.len() }
    );
    let after = |e: Error| {
        if a.dry_run || removed.is_empty() {
            e
        } else {
            e.after_commit(committed.clone())
        }
    };
    out.note(&format!(
        "{} {}, kept {}",
        if a.dry_run { "would remove" } else { "removed" },
        count(removed.len() as u64, "snapshot", "snapshots"),
        kept.len()
    ))
    .map_err(after)?;
    facts
        .emit(
            Decision::Success,
            None,
            Event::ForgetResult {
                repo: repo.path.display().to_string(),
                dry_run: a.dry_run,
                kept: kept.clone(),
                removed: removed.clone(),
            },
        )
        .map_err(after)?;
    if let Some(p) = &a.prune {
        let gone: std::collections::HashSet<&str> =
            removed.iter().map(|i| i.snapshot_id.as_str()).collect();
        let remaining: Vec<(String, SnapshotRecord)> = snaps
            .into_iter()
            .filter(|(id, _)| !gone.contains(id.as_str()))
            .collect();
        run_prune(facts, out, &repo, &remaining, damaged, p).map_err(after)?;
    }
    Ok(0)
}

/// The keep/remove table, one block per group.
fn print_table(out: &Out, kept: &[ForgetItem], removed: &[ForgetItem]) -> Result<()> {
    let mut groups: BTreeMap<&str, (Vec<&ForgetItem>, Vec<&ForgetItem>)> = BTreeMap::new();
    for k in kept {
        groups.entry(&k.group).or_default().0.push(k);
    }
    for r in removed {
        groups.entry(&r.group).or_default().1.push(r);
    }
    for (g, (k, r)) in groups {
        out.note(&format!("snapshots of {g}:"))?;
        out.note(&format!(
            "{:<7} {:<12}  {:<19}  {:<12}  reasons",
            "", "id", "time", "tags"
        ))?;
        for (what, list) in [("keep", k), ("remove", r)] {
            for i in list {
                out.note(&format!(
                    "{what:<7} {:<12}  {:<19}  {:<12}  {}",
                    &i.snapshot_id[..12],
                    short_time(&i.time),
                    i.tags.join(","),
                    i.reasons.join(", ")
                ))?;
            }
        }
        out.note("")?;
    }
    Ok(())
}

/// Runs `snap prune`.
///
/// # Errors
///
/// No repository; the lock; those of [`crate::repo::prune::run`].
pub(super) fn prune(
    cli: &Cli,
    facts: &mut Emitter,
    out: &Out,
    opts: &PruneOptions,
    lock: &LockArgs,
) -> Result<i32> {
    let repo = open_repo(cli)?;
    let lk = repo.lock(true, lock.ms())?;
    lock_fact(facts, &repo, &lk)?;
    let snaps = repo.snapshots()?;
    let damaged = damaged_facts(facts, &repo)?;
    run_prune(facts, out, &repo, &snaps, damaged, opts)?;
    Ok(0)
}

/// Prunes `repo` (exclusive lock held) keeping `snaps`; refuses when
/// `damaged` records were left out, since their blobs cannot be known.
fn run_prune(
    facts: &mut Emitter,
    out: &Out,
    repo: &Repo,
    snaps: &[(String, SnapshotRecord)],
    damaged: usize,
    opts: &PruneOptions,
) -> Result<()> {
    if damaged > 0 {
        return Err(Error::Integrity {
            path: repo.display(crate::repo::layout::SNAPSHOTS),
            detail: format!(
                "{damaged} damaged snapshot record(s): prune cannot tell which blobs they reference and removes nothing (see `snap check`; remove a record you do not need with `snap forget ID`)"
            ),
        });
    }
    let report = crate::repo::prune::run(repo, snaps, opts)?;
    let verb = if report.dry_run { "would " } else { "" };
    // Two lines within 80 columns: what goes, then what it frees.
    out.note(&format!(
        "prune: {verb}delete {}, repack {} ({} into {}),\n  remove {}, {} and {}",
        count(report.packs_deleted, "pack", "packs"),
        count(report.packs_repacked, "pack", "packs"),
        count(report.blobs_repacked, "blob", "blobs"),
        count(report.packs_written, "new pack", "new packs"),
        count(
            report.unindexed_packs_removed,
            "unindexed pack",
            "unindexed packs"
        ),
        count(report.index_files_removed, "index file", "index files"),
        count(report.entries_removed, "entries file", "entries files"),
    ))?;
    out.note(&format!(
        "prune: {} used ({}), {} unused ({}) before;\n  {verb}free {}, {} unused left",
        count(report.blobs_used, "blob", "blobs"),
        mib(report.bytes_used),
        count(report.blobs_unused, "blob", "blobs"),
        mib(report.bytes_unused),
        mib(report
            .bytes_freed
            .max(report.bytes_removed.saturating_sub(report.bytes_written))),
        mib(report.bytes_unused_after)
    ))?;
    facts.emit(
        Decision::Success,
        None,
        Event::PruneResult {
            repo: repo.path.display().to_string(),
            report,
        },
    )
}
