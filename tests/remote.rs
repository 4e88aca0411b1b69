//! Remote repositories (issue 16) against real servers started by the
//! tests (`common/servers.rs`): a SeaweedFS cluster behind its S3 gateway
//! with authentication on, and OpenSSH's sshd for SFTP.
//!
//! Round trips at tier full checked with `lstat`, bytes, `getfattr`,
//! `getfacl`, `lsattr`, `getcap` and `stat`; `check --read-data`;
//! forget/prune; two concurrent backups; the local cache (a damaged copy is
//! fetched again); faults: a volume server killed mid-backup, the S3
//! gateway stopped mid-backup, snap SIGKILLed mid-upload.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::servers::{Seaweed, Sshd};
use common::*;

/// Builds the source: the every-metadata fixture as root, else a small
/// tree of files, a symlink, a hard link and a big file.
fn source(env: &Env) -> (PathBuf, bool) {
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    let full = fixture_possible();
    if full {
        build_fixture(&src);
        remove_fixture_socket(&src);
    } else {
        fs::create_dir_all(src.join("d/e")).unwrap();
        fs::write(src.join("d/e/small"), b"small\n").unwrap();
        std::os::unix::fs::symlink("e/small", src.join("d/link")).unwrap();
        fs::hard_link(src.join("d/e/small"), src.join("hard")).unwrap();
    }
    // Several packs' worth, so uploads overlap.
    fs::write(src.join("big"), pseudo_random(40 << 20, 16)).unwrap();
    (src, full)
}

fn backup(env: &Env, src: &Path, full: bool) -> Run {
    env.snap([
        OsStr::new("backup"),
        OsStr::new("--tier"),
        OsStr::new(if full { "full" } else { "extended" }),
        src.as_os_str(),
    ])
}

fn snapshots(env: &Env) -> Vec<String> {
    snapshot_ids(env)
}

/// Restores `id` into a new directory and compares it with `src`.
fn restore_and_compare(env: &Env, id: &str, src: &Path, full: bool, name: &str) -> Run {
    let out = env.path(name);
    let r = env
        .snap([
            OsStr::new("restore"),
            OsStr::new(id),
            OsStr::new("--target"),
            out.as_os_str(),
        ])
        .ok();
    assert_same_tree(src, &out, false);
    if full {
        for cmd in METADATA_VIEWS {
            assert_eq!(view(src, cmd), view(&out, cmd), "`{cmd}` differs");
        }
    }
    r
}

/// Backup, no-change backup, restore, check, forget/prune, restore again.
fn round_trip(env: &Env) {
    let _unprotect = Unprotect(env.dir.path().to_path_buf());
    let (src, full) = source(env);
    let first = backup(env, &src, full).ok();
    let s = first.fact("backup.summary");
    assert_eq!(s["backup_durable"], true);
    let added = s["stats"]["bytes_added"].as_u64().unwrap();
    assert!(added > 40 << 20);
    // Uploads are counted: at least what was added, and not twice over.
    let up = s["transfer"]["uploaded"].as_u64().unwrap();
    assert!(up >= added && up < added * 2, "{s}");
    std::thread::sleep(Duration::from_millis(1100));
    let again = backup(env, &src, full).ok();
    let st = &again.fact("backup.summary")["stats"];
    assert_eq!(st["new_blobs"], 0, "{st}");
    assert!(st["bytes_added"].as_u64().unwrap() < 64 << 10, "{st}");
    let ids = snapshots(env);
    assert_eq!(ids.len(), 2);
    let r = restore_and_compare(env, &ids[0], &src, full, "out1");
    let down = r.fact("restore.summary")["transfer"]["downloaded"]
        .as_u64()
        .unwrap();
    assert!(down >= 40 << 20, "the packs came from the server: {down}");
    // Blocks fetched ahead are the ones read: about each pack byte once.
    assert!(
        down <= added + added / 4 + (4 << 20),
        "restore downloaded {down} bytes for {added} of packs"
    );
    let c = env.snap(["check", "--read-data"]).ok();
    assert_eq!(c.fact("check.result")["problem_count"], 0);
    // Forget the older snapshot and prune: the newer one still restores.
    fs::write(src.join("changed"), pseudo_random(3 << 20, 99)).unwrap();
    backup(env, &src, full).ok();
    let r = env.snap(["forget", "--keep-last", "1", "--prune"]).ok();
    assert!(r.facts.iter().any(|f| f["event"] == "prune.result"));
    let left = snapshots(env);
    assert_eq!(left.len(), 1);
    restore_and_compare(env, &left[0], &src, full, "out2");
    let c = env.snap(["check", "--read-data"]).ok();
    assert_eq!(c.fact("check.result")["problem_count"], 0);
}

#[test]
fn s3_round_trip_at_tier_full_with_check_and_forget_prune() {
    let Some(c) = Seaweed::start() else { return };
    let env = Env::remote(&c.location("roundtrip", "host/one"), c.env());
    round_trip(&env);
    // `snap init` made the bucket; a second repository under another
    // prefix of the same bucket is independent.
    let other = Env::remote(&c.location("roundtrip", "host/two"), c.env());
    other.snap(["init"]).ok();
    assert!(snapshots(&other).is_empty());
}

#[test]
fn sftp_round_trip_at_tier_full_with_check_and_forget_prune() {
    let Some(s) = Sshd::start() else { return };
    let root = tempfile::tempdir().unwrap();
    let env = Env::remote(&s.location(&root.path().join("repo")), s.env());
    round_trip(&env);
    // The files are where FORMAT.md says, with nothing left in tmp/.
    let repo = root.path().join("repo");
    assert!(repo.join("config.json").is_file());
    assert_eq!(fs::read_dir(repo.join("snapshots")).unwrap().count(), 1);
    assert_eq!(fs::read_dir(repo.join("tmp")).unwrap().count(), 0);
}

#[test]
fn two_concurrent_backups_into_s3_both_commit() {
    let Some(c) = Seaweed::start() else { return };
    let env = Env::remote(&c.location("concurrent", ""), c.env());
    env.snap(["init"]).ok();
    let mut kids = Vec::new();
    for i in 0..2 {
        let src = env.path(&format!("src{i}"));
        fs::create_dir(&src).unwrap();
        fs::write(src.join("data"), pseudo_random(20 << 20, i)).unwrap();
        let mut cmd = env.command();
        cmd.args(["backup", "--lock-wait", "120000"])
            .arg(&src)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        kids.push(cmd.spawn().unwrap());
    }
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(snapshots(&env).len(), 2);
    let c2 = env.snap(["check", "--read-data"]).ok();
    assert_eq!(c2.fact("check.result")["problem_count"], 0);
}

#[test]
fn a_damaged_cache_copy_is_fetched_again_and_a_lost_cache_costs_nothing() {
    let Some(c) = Seaweed::start() else { return };
    let env = Env::remote(&c.location("cache", "r"), c.env());
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"cached\n").unwrap();
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let ids = snapshots(&env);
    // `ls` reads the entries stream, whose blobs the cache then keeps.
    let ls = env.snap(["ls", "latest"]).ok();
    assert!(ls.stdout.contains('f'), "{}", ls.stdout);
    // Damage every cached copy.
    let cache = env.path("cache");
    let mut damaged = 0;
    for f in walk(&cache) {
        let p = f.to_string_lossy();
        if p.contains("/snapshots/") || p.contains("/index/") || p.contains("/blobs/") {
            let mut b = fs::read(&f).unwrap();
            b[0] ^= 0xff;
            fs::write(&f, b).unwrap();
            damaged += 1;
        }
    }
    // The record, the index file, and the entries stream's blob (format 3
    // keeps entries as blobs in packs; the cache keeps those blobs).
    assert!(
        damaged >= 3,
        "snapshot record, index file and entries blob cached"
    );
    assert!(
        walk(&cache)
            .iter()
            .any(|f| f.to_string_lossy().contains("/blobs/")),
        "entries blobs are cached"
    );
    assert_eq!(snapshots(&env), ids);
    restore_and_compare(&env, &ids[0], &src, false, "out");
    // The copies were replaced with good ones.
    for f in walk(&cache) {
        let id = f.file_stem().unwrap().to_string_lossy().into_owned();
        if f.parent().unwrap().ends_with("snapshots") {
            assert_eq!(blake3::hash(&fs::read(&f).unwrap()).to_hex().as_str(), id);
        }
    }
    fs::remove_dir_all(&cache).unwrap();
    assert_eq!(snapshots(&env), ids);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
            out.push(p);
        }
    }
    out
}

/// Starts a backup of `src` with facts to `facts`, returning the child.
fn spawn_backup(env: &Env, src: &Path, facts: &Path) -> std::process::Child {
    let mut cmd = env.command();
    cmd.arg("--facts")
        .arg(facts)
        .arg("backup")
        .arg(src)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Waits until `facts` holds an event `event` (at most 60 s).
fn wait_for_event(facts: &Path, event: &str) {
    let start = Instant::now();
    loop {
        let text = fs::read_to_string(facts).unwrap_or_default();
        if text.contains(&format!("\"event\":\"{event}\"")) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no {event}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A source large enough that a backup is still uploading a second after
/// it starts (160 MiB of incompressible data).
fn big_source(env: &Env) -> PathBuf {
    let src = env.path("big");
    fs::create_dir(&src).unwrap();
    for i in 0..8 {
        fs::write(src.join(format!("f{i}")), pseudo_random(20 << 20, 1000 + i)).unwrap();
    }
    src
}

#[test]
fn gateway_stopped_mid_backup_fails_in_bounded_time_and_nothing_becomes_visible() {
    let Some(mut c) = Seaweed::start() else {
        return;
    };
    let env = Env::remote(&c.location("gateway", ""), c.env());
    env.snap(["init"]).ok();
    let src = big_source(&env);
    let facts = env.path("facts-gw.jsonl");
    let child = spawn_backup(&env, &src, &facts);
    wait_for_event(&facts, "lock.acquired");
    std::thread::sleep(Duration::from_millis(300));
    c.kill("s3");
    let stopped = Instant::now();
    let out = child.wait_with_output().unwrap();
    let took = stopped.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the backup failed");
    assert!(
        took < Duration::from_secs(60),
        "gave up after {took:?} (documented bound for a refused connection: seconds; 2.6 min at most)"
    );
    assert!(err.contains("error ["), "a clear error: {err}");
    let failure = read_facts(&facts)
        .into_iter()
        .find(|f| f["event"] == "command.failed")
        .unwrap_or_else(|| panic!("an error fact: {err}"));
    assert!(
        failure["message"].as_str().unwrap().contains("127.0.0.1"),
        "the fact names the server: {failure}"
    );
    assert_eq!(failure["error_id"], "E_REMOTE", "{failure}");
    assert_eq!(out.status.code(), Some(64), "{err}");
    c.start_gateway();
    assert!(snapshots(&env).is_empty(), "nothing became visible");
    let ck = env.snap(["check"]).ok();
    assert_eq!(ck.fact("check.result")["problem_count"], 0);
    // The stale lock object of the failed run was removed on its way out,
    // so the next backup commits at once.
    let r = env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    assert_eq!(r.fact("lock.acquired")["lock_attempts"], 1);
    assert_eq!(snapshots(&env).len(), 1);
    restore_and_compare(&env, &snapshots(&env)[0], &src, false, "out");
}

#[test]
fn a_volume_server_killed_mid_backup_never_leaves_a_broken_repository() {
    let Some(mut c) = Seaweed::start() else {
        return;
    };
    let env = Env::remote(&c.location("volume", ""), c.env());
    env.snap(["init"]).ok();
    let src = big_source(&env);
    let facts = env.path("facts-vol.jsonl");
    let child = spawn_backup(&env, &src, &facts);
    wait_for_event(&facts, "lock.acquired");
    std::thread::sleep(Duration::from_millis(300));
    c.kill("volume1");
    let out = child.wait_with_output().unwrap();
    // With replication 000 some writes land on the dead server: the run
    // either retried onto the live ones and committed, or failed; either
    // way every listed snapshot restores and check passes once it is back.
    let committed = out.status.success();
    c.start_volume(1);
    std::thread::sleep(Duration::from_secs(2));
    let ids = snapshots(&env);
    assert_eq!(
        ids.len(),
        usize::from(committed),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ck = env.snap(["check", "--read-data"]).ok();
    assert_eq!(ck.fact("check.result")["problem_count"], 0);
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let ids = snapshots(&env);
    restore_and_compare(&env, &ids[ids.len() - 1], &src, false, "out");
}

#[test]
fn sigkill_mid_upload_leaves_garbage_that_prune_removes() {
    let Some(c) = Seaweed::start() else { return };
    let env = Env::remote(&c.location("sigkill", ""), c.env());
    env.snap(["init"]).ok();
    let small = env.path("small");
    fs::create_dir(&small).unwrap();
    fs::write(small.join("f"), b"first\n").unwrap();
    env.snap([OsStr::new("backup"), small.as_os_str()]).ok();
    let src = big_source(&env);
    // Kill at a few instants after the lock, until one lands after some
    // pack was uploaded and before the record was.
    let mut killed_mid_upload = false;
    for (n, delay) in [300u64, 150, 600, 80, 1000].into_iter().enumerate() {
        let facts = env.path(&format!("facts-kill{n}.jsonl"));
        let mut child = spawn_backup(&env, &src, &facts);
        wait_for_event(&facts, "lock.acquired");
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        let ids = snapshots(&env);
        if ids.len() > 1 {
            // It committed first: forget that snapshot and try earlier.
            env.snap(["forget", &ids[1]]).ok();
            continue;
        }
        // Only the first snapshot is listed, and it restores. The killed
        // run's lock object names a process of this host that is gone: it
        // is stale, and check does not wait for it.
        restore_and_compare(&env, &ids[0], &small, false, &format!("out{n}"));
        let ck = env.snap(["check"]).ok();
        assert_eq!(ck.fact("lock.acquired")["lock_attempts"], 1);
        if ck.fact("check.result")["garbage_packs"].as_u64().unwrap() > 0 {
            killed_mid_upload = true;
            break;
        }
    }
    assert!(
        killed_mid_upload,
        "no kill landed between a pack and the record"
    );
    env.snap(["prune"]).ok();
    let ck = env.snap(["check", "--read-data"]).ok();
    let f = ck.fact("check.result");
    assert_eq!(
        (f["garbage_packs"].as_u64(), f["problem_count"].as_u64()),
        (Some(0), Some(0)),
        "{f}"
    );
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let ids = snapshots(&env);
    assert_eq!(ids.len(), 2);
    restore_and_compare(&env, &ids[1], &src, false, "out-big");
}

/// `snap copy --from` with `env`'s repository as the destination.
fn copy(env: &Env, from: &Env, extra: &[&str]) -> Run {
    let mut cmd = env.command();
    for (k, v) in &from.vars {
        cmd.env(k, v);
    }
    if let Some(p) = &from.password {
        cmd.env("SNAP_FROM_PASSWORD", p);
    }
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("copy"),
        OsStr::new("--from"),
        from.repo.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    env.run_cmd(cmd, args)
}

/// Local -> S3 -> an encrypted local repository: every copy restores
/// byte-exact, a second copy skips, a backup after the copy stores nothing
/// new, and an encrypted destination gets its own keyed ids.
fn copies_between(a: &Env, b: &Env) {
    let src = a.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/big"), pseudo_random(6 << 20, 5)).unwrap();
    fs::write(src.join("small"), b"small\n").unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("d/big", src.join("link")).unwrap();
    a.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    fs::write(src.join("later"), pseudo_random(1 << 20, 6)).unwrap();
    a.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    b.snap(["init"]).ok();
    let r = copy(b, a, &[]).ok();
    let f = r.fact("copy.result");
    assert_eq!(f["copied"].as_array().unwrap().len(), 2, "{f}");
    let ids = snapshot_ids(b);
    assert_eq!(ids.len(), 2);
    restore_and_compare(b, &ids[1], &src, false, "copied");
    // Copying again finds both there.
    let again = copy(b, a, &[]).ok();
    let f = again.fact("copy.result");
    assert_eq!(f["skipped"].as_array().unwrap().len(), 2, "{f}");
    assert_eq!(snapshot_ids(b).len(), 2);
    // The copied data deduplicates a backup of the same tree.
    let st = b.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    assert_eq!(st.fact("backup.summary")["stats"]["new_blobs"], 0);
    let ck = b.snap(["check", "--read-data"]).ok();
    assert_eq!(ck.fact("check.result")["problem_count"], 0);
    // Into an encrypted repository, one snapshot, by id.
    let c = Env::encrypted("copy pw");
    c.snap(["init", "--encrypt"]).ok();
    let r = copy(&c, b, &[&ids[0]]).ok();
    assert_eq!(r.fact("copy.result")["copied"].as_array().unwrap().len(), 1);
    let cid = snapshot_ids(&c);
    let shown = c.snap(["show", &cid[0]]).ok();
    assert_eq!(
        shown.fact("show.result")["record"]["original"].as_str(),
        Some(snapshot_ids(a)[0].as_str()),
        "the original is the first source's id"
    );
    let out = c.path("enc");
    c.snap([
        OsStr::new("restore"),
        OsStr::new(&cid[0]),
        OsStr::new("--target"),
        out.as_os_str(),
    ])
    .ok();
    for name in ["d/big", "small", "empty"] {
        assert_eq!(
            fs::read(out.join(name)).unwrap(),
            fs::read(src.join(name)).unwrap()
        );
    }
    assert!(!out.join("later").exists(), "the first snapshot");
    let ck = c.snap(["check", "--read-data"]).ok();
    assert_eq!(ck.fact("check.result")["problem_count"], 0);
    // The filter picks source snapshots; the source password can come
    // from a file.
    let e = Env::new();
    e.snap(["init"]).ok();
    let pwfile = e.path("pw");
    fs::write(&pwfile, "copy pw\n").unwrap();
    let mut from_c = Env::new();
    from_c.repo = c.repo.clone();
    let none = copy(
        &e,
        &from_c,
        &[
            "--from-password-file",
            pwfile.to_str().unwrap(),
            "--path",
            "/elsewhere",
        ],
    )
    .ok();
    assert!(none.fact("copy.result")["copied"]
        .as_array()
        .unwrap()
        .is_empty());
    let one = copy(
        &e,
        &from_c,
        &[
            "--from-password-file",
            pwfile.to_str().unwrap(),
            "--path",
            src.to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(
        one.fact("copy.result")["copied"].as_array().unwrap().len(),
        1
    );
    // A wrong source password is E_PASSWORD and copies nothing.
    let d = Env::new();
    d.snap(["init"]).ok();
    let mut wrong = Env::encrypted("not it");
    wrong.repo = c.repo.clone();
    let r = copy(&d, &wrong, &[]);
    assert_eq!(r.code, 63, "{}", r.stderr);
    assert!(snapshot_ids(&d).is_empty());
}

#[test]
fn copy_from_local_into_s3_and_into_an_encrypted_repository() {
    let Some(c) = Seaweed::start() else { return };
    let a = Env::new();
    let b = Env::remote(&c.location("copy", "dest"), c.env());
    copies_between(&a, &b);
}

#[test]
fn copy_between_local_repositories() {
    copies_between(&Env::new(), &Env::new());
}

#[test]
fn a_gateway_that_stops_answering_fails_within_the_time_outs() {
    let Some(c) = Seaweed::start() else { return };
    let mut env = Env::remote(&c.location("hung", ""), c.env());
    env.vars.push(("SNAP_REMOTE_TIMEOUT", "2".into()));
    env.snap(["init"]).ok();
    let src = big_source(&env);
    let facts = env.path("facts-hung.jsonl");
    let child = spawn_backup(&env, &src, &facts);
    wait_for_event(&facts, "lock.acquired");
    std::thread::sleep(Duration::from_millis(300));
    // Stopped, not killed: connections are still accepted, nothing answers.
    c.signal("s3", "STOP");
    let stopped = Instant::now();
    let out = child.wait_with_output().unwrap();
    let took = stopped.elapsed();
    c.signal("s3", "CONT");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    // 5 attempts of at most 2 s each plus the backoff, per request; the
    // uploads in flight time out together.
    assert!(took < Duration::from_secs(60), "gave up after {took:?}");
    assert!(err.contains("E_REMOTE"), "{err}");
    assert!(snapshots(&env).is_empty(), "nothing became visible");
    let ck = env.snap(["check"]).ok();
    assert_eq!(ck.fact("check.result")["problem_count"], 0);
    let bad = env
        .command()
        .env("SNAP_REMOTE_TIMEOUT", "0")
        .arg("list")
        .output()
        .unwrap();
    assert_ne!(bad.status.code(), Some(0), "a time-out of 0 is refused");
}
