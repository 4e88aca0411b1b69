//! `snap ls`: the entries of a snapshot, `ls -l` style.
//!
//! Side effects: reads the repository under the shared lock.

use super::args::LockArgs;
use super::common::{damaged_facts, lock_fact, parse_subpath};
use super::{repo_path, Cli, Out};
use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event};
use crate::fs::RelPath;
use crate::repo::Repo;

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
    lock: &LockArgs,
) -> Result<i32> {
    let repo = Repo::open(&repo_path(cli)?)?;
    let lock = repo.lock(false, lock.ms())?;
    lock_fact(facts, &repo, &lock)?;
    let resolved = repo.resolve(snapshot);
    damaged_facts(facts, &repo)?;
    let (id, rec) = resolved?;
    let records = repo.read_entries(&rec.entries.id)?;
    let prefix = path.map(parse_subpath).transpose()?.unwrap_or_default();
    let mut n = 0u64;
    for r in &records {
        let rel = r.rel_path().map_err(|e| Error::Integrity {
            path: repo.entries_display(&rec.entries.id),
            detail: format!("invalid path {:?}: {e}", r.path),
        })?;
        if !rel.starts_with(&prefix) {
            continue;
        }
        n += 1;
        out.line(&ls_line(r, &rel))?;
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

/// `sec` seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC, the
/// proleptic Gregorian calendar), for any `i64`: years before 1 and after
/// 9999 are written with as many digits as they need (and a sign before
/// year 0), where RFC 3339 stops. Days to civil date by Howard Hinnant's
/// `civil_from_days` ("chrono-Compatible Low-Level Date Algorithms").
fn utc_seconds(sec: i64) -> String {
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
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One `ls -l`-style line: mode, owner, size, mtime, path (`-> target`).
fn ls_line(r: &crate::repo::sidecar::EntryRecord, rel: &RelPath) -> String {
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
    let owner = match (r.uid, r.gid) {
        (Some(u), Some(g)) => format!("{u}/{g}"),
        _ => "-".into(),
    };
    let when = utc_seconds(r.mtime.sec);
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
    fn utc_seconds_covers_every_i64() {
        assert_eq!(super::utc_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc_seconds(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc_seconds(-1), "1969-12-31T23:59:59Z");
        assert_eq!(super::utc_seconds(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(super::utc_seconds(253_402_300_800), "10000-01-01T00:00:00Z");
        assert_eq!(super::utc_seconds(i64::MAX), "292277026596-12-04T15:30:07Z");
        assert!(super::utc_seconds(i64::MIN).starts_with('-'));
    }
}
