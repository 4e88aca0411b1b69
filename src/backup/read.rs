//! Reading a source file for the walker: opened beneath its directory
//! through io_uring, checked to be the file the walk stat'ed, read in
//! large pieces (data extents only, for a sparse file) and sent to the
//! chunker; or, when the parent snapshot holds it unchanged, not read.
//!
//! Side effects: opens and reads source files (`O_NOATIME` where
//! permitted).

use crate::error::{Error, Result};
use crate::fs::{fd, Dir, FileKind, Name, RelPath, Stat};
use crate::io::DataFile;
use crate::repo::format::tier;
use crate::repo::sidecar::EntryKind;

use super::entries::Reused;
use super::parent::ParentContent;
use super::pipeline;
use super::walker::{FileOut, Walker};
use pipeline::Msg;

/// Bytes requested per read submission.
pub(super) const READ_SIZE: usize = 4 * 1024 * 1024;

impl Walker<'_> {
    /// Records one regular file: its content from the parent snapshot when
    /// unchanged, else read through io_uring and sent to the chunker.
    /// `Ok(None)` when it could not be read (reported as a warning).
    pub(super) async fn file(
        &mut self,
        dir: &Dir,
        name: &Name,
        rel: &RelPath,
        st: &Stat,
    ) -> Result<Option<FileOut>> {
        let mut rec = self.base_record(rel, EntryKind::File, st);
        self.show(rel);
        if let Some(p) = self.unchanged(rel, st) {
            // The record would be the parent's, byte for byte: every field
            // but atime is covered by the stat key (mode and owner changes
            // move ctime), and tier full reads xattrs and flags again.
            let atime_same = !tier::fields(self.tier).owners || p.atime == Some(st.atime);
            if !tier::fields(self.tier).full && atime_same {
                self.stats.files += 1;
                self.stats.files_unchanged += 1;
                self.stats.bytes += p.size;
                self.progress.inc(p.size);
                return Ok(Some(FileOut::Reused(Reused {
                    offset: p.line.0,
                    len: p.line.1,
                    lines: 1,
                })));
            }
            let c: ParentContent =
                serde_json::from_slice(self.block.line(&p)).map_err(|e| Error::Integrity {
                    path: rel.to_string(),
                    detail: format!("malformed parent record: {e}"),
                })?;
            let stored = match &c.sparse {
                Some(e) => e.iter().map(|[_, l]| *l).sum(),
                None => p.size,
            };
            rec.size = Some(p.size);
            rec.sparse = c.sparse;
            rec.chunks = Some(c.chunks);
            rec.hash = Some(c.hash);
            if tier::fields(self.tier).full {
                // Xattrs and inode flags are read through a descriptor,
                // opened as for reading content (O_NONBLOCK: a name swapped
                // for a FIFO since the stat cannot block the run).
                let f = match open_same_file(dir, name, st).await {
                    Ok(f) => f,
                    Err(e) => {
                        self.warn(rel, "open", e.to_string(), true)?;
                        return Ok(None);
                    }
                };
                rec = self.with_fd_meta(rec, &f, rel)?;
            }
            self.stats.files += 1;
            self.stats.files_unchanged += 1;
            self.stats.bytes += stored;
            self.progress.inc(stored);
            return Ok(Some(FileOut::Rec(rec.into())));
        }
        let fd = match open_same_file(dir, name, st).await {
            Ok(fd) => fd,
            Err(e) => {
                self.warn(rel, "open", e.to_string(), true)?;
                return Ok(None);
            }
        };
        let f = DataFile::new(fd);
        rec = self.with_fd_meta(rec, &f.as_fd(), rel)?;
        // Sparse files (tier full): read only the data extents.
        let sparse = if tier::fields(self.tier).full && st.blocks.saturating_mul(512) < st.size {
            match fd::data_extents(f.as_fd(), st.size) {
                Ok(e) => Some(e),
                Err(e) => {
                    self.warn(rel, "SEEK_DATA", e.to_string(), false)?;
                    None
                }
            }
        } else {
            None
        };
        let ranges: Vec<(u64, u64)> = match &sparse {
            Some(e) => e.clone(),
            None => vec![(0, u64::MAX)],
        };
        // The record this content belongs to: `entry` pushes it next.
        let idx = self.next_idx();
        let mut ri = 0usize;
        let mut pos = ranges.first().map_or(0, |r| r.0);
        let mut offset = 0u64; // bytes of stored content read so far
        let mut pending: Option<Vec<u8>> = None;
        // A file that may span several chunks is hashed whole here, beside
        // the chunker (which then hashes only its chunks); a smaller one's
        // hash is its one chunk's id.
        let mut whole =
            (st.size > u64::from(self.chunker_min)).then(|| self.repo.crypto().hasher());
        let hashed = whole.as_ref().map(|_| None);
        loop {
            crate::interrupt::check()?;
            let Some(&(start, len)) = ranges.get(ri) else {
                break;
            };
            let end = start.saturating_add(len);
            let want = match sparse {
                // Ask for one byte more than stat's size, so a file that
                // did not grow is read whole in one request.
                None => ((st.size.saturating_sub(pos)) as usize + 1).min(READ_SIZE),
                Some(_) => READ_SIZE.min((end - pos) as usize),
            };
            let buf = if want >= pipeline::RECYCLE_FROM {
                self.reads_pool.try_recv().map(|mut b| {
                    b.clear();
                    b
                })
            } else {
                Err(std::sync::mpsc::TryRecvError::Empty)
            };
            let data = match f.read_at_into(buf.unwrap_or_default(), pos, want).await {
                Ok(data) => data,
                Err(e) => {
                    if offset > 0 {
                        self.send(Msg::Discard)?;
                    }
                    self.warn(rel, "read", e.to_string(), true)?;
                    return Ok(None);
                }
            };
            // End of file (or a sparse file that shrank).
            if data.is_empty() {
                break;
            }
            let short = data.len() < want;
            if let Some(h) = whole.as_mut() {
                h.update(&data);
            }
            pos += data.len() as u64;
            offset += data.len() as u64;
            if let Some(prev) = pending.replace(data) {
                self.send(Msg::Data {
                    idx,
                    bytes: prev,
                    end: false,
                    whole: hashed,
                })?;
            }
            if pos >= end {
                ri += 1;
                match ranges.get(ri) {
                    Some(r) => pos = r.0,
                    None => break,
                }
            }
            // A short read that reached stat's size is the end of the file.
            if sparse.is_none() && short && pos >= st.size {
                break;
            }
        }
        self.send(Msg::Data {
            idx,
            bytes: pending.unwrap_or_default(),
            end: true,
            whole: whole.map(|h| Some(h.finalize())),
        })?;
        // `entry` pushes the record at `idx`; the chunker reports its chunks.
        self.waiting.insert(idx);
        f.close()
            .await
            .map_err(|e| Error::io("close", rel.to_string(), e))?;
        rec.size = Some(if sparse.is_some() { st.size } else { offset });
        rec.sparse = sparse.map(|e| e.into_iter().map(|(o, l)| [o, l]).collect());
        self.stats.files += 1;
        self.stats.bytes += offset;
        self.progress.inc(offset);
        let change = if self.block.has_file(&rel.to_bytes()) {
            self.stats.files_changed += 1;
            super::Change::Changed
        } else {
            self.stats.files_new += 1;
            super::Change::New
        };
        if let Some(tell) = self.changes {
            self.progress.suspend(|| tell(change, rel));
        }
        Ok(Some(FileOut::Rec(rec.into())))
    }

    /// The progress line's message before file `rel` is read: files so
    /// far, errors, a remote repository's uploads, and `rel` (cut to the
    /// terminal's width by the bar's `wide_msg`). Nothing when no bar is
    /// drawn.
    fn show(&self, rel: &RelPath) {
        if self.progress.is_hidden() {
            return;
        }
        let up = crate::repo::storage::remote::transfer()
            .up
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut m = crate::human::count(self.stats.files, "file", "files");
        if self.stats.unreadable > 0 {
            m.push_str(&format!(
                ", {}",
                crate::human::count(self.stats.unreadable, "error", "errors")
            ));
        }
        if up > 0 {
            m.push_str(&format!(", {} uploaded", crate::human::size(up)));
        }
        self.progress.set_message(format!("{m}  {rel}"));
    }
}

/// Opens the source file `name` the walk stat'ed as `st` (non-blocking,
/// no symlinks: [`crate::io::open_read`]) and checks that the
/// descriptor is that regular file: a name swapped since the stat (for a
/// FIFO, which a read would wait on forever, or another file) is refused.
///
/// # Errors
///
/// The open or `fstat(2)` error; `InvalidData` for a swapped name.
pub(super) async fn open_same_file(
    dir: &Dir,
    name: &Name,
    st: &Stat,
) -> std::io::Result<std::os::fd::OwnedFd> {
    let f = crate::io::open_read(dir, name).await?;
    let now = fd::stat(&f)?;
    if now.kind != FileKind::File || (now.dev, now.ino) != (st.dev, st.ino) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "changed since the walk stat'ed it (now a {:?}, inode {}; was a regular file, inode {}); not read",
                now.kind, now.ino, st.ino
            ),
        ));
    }
    Ok(f)
}
