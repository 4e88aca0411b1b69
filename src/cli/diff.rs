//! `snap diff`: what changed between two snapshots, with restic's markers
//! (`doc/040_backup.rst`, "Comparing Snapshots"): `+` added, `-` removed,
//! `M` content changed, `T` type changed, `U` metadata only.
//!
//! Side effects: reads the repository under the shared lock.

use std::collections::BTreeMap;

use super::args::{FilterArgs, LockArgs};
use super::common::{damaged_facts, entry_path, lock_fact, parse_subpath};
use super::{open_repo, Cli, Out};
use crate::error::Result;
use crate::facts::{Decision, Emitter, Event};
use crate::repo::sidecar::EntryRecord;

/// What differs between two records of one path: (content changed, the
/// names of what changed). atime, ctime, inode and device numbers are
/// not compared: they change with every backup of an unchanged tree.
pub fn compare(a: &EntryRecord, b: &EntryRecord) -> (bool, Vec<&'static str>) {
    let mut what = Vec::new();
    let content = a.chunks != b.chunks || a.size != b.size || a.sparse != b.sparse;
    if content {
        what.push("content");
    }
    if a.target != b.target {
        what.push("target");
    }
    if a.link != b.link {
        what.push("link");
    }
    if a.mode != b.mode {
        what.push("mode");
    }
    if (a.uid, a.gid, &a.user, &a.group) != (b.uid, b.gid, &b.user, &b.group) {
        what.push("owner");
    }
    if a.mtime != b.mtime {
        what.push("mtime");
    }
    if a.xattrs != b.xattrs {
        what.push("xattrs");
    }
    if a.flags != b.flags {
        what.push("flags");
    }
    if a.rdev != b.rdev {
        what.push("rdev");
    }
    (content || a.target != b.target || a.link != b.link, what)
}

/// Runs `snap diff A B [PATH]`.
///
/// # Errors
///
/// No repository or snapshot; the lock; a damaged entries file.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    cli: &Cli,
    facts: &mut Emitter,
    out: &Out,
    a: &str,
    b: &str,
    path: Option<&str>,
    filter: &FilterArgs,
    lock: &LockArgs,
) -> Result<i32> {
    let repo = open_repo(cli)?;
    let lk = repo.lock(false, lock.ms())?;
    lock_fact(facts, &repo, &lk)?;
    let filter = filter.filter();
    let ra = repo.resolve_in(a, &filter);
    let rb = ra.as_ref().ok().map(|_| repo.resolve_in(b, &filter));
    damaged_facts(facts, &repo)?;
    let (ida, reca) = ra?;
    let (idb, recb) = rb.expect("resolved after a")?;
    let prefix = path.map(parse_subpath).transpose()?.unwrap_or_default();
    let load = |id: &crate::repo::EntriesRef| -> Result<BTreeMap<Vec<u8>, EntryRecord>> {
        let mut m = BTreeMap::new();
        for r in repo.read_entries(id)? {
            let rel = entry_path(&repo, id, &r)?;
            if rel.starts_with(&prefix) {
                m.insert(rel.to_bytes(), r);
            }
        }
        Ok(m)
    };
    let ea = load(&reca.entries)?;
    let eb = load(&recb.entries)?;
    let mut counts = [0u64; 6]; // + - M T U unchanged
    let mut report = |marker: &str, p: &[u8], what: Vec<&str>| -> Result<()> {
        let shown = format!("/{}", String::from_utf8_lossy(p));
        let detail = if what.is_empty() || marker == "T" {
            String::new()
        } else {
            format!("  ({})", what.join(", "))
        };
        out.line(&format!("{marker}    {shown}{detail}"))?;
        facts.emit(
            Decision::Success,
            None,
            Event::DiffChange {
                marker: marker.to_owned(),
                path: shown,
                changed: what.into_iter().map(str::to_owned).collect(),
            },
        )
    };
    for (p, ra) in &ea {
        match eb.get(p) {
            None => {
                counts[1] += 1;
                report("-", p, Vec::new())?;
            }
            Some(rb) if rb.kind != ra.kind => {
                counts[3] += 1;
                report("T", p, vec!["type"])?;
            }
            Some(rb) => {
                let (content, what) = compare(ra, rb);
                if content {
                    counts[2] += 1;
                    report("M", p, what)?;
                } else if !what.is_empty() {
                    counts[4] += 1;
                    report("U", p, what)?;
                } else {
                    counts[5] += 1;
                }
            }
        }
    }
    for p in eb.keys().filter(|p| !ea.contains_key(*p)) {
        counts[0] += 1;
        report("+", p, Vec::new())?;
    }
    out.line(&format!(
        "{} added, {} removed, {} modified, {} type changed, {} metadata changed, {} unchanged",
        counts[0], counts[1], counts[2], counts[3], counts[4], counts[5]
    ))?;
    facts.emit(
        Decision::Success,
        None,
        Event::DiffResult {
            a: ida,
            b: idb,
            path: if prefix.is_root() {
                String::new()
            } else {
                prefix.to_string()
            },
            added: counts[0],
            removed: counts[1],
            modified: counts[2],
            type_changed: counts[3],
            metadata_changed: counts[4],
            unchanged: counts[5],
        },
    )?;
    Ok(0)
}
