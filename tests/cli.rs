//! The CLI's flags, tiers, default repository, schemas, locking and hostile
//! repository contents, each run through the real binary.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

fn small_tree(root: &Path) {
    fs::create_dir_all(root.join("keep/deep")).unwrap();
    fs::create_dir_all(root.join("cache/x")).unwrap();
    fs::create_dir(root.join("emptydir")).unwrap();
    fs::write(root.join("keep/a.txt"), b"alpha").unwrap();
    fs::write(root.join("keep/deep/b.log"), b"beta").unwrap();
    fs::write(root.join("keep/deep/c.txt"), b"gamma").unwrap();
    fs::write(root.join("cache/x/junk"), b"junk").unwrap();
    fs::write(root.join("top.log"), b"log").unwrap();
    symlink("keep/a.txt", root.join("link")).unwrap();
}

fn entries_of(env: &Env, snapshot: &str) -> Vec<serde_json::Value> {
    let rec: serde_json::Value = serde_json::from_slice(
        &fs::read(env.repo.join(format!("snapshots/{snapshot}.json"))).unwrap(),
    )
    .unwrap();
    let text = String::from_utf8(entries_text(&env.repo, &rec)).unwrap();
    let validator = {
        let schema: serde_json::Value = serde_json::from_slice(
            &fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/sidecar.schema.json"))
                .unwrap(),
        )
        .unwrap();
        jsonschema::validator_for(&schema).unwrap()
    };
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(
                validator.is_valid(&v),
                "sidecar record does not validate: {v}"
            );
            assert_eq!(v["v"], 2);
            v
        })
        .collect()
}

#[test]
fn committed_schemas_match_the_generated_ones() {
    let env = Env::new();
    let out = env.path("schemas");
    let r = env
        .snap([OsStr::new("schema"), OsStr::new("--out"), out.as_os_str()])
        .ok();
    let files = r.fact("schema.written")["files"]
        .as_array()
        .unwrap()
        .clone();
    assert!(files.len() >= 6);
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    for f in files {
        let name = f.as_str().unwrap();
        let generated = fs::read_to_string(out.join(name)).unwrap();
        let stored = fs::read_to_string(committed.join(name)).unwrap_or_else(|_| {
            panic!("schemas/{name} is not committed; run `snap schema --out schemas`")
        });
        assert!(
            generated == stored,
            "schemas/{name} drifted from the Rust types; run `snap schema --out schemas`"
        );
        let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
    }
}

#[test]
fn tiers_keep_exactly_their_fields() {
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    // Directories that hold nothing basic keeps, nested.
    fs::create_dir_all(src.join("emptydir/inner/deeper")).unwrap();
    fs::create_dir(src.join("linkonly")).unwrap();
    std::os::unix::fs::symlink("nowhere", src.join("linkonly/l")).unwrap();
    let basic = env
        .snap([
            OsStr::new("backup"),
            OsStr::new("--tier"),
            OsStr::new("basic"),
            src.as_os_str(),
        ])
        .ok();
    let id = basic.fact("backup.summary")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let recs = entries_of(&env, &id);
    let paths: Vec<&str> = recs.iter().map(|r| r["path"].as_str().unwrap()).collect();
    for empty in [
        "emptydir",
        "emptydir/inner",
        "emptydir/inner/deeper",
        "linkonly",
    ] {
        assert!(
            !paths.contains(&empty),
            "basic keeps no empty directories: {paths:?}"
        );
    }
    let dirs = recs.iter().filter(|r| r["kind"] == "dir").count();
    assert_eq!(basic.fact("backup.summary")["stats"]["dirs"], dirs);
    assert!(
        !paths.contains(&"link"),
        "basic keeps no symlinks: {paths:?}"
    );
    for r in &recs {
        assert!(
            r.get("uid").is_none() && r.get("atime").is_none() && r.get("xattrs").is_none(),
            "{r}"
        );
        assert!(r["mtime"]["nsec"].is_u64());
    }

    let ext = env
        .snap([
            OsStr::new("backup"),
            OsStr::new("--tier"),
            OsStr::new("extended"),
            src.as_os_str(),
        ])
        .ok();
    let id = ext.fact("backup.summary")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let recs = entries_of(&env, &id);
    let link = recs
        .iter()
        .find(|r| r["path"] == "link")
        .expect("extended keeps symlinks");
    assert_eq!(link["kind"], "symlink");
    assert_eq!(link["target"], "keep/a.txt");
    assert!(recs.iter().any(|r| r["path"] == "emptydir"));
    assert!(recs
        .iter()
        .all(|r| r["uid"].is_u64() && r.get("xattrs").is_none()));
}

#[test]
fn full_tier_round_trips_user_xattrs() {
    if !has_tool("setfattr") || !has_tool("getfattr") {
        eprintln!("skipped: setfattr/getfattr (package attr) not installed");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    let f = src.join("keep/a.txt");
    sh(&format!("setfattr -n user.color -v blue '{}'", f.display()));
    sh(&format!(
        "setfattr -n user.bin -v 0x00ff10 '{}'",
        src.join("keep").display()
    ));
    let r = env.snap([
        OsStr::new("backup"),
        OsStr::new("--tier"),
        OsStr::new("full"),
        src.as_os_str(),
    ]);
    if r.code != 0 && r.stderr.contains("Operation not supported") {
        eprintln!("skipped: filesystem without user xattrs");
        return;
    }
    let r = r.ok();
    let id = r.fact("backup.summary")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let recs = entries_of(&env, &id);
    let a = recs.iter().find(|r| r["path"] == "keep/a.txt").unwrap();
    assert_eq!(a["xattrs"]["user.color"], "Ymx1ZQ==");
    let out = env.path("out");
    env.restore_latest(&out).ok();
    let dump = |p: &Path| {
        let o = Command::new("getfattr")
            .args(["-d", "-e", "hex", "-m", "^user\\."])
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(dump(&out.join("keep/a.txt")), dump(&f));
    assert!(
        dump(&out.join("keep")).contains("user.bin=0x00ff10"),
        "{}",
        dump(&out.join("keep"))
    );
    assert_same_tree(&src, &out, false);
}

#[test]
fn excludes_tags_and_subpath_restore() {
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    let r = env
        .snap([
            OsStr::new("backup"),
            OsStr::new("--exclude"),
            OsStr::new("*.log"),
            OsStr::new("--exclude"),
            OsStr::new("cache/**"),
            OsStr::new("--tag"),
            OsStr::new("nightly"),
            OsStr::new("--tag"),
            OsStr::new("etc"),
            src.as_os_str(),
        ])
        .ok();
    let s = r.fact("backup.summary");
    assert_eq!(s["tags"], serde_json::json!(["nightly", "etc"]));
    assert_eq!(
        s["policy"]["excludes"],
        serde_json::json!(["*.log", "cache/**"])
    );
    let id = s["snapshot_id"].as_str().unwrap().to_owned();
    let paths: Vec<String> = entries_of(&env, &id)
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(!paths.iter().any(|p| p.ends_with(".log")), "{paths:?}");
    assert!(!paths.iter().any(|p| p.starts_with("cache/")), "{paths:?}");
    assert!(paths.contains(&"cache".to_owned()) && paths.contains(&"keep/deep/c.txt".to_owned()));
    let list = env.snap(["list"]).ok();
    assert!(list.stdout.contains("nightly,etc"), "{}", list.stdout);

    // --path: the subtree becomes the target.
    let out = env.path("deep");
    let prefix = &id[..10];
    env.snap([
        OsStr::new("restore"),
        OsStr::new(prefix),
        OsStr::new("--target"),
        out.as_os_str(),
        OsStr::new("--path"),
        OsStr::new("keep/deep"),
    ])
    .ok();
    let names: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("c.txt")]);
    assert_eq!(fs::read(out.join("c.txt")).unwrap(), b"gamma");
    let ls = env.snap(["ls", prefix, "keep"]).ok();
    assert_eq!(ls.fact("ls.result")["entries"], 4, "{}", ls.stdout);
    // A path the snapshot does not hold.
    let bad = env.snap([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        env.path("x").as_os_str(),
        OsStr::new("--path"),
        OsStr::new("nope"),
    ]);
    assert_eq!(bad.code, 60, "{}", bad.stderr);
    assert!(!env.path("x").exists());
}

#[test]
fn no_durability_skips_syncs_and_says_so() {
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    let r = env
        .snap([
            OsStr::new("backup"),
            OsStr::new("--no-durability"),
            src.as_os_str(),
        ])
        .ok();
    let s = r.fact("backup.summary");
    assert_eq!(s["backup_durable"], false);
    assert_eq!(s["fsync_count"], 0);
    assert_eq!(s["policy"]["require_backup_durability"], false);
    let d = env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let s = d.fact("backup.summary");
    assert_eq!(s["backup_durable"], true);
    // The snapshot record, index or entries file and the dirs holding them.
    assert!(s["fsync_count"].as_u64().unwrap() >= 4, "{s}");
}

#[test]
fn default_repository_is_under_xdg_data_home() {
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    let data = env.path("xdg");
    let mut cmd = Command::new(snap_bin());
    cmd.env_remove("SNAP_REPO").env("XDG_DATA_HOME", &data);
    let r = env
        .run_cmd(cmd, [OsStr::new("backup"), src.as_os_str()])
        .ok();
    let repo = data.join("snap");
    assert_eq!(r.fact("repo.init")["repo"], repo.display().to_string());
    assert!(repo.join("config.json").is_file());
    let md = fs::metadata(&repo).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o700);
    for e in lstat_tree(&repo).iter() {
        let want = if e.1.kind == "dir" { 0o700 } else { 0o600 };
        assert_eq!(
            e.1.mode,
            want,
            "{} has mode {:o}",
            String::from_utf8_lossy(e.0),
            e.1.mode
        );
    }
    let mut cmd = Command::new(snap_bin());
    cmd.env_remove("SNAP_REPO").env("XDG_DATA_HOME", &data);
    let out = env.path("out");
    env.run_cmd(
        cmd,
        [
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            out.as_os_str(),
        ],
    )
    .ok();
    assert_same_tree(&src, &out, false);
}

#[test]
fn held_lock_times_out_with_e_locking_and_writes_nothing() {
    if !has_tool("flock") {
        eprintln!("skipped: flock(1) not installed");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    env.snap(["init"]).ok();
    // --no-fork: the process we kill is the one holding the lock.
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(env.repo.join("lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = env.snap([
        OsStr::new("backup"),
        OsStr::new("--lock-wait"),
        OsStr::new("400"),
        src.as_os_str(),
    ]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(r.code, 30, "{}", r.stderr);
    assert!(r.stderr.contains("E_LOCKING"));
    let f = r.fact("command.failed");
    assert_eq!(f["error_id"], "E_LOCKING");
    assert!(fs::read_dir(env.repo.join("snapshots"))
        .unwrap()
        .next()
        .is_none());
    assert!(fs::read_dir(env.repo.join("packs"))
        .unwrap()
        .next()
        .is_none());
    let ok = env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    assert_eq!(ok.fact("lock.acquired")["lock_attempts"], 1);
}

#[test]
fn unreadable_file_gives_partial_snapshot_exit_3() {
    // Root reads everything, so run snap as an unprivileged user when root.
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    let secret = src.join("keep/secret");
    fs::write(&secret, b"s3cret").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = Command::new(if is_root() { "setpriv" } else { snap_bin() });
    if is_root() {
        if !has_tool("setpriv") {
            eprintln!("skipped: running as root without setpriv(1) to drop privileges");
            return;
        }
        // The unprivileged user must reach the temp dir and write the repo.
        fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        for p in [
            "src",
            "src/keep",
            "src/keep/deep",
            "src/cache",
            "src/cache/x",
            "src/emptydir",
        ] {
            fs::set_permissions(env.path(p), fs::Permissions::from_mode(0o755)).unwrap();
        }
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            snap_bin(),
        ]);
    }
    cmd.arg("--repo").arg(&env.repo);
    let mut init = Command::new(cmd.get_program());
    init.args(cmd.get_args());
    env.run_cmd(init, [OsStr::new("init")]).ok();
    let r = env.run_cmd(cmd, [OsStr::new("backup"), src.as_os_str()]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("keep/secret") && r.stderr.contains("E_PARTIAL"),
        "{}",
        r.stderr
    );
    let summary = r.fact("backup.summary");
    assert_eq!(
        (summary["error_id"].as_str(), summary["exit_code"].as_i64()),
        (Some("E_PARTIAL"), Some(3))
    );
    let w = r.fact("backup.warning");
    assert_eq!(w["path"], "keep/secret");
    assert_eq!(w["entry_skipped"], true);
    let s = r.fact("backup.summary");
    assert_eq!(s["error_id"], "E_PARTIAL");
    assert_eq!(s["decision"], "warn");
    assert_eq!(s["stats"]["unreadable"], 1);
    assert!(
        fs::read_dir(env.repo.join("snapshots")).unwrap().count() == 1,
        "the snapshot committed"
    );
}

/// Writes a content-addressed file and returns its id.
fn put(dir: &Path, suffix: &str, bytes: &[u8]) -> String {
    let id = blake3::hash(bytes).to_hex().to_string();
    fs::write(dir.join(format!("{id}{suffix}")), bytes).unwrap();
    id
}

#[test]
fn hostile_entry_paths_are_refused_before_anything_is_created() {
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    let r = env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let id = r.fact("backup.summary")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut rec: serde_json::Value =
        serde_json::from_slice(&fs::read(env.repo.join(format!("snapshots/{id}.json"))).unwrap())
            .unwrap();
    // The hostile records below go into entries files (as a format-2
    // snapshot's are, which a format-3 repository reads too).
    rec["entries"].as_object_mut().unwrap().remove("chunks");
    let victim = env.path("victim");
    for (n, hostile) in [
        serde_json::json!({"path": "../victim", "path_b64": null}),
        serde_json::json!({"path": "x", "path_b64": base64_of(b"a/../../victim")}),
        serde_json::json!({"path": victim.display().to_string()}),
        serde_json::json!({"path": "keep/./a.txt"}),
        // A second root record, and an entry whose directory never came.
        serde_json::json!({"path": ""}),
        serde_json::json!({"path": "nodir/f"}),
        // A hard link to the root.
        serde_json::json!({"path": "h", "kind": "hardlink", "link": ""}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut lines = vec![
            serde_json::json!({"v":2,"path":"","kind":"dir","mode":0o755,"mtime":{"sec":0,"nsec":0}}),
        ];
        let mut bad = serde_json::json!({"v":2,"kind":"file","mode":0o644,"mtime":{"sec":0,"nsec":0},"size":0,"chunks":[]});
        for (k, v) in hostile.as_object().unwrap() {
            if !v.is_null() {
                bad[k] = v.clone();
            }
        }
        lines.push(bad);
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let eid = blake3::hash(text.as_bytes()).to_hex().to_string();
        let edir = env.repo.join(format!("entries/{}", &eid[..2]));
        fs::create_dir_all(&edir).unwrap();
        put(&edir, ".jsonl", text.as_bytes());
        rec["entries"]["id"] = eid.clone().into();
        rec["time"] = format!("2999-01-01T00:00:0{n}Z").into();
        let sid = put(
            &env.repo.join("snapshots"),
            ".json",
            &serde_json::to_vec(&rec).unwrap(),
        );
        let target = env.path(&format!("t{n}"));
        let out = env.snap([
            OsStr::new("restore"),
            OsStr::new(&sid),
            OsStr::new("--target"),
            target.as_os_str(),
        ]);
        assert_eq!(out.code, 90, "{hostile}: {}", out.stderr);
        assert_eq!(out.fact("command.failed")["error_id"], "E_INTEGRITY");
        assert!(
            !target.exists() && !victim.exists(),
            "{hostile} created something"
        );
    }
    // An unknown record version is refused with a clear message.
    let text =
        "{\"v\":3,\"path\":\"\",\"kind\":\"dir\",\"mode\":493,\"mtime\":{\"sec\":0,\"nsec\":0}}\n";
    let eid = blake3::hash(text.as_bytes()).to_hex().to_string();
    let edir = env.repo.join(format!("entries/{}", &eid[..2]));
    fs::create_dir_all(&edir).unwrap();
    put(&edir, ".jsonl", text.as_bytes());
    rec["entries"]["id"] = eid.into();
    rec["time"] = "2999-02-01T00:00:00Z".into();
    let sid = put(
        &env.repo.join("snapshots"),
        ".json",
        &serde_json::to_vec(&rec).unwrap(),
    );
    let out = env.snap([
        OsStr::new("restore"),
        OsStr::new(&sid),
        OsStr::new("--target"),
        env.path("v3").as_os_str(),
    ]);
    assert_eq!(out.code, 90);
    assert!(
        out.stderr.contains("version 3 is not supported"),
        "{}",
        out.stderr
    );
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn unknown_snapshot_and_missing_repository_have_their_exit_codes() {
    let env = Env::new();
    let r = env.snap(["list"]);
    assert_eq!(r.code, 61, "{}", r.stderr);
    assert_eq!(r.fact("command.failed")["error_id"], "E_REPO_MISSING");
    env.snap(["init"]).ok();
    let again = env.snap(["init"]);
    assert_eq!(again.code, 2);
    let r = env.snap([
        OsStr::new("restore"),
        OsStr::new("deadbeef"),
        OsStr::new("--target"),
        env.path("t").as_os_str(),
    ]);
    assert_eq!(r.code, 60, "{}", r.stderr);
    assert_eq!(r.fact("command.failed")["error_id"], "E_BACKUP_MISSING");
    let usage = env.snap(["backup"]);
    assert_eq!(usage.code, 2);
    let f = usage.fact("command.failed");
    assert_eq!(
        (f["error_id"].as_str(), f["exit_code"].as_i64()),
        (Some("E_USAGE"), Some(2))
    );
    assert_eq!(f["command"], "backup");
    assert!(f["message"].as_str().unwrap().contains("<SRC>"), "{f}");
}

#[test]
fn json_puts_facts_on_stdout_and_text_on_stderr() {
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    env.snap(["init"]).ok();
    let out = Command::new(snap_bin())
        .arg("--repo")
        .arg(&env.repo)
        .arg("--json")
        .arg("backup")
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("stdout holds only facts"))
        .collect();
    lines.iter().for_each(assert_valid_fact);
    let events: Vec<&str> = lines.iter().map(|f| f["event"].as_str().unwrap()).collect();
    let checks = events.iter().filter(|e| **e == "preflight.check").count();
    assert!(checks >= 5, "{events:?}");
    assert_eq!(events[0], "lock.acquired");
    assert_eq!(
        &events[checks + 1..],
        ["preflight.summary", "backup.summary"]
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("saved:"),
        "summary line goes to stderr"
    );
    let list = Command::new(snap_bin())
        .arg("--repo")
        .arg(&env.repo)
        .args(["--json", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8(list.stdout).unwrap();
    assert_eq!(
        text.lines().count(),
        2,
        "lock.acquired and list.result only: {text}"
    );
    assert!(String::from_utf8_lossy(&list.stderr).contains("source"));
}

fn mount(args: &[&str], at: &Path) -> bool {
    Command::new("mount")
        .args(args)
        .arg(at)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn full_repository_filesystem_is_a_preflight_stop_and_creates_nothing() {
    if !is_root() || !has_tool("mkfs.ext4") {
        eprintln!("skipped: a loop-mounted ext4 image needs root and mkfs.ext4");
        return;
    }
    let env = Env::new();
    let img = env.path("repo.img");
    fs::File::create(&img).unwrap().set_len(16 << 20).unwrap();
    sh(&format!("mkfs.ext4 -q -F '{}'", img.display()));
    let mnt = env.path("mnt");
    fs::create_dir(&mnt).unwrap();
    if !mount(&["-o", "loop", img.to_str().unwrap()], &mnt) {
        eprintln!("skipped: cannot loop-mount here");
        return;
    }
    let _guard = Mount(mnt.clone());
    // The default location (the only one a backup creates) on that
    // filesystem.
    let repo = mnt.join("snap");
    let big = env.path("big");
    fs::create_dir(&big).unwrap();
    fs::write(big.join("random"), pseudo_random(40 << 20, 11)).unwrap();
    let mut cmd = Command::new(snap_bin());
    cmd.env_remove("SNAP_REPO").env("XDG_DATA_HOME", &mnt);
    let r = env.run_cmd(cmd, [OsStr::new("backup"), big.as_os_str()]);
    assert_eq!(r.code, 10, "{}", r.stderr);
    assert!(
        r.stderr.contains("E_POLICY") && r.stderr.contains("space"),
        "{}",
        r.stderr
    );
    let space = r
        .facts
        .iter()
        .find(|f| f["event"] == "preflight.check" && f["check"] == "space")
        .unwrap();
    assert_eq!(space["result"], "stop");
    assert_eq!(r.fact("preflight.summary")["error_id"], "E_POLICY");
    assert_eq!(r.fact("command.failed")["exit_code"], 10);
    assert!(!repo.exists(), "nothing may be written on a preflight stop");
}

#[test]
fn running_out_of_space_mid_backup_is_e_no_space_and_commits_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let env = Env::new();
    let mnt = env.path("mnt");
    fs::create_dir(&mnt).unwrap();
    // Bytes are plentiful (so preflight passes) but inodes run out while the
    // backup commits: ENOSPC from mkdir/open, as on a full disk.
    if !mount(
        &["-t", "tmpfs", "-o", "size=64m,nr_inodes=12", "tmpfs"],
        &mnt,
    ) {
        eprintln!("skipped: cannot mount tmpfs here");
        return;
    }
    let _guard = Mount(mnt.clone());
    let repo = mnt.join("repo");
    let snap = |args: &[&OsStr]| {
        let mut cmd = Command::new(snap_bin());
        cmd.arg("--repo").arg(&repo);
        env.run_cmd(cmd, args.iter().copied())
    };
    snap(&[OsStr::new("init")]).ok();
    let src = env.path("src");
    small_tree(&src);
    let r = snap(&[OsStr::new("backup"), src.as_os_str()]);
    assert_eq!(r.code, 80, "{}", r.stderr);
    assert!(
        r.stderr.contains("E_NO_SPACE") && r.stderr.contains(&repo.display().to_string()),
        "{}",
        r.stderr
    );
    assert_eq!(r.fact("command.failed")["error_id"], "E_NO_SPACE");
    // The message says what the run leaves behind.
    assert!(r.stderr.contains("garbage packs"), "{}", r.stderr);
    assert_eq!(
        fs::read_dir(repo.join("snapshots")).unwrap().count(),
        0,
        "a snapshot appeared"
    );
    assert_eq!(
        fs::read_dir(repo.join("tmp")).unwrap().count(),
        0,
        "a partial file was left in tmp/"
    );
    // With room again, the same repository takes and restores a snapshot.
    assert!(mount(&["-o", "remount,nr_inodes=1000"], &mnt));
    snap(&[OsStr::new("backup"), src.as_os_str()]).ok();
    let out = env.path("out");
    snap(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        out.as_os_str(),
    ])
    .ok();
    assert_same_tree(&src, &out, false);
}

#[test]
fn single_file_source_restores_inside_the_target() {
    let env = Env::new();
    let f = env.path("report.txt");
    fs::write(&f, b"quarterly").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    env.snap([OsStr::new("backup"), f.as_os_str()]).ok();
    let out = env.path("out");
    env.restore_latest(&out).ok();
    assert_eq!(fs::read(out.join("report.txt")).unwrap(), b"quarterly");
    let md = fs::metadata(out.join("report.txt")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o640);
    assert_eq!(
        fs::metadata(&f).unwrap().modified().unwrap(),
        md.modified().unwrap()
    );
}

#[test]
fn version_completions_and_man_pages() {
    let run = |args: &[&str]| {
        let out = Command::new(snap_bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {:?}", out);
        String::from_utf8(out.stdout).unwrap()
    };
    let v = run(&["version"]);
    assert!(
        v.starts_with(&format!("snap {} ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    // --json does not move the text to stderr.
    assert_eq!(run(&["--json", "version"]), v);
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = run(&["completions", shell]);
        for word in ["backup", "restore", "one-file-system", "exclude-caches"] {
            assert!(script.contains(word), "{shell}: {word}");
        }
    }
    // The bash script parses.
    let script = run(&["completions", "bash"]);
    let path = std::env::temp_dir().join(format!("snap-completion-{}.bash", std::process::id()));
    fs::write(&path, &script).unwrap();
    let ok = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    fs::remove_file(&path).ok();
    assert!(ok.success());
    let r = Command::new(snap_bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    // One page per command, after snap(1).
    let man = run(&["man"]);
    assert!(man.contains(".TH snap 1"), "{}", &man[..200]);
    for cmd in ["backup", "restore", "forget", "copy", "completions"] {
        assert!(man.contains(&format!(".TH snap-{cmd} ")), "{cmd}");
    }
    assert!(man.contains("one\\-file\\-system"));
    // A closed stdout ends the command quietly, with no panic.
    let mut child = Command::new(snap_bin())
        .arg("man")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        matches!(out.status.code(), Some(0 | 141)),
        "{:?} {err}",
        out.status
    );
}

/// Runs `snap ARGS` on a pseudo-terminal (`script(1)`), returning what the
/// terminal showed.
fn on_a_terminal(env: &Env, args: &[&OsStr]) -> String {
    let mut cmd = vec![snap_bin().to_owned(), "--repo".into()];
    cmd.push(env.repo.display().to_string());
    cmd.extend(args.iter().map(|a| a.to_string_lossy().into_owned()));
    let line = cmd
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{line}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn quiet_and_no_progress_on_a_terminal() {
    if !has_tool("script") {
        eprintln!("skipped: script(1) (util-linux) not installed");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    fs::write(src.join("big"), pseudo_random(8 << 20, 3)).unwrap();
    env.snap(["init"]).ok();
    let src = src.as_os_str();
    let backup = OsStr::new("backup");
    // The progress bar clears its line (ESC [2K) as it redraws.
    let shown = on_a_terminal(&env, &[backup, src]);
    assert!(shown.contains("\x1b[2K"), "{shown:?}");
    assert!(shown.contains("saved:"), "{shown:?}");
    let shown = on_a_terminal(&env, &[backup, OsStr::new("--no-progress"), src]);
    assert!(!shown.contains("\x1b[2K"), "{shown:?}");
    assert!(shown.contains("saved:"), "{shown:?}");
    // -q: nothing at all on success, for a backup, a restore and a check.
    assert_eq!(on_a_terminal(&env, &[OsStr::new("-q"), backup, src]), "");
    let out = env.path("out");
    let restore = [
        OsStr::new("--quiet"),
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        out.as_os_str(),
    ];
    assert_eq!(on_a_terminal(&env, &restore), "");
    assert_eq!(fs::read(out.join("big")).unwrap().len(), 8 << 20);
    assert_eq!(
        on_a_terminal(&env, &[OsStr::new("-q"), OsStr::new("check")]),
        ""
    );
    // Listing commands still list.
    let listed = on_a_terminal(&env, &[OsStr::new("-q"), OsStr::new("list")]);
    assert_eq!(
        listed.lines().count(),
        4,
        "a header and 3 snapshots: {listed}"
    );
}

/// The progress line on a terminal: a percent, bytes over the total and
/// an ETA once the total is counted (backup) or known (restore), with the
/// file being read.
#[test]
fn progress_shows_a_percent_an_eta_and_the_file() {
    if !has_tool("script") {
        eprintln!("skipped: script(1) (util-linux) not installed");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for (i, name) in ["big-one", "big-two", "big-three"].iter().enumerate() {
        fs::write(src.join(name), pseudo_random(120 << 20, i as u64 + 7)).unwrap();
    }
    env.snap(["init"]).ok();
    let shown = on_a_terminal(&env, &[OsStr::new("backup"), src.as_os_str()]);
    let frames: Vec<&str> = shown.split(['\r', '\n']).collect();
    let percent = |f: &&&str| {
        f.split_whitespace()
            .any(|w| w.ends_with('%') && w[..w.len() - 1].parse::<u32>().is_ok())
    };
    let with_total: Vec<&&str> = frames.iter().filter(percent).collect();
    assert!(!with_total.is_empty(), "no percent in {shown:?}");
    assert!(
        with_total
            .iter()
            .any(|f| f.contains("ETA") && f.contains("/360.00 MiB") && f.contains("big-")),
        "{with_total:?}"
    );
    assert!(shown.contains("saved:"), "{shown:?}");
    let out = env.path("out");
    let shown = on_a_terminal(
        &env,
        &[
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            out.as_os_str(),
        ],
    );
    let frames: Vec<&str> = shown.split(['\r', '\n']).collect();
    assert!(
        frames
            .iter()
            .filter(percent)
            .any(|f| f.contains("/360.00 MiB")),
        "{shown:?}"
    );
}

/// `-v` names each file read as new or changed, the summary and its fact
/// count new, changed and unmodified files, and `-vv` logs the stages and
/// the index files to stderr; `-q -v` is a usage error.
#[test]
fn verbose_names_new_and_changed_files() {
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    let r = env
        .snap([OsStr::new("backup"), OsStr::new("-v"), src.as_os_str()])
        .ok();
    let mut named: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("new ")).collect();
    named.sort();
    assert_eq!(
        named,
        [
            "new      cache/x/junk",
            "new      keep/a.txt",
            "new      keep/deep/b.log",
            "new      keep/deep/c.txt",
            "new      top.log",
        ]
    );
    let s = &r.fact("backup.summary")["stats"];
    assert_eq!(
        (s["files_new"].as_u64(), s["files_changed"].as_u64()),
        (Some(5), Some(0))
    );
    assert!(
        r.stdout.contains("files: 5 new, 0 changed, 0 unmodified"),
        "{}",
        r.stdout
    );
    // One file changed, one added: the others were written just before
    // the first backup, too close to its start to be trusted unread, so
    // they are read again and count as changed, not unmodified.
    fs::write(src.join("keep/a.txt"), b"alpha, longer").unwrap();
    fs::write(src.join("added"), b"new one").unwrap();
    let r = env
        .snap([OsStr::new("backup"), OsStr::new("-v"), src.as_os_str()])
        .ok();
    assert!(
        r.stdout.lines().any(|l| l == "new      added"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.lines().any(|l| l == "changed  keep/a.txt"),
        "{}",
        r.stdout
    );
    let s = &r.fact("backup.summary")["stats"];
    let n = |k: &str| s[k].as_u64().unwrap();
    assert_eq!(n("files_new"), 1);
    assert_eq!(
        n("files_new") + n("files_changed") + n("files_unchanged"),
        n("files")
    );
    // Without -v no file is named.
    let r = env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    assert!(!r.stdout.contains("changed  "), "{}", r.stdout);
    // -vv: the stages and diagnostics on stderr.
    let r = env
        .snap([OsStr::new("-vv"), OsStr::new("backup"), src.as_os_str()])
        .ok();
    for word in [
        "repository opened",
        "repository lock taken",
        "index file read",
        "committed",
    ] {
        assert!(r.stderr.contains(word), "{word}: {}", r.stderr);
    }
    assert!(r.stderr.contains("DEBUG"), "{}", r.stderr);
    let r = env.snap([OsStr::new("-v"), OsStr::new("list")]).ok();
    assert!(
        r.stderr.contains("INFO") && !r.stderr.contains("DEBUG"),
        "{}",
        r.stderr
    );
    let r = env.snap([OsStr::new("-q"), OsStr::new("-v"), OsStr::new("list")]);
    assert_eq!(r.code, 2);
}

/// `list` shows times in the zone `TZ` names, with its offset; `ls` shows
/// owners by name.
#[test]
fn list_in_local_time_and_ls_with_owner_names() {
    let env = Env::new();
    let src = env.path("src");
    small_tree(&src);
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let list = |tz: &str| {
        let mut c = env.command();
        c.env("TZ", tz).arg("list");
        let out = c.output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let utc = list("UTC0");
    let row = utc.lines().nth(1).unwrap();
    assert!(row.contains(" +0000 "), "{utc}");
    let east = list("XYZ-3");
    let row3 = east.lines().nth(1).unwrap();
    assert!(row3.contains(" +0300 "), "{east}");
    // The same instant, three hours on.
    let hour = |r: &str| -> u32 { r.split_whitespace().nth(2).unwrap()[..2].parse().unwrap() };
    assert_eq!((hour(row) + 3) % 24, hour(row3));
    // The source's own line (`.`) shows the owner `stat -c %U/%G` names,
    // an independent view (which falls back to the ids, as ls does).
    let ls = env.snap(["ls", "latest"]).ok();
    let out = Command::new("stat")
        .args(["-c", "%U/%G"])
        .arg(&src)
        .output()
        .unwrap();
    let owner = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let root_line = ls.stdout.lines().find(|l| l.ends_with(" .")).unwrap();
    assert_eq!(
        root_line.split_whitespace().nth(1),
        Some(owner.as_str()),
        "{}",
        ls.stdout
    );
}

/// `restore latest` with `--host/--tag/--snapshot-path` restores the
/// newest snapshot the filter passes (checked by the restored bytes);
/// `preflight restore` resolves the same one; a filter nothing passes is
/// `E_BACKUP_MISSING`.
#[test]
fn restore_latest_takes_the_snapshot_filter() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("f"), "from a, old").unwrap();
    env.snap([
        OsStr::new("backup"),
        OsStr::new("--tag"),
        OsStr::new("web"),
        a.as_os_str(),
    ])
    .ok();
    fs::write(a.join("f"), "from a, new").unwrap();
    env.snap([OsStr::new("backup"), a.as_os_str()]).ok();
    fs::write(b.join("f"), "from b").unwrap();
    env.snap([OsStr::new("backup"), b.as_os_str()]).ok();
    let restore = |name: &str, filter: &[&str]| {
        let target = env.path(name);
        let mut args = vec![OsStr::new("restore"), OsStr::new("latest")];
        args.extend(filter.iter().map(OsStr::new));
        args.extend([OsStr::new("--target"), target.as_os_str()]);
        let r = env.snap(&args);
        (r, target)
    };
    let (r, t) = restore("plain", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(fs::read_to_string(t.join("f")).unwrap(), "from b");
    let (r, t) = restore("tagged", &["--tag", "web"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(fs::read_to_string(t.join("f")).unwrap(), "from a, old");
    let a_path = a.to_str().unwrap();
    let (r, t) = restore("by-path", &["--snapshot-path", a_path]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(fs::read_to_string(t.join("f")).unwrap(), "from a, new");
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let (r, t) = restore(
        "by-host",
        &["--host", host.trim(), "--snapshot-path", a_path],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(fs::read_to_string(t.join("f")).unwrap(), "from a, new");
    let (r, t) = restore("none", &["--host", "no-such-host"]);
    assert_eq!(r.code, 60, "{}", r.stderr);
    assert!(!t.exists());
    // preflight restore resolves latest the same way.
    let target = env.path("pre");
    let r = env.snap([
        OsStr::new("preflight"),
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--tag"),
        OsStr::new("nope"),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    assert_eq!(r.code, 60, "{}", r.stderr);
}
