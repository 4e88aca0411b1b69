//! Helpers for integration tests: run the built `snap` binary, validate
//! every fact it writes against the committed `schemas/fact.schema.json`,
//! and take an independent `lstat` view of trees.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

pub mod servers;

pub fn snap_bin() -> &'static str {
    env!("CARGO_BIN_EXE_snap")
}

pub fn is_root() -> bool {
    // SAFETY-free: read from /proc instead of calling geteuid.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn fact_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/fact.schema.json");
        let schema: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read fact schema"))
                .expect("fact schema is JSON");
        jsonschema::validator_for(&schema).expect("fact schema compiles")
    })
}

/// Asserts that `fact` validates against the committed fact schema.
pub fn assert_valid_fact(fact: &Value) {
    let v = fact_validator();
    let errors: Vec<String> = v
        .iter_errors(fact)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "fact does not validate: {errors:?}\n{fact}"
    );
}

/// The result of one snap run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub facts: Vec<Value>,
}

impl Run {
    pub fn fact(&self, event: &str) -> &Value {
        self.facts
            .iter()
            .find(|f| f["event"] == event)
            .unwrap_or_else(|| {
                panic!(
                    "no {event} fact in {:#?}\nstderr: {}",
                    self.facts, self.stderr
                )
            })
    }

    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "snap failed: {}\n{}",
            self.stderr, self.stdout
        );
        self
    }
}

/// A repository in a temp dir plus helpers to run snap against it.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    seq: std::cell::Cell<u32>,
    /// The password of an encrypted repository ([`Env::encrypted`]):
    /// every run gets it as `SNAP_PASSWORD`, and the first backup's
    /// `snap init` is `snap init --encrypt`.
    pub password: Option<String>,
    /// Variables every run gets (a remote repository's credentials).
    pub vars: Vec<(&'static str, String)>,
    /// The repository is remote ([`Env::remote`]): `snap init` runs before
    /// the first backup unless [`Env::inited`] says it ran.
    pub remote: bool,
    pub inited: std::cell::Cell<bool>,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("snap-test")
            .tempdir()
            .expect("tempdir");
        let repo = dir.path().join("repo");
        Env {
            dir,
            repo,
            seq: std::cell::Cell::new(0),
            password: None,
            vars: Vec::new(),
            remote: false,
            inited: std::cell::Cell::new(false),
        }
    }

    /// An environment whose repository is the remote `location`, reached
    /// with `vars`; the cache (`XDG_CACHE_HOME`) is in the temp dir.
    #[allow(dead_code)]
    pub fn remote(location: &str, vars: Vec<(&'static str, String)>) -> Self {
        let mut env = Env::new();
        env.repo = PathBuf::from(location);
        env.remote = true;
        env.vars = vars;
        env.vars
            .push(("XDG_CACHE_HOME", env.path("cache").display().to_string()));
        env
    }

    /// An environment whose repository is encrypted with `password`.
    #[allow(dead_code)]
    pub fn encrypted(password: &str) -> Self {
        Env {
            password: Some(password.to_owned()),
            ..Env::new()
        }
    }

    /// A snap command with `--repo` and, for an encrypted repository, its
    /// password in the environment.
    #[allow(dead_code)]
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(snap_bin());
        cmd.arg("--repo").arg(&self.repo);
        if let Some(p) = &self.password {
            cmd.env("SNAP_PASSWORD", p);
        }
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs snap with `--repo` and `--facts`, validating every fact.
    pub fn snap<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        // A location named with --repo must exist: `snap init` makes it.
        if args.first().is_some_and(|a| a.as_ref() == "init") {
            self.inited.set(true);
        }
        let backup = args.first().is_some_and(|a| a.as_ref() == "backup");
        let missing = backup
            && if self.remote {
                !self.inited.replace(true)
            } else {
                !self.repo.exists()
            };
        if missing {
            let init = self.command();
            if self.password.is_some() {
                self.run_cmd(init, ["init", "--encrypt"]).ok();
            } else {
                self.run_cmd(init, ["init"]).ok();
            }
        }
        let cmd = self.command();
        self.run_cmd(cmd, args)
    }

    /// `snap restore latest --target TARGET`.
    pub fn restore_latest(&self, target: impl AsRef<Path>) -> Run {
        self.snap([
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            target.as_ref().as_os_str(),
        ])
    }

    /// Runs snap with `--facts` but no `--repo` (for default-location tests).
    pub fn run_cmd<I, S>(&self, mut cmd: Command, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let n = self.seq.get();
        self.seq.set(n + 1);
        let facts_path = self.dir.path().join(format!("facts-{n}.jsonl"));
        cmd.arg("--facts").arg(&facts_path).args(args);
        let out = cmd.output().expect("run snap");
        let facts = read_facts(&facts_path);
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            facts,
        }
    }
}

/// Reads a facts file, validating each line against the schema and the
/// envelope's invariants.
pub fn read_facts(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut next_seq: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("fact line {i} is not JSON: {e}: {line}"));
        assert_valid_fact(&v);
        // Several runs may append to one file: seq counts within a run.
        let seq = next_seq
            .entry(v["run_id"].as_str().unwrap_or_default().to_owned())
            .or_insert(0);
        assert_eq!(v["seq"], *seq, "seq numbers of a run are consecutive");
        *seq += 1;
        if v["decision"] == "failure" {
            assert!(
                v["error_id"].is_string() && v["exit_code"].is_number(),
                "failure fact without id: {v}"
            );
        }
        out.push(v);
    }
    out
}

/// What an independent `lstat` says about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub atime: (i64, i64),
    pub target: Option<Vec<u8>>,
    pub ino: u64,
    pub nlink: u64,
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else {
        "socket"
    }
}

/// Walks `root` with `symlink_metadata` (lstat), keyed by relative path
/// bytes (`""` for the root).
pub fn lstat_tree(root: &Path) -> BTreeMap<Vec<u8>, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), Vec::new())];
    while let Some((p, rel)) = stack.pop() {
        let md =
            std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let kind = kind_of(md.file_type());
        let target = (kind == "symlink").then(|| {
            std::fs::read_link(&p)
                .expect("readlink")
                .as_os_str()
                .as_bytes()
                .to_vec()
        });
        out.insert(
            rel.clone(),
            Seen {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if kind == "file" { md.size() } else { 0 },
                mtime: (md.mtime(), md.mtime_nsec()),
                // Listing a directory or reading a link updates its atime
                // (relatime), so only file and FIFO atimes are comparable.
                atime: if kind == "file" || kind == "fifo" {
                    (md.atime(), md.atime_nsec())
                } else {
                    (0, 0)
                },
                target,
                ino: md.ino(),
                nlink: md.nlink(),
            },
        );
        if kind == "dir" {
            for e in std::fs::read_dir(&p).expect("read_dir") {
                let e = e.expect("dirent");
                let mut r = rel.clone();
                if !r.is_empty() {
                    r.push(b'/');
                }
                r.extend_from_slice(e.file_name().as_bytes());
                stack.push((e.path(), r));
            }
        }
    }
    out
}

/// Groups of paths sharing an inode (hard link groups), as sorted lists.
pub fn link_groups(tree: &BTreeMap<Vec<u8>, Seen>) -> Vec<Vec<Vec<u8>>> {
    let mut by_ino: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for (p, s) in tree {
        if s.kind != "dir" && s.nlink > 1 {
            by_ino.entry(s.ino).or_default().push(p.clone());
        }
    }
    let mut groups: Vec<Vec<Vec<u8>>> = by_ino.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    groups
}

/// Asserts two trees agree on kind, mode, uid/gid, size, mtime (ns),
/// symlink targets, hard link groups and content (byte compare). With
/// `check_atime`, atimes of non-directories too.
pub fn assert_same_tree(src: &Path, dst: &Path, check_atime: bool) {
    let a = lstat_tree(src);
    let b = lstat_tree(dst);
    let ak: Vec<_> = a
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    let bk: Vec<_> = b
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(ak, bk, "the trees hold different paths");
    for (p, sa) in &a {
        let sb = &b[p];
        let shown = String::from_utf8_lossy(p);
        assert_eq!(sa.kind, sb.kind, "kind of {shown}");
        assert_eq!(
            sa.mode, sb.mode,
            "mode of {shown}: {:o} vs {:o}",
            sa.mode, sb.mode
        );
        assert_eq!((sa.uid, sa.gid), (sb.uid, sb.gid), "owner of {shown}");
        assert_eq!(sa.size, sb.size, "size of {shown}");
        assert_eq!(sa.mtime, sb.mtime, "mtime of {shown}");
        assert_eq!(sa.target, sb.target, "symlink target of {shown}");
        if check_atime && sa.kind != "dir" {
            assert_eq!(sa.atime, sb.atime, "atime of {shown}");
        }
    }
    let ga = link_groups(&a);
    let gb = link_groups(&b);
    assert_eq!(ga, gb, "hard link groups differ");
    // Content, read last so the checks above saw undisturbed atimes.
    for (p, sa) in &a {
        if sa.kind == "file" {
            let rel = Path::new(OsStr::from_bytes(p));
            let x = std::fs::read(src.join(rel)).expect("read src");
            let y = std::fs::read(dst.join(rel)).expect("read dst");
            assert!(x == y, "content of {} differs", String::from_utf8_lossy(p));
        }
    }
}

/// Total bytes of the regular files under `root` (an independent measure
/// of a repository's size).
pub fn tree_bytes(root: &Path) -> u64 {
    lstat_tree(root)
        .values()
        .filter(|s| s.kind == "file")
        .map(|s| s.size)
        .sum()
}

/// Deterministic pseudo-random bytes (xorshift64*), incompressible enough
/// to defeat accidental dedup.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs a shell command, panicking with its output on failure.
pub fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn has_tool(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Number of restore staging directories (`.snap-restore-*`) in `dir`.
pub fn staging_dirs(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().as_bytes().starts_with(b".snap-restore"))
        .count()
}

/// path -> BLAKE3 of the content of every regular file under `root`.
pub fn manifest(root: &Path) -> BTreeMap<String, String> {
    lstat_tree(root)
        .into_iter()
        .filter(|(_, s)| s.kind == "file")
        .map(|(p, _)| {
            let rel = String::from_utf8(p).unwrap();
            let h = blake3::hash(&std::fs::read(root.join(&rel)).unwrap())
                .to_hex()
                .to_string();
            (rel, h)
        })
        .collect()
}

/// Unmounts a test mount when dropped, even when the test panics
/// (`umount`, then `umount -l` when busy).
pub struct Mount(pub PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
        if !ok(Command::new("umount").arg(&self.0))
            && !ok(Command::new("umount").arg("-l").arg(&self.0))
        {
            eprintln!("could not unmount {}", self.0.display());
        }
    }
}

/// Clears immutable/append-only flags under a path when dropped, so the
/// temp dir can be removed. `chattr -R` complains about FIFOs, devices and
/// symlinks; only the exit status of the shell matters.
pub struct Unprotect(pub PathBuf);

impl Drop for Unprotect {
    fn drop(&mut self) {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "chattr -R -ia '{}' 2>/dev/null; true",
                self.0.display()
            ))
            .status();
        if !matches!(ok, Ok(s) if s.success()) {
            eprintln!("could not clear flags under {}", self.0.display());
        }
    }
}

/// A history for prune tests, in `src`: generation 0 is 2,000 files of
/// 1-4 KiB in 20 directories and a 3 MiB file; each later generation
/// rewrites 40 small files (the same ones as the generation before, every
/// other time) and replaces the large one. `backup(tag)` is
/// called after each generation `g` with tag `g{g}`; returns tag ->
/// manifest. Packs then mix data every snapshot shares with data only one
/// holds, so a prune after forgetting some deletes packs and repacks
/// others.
pub fn prune_history(
    src: &Path,
    generations: u64,
    mut backup: impl FnMut(&str),
) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut manifests = BTreeMap::new();
    for g in 0..generations {
        if g == 0 {
            for d in 0..20u64 {
                let dir = src.join(format!("d{d:02}"));
                std::fs::create_dir_all(&dir).unwrap();
                for f in 0..100u64 {
                    let seed = (d * 100 + f) * 2 + 1;
                    std::fs::write(
                        dir.join(format!("f{f:03}")),
                        pseudo_random(1024 + (seed as usize * 37) % 3072, seed),
                    )
                    .unwrap();
                }
            }
        } else {
            // Generations 2p-1 and 2p rewrite the same files, so the
            // first's pack holds nothing the second still uses.
            let p = g.div_ceil(2);
            for k in 0..40u64 {
                let (d, f) = ((p * 7 + k) % 20, (p * 13 + k * 3) % 100);
                std::fs::write(
                    src.join(format!("d{d:02}/f{f:03}")),
                    pseudo_random(2048, (100_000 + g * 100 + k) * 2 + 1),
                )
                .unwrap();
            }
        }
        std::fs::write(src.join("large"), pseudo_random(3 << 20, (500 + g) * 2 + 1)).unwrap();
        let tag = format!("g{g}");
        backup(&tag);
        manifests.insert(tag, manifest(src));
    }
    manifests
}

/// (snapshot id, first tag) of every record in `repo`/snapshots.
pub fn tagged_snapshots(repo: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo.join("snapshots")).unwrap() {
        let p = e.unwrap().path();
        let rec: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let id = p.file_stem().unwrap().to_str().unwrap().to_owned();
        out.push((id, rec["tags"][0].as_str().unwrap_or_default().to_owned()));
    }
    out.sort();
    out
}

/// How many times `syscall` is entered by `snap ARGS` (all threads), from
/// an `strace -f` run; `None` without strace.
pub fn count_syscalls(syscall: &str, args: &[&OsStr]) -> Option<usize> {
    if !has_tool("strace") {
        return None;
    }
    let log = tempfile::NamedTempFile::new().unwrap();
    let st = Command::new("strace")
        .args(["-f", "-qq", "-e"])
        .arg(format!("trace={syscall}"))
        .arg("-o")
        .arg(log.path())
        .arg(snap_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "snap {args:?} under strace failed");
    let text = std::fs::read_to_string(log.path()).unwrap();
    Some(
        text.lines()
            .filter(|l| l.contains(&format!("{syscall}(")) && !l.contains("resumed>"))
            .count(),
    )
}

/// `snap ARGS` under strace with `signal` injected at the `when`-th
/// `syscall` (strace(1) `-e inject=SYSCALL:signal=SIG:when=N`): the call
/// still runs, and the signal takes effect as it returns, before the next
/// instruction.
pub fn snap_signalled_at(syscall: &str, when: usize, signal: &str, args: &[&OsStr]) -> Command {
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("trace={syscall}"))
        .arg("-e")
        .arg(format!("inject={syscall}:signal={signal}:when={when}"))
        .arg(snap_bin())
        .args(args);
    c
}

/// Makes `env.repo` a format-2 repository: a new one, its config set back
/// to version 2 (empty, it is what the last format-2 build made), so
/// tests of format-2 files (entries files) have one.
pub fn init_format2(env: &Env) {
    env.snap(["init"]).ok();
    let p = env.repo.join("config.json");
    let mut c: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    c["version"] = 2.into();
    std::fs::write(&p, serde_json::to_vec(&c).unwrap()).unwrap();
}

/// The entries stream of the snapshot record `rec` in `repo`, read
/// independently of snap: its entries file (format 2), or (format 3) its
/// blobs located through the index files and read from their packs,
/// zstd-decoded where the index says so.
pub fn entries_text(repo: &Path, rec: &Value) -> Vec<u8> {
    let id = rec["entries"]["id"].as_str().unwrap();
    let Some(chunks) = rec["entries"]["chunks"].as_array() else {
        return std::fs::read(repo.join(format!("entries/{}/{id}.jsonl", &id[..2]))).unwrap();
    };
    let mut at = BTreeMap::new();
    for f in std::fs::read_dir(repo.join("index")).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        let json = if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            zstd::stream::decode_all(&bytes[..]).unwrap()
        } else {
            bytes
        };
        let idx: Value = serde_json::from_slice(&json).unwrap();
        for p in idx["packs"].as_array().unwrap() {
            for b in p["blobs"].as_array().unwrap() {
                at.insert(
                    b["id"].as_str().unwrap().to_owned(),
                    (
                        p["id"].as_str().unwrap().to_owned(),
                        b["offset"].as_u64().unwrap() as usize,
                        b["length"].as_u64().unwrap() as usize,
                        b["raw_length"].as_u64(),
                    ),
                );
            }
        }
    }
    let mut out = Vec::new();
    for c in chunks {
        let (pack, off, len, raw) = &at[c.as_str().unwrap()];
        let bytes = std::fs::read(repo.join(format!("packs/{}/{pack}.pack", &pack[..2]))).unwrap();
        let stored = &bytes[*off..off + len];
        match raw {
            Some(n) => out.extend(zstd::bulk::decompress(stored, *n as usize).unwrap()),
            None => out.extend_from_slice(stored),
        }
    }
    out
}

/// Runs `cmd` (a shell line) inside `dir` and returns its stdout.
pub fn view(dir: &Path, cmd: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{cmd} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `tests/fixture.sh` (shared with `scripts/fidelity.sh`); it also
/// binds a socket, which is recorded but not restored.
pub fn build_fixture(root: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixture.sh");
    sh(&format!("bash '{}' '{}'", script.display(), root.display()));
}

/// The independent views of a tree's metadata that a round trip must keep,
/// each a shell line run inside the tree with relative names (`getfattr`,
/// `getfacl`, `lsattr`, `getcap`, `stat`).
#[allow(dead_code)]
pub const METADATA_VIEWS: [&str; 5] = [
    "getfattr -R -h -d -m - -e hex . 2>/dev/null | grep -v '^$' | sort",
    "getfacl -R -p . 2>/dev/null",
    "lsattr -R -a . 2>/dev/null | grep -v ' \\./\\.\\.$' | sort",
    "getcap -r . 2>/dev/null | sort",
    "stat -c '%n %F %a %u %g %s %t %T %Y.%y' chardev fifo sticky suid sgid owned dir dir/sub | sort",
];

/// Whether every tool the fixture and [`METADATA_VIEWS`] need is here, and
/// we are root; prints why not.
#[allow(dead_code)]
pub fn fixture_possible() -> bool {
    if !is_root() {
        eprintln!("skipped: tier full fixture needs root (chown, trusted.*, chattr +i, mknod)");
        return false;
    }
    for tool in [
        "setfattr", "getfattr", "setfacl", "getfacl", "setcap", "getcap", "chattr", "lsattr",
    ] {
        if !has_tool(tool) {
            eprintln!("skipped: {tool} not installed");
            return false;
        }
    }
    true
}

/// The ids of the snapshots `snap list` shows (its `list.result` fact),
/// oldest first.
#[allow(dead_code)]
pub fn snapshot_ids(env: &Env) -> Vec<String> {
    let r = env.snap(["list"]).ok();
    r.fact("list.result")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Removes the fixture's socket (recorded, not restored) from `src` and
/// puts the directory's mtime back as it was, so a restore compares equal.
#[allow(dead_code)]
pub fn remove_fixture_socket(src: &Path) {
    let md = std::fs::metadata(src).unwrap();
    std::fs::remove_file(src.join("sock")).unwrap();
    sh(&format!(
        "touch -m -d @{}.{:09} '{}'",
        md.mtime(),
        md.mtime_nsec(),
        src.display()
    ));
}
