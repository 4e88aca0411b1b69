//! `snap prune`: removes what no snapshot references (`docs/FORMAT.md`,
//! "Prune").
//!
//! 1. Plan: the blobs the remaining snapshots reference (their entries
//!    files, each checked against its id), every index file (each checked),
//!    the packs on disk. A damaged record, entries or index file, or a
//!    referenced blob in no pack on disk, stops prune before anything is
//!    written: it cannot tell what is safe to delete.
//! 2. Packs with no used blob are deleted; packs whose unused bytes pass
//!    the threshold are repacked (highest unused share first, restic's
//!    order): their used blobs, each verified against its BLAKE3, go into
//!    new packs; packs no index lists (left by an interrupted backup) are
//!    deleted.
//! 3. Order: the new packs are durable and named ([`PackWriter`]), then
//!    the new index files (every kept and new pack) are durable, then the
//!    superseded index files are removed and a barrier makes that
//!    durable, then the packs and unreferenced entries files are removed
//!    and a last barrier follows. A crash at any instant leaves every
//!    remaining snapshot's blobs in an indexed pack on disk; what the
//!    crash left over is garbage the next prune removes.
//!
//! Side effects: writes and removes repository files. The caller holds the
//! exclusive lock, so no backup can deduplicate against an index that
//! prune is changing.

use std::collections::HashSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::commit::{put_index, PackWriter};
use super::format::index::IdMap;
use super::layout;
use super::pack::{PackBuilder, PackRow, PackVersion};
use super::storage::{FileKind, Syncs};
use super::{IndexFile, IndexPack, Repo, SnapshotRecord, PACK_TARGET};
use crate::error::{Error, Result};

/// How many unused bytes prune may leave (`--max-unused`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxUnused {
    /// A share of the used bytes, as restic counts it: `p` % unused of
    /// the total, so `used × p / (100 − p)` bytes.
    Percent(f64),
    /// A number of bytes.
    Bytes(u64),
    /// Any amount: only packs with no used blob are removed.
    Unlimited,
}

impl Default for MaxUnused {
    fn default() -> Self {
        MaxUnused::Percent(5.0)
    }
}

/// A size with an optional binary unit: `500`, `20K`, `100M`, `2G`,
/// `1T` (restic's `--max-repack-size` syntax; units are powers of 1024,
/// `B`/`iB` suffixes accepted).
///
/// # Errors
///
/// A message for anything else.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{s:?}: unknown unit {c:?} (give K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 500M or 2G)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

impl std::str::FromStr for MaxUnused {
    type Err = String;

    /// `5%` (0 to 100), a size (`200M`), or `unlimited`.
    fn from_str(s: &str) -> std::result::Result<MaxUnused, String> {
        if s == "unlimited" {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a percentage"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{s:?}: a percentage is between 0% and 100%"));
            }
            return Ok(if v >= 100.0 {
                MaxUnused::Unlimited
            } else {
                MaxUnused::Percent(v)
            });
        }
        parse_size(s).map(MaxUnused::Bytes)
    }
}

impl MaxUnused {
    /// The unused bytes allowed beside `used` used bytes.
    pub fn allowed(&self, used: u64) -> u64 {
        match *self {
            MaxUnused::Percent(p) => (used as f64 * p / (100.0 - p)) as u64,
            MaxUnused::Bytes(b) => b,
            MaxUnused::Unlimited => u64::MAX,
        }
    }
}

/// What to prune.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// `--max-unused`.
    pub max_unused: MaxUnused,
    /// `--max-repack`: most pack bytes to repack, in bytes.
    pub max_repack: Option<u64>,
    /// `--dry-run`: plan and report, change nothing.
    pub dry_run: bool,
}

/// What prune did (or, with `dry_run`, would do); the body of the
/// `prune.result` fact. Sizes in bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PruneReport {
    /// True when nothing was changed (`--dry-run`).
    pub dry_run: bool,
    /// Snapshots whose blobs were kept.
    pub snapshots: u64,
    /// Packs the index listed (and found on disk) before pruning.
    pub packs_before: u64,
    /// Indexed packs removed because no blob in them is used.
    pub packs_deleted: u64,
    /// Packs whose used blobs were copied into new packs, then removed.
    pub packs_repacked: u64,
    /// New packs written by repacking.
    pub packs_written: u64,
    /// Packs on disk no index listed (left by an interrupted run), removed.
    pub unindexed_packs_removed: u64,
    /// Packs an index listed that were not on disk (their listing dropped;
    /// none held a referenced blob).
    pub missing_packs_dropped: u64,
    /// Distinct blobs the snapshots reference.
    pub blobs_used: u64,
    /// Bytes of those blobs.
    pub bytes_used: u64,
    /// Blobs stored (indexed, on disk) that no snapshot references, before.
    pub blobs_unused: u64,
    /// Bytes of those blobs, before.
    pub bytes_unused: u64,
    /// Blobs removed (deleted or left out when repacking).
    pub blobs_removed: u64,
    /// Blobs copied into new packs.
    pub blobs_repacked: u64,
    /// Unused blob bytes left in kept packs (within `--max-unused`).
    pub bytes_unused_after: u64,
    /// Index files removed (superseded by the new ones).
    pub index_files_removed: u64,
    /// Index files written.
    pub index_files_written: u64,
    /// Entries files no snapshot references, removed.
    pub entries_removed: u64,
    /// Bytes of the files removed (packs, index and entries files).
    pub bytes_removed: u64,
    /// Bytes written (new packs and index files).
    pub bytes_written: u64,
    /// `bytes_removed − bytes_written`: how much smaller the repository is.
    pub bytes_freed: u64,
    /// Wall time, in milliseconds.
    pub duration_ms: u64,
}

/// One indexed pack, as prune sees it.
struct PackInfo {
    id: blake3::Hash,
    /// Its blobs as the index lists them: (id, offset, length).
    rows: Vec<PackRow>,
    /// Pack file size, from its rows (blob data, footer, trailer).
    size: u64,
    /// Bytes of the blobs used from this pack.
    used: u64,
}

/// The blob ids one snapshot's entries reference: its files' chunks, and
/// (format 3) the blobs the entries stream itself is stored in.
fn referenced(repo: &Repo, entries: &super::EntriesRef, used: &mut IdMap<()>) -> Result<()> {
    for hex in entries.chunks.iter().flatten() {
        let id = blake3::Hash::from_hex(hex).map_err(|_| Error::Integrity {
            path: repo.entries_display(entries),
            detail: format!("entries blob id {hex:?} is not BLAKE3 hex"),
        })?;
        used.insert(id, ());
    }
    #[derive(Deserialize)]
    struct Chunks {
        #[serde(default)]
        chunks: Option<Vec<String>>,
    }
    let mut reader = repo.entries_reader(entries, 8 << 20)?;
    while let Some((piece, first)) = reader.next_piece()? {
        let parts = super::split_lines(&piece, crate::par::cores());
        let path = reader.path().to_owned();
        let found = crate::par::map(&parts, |&(part, f)| {
            let mut ids = Vec::new();
            for (n, line) in super::lines(part).enumerate() {
                let bad = |detail: String| Error::Integrity {
                    path: format!("{path}:{}", first + f - 1 + n),
                    detail,
                };
                let c: Chunks = serde_json::from_slice(line)
                    .map_err(|e| bad(format!("malformed entry record: {e}")))?;
                for hex in c.chunks.into_iter().flatten() {
                    ids.push(
                        blake3::Hash::from_hex(&hex)
                            .map_err(|_| bad(format!("chunk id {hex:?} is not BLAKE3 hex")))?,
                    );
                }
            }
            Ok::<_, Error>(ids)
        });
        for ids in found {
            for b in ids? {
                used.insert(b, ());
            }
        }
    }
    Ok(())
}

/// Prunes `repo`, keeping every blob `snapshots` reference. The caller
/// holds the exclusive lock and has made sure no snapshot record is
/// damaged (a damaged record's blobs cannot be known).
///
/// # Errors
///
/// [`Error::Integrity`] (before anything is changed) for a damaged entries
/// or index file, a referenced blob in no pack on disk, or a blob whose
/// bytes do not match its id when repacking; I/O errors with the path;
/// [`Error::Interrupted`] on a signal (what is written so far is garbage
/// the next prune removes, nothing is lost).
pub fn run(
    repo: &Repo,
    snapshots: &[(String, SnapshotRecord)],
    opts: &PruneOptions,
) -> Result<PruneReport> {
    let started = std::time::Instant::now();
    let mut r = PruneReport {
        dry_run: opts.dry_run,
        snapshots: snapshots.len() as u64,
        ..PruneReport::default()
    };
    if !opts.dry_run {
        repo.clean_tmp()?;
    }
    // 1. The used blobs.
    let mut used: IdMap<()> = IdMap::default();
    let mut entries_ids: HashSet<&str> = HashSet::new();
    for (_, rec) in snapshots {
        if entries_ids.insert(rec.entries.id.as_str()) {
            crate::interrupt::check()?;
            referenced(repo, &rec.entries, &mut used)?;
        }
    }
    // The index, pack by pack.
    let on_disk: HashSet<blake3::Hash> = repo
        .list(FileKind::Pack)?
        .iter()
        .filter_map(|n| layout::id_of(FileKind::Pack, n))
        .filter_map(|i| blake3::Hash::from_hex(i).ok())
        .collect();
    let index_ids: Vec<String> = repo
        .list(FileKind::Index)?
        .iter()
        .filter_map(|n| layout::id_of(FileKind::Index, n).map(str::to_owned))
        .collect();
    let mut packs: Vec<PackInfo> = Vec::new();
    let mut pack_no: IdMap<usize> = IdMap::default();
    let mut listed_twice = false;
    for id in &index_ids {
        crate::interrupt::check()?;
        let path = repo.file_path(FileKind::Index, id);
        let bytes = repo.read_index_file(id)?;
        let file: IndexFile = serde_json::from_slice(&bytes).map_err(|e| Error::Integrity {
            path: path.clone(),
            detail: format!("malformed index: {e}"),
        })?;
        drop(bytes);
        for p in file.packs {
            let hex = |s: &str| {
                blake3::Hash::from_hex(s).map_err(|_| Error::Integrity {
                    path: path.clone(),
                    detail: format!("{s:?} is not a BLAKE3-256 hex id"),
                })
            };
            let pid = hex(&p.id)?;
            if pack_no.contains_key(&pid) {
                listed_twice = true;
                continue;
            }
            let mut rows = Vec::with_capacity(p.blobs.len());
            for b in &p.blobs {
                rows.push(PackRow {
                    id: hex(&b.id)?,
                    offset: b.offset,
                    length: b.length,
                    raw: b.raw_length,
                });
            }
            let data_end = rows
                .iter()
                .map(|r| r.offset + u64::from(r.length))
                .max()
                .unwrap_or(0);
            let size = data_end
                + (rows.len() * PackVersion::of_format(repo.config.version).row_len()
                    + super::pack::TRAILER_LEN) as u64;
            pack_no.insert(pid, packs.len());
            packs.push(PackInfo {
                id: pid,
                rows,
                size,
                used: 0,
            });
        }
    }
    // Where each used blob is taken from (its home): of the packs on disk
    // listing it, the one with the smallest id (a copy in another pack
    // counts as unused). The rule does not depend on the order of the
    // index files, so a prune after one killed between writing the new
    // index and removing the old ones picks the same homes again.
    let mut home: IdMap<usize> = IdMap::default();
    for (n, p) in packs.iter().enumerate() {
        if !on_disk.contains(&p.id) {
            continue;
        }
        for &PackRow { id: b, .. } in &p.rows {
            if used.contains_key(&b) {
                home.entry(b)
                    .and_modify(|h| {
                        if p.id.as_bytes() < packs[*h].id.as_bytes() {
                            *h = n;
                        }
                    })
                    .or_insert(n);
            }
        }
    }
    if let Some(b) = used.keys().find(|b| !home.contains_key(*b)) {
        return Err(Error::Integrity {
            path: repo.display(layout::INDEX),
            detail: format!(
                "blob {b} is referenced by a snapshot but is in no indexed pack on disk; prune removes nothing (see `snap check`)"
            ),
        });
    }
    r.blobs_used = used.len() as u64;
    for (n, p) in packs.iter_mut().enumerate() {
        if !on_disk.contains(&p.id) {
            continue;
        }
        for &PackRow {
            id: b, length: l, ..
        } in &p.rows
        {
            if home.get(&b) == Some(&n) {
                p.used += u64::from(l);
            } else {
                r.blobs_unused += 1;
                r.bytes_unused += u64::from(l);
            }
        }
        r.bytes_used += p.used;
    }
    drop(used);
    // 2. The plan.
    let data = |p: &PackInfo| p.rows.iter().map(|r| u64::from(r.length)).sum::<u64>();
    let mut delete: Vec<usize> = Vec::new();
    let mut candidates: Vec<usize> = Vec::new();
    let mut unused_left = 0u64;
    for (n, p) in packs.iter().enumerate() {
        if !on_disk.contains(&p.id) {
            r.missing_packs_dropped += 1;
            continue;
        }
        r.packs_before += 1;
        let unused = data(p) - p.used;
        if p.used == 0 {
            delete.push(n);
        } else if unused > 0 {
            unused_left += unused;
            candidates.push(n);
        }
    }
    // Highest unused share first.
    candidates.sort_by(|&a, &b| {
        let (pa, pb) = (&packs[a], &packs[b]);
        let ua = u128::from(data(pa) - pa.used) * u128::from(data(pb).max(1));
        let ub = u128::from(data(pb) - pb.used) * u128::from(data(pa).max(1));
        ub.cmp(&ua)
            .then_with(|| pa.id.as_bytes().cmp(pb.id.as_bytes()))
    });
    let allowed = opts.max_unused.allowed(r.bytes_used);
    let mut repack: Vec<usize> = Vec::new();
    let mut repack_bytes = 0u64;
    for n in candidates {
        if unused_left <= allowed {
            break;
        }
        let p = &packs[n];
        if opts
            .max_repack
            .is_some_and(|m| repack_bytes.saturating_add(p.size) > m)
        {
            continue;
        }
        repack_bytes += p.size;
        unused_left -= data(p) - p.used;
        repack.push(n);
    }
    // A used blob whose home is repacked but which a kept pack also holds
    // is not copied again: the kept copy (the smallest pack id) becomes
    // its home. New packs then hold no blob a kept pack holds, and the
    // next prune sees the same homes.
    let gone: HashSet<usize> = delete.iter().chain(&repack).copied().collect();
    let mut rehome: IdMap<(usize, u32)> = IdMap::default();
    for (n, p) in packs.iter().enumerate() {
        if gone.contains(&n) || !on_disk.contains(&p.id) {
            continue;
        }
        for &PackRow {
            id: b, length: l, ..
        } in &p.rows
        {
            if home.get(&b).is_some_and(|h| gone.contains(h)) {
                rehome
                    .entry(b)
                    .and_modify(|h| {
                        if p.id.as_bytes() < packs[h.0].id.as_bytes() {
                            *h = (n, l);
                        }
                    })
                    .or_insert((n, l));
            }
        }
    }
    for (b, (n, l)) in rehome {
        unused_left = unused_left.saturating_sub(u64::from(l));
        home.insert(b, n);
    }
    r.bytes_unused_after = unused_left;
    r.packs_deleted = delete.len() as u64;
    r.packs_repacked = repack.len() as u64;
    for &n in delete.iter().chain(&repack) {
        let p = &packs[n];
        r.blobs_removed += p
            .rows
            .iter()
            .filter(|r| home.get(&r.id) != Some(&n))
            .count() as u64;
        r.bytes_removed += p.size;
    }
    let indexed: HashSet<blake3::Hash> = packs.iter().map(|p| p.id).collect();
    let unindexed: Vec<blake3::Hash> = on_disk
        .iter()
        .filter(|p| !indexed.contains(*p))
        .copied()
        .collect();
    r.unindexed_packs_removed = unindexed.len() as u64;
    let mut doomed: Vec<blake3::Hash> = unindexed.clone();
    doomed.extend(delete.iter().chain(&repack).map(|&n| packs[n].id));
    let referenced_entries: HashSet<&str> = entries_ids;
    let stray_entries: Vec<String> = repo
        .list(FileKind::Entries)?
        .iter()
        .filter_map(|n| layout::id_of(FileKind::Entries, n))
        .filter(|id| !referenced_entries.contains(id))
        .map(str::to_owned)
        .collect();
    r.entries_removed = stray_entries.len() as u64;
    let rewrite_index =
        !delete.is_empty() || !repack.is_empty() || r.missing_packs_dropped > 0 || listed_twice;
    if opts.dry_run {
        r.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(r);
    }
    // 3a. Repack: the used blobs of each chosen pack, verified, into new
    // packs, durable and named before anything refers to them.
    let mut writer = PackWriter::new(repo, true);
    let mut new_packs: Vec<IndexPack> = Vec::new();
    let mut builder: PackBuilder<Vec<u8>> = PackBuilder::default();
    let mut scratch = Vec::new();
    for &n in &repack {
        crate::interrupt::check()?;
        let p = &packs[n];
        let path = repo.file_path(FileKind::Pack, &p.id.to_hex());
        let f = repo.open_pack(&p.id)?;
        let mut rows: Vec<_> = p
            .rows
            .iter()
            .filter(|r| home.get(&r.id) == Some(&n))
            .collect();
        rows.sort_by_key(|r| r.offset);
        for &&PackRow {
            id: b,
            offset: off,
            length: len,
            raw,
        } in &rows
        {
            let bytes = f
                .read_exact_at(off, len as usize)
                .map_err(|e| Error::io("read", &path, e))?;
            // Verified on its plaintext, copied in its stored form.
            let plain = super::format::blob::decode(repo.crypto(), &bytes, raw, &mut scratch).map_err(|e| {
                Error::Integrity {
                    path: path.clone(),
                    detail: format!(
                        "blob {b} at offset {off}: {e}; prune stopped before removing anything (see `snap check --read-data`)"
                    ),
                }
            })?;
            if repo.crypto().id(plain) != b {
                return Err(Error::Integrity {
                    path: path.clone(),
                    detail: format!(
                        "blob {b} at offset {off} does not match its BLAKE3; prune stopped before removing anything (see `snap check --read-data`)"
                    ),
                });
            }
            r.blobs_repacked += 1;
            builder.add_stored(
                b,
                [super::pack::Part {
                    range: 0..bytes.len(),
                    buf: bytes,
                }],
                raw,
            );
            if builder.data_len() >= PACK_TARGET {
                write_pack(std::mem::take(&mut builder), &mut writer, &mut new_packs)?;
            }
        }
    }
    if !builder.is_empty() {
        write_pack(builder, &mut writer, &mut new_packs)?;
    }
    let (pack_bytes, mut syncs) = writer.finish()?;
    r.packs_written = new_packs.len() as u64;
    r.bytes_written += pack_bytes;
    let new_ids: HashSet<blake3::Hash> = new_packs
        .iter()
        .filter_map(|p| blake3::Hash::from_hex(&p.id).ok())
        .collect();
    // 3b. The new index: every kept pack as listed, and the new packs.
    if rewrite_index {
        let mut all: Vec<IndexPack> = packs
            .iter()
            .enumerate()
            .filter(|(n, p)| !gone.contains(n) && on_disk.contains(&p.id))
            .map(|(_, p)| IndexPack::of_rows(p.id.to_hex().to_string(), &p.rows))
            .collect();
        // A new pack can have the id of one listed already: an earlier,
        // killed prune of the same plan wrote it and indexed it. It is
        // listed once: from the kept listing when this plan keeps it,
        // else as the new pack (this plan may have planned the listed copy
        // away, its blobs homed elsewhere, and then written it again; left
        // out of both lists, its blobs would be in no index).
        let kept: HashSet<&str> = all.iter().map(|p| p.id.as_str()).collect();
        let fresh: Vec<IndexPack> = new_packs
            .into_iter()
            .filter(|p| !kept.contains(p.id.as_str()))
            .collect();
        all.extend(fresh);
        drop(packs);
        let mut written: HashSet<String> = HashSet::new();
        for group in super::commit::index_groups(all) {
            crate::interrupt::check()?;
            let bytes = serde_json::to_vec(&IndexFile { v: 1, packs: group })
                .map_err(|e| Error::serialise("index", e))?;
            let (id, added) = put_index(repo, &bytes, &mut syncs)?;
            r.bytes_written += added;
            r.index_files_written += u64::from(added > 0);
            written.insert(id);
        }
        barrier(repo, &mut syncs)?;
        // 3c. The superseded index files.
        for id in index_ids.iter().filter(|i| !written.contains(*i)) {
            r.bytes_removed += remove(repo, FileKind::Index, id)?;
            r.index_files_removed += 1;
        }
        barrier(repo, &mut syncs)?;
    } else if !new_packs.is_empty() {
        return Err(Error::Internal(
            "prune wrote packs but planned no index".into(),
        ));
    }
    // 3d. Packs and entries files nothing refers to.
    for id in doomed.iter().filter(|i| !new_ids.contains(*i)) {
        crate::interrupt::check()?;
        let hex = id.to_hex().to_string();
        let removed = remove(repo, FileKind::Pack, &hex)?;
        if unindexed.contains(id) {
            r.bytes_removed += removed;
        }
    }
    for id in &stray_entries {
        r.bytes_removed += remove(repo, FileKind::Entries, id)?;
    }
    barrier(repo, &mut syncs)?;
    r.bytes_freed = r.bytes_removed.saturating_sub(r.bytes_written);
    r.duration_ms = started.elapsed().as_millis() as u64;
    Ok(r)
}

/// Finishes pack `b` and puts it through `writer`; its index listing goes
/// to `new_packs`.
fn write_pack(
    b: PackBuilder<Vec<u8>>,
    writer: &mut PackWriter,
    new_packs: &mut Vec<IndexPack>,
) -> Result<()> {
    let fin = b
        .finish(
            PackVersion::of_format(writer.format_version()),
            writer.crypto(),
        )
        .map_err(|e| Error::io("seal", "a pack footer", e))?;
    let mut refs: Vec<&[u8]> = fin.parts.iter().map(AsRef::as_ref).collect();
    refs.push(&fin.tail);
    let hex = fin.id.to_hex().to_string();
    writer.add(&hex, &refs)?;
    new_packs.push(IndexPack::of_rows(hex, &fin.blobs));
    Ok(())
}

fn barrier(repo: &Repo, syncs: &mut Syncs) -> Result<()> {
    repo.store()
        .barrier(syncs)
        .map_err(|e| Error::io("syncfs", repo.path.display(), e))
}

/// Removes `kind`/`id`; returns its size (0 when it was gone already).
fn remove(repo: &Repo, kind: FileKind, id: &str) -> Result<u64> {
    let path = repo.file_path(kind, id);
    let size = match repo.store().open(kind, id) {
        Ok(f) => f.size().unwrap_or(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(_) => 0,
    };
    match repo.store().remove(kind, id) {
        Ok(()) => Ok(size),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_as_restic_writes_them() {
        assert_eq!("5%".parse::<MaxUnused>(), Ok(MaxUnused::Percent(5.0)));
        assert_eq!("100%".parse::<MaxUnused>(), Ok(MaxUnused::Unlimited));
        assert_eq!("unlimited".parse::<MaxUnused>(), Ok(MaxUnused::Unlimited));
        assert_eq!("2G".parse::<MaxUnused>(), Ok(MaxUnused::Bytes(2 << 30)));
        assert!("120%".parse::<MaxUnused>().is_err());
        assert!("x".parse::<MaxUnused>().is_err());
        assert_eq!(parse_size("500"), Ok(500));
        assert_eq!(parse_size("20KiB"), Ok(20 << 10));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert!(parse_size("3Q").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(MaxUnused::Percent(5.0).allowed(950), 50);
        assert_eq!(MaxUnused::Percent(0.0).allowed(950), 0);
    }
}
