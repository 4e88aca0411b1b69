//! The new snapshot's entries, written as the walk goes: records
//! serialised, or copied from the parent's entries where they are
//! unchanged, into a staged file the commit puts in place (format 2), or
//! cut into blobs at record boundaries and stored in packs (format 3,
//! [`MetaOut`]).
//!
//! Side effects: writes a staged file, or packs, through the repository's
//! backend.

use crate::error::{Error, Result};
use crate::policy::Compression;
use crate::repo::sidecar::{EntryKind, EntryRecord};
use crate::repo::storage::Staged;
use crate::repo::{commit, EntriesRef, IndexPack, Repo, Syncs};

use super::parent::Parent;

/// One line of the new entries file.
pub(super) enum Item {
    /// A record built by this backup.
    Rec(Box<EntryRecord>),
    /// Records of the parent's entries file, copied as they are (a reused
    /// block).
    Reused(Reused),
}

/// A reused block, or records of unchanged files: `len` bytes at `offset`
/// in the parent's entries file, holding `lines` records.
pub(super) struct Reused {
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) lines: u64,
}

/// The new entries file, written as the walk goes: items leave the
/// walker's window in order, are serialised (or copied from the parent's
/// file) into a buffer, hashed, and written to a file in `tmp/` that the
/// commit renames to `entries/xx/<id>.jsonl`.
///
/// While every item reproduces the parent's entries file (copied blocks,
/// directory records equal to the parent's), nothing is written or hashed:
/// the output so far is the parent's first bytes. At the first difference
/// those bytes are copied in; when there is none, the snapshot names the
/// parent's entries file.
pub(super) struct EntriesOut {
    /// `Some(n)` while the output is the parent's first `n` bytes.
    pub(super) same: Option<u64>,
    pub(super) tmp: Option<Box<dyn Staged>>,
    pub(super) buf: Vec<u8>,
    pub(super) hasher: blake3::Hasher,
    /// Records so far.
    pub(super) count: u64,
    pub(super) scratch: Vec<u8>,
    /// Format 3: where the bytes go instead of `tmp`.
    pub(super) meta: Option<MetaOut>,
}

/// The entries a backup wrote: the record's reference, the bytes added,
/// and (format 3) the packs of entries blobs, for the index.
pub(super) struct EntriesDone {
    pub(super) entries: EntriesRef,
    pub(super) added: u64,
    pub(super) packs: Vec<IndexPack>,
}

/// Bytes gathered before a write of the new entries file.
pub(super) const ENTRIES_WRITE: usize = 1 << 20;

impl EntriesOut {
    pub(super) fn new(parent: bool, meta: Option<MetaOut>) -> Self {
        Self {
            same: parent.then_some(0),
            tmp: None,
            buf: Vec::with_capacity(ENTRIES_WRITE + (64 << 10)),
            hasher: blake3::Hasher::new(),
            count: 0,
            scratch: Vec::new(),
            meta,
        }
    }

    /// Appends one item.
    ///
    /// # Errors
    ///
    /// Repository I/O errors; a record that cannot be serialised.
    pub(super) fn push(&mut self, item: Item, parent: Option<&Parent>, repo: &Repo) -> Result<()> {
        self.count += match &item {
            Item::Rec(_) => 1,
            Item::Reused(c) => c.lines,
        };
        if let (Some(off), Some(p)) = (self.same, parent) {
            match &item {
                Item::Reused(Reused { offset, len, .. }) if *offset == off => {
                    self.same = Some(off + len);
                    return Ok(());
                }
                Item::Rec(r) if r.kind == EntryKind::Dir => {
                    self.scratch.clear();
                    serde_json::to_writer(&mut self.scratch, &**r).map_err(ser_err)?;
                    self.scratch.push(b'\n');
                    let same = r
                        .rel_path()
                        .ok()
                        .and_then(|rel| p.dirs.get(&rel.to_bytes()))
                        .is_some_and(|d| {
                            d.line.0 == off && blake3::hash(&self.scratch) == d.line_hash
                        });
                    if same {
                        self.same = Some(off + self.scratch.len() as u64);
                        return Ok(());
                    }
                }
                _ => {}
            }
            self.diverge(p, repo)?;
        }
        match item {
            Item::Rec(r) => {
                serde_json::to_writer(&mut self.buf, &*r).map_err(ser_err)?;
                self.buf.push(b'\n');
            }
            Item::Reused(Reused { offset, len, .. }) => {
                let p = parent.expect("a copied block has a parent");
                self.copy(p, offset, len, repo)?;
            }
        }
        if self.buf.len() >= ENTRIES_WRITE {
            self.write(repo)?;
        }
        Ok(())
    }

    /// Bytes `offset..offset + len` of the parent's file, appended.
    pub(super) fn copy(&mut self, p: &Parent, offset: u64, len: u64, repo: &Repo) -> Result<()> {
        let (mut at, end) = (offset, offset + len);
        while at < end {
            let room = ENTRIES_WRITE.saturating_sub(self.buf.len()).max(64 << 10);
            let want = room.min(usize::try_from(end - at).unwrap_or(usize::MAX));
            let from = self.buf.len();
            self.buf.resize(from + want, 0);
            p.read_into(&mut self.buf[from..], at)?;
            at += want as u64;
            if self.buf.len() >= ENTRIES_WRITE {
                self.write(repo)?;
            }
        }
        Ok(())
    }

    /// The output stops being the parent's: its first bytes go in.
    pub(super) fn diverge(&mut self, p: &Parent, repo: &Repo) -> Result<()> {
        if let Some(n) = self.same.take() {
            self.copy(p, 0, n, repo)?;
        }
        Ok(())
    }

    /// Hashes and writes what the buffer holds.
    pub(super) fn write(&mut self, repo: &Repo) -> Result<()> {
        if let Some(m) = self.meta.as_mut() {
            self.hasher.update(&self.buf);
            m.feed(&self.buf, repo)?;
            self.buf.clear();
            return Ok(());
        }
        if self.tmp.is_none() {
            self.tmp = Some(commit::stage_entries(repo)?);
        }
        let tmp = self.tmp.as_mut().expect("created above");
        self.hasher.update(&self.buf);
        tmp.append(&[&self.buf])
            .map_err(|e| Error::io("write", repo.display(crate::repo::layout::STAGING), e))?;
        self.buf.clear();
        Ok(())
    }

    /// Puts the entries file in place: its id and the bytes added.
    ///
    /// # Errors
    ///
    /// Repository I/O errors.
    pub(super) fn finish(
        mut self,
        parent: Option<&Parent>,
        repo: &Repo,
        syncs: &mut Syncs,
    ) -> Result<EntriesDone> {
        if let (Some(n), Some(p)) = (self.same, parent) {
            if n == p.size {
                return Ok(EntriesDone {
                    entries: EntriesRef {
                        count: self.count,
                        ..p.entries.clone()
                    },
                    added: 0,
                    packs: Vec::new(),
                });
            }
            self.diverge(p, repo)?;
        }
        self.write(repo)?;
        let id = self.hasher.finalize().to_hex().to_string();
        if let Some(m) = self.meta.take() {
            let (chunks, packs, added) = m.finish(repo, syncs)?;
            return Ok(EntriesDone {
                entries: EntriesRef {
                    id,
                    count: self.count,
                    chunks: Some(chunks),
                },
                added,
                packs,
            });
        }
        // An empty stream (no record) still gets its file.
        if self.tmp.is_none() {
            self.tmp = Some(commit::stage_entries(repo)?);
        }
        let tmp = self.tmp.take().expect("staged above");
        let added = commit::put_entries(repo, tmp, &id, syncs)?;
        Ok(EntriesDone {
            entries: EntriesRef {
                id,
                count: self.count,
                chunks: None,
            },
            added,
            packs: Vec::new(),
        })
    }
}

pub(super) fn ser_err(e: serde_json::Error) -> Error {
    Error::serialise("an entries record", e)
}

/// Entries blobs: a run of whole records is cut after a record whose
/// last 64 bytes hash (FNV-1a) to 0 modulo this, once the run holds
/// [`META_MIN`] bytes: about 128 records (64 KiB) per blob.
const META_CUT: u64 = 128;
/// Fewest bytes of an entries blob (unless it is the last).
const META_MIN: usize = 8 << 10;
/// Most bytes of an entries blob, unless one record alone is longer.
const META_MAX: usize = 1 << 20;

/// Format 3: the entries stream cut into blobs at record boundaries,
/// where the records themselves say (content-defined, so the cut points of
/// an unchanged run of records are the same in the next snapshot and its
/// blobs are not stored again), each compressed and stored in packs of
/// their own as the stream goes.
pub(super) struct MetaOut {
    /// The blob being gathered: whole records, then the start of the next.
    cur: Vec<u8>,
    /// Where the record being gathered starts in `cur`.
    line_start: usize,
    chunks: Vec<String>,
    sink: commit::BlobSink,
}

impl MetaOut {
    /// A writer compressing by `compression`, putting packs durably when
    /// `durable`.
    ///
    /// # Errors
    ///
    /// The zstd context cannot be made.
    pub(super) fn new(compression: Compression, durable: bool) -> Result<MetaOut> {
        Ok(MetaOut {
            cur: Vec::with_capacity(META_MAX),
            line_start: 0,
            chunks: Vec::new(),
            sink: commit::BlobSink::new(compression, durable, "an entries blob")?,
        })
    }

    /// Appends stream bytes (records, the last one possibly unfinished).
    fn feed(&mut self, mut bytes: &[u8], repo: &Repo) -> Result<()> {
        while !bytes.is_empty() {
            let (piece, ended) = match memchr::memchr(b'\n', bytes) {
                Some(i) => (&bytes[..=i], true),
                None => (bytes, false),
            };
            bytes = &bytes[piece.len()..];
            // A record that would pass the most a blob holds starts one.
            if self.line_start > 0 && self.cur.len() + piece.len() > META_MAX {
                self.cut(self.line_start, repo)?;
            }
            self.cur.extend_from_slice(piece);
            if !ended {
                continue;
            }
            let line = &self.cur[self.line_start..];
            let tail = &line[line.len().saturating_sub(64)..];
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in tail {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
            let len = self.cur.len();
            if (len >= META_MIN && h % META_CUT == 0) || len >= META_MAX {
                self.cut(len, repo)?;
            } else {
                self.line_start = len;
            }
        }
        Ok(())
    }

    /// Stores the first `at` bytes of `cur` as a blob (unless stored
    /// already) and keeps the rest.
    fn cut(&mut self, at: usize, repo: &Repo) -> Result<()> {
        let rest = self.cur.split_off(at);
        let plain = std::mem::replace(&mut self.cur, rest);
        self.line_start = 0;
        if plain.is_empty() {
            return Ok(());
        }
        let id = repo.crypto().id(&plain);
        self.chunks.push(id.to_hex().to_string());
        self.sink.store(repo, id, plain)?;
        Ok(())
    }

    /// The last blob and pack: the blob ids in order, the packs written
    /// and the bytes added; the sync accounting goes into `syncs`.
    fn finish(
        mut self,
        repo: &Repo,
        syncs: &mut Syncs,
    ) -> Result<(Vec<String>, Vec<IndexPack>, u64)> {
        let len = self.cur.len();
        self.cut(len, repo)?;
        let (packs, added) = self.sink.finish(repo, syncs)?;
        Ok((self.chunks, packs, added))
    }
}
