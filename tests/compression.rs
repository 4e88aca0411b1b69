//! Repository format 3's compression, and format 2 kept working beside
//! it: round trips at every tier with each `--compression` mode, checked
//! against the source by `lstat` and bytes; the stored form on disk (pack
//! magic, `stats` before and after compression); a flipped byte inside a
//! zstd frame caught by restore and `check --read-data`; `snap migrate`
//! of the committed format-2 fixture, and prune across both formats.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::{assert_same_tree, pseudo_random, tagged_snapshots, Env};

/// Text that compresses about 5:1, random bytes that do not, small files,
/// a symlink, a hard link and an empty file.
fn build(src: &Path) {
    fs::create_dir_all(src.join("d/e")).unwrap();
    let text: Vec<u8> = (0..120_000u32)
        .flat_map(|i| format!("{i:08} the quick brown fox {}\n", i % 97).into_bytes())
        .collect();
    fs::write(src.join("text"), &text).unwrap();
    fs::write(src.join("d/noise"), pseudo_random(1_500_000, 11)).unwrap();
    fs::write(src.join("d/e/small"), b"small file\n").unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("../text", src.join("d/link")).unwrap();
    fs::hard_link(src.join("d/e/small"), src.join("d/hard")).unwrap();
}

/// Every pack's trailer magic.
fn pack_magics(repo: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for fan in fs::read_dir(repo.join("packs")).unwrap() {
        for p in fs::read_dir(fan.unwrap().path()).unwrap() {
            let b = fs::read(p.unwrap().path()).unwrap();
            out.push(b[b.len() - 8..].to_vec());
        }
    }
    out
}

fn backup(env: &Env, src: &Path, tier: &str, mode: &str, tag: &str) {
    env.snap([
        OsStr::new("backup"),
        OsStr::new("--tier"),
        OsStr::new(tier),
        OsStr::new("--compression"),
        OsStr::new(mode),
        OsStr::new("--tag"),
        OsStr::new(tag),
        src.as_os_str(),
    ])
    .ok();
}

fn restore(env: &Env, id: &str, target: &Path) {
    env.snap([
        OsStr::new("restore"),
        OsStr::new(id),
        OsStr::new("--target"),
        target.as_os_str(),
    ])
    .ok();
}

#[test]
fn every_tier_round_trips_with_every_compression_mode() {
    for mode in ["off", "auto", "max"] {
        let env = Env::new();
        let src = env.path("src");
        build(&src);
        for tier in ["basic", "extended", "full"] {
            backup(&env, &src, tier, mode, tier);
        }
        let s = env.snap(["stats"]).ok();
        let s = s.fact("stats.result");
        let (stored, plain) = (
            s["unique_bytes"].as_u64().unwrap(),
            s["unique_plain_bytes"].as_u64().unwrap(),
        );
        if mode == "off" {
            assert_eq!(stored, plain, "off stores every blob as it is");
        } else {
            // The text (4.6 MB) compresses; the noise (1.5 MB) is kept as it is.
            assert!(
                stored < plain - 3_000_000 && stored > 1_500_000,
                "{mode}: {stored} stored of {plain}"
            );
        }
        env.snap(["check", "--read-data"]).ok();
        for (id, tier) in tagged_snapshots(&env.repo) {
            let out = env.path(&format!("out-{tier}"));
            restore(&env, &id, &out);
            if tier == "basic" {
                // Tier basic keeps only regular files (each name its own).
                for f in ["text", "d/noise", "d/e/small", "d/hard", "empty"] {
                    assert_eq!(
                        fs::read(src.join(f)).unwrap(),
                        fs::read(out.join(f)).unwrap(),
                        "{mode}/{tier}: {f}"
                    );
                }
                assert!(!out.join("d/link").exists());
            } else {
                assert_same_tree(&src, &out, false);
            }
        }
        assert!(pack_magics(&env.repo).iter().all(|m| m == b"SNAPPAK3"));
    }
}

#[test]
fn a_flipped_byte_in_a_compressed_blob_fails_restore_and_check() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    let text: Vec<u8> = (0..50_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    fs::write(src.join("text"), &text).unwrap();
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let fan = fs::read_dir(env.repo.join("packs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let pack = fs::read_dir(fan).unwrap().next().unwrap().unwrap().path();
    let mut bytes = fs::read(&pack).unwrap();
    assert!(
        bytes.len() < text.len() / 2,
        "the text is stored compressed"
    );
    bytes[40] ^= 0x10;
    fs::write(&pack, &bytes).unwrap();
    let target = env.path("out");
    let r = env.restore_latest(&target);
    assert_eq!(r.code, 90, "{}", r.stderr);
    assert_eq!(r.fact("command.failed")["error_id"], "E_INTEGRITY");
    assert!(!target.exists());
    let c = env.snap(["check", "--read-data"]);
    assert_eq!(c.code, 90, "{}", c.stderr);
    assert!(c
        .stderr
        .contains(pack.file_name().unwrap().to_str().unwrap()));
}

fn fixture_copy(env: &Env) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/format2/repo"
        ))
        .arg(&env.repo)
        .status()
        .unwrap();
    assert!(st.success());
}

fn config_version(env: &Env) -> u64 {
    let c: serde_json::Value =
        serde_json::from_slice(&fs::read(env.repo.join("config.json")).unwrap()).unwrap();
    c["version"].as_u64().unwrap()
}

#[test]
fn a_format2_repository_takes_format2_backups_until_migrate_upgrades_it() {
    let env = Env::new();
    fixture_copy(&env);
    let src = env.path("src");
    build(&src);
    backup(&env, &src, "extended", "auto", "v2-backup");
    assert_eq!(config_version(&env), 2);
    assert!(
        pack_magics(&env.repo).iter().all(|m| m == b"SNAPPAK1"),
        "a format-2 repository gets format-2 packs"
    );
    let m = env.snap(["migrate"]).ok();
    let f = m.fact("migrate.result");
    assert_eq!(
        (&f["from_version"], &f["to_version"], &f["changed"]),
        (&2.into(), &3.into(), &true.into())
    );
    assert_eq!(config_version(&env), 3);
    let again = env.snap(["migrate"]).ok();
    assert_eq!(again.fact("migrate.result")["changed"], false);
    let id = |tag: &str| {
        tagged_snapshots(&env.repo)
            .into_iter()
            .find(|(_, t)| t == tag)
            .unwrap()
            .0
    };
    restore(&env, &id("v2-backup"), &env.path("out-v2"));
    assert_same_tree(&src, &env.path("out-v2"), false);
    fs::write(
        src.join("more-text"),
        "after the migration\n".repeat(20_000),
    )
    .unwrap();
    backup(&env, &src, "extended", "auto", "v3-backup");
    let magics = pack_magics(&env.repo);
    assert!(magics.iter().any(|m| m == b"SNAPPAK1") && magics.iter().any(|m| m == b"SNAPPAK3"));
    env.snap(["check", "--read-data"]).ok();
    restore(&env, &id("v3-backup"), &env.path("out-v3"));
    assert_same_tree(&src, &env.path("out-v3"), false);
    // Prune across packs of both formats (the fixture's are deleted).
    env.snap(["forget", "--keep-last", "1"]).ok();
    let p = env.snap(["prune", "--max-unused", "0%"]).ok();
    // Kept: the newest of each source (the fixture's "second", format 2,
    // and v3-backup, format 3). The forgotten format-2 snapshots' entries
    // files (the fixture's first, v2-backup's) go; the kept format-2 one
    // stays; the format-3 snapshot's entries are blobs.
    assert_eq!(p.fact("prune.result")["entries_removed"], 2);
    assert_eq!(
        fs::read_dir(env.repo.join("entries"))
            .unwrap()
            .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
            .count(),
        1
    );
    env.snap(["check", "--read-data"]).ok();
    restore(&env, &id("v3-backup"), &env.path("out-v3-pruned"));
    assert_same_tree(&src, &env.path("out-v3-pruned"), false);
}

#[test]
fn a_newer_format_is_refused_with_its_own_error() {
    let env = Env::new();
    env.snap(["init"]).ok();
    let p = env.repo.join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    c["version"] = 9.into();
    fs::write(&p, serde_json::to_vec(&c).unwrap()).unwrap();
    for args in [&["list"][..], &["check"], &["migrate"]] {
        let r = env.snap(args);
        assert_eq!(r.code, 62, "{args:?}: {}", r.stderr);
        assert_eq!(r.fact("command.failed")["error_id"], "E_REPO_VERSION");
        assert!(r.stderr.contains("version 9"), "{}", r.stderr);
    }
}

/// The summary's `bytes_added`.
fn added(r: &common::Run) -> u64 {
    r.fact("backup.summary")["stats"]["bytes_added"]
        .as_u64()
        .unwrap()
}

#[test]
fn unchanged_records_cost_nothing_and_one_changed_file_costs_a_few_entries_blobs() {
    let env = Env::new();
    let src = env.path("src");
    for d in 0..40 {
        let dir = src.join(format!("dir{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("file{f:03}")), format!("{d} {f}\n")).unwrap();
        }
    }
    // snap trusts a parent's stat only for files older than its start - 1 s.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let first = env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let rec = |r: &common::Run| {
        let id = r.fact("backup.summary")["snapshot_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let v: serde_json::Value = serde_json::from_slice(
            &fs::read(env.repo.join("snapshots").join(format!("{id}.json"))).unwrap(),
        )
        .unwrap();
        v["entries"].clone()
    };
    let e1 = rec(&first);
    let chunks = e1["chunks"].as_array().unwrap().len();
    assert!(chunks >= 10, "4,041 records make {chunks} entries blobs");
    // Format 3 keeps no entries file: the stream is in packs.
    assert_eq!(fs::read_dir(env.repo.join("entries")).unwrap().count(), 0);
    let same = env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    assert_eq!(
        rec(&same),
        e1,
        "an unchanged tree names the parent's stream"
    );
    assert_eq!(added(&same), 0);
    fs::write(src.join("dir17/file042"), "changed\n").unwrap();
    let changed = env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let e3 = rec(&changed);
    let new: Vec<_> = e3["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !e1["chunks"].as_array().unwrap().contains(c))
        .collect();
    assert!(
        !new.is_empty() && new.len() <= 3,
        "{} of {chunks} entries blobs changed",
        new.len()
    );
    let stream_bytes = first.fact("backup.summary")["stats"]["bytes_added"]
        .as_u64()
        .unwrap();
    assert!(
        added(&changed) < stream_bytes / 4 && added(&changed) < 64 << 10,
        "one changed file added {} bytes (the first backup {stream_bytes})",
        added(&changed)
    );
    env.snap(["check", "--read-data"]).ok();
    let out = env.path("out");
    env.restore_latest(&out).ok();
    assert_same_tree(&src, &out, false);
    // The older snapshots still restore, from the blobs they share.
    let id = first.fact("backup.summary")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let old = env.path("old");
    restore(&env, &id, &old);
    assert_eq!(fs::read(old.join("dir17/file042")).unwrap(), b"17 42\n");
    assert_eq!(fs::read(old.join("dir03/file007")).unwrap(), b"3 7\n");
}
