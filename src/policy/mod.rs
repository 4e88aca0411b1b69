//! The [`Policy`]: what a run must preserve and guarantee.
//!
//! Pure data, no side effects. The backup writer reads `tier`,
//! `require_backup_durability` and `excludes`; the repository lock reads
//! `lock_wait_ms`. The policy in force is stored in the snapshot record and
//! in the summary facts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How much metadata a snapshot keeps. Each tier includes the one before.
///
/// - `basic`: kind, content, mode, mtime (ns). Directories only as parents
///   of what they hold; symlinks, FIFOs and other special files are skipped.
/// - `extended`: basic + uid/gid, atime, symlinks as symlinks, hard links as
///   hard links, empty directories, FIFOs.
/// - `full`: extended + every extended attribute the process can read.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum PreservationTier {
    /// Content, mode, mtime.
    Basic,
    /// Basic + ownership, atime, symlinks, hard links, empty dirs, FIFOs.
    Extended,
    /// Extended + xattrs.
    Full,
}

impl PreservationTier {
    /// The tier's name as written on the command line and in records.
    pub fn as_str(self) -> &'static str {
        match self {
            PreservationTier::Basic => "basic",
            PreservationTier::Extended => "extended",
            PreservationTier::Full => "full",
        }
    }
}

/// The policy a run executes under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Policy {
    /// What metadata is captured on backup.
    pub tier: PreservationTier,
    /// When true (the default), every pack, index, entries file and
    /// directory that gained a name is fsynced before the snapshot record is
    /// committed; when false the syncs are skipped and `backup.summary`
    /// says `backup_durable: false`.
    pub require_backup_durability: bool,
    /// Glob patterns of entries to leave out. A pattern without `/`
    /// matches an entry's name at any depth; a pattern with `/` matches the
    /// path relative to the source (gitignore/rsync convention). `*` does
    /// not cross `/`; `**` does.
    pub excludes: Vec<String>,
    /// How long to wait for the repository lock, in milliseconds.
    pub lock_wait_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            tier: PreservationTier::Extended,
            require_backup_durability: true,
            excludes: Vec::new(),
            lock_wait_ms: 5_000,
        }
    }
}
