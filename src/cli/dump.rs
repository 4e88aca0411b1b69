//! `snap dump`: a file's bytes, or a directory as a tar stream, to stdout.
//! Every blob is checked against its BLAKE3 id before a byte of it is
//! written; sparse files come out with their holes as zeros.
//!
//! The tar stream is POSIX ustar with GNU long-name records (the `tar`
//! crate's `Builder`): regular files, directories, symlinks, hard links
//! (to the first name written), FIFOs and device nodes with mode, owner
//! ids and names, and mtime in whole seconds. Sockets cannot be archived
//! and are left out (counted on stderr); xattrs, ACLs and inode flags are
//! not carried (restore them with `snap restore`).
//!
//! Side effects: reads the repository under the shared lock; writes to
//! stdout.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;

use super::args::{FilterArgs, LockArgs};
use super::common::{damaged_facts, entry_path, lock_fact, parse_subpath};
use super::{open_repo, Cli, Out};
use crate::error::{Error, Result};
use crate::facts::{Decision, Emitter, Event, STDOUT};
use crate::fs::RelPath;
use crate::repo::sidecar::{EntryKind, EntryRecord};
use crate::repo::storage::{FileKind, Ranged};
use crate::repo::{Index, Repo};

/// Reads blobs, each checked against its id.
struct Blobs<'r> {
    repo: &'r Repo,
    index: &'r Index,
    pack: Option<(blake3::Hash, Box<dyn Ranged>)>,
}

impl Blobs<'_> {
    fn read(&mut self, id: &blake3::Hash, shown: &str) -> Result<Vec<u8>> {
        let loc = self.index.get(id).ok_or_else(|| Error::Integrity {
            path: shown.to_owned(),
            detail: format!("blob {id} is in no index"),
        })?;
        if self.pack.as_ref().is_none_or(|(p, _)| *p != loc.pack) {
            self.pack = Some((loc.pack, self.repo.open_pack(&loc.pack)?));
        }
        let (_, f) = self.pack.as_ref().expect("opened above");
        let path = self.repo.file_path(FileKind::Pack, &loc.pack.to_hex());
        let bytes = f
            .read_exact_at(loc.offset, loc.length as usize)
            .map_err(|e| Error::Integrity {
                path: path.clone(),
                detail: format!("cannot read blob {id}: {e}"),
            })?;
        crate::repo::format::blob::verified_owned(self.repo.crypto(), bytes, loc.raw, id).map_err(
            |e| Error::Integrity {
                path,
                detail: format!("blob {id} at offset {}: {e}", loc.offset),
            },
        )
    }
}

/// A file's content as a reader: the data extents from its verified
/// chunks, zeros for the holes between and after them.
struct Content<'b, 'r> {
    blobs: &'b mut Blobs<'r>,
    chunks: Vec<blake3::Hash>,
    next: usize,
    buf: Vec<u8>,
    at: usize,
    /// Data extents (offset, length), in order.
    extents: Vec<(u64, u64)>,
    ei: usize,
    pos: u64,
    size: u64,
    shown: String,
    /// The error that ended the stream, kept to be reported as itself.
    failed: Option<Error>,
}

impl<'b, 'r> Content<'b, 'r> {
    fn new(blobs: &'b mut Blobs<'r>, rec: &EntryRecord, shown: &str) -> Result<Self> {
        let bad = |d: String| Error::Integrity {
            path: shown.to_owned(),
            detail: d,
        };
        let mut chunks = Vec::new();
        for hex in rec.chunks.iter().flatten() {
            chunks.push(
                blake3::Hash::from_hex(hex)
                    .map_err(|_| bad(format!("chunk id {hex:?} is not BLAKE3 hex")))?,
            );
        }
        let size = rec.size.unwrap_or(0);
        let extents: Vec<(u64, u64)> = match &rec.sparse {
            Some(e) => e.iter().map(|[o, l]| (*o, *l)).collect(),
            None => vec![(0, size)],
        };
        let mut end = 0u64;
        for &(o, l) in &extents {
            if o < end || o.checked_add(l).is_none_or(|e| e > size) {
                return Err(bad("sparse map out of order or past the size".into()));
            }
            end = o + l;
        }
        Ok(Content {
            blobs,
            chunks,
            next: 0,
            buf: Vec::new(),
            at: 0,
            extents,
            ei: 0,
            pos: 0,
            size,
            shown: shown.to_owned(),
            failed: None,
        })
    }

    /// Fills `out` with up to its length of content; 0 at the end.
    fn fill(&mut self, out: &mut [u8]) -> Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            if self.pos >= self.size && (self.at < self.buf.len() || self.next < self.chunks.len())
            {
                return Err(Error::Integrity {
                    path: self.shown.clone(),
                    detail: "the chunks hold more bytes than the record's size".into(),
                });
            }
            return Ok(0);
        }
        while self.ei < self.extents.len()
            && self.pos >= self.extents[self.ei].0 + self.extents[self.ei].1
        {
            self.ei += 1;
        }
        let room = out.len() as u64;
        let Some(&(start, len)) = self.extents.get(self.ei) else {
            let n = room.min(self.size - self.pos) as usize;
            out[..n].fill(0);
            self.pos += n as u64;
            return Ok(n);
        };
        if self.pos < start {
            let n = room.min(start - self.pos) as usize;
            out[..n].fill(0);
            self.pos += n as u64;
            return Ok(n);
        }
        if self.at == self.buf.len() {
            let Some(id) = self.chunks.get(self.next).copied() else {
                return Err(Error::Integrity {
                    path: self.shown.clone(),
                    detail: "the chunks hold fewer bytes than the record's size".into(),
                });
            };
            self.next += 1;
            self.buf = self.blobs.read(&id, &self.shown)?;
            self.at = 0;
        }
        let n = room
            .min(start + len - self.pos)
            .min((self.buf.len() - self.at) as u64) as usize;
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Read for Content<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match self.fill(out) {
            Ok(n) => Ok(n),
            Err(e) => {
                let msg = e.to_string();
                self.failed = Some(e);
                Err(std::io::Error::other(msg))
            }
        }
    }
}

/// Runs `snap dump`.
///
/// # Errors
///
/// `--json` (stdout carries the dump; use `--facts FILE`); no repository,
/// snapshot or path; the lock; a damaged entries file or blob; the write
/// error (a closed stdout ends the run quietly, 141).
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    cli: &Cli,
    facts: &mut Emitter,
    _out: &Out,
    snapshot: &str,
    path: &str,
    filter: &FilterArgs,
    lock: &LockArgs,
) -> Result<i32> {
    if cli.json {
        return Err(Error::Usage(
            "snap dump writes the content to stdout, which --json would share: use --facts FILE"
                .into(),
        ));
    }
    let repo = open_repo(cli)?;
    let lk = repo.lock(false, lock.ms())?;
    lock_fact(facts, &repo, &lk)?;
    let resolved = repo.resolve_in(snapshot, &filter.filter());
    damaged_facts(facts, &repo)?;
    let (id, rec) = resolved?;
    let want = parse_subpath(path)?;
    let records = repo.read_entries(&rec.entries)?;
    let mut paths = Vec::with_capacity(records.len());
    for r in &records {
        paths.push(entry_path(&repo, &rec.entries, r)?);
    }
    let Some(top) = paths.iter().position(|p| *p == want) else {
        return Err(Error::SnapshotNotFound {
            query: format!("{snapshot}:{path}"),
            detail: format!("snapshot {} holds no path {path:?}", &id[..12]),
        });
    };
    let index = repo.index()?;
    let mut blobs = Blobs {
        repo: &repo,
        index: &index,
        pack: None,
    };
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let write_err = |e: std::io::Error| Error::io("write", STDOUT, e);
    let top_rec = &records[top];
    let (format, entries, bytes) = if top_rec.kind == EntryKind::Dir {
        let (n, b) = dump_tar(&mut blobs, &records, &paths, &want, &mut w)?;
        ("tar", n, b)
    } else {
        // A hard link's content is its leader's.
        let content_rec = match top_rec.link_path() {
            Ok(Some(leader)) => paths
                .iter()
                .position(|p| *p == leader)
                .map(|i| &records[i])
                .unwrap_or(top_rec),
            _ => top_rec,
        };
        let data: Vec<u8>;
        let shown = format!("/{want}");
        let bytes = match content_rec.kind {
            EntryKind::File => {
                let mut c = Content::new(&mut blobs, content_rec, &shown)?;
                match std::io::copy(&mut c, &mut w) {
                    Ok(n) => n,
                    Err(e) => return Err(c.failed.take().unwrap_or_else(|| write_err(e))),
                }
            }
            EntryKind::Symlink => {
                data = content_rec
                    .target_bytes()
                    .map_err(|d| Error::Integrity {
                        path: shown.clone(),
                        detail: d,
                    })?
                    .unwrap_or_default();
                w.write_all(&data).map_err(write_err)?;
                data.len() as u64
            }
            k => {
                return Err(Error::Usage(format!(
                    "{shown} is a {k:?} entry: it has no content to dump"
                )))
            }
        };
        ("file", 1, bytes)
    };
    w.flush().map_err(write_err)?;
    drop(w);
    facts.emit(
        Decision::Success,
        None,
        Event::DumpResult {
            snapshot_id: id,
            path: if want.is_root() {
                String::new()
            } else {
                want.to_string()
            },
            format: format.into(),
            entries,
            bytes,
        },
    )?;
    Ok(0)
}

/// Writes the entries at or under `top` as a tar stream; returns the
/// entries written and the content bytes.
fn dump_tar(
    blobs: &mut Blobs,
    records: &[EntryRecord],
    paths: &[RelPath],
    top: &RelPath,
    w: &mut dyn Write,
) -> Result<(u64, u64)> {
    let write_err = |e: std::io::Error| Error::io("write", STDOUT, e);
    let mut tar = tar::Builder::new(w);
    tar.mode(tar::HeaderMode::Complete);
    let (mut n, mut bytes, mut sockets) = (0u64, 0u64, 0u64);
    for (r, p) in records.iter().zip(paths) {
        if !p.starts_with(top) {
            continue;
        }
        crate::interrupt::check()?;
        let raw = p.to_bytes();
        let mut name = if raw.is_empty() { b".".to_vec() } else { raw };
        if r.kind == EntryKind::Dir {
            name.push(b'/');
        }
        let name = std::path::Path::new(std::ffi::OsStr::from_bytes(&name));
        let mut h = tar::Header::new_gnu();
        h.set_mode(r.mode & 0o7777);
        h.set_uid(u64::from(r.uid.unwrap_or(0)));
        h.set_gid(u64::from(r.gid.unwrap_or(0)));
        if let Some(u) = &r.user {
            h.set_username(u).ok();
        }
        if let Some(g) = &r.group {
            h.set_groupname(g).ok();
        }
        h.set_mtime(u64::try_from(r.mtime.sec).unwrap_or(0));
        h.set_size(0);
        let shown = format!("/{p}");
        let res = match r.kind {
            EntryKind::File => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(r.size.unwrap_or(0));
                let mut c = Content::new(blobs, r, &shown)?;
                let res = tar.append_data(&mut h, name, &mut c);
                if let Some(e) = c.failed.take() {
                    return Err(e);
                }
                bytes += r.size.unwrap_or(0);
                res
            }
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                tar.append_data(&mut h, name, std::io::empty())
            }
            EntryKind::Symlink | EntryKind::Hardlink => {
                let target = if r.kind == EntryKind::Symlink {
                    h.set_entry_type(tar::EntryType::Symlink);
                    r.target_bytes()
                } else {
                    h.set_entry_type(tar::EntryType::Link);
                    r.link_path()
                        .map(|l| l.map(|l| l.to_bytes()))
                        .map_err(|e| e.to_string())
                }
                .map_err(|d| Error::Integrity {
                    path: shown.clone(),
                    detail: d,
                })?
                .unwrap_or_default();
                let t = std::path::Path::new(std::ffi::OsStr::from_bytes(&target));
                tar.append_link(&mut h, name, t)
            }
            EntryKind::Fifo | EntryKind::Char | EntryKind::Block => {
                h.set_entry_type(match r.kind {
                    EntryKind::Fifo => tar::EntryType::Fifo,
                    EntryKind::Char => tar::EntryType::Char,
                    _ => tar::EntryType::Block,
                });
                if let Some(d) = r.rdev {
                    h.set_device_major(d.major).map_err(write_err)?;
                    h.set_device_minor(d.minor).map_err(write_err)?;
                }
                tar.append_data(&mut h, name, std::io::empty())
            }
            EntryKind::Socket => {
                sockets += 1;
                continue;
            }
        };
        res.map_err(write_err)?;
        n += 1;
    }
    tar.finish().map_err(write_err)?;
    if sockets > 0 {
        eprintln!(
            "snap: note: {sockets} sockets left out of the tar stream (tar has no socket type)"
        );
    }
    Ok((n, bytes))
}
