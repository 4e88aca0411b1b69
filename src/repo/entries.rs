//! Reading a snapshot's entries a piece at a time, checked against its
//! id: an entries file (format 2), or a stream of blobs in packs (format
//! 3, [`ChunkedEntries`]).
//!
//! Side effects: reads files through the repository's backend.

use std::io;
use std::sync::{Arc, Mutex};

use super::format::entries::ENTRIES_LINE_MAX;
use super::storage::{Backend, FileKind, Ranged};
use super::Index;
use crate::error::{Error, Result};

/// A format-3 entries stream read as one file: its blobs in order, each
/// read from its pack, decoded and checked against its id before any of
/// its bytes are handed out. Holds the last blob's plaintext (at most a
/// chunk, 1 MiB, or one longer record) and the last pack opened.
pub struct ChunkedEntries {
    store: Arc<dyn Backend>,
    index: Arc<Index>,
    crypto: crate::repo::crypto::Crypto,
    /// Each blob and the stream offset it starts at.
    chunks: Vec<(blake3::Hash, u64)>,
    size: u64,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    /// (chunk number, plaintext) of the last blob read.
    plain: Option<(usize, Vec<u8>)>,
    pack: Option<(blake3::Hash, Box<dyn Ranged>)>,
}

impl ChunkedEntries {
    /// The stream of `chunks` (hex blob ids), each located through
    /// `index`; `path` names the stream in errors.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for an id that is not BLAKE3 hex or a blob no
    /// index lists.
    pub fn open(
        store: Arc<dyn Backend>,
        index: Arc<Index>,
        crypto: crate::repo::crypto::Crypto,
        chunks: &[String],
        path: &str,
    ) -> Result<ChunkedEntries> {
        let mut out = Vec::with_capacity(chunks.len());
        let mut at = 0u64;
        for hex in chunks {
            let bad = |detail: String| Error::Integrity {
                path: path.to_owned(),
                detail,
            };
            let id = blake3::Hash::from_hex(hex)
                .map_err(|_| bad(format!("entries blob id {hex:?} is not BLAKE3 hex")))?;
            let loc = index
                .get(&id)
                .ok_or_else(|| bad(format!("entries blob {id} is in no index")))?;
            out.push((id, at));
            at += loc.plain_len(crypto.overhead());
        }
        Ok(ChunkedEntries {
            store,
            index,
            crypto,
            chunks: out,
            size: at,
            cache: Mutex::default(),
        })
    }

    /// Copies plaintext of chunk `k` from `within` into `buf`; returns the
    /// bytes copied.
    fn copy_from(&self, k: usize, within: usize, buf: &mut [u8]) -> io::Result<usize> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.plain.as_ref().is_none_or(|(n, _)| *n != k) {
            let (id, _) = self.chunks[k];
            let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
            let loc = self
                .index
                .get(&id)
                .ok_or_else(|| bad(format!("entries blob {id} is in no index")))?;
            let hex = id.to_hex();
            // A remote repository's local cache first: a copy that does
            // not verify is dropped and the blob read from its pack.
            let cached = self
                .store
                .cached_blob(&hex)
                .filter(|b| b.len() == loc.length as usize)
                .and_then(|b| {
                    let got = super::format::blob::verified_owned(&self.crypto, b, loc.raw, &id);
                    if got.is_err() {
                        self.store.forget_blob(&hex);
                    }
                    got.ok()
                });
            let got = match cached {
                Some(got) => got,
                None => {
                    if c.pack.as_ref().is_none_or(|(p, _)| *p != loc.pack) {
                        let f = self.store.open(FileKind::Pack, &loc.pack.to_hex())?;
                        c.pack = Some((loc.pack, f));
                    }
                    let (_, f) = c.pack.as_ref().expect("opened above");
                    let stored = f.read_exact_at(loc.offset, loc.length as usize)?;
                    let keep = self.store.caches_blobs().then(|| stored.clone());
                    let got =
                        super::format::blob::verified_owned(&self.crypto, stored, loc.raw, &id)
                            .map_err(|e| {
                                bad(format!(
                                    "entries blob {id} in {}: {e}",
                                    self.store.path(FileKind::Pack, &loc.pack.to_hex())
                                ))
                            })?;
                    if let Some(stored) = keep {
                        self.store.keep_blob(&hex, &stored);
                    }
                    got
                }
            };
            c.plain = Some((k, got));
        }
        let (_, plain) = c.plain.as_ref().expect("filled above");
        let n = buf.len().min(plain.len().saturating_sub(within));
        buf[..n].copy_from_slice(&plain[within..within + n]);
        Ok(n)
    }
}

impl Ranged for ChunkedEntries {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0usize;
        let mut at = offset;
        while done < buf.len() && at < self.size {
            // The last chunk starting at or before `at`.
            let k = self.chunks.partition_point(|&(_, start)| start <= at) - 1;
            let within = (at - self.chunks[k].1) as usize;
            let n = self.copy_from(k, within, &mut buf[done..])?;
            if n == 0 {
                break;
            }
            done += n;
            at += n as u64;
        }
        Ok(done)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}

/// An entries file read a piece at a time (restore streams its snapshot's
/// this way, so its memory does not grow with the number of entries).
/// Every byte goes into a running BLAKE3; the last piece is handed out
/// only once the whole file matched its id.
pub struct EntriesReader {
    /// Bytes read at once.
    piece: usize,
    path: String,
    id: String,
    file: Box<dyn Ranged>,
    hasher: blake3::Hasher,
    at: u64,
    /// A line begun in the last read, not yet ended.
    carry: Vec<u8>,
    /// Number (from 1) of the next piece's first line.
    next_line: usize,
    done: bool,
}

impl EntriesReader {
    /// The file's path, for messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The next piece: whole lines of about the piece size the reader was
    /// opened with (more when one line is longer), and the number (from 1)
    /// of its first line; `None` after the last.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for a read error, or at the end when the bytes
    /// read do not match the file's id.
    pub fn next_piece(&mut self) -> Result<Option<(Vec<u8>, usize)>> {
        if self.done {
            return Ok(None);
        }
        let mut buf = std::mem::take(&mut self.carry);
        loop {
            let old = buf.len();
            buf.resize(old + self.piece, 0);
            let n = self
                .file
                .read_at(&mut buf[old..], self.at)
                .map_err(|e| Error::Integrity {
                    path: self.path.clone(),
                    detail: format!("cannot read entries file: {e}"),
                })?;
            buf.truncate(old + n);
            self.hasher.update(&buf[old..]);
            self.at += n as u64;
            if n == 0 {
                self.done = true;
                crate::repo::format::check_hash(
                    &self.hasher.finalize(),
                    &self.id,
                    &self.path,
                    "entries file",
                )?;
                if buf.is_empty() {
                    return Ok(None);
                }
                break;
            }
            if let Some(end) = memchr::memrchr(b'\n', &buf[old..]) {
                self.carry = buf.split_off(old + end + 1);
                break;
            }
            if buf.len() > ENTRIES_LINE_MAX {
                return Err(Error::Integrity {
                    path: self.path.clone(),
                    detail: format!(
                        "a line longer than {ENTRIES_LINE_MAX} bytes, more than a record may hold"
                    ),
                });
            }
        }
        let first = self.next_line;
        self.next_line += memchr::memchr_iter(b'\n', &buf).count();
        Ok(Some((buf, first)))
    }
}

impl EntriesReader {
    /// A reader of `file`, the entries file `id` shown as `path`, in
    /// pieces of about `piece` bytes.
    pub(crate) fn new(file: Box<dyn Ranged>, id: &str, path: String, piece: usize) -> Self {
        EntriesReader {
            piece: piece.max(1),
            path,
            id: id.to_owned(),
            file,
            hasher: blake3::Hasher::new(),
            at: 0,
            carry: Vec::new(),
            next_line: 1,
            done: false,
        }
    }
}

#[cfg(test)]
mod tests {
    /// Writes `text` as entries file `id` of a new repository in `dir`.
    fn entries_file(_dir: &std::path::Path, id: &str, text: &[u8]) -> crate::repo::Repo {
        use crate::repo::storage::{FileKind, Syncs};
        let repo = crate::repo::Repo::memory();
        repo.store()
            .put(FileKind::Entries, id, text, &mut Syncs::default())
            .unwrap();
        repo
    }

    #[test]
    fn entries_reader_hands_out_whole_lines_and_checks_the_id_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = Vec::new();
        for i in 0..500 {
            // Lines of 1 to 300 bytes: some longer than a piece of 64.
            text.extend_from_slice(format!("{i} {}\n", "y".repeat(i * 7 % 300)).as_bytes());
        }
        text.extend_from_slice(b"last line without a line end");
        let id = blake3::hash(&text).to_hex().to_string();
        let repo = entries_file(dir.path(), &id, &text);
        let entries = crate::repo::EntriesRef {
            id: id.clone(),
            count: 0,
            chunks: None,
        };
        let mut r = repo.entries_reader(&entries, 64).unwrap();
        let (mut all, mut pieces, mut line) = (Vec::new(), 0, 1);
        while let Some((piece, first)) = r.next_piece().unwrap() {
            assert_eq!(first, line, "piece {pieces} numbered from its first line");
            assert!(piece.starts_with(format!("{} ", first - 1).as_bytes()) || first == 501);
            line += memchr::memchr_iter(b'\n', &piece).count();
            all.extend_from_slice(&piece);
            pieces += 1;
        }
        assert_eq!(all, text);
        assert!(pieces > 100, "{pieces} pieces");
        assert!(r.next_piece().unwrap().is_none());

        // An altered file: its last piece is withheld and the id error
        // comes instead.
        let mut bad = text.clone();
        bad[10] ^= 1;
        let other = entries_file(&dir.path().join("b"), &id, &bad);
        let mut r = other.entries_reader(&entries, 1 << 20).unwrap();
        let err = loop {
            match r.next_piece() {
                Ok(Some((piece, _))) => assert!(!piece.ends_with(b"without a line end")),
                Ok(None) => panic!("an altered entries file read to its end"),
                Err(e) => break e.to_string(),
            }
        };
        assert!(err.contains("does not match its BLAKE3 id"), "{err}");
    }
}
