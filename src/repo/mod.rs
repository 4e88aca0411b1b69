//! The repository: formats 2 and 3 (`docs/FORMAT.md`), encrypted or not,
//! over a storage backend.
//!
//! - [`format`]: the file kinds as pure types and parsers;
//! - [`crypto`]: encryption (sealing, keyed ids, the key derivation);
//! - [`layout`]: where each file lives (the one place paths are spelled);
//! - [`storage`]: the [`storage::Backend`] seam and its implementations;
//! - [`commit`]: the commit protocol, the one place that orders puts and
//!   barriers;
//! - [`Repo`] (here): an open repository — its config, its snapshots,
//!   index and entries, read through the backend and checked against
//!   their ids;
//! - [`check`] and [`tree`]: `snap check`.
//!
//! Side effects: reads through the backend; creating a repository writes
//! its directories, its first key file when encrypted and `config.json`
//! ([`commit::create_config`]); opening an encrypted one asks for the
//! password and derives keys (Argon2id).

pub mod check;
pub mod commit;
pub mod crypto;
pub mod entries;
pub mod format;
pub mod layout;
pub mod prune;
pub mod select;
pub mod storage;
pub mod tree;

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
pub use entries::EntriesReader;
use format::config::CONFIG_MAX;
pub use format::config::{ChunkerAlgorithm, ChunkerParams, Config, FORMAT_NAME, FORMAT_VERSION};
pub use format::entries::{lines, parse_lines, split_lines, ENTRIES_LINE_MAX};
pub use format::index::{
    BlobLocation, IdHasher, IdMap, Index, IndexBlob, IndexFile, IndexPack, INDEX_BLOBS_PER_FILE,
    INDEX_MAX,
};
pub use format::snapshot::{EntriesRef, SnapshotRecord, SnapshotStats, RECORD_MAX};
pub use format::{pack, sidecar, PACK_TARGET};
use sidecar::EntryRecord;
pub use storage::local::LOCK_NOTE_MAX;
use storage::{Backend, FileKind, Ranged};
pub use storage::{Lock as RepoLock, Syncs};

/// An open repository.
#[derive(Debug)]
pub struct Repo {
    /// The location as given.
    pub path: PathBuf,
    store: std::sync::Arc<dyn Backend>,
    /// Its `config.json`.
    pub config: Config,
    /// Every index file, loaded once ([`Repo::index`]).
    index: std::sync::OnceLock<std::sync::Arc<Index>>,
    /// Held while the index loads, so threads asking at once load it once.
    index_loading: std::sync::Mutex<()>,
    /// Damaged snapshot records met so far: (path, what is wrong).
    damaged: std::sync::Mutex<Vec<(String, String)>>,
    /// How its bytes are sealed and its content ids made.
    crypto: crypto::Crypto,
    /// The id of the key file that opened it (encrypted repositories).
    key_id: Option<String>,
    /// Its master key (encrypted repositories), for `snap key`.
    master: Option<crypto::MasterKey>,
}

/// Where an encrypted repository's password comes from: called only when
/// the repository is encrypted, at most once per open.
pub type Password<'a> = &'a dyn Fn() -> Result<zeroize::Zeroizing<Vec<u8>>>;

/// The password of a repository that is not encrypted: never asked.
pub fn no_password() -> Result<zeroize::Zeroizing<Vec<u8>>> {
    Err(Error::Internal(
        "a password was asked where none is given".into(),
    ))
}

/// How a new repository is encrypted (`snap init --encrypt`).
pub struct NewKey<'a> {
    /// The password of its first key.
    pub password: &'a [u8],
    /// The Argon2id parameters of its first key.
    pub params: crypto::KdfParams,
}

/// The repository location when neither `--repo` nor `SNAP_REPO` is given:
/// `$XDG_DATA_HOME/snap`, else `$HOME/.local/share/snap` (XDG Base
/// Directory Specification).
///
/// # Errors
///
/// [`Error::Usage`] when neither variable is set.
pub fn default_location() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("snap"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/snap")),
        None => Err(Error::Usage(
            "no repository given: set --repo, SNAP_REPO, XDG_DATA_HOME or HOME".into(),
        )),
    }
}

/// The location `path` names: local, `s3:…` or `sftp:…`.
///
/// # Errors
///
/// [`Error::Usage`] for a malformed remote location.
pub fn location(path: &Path) -> Result<storage::location::Location> {
    storage::location::Location::parse(path).map_err(|e| Error::Usage(e.to_string()))
}

/// What a committed snapshot's error says is true: `"snapshot <12 hex>
/// was committed"` (see [`Error::AfterCommit`]).
pub fn committed(id: &str) -> String {
    format!("snapshot {} was committed", &id[..12.min(id.len())])
}

/// A repository file that could not be read: [`Error::Integrity`] when it
/// is not what the format allows (not a regular file, too large, an id
/// that cannot name a file), else the I/O error.
pub(crate) fn read_error(path: &str, e: io::Error) -> Error {
    if matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
    ) {
        Error::Integrity {
            path: path.to_owned(),
            detail: e.to_string(),
        }
    } else {
        Error::io("read", path, e)
    }
}

/// The master key of an encrypted repository: the first key file (in id
/// order) that the password opens and whose master key opens
/// `sealed_config`; that file's id and the config's plaintext. Key files
/// are checked against their ids; a damaged one, or one of another
/// repository (left by a lost race to create this one), is passed over
/// and named if none opens.
///
/// # Errors
///
/// [`Error::Password`] when no key file opens with the password, or no
/// password is given; [`Error::Integrity`] when there is no key file, or
/// keys open but none opens the config (it was altered); list errors.
pub(crate) fn unlock(
    store: &dyn Backend,
    password: Password<'_>,
    sealed_config: &[u8],
) -> Result<(crypto::MasterKey, String, Vec<u8>)> {
    let keys_dir = format!("{}/{}", store.location(), layout::KEYS);
    let mut ids: Vec<String> = store
        .list(FileKind::Key)
        .map_err(|e| Error::io("list", &keys_dir, e))?
        .iter()
        .filter_map(|n| layout::id_of(FileKind::Key, n).map(str::to_owned))
        .collect();
    ids.sort();
    if ids.is_empty() {
        return Err(Error::Integrity {
            path: keys_dir,
            detail: "the repository is encrypted and has no key file".into(),
        });
    }
    let pw = password()?;
    let mut damaged = Vec::new();
    let mut opened_elsewhere = Vec::new();
    for id in &ids {
        let path = store.path(FileKind::Key, id);
        let key = match read_key_file(store, id) {
            Ok(k) => k,
            Err(e) => {
                damaged.push(format!("{path}: {e}"));
                continue;
            }
        };
        let opened = key
            .salt()
            .and_then(|salt| crypto::unwrap(&key.sealed()?, &pw, &salt, key.params()));
        match opened {
            Ok(Some(master)) => {
                match crypto::Crypto::sealed(&master)
                    .open(crypto::Ad::Config, sealed_config.to_vec())
                {
                    Ok(config) => return Ok((master, id.clone(), config)),
                    Err(e) => opened_elsewhere.push(format!(
                        "{path}: the config does not open under its master key ({e})"
                    )),
                }
            }
            Ok(None) => {}
            Err(e) => damaged.push(format!("{path}: {e}")),
        }
    }
    if !opened_elsewhere.is_empty() {
        return Err(Error::Integrity {
            path: store.path(FileKind::Config, ""),
            detail: format!(
                "a key opens with the password but the sealed config does not open with it: {}",
                opened_elsewhere.join("; ")
            ),
        });
    }
    Err(Error::Password {
        path: keys_dir,
        detail: format!(
            "no key file opens with the password given ({} tried{})",
            ids.len(),
            if damaged.is_empty() {
                String::new()
            } else {
                format!("; unusable: {}", damaged.join("; "))
            }
        ),
    })
}

/// Reads key file `id` of `store`: bounded by
/// [`format::key::KEY_FILE_MAX`], checked against its id (the BLAKE3 of
/// the file) and parsed.
///
/// # Errors
///
/// A message: the read error, an id mismatch, or what
/// [`format::key::KeyFile::parse`] refuses.
pub fn read_key_file(
    store: &dyn Backend,
    id: &str,
) -> std::result::Result<format::key::KeyFile, String> {
    let b = store
        .read(FileKind::Key, id, format::key::KEY_FILE_MAX)
        .map_err(|e| format!("unreadable: {e}"))?;
    if blake3::hash(&b).to_hex().as_str() != id {
        return Err("key file does not match its BLAKE3 id".into());
    }
    format::key::KeyFile::parse(&b)
}

impl Repo {
    /// Creates a new repository in the directory `path` (parents too,
    /// `0700`), which must not exist or be empty (`snap init`); encrypted
    /// with a new master key wrapped by `encrypt`'s password when given.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when a repository already exists there or the
    /// directory holds anything; I/O errors with the path.
    pub fn init(path: &Path, encrypt: Option<&NewKey<'_>>) -> Result<Repo> {
        match Self::create(path, false, encrypt, &no_password)? {
            (repo, true) => Ok(repo),
            (_, false) => Err(Error::Usage(format!(
                "a repository already exists at {}",
                path.display()
            ))),
        }
    }

    /// Opens the repository at `path`, creating it first when there is
    /// none (the default location on first use). Returns the repository and
    /// whether this call created it. Race-free: of several processes
    /// creating one location at once, exactly one creates `config.json`
    /// (see [`commit::create_config`]); the others open that one.
    ///
    /// # Errors
    ///
    /// As [`Repo::init`] and [`Repo::open`].
    pub fn open_or_create(path: &Path, password: Password<'_>) -> Result<(Repo, bool)> {
        Self::create(path, true, None, password)
    }

    fn create(
        path: &Path,
        existing: bool,
        encrypt: Option<&NewKey<'_>>,
        password: Password<'_>,
    ) -> Result<(Repo, bool)> {
        let store: Box<dyn Backend> = match location(path)? {
            storage::location::Location::Local(_) => Box::new(
                storage::local::LocalBackend::create(path)
                    .map_err(|e| Error::io("create repository directory", path.display(), e))?,
            ),
            remote => Box::new(
                storage::remote::RemoteBackend::new(&remote)
                    .map_err(|e| Error::io("connect", path.display(), e))?,
            ),
        };
        Self::create_in(store, path.to_owned(), existing, encrypt, password)
    }

    /// [`Repo::init`] (`existing` false) or [`Repo::open_or_create`]
    /// (`existing` true) on any backend.
    fn create_in(
        store: Box<dyn Backend>,
        path: PathBuf,
        existing: bool,
        encrypt: Option<&NewKey<'_>>,
        password: Password<'_>,
    ) -> Result<(Repo, bool)> {
        let cfg_path = store.path(FileKind::Config, "");
        if store
            .exists(FileKind::Config, "")
            .map_err(|e| Error::io("stat", &cfg_path, e))?
        {
            return Ok((Self::open_in(store, path, password)?, false));
        }
        let held = store
            .prepare(!existing)
            .map_err(|e| Error::io("create repository", store.location(), e))?;
        if let Some(n) = held {
            return Err(Error::Usage(format!(
                "{} is not empty (it holds {n}) and not a snap repository; give a new or empty directory",
                store.location()
            )));
        }
        let mut config =
            Config::new(crate::sys::random_hex(16).map_err(|e| Error::io("getrandom", "-", e))?);
        let (crypto, key_id, master) = match encrypt {
            None => (crypto::Crypto::plain(), None, None),
            Some(k) => {
                config.hash = format::config::HASH_KEYED.into();
                let master =
                    crypto::MasterKey::generate().map_err(|e| Error::io("getrandom", "-", e))?;
                let id = commit::put_key(&*store, &master, k.password, k.params)?;
                (crypto::Crypto::sealed(&master), Some(id), Some(master))
            }
        };
        if !commit::create_config(&*store, &config, &crypto)? {
            // Another process created it meanwhile: the key file written
            // for this run's master key opens nothing there.
            if let Some(id) = &key_id {
                if let Err(e) = store.remove(FileKind::Key, id) {
                    eprintln!(
                        "snap: warning: cannot remove {}: {e}",
                        store.path(FileKind::Key, id)
                    );
                }
            }
            return Ok((Self::open_in(store, path, password)?, false));
        }
        Ok((
            Repo {
                path,
                store: store.into(),
                config,
                index: Default::default(),
                index_loading: Default::default(),
                damaged: Default::default(),
                crypto,
                key_id,
                master,
            },
            true,
        ))
    }

    /// Opens the repository in the directory `path`; `password` is asked
    /// only when it is encrypted.
    ///
    /// # Errors
    ///
    /// [`Error::RepoMissing`] when there is no directory or no
    /// `config.json`; [`Error::Integrity`] for an unreadable config or an
    /// unknown format/version; [`Error::Password`] when no key opens with
    /// the password (or none is given).
    pub fn open(path: &Path, password: Password<'_>) -> Result<Repo> {
        let store: Box<dyn Backend> = match location(path)? {
            storage::location::Location::Local(_) => {
                match storage::local::LocalBackend::open(path) {
                    Ok(s) => Box::new(s),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(Error::RepoMissing {
                            path: path.display().to_string(),
                        })
                    }
                    Err(e) => return Err(Error::io("open repository", path.display(), e)),
                }
            }
            remote => Box::new(
                storage::remote::RemoteBackend::new(&remote)
                    .map_err(|e| Error::io("connect", path.display(), e))?,
            ),
        };
        Self::open_in(store, path.to_owned(), password)
    }

    /// Opens the repository `store` holds (`path` names it in messages);
    /// an encrypted one with the first key file that `password` opens.
    ///
    /// # Errors
    ///
    /// As [`Repo::open`]; [`Error::Password`] when no key opens with the
    /// password (or none is given); [`Error::Integrity`] for a sealed
    /// config that does not open or parse once a key opened.
    pub fn open_in(store: Box<dyn Backend>, path: PathBuf, password: Password<'_>) -> Result<Repo> {
        let cfg_path = store.path(FileKind::Config, "");
        let bytes = match store.read(FileKind::Config, "", CONFIG_MAX) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::RepoMissing {
                    path: path.display().to_string(),
                })
            }
            Err(e) => return Err(read_error(&cfg_path, e)),
        };
        let (config, crypto, key_id, master) = match Config::parse_file(&bytes, &cfg_path)? {
            format::config::ConfigFile::Plain(c) => (c, crypto::Crypto::plain(), None, None),
            format::config::ConfigFile::Sealed(sealed) => {
                let inner = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    &sealed.sealed,
                )
                .map_err(|e| Error::Integrity {
                    path: cfg_path.clone(),
                    detail: format!("sealed config: {e}"),
                })?;
                let (master, key_id, inner) = unlock(&*store, password, &inner)?;
                let crypto = crypto::Crypto::sealed(&master);
                (
                    Config::parse(&inner, &cfg_path)?,
                    crypto,
                    Some(key_id),
                    Some(master),
                )
            }
        };
        if config.keyed() != crypto.is_encrypted()
            || !matches!(config.hash.as_str(), "blake3" | format::config::HASH_KEYED)
        {
            return Err(Error::Integrity {
                path: cfg_path,
                detail: format!(
                    "hash {:?} does not go with a repository {}encrypted",
                    config.hash,
                    if crypto.is_encrypted() { "" } else { "not " }
                ),
            });
        }
        tracing::info!(
            repo = %path.display(),
            format = config.version,
            encrypted = crypto.is_encrypted(),
            "repository opened"
        );
        Ok(Repo {
            path,
            store: store.into(),
            config,
            index: Default::default(),
            index_loading: Default::default(),
            damaged: Default::default(),
            crypto,
            key_id,
            master,
        })
    }

    /// The master key of an encrypted repository.
    pub fn master_key(&self) -> Option<&crypto::MasterKey> {
        self.master.as_ref()
    }

    /// How the repository's bytes are sealed and its content ids made.
    pub fn crypto(&self) -> &crypto::Crypto {
        &self.crypto
    }

    /// The id of the key file that opened the repository (`None` when it
    /// is not encrypted).
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// A new repository in memory (unit tests).
    ///
    /// # Panics
    ///
    /// Never for a fresh backend.
    #[cfg(test)]
    pub fn memory() -> Repo {
        let store = Box::new(storage::memory::MemoryBackend::new());
        Self::create_in(store, PathBuf::from("memory:"), false, None, &no_password)
            .expect("a fresh memory backend")
            .0
    }

    /// The backend.
    pub fn store(&self) -> &dyn Backend {
        &*self.store
    }

    /// A path inside the repository, for messages.
    pub fn display(&self, rel: &str) -> String {
        format!("{}/{rel}", self.store.location())
    }

    /// Where `kind`/`id` lives, for messages.
    pub fn file_path(&self, kind: FileKind, id: &str) -> String {
        self.store.path(kind, id)
    }

    /// A remote repository's traffic so far in this process (see
    /// [`storage::remote::transfer`]); `None` for a local one.
    pub fn transfer(&self) -> Option<crate::facts::TransferBytes> {
        use std::sync::atomic::Ordering;
        location(&self.path).ok().filter(|l| l.is_remote())?;
        let t = storage::remote::transfer();
        Some(crate::facts::TransferBytes {
            uploaded: t.up.load(Ordering::Relaxed),
            downloaded: t.down.load(Ordering::Relaxed),
        })
    }

    /// Takes the repository lock (see [`storage::lock`]): exclusive for
    /// writers, shared for readers, waiting at most `wait_ms`.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] on time-out, with the holder note; I/O errors.
    pub fn lock(&self, exclusive: bool, wait_ms: u64) -> Result<RepoLock> {
        let started = std::time::Instant::now();
        let lock = storage::lock(&*self.store, exclusive, wait_ms)?;
        tracing::info!(
            exclusive,
            waited_ms = started.elapsed().as_millis() as u64,
            "repository lock taken"
        );
        Ok(lock)
    }

    /// Removes what a crashed run left in staging (`tmp/`). Call with the
    /// exclusive lock held.
    ///
    /// # Errors
    ///
    /// The first removal error.
    pub fn clean_tmp(&self) -> Result<u64> {
        self.store
            .clean_staging()
            .map_err(|e| Error::io("remove", self.display(layout::STAGING), e))
    }

    /// The names in staging (`tmp/`).
    ///
    /// # Errors
    ///
    /// The list error.
    pub fn staging(&self) -> Result<Vec<String>> {
        self.store
            .staging()
            .map_err(|e| Error::io("list", self.display(layout::STAGING), e))
    }

    /// Every name listed for `kind` (relative to its directory).
    ///
    /// # Errors
    ///
    /// The list error.
    pub fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        let mut names = self
            .store
            .list(kind)
            .map_err(|e| Error::io("list", self.display(kind.dir()), e))?;
        names.sort_unstable();
        Ok(names)
    }

    /// Reads, checks (against `id`) and parses snapshot record `id`.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for a record that is not a regular file, too
    /// large, altered, malformed or of an unknown version; I/O errors.
    pub fn read_record(&self, id: &str) -> Result<SnapshotRecord> {
        let path = self.file_path(FileKind::Snapshot, id);
        let bytes = self
            .store
            .read(FileKind::Snapshot, id, RECORD_MAX)
            .map_err(|e| read_error(&path, e))?;
        self.parse_record(bytes, id, &path)
    }

    /// Parses snapshot record `id` from its stored `bytes` (shown as
    /// `path`): checked against its id, opened when sealed.
    ///
    /// # Errors
    ///
    /// As [`Repo::read_record`].
    pub fn parse_record(&self, bytes: Vec<u8>, id: &str, path: &str) -> Result<SnapshotRecord> {
        // The id is over the stored (sealed) bytes.
        format::check_id(&bytes, id, path, "snapshot record")?;
        let plain = self
            .crypto
            .open(crypto::Ad::Snapshot, bytes)
            .map_err(|detail| Error::Integrity {
                path: path.to_owned(),
                detail,
            })?;
        SnapshotRecord::parse_unchecked(&plain, path)
    }

    /// Every intact snapshot, oldest first, each checked against its id.
    /// A record that cannot be read, does not match its id, does not parse
    /// or has an unknown version is left out and remembered (see
    /// [`Repo::take_damaged`]): one damaged record does not hide the others.
    ///
    /// # Errors
    ///
    /// I/O errors listing `snapshots/`.
    pub fn snapshots(&self) -> Result<Vec<(String, SnapshotRecord)>> {
        let mut out = Vec::new();
        for n in self.list(FileKind::Snapshot)? {
            let Some(id) = n.strip_suffix(FileKind::Snapshot.suffix()) else {
                continue;
            };
            match self.read_record(id) {
                Ok(rec) => out.push((id.to_owned(), rec)),
                Err(e) => {
                    let path = self.display(&format!("{}/{n}", layout::SNAPSHOTS));
                    let mut d = self.damaged.lock().unwrap_or_else(|p| p.into_inner());
                    if !d.iter().any(|(p, _)| *p == path) {
                        d.push((path, e.to_string()));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    /// The damaged snapshot records [`Repo::snapshots`] has left out so
    /// far, as (path, what is wrong); each is handed out once.
    pub fn take_damaged(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.damaged.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves `latest`, a full id, or a unique id prefix.
    ///
    /// # Errors
    ///
    /// [`Error::SnapshotNotFound`] when nothing or more than one matches.
    pub fn resolve(&self, query: &str) -> Result<(String, SnapshotRecord)> {
        self.resolve_in(query, &select::Filter::default())
    }

    /// Resolves `latest` (the newest snapshot `filter` passes), a full
    /// id, or a unique id prefix (the filter does not apply to ids, as in
    /// restic).
    ///
    /// # Errors
    ///
    /// [`Error::SnapshotNotFound`] when nothing or more than one matches.
    pub fn resolve_in(
        &self,
        query: &str,
        filter: &select::Filter,
    ) -> Result<(String, SnapshotRecord)> {
        let mut all = self.snapshots()?;
        let not_found = |detail: &str| Error::SnapshotNotFound {
            query: query.to_owned(),
            detail: detail.to_owned(),
        };
        if query == "latest" {
            all.retain(|(_, r)| filter.matches(r));
            return all.pop().ok_or_else(|| {
                not_found(if filter.is_empty() {
                    "the repository has no snapshots"
                } else {
                    "no snapshot passes the --host/--tag/--path filter"
                })
            });
        }
        if query.is_empty() {
            return Err(not_found("empty snapshot id"));
        }
        let mut hits: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.starts_with(query))
            .collect();
        match hits.len() {
            0 => Err(not_found("no snapshot has this id or id prefix")),
            1 => Ok(hits.remove(0)),
            n => Err(not_found(&format!(
                "{n} snapshots share this prefix; give more digits"
            ))),
        }
    }

    /// Reads index file `id`, checked against its id: its JSON (a
    /// format-3 file is decoded from its zstd frame).
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for a file that is not a regular file, too
    /// large or does not match its id; I/O errors.
    pub fn read_index_file(&self, id: &str) -> Result<Vec<u8>> {
        let path = self.file_path(FileKind::Index, id);
        let bytes = self
            .store
            .read(FileKind::Index, id, INDEX_MAX)
            .map_err(|e| read_error(&path, e))?;
        format::check_id(&bytes, id, &path, "index file")?;
        let bytes = self
            .crypto
            .open(crypto::Ad::Index, bytes)
            .map_err(|detail| Error::Integrity {
                path: path.clone(),
                detail,
            })?;
        format::index::decode_file(bytes).map_err(|detail| Error::Integrity { path, detail })
    }

    /// Reads every index file into a blob map, checking each file's id.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for a file that does not match its id or does
    /// not parse; I/O errors.
    pub fn load_index(&self) -> Result<Index> {
        self.load_index_files()
    }

    /// Every index file as one blob map, loaded on first use and shared by
    /// whoever asks after (the backup's chunker, the reader of a format-3
    /// entries stream, restore): the index as it was then, without the
    /// packs this process wrote since.
    ///
    /// # Errors
    ///
    /// As [`Repo::load_index`].
    pub fn index(&self) -> Result<std::sync::Arc<Index>> {
        if let Some(i) = self.index.get() {
            return Ok(i.clone());
        }
        let _loading = self.index_loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = self.index.get() {
            return Ok(i.clone());
        }
        let loaded = std::sync::Arc::new(self.load_index_files()?);
        Ok(self.index.get_or_init(|| loaded).clone())
    }

    /// Makes `index` the one [`Repo::index`] hands out, unless one was
    /// loaded already (`snap check` builds it from the index files that
    /// parse, so that one damaged file does not hide every entries
    /// stream).
    pub fn preload_index(&self, index: Index) {
        let _ = self.index.set(std::sync::Arc::new(index));
    }

    fn load_index_files(&self) -> Result<Index> {
        let started = std::time::Instant::now();
        let mut files = 0u64;
        let mut map = Index::default();
        // One file at a time, parsed straight into the map: memory is the
        // map and the largest file, not every file and a parsed copy.
        for n in self.list(FileKind::Index)? {
            let Some(id) = n.strip_suffix(FileKind::Index.suffix()) else {
                continue;
            };
            let bytes = self.read_index_file(id)?;
            tracing::debug!(index = id, bytes = bytes.len(), "index file read");
            format::index::index_into(&bytes, &mut map).map_err(|e| Error::Integrity {
                path: self.file_path(FileKind::Index, id),
                detail: format!("malformed index: {e}"),
            })?;
            files += 1;
        }
        tracing::info!(
            files,
            ms = started.elapsed().as_millis() as u64,
            "index loaded"
        );
        Ok(map)
    }

    /// Reads and parses the entries file `id`, checking it against its id
    /// (a piece at a time, so a damaged file costs no more memory than its
    /// records and one line of at most [`ENTRIES_LINE_MAX`] bytes).
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for a missing, altered or malformed file (the
    /// record's line number is named).
    pub fn read_entries(&self, entries: &EntriesRef) -> Result<Vec<EntryRecord>> {
        let mut reader = self.entries_reader(entries, 8 << 20)?;
        let mut out = Vec::new();
        while let Some((piece, first)) = reader.next_piece()? {
            // One part per core, split at line ends.
            let parts = split_lines(&piece, crate::par::cores());
            let path = reader.path().to_owned();
            for part in
                crate::par::map(&parts, |&(part, f)| parse_lines(&path, part, first + f - 1))
            {
                out.extend(part?);
            }
        }
        Ok(out)
    }

    /// Opens entries file `id` for reading as a stream of pieces of whole
    /// lines of about `piece` bytes, each checked into a running BLAKE3 (see [`EntriesReader`]).
    ///
    /// # Errors
    ///
    /// As [`Repo::open_entries`].
    pub fn entries_reader(&self, entries: &EntriesRef, piece: usize) -> Result<EntriesReader> {
        let (path, file) = self.open_entries(entries)?;
        Ok(EntriesReader::new(file, &entries.id, path, piece))
    }

    /// Opens entries file `id` for reads at any offset (backup reads its
    /// parent's this way), with its path for messages. Its bytes must be
    /// checked against `id` before anything derived from them is
    /// committed.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for a malformed id or a missing file.
    pub fn open_entries(&self, entries: &EntriesRef) -> Result<(String, Box<dyn Ranged>)> {
        let id = entries.id.as_str();
        if !format::is_hex_id(id) {
            return Err(Error::Integrity {
                path: self.display(layout::ENTRIES),
                detail: format!("entries id {id:?} is not a BLAKE3-256 hex id"),
            });
        }
        let path = self.entries_display(entries);
        if let Some(chunks) = &entries.chunks {
            let stream = entries::ChunkedEntries::open(
                self.store.clone(),
                self.index()?,
                self.crypto.clone(),
                chunks,
                &path,
            )?;
            return Ok((path, Box::new(stream)));
        }
        let file = self
            .store
            .open(FileKind::Entries, id)
            .map_err(|e| Error::Integrity {
                path: path.clone(),
                detail: format!("cannot read entries file: {e}"),
            })?;
        Ok((path, file))
    }

    /// Where a snapshot's entries are, for messages: the entries file
    /// (`<repo>/entries/<2 hex>/<id>.jsonl`), or for a format-3 stream of
    /// blobs `<repo>/packs (entries <id>)`.
    pub fn entries_display(&self, entries: &EntriesRef) -> String {
        match entries.chunks {
            Some(_) => format!("{} (entries {})", self.display(layout::PACKS), entries.id),
            None => self.file_path(FileKind::Entries, &entries.id),
        }
    }

    /// This handle made read-only for `snap backup --dry-run`: reads go
    /// to the repository; every put only reports the bytes it would add
    /// ([`storage::dry::DryRun`]).
    pub fn into_dry_run(mut self) -> Repo {
        self.store = std::sync::Arc::new(storage::dry::DryRun::new(self.store));
        self
    }

    /// Whether this handle writes nothing ([`Repo::into_dry_run`]).
    pub fn is_dry_run(&self) -> bool {
        self.store.is_dry_run()
    }

    /// Whether the backend fetches announced pack ranges ahead
    /// ([`Repo::read_ahead`]); remote backends do.
    pub fn reads_ahead(&self) -> bool {
        self.store.reads_ahead()
    }

    /// Announces that bytes `start..end` of pack `id` are read soon (see
    /// [`Backend::read_ahead`]); best effort.
    pub fn read_ahead(&self, id: &blake3::Hash, start: u64, end: u64) {
        self.store
            .read_ahead(FileKind::Pack, &id.to_hex(), start, end);
    }

    /// Opens pack `id` for reads at any offset.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] when the pack is missing or is not a regular
    /// file in a fan-out directory; other I/O errors.
    pub fn open_pack(&self, id: &blake3::Hash) -> Result<Box<dyn Ranged>> {
        let hex = id.to_hex();
        let path = self.file_path(FileKind::Pack, &hex);
        match self.store.open(FileKind::Pack, &hex) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Integrity {
                path,
                detail: "pack listed in the index is missing".into(),
            }),
            // A symlink or a file where the fan-out directory belongs.
            Err(e)
                if e.kind() == io::ErrorKind::NotADirectory
                    || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) =>
            {
                Err(Error::Integrity {
                    path: self.display(&format!("{}/{}", layout::PACKS, &hex[..2])),
                    detail: format!("not a directory: {e}"),
                })
            }
            Err(e) => Err(read_error(&path, e)),
        }
    }
}
