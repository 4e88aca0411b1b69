//! Command line: clap definitions, human output (progress bar, tables,
//! summary lines) and the mapping from errors to facts and exit codes.
//!
//! Side effects: runs the requested command; writes human text to stdout
//! (stderr under `--json`, where stdout carries the facts).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::{Error, ErrorId, Result};
use crate::facts::{BackupSummary, Decision, Emitter, Event, STDOUT};
use crate::fs::RelPath;
use crate::policy::{OnDegraded, Overrides, Policy, PolicyFile, PreservationTier, Preset};
use crate::preflight::LockState;
use crate::repo::Repo;

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
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a snapshot of SRC (a directory or a single file).
    Backup {
        /// Tag the snapshot (repeatable).
        #[arg(long = "tag", value_name = "T")]
        tags: Vec<String>,
        /// The policy.
        #[command(flatten)]
        policy: BackupPolicyArgs,
        /// Source directory or file.
        src: PathBuf,
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
        /// How long to wait for the repository lock.
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Create an empty repository.
    Init,
    /// Print the fact JSON Schema, or write every schema to DIR.
    Schema {
        /// Write all schema files here (a symlink or anything but a
        /// regular file at a schema's name in DIR is refused, not followed).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
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
    fn ms(&self) -> u64 {
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
        /// Source directory or file.
        src: PathBuf,
    },
    /// Checks before `snap restore SNAPSHOT --target DIR`.
    Restore {
        /// Snapshot: full id, unique id prefix, or `latest`.
        snapshot: String,
        /// Directory restore would create.
        #[arg(long, value_name = "DIR")]
        target: PathBuf,
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
    fn resolve_with(&self, mut o: Overrides) -> Result<(Policy, bool)> {
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
    fn resolve(&self) -> Result<(Policy, bool)> {
        self.common.resolve_with(Overrides {
            no_durability: self.no_durability,
            excludes: self.excludes.clone(),
            ..Overrides::default()
        })
    }
}

impl RestorePolicyArgs {
    fn resolve(&self) -> Result<(Policy, bool)> {
        self.common.resolve_with(Overrides {
            untrusted: self.untrusted,
            ..Overrides::default()
        })
    }
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Backup { .. } => "backup",
            Command::Restore { .. } => "restore",
            Command::Preflight { .. } => "preflight",
            Command::Policy { .. } => "policy",
            Command::List { .. } => "list",
            Command::Check { .. } => "check",
            Command::Ls { .. } => "ls",
            Command::Init => "init",
            Command::Schema { .. } => "schema",
        }
    }
}

/// Parses the command line, runs it, and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version/usage errors itself.
            if let Err(io) = e.print() {
                eprintln!("snap: {io}");
            }
            if !e.use_stderr() {
                return 0;
            }
            usage_fact(&e.to_string());
            return ErrorId::E_USAGE.exit_code();
        }
    };
    let run_id = match crate::repo::random_hex(16) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("snap: error [{}]: {e}", e.id().as_str());
            return e.id().exit_code();
        }
    };
    let mut facts = match Emitter::new(run_id, cli.facts.as_deref(), cli.json) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("snap: error [{}]: {e}", e.id().as_str());
            return e.id().exit_code();
        }
    };
    if let Err(e) = crate::interrupt::install() {
        let e = Error::io("install signal handlers", "-", e);
        return fail(&cli, &mut facts, &e);
    }
    let out = Out { json: cli.json };
    match run(&cli, &mut facts, &out) {
        Ok(code) => code,
        Err(e) => fail(&cli, &mut facts, &e),
    }
}

/// Emits the failure fact of a command line clap refused, to the
/// `--facts FILE` / `--json` found in the raw arguments (clap could not
/// parse them for us).
fn usage_fact(message: &str) {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut facts_file = None;
    let mut json = false;
    for (i, a) in args.iter().enumerate() {
        let s = a.to_string_lossy();
        if s == "--json" {
            json = true;
        } else if s == "--facts" {
            facts_file = args.get(i + 1).map(PathBuf::from);
        } else if let Some(v) = s.strip_prefix("--facts=") {
            facts_file = Some(PathBuf::from(v));
        }
    }
    if facts_file.is_none() && !json {
        return;
    }
    let command = args
        .iter()
        .map(|a| a.to_string_lossy())
        .find(|a| {
            [
                "backup",
                "restore",
                "check",
                "list",
                "ls",
                "init",
                "schema",
                "preflight",
                "policy",
            ]
            .contains(&a.as_ref())
        })
        .map(|a| a.into_owned())
        .unwrap_or_default();
    let emitted = crate::repo::random_hex(16)
        .and_then(|run_id| Emitter::new(run_id, facts_file.as_deref(), json))
        .and_then(|mut f| {
            f.emit(
                Decision::Failure,
                Some(ErrorId::E_USAGE),
                Event::CommandFailed {
                    command,
                    path: None,
                    message: message.trim().to_owned(),
                },
            )
        });
    if let Err(e) = emitted {
        eprintln!("snap: error [{}]: {e}", e.id().as_str());
    }
}

/// The one place an error becomes a message, a fact and an exit code.
fn fail(cli: &Cli, facts: &mut Emitter, e: &Error) -> i32 {
    if stdout_closed(e) {
        return 141;
    }
    let id = e.id();
    eprintln!("snap: error [{}]: {e}", id.as_str());
    let fact = facts.emit(
        Decision::Failure,
        Some(id),
        Event::CommandFailed {
            command: cli.command.name().to_owned(),
            path: e.path().map(str::to_owned),
            message: e.to_string(),
        },
    );
    if let Err(fe) = fact {
        eprintln!("snap: error [{}]: {fe}", fe.id().as_str());
    }
    id.exit_code()
}

/// Human output: stdout normally, stderr under `--json`.
struct Out {
    json: bool,
}

impl Out {
    /// Writes one line of human text.
    ///
    /// # Errors
    ///
    /// The write error (`EPIPE` when the reader of stdout has gone, which
    /// [`fail`] turns into a quiet exit 141).
    fn line(&self, s: &str) -> Result<()> {
        use std::io::Write;
        if self.json {
            // A closed stderr loses the line; there is nowhere to say so.
            writeln!(std::io::stderr().lock(), "{s}").ok();
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{s}")
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("write", STDOUT, e))
    }
}

/// Whether `e` is a write to a standard output whose reader has gone
/// (`EPIPE`): the command ends quietly with 141 (128 + `SIGPIPE`), as
/// `ls | head -1` does.
fn stdout_closed(e: &Error) -> bool {
    match e {
        Error::Io { path, source, .. } => {
            path == STDOUT && source.kind() == std::io::ErrorKind::BrokenPipe
        }
        Error::AfterCommit { source, .. } => stdout_closed(source),
        _ => false,
    }
}

fn repo_path(cli: &Cli) -> Result<PathBuf> {
    match &cli.repo {
        Some(p) => Ok(p.clone()),
        None => crate::repo::default_location(),
    }
}

/// Whether the repository location is the embedded default (which the
/// first backup may create) rather than one the user named with `--repo`
/// or `SNAP_REPO` (which must exist: `snap init` makes it).
fn default_repo(cli: &Cli) -> bool {
    cli.repo.is_none()
}

fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb =
        indicatif::ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {elapsed_precise} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style);
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn parse_subpath(p: &str) -> Result<RelPath> {
    let trimmed = p.trim_matches('/');
    RelPath::parse(trimmed.as_bytes())
        .map_err(|e| Error::Usage(format!("invalid snapshot path {p:?}: {e}")))
}

fn lock_fact(facts: &mut Emitter, repo: &Repo, lock: &crate::repo::RepoLock) -> Result<()> {
    facts.emit(
        Decision::Success,
        None,
        Event::LockAcquired {
            repo: repo.path.display().to_string(),
            mode: if lock.exclusive {
                "exclusive"
            } else {
                "shared"
            }
            .into(),
            lock_attempts: lock.attempts,
            lock_wait_ms: lock.waited_ms,
        },
    )
}

/// Emits one `preflight.check` per check and the `preflight.summary`;
/// any stop becomes [`Error::Policy`] (exit 10, `E_POLICY`).
fn gate(
    facts: &mut Emitter,
    op: &str,
    report: crate::preflight::Report,
    policy: &Policy,
) -> Result<()> {
    use crate::preflight::CheckResult;
    for c in &report.checks {
        let decision = match c.result {
            CheckResult::Pass => Decision::Success,
            CheckResult::Warn => Decision::Warn,
            CheckResult::Stop => Decision::Failure,
        };
        let id = (c.result == CheckResult::Stop).then_some(ErrorId::E_POLICY);
        if c.result != CheckResult::Pass {
            eprintln!(
                "snap: preflight {:?}: {} {}: {}",
                c.result, c.check, c.path, c.detail
            );
        }
        facts.emit(decision, id, Event::PreflightCheck(c.clone()))?;
    }
    let stopped = report.count(CheckResult::Stop);
    facts.emit(
        if stopped > 0 {
            Decision::Failure
        } else if report.count(CheckResult::Warn) > 0 {
            Decision::Warn
        } else {
            Decision::Success
        },
        (stopped > 0).then_some(ErrorId::E_POLICY),
        Event::PreflightSummary {
            operation: op.to_owned(),
            passed: report.count(CheckResult::Pass) as u64,
            warned: report.count(CheckResult::Warn) as u64,
            stopped: stopped as u64,
            policy: policy.clone(),
        },
    )?;
    if stopped > 0 {
        let why: Vec<String> = report
            .checks
            .iter()
            .filter(|c| c.result == CheckResult::Stop)
            .map(|c| format!("{} {}: {}", c.check, c.path, c.detail))
            .collect();
        return Err(Error::Policy(why.join("; ")));
    }
    Ok(())
}

/// Emits `backup.summary` for a committed snapshot (`warn` with
/// `E_PARTIAL` when entries were unreadable).
fn backup_summary_fact(
    facts: &mut Emitter,
    repo: &Repo,
    outcome: &crate::backup::BackupOutcome,
) -> Result<()> {
    let partial = outcome.record.stats.unreadable > 0;
    facts.emit(
        if partial {
            Decision::Warn
        } else {
            Decision::Success
        },
        partial.then_some(ErrorId::E_PARTIAL),
        Event::BackupSummary(BackupSummary {
            repo: repo.path.display().to_string(),
            snapshot_id: outcome.snapshot_id.clone(),
            source: outcome.record.source.clone(),
            parent: outcome.record.parent.clone(),
            tags: outcome.record.tags.clone(),
            policy: outcome.record.policy.clone(),
            backup_durable: outcome.record.durable,
            fsync_count: outcome.syncs.count,
            fsync_ms: outcome.syncs.elapsed.as_millis() as u64,
            stats: outcome.record.stats.clone(),
        }),
    )
}

/// Emits a `repo.damaged` warning (and a line on stderr) for each
/// snapshot record the command had to leave out.
fn damaged_facts(facts: &mut Emitter, repo: &Repo) -> Result<()> {
    for (path, detail) in repo.take_damaged() {
        eprintln!(
            "snap: warning: damaged snapshot record {path} left out: {detail} (see `snap check`)"
        );
        facts.emit(Decision::Warn, None, Event::RepoDamaged { path, detail })?;
    }
    Ok(())
}

/// The `repo.init` fact and the line saying a repository was created
/// (`how` follows the location, e.g. " (the default location)").
fn announce_init(facts: &mut Emitter, out: &Out, repo: &Repo, how: &str) -> Result<()> {
    facts.emit(
        Decision::Success,
        None,
        Event::RepoInit {
            repo: repo.path.display().to_string(),
            repo_id: repo.config.id.clone(),
        },
    )?;
    out.line(&format!(
        "created repository {} at {}{how}",
        repo.config.id,
        repo.path.display()
    ))
}

/// Creates the default repository the caller found missing (`repo.init`
/// fact and a line saying so); opens it instead when another process
/// created it meanwhile.
fn create_repo(path: &std::path::Path, facts: &mut Emitter, out: &Out) -> Result<Repo> {
    let (repo, created) = Repo::open_or_create(path)?;
    if created {
        announce_init(facts, out, &repo, " (the default location)")?;
    }
    Ok(repo)
}

/// Loads the snapshot (at `subpath`) a restore would apply, at the
/// policy's tier when one was chosen, else the snapshot's, which is then
/// written into `policy`.
fn restore_load(
    repo: &Repo,
    snapshot: &str,
    subpath: Option<&RelPath>,
    policy: &mut Policy,
    explicit_tier: bool,
) -> Result<crate::restore::Loaded> {
    let loaded = crate::restore::load(
        repo,
        snapshot,
        explicit_tier.then_some(policy.tier),
        subpath,
        policy.restore_untrusted,
    )?;
    policy.tier = loaded.tier;
    Ok(loaded)
}

/// The restore preflight checks for `loaded` into `target`.
fn restore_preflight(
    repo: &Repo,
    loaded: &crate::restore::Loaded,
    target: &std::path::Path,
    policy: &Policy,
    lock_held: bool,
    replacing: bool,
) -> crate::preflight::Report {
    crate::preflight::restore(
        &repo.path,
        target,
        &loaded.needs,
        policy,
        lock_held,
        loaded.record.stats.bytes,
        replacing,
    )
}

fn run(cli: &Cli, facts: &mut Emitter, out: &Out) -> Result<i32> {
    match &cli.command {
        Command::Backup { tags, policy, src } => {
            let (policy, _) = policy.resolve()?;
            let path = repo_path(cli)?;
            // With a repository: lock (bounded wait), then preflight. Without
            // one: preflight first, so a STOP creates nothing.
            let existing = match Repo::open(&path) {
                Ok(r) => Some(r),
                Err(Error::RepoMissing { .. }) if default_repo(cli) => None,
                Err(e) => return Err(e),
            };
            let (repo, lock) = match existing {
                Some(repo) => {
                    let lock = repo.lock(true, policy.lock_wait_ms)?;
                    lock_fact(facts, &repo, &lock)?;
                    gate(
                        facts,
                        "backup",
                        crate::preflight::backup(&path, src, &policy, LockState::Held),
                        &policy,
                    )?;
                    (repo, lock)
                }
                None => {
                    gate(
                        facts,
                        "backup",
                        crate::preflight::backup(&path, src, &policy, LockState::Later),
                        &policy,
                    )?;
                    let repo = create_repo(&path, facts, out)?;
                    let lock = repo.lock(true, policy.lock_wait_ms)?;
                    lock_fact(facts, &repo, &lock)?;
                    (repo, lock)
                }
            };
            repo.clean_tmp()?;
            let pb = progress_bar(None);
            let opts = crate::backup::BackupOptions {
                source: src.clone(),
                policy,
                tags: tags.clone(),
            };
            let outcome = crate::backup::run(&repo, &opts, facts, &pb);
            pb.finish_and_clear();
            drop(lock);
            let damaged = damaged_facts(facts, &repo);
            let outcome = outcome.and_then(|o| damaged.map(|()| o));
            if let Err(e) = &outcome {
                if matches!(
                    e,
                    Error::Io { .. } | Error::Integrity { .. } | Error::Interrupted
                ) {
                    eprintln!(
                        "snap: note: packs this run had already placed stay in {} with no index and no snapshot; `snap check` counts them as garbage packs, and removing garbage is `snap prune`'s job (not in this release yet)",
                        repo.display("packs")
                    );
                }
            }
            let outcome = outcome?;
            let committed = crate::repo::committed(&outcome.snapshot_id);
            let st = &outcome.record.stats;
            let partial = st.unreadable > 0;
            backup_summary_fact(facts, &repo, &outcome).map_err(|e| e.after_commit(&committed))?;
            out.line(&format!(
                "snapshot {} saved: {} files, {} dirs, {} ({} new), {} added to {}, {:.2} s{}",
                &outcome.snapshot_id[..12],
                st.files,
                st.dirs,
                mib(st.bytes),
                mib(st.new_blob_bytes),
                mib(st.bytes_added),
                repo.path.display(),
                st.duration_ms as f64 / 1000.0,
                if outcome.record.durable {
                    ""
                } else {
                    " (not durable: syncs skipped)"
                }
            ))
            .map_err(|e| e.after_commit(&committed))?;
            if partial {
                eprintln!(
                    "snap: error [{}]: {} entries could not be read and are not in the snapshot",
                    ErrorId::E_PARTIAL.as_str(),
                    st.unreadable
                );
                return Ok(ErrorId::E_PARTIAL.exit_code());
            }
            Ok(0)
        }
        Command::Restore {
            snapshot,
            target,
            path,
            by_name,
            replace,
            keep_old,
            policy,
        } => {
            let (mut policy, explicit) = policy.resolve()?;
            let repo = Repo::open(&repo_path(cli)?)?;
            let abs_target = std::path::absolute(target)
                .map_err(|e| Error::io("resolve", target.display(), e))?;
            let target_exists = crate::fs::lstat_path(&abs_target)
                .map_err(|e| Error::io("stat", abs_target.display(), e))?
                .is_some();
            // Snapshotting the old tree writes to the repository: exclusive.
            let capture = *replace && target_exists && policy.capture_restore_snapshot;
            let lock = repo.lock(capture, policy.lock_wait_ms)?;
            lock_fact(facts, &repo, &lock)?;
            let subpath = path.as_deref().map(parse_subpath).transpose()?;
            let loaded = restore_load(&repo, snapshot, subpath.as_ref(), &mut policy, explicit);
            damaged_facts(facts, &repo)?;
            let loaded = loaded?;
            let report = restore_preflight(
                &repo,
                &loaded,
                &abs_target,
                &policy,
                true,
                *replace && target_exists,
            );
            gate(facts, "restore", report, &policy)?;
            let pre_restore = if capture {
                repo.clean_tmp()?;
                let pb = progress_bar(None);
                let opts = crate::backup::BackupOptions {
                    source: abs_target.clone(),
                    policy: policy.clone(),
                    tags: vec![format!("pre-restore:{}", &loaded.snapshot_id[..12])],
                };
                let res = crate::backup::run(&repo, &opts, facts, &pb);
                pb.finish_and_clear();
                let outcome = res?;
                backup_summary_fact(facts, &repo, &outcome)?;
                out.line(&format!(
                    "snapshot {} saved of the tree being replaced",
                    &outcome.snapshot_id[..12]
                ))?;
                Some(outcome.snapshot_id)
            } else {
                None
            };
            let pb = progress_bar(Some(0));
            let opts = crate::restore::RestoreOptions {
                snapshot: snapshot.clone(),
                target: target.clone(),
                run_id: facts.run_id().to_owned(),
                by_name: *by_name,
                policy,
                replace: *replace,
                keep_old: keep_old.clone(),
            };
            let res = crate::restore::run(&repo, &opts, loaded, &pb);
            pb.finish_and_clear();
            let (mut summary, warnings) = res?;
            let committed = crate::restore::restored(&summary.snapshot_id, &summary.target);
            summary.pre_restore_snapshot = pre_restore;
            for w in &warnings {
                eprintln!("snap: warning: {} {}: {}", w.op, w.path, w.detail);
                facts
                    .emit(
                        Decision::Warn,
                        None,
                        Event::RestoreWarning {
                            path: w.path.clone(),
                            op: w.op.clone(),
                            detail: w.detail.clone(),
                        },
                    )
                    .map_err(|e| e.after_commit(&committed))?;
            }
            let line = format!(
                "restored {} into {}: {} files, {} dirs, {} symlinks, {} hard links, {}, {} blobs verified, {:.2} s",
                &summary.snapshot_id[..12],
                summary.target,
                summary.files,
                summary.dirs,
                summary.symlinks,
                summary.hardlinks,
                mib(summary.bytes),
                summary.blobs_verified,
                summary.duration_ms as f64 / 1000.0
            );
            facts
                .emit(
                    if warnings.is_empty() {
                        Decision::Success
                    } else {
                        Decision::Warn
                    },
                    None,
                    Event::RestoreSummary(summary),
                )
                .map_err(|e| e.after_commit(&committed))?;
            out.line(&line).map_err(|e| e.after_commit(&committed))?;
            Ok(0)
        }
        Command::Preflight { what } => {
            let path = repo_path(cli)?;
            let (op, report, policy) = match what {
                PreflightCmd::Backup { policy, src } => {
                    let (policy, _) = policy.resolve()?;
                    (
                        "backup",
                        crate::preflight::backup(&path, src, &policy, LockState::Probe),
                        policy,
                    )
                }
                PreflightCmd::Restore {
                    snapshot,
                    target,
                    policy,
                } => {
                    let (mut policy, explicit) = policy.resolve()?;
                    let repo = Repo::open(&path)?;
                    let abs = std::path::absolute(target)
                        .map_err(|e| Error::io("resolve", target.display(), e))?;
                    let replacing = crate::fs::lstat_path(&abs).ok().flatten().is_some();
                    let loaded = restore_load(&repo, snapshot, None, &mut policy, explicit);
                    damaged_facts(facts, &repo)?;
                    let loaded = loaded?;
                    let report = restore_preflight(&repo, &loaded, &abs, &policy, false, replacing);
                    ("restore", report, policy)
                }
            };
            for c in &report.checks {
                out.line(&format!(
                    "{:<5} {:<10} {} ({})",
                    format!("{:?}", c.result).to_lowercase(),
                    c.check,
                    c.path,
                    c.detail
                ))?;
            }
            gate(facts, op, report, &policy)?;
            Ok(0)
        }
        Command::Policy {
            what: PolicyCmd::Show { policy, untrusted },
        } => {
            let (policy, _) = policy.common.resolve_with(Overrides {
                no_durability: policy.no_durability,
                excludes: policy.excludes.clone(),
                untrusted: *untrusted,
                ..Overrides::default()
            })?;
            let text =
                serde_json::to_string_pretty(&policy).map_err(|e| Error::Usage(e.to_string()))?;
            out.line(&text)?;
            facts.emit(Decision::Success, None, Event::PolicyShow { policy })?;
            Ok(0)
        }
        Command::Check {
            read_data,
            repair_tmp,
            lock,
        } => {
            let repo = Repo::open(&repo_path(cli)?)?;
            let lock = repo.lock(*repair_tmp, lock.ms())?;
            lock_fact(facts, &repo, &lock)?;
            let report = crate::repo::check::run(&repo, *read_data, *repair_tmp)?;
            for p in &report.problems {
                eprintln!("snap: check: {}: {}", p.path, p.detail);
            }
            let ok = report.problem_count == 0;
            out.line(&format!(
                "checked {} snapshots, {} index files, {} packs, {} blobs, {} references{}: {}; {} garbage packs, {} unused blobs, {} entries in tmp/{}",
                report.snapshots,
                report.index_files,
                report.packs,
                report.blobs,
                report.references,
                if report.read_data { format!(", {} read", mib(report.bytes_read)) } else { String::new() },
                if ok { "no problems".to_owned() } else { format!("{} problems", report.problem_count) },
                report.garbage_packs,
                report.unused_blobs,
                report.tmp_entries,
                if *repair_tmp { format!(" ({} removed)", report.tmp_removed) } else { String::new() },
            ))?;
            facts.emit(
                if ok {
                    Decision::Success
                } else {
                    Decision::Failure
                },
                (!ok).then_some(ErrorId::E_INTEGRITY),
                Event::CheckResult {
                    repo: repo.path.display().to_string(),
                    report,
                },
            )?;
            Ok(if ok {
                0
            } else {
                ErrorId::E_INTEGRITY.exit_code()
            })
        }
        Command::List { lock } => {
            let repo = Repo::open(&repo_path(cli)?)?;
            let lock = repo.lock(false, lock.ms())?;
            lock_fact(facts, &repo, &lock)?;
            let snaps = repo.snapshots()?;
            damaged_facts(facts, &repo)?;
            out.line(&format!(
                "{:<12}  {:<20}  {:<12}  {:<8}  {:>8}  {:>10}  {:<12}  source",
                "id", "time", "host", "tier", "files", "size", "tags"
            ))?;
            for (id, r) in &snaps {
                out.line(&format!(
                    "{:<12}  {:<20}  {:<12}  {:<8}  {:>8}  {:>10}  {:<12}  {}",
                    &id[..12],
                    r.time.get(..19).unwrap_or(&r.time).replace('T', " "),
                    r.host,
                    r.tier.as_str(),
                    r.stats.files,
                    mib(r.stats.bytes),
                    r.tags.join(","),
                    r.source
                ))?;
            }
            facts.emit(
                Decision::Success,
                None,
                Event::ListResult {
                    repo: repo.path.display().to_string(),
                    snapshots: snaps.len() as u64,
                },
            )?;
            Ok(0)
        }
        Command::Ls {
            snapshot,
            path,
            lock,
        } => {
            let repo = Repo::open(&repo_path(cli)?)?;
            let lock = repo.lock(false, lock.ms())?;
            lock_fact(facts, &repo, &lock)?;
            let resolved = repo.resolve(snapshot);
            damaged_facts(facts, &repo)?;
            let (id, rec) = resolved?;
            let records = repo.read_entries(&rec.entries.id)?;
            let prefix = path
                .as_deref()
                .map(parse_subpath)
                .transpose()?
                .unwrap_or_default();
            let mut n = 0u64;
            for r in &records {
                let rel = r.rel_path().map_err(|e| Error::Integrity {
                    path: repo.entries_display(&rec.entries.id),
                    detail: format!("invalid path {:?}: {e}", r.path),
                })?;
                if !rel.starts_with(&prefix) {
                    continue;
                }
                n += 1;
                out.line(&ls_line(r, &rel))?;
            }
            facts.emit(
                Decision::Success,
                None,
                Event::LsResult {
                    snapshot_id: id,
                    path: if prefix.is_root() {
                        String::new()
                    } else {
                        prefix.to_string()
                    },
                    entries: n,
                },
            )?;
            Ok(0)
        }
        Command::Init => {
            let path = repo_path(cli)?;
            let repo = Repo::init(&path)?;
            announce_init(facts, out, &repo, "")?;
            Ok(0)
        }
        Command::Schema { out: dir } => {
            let schemas = crate::facts::schemas();
            match dir {
                None => {
                    let fact = &schemas[0].1;
                    let text = serde_json::to_string_pretty(fact)
                        .map_err(|e| Error::Usage(e.to_string()))?;
                    out.line(&text)?;
                }
                Some(d) => {
                    std::fs::create_dir_all(d).map_err(|e| Error::io("create", d.display(), e))?;
                    let dir = crate::fs::Dir::open_root(d)
                        .map_err(|e| Error::io("open", d.display(), e))?;
                    let mut files = Vec::new();
                    for (name, schema) in &schemas {
                        let mut text = serde_json::to_string_pretty(schema)
                            .map_err(|e| Error::Usage(e.to_string()))?;
                        text.push('\n');
                        let p = d.join(name);
                        let n = crate::fs::Name::new(name.as_bytes())
                            .map_err(|e| Error::Usage(e.to_string()))?;
                        dir.create_output(&n, 0o644)
                            .and_then(|fd| crate::fs::fd::write_all_at(&fd, text.as_bytes(), 0))
                            .map_err(|e| Error::io("write", p.display(), e))?;
                        files.push((*name).to_owned());
                    }
                    facts.emit(
                        Decision::Success,
                        None,
                        Event::SchemaWritten {
                            dir: d.display().to_string(),
                            files,
                        },
                    )?;
                    out.line(&format!(
                        "wrote {} schemas to {}",
                        schemas.len(),
                        d.display()
                    ))?;
                }
            }
            Ok(0)
        }
    }
}

/// `sec` seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC, the
/// proleptic Gregorian calendar), for any `i64`: years before 1 and after
/// 9999 are written with as many digits as they need (and a sign before
/// year 0), where RFC 3339 stops. Days to civil date by Howard Hinnant's
/// `civil_from_days` ("chrono-Compatible Low-Level Date Algorithms").
fn utc_seconds(sec: i64) -> String {
    let sec = i128::from(sec);
    let (days, rem) = (sec.div_euclid(86_400), sec.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One `ls -l`-style line: mode, owner, size, mtime, path (`-> target`).
fn ls_line(r: &crate::repo::sidecar::EntryRecord, rel: &RelPath) -> String {
    use crate::repo::sidecar::EntryKind;
    let t = match r.kind {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Hardlink => 'h',
        EntryKind::Fifo => 'p',
        EntryKind::Char => 'c',
        EntryKind::Block => 'b',
        EntryKind::Socket => 's',
    };
    let mut m = String::from(t);
    for (shift, special, sch) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (r.mode >> shift) & 7;
        m.push(if bits & 4 != 0 { 'r' } else { '-' });
        m.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        m.push(match (r.mode & special != 0, x) {
            (true, true) => sch,
            (true, false) => sch.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    let owner = match (r.uid, r.gid) {
        (Some(u), Some(g)) => format!("{u}/{g}"),
        _ => "-".into(),
    };
    let when = utc_seconds(r.mtime.sec);
    let shown = String::from_utf8_lossy(&rel.to_bytes()).into_owned();
    let mut line = format!(
        "{m} {owner:>11} {:>12} {when} {}",
        r.size.unwrap_or(0),
        if shown.is_empty() { "." } else { &shown }
    );
    if let Some(t) = &r.target {
        line.push_str(&format!(" -> {t}"));
    }
    if let Some(l) = &r.link {
        line.push_str(&format!(" => {l}"));
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_seconds_covers_every_i64() {
        assert_eq!(super::utc_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc_seconds(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc_seconds(-1), "1969-12-31T23:59:59Z");
        assert_eq!(super::utc_seconds(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(super::utc_seconds(253_402_300_800), "10000-01-01T00:00:00Z");
        assert_eq!(super::utc_seconds(i64::MAX), "292277026596-12-04T15:30:07Z");
        assert!(super::utc_seconds(i64::MIN).starts_with('-'));
    }
}
