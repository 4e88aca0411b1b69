//! The commit protocol: the one place that orders puts and barriers
//! (`docs/FORMAT.md`, "The commit protocol (backup)", steps 3 to 6, and
//! the creation of a repository).
//!
//! 3. Packs ([`PackWriter`]): staged, write-out started, and every
//!    [`PACKS_IN_FLIGHT`] packs one barrier makes their bytes durable
//!    before they get their names (on a backend whose puts need no
//!    barrier, a remote one, each pack is put as soon as it is staged);
//!    after the last batch one more barrier makes the names durable,
//!    before the index that names them.
//! 4. The index files ([`put_index`]), then the entries file
//!    ([`put_entries`]): each synced, named create-only, its directory
//!    synced.
//! 5. The barrier before the record ([`commit_snapshot`]): every file and
//!    name the record depends on is durable, whoever wrote it.
//! 6. The snapshot record: synced, named create-only — **the commit
//!    point** — and its directory synced; an error after the name exists
//!    is [`Error::AfterCommit`].
//!
//! With syncs off (`--no-durability`) the order is the same and no sync
//! is made. Side effects: writes through the repository's backend.

use super::crypto::{Ad, Crypto, KdfParams, MasterKey};
use super::format::key::{self, Encryption, SealedConfig};
use super::storage::{Backend, FileKind, Put, Staged, Syncs};
use super::{committed, Config, Repo};
use crate::error::{Error, Result};
use base64::Engine as _;

/// Plaintext blobs stored into new packs of a repository, each compressed
/// (format 3) and sealed, skipping those the index or this sink already
/// holds; a pack is put (durable when syncs are on, before any index names
/// it) each time it reaches [`super::PACK_TARGET`]. Used for entries
/// streams (`crate::backup`) and for the blobs `snap copy` brings over.
pub struct BlobSink {
    encoder: super::format::blob::Encoder,
    /// What the blobs are, for messages (`"an entries blob"`).
    what: &'static str,
    /// Blobs stored by this sink.
    new: std::collections::HashSet<blake3::Hash>,
    pack: super::pack::PackBuilder<Vec<u8>>,
    packs: Vec<super::IndexPack>,
    added: u64,
    syncs: Syncs,
}

impl BlobSink {
    /// A sink compressing by `compression`, putting packs durably when
    /// `durable`.
    ///
    /// # Errors
    ///
    /// The zstd context cannot be made.
    pub fn new(
        compression: crate::policy::Compression,
        durable: bool,
        what: &'static str,
    ) -> Result<BlobSink> {
        Ok(BlobSink {
            encoder: super::format::blob::Encoder::new(compression)
                .map_err(|e| Error::io("set up", "the zstd compressor", e))?,
            what,
            new: Default::default(),
            pack: Default::default(),
            packs: Vec::new(),
            added: 0,
            syncs: Syncs {
                enabled: durable,
                ..Syncs::default()
            },
        })
    }

    /// Stores `plain` as blob `id` (which the caller computed with the
    /// repository's [`Crypto::id`]) unless the index or this sink has it;
    /// returns whether it was new.
    ///
    /// # Errors
    ///
    /// Index load errors; compression, sealing and pack write errors.
    pub fn store(&mut self, repo: &Repo, id: blake3::Hash, plain: Vec<u8>) -> Result<bool> {
        if self.new.contains(&id) || repo.index()?.contains(&id) {
            return Ok(false);
        }
        self.new.insert(id);
        let raw = plain.len() as u32;
        let frame = self
            .encoder
            .encode(&[&plain])
            .map_err(|e| Error::io("compress", self.what, e))?;
        let (stored, raw) = match frame {
            Some(f) => (f, Some(raw)),
            None => (plain, None),
        };
        let stored = super::format::blob::seal_owned(repo.crypto(), stored)
            .map_err(|e| Error::io("seal", self.what, e))?;
        self.pack.add_stored(
            id,
            [super::pack::Part {
                range: 0..stored.len(),
                buf: stored,
            }],
            raw,
        );
        if self.pack.data_len() >= super::PACK_TARGET {
            self.put_pack(repo)?;
        }
        Ok(true)
    }

    /// Puts the pack gathered so far: durable (when syncs are on) and
    /// named before the index that will list it is written.
    fn put_pack(&mut self, repo: &Repo) -> Result<()> {
        let pack = std::mem::take(&mut self.pack);
        if pack.is_empty() {
            return Ok(());
        }
        let fin = pack
            .finish(super::pack::PackVersion::V3, repo.crypto())
            .map_err(|e| Error::io("seal", "a pack footer", e))?;
        let mut bytes: Vec<u8> = Vec::with_capacity(
            fin.parts.iter().map(|p| p.range.len()).sum::<usize>() + fin.tail.len(),
        );
        for p in &fin.parts {
            bytes.extend_from_slice(p.as_ref());
        }
        bytes.extend_from_slice(&fin.tail);
        let hex = fin.id.to_hex().to_string();
        let put = repo
            .store()
            .put(FileKind::Pack, &hex, &bytes, &mut self.syncs)
            .map_err(|e| Error::io("write", repo.file_path(FileKind::Pack, &hex), e))?;
        self.added += put.added();
        self.packs.push(super::IndexPack::of_rows(hex, &fin.blobs));
        Ok(())
    }

    /// Puts the last pack: the packs written and the bytes added; the
    /// sync accounting goes into `syncs`.
    ///
    /// # Errors
    ///
    /// As [`BlobSink::store`].
    pub fn finish(
        mut self,
        repo: &Repo,
        syncs: &mut Syncs,
    ) -> Result<(Vec<super::IndexPack>, u64)> {
        self.put_pack(repo)?;
        syncs.count += self.syncs.count;
        syncs.elapsed += self.syncs.elapsed;
        Ok((self.packs, self.added))
    }
}

/// Packs staged before one barrier makes them durable together. Each pack
/// used to be committed alone (fsync, rename, fsync of its directory): a
/// 4 GiB backup made 653 fsyncs and spent half its time in them, each
/// waiting for a disk cache flush of ~5 ms on this machine's disk
/// (docs/BENCHMARKS.md).
pub const PACKS_IN_FLIGHT: usize = 8;

/// Step 3: puts the packs of one run.
pub struct PackWriter<'r> {
    repo: &'r Repo,
    /// Staged packs on their way to the disk, not yet named: (file, id).
    in_flight: Vec<(Box<dyn Staged>, String)>,
    /// Whether the run listed a pack, new or found in place.
    listed: bool,
    /// Sync accounting.
    pub syncs: Syncs,
    /// Pack bytes added.
    pub bytes_added: u64,
}

impl<'r> PackWriter<'r> {
    /// The format version of the repository written to (it decides the
    /// pack layout).
    pub fn format_version(&self) -> u32 {
        self.repo.config.version
    }

    /// How the repository written to seals (pack footers, blobs).
    pub fn crypto(&self) -> &Crypto {
        self.repo.crypto()
    }

    /// A writer for `repo`, making syncs when `durable`.
    pub fn new(repo: &'r Repo, durable: bool) -> Self {
        PackWriter {
            repo,
            in_flight: Vec::new(),
            listed: false,
            syncs: Syncs {
                enabled: durable,
                ..Syncs::default()
            },
            bytes_added: 0,
        }
    }

    /// Puts pack `id` made of `parts` (blob bytes where they lie, then the
    /// footer and trailer): nothing is written when the pack is stored
    /// already (a killed run may have put it), else it is staged and its
    /// write-out started.
    ///
    /// # Errors
    ///
    /// Write errors (`E_NO_SPACE`), with the pack's path; those of the
    /// batch's barrier and puts.
    pub fn add(&mut self, id: &str, parts: &[&[u8]]) -> Result<()> {
        self.stage(id, parts)?;
        self.put_due()
    }

    /// The first half of [`PackWriter::add`]: stages pack `id` (nothing
    /// when it is stored already). The caller may drop the pack's
    /// buffers, then calls [`PackWriter::put_due`], which may wait for
    /// the backend.
    ///
    /// # Errors
    ///
    /// As [`PackWriter::add`], without the puts'.
    pub fn stage(&mut self, id: &str, parts: &[&[u8]]) -> Result<()> {
        self.listed = true;
        let store = self.repo.store();
        let path = || self.repo.file_path(FileKind::Pack, id);
        if store
            .exists(FileKind::Pack, id)
            .map_err(|e| Error::io("stat", path(), e))?
        {
            return Ok(());
        }
        let mut s = store
            .stage(FileKind::Pack)
            .map_err(|e| Error::io("create", self.repo.display(super::layout::STAGING), e))?;
        s.append(parts).map_err(|e| Error::io("write", path(), e))?;
        if self.syncs.enabled {
            if let Err(e) = s.start_writeback() {
                s.discard();
                return Err(Error::io("sync_file_range", path(), e));
            }
        }
        tracing::debug!(pack = id, "pack staged");
        self.in_flight.push((s, id.to_owned()));
        Ok(())
    }

    /// The second half of [`PackWriter::add`]: puts the staged packs when
    /// [`PACKS_IN_FLIGHT`] wait, or at once on a backend whose puts need
    /// no barrier ([`crate::repo::storage::Backend::puts_need_no_barrier`]).
    ///
    /// # Errors
    ///
    /// As [`PackWriter::add`].
    pub fn put_due(&mut self) -> Result<()> {
        if self.in_flight.len() >= PACKS_IN_FLIGHT
            || (!self.in_flight.is_empty() && self.repo.store().puts_need_no_barrier())
        {
            self.flush()?;
        }
        Ok(())
    }

    /// One barrier for the staged packs' bytes, then their names. When
    /// the barrier fails, every staged pack is removed.
    fn flush(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.in_flight);
        if batch.is_empty() {
            return Ok(());
        }
        let store = self.repo.store();
        let barrier = if store.puts_need_no_barrier() {
            Ok(())
        } else {
            store.barrier(&mut self.syncs)
        };
        if let Err(e) = barrier {
            for (s, _) in batch {
                s.discard();
            }
            return Err(Error::io(
                "syncfs",
                self.repo.display(super::layout::STAGING),
                e,
            ));
        }
        let mut batch = batch.into_iter();
        while let Some((s, id)) = batch.next() {
            match store.put_staged(s, FileKind::Pack, &id, false, &mut self.syncs) {
                Ok(put) => self.bytes_added += put.added(),
                Err(e) => {
                    for (s, _) in batch {
                        s.discard();
                    }
                    return Err(Error::io(
                        "rename",
                        self.repo.file_path(FileKind::Pack, &id),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Puts the last batch, then makes the names durable (this run's new
    /// ones, and packs found already in place: a killed run may have named
    /// them without its last barrier) before the index names them.
    /// Returns the bytes added and the sync accounting.
    ///
    /// # Errors
    ///
    /// As [`PackWriter::add`]; the barrier's error.
    pub fn finish(mut self) -> Result<(u64, Syncs)> {
        self.flush()?;
        if self.listed {
            self.repo
                .store()
                .barrier(&mut self.syncs)
                .map_err(|e| Error::io("syncfs", self.repo.path.display(), e))?;
        }
        Ok((self.bytes_added, self.syncs))
    }
}

/// Step 4: puts index file `bytes` (JSON; stored as a zstd frame in
/// format 3, sealed when the repository is encrypted) under the BLAKE3 of
/// what is stored; returns the id and the
/// bytes added (0 when it was stored already).
///
/// # Errors
///
/// Write, sync and rename errors with the path; `E_NO_SPACE`.
pub fn put_index(repo: &Repo, bytes: &[u8], syncs: &mut Syncs) -> Result<(String, u64)> {
    tracing::debug!(bytes = bytes.len(), "index file written");
    let stored = super::format::index::encode_file(bytes.to_vec(), repo.config.version)
        .map_err(|e| Error::io("compress", "an index file", e))?;
    let stored = repo
        .crypto()
        .seal_vec(Ad::Index, stored)
        .map_err(|e| Error::io("seal", "an index file", e))?;
    let bytes = &stored[..];
    let id = blake3::hash(bytes).to_hex().to_string();
    let put = repo
        .store()
        .put(FileKind::Index, &id, bytes, syncs)
        .map_err(|e| Error::io("write", repo.file_path(FileKind::Index, &id), e))?;
    Ok((id, put.added()))
}

/// Packs grouped into index files of at most [`super::INDEX_BLOBS_PER_FILE`]
/// blobs each, so each stays within what readers accept (`INDEX_MAX`).
pub fn index_groups(packs: Vec<super::IndexPack>) -> Vec<Vec<super::IndexPack>> {
    let mut groups: Vec<Vec<super::IndexPack>> = Vec::new();
    let mut in_group = usize::MAX;
    for p in packs {
        if in_group.saturating_add(p.blobs.len()) > super::INDEX_BLOBS_PER_FILE {
            groups.push(Vec::new());
            in_group = 0;
        }
        in_group += p.blobs.len();
        if let Some(g) = groups.last_mut() {
            g.push(p);
        }
    }
    groups
}

/// A staged entries file, written a piece at a time during the walk and
/// put by [`put_entries`].
///
/// # Errors
///
/// The create error.
pub fn stage_entries(repo: &Repo) -> Result<Box<dyn Staged>> {
    repo.store()
        .stage(FileKind::Entries)
        .map_err(|e| Error::io("create", repo.display(super::layout::STAGING), e))
}

/// Step 4: puts the staged entries file as `id` (its BLAKE3): synced,
/// named, its directory synced; returns the bytes added (0 when a file of
/// that id was stored already, and the staged one is removed).
///
/// # Errors
///
/// Sync and rename errors with the path.
pub fn put_entries(
    repo: &Repo,
    staged: Box<dyn Staged>,
    id: &str,
    syncs: &mut Syncs,
) -> Result<u64> {
    let path = || repo.file_path(FileKind::Entries, id);
    let store = repo.store();
    let put = store
        .put_staged(staged, FileKind::Entries, id, true, syncs)
        .map_err(|e| Error::io("put", path(), e))?;
    if put != Put::Existed {
        store
            .sync_names(FileKind::Entries, id, syncs)
            .map_err(|e| Error::io("fsync directory", path(), e))?;
    }
    Ok(put.added())
}

/// The bytes to store for snapshot record `plain` (sealed when the
/// repository is encrypted) and its id, the BLAKE3 of those bytes.
///
/// # Errors
///
/// `getrandom(2)`'s error.
pub fn seal_snapshot(repo: &Repo, plain: Vec<u8>) -> Result<(String, Vec<u8>)> {
    let stored = repo
        .crypto()
        .seal_vec(Ad::Snapshot, plain)
        .map_err(|e| Error::io("seal", "the snapshot record", e))?;
    Ok((blake3::hash(&stored).to_hex().to_string(), stored))
}

/// Steps 5 and 6: the barrier (when `syncs` is enabled), then the snapshot
/// record `bytes` as `id` — the commit point — and its directory synced.
///
/// # Errors
///
/// Before the record has its name: the barrier, write, sync or rename
/// error (nothing is committed). After: [`Error::AfterCommit`]
/// (`E_UNCONFIRMED`), the snapshot is listed but its directory sync
/// failed.
pub fn commit_snapshot(repo: &Repo, id: &str, bytes: &[u8], syncs: &mut Syncs) -> Result<()> {
    let store = repo.store();
    let path = || repo.file_path(FileKind::Snapshot, id);
    store
        .barrier(syncs)
        .map_err(|e| Error::io("syncfs", repo.path.display(), e))?;
    tracing::debug!(
        syncs = syncs.count,
        "barrier before the snapshot record done"
    );
    let mut s = store
        .stage(FileKind::Snapshot)
        .map_err(|e| Error::io("create", repo.display(super::layout::STAGING), e))?;
    s.append(&[bytes])
        .map_err(|e| Error::io("write", path(), e))?;
    store
        .put_staged(s, FileKind::Snapshot, id, true, syncs)
        .map_err(|e| Error::io("put", path(), e))?;
    tracing::info!(snapshot = id, "snapshot record placed: committed");
    store
        .sync_names(FileKind::Snapshot, id, syncs)
        .map_err(|e| {
            Error::io("fsync directory", repo.display(super::layout::SNAPSHOTS), e)
                .after_commit(committed(id))
        })
}

/// Creates `config.json`, the last step of creating a repository (the
/// directories come first: a location is a repository once it has its
/// config): written, synced, named create-only, the root synced. Returns
/// false when another process created it first (nothing is changed).
///
/// # Errors
///
/// Write, sync and rename errors with the path.
pub fn create_config(store: &dyn Backend, config: &Config, crypto: &Crypto) -> Result<bool> {
    let path = store.path(FileKind::Config, "");
    let mut syncs = Syncs::on();
    let bytes = if crypto.is_encrypted() {
        let sealed = crypto
            .seal(Ad::Config, &[&config.to_bytes()?])
            .map_err(|e| Error::io("seal", &path, e))?;
        let outer = SealedConfig {
            format: config.format.clone(),
            version: config.version,
            encryption: Encryption {
                aead: key::AEAD.into(),
                kdf: key::KDF.into(),
            },
            sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
        };
        serde_json::to_vec_pretty(&outer).map_err(|e| Error::serialise("the config", e))?
    } else {
        config.to_bytes()?
    };
    let put = store
        .put(FileKind::Config, "", &bytes, &mut syncs)
        .map_err(|e| Error::io("write", &path, e))?;
    Ok(put != Put::Existed)
}

/// Writes a new key file for `master`, wrapped with `password` under
/// Argon2id `params`: durable and named create-only before it returns
/// (a key file is named by the BLAKE3 of its bytes). Returns its id.
///
/// # Errors
///
/// [`Error::Usage`] for an empty password; Argon2 errors
/// ([`Error::Internal`]); write, sync and rename errors with the path.
pub fn put_key(
    store: &dyn Backend,
    master: &MasterKey,
    password: &[u8],
    params: KdfParams,
) -> Result<String> {
    if password.is_empty() {
        return Err(Error::Usage("an empty password is refused".into()));
    }
    let (salt, sealed) = super::crypto::wrap(master, password, params).map_err(Error::Internal)?;
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let bytes = key::KeyFile::new(params, &salt, &sealed, created)
        .to_bytes()
        .map_err(Error::Internal)?;
    let id = blake3::hash(&bytes).to_hex().to_string();
    let mut syncs = Syncs::on();
    store
        .put(FileKind::Key, &id, &bytes, &mut syncs)
        .map_err(|e| Error::io("write", store.path(FileKind::Key, &id), e))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::storage::FileKind;

    #[test]
    fn packs_are_named_only_after_a_barrier_and_a_known_pack_is_not_rewritten() {
        let repo = Repo::memory();
        let mut w = PackWriter::new(&repo, true);
        let ids: Vec<String> = (0..PACKS_IN_FLIGHT as u32 + 1)
            .map(|i| blake3::hash(&i.to_le_bytes()).to_hex().to_string())
            .collect();
        for id in &ids[..PACKS_IN_FLIGHT - 1] {
            w.add(id, &[b"blob", b"tail"]).unwrap();
            assert!(!repo.store().exists(FileKind::Pack, id).unwrap());
        }
        assert_eq!(w.syncs.count, 0);
        w.add(&ids[PACKS_IN_FLIGHT - 1], &[b"x"]).unwrap();
        assert_eq!(w.syncs.count, 1, "one barrier for the batch");
        assert!(repo.store().exists(FileKind::Pack, &ids[0]).unwrap());
        // Found in place: not written again, but still covered.
        w.add(&ids[0], &[b"other"]).unwrap();
        w.add(&ids[PACKS_IN_FLIGHT], &[b"last"]).unwrap();
        let (added, syncs) = w.finish().unwrap();
        assert_eq!(added, (PACKS_IN_FLIGHT as u64 - 1) * 8 + 1 + 4);
        assert_eq!(syncs.count, 3, "batch, last batch, names");
        assert_eq!(
            repo.store().read(FileKind::Pack, &ids[0], 100).unwrap(),
            b"blobtail"
        );
    }

    #[test]
    fn a_snapshot_is_committed_after_the_barrier_and_reads_back() {
        let repo = Repo::memory();
        let (idx, added) = put_index(&repo, br#"{"v":1,"packs":[]}"#, &mut Syncs::on()).unwrap();
        assert!(added > 0);
        assert_eq!(
            put_index(&repo, br#"{"v":1,"packs":[]}"#, &mut Syncs::on()).unwrap(),
            (idx, 0),
            "stored already"
        );
        let mut s = stage_entries(&repo).unwrap();
        s.append(&[b"{}\n"]).unwrap();
        let eid = blake3::hash(b"{}\n").to_hex().to_string();
        let mut syncs = Syncs::on();
        assert_eq!(put_entries(&repo, s, &eid, &mut syncs).unwrap(), 3);
        let rec = crate::repo::SnapshotRecord {
            v: 1,
            time: "2026-01-01T00:00:00.000000000Z".into(),
            host: "h".into(),
            source: "/s".into(),
            source_b64: None,
            sources: Vec::new(),
            sources_b64: None,
            tier: crate::policy::PreservationTier::Basic,
            tags: vec![],
            policy: (&crate::policy::Policy::default()).into(),
            parent: None,
            entries: crate::repo::EntriesRef {
                id: eid,
                count: 1,
                chunks: None,
            },
            stats: Default::default(),
            durable: true,
            original: None,
        };
        let bytes = serde_json::to_vec(&rec).unwrap();
        let id = blake3::hash(&bytes).to_hex().to_string();
        let before = syncs.count;
        commit_snapshot(&repo, &id, &bytes, &mut syncs).unwrap();
        assert_eq!(syncs.count, before + 3, "barrier, record, directory");
        let all = repo.snapshots().unwrap();
        assert_eq!(all, vec![(id.clone(), rec)]);
        assert!(repo.take_damaged().is_empty());
        assert!(repo.staging().unwrap().is_empty());
    }
}
