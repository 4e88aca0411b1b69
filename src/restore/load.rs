//! Loading a snapshot for restore: resolve it, scan its entries file once
//! (a piece at a time, checked against its id) for what the restore
//! needs (owners, xattrs, inode flags, kinds; the subpath's shape), and
//! the tier to apply.
//!
//! Side effects: reads the repository.

use crate::error::{Error, Result};
use crate::fs::RelPath;
use crate::repo::format::tier;
use crate::repo::sidecar::{EntryKind, EntryRecord};
use crate::repo::Repo;

use super::integrity;

/// Entries file bytes the scan before a restore reads at once (split
/// between the cores).
pub(super) const SCAN_PIECE: usize = 8 << 20;

/// A snapshot resolved and its entries scanned and verified, ready for
/// preflight and [`run`]. Holds no entry records: [`run`] reads the
/// entries file again, a piece at a time.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Snapshot id.
    pub snapshot_id: String,
    /// Its record.
    pub record: crate::repo::SnapshotRecord,
    /// The tier being applied.
    pub tier: crate::policy::PreservationTier,
    /// Where the tier came from: `"snapshot"` (the record's), `"policy"`
    /// (chosen by preset, policy file or flag) or `"untrusted"` (capped at
    /// extended by `restore_untrusted`).
    pub tier_source: &'static str,
    /// Policy `restore_untrusted`: set-ID bits are cleared as well.
    pub untrusted: bool,
    /// What the snapshot's entries (at that tier) ask of a restore.
    pub needs: crate::preflight::Needs,
    /// The snapshot path restored (the root: all of it). Its subtree
    /// becomes the target; a non-directory is placed inside a new target
    /// directory.
    pub subpath: RelPath,
    /// Content bytes of the entries restored (the progress total).
    pub bytes: u64,
    /// What sits at `subpath`.
    pub(super) shape: Shape,
    /// Paths that hard link entries name as their leader.
    pub(super) leaders: std::collections::HashSet<RelPath>,
}

/// What a restore's path is in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Shape {
    /// A directory: it becomes the target, its subtree the target's.
    Tree,
    /// A non-directory: placed inside a new target directory.
    One,
    /// The root of a snapshot of a single file (no root record): its one
    /// entry goes inside a new target directory.
    Whole,
}

/// Where one snapshot entry goes in a restore.
pub(super) enum Place {
    /// It is the restored directory itself.
    Root,
    /// At this path under the target.
    At(RelPath),
    /// Not restored.
    Skip,
}

impl Loaded {
    pub(super) fn place(&self, rel: &RelPath) -> Place {
        let sub = &self.subpath;
        match self.shape {
            Shape::Tree if rel == sub => Place::Root,
            Shape::Tree => match rel.strip_prefix(sub) {
                Some(new) => Place::At(new),
                None => Place::Skip,
            },
            Shape::One if rel == sub => match rel.file_name() {
                Some(name) => Place::At(RelPath::root().join(name.clone())),
                None => Place::Skip,
            },
            Shape::One => Place::Skip,
            Shape::Whole => Place::At(rel.clone()),
        }
    }
}

pub(super) fn second_record(sub: &RelPath) -> String {
    if sub.is_root() {
        "a second record for the snapshot root".into()
    } else {
        format!("a second record for {sub}")
    }
}

/// Drops every field of `r` that `tier` does not apply ([`tier::limit`]).
///
/// `untrusted` (policy `restore_untrusted`) also clears the set-user-ID and
/// set-group-ID bits.
pub(super) fn limit(r: &mut EntryRecord, tier: crate::policy::PreservationTier, untrusted: bool) {
    if untrusted {
        r.mode &= !0o6000;
    }
    tier::limit(r, tier);
}

/// The fields of an entry record the scan before a restore reads,
/// borrowed from the line (chunk lists and the rest are skipped unparsed).
#[derive(serde::Deserialize)]
pub(super) struct ScanLine<'a> {
    pub(super) v: u32,
    #[serde(borrow)]
    pub(super) path: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    pub(super) path_b64: Option<std::borrow::Cow<'a, str>>,
    pub(super) kind: EntryKind,
    #[serde(default)]
    pub(super) uid: Option<u32>,
    #[serde(default)]
    pub(super) size: Option<u64>,
    #[serde(default)]
    pub(super) flags: Option<u32>,
    #[serde(default, borrow)]
    pub(super) xattrs:
        Option<std::collections::BTreeMap<std::borrow::Cow<'a, str>, serde::de::IgnoredAny>>,
    #[serde(default, borrow)]
    pub(super) link: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) link_b64: Option<std::borrow::Cow<'a, str>>,
}

/// What the scan of one part of the entries file found.
#[derive(Default)]
pub(super) struct ScanPart {
    pub(super) needs: crate::preflight::Needs,
    /// Content bytes of entries strictly under the restored path.
    pub(super) under: u64,
    /// The entry at the restored path: (kind, size).
    pub(super) at: Option<(EntryKind, u64)>,
    pub(super) leaders: std::collections::HashSet<RelPath>,
}

/// Resolves `query` and scans its entries file once, a piece at a time:
/// checks it against its id, finds what sits at `subpath` and what the
/// entries (limited to the restore tier) ask of the restore. `tier: None`
/// applies the snapshot's own tier. Memory stays bounded by the piece size
/// and the number of hard link leaders, not by the number of entries.
///
/// # Errors
///
/// As [`Repo::resolve_in`] (`filter` chooses what `latest` is) and
/// [`Repo::entries_reader`]; [`Error::Integrity`]
/// for a malformed record or a file that does not match its id;
/// [`Error::SnapshotNotFound`] (`E_BACKUP_MISSING`) when the snapshot holds
/// no `subpath`.
pub fn load(
    repo: &Repo,
    query: &str,
    filter: &crate::repo::select::Filter,
    tier: Option<crate::policy::PreservationTier>,
    subpath: Option<&RelPath>,
    untrusted: bool,
) -> Result<Loaded> {
    let (snapshot_id, record) = repo.resolve_in(query, filter)?;
    let (mut tier, mut tier_source) = match tier {
        Some(t) => (t, "policy"),
        None => (record.tier, "snapshot"),
    };
    if untrusted && tier > crate::policy::PreservationTier::Extended {
        (tier, tier_source) = (crate::policy::PreservationTier::Extended, "untrusted");
    }
    let sub = subpath.cloned().unwrap_or_default();
    let sub_raw = sub.to_bytes();
    let mut reader = repo.entries_reader(&record.entries, SCAN_PIECE)?;
    let path = reader.path().to_owned();
    let scan = |part: &[u8], first: usize| -> Result<ScanPart> {
        let mut out = ScanPart::default();
        for (i, line) in crate::repo::lines(part).enumerate() {
            if line.is_empty() {
                continue;
            }
            let bad = |detail: String| integrity(format!("{path}:{}", first + i), detail);
            let l: ScanLine =
                serde_json::from_slice(line).map_err(|e| bad(format!("malformed record: {e}")))?;
            crate::repo::sidecar::check_version(l.v).map_err(bad)?;
            if !tier::keeps(tier, l.kind) {
                continue;
            }
            let raw: std::borrow::Cow<[u8]> = match &l.path_b64 {
                None => std::borrow::Cow::Borrowed(l.path.as_bytes()),
                Some(b) => crate::fs::stored_to_bytes(&l.path, Some(b))
                    .map_err(|e| bad(format!("invalid path: {e}")))?
                    .into(),
            };
            let tier::Fields {
                owners: extended,
                full,
            } = tier::fields(tier);
            out.needs.add(
                l.uid.filter(|_| extended),
                l.flags.filter(|_| full),
                l.kind,
                l.xattrs
                    .iter()
                    .filter(|_| full)
                    .flat_map(|x| x.keys().map(|k| k.as_ref())),
            );
            if l.kind == EntryKind::Hardlink {
                let link = l.link.as_deref().unwrap_or_default();
                let leader = RelPath::from_stored(link, l.link_b64.as_deref())
                    .map_err(|e| bad(format!("invalid hard link leader: {e}")))?;
                out.leaders.insert(leader);
            }
            let size = l.size.unwrap_or(0);
            if *raw == *sub_raw {
                if out.at.is_some() {
                    return Err(bad(second_record(&sub)));
                }
                out.at = Some((l.kind, size));
            } else if sub_raw.is_empty()
                || (raw.starts_with(&sub_raw) && raw.get(sub_raw.len()) == Some(&b'/'))
            {
                out.under += size;
            }
        }
        Ok(out)
    };
    let mut total = ScanPart::default();
    while let Some((piece, first)) = reader.next_piece()? {
        let parts = crate::repo::split_lines(&piece, crate::par::cores());
        let parts = crate::par::map(&parts, |&(part, line)| scan(part, first + line - 1));
        for part in parts {
            let part = part?;
            total.needs.merge(&part.needs);
            total.under += part.under;
            if total.at.is_some() && part.at.is_some() {
                return Err(integrity(&path, second_record(&sub)));
            }
            total.at = total.at.or(part.at);
            total.leaders.extend(part.leaders);
        }
    }
    let (shape, bytes) = match total.at {
        Some((EntryKind::Dir, _)) => (Shape::Tree, total.under),
        Some((_, size)) => (Shape::One, size),
        None if sub.is_root() => (Shape::Whole, total.under),
        None => {
            return Err(Error::SnapshotNotFound {
                query: format!("{query}:{sub}"),
                detail: format!("snapshot {} holds no path {sub}", &snapshot_id[..12]),
            })
        }
    };
    Ok(Loaded {
        snapshot_id,
        record,
        tier,
        tier_source,
        untrusted,
        needs: total.needs,
        subpath: sub,
        bytes,
        shape,
        leaders: total.leaders,
    })
}
