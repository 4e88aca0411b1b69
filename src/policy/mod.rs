//! The [`Policy`]: what a run must preserve and guarantee.
//!
//! A policy starts from a [`Preset`], is overlaid by a TOML policy file
//! (`--policy FILE`), then by command-line flags ([`Overrides`]), in that
//! order ([`Policy::resolve`]). Every field is read: `tier` by the backup
//! walker and by restore (which applies no more than the tier keeps),
//! `require_backup_durability` by the commit protocol,
//! `allow_unreliable_immutable_check` and `on_degraded` by preflight,
//! `excludes` by the walker, `lock_wait_ms` by the repository lock. The
//! policy in force is stored in the snapshot record and in summary facts.
//!
//! Side effects: [`PolicyFile::load`] reads the policy file.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How much metadata a snapshot keeps. Each tier includes the one before.
///
/// - `basic`: kind, content, mode, mtime (ns). Directories only as parents
///   of what they hold; symlinks, FIFOs and other special files are skipped.
/// - `extended`: basic + uid/gid, atime, symlinks as symlinks, hard links as
///   hard links, empty directories, FIFOs.
/// - `full`: extended + every xattr the process can read (ACLs, file
///   capabilities and SELinux labels included), inode flags, sparse maps,
///   devices, sockets (recorded only), owner names, ctime (recorded only).
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
    /// Extended + xattrs, ACLs, capabilities, inode flags, sparse, devices.
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

/// What to do when the running process cannot honour the tier (not root
/// for chown, no `CAP_LINUX_IMMUTABLE` for inode flags, a target
/// filesystem without xattrs, ...).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum OnDegraded {
    /// Preflight stops the run (exit 10, `E_POLICY`) before anything is
    /// written.
    Stop,
    /// The run goes on; the summary's `preservation_applied` counts what
    /// was applied and skipped per field.
    Warn,
}

/// How backup stores blob data and metadata in a format-3 repository
/// (zstd, RFC 8878). Blob ids are over the plaintext, so the mode never
/// changes what deduplicates. A format-2 repository stores every blob as
/// it is, whatever the mode.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Store every blob as it is.
    Off,
    /// zstd level 3, kept only when smaller than the blob; a blob whose
    /// first 64 KiB do not compress to 97 % or less at level 1 is stored
    /// as it is without compressing the rest (incompressible data costs a
    /// sample, not a full pass).
    #[default]
    Auto,
    /// zstd level 19, kept only when smaller; slow.
    Max,
}

/// Named starting points for a policy.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Tier basic, durable, warn on degradation.
    Basic,
    /// Tier extended, durable, warn on degradation (the default).
    Extended,
    /// Tier full, durable, warn on degradation.
    Full,
    /// Tier full, durable, stop on degradation, snapshot a tree before
    /// `restore --replace` swaps it out.
    Production,
}

/// The policy a run executes under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Policy {
    /// What metadata backup captures and restore applies.
    pub tier: PreservationTier,
    /// When true, every pack, index, entries file and directory that gained
    /// a name is fsynced before the snapshot record is committed; when
    /// false the syncs are skipped and `backup.summary` says
    /// `backup_durable: false`.
    pub require_backup_durability: bool,
    /// When the inode flags check can use neither the `FS_IOC_GETFLAGS`
    /// ioctl nor `lsattr`, its result is `unknown`: a preflight STOP unless
    /// this is true.
    pub allow_unreliable_immutable_check: bool,
    /// What to do when the process cannot honour the tier.
    pub on_degraded: OnDegraded,
    /// Glob patterns of entries to leave out of a backup. A pattern without
    /// `/` matches an entry's name at any depth; a pattern with `/` matches
    /// the path relative to the source (gitignore/rsync convention). `*`
    /// does not cross `/`; `**` does.
    pub excludes: Vec<String>,
    /// Backup does not cross filesystems: a directory on another
    /// filesystem than its source's (a mount point, by `st_dev`) is stored
    /// empty (tar's `--one-file-system`, rsync's `-x`). Absent from records
    /// written before it existed (read as false).
    #[serde(default)]
    pub one_file_system: bool,
    /// Backup stores a directory holding a `CACHEDIR.TAG` file with the
    /// signature of the Cache Directory Tagging Specification
    /// (<https://bford.info/cachedir/>) empty. Absent from older records
    /// (read as false).
    #[serde(default)]
    pub exclude_caches: bool,
    /// Backup stores a directory holding an entry of one of these names
    /// empty (restic's and borg's `--exclude-if-present`). Absent from
    /// older records (read as none).
    #[serde(default)]
    pub exclude_if_present: Vec<String>,
    /// How long to wait for the repository lock, in milliseconds.
    pub lock_wait_ms: u64,
    /// Before `restore --replace` swaps a tree out, snapshot it into the
    /// repository (tag `pre-restore`), so the restore can be undone with
    /// `snap restore`.
    pub capture_restore_snapshot: bool,
    /// Restore treats the repository as untrusted: the tier is capped at
    /// extended, so no xattrs (file capabilities, ACLs), inode flags or
    /// device nodes are applied, and set-user-ID/set-group-ID bits are
    /// cleared. Without it a restore as root recreates what the snapshot
    /// records, devices and set-user-ID files included, as tar and rsync
    /// do. Absent from records written before it existed (read as false).
    #[serde(default)]
    pub restore_untrusted: bool,
    /// How backup compresses what it stores ([`Compression`]).
    #[serde(default)]
    pub compression: Compression,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::preset(Preset::Extended)
    }
}

/// A policy file (TOML): any subset of the [`Policy`] fields; unknown keys
/// are an error.
///
/// ```toml
/// tier = "full"
/// on_degraded = "stop"
/// excludes = ["*.tmp", "cache/**"]
/// lock_wait_ms = 10000
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// See [`Policy::tier`].
    pub tier: Option<PreservationTier>,
    /// See [`Policy::require_backup_durability`].
    pub require_backup_durability: Option<bool>,
    /// See [`Policy::allow_unreliable_immutable_check`].
    pub allow_unreliable_immutable_check: Option<bool>,
    /// See [`Policy::on_degraded`].
    pub on_degraded: Option<OnDegraded>,
    /// See [`Policy::excludes`] (replaces the preset's list).
    pub excludes: Option<Vec<String>>,
    /// See [`Policy::one_file_system`].
    pub one_file_system: Option<bool>,
    /// See [`Policy::exclude_caches`].
    pub exclude_caches: Option<bool>,
    /// See [`Policy::exclude_if_present`] (replaces the preset's list).
    pub exclude_if_present: Option<Vec<String>>,
    /// See [`Policy::lock_wait_ms`].
    pub lock_wait_ms: Option<u64>,
    /// See [`Policy::capture_restore_snapshot`].
    pub capture_restore_snapshot: Option<bool>,
    /// See [`Policy::restore_untrusted`].
    pub restore_untrusted: Option<bool>,
    /// See [`Policy::compression`].
    pub compression: Option<Compression>,
}

impl PolicyFile {
    /// Reads and parses a TOML policy file.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] naming the file for unreadable files, TOML syntax
    /// errors, unknown keys and invalid values.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("policy file {}: {e}", path.display())))?;
        toml::from_str(&text)
            .map_err(|e| Error::Usage(format!("policy file {}: {e}", path.display())))
    }
}

/// Command-line overrides, applied last.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--tier`.
    pub tier: Option<PreservationTier>,
    /// `--no-durability`.
    pub no_durability: bool,
    /// `--allow-unreliable-immutable-check`.
    pub allow_unreliable_immutable_check: bool,
    /// `--on-degraded`.
    pub on_degraded: Option<OnDegraded>,
    /// `--exclude` (appended to the policy's list).
    pub excludes: Vec<String>,
    /// `--one-file-system`.
    pub one_file_system: bool,
    /// `--exclude-caches`.
    pub exclude_caches: bool,
    /// `--exclude-if-present` (appended to the policy's list).
    pub exclude_if_present: Vec<String>,
    /// `--lock-wait`.
    pub lock_wait_ms: Option<u64>,
    /// `--untrusted`.
    pub untrusted: bool,
    /// `--compression`.
    pub compression: Option<Compression>,
}

impl Policy {
    /// The policy of a preset.
    pub fn preset(p: Preset) -> Policy {
        let tier = match p {
            Preset::Basic => PreservationTier::Basic,
            Preset::Extended => PreservationTier::Extended,
            Preset::Full | Preset::Production => PreservationTier::Full,
        };
        Policy {
            tier,
            require_backup_durability: true,
            allow_unreliable_immutable_check: false,
            on_degraded: if p == Preset::Production {
                OnDegraded::Stop
            } else {
                OnDegraded::Warn
            },
            excludes: Vec::new(),
            one_file_system: false,
            exclude_caches: false,
            exclude_if_present: Vec::new(),
            lock_wait_ms: 5_000,
            capture_restore_snapshot: p == Preset::Production,
            restore_untrusted: false,
            compression: Compression::Auto,
        }
    }

    /// Preset (default `extended`), then the file, then the flags.
    pub fn resolve(preset: Option<Preset>, file: Option<&PolicyFile>, o: &Overrides) -> Policy {
        let mut p = Policy::preset(preset.unwrap_or(Preset::Extended));
        if let Some(f) = file {
            p.tier = f.tier.unwrap_or(p.tier);
            p.require_backup_durability = f
                .require_backup_durability
                .unwrap_or(p.require_backup_durability);
            p.allow_unreliable_immutable_check = f
                .allow_unreliable_immutable_check
                .unwrap_or(p.allow_unreliable_immutable_check);
            p.on_degraded = f.on_degraded.unwrap_or(p.on_degraded);
            if let Some(x) = &f.excludes {
                p.excludes = x.clone();
            }
            p.one_file_system = f.one_file_system.unwrap_or(p.one_file_system);
            p.exclude_caches = f.exclude_caches.unwrap_or(p.exclude_caches);
            if let Some(x) = &f.exclude_if_present {
                p.exclude_if_present = x.clone();
            }
            p.lock_wait_ms = f.lock_wait_ms.unwrap_or(p.lock_wait_ms);
            p.capture_restore_snapshot = f
                .capture_restore_snapshot
                .unwrap_or(p.capture_restore_snapshot);
            p.restore_untrusted = f.restore_untrusted.unwrap_or(p.restore_untrusted);
            p.compression = f.compression.unwrap_or(p.compression);
        }
        p.tier = o.tier.unwrap_or(p.tier);
        if o.no_durability {
            p.require_backup_durability = false;
        }
        if o.allow_unreliable_immutable_check {
            p.allow_unreliable_immutable_check = true;
        }
        p.on_degraded = o.on_degraded.unwrap_or(p.on_degraded);
        p.excludes.extend(o.excludes.iter().cloned());
        p.one_file_system |= o.one_file_system;
        p.exclude_caches |= o.exclude_caches;
        p.exclude_if_present
            .extend(o.exclude_if_present.iter().cloned());
        p.lock_wait_ms = o.lock_wait_ms.unwrap_or(p.lock_wait_ms);
        if o.untrusted {
            p.restore_untrusted = true;
        }
        p.compression = o.compression.unwrap_or(p.compression);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_then_file_then_flags() {
        let file: PolicyFile =
            toml::from_str("tier = \"basic\"\nlock_wait_ms = 7\nexcludes = [\"*.tmp\"]\n").unwrap();
        let o = Overrides {
            on_degraded: Some(OnDegraded::Warn),
            excludes: vec!["cache".into()],
            ..Overrides::default()
        };
        let p = Policy::resolve(Some(Preset::Production), Some(&file), &o);
        assert_eq!(p.tier, PreservationTier::Basic);
        assert_eq!(p.lock_wait_ms, 7);
        assert_eq!(p.on_degraded, OnDegraded::Warn);
        assert_eq!(p.excludes, vec!["*.tmp".to_owned(), "cache".to_owned()]);
        assert!(p.require_backup_durability);
        let prod = Policy::resolve(Some(Preset::Production), None, &Overrides::default());
        assert_eq!(
            (prod.tier, prod.on_degraded),
            (PreservationTier::Full, OnDegraded::Stop)
        );
        assert!(toml::from_str::<PolicyFile>("tier = \"full\"\nbogus = 1\n").is_err());
    }
}
