//! Preflight: checks that decide, before anything is written, whether a run
//! can meet its [`Policy`]. Each check yields one `preflight.check` fact;
//! any [`CheckResult::Stop`] ends the run with exit 10 (`E_POLICY`).
//!
//! Side effects: reads only — `statx`, `statvfs`, `access(2)`, the
//! `FS_IOC_GETFLAGS` ioctl or `lsattr -d`, a non-blocking `flock` that is
//! released at once, `/proc/self/status`, and (restore) one probe file
//! created and removed in the target's parent to test xattr support.

use crate::human::size;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::fs::{fd, Dir, FileKind, Name};
use crate::policy::{OnDegraded, Policy};
use crate::repo::sidecar::EntryKind;

/// The environment variable that switches the inode flags ioctl off, so
/// tests can exercise the `lsattr` fallback: `SNAP_TEST_FLAGS_METHOD=lsattr`
/// skips the ioctl; `=none` skips both (result `unknown`). Test-only.
pub const FLAGS_METHOD_ENV: &str = "SNAP_TEST_FLAGS_METHOD";

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckResult {
    /// Fine.
    Pass,
    /// The run goes on; the auditor should know.
    Warn,
    /// The run must not start.
    Stop,
}

/// How the inode flags check read the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FlagsMethod {
    /// The `FS_IOC_GETFLAGS` ioctl.
    Ioctl,
    /// `lsattr -d` (the ioctl was unsupported).
    Lsattr,
    /// Neither worked.
    Unknown,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Check {
    /// Check name: `io_backend`, `source`, `repository`, `immutable`,
    /// `space`, `lock`, `tier`, `target`.
    pub check: String,
    /// The path checked.
    pub path: String,
    /// Outcome.
    pub result: CheckResult,
    /// For the `immutable` check: how the flags were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<FlagsMethod>,
    /// What was found.
    pub detail: String,
}

/// All checks of one preflight run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// In the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, check: &str, path: &Path, result: CheckResult, detail: impl Into<String>) {
        self.checks.push(Check {
            check: check.into(),
            path: path.display().to_string(),
            result,
            method: None,
            detail: detail.into(),
        });
    }

    /// The `io_backend` check: which I/O backend this process uses and
    /// why (pass); a STOP only if [`crate::io::choice`] fails, which the
    /// commands check before preflight to exit with its own id.
    fn io_backend(&mut self) {
        let path = Path::new("/proc/sys/kernel/io_uring_disabled");
        match crate::io::choice() {
            Ok(c) => self.add(
                "io_backend",
                path,
                CheckResult::Pass,
                format!("{}: {}", c.backend.as_str(), c.reason),
            ),
            Err(e) => self.add("io_backend", path, CheckResult::Stop, e.to_string()),
        }
    }

    /// Number of checks with `result`.
    pub fn count(&self, result: CheckResult) -> usize {
        self.checks.iter().filter(|c| c.result == result).count()
    }
}

/// Capabilities in the effective set (`capabilities(7)`), from
/// `/proc/self/status` `CapEff`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps(u64);

impl Caps {
    /// `CAP_CHOWN`.
    pub const CHOWN: u32 = 0;
    /// `CAP_FOWNER`.
    pub const FOWNER: u32 = 3;
    /// `CAP_LINUX_IMMUTABLE`.
    pub const LINUX_IMMUTABLE: u32 = 9;
    /// `CAP_SYS_ADMIN` (needed for `trusted.*` xattrs).
    pub const SYS_ADMIN: u32 = 21;
    /// `CAP_MKNOD`.
    pub const MKNOD: u32 = 27;
    /// `CAP_SETFCAP`.
    pub const SETFCAP: u32 = 31;
    /// `CAP_MAC_ADMIN` (SELinux labels the loaded policy would refuse).
    pub const MAC_ADMIN: u32 = 33;

    /// The effective set of this process (empty when unreadable).
    pub fn current() -> Caps {
        Caps(crate::sys::effective_caps())
    }

    /// Whether capability number `cap` is effective.
    pub fn has(self, cap: u32) -> bool {
        self.0 & (1u64 << cap) != 0
    }
}

/// Reads inode flags of the directory `path`: ioctl first, `lsattr -d`
/// where the ioctl is unsupported (`ENOTTY`, `EOPNOTSUPP`, `EINVAL`).
fn read_flags(path: &Path) -> (FlagsMethod, Option<u32>, String) {
    let mode = std::env::var(FLAGS_METHOD_ENV).unwrap_or_default();
    if mode != "lsattr" && mode != "none" {
        match Dir::open_root(path).and_then(|d| fd::flags(&d)) {
            Ok(f) => return (FlagsMethod::Ioctl, Some(f), String::new()),
            Err(e) if crate::fs::flags_unsupported(&e) => {}
            Err(e) => return (FlagsMethod::Unknown, None, format!("FS_IOC_GETFLAGS: {e}")),
        }
    }
    if mode != "none" {
        if let Some(f) = lsattr_flags(path) {
            return (FlagsMethod::Lsattr, Some(f), String::new());
        }
    }
    (
        FlagsMethod::Unknown,
        None,
        "neither FS_IOC_GETFLAGS nor lsattr could read the flags".into(),
    )
}

/// `lsattr -d PATH`, its letters mapped back to `FS_*_FL` bits (only the
/// two that matter here: `i` immutable 0x10, `a` append-only 0x20).
fn lsattr_flags(path: &Path) -> Option<u32> {
    let out = Command::new("lsattr").arg("-d").arg(path).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let letters = text.split_whitespace().next()?;
    let mut f = 0;
    if letters.contains('i') {
        f |= 0x10;
    }
    if letters.contains('a') {
        f |= 0x20;
    }
    Some(f)
}

/// The `immutable` check on `path` (a directory snap will add names to).
fn immutable_check(report: &mut Report, path: &Path, policy: &Policy) {
    let (method, flags, detail) = read_flags(path);
    let (result, detail) = match flags {
        Some(f) if f & 0x10 != 0 => (
            CheckResult::Stop,
            "directory is immutable (chattr +i)".to_owned(),
        ),
        Some(f) if f & 0x20 != 0 => (
            CheckResult::Stop,
            "directory is append-only (chattr +a)".to_owned(),
        ),
        Some(_) => (
            CheckResult::Pass,
            "neither immutable nor append-only".to_owned(),
        ),
        None if policy.allow_unreliable_immutable_check => (
            CheckResult::Warn,
            format!("{detail}; allowed by allow_unreliable_immutable_check"),
        ),
        None => (
            CheckResult::Stop,
            format!("{detail}; set allow_unreliable_immutable_check to go on"),
        ),
    };
    report.checks.push(Check {
        check: "immutable".into(),
        path: path.display().to_string(),
        result,
        method: Some(method),
        detail,
    });
}

/// The nearest existing ancestor of `path` (itself when it exists).
fn existing_ancestor(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.as_os_str().is_empty() && !matches!(crate::fs::lstat_path(&p), Ok(Some(_))) {
        if !p.pop() {
            break;
        }
    }
    if p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        p
    }
}

fn free_bytes(path: &Path) -> io::Result<u64> {
    Dir::open_root(path)?.available_bytes()
}

fn degraded(policy: &Policy) -> CheckResult {
    match policy.on_degraded {
        OnDegraded::Stop => CheckResult::Stop,
        OnDegraded::Warn => CheckResult::Warn,
    }
}

/// Sums the sizes of the regular files under `root` (statx only): the
/// estimate of what a first backup stores.
fn tree_size(root: &Path) -> io::Result<u64> {
    let dir = match Dir::open_root(root) {
        Ok(d) => d,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
            return Ok(crate::fs::lstat_path(root)?.map_or(0, |s| s.size))
        }
        Err(e) => return Err(e),
    };
    let mut total = 0;
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for n in d.list()? {
            let st = d.stat(&n)?;
            match st.kind {
                FileKind::Dir => stack.push(d.open_dir(&n)?),
                FileKind::File => total += st.blocks.saturating_mul(512).min(st.size),
                _ => {}
            }
        }
    }
    Ok(total)
}

/// The preflight `source` check: `source` exists and, when a directory,
/// can be listed.
fn source_check(r: &mut Report, source: &Path) {
    match crate::fs::lstat_path(source) {
        Ok(None) => r.add(
            "source",
            source,
            CheckResult::Stop,
            "No such file or directory (os error 2)",
        ),
        Ok(Some(_)) => match Dir::open_root(source).and_then(|d| d.list().map(|_| ())) {
            Ok(()) => r.add(
                "source",
                source,
                CheckResult::Pass,
                "directory exists and can be listed",
            ),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
                r.add("source", source, CheckResult::Pass, "single entry exists")
            }
            Err(e) => r.add(
                "source",
                source,
                CheckResult::Stop,
                format!("cannot be read: {e}"),
            ),
        },
        Err(e) => r.add("source", source, CheckResult::Stop, format!("{e}")),
    }
}

/// Checks before a backup of `sources` (at least one) into the
/// repository at `repo`: one `source` check per source. `lock` says
/// whether the caller holds the repository lock, will take it once the
/// repository exists, or (`snap preflight`) only asks.
pub fn backup(
    repo: &Path,
    sources: &[std::path::PathBuf],
    policy: &Policy,
    lock: LockState,
) -> Report {
    let mut r = Report::default();
    r.io_backend();
    for source in sources {
        source_check(&mut r, source);
    }
    let source = sources.first().map_or(Path::new("/"), |p| p.as_path());
    if is_remote(repo) {
        // Off this machine: reached (and its lock objects checked) when a
        // run opens it; its space is the server's.
        r.add(
            "repository",
            repo,
            CheckResult::Pass,
            "remote repository: reached when the run opens it; space is the server's",
        );
        lock_check(&mut r, repo, false, lock);
        tier_check(&mut r, source, policy);
        return r;
    }
    let base = existing_ancestor(repo);
    match crate::fs::writable(&base) {
        Ok(()) => r.add("repository", &base, CheckResult::Pass, "writable"),
        Err(e) => r.add(
            "repository",
            &base,
            CheckResult::Stop,
            format!("not writable: {e}"),
        ),
    }
    immutable_check(&mut r, &base, policy);
    // Space: cheap when the repository has more room than the source's
    // whole filesystem uses; otherwise estimate by summing file sizes.
    match free_bytes(&base) {
        Ok(free) => {
            // Each source filesystem's used bytes, counted once.
            let mut devs = Vec::new();
            let mut src_used = 0u64;
            for s in sources {
                let at = existing_ancestor(s);
                let used = crate::fs::lstat_path(&at).ok().flatten().and_then(|st| {
                    if devs.contains(&st.dev) {
                        return Some(0);
                    }
                    devs.push(st.dev);
                    Dir::open_root(at.as_path())
                        .and_then(|d| d.used_bytes())
                        .ok()
                });
                src_used = src_used.saturating_add(used.unwrap_or(u64::MAX));
            }
            if free >= src_used {
                r.add(
                    "space",
                    &base,
                    CheckResult::Pass,
                    format!(
                        "{} free, the source filesystems use {}",
                        size(free),
                        size(src_used)
                    ),
                );
            } else {
                let need = sources
                    .iter()
                    .try_fold(0u64, |sum, s| tree_size(s).map(|n| sum.saturating_add(n)));
                match need {
                    Ok(need) if need > free => r.add(
                        "space",
                        &base,
                        CheckResult::Stop,
                        format!(
                            "{} free, the sources hold {} of file data",
                            size(free),
                            size(need)
                        ),
                    ),
                    Ok(need) => r.add(
                        "space",
                        &base,
                        CheckResult::Pass,
                        format!("{} free, the sources hold {}", size(free), size(need)),
                    ),
                    Err(e) => r.add(
                        "space",
                        &base,
                        CheckResult::Warn,
                        format!("{} free; source size unknown: {e}", size(free)),
                    ),
                }
            }
        }
        Err(e) => r.add("space", &base, CheckResult::Warn, format!("statvfs: {e}")),
    }
    lock_check(&mut r, repo, false, lock);
    tier_check(&mut r, source, policy);
    r
}

/// Whether `repo` names a repository off this machine (`s3:`, `sftp:`).
fn is_remote(repo: &Path) -> bool {
    crate::repo::location(repo).is_ok_and(|l| l.is_remote())
}

fn tier_check(r: &mut Report, source: &Path, policy: &Policy) {
    let caps = Caps::current();
    if crate::repo::format::tier::fields(policy.tier).full && !caps.has(Caps::SYS_ADMIN) {
        r.add(
            "tier",
            source,
            degraded(policy),
            "tier full without CAP_SYS_ADMIN: trusted.* xattrs cannot be read",
        );
    } else {
        r.add(
            "tier",
            source,
            CheckResult::Pass,
            format!("tier {} can be captured", policy.tier.as_str()),
        );
    }
}

/// The repository lock as preflight sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// This run holds it.
    Held,
    /// This run takes it after preflight (the repository does not exist
    /// yet), waiting for it as any run does.
    Later,
    /// Only asked about (`snap preflight`): held by another process is a
    /// stop, since a run now would have to wait.
    Probe,
}

/// `target_parent`: a parent directory other users can write and that is
/// not sticky (`S_ISVTX`, which limits renames and unlinks to an entry's
/// owner, see `inode(7)`) lets them rename or replace the staging
/// directory while the tree is built. Restore confirms after its rename
/// that the target is the tree it built (and fails otherwise), so this is
/// a warning: the restore may fail, it is not hijacked.
fn shared_parent_check(r: &mut Report, parent: &Path) {
    match crate::fs::lstat_path(parent) {
        Ok(Some(st)) => {
            let others_write = st.mode & 0o002 != 0
                || (st.mode & 0o020 != 0 && st.gid != crate::sys::egid())
                || (st.uid != crate::sys::euid() && st.uid != 0 && st.mode & 0o200 != 0);
            if others_write && st.mode & 0o1000 == 0 {
                r.add(
                    "target_parent",
                    parent,
                    CheckResult::Warn,
                    format!(
                        "other users can write this directory (mode {:o}, owner {}) and it is not sticky: they could swap the staging directory; the restore checks the result and fails rather than place another tree",
                        st.mode, st.uid
                    ),
                );
            } else {
                r.add(
                    "target_parent",
                    parent,
                    CheckResult::Pass,
                    "only this user (or, sticky, each entry's owner) can rename entries in it",
                );
            }
        }
        Ok(None) => {}
        Err(e) => r.add(
            "target_parent",
            parent,
            CheckResult::Warn,
            format!("cannot stat: {e}"),
        ),
    }
}

fn lock_check(r: &mut Report, repo: &Path, exclusive: bool, state: LockState) {
    let lock = repo.join(if is_remote(repo) {
        crate::repo::storage::remote::LOCKS
    } else {
        crate::repo::layout::LOCK
    });
    match state {
        LockState::Held => {
            r.add("lock", &lock, CheckResult::Pass, "held by this run");
            return;
        }
        LockState::Later => {
            r.add(
                "lock",
                &lock,
                CheckResult::Pass,
                "taken once the repository exists (waiting up to lock_wait_ms)",
            );
            return;
        }
        LockState::Probe => {}
    }
    if is_remote(repo) {
        r.add(
            "lock",
            repo,
            CheckResult::Pass,
            "remote: lock objects are checked when a run takes the lock",
        );
        return;
    }
    let Ok(dir) = Dir::open_root(repo) else {
        r.add("lock", &lock, CheckResult::Pass, "no repository yet");
        return;
    };
    let name = Name::new(b"lock").expect("constant name");
    match dir
        .open_file(&name)
        .and_then(|f| fd::try_flock(&f, exclusive))
    {
        Ok(true) => r.add("lock", &lock, CheckResult::Pass, "available"),
        Ok(false) => {
            let holder = dir
                .read_all(&name, crate::repo::LOCK_NOTE_MAX)
                .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                .unwrap_or_default();
            r.add(
                "lock",
                &lock,
                CheckResult::Stop,
                format!("held by another process {holder}"),
            )
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            r.add("lock", &lock, CheckResult::Pass, "no lock file yet")
        }
        Err(e) => r.add(
            "lock",
            &lock,
            CheckResult::Warn,
            format!("cannot test: {e}"),
        ),
    }
}

/// What a snapshot's records ask of a restore.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// Owners other than this process's euid.
    pub foreign_owner: bool,
    /// Immutable or append-only inode flags.
    pub protect_flags: bool,
    /// `trusted.*` xattrs.
    pub trusted: bool,
    /// `security.capability`.
    pub caps: bool,
    /// `security.selinux` labels.
    pub selinux: bool,
    /// Other `security.*` xattrs (need `CAP_SYS_ADMIN`, see
    /// `cap_inode_setxattr` in `security/commoncap.c`).
    pub security_other: bool,
    /// Any xattr (ACLs included).
    pub xattrs: bool,
    /// Char/block devices.
    pub devices: bool,
}

impl Needs {
    /// Adds what `other` needs.
    pub fn merge(&mut self, other: &Needs) {
        self.foreign_owner |= other.foreign_owner;
        self.protect_flags |= other.protect_flags;
        self.trusted |= other.trusted;
        self.caps |= other.caps;
        self.selinux |= other.selinux;
        self.security_other |= other.security_other;
        self.xattrs |= other.xattrs;
        self.devices |= other.devices;
    }

    /// Adds one record's needs (a record already limited to the tier
    /// restore applies): its owner, inode flags, kind and xattr names.
    pub fn add<'a>(
        &mut self,
        uid: Option<u32>,
        flags: Option<u32>,
        kind: EntryKind,
        xattrs: impl IntoIterator<Item = &'a str>,
    ) {
        self.foreign_owner |= uid.is_some_and(|u| u != crate::sys::euid());
        self.protect_flags |= flags.is_some_and(|f| f & 0x30 != 0);
        self.devices |= matches!(kind, EntryKind::Char | EntryKind::Block);
        for k in xattrs {
            self.xattrs = true;
            self.trusted |= k.starts_with("trusted.");
            self.caps |= k == "security.capability";
            self.selinux |= k == "security.selinux";
            self.security_other |=
                k.starts_with("security.") && k != "security.capability" && k != "security.selinux";
        }
    }
}

/// Checks before restoring into `target` from the repository at `repo`.
///
/// `replacing` when an existing `target` will be swapped out: its own inode
/// flags are checked too (an immutable directory cannot be renamed).
pub fn restore(
    repo: &Path,
    target: &Path,
    needs: &Needs,
    policy: &Policy,
    lock_held: bool,
    bytes: u64,
    replacing: bool,
) -> Report {
    let mut r = Report::default();
    r.io_backend();
    let parent = target
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    match crate::fs::writable(&parent) {
        Ok(()) => r.add(
            "target",
            &parent,
            CheckResult::Pass,
            "parent exists and is writable; staging goes beside the target, on the same filesystem",
        ),
        Err(e) => r.add(
            "target",
            &parent,
            CheckResult::Stop,
            format!("parent not writable: {e}"),
        ),
    }
    shared_parent_check(&mut r, &parent);
    immutable_check(&mut r, &parent, policy);
    if replacing {
        immutable_check(&mut r, target, policy);
    }
    match free_bytes(&parent) {
        Ok(free) if free < bytes => r.add(
            "space",
            &parent,
            CheckResult::Stop,
            format!("{} free, the snapshot holds {}", size(free), size(bytes)),
        ),
        Ok(free) => r.add(
            "space",
            &parent,
            CheckResult::Pass,
            format!("{} free, the snapshot holds {}", size(free), size(bytes)),
        ),
        Err(e) => r.add("space", &parent, CheckResult::Warn, format!("statvfs: {e}")),
    }
    lock_check(
        &mut r,
        repo,
        false,
        if lock_held {
            LockState::Held
        } else {
            LockState::Probe
        },
    );
    let caps = Caps::current();
    let mut missing = Vec::new();
    if needs.foreign_owner && !caps.has(Caps::CHOWN) {
        missing.push("owners (CAP_CHOWN)");
    }
    if needs.protect_flags && !caps.has(Caps::LINUX_IMMUTABLE) {
        missing.push("immutable/append-only flags (CAP_LINUX_IMMUTABLE)");
    }
    if needs.trusted && !caps.has(Caps::SYS_ADMIN) {
        missing.push("trusted.* xattrs (CAP_SYS_ADMIN)");
    }
    if needs.caps && !caps.has(Caps::SETFCAP) {
        missing.push("file capabilities (CAP_SETFCAP)");
    }
    if needs.security_other && !caps.has(Caps::SYS_ADMIN) {
        missing.push("security.* xattrs (CAP_SYS_ADMIN)");
    }
    let selinux_on = Path::new("/sys/fs/selinux/enforce").exists();
    if needs.selinux && selinux_on && !caps.has(Caps::MAC_ADMIN) {
        missing.push(
            "SELinux labels the loaded policy may refuse (SELinux is enabled; CAP_MAC_ADMIN)",
        );
    }
    if needs.devices && !caps.has(Caps::MKNOD) {
        missing.push("devices (CAP_MKNOD)");
    }
    if needs.xattrs && !probe_xattrs(&parent) {
        missing.push("xattrs and ACLs (the target filesystem refuses user.* xattrs)");
    }
    if missing.is_empty() {
        r.add(
            "tier",
            &parent,
            CheckResult::Pass,
            "everything the snapshot holds can be applied",
        );
    } else {
        r.add(
            "tier",
            &parent,
            degraded(policy),
            format!("cannot apply: {}", missing.join(", ")),
        );
    }
    r
}

/// Whether the filesystem of `dir` stores `user.*` xattrs: sets one on a
/// probe file created and removed there.
fn probe_xattrs(dir: &Path) -> bool {
    let Ok(d) = Dir::open_root(dir) else {
        return false;
    };
    let Ok(name) = Name::new(format!(".snap-xattr-probe-{}", std::process::id()).as_bytes()) else {
        return false;
    };
    let ok = match d.create_file(&name, 0o600) {
        Ok(f) => fd::set_xattr(&f, b"user.snap.probe", b"1").is_ok(),
        Err(_) => return false,
    };
    if let Err(e) = d.unlink(&name) {
        eprintln!(
            "snap: warning: could not remove probe file in {}: {e}",
            dir.display()
        );
    }
    ok
}
