//! `snap stats`: restore size, unique bytes and blobs of some snapshots,
//! and the repository's files and bytes per kind.
//!
//! Side effects: reads the repository under the shared lock.

use std::collections::HashSet;

use super::args::{FilterArgs, LockArgs};
use super::common::{count, damaged_facts, lock_fact, mib};
use super::{open_repo, Cli, Out};
use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event, KindUsage, RepoUsage, StatsReport};
use crate::repo::format::index::IdMap;
use crate::repo::layout;
use crate::repo::sidecar::EntryKind;
use crate::repo::storage::FileKind;
use crate::repo::Repo;

/// Files and bytes of `kind`.
fn usage(repo: &Repo, kind: FileKind) -> Result<KindUsage> {
    let mut u = KindUsage::default();
    for n in repo.list(kind)? {
        let Some(id) = layout::id_of(kind, &n) else {
            continue;
        };
        let size = repo
            .store()
            .open(kind, id)
            .and_then(|f| f.size())
            .map_err(|e| Error::io("stat", repo.file_path(kind, id), e))?;
        u.files += 1;
        u.bytes += size;
    }
    Ok(u)
}

/// Runs `snap stats`.
///
/// # Errors
///
/// No repository or snapshot; the lock; a damaged entries or index file;
/// a referenced blob in no index.
pub(super) fn run(
    cli: &Cli,
    facts: &mut Emitter,
    out: &Out,
    snapshot: Option<&str>,
    filter: &FilterArgs,
    lock: &LockArgs,
) -> Result<i32> {
    let repo = open_repo(cli)?;
    let lk = repo.lock(false, lock.ms())?;
    lock_fact(facts, &repo, &lk)?;
    let filter = filter.filter();
    let snaps = match snapshot {
        Some(q) => vec![repo.resolve_in(q, &filter)?],
        None => {
            let mut all = repo.snapshots()?;
            all.retain(|(_, r)| filter.matches(r));
            all
        }
    };
    damaged_facts(facts, &repo)?;
    let index = repo.index()?;
    let mut r = StatsReport {
        repo: repo.path.display().to_string(),
        snapshots: snaps.len() as u64,
        ..StatsReport::default()
    };
    let mut blobs: IdMap<()> = IdMap::default();
    let mut seen: HashSet<&str> = HashSet::new();
    for (id, rec) in &snaps {
        crate::interrupt::check()?;
        let records = repo.read_entries(&rec.entries)?;
        r.entries += records.len() as u64;
        let first = seen.insert(rec.entries.id.as_str());
        for e in &records {
            if e.kind == EntryKind::File {
                r.files += 1;
                r.restore_size += e.size.unwrap_or(0);
            }
            if !first {
                continue;
            }
            for hex in e.chunks.iter().flatten() {
                let b = blake3::Hash::from_hex(hex).map_err(|_| Error::Integrity {
                    path: repo.entries_display(&rec.entries),
                    detail: format!("{}: chunk id {hex:?} is not BLAKE3 hex", e.path),
                })?;
                if blobs.insert(b, ()).is_none() {
                    let loc = index.get(&b).ok_or_else(|| Error::Integrity {
                        path: repo.display(layout::INDEX),
                        detail: format!(
                            "blob {b} of {} (snapshot {}) is in no index",
                            e.path,
                            &id[..12]
                        ),
                    })?;
                    r.unique_bytes += u64::from(loc.length);
                    r.unique_plain_bytes += loc.plain_len(repo.crypto().overhead());
                }
            }
        }
    }
    r.blobs = blobs.len() as u64;
    let mut u = RepoUsage {
        packs: usage(&repo, FileKind::Pack)?,
        index: usage(&repo, FileKind::Index)?,
        entries: usage(&repo, FileKind::Entries)?,
        snapshots: usage(&repo, FileKind::Snapshot)?,
        total_bytes: 0,
    };
    u.total_bytes = u.packs.bytes + u.index.bytes + u.entries.bytes + u.snapshots.bytes;
    r.repository = u;
    out.line(&format!("snapshots:     {}", r.snapshots))?;
    out.line(&format!(
        "restore size:  {} in {} ({})",
        mib(r.restore_size),
        count(r.files, "file", "files"),
        count(r.entries, "entry", "entries")
    ))?;
    out.line(&format!(
        "unique data:   {} in {} ({} before compression)",
        mib(r.unique_bytes),
        count(r.blobs, "blob", "blobs"),
        mib(r.unique_plain_bytes)
    ))?;
    for (name, k) in [
        ("packs", r.repository.packs),
        ("index", r.repository.index),
        ("entries", r.repository.entries),
        ("snapshots", r.repository.snapshots),
    ] {
        out.line(&format!(
            "repository {name:<10} {:>8} files  {:>12}",
            k.files,
            mib(k.bytes)
        ))?;
    }
    out.line(&format!(
        "repository total      {:>21}",
        mib(r.repository.total_bytes)
    ))?;
    facts.emit(Decision::Success, None, Event::StatsResult(r))?;
    Ok(0)
}
