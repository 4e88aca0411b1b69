//! `snap check` on healthy and damaged repositories: each kind of damage is
//! detected, named, and exits 90 with `E_INTEGRITY`.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;

fn repo_with_snapshot() -> (Env, PathBuf) {
    repo_with_snapshot_in(3)
}

/// A repository of format `version` (a new one, its config set back to 2
/// for format 2: empty, it is what the last format-2 build made) with one
/// snapshot.
fn repo_with_snapshot_in(version: u64) -> (Env, PathBuf) {
    let env = Env::new();
    env.snap(["init"]).ok();
    if version == 2 {
        let p = env.repo.join("config.json");
        let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        c["version"] = 2.into();
        fs::write(&p, serde_json::to_vec(&c).unwrap()).unwrap();
    }
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/big"), pseudo_random(3 << 20, 5)).unwrap();
    fs::write(src.join("small"), b"small").unwrap();
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    (env, src)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    lstat_tree(dir)
        .into_iter()
        .filter(|(_, s)| s.kind == "file")
        .map(|(p, _)| dir.join(String::from_utf8(p).unwrap()))
        .collect()
}

fn assert_detected(env: &Env, args: &[&str], needle: &str) {
    let mut a = vec!["check"];
    a.extend_from_slice(args);
    let r = env.snap(a);
    assert_eq!(r.code, 90, "{}\n{}", r.stdout, r.stderr);
    let f = r.fact("check.result");
    assert_eq!(
        (f["decision"].as_str(), f["error_id"].as_str()),
        (Some("failure"), Some("E_INTEGRITY"))
    );
    assert!(f["problem_count"].as_u64().unwrap() >= 1);
    let listed = f["problems"].to_string();
    assert!(
        listed.contains(needle),
        "problems do not name {needle}: {listed}"
    );
    assert!(r.stderr.contains(needle), "{}", r.stderr);
}

#[test]
fn healthy_repository_passes_with_and_without_read_data() {
    let (env, _) = repo_with_snapshot();
    for args in [vec!["check"], vec!["check", "--read-data"]] {
        let r = env.snap(args).ok();
        let f = r.fact("check.result");
        assert_eq!(f["problem_count"], 0);
        assert_eq!(f["snapshots"], 1);
        assert!(f["references"].as_u64().unwrap() >= 4);
    }
    let r = env.snap(["check", "--read-data"]).ok();
    assert!(r.fact("check.result")["bytes_read"].as_u64().unwrap() > 3 << 20);
}

#[test]
fn flipped_byte_in_a_pack_is_found_by_read_data() {
    let (env, _) = repo_with_snapshot();
    // The data pack (the largest): the entries blobs are read without
    // --read-data too.
    let pack = files_under(&env.repo.join("packs"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut b = fs::read(&pack).unwrap();
    b[100] ^= 0x80;
    fs::write(&pack, &b).unwrap();
    env.snap(["check"]).ok(); // structure is intact
    let name = pack.file_name().unwrap().to_str().unwrap().to_owned();
    assert_detected(&env, &["--read-data"], &name);
}

#[test]
fn altered_pack_footer_is_found_without_read_data() {
    let (env, _) = repo_with_snapshot();
    let pack = files_under(&env.repo.join("packs")).remove(0);
    let mut b = fs::read(&pack).unwrap();
    // Flip a bit of the first footer row's blob length (trailer: blob
    // count u32, 0 u32, footer offset u64, magic; rows of 52 bytes, 44 in
    // format 2). Only the pack id, which covers footer and trailer, can
    // tell.
    let rows = u32::from_le_bytes(b[b.len() - 24..b.len() - 20].try_into().unwrap()) as usize;
    let row = if &b[b.len() - 8..] == b"SNAPPAK3" {
        52
    } else {
        44
    };
    let first_row = b.len() - 24 - row * rows;
    b[first_row + 40] ^= 0x01;
    fs::write(&pack, &b).unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap().to_owned();
    assert_detected(&env, &[], &name);
}

#[test]
fn deleted_pack_is_found() {
    let (env, _) = repo_with_snapshot();
    let pack = files_under(&env.repo.join("packs")).remove(0);
    fs::remove_file(&pack).unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap().to_owned();
    assert_detected(&env, &[], &name);
}

/// Format 3: the pack holding the first entries blob of the only
/// snapshot, and that blob's offset and stored length.
fn first_entries_blob(env: &Env) -> (PathBuf, usize, usize) {
    let rec = files_under(&env.repo.join("snapshots")).remove(0);
    let rec: serde_json::Value = serde_json::from_slice(&fs::read(rec).unwrap()).unwrap();
    let blob = rec["entries"]["chunks"][0].as_str().unwrap().to_owned();
    for idx in files_under(&env.repo.join("index")) {
        let bytes = fs::read(idx).unwrap();
        let json = if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            zstd::stream::decode_all(&bytes[..]).unwrap()
        } else {
            bytes
        };
        let idx: serde_json::Value = serde_json::from_slice(&json).unwrap();
        for p in idx["packs"].as_array().unwrap() {
            for b in p["blobs"].as_array().unwrap() {
                if b["id"] == blob.as_str() {
                    let pack = p["id"].as_str().unwrap();
                    return (
                        env.repo.join(format!("packs/{}/{pack}.pack", &pack[..2])),
                        b["offset"].as_u64().unwrap() as usize,
                        b["length"].as_u64().unwrap() as usize,
                    );
                }
            }
        }
    }
    panic!("entries blob {blob} is in no index");
}

#[test]
fn a_damaged_entries_blob_is_found_without_read_data_and_fails_the_next_backup() {
    let (env, src) = repo_with_snapshot();
    assert_eq!(files_under(&env.repo.join("entries")).len(), 0);
    let (pack, offset, len) = first_entries_blob(&env);
    let mut b = fs::read(&pack).unwrap();
    b[offset + len / 2] ^= 0x04;
    fs::write(&pack, &b).unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap().to_owned();
    assert_detected(&env, &[], &name);
    let snapshots = || fs::read_dir(env.repo.join("snapshots")).unwrap().count();
    let r = env.snap([OsStr::new("backup"), src.as_os_str()]);
    assert_eq!(r.code, 90, "{}", r.stderr);
    assert!(r.stderr.contains(&name), "the pack is named: {}", r.stderr);
    assert_eq!(r.fact("command.failed")["error_id"], "E_INTEGRITY");
    assert_eq!(snapshots(), 1, "a snapshot was committed");
    let out = env.path("out");
    assert_eq!(env.restore_latest(&out).code, 90);
    assert!(!out.exists());
}

#[test]
fn truncated_entries_file_is_found() {
    let (env, _) = repo_with_snapshot_in(2);
    let entries = files_under(&env.repo.join("entries")).remove(0);
    let b = fs::read(&entries).unwrap();
    fs::write(&entries, &b[..b.len() / 2]).unwrap();
    let id = entries.file_stem().unwrap().to_str().unwrap().to_owned();
    assert_detected(&env, &[], &id);
}

#[test]
fn altered_parent_entries_fail_the_next_backup_and_commit_nothing() {
    let (env, src) = repo_with_snapshot_in(2);
    // Still valid JSON with the same shape: only the id check can tell.
    let entries = files_under(&env.repo.join("entries")).remove(0);
    let text = fs::read_to_string(&entries).unwrap();
    let at = text.find("\"hash\":\"").expect("a hash field") + 8;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    fs::write(&entries, &bytes).unwrap();
    let snapshots = || fs::read_dir(env.repo.join("snapshots")).unwrap().count();
    let before = snapshots();
    let r = env.snap([OsStr::new("backup"), src.as_os_str()]);
    assert_eq!(r.code, 90, "{}", r.stderr);
    assert!(
        r.stderr.contains("E_INTEGRITY") && r.stderr.contains("does not match its BLAKE3 id"),
        "{}",
        r.stderr
    );
    let id = entries.file_stem().unwrap().to_str().unwrap();
    assert!(
        r.stderr.contains(id),
        "the entries file is named: {}",
        r.stderr
    );
    assert_eq!(r.fact("command.failed")["error_id"], "E_INTEGRITY");
    assert_eq!(snapshots(), before, "a snapshot was committed");
}

#[test]
fn removed_index_file_is_found() {
    let (env, _) = repo_with_snapshot();
    let idx = files_under(&env.repo.join("index")).remove(0);
    fs::remove_file(&idx).unwrap();
    assert_detected(&env, &[], "is in no index");
}

#[test]
fn garbage_is_reported_not_an_error_and_repair_tmp_cleans_tmp() {
    let (env, src) = repo_with_snapshot();
    // An unreferenced pack (as an interrupted backup leaves) and tmp/ files.
    let pack = files_under(&env.repo.join("packs")).remove(0);
    let bytes = fs::read(&pack).unwrap();
    let fake = blake3::hash(b"not a real pack").to_hex().to_string();
    fs::create_dir_all(env.repo.join(format!("packs/{}", &fake[..2]))).unwrap();
    fs::write(
        env.repo.join(format!("packs/{}/{fake}.pack", &fake[..2])),
        &bytes,
    )
    .unwrap();
    fs::write(env.repo.join("tmp/leftover.tmp"), b"partial").unwrap();
    let r = env.snap(["check"]).ok();
    let f = r.fact("check.result");
    assert_eq!(
        (f["garbage_packs"].as_u64(), f["tmp_entries"].as_u64()),
        (Some(1), Some(1)),
        "{f}"
    );
    let r = env.snap(["check", "--repair-tmp"]).ok();
    assert_eq!(r.fact("check.result")["tmp_removed"], 1);
    assert_eq!(r.fact("lock.acquired")["mode"], "exclusive");
    assert_eq!(fs::read_dir(env.repo.join("tmp")).unwrap().count(), 0);
    let out = env.path("out");
    env.restore_latest(&out).ok();
    assert_same_tree(&src, &out, false);
}

#[test]
fn a_damaged_index_file_does_not_hide_the_entries_of_other_snapshots() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    for (dir, seed) in [(&a, 31), (&b, 33)] {
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/f"), pseudo_random(20_000, seed)).unwrap();
    }
    env.snap([OsStr::new("backup"), a.as_os_str()]).ok();
    let first_index = files_under(&env.repo.join("index"));
    assert_eq!(first_index.len(), 1);
    env.snap([OsStr::new("backup"), b.as_os_str()]).ok();
    // The first backup's index file (its packs: a's data and entries).
    let bytes = fs::read(&first_index[0]).unwrap();
    fs::write(&first_index[0], &bytes[..bytes.len() / 2]).unwrap();
    let r = env.snap(["check"]);
    assert_eq!(r.code, 90, "{}", r.stderr);
    let problems = r.fact("check.result")["problems"].to_string();
    let name = first_index[0].file_name().unwrap().to_str().unwrap();
    assert!(problems.contains(name), "{problems}");
    // b's entries were read: its snapshot has no problem of its own.
    let b_snapshot = tagged_snapshots(&env.repo)
        .into_iter()
        .map(|(id, _)| id)
        .find(|id| {
            let rec: serde_json::Value = serde_json::from_slice(
                &fs::read(env.repo.join(format!("snapshots/{id}.json"))).unwrap(),
            )
            .unwrap();
            rec["source"].as_str().unwrap().ends_with("/b")
        })
        .unwrap();
    assert!(
        !problems.contains(&b_snapshot[..12]),
        "the intact snapshot was hidden: {problems}"
    );
}
