//! The new snapshot's entries file, written as the walk goes: records
//! serialised, or copied from the parent's entries file where they are
//! unchanged, into a staged file the commit puts in place.
//!
//! Side effects: writes a staged file through the repository's backend.

use crate::error::{Error, Result};
use crate::repo::sidecar::{EntryKind, EntryRecord};
use crate::repo::storage::Staged;
use crate::repo::{commit, Repo, Syncs};

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
}

/// Bytes gathered before a write of the new entries file.
pub(super) const ENTRIES_WRITE: usize = 1 << 20;

impl EntriesOut {
    pub(super) fn new(parent: bool) -> Self {
        Self {
            same: parent.then_some(0),
            tmp: None,
            buf: Vec::with_capacity(ENTRIES_WRITE + (64 << 10)),
            hasher: blake3::Hasher::new(),
            count: 0,
            scratch: Vec::new(),
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
    ) -> Result<(String, u64)> {
        if let (Some(n), Some(p)) = (self.same, parent) {
            if n == p.size {
                return Ok((p.id.clone(), 0));
            }
            self.diverge(p, repo)?;
        }
        self.write(repo)?;
        let id = self.hasher.finalize().to_hex().to_string();
        let tmp = self.tmp.take().expect("written above");
        let added = commit::put_entries(repo, tmp, &id, syncs)?;
        Ok((id, added))
    }
}

pub(super) fn ser_err(e: serde_json::Error) -> Error {
    Error::serialise("an entries record", e)
}
