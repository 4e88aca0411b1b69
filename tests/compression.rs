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
    env.snap(["prune", "--max-unused", "0%"]).ok();
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
