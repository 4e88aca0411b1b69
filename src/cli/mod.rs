//! Command line: parsing ([`args`]), one module per command, the human
//! output, and the mapping from errors to facts and exit codes ([`fail`]).
//!
//! Side effects: runs the requested command; writes human text to stdout
//! (stderr under `--json`, where stdout carries the facts).

pub mod args;
mod backup;
mod check;
mod common;
mod copy;
mod diff;
mod dump;
mod find;
mod forget;
mod init;
mod key;
mod list;
mod ls;
mod meta;
mod password;
mod policy;
mod preflight;
mod restore;
mod schema;
mod show;
mod stats;

use std::path::PathBuf;

use clap::Parser;

use crate::error::{Error, ErrorId, Result};
use crate::facts::{Decision, Emitter, Event, STDOUT};
pub use args::{Cli, Command, PolicyCmd};

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
    let run_id = match crate::sys::random_hex(16)
        .map_err(|e| crate::error::Error::io("getrandom", "-", e))
    {
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
    let out = Out {
        json: cli.json,
        quiet: cli.quiet,
    };
    if cli.quiet || cli.no_progress {
        common::PROGRESS.store(false, std::sync::atomic::Ordering::Relaxed);
    }
    diagnostics(cli.verbose);
    match run(&cli, &mut facts, &out) {
        Ok(code) => code,
        Err(e) => fail(&cli, &mut facts, &e),
    }
}

/// `-v`/`-vv`: snap's `tracing` events at info/debug level to stderr,
/// with the time since start (tracing-subscriber's `fmt`). Events of other
/// crates (compio, opendal) are left out. Without `-v` no subscriber is
/// installed and the events cost a disabled check.
fn diagnostics(verbose: u8) {
    use tracing_subscriber::layer::SubscriberExt as _;
    let level = match verbose {
        0 => return,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    let only_snap = tracing_subscriber::filter::Targets::new().with_target("snap", level);
    let sub = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_max_level(level)
        .finish()
        .with(only_snap);
    // A subscriber set already (a test harness) keeps its own.
    tracing::subscriber::set_global_default(sub).ok();
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
                "forget",
                "prune",
                "diff",
                "dump",
                "find",
                "stats",
                "show",
            ]
            .contains(&a.as_ref())
        })
        .map(|a| a.into_owned())
        .unwrap_or_default();
    let emitted = crate::sys::random_hex(16)
        .map_err(|e| crate::error::Error::io("getrandom", "-", e))
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
    /// `-q/--quiet`: summary lines ([`Out::note`]) are not written.
    quiet: bool,
}

impl Out {
    /// Writes one line of human text.
    ///
    /// # Errors
    ///
    /// The write error (`EPIPE` when the reader of stdout has gone, which
    /// [`fail`] turns into a quiet exit 141).
    /// Writes one line of human text that only reports what was done (a
    /// summary): nothing under `-q/--quiet`.
    ///
    /// # Errors
    ///
    /// As [`Out::line`].
    fn note(&self, s: &str) -> Result<()> {
        if self.quiet {
            return Ok(());
        }
        self.line(s)
    }

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

/// The repository location: `--repo`/`SNAP_REPO`, else the default.
///
/// # Errors
///
/// As [`crate::repo::default_location`].
fn repo_path(cli: &Cli) -> Result<PathBuf> {
    match &cli.repo {
        Some(p) => Ok(p.clone()),
        None => crate::repo::default_location(),
    }
}

/// Opens the repository `cli` names, asking for its password when it is
/// encrypted.
///
/// # Errors
///
/// As [`crate::repo::Repo::open`].
fn open_repo(cli: &Cli) -> Result<crate::repo::Repo> {
    crate::repo::Repo::open(&repo_path(cli)?, &|| password::current(cli))
}

/// Whether the repository location is the embedded default (which the
/// first backup may create) rather than one the user named with `--repo`
/// or `SNAP_REPO` (which must exist: `snap init` makes it).
fn default_repo(cli: &Cli) -> bool {
    cli.repo.is_none()
}

/// Runs the parsed command; returns its exit code.
///
/// # Errors
///
/// The command's error, which [`fail`] reports.
fn run(cli: &Cli, facts: &mut Emitter, out: &Out) -> Result<i32> {
    // The commands whose facts name the I/O backend choose it first, so
    // `SNAP_IO=uring` where io_uring is blocked ends with `E_IO_URING`
    // before anything is read or written.
    if matches!(
        cli.command,
        Command::Backup { .. }
            | Command::Restore { .. }
            | Command::Check { .. }
            | Command::Preflight { .. }
    ) {
        crate::io::choice()?;
    }
    match &cli.command {
        Command::Backup {
            tags,
            dry_run,
            policy,
            sources,
        } => backup::run(cli, facts, out, tags, *dry_run, policy, sources),
        Command::Restore {
            snapshot,
            target,
            path,
            filter,
            by_name,
            replace,
            keep_old,
            policy,
        } => restore::run(
            cli,
            facts,
            out,
            snapshot,
            target,
            path.as_deref(),
            &filter.filter(),
            *by_name,
            *replace,
            keep_old.as_deref(),
            policy,
        ),
        Command::Preflight { what } => preflight::run(cli, facts, out, what),
        Command::Policy {
            what: PolicyCmd::Show { policy, untrusted },
        } => policy::show(facts, out, policy, *untrusted),
        Command::Check {
            read_data,
            repair_tmp,
            lock,
        } => check::run(cli, facts, out, *read_data, *repair_tmp, lock),
        Command::List { filter, lock } => list::run(cli, facts, out, filter, lock),
        Command::Ls {
            snapshot,
            path,
            filter,
            lock,
        } => ls::run(cli, facts, out, snapshot, path.as_deref(), filter, lock),
        Command::Forget {
            snapshots,
            keep,
            filter,
            group_by,
            dry_run,
            prune,
            max_unused,
            max_repack,
            lock,
        } => forget::run(
            cli,
            facts,
            out,
            &forget::ForgetArgs {
                ids: snapshots,
                keep,
                filter,
                group_by: *group_by,
                dry_run: *dry_run,
                prune: prune.then(|| crate::repo::prune::PruneOptions {
                    max_unused: max_unused.unwrap_or_default(),
                    max_repack: *max_repack,
                    dry_run: *dry_run,
                }),
            },
            lock,
        ),
        Command::Prune {
            max_unused,
            max_repack,
            dry_run,
            lock,
        } => forget::prune(
            cli,
            facts,
            out,
            &crate::repo::prune::PruneOptions {
                max_unused: max_unused.unwrap_or_default(),
                max_repack: *max_repack,
                dry_run: *dry_run,
            },
            lock,
        ),
        Command::Diff {
            a,
            b,
            path,
            filter,
            lock,
        } => diff::run(cli, facts, out, a, b, path.as_deref(), filter, lock),
        Command::Dump {
            snapshot,
            path,
            filter,
            lock,
        } => dump::run(cli, facts, out, snapshot, path, filter, lock),
        Command::Find {
            pattern,
            snapshots,
            filter,
            lock,
        } => find::run(cli, facts, out, pattern, snapshots, filter, lock),
        Command::Stats {
            snapshot,
            filter,
            lock,
        } => stats::run(cli, facts, out, snapshot.as_deref(), filter, lock),
        Command::Copy {
            from,
            from_password_file,
            from_password_command,
            snapshots,
            filter,
            lock,
        } => copy::run(
            cli,
            facts,
            out,
            &copy::Args {
                from,
                password_file: from_password_file.as_deref(),
                password_command: from_password_command.as_deref(),
                snapshots,
                filter,
                lock,
            },
        ),
        Command::Show {
            snapshot,
            filter,
            lock,
        } => show::run(cli, facts, out, snapshot, filter, lock),
        Command::Init { encrypt } => init::run(cli, facts, out, *encrypt),
        Command::Key { what } => key::run(cli, facts, out, what),
        Command::Migrate { lock } => init::migrate(cli, facts, out, lock),
        Command::Schema { out: dir } => schema::run(facts, out, dir.as_deref()),
        Command::Version => meta::version().map(|()| 0),
        Command::Completions { shell } => meta::completions(*shell).map(|()| 0),
        Command::Man => meta::man().map(|()| 0),
    }
}
