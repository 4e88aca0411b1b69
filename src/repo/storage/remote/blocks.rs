//! Pack reads of a remote repository: packs are read in aligned blocks of
//! [`BLOCK`] bytes, shared by every reader of the backend (restore's
//! workers read windows of the same packs, and a block one fetched serves
//! the others), and fetched ahead of the readers:
//!
//! - a read through the blocks starts the fetch of the [`READ_AHEAD`]
//!   blocks after it (a pack is read front to back);
//! - [`Blocks::read_ahead`] starts the blocks of a range a caller is about
//!   to read (restore announces each batch of files before a worker takes
//!   it, which reaches into the next pack before any read does).
//!
//! A block being fetched is *pending*: a reader that needs it waits for it
//! instead of asking the server again. Fetches started ahead and not yet
//! read are at most [`AHEAD_MAX`]; the blocks kept (pending ones included)
//! are at most [`BLOCKS_KEPT`], which bounds the memory (48 MiB).
//!
//! Side effects: ranged `GET`s (`stat`s for a pack's size) on the backend's
//! runtime.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use opendal::Operator;

use super::{block, io_err, runtime, transfer};
use crate::repo::storage::Ranged;

/// Packs are read in aligned blocks of this many bytes.
pub(super) const BLOCK: u64 = 4 << 20;
/// Blocks kept for all packs together, pending ones included (48 MiB).
pub(super) const BLOCKS_KEPT: usize = 12;
/// Blocks fetched ahead of the readers and not read yet, at most.
pub(super) const AHEAD_MAX: usize = 6;
/// Blocks after a read through the blocks whose fetch it starts.
pub(super) const READ_AHEAD: u64 = 2;
/// A read shorter than this that the kept blocks do not serve is fetched
/// alone: a block for it would be mostly waste.
pub(super) const SMALL: u64 = 1 << 20;
/// Pack sizes remembered (from `stat`s), at most.
const SIZES_KEPT: usize = 4096;

/// A kept block.
enum Slot {
    /// Being fetched ahead of the readers.
    Pending,
    /// Fetched; `unread` while no reader has taken it since a read-ahead
    /// brought it.
    Ready { bytes: Arc<Vec<u8>>, unread: bool },
}

/// What a reader finds for a block.
enum Found {
    Ready(Arc<Vec<u8>>),
    Pending,
    Missing,
}

#[derive(Default)]
struct State {
    /// (pack key, block number) and its slot, least recently used first.
    kept: VecDeque<((String, u64), Slot)>,
    /// Pending blocks and ready ones not read yet.
    ahead: usize,
    /// Sizes of the packs opened.
    sizes: HashMap<String, u64>,
}

impl State {
    fn position(&self, key: &str, n: u64) -> Option<usize> {
        self.kept.iter().position(|((k, b), _)| *b == n && k == key)
    }

    /// A reader's look at block `n`: a ready block becomes the most
    /// recently used and counts as read.
    fn find(&mut self, key: &str, n: u64) -> Found {
        let Some(i) = self.position(key, n) else {
            return Found::Missing;
        };
        let Some(mut e) = self.kept.remove(i) else {
            return Found::Missing;
        };
        let found = match &mut e.1 {
            Slot::Pending => Found::Pending,
            Slot::Ready { bytes, unread } => {
                if *unread {
                    *unread = false;
                    self.ahead -= 1;
                }
                Found::Ready(bytes.clone())
            }
        };
        self.kept.push_back(e);
        found
    }

    /// Keeps a block a reader fetched (replacing a pending slot of it).
    fn put_read(&mut self, key: &str, n: u64, bytes: Arc<Vec<u8>>) {
        if let Some(i) = self.position(key, n) {
            if let Some((_, old)) = self.kept.remove(i) {
                if matches!(old, Slot::Pending | Slot::Ready { unread: true, .. }) {
                    self.ahead -= 1;
                }
            }
        }
        self.kept.push_back((
            (key.to_owned(), n),
            Slot::Ready {
                bytes,
                unread: false,
            },
        ));
        self.evict();
    }

    /// A read-ahead of block `n` ended: its bytes, or `None` when the
    /// fetch failed (a reader then fetches it itself and sees the error).
    fn arrived(&mut self, key: &str, n: u64, bytes: Option<Arc<Vec<u8>>>) {
        let Some(i) = self.position(key, n) else {
            return;
        };
        if !matches!(self.kept[i].1, Slot::Pending) {
            // A reader fetched it meanwhile.
            return;
        }
        match bytes {
            Some(bytes) => {
                self.kept[i].1 = Slot::Ready {
                    bytes,
                    unread: true,
                }
            }
            None => {
                self.kept.remove(i);
                self.ahead -= 1;
            }
        }
        self.evict();
    }

    /// Drops the least recently used ready blocks while more than
    /// [`BLOCKS_KEPT`] are kept, read ones before unread ones (a read-ahead
    /// is kept for its reader) unless [`AHEAD_MAX`] are ahead (then unread
    /// blocks nobody came for age out as read ones do); pending ones stay.
    fn evict(&mut self) {
        while self.kept.len() > BLOCKS_KEPT {
            let ready = |s: &Slot, only_read: bool| match s {
                Slot::Pending => false,
                Slot::Ready { unread, .. } => !(only_read && *unread),
            };
            let strict = self.ahead >= AHEAD_MAX;
            let i = self
                .kept
                .iter()
                .position(|(_, s)| ready(s, !strict))
                .or_else(|| self.kept.iter().position(|(_, s)| ready(s, false)));
            let Some(i) = i else { return };
            if matches!(self.kept[i].1, Slot::Ready { unread: true, .. }) {
                self.ahead -= 1;
            }
            self.kept.remove(i);
        }
    }
}

/// The blocks of a backend, shared by its open packs and the read-ahead
/// tasks.
#[derive(Default)]
pub(super) struct Blocks {
    state: Mutex<State>,
    /// Signalled when a pending block arrives or fails.
    arrived: Condvar,
}

impl std::fmt::Debug for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blocks({} kept)", self.lock().kept.len())
    }
}

impl Blocks {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The size of pack `key` if known.
    pub(super) fn size(&self, key: &str) -> Option<u64> {
        self.lock().sizes.get(key).copied()
    }

    /// Remembers the size of pack `key`.
    pub(super) fn set_size(&self, key: &str, size: u64) {
        let mut st = self.lock();
        if st.sizes.len() >= SIZES_KEPT {
            st.sizes.clear();
        }
        st.sizes.insert(key.to_owned(), size);
    }

    /// Starts fetching the blocks of pack `key` (`size` bytes long) that
    /// hold bytes `start..end`, each not kept or pending, one request per
    /// block, while fewer than [`AHEAD_MAX`] are ahead of the readers;
    /// returns at once. Errors are left to the reader that needs the
    /// block.
    pub(super) fn read_ahead(
        self: &Arc<Self>,
        op: &Operator,
        key: &str,
        size: u64,
        start: u64,
        end: u64,
    ) {
        let end = end.min(size);
        if start >= end {
            return;
        }
        let Ok(rt) = runtime() else { return };
        let mut st = self.lock();
        for n in start / BLOCK..=(end - 1) / BLOCK {
            if st.ahead >= AHEAD_MAX {
                return;
            }
            if st.position(key, n).is_some() {
                continue;
            }
            st.kept.push_back(((key.to_owned(), n), Slot::Pending));
            st.ahead += 1;
            let arrival = Arrival {
                blocks: self.clone(),
                key: key.to_owned(),
                n: Some(n),
            };
            let op = op.clone();
            rt.spawn(arrival.fetch(op, size));
        }
    }

    /// Bytes `offset..offset + buf.len()` of pack `key` (`size` bytes long)
    /// into `buf`, through the blocks; see [`RemoteFile`].
    fn read(
        self: &Arc<Self>,
        op: &Operator,
        key: &str,
        size: u64,
        buf: &mut [u8],
        offset: u64,
    ) -> io::Result<usize> {
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(size - offset);
        let (first, last) = (offset / BLOCK, (offset + want - 1) / BLOCK);
        // Wait for the pending blocks of the read, then take what is kept.
        let mut have: Vec<Option<Arc<Vec<u8>>>> = {
            let mut st = self.lock();
            loop {
                let found: Vec<Found> = (first..=last).map(|n| st.find(key, n)).collect();
                if found.iter().any(|f| matches!(f, Found::Pending)) {
                    st = self.arrived.wait(st).unwrap_or_else(|p| p.into_inner());
                    continue;
                }
                break found
                    .into_iter()
                    .map(|f| match f {
                        Found::Ready(b) => Some(b),
                        _ => None,
                    })
                    .collect();
            }
        };
        // A small read (a single blob) that the blocks do not hold is
        // fetched as it is.
        if want < SMALL && have.iter().any(Option::is_none) {
            let got = fetch_range(op, key, offset, offset + want)?;
            let mut at = 0;
            for chunk in got {
                buf[at..at + chunk.len()].copy_from_slice(&chunk);
                at += chunk.len();
            }
            return Ok(at);
        }
        // The next blocks, before this read waits on the server.
        self.read_ahead(
            op,
            key,
            size,
            (last + 1) * BLOCK,
            (last + 1 + READ_AHEAD) * BLOCK,
        );
        // Each run of missing blocks with one request.
        let mut n = first;
        while n <= last {
            if have[(n - first) as usize].is_some() {
                n += 1;
                continue;
            }
            let mut end = n;
            while end < last && have[(end + 1 - first) as usize].is_none() {
                end += 1;
            }
            let got = fetch_blocks(op, key, size, n, end)?;
            let mut st = self.lock();
            for (k, b) in got.into_iter().enumerate() {
                st.put_read(key, n + k as u64, b.clone());
                have[(n - first) as usize + k] = Some(b);
            }
            n = end + 1;
        }
        let mut at = 0usize;
        let mut pos = offset;
        for b in have.iter().flatten() {
            let within = (pos % BLOCK) as usize;
            let take = (b.len() - within).min(want as usize - at);
            buf[at..at + take].copy_from_slice(&b[within..within + take]);
            at += take;
            pos += take as u64;
        }
        Ok(at)
    }
}

/// Resolves the pending block of one read-ahead task when it arrives,
/// or as failed when dropped before (a failure, a panic, a cancelled
/// task), so no reader waits for a block nobody fetches.
struct Arrival {
    blocks: Arc<Blocks>,
    key: String,
    /// The block, until resolved.
    n: Option<u64>,
}

impl Arrival {
    async fn fetch(mut self, op: Operator, size: u64) {
        let Some(n) = self.n else { return };
        let (start, end) = (n * BLOCK, ((n + 1) * BLOCK).min(size));
        tracing::debug!(key = %self.key, start, end, "get block");
        let got = op.read_with(&self.key).range(start..end).await;
        let bytes = match got {
            Ok(b) if b.len() as u64 == end - start => {
                transfer().down.fetch_add(end - start, Ordering::Relaxed);
                Some(Arc::new(b.to_vec()))
            }
            _ => None,
        };
        self.n = None;
        self.resolve(n, bytes);
    }

    fn resolve(&self, n: u64, bytes: Option<Arc<Vec<u8>>>) {
        self.blocks.lock().arrived(&self.key, n, bytes);
        self.blocks.arrived.notify_all();
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        if let Some(n) = self.n.take() {
            self.resolve(n, None);
        }
    }
}

/// Bytes `start..end` of `key` with one ranged `GET`, as opendal's
/// buffer.
fn fetch_range(op: &Operator, key: &str, start: u64, end: u64) -> io::Result<opendal::Buffer> {
    tracing::debug!(key, start, end, "get range");
    let got = block(async move { op.read_with(key).range(start..end).await.map_err(io_err) })?;
    if got.len() as u64 != end - start {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{key}: {} bytes at offset {start} asked, {} came",
                end - start,
                got.len()
            ),
        ));
    }
    transfer().down.fetch_add(end - start, Ordering::Relaxed);
    Ok(got)
}

/// Blocks `from..=to` of `key` (`size` bytes long) with one request, each
/// copied once out of the response.
fn fetch_blocks(
    op: &Operator,
    key: &str,
    size: u64,
    from: u64,
    to: u64,
) -> io::Result<Vec<Arc<Vec<u8>>>> {
    let start = from * BLOCK;
    let end = ((to + 1) * BLOCK).min(size);
    let got = fetch_range(op, key, start, end)?;
    Ok((from..=to)
        .map(|n| {
            let a = ((n - from) * BLOCK) as usize;
            let b = (((n + 1 - from) * BLOCK) as usize).min(got.len());
            Arc::new(got.slice(a..b).to_vec())
        })
        .collect())
}

/// A remote pack read through the shared [`Blocks`]: a read takes the
/// blocks it spans from there (waiting for pending ones), fetches the
/// missing ones, each run of them with one ranged `GET`, and starts the
/// fetch of the [`READ_AHEAD`] blocks after it; a small read they do not
/// serve is one `GET` of just its bytes.
pub(super) struct RemoteFile {
    pub(super) op: Operator,
    pub(super) key: String,
    pub(super) size: u64,
    pub(super) blocks: Arc<Blocks>,
}

impl Ranged for RemoteFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.blocks
            .read(&self.op, &self.key, self.size, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(st: &mut State, key: &str, n: u64, unread: bool) {
        st.kept.push_back((
            (key.into(), n),
            Slot::Ready {
                bytes: Arc::new(vec![n as u8]),
                unread,
            },
        ));
        if unread {
            st.ahead += 1;
        }
    }

    /// Eviction keeps pending blocks, drops read ones before unread ones,
    /// and the count of blocks ahead follows every change.
    #[test]
    fn eviction_prefers_read_blocks_and_counts_ahead() {
        let mut st = State::default();
        st.kept.push_back((("p".into(), 0), Slot::Pending));
        st.ahead += 1;
        for n in 1..=BLOCKS_KEPT as u64 - 1 {
            ready(&mut st, "p", n, n % 4 == 2);
        }
        let ahead = st.ahead;
        // One more: the oldest read block (1) goes.
        st.put_read("q", 0, Arc::new(vec![]));
        assert_eq!(st.kept.len(), BLOCKS_KEPT);
        assert!(st.position("p", 1).is_none() && st.position("p", 0).is_some());
        assert_eq!(st.ahead, ahead);
        // With AHEAD_MAX ahead, the oldest ready block goes even unread.
        let mut full = State::default();
        for n in 0..=BLOCKS_KEPT as u64 {
            ready(&mut full, "p", n, n < AHEAD_MAX as u64);
        }
        full.evict();
        assert!(full.position("p", 0).is_none() && full.position("p", 1).is_some());
        assert_eq!(full.ahead, AHEAD_MAX - 1);
        // Reading an unread block lowers the count once.
        assert!(matches!(st.find("p", 2), Found::Ready(_)));
        assert!(matches!(st.find("p", 2), Found::Ready(_)));
        assert_eq!(st.ahead, ahead - 1);
        // The pending one arrives unread; a failed one is removed.
        st.arrived("p", 0, Some(Arc::new(vec![])));
        assert_eq!(st.ahead, ahead - 1);
        st.kept.push_back((("r".into(), 0), Slot::Pending));
        st.ahead += 1;
        st.arrived("r", 0, None);
        assert!(st.position("r", 0).is_none());
        assert_eq!(st.ahead, ahead - 1);
        // A reader's fetch replaces a pending slot and ends its count.
        st.kept.push_back((("s".into(), 0), Slot::Pending));
        st.ahead += 1;
        st.put_read("s", 0, Arc::new(vec![]));
        assert_eq!(st.ahead, ahead - 1);
        st.arrived("s", 0, Some(Arc::new(vec![])));
        assert_eq!(st.ahead, ahead - 1);
        // Only unread and pending blocks left: unread ones go, pending stay.
        let mut st = State::default();
        for n in 0..BLOCKS_KEPT as u64 {
            st.kept.push_back((("p".into(), n), Slot::Pending));
        }
        st.ahead = BLOCKS_KEPT;
        ready(&mut st, "p", 99, true);
        st.evict();
        assert_eq!(st.kept.len(), BLOCKS_KEPT);
        assert_eq!(st.ahead, BLOCKS_KEPT);
    }
}
