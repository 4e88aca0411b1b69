//! The snapshot lifecycle with the real binary: forget and prune reclaim
//! forgotten data and keep every remaining snapshot restorable; diff,
//! dump, find, stats and show report what the repository holds; the
//! `--host/--tag/--path` filters; a backup and a prune started together.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

const MIB: usize = 1 << 20;

/// Generation `g` of a changing tree: a constant file shared by every
/// generation, 2 MiB that only this generation holds, a small file whose
/// text changes and one whose mode changes.
fn generation(src: &Path, g: u64) {
    fs::create_dir_all(src.join("d/e")).unwrap();
    if !src.join("common.bin").exists() {
        fs::write(src.join("common.bin"), pseudo_random(MIB, 1)).unwrap();
    }
    for old in fs::read_dir(src).unwrap() {
        let old = old.unwrap().path();
        if old.extension() == Some(OsStr::new("gen")) {
            fs::remove_file(old).unwrap();
        }
    }
    fs::write(
        src.join(format!("g{g}.gen")),
        pseudo_random(2 * MIB, 1001 + 2 * g),
    )
    .unwrap();
    fs::write(src.join("d/notes.txt"), format!("generation {g}\n")).unwrap();
    fs::write(src.join("d/e/mode"), b"mode\n").unwrap();
    fs::set_permissions(
        src.join("d/e/mode"),
        fs::Permissions::from_mode(if g % 2 == 0 { 0o600 } else { 0o644 }),
    )
    .unwrap();
}

/// The snapshots as `list --json` reports them, oldest first.
fn snapshots(env: &Env, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["list"];
    args.extend_from_slice(extra);
    let run = env.snap(args).ok();
    run.fact("list.result")["items"]
        .as_array()
        .expect("items")
        .clone()
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Restores snapshot `id` into a fresh directory and returns it.
fn restore(env: &Env, id: &str, name: &str) -> PathBuf {
    let out = env.path(name);
    env.snap([
        OsStr::new("restore"),
        OsStr::new(id),
        OsStr::new("--target"),
        out.as_os_str(),
    ])
    .ok();
    out
}

/// Copies `src` with its metadata (`cp -a`) to `dst`: the expected tree
/// of a snapshot taken now.
fn keep_copy(src: &Path, dst: &Path) {
    sh(&format!("cp -a '{}' '{}'", src.display(), dst.display()));
}

/// The standard output of a snap run, as bytes.
fn snap_stdout(env: &Env, args: &[&OsStr]) -> Vec<u8> {
    let out = Command::new(snap_bin())
        .arg("--repo")
        .arg(&env.repo)
        .args(args)
        .output()
        .expect("run snap");
    assert!(
        out.status.success(),
        "snap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The files under `repo` and their sizes: any change to the repository
/// changes this.
fn repo_files(repo: &Path) -> BTreeSet<(String, u64)> {
    lstat_tree(repo)
        .into_iter()
        .filter(|(p, s)| s.kind == "file" && p != b"lock")
        .map(|(p, s)| (String::from_utf8(p).unwrap(), s.size))
        .collect()
}

#[test]
fn forget_keep_last_and_prune_reclaim_the_forgotten_data() {
    let env = Env::new();
    let src = env.path("src");
    let mut expect = Vec::new();
    for g in 0..6 {
        generation(&src, g);
        env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
        let copy = env.path(&format!("gen{g}"));
        keep_copy(&src, &copy);
        expect.push(copy);
    }
    let all = ids(&snapshots(&env, &[]));
    assert_eq!(all.len(), 6);
    let before = tree_bytes(&env.repo);

    // A dry run names what would go and changes nothing.
    let files = repo_files(&env.repo);
    let dry = env
        .snap(["forget", "--keep-last", "2", "--prune", "--dry-run"])
        .ok();
    assert_eq!(dry.fact("forget.result")["dry_run"], true);
    assert_eq!(
        dry.fact("forget.result")["removed"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(dry.fact("prune.result")["dry_run"], true);
    assert_eq!(
        repo_files(&env.repo),
        files,
        "a dry run changed the repository"
    );

    let run = env.snap(["forget", "--keep-last", "2", "--prune"]).ok();
    let forget = run.fact("forget.result");
    let removed: Vec<&str> = forget["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["snapshot_id"].as_str().unwrap())
        .collect();
    let kept: Vec<&str> = forget["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["snapshot_id"].as_str().unwrap())
        .collect();
    let mut removed_sorted: Vec<&str> = removed.clone();
    removed_sorted.sort_unstable();
    let mut oldest: Vec<&str> = all[..4].iter().map(String::as_str).collect();
    oldest.sort_unstable();
    assert_eq!(removed_sorted, oldest, "the four oldest go");
    assert_eq!(kept.len(), 2);
    for k in forget["kept"].as_array().unwrap() {
        assert_eq!(k["reasons"][0], "last snapshot", "{k}");
    }
    assert!(run.stdout.contains("remove") && run.stdout.contains("last snapshot"));
    assert_eq!(ids(&snapshots(&env, &[])), all[4..].to_vec());

    // The four forgotten generations held 4 x 2 MiB nothing else holds;
    // generation 0's pack also held the shared file, so it is repacked.
    let prune = run.fact("prune.result");
    assert!(prune["packs_deleted"].as_u64().unwrap() >= 3, "{prune}");
    assert!(prune["packs_repacked"].as_u64().unwrap() >= 1, "{prune}");
    // Format 3 keeps a snapshot's entries as blobs in packs (removed with
    // them), not as entries files.
    assert_eq!(prune["entries_removed"], 0, "{prune}");
    let after = tree_bytes(&env.repo);
    let forgotten = 8 * MIB as u64;
    let shrunk = before - after;
    assert!(
        shrunk >= forgotten && shrunk < forgotten + (MIB as u64) / 2,
        "repository went from {before} to {after} bytes; the forgotten unique data is {forgotten}"
    );
    let freed = prune["bytes_freed"].as_u64().unwrap();
    assert!(
        freed.abs_diff(shrunk) < 64 << 10,
        "prune says it freed {freed}, the repository shrank by {shrunk}"
    );

    let check = env.snap(["check", "--read-data"]).ok();
    assert_eq!(
        check.fact("check.result")["problems"],
        serde_json::json!([])
    );
    for (n, id) in all[4..].iter().enumerate() {
        let out = restore(&env, id, &format!("out{n}"));
        assert_same_tree(&expect[4 + n], &out, false);
    }

    // Forgetting twice equals forgetting once; a second prune has nothing
    // to do.
    let again = env.snap(["forget", "--keep-last", "2", "--prune"]).ok();
    assert_eq!(
        again.fact("forget.result")["removed"],
        serde_json::json!([])
    );
    let p = again.fact("prune.result");
    assert_eq!(
        (p["packs_deleted"].as_u64(), p["packs_repacked"].as_u64()),
        (Some(0), Some(0)),
        "{p}"
    );
    assert_eq!(tree_bytes(&env.repo), after);
}

#[test]
fn forget_refuses_what_would_remove_too_much() {
    let env = Env::new();
    let src = env.path("src");
    for g in 0..3 {
        generation(&src, g);
        env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    }
    let all = ids(&snapshots(&env, &[]));
    let files = repo_files(&env.repo);
    // No policy and no ids; ids and a policy; a tag that no snapshot has
    // as the only rule is a policy (it keeps the newest only).
    for args in [
        vec!["forget"],
        vec!["forget", all[0].as_str(), "--keep-last", "1"],
        vec!["forget", "--max-unused", "10%"],
    ] {
        let r = env.snap(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert_eq!(
            repo_files(&env.repo),
            files,
            "{args:?} changed the repository"
        );
    }
    let r = env.snap(["forget"]);
    assert!(r.stderr.contains("E_USAGE"), "{}", r.stderr);

    // Time rules on the command line: three snapshots taken seconds
    // apart are within an hour of the newest.
    let kept = |args: &[&str]| -> usize {
        let r = env.snap(args).ok();
        r.fact("forget.result")["kept"].as_array().unwrap().len()
    };
    assert_eq!(kept(&["forget", "--dry-run", "--keep-within", "1h"]), 3);
    // One hourly snapshot: the newest. (`--keep-hourly 5` would keep the
    // oldest too, as restic does when a rule has buckets to spare.)
    assert_eq!(kept(&["forget", "--dry-run", "--keep-hourly", "1"]), 1);
    assert_eq!(
        kept(&[
            "forget",
            "--dry-run",
            "--keep-daily",
            "1",
            "--keep-last",
            "2"
        ]),
        2
    );
    assert_eq!(
        repo_files(&env.repo),
        files,
        "a dry run changed the repository"
    );

    // A policy never removes a group's newest snapshot.
    let r = env.snap(["forget", "--keep-tag", "nosuchtag"]).ok();
    let f = r.fact("forget.result");
    assert_eq!(f["removed"].as_array().unwrap().len(), 2);
    assert_eq!(f["kept"][0]["snapshot_id"], all[2].as_str());
    assert_eq!(ids(&snapshots(&env, &[])), vec![all[2].clone()]);

    // Named by id, even the newest goes (restic does the same), by prefix.
    let r = env.snap(["forget", &all[2][..12]]).ok();
    assert_eq!(r.fact("forget.result")["removed"][0]["group"], "named");
    assert!(snapshots(&env, &[]).is_empty());
    // An unknown id removes nothing and says so.
    let r = env.snap(["forget", "0123456789ab"]);
    assert_eq!(r.code, 60, "{}", r.stderr);

    // Prune of a repository with no snapshots removes every pack.
    let r = env.snap(["prune"]).ok();
    assert_eq!(r.fact("prune.result")["blobs_used"], 0);
    let left: Vec<_> = repo_files(&env.repo)
        .into_iter()
        .filter(|(p, _)| p.starts_with("packs/") || p.starts_with("entries/"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    env.snap(["check", "--read-data"]).ok();
}

#[test]
fn prune_dry_run_and_thresholds() {
    let env = Env::new();
    let src = env.path("src");
    for g in 0..3 {
        generation(&src, g);
        env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    }
    // Forget the oldest by id: its pack holds the shared file (used) and
    // its own 2 MiB (now unused), 2 MiB unused against 5 MiB used.
    let all = ids(&snapshots(&env, &[]));
    env.snap(["forget", all[0].as_str()]).ok();
    let files = repo_files(&env.repo);
    let repacked = |args: &[&str]| -> u64 {
        let mut a = vec!["prune", "--dry-run"];
        a.extend_from_slice(args);
        let r = env.snap(&a).ok();
        r.fact("prune.result")["packs_repacked"].as_u64().unwrap()
    };
    let by_default = repacked(&[]);
    assert!(by_default >= 1, "the default 5 % threshold repacks");
    assert_eq!(
        repo_files(&env.repo),
        files,
        "a dry run changed the repository"
    );
    // Thresholds: every unused byte allowed, 50 % of the used bytes (2.5
    // MiB) allowed, a repack budget no pack fits in, one every pack fits.
    assert_eq!(repacked(&["--max-unused", "unlimited"]), 0);
    assert_eq!(repacked(&["--max-unused", "50%"]), 0);
    assert_eq!(repacked(&["--max-unused", "1M"]), by_default);
    assert_eq!(repacked(&["--max-repack", "1K"]), 0);
    assert_eq!(repacked(&["--max-repack", "1G"]), by_default);
    // Bad thresholds are usage errors.
    for bad in ["101%", "-1", "lots"] {
        let r = env.snap(["prune", "--max-unused", bad]);
        assert_eq!(r.code, 2, "--max-unused {bad}: {}", r.stderr);
    }
    env.snap(["prune"]).ok();
    env.snap(["check", "--read-data"]).ok();
    let r = env.snap(["prune", "--dry-run"]).ok();
    assert_eq!(
        r.fact("prune.result")["packs_repacked"],
        0,
        "the prune repacked"
    );
    for (n, id) in all[1..].iter().enumerate() {
        restore(&env, id, &format!("out{n}"));
    }
}

#[test]
fn diff_dump_find_stats_and_show() {
    let env = Env::new();
    let src = env.path("src");
    generation(&src, 0);
    symlink("notes.txt", src.join("d/link")).unwrap();
    fs::write(src.join("d/becomes-dir"), b"file\n").unwrap();
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let first = keep_copy_and(&env, &src, "gen0");
    generation(&src, 1);
    fs::remove_file(src.join("d/becomes-dir")).unwrap();
    fs::create_dir(src.join("d/becomes-dir")).unwrap();
    fs::remove_file(src.join("d/link")).unwrap();
    symlink("e/mode", src.join("d/link")).unwrap();
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let all = ids(&snapshots(&env, &[]));
    let (a, b) = (all[0].as_str(), all[1].as_str());

    // diff: + - M T U, with what changed.
    let r = env.snap(["diff", a, b]).ok();
    let changes: Vec<(String, String, Vec<String>)> = r
        .facts
        .iter()
        .filter(|f| f["event"] == "diff.change")
        .map(|f| {
            (
                f["marker"].as_str().unwrap().to_owned(),
                f["path"].as_str().unwrap().to_owned(),
                f["changed"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    let find = |p: &str| {
        changes
            .iter()
            .find(|c| c.1 == p)
            .unwrap_or_else(|| panic!("no change for {p} in {changes:?}"))
            .clone()
    };
    assert_eq!(find("/g0.gen").0, "-");
    assert_eq!(find("/g1.gen").0, "+");
    let notes = find("/d/notes.txt");
    assert_eq!(notes.0, "M");
    assert!(notes.2.contains(&"content".to_owned()), "{notes:?}");
    let mode = find("/d/e/mode");
    assert_eq!(mode.0, "U");
    assert!(mode.2.contains(&"mode".to_owned()), "{mode:?}");
    assert_eq!(find("/d/becomes-dir").0, "T");
    let link = find("/d/link");
    assert!(link.2.contains(&"target".to_owned()), "{link:?}");
    assert!(!changes.iter().any(|c| c.1 == "/common.bin"), "{changes:?}");
    let res = r.fact("diff.result");
    assert_eq!(
        (res["added"].as_u64(), res["removed"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(r.stdout.contains("-    /g0.gen"), "{}", r.stdout);
    // Restricted to a path.
    let r = env.snap(["diff", a, b, "d/e"]).ok();
    let res = r.fact("diff.result");
    assert_eq!(
        (res["added"].as_u64(), res["removed"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(res["metadata_changed"], 1);

    // dump: a file's bytes, a directory as a tar stream.
    let bytes = snap_stdout(
        &env,
        &[OsStr::new("dump"), OsStr::new(a), OsStr::new("g0.gen")],
    );
    assert!(
        bytes == fs::read(first.join("g0.gen")).unwrap(),
        "dumped bytes differ"
    );
    let tar = env.path("d.tar");
    fs::write(
        &tar,
        snap_stdout(&env, &[OsStr::new("dump"), OsStr::new(a), OsStr::new("/")]),
    )
    .unwrap();
    let x = env.path("untar");
    fs::create_dir(&x).unwrap();
    sh(&format!(
        "tar -xpf '{}' -C '{}'",
        tar.display(),
        x.display()
    ));
    assert_eq!(
        manifest(&x),
        manifest(&first),
        "the tar stream holds other bytes"
    );
    assert_eq!(
        fs::read_link(x.join("d/link")).unwrap(),
        Path::new("notes.txt")
    );
    assert_eq!(
        fs::symlink_metadata(x.join("d/e/mode"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o600
    );
    let r = env.snap(["dump", a, "no/such"]);
    assert_eq!(r.code, 60, "{}", r.stderr);

    // find: names in every snapshot, or the ones named.
    let r = env.snap(["find", "*.gen"]).ok();
    let matches: BTreeSet<(String, String)> = r
        .facts
        .iter()
        .filter(|f| f["event"] == "find.match")
        .map(|f| {
            (
                f["snapshot_id"].as_str().unwrap().to_owned(),
                f["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [(a, "g0.gen"), (b, "g1.gen")]
        .into_iter()
        .map(|(s, p)| (s.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(matches, want);
    let r = env.snap(["find", "g1.gen", "--snapshot", a]).ok();
    assert_eq!(r.fact("find.result")["matches"], 0);
    let r = env.snap(["find", "d/e/*"]).ok();
    assert_eq!(r.fact("find.result")["matches"], 2);

    // stats: restore size of one snapshot; unique data of all.
    let r = env.snap(["stats", a]).ok();
    let s = r.fact("stats.result");
    assert_eq!(s["restore_size"].as_u64().unwrap(), tree_bytes(&first));
    let r = env.snap(["stats"]).ok();
    let s = r.fact("stats.result");
    let unique = s["unique_bytes"].as_u64().unwrap();
    assert!(
        (5 * MIB as u64..5 * MIB as u64 + 4096).contains(&unique),
        "1 MiB shared + 2 x 2 MiB unique, got {unique}"
    );
    let packs = s["repository"]["packs"]["bytes"].as_u64().unwrap();
    let on_disk = tree_bytes(&env.repo.join("packs"));
    assert_eq!(packs, on_disk);

    // show: the record as stored.
    let shown: Value = serde_json::from_slice(&snap_stdout(
        &env,
        &[OsStr::new("show"), OsStr::new(&b[..8])],
    ))
    .unwrap();
    let stored: Value =
        serde_json::from_slice(&fs::read(env.repo.join(format!("snapshots/{b}.json"))).unwrap())
            .unwrap();
    assert_eq!(shown, stored);

    // ls --json: one ls.entry per entry.
    let r = env.snap(["ls", b]).ok();
    let paths: BTreeSet<&str> = r
        .facts
        .iter()
        .filter(|f| f["event"] == "ls.entry")
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains("d/e/mode") && paths.contains("g1.gen"),
        "{paths:?}"
    );
    let e = r.facts.iter().find(|f| f["path"] == "d/notes.txt").unwrap();
    assert_eq!(
        (e["kind"].as_str(), e["size"].as_u64()),
        (Some("file"), Some(13))
    );
}

fn keep_copy_and(env: &Env, src: &Path, name: &str) -> PathBuf {
    let p = env.path(name);
    keep_copy(src, &p);
    p
}

#[test]
fn filters_choose_snapshots_and_what_latest_means() {
    let env = Env::new();
    let (one, two) = (env.path("one"), env.path("two"));
    generation(&one, 0);
    generation(&two, 1);
    env.snap([
        OsStr::new("backup"),
        OsStr::new("--tag"),
        OsStr::new("daily"),
        one.as_os_str(),
    ])
    .ok();
    env.snap([OsStr::new("backup"), two.as_os_str()]).ok();
    let all = snapshots(&env, &[]);
    assert_eq!(all.len(), 2);
    let item = &all[0];
    for k in [
        "id", "short_id", "time", "host", "source", "tags", "tier", "files", "bytes",
    ] {
        assert!(!item[k].is_null(), "list item lacks {k}: {item}");
    }
    assert_eq!(item["tags"], serde_json::json!(["daily"]));

    assert_eq!(
        ids(&snapshots(&env, &["--tag", "daily"])),
        vec![ids(&all)[0].clone()]
    );
    let p = one.to_str().unwrap();
    assert_eq!(
        ids(&snapshots(&env, &["--path", p])),
        vec![ids(&all)[0].clone()]
    );
    assert!(snapshots(&env, &["--host", "elsewhere"]).is_empty());

    // latest is the newest snapshot the filter passes.
    let r = env.snap(["ls", "latest", "--tag", "daily"]).ok();
    assert!(r.facts.iter().any(|f| f["path"] == "g0.gen"));
    let r = env.snap(["ls", "latest"]).ok();
    assert!(r.facts.iter().any(|f| f["path"] == "g1.gen"));
    let r = env.snap(["ls", "latest", "--host", "elsewhere"]);
    assert_eq!(r.code, 60, "{}", r.stderr);

    // forget judges each group (host + path) alone: --keep-last 1 keeps
    // both, and a filter limits what it looks at.
    let r = env.snap(["forget", "--keep-last", "1"]).ok();
    assert_eq!(r.fact("forget.result")["kept"].as_array().unwrap().len(), 2);
    let r = env
        .snap([
            "forget",
            "--keep-last",
            "1",
            "--group-by",
            "host",
            "--tag",
            "daily",
        ])
        .ok();
    assert_eq!(r.fact("forget.result")["removed"], serde_json::json!([]));
    let r = env
        .snap(["forget", "--keep-last", "1", "--group-by", "host"])
        .ok();
    assert_eq!(
        r.fact("forget.result")["removed"][0]["snapshot_id"],
        ids(&all)[0].as_str()
    );
}

/// The hazard FORMAT.md argues away: a backup that deduplicates against
/// blobs only forgotten snapshots hold, beside a prune that would delete
/// them. Both take the exclusive lock, so one waits; whichever order they
/// run in, the repository checks clean and every snapshot restores.
#[test]
fn a_backup_and_a_prune_started_together_both_end_cleanly() {
    let env = Env::new();
    let src = env.path("src");
    let big = env.path("src/big");
    fs::create_dir_all(&big).unwrap();
    for round in 0..4u64 {
        // The data of this round, backed up once and forgotten...
        for f in 0..8u64 {
            fs::write(
                big.join(format!("f{f}")),
                pseudo_random(4 * MIB, (round * 100 + f) * 2 + 3),
            )
            .unwrap();
        }
        env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
        fs::write(src.join("marker"), format!("{round}")).unwrap();
        env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
        let all = ids(&snapshots(&env, &[]));
        let args: Vec<&str> = std::iter::once("forget")
            .chain(all.iter().map(String::as_str))
            .collect();
        env.snap(args).ok();
        // ...and backed up again while a prune that would delete it runs.
        let mut cmds: Vec<std::process::Child> = Vec::new();
        let backup_first = round % 2 == 0;
        for which in [backup_first, !backup_first] {
            let mut c = Command::new(snap_bin());
            let facts = env.path(&format!("together-{round}-{which}.jsonl"));
            c.arg("--repo")
                .arg(&env.repo)
                .arg("--facts")
                .arg(&facts)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if which {
                c.args([OsStr::new("backup"), src.as_os_str()]);
            } else {
                c.arg("prune");
            }
            c.args(["--lock-wait", "600000"]);
            cmds.push(c.spawn().expect("spawn"));
            std::thread::sleep(std::time::Duration::from_millis(5 * (round / 2)));
        }
        for c in cmds {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // How long each waited for the other (reported, not asserted: the
        // lock decides the order, the test only that both end cleanly).
        for which in [true, false] {
            let facts = read_facts(&env.path(&format!("together-{round}-{which}.jsonl")));
            let lock = facts
                .iter()
                .find(|f| f["event"] == "lock.acquired")
                .unwrap_or_else(|| panic!("round {round} {which}: {facts:?}"));
            eprintln!(
                "round {round}: {} waited {} ms ({} attempts)",
                if which { "backup" } else { "prune" },
                lock["lock_wait_ms"],
                lock["lock_attempts"]
            );
        }
        env.snap(["check", "--read-data"]).ok();
        let all = ids(&snapshots(&env, &[]));
        assert_eq!(all.len(), 1);
        let out = restore(&env, &all[0], &format!("out{round}"));
        assert_same_tree(&src, &out, false);
    }
}

/// A prune that fails after `forget` removed records says so: exit 4
/// (E_UNCONFIRMED) naming how many records went, with the prune's own
/// error; the prune removed nothing.
#[test]
fn forget_prune_that_fails_after_the_forget_says_the_records_were_removed() {
    let env = Env::new();
    let src = env.path("src");
    for g in 0..3 {
        generation(&src, g);
        env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    }
    // Lose the pack holding the newest snapshot's unique data: a used
    // blob is then in no pack on disk, and prune refuses to start.
    let newest = ids(&snapshots(&env, &[])).pop().unwrap();
    let r = env.snap(["stats", newest.as_str()]).ok();
    assert!(r.fact("stats.result")["blobs"].as_u64().unwrap() > 0);
    // The data pack written last holds the newest generation's own data
    // (the entries blobs' packs are the small ones).
    let newest_pack = lstat_tree(&env.repo.join("packs"))
        .into_iter()
        .filter(|(_, s)| s.kind == "file" && s.size > 256 << 10)
        .map(|(p, _)| env.repo.join("packs").join(String::from_utf8(p).unwrap()))
        .max_by_key(|p| fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    fs::remove_file(&newest_pack).unwrap();
    let before = repo_files(&env.repo);
    let r = env.snap(["forget", "--keep-last", "2", "--prune"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("1 snapshot records were removed") && r.stderr.contains("E_UNCONFIRMED"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("in no indexed pack on disk"),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.fact("forget.result")["removed"].as_array().unwrap().len(),
        1
    );
    // Only the record went.
    let after = repo_files(&env.repo);
    let gone: Vec<_> = before.difference(&after).collect();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert!(gone[0].0.starts_with("snapshots/"), "{gone:?}");
}
