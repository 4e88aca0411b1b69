//! `snap ls`: the entries of a snapshot, `ls -l` style.
//!
//! Side effects: reads the repository under the shared lock.

use super::args::{FilterArgs, LockArgs};
use super::common::{damaged_facts, entry_path, entry_summary, lock_fact, parse_subpath};
use super::{open_repo, Cli, Out};
use crate::error::Result;
use crate::facts::{Decision, Emitter, Event};
use crate::fs::RelPath;

/// Runs `snap ls`.
///
/// # Errors
///
/// No repository or snapshot; the lock; a damaged entries file.
pub(super) fn run(
    cli: &Cli,
    facts: &mut Emitter,
    out: &Out,
    snapshot: &str,
    path: Option<&str>,
    filter: &FilterArgs,
    lock: &LockArgs,
) -> Result<i32> {
    let repo = open_repo(cli)?;
    let lock = repo.lock(false, lock.ms())?;
    lock_fact(facts, &repo, &lock)?;
    let resolved = repo.resolve_in(snapshot, &filter.filter());
    damaged_facts(facts, &repo)?;
    let (id, rec) = resolved?;
    let records = repo.read_entries(&rec.entries)?;
    let prefix = path.map(parse_subpath).transpose()?.unwrap_or_default();
    let names = Owners::of_this_host();
    let mut n = 0u64;
    for r in &records {
        let rel = entry_path(&repo, &rec.entries, r)?;
        if !rel.starts_with(&prefix) {
            continue;
        }
        n += 1;
        out.line(&ls_line(r, &rel, &names))?;
        if facts.enabled() {
            facts.emit(
                Decision::Success,
                None,
                Event::LsEntry(entry_summary(r, &rel)),
            )?;
        }
    }
    facts.emit(
        Decision::Success,
        None,
        Event::LsResult {
            snapshot_id: id,
            path: if prefix.is_root() {
                String::new()
            } else {
                prefix.to_string()
            },
            entries: n,
        },
    )?;
    Ok(0)
}

/// Owner names by id from this host's `/etc/passwd` and `/etc/group`
/// ([`crate::sys::names_by_id`]); empty when they cannot be read.
#[derive(Default)]
struct Owners {
    users: std::collections::HashMap<u32, String>,
    groups: std::collections::HashMap<u32, String>,
}

impl Owners {
    fn of_this_host() -> Owners {
        crate::sys::names_by_id(std::path::Path::new("/etc"))
            .map(|(users, groups)| Owners { users, groups })
            .unwrap_or_default()
    }
}

/// One `ls -l`-style line: mode, owner, size, mtime, path (`-> target`).
/// The owner is `user/group`: the names the record holds (tier full, from
/// the backup host), else this host's names for its ids, else the ids.
fn ls_line(r: &crate::repo::sidecar::EntryRecord, rel: &RelPath, names: &Owners) -> String {
    use crate::repo::sidecar::EntryKind;
    let t = match r.kind {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Hardlink => 'h',
        EntryKind::Fifo => 'p',
        EntryKind::Char => 'c',
        EntryKind::Block => 'b',
        EntryKind::Socket => 's',
    };
    let mut m = String::from(t);
    for (shift, special, sch) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (r.mode >> shift) & 7;
        m.push(if bits & 4 != 0 { 'r' } else { '-' });
        m.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        m.push(match (r.mode & special != 0, x) {
            (true, true) => sch,
            (true, false) => sch.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    let name =
        |recorded: &Option<String>, id: u32, host: &std::collections::HashMap<u32, String>| {
            recorded
                .clone()
                .or_else(|| host.get(&id).cloned())
                .unwrap_or_else(|| id.to_string())
        };
    let owner = match (r.uid, r.gid) {
        (Some(u), Some(g)) => format!(
            "{}/{}",
            name(&r.user, u, &names.users),
            name(&r.group, g, &names.groups)
        ),
        _ => "-".into(),
    };
    let when = super::common::utc_time(r.mtime.sec, 0);
    let shown = String::from_utf8_lossy(&rel.to_bytes()).into_owned();
    let mut line = format!(
        "{m} {owner:>11} {:>12} {when} {}",
        r.size.unwrap_or(0),
        if shown.is_empty() { "." } else { &shown }
    );
    if let Some(t) = &r.target {
        line.push_str(&format!(" -> {t}"));
    }
    if let Some(l) = &r.link {
        line.push_str(&format!(" => {l}"));
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_time_covers_every_i64() {
        use super::super::common::utc_time;
        assert_eq!(utc_time(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(0, 5), "1970-01-01T00:00:00.000000005Z");
        assert_eq!(utc_time(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(utc_time(253_402_300_799, 0), "9999-12-31T23:59:59Z");
        assert_eq!(utc_time(253_402_300_800, 0), "10000-01-01T00:00:00Z");
        assert_eq!(utc_time(i64::MAX, 0), "292277026596-12-04T15:30:07Z");
        assert!(utc_time(i64::MIN, 0).starts_with('-'));
    }
}
