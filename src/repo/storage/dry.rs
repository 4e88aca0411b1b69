//! [`DryRun`]: a backend that reads through to a repository and writes
//! nothing, for `snap backup --dry-run`: every put reports the bytes it
//! would have added, so a backup run through it counts what a real one
//! would store.
//!
//! Side effects: those of the inner backend's reads and locks; no writes.

use std::any::Any;
use std::io;
use std::sync::Arc;

use super::{Backend, FileKind, Put, Ranged, Staged, Syncs};

/// Reads go to `inner`; puts are counted, not made.
#[derive(Debug)]
pub struct DryRun {
    inner: Arc<dyn Backend>,
}

impl DryRun {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        DryRun { inner }
    }
}

/// A staged file that keeps only its length.
struct Counted(u64);

impl Staged for Counted {
    fn append(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        self.0 += parts.iter().map(|p| p.len() as u64).sum::<u64>();
        Ok(())
    }

    fn len(&self) -> u64 {
        self.0
    }

    fn start_writeback(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn discard(self: Box<Self>) {}

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

fn refused(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("a dry run does not {what}"),
    )
}

impl Backend for DryRun {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn path(&self, kind: FileKind, id: &str) -> String {
        self.inner.path(kind, id)
    }

    fn prepare(&self, _fresh: bool) -> io::Result<Option<String>> {
        Err(refused("create a repository"))
    }

    fn list(&self, kind: FileKind) -> io::Result<Vec<String>> {
        self.inner.list(kind)
    }

    fn exists(&self, kind: FileKind, id: &str) -> io::Result<bool> {
        self.inner.exists(kind, id)
    }

    fn read(&self, kind: FileKind, id: &str, max: u64) -> io::Result<Vec<u8>> {
        self.inner.read(kind, id, max)
    }

    fn open(&self, kind: FileKind, id: &str) -> io::Result<Box<dyn Ranged>> {
        self.inner.open(kind, id)
    }

    fn reads_ahead(&self) -> bool {
        self.inner.reads_ahead()
    }

    fn read_ahead(&self, kind: FileKind, id: &str, start: u64, end: u64) {
        self.inner.read_ahead(kind, id, start, end);
    }

    fn puts_need_no_barrier(&self) -> bool {
        true
    }

    fn is_dry_run(&self) -> bool {
        true
    }

    fn stage(&self, _kind: FileKind) -> io::Result<Box<dyn Staged>> {
        Ok(Box::new(Counted(0)))
    }

    fn put_staged(
        &self,
        staged: Box<dyn Staged>,
        kind: FileKind,
        id: &str,
        _sync_data: bool,
        _syncs: &mut Syncs,
    ) -> io::Result<Put> {
        super::valid(kind, id)?;
        let n = super::own::<Counted>(staged)?.0;
        Ok(if self.inner.exists(kind, id)? {
            Put::Existed
        } else {
            Put::Created(n)
        })
    }

    fn sync_names(&self, kind: FileKind, id: &str, _syncs: &mut Syncs) -> io::Result<()> {
        super::valid(kind, id)
    }

    fn put(&self, kind: FileKind, id: &str, bytes: &[u8], _syncs: &mut Syncs) -> io::Result<Put> {
        super::valid(kind, id)?;
        Ok(if self.inner.exists(kind, id)? {
            Put::Existed
        } else {
            Put::Created(bytes.len() as u64)
        })
    }

    fn replace_config(&self, _bytes: &[u8], _syncs: &mut Syncs) -> io::Result<()> {
        Err(refused("replace config.json"))
    }

    fn remove(&self, _kind: FileKind, _id: &str) -> io::Result<()> {
        Err(refused("remove files"))
    }

    fn barrier(&self, _syncs: &mut Syncs) -> io::Result<()> {
        Ok(())
    }

    fn try_lock(&self, exclusive: bool) -> io::Result<Option<Box<dyn Send + Sync>>> {
        self.inner.try_lock(exclusive)
    }

    fn lock_note(&self) -> String {
        self.inner.lock_note()
    }

    fn lock_path(&self) -> String {
        self.inner.lock_path()
    }

    fn caches_blobs(&self) -> bool {
        self.inner.caches_blobs()
    }

    fn cached_blob(&self, id: &str) -> Option<Vec<u8>> {
        self.inner.cached_blob(id)
    }

    fn staging(&self) -> io::Result<Vec<String>> {
        self.inner.staging()
    }

    fn clean_staging(&self) -> io::Result<u64> {
        Err(refused("clean tmp/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::storage::memory::MemoryBackend;

    /// Reads see the repository; puts report what they would add and
    /// leave it as it was.
    #[test]
    fn puts_are_counted_and_not_made() {
        let inner: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let have = "ab".repeat(32);
        inner
            .put(FileKind::Pack, &have, b"old", &mut Syncs::default())
            .unwrap();
        let d = DryRun::new(inner.clone());
        let new = "cd".repeat(32);
        assert_eq!(
            d.put(FileKind::Index, &new, b"12345", &mut Syncs::default())
                .unwrap(),
            Put::Created(5)
        );
        let mut s = d.stage(FileKind::Pack).unwrap();
        s.append(&[b"ab", b"cde"]).unwrap();
        assert_eq!(
            d.put_staged(s, FileKind::Pack, &new, true, &mut Syncs::default())
                .unwrap(),
            Put::Created(5)
        );
        let s = d.stage(FileKind::Pack).unwrap();
        assert_eq!(
            d.put_staged(s, FileKind::Pack, &have, true, &mut Syncs::default())
                .unwrap(),
            Put::Existed
        );
        assert_eq!(d.read(FileKind::Pack, &have, 10).unwrap(), b"old");
        assert!(!inner.exists(FileKind::Index, &new).unwrap());
        assert!(!inner.exists(FileKind::Pack, &new).unwrap());
        assert!(d.remove(FileKind::Pack, &have).is_err());
        assert!(inner.exists(FileKind::Pack, &have).unwrap());
    }
}
