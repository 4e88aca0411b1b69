//! [`MemoryBackend`]: a repository held in memory, for unit tests of the
//! format and the commit protocol. Puts are create-only and atomic (a
//! staged file is invisible until put); the barrier only counts; the lock
//! is a reader-writer lock within the process.
//!
//! Side effects: none outside the process.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{own, too_large, valid, Backend, FileKind, Put, Ranged, Staged, Syncs};
use crate::repo::layout;

type Files = BTreeMap<(FileKind, String), Arc<Vec<u8>>>;

/// Lock state: an exclusive holder, or the number of shared holders.
#[derive(Debug, Default)]
struct LockState {
    exclusive: bool,
    shared: u32,
}

/// A repository in memory.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    files: Mutex<Files>,
    staged: Arc<Mutex<BTreeSet<u64>>>,
    next: AtomicU64,
    lock: Arc<Mutex<LockState>>,
}

impl MemoryBackend {
    /// An empty one.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, kind: FileKind, id: &str) -> io::Result<Arc<Vec<u8>>> {
        valid(kind, id)?;
        self.files()
            .get(&(kind, key(kind, id)))
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, layout::path(kind, id)))
    }
}

/// The config has one file whatever the id.
fn key(kind: FileKind, id: &str) -> String {
    if kind == FileKind::Config {
        String::new()
    } else {
        id.to_owned()
    }
}

struct MemoryFile(Arc<Vec<u8>>);

impl Ranged for MemoryFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

struct MemoryStaged {
    token: u64,
    bytes: Vec<u8>,
    staged: Arc<Mutex<BTreeSet<u64>>>,
}

impl MemoryStaged {
    fn forget(&self) {
        self.staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.token);
    }
}

impl Staged for MemoryStaged {
    fn append(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        for p in parts {
            self.bytes.extend_from_slice(p);
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn start_writeback(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn discard(self: Box<Self>) {
        self.forget();
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// A held lock; releases when dropped.
struct Held {
    state: Arc<Mutex<LockState>>,
    exclusive: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.exclusive {
            s.exclusive = false;
        } else {
            s.shared -= 1;
        }
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory:".into()
    }

    fn prepare(&self, fresh: bool) -> io::Result<Option<String>> {
        if fresh {
            if let Some(((kind, id), _)) = self.files().iter().next() {
                return Ok(Some(layout::path(*kind, id)));
            }
        }
        Ok(None)
    }

    fn list(&self, kind: FileKind) -> io::Result<Vec<String>> {
        Ok(self
            .files()
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(k, id)| {
                let p = layout::path(*k, id);
                match k.dir() {
                    "" => p,
                    d => p[d.len() + 1..].to_owned(),
                }
            })
            .collect())
    }

    fn exists(&self, kind: FileKind, id: &str) -> io::Result<bool> {
        valid(kind, id)?;
        Ok(self.files().contains_key(&(kind, key(kind, id))))
    }

    fn read(&self, kind: FileKind, id: &str, max: u64) -> io::Result<Vec<u8>> {
        let b = self.get(kind, id)?;
        if b.len() as u64 > max {
            return Err(too_large(b.len() as u64, max));
        }
        Ok(b.to_vec())
    }

    fn open(&self, kind: FileKind, id: &str) -> io::Result<Box<dyn Ranged>> {
        Ok(Box::new(MemoryFile(self.get(kind, id)?)))
    }

    fn stage(&self, _kind: FileKind) -> io::Result<Box<dyn Staged>> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token);
        Ok(Box::new(MemoryStaged {
            token,
            bytes: Vec::new(),
            staged: Arc::clone(&self.staged),
        }))
    }

    fn put_staged(
        &self,
        staged: Box<dyn Staged>,
        kind: FileKind,
        id: &str,
        sync_data: bool,
        syncs: &mut Syncs,
    ) -> io::Result<Put> {
        let s = own::<MemoryStaged>(staged)?;
        s.forget();
        valid(kind, id)?;
        if sync_data {
            syncs.run(|| Ok(()))?;
        }
        let mut files = self.files();
        let k = (kind, key(kind, id));
        if files.contains_key(&k) {
            return Ok(Put::Existed);
        }
        let len = s.bytes.len() as u64;
        files.insert(k, Arc::new(s.bytes));
        Ok(Put::Created(len))
    }

    fn replace_config(&self, bytes: &[u8], syncs: &mut Syncs) -> io::Result<()> {
        syncs.run(|| Ok(()))?;
        self.files().insert(
            (FileKind::Config, key(FileKind::Config, "")),
            Arc::new(bytes.to_vec()),
        );
        Ok(())
    }

    fn sync_names(&self, kind: FileKind, id: &str, syncs: &mut Syncs) -> io::Result<()> {
        valid(kind, id)?;
        syncs.run(|| Ok(()))
    }

    fn remove(&self, kind: FileKind, id: &str) -> io::Result<()> {
        valid(kind, id)?;
        match self.files().remove(&(kind, key(kind, id))) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                layout::path(kind, id),
            )),
        }
    }

    fn barrier(&self, syncs: &mut Syncs) -> io::Result<()> {
        syncs.run(|| Ok(()))
    }

    fn try_lock(&self, exclusive: bool) -> io::Result<Option<Box<dyn Send + Sync>>> {
        let mut s = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if s.exclusive || (exclusive && s.shared > 0) {
            return Ok(None);
        }
        if exclusive {
            s.exclusive = true;
        } else {
            s.shared += 1;
        }
        Ok(Some(Box::new(Held {
            state: Arc::clone(&self.lock),
            exclusive,
        })))
    }

    fn lock_note(&self) -> String {
        format!("pid={} (in memory)", std::process::id())
    }

    fn staging(&self) -> io::Result<Vec<String>> {
        Ok(self
            .staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|t| format!("staged-{t}"))
            .collect())
    }

    fn clean_staging(&self) -> io::Result<u64> {
        let mut s = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        let n = s.len() as u64;
        s.clear();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        crate::repo::storage::conformance::run(&super::MemoryBackend::new());
    }
}
