//! The I/O backend: io_uring where the kernel allows it, the blocking
//! fallback where it does not. As root the test disables io_uring for real
//! (`kernel.io_uring_disabled = 2`, so `io_uring_setup(2)` fails with
//! `EPERM`, as under Docker's seccomp profile) and shows snap choosing the
//! fallback, naming it in the facts and round-tripping a tree; `SNAP_IO`
//! forces either backend.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// The tests of this binary run one at a time: one of them disables
/// io_uring for the whole machine while it runs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sets `kernel.io_uring_disabled`, restoring the old value on drop.
struct Disabled(String);

impl Disabled {
    fn set(v: &str) -> Disabled {
        let old = fs::read_to_string(SYSCTL).unwrap().trim().to_owned();
        fs::write(SYSCTL, v).unwrap();
        Disabled(old)
    }
}

impl Drop for Disabled {
    fn drop(&mut self) {
        if let Err(e) = fs::write(SYSCTL, &self.0) {
            eprintln!("could not restore {SYSCTL}: {e}");
        }
    }
}

/// `snap ARGS` with `SNAP_IO` set to `io` (or unset for `None`).
fn snap_io(env: &Env, io: Option<&str>, args: &[&OsStr]) -> Run {
    let mut c = Command::new(snap_bin());
    match io {
        Some(v) => c.env("SNAP_IO", v),
        None => c.env_remove("SNAP_IO"),
    };
    c.arg("--repo").arg(&env.repo);
    env.run_cmd(c, args)
}

fn backend_of(run: &Run, event: &str) -> String {
    run.fact(event)["io_backend"].as_str().unwrap().to_owned()
}

fn preflight_detail(run: &Run) -> String {
    let c: &Value = run
        .facts
        .iter()
        .find(|f| f["event"] == "preflight.check" && f["check"] == "io_backend")
        .unwrap_or_else(|| panic!("no io_backend check in {:?}", run.facts));
    assert_eq!(c["result"], "pass", "{c}");
    c["detail"].as_str().unwrap().to_owned()
}

fn round_trip(env: &Env, io: Option<&str>, src: &Path, name: &str) -> (Run, Run) {
    let b = snap_io(env, io, &[OsStr::new("backup"), src.as_os_str()]).ok();
    let out = env.path(name);
    let r = snap_io(
        env,
        io,
        &[
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            out.as_os_str(),
        ],
    )
    .ok();
    assert_same_tree(src, &out, false);
    (b, r)
}

fn tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("small"), b"hello\n").unwrap();
    fs::write(src.join("a/b/big"), pseudo_random(5 << 20, 3)).unwrap();
    fs::write(src.join("a/empty"), b"").unwrap();
    std::os::unix::fs::symlink("../small", src.join("a/link")).unwrap();
    src
}

#[test]
fn snap_io_chooses_the_backend_and_the_facts_name_it() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let env = Env::new();
    let src = tree(&env);
    env.snap(["init"]).ok();
    let (b, r) = round_trip(&env, Some("fallback"), &src, "out-fallback");
    assert_eq!(backend_of(&b, "backup.summary"), "fallback");
    assert_eq!(backend_of(&r, "restore.summary"), "fallback");
    assert_eq!(preflight_detail(&b), "fallback: SNAP_IO=fallback");
    let c = snap_io(
        &env,
        Some("fallback"),
        &[OsStr::new("check"), OsStr::new("--read-data")],
    )
    .ok();
    assert_eq!(backend_of(&c, "check.result"), "fallback");
    // Any other value is a usage error, before anything is read.
    let bad = snap_io(
        &env,
        Some("epoll"),
        &[OsStr::new("backup"), src.as_os_str()],
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("SNAP_IO"), "{}", bad.stderr);
    // Where io_uring works, auto and uring use it.
    let works = fs::read_to_string(SYSCTL).map_or(true, |v| v.trim() == "0");
    if works {
        fs::write(src.join("small"), b"changed\n").unwrap();
        let (b, _) = round_trip(&env, None, &src, "out-auto");
        assert_eq!(backend_of(&b, "backup.summary"), "io_uring");
        assert_eq!(preflight_detail(&b), "io_uring: io_uring_setup succeeded");
        let b = snap_io(
            &env,
            Some("uring"),
            &[OsStr::new("backup"), src.as_os_str()],
        )
        .ok();
        assert_eq!(backend_of(&b, "backup.summary"), "io_uring");
    } else {
        eprintln!("io_uring part skipped: {SYSCTL} is not 0");
    }
}

#[test]
fn with_io_uring_disabled_snap_falls_back_and_forcing_it_is_e_io_uring() {
    if !is_root() || !Path::new(SYSCTL).exists() {
        eprintln!("skipped: needs root and {SYSCTL}");
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let env = Env::new();
    let src = tree(&env);
    env.snap(["init"]).ok();
    let _off = Disabled::set("2");
    let (b, r) = round_trip(&env, None, &src, "out");
    assert_eq!(backend_of(&b, "backup.summary"), "fallback");
    assert_eq!(backend_of(&r, "restore.summary"), "fallback");
    let why = preflight_detail(&b);
    assert!(
        why.starts_with("fallback: io_uring_setup failed") && why.contains("io_uring_disabled = 2"),
        "{why}"
    );
    let before: Vec<_> = lstat_tree(&env.repo).into_keys().collect();
    let forced = snap_io(
        &env,
        Some("uring"),
        &[OsStr::new("backup"), src.as_os_str()],
    );
    assert_eq!(forced.code, 12, "{}", forced.stderr);
    assert!(forced.stderr.contains("E_IO_URING"), "{}", forced.stderr);
    let f = forced.fact("command.failed");
    assert_eq!(f["error_id"], "E_IO_URING");
    assert_eq!(
        lstat_tree(&env.repo).into_keys().collect::<Vec<_>>(),
        before,
        "a refused run wrote to the repository"
    );
    env.snap(["check", "--read-data"]).ok();
}
