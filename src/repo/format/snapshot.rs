//! Snapshot records (`snapshots/<id>.json`), the commit record of a
//! backup. Pure: parsing, no I/O.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::{Policy, PreservationTier};

/// The policy a snapshot was taken under, as the record keeps it: the
/// fields of the runtime [`Policy`] of the build that wrote it, as a JSON
/// object. Kept as JSON, not as the runtime struct, so that a field a later
/// build adds or drops never makes an older record unreadable; readers take
/// what they know and leave the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct PolicyRecord(pub serde_json::Map<String, serde_json::Value>);

impl From<&Policy> for PolicyRecord {
    fn from(p: &Policy) -> PolicyRecord {
        match serde_json::to_value(p) {
            Ok(serde_json::Value::Object(m)) => PolicyRecord(m),
            _ => PolicyRecord::default(),
        }
    }
}

/// Most bytes a snapshot record may hold.
pub const RECORD_MAX: u64 = 16 << 20;
/// The record version this build reads and writes.
pub const RECORD_VERSION: u32 = 1;

/// Reference from a snapshot to its entries file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EntriesRef {
    /// Entries file id (BLAKE3-256 hex of the file).
    pub id: String,
    /// Number of records in it.
    pub count: u64,
    /// Format 3: the entries are not a file but a stream of blobs in packs,
    /// these in order (each a run of whole records, its id the BLAKE3 of
    /// its plaintext); `id` is then the BLAKE3 of the whole stream. Absent
    /// for an entries file (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<String>>,
}

/// Counts kept in a snapshot record and in `backup.summary`. A count a
/// record lacks (written before it existed) reads as 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SnapshotStats {
    /// Regular files stored (hard link leaders included).
    pub files: u64,
    /// Directories stored (the root included).
    pub dirs: u64,
    /// Symlinks stored.
    pub symlinks: u64,
    /// Extra names of hard-linked files.
    pub hardlinks: u64,
    /// FIFOs, devices and sockets stored.
    pub special: u64,
    /// Entries left out: excluded by pattern, not kept by the tier, or
    /// unreadable.
    pub skipped: u64,
    /// Entries that could not be read (a subset of `skipped`).
    pub unreadable: u64,
    /// Content bytes of all stored files.
    pub bytes: u64,
    /// Regular files whose content was taken from the parent snapshot
    /// without reading them: same size, mtime, ctime, inode and device, and
    /// a ctime at least 1 s older than the parent's start (so a change
    /// made while the parent ran cannot hide behind an unchanged stat).
    #[serde(default)]
    pub files_unchanged: u64,
    /// Regular files read because the parent snapshot (the newest of the
    /// same host and sources, at the same tier) has no regular file at
    /// their path; every file, without a parent. With `files_changed` and
    /// `files_unchanged` they make up `files`.
    #[serde(default)]
    pub files_new: u64,
    /// Regular files the parent snapshot has at the same path that were
    /// read again: their stat key differs, or they changed too close to
    /// the parent's start to be trusted unread.
    #[serde(default)]
    pub files_changed: u64,
    /// Directories whose non-directory entries were copied from the
    /// parent snapshot's records as they were, without a file being
    /// opened: the same children key (the names and stat fields of every
    /// non-directory entry), all of them older than the parent's start
    /// minus 1 s, and none with more than one link. Not done at tier full,
    /// which reads every file's xattrs and inode flags again.
    #[serde(default)]
    pub dirs_unchanged: u64,
    /// Blob bytes not already in the repository.
    pub new_blob_bytes: u64,
    /// Blobs not already in the repository.
    pub new_blobs: u64,
    /// Packs written.
    pub packs: u64,
    /// Bytes this backup added to the repository in packs, index and
    /// entries files. The snapshot record (about 1 KiB) holds this count and
    /// so is not part of it.
    pub bytes_added: u64,
    /// Wall time of the backup, in milliseconds.
    pub duration_ms: u64,
}

/// `snapshots/<id>.json`: the commit record. Its id is the BLAKE3-256 of
/// the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotRecord {
    /// Record version, 1.
    pub v: u32,
    /// Start of the backup, RFC 3339 UTC with nanoseconds.
    pub time: String,
    /// Host name (`uname -n`).
    pub host: String,
    /// Absolute path of the source, UTF-8 text.
    pub source: String,
    /// Base64 of the raw source path when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_b64: Option<String>,
    /// A backup of several sources: each, absolute, sorted (lossy UTF-8
    /// text); `source` is then the deepest directory holding them all,
    /// which entries are relative to. Empty (absent) for one source,
    /// which is `source` itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// When a path in `sources` is not UTF-8: the base64 of every one's
    /// raw bytes, in the same order (then authoritative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources_b64: Option<Vec<String>>,
    /// Preservation tier used.
    pub tier: PreservationTier,
    /// User tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The policy in force, as recorded ([`PolicyRecord`]).
    #[serde(default)]
    pub policy: PolicyRecord,
    /// The previous snapshot of the same host and source, if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// The entries file.
    pub entries: EntriesRef,
    /// Counts and sizes.
    #[serde(default)]
    pub stats: SnapshotStats,
    /// True when every file and directory of this snapshot was synced
    /// before this record was committed (false when absent).
    #[serde(default)]
    pub durable: bool,
    /// `snap copy`: the id of the snapshot this one was copied from (the
    /// first, when a copy was copied again); absent for a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
}

impl SnapshotRecord {
    /// `sources` and `sources_b64` for these paths.
    pub fn stored_sources(paths: &[std::path::PathBuf]) -> (Vec<String>, Option<Vec<String>>) {
        use base64::Engine as _;
        use std::os::unix::ffi::OsStrExt;
        let text = paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let raw = paths.iter().all(|p| p.to_str().is_some());
        let b64 = (!raw).then(|| {
            paths
                .iter()
                .map(|p| base64::engine::general_purpose::STANDARD.encode(p.as_os_str().as_bytes()))
                .collect()
        });
        (text, b64)
    }

    /// Every source path's raw bytes: `sources`, or `source` for a backup
    /// of one. Base64 that does not decode falls back to the text.
    pub fn source_paths(&self) -> Vec<Vec<u8>> {
        let raw = |text: &str, b64: Option<&str>| {
            crate::fs::stored_to_bytes(text, b64).unwrap_or_else(|_| text.as_bytes().to_vec())
        };
        if self.sources.is_empty() {
            return vec![raw(&self.source, self.source_b64.as_deref())];
        }
        self.sources
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let b = self.sources_b64.as_ref().and_then(|v| v.get(i));
                raw(t, b.map(String::as_str))
            })
            .collect()
    }

    /// The source paths for people: `sources` joined by `, `, or `source`.
    pub fn sources_text(&self) -> String {
        if self.sources.is_empty() {
            self.source.clone()
        } else {
            self.sources.join(", ")
        }
    }

    /// Checks `bytes` against the record's `id` and parses them (the file
    /// shown as `path`).
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for bytes that do not match the id, malformed
    /// JSON or an unknown record version.
    pub fn parse(bytes: &[u8], id: &str, path: &str) -> Result<SnapshotRecord> {
        super::check_id(bytes, id, path, "snapshot record")?;
        Self::parse_unchecked(bytes, path)
    }

    /// [`SnapshotRecord::parse`] of a record whose id the caller checked
    /// (an encrypted repository's: the id is over the sealed bytes).
    ///
    /// # Errors
    ///
    /// As [`SnapshotRecord::parse`].
    pub fn parse_unchecked(bytes: &[u8], path: &str) -> Result<SnapshotRecord> {
        let rec: SnapshotRecord = serde_json::from_slice(bytes).map_err(|e| Error::Integrity {
            path: path.to_owned(),
            detail: format!("malformed snapshot record: {e}"),
        })?;
        if rec.v != RECORD_VERSION {
            return Err(Error::Integrity {
                path: path.to_owned(),
                detail: format!("snapshot record version {} is not supported", rec.v),
            });
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SnapshotRecord {
        SnapshotRecord {
            v: RECORD_VERSION,
            time: "2026-12-02T00:00:00.000000000Z".into(),
            host: "h".into(),
            source: "/src".into(),
            source_b64: None,
            sources: Vec::new(),
            sources_b64: None,
            tier: PreservationTier::Full,
            tags: vec!["t".into()],
            policy: PolicyRecord::from(&Policy::default()),
            parent: None,
            entries: EntriesRef {
                id: "ab".repeat(32),
                count: 2,
                chunks: None,
            },
            stats: SnapshotStats::default(),
            durable: true,
            original: None,
        }
    }

    #[test]
    fn a_record_parses_only_under_its_own_id_and_version() {
        let bytes = serde_json::to_vec_pretty(&record()).unwrap();
        let id = blake3::hash(&bytes).to_hex().to_string();
        assert_eq!(SnapshotRecord::parse(&bytes, &id, "p").unwrap(), record());
        let e = SnapshotRecord::parse(&bytes, &"0".repeat(64), "p").unwrap_err();
        assert!(
            e.to_string().contains("does not match its BLAKE3 id"),
            "{e}"
        );
        let mut v2 = record();
        v2.v = 2;
        let b2 = serde_json::to_vec(&v2).unwrap();
        let e = SnapshotRecord::parse(&b2, blake3::hash(&b2).to_hex().as_str(), "p").unwrap_err();
        assert!(e.to_string().contains("version 2 is not supported"), "{e}");
        // Fields this build does not know are ignored; optional ones it
        // lacks are defaulted.
        let mut v = serde_json::to_value(record()).unwrap();
        v["from_the_future"] = serde_json::json!({"x": 1});
        v["policy"]["a_later_policy_field"] = serde_json::json!(true);
        v.as_object_mut().unwrap().remove("tags");
        v["stats"].as_object_mut().unwrap().remove("packs");
        let b = serde_json::to_vec(&v).unwrap();
        let r = SnapshotRecord::parse(&b, blake3::hash(&b).to_hex().as_str(), "p").unwrap();
        assert!(r.tags.is_empty() && r.stats.packs == 0);
        assert_eq!(r.policy.0["a_later_policy_field"], true);
        let junk = b"{\"v\":1}";
        let e = SnapshotRecord::parse(junk, blake3::hash(junk).to_hex().as_str(), "p").unwrap_err();
        assert!(e.to_string().contains("malformed snapshot record"), "{e}");
    }
}
