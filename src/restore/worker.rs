//! The file workers: one thread per core creates regular files, their
//! content read from packs (each blob checked against its id before a byte
//! reaches the file) and their metadata applied.
//!
//! Side effects: creates and writes files beneath the staging directory;
//! reads packs.

use crate::error::{Error, Result};
use crate::facts::RestoreSummary;
use crate::fs::{fd, Dir, Name, RelPath};
use crate::repo::sidecar::EntryRecord;
use crate::repo::storage::FileKind;

use super::plan::FileWork;
use super::{entry_error, integrity, internal_panic, RestoreWarning, Restorer, Shared};

/// Bytes read from a pack at once; the blobs that follow are served from
/// this window.
pub(super) const PACK_WINDOW: usize = 8 << 20;

/// A range of a pack held in memory.
pub(super) struct Window {
    pub(super) pack: blake3::Hash,
    pub(super) start: u64,
    pub(super) bytes: Vec<u8>,
}

impl<'a> Restorer<'a> {
    /// A worker of step 2 of [`Restorer::build`]: takes batches until the
    /// plan is done, each file written and given its metadata, with its own
    /// open packs. The first worker to fail sets `abort`,
    /// which stops the others and the plan. Returns its counts, warnings,
    /// queued inode flags and result.
    #[allow(clippy::type_complexity)]
    pub(super) fn worker(
        sh: &'a Shared<'a>,
        template: &RestoreSummary,
        rx: &std::sync::Mutex<std::sync::mpsc::Receiver<Vec<FileWork>>>,
    ) -> (
        RestoreSummary,
        Vec<RestoreWarning>,
        Vec<(usize, RelPath, u32, bool)>,
        Result<()>,
    ) {
        use std::sync::atomic::Ordering;
        let mut w = Restorer::new(sh, template.clone());
        let recv = || rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
            let Ok(batch) = recv() else { return Ok(()) };
            w.ahead = batch.iter().map(|f| f.rec.size.unwrap_or(0)).sum();
            for f in &batch {
                if sh.abort.load(Ordering::Relaxed) {
                    return Ok(());
                }
                w.file_work(f)?;
            }
        }))
        .unwrap_or_else(|p| Err(internal_panic(&template.target, &*p)));
        if res.is_err() {
            sh.abort.store(true, Ordering::Relaxed);
        }
        // Until the plan sees the abort and closes the channel, batches
        // are taken and dropped: a plan blocked on a full channel with no
        // worker left would wait forever.
        while recv().is_ok() {}
        (w.summary, w.warnings, w.flags, res)
    }

    /// Creates one file of a worker's batch in its directory (kept open
    /// for the files that follow in the same directory).
    pub(super) fn file_work(&mut self, f: &FileWork) -> Result<()> {
        crate::interrupt::check()?;
        let sh = self.sh;
        let shown = f.rel.to_string();
        let parent = f.rel.parent().unwrap_or_default();
        let dir = match self.dir_cache.take() {
            Some((r, d)) if r == parent => d,
            _ => sh
                .staging
                .open_path(&parent)
                .map_err(|e| entry_error(&shown, "open directory", e))?,
        };
        let name = f
            .rel
            .file_name()
            .ok_or_else(|| integrity(&shown, "a file record for the snapshot root"))?;
        let res = self.file(&dir, name, &f.rec, &f.rel, f.order, &shown);
        self.dir_cache = Some((parent, dir));
        res
    }

    /// Creates a regular file, writes its verified content (into its data
    /// extents for a sparse file, leaving the holes unwritten), applies its
    /// metadata. Creation and writes are direct syscalls (see
    /// [`Dir::create_file`]); blobs come through [`Restorer::read_blob`].
    pub(super) fn file(
        &mut self,
        dir: &Dir,
        name: &Name,
        rec: &EntryRecord,
        rel: &RelPath,
        order: usize,
        shown: &str,
    ) -> Result<()> {
        // Created with its permission bits (not set-ID or sticky bits,
        // which come after the chown), so the chmod is usually skipped; the
        // staging tree (mode 0700) keeps it from other users meanwhile.
        let out = dir
            .create_file(name, rec.mode & 0o777)
            .map_err(|e| entry_error(shown, "create", e))?;
        let progress = self.sh.progress;
        // Where the stored bytes go: the data extents, or the whole file.
        let extents: Vec<(u64, u64)> = match &rec.sparse {
            Some(e) => e.iter().map(|[o, l]| (*o, *l)).collect(),
            None => vec![(0, u64::MAX)],
        };
        let (mut ei, mut within) = (0usize, 0u64);
        let mut offset = 0u64;
        let chunks = rec.chunks.as_deref().unwrap_or(&[]);
        for hex in chunks {
            let id = blake3::Hash::from_hex(hex)
                .map_err(|_| integrity(shown, format!("chunk id {hex:?} is not BLAKE3 hex")))?;
            let bytes = self.read_blob(&id)?;
            let len = bytes.len() as u64;
            if rec.sparse.is_none() {
                fd::write_all_at(&out, bytes, offset).map_err(|e| Error::io("write", shown, e))?;
            } else {
                let mut done = 0usize;
                while done < bytes.len() {
                    let Some(&(start, elen)) = extents.get(ei) else {
                        return Err(integrity(shown, "more content than the sparse map holds"));
                    };
                    let n = ((elen - within) as usize).min(bytes.len() - done);
                    fd::write_all_at(&out, &bytes[done..done + n], start + within)
                        .map_err(|e| Error::io("write", shown, e))?;
                    done += n;
                    within += n as u64;
                    if within == elen {
                        ei += 1;
                        within = 0;
                    }
                }
            }
            offset += len;
            progress.inc(len);
        }
        // Every blob was checked against its id, and the chunk list against
        // the entries file's id, which the snapshot record names: the
        // content is verified without hashing it whole a second time. A
        // one-chunk file's recorded hash must still be that chunk's id.
        let consistent = match chunks {
            [one] => rec.hash.as_deref().is_none_or(|h| h == one),
            [] => rec
                .hash
                .as_deref()
                .is_none_or(|h| h == blake3::hash(b"").to_hex().as_str()),
            _ => true,
        };
        if !consistent {
            return Err(integrity(
                shown,
                "restored content does not match the file's BLAKE3",
            ));
        }
        let stored: u64 = match &rec.sparse {
            Some(e) => e.iter().map(|[_, l]| *l).sum(),
            None => rec.size.unwrap_or(offset),
        };
        if stored != offset {
            return Err(integrity(
                shown,
                format!("restored {offset} bytes, record says {stored}"),
            ));
        }
        if let (Some(_), Some(size)) = (&rec.sparse, rec.size) {
            // Trailing holes: set the length without writing.
            fd::truncate(&out, size).map_err(|e| Error::io("truncate", shown, e))?;
            self.summary.preservation_applied.sparse.applied += 1;
        }
        self.apply_fd_metadata(&out, rec, rel, order, shown)?;
        drop(out);
        self.summary.files += 1;
        self.summary.bytes += offset;
        Ok(())
    }

    /// Reads one blob and checks it against its id before handing it out.
    ///
    /// A blob past the current window (or in another pack) starts a new
    /// window of [`PACK_WINDOW`] bytes read at once: restore walks the
    /// packs in the order backup wrote them, so the blobs after it are then
    /// served from memory. A blob before the window (a deduplicated one)
    /// is read alone, leaving the window in place.
    pub(super) fn read_blob(&mut self, id: &blake3::Hash) -> Result<&[u8]> {
        let sh = self.sh;
        let loc = sh.index.get(id).ok_or_else(|| {
            integrity(
                sh.repo.display(crate::repo::layout::INDEX),
                format!("blob {id} is in no index"),
            )
        })?;
        let len = loc.length as usize;
        let hex = loc.pack.to_hex();
        let pack_path = sh.repo.file_path(FileKind::Pack, &hex);
        let end = loc
            .offset
            .checked_add(u64::from(loc.length))
            .ok_or_else(|| {
                integrity(
                    &pack_path,
                    format!(
                        "blob {id}: offset {} + length {} overflows",
                        loc.offset, loc.length
                    ),
                )
            })?;
        let in_window = |w: &Window| {
            w.pack == loc.pack && loc.offset >= w.start && end <= w.start + w.bytes.len() as u64
        };
        let sequential = self
            .window
            .as_ref()
            .is_none_or(|w| w.pack != loc.pack || loc.offset >= w.start + w.bytes.len() as u64);
        let read_err =
            |e: std::io::Error| integrity(&pack_path, format!("cannot read blob {id}: {e}"));
        let hit = self.window.as_ref().is_some_and(in_window);
        if !hit {
            if !self.packs.contains_key(&loc.pack) {
                if self.packs.len() >= 64 {
                    self.packs.clear();
                }
                let f = sh.repo.open_pack(&loc.pack)?;
                self.packs.insert(loc.pack, f);
            }
            let pack = &self.packs[&loc.pack];
            if sequential {
                let want = (self.ahead.min(PACK_WINDOW as u64) as usize).max(len);
                let mut bytes = pack.read_vec(loc.offset, want).map_err(read_err)?;
                if bytes.len() < len {
                    bytes = pack.read_exact_at(loc.offset, len).map_err(read_err)?;
                }
                self.window = Some(Window {
                    pack: loc.pack,
                    start: loc.offset,
                    bytes,
                });
            } else {
                self.single = pack.read_exact_at(loc.offset, len).map_err(read_err)?;
            }
        }
        let bytes = if hit || sequential {
            let w = self.window.as_ref().expect("window just filled");
            let at = (loc.offset - w.start) as usize;
            &w.bytes[at..at + len]
        } else {
            &self.single[..]
        };
        let plain = crate::repo::format::blob::verified(
            sh.repo.crypto(),
            bytes,
            loc.raw,
            id,
            &mut self.plain,
        )
        .map_err(|e| {
            integrity(
                pack_path,
                format!("blob {id} at offset {}: {e}", loc.offset),
            )
        })?;
        self.summary.blobs_verified += 1;
        self.ahead = self
            .ahead
            .saturating_sub(loc.plain_len(sh.repo.crypto().overhead()));
        Ok(plain)
    }
}
