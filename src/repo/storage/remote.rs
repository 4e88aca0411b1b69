//! [`RemoteBackend`]: a repository in an S3-compatible bucket or on an
//! SFTP server, through `opendal` (services `s3` and `sftp`) run on a small
//! tokio runtime beside the sync core (after rustic's
//! `crates/backend/src/opendal.rs`).
//!
//! Promises (`docs/FORMAT.md`, "Remote repositories"):
//!
//! - **Create-only puts.** On S3 a file is written with one `PUT` carrying
//!   `If-None-Match: *`; an object appears whole or not at all, and an
//!   existing name is never replaced (a server that does not support the
//!   condition is asked with `HEAD` first; names are content addresses, so
//!   a lost race writes the same bytes). On SFTP a file is written under
//!   `tmp/` and renamed to its name; SFTP's `rename` (draft-ietf-secsh-
//!   filexfer-02, §6.5, as OpenSSH's `sftp-server` does it) fails when the
//!   name exists.
//! - **Barriers wait for uploads.** [`Backend::put_staged`] of a pack
//!   starts its upload and returns (at most [`UPLOADS_IN_FLIGHT`] at once;
//!   bytes wait in memory, bounded by that); [`Backend::barrier`] and
//!   [`Backend::sync_names`] return once every started upload is
//!   acknowledged by the server, and fail with the first upload's error.
//!   The commit protocol puts the index after a barrier and the snapshot
//!   record last, so nothing names an object the server has not stored.
//! - **Locks are objects** (`locks/<random>.json`, restic's design): a
//!   holder writes one, then lists the others; it backs off when one
//!   conflicts (an exclusive lock, or any lock when it wants an exclusive
//!   one) and is not stale. Holders rewrite theirs every
//!   [`LOCK_REFRESH`]; a lock not rewritten for [`LOCK_STALE`] is stale
//!   and ignored.
//! - **A local cache** (`$XDG_CACHE_HOME/snap/<location hash>/`, else
//!   `~/.cache/snap/…`) keeps index files, entries files, snapshot
//!   records and key files, each checked against its id (the BLAKE3 of
//!   its bytes) whenever it is read; a copy that does not match is removed
//!   and fetched again. Staged files other than packs (which are staged in
//!   memory) are written there too (`tmp/`).
//! - **Retries and time-outs**: opendal's retry layer (up to
//!   [`RETRIES`] retries of a temporary error, backoff from 200 ms doubling
//!   to 5 s with jitter) and time-out layer ([`OP_TIMEOUT`] per request,
//!   [`IO_TIMEOUT`] per read or write step): a server that does not answer
//!   fails a request after at most `(RETRIES + 1) × OP_TIMEOUT` plus the
//!   backoff, about 2.6 minutes; one that refuses connections, within
//!   seconds.
//!
//! Side effects: network requests to the server; files under the cache
//! directory; a tokio runtime of two worker threads, started on first use;
//! SFTP runs the `ssh` client (`openssh` crate), which reads the user's
//! ssh configuration.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use opendal::{ErrorKind as OdErrorKind, Operator};

mod blocks;
use blocks::{Blocks, RemoteFile};

use super::local::LocalStaged;
use super::location::Location;
use super::{valid, Backend, FileKind, Put, Ranged, Staged, Syncs};
use crate::fs::{Dir, Name, RelPath};
use crate::repo::layout::{self, CONFIG, STAGING};

/// Uploads started by [`Backend::put_staged`] that may be in flight at
/// once; each holds its file's bytes (a pack is at most about 16 MiB).
pub const UPLOADS_IN_FLIGHT: usize = 4;
/// Retries of a request that failed with a temporary error.
pub const RETRIES: usize = 4;
/// The longest one request other than a transfer step (stat, list,
/// delete, `CreateBucket`) may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest one read or write step of a transfer may wait.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a lock holder rewrites its lock object.
pub const LOCK_REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lock object older than this (by the time written in it) is stale.
pub const LOCK_STALE: Duration = Duration::from_secs(30 * 60);
/// Where lock objects live.
pub const LOCKS: &str = "locks";
/// The cache directory of entries blobs (their stored, sealed form).
const BLOBS: &str = "blobs";
/// Most bytes of a lock object read.
const LOCK_MAX: u64 = 4096;

/// The runtime every remote request runs on: two worker threads, started
/// on first use, kept for the process.
fn runtime() -> io::Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("snap-remote")
        .enable_all()
        .build()?;
    Ok(RT.get_or_init(|| rt))
}

/// Runs `f` on the runtime and waits for it (called from the sync core,
/// never from a runtime thread).
fn block<T>(f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    runtime()?.block_on(f)
}

/// What a remote server answered (or that it did not), after retries: the
/// inner error of the `io::Error`s this backend returns, which makes them
/// `E_REMOTE` ([`crate::error::io_error_id`]). The text is opendal's: the
/// operation, the request URI and the server's response.
#[derive(Debug)]
pub struct RemoteError(pub String);

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RemoteError {}

/// An opendal error as an `io::Error` of the matching kind, keeping its
/// text (which carries the server's response) in a [`RemoteError`].
fn io_err(e: opendal::Error) -> io::Error {
    let kind = match e.kind() {
        OdErrorKind::NotFound => io::ErrorKind::NotFound,
        OdErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
        OdErrorKind::AlreadyExists | OdErrorKind::ConditionNotMatch => io::ErrorKind::AlreadyExists,
        OdErrorKind::Unsupported => io::ErrorKind::Unsupported,
        OdErrorKind::ConfigInvalid => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, RemoteError(e.to_string()))
}

/// Bytes moved to and from the server by this process, for progress and
/// facts.
#[derive(Debug, Default)]
pub struct Transfer {
    /// Bytes uploaded (object bodies).
    pub up: AtomicU64,
    /// Bytes downloaded (object bodies), cache hits not included.
    pub down: AtomicU64,
}

/// The process's transfer counters.
pub fn transfer() -> &'static Transfer {
    static T: OnceLock<Transfer> = OnceLock::new();
    T.get_or_init(Transfer::default)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    S3,
    Sftp,
}

/// A repository in a bucket or on an SFTP server.
#[derive(Debug)]
pub struct RemoteBackend {
    location: Location,
    op: Operator,
    service: Service,
    /// The S3 bucket (for creating it).
    bucket: Option<Bucket>,
    /// This repository's cache directory.
    cache: Dir,
    cache_path: PathBuf,
    uploads: Mutex<Vec<tokio::task::JoinHandle<io::Result<Put>>>>,
    slots: Arc<tokio::sync::Semaphore>,
    /// The holder of the last conflicting lock seen.
    note: Mutex<String>,
    /// The time-out of a request other than a transfer step.
    op_timeout: Duration,
    /// Pack blocks fetched last and ahead ([`blocks`]).
    blocks: Arc<Blocks>,
}

/// The cache directory for `location`: `$XDG_CACHE_HOME/snap`, else
/// `$HOME/.cache/snap` (XDG Base Directory Specification), then the first
/// 16 hex digits of the BLAKE3 of the location's text.
///
/// # Errors
///
/// `NotFound` when neither variable is set.
pub fn cache_dir(location: &Location, env: &dyn Fn(&str) -> Option<String>) -> io::Result<PathBuf> {
    let base = match env("XDG_CACHE_HOME") {
        Some(x) => PathBuf::from(x).join("snap"),
        None => match env("HOME") {
            Some(h) => PathBuf::from(h).join(".cache/snap"),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no cache directory: set XDG_CACHE_HOME or HOME",
                ))
            }
        },
    };
    let h = blake3::hash(location.to_string().as_bytes()).to_hex();
    Ok(base.join(&h[..16]))
}

fn name(s: &str) -> io::Result<Name> {
    Name::new(s.as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Whether files of `kind` are kept in the cache: the small, immutable,
/// content-addressed ones every command reads.
fn cacheable(kind: FileKind) -> bool {
    matches!(
        kind,
        FileKind::Index | FileKind::Entries | FileKind::Snapshot | FileKind::Key
    )
}

/// An S3 bucket, for `CreateBucket`.
#[derive(Debug)]
struct Bucket {
    endpoint: String,
    name: String,
    /// `AWS_DEFAULT_REGION`, else `AWS_REGION`, else `us-east-1`.
    region: String,
    /// Access key, secret and session token, when given in the
    /// environment (else the profile's).
    keys: Option<(String, String, Option<String>)>,
}

impl RemoteBackend {
    /// Connects to `location` (remote; see [`Location`]). Nothing is sent
    /// yet: the first request connects.
    ///
    /// S3 credentials come from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, else the profile
    /// (`AWS_PROFILE`, `~/.aws/credentials`). SFTP runs `ssh` with the
    /// user's configuration; `SNAP_SFTP_IDENTITY` names a private key and
    /// `SNAP_SFTP_KNOWN_HOSTS` (`strict`, the default, `add` or `accept`)
    /// says what to do with a host key not yet known. `SNAP_REMOTE_TIMEOUT`
    /// (seconds) replaces both [`OP_TIMEOUT`] and [`IO_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a local location or bad settings; cache directory
    /// errors.
    pub fn new(location: &Location) -> io::Result<RemoteBackend> {
        Self::with_env(location, &|k| {
            std::env::var(k).ok().filter(|v| !v.is_empty())
        })
    }

    /// [`RemoteBackend::new`] reading its settings through `env` instead of
    /// the process environment.
    ///
    /// # Errors
    ///
    /// As [`RemoteBackend::new`].
    pub fn with_env(
        location: &Location,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> io::Result<RemoteBackend> {
        // HTTPS through rustls with ring (installed once; a second install
        // is refused and harmless).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (op, service, bucket) = match location {
            Location::Local(p) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a remote location", p.display()),
                ))
            }
            Location::S3 {
                endpoint,
                bucket,
                prefix,
            } => {
                let region = ["AWS_DEFAULT_REGION", "AWS_REGION"]
                    .iter()
                    .find_map(|v| env(v))
                    .unwrap_or_else(|| "us-east-1".into());
                let mut b = opendal::services::S3::default()
                    .endpoint(endpoint)
                    .bucket(bucket)
                    .root(&format!("/{prefix}"))
                    .region(&region)
                    .disable_ec2_metadata();
                let keys = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                    (Some(a), Some(k)) => {
                        b = b.access_key_id(&a).secret_access_key(&k);
                        let t = env("AWS_SESSION_TOKEN");
                        if let Some(t) = &t {
                            b = b.session_token(t);
                        }
                        Some((a, k, t))
                    }
                    _ => None,
                };
                (
                    Operator::new(b).map_err(io_err)?.finish(),
                    Service::S3,
                    Some(Bucket {
                        endpoint: endpoint.clone(),
                        name: bucket.clone(),
                        region,
                        keys,
                    }),
                )
            }
            Location::Sftp {
                user,
                host,
                port,
                path,
            } => {
                let mut endpoint = format!("ssh://{host}");
                if let Some(p) = port {
                    endpoint.push_str(&format!(":{p}"));
                }
                let mut b = opendal::services::Sftp::default()
                    .endpoint(&endpoint)
                    .root(path);
                if let Some(u) = user {
                    b = b.user(u);
                }
                if let Some(k) = env("SNAP_SFTP_IDENTITY") {
                    b = b.key(&k);
                }
                let strategy = env("SNAP_SFTP_KNOWN_HOSTS").unwrap_or_default();
                match strategy.as_str() {
                    "" | "strict" => {}
                    "add" | "accept" => b = b.known_hosts_strategy(&strategy),
                    other => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!(
                                "SNAP_SFTP_KNOWN_HOSTS={other:?}: expected strict, add or accept"
                            ),
                        ))
                    }
                }
                (
                    Operator::new(b).map_err(io_err)?.finish(),
                    Service::Sftp,
                    None,
                )
            }
        };
        let timeout = match env("SNAP_REMOTE_TIMEOUT") {
            None => None,
            Some(t) => match t.parse::<u64>() {
                Ok(n @ 1..=3600) => Some(Duration::from_secs(n)),
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("SNAP_REMOTE_TIMEOUT={t:?}: expected seconds, 1 to 3600"),
                    ))
                }
            },
        };
        let op = op
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(timeout.unwrap_or(OP_TIMEOUT))
                    .with_io_timeout(timeout.unwrap_or(IO_TIMEOUT)),
            )
            .layer(
                opendal::layers::RetryLayer::new()
                    .with_max_times(RETRIES)
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_factor(2.0)
                    .with_jitter(),
            )
            .layer(opendal::layers::ConcurrentLimitLayer::new(16));
        let cache_path = cache_dir(location, env)?;
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&cache_path)?;
        }
        let cache = Dir::open_root(&cache_path)?;
        cache.ensure_dir(&name(STAGING)?, 0o700)?;
        Ok(RemoteBackend {
            location: location.clone(),
            op,
            service,
            bucket,
            cache,
            cache_path,
            uploads: Mutex::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(UPLOADS_IN_FLIGHT)),
            note: Mutex::new("no holder seen".into()),
            op_timeout: timeout.unwrap_or(OP_TIMEOUT),
            blocks: Arc::default(),
        })
    }

    /// The cache directory of this repository.
    pub fn cache_path(&self) -> &Path {
        &self.cache_path
    }

    /// The size of object `key`: remembered from an earlier `stat`, else
    /// asked (one `HEAD`).
    fn pack_size(&self, key: &str) -> io::Result<u64> {
        if let Some(s) = self.blocks.size(key) {
            return Ok(s);
        }
        let op = &self.op;
        let size = block(async move { Ok(op.stat(key).await.map_err(io_err)?.content_length()) })?;
        self.blocks.set_size(key, size);
        Ok(size)
    }

    fn key(kind: FileKind, id: &str) -> io::Result<String> {
        valid(kind, id)?;
        Ok(layout::path(kind, id))
    }

    /// The cached copy of `kind`/`id`, when there is one whose BLAKE3 is
    /// its id (a copy that is not is removed).
    fn cached(&self, kind: FileKind, id: &str, max: u64) -> Option<Vec<u8>> {
        if !cacheable(kind) {
            return None;
        }
        let (dir, file) = self.cache_dir_of(kind, id, false).ok()?;
        let bytes = dir.read_all(&file, max).ok()?;
        if blake3::hash(&bytes).to_hex().as_str() == id {
            Some(bytes)
        } else {
            drop_cached(&dir, &file, &self.cache_path);
            None
        }
    }

    /// The cache directory holding `kind`/`id` (created when `create`) and
    /// the file's name.
    fn cache_dir_of(&self, kind: FileKind, id: &str, create: bool) -> io::Result<(Dir, Name)> {
        valid(kind, id)?;
        let mut dir = self.cache.open_path(&RelPath::root())?;
        let mut parts = vec![kind.dir()];
        if let Some(sub) = layout::fanout(kind, id) {
            parts.push(sub);
        }
        for p in parts {
            let n = name(p)?;
            if create {
                dir.ensure_dir(&n, 0o700)?;
            }
            dir = dir.open_dir(&n)?;
        }
        Ok((dir, name(&layout::file_name(kind, id))?))
    }

    /// The cache directory of entries blobs (`blobs/<2 hex>/`, created
    /// when `create`) and the name of blob `id` in it.
    fn blob_cache_of(&self, id: &str, create: bool) -> io::Result<(Dir, Name)> {
        // An id names a file only once it passes the pack id rule.
        valid(FileKind::Pack, id)?;
        let mut dir = self.cache.open_path(&RelPath::root())?;
        for p in [BLOBS, &id[..2]] {
            let n = name(p)?;
            if create {
                dir.ensure_dir(&n, 0o700)?;
            }
            dir = dir.open_dir(&n)?;
        }
        Ok((dir, name(id)?))
    }

    /// Keeps `bytes` as the cached copy of `kind`/`id` when they are what
    /// the id names; a failure only costs a later download.
    fn keep(&self, kind: FileKind, id: &str, bytes: &[u8]) {
        if !cacheable(kind) || blake3::hash(bytes).to_hex().as_str() != id {
            return;
        }
        let kept = self
            .cache_dir_of(kind, id, true)
            .and_then(|(dir, file)| write_cached(&dir, &file, bytes));
        if let Err(e) = kept {
            tracing_warn(&format!(
                "cannot keep {} in the cache {}: {e}",
                layout::path(kind, id),
                self.cache_path.display()
            ));
        }
    }

    /// Removes the cached copy of `kind`/`id`, if any.
    fn forget_cached(&self, kind: FileKind, id: &str) {
        if let Ok((dir, file)) = self.cache_dir_of(kind, id, false) {
            drop_cached(&dir, &file, &self.cache_path);
        }
    }

    /// Downloads the whole object at `key`, refused when longer than
    /// `max`.
    fn fetch(&self, key: &str, max: u64) -> io::Result<Vec<u8>> {
        tracing::debug!(key, "get");
        let op = &self.op;
        let bytes = block(async move {
            let size = op.stat(key).await.map_err(io_err)?.content_length();
            if size > max {
                return Err(super::too_large(size, max));
            }
            if size == 0 {
                return Ok(Vec::new());
            }
            Ok(op.read(key).await.map_err(io_err)?.to_vec())
        })?;
        if bytes.len() as u64 > max {
            return Err(super::too_large(bytes.len() as u64, max));
        }
        transfer()
            .down
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Waits for every started upload; the first error, after all ended.
    fn settle(&self) -> io::Result<()> {
        let handles = std::mem::take(&mut *self.uploads.lock().unwrap_or_else(|p| p.into_inner()));
        let mut first = None;
        for h in handles {
            let r = block(async move {
                h.await
                    .map_err(|e| io::Error::other(format!("upload task: {e}")))?
            });
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    #[cfg(test)]
    fn op_delete(&self, key: &str) {
        let op = &self.op;
        block(async move { op.delete(key).await.map_err(io_err) }).unwrap();
    }

    /// The names of the objects under `dir` (a directory key ending in
    /// `/`), relative to it; none when it does not exist.
    fn list_dir(&self, dir: &str, recursive: bool) -> io::Result<Vec<String>> {
        let op = &self.op;
        let entries = match block(async move {
            op.list_with(dir).recursive(recursive).await.map_err(io_err)
        }) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(entries
            .iter()
            .filter_map(|e| e.path().strip_prefix(dir))
            .filter(|p| !p.is_empty() && !p.ends_with('/'))
            .map(str::to_owned)
            .collect())
    }

    /// Makes the bucket when it is missing (S3 `CreateBucket`, signed with
    /// AWS Signature Version 4 by `reqsign`).
    fn ensure_bucket(&self) -> io::Result<()> {
        let Some(bucket) = &self.bucket else {
            return Ok(());
        };
        let op = &self.op;
        let exists = block(async move {
            match op.list_with("/").limit(1).await {
                Ok(_) => Ok(true),
                Err(e)
                    if e.kind() == OdErrorKind::NotFound
                        || e.to_string().contains("NoSuchBucket") =>
                {
                    Ok(false)
                }
                Err(e) => Err(io_err(e)),
            }
        })?;
        if exists {
            return Ok(());
        }
        let limit = self.op_timeout;
        block(async move {
            tokio::time::timeout(limit, create_bucket(bucket))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        RemoteError(format!(
                            "CreateBucket {}: no answer from {} in {} s",
                            bucket.name,
                            bucket.endpoint,
                            limit.as_secs()
                        )),
                    )
                })?
        })
    }
}

/// `PUT /BUCKET` (S3 `CreateBucket`): a bucket that exists already and is
/// the caller's counts as made.
async fn create_bucket(b: &Bucket) -> io::Result<()> {
    let (endpoint, bucket, region) = (&b.endpoint, &b.name, b.region.as_str());
    let ctx = reqsign_core::Context::new()
        .with_env(reqsign_core::OsEnv)
        .with_file_read(reqsign_file_read_tokio::TokioFileRead);
    let request_signer = reqsign_aws_v4::RequestSigner::new("s3", region);
    let signer = match &b.keys {
        Some((a, k, t)) => {
            let mut p = reqsign_aws_v4::StaticCredentialProvider::new(a, k);
            if let Some(t) = t {
                p = p.with_session_token(t);
            }
            reqsign_core::Signer::new(ctx, p, request_signer)
        }
        None => reqsign_core::Signer::new(
            ctx,
            reqsign_aws_v4::DefaultCredentialProvider::new(),
            request_signer,
        ),
    };
    let body = if region == "us-east-1" {
        String::new()
    } else {
        format!(
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
        )
    };
    let req = http::Request::put(format!("{endpoint}/{bucket}"))
        .header(http::header::CONTENT_LENGTH, body.len())
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .body(())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let (mut parts, ()) = req.into_parts();
    signer
        .sign(&mut parts, None)
        .await
        .map_err(|e| io::Error::other(format!("signing CreateBucket: {e}")))?;
    parts.headers.remove(http::header::HOST);
    let req = http::Request::from_parts(parts, opendal::Buffer::from(body.into_bytes()));
    let client = opendal::raw::HttpClient::new().map_err(io_err)?;
    let resp = client.send(req).await.map_err(io_err)?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&resp.into_body().to_vec()).into_owned();
    if text.contains("BucketAlreadyOwnedByYou") {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "CreateBucket {bucket}: {status}: {}",
        text.chars().take(512).collect::<String>()
    )))
}

/// Writes `bytes` as the cache file `file` in `dir`: to `.<file>.<random>.part`
/// first, then renamed over any older copy, so a reader never sees part of
/// one. Not synced: a copy lost in a crash only costs a download, and a
/// torn one fails its id check and is fetched again.
///
/// # Errors
///
/// Create, write and rename errors (the part file is removed).
fn write_cached(dir: &Dir, file: &Name, bytes: &[u8]) -> io::Result<()> {
    let tmp = name(&format!(".{}.{}.part", file, crate::sys::random_hex(6)?))?;
    let fd = dir.create_file(&tmp, 0o600)?;
    let r = crate::fs::fd::write_all_at(&fd, bytes, 0)
        .and_then(|()| crate::fs::fd::close(fd))
        .and_then(|()| dir.rename(&tmp, dir, file, false));
    if r.is_err() {
        if let Err(u) = dir.unlink(&tmp) {
            tracing_warn(&format!("cannot remove cache part file {tmp}: {u}"));
        }
    }
    r
}

/// Prints a warning on stderr (the remote layer's only diagnostics).
/// Removes a cached copy (one that failed its id check, or one whose
/// object is gone). A copy already absent is fine; another failure is
/// warned about: the copy then fails its check again on the next read and
/// is fetched, so nothing goes wrong, but the cache cannot shed it.
fn drop_cached(dir: &Dir, file: &Name, cache: &Path) {
    if let Err(e) = dir.unlink(file) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing_warn(&format!(
                "cannot remove {file} from the cache {}: {e}",
                cache.display()
            ));
        }
    }
}

fn tracing_warn(msg: &str) {
    eprintln!("snap: warning: {msg}");
}

/// Uploads `bytes` as `key`, create-only (see the module docs).
async fn upload(op: &Operator, service: Service, key: &str, bytes: Vec<u8>) -> io::Result<Put> {
    let len = bytes.len() as u64;
    tracing::debug!(key, bytes = len, "put");
    // Shared, not copied, by the retries and the fallback below.
    let bytes = opendal::Buffer::from(bytes);
    let put = match service {
        Service::S3 => match op.write_with(key, bytes.clone()).if_not_exists(true).await {
            Ok(_) => Put::Created(len),
            Err(e) if e.kind() == OdErrorKind::ConditionNotMatch => Put::Existed,
            Err(e) if e.kind() == OdErrorKind::Unsupported => {
                if op.exists(key).await.map_err(io_err)? {
                    Put::Existed
                } else {
                    op.write(key, bytes).await.map_err(io_err)?;
                    Put::Created(len)
                }
            }
            Err(e) => return Err(io_err(e)),
        },
        Service::Sftp => {
            if op.exists(key).await.map_err(io_err)? {
                return Ok(Put::Existed);
            }
            let tmp = format!("{STAGING}/{}.tmp", crate::sys::random_hex(12)?);
            op.write(&tmp, bytes).await.map_err(io_err)?;
            match op.rename(&tmp, key).await {
                Ok(()) => Put::Created(len),
                Err(e) => {
                    let _ = op.delete(&tmp).await;
                    if op.exists(key).await.unwrap_or(false) {
                        Put::Existed
                    } else {
                        return Err(io_err(e));
                    }
                }
            }
        }
    };
    if let Put::Created(n) = put {
        transfer().up.fetch_add(n, Ordering::Relaxed);
    }
    Ok(put)
}

/// A pack staged in memory ([`Backend::stage`] of a remote backend).
struct MemStaged(Vec<u8>);

impl Staged for MemStaged {
    fn append(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        self.0.reserve(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            self.0.extend_from_slice(p);
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn start_writeback(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn discard(self: Box<Self>) {}

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// A staged file given to [`Backend::put_staged`]: bytes in memory, or a
/// file in the cache's `tmp/`.
enum Held {
    Memory(Vec<u8>),
    File(Box<LocalStaged>),
}

impl Held {
    /// The staged bytes; a staged file is read back and removed.
    fn bytes(self) -> io::Result<Vec<u8>> {
        match self {
            Held::Memory(b) => Ok(b),
            Held::File(f) => {
                let bytes = f.read_back();
                f.discard();
                bytes
            }
        }
    }
}

/// A file held whole in memory (a downloaded entries file).
struct MemFile(Vec<u8>);

impl Ranged for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Some(rest) = self.0.get(offset.min(self.0.len() as u64) as usize..) else {
            return Ok(0);
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

/// A lock object's content.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LockRecord {
    exclusive: bool,
    host: String,
    pid: u32,
    /// When it was written or last refreshed (RFC 3339).
    time: String,
}

impl LockRecord {
    fn now(exclusive: bool) -> LockRecord {
        LockRecord {
            exclusive,
            host: crate::sys::hostname(),
            pid: std::process::id(),
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }

    fn note(&self) -> String {
        format!(
            "pid={} host={} {} since={}",
            self.pid,
            self.host,
            if self.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            self.time
        )
    }

    /// Whether the lock is stale: not refreshed for [`LOCK_STALE`], or
    /// written on this host by a process that no longer exists (restic's
    /// rule; a host name shared by several machines or PID namespaces
    /// defeats the second test).
    fn stale(&self) -> bool {
        if self.host == crate::sys::hostname() && !crate::sys::process_exists(self.pid) {
            return true;
        }
        match humantime::parse_rfc3339_weak(&self.time) {
            Ok(t) => SystemTime::now()
                .duration_since(t)
                .is_ok_and(|age| age > LOCK_STALE),
            Err(_) => true,
        }
    }
}

/// A held lock object: refreshed by a thread every [`LOCK_REFRESH`],
/// removed when dropped.
struct RemoteLock {
    op: Operator,
    key: String,
    stop: Arc<(Mutex<bool>, Condvar)>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        {
            let (m, c) = &*self.stop;
            *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
            c.notify_all();
        }
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let (op, key) = (&self.op, &self.key);
        if let Err(e) = block(async move { op.delete(key).await.map_err(io_err) }) {
            tracing_warn(&format!(
                "cannot remove lock object {key}: {e} (it turns stale after {} min)",
                LOCK_STALE.as_secs() / 60
            ));
        }
    }
}

/// Writes the lock object `key` for `rec`.
fn write_lock(op: &Operator, key: &str, rec: &LockRecord) -> io::Result<()> {
    let body = serde_json::to_vec(rec).map_err(io::Error::other)?;
    block(async move { op.write(key, body).await.map(|_| ()).map_err(io_err) })
}

impl Backend for RemoteBackend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    fn prepare(&self, fresh: bool) -> io::Result<Option<String>> {
        self.ensure_bucket()?;
        if fresh {
            let op = &self.op;
            let top = block(async move { op.list_with("/").limit(2).await.map_err(io_err) })?;
            if let Some(e) = top.iter().find(|e| !e.path().is_empty() && e.path() != "/") {
                return Ok(Some(e.path().trim_end_matches('/').to_owned()));
            }
        }
        Ok(None)
    }

    fn list(&self, kind: FileKind) -> io::Result<Vec<String>> {
        if kind == FileKind::Config {
            return Ok(if self.exists(kind, "")? {
                vec![CONFIG.to_owned()]
            } else {
                Vec::new()
            });
        }
        self.list_dir(&format!("{}/", kind.dir()), kind.fans_out())
    }

    fn exists(&self, kind: FileKind, id: &str) -> io::Result<bool> {
        let key = Self::key(kind, id)?;
        let op = &self.op;
        block(async move { op.exists(&key).await.map_err(io_err) })
    }

    fn read(&self, kind: FileKind, id: &str, max: u64) -> io::Result<Vec<u8>> {
        let key = Self::key(kind, id)?;
        if let Some(b) = self.cached(kind, id, max) {
            return Ok(b);
        }
        let bytes = self.fetch(&key, max)?;
        self.keep(kind, id, &bytes);
        Ok(bytes)
    }

    fn open(&self, kind: FileKind, id: &str) -> io::Result<Box<dyn Ranged>> {
        let key = Self::key(kind, id)?;
        if cacheable(kind) {
            return Ok(Box::new(MemFile(self.read(kind, id, u64::MAX)?)));
        }
        let size = self.pack_size(&key)?;
        Ok(Box::new(RemoteFile {
            op: self.op.clone(),
            key,
            size,
            blocks: self.blocks.clone(),
        }))
    }

    fn reads_ahead(&self) -> bool {
        true
    }

    fn puts_need_no_barrier(&self) -> bool {
        true
    }

    fn read_ahead(&self, kind: FileKind, id: &str, start: u64, end: u64) {
        if cacheable(kind) {
            return;
        }
        let Ok(key) = Self::key(kind, id) else { return };
        if let Ok(size) = self.pack_size(&key) {
            self.blocks.read_ahead(&self.op, &key, size, start, end);
        }
    }

    fn stage(&self, kind: FileKind) -> io::Result<Box<dyn Staged>> {
        // A pack (about 16 MiB) is uploaded from memory anyway: staged
        // there, it costs no write to the cache and no read back. Other
        // files (a format-2 entries file may be large) go to the cache.
        if kind == FileKind::Pack {
            return Ok(Box::new(MemStaged(Vec::new())));
        }
        let dir = self.cache.open_dir(&name(STAGING)?)?;
        Ok(Box::new(LocalStaged::create(dir)?))
    }

    fn put_staged(
        &self,
        staged: Box<dyn Staged>,
        kind: FileKind,
        id: &str,
        sync_data: bool,
        _syncs: &mut Syncs,
    ) -> io::Result<Put> {
        let staged = match staged.into_any().downcast::<MemStaged>() {
            Ok(m) => Held::Memory(m.0),
            Err(other) => Held::File(other.downcast::<LocalStaged>().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a staged file of another backend",
                )
            })?),
        };
        if sync_data {
            let bytes = staged.bytes();
            let key = Self::key(kind, id)?;
            let bytes = bytes?;
            let put = block(upload(&self.op, self.service, &key, bytes.clone()))?;
            self.keep(kind, id, &bytes);
            return Ok(put);
        }
        // A slot first, then the bytes of a staged file: at most
        // UPLOADS_IN_FLIGHT uploads (and the one waiting) hold bytes.
        let slots = self.slots.clone();
        let permit = block(async move {
            slots
                .acquire_owned()
                .await
                .map_err(|e| io::Error::other(e.to_string()))
        });
        let bytes = staged.bytes();
        let (permit, key, bytes) = (permit?, Self::key(kind, id)?, bytes?);
        let len = bytes.len() as u64;
        let (op, service) = (self.op.clone(), self.service);
        let task = runtime()?.spawn(async move {
            let r = upload(&op, service, &key, bytes).await;
            drop(permit);
            r
        });
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        Ok(Put::Created(len))
    }

    fn put(&self, kind: FileKind, id: &str, bytes: &[u8], _syncs: &mut Syncs) -> io::Result<Put> {
        let key = Self::key(kind, id)?;
        let put = block(upload(&self.op, self.service, &key, bytes.to_vec()))?;
        self.keep(kind, id, bytes);
        Ok(put)
    }

    fn sync_names(&self, kind: FileKind, id: &str, _syncs: &mut Syncs) -> io::Result<()> {
        valid(kind, id)?;
        self.settle()
    }

    fn replace_config(&self, bytes: &[u8], _syncs: &mut Syncs) -> io::Result<()> {
        match self.service {
            // One PUT replaces an object whole.
            Service::S3 => {
                let (op, body) = (&self.op, bytes.to_vec());
                block(async move { op.write(CONFIG, body).await.map(|_| ()).map_err(io_err) })
            }
            Service::Sftp => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SFTP cannot replace a file atomically (its rename does not overwrite): \
                 copy the repository to a local directory, migrate it there and copy it back",
            )),
        }
    }

    fn remove(&self, kind: FileKind, id: &str) -> io::Result<()> {
        let key = Self::key(kind, id)?;
        self.forget_cached(kind, id);
        let op = &self.op;
        block(async move {
            if !op.exists(&key).await.map_err(io_err)? {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{key}: no such object"),
                ));
            }
            op.delete(&key).await.map_err(io_err)
        })
    }

    fn barrier(&self, syncs: &mut Syncs) -> io::Result<()> {
        self.settle()?;
        // Every acknowledged upload is durable on the server: the barrier
        // is the wait, counted as one sync.
        syncs.run(|| Ok(()))
    }

    fn try_lock(&self, exclusive: bool) -> io::Result<Option<Box<dyn Send + Sync>>> {
        let mine = format!("{}.json", crate::sys::random_hex(16)?);
        let key = format!("{LOCKS}/{mine}");
        write_lock(&self.op, &key, &LockRecord::now(exclusive))?;
        let held = RemoteLock {
            op: self.op.clone(),
            key: key.clone(),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            refresher: None,
        };
        for other in self.list_dir(&format!("{LOCKS}/"), false)? {
            if other == mine {
                continue;
            }
            let okey = format!("{LOCKS}/{other}");
            let rec = match self.fetch(&okey, LOCK_MAX) {
                Ok(b) => serde_json::from_slice::<LockRecord>(&b).ok(),
                // Removed meanwhile: its holder is gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let Some(rec) = rec else {
                // An unreadable lock object blocks writers until it is
                // removed by hand: refusing is the safe side.
                *self.note.lock().unwrap_or_else(|p| p.into_inner()) =
                    format!("unreadable lock object {okey}");
                return Ok(None);
            };
            if rec.stale() {
                continue;
            }
            if exclusive || rec.exclusive {
                *self.note.lock().unwrap_or_else(|p| p.into_inner()) =
                    format!("{} (lock object {okey})", rec.note());
                return Ok(None); // `held` removes this run's object
            }
        }
        let mut held = held;
        let (op, k, stop) = (self.op.clone(), key, held.stop.clone());
        held.refresher = Some(std::thread::Builder::new().name("snap-lock".into()).spawn(
            move || {
                let (m, c) = &*stop;
                let mut done = m.lock().unwrap_or_else(|p| p.into_inner());
                // The flag is tested before each wait: a drop that came
                // first is not missed.
                while !*done {
                    let (d, timeout) = c
                        .wait_timeout(done, LOCK_REFRESH)
                        .unwrap_or_else(|p| p.into_inner());
                    done = d;
                    if !*done && timeout.timed_out() {
                        if let Err(e) = write_lock(&op, &k, &LockRecord::now(exclusive)) {
                            tracing_warn(&format!("cannot refresh lock object {k}: {e}"));
                        }
                    }
                }
            },
        )?);
        Ok(Some(Box::new(held)))
    }

    fn lock_note(&self) -> String {
        self.note.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn lock_path(&self) -> String {
        format!("{}/{LOCKS}/", self.location)
    }

    fn caches_blobs(&self) -> bool {
        true
    }

    fn cached_blob(&self, id: &str) -> Option<Vec<u8>> {
        let (dir, file) = self.blob_cache_of(id, false).ok()?;
        dir.read_all(
            &file,
            u64::from(crate::repo::format::blob::BLOB_RAW_MAX) + 4096,
        )
        .ok()
    }

    fn keep_blob(&self, id: &str, stored: &[u8]) {
        let kept = self
            .blob_cache_of(id, true)
            .and_then(|(dir, file)| write_cached(&dir, &file, stored));
        if let Err(e) = kept {
            tracing_warn(&format!(
                "cannot keep blob {id} in the cache {}: {e}",
                self.cache_path.display()
            ));
        }
    }

    fn forget_blob(&self, id: &str) {
        if let Ok((dir, file)) = self.blob_cache_of(id, false) {
            drop_cached(&dir, &file, &self.cache_path);
        }
    }

    fn staging(&self) -> io::Result<Vec<String>> {
        let mut out: Vec<String> = self
            .cache
            .open_dir(&name(STAGING)?)?
            .list()?
            .iter()
            .map(|n| format!("cache:{n}"))
            .collect();
        if self.service == Service::Sftp {
            out.extend(self.list_dir(&format!("{STAGING}/"), false)?);
        }
        Ok(out)
    }

    fn clean_staging(&self) -> io::Result<u64> {
        let tmp = self.cache.open_dir(&name(STAGING)?)?;
        let mut removed = 0;
        for n in tmp.list()? {
            tmp.remove_tree(&n)
                .map_err(|e| io::Error::new(e.kind(), format!("cache {STAGING}/{n}: {e}")))?;
            removed += 1;
        }
        if self.service == Service::Sftp {
            for n in self.list_dir(&format!("{STAGING}/"), false)? {
                let key = format!("{STAGING}/{n}");
                let op = &self.op;
                block(async move { op.delete(&key).await.map_err(io_err) })?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
#[path = "../../../tests/common/servers.rs"]
mod servers;

#[cfg(test)]
mod tests {
    use super::*;
    use blocks::BLOCK;

    fn env_of(vars: Vec<(&'static str, String)>, cache: &Path) -> impl Fn(&str) -> Option<String> {
        let cache = cache.display().to_string();
        move |k: &str| {
            if k == "XDG_CACHE_HOME" {
                return Some(cache.clone());
            }
            vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn s3_conformance_on_seaweedfs() {
        let Some(c) = servers::Seaweed::start() else {
            return;
        };
        let cache = tempfile::tempdir().unwrap();
        let loc = Location::parse(Path::new(&c.location("conformance", "repo"))).unwrap();
        let b = RemoteBackend::with_env(&loc, &env_of(c.env(), cache.path())).unwrap();
        assert_eq!(b.prepare(true).unwrap(), None, "{}", c.logs());
        super::super::conformance::run(&b);
        // A location that holds something is not fresh.
        b.put(
            FileKind::Index,
            &"ab".repeat(32),
            b"x",
            &mut Syncs::default(),
        )
        .unwrap();
        assert!(b.prepare(true).unwrap().is_some());
        locks_go_stale(&b);
        blocks_serve_reads_across_their_edges(&b);
    }

    /// Reads that span blocks, start or end inside one, or reach the end
    /// of the file give the file's bytes, each block fetched once.
    fn blocks_serve_reads_across_their_edges(b: &RemoteBackend) {
        let len = 2 * BLOCK as usize + 1_234_567;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let id = "cd".repeat(32);
        b.put(FileKind::Pack, &id, &bytes, &mut Syncs::default())
            .unwrap();
        let f = b.open(FileKind::Pack, &id).unwrap();
        let before = transfer().down.load(Ordering::Relaxed);
        for (off, n) in [
            (3usize << 20, 5usize << 20),
            (0, len),
            (len - 10, 10),
            (BLOCK as usize - 1, 2),
            (12345, 100),
        ] {
            assert_eq!(
                f.read_exact_at(off as u64, n).unwrap(),
                &bytes[off..off + n],
                "{off}+{n}"
            );
        }
        let down = transfer().down.load(Ordering::Relaxed) - before;
        // (The counter is the process's: the SFTP test running beside this
        // one adds its few KiB.)
        assert!(
            down >= len as u64 && down < len as u64 + (1 << 20),
            "every block fetched once: {down} bytes for {len}"
        );
        let mut buf = vec![0u8; 100];
        assert_eq!(f.read_at(&mut buf, len as u64 - 40).unwrap(), 40);
        b.remove(FileKind::Pack, &id).unwrap();
        // Announced, then read by two threads at once: every block
        // fetched once, by the read-ahead (the readers wait for it).
        let id = "ce".repeat(32);
        b.put(FileKind::Pack, &id, &bytes, &mut Syncs::default())
            .unwrap();
        let before = transfer().down.load(Ordering::Relaxed);
        assert!(b.reads_ahead());
        b.read_ahead(FileKind::Pack, &id, 10, len as u64 + 100);
        let f = b.open(FileKind::Pack, &id).unwrap();
        std::thread::scope(|s| {
            for from in [0usize, BLOCK as usize] {
                let f = &f;
                let bytes = &bytes;
                s.spawn(move || {
                    assert_eq!(
                        f.read_exact_at(from as u64, len - from).unwrap(),
                        &bytes[from..]
                    );
                });
            }
        });
        let down = transfer().down.load(Ordering::Relaxed) - before;
        assert!(
            down >= len as u64 && down < len as u64 + (1 << 20),
            "every announced block fetched once: {down} bytes for {len}"
        );
        b.remove(FileKind::Pack, &id).unwrap();
    }

    /// A lock object of another live holder blocks; one not refreshed for
    /// [`LOCK_STALE`], or left by a dead process of this host, does not.
    fn locks_go_stale(b: &RemoteBackend) {
        let put = |name: &str, rec: &LockRecord| {
            write_lock(&b.op, &format!("{LOCKS}/{name}.json"), rec).unwrap();
        };
        let other_host = |exclusive, age: Duration| LockRecord {
            exclusive,
            host: "elsewhere".into(),
            pid: 1,
            time: humantime::format_rfc3339_seconds(SystemTime::now() - age).to_string(),
        };
        put("live", &other_host(true, Duration::from_secs(60)));
        assert!(
            b.try_lock(false).unwrap().is_none(),
            "a live exclusive lock"
        );
        assert!(
            b.lock_note().contains("host=elsewhere"),
            "{}",
            b.lock_note()
        );
        put("live", &other_host(false, Duration::from_secs(60)));
        let shared = b.try_lock(false).unwrap().expect("shared beside shared");
        drop(shared);
        assert!(b.try_lock(true).unwrap().is_none(), "a live shared lock");
        put(
            "live",
            &other_host(true, LOCK_STALE + Duration::from_secs(60)),
        );
        drop(b.try_lock(true).unwrap().expect("a stale lock is ignored"));
        let mut dead = LockRecord::now(true);
        dead.pid = 0x3fff_fff0; // above pid_max: no such process
        put("live", &dead);
        drop(
            b.try_lock(true)
                .unwrap()
                .expect("a dead holder's lock is ignored"),
        );
        b.op_delete(&format!("{LOCKS}/live.json"));
        let held = b.try_lock(true).unwrap().expect("free");
        assert_eq!(b.list_dir(&format!("{LOCKS}/"), false).unwrap().len(), 1);
        drop(held);
        assert!(
            b.list_dir(&format!("{LOCKS}/"), false).unwrap().is_empty(),
            "a dropped lock removes its object"
        );
    }

    #[test]
    fn sftp_conformance_on_openssh() {
        let Some(s) = servers::Sshd::start() else {
            return;
        };
        let cache = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let loc = Location::parse(Path::new(&s.location(&root.path().join("repo")))).unwrap();
        let b = RemoteBackend::with_env(&loc, &env_of(s.env(), cache.path())).unwrap();
        assert_eq!(b.prepare(true).unwrap(), None);
        super::super::conformance::run(&b);
    }
}
