//! The tier rule: which entries and which record fields each preservation
//! tier keeps. Backup records by it and restore applies by it (a snapshot
//! of a higher tier restored at a lower one), so it is decided here only
//! (`docs/FORMAT.md`, the "present" column of the sidecar table;
//! README "Tiers"). Pure: no I/O.

use super::sidecar::{EntryKind, EntryRecord};
use crate::policy::PreservationTier;

/// What a tier keeps of an entry's metadata beyond basic's (mode, mtime,
/// content, and for files the stat key `ctime`/`ino`/`dev`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    /// Owners (`uid`, `gid`) and `atime`; hard links as links. From
    /// extended.
    pub owners: bool,
    /// xattrs (ACLs and capabilities among them), inode flags, sparse maps,
    /// device numbers, owner names and every entry's `ctime`. At full.
    pub full: bool,
}

/// The fields `tier` keeps.
pub fn fields(tier: PreservationTier) -> Fields {
    Fields {
        owners: tier >= PreservationTier::Extended,
        full: tier >= PreservationTier::Full,
    }
}

/// Whether `tier` keeps entries of `kind`: directories, regular files and
/// hard link names always (at basic a hard link name gets its leader's
/// content); symlinks and FIFOs from extended; devices and sockets at full.
pub fn keeps(tier: PreservationTier, kind: EntryKind) -> bool {
    match kind {
        EntryKind::Dir | EntryKind::File | EntryKind::Hardlink => true,
        EntryKind::Symlink | EntryKind::Fifo => tier >= PreservationTier::Extended,
        EntryKind::Char | EntryKind::Block | EntryKind::Socket => tier >= PreservationTier::Full,
    }
}

/// Whether `tier` keeps a directory that holds nothing it keeps: from
/// extended (basic keeps directories only as the parents of what they
/// hold).
pub fn keeps_empty_dirs(tier: PreservationTier) -> bool {
    tier >= PreservationTier::Extended
}

/// Drops every field of `r` that `tier` does not keep, so a snapshot of a
/// higher tier can be restored at a lower one.
pub fn limit(r: &mut EntryRecord, tier: PreservationTier) {
    let f = fields(tier);
    if !f.full {
        r.xattrs = None;
        r.flags = None;
        r.sparse = None;
        r.user = None;
        r.group = None;
    }
    if !f.owners {
        r.uid = None;
        r.gid = None;
        r.atime = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PreservationTier::{Basic, Extended, Full};

    #[test]
    fn each_tier_keeps_what_the_table_says() {
        assert_eq!(
            [fields(Basic), fields(Extended), fields(Full)],
            [
                Fields {
                    owners: false,
                    full: false
                },
                Fields {
                    owners: true,
                    full: false
                },
                Fields {
                    owners: true,
                    full: true
                },
            ]
        );
        for (kind, from) in [
            (EntryKind::File, Basic),
            (EntryKind::Dir, Basic),
            (EntryKind::Hardlink, Basic),
            (EntryKind::Symlink, Extended),
            (EntryKind::Fifo, Extended),
            (EntryKind::Char, Full),
            (EntryKind::Block, Full),
            (EntryKind::Socket, Full),
        ] {
            for tier in [Basic, Extended, Full] {
                assert_eq!(keeps(tier, kind), tier >= from, "{kind:?} at {tier:?}");
            }
        }
        assert!(!keeps_empty_dirs(Basic) && keeps_empty_dirs(Extended) && keeps_empty_dirs(Full));
    }

    #[test]
    fn limit_drops_what_a_lower_tier_does_not_keep() {
        let rel = crate::fs::RelPath::parse(b"f").unwrap();
        let mut r = EntryRecord::new(
            &rel,
            EntryKind::File,
            0o644,
            crate::fs::Time { sec: 0, nsec: 0 },
        );
        r.uid = Some(1);
        r.gid = Some(2);
        r.flags = Some(0x10);
        r.user = Some("u".into());
        let mut at_extended = r.clone();
        limit(&mut at_extended, Extended);
        assert_eq!(
            (at_extended.uid, at_extended.flags, at_extended.user),
            (Some(1), None, None)
        );
        let mut at_basic = r.clone();
        limit(&mut at_basic, Basic);
        assert_eq!((at_basic.uid, at_basic.gid), (None, None));
        let mut at_full = r.clone();
        limit(&mut at_full, Full);
        assert_eq!(at_full, r);
    }
}
