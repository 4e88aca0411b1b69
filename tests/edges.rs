//! Promises at the edges (issue 11): hostile or damaged repository files,
//! errors after the commit point, closed stdout, user-named output files,
//! hostile staging directories, untrusted restores, flags a command does
//! not use. Each test runs the real binary with a time limit, so a hang
//! fails it instead of stalling the suite.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn small_tree(src: &Path) {
    fs::create_dir_all(src.join("d/e")).unwrap();
    fs::write(src.join("a.txt"), b"alpha\n").unwrap();
    fs::write(src.join("d/b.gz"), pseudo_random(3000, 1)).unwrap();
    fs::write(src.join("d/e/c"), pseudo_random(70_000, 2)).unwrap();
}

/// Runs `cmd` for at most `limit`; `None` when it had to be killed.
fn run_limited(mut cmd: Command, limit: Duration) -> Option<std::process::Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        if t.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn snap_cmd(env: &Env, args: &[&OsStr]) -> Command {
    let mut c = Command::new(snap_bin());
    c.arg("--repo").arg(&env.repo).args(args);
    c
}

fn one_file(dir: &Path, sub: &str) -> std::path::PathBuf {
    let mut found = Vec::new();
    for e in fs::read_dir(dir.join(sub)).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            for f in fs::read_dir(&p).unwrap() {
                found.push(f.unwrap().path());
            }
        } else {
            found.push(p);
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

/// A format-2 repository with one snapshot: one pack, one index file,
/// one entries file (format 3 keeps the entries in a pack of their own;
/// the files these tests damage are read by the same code in both).
fn backed_up() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    init_format2(&env);
    let src = env.path("src");
    small_tree(&src);
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    (env, src)
}

#[test]
fn fifo_or_huge_sparse_repository_files_are_integrity_errors_not_hangs() {
    for (sub, what) in [
        ("snapshots", "fifo"),
        ("index", "fifo"),
        ("entries", "fifo"),
        ("snapshots", "sparse"),
        ("index", "sparse"),
        ("entries", "sparse"),
    ] {
        let (env, _) = backed_up();
        let f = one_file(&env.repo, sub);
        fs::remove_file(&f).unwrap();
        if what == "fifo" {
            sh(&format!("mkfifo '{}'", f.display()));
        } else {
            fs::File::create(&f).unwrap().set_len(64 << 30).unwrap();
        }
        let target = env.path("out");
        for args in [
            vec![OsStr::new("list")],
            vec![OsStr::new("check")],
            vec![OsStr::new("ls"), OsStr::new("latest")],
            vec![
                OsStr::new("restore"),
                OsStr::new("latest"),
                OsStr::new("--target"),
                target.as_os_str(),
            ],
        ] {
            let out = run_limited(snap_cmd(&env, &args), Duration::from_secs(60))
                .unwrap_or_else(|| panic!("{what} {sub}: {args:?} hung"));
            let code = out.status.code().unwrap_or(-1);
            let stderr = String::from_utf8_lossy(&out.stderr);
            // A damaged record is left out (list goes on: 0); everything
            // else refuses with E_INTEGRITY, or finds no snapshot (60).
            assert!(
                [0, 60, 90].contains(&code),
                "{what} {sub}: {args:?} exited {code}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
            if args[0] == "check" {
                assert_eq!(code, 90, "{what} {sub}: check: {stderr}");
            }
            assert!(!target.exists());
        }
    }
}

#[test]
fn one_damaged_snapshot_record_does_not_hide_the_others() {
    let (env, src) = backed_up();
    let first = one_file(&env.repo, "snapshots");
    fs::write(src.join("new"), b"more").unwrap();
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    // Truncate the older record.
    let bytes = fs::read(&first).unwrap();
    fs::write(&first, &bytes[..bytes.len() / 2]).unwrap();
    let l = env.snap(["list"]).ok();
    assert_eq!(l.fact("list.result")["snapshots"], 1);
    let d = l.fact("repo.damaged");
    assert_eq!(d["decision"], "warn");
    assert_eq!(d["path"], first.display().to_string());
    env.restore_latest(env.path("out")).ok();
    assert_eq!(fs::read(env.path("out/new")).unwrap(), b"more");
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let c = env.snap(["check"]);
    assert_eq!(c.code, 90, "{}", c.stderr);
    assert!(
        c.stderr.contains(&first.display().to_string()),
        "{}",
        c.stderr
    );
}

#[test]
fn an_index_offset_near_u64_max_fails_restore_with_integrity_and_no_hang() {
    let (env, _) = backed_up();
    let idx = one_file(&env.repo, "index");
    let text = fs::read_to_string(&idx).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["packs"][0]["blobs"][0]["offset"] = serde_json::json!(u64::MAX - 5);
    let bytes = serde_json::to_vec(&v).unwrap();
    let id = blake3::hash(&bytes).to_hex().to_string();
    fs::remove_file(&idx).unwrap();
    fs::write(env.repo.join(format!("index/{id}.idx")), bytes).unwrap();
    let target = env.path("out");
    let out = run_limited(
        snap_cmd(
            &env,
            &[
                OsStr::new("restore"),
                OsStr::new("latest"),
                OsStr::new("--target"),
                target.as_os_str(),
            ],
        ),
        Duration::from_secs(60),
    )
    .expect("restore hung");
    assert_eq!(
        out.status.code(),
        Some(90),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists());
    assert_eq!(staging_dirs(env.dir.path()), 0);
}

#[test]
fn ls_of_a_year_10000_mtime_and_ls_into_a_closed_pipe() {
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    for i in 0..300 {
        fs::write(src.join(format!("f{i:03}")), b"x").unwrap();
    }
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    if is_root() {
        // ext4 stops at 2446; tmpfs keeps year 10000.
        let tmp = env.path("tmpfs");
        fs::create_dir(&tmp).unwrap();
        sh(&format!("mount -t tmpfs tmpfs '{}'", tmp.display()));
        fs::write(tmp.join("far"), b"x").unwrap();
        sh(&format!(
            "touch -d @253402300800 '{}'",
            tmp.join("far").display()
        ));
        let r = env.snap([OsStr::new("backup"), tmp.as_os_str()]);
        sh(&format!("umount '{}'", tmp.display()));
        r.ok();
        let ls = env.snap(["ls", "latest"]).ok();
        assert!(
            ls.stdout.contains("10000-01-01T00:00:00Z far"),
            "{}",
            ls.stdout
        );
    } else {
        eprintln!("part skipped: a year-10000 mtime needs a tmpfs mount (root)");
    }
    // `snap ls latest | head -1`: quiet, 141, no panic.
    let first = env.snap(["list"]).ok();
    let id = first
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let mut child = snap_cmd(&env, &[OsStr::new("ls"), OsStr::new(&id)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn an_explicit_repository_must_exist_and_init_refuses_a_non_empty_directory() {
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    let typo = env.path("typo");
    let mut cmd = Command::new(snap_bin());
    cmd.arg("--repo").arg(&typo);
    let r = env.run_cmd(cmd, [OsStr::new("backup"), src.as_os_str()]);
    assert_eq!(r.code, 61, "{}", r.stderr);
    assert_eq!(r.fact("command.failed")["error_id"], "E_REPO_MISSING");
    assert!(!typo.exists());
    let full = env.path("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("precious"), b"x").unwrap();
    let mut cmd = Command::new(snap_bin());
    cmd.arg("--repo").arg(&full);
    let r = env.run_cmd(cmd, ["init"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(fs::read_dir(&full).unwrap().count(), 1);
    // The default location is created on first use, with a line saying so.
    let mut cmd = Command::new(snap_bin());
    cmd.env_remove("SNAP_REPO")
        .env("XDG_DATA_HOME", env.path("xdg"));
    let r = env
        .run_cmd(cmd, [OsStr::new("backup"), src.as_os_str()])
        .ok();
    assert!(r.stdout.contains("(the default location)"), "{}", r.stdout);
    r.fact("repo.init");
}

#[test]
fn concurrent_first_backups_into_the_default_location_all_commit_one_repository() {
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    let xdg = env.path("xdg");
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(snap_bin())
                .env_remove("SNAP_REPO")
                .env("XDG_DATA_HOME", &xdg)
                .arg("--facts")
                .arg(env.path(&format!("c{i}.jsonl")))
                .args([
                    OsStr::new("backup"),
                    OsStr::new("--lock-wait"),
                    OsStr::new("60000"),
                ])
                .arg(&src)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..8 {
        for f in read_facts(&env.path(&format!("c{i}.jsonl"))) {
            if f["event"] == "repo.init" {
                ids.insert(f["repo_id"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(fs::read_dir(xdg.join("snap/snapshots")).unwrap().count(), 8);
}

#[test]
fn restore_refuses_backup_only_flags_and_absolute_excludes_are_paths_under_the_source() {
    let (env, src) = backed_up();
    let r = env.snap([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        env.path("out").as_os_str(),
        OsStr::new("--exclude"),
        OsStr::new("*.gz"),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!env.path("out").exists());
    // An absolute path under the source is taken as that path (restic's
    // way); the source itself is refused.
    let abs = src.join("d");
    env.snap([
        OsStr::new("backup"),
        OsStr::new("--exclude"),
        abs.as_os_str(),
        src.as_os_str(),
    ])
    .ok();
    env.restore_latest(env.path("out-abs")).ok();
    assert!(!env.path("out-abs/d").exists());
    let r = env.snap([
        OsStr::new("backup"),
        OsStr::new("--exclude"),
        src.as_os_str(),
        src.as_os_str(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("itself"), "{}", r.stderr);
    // A trailing `/` matches directories only: the directory d/e is left
    // out, the file named e is kept.
    fs::write(src.join("e"), b"a file named e").unwrap();
    env.snap([
        OsStr::new("backup"),
        OsStr::new("--exclude"),
        OsStr::new("e/"),
        src.as_os_str(),
    ])
    .ok();
    env.restore_latest(env.path("out2")).ok();
    assert_eq!(fs::read(env.path("out2/e")).unwrap(), b"a file named e");
    assert!(!env.path("out2/d/e").exists());
    assert!(env.path("out2/d/b.gz").exists());
}

#[test]
fn facts_file_and_schema_out_refuse_symlinks_and_fifos() {
    let env = Env::new();
    let victim = env.path("victim");
    fs::write(&victim, b"keep").unwrap();
    let link = env.path("facts-link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let out = Command::new(snap_bin())
        .arg("--facts")
        .arg(&link)
        .args(["policy", "show"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(fs::read(&victim).unwrap(), b"keep");
    let fifo = env.path("facts-fifo");
    sh(&format!("mkfifo '{}'", fifo.display()));
    let mut c = Command::new(snap_bin());
    c.arg("--facts").arg(&fifo).args(["policy", "show"]);
    let out = run_limited(c, Duration::from_secs(30)).expect("--facts FIFO hung");
    assert_ne!(out.status.code(), Some(0));
    let dir = env.path("schemas");
    fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("fact.schema.json")).unwrap();
    let out = Command::new(snap_bin())
        .arg("schema")
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(fs::read(&victim).unwrap(), b"keep");
}

#[test]
fn a_signal_ends_a_command_blocked_where_nothing_polls_the_flag() {
    if !has_tool("strace") {
        eprintln!("skipped: needs strace to hold a system call");
        return;
    }
    let (env, _) = backed_up();
    // `snap list` is held for 60 s inside its getdents64 (strace's delay
    // injection), where no code can look at the signal flag.
    let err_path = env.path("stderr");
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=getdents64"])
        .args(["-e", "inject=getdents64:delay_enter=60000000"])
        .arg(snap_bin())
        .arg("--repo")
        .arg(&env.repo)
        .arg("list")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // The tracee: strace's only child.
    let pid =
        fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id())).unwrap();
    let pid = pid
        .split_whitespace()
        .next()
        .expect("snap runs under strace")
        .to_owned();
    sh(&format!("kill -TERM {pid}"));
    let t = Instant::now();
    // The watchdog gives up on the held call and exits (the exit itself
    // completes once strace lets go of the thread it holds).
    while !fs::read_to_string(&err_path)
        .unwrap()
        .contains("E_INTERRUPTED")
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "SIGTERM did not end the command"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().ok();
    child.wait().unwrap();
    while Path::new(&format!("/proc/{pid}/exe")).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "snap is still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn untrusted_restore_caps_the_tier_and_clears_set_id_bits() {
    if !is_root() {
        eprintln!("skipped: set-user-ID root files and device nodes need root");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("shell"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("shell"), fs::Permissions::from_mode(0o4755)).unwrap();
    sh(&format!("mknod '{}' c 1 2", src.join("kmem").display()));
    env.snap([
        OsStr::new("backup"),
        OsStr::new("--tier"),
        OsStr::new("full"),
        src.as_os_str(),
    ])
    .ok();
    let trusting = env.restore_latest(env.path("t")).ok();
    let s = trusting.fact("restore.summary");
    assert_eq!(
        (s["tier"].as_str(), s["tier_source"].as_str()),
        (Some("full"), Some("snapshot"))
    );
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert_eq!(
        fs::metadata(env.path("t/shell")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert!(fs::symlink_metadata(env.path("t/kmem"))
        .unwrap()
        .file_type()
        .is_char_device());
    let u = env
        .snap([
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--untrusted"),
            OsStr::new("--target"),
            env.path("u").as_os_str(),
        ])
        .ok();
    let s = u.fact("restore.summary");
    assert_eq!(
        (s["tier"].as_str(), s["tier_source"].as_str()),
        (Some("extended"), Some("untrusted"))
    );
    assert_eq!(
        fs::metadata(env.path("u/shell")).unwrap().mode() & 0o7777,
        0o755
    );
    assert!(
        fs::symlink_metadata(env.path("u/kmem")).is_err(),
        "a device node was created"
    );
}

#[test]
fn another_users_deep_staging_directory_does_not_block_a_restore() {
    if !is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let (env, _) = backed_up();
    let parent = env.path("shared");
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(&parent).unwrap();
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o1777)).unwrap();
    // 30,000 levels, made as nobody.
    if !Path::new("/usr/bin/perl").exists() {
        eprintln!("skipped: needs /usr/bin/perl to nest 30,000 directories");
        return;
    }
    // (A shell's `cd` stops at PATH_MAX; a relative chdir does not.)
    let script = format!(
        "chdir {:?} or die; mkdir '.snap-restore-x' or die; chdir '.snap-restore-x' or die; for (1..30000) {{ mkdir 'a' or die; chdir 'a' or die }}",
        parent.display().to_string()
    );
    let st = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/perl",
            "-e",
            &script,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let r = env.restore_latest(parent.join("T")).ok();
    assert!(parent.join("T/a.txt").exists());
    assert!(
        parent.join(".snap-restore-x").exists(),
        "another user's directory was removed"
    );
    assert!(r.stderr.contains("another user owns it"), "{}", r.stderr);
    // std's recursive remove_dir_all (the TempDir's drop) would overflow
    // its stack on this tree; rm(1) walks it without recursion.
    sh(&format!(
        "rm -rf '{}'",
        parent.join(".snap-restore-x").display()
    ));
}

#[test]
fn an_fsync_error_after_the_commit_point_says_the_snapshot_was_committed() {
    if !has_tool("strace") {
        eprintln!("skipped: needs strace for fault injection");
        return;
    }
    let (env, src) = backed_up();
    fs::write(src.join("changed"), b"new").unwrap();
    let snaps = env.repo.join("snapshots");
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=fsync",
            "-e",
            "inject=fsync:error=ENOSPC:when=1",
            "-P",
        ])
        .arg(&snaps)
        .arg(snap_bin())
        .arg("--repo")
        .arg(&env.repo)
        .arg("backup")
        .arg(&src)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("E_UNCONFIRMED") && stderr.contains("was committed"),
        "{stderr}"
    );
    let l = env.snap(["list"]).ok();
    assert_eq!(l.fact("list.result")["snapshots"], 2);
    env.restore_latest(env.path("out")).ok();
    assert_eq!(fs::read(env.path("out/changed")).unwrap(), b"new");
}

#[test]
fn check_names_an_unopenable_pack_and_goes_on() {
    let (env, src) = backed_up();
    fs::write(src.join("more"), pseudo_random(50_000, 9)).unwrap();
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let mut packs = Vec::new();
    for d in fs::read_dir(env.repo.join("packs")).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            packs.push(f.unwrap().path());
        }
    }
    packs.sort();
    assert_eq!(packs.len(), 2, "{packs:?}");
    fs::remove_file(&packs[0]).unwrap();
    sh(&format!("mkfifo '{}'", packs[0].display()));
    let out = run_limited(
        snap_cmd(&env, &[OsStr::new("check"), OsStr::new("--read-data")]),
        Duration::from_secs(60),
    )
    .expect("check hung on a FIFO pack");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(90), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: cannot open", packs[0].display())),
        "{stderr}"
    );
    // The check ran to its end (an aborted one prints no summary line).
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("checked ") && stdout.contains("2 packs"),
        "{stdout}"
    );
}

#[test]
fn a_target_parent_others_can_write_is_a_preflight_warning() {
    let (env, _) = backed_up();
    let shared = env.path("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let r = env.restore_latest(shared.join("T")).ok();
    let c = r
        .facts
        .iter()
        .find(|f| f["event"] == "preflight.check" && f["check"] == "target_parent")
        .expect("target_parent check");
    assert_eq!(c["result"], "warn", "{c}");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let r = env.restore_latest(shared.join("T2")).ok();
    let c = r
        .facts
        .iter()
        .find(|f| f["event"] == "preflight.check" && f["check"] == "target_parent")
        .expect("target_parent check");
    assert_eq!(c["result"], "pass", "{c}");
}

#[test]
fn a_failed_keep_old_rename_leaves_the_old_tree_where_no_restore_removes_it() {
    if !has_tool("strace") {
        eprintln!("skipped: needs strace for fault injection");
        return;
    }
    let (env, _) = backed_up();
    let target = env.path("live");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("old-file"), b"old").unwrap();
    // renameat2 calls: 1 the exchange, 2 the move to --keep-old (failed
    // here), 3 the move aside.
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=renameat2"])
        .args(["-e", "inject=renameat2:error=EIO:when=2"])
        .arg(snap_bin())
        .arg("--repo")
        .arg(&env.repo)
        .args(["restore", "latest", "--replace", "--keep-old"])
        .arg(env.path("kept"))
        .arg("--target")
        .arg(&target)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("E_UNCONFIRMED") && stderr.contains(".snap-old-"),
        "{stderr}"
    );
    assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"alpha\n");
    let aside: Vec<_> = fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".snap-old-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(fs::read(aside[0].join("old-file")).unwrap(), b"old");
    // The next restore beside the target leaves it alone.
    env.restore_latest(env.path("other")).ok();
    assert_eq!(fs::read(aside[0].join("old-file")).unwrap(), b"old");
}

#[test]
fn a_writeback_error_seen_by_the_flusher_fails_the_restore() {
    if !has_tool("strace") {
        eprintln!("skipped: needs strace for fault injection");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    for d in 0..30 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            fs::write(src.join(format!("d{d}/f{f}")), pseudo_random(2000, f)).unwrap();
        }
    }
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let target = env.path("out");
    // The flusher thread's second syncfs fails (strace counts calls per
    // thread, so the main thread's one final syncfs is not hit): a
    // writeback error is reported once per open file, so the run must not
    // report success on the strength of the final syncfs.
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=syncfs"])
        .args(["-e", "inject=syncfs:error=EIO:when=2"])
        .arg(snap_bin())
        .arg("--repo")
        .arg(&env.repo)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("syncfs"), "{stderr}");
    assert!(!target.exists());
    assert_eq!(staging_dirs(env.dir.path()), 0);
}

#[test]
fn a_full_target_filesystem_is_e_no_space_and_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let (env, _) = backed_up();
    let mnt = env.path("mnt");
    fs::create_dir(&mnt).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=64m,nr_inodes=5 tmpfs '{}'",
        mnt.display()
    ));
    let r = env.restore_latest(mnt.join("T"));
    let listed = fs::read_dir(&mnt).unwrap().count();
    sh(&format!("umount '{}'", mnt.display()));
    assert_eq!(r.code, 80, "{}", r.stderr);
    assert_eq!(r.fact("command.failed")["error_id"], "E_NO_SPACE");
    assert_eq!(listed, 0, "the staging tree was left");
}

#[test]
fn a_source_file_swapped_for_a_fifo_after_the_scan_is_refused_not_waited_on() {
    // The walker reads `aa` (large) before it opens `zz`; the scan has
    // stat'ed both long before. `zz` becomes a FIFO held open for writing
    // (so a blocking read would wait forever) while `aa` is read.
    for size in [200usize << 20, 600 << 20] {
        let env = Env::new();
        let src = env.path("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("aa"), pseudo_random(size, 5)).unwrap();
        fs::write(src.join("zz"), b"regular").unwrap();
        env.snap(["init"]).ok();
        let mut child = snap_cmd(&env, &[OsStr::new("backup"), src.as_os_str()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let zz = src.join("zz");
        fs::remove_file(&zz).unwrap();
        sh(&format!("mkfifo '{}'", zz.display()));
        // O_RDWR opens a FIFO without waiting and keeps a writer on it.
        let holder = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&zz)
            .unwrap();
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "backup waits on a FIFO swapped in after the scan"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(holder);
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        if status.code() == Some(3) {
            assert!(
                stderr.contains("zz") && stderr.contains("changed since"),
                "{stderr}"
            );
            let ls = env.snap(["ls", "latest"]).ok();
            assert!(!ls.stdout.contains(" zz"), "{}", ls.stdout);
            return;
        }
        // zz was opened before the swap: try again with more to read first.
        assert_eq!(status.code(), Some(0), "{stderr}");
    }
    panic!("the swap never landed between the scan and the open");
}

#[test]
fn a_usage_error_of_check_names_the_command_in_its_fact() {
    let env = Env::new();
    let r = env.snap(["check", "--no-such-flag"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let f = r.fact("command.failed");
    assert_eq!(
        (f["command"].as_str(), f["error_id"].as_str()),
        (Some("check"), Some("E_USAGE"))
    );
}

#[test]
fn a_racer_swapping_the_staging_directory_never_gets_its_tree_placed() {
    let (env, _) = backed_up();
    let shared = env.path("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let decoy = env.path("decoy");
    fs::create_dir(&decoy).unwrap();
    fs::write(decoy.join("precious"), b"keep").unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut placed, mut refused) = (0, 0);
    std::thread::scope(|s| {
        // The racer: whenever a staging directory appears, move it away
        // and put a symlink to the decoy in its place.
        s.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for e in fs::read_dir(&shared).unwrap().flatten() {
                    let name = e.file_name();
                    // Real directories only (not its own symlinks).
                    if name.to_string_lossy().starts_with(".snap-restore-")
                        && e.file_type().is_ok_and(|t| t.is_dir())
                    {
                        n += 1;
                        let away = shared.join(format!("stolen-{n}"));
                        if fs::rename(e.path(), &away).is_ok() {
                            let _ = std::os::unix::fs::symlink(&decoy, e.path());
                        }
                    }
                }
            }
        });
        // The racer stops however the rounds end (a failed assertion
        // included), or the scope would wait for it forever.
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        for i in 0..30 {
            let target = shared.join(format!("T{i}"));
            // Odd rounds replace an existing tree (RENAME_EXCHANGE).
            let replace = i % 2 == 1;
            let r = if replace {
                fs::create_dir(&target).unwrap();
                fs::write(target.join("old"), b"old tree").unwrap();
                env.snap([
                    OsStr::new("restore"),
                    OsStr::new("latest"),
                    OsStr::new("--replace"),
                    OsStr::new("--target"),
                    target.as_os_str(),
                ])
            } else {
                env.restore_latest(&target)
            };
            match r.code {
                0 => {
                    let st = fs::symlink_metadata(&target).unwrap();
                    assert!(
                        st.is_dir(),
                        "round {i}: the target is not the restored tree"
                    );
                    assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"alpha\n");
                    placed += 1;
                }
                40 => {
                    assert!(
                        r.stderr.contains("another process replaced"),
                        "{}",
                        r.stderr
                    );
                    if replace {
                        // The swap was undone and nothing was removed by
                        // name: the old tree is back at the target, or
                        // wherever the racer (which can rename anything in
                        // this directory) moved it once it sat under the
                        // staging name.
                        let kept = std::iter::once(target.clone())
                            .chain(fs::read_dir(&shared).unwrap().flatten().map(|e| e.path()))
                            .any(|p| fs::read(p.join("old")).is_ok_and(|b| b == b"old tree"));
                        assert!(kept, "round {i}: the old tree is gone");
                    }
                    refused += 1;
                }
                // The racer took the staging directory before the build
                // opened it (or mid-build): a failure, never success.
                c => assert!([1, 70].contains(&c), "round {i}: exit {c}: {}", r.stderr),
            }
        }
    });
    eprintln!("{placed} restores placed, {refused} refused after a swap");
    // What a refused restore built was emptied through its descriptor,
    // wherever the racer moved it.
    for e in fs::read_dir(&shared).unwrap().flatten() {
        // (Not the symlinks: the racer may rename one it planted, once our
        // exchange has put it back under the staging name.)
        if e.file_name().to_string_lossy().starts_with("stolen-")
            && e.file_type().is_ok_and(|t| t.is_dir())
            && !e.path().join("old").exists()
        {
            let left: Vec<_> = fs::read_dir(e.path())
                .unwrap()
                .map(|x| x.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "{:?} holds {left:?}", e.path());
        }
    }
    assert_eq!(fs::read(decoy.join("precious")).unwrap(), b"keep");
    assert_eq!(
        fs::read_dir(&decoy).unwrap().count(),
        1,
        "the decoy was written to"
    );
}

#[test]
fn a_sparse_pack_whose_trailer_claims_a_huge_footer_is_refused_without_allocating_it() {
    let (env, _) = backed_up();
    let pack = one_file(&env.repo, "packs");
    let len: u64 = 64 << 30;
    let count: u32 = 1_000_000_000;
    let footer_offset = len - 24 - u64::from(count) * 44;
    let f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&pack)
        .unwrap();
    f.set_len(len).unwrap();
    let mut trailer = Vec::new();
    trailer.extend_from_slice(&count.to_le_bytes());
    trailer.extend_from_slice(&0u32.to_le_bytes());
    trailer.extend_from_slice(&footer_offset.to_le_bytes());
    trailer.extend_from_slice(b"SNAPPAK1");
    std::os::unix::fs::FileExt::write_all_at(&f, &trailer, len - 24).unwrap();
    drop(f);
    let out = run_limited(
        snap_cmd(&env, &[OsStr::new("check"), OsStr::new("--read-data")]),
        Duration::from_secs(60),
    )
    .expect("check hung");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(90), "{stderr}");
    assert!(stderr.contains("a footer may hold"), "{stderr}");
}

#[test]
fn an_fsync_error_on_the_target_parent_says_the_restore_was_placed() {
    if !has_tool("strace") {
        eprintln!("skipped: needs strace for fault injection");
        return;
    }
    let (env, _) = backed_up();
    let parent = env.path("p");
    fs::create_dir(&parent).unwrap();
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync"])
        .args(["-e", "inject=fsync:error=EIO:when=1", "-P"])
        .arg(&parent)
        .arg(snap_bin())
        .arg("--repo")
        .arg(&env.repo)
        .args(["restore", "latest", "--target"])
        .arg(parent.join("T"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("was restored into"), "{stderr}");
    assert_eq!(fs::read(parent.join("T/a.txt")).unwrap(), b"alpha\n");
}

#[test]
fn list_waits_for_the_lock_as_long_as_lock_wait_says() {
    let (env, _) = backed_up();
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(env.repo.join("lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let r = env.snap(["list", "--lock-wait", "300"]);
    let waited = t.elapsed();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(r.code, 30, "{}", r.stderr);
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
}

/// An owner the tier keeps that restore cannot apply (chown refused:
/// EPERM, as NFS with root squashing, or EINVAL for an id a user namespace
/// does not map) is `E_OWNERSHIP`, exit 20, and no target appears.
#[test]
fn an_owner_the_policy_requires_that_cannot_be_applied_is_e_ownership() {
    if !is_root() || !has_tool("strace") {
        eprintln!("skipped: needs root (chown to another user) and strace");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    std::os::unix::fs::chown(src.join("a.txt"), Some(12345), Some(12346)).unwrap();
    env.snap([
        OsStr::new("backup"),
        OsStr::new("--tier"),
        OsStr::new("extended"),
        src.as_os_str(),
    ])
    .ok();
    let target = env.path("t");
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=fchown,fchownat",
    ])
    .args(["-e", "inject=fchown,fchownat:error=EPERM"])
    .arg(snap_bin())
    .arg("--repo")
    .arg(&env.repo);
    let r = env.run_cmd(
        cmd,
        [
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            target.as_os_str(),
        ],
    );
    assert_eq!(r.code, 20, "{}", r.stderr);
    assert!(
        r.stderr.contains("[E_OWNERSHIP]") && r.stderr.contains("12345:12346"),
        "{}",
        r.stderr
    );
    assert_eq!(r.fact("command.failed")["error_id"], "E_OWNERSHIP");
    assert!(!target.exists(), "no target after a failed restore");
    assert_eq!(staging_dirs(env.dir.path()), 0);
    // Without the fault the same restore applies the owner.
    env.restore_latest(&target).ok();
    let st = fs::symlink_metadata(target.join("a.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((st.uid(), st.gid()), (12345, 12346));
}
