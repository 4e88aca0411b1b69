//! `restore --replace`: the restored tree is swapped in atomically with
//! `renameat2(RENAME_EXCHANGE)`; any failure before the swap leaves the
//! target exactly as it was.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn tree(root: &Path, tag: &str) {
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join("sub/file"), format!("content {tag}")).unwrap();
    fs::write(root.join(format!("only-{tag}")), tag).unwrap();
}

fn restore(env: &Env, target: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        target.as_os_str(),
        OsStr::new("--replace"),
    ];
    args.extend(extra.iter().map(OsStr::new));
    env.snap(args)
}

#[test]
fn replace_swaps_the_tree_in_and_removes_or_keeps_the_old_one() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src, "new");
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let target = env.path("live");
    tree(&target, "old");
    let r = restore(&env, &target, &[]).ok();
    let s = r.fact("restore.summary");
    assert_eq!(s["replaced"], true);
    assert!(s["old_kept"].is_null() && s["pre_restore_snapshot"].is_null());
    assert_same_tree(&src, &target, false);
    assert_eq!(staging_dirs(env.dir.path()), 0, "staging left behind");

    // --keep-old: the swapped-out tree is kept.
    fs::write(target.join("local-change"), b"x").unwrap();
    let before = lstat_tree(&target);
    let old = env.path("previous");
    let r = restore(&env, &target, &["--keep-old", old.to_str().unwrap()]).ok();
    assert_eq!(
        r.fact("restore.summary")["old_kept"],
        old.display().to_string()
    );
    assert_eq!(
        lstat_tree(&old).keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert_eq!(fs::read(old.join("local-change")).unwrap(), b"x");
    assert_same_tree(&src, &target, false);
    assert_eq!(staging_dirs(env.dir.path()), 0, "staging left behind");
}

#[test]
fn production_preset_snapshots_the_old_tree_so_the_restore_can_be_undone() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src, "new");
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let target = env.path("live");
    tree(&target, "old");
    let keep = env.path("expected-old");
    sh(&format!(
        "cp -a '{}' '{}'",
        target.display(),
        keep.display()
    ));
    let r = restore(&env, &target, &["--preset", "production"]).ok();
    assert_eq!(r.fact("lock.acquired")["mode"], "shared");
    let pre = r.fact("restore.summary")["pre_restore_snapshot"]
        .as_str()
        .expect("pre-restore snapshot")
        .to_owned();
    assert_eq!(r.fact("backup.summary")["snapshot_id"], pre);
    assert!(r.fact("backup.summary")["tags"][0]
        .as_str()
        .unwrap()
        .starts_with("pre-restore:"));
    assert_same_tree(&src, &target, false);
    // Undo.
    let undone = env.path("undone");
    env.snap([
        OsStr::new("restore"),
        OsStr::new(&pre),
        OsStr::new("--target"),
        undone.as_os_str(),
    ])
    .ok();
    assert_same_tree(&keep, &undone, false);
}

#[test]
fn failure_before_the_swap_leaves_the_target_exactly_as_it_was() {
    let env = Env::new();
    let src = env.path("src");
    tree(&src, "new");
    fs::write(src.join("payload"), pseudo_random(200_000, 4)).unwrap();
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let pack = lstat_tree(&env.repo.join("packs"))
        .into_iter()
        .find(|(_, s)| s.kind == "file")
        .map(|(p, _)| env.repo.join("packs").join(String::from_utf8(p).unwrap()))
        .unwrap();
    let mut b = fs::read(&pack).unwrap();
    b[50] ^= 1;
    fs::write(&pack, &b).unwrap();
    let target = env.path("live");
    tree(&target, "old");
    let before = lstat_tree(&target);
    let r = restore(&env, &target, &[]);
    assert_eq!(r.code, 90, "{}", r.stderr);
    assert_eq!(lstat_tree(&target), before, "the target changed");
    assert_eq!(fs::read(target.join("sub/file")).unwrap(), b"content old");
    assert_eq!(staging_dirs(env.dir.path()), 0, "staging left behind");
}

#[test]
fn a_mount_point_target_cannot_be_swapped_and_is_left_alone() {
    if !is_root() {
        eprintln!("skipped: mounting needs root");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    tree(&src, "new");
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let target = env.path("mnt");
    fs::create_dir(&target).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&target)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: cannot mount tmpfs");
        return;
    }
    fs::write(target.join("mine"), b"keep").unwrap();
    let r = restore(&env, &target, &[]);
    let umount = Command::new("umount").arg(&target).status().unwrap();
    assert!(umount.success());
    assert_eq!(r.code, 40, "{}", r.stderr);
    assert_eq!(r.fact("command.failed")["error_id"], "E_ATOMIC_SWAP");
    assert_eq!(staging_dirs(env.dir.path()), 0, "staging left behind");
}
