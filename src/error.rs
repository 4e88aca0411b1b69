//! Errors, error ids and exit codes: the one table shared by the CLI, the
//! facts and the README.
//!
//! Every [`Error`] variant names the path and operation that failed; its id
//! comes from [`Error::id`], a single match on the variant (never on message
//! text). No side effects.

use std::io;

use serde::{Deserialize, Serialize};

/// A stable error id, carried by failure facts and mapped to an exit code.
///
/// The table (also in README.md):
///
/// | id | exit | meaning |
/// | --- | --- | --- |
/// | `E_GENERIC` | 1 | unexpected I/O or internal error |
/// | `E_USAGE` | 2 | invalid command line or argument |
/// | `E_PARTIAL` | 3 | snapshot committed, some source entries unreadable |
/// | `E_UNCONFIRMED` | 4 | committed (snapshot recorded, or restore target in place), then a later step failed |
/// | `E_POLICY` | 10 | preflight STOP |
/// | `E_SOURCE_MISSING` | 11 | backup source does not exist |
/// | `E_IO_URING` | 12 | `SNAP_IO=uring` and io_uring cannot be set up here |
/// | `E_OWNERSHIP` | 20 | cannot apply ownership the policy requires |
/// | `E_LOCKING` | 30 | repository lock not acquired within the wait |
/// | `E_ATOMIC_SWAP` | 40 | the final rename into place failed |
/// | `E_TARGET_EXISTS` | 41 | restore target exists (and no replace was asked) |
/// | `E_EXDEV` | 50 | staging and target on different filesystems |
/// | `E_BACKUP_MISSING` | 60 | no such snapshot |
/// | `E_REPO_MISSING` | 61 | no repository at the given location |
/// | `E_REPO_VERSION` | 62 | repository format newer than this build reads |
/// | `E_PASSWORD` | 63 | encrypted repository: no password given, or no key opens with it |
/// | `E_REMOTE` | 64 | remote repository: the server failed or could not be reached, after retries |
/// | `E_RESTORE_FAILED` | 70 | restore could not create or apply an entry |
/// | `E_NO_SPACE` | 80 | a write failed with ENOSPC/EDQUOT |
/// | `E_INTEGRITY` | 90 | hash mismatch, corrupt or unknown-format repository data |
/// | `E_INTERRUPTED` | 130 | stopped by SIGINT/SIGTERM |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[allow(missing_docs, non_camel_case_types)]
pub enum ErrorId {
    E_GENERIC,
    E_USAGE,
    E_PARTIAL,
    E_UNCONFIRMED,
    E_POLICY,
    E_SOURCE_MISSING,
    E_IO_URING,
    E_OWNERSHIP,
    E_LOCKING,
    E_ATOMIC_SWAP,
    E_TARGET_EXISTS,
    E_EXDEV,
    E_BACKUP_MISSING,
    E_REPO_MISSING,
    E_REPO_VERSION,
    E_PASSWORD,
    E_REMOTE,
    E_RESTORE_FAILED,
    E_NO_SPACE,
    E_INTEGRITY,
    E_INTERRUPTED,
}

impl ErrorId {
    /// Every id, in table order.
    pub const ALL: [ErrorId; 21] = [
        ErrorId::E_GENERIC,
        ErrorId::E_USAGE,
        ErrorId::E_PARTIAL,
        ErrorId::E_UNCONFIRMED,
        ErrorId::E_POLICY,
        ErrorId::E_SOURCE_MISSING,
        ErrorId::E_IO_URING,
        ErrorId::E_OWNERSHIP,
        ErrorId::E_LOCKING,
        ErrorId::E_ATOMIC_SWAP,
        ErrorId::E_TARGET_EXISTS,
        ErrorId::E_EXDEV,
        ErrorId::E_BACKUP_MISSING,
        ErrorId::E_REPO_MISSING,
        ErrorId::E_REPO_VERSION,
        ErrorId::E_PASSWORD,
        ErrorId::E_REMOTE,
        ErrorId::E_RESTORE_FAILED,
        ErrorId::E_NO_SPACE,
        ErrorId::E_INTEGRITY,
        ErrorId::E_INTERRUPTED,
    ];

    /// The process exit code for this id.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorId::E_GENERIC => 1,
            ErrorId::E_USAGE => 2,
            ErrorId::E_PARTIAL => 3,
            ErrorId::E_UNCONFIRMED => 4,
            ErrorId::E_POLICY => 10,
            ErrorId::E_SOURCE_MISSING => 11,
            ErrorId::E_IO_URING => 12,
            ErrorId::E_OWNERSHIP => 20,
            ErrorId::E_LOCKING => 30,
            ErrorId::E_ATOMIC_SWAP => 40,
            ErrorId::E_TARGET_EXISTS => 41,
            ErrorId::E_EXDEV => 50,
            ErrorId::E_BACKUP_MISSING => 60,
            ErrorId::E_REPO_MISSING => 61,
            ErrorId::E_REPO_VERSION => 62,
            ErrorId::E_PASSWORD => 63,
            ErrorId::E_REMOTE => 64,
            ErrorId::E_RESTORE_FAILED => 70,
            ErrorId::E_NO_SPACE => 80,
            ErrorId::E_INTEGRITY => 90,
            ErrorId::E_INTERRUPTED => 130,
        }
    }

    /// The id as it appears in facts and messages, e.g. `"E_INTEGRITY"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorId::E_GENERIC => "E_GENERIC",
            ErrorId::E_USAGE => "E_USAGE",
            ErrorId::E_PARTIAL => "E_PARTIAL",
            ErrorId::E_UNCONFIRMED => "E_UNCONFIRMED",
            ErrorId::E_POLICY => "E_POLICY",
            ErrorId::E_SOURCE_MISSING => "E_SOURCE_MISSING",
            ErrorId::E_IO_URING => "E_IO_URING",
            ErrorId::E_OWNERSHIP => "E_OWNERSHIP",
            ErrorId::E_LOCKING => "E_LOCKING",
            ErrorId::E_ATOMIC_SWAP => "E_ATOMIC_SWAP",
            ErrorId::E_TARGET_EXISTS => "E_TARGET_EXISTS",
            ErrorId::E_EXDEV => "E_EXDEV",
            ErrorId::E_BACKUP_MISSING => "E_BACKUP_MISSING",
            ErrorId::E_REPO_MISSING => "E_REPO_MISSING",
            ErrorId::E_REPO_VERSION => "E_REPO_VERSION",
            ErrorId::E_PASSWORD => "E_PASSWORD",
            ErrorId::E_REMOTE => "E_REMOTE",
            ErrorId::E_RESTORE_FAILED => "E_RESTORE_FAILED",
            ErrorId::E_NO_SPACE => "E_NO_SPACE",
            ErrorId::E_INTEGRITY => "E_INTEGRITY",
            ErrorId::E_INTERRUPTED => "E_INTERRUPTED",
        }
    }
}

/// Everything that ends a snap command with a failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `SNAP_IO=uring` was asked for and the kernel refused to set up
    /// an io_uring (`io_uring_setup(2)`: disabled by
    /// `kernel.io_uring_disabled`, a seccomp filter, or not built in).
    #[error("SNAP_IO=uring, but io_uring is not available here: {detail}; unset SNAP_IO (or SNAP_IO=auto) to use the fallback")]
    IoUringUnavailable {
        /// Why (the setup error and the sysctl's value).
        detail: String,
    },
    /// A syscall failed on `path` during `op`.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`"open"`, `"write pack"`, ...).
        op: &'static str,
        /// The path concerned, as the user would write it.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The backup source does not exist.
    #[error("source {path} does not exist")]
    SourceMissing {
        /// The source as given.
        path: String,
    },
    /// The restore target already exists.
    #[error("restore target {path} already exists; choose a new directory")]
    TargetExists {
        /// The target as given.
        path: String,
    },
    /// No repository at `path`.
    #[error("no snap repository at {path} (create one with `snap --repo {path} init`)")]
    RepoMissing {
        /// The repository location.
        path: String,
    },
    /// The repository's `config.json` names a format version this build
    /// does not read (a newer snap wrote it).
    #[error("repository {path} is format version {version}; this snap reads versions {oldest} to {newest}: use a newer snap")]
    RepoVersion {
        /// The repository's `config.json`.
        path: String,
        /// The version it names.
        version: u32,
        /// The oldest version this build reads.
        oldest: u32,
        /// The newest version this build reads (and writes).
        newest: u32,
    },
    /// An encrypted repository could not be opened: no password was
    /// given, the password source failed, or no key file opens with it.
    #[error("cannot open the encrypted repository ({path}): {detail}")]
    Password {
        /// The key directory, or the password source that failed.
        path: String,
        /// Why.
        detail: String,
    },
    /// No snapshot matches `query`, or a prefix matches several.
    #[error("snapshot {query:?}: {detail}")]
    SnapshotNotFound {
        /// What the user asked for (id, prefix, `latest`).
        query: String,
        /// Why it did not resolve.
        detail: String,
    },
    /// Stored data does not match its hash, or is malformed.
    #[error("integrity error in {path}: {detail}")]
    Integrity {
        /// The repository file concerned.
        path: String,
        /// What does not match.
        detail: String,
    },
    /// The repository lock was not acquired within the wait.
    #[error("repository lock {path} is held ({holder}); gave up after {attempts} attempts in {waited_ms} ms")]
    Locked {
        /// The lock file.
        path: String,
        /// Holder note read from the lock file.
        holder: String,
        /// Attempts made.
        attempts: u32,
        /// Time waited, in milliseconds.
        waited_ms: u64,
    },
    /// SIGINT or SIGTERM arrived; the run stopped without committing.
    #[error("interrupted by a signal; nothing was committed")]
    Interrupted,
    /// Preflight stopped the run before anything was written.
    #[error("preflight stopped the run: {0}")]
    Policy(String),
    /// Invalid arguments.
    #[error("{0}")]
    Usage(String),
    /// Restore could not create or apply `path`.
    #[error("restore {path}: {detail}")]
    Restore {
        /// The entry's path relative to the target.
        path: String,
        /// What failed.
        detail: String,
    },
    /// Restore could not give `path` the owner the policy requires (the
    /// tier keeps owners, and this process may chown): `chown(2)` failed,
    /// e.g. `EPERM` on a filesystem that refuses it (NFS with root
    /// squashing) or `EINVAL` for an id this user namespace does not map
    /// (`user_namespaces(7)`).
    #[error("restore {path}: cannot apply the owner {uid}:{gid} the policy requires: {source}")]
    Ownership {
        /// The entry's path relative to the target.
        path: String,
        /// The owner and group asked for.
        uid: u32,
        /// See `uid`.
        gid: u32,
        /// The `chown(2)` error.
        #[source]
        source: io::Error,
    },
    /// A broken invariant of snap itself (a bug, not bad input): what was
    /// expected.
    #[error("internal error: {0} (a bug in snap; please report it)")]
    Internal(String),
    /// The final rename of the staging directory failed.
    #[error("rename {from} -> {to}: {source}")]
    Swap {
        /// Staging directory.
        from: String,
        /// Target.
        to: String,
        /// The `renameat2(2)` error.
        #[source]
        source: io::Error,
    },
    /// The run had passed its commit point (the snapshot record was renamed
    /// into `snapshots/`, or the restored tree into the target's name) when
    /// `source` failed: what was committed stays, but what came after (a
    /// sync that confirms durability, keeping the old tree, writing the
    /// facts) did not happen.
    #[error("{committed}, but then: {source}")]
    AfterCommit {
        /// What is true, e.g. `"snapshot 1a2b3c4d5e6f was committed"`.
        committed: String,
        /// The failure after the commit point.
        source: Box<Error>,
    },
}

impl Error {
    /// [`Error::Internal`] for a value that could not be serialised (every
    /// type snap serialises can be: this is a bug).
    pub fn serialise(what: &str, e: serde_json::Error) -> Self {
        Error::Internal(format!("cannot serialise {what}: {e}"))
    }

    /// Wraps an error that happened after the commit point (see
    /// [`Error::AfterCommit`]); an error already wrapped stays as it is.
    pub fn after_commit(self, committed: impl Into<String>) -> Self {
        match self {
            Error::AfterCommit { .. } => self,
            e => Error::AfterCommit {
                committed: committed.into(),
                source: Box::new(e),
            },
        }
    }

    /// Builds [`Error::Io`] from an `op`, a path and the OS error.
    pub fn io(op: &'static str, path: impl std::fmt::Display, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_string(),
            source,
        }
    }

    /// The error id (and so the exit code) of this error.
    pub fn id(&self) -> ErrorId {
        match self {
            Error::Io { source, .. } => io_error_id(source),
            Error::SourceMissing { .. } => ErrorId::E_SOURCE_MISSING,
            Error::IoUringUnavailable { .. } => ErrorId::E_IO_URING,
            Error::TargetExists { .. } => ErrorId::E_TARGET_EXISTS,
            Error::RepoMissing { .. } => ErrorId::E_REPO_MISSING,
            Error::RepoVersion { .. } => ErrorId::E_REPO_VERSION,
            Error::Password { .. } => ErrorId::E_PASSWORD,
            Error::SnapshotNotFound { .. } => ErrorId::E_BACKUP_MISSING,
            Error::Integrity { .. } => ErrorId::E_INTEGRITY,
            Error::Locked { .. } => ErrorId::E_LOCKING,
            Error::Usage(_) => ErrorId::E_USAGE,
            Error::Policy(_) => ErrorId::E_POLICY,
            Error::Interrupted => ErrorId::E_INTERRUPTED,
            Error::Restore { .. } => ErrorId::E_RESTORE_FAILED,
            Error::Ownership { .. } => ErrorId::E_OWNERSHIP,
            Error::Internal(_) => ErrorId::E_GENERIC,
            Error::AfterCommit { .. } => ErrorId::E_UNCONFIRMED,
            Error::Swap { source, .. } => match source.raw_os_error() {
                Some(code) if code == rustix::io::Errno::XDEV.raw_os_error() => ErrorId::E_EXDEV,
                Some(code) if code == rustix::io::Errno::EXIST.raw_os_error() => {
                    ErrorId::E_TARGET_EXISTS
                }
                _ => ErrorId::E_ATOMIC_SWAP,
            },
        }
    }

    /// The path this error concerns, when it has one.
    pub fn path(&self) -> Option<&str> {
        match self {
            Error::Io { path, .. }
            | Error::SourceMissing { path }
            | Error::TargetExists { path }
            | Error::RepoMissing { path }
            | Error::RepoVersion { path, .. }
            | Error::Password { path, .. }
            | Error::Integrity { path, .. }
            | Error::Locked { path, .. }
            | Error::Restore { path, .. }
            | Error::Ownership { path, .. } => Some(path),
            Error::Swap { to, .. } => Some(to),
            Error::AfterCommit { source, .. } => source.path(),
            Error::SnapshotNotFound { .. }
            | Error::Usage(_)
            | Error::Policy(_)
            | Error::Internal(_)
            | Error::IoUringUnavailable { .. }
            | Error::Interrupted => None,
        }
    }
}

/// The id for a bare OS error: `ENOSPC`/`EDQUOT` are [`ErrorId::E_NO_SPACE`],
/// `EXDEV` is [`ErrorId::E_EXDEV`], a remote server's error (see
/// [`crate::repo::storage::remote::RemoteError`]) is [`ErrorId::E_REMOTE`],
/// anything else [`ErrorId::E_GENERIC`].
pub fn io_error_id(e: &io::Error) -> ErrorId {
    use rustix::io::Errno;
    if e.get_ref()
        .is_some_and(|i| i.is::<crate::repo::storage::remote::RemoteError>())
    {
        return ErrorId::E_REMOTE;
    }
    match e.raw_os_error() {
        Some(c) if c == Errno::NOSPC.raw_os_error() || c == Errno::DQUOT.raw_os_error() => {
            ErrorId::E_NO_SPACE
        }
        Some(c) if c == Errno::XDEV.raw_os_error() => ErrorId::E_EXDEV,
        _ => ErrorId::E_GENERIC,
    }
}

/// Result alias for snap operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_exit_codes_are_unique() {
        let mut codes: Vec<i32> = ErrorId::ALL.iter().map(|i| i.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ErrorId::ALL.len());
        for id in ErrorId::ALL {
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, format!("\"{}\"", id.as_str()));
        }
    }

    #[test]
    fn readme_table_matches_code() {
        let readme = include_str!("../README.md");
        for id in ErrorId::ALL {
            let row = format!("| `{}` | {} |", id.as_str(), id.exit_code());
            assert!(readme.contains(&row), "README.md lacks the row {row}");
        }
    }
}
