//! `snap copy`: snapshots of one repository written into another (restic's
//! `copy`; `docs/FORMAT.md`, "Copying snapshots"), deduplicating against
//! what the destination stores.
//!
//! Each blob a snapshot's files use is read from the source, verified
//! against its id there, and stored in the destination unless the
//! destination's index has it. Where the two repositories make ids the same
//! way (neither encrypted: unkeyed BLAKE3) the ids carry over and a blob the
//! destination has is not read at all; otherwise each blob gets the
//! destination's keyed id and each file's whole-content hash is made again.
//! The entries are written as a new entries stream, then the index, then
//! the record — the destination's commit protocol, the record last.
//!
//! Side effects: reads the source; writes packs, index files and a
//! snapshot record into the destination.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::policy::Compression;
use crate::repo::format::index::IndexFile;
use crate::repo::storage::{FileKind, Ranged};
use crate::repo::{commit, Repo, SnapshotRecord, Syncs};

use super::entries::{EntriesOut, Item, MetaOut};

/// What one copied snapshot came to.
#[derive(Debug, Clone)]
pub struct Copied {
    /// The new snapshot's id in the destination.
    pub snapshot_id: String,
    /// Blobs stored in the destination (new there).
    pub blobs_added: u64,
    /// Bytes added to the destination (packs, index files, record).
    pub bytes_added: u64,
}

/// Bytes read at once from a pack: the blob asked and what follows it,
/// which the next blobs of the same file usually are.
const WINDOW: u64 = 2 << 20;
/// Packs kept open, each with its window.
const OPEN_PACKS: usize = 8;

/// An open pack and its window: the pack's id, the file, where the window
/// starts and its bytes.
type OpenPack = (blake3::Hash, Box<dyn Ranged>, u64, Vec<u8>);

/// Reads verified blob plaintext from a repository, keeping a few packs
/// open, each with a window of [`WINDOW`] bytes.
struct BlobReader<'r> {
    repo: &'r Repo,
    packs: Vec<OpenPack>,
    scratch: Vec<u8>,
}

impl BlobReader<'_> {
    fn read(&mut self, id: &blake3::Hash) -> Result<Vec<u8>> {
        let index = self.repo.index()?;
        let loc = index.get(id).ok_or_else(|| Error::Integrity {
            path: self.repo.display(crate::repo::layout::INDEX),
            detail: format!("blob {id} is in no index file"),
        })?;
        let path = self.repo.file_path(FileKind::Pack, &loc.pack.to_hex());
        let len = u64::from(loc.length);
        let n = match self.packs.iter().position(|(p, ..)| *p == loc.pack) {
            Some(n) => n,
            None => {
                if self.packs.len() >= OPEN_PACKS {
                    self.packs.remove(0);
                }
                let f = self.repo.open_pack(&loc.pack)?;
                self.packs.push((loc.pack, f, 0, Vec::new()));
                self.packs.len() - 1
            }
        };
        let (_, f, start, bytes) = &mut self.packs[n];
        if !(loc.offset >= *start && loc.offset + len <= *start + bytes.len() as u64) {
            let mut b = f
                .read_vec(loc.offset, len.max(WINDOW) as usize)
                .map_err(|e| crate::repo::read_error(&path, e))?;
            if (b.len() as u64) < len {
                b = f
                    .read_exact_at(loc.offset, len as usize)
                    .map_err(|e| crate::repo::read_error(&path, e))?;
            }
            (*start, *bytes) = (loc.offset, b);
        }
        let at = (loc.offset - *start) as usize;
        let stored = &bytes[at..at + len as usize];
        let plain = crate::repo::format::blob::verified(
            self.repo.crypto(),
            stored,
            loc.raw,
            id,
            &mut self.scratch,
        )
        .map_err(|detail| Error::Integrity {
            path: path.clone(),
            detail: format!("blob {id} at offset {}: {detail}", loc.offset),
        })?;
        Ok(plain.to_vec())
    }
}

/// Whether `a` and `b` give the same content the same id (neither is
/// encrypted: both use unkeyed BLAKE3).
pub fn same_ids(a: &Repo, b: &Repo) -> bool {
    !a.crypto().is_encrypted() && !b.crypto().is_encrypted()
}

/// Copies snapshot `id` (`rec`) of `src` into `dst`, putting durably when
/// `durable`. The new record keeps the source record's time, host, source,
/// tier, tags, policy and counts; it has no parent and names `id` as its
/// `original`.
///
/// # Errors
///
/// [`Error::Usage`] for a destination in repository format 2 (migrate it
/// first); [`Error::Integrity`] for a source blob that is missing or does
/// not verify (nothing is committed); read and write errors; an error
/// after the record has its name is [`Error::AfterCommit`].
pub fn copy_snapshot(
    src: &Repo,
    dst: &Repo,
    id: &str,
    rec: &SnapshotRecord,
    durable: bool,
) -> Result<Copied> {
    if dst.config.version < 3 {
        return Err(Error::Usage(format!(
            "{} is a format-{} repository: run `snap migrate` on it before copying into it",
            dst.path.display(),
            dst.config.version
        )));
    }
    let same = same_ids(src, dst);
    let mut reader = BlobReader {
        repo: src,
        packs: Vec::new(),
        scratch: Vec::new(),
    };
    let mut data = commit::BlobSink::new(Compression::Auto, durable, "a data blob")?;
    let mut out = EntriesOut::new(false, Some(MetaOut::new(Compression::Auto, durable)?));
    let records = src.read_entries(&rec.entries)?;
    let parse = |path: &str, c: &str| {
        blake3::Hash::from_hex(c).map_err(|e| Error::Integrity {
            path: src.entries_display(&rec.entries),
            detail: format!("{path}: chunk id {c:?}: {e}"),
        })
    };
    // Pass 1, in pack order (one sequential sweep per pack, whatever the
    // order of the files): every blob the destination needs, stored, its
    // destination id noted. With ids that carry over, a blob the
    // destination has is not read.
    let index = src.index()?;
    let mut need: Vec<(blake3::Hash, u64, blake3::Hash)> = Vec::new();
    let mut seen: HashSet<blake3::Hash> = HashSet::new();
    for r in &records {
        for c in r.chunks.iter().flatten() {
            let h = parse(&r.path, c)?;
            if !seen.insert(h) || (same && dst.index()?.contains(&h)) {
                continue;
            }
            let loc = index.get(&h).ok_or_else(|| Error::Integrity {
                path: src.display(crate::repo::layout::INDEX),
                detail: format!("{}: blob {h} is in no index file", r.path),
            })?;
            need.push((loc.pack, loc.offset, h));
        }
    }
    need.sort_by(|a, b| (a.0.as_bytes(), a.1).cmp(&(b.0.as_bytes(), b.1)));
    let mut ids: HashMap<blake3::Hash, blake3::Hash> = HashMap::new();
    let mut blobs_added = 0u64;
    for (_, _, h) in need {
        crate::interrupt::check()?;
        let plain = reader.read(&h)?;
        let d = if same { h } else { dst.crypto().id(&plain) };
        blobs_added += u64::from(data.store(dst, d, plain)?);
        ids.insert(h, d);
    }
    // Pass 2, in entries order: the records with the destination's ids. A
    // keyed destination needs each file's whole-content hash made again: a
    // one-chunk file's is its chunk's id; a longer file's chunks are read
    // again (they lie together, so the windows serve them).
    for mut r in records {
        crate::interrupt::check()?;
        let path = r.path.clone();
        if let Some(chunks) = r.chunks.as_mut() {
            let mut mapped = Vec::with_capacity(chunks.len());
            for c in chunks.iter() {
                let h = parse(&path, c)?;
                mapped.push(ids.get(&h).copied().unwrap_or(h));
            }
            if !same && !chunks.is_empty() {
                r.hash = Some(if mapped.len() == 1 {
                    mapped[0].to_hex().to_string()
                } else {
                    let mut w = dst.crypto().hasher();
                    for c in chunks.iter() {
                        w.update(&reader.read(&parse(&path, c)?)?);
                    }
                    w.finalize().to_hex().to_string()
                });
            }
            *chunks = mapped.iter().map(|d| d.to_hex().to_string()).collect();
        }
        out.push(Item::Rec(Box::new(r)), None, dst)?;
    }
    let mut syncs = Syncs {
        enabled: durable,
        ..Syncs::default()
    };
    let (mut packs, mut bytes_added) = data.finish(dst, &mut syncs)?;
    let entries = out.finish(None, dst, &mut syncs)?;
    bytes_added += entries.added;
    packs.extend(entries.packs);
    for group in commit::index_groups(packs) {
        let bytes = serde_json::to_vec(&IndexFile { v: 1, packs: group })
            .map_err(|e| Error::serialise("index", e))?;
        bytes_added += commit::put_index(dst, &bytes, &mut syncs)?.1;
    }
    let mut record = rec.clone();
    record.entries = entries.entries;
    record.parent = None;
    record.original = Some(rec.original.clone().unwrap_or_else(|| id.to_owned()));
    record.durable = durable;
    let plain = serde_json::to_vec_pretty(&record).map_err(|e| Error::serialise("snapshot", e))?;
    let (snapshot_id, bytes) = commit::seal_snapshot(dst, plain)?;
    crate::interrupt::check()?;
    commit::commit_snapshot(dst, &snapshot_id, &bytes, &mut syncs)?;
    bytes_added += bytes.len() as u64;
    Ok(Copied {
        snapshot_id,
        blobs_added,
        bytes_added,
    })
}
