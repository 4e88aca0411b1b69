//! The parent snapshot, for incremental backups (`docs/FORMAT.md`, "Block
//! reuse"): its entries file indexed by directory, the blocks of records
//! a walk may copy as they are, and the stat keys that say a file or a
//! directory's block is unchanged.
//!
//! Side effects: reads the parent's entries file through the repository.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::fs::{FileKind, Name, RelPath, Stat};
use crate::repo::format::tier;
use crate::repo::sidecar::{DevNum, EntryKind};
use crate::repo::storage::Ranged;
use crate::repo::{Repo, SnapshotRecord};

use super::entries::Reused;
use super::walker::Walker;

/// FNV-1a, for maps keyed by paths the walk produces itself (no untrusted
/// keys, so no need for SipHash's flooding resistance).
#[derive(Clone, Copy)]
pub(super) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A map keyed by raw relative paths.
pub(super) type PathMap<V> = HashMap<Vec<u8>, V, std::hash::BuildHasherDefault<Fnv>>;

/// The content of a file in the parent snapshot, with the stat fields
/// that tell whether it changed.
#[derive(Clone, Copy)]
pub(super) struct ParentFile {
    pub(super) size: u64,
    pub(super) mtime: crate::fs::Time,
    pub(super) atime: Option<crate::fs::Time>,
    pub(super) ctime: crate::fs::Time,
    pub(super) ino: u64,
    pub(super) dev: DevNum,
    /// Byte offset and length (newline included) of its record in the
    /// parent's entries file.
    pub(super) line: (u64, u64),
}

/// The content fields of a parent's file record, parsed only when the
/// record cannot be copied as it is.
#[derive(serde::Deserialize)]
pub(super) struct ParentContent {
    pub(super) sparse: Option<Vec<[u64; 2]>>,
    pub(super) chunks: Vec<String>,
    pub(super) hash: String,
}

/// The fields of a sidecar record the parent lookup needs, borrowed from
/// the entries file (the rest is skipped unparsed): the stat key of files,
/// the block fields of directories.
#[derive(serde::Deserialize)]
pub(super) struct ParentLine<'a> {
    pub(super) v: u32,
    pub(super) kind: EntryKind,
    #[serde(borrow)]
    pub(super) path: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    pub(super) path_b64: Option<std::borrow::Cow<'a, str>>,
    pub(super) size: Option<u64>,
    pub(super) mtime: crate::fs::Time,
    pub(super) atime: Option<crate::fs::Time>,
    pub(super) ctime: Option<crate::fs::Time>,
    pub(super) ino: Option<u64>,
    pub(super) dev: Option<DevNum>,
    pub(super) children: Option<u64>,
    #[serde(borrow)]
    pub(super) children_key: Option<std::borrow::Cow<'a, str>>,
    pub(super) children_ctime: Option<crate::fs::Time>,
}

/// A directory of the parent snapshot: where its record and its block of
/// non-directory records sit in the parent's entries file, and the key
/// the block was written under.
pub(super) struct ParentDir {
    /// Byte offset and length (newline included) of the directory's own
    /// record.
    pub(super) line: (u64, u64),
    /// BLAKE3 of that line, to tell whether a new record is the same.
    pub(super) line_hash: blake3::Hash,
    /// Byte offset and length of its block (right after the record).
    pub(super) block: (u64, u64),
    /// Records in its block.
    pub(super) children: u64,
    pub(super) key: blake3::Hash,
    pub(super) ctime: Option<crate::fs::Time>,
}

/// Bytes read from the parent's entries file at a time.
pub(super) const PARENT_READ: usize = 1 << 20;

/// The parent snapshot's entries file, open, with where each directory's
/// record and block are. Only that index is kept in memory (about 150
/// bytes per directory): a reused block is read from the file when it is
/// copied, and a changed directory reads and parses only its own block
/// (docs/FORMAT.md "Block reuse").
pub(super) struct Parent {
    /// The record's reference to its entries (a new snapshot equal to the
    /// parent names the same).
    pub(super) entries: crate::repo::EntriesRef,
    /// The entries file, for error messages.
    pub(super) path: String,
    pub(super) file: Box<dyn Ranged>,
    /// Its length in bytes.
    pub(super) size: u64,
    /// Directories by raw path.
    pub(super) dirs: PathMap<ParentDir>,
    /// The parent's start minus 1 s: a ctime before it cannot hide a
    /// change made while the parent ran.
    pub(super) settled: crate::fs::Time,
}

impl Parent {
    /// Reads the entries file of `rec` once, in pieces, and finds its
    /// directories by following the blocks from the root record: after a
    /// directory's record and its block comes the next directory in
    /// pre-order. A record without `children` (written before block reuse)
    /// ends the search; what was found until then is used.
    ///
    /// The bytes are not checked against the entries id on that pass:
    /// `load` sends the parent to the walker through `out`, then reads the
    /// file again to check it and returns the result, which the backup
    /// awaits before its commit. Nothing is sent when the parent's start
    /// time cannot be read.
    ///
    /// # Errors
    ///
    /// As [`Repo::open_entries`]; read errors; [`Error::Integrity`] when
    /// the file does not match its id, for a malformed directory record,
    /// or for a block past the end of the file.
    pub(super) fn load(
        repo: &Repo,
        rec: &SnapshotRecord,
        out: std::sync::mpsc::SyncSender<Parent>,
    ) -> Result<()> {
        let Ok(start) = humantime::parse_rfc3339(&rec.time) else {
            return Ok(());
        };
        let Ok(start) = start.duration_since(std::time::UNIX_EPOCH) else {
            return Ok(());
        };
        let settled = crate::fs::Time {
            sec: start.as_secs() as i64 - 1,
            nsec: start.subsec_nanos(),
        };
        let id = &rec.entries.id;
        let (path, file) = repo.open_entries(&rec.entries)?;
        let read_err = |e| crate::repo::read_error(&path, e);
        let mut dirs = PathMap::default();
        // The line being assembled, its offset and index; the line index
        // of the next directory record and the directory whose block
        // ends there.
        let mut line: Vec<u8> = Vec::new();
        let (mut line_at, mut line_no) = (0u64, 0u64);
        let mut next_dir = 0u64;
        let mut open: Option<Vec<u8>> = None;
        let mut buf = vec![0u8; PARENT_READ];
        let mut at = 0u64;
        'read: loop {
            let n = file.read_at(&mut buf, at).map_err(read_err)?;
            if n == 0 {
                break;
            }
            let mut rest = &buf[..n];
            at += n as u64;
            while let Some(nl) = memchr::memchr(b'\n', rest) {
                let whole: &[u8] = if line.is_empty() {
                    &rest[..=nl]
                } else {
                    line.extend_from_slice(&rest[..=nl]);
                    &line
                };
                if line_no == next_dir {
                    if let Some(p) = open.take() {
                        if let Some(d) = dirs.get_mut(&p) {
                            let d: &mut ParentDir = d;
                            d.block.1 = line_at - d.block.0;
                        }
                    }
                    let bad = |detail: String| Error::Integrity {
                        path: format!("{path}:{}", line_no + 1),
                        detail,
                    };
                    let d: ParentLine = serde_json::from_slice(whole)
                        .map_err(|e| bad(format!("malformed record: {e}")))?;
                    let (EntryKind::Dir, Some(children), Some(key)) =
                        (d.kind, d.children, d.children_key)
                    else {
                        break 'read;
                    };
                    let key = blake3::Hash::from_hex(key.as_bytes())
                        .map_err(|e| bad(format!("invalid children_key: {e}")))?;
                    let rel = RelPath::from_stored(&d.path, d.path_b64.as_deref())
                        .map_err(|e| bad(format!("invalid path: {e}")))?;
                    let len = whole.len() as u64;
                    let raw = rel.to_bytes();
                    dirs.insert(
                        raw.clone(),
                        ParentDir {
                            line: (line_at, len),
                            line_hash: blake3::hash(whole),
                            block: (line_at + len, 0),
                            children,
                            key,
                            ctime: d.children_ctime,
                        },
                    );
                    open = Some(raw);
                    next_dir = line_no + 1 + children;
                }
                line_at += whole.len() as u64;
                line_no += 1;
                line.clear();
                rest = &rest[nl + 1..];
            }
            line.extend_from_slice(rest);
        }
        let size = file.size().map_err(|e| Error::io("stat", &path, e))?;
        if let Some(p) = open.take() {
            if let Some(d) = dirs.get_mut(&p) {
                if line_no < next_dir {
                    return Err(Error::Integrity {
                        path: path.clone(),
                        detail: format!(
                            "directory {:?} claims {} entries after it, past the end of the file",
                            String::from_utf8_lossy(&p),
                            d.children
                        ),
                    });
                }
                d.block.1 = line_at - d.block.0;
            }
        }
        let parent = Self {
            entries: rec.entries.clone(),
            path: path.clone(),
            file,
            size,
            dirs,
            settled,
        };
        // The walker may have stopped already; the check still decides.
        let _ = out.send(parent);
        let (_, file) = repo.open_entries(&rec.entries)?;
        let mut hasher = blake3::Hasher::new();
        let mut at = 0u64;
        loop {
            let n = file
                .read_at(&mut buf, at)
                .map_err(|e| crate::repo::read_error(&path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        if hasher.finalize().to_hex().as_str() == id {
            Ok(())
        } else {
            Err(Error::Integrity {
                path,
                detail: "entries file does not match its BLAKE3 id".into(),
            })
        }
    }

    /// Bytes `offset..offset + len` of the entries file.
    ///
    /// # Errors
    ///
    /// The read error; [`Error::Integrity`] when the file is shorter.
    pub(super) fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        self.read_into(&mut out, offset)?;
        Ok(out)
    }

    /// Fills `buf` from `offset` of the entries file.
    ///
    /// # Errors
    ///
    /// As [`Parent::read`].
    pub(super) fn read_into(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let n = self
            .file
            .read_at(buf, offset)
            .map_err(|e| crate::repo::read_error(&self.path, e))?;
        if n < buf.len() {
            return Err(Error::Integrity {
                path: self.path.clone(),
                detail: "entries file is shorter than when it was indexed".into(),
            });
        }
        Ok(())
    }

    /// The records in bytes `offset..offset + len` (a block), and among
    /// them the regular files whose content may be reused: those with a
    /// full stat key and a ctime older than [`Parent::settled`] (see
    /// [`SnapshotStats::files_unchanged`]).
    ///
    /// # Errors
    ///
    /// As [`Parent::read`]; [`Error::Integrity`] for a malformed record.
    pub(super) fn files(&self, offset: u64, len: u64) -> Result<Block> {
        let bytes = self.read(offset, len)?;
        let mut files = PathMap::default();
        let mut others = PathMap::default();
        let mut at = 0usize;
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            let start = at;
            at += line.len();
            let r: ParentLine = serde_json::from_slice(line).map_err(|e| Error::Integrity {
                path: self.path.clone(),
                detail: format!("malformed record: {e}"),
            })?;
            if r.v != crate::repo::sidecar::SIDECAR_VERSION || r.kind != EntryKind::File {
                continue;
            }
            let Ok(rel) = RelPath::from_stored(&r.path, r.path_b64.as_deref()) else {
                continue;
            };
            let (Some(size), Some(ctime), Some(ino), Some(dev)) = (r.size, r.ctime, r.ino, r.dev)
            else {
                others.insert(rel.to_bytes(), ());
                continue;
            };
            if ctime >= self.settled {
                others.insert(rel.to_bytes(), ());
                continue;
            }
            files.insert(
                rel.to_bytes(),
                ParentFile {
                    size,
                    mtime: r.mtime,
                    atime: r.atime,
                    ctime,
                    ino,
                    dev,
                    line: (offset + start as u64, line.len() as u64),
                },
            );
        }
        Ok(Block {
            offset,
            bytes,
            files,
            others,
        })
    }
}

/// A block of the parent's entries file being used by the walk of one
/// changed directory.
#[derive(Default)]
pub(super) struct Block {
    /// Where it starts in the parent's file.
    pub(super) offset: u64,
    pub(super) bytes: Vec<u8>,
    /// Its reusable regular files by raw path.
    pub(super) files: PathMap<ParentFile>,
    /// The regular files it records that `files` does not hold (no full
    /// stat key, or changed too late): with `files`, every regular file
    /// of the block (one in neither is new, [`SnapshotStats::files_new`]).
    pub(super) others: PathMap<()>,
}

impl Block {
    /// Whether the block records a regular file at raw path `rel`.
    pub(super) fn has_file(&self, rel: &[u8]) -> bool {
        self.files.contains_key(rel) || self.others.contains_key(rel)
    }
}

impl Block {
    /// The record of `f` (one of `files`).
    pub(super) fn line(&self, f: &ParentFile) -> &[u8] {
        let from = (f.line.0 - self.offset) as usize;
        &self.bytes[from..from + f.line.1 as usize]
    }
}

impl Walker<'_> {
    /// The children key of a block: BLAKE3-256 hex over, per entry in name
    /// order, the name and the stat fields a record is built from (atime
    /// only from tier extended, which records it); and the newest ctime.
    pub(super) fn children_key(
        &self,
        files: &[(Name, Stat)],
    ) -> (blake3::Hash, Option<crate::fs::Time>) {
        let mut h = blake3::Hasher::new();
        h.update(b"snap children key 1\0");
        let mut newest: Option<crate::fs::Time> = None;
        for (name, s) in files {
            let atime = if tier::fields(self.tier).owners {
                s.atime
            } else {
                crate::fs::Time { sec: 0, nsec: 0 }
            };
            let kind = match s.kind {
                FileKind::File => 1u64,
                FileKind::Dir => 2,
                FileKind::Symlink => 3,
                FileKind::Fifo => 4,
                FileKind::Char => 5,
                FileKind::Block => 6,
                FileKind::Socket => 7,
            };
            let fields = [
                name.as_bytes().len() as u64,
                kind,
                u64::from(s.mode),
                u64::from(s.nlink),
                u64::from(s.uid),
                u64::from(s.gid),
                s.size,
                s.blocks,
                s.ino,
                (u64::from(s.dev.0) << 32) | u64::from(s.dev.1),
                (u64::from(s.rdev.0) << 32) | u64::from(s.rdev.1),
                s.mtime.sec as u64,
                u64::from(s.mtime.nsec),
                s.ctime.sec as u64,
                u64::from(s.ctime.nsec),
                atime.sec as u64,
                u64::from(atime.nsec),
            ];
            let mut buf = [0u8; 17 * 8];
            for (i, f) in fields.iter().enumerate() {
                buf[i * 8..i * 8 + 8].copy_from_slice(&f.to_le_bytes());
            }
            h.update(&buf);
            h.update(name.as_bytes());
            newest = newest.max(Some(s.ctime));
        }
        (h.finalize(), newest)
    }

    /// The parent's block for directory `rel` when it can be copied as it
    /// is (see [`SnapshotStats::dirs_unchanged`]): as lines of the parent's
    /// entries file.
    pub(super) fn reusable_block(
        &self,
        rel: &RelPath,
        key: &blake3::Hash,
        files: &[(Name, Stat)],
    ) -> Option<Reused> {
        // Tier full reads xattrs and inode flags of every entry again.
        if tier::fields(self.tier).full || files.is_empty() {
            return None;
        }
        let p = self.parent.as_ref()?;
        let d = p.dirs.get(&rel.to_bytes())?;
        let settled = d.ctime.is_some_and(|c| c < p.settled);
        // A hard link's record depends on which name the walk meets first,
        // which other directories decide.
        let linked = files.iter().any(|(_, s)| s.nlink > 1);
        let kept = files.iter().filter(|(_, s)| self.keeps(s.kind)).count() as u64;
        (d.key == *key && settled && !linked && kept == d.children).then_some(Reused {
            offset: d.block.0,
            len: d.block.1,
            lines: d.children,
        })
    }

    /// Counts a copied block in the stats, as [`Walker::entry`] would have.
    pub(super) fn reuse_block(&mut self, files: &[(Name, Stat)]) {
        self.stats.dirs_unchanged += 1;
        for (_, s) in files {
            match s.kind {
                _ if !self.keeps(s.kind) => self.stats.skipped += 1,
                FileKind::File => {
                    self.stats.files += 1;
                    self.stats.files_unchanged += 1;
                    self.stats.bytes += s.size;
                    self.progress.inc(s.size);
                }
                FileKind::Symlink => self.stats.symlinks += 1,
                _ => self.stats.special += 1,
            }
        }
    }

    /// The parent snapshot's content for `rel` when its stat key matches
    /// `st`. Its chunks are in the index: the commit protocol makes the
    /// parent's index files durable before its snapshot record.
    pub(super) fn unchanged(&self, rel: &RelPath, st: &Stat) -> Option<ParentFile> {
        let p = *self.block.files.get(&rel.to_bytes())?;
        let same = p.size == st.size
            && p.mtime == st.mtime
            && p.ctime == st.ctime
            && p.ino == st.ino
            && (p.dev.major, p.dev.minor) == st.dev;
        same.then_some(p)
    }
}
