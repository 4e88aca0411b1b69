//! `snap check`: verifies a repository's structure and, with `read_data`,
//! every byte. Collects every problem instead of stopping at the first.
//!
//! Side effects: reads the repository; with `repair_tmp` (caller holds the
//! exclusive lock) removes leftovers in `tmp/`.

use std::collections::{HashMap, HashSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::format::is_hex_id;
use super::layout;
use super::pack::{parse_tail, parse_trailer, TRAILER_LEN};
use super::sidecar::EntryKind;
use super::storage::FileKind;
use super::{IndexFile, Repo, SnapshotRecord, INDEX_MAX};
use crate::error::Result;

/// At most this many problems are listed; `problem_count` has them all.
pub const MAX_LISTED: usize = 100;

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// The repository file concerned.
    pub path: String,
    /// What is wrong.
    pub detail: String,
}

/// What `snap check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CheckReport {
    /// Snapshot records read.
    pub snapshots: u64,
    /// Index files read.
    pub index_files: u64,
    /// Packs listed in the index.
    pub packs: u64,
    /// Blobs listed in the index.
    pub blobs: u64,
    /// Blob references in entries files checked against the index.
    pub references: u64,
    /// True when every pack and blob was re-hashed (`--read-data`).
    pub read_data: bool,
    /// Pack bytes read and hashed.
    pub bytes_read: u64,
    /// All problems found.
    pub problem_count: u64,
    /// The first [`MAX_LISTED`] problems.
    pub problems: Vec<Problem>,
    /// Packs on disk that no index lists: garbage (from an interrupted
    /// backup), not an error; `prune` removes them.
    pub garbage_packs: u64,
    /// Indexed blobs no snapshot references: garbage, not an error.
    pub unused_blobs: u64,
    /// Entries in `tmp/` (leftovers of an interrupted run).
    pub tmp_entries: u64,
    /// Entries removed from `tmp/` (`--repair-tmp`).
    pub tmp_removed: u64,
}

impl CheckReport {
    fn problem(&mut self, path: impl Into<String>, detail: impl Into<String>) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(Problem {
                path: path.into(),
                detail: detail.into(),
            });
        }
    }
}

/// Checks `repo`.
///
/// # Errors
///
/// Only what prevents checking at all (a top-level directory that cannot
/// be listed); everything else is a [`Problem`] in the report.
pub fn run(repo: &Repo, read_data: bool, repair_tmp: bool) -> Result<CheckReport> {
    let mut r = CheckReport {
        read_data,
        ..CheckReport::default()
    };
    // Key files (an encrypted repository): each matches its id and parses.
    // (One opened the repository already; an unencrypted one should have
    // none.)
    for fname in repo.list(FileKind::Key)? {
        let path = repo.display(&format!("{}/{fname}", layout::KEYS));
        let Some(id) = fname.strip_suffix(".json").filter(|i| is_hex_id(i)) else {
            r.problem(path, "unexpected file in keys/");
            continue;
        };
        if !repo.crypto().is_encrypted() {
            r.problem(path, "a key file in a repository that is not encrypted");
            continue;
        }
        if let Err(e) = crate::repo::read_key_file(repo.store(), id) {
            r.problem(path, e);
        }
    }
    // Snapshot records.
    let mut snapshots: Vec<(String, SnapshotRecord)> = Vec::new();
    for fname in repo.list(FileKind::Snapshot)? {
        let path = repo.display(&format!("{}/{fname}", layout::SNAPSHOTS));
        let Some(id) = fname.strip_suffix(".json").filter(|i| is_hex_id(i)) else {
            r.problem(path, "unexpected file in snapshots/");
            continue;
        };
        r.snapshots += 1;
        // The reader's own rules (regular file, size, id, shape, version).
        match repo.read_record(id) {
            Ok(rec) => snapshots.push((id.to_owned(), rec)),
            Err(crate::error::Error::Integrity { detail, .. }) => r.problem(path, detail),
            Err(e) => r.problem(path, format!("unreadable: {e}")),
        }
    }
    // Index files.
    // Blob -> (pack, offset, stored length, plaintext length).
    let mut index: HashMap<blake3::Hash, (blake3::Hash, u64, u32, u32)> = HashMap::new();
    let mut by_pack: HashMap<blake3::Hash, Vec<IndexRow>> = HashMap::new();
    let mut readable = crate::repo::Index::default();
    for fname in repo.list(FileKind::Index)? {
        let path = repo.display(&format!("{}/{fname}", layout::INDEX));
        let Some(id) = fname.strip_suffix(".idx").filter(|i| is_hex_id(i)) else {
            r.problem(path, "unexpected file in index/");
            continue;
        };
        r.index_files += 1;
        let idx: IndexFile = match repo.store().read(FileKind::Index, id, INDEX_MAX) {
            Err(e) => {
                r.problem(path, format!("unreadable: {e}"));
                continue;
            }
            Ok(b) if blake3::hash(&b).to_hex().as_str() != id => {
                r.problem(path, "index file does not match its BLAKE3 id");
                continue;
            }
            Ok(b) => match repo
                .crypto()
                .open(crate::repo::crypto::Ad::Index, b)
                .and_then(crate::repo::format::index::decode_file)
                .and_then(|json| {
                    let parsed: IndexFile =
                        serde_json::from_slice(&json).map_err(|e| e.to_string())?;
                    // The same file into the blob map the entries streams are
                    // read through; a damaged file is left out of it (and
                    // reported here) rather than hiding every stream. Parsed
                    // alone first, so a file that fails halfway adds nothing.
                    let mut one = crate::repo::Index::default();
                    crate::repo::format::index::index_into(&json, &mut one)
                        .map_err(|e| e.to_string())?;
                    crate::repo::format::index::index_into(&json, &mut readable)
                        .map_err(|e| e.to_string())?;
                    Ok(parsed)
                }) {
                Ok(i) => i,
                Err(e) => {
                    r.problem(path, format!("malformed index: {e}"));
                    continue;
                }
            },
        };
        for p in idx.packs {
            let Ok(pack) = blake3::Hash::from_hex(&p.id) else {
                r.problem(&path, format!("pack id {:?} is not BLAKE3 hex", p.id));
                continue;
            };
            for b in p.blobs {
                match blake3::Hash::from_hex(&b.id) {
                    Ok(bid) => {
                        let plain = b.raw_length.unwrap_or_else(|| {
                            b.length.saturating_sub(repo.crypto().overhead() as u32)
                        });
                        index.insert(bid, (pack, b.offset, b.length, plain));
                        by_pack.entry(pack).or_default().push((
                            bid,
                            b.offset,
                            b.length,
                            b.raw_length,
                        ));
                    }
                    Err(_) => r.problem(&path, format!("blob id {:?} is not BLAKE3 hex", b.id)),
                }
            }
        }
    }
    r.packs = by_pack.len() as u64;
    r.blobs = index.len() as u64;
    // Format-3 entries streams are read through the index files that
    // parse, not through a load that stops at the first damaged one.
    repo.preload_index(readable);
    // Entries files and the blobs they reference.
    let mut referenced: HashSet<blake3::Hash> = HashSet::new();
    for (sid, rec) in &snapshots {
        // Format 3: the blobs the entries stream is stored in.
        for hex in rec.entries.chunks.iter().flatten() {
            r.references += 1;
            match blake3::Hash::from_hex(hex) {
                Ok(id) if index.contains_key(&id) => {
                    referenced.insert(id);
                }
                _ => r.problem(
                    repo.file_path(FileKind::Snapshot, sid),
                    format!("entries blob {hex:?} is in no index"),
                ),
            }
        }
        let records = match repo.read_entries(&rec.entries) {
            Ok(x) => x,
            Err(e) => {
                r.problem(
                    repo.entries_display(&rec.entries),
                    format!("entries file of snapshot {}: {e}", &sid[..12]),
                );
                continue;
            }
        };
        if records.len() as u64 != rec.entries.count {
            r.problem(
                repo.file_path(FileKind::Snapshot, sid),
                format!(
                    "record says {} entries, the entries file holds {}",
                    rec.entries.count,
                    records.len()
                ),
            );
        }
        // The rules restore builds the tree by, over the whole file.
        let mut rules = super::tree::TreeRules::new();
        if let Some((i, why)) = records
            .iter()
            .enumerate()
            .find_map(|(i, e)| rules.push(e).err().map(|w| (i, w)))
        {
            r.problem(
                format!("{}:{}", repo.entries_display(&rec.entries), i + 1),
                format!("{why} (snapshot {})", &sid[..12]),
            );
        }
        for e in &records {
            // Bytes the chunks hold, when every one is indexed: restore
            // refuses a file whose content is not its recorded size.
            let mut held = Some(0u64);
            for hex in e.chunks.iter().flatten() {
                r.references += 1;
                match blake3::Hash::from_hex(hex) {
                    Ok(id) if index.contains_key(&id) => {
                        referenced.insert(id);
                        held = held.map(|h| h + u64::from(index[&id].3));
                    }
                    Ok(id) => {
                        held = None;
                        r.problem(
                            repo.entries_display(&rec.entries),
                            format!(
                                "{}: blob {id} is in no index (snapshot {})",
                                e.path,
                                &sid[..12]
                            ),
                        )
                    }
                    Err(_) => {
                        held = None;
                        r.problem(
                            repo.entries_display(&rec.entries),
                            format!("{}: chunk id {hex:?} is not BLAKE3 hex", e.path),
                        )
                    }
                }
            }
            let stored = match &e.sparse {
                Some(x) => Some(x.iter().map(|[_, l]| *l).sum::<u64>()),
                None => e.size,
            };
            if let (Some(held), Some(stored), EntryKind::File) = (held, stored, e.kind) {
                if held != stored {
                    r.problem(
                        repo.entries_display(&rec.entries),
                        format!(
                            "{}: its chunks hold {held} bytes, the record says {stored} (snapshot {})",
                            e.path,
                            &sid[..12]
                        ),
                    );
                }
            }
        }
    }
    r.unused_blobs = index.keys().filter(|b| !referenced.contains(b)).count() as u64;
    // Packs: every indexed pack present with a consistent footer.
    let on_disk = list_packs(repo, &mut r)?;
    check_packs(repo, &by_pack, &on_disk, &mut r);
    r.garbage_packs = on_disk.iter().filter(|p| !by_pack.contains_key(p)).count() as u64;
    // tmp/ leftovers.
    r.tmp_entries = repo.staging()?.len() as u64;
    if repair_tmp {
        r.tmp_removed = repo.clean_tmp()?;
    }
    Ok(r)
}

/// A blob as an index lists it: (id, offset, stored length, plaintext
/// length when compressed).
type IndexRow = (blake3::Hash, u64, u32, Option<u32>);

fn list_packs(repo: &Repo, r: &mut CheckReport) -> Result<HashSet<blake3::Hash>> {
    let mut out = HashSet::new();
    for name in repo.list(FileKind::Pack)? {
        match layout::id_of(FileKind::Pack, &name).and_then(|i| blake3::Hash::from_hex(i).ok()) {
            Some(id) => {
                out.insert(id);
            }
            None => r.problem(
                repo.display(&format!("{}/{name}", layout::PACKS)),
                "unexpected file in packs/",
            ),
        }
    }
    Ok(out)
}

fn check_packs(
    repo: &Repo,
    by_pack: &HashMap<blake3::Hash, Vec<IndexRow>>,
    on_disk: &HashSet<blake3::Hash>,
    r: &mut CheckReport,
) {
    let mut ids: Vec<_> = by_pack.keys().copied().collect();
    ids.sort_by_key(|h| *h.as_bytes());
    for id in ids {
        let hex = id.to_hex();
        let path = repo.file_path(FileKind::Pack, &hex);
        if !on_disk.contains(&id) {
            r.problem(path, "pack listed in the index is missing");
            continue;
        }
        // Every pack is checked: one that cannot be opened is a problem
        // named here, not the end of the check.
        let f = match repo.open_pack(&id) {
            Ok(f) => f,
            Err(e) => {
                r.problem(path, format!("cannot open: {e}"));
                continue;
            }
        };
        let len = match f.size() {
            Ok(s) => s,
            Err(e) => {
                r.problem(path, format!("stat: {e}"));
                continue;
            }
        };
        let footer = (|| {
            if len < TRAILER_LEN as u64 {
                return Err(format!("pack is {len} bytes, shorter than its trailer"));
            }
            let t = f
                .read_exact_at(len - TRAILER_LEN as u64, TRAILER_LEN)
                .map_err(|e| e.to_string())?;
            let (_, footer_offset, version) = parse_trailer(&t, len, repo.crypto().overhead())?;
            let tail = f
                .read_exact_at(footer_offset, (len - footer_offset) as usize)
                .map_err(|e| e.to_string())?;
            // The pack id is the BLAKE3 of footer and trailer.
            if blake3::hash(&tail) != id {
                return Err("pack footer and trailer do not match the pack's BLAKE3 id".into());
            }
            let blobs = parse_tail(&tail, footer_offset, id, version, repo.crypto())?;
            // The blobs tile the data area exactly, so every byte before the
            // footer is covered by some blob's id.
            let mut spans: Vec<(u64, u64)> = blobs
                .iter()
                .map(|(_, l)| (l.offset, u64::from(l.length)))
                .collect();
            spans.sort_unstable();
            let mut at = 0u64;
            for (off, l) in spans {
                if off != at {
                    return Err(format!("pack data has a gap or overlap at offset {at}"));
                }
                at = off + l;
            }
            if at != footer_offset {
                return Err(format!(
                    "pack blobs end at {at}, the footer starts at {footer_offset}"
                ));
            }
            Ok(blobs)
        })();
        let footer = match footer {
            Ok(x) => x,
            Err(e) => {
                r.problem(path, e);
                continue;
            }
        };
        let in_footer: HashMap<blake3::Hash, (u64, u32, Option<u32>)> = footer
            .iter()
            .map(|(b, l)| (*b, (l.offset, l.length, l.raw)))
            .collect();
        for (blob, off, length, raw) in &by_pack[&id] {
            if in_footer.get(blob) != Some(&(*off, *length, *raw)) {
                r.problem(
                    &path,
                    format!(
                        "blob {blob} at {off}+{length} (plaintext length {raw:?}) per the index is not so in the pack footer"
                    ),
                );
            }
        }
        if r.read_data {
            match f.read_exact_at(0, len as usize) {
                Err(e) => r.problem(&path, format!("read: {e}")),
                Ok(bytes) => {
                    r.bytes_read += len;
                    let mut scratch = Vec::new();
                    for (blob, loc) in &footer {
                        let s = &bytes
                            [loc.offset as usize..(loc.offset + u64::from(loc.length)) as usize];
                        let plain = match crate::repo::format::blob::decode(
                            repo.crypto(),
                            s,
                            loc.raw,
                            &mut scratch,
                        ) {
                            Ok(p) => p,
                            Err(e) => {
                                r.problem(
                                    &path,
                                    format!("blob {blob} at offset {}: {e}", loc.offset),
                                );
                                continue;
                            }
                        };
                        if repo.crypto().id(plain) != *blob {
                            r.problem(
                                &path,
                                format!(
                                    "blob {blob} at offset {} does not match its BLAKE3",
                                    loc.offset
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
}
