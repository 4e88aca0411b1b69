//! Facts: one JSON object per event, as JSON Lines, for audit pipelines.
//!
//! Every line carries the envelope ([`Fact`]) and one event payload
//! ([`Event`], tagged by `event`). The shape is public API: the types here
//! generate `schemas/fact.schema.json` (draft 2020-12), and a test fails when
//! the committed schema drifts from them.
//!
//! Side effects: [`Emitter::emit`] appends to the `--facts` file and/or
//! writes to stdout (`--json`).

use std::io::Write;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ErrorId;
use crate::policy::{Policy, PreservationTier};
use crate::repo::SnapshotStats;

/// Version of the fact envelope and payload shapes.
pub const SCHEMA_VERSION: u32 = 1;

/// Outcome of the step a fact reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The step did what was asked.
    Success,
    /// The step completed with something the auditor should see.
    Warn,
    /// The step failed; `error_id` and `exit_code` say how.
    Failure,
}

/// The tool that wrote the fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Tool {
    /// Always `"snap"`.
    pub name: String,
    /// The crate version.
    pub version: String,
}

/// One fact line: the envelope plus an event payload.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Fact {
    /// Envelope/payload shape version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Emission time, RFC 3339 UTC with nanoseconds.
    pub ts: String,
    /// Random id shared by every fact of one snap invocation.
    pub run_id: String,
    /// 0-based position of this fact within the run.
    pub seq: u64,
    /// Who wrote it.
    pub tool: Tool,
    /// Outcome.
    pub decision: Decision,
    /// The error id, on failures and on warnings that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_id: Option<ErrorId>,
    /// The process exit code, on facts that end a run with an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The event and its payload.
    #[serde(flatten)]
    pub event: Event,
}

/// Event payloads, tagged by the `event` field.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event")]
pub enum Event {
    /// A repository was created.
    #[serde(rename = "repo.init")]
    RepoInit {
        /// Repository location.
        repo: String,
        /// Its random id.
        repo_id: String,
        /// Whether it is encrypted (`snap init --encrypt`).
        #[serde(default)]
        encrypted: bool,
    },
    /// `snap key add|list|remove|passwd` ran.
    #[serde(rename = "key.result")]
    KeyResult {
        /// Repository location.
        repo: String,
        /// `add`, `list`, `remove` or `passwd`.
        action: String,
        /// The key file the password opened.
        current: String,
        /// The key file added (`add`, `passwd`).
        added: Option<String>,
        /// The key file removed (`remove`, `passwd`).
        removed: Option<String>,
        /// The key files after the command, by id.
        keys: Vec<KeyInfo>,
    },
    /// The repository lock was taken.
    #[serde(rename = "lock.acquired")]
    LockAcquired {
        /// Repository location.
        repo: String,
        /// `"exclusive"` (writers) or `"shared"` (readers).
        mode: String,
        /// Attempts (`flock`, or on a remote repository the writing and
        /// listing of lock objects), the successful one included.
        lock_attempts: u32,
        /// Time waited, in milliseconds.
        lock_wait_ms: u64,
    },
    /// Something under the source could not be read. With
    /// `entry_skipped` the entry is not in the snapshot (exit 3,
    /// `E_PARTIAL`); without, the entry is stored but lacks what `op` names
    /// (e.g. one xattr).
    #[serde(rename = "backup.warning")]
    BackupWarning {
        /// Source-relative path (lossy UTF-8; `"."` is the source itself).
        path: String,
        /// What failed (`open`, `read`, `list`, `getxattr user.x`, ...).
        op: String,
        /// The OS error text.
        detail: String,
        /// True when the entry was left out of the snapshot.
        entry_skipped: bool,
    },
    /// One preflight check.
    #[serde(rename = "preflight.check")]
    PreflightCheck(crate::preflight::Check),
    /// All preflight checks of a run; `decision` is `failure` (with
    /// `E_POLICY`) when any check stopped the run.
    #[serde(rename = "preflight.summary")]
    PreflightSummary {
        /// `backup` or `restore`.
        operation: String,
        /// Checks that passed.
        passed: u64,
        /// Checks that warned.
        warned: u64,
        /// Checks that stopped the run.
        stopped: u64,
        /// The policy checked against.
        policy: Policy,
    },
    /// The effective policy (`snap policy show`).
    #[serde(rename = "policy.show")]
    PolicyShow {
        /// The policy.
        policy: Policy,
    },
    /// A backup committed a snapshot.
    #[serde(rename = "backup.summary")]
    BackupSummary(BackupSummary),
    /// Restore created an entry but could not apply all of its metadata
    /// (or, for sockets, did not create it).
    #[serde(rename = "restore.warning")]
    RestoreWarning {
        /// Path relative to the target (`.` for the target itself).
        path: String,
        /// What was not applied (`setxattr user.x`, `FS_IOC_SETFLAGS`, ...).
        op: String,
        /// Why (the OS error text).
        detail: String,
    },
    /// A restore put a tree in place.
    #[serde(rename = "restore.summary")]
    RestoreSummary(RestoreSummary),
    /// `snap check` ran; `decision` is `failure` with `E_INTEGRITY` when it
    /// found problems.
    #[serde(rename = "check.result")]
    CheckResult {
        /// Repository location.
        repo: String,
        /// The I/O backend of this process (`io_uring` or `fallback`);
        /// check's reads are blocking syscalls on both.
        io_backend: crate::io::Backend,
        /// What was found.
        #[serde(flatten)]
        report: crate::repo::check::CheckReport,
    },
    /// `snap list` ran.
    #[serde(rename = "list.result")]
    ListResult {
        /// Repository location.
        repo: String,
        /// Snapshots listed.
        snapshots: u64,
        /// The snapshots listed, oldest first.
        items: Vec<SnapshotSummary>,
    },
    /// One entry `snap ls` listed.
    #[serde(rename = "ls.entry")]
    LsEntry(EntrySummary),
    /// `snap forget` ran: what each rule kept, and what was removed (or,
    /// with `dry_run`, would be).
    #[serde(rename = "forget.result")]
    ForgetResult {
        /// Repository location.
        repo: String,
        /// True when nothing was removed (`--dry-run`).
        dry_run: bool,
        /// Snapshots kept, with the reasons.
        kept: Vec<ForgetItem>,
        /// Snapshots removed.
        removed: Vec<ForgetItem>,
    },
    /// `snap migrate` ran.
    #[serde(rename = "migrate.result")]
    MigrateResult {
        /// Repository location.
        repo: String,
        /// The format version before.
        from_version: u32,
        /// The format version after.
        to_version: u32,
        /// Whether `config.json` was rewritten (false when the repository
        /// was already at the newest version).
        changed: bool,
    },
    /// `snap prune` (or `forget --prune`) ran.
    #[serde(rename = "prune.result")]
    PruneResult {
        /// Repository location.
        repo: String,
        /// What was removed and written.
        #[serde(flatten)]
        report: crate::repo::prune::PruneReport,
    },
    /// One difference `snap diff` found.
    #[serde(rename = "diff.change")]
    DiffChange {
        /// `+` added, `-` removed, `M` content, `T` type, `U` metadata.
        marker: String,
        /// The entry's path in the snapshots.
        path: String,
        /// For `U` (and `M`), what changed: `mode`, `owner`, `mtime`,
        /// `xattrs`, `flags`, `rdev`, `content`, `target`, `link`.
        changed: Vec<String>,
    },
    /// `snap diff` ran.
    #[serde(rename = "diff.result")]
    DiffResult {
        /// The first snapshot's id.
        a: String,
        /// The second snapshot's id.
        b: String,
        /// Path compared (`""` for the root).
        path: String,
        /// Entries only in `b`.
        added: u64,
        /// Entries only in `a`.
        removed: u64,
        /// Entries whose content changed.
        modified: u64,
        /// Entries whose type changed.
        type_changed: u64,
        /// Entries whose metadata alone changed.
        metadata_changed: u64,
        /// Entries in both, unchanged.
        unchanged: u64,
    },
    /// `snap dump` wrote a file or a tar stream to stdout.
    #[serde(rename = "dump.result")]
    DumpResult {
        /// Snapshot id.
        snapshot_id: String,
        /// The path dumped (`""` for the root).
        path: String,
        /// `file` (its bytes) or `tar` (a directory as a tar stream).
        format: String,
        /// Entries written (1 for a file).
        entries: u64,
        /// Bytes written to stdout.
        bytes: u64,
    },
    /// An entry `snap find` matched.
    #[serde(rename = "find.match")]
    FindMatch {
        /// The snapshot holding it.
        snapshot_id: String,
        /// The entry.
        #[serde(flatten)]
        entry: EntrySummary,
    },
    /// `snap find` ran.
    #[serde(rename = "find.result")]
    FindResult {
        /// The pattern.
        pattern: String,
        /// Snapshots searched.
        snapshots: u64,
        /// Matches in all of them.
        matches: u64,
        /// Snapshots with at least one match.
        snapshots_matched: u64,
    },
    /// `snap stats` ran.
    #[serde(rename = "stats.result")]
    StatsResult(StatsReport),
    /// `snap copy` ran: what it copied and what the destination had.
    #[serde(rename = "copy.result")]
    CopyResult {
        /// Destination repository location.
        repo: String,
        /// Source repository location.
        from: String,
        /// Snapshots copied, in the order of their times.
        copied: Vec<CopiedSnapshot>,
        /// Source snapshots skipped: the destination has a copy (a record
        /// with the same original).
        skipped: Vec<String>,
        /// Both repositories' traffic when either is remote.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transfer: Option<TransferBytes>,
    },
    /// `snap show` printed a snapshot record.
    #[serde(rename = "show.result")]
    ShowResult {
        /// Snapshot id.
        snapshot_id: String,
        /// The record, as stored.
        record: crate::repo::SnapshotRecord,
    },
    /// A snapshot record that cannot be used was left out (it is named
    /// by `snap check` as well); the command went on with the others.
    #[serde(rename = "repo.damaged")]
    RepoDamaged {
        /// The record's path.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// `snap ls` ran.
    #[serde(rename = "ls.result")]
    LsResult {
        /// Snapshot id.
        snapshot_id: String,
        /// Path listed (`""` for the root).
        path: String,
        /// Entries listed.
        entries: u64,
    },
    /// `snap schema` wrote schema files.
    #[serde(rename = "schema.written")]
    SchemaWritten {
        /// Output directory.
        dir: String,
        /// File names written.
        files: Vec<String>,
    },
    /// A command failed; the envelope's `error_id`/`exit_code` say how.
    #[serde(rename = "command.failed")]
    CommandFailed {
        /// The subcommand (`backup`, `restore`, ...).
        command: String,
        /// The path the error concerns, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// Human-readable message.
        message: String,
    },
}

/// One key file, as `snap key list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct KeyInfo {
    /// Key file id (BLAKE3-256 of the file, hex).
    pub id: String,
    /// When it was made (RFC 3339, UTC).
    pub created: String,
    /// The user who made it.
    pub user: String,
    /// The host it was made on.
    pub host: String,
    /// Argon2id memory, in KiB.
    pub m_cost: u32,
    /// Argon2id passes.
    pub t_cost: u32,
}

/// One snapshot in `list.result`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotSummary {
    /// Full snapshot id (BLAKE3-256 hex of its record).
    pub id: String,
    /// Its first 12 hex digits, as `snap list` shows it.
    pub short_id: String,
    /// Start of the backup, RFC 3339 UTC.
    pub time: String,
    /// Host name.
    pub host: String,
    /// Absolute source path (with several sources, the deepest
    /// directory holding them all).
    pub source: String,
    /// Several sources: each, absolute, sorted; absent for one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Preservation tier.
    pub tier: PreservationTier,
    /// Parent snapshot id.
    pub parent: Option<String>,
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Entries in the entries file.
    pub entries: u64,
    /// Content bytes of the files.
    pub bytes: u64,
    /// Whether the snapshot was committed durably.
    pub durable: bool,
}

/// One entry of a snapshot, as `ls.entry` and `find.match` carry it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EntrySummary {
    /// Path in the snapshot (`""` is the root), lossy UTF-8.
    pub path: String,
    /// Entry kind.
    pub kind: crate::repo::sidecar::EntryKind,
    /// `st_mode` permission and set-ID bits.
    pub mode: u32,
    /// Owner uid, when the tier records it.
    pub uid: Option<u32>,
    /// Group gid, when the tier records it.
    pub gid: Option<u32>,
    /// Owner name, when known.
    pub user: Option<String>,
    /// Group name, when known.
    pub group: Option<String>,
    /// Size in bytes (regular files).
    pub size: Option<u64>,
    /// Modification time, RFC 3339 UTC with nanoseconds.
    pub mtime: String,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One snapshot in `forget.result`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ForgetItem {
    /// Snapshot id.
    pub snapshot_id: String,
    /// Start of the backup, RFC 3339 UTC.
    pub time: String,
    /// Host name.
    pub host: String,
    /// Source path.
    pub source: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The group it was judged in (`host h, path /p`), or `named` for a
    /// snapshot removed by id.
    pub group: String,
    /// Why it was kept (`last snapshot`, `daily snapshot`, `oldest daily
    /// snapshot`, `within 7d`, `tag a,b`, `newest of its group`, `policy is
    /// empty`); empty when removed.
    pub reasons: Vec<String>,
}

/// One snapshot `snap copy` wrote.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CopiedSnapshot {
    /// The source snapshot's id.
    pub source_id: String,
    /// The new snapshot's id in the destination.
    pub snapshot_id: String,
    /// Blobs the destination did not have.
    pub blobs_added: u64,
    /// Bytes added to the destination.
    pub bytes_added: u64,
}

/// Payload of `stats.result`. Sizes in bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct StatsReport {
    /// Repository location.
    pub repo: String,
    /// Snapshots counted.
    pub snapshots: u64,
    /// Entries in them (each snapshot's entries added up).
    pub entries: u64,
    /// Regular files in them.
    pub files: u64,
    /// What restoring each of them would write, added up: the content
    /// bytes of their files (restic's "restore size").
    pub restore_size: u64,
    /// Distinct blobs they reference.
    pub blobs: u64,
    /// Bytes of those blobs: what they take in packs, deduplicated and
    /// compressed (restic's "raw data", "Total Size").
    pub unique_bytes: u64,
    /// Plaintext bytes of those blobs, before compression (restic's
    /// "Total Uncompressed Size"); `unique_bytes` over this is the
    /// compression ratio.
    pub unique_plain_bytes: u64,
    /// Repository files and bytes per kind.
    pub repository: RepoUsage,
}

/// Files and bytes of each kind in a repository.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct RepoUsage {
    /// Pack files.
    pub packs: KindUsage,
    /// Index files.
    pub index: KindUsage,
    /// Entries files.
    pub entries: KindUsage,
    /// Snapshot records.
    pub snapshots: KindUsage,
    /// All of them.
    pub total_bytes: u64,
}

/// Files and bytes of one kind.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
pub struct KindUsage {
    /// Files.
    pub files: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Payload of `backup.summary`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BackupSummary {
    /// Repository location.
    pub repo: String,
    /// The committed snapshot's id.
    pub snapshot_id: String,
    /// Absolute source path (lossy UTF-8; with several sources, the
    /// deepest directory holding them all, which entries are relative to).
    pub source: String,
    /// Several sources: each, absolute, sorted (lossy UTF-8); absent for
    /// one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// The parent snapshot, if any.
    pub parent: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// The policy in force.
    pub policy: Policy,
    /// True only when every pack, index, entries file, snapshot record and
    /// every directory that gained a name was fsynced, in commit order.
    pub backup_durable: bool,
    /// The I/O backend the source files were read through (`io_uring`, or
    /// `fallback` where io_uring is blocked or `SNAP_IO=fallback`).
    pub io_backend: crate::io::Backend,
    /// fsync calls made.
    pub fsync_count: u64,
    /// Milliseconds spent in fsync.
    pub fsync_ms: u64,
    /// Whether the repository is encrypted (everything the snapshot
    /// stored is sealed; `docs/FORMAT.md`, "Encryption").
    #[serde(default)]
    pub encrypted: bool,
    /// A remote repository's traffic in this run; absent for a local one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferBytes>,
    /// `snap backup --dry-run`: nothing was written; `snapshot_id` is the
    /// id the snapshot would have had, and the counts (`bytes_added`
    /// included) are what it would have stored. Absent for a real backup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Counts and sizes.
    pub stats: SnapshotStats,
}

/// Bytes a run moved to and from a remote repository's server: object
/// bodies, retries included once; reads served by the local cache are not
/// counted (`docs/FORMAT.md`, "Remote repositories").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TransferBytes {
    /// Bytes uploaded.
    pub uploaded: u64,
    /// Bytes downloaded.
    pub downloaded: u64,
}

/// How often one kind of metadata was applied or had to be skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldCount {
    /// Entries (or, for xattr-like fields, attributes) it was applied to.
    pub applied: u64,
    /// Entries or attributes it could not be applied to (each also a
    /// `restore.warning`, or skipped wholesale when not root for owners).
    pub skipped: u64,
}

impl FieldCount {
    /// Adds another count to this one.
    pub fn add(&mut self, o: FieldCount) {
        self.applied += o.applied;
        self.skipped += o.skipped;
    }
}

impl PreservationApplied {
    /// Adds another set of counts (a restore worker's) to this one.
    pub fn add(&mut self, o: &PreservationApplied) {
        self.mode.add(o.mode);
        self.owner.add(o.owner);
        self.timestamps.add(o.timestamps);
        self.xattrs.add(o.xattrs);
        self.acls.add(o.acls);
        self.caps.add(o.caps);
        self.selinux.add(o.selinux);
        self.flags.add(o.flags);
        self.sparse.add(o.sparse);
        self.devices.add(o.devices);
    }
}

/// Per-field preservation counts of a restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PreservationApplied {
    /// Permission bits (`fchmod`); symlinks have none.
    pub mode: FieldCount,
    /// uid/gid (`fchown`, as root only).
    pub owner: FieldCount,
    /// atime/mtime (`futimens`/`utimensat`).
    pub timestamps: FieldCount,
    /// xattrs other than the ones below, one count per attribute.
    pub xattrs: FieldCount,
    /// `system.posix_acl_access` / `system.posix_acl_default`.
    pub acls: FieldCount,
    /// `security.capability`.
    pub caps: FieldCount,
    /// `security.selinux`.
    pub selinux: FieldCount,
    /// Inode flags (`FS_IOC_SETFLAGS`).
    pub flags: FieldCount,
    /// Sparse files restored with their holes.
    pub sparse: FieldCount,
    /// Char/block devices (`mknodat`); sockets count as skipped.
    pub devices: FieldCount,
}

/// Payload of `restore.summary`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RestoreSummary {
    /// Repository location.
    pub repo: String,
    /// The I/O backend of this process (`io_uring` or `fallback`);
    /// restore's own reads and writes are blocking syscalls on both.
    pub io_backend: crate::io::Backend,
    /// Whether the repository is encrypted (every blob was opened and
    /// authenticated before it was verified and written).
    #[serde(default)]
    pub encrypted: bool,
    /// A remote repository's traffic in this run; absent for a local one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferBytes>,
    /// The restored snapshot's id.
    pub snapshot_id: String,
    /// The target directory created.
    pub target: String,
    /// The snapshot path restored (`""` for all).
    pub path: String,
    /// The policy in force.
    pub policy: Policy,
    /// The tier applied.
    pub tier: PreservationTier,
    /// Where it came from: `snapshot` (the record's), `policy` (chosen by
    /// preset, policy file or flag), `untrusted` (capped at extended by
    /// `restore_untrusted`).
    pub tier_source: String,
    /// Entries created (the target itself included).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links made.
    pub hardlinks: u64,
    /// FIFOs created.
    pub special: u64,
    /// Entries the snapshot holds that this restore does not create
    /// (sockets, devices), each also reported on stderr.
    pub skipped: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Blobs read and verified against their BLAKE3 id.
    pub blobs_verified: u64,
    /// True when the tree was synced (`syncfs`) before the rename and the
    /// parent directory after it.
    pub durable: bool,
    /// Wall time, in milliseconds.
    pub duration_ms: u64,
    /// What was applied and skipped, per kind of metadata.
    pub preservation_applied: PreservationApplied,
    /// True when an existing target was swapped out (`--replace`,
    /// `renameat2(RENAME_EXCHANGE)`).
    pub replaced: bool,
    /// Staging directories of dead restores beside the target that this
    /// run removed.
    pub stale_staging_removed: u64,
    /// Where the old tree was kept (`--keep-old`); removed otherwise.
    pub old_kept: Option<String>,
    /// Snapshot of the old tree taken before the swap (policy
    /// `capture_restore_snapshot`): `snap restore` it to undo.
    pub pre_restore_snapshot: Option<String>,
}

/// The path [`crate::error::Error::Io`] names for standard output (facts
/// under `--json`, human text otherwise).
pub const STDOUT: &str = "<stdout>";

/// Writes facts for one run.
pub struct Emitter {
    run_id: String,
    seq: u64,
    file: Option<(std::fs::File, String)>,
    stdout: bool,
}

impl Emitter {
    /// An emitter writing to `file` (appended) and/or stdout.
    ///
    /// # Errors
    ///
    /// The error opening `file`, with its path.
    pub fn new(
        run_id: String,
        file: Option<&std::path::Path>,
        stdout: bool,
    ) -> crate::error::Result<Self> {
        let file = match file {
            None => None,
            Some(p) => {
                // The facts file is named by the user and opened before any
                // tree work starts; it is not part of a tree snap works in.
                let f = crate::fs::open_append(p)
                    .map_err(|e| crate::error::Error::io("open facts file", p.display(), e))?;
                Some((f, p.display().to_string()))
            }
        };
        Ok(Self {
            run_id,
            seq: 0,
            file,
            stdout,
        })
    }

    /// Whether facts go anywhere (`--facts` or `--json`): a command may
    /// skip building per-entry facts when not.
    pub fn enabled(&self) -> bool {
        self.file.is_some() || self.stdout
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Emits one fact.
    ///
    /// # Errors
    ///
    /// The write error, with the facts file's path.
    pub fn emit(
        &mut self,
        decision: Decision,
        error: Option<ErrorId>,
        event: Event,
    ) -> crate::error::Result<()> {
        let fact = Fact {
            schema_version: SCHEMA_VERSION,
            ts: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            run_id: self.run_id.clone(),
            seq: self.seq,
            tool: Tool {
                name: "snap".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            decision,
            error_id: error,
            // The code the run exits with when this id ends it: a failure,
            // or a committed partial backup (`E_PARTIAL`, a warn).
            exit_code: error.map(ErrorId::exit_code),
            event,
        };
        self.seq += 1;
        let mut line =
            serde_json::to_vec(&fact).map_err(|e| crate::error::Error::serialise("a fact", e))?;
        line.push(b'\n');
        if let Some((f, path)) = &mut self.file {
            f.write_all(&line)
                .map_err(|e| crate::error::Error::io("write facts", path.as_str(), e))?;
        }
        if self.stdout {
            let mut out = std::io::stdout().lock();
            out.write_all(&line)
                .and_then(|()| out.flush())
                .map_err(|e| crate::error::Error::io("write facts", STDOUT, e))?;
        }
        Ok(())
    }
}

/// Every committed schema: (file name, schema JSON).
pub fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn s<T: JsonSchema>() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(T)).unwrap_or(serde_json::Value::Null)
    }
    vec![
        ("fact.schema.json", s::<Fact>()),
        (
            "sidecar.schema.json",
            s::<crate::repo::sidecar::EntryRecord>(),
        ),
        ("snapshot.schema.json", s::<crate::repo::SnapshotRecord>()),
        ("policy.schema.json", s::<Policy>()),
        ("config.schema.json", s::<crate::repo::Config>()),
        ("index.schema.json", s::<crate::repo::IndexFile>()),
        ("key.schema.json", s::<crate::repo::format::key::KeyFile>()),
        (
            "sealed-config.schema.json",
            s::<crate::repo::format::key::SealedConfig>(),
        ),
    ]
}
