//! The rules an entries file's records obey as a sequence (each record's
//! own values are checked by [`EntryRecord::check_values`] as it is
//! parsed): what `snap check` applies to every snapshot, and what a
//! restore of the whole snapshot relies on as it builds the tree.
//!
//! Pure: no I/O.

use std::collections::{HashMap, HashSet};

use crate::fs::RelPath;
use crate::repo::sidecar::{EntryKind, EntryRecord};

/// Follows the records of one entries file in order (see docs/FORMAT.md,
/// "Entries files"):
///
/// - at most one record for the root (path `""`), a directory;
/// - every other record comes while its parent directory is open: after
///   the parent's record and before the walk has left it (restore keeps a
///   stack of open directories and refuses "an entry outside of its
///   directory");
/// - no name twice in one directory (restore would find it created);
/// - a hard link's leader is an earlier record of a kind that can carry
///   more names (not a directory or another hard link).
#[derive(Debug, Default)]
pub struct TreeRules {
    /// The open directories, outermost first, with the names met in each.
    stack: Vec<(RelPath, HashSet<Vec<u8>>)>,
    root: bool,
    /// Records met that are not hard links: path -> kind.
    leaders: HashMap<RelPath, EntryKind>,
    /// Records seen.
    pub records: u64,
}

impl TreeRules {
    /// Rules for a new entries file.
    pub fn new() -> Self {
        Self {
            stack: vec![(RelPath::root(), HashSet::new())],
            ..Self::default()
        }
    }

    /// Takes the next record.
    ///
    /// # Errors
    ///
    /// A message naming the rule `rec` breaks (its values are assumed
    /// checked: an invalid path is reported as such).
    pub fn push(&mut self, rec: &EntryRecord) -> Result<(), String> {
        self.records += 1;
        let rel = rec
            .rel_path()
            .map_err(|e| format!("invalid path {:?}: {e}", rec.path))?;
        let Some(name) = rel.file_name() else {
            if self.root {
                return Err("a second record for the snapshot root".into());
            }
            if rec.kind != EntryKind::Dir {
                return Err(format!("the snapshot root is a {:?} entry", rec.kind));
            }
            self.root = true;
            return Ok(());
        };
        let parent = rel.parent().unwrap_or_default();
        while self.stack.last().is_some_and(|f| f.0 != parent) {
            self.stack.pop();
        }
        let Some((_, names)) = self.stack.last_mut() else {
            return Err(format!(
                "entry {:?} appears outside of its directory",
                rec.path
            ));
        };
        if !names.insert(name.as_bytes().to_vec()) {
            return Err(format!("a second record for {rel}"));
        }
        if rec.kind != EntryKind::Hardlink {
            self.leaders.insert(rel.clone(), rec.kind);
        }
        match rec.kind {
            EntryKind::Dir => self.stack.push((rel, HashSet::new())),
            EntryKind::Hardlink => {
                let leader = rec
                    .link_path()
                    .map_err(|e| format!("{rel}: invalid hard link leader: {e}"))?
                    .ok_or_else(|| format!("{rel}: hard link without leader"))?;
                match self.leaders.get(&leader) {
                    None => {
                        return Err(format!(
                            "{rel}: hard link leader {leader} is not in the snapshot before it"
                        ))
                    }
                    Some(k) if !can_lead(*k) => {
                        return Err(format!("{rel}: hard link leader {leader} is a {k:?} entry"))
                    }
                    Some(_) => {}
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn can_lead(k: EntryKind) -> bool {
    matches!(
        k,
        EntryKind::File
            | EntryKind::Symlink
            | EntryKind::Fifo
            | EntryKind::Char
            | EntryKind::Block
            | EntryKind::Socket
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, kind: EntryKind) -> EntryRecord {
        let mut r = EntryRecord::new(
            &RelPath::parse(path.as_bytes()).unwrap_or_default(),
            kind,
            0o644,
            crate::fs::Time { sec: 0, nsec: 0 },
        );
        r.path = path.into();
        r
    }

    fn run(recs: &[EntryRecord]) -> Result<(), String> {
        let mut t = TreeRules::new();
        recs.iter().try_for_each(|r| t.push(r))
    }

    #[test]
    fn a_walk_order_tree_passes_and_each_rule_is_enforced() {
        let mut link = rec("d/l", EntryKind::Hardlink);
        link.link = Some("a".into());
        let good = [
            rec("", EntryKind::Dir),
            rec("a", EntryKind::File),
            rec("d", EntryKind::Dir),
            link.clone(),
            rec("d/e", EntryKind::Dir),
            rec("d/e/f", EntryKind::File),
            rec("z", EntryKind::File),
        ];
        assert_eq!(run(&good), Ok(()));
        let err = |recs: &[EntryRecord]| run(recs).unwrap_err();
        assert!(err(&[rec("", EntryKind::Dir), rec("", EntryKind::Dir)]).contains("second record"));
        assert!(err(&[rec("", EntryKind::File)]).contains("root is a"));
        assert!(err(&[rec("d/x", EntryKind::File)]).contains("outside of its directory"));
        assert!(err(&[
            rec("d", EntryKind::Dir),
            rec("e", EntryKind::Dir),
            rec("d/x", EntryKind::File)
        ])
        .contains("outside of its directory"));
        assert!(err(&[rec("a", EntryKind::File), rec("a", EntryKind::Dir)])
            .contains("second record for a"));
        assert!(
            err(&[rec("d", EntryKind::Dir), link.clone()]).contains("not in the snapshot before")
        );
        let mut to_dir = link.clone();
        to_dir.link = Some("d".into());
        assert!(err(&[rec("d", EntryKind::Dir), to_dir]).contains("is a Dir entry"));
    }
}
