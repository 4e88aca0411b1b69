//! The command line as clap types: the global flags, one variant per
//! command, and the policy and lock flags commands share. No side effects.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::Result;
use crate::policy::{OnDegraded, Overrides, Policy, PolicyFile, PreservationTier, Preset};

/// snap: transactional backups of Linux directory trees.
#[derive(Debug, Parser)]
#[command(name = "snap", version, about, max_term_width = 100)]
pub struct Cli {
    /// Repository location [default: $XDG_DATA_HOME/snap, else ~/.local/share/snap].
    #[arg(long, global = true, env = "SNAP_REPO", value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// Append facts (JSON Lines) to FILE (created 0600; a symlink, FIFO or
    /// anything but a regular file at FILE is refused, not followed).
    #[arg(long, global = true, value_name = "FILE")]
    pub facts: Option<PathBuf>,
    /// Write facts to stdout; human text goes to stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print no progress and no summary lines (errors, warnings and the
    /// output of listing commands still come).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Draw no progress bar.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Say more: `-v` names each file a backup reads as new or changed
    /// and logs each stage to stderr; `-vv` adds diagnostics (packs,
    /// index files, backend requests, timings).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Encrypted repository: read the password from FILE (its content
    /// without the trailing newline) [default: $SNAP_PASSWORD, else a
    /// prompt on the terminal].
    #[arg(
        long,
        global = true,
        env = "SNAP_PASSWORD_FILE",
        value_name = "FILE",
        conflicts_with = "password_command"
    )]
    pub password_file: Option<PathBuf>,
    /// Encrypted repository: run CMD with `sh -c` and use what it prints
    /// (without the trailing newline) as the password; it must exit 0.
    #[arg(long, global = true, env = "SNAP_PASSWORD_COMMAND", value_name = "CMD")]
    pub password_command: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `snap key` subcommands. Each opens the repository with the current
/// password (`--password-file`, `--password-command`, `SNAP_PASSWORD` or a
/// prompt); a new password comes from `--new-password-file`,
/// `SNAP_NEW_PASSWORD` or a prompt.
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Add a key file: another password that opens the repository.
    Add {
        /// Read the new password from FILE.
        #[command(flatten)]
        new: NewPasswordArgs,
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// List the key files (`*` marks the one the password opened).
    List {
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Remove a key file (not the one in use, never the last).
    Remove {
        /// Key id or unique id prefix.
        id: String,
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Change the password: add a key file for the new password, then
    /// remove the one the current password opened.
    Passwd {
        /// Read the new password from FILE.
        #[command(flatten)]
        new: NewPasswordArgs,
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
}

/// Where a new password comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct NewPasswordArgs {
    /// Read the new password from FILE (its content without the trailing
    /// newline) [default: $SNAP_NEW_PASSWORD, else a prompt].
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a snapshot of one or more sources (directories or files).
    Backup {
        /// Tag the snapshot (repeatable).
        #[arg(long = "tag", value_name = "T")]
        tags: Vec<String>,
        /// Walk, read and hash as a backup does, and write nothing: print
        /// what the snapshot would hold and add (the repository must exist).
        #[arg(long)]
        dry_run: bool,
        /// The policy.
        #[command(flatten)]
        policy: BackupPolicyArgs,
        /// The sources.
        #[command(flatten)]
        sources: SourceArgs,
    },
    /// Restore a snapshot into a new directory.
    Restore {
        /// Snapshot: full id, unique id prefix, or `latest`.
        snapshot: String,
        /// Directory to create (must not exist).
        #[arg(long, value_name = "DIR")]
        target: PathBuf,
        /// Restore only this path of the snapshot.
        #[arg(long, value_name = "SUBPATH")]
        path: Option<String>,
        /// Which snapshot `latest` is.
        #[command(flatten)]
        filter: LatestFilterArgs,
        /// Map owners by the recorded user/group names through this host's
        /// /etc/passwd and /etc/group (default: by recorded uid/gid).
        #[arg(long)]
        by_name: bool,
        /// Replace an existing target directory: restore beside it, then
        /// swap atomically (renameat2 RENAME_EXCHANGE); the old tree is
        /// removed unless --keep-old is given.
        #[arg(long)]
        replace: bool,
        /// With --replace: keep the old tree at DIR (same filesystem).
        #[arg(long, value_name = "DIR", requires = "replace")]
        keep_old: Option<PathBuf>,
        /// The policy (its tier defaults to the snapshot's).
        #[command(flatten)]
        policy: RestorePolicyArgs,
    },
    /// Run the preflight checks alone.
    Preflight {
        /// What to check.
        #[command(subcommand)]
        what: PreflightCmd,
    },
    /// Show the effective policy.
    Policy {
        /// What to do.
        #[command(subcommand)]
        what: PolicyCmd,
    },
    /// Verify the repository: records and entries files against their
    /// BLAKE3 ids, every referenced blob indexed, every indexed pack present
    /// with a matching footer.
    Check {
        /// Also re-hash every pack and blob.
        #[arg(long)]
        read_data: bool,
        /// Remove leftovers of interrupted runs from tmp/ (takes the
        /// exclusive lock).
        #[arg(long)]
        repair_tmp: bool,
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// List snapshots.
    List {
        /// Which snapshots.
        #[command(flatten)]
        filter: FilterArgs,
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// List the entries of a snapshot.
    Ls {
        /// Snapshot: full id, unique id prefix, or `latest`.
        snapshot: String,
        /// Only entries at or under this path.
        path: Option<String>,
        /// What `latest` resolves to.
        #[command(flatten)]
        filter: FilterArgs,
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Remove snapshots: those named, or those a retention policy does not
    /// keep (restic's rules, applied per group; the newest of a group is
    /// always kept). Removes snapshot records only; `--prune` (or `snap
    /// prune`) then reclaims the space.
    Forget {
        /// Snapshots to remove: full ids, unique id prefixes or `latest`
        /// (instead of a policy).
        snapshots: Vec<String>,
        /// The retention policy.
        #[command(flatten)]
        keep: KeepArgs,
        /// Which snapshots the policy looks at.
        #[command(flatten)]
        filter: FilterArgs,
        /// Apply the policy per group of snapshots sharing these fields:
        /// any of host, paths, tags, comma-separated; "" for one group
        /// [default: host,paths].
        #[arg(long, value_name = "FIELDS")]
        group_by: Option<crate::repo::select::GroupBy>,
        /// Show what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Run `snap prune` afterwards, under the same lock.
        #[arg(long)]
        prune: bool,
        /// With --prune: see `snap prune --max-unused`.
        #[arg(long, value_name = "LIMIT", requires = "prune")]
        max_unused: Option<crate::repo::prune::MaxUnused>,
        /// With --prune: see `snap prune --max-repack`.
        #[arg(long, value_name = "SIZE", requires = "prune", value_parser = crate::repo::prune::parse_size)]
        max_repack: Option<u64>,
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Remove what no snapshot references: packs with no used blob,
    /// unused blobs in packs past the threshold (repacked), superseded
    /// index files, unreferenced entries files, leftovers of interrupted
    /// runs.
    Prune {
        /// Unused space to tolerate: a percentage of the used bytes as
        /// restic counts it (`5%`), a size (`200M`), or `unlimited`
        /// [default: 5%].
        #[arg(long, value_name = "LIMIT")]
        max_unused: Option<crate::repo::prune::MaxUnused>,
        /// Repack at most this many pack bytes (`500M`, `2G`).
        #[arg(long, value_name = "SIZE", value_parser = crate::repo::prune::parse_size)]
        max_repack: Option<u64>,
        /// Show what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Compare two snapshots: `+` added, `-` removed, `M` content
    /// changed, `T` type changed, `U` metadata changed (restic's markers).
    Diff {
        /// The older snapshot: id, id prefix or `latest`.
        a: String,
        /// The newer snapshot: id, id prefix or `latest`.
        b: String,
        /// Only entries at or under this path.
        path: Option<String>,
        /// What `latest` resolves to.
        #[command(flatten)]
        filter: FilterArgs,
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Write a file's verified bytes to stdout, or a directory as a tar
    /// stream (POSIX ustar/PAX).
    Dump {
        /// Snapshot: full id, unique id prefix, or `latest`.
        snapshot: String,
        /// The path in the snapshot (`/` for the whole tree).
        path: String,
        /// What `latest` resolves to.
        #[command(flatten)]
        filter: FilterArgs,
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Which snapshots hold an entry whose name matches PATTERN (a glob;
    /// with a `/` it matches the whole path).
    Find {
        /// The glob (`*.conf`, `etc/**/passwd`).
        pattern: String,
        /// Search only these snapshots (repeatable) [default: all that
        /// pass the filter].
        #[arg(long = "snapshot", value_name = "ID")]
        snapshots: Vec<String>,
        /// Which snapshots.
        #[command(flatten)]
        filter: FilterArgs,
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Sizes: what the snapshots restore to, the unique bytes they hold,
    /// and what the repository stores per kind of file.
    Stats {
        /// One snapshot [default: every snapshot the filter passes].
        snapshot: Option<String>,
        /// Which snapshots.
        #[command(flatten)]
        filter: FilterArgs,
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Copy snapshots from another repository into this one (`--repo`),
    /// storing only the blobs it lacks; a snapshot copied before (same
    /// original) is skipped.
    Copy {
        /// The repository to copy from (a path, `s3:…` or `sftp:…`).
        #[arg(long, value_name = "REPO")]
        from: PathBuf,
        /// The source repository's password file (it may be encrypted with
        /// another password).
        #[arg(
            long,
            value_name = "FILE",
            env = "SNAP_FROM_PASSWORD_FILE",
            conflicts_with = "from_password_command"
        )]
        from_password_file: Option<PathBuf>,
        /// A command printing the source repository's password.
        #[arg(long, value_name = "CMD", env = "SNAP_FROM_PASSWORD_COMMAND")]
        from_password_command: Option<String>,
        /// Snapshots of the source: full ids, unique prefixes or `latest`
        /// [default: every snapshot the filter passes].
        snapshots: Vec<String>,
        /// Which snapshots of the source.
        #[command(flatten)]
        filter: FilterArgs,
        /// How long to wait for each repository's lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Print a snapshot's record as JSON.
    Show {
        /// Snapshot: full id, unique id prefix, or `latest`.
        snapshot: String,
        /// What `latest` resolves to.
        #[command(flatten)]
        filter: FilterArgs,
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Create an empty repository.
    Init {
        /// Encrypt it: a random master key, wrapped by a key derived from
        /// the password (Argon2id) in a key file; every pack, index file,
        /// snapshot record and the config sealed with XChaCha20-Poly1305.
        #[arg(long)]
        encrypt: bool,
    },
    /// Manage the passwords (key files) of an encrypted repository.
    Key {
        /// What to do.
        #[command(subcommand)]
        what: KeyCmd,
    },
    /// Upgrade the repository to the newest format (3) in place: one
    /// atomic replacement of `config.json` under the exclusive lock.
    /// Everything already stored is read as it is; new packs are written
    /// in the new format (compressed).
    Migrate {
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Print the fact JSON Schema, or write every schema to DIR.
    Schema {
        /// Write all schema files here (a symlink or anything but a
        /// regular file at a schema's name in DIR is refused, not followed).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Print snap's version and the repository formats it reads and writes.
    Version,
    /// Print a shell completion script (e.g. `snap completions bash >
    /// /etc/bash_completion.d/snap`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man pages (roff; `snap man | man -l -`).
    Man,
}

/// The snapshot filter (restic's `--host/--tag/--path`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only snapshots of host H (repeatable: any).
    #[arg(long = "host", value_name = "H")]
    pub hosts: Vec<String>,
    /// Only snapshots holding every tag of the list T, `a,b` (repeatable:
    /// any list).
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Only snapshots of source P (repeatable: all).
    #[arg(long = "path", value_name = "P")]
    pub paths: Vec<String>,
}

impl FilterArgs {
    /// The filter.
    pub fn filter(&self) -> crate::repo::select::Filter {
        crate::repo::select::Filter {
            hosts: self.hosts.clone(),
            tags: self
                .tags
                .iter()
                .map(|t| crate::repo::select::tag_list(t))
                .collect(),
            paths: self.paths.clone(),
        }
    }
}

/// The snapshot filter of restore's `latest`: restic's `--host/--tag`,
/// and `--snapshot-path` for restic's `--path` (restore's `--path` names
/// the subpath to restore).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LatestFilterArgs {
    /// `latest` among the snapshots of host H (repeatable: any).
    #[arg(long = "host", value_name = "H")]
    pub hosts: Vec<String>,
    /// `latest` among the snapshots holding every tag of the list T,
    /// `a,b` (repeatable: any list).
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// `latest` among the snapshots of source P (repeatable: all).
    #[arg(long = "snapshot-path", value_name = "P")]
    pub paths: Vec<String>,
}

impl LatestFilterArgs {
    /// The filter.
    pub fn filter(&self) -> crate::repo::select::Filter {
        FilterArgs {
            hosts: self.hosts.clone(),
            tags: self.tags.clone(),
            paths: self.paths.clone(),
        }
        .filter()
    }
}

/// The retention policy of `snap forget` (restic's flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeepArgs {
    /// Keep the N newest snapshots (`unlimited`: all).
    #[arg(long, value_name = "N")]
    pub keep_last: Option<crate::retention::Count>,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<crate::retention::Count>,
    /// Keep the newest snapshot of each of the N newest days (local time).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<crate::retention::Count>,
    /// Keep the newest snapshot of each of the N newest ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<crate::retention::Count>,
    /// Keep the newest snapshot of each of the N newest months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<crate::retention::Count>,
    /// Keep the newest snapshot of each of the N newest years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<crate::retention::Count>,
    /// Keep every snapshot within DURATION (`1y5m7d2h`) of the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<crate::retention::Within>,
    /// Keep snapshots holding every tag of the list T, `a,b` (repeatable:
    /// any list; `""` keeps untagged ones).
    #[arg(long = "keep-tag", value_name = "T")]
    pub keep_tags: Vec<String>,
}

impl KeepArgs {
    /// The rules.
    pub fn rules(&self) -> crate::retention::Rules {
        crate::retention::Rules {
            last: self.keep_last.unwrap_or_default(),
            hourly: self.keep_hourly.unwrap_or_default(),
            daily: self.keep_daily.unwrap_or_default(),
            weekly: self.keep_weekly.unwrap_or_default(),
            monthly: self.keep_monthly.unwrap_or_default(),
            yearly: self.keep_yearly.unwrap_or_default(),
            within: self.keep_within,
            tags: self
                .keep_tags
                .iter()
                .map(|t| crate::repo::select::tag_list(t))
                .collect(),
        }
    }

    /// Whether any flag was given (`--keep-last 0` included).
    pub fn given(&self) -> bool {
        [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ]
        .iter()
        .any(Option::is_some)
            || self.keep_within.is_some()
            || !self.keep_tags.is_empty()
    }
}

/// The lock wait of commands that take no policy.
#[derive(Debug, Clone, clap::Args)]
pub struct LockArgs {
    /// Milliseconds to wait for the repository lock [default: the default
    /// policy's `lock_wait_ms`, 5000].
    #[arg(long, value_name = "MS")]
    pub lock_wait: Option<u64>,
}

impl LockArgs {
    /// The wait, in milliseconds.
    pub fn ms(&self) -> u64 {
        self.lock_wait
            .unwrap_or_else(|| Policy::default().lock_wait_ms)
    }
}

/// `snap preflight` subcommands.
#[derive(Debug, Subcommand)]
pub enum PreflightCmd {
    /// Checks before `snap backup SRC`.
    Backup {
        /// The policy.
        #[command(flatten)]
        policy: BackupPolicyArgs,
        /// The sources.
        #[command(flatten)]
        sources: SourceArgs,
    },
    /// Checks before `snap restore SNAPSHOT --target DIR`.
    Restore {
        /// Snapshot: full id, unique id prefix, or `latest`.
        snapshot: String,
        /// Directory restore would create.
        #[arg(long, value_name = "DIR")]
        target: PathBuf,
        /// Which snapshot `latest` is.
        #[command(flatten)]
        filter: LatestFilterArgs,
        /// The policy (its tier defaults to the snapshot's).
        #[command(flatten)]
        policy: RestorePolicyArgs,
    },
}

/// `snap policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Print the effective policy as JSON (valid against
    /// schemas/policy.schema.json).
    Show {
        /// The policy.
        #[command(flatten)]
        policy: BackupPolicyArgs,
        /// See `snap restore --untrusted`.
        #[arg(long)]
        untrusted: bool,
    },
}

/// Policy selection shared by every command that runs under a policy:
/// `--preset`, then `--policy FILE`, then the flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Start from a preset.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Overlay a TOML policy file.
    #[arg(long = "policy", value_name = "FILE")]
    pub policy_file: Option<PathBuf>,
    /// Preservation tier.
    #[arg(long, value_enum)]
    pub tier: Option<PreservationTier>,
    /// Go on (with a warning) when the inode flags check cannot read flags.
    #[arg(long)]
    pub allow_unreliable_immutable_check: bool,
    /// What to do when the process cannot honour the tier.
    #[arg(long, value_enum)]
    pub on_degraded: Option<OnDegraded>,
    /// Milliseconds to wait for the repository lock.
    #[arg(long, value_name = "MS")]
    pub lock_wait: Option<u64>,
}

/// What a backup takes: paths on the command line and in `--files-from`
/// lists, together.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Read more sources from FILE: one path per line, blank lines and
    /// lines starting with `#` skipped, no pattern expansion (repeatable)
    #[arg(long, value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// Source directories or files. Several go into one snapshot, rooted
    /// at the deepest directory holding them all.
    #[arg(value_name = "SRC", required_unless_present = "files_from")]
    pub src: Vec<PathBuf>,
}

impl SourceArgs {
    /// The sources in the order given: the arguments, then each
    /// `--files-from` list.
    ///
    /// # Errors
    ///
    /// [`crate::error::Error::Usage`] naming a list that cannot be read
    /// or, with no argument, is empty.
    pub fn paths(&self) -> Result<Vec<PathBuf>> {
        use std::os::unix::ffi::OsStrExt;
        let mut out = self.src.clone();
        for f in &self.files_from {
            let bytes = std::fs::read(f).map_err(|e| {
                crate::error::Error::Usage(format!("--files-from {}: {e}", f.display()))
            })?;
            out.extend(
                bytes
                    .split(|b| *b == b'\n')
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .filter(|l| !l.trim_ascii().is_empty() && !l.starts_with(b"#"))
                    .map(|l| PathBuf::from(std::ffi::OsStr::from_bytes(l))),
            );
        }
        if out.is_empty() {
            return Err(crate::error::Error::Usage(
                "no source given: the --files-from lists hold no path".into(),
            ));
        }
        Ok(out)
    }
}

/// The policy flags of a backup: the shared ones and what only a backup
/// reads.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupPolicyArgs {
    /// The shared policy flags.
    #[command(flatten)]
    pub common: PolicyArgs,
    /// Skip the fsyncs of the commit protocol (faster, not crash-safe).
    #[arg(long)]
    pub no_durability: bool,
    /// Leave out entries matching GLOB (repeatable). Without `/` it matches
    /// names at any depth; with `/` the path relative to SRC (a leading `/`
    /// anchors it at SRC); a trailing `/` matches directories only.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from FILE (repeatable): one per line, as
    /// `--exclude` takes them; blank lines and lines starting with `#` are
    /// skipped.
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Stay on the source's filesystem: a directory on another (a mount
    /// point) is stored empty.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Store directories tagged with a CACHEDIR.TAG file (the Cache
    /// Directory Tagging Specification's signature) empty.
    #[arg(long)]
    pub exclude_caches: bool,
    /// Store a directory holding an entry named NAME empty (repeatable).
    #[arg(long = "exclude-if-present", value_name = "NAME")]
    pub exclude_if_present: Vec<String>,
    /// How blobs and metadata are stored (policy `compression`): `auto`
    /// keeps zstd's output when it is smaller, `off` stores everything as
    /// it is, `max` spends more time for smaller output. A format-2
    /// repository stores everything as it is.
    #[arg(long, value_name = "MODE")]
    pub compression: Option<crate::policy::Compression>,
}

/// The policy flags of a restore: the shared ones and what only a restore
/// reads.
#[derive(Debug, Clone, clap::Args)]
pub struct RestorePolicyArgs {
    /// The shared policy flags (the tier defaults to the snapshot's).
    #[command(flatten)]
    pub common: PolicyArgs,
    /// Treat the repository as untrusted (policy `restore_untrusted`): the
    /// tier is capped at extended (no xattrs, file capabilities, inode
    /// flags or device nodes) and set-user-ID/set-group-ID bits are
    /// cleared, whatever the snapshot records.
    #[arg(long)]
    pub untrusted: bool,
}

impl PolicyArgs {
    /// The effective policy, and whether a tier was chosen explicitly.
    pub fn resolve_with(&self, mut o: Overrides) -> Result<(Policy, bool)> {
        let file = self
            .policy_file
            .as_deref()
            .map(PolicyFile::load)
            .transpose()?;
        let explicit = self.tier.is_some()
            || self.preset.is_some()
            || file.as_ref().is_some_and(|f| f.tier.is_some());
        o.tier = self.tier;
        o.allow_unreliable_immutable_check = self.allow_unreliable_immutable_check;
        o.on_degraded = self.on_degraded;
        o.lock_wait_ms = self.lock_wait;
        Ok((Policy::resolve(self.preset, file.as_ref(), &o), explicit))
    }
}

impl BackupPolicyArgs {
    /// The effective policy, and whether a tier was chosen explicitly.
    pub fn resolve(&self) -> Result<(Policy, bool)> {
        let mut excludes = Vec::new();
        for f in &self.exclude_files {
            excludes.extend(read_exclude_file(f)?);
        }
        excludes.extend(self.excludes.iter().cloned());
        self.common.resolve_with(Overrides {
            no_durability: self.no_durability,
            excludes,
            one_file_system: self.one_file_system,
            exclude_caches: self.exclude_caches,
            exclude_if_present: self.exclude_if_present.clone(),
            compression: self.compression,
            ..Overrides::default()
        })
    }
}

/// The patterns of an `--exclude-file`: one per line (a trailing `\r`
/// dropped), blank lines and lines starting with `#` skipped, as restic's
/// `--exclude-file` reads them.
///
/// # Errors
///
/// [`crate::error::Error::Usage`] naming the file when it cannot be read
/// or is not UTF-8.
fn read_exclude_file(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        crate::error::Error::Usage(format!("--exclude-file {}: {e}", path.display()))
    })?;
    Ok(text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

impl RestorePolicyArgs {
    /// The effective policy, and whether a tier was chosen explicitly.
    pub fn resolve(&self) -> Result<(Policy, bool)> {
        self.common.resolve_with(Overrides {
            untrusted: self.untrusted,
            ..Overrides::default()
        })
    }
}

impl Command {
    /// The command's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Backup { .. } => "backup",
            Command::Restore { .. } => "restore",
            Command::Preflight { .. } => "preflight",
            Command::Policy { .. } => "policy",
            Command::List { .. } => "list",
            Command::Check { .. } => "check",
            Command::Ls { .. } => "ls",
            Command::Init { .. } => "init",
            Command::Key { .. } => "key",
            Command::Migrate { .. } => "migrate",
            Command::Forget { .. } => "forget",
            Command::Prune { .. } => "prune",
            Command::Diff { .. } => "diff",
            Command::Dump { .. } => "dump",
            Command::Find { .. } => "find",
            Command::Stats { .. } => "stats",
            Command::Show { .. } => "show",
            Command::Copy { .. } => "copy",
            Command::Schema { .. } => "schema",
            Command::Version => "version",
            Command::Completions { .. } => "completions",
            Command::Man => "man",
        }
    }
}
