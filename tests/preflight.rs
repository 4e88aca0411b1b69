//! Preflight stops and the policy that drives them, through the real
//! binary: each stop exits 10 with `E_POLICY`, emits its facts, and writes
//! nothing.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn tree(root: &Path) {
    fs::create_dir_all(root.join("d")).unwrap();
    fs::write(root.join("d/f"), b"content").unwrap();
}

fn check<'a>(r: &'a Run, name: &str) -> &'a serde_json::Value {
    r.facts
        .iter()
        .find(|f| f["event"] == "preflight.check" && f["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {:#?}", r.facts))
}

fn restore_into_protected_parent(flag: &str, method_env: Option<&str>) {
    let env = Env::new();
    let src = env.path("src");
    tree(&src);
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let parent = env.path("parent");
    fs::create_dir(&parent).unwrap();
    sh(&format!("chattr +{flag} '{}'", parent.display()));
    let _g = Unprotect(parent.clone());
    let target = parent.join("restored");
    let mut cmd = Command::new(snap_bin());
    cmd.arg("--repo").arg(&env.repo);
    if let Some(m) = method_env {
        cmd.env("SNAP_TEST_FLAGS_METHOD", m);
    }
    let r = env.run_cmd(
        cmd,
        [
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            target.as_os_str(),
        ],
    );
    assert_eq!(r.code, 10, "{}", r.stderr);
    let c = check(&r, "immutable");
    assert_eq!(c["result"], "stop");
    assert_eq!(c["method"], method_env.unwrap_or("ioctl"));
    assert_eq!(c["path"], parent.display().to_string());
    // +i also fails the parent's writability check; +a does not.
    assert!(r.fact("preflight.summary")["stopped"].as_u64().unwrap() >= 1);
    assert_eq!(r.fact("command.failed")["error_id"], "E_POLICY");
    assert_eq!(
        fs::read_dir(&parent).unwrap().count(),
        0,
        "restore wrote into the parent"
    );
}

fn chattr_usable() -> bool {
    if !is_root() || !has_tool("chattr") {
        eprintln!("skipped: chattr +i/+a needs root (CAP_LINUX_IMMUTABLE)");
        return false;
    }
    true
}

#[test]
fn immutable_target_parent_stops_restore() {
    if chattr_usable() {
        restore_into_protected_parent("i", None);
    }
}

#[test]
fn append_only_target_parent_stops_restore() {
    if chattr_usable() {
        restore_into_protected_parent("a", None);
    }
}

#[test]
fn lsattr_fallback_reads_the_flags_when_the_ioctl_is_off() {
    if chattr_usable() && has_tool("lsattr") {
        restore_into_protected_parent("i", Some("lsattr"));
    }
}

#[test]
fn unknown_flags_method_stops_unless_allowed() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src);
    env.snap(["init"]).ok();
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(snap_bin());
        cmd.arg("--repo")
            .arg(&env.repo)
            .env("SNAP_TEST_FLAGS_METHOD", "none");
        let mut args: Vec<&OsStr> = vec![OsStr::new("backup")];
        args.extend(extra.iter().map(OsStr::new));
        args.push(src.as_os_str());
        env.run_cmd(cmd, args)
    };
    let r = run(&[]);
    assert_eq!(r.code, 10, "{}", r.stderr);
    let c = check(&r, "immutable");
    assert_eq!(
        (c["result"].as_str(), c["method"].as_str()),
        (Some("stop"), Some("unknown"))
    );
    assert_eq!(
        std::fs::read_dir(env.repo.join("snapshots"))
            .unwrap()
            .count(),
        0,
        "nothing may be written on a preflight stop"
    );
    let ok = run(&["--allow-unreliable-immutable-check"]).ok();
    let c = check(&ok, "immutable");
    assert_eq!(
        (c["result"].as_str(), c["method"].as_str()),
        (Some("warn"), Some("unknown"))
    );
    assert_eq!(ok.fact("preflight.summary")["decision"], "warn");
    assert_eq!(
        ok.fact("backup.summary")["policy"]["allow_unreliable_immutable_check"],
        true
    );
}

#[test]
fn held_lock_is_a_preflight_stop() {
    if !has_tool("flock") {
        eprintln!("skipped: flock(1) not installed");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    tree(&src);
    env.snap(["init"]).ok();
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(env.repo.join("lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = env.snap([
        OsStr::new("preflight"),
        OsStr::new("backup"),
        src.as_os_str(),
    ]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(r.code, 10, "{}", r.stderr);
    assert_eq!(check(&r, "lock")["result"], "stop");
    assert_eq!(r.fact("command.failed")["error_id"], "E_POLICY");
    let free = env
        .snap([
            OsStr::new("preflight"),
            OsStr::new("backup"),
            src.as_os_str(),
        ])
        .ok();
    assert_eq!(check(&free, "lock")["result"], "pass");
    assert_eq!(free.fact("preflight.summary")["stopped"], 0);
    assert!(
        fs::read_dir(env.repo.join("snapshots"))
            .unwrap()
            .next()
            .is_none(),
        "preflight wrote a snapshot"
    );
}

#[test]
fn policy_show_presets_files_and_flags() {
    let env = Env::new();
    let schema: serde_json::Value = serde_json::from_slice(
        &fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/policy.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let show = |args: &[&str]| {
        let mut a = vec!["policy", "show"];
        a.extend_from_slice(args);
        let r = env.snap(a).ok();
        let p: serde_json::Value = serde_json::from_str(&r.stdout).expect("policy JSON on stdout");
        assert!(validator.is_valid(&p), "{p}");
        assert_eq!(r.fact("policy.show")["policy"], p);
        p
    };
    let prod = show(&["--preset", "production"]);
    assert_eq!(prod["tier"], "full");
    assert_eq!(prod["on_degraded"], "stop");
    assert_eq!(prod["require_backup_durability"], true);
    assert_eq!(show(&[])["tier"], "extended");
    let file = env.path("p.toml");
    fs::write(
        &file,
        "tier = \"basic\"\nlock_wait_ms = 1234\nexcludes = [\"*.tmp\"]\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let p = show(&[
        "--preset",
        "production",
        "--policy",
        f,
        "--on-degraded",
        "warn",
        "--exclude",
        "cache",
    ]);
    assert_eq!(p["tier"], "basic", "file over preset");
    assert_eq!(p["lock_wait_ms"], 1234);
    assert_eq!(p["on_degraded"], "warn", "flag over preset");
    assert_eq!(p["excludes"], serde_json::json!(["*.tmp", "cache"]));
    fs::write(&file, "tier = \"full\"\nbogus = true\n").unwrap();
    let bad = env.snap(["policy", "show", "--policy", f]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("bogus"), "{}", bad.stderr);
}

#[test]
fn on_degraded_stop_refuses_what_the_process_cannot_apply() {
    if !is_root() || !has_tool("setpriv") || !has_tool("chattr") {
        eprintln!("skipped: needs root, setpriv and chattr");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    tree(&src);
    sh(&format!("chattr +i '{}'", src.join("d/f").display()));
    let _g = Unprotect(src.join("d/f"));
    env.snap([
        OsStr::new("backup"),
        OsStr::new("--tier"),
        OsStr::new("full"),
        src.as_os_str(),
    ])
    .ok();
    // Root without CAP_LINUX_IMMUTABLE cannot set the immutable flag.
    let restore = |policy: &str, target: &Path| {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--bounding-set=-linux_immutable",
            "--inh-caps=-linux_immutable",
            snap_bin(),
        ]);
        cmd.arg("--repo").arg(&env.repo);
        env.run_cmd(
            cmd,
            [
                OsStr::new("restore"),
                OsStr::new("latest"),
                OsStr::new("--on-degraded"),
                OsStr::new(policy),
                OsStr::new("--target"),
                target.as_os_str(),
            ],
        )
    };
    let stopped = env.path("stopped");
    let r = restore("stop", &stopped);
    assert_eq!(r.code, 10, "{}", r.stderr);
    let c = check(&r, "tier");
    assert_eq!(c["result"], "stop");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("CAP_LINUX_IMMUTABLE"),
        "{c}"
    );
    assert!(!stopped.exists());
    let warned = env.path("warned");
    let r = restore("warn", &warned);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(check(&r, "tier")["result"], "warn");
    let w = r.fact("restore.warning");
    assert_eq!(
        (w["path"].as_str(), w["op"].as_str()),
        (Some("d/f"), Some("FS_IOC_SETFLAGS"))
    );
    assert_eq!(fs::read(warned.join("d/f")).unwrap(), b"content");
    // With every capability the same policy passes: preflight reads the
    // process's real CapEff (it once read none and warned as root).
    let full = env.path("full");
    let r = env
        .snap([
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--on-degraded"),
            OsStr::new("stop"),
            OsStr::new("--target"),
            full.as_os_str(),
        ])
        .ok();
    let _g2 = Unprotect(full.join("d/f"));
    assert_eq!(check(&r, "tier")["result"], "pass", "{}", r.stderr);
    assert!(r.fact("restore.summary")["preservation_applied"]["flags"]["applied"] == 1);
}

#[test]
fn immutable_repository_directory_stops_backup() {
    if !chattr_usable() {
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    tree(&src);
    env.snap(["init"]).ok();
    sh(&format!("chattr +i '{}'", env.repo.display()));
    let _g = Unprotect(env.repo.clone());
    let r = env.snap([OsStr::new("backup"), src.as_os_str()]);
    assert_eq!(r.code, 10, "{}", r.stderr);
    let c = check(&r, "immutable");
    assert_eq!(
        (c["result"].as_str(), c["method"].as_str()),
        (Some("stop"), Some("ioctl"))
    );
    assert_eq!(c["path"], env.repo.display().to_string());
    assert!(fs::read_dir(env.repo.join("snapshots"))
        .unwrap()
        .next()
        .is_none());
}
