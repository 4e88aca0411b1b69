//! Sidecar v2 records: one line of an entries file per entry.
//!
//! Pure data and (de)serialisation; no I/O. Fields a tier does not capture
//! are absent (`None`), never zero. Readers refuse records whose `v` is not
//! [`SIDECAR_VERSION`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::fs::{bytes_to_stored, stored_to_bytes, NameError, RelPath, Time};

/// The sidecar record version this build reads and writes.
pub const SIDECAR_VERSION: u32 = 2;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Regular file with content (`chunks`).
    File,
    /// Directory.
    Dir,
    /// Symbolic link (`target`).
    Symlink,
    /// Another name of an earlier file entry (`link`): restored with
    /// `linkat(2)` to that entry.
    Hardlink,
    /// Named pipe.
    Fifo,
    /// Character device (`rdev`).
    Char,
    /// Block device (`rdev`).
    Block,
    /// Unix domain socket (recorded only).
    Socket,
}

/// A device number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DevNum {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// One entry of a snapshot (sidecar record, version 2).
///
/// Paths and symlink targets are stored as UTF-8 `text` plus, when the raw
/// bytes are not UTF-8, a standard-base64 `*_b64` field holding them
/// losslessly; readers take the `*_b64` field when present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EntryRecord {
    /// Record version, always 2.
    pub v: u32,
    /// Path relative to the snapshot root, components joined by `/`; `""`
    /// is the root directory itself.
    pub path: String,
    /// Base64 of the raw path bytes when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_b64: Option<String>,
    /// Entry kind.
    pub kind: EntryKind,
    /// Permission bits `st_mode & 0o7777` (setuid, setgid, sticky included).
    pub mode: u32,
    /// Owner uid (tier extended and up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Owner gid (tier extended and up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Size in bytes (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Modification time.
    pub mtime: Time,
    /// Access time (tier extended and up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atime: Option<Time>,
    /// Status change time: every entry at tier full, regular files at every
    /// tier. Recorded for audit and change detection; the kernel sets ctime
    /// itself, so restore cannot apply it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime: Option<Time>,
    /// Inode number of a regular file (every tier). With `dev`, `size`,
    /// `mtime` and `ctime` it lets the next backup of the same source take
    /// the content from this record without reading the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// Device holding a regular file (every tier), as `st_dev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<DevNum>,
    /// Owner name from the backup host's `/etc/passwd` (tier full), when
    /// the uid has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group name from the backup host's `/etc/group` (tier full), when the
    /// gid has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Inode flags (tier full): the `FS_*_FL` bits of `FS_IOC_GETFLAGS`
    /// (`ioctl_iflags(2)`), e.g. 0x10 immutable, 0x20 append-only, 0x40
    /// nodump, 0x80 noatime. Absent where the filesystem has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<u32>,
    /// Symlink target text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Base64 of the raw symlink target when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_b64: Option<String>,
    /// Hard link leader: path of the earlier entry this one is a name of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Base64 of the raw leader path when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_b64: Option<String>,
    /// Device number (char/block devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<DevNum>,
    /// Extended attributes (tier full): name -> standard base64 of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xattrs: Option<BTreeMap<String, String>>,
    /// Data extents of a sparse file (tier full) as `[offset, length]`
    /// pairs, found with `SEEK_DATA`/`SEEK_HOLE`; the rest of `size` is
    /// holes. The chunks then hold only the extents' bytes, back to back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse: Option<Vec<[u64; 2]>>,
    /// Blob ids (BLAKE3-256 hex) of the file's chunks, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<String>>,
    /// BLAKE3-256 hex of the file's stored content: the whole file, or for
    /// a sparse file its data extents back to back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Directories: how many records right after this one are its
    /// non-directory entries (its "block"; a directory's subdirectories
    /// follow the block). Written by every backup since repository
    /// format 2's block reuse (docs/FORMAT.md); absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children: Option<u64>,
    /// Directories: BLAKE3-256 hex of the stat key of every non-directory
    /// entry the walk found in it (names, kinds, modes, link counts,
    /// owners, sizes, times, inode and device numbers; docs/FORMAT.md
    /// "Block reuse"). Equal keys tell the next backup that the block can
    /// be copied as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children_key: Option<String>,
    /// Directories: the newest ctime among those entries, absent when there
    /// are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children_ctime: Option<Time>,
}

impl EntryRecord {
    /// A record with the fields every tier has; the rest absent.
    pub fn new(path: &RelPath, kind: EntryKind, mode: u32, mtime: Time) -> Self {
        let (path, path_b64) = path.to_stored();
        Self {
            v: SIDECAR_VERSION,
            path,
            path_b64,
            kind,
            mode,
            uid: None,
            gid: None,
            size: None,
            mtime,
            atime: None,
            ctime: None,
            ino: None,
            dev: None,
            user: None,
            group: None,
            flags: None,
            target: None,
            target_b64: None,
            link: None,
            link_b64: None,
            rdev: None,
            xattrs: None,
            sparse: None,
            chunks: None,
            hash: None,
            children: None,
            children_key: None,
            children_ctime: None,
        }
    }

    /// The validated relative path.
    ///
    /// # Errors
    ///
    /// [`NameError`] for an absolute path, `.`/`..`, empty components or NUL.
    pub fn rel_path(&self) -> Result<RelPath, NameError> {
        RelPath::from_stored(&self.path, self.path_b64.as_deref())
    }

    /// Sets the symlink target from raw bytes.
    pub fn set_target(&mut self, raw: &[u8]) {
        let (t, b) = bytes_to_stored(raw);
        self.target = Some(t);
        self.target_b64 = b;
    }

    /// The raw symlink target, `None` when absent.
    ///
    /// # Errors
    ///
    /// A message for invalid base64.
    pub fn target_bytes(&self) -> Result<Option<Vec<u8>>, String> {
        match &self.target {
            None => Ok(None),
            Some(t) => stored_to_bytes(t, self.target_b64.as_deref()).map(Some),
        }
    }

    /// Sets the hard link leader path.
    pub fn set_link(&mut self, leader: &RelPath) {
        let (t, b) = leader.to_stored();
        self.link = Some(t);
        self.link_b64 = b;
    }

    /// The validated hard link leader path, `None` when absent.
    ///
    /// # Errors
    ///
    /// [`NameError`] as for [`EntryRecord::rel_path`].
    pub fn link_path(&self) -> Result<Option<RelPath>, NameError> {
        match &self.link {
            None => Ok(None),
            Some(t) => RelPath::from_stored(t, self.link_b64.as_deref()).map(Some),
        }
    }

    /// Parses one line of an entries file.
    ///
    /// # Errors
    ///
    /// A message for malformed JSON or an unknown record version.
    pub fn from_line(line: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        match serde_json::from_slice::<Self>(line) {
            Ok(r) => check_version(r.v)
                .and_then(|()| r.check_values())
                .map(|()| r),
            // Another version may have another shape: name the version.
            Err(e) => match serde_json::from_slice::<Version>(line) {
                Ok(ver) if ver.v != SIDECAR_VERSION => Err(unsupported(ver.v)),
                _ => Err(format!("malformed record: {e}")),
            },
        }
    }
}

impl EntryRecord {
    /// The value rules every reader applies to a parsed record, beyond its
    /// JSON shape: its path is a valid relative path; times have
    /// nanoseconds below 10^9 (`utimensat(2)` treats `UTIME_NOW`
    /// 0x3FFFFFFF and `UTIME_OMIT` 0x3FFFFFFE specially, so a stored one
    /// would set "now" or nothing); the mode holds only permission bits;
    /// sparse extents are in order, do not overlap, end within `size`, and
    /// their lengths sum without wrapping; what a kind needs is there and
    /// well-formed (a symlink's target, a hard link's leader path, a
    /// device's `rdev`, a file's chunk ids as 64 hex digits, and a
    /// one-chunk file's hash equal to that chunk's id).
    ///
    /// # Errors
    ///
    /// A message naming the rule broken.
    pub fn check_values(&self) -> Result<(), String> {
        self.rel_path()
            .map_err(|e| format!("invalid path {:?}: {e}", self.path))?;
        match self.kind {
            EntryKind::Symlink => {
                self.target_bytes()
                    .map_err(|e| format!("invalid symlink target: {e}"))?
                    .ok_or("symlink without target")?;
            }
            EntryKind::Hardlink => {
                self.link_path()
                    .map_err(|e| format!("invalid hard link leader: {e}"))?
                    .ok_or("hard link without leader")?;
            }
            EntryKind::Char | EntryKind::Block if self.rdev.is_none() => {
                return Err("device without rdev".into());
            }
            _ => {}
        }
        if let Some(chunks) = &self.chunks {
            if let Some(bad) = chunks
                .iter()
                .find(|c| c.len() != 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(format!("chunk id {bad:?} is not a BLAKE3-256 hex id"));
            }
        }
        if self.kind == EntryKind::File {
            // The content's hash when restore does not hash it whole: a
            // one-chunk file's is that chunk's id, an empty file's the
            // hash of nothing.
            match (self.chunks.as_deref().unwrap_or(&[]), &self.hash) {
                ([one], Some(hash)) if one != hash => {
                    return Err("a one-chunk file's hash is not its chunk's id".into());
                }
                ([], Some(hash)) if *hash != blake3::hash(b"").to_hex().as_str() => {
                    return Err("a file without chunks has the hash of some content".into());
                }
                _ => {}
            }
        }
        for (what, t) in [
            ("mtime", Some(&self.mtime)),
            ("atime", self.atime.as_ref()),
            ("ctime", self.ctime.as_ref()),
            ("children_ctime", self.children_ctime.as_ref()),
        ] {
            if let Some(t) = t {
                if t.nsec >= 1_000_000_000 {
                    return Err(format!("{what} nanoseconds {} are not below 10^9", t.nsec));
                }
            }
        }
        if self.mode & !0o7777 != 0 {
            return Err(format!(
                "mode {:#o} holds more than permission bits",
                self.mode
            ));
        }
        if let Some(extents) = &self.sparse {
            let size = self.size.unwrap_or(0);
            let mut at = 0u64;
            let mut total = 0u64;
            for &[off, len] in extents {
                let end = off
                    .checked_add(len)
                    .ok_or_else(|| format!("sparse extent {off}+{len} wraps"))?;
                if off < at || end > size {
                    return Err(format!(
                        "sparse extent {off}+{len} overlaps another or ends past size {size}"
                    ));
                }
                total = total
                    .checked_add(len)
                    .ok_or_else(|| "sparse extent lengths wrap".to_owned())?;
                at = end;
            }
        }
        Ok(())
    }
}

/// `Ok` for a record of [`SIDECAR_VERSION`], else the message naming both
/// versions.
///
/// # Errors
///
/// That message.
pub fn check_version(v: u32) -> Result<(), String> {
    if v == SIDECAR_VERSION {
        Ok(())
    } else {
        Err(unsupported(v))
    }
}

fn unsupported(v: u32) -> String {
    format!(
        "sidecar record version {v} is not supported (this snap reads version {SIDECAR_VERSION})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(r: &EntryRecord) -> Vec<u8> {
        serde_json::to_vec(r).unwrap()
    }

    #[test]
    fn a_record_round_trips_and_the_value_rules_refuse_what_restore_could_not_use() {
        let rel = RelPath::parse(b"d/f").unwrap();
        let mut r = EntryRecord::new(&rel, EntryKind::File, 0o640, Time { sec: 5, nsec: 6 });
        r.size = Some(3);
        r.chunks = Some(vec![blake3::hash(b"abc").to_hex().to_string()]);
        r.hash = r.chunks.as_ref().map(|c| c[0].clone());
        assert_eq!(EntryRecord::from_line(&line(&r)).unwrap(), r);

        let mut bad = r.clone();
        bad.mtime.nsec = 1_000_000_000;
        assert!(
            EntryRecord::from_line(&line(&bad)).is_err(),
            "nsec past 10^9"
        );
        let mut bad = r.clone();
        bad.chunks = Some(vec!["zz".into()]);
        assert!(
            EntryRecord::from_line(&line(&bad)).is_err(),
            "chunk id not hex"
        );
        let mut bad = r.clone();
        bad.path = "../x".into();
        assert!(
            EntryRecord::from_line(&line(&bad)).is_err(),
            "path leaves the tree"
        );
        let dev = EntryRecord::new(&rel, EntryKind::Char, 0o600, Time { sec: 0, nsec: 0 });
        let e = EntryRecord::from_line(&line(&dev)).unwrap_err();
        assert!(e.contains("rdev"), "{e}");
        let mut v3 = serde_json::to_value(&r).unwrap();
        v3["v"] = 3.into();
        let e = EntryRecord::from_line(v3.to_string().as_bytes()).unwrap_err();
        assert!(e.contains('3'), "names the version: {e}");
        assert!(EntryRecord::from_line(b"{").is_err());
    }
}
