//! The content pipeline of a backup, three threads joined by bounded
//! channels:
//!
//! 1. the walker (the caller's thread, with its io_uring ring) stats,
//!    opens and reads files and sends their bytes as [`Msg`]s;
//! 2. the chunker cuts them into FastCDC chunks where they lie (a
//!    [`Cutter`] carries the cut search from one read buffer to the next),
//!    hashes each with BLAKE3, keeps the blobs the repository lacks and
//!    collects them for 16 MiB packs as pieces of the read buffers;
//! 3. the packer puts each finished pack with vectored writes from those
//!    buffers and makes them durable in batches ([`commit::PackWriter`]:
//!    one barrier, then the names), so waiting for the disk overlaps
//!    reading and hashing.
//!
//! No blob byte is copied in user space between the read and the pack
//! write: a read buffer is shared ([`ReadBuf`]) by the chunker and the packs
//! holding chunks of it, and goes back to the walker when the last lets go.
//!
//! Memory is bounded by the channels: at most [`DATA_QUEUE`] reads of
//! up to 4 MiB wait for the chunker, which holds the read buffers of one
//! unfinished chunk (at most 8 MiB, so three buffers) and those of one
//! pack's blobs (16 MiB of blobs, and at most [`PACK_HELD_LIMIT`] of
//! buffers), and at most [`PACK_QUEUE`] packs wait for the packer.
//!
//! Side effects: reads source files (the walker), writes packs through
//! the repository's backend (the packer); threads are joined by the caller.

use std::collections::{HashSet, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender};

use super::cdc::Cutter;
use crate::error::{Error, Result};
use crate::policy::Compression;
use crate::repo::crypto::{Ad, Crypto};
use crate::repo::format::blob::{self, Encoder};
use crate::repo::pack::{FinishedPack, PackBuilder, PackVersion, Part};
use crate::repo::{commit, ChunkerParams, IndexPack, Repo, Syncs, PACK_TARGET};

/// Reads that may wait for the chunker.
pub const DATA_QUEUE: usize = 8;
/// Finished packs that may wait for the packer.
pub const PACK_QUEUE: usize = 1;

/// Read buffers smaller than this are left to the allocator, and reads
/// smaller than this take no recycled buffer. Half the walker's read size
/// (4 MiB): a pack holds the buffers its new chunks were read into, so a
/// buffer is never more than twice the bytes read into it.
pub const RECYCLE_FROM: usize = 2 << 20;

/// A read buffer shared by the chunker's pending bytes and the packs that
/// hold chunks of it; the last holder to drop it hands it back to the
/// walker's pool (dropped when the pool is full).
#[derive(Clone)]
pub struct ReadBuf {
    buf: Option<std::sync::Arc<Vec<u8>>>,
    back: Option<SyncSender<Vec<u8>>>,
}

impl ReadBuf {
    /// Wraps a read; a large one goes back through `reads_back` (the
    /// walker's pool) once the last holder drops it, so reads reuse memory
    /// that is already mapped instead of faulting in fresh pages.
    fn new(buf: Vec<u8>, reads_back: &SyncSender<Vec<u8>>) -> Self {
        let back = (buf.capacity() >= RECYCLE_FROM).then(|| reads_back.clone());
        Self {
            buf: Some(std::sync::Arc::new(buf)),
            back,
        }
    }

    fn len(&self) -> usize {
        self.as_ref().len()
    }

    /// Bytes of memory the buffer holds (its capacity).
    fn held(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.capacity())
    }

    fn same(&self, other: &ReadBuf) -> bool {
        match (&self.buf, &other.buf) {
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// A pack is sent once the read buffers it holds reach this many bytes,
/// however little of them its blobs use: when most chunks of a file are
/// already stored, each new one would otherwise keep a whole 4 MiB read
/// buffer in memory until its pack is full.
const PACK_HELD_LIMIT: usize = 2 * PACK_TARGET;

impl AsRef<[u8]> for ReadBuf {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_deref().map_or(&[], |b| b.as_slice())
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        if let (Some(back), Some(buf)) = (&self.back, self.buf.take()) {
            if let Some(buf) = std::sync::Arc::into_inner(buf) {
                let _ = back.try_send(buf);
            }
        }
    }
}

/// What the walker sends the chunker, in walk order.
pub enum Msg {
    /// The next bytes of file record `idx` (its first when the record
    /// changes); `end` when they are its last.
    Data {
        /// Record index in the walker's list.
        idx: usize,
        /// The bytes read.
        bytes: Vec<u8>,
        /// No more bytes follow for this record.
        end: bool,
        /// The walker hashes this file's whole content itself (so the
        /// chunker hashes only chunks); with `end`, that hash.
        whole: Option<Option<blake3::Hash>>,
    },
    /// The current file could not be read to the end: forget it.
    Discard,
}

/// The stored content of one file record.
pub struct FileContent {
    /// Index of the record in the walker's list.
    pub idx: usize,
    /// Blob ids of its chunks, in order.
    pub chunks: Vec<String>,
    /// BLAKE3 hex of the whole content.
    pub hash: String,
}

/// What the chunker hands back when the walker is done.
pub struct Chunked {
    /// Blobs new to the repository.
    pub new_blobs: u64,
    /// Their bytes.
    pub new_blob_bytes: u64,
}

/// What the packer hands back.
pub struct Packed {
    /// Index rows of every pack written.
    pub packs: Vec<IndexPack>,
    /// Pack bytes written.
    pub bytes_added: u64,
    /// Its sync accounting.
    pub syncs: Syncs,
}

/// The error a stage returns when the next stage has gone away; the caller
/// reports that stage's own error instead.
pub fn downstream_gone() -> Error {
    Error::Internal("a later stage of the backup pipeline stopped".into())
}

struct Current {
    idx: usize,
    chunks: Vec<String>,
    /// The whole-content hash, unless the walker computes it.
    whole: Option<blake3::Hasher>,
    /// The id of the only chunk of a one-chunk file.
    first: Option<blake3::Hash>,
}

/// Runs the chunker until the walker's sender is dropped. The index of
/// `repo` is loaded when the first chunk is cut (a backup that reads no file
/// never needs it).
///
/// # Errors
///
/// [`downstream_gone`] when the packer stopped; as
/// [`crate::repo::Repo::load_index`].
pub fn chunker(
    rx: Receiver<Msg>,
    packs: SyncSender<PackBuilder<ReadBuf>>,
    params: ChunkerParams,
    repo: &crate::repo::Repo,
    reads_back: SyncSender<Vec<u8>>,
    contents: std::sync::mpsc::Sender<FileContent>,
) -> Result<Chunked> {
    let mut out = Chunked {
        new_blobs: 0,
        new_blob_bytes: 0,
    };
    let mut new: HashSet<blake3::Hash> = HashSet::new();
    let mut known: Option<std::sync::Arc<crate::repo::Index>> = None;
    let mut pack = PackBuilder::default();
    // Memory the pack's buffers hold, and the last buffer counted.
    let mut held = 0usize;
    let mut last: Option<ReadBuf> = None;
    // The current file's bytes not yet cut, as the walker's read buffers
    // (the first from `head` on): chunks are hashed and packed from them
    // where they lie.
    let mut pending: VecDeque<ReadBuf> = VecDeque::new();
    let mut head = 0usize;
    let mut avail = 0usize;
    let mut cutter = Cutter::new(&params)?;
    let mut cur: Option<Current> = None;
    let mut store = |id: blake3::Hash,
                     parts: &mut dyn Iterator<Item = Part<ReadBuf>>,
                     len: usize,
                     out: &mut Chunked|
     -> Result<()> {
        let known = match &known {
            Some(k) => k,
            None => known.insert(repo.index()?),
        };
        if known.contains(&id) || !new.insert(id) {
            return Ok(());
        }
        let parts: Vec<Part<ReadBuf>> = parts.collect();
        for part in &parts {
            if !last.as_ref().is_some_and(|l| l.same(&part.buf)) {
                held += part.buf.held();
                last = Some(part.buf.clone());
            }
        }
        pack.add(id, parts);
        out.new_blobs += 1;
        out.new_blob_bytes += len as u64;
        if pack.data_len() >= PACK_TARGET || held >= PACK_HELD_LIMIT {
            let full = std::mem::take(&mut pack);
            packs.send(full).map_err(|_| downstream_gone())?;
            (held, last) = (0, None);
        }
        Ok(())
    };
    for msg in rx {
        match msg {
            Msg::Data {
                idx,
                bytes,
                end,
                whole,
            } => {
                if cur.as_ref().is_none_or(|c| c.idx != idx) {
                    pending.clear();
                    (head, avail) = (0, 0);
                    cutter.restart();
                    cur = Some(Current {
                        idx,
                        chunks: Vec::new(),
                        whole: whole.is_none().then(|| repo.crypto().hasher()),
                        first: None,
                    });
                }
                let c = cur.as_mut().expect("current file");
                avail += bytes.len();
                pending.push_back(ReadBuf::new(bytes, &reads_back));
                loop {
                    let slices = pending.iter().enumerate().map(|(k, b)| {
                        let b = b.as_ref();
                        if k == 0 {
                            &b[head..]
                        } else {
                            b
                        }
                    });
                    let Some(len) = cutter.next_cut(slices, avail, end) else {
                        break;
                    };
                    // The chunk as (buffer in `pending`, range in it).
                    let mut pieces: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
                    let mut need = len;
                    for (k, b) in pending.iter().enumerate() {
                        let from = if k == 0 { head } else { 0 };
                        let n = need.min(b.len() - from);
                        pieces.push((k, from..from + n));
                        need -= n;
                        if need == 0 {
                            break;
                        }
                    }
                    let parts: Vec<&[u8]> = pieces
                        .iter()
                        .map(|(k, r)| &pending[*k].as_ref()[r.clone()])
                        .collect();
                    let id = match parts.as_slice() {
                        [one] => repo.crypto().id(one),
                        _ => {
                            let mut h = repo.crypto().hasher();
                            for part in &parts {
                                h.update(part);
                            }
                            h.finalize()
                        }
                    };
                    // The whole-file hash of a one-chunk file is that chunk's
                    // id: only files of several chunks are hashed a second
                    // time.
                    if c.chunks.is_empty() && end && len == avail {
                        c.first = Some(id);
                    } else if let Some(w) = c.whole.as_mut() {
                        for part in &parts {
                            w.update(part);
                        }
                    }
                    let mut shared = pieces.into_iter().map(|(k, range)| Part {
                        buf: pending[k].clone(),
                        range,
                    });
                    store(id, &mut shared, len, &mut out)?;
                    c.chunks.push(id.to_hex().to_string());
                    avail -= len;
                    head += len;
                    while pending.front().is_some_and(|b| b.len() <= head) {
                        let b = pending.pop_front().expect("front");
                        head -= b.len();
                    }
                }
                if !end {
                    continue;
                }
                debug_assert_eq!(avail, 0, "every byte of a file is cut at its end");
                let c = cur.take().expect("current file");
                let hash = match (c.chunks.len(), c.first, c.whole, whole) {
                    // An empty file's hash is the unkeyed BLAKE3 of
                    // nothing in every repository: the value readers check
                    // without a key (docs/FORMAT.md, "Encryption").
                    (0, ..) => blake3::hash(b""),
                    (_, Some(only), ..) => only,
                    (_, None, Some(w), _) => w.finalize(),
                    (_, None, None, Some(Some(w))) => w,
                    (_, None, None, _) => {
                        return Err(Error::Internal(
                            "a file's whole-content hash is missing in the chunker".into(),
                        ))
                    }
                };
                // The walker may have stopped; its error is reported.
                let _ = contents.send(FileContent {
                    idx: c.idx,
                    chunks: c.chunks,
                    hash: hash.to_hex().to_string(),
                });
            }
            Msg::Discard => cur = None,
        }
    }
    if !pack.is_empty() {
        packs.send(pack).map_err(|_| downstream_gone())?;
    }
    Ok(out)
}

/// Buffers for the stored bytes of sealed blobs, handed back after each
/// pack is written and reused for the next: a new allocation per blob
/// (about 1 MiB each) cost a page fault per 4 KiB touched — 200,000 more
/// minor faults and 3.6 s more system time for a 2 GiB backup.
/// Bounded: at most [`BufPool::MAX_BYTES`] of capacity is kept, and only
/// in an encrypted repository (nothing else draws from it).
#[derive(Default)]
struct BufPool(std::sync::Mutex<(Vec<Vec<u8>>, usize)>);

impl BufPool {
    /// Capacity kept at most, in bytes (a pack's worth).
    const MAX_BYTES: usize = PACK_TARGET + (4 << 20);

    fn take(&self) -> Vec<u8> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match g.0.pop() {
            Some(v) => {
                g.1 -= v.capacity();
                v
            }
            None => Vec::new(),
        }
    }

    fn give(&self, mut v: Vec<u8>) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.1 + v.capacity() <= Self::MAX_BYTES {
            v.clear();
            g.1 += v.capacity();
            g.0.push(v);
        }
    }
}

/// A pack's bytes: read buffers (blobs stored as they are), or a zstd
/// frame the packer made.
pub enum PackBuf {
    /// Plaintext, where the walker read it.
    Read(ReadBuf),
    /// A zstd frame of one blob.
    Frame(Vec<u8>),
}

impl AsRef<[u8]> for PackBuf {
    fn as_ref(&self) -> &[u8] {
        match self {
            PackBuf::Read(r) => r.as_ref(),
            PackBuf::Frame(f) => f,
        }
    }
}

/// The pack with each blob in the form it is stored in: a zstd frame
/// when `encoder` keeps one (its mode decides), else the plaintext where
/// it lies in the read buffers; either sealed when `crypto` seals. The
/// blobs of the pack's second half (by bytes) are compressed and sealed
/// on a second thread with an encoder of its own while this one does the
/// first half: compression is the backup's heaviest stage, and the walker
/// and chunker leave a core's share idle.
///
/// # Errors
///
/// zstd errors, `getrandom(2)` errors ([`Error::Io`]).
fn stored_forms(
    pack: PackBuilder<ReadBuf>,
    encoder: Option<&mut Encoder>,
    crypto: &Crypto,
    pool: &BufPool,
) -> Result<PackBuilder<PackBuf>> {
    let (rows, parts) = pack.into_parts();
    let mut parts = parts.into_iter();
    let mut blobs: Vec<(crate::repo::pack::PackRow, Vec<Part<ReadBuf>>)> =
        Vec::with_capacity(rows.len());
    for row in rows {
        let mut mine = Vec::new();
        let mut need = row.length as usize;
        while need > 0 {
            let p = parts
                .next()
                .ok_or_else(|| Error::Internal("a pack's parts end before its blobs".into()))?;
            need = need
                .checked_sub(p.range.len())
                .ok_or_else(|| Error::Internal("a pack part spans two blobs".into()))?;
            mine.push(p);
        }
        blobs.push((row, mine));
    }
    // Each blob's stored bytes when they are not the read buffers' (a zstd
    // frame, or sealed bytes), and its plaintext length when compressed.
    let frames: Vec<(Option<Vec<u8>>, Option<u32>)> = match encoder {
        None => blobs.iter().map(|_| (None, None)).collect(),
        Some(e) => {
            let total: u64 = blobs.iter().map(|(r, _)| u64::from(r.length)).sum();
            let mut acc = 0u64;
            let split = blobs
                .iter()
                .position(|(r, _)| {
                    acc += u64::from(r.length);
                    acc * 2 >= total
                })
                .map_or(blobs.len(), |i| i + 1);
            let (first, second) = blobs.split_at(split);
            let encode_all =
                |e: &mut Encoder, part: &[(crate::repo::pack::PackRow, Vec<Part<ReadBuf>>)]| {
                    part.iter()
                        .map(|(row, mine)| {
                            let slices: Vec<&[u8]> = mine.iter().map(AsRef::as_ref).collect();
                            let frame = e
                                .encode(&slices)
                                .map_err(|e| Error::io("compress", "a blob", e))?;
                            let raw = frame.as_ref().map(|_| row.length);
                            let seal_err = |e| Error::io("seal", "a blob", e);
                            let stored = match frame {
                                Some(f) => Some(blob::seal_owned(crypto, f).map_err(seal_err)?),
                                None if crypto.is_encrypted() => {
                                    let mut buf = pool.take();
                                    crypto
                                        .seal_into(Ad::Blob, &slices, &mut buf)
                                        .map_err(seal_err)?;
                                    Some(buf)
                                }
                                None => None,
                            };
                            Ok((stored, raw))
                        })
                        .collect::<Result<Vec<_>>>()
                };
            let mode = e.mode();
            let (a, b) = std::thread::scope(|s| {
                let other = (!second.is_empty()).then(|| {
                    s.spawn(|| {
                        let mut e2 = Encoder::new(mode)
                            .map_err(|e| Error::io("set up", "the zstd compressor", e))?;
                        encode_all(&mut e2, second)
                    })
                });
                let a = encode_all(e, first);
                let b = match other {
                    Some(h) => crate::par::join(h),
                    None => Ok(Vec::new()),
                };
                (a, b)
            });
            let mut a = a?;
            a.extend(b?);
            a
        }
    };
    let mut out = PackBuilder::default();
    for ((row, mine), frame) in blobs.into_iter().zip(frames) {
        match frame {
            (Some(f), raw) => out.add_stored(
                row.id,
                [Part {
                    range: 0..f.len(),
                    buf: PackBuf::Frame(f),
                }],
                raw,
            ),
            (None, _) => out.add(
                row.id,
                mine.into_iter().map(|p| Part {
                    buf: PackBuf::Read(p.buf),
                    range: p.range,
                }),
            ),
        }
    }
    Ok(out)
}

/// Runs the packer until the chunker's sender is dropped: puts each pack
/// through [`commit::PackWriter`] (step 3 of the commit protocol: staged
/// with its write-out started, named in batches after one barrier, the
/// names made durable at the end, before the index that names them is
/// written). The blob bytes go to the pack straight from the read buffers
/// they lie in; the buffers return to the walker as the parts drop.
///
/// # Errors
///
/// Repository I/O errors (`E_NO_SPACE` for a full disk); `E_INTERRUPTED`
/// when a signal arrived. Packs still staged are left to the next
/// writer's cleanup.
pub fn packer(
    rx: Receiver<PackBuilder<ReadBuf>>,
    repo: &Repo,
    durable: bool,
    compression: Compression,
) -> Result<Packed> {
    let version = PackVersion::of_format(repo.config.version);
    // A format-2 repository has no field for a compressed blob.
    let mut encoder = match version {
        PackVersion::V2 => None,
        PackVersion::V3 => Some(
            Encoder::new(compression).map_err(|e| Error::io("set up", "the zstd compressor", e))?,
        ),
    };
    let mut writer = commit::PackWriter::new(repo, durable);
    let mut packs = Vec::new();
    let pool = BufPool::default();
    for pack in rx {
        crate::interrupt::check()?;
        let pack = stored_forms(pack, encoder.as_mut(), repo.crypto(), &pool)?;
        let FinishedPack {
            parts,
            tail,
            id,
            blobs,
        } = pack
            .finish(version, repo.crypto())
            .map_err(|e| Error::io("seal", "a pack footer", e))?;
        let hex = id.to_hex().to_string();
        let mut refs: Vec<&[u8]> = parts.iter().map(AsRef::as_ref).collect();
        refs.push(&tail);
        writer.stage(&hex, &refs)?;
        drop(refs);
        if repo.crypto().is_encrypted() {
            for p in parts {
                if let PackBuf::Frame(v) = p.buf {
                    pool.give(v);
                }
            }
        } else {
            drop(parts);
        }
        // The pack's buffers are let go before a wait for the backend.
        writer.put_due()?;
        packs.push(IndexPack::of_rows(hex, &blobs));
    }
    let (bytes_added, syncs) = writer.finish()?;
    Ok(Packed {
        packs,
        bytes_added,
        syncs,
    })
}
