//! Reading an entries file a piece at a time, checked against its id.
//!
//! Side effects: reads the file through the repository's backend.

use super::format::entries::ENTRIES_LINE_MAX;
use super::storage::Ranged;
use crate::error::{Error, Result};

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
        let mut r = repo.entries_reader(&id, 64).unwrap();
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
        let mut r = other.entries_reader(&id, 1 << 20).unwrap();
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
