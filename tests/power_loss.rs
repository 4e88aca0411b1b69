//! Power loss: the repository lives on a loop-mounted image with kernel
//! writeback held back; at 20 instants snap is frozen (SIGSTOP) and the
//! backing image copied — what a power cut would leave on disk. Each copy,
//! mounted (journal replay), must pass `snap check`, restore every listed
//! snapshot byte-exact, and list every backup that had returned before the
//! freeze. This is the test that shows the fsyncs are in the right order.
//! The same harness cuts the power during prunes: every remaining snapshot
//! survives and the next prune completes.
//! Needs root (mount, /proc/sys/vm); skips otherwise.

mod common;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Sets /proc/sys/vm knobs, restoring the old values on drop.
struct Sysctl(Vec<(PathBuf, String)>);

impl Sysctl {
    fn set(knobs: &[(&str, &str)]) -> Sysctl {
        let mut saved = Vec::new();
        for (k, v) in knobs {
            let p = Path::new("/proc/sys/vm").join(k);
            saved.push((p.clone(), fs::read_to_string(&p).unwrap().trim().to_owned()));
            fs::write(&p, v).unwrap();
        }
        Sysctl(saved)
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        for (p, v) in &self.0 {
            if let Err(e) = fs::write(p, v) {
                eprintln!("could not restore {}: {e}", p.display());
            }
        }
    }
}

fn mount_image(img: &Path, at: &Path, fstype: &str) -> Mount {
    fs::create_dir_all(at).unwrap();
    let opts = if fstype == "xfs" {
        "loop,nouuid"
    } else {
        "loop"
    };
    let st = Command::new("mount")
        .args(["-t", fstype, "-o", opts])
        .arg(img)
        .arg(at)
        .status()
        .unwrap();
    assert!(st.success(), "mount {} failed", img.display());
    Mount(at.to_path_buf())
}

fn snap_in(repo: &Path, facts: &Path, args: &[&OsStr]) -> std::process::Output {
    Command::new(snap_bin())
        .arg("--repo")
        .arg(repo)
        .arg("--facts")
        .arg(facts)
        .args(args)
        .output()
        .unwrap()
}

/// A fresh `fstype` filesystem in `env`'s `repo.img`, mounted at `mnt`.
fn new_image(env: &Env, fstype: &str) -> (PathBuf, PathBuf, Mount) {
    let img = env.path("repo.img");
    // mkfs.xfs (and mkfs.btrfs) want more than 300 MB; the file is sparse
    // either way.
    fs::File::create(&img)
        .unwrap()
        .set_len(if fstype == "ext4" {
            256 << 20
        } else {
            320 << 20
        })
        .unwrap();
    sh(&match fstype {
        "xfs" => format!("mkfs.xfs -q -f '{}'", img.display()),
        "btrfs" => format!("mkfs.btrfs -q -f '{}'", img.display()),
        _ => format!("mkfs.ext4 -q -F '{}'", img.display()),
    });
    let mnt = env.path("mnt");
    let m = mount_image(&img, &mnt, fstype);
    (img, mnt, m)
}

fn run(fstype: &str) {
    let env = Env::new();
    let (img, mnt, _m) = new_image(&env, fstype);
    let repo = mnt.join("repo");
    let facts = env.path("facts.jsonl");
    assert!(snap_in(&repo, &facts, &[OsStr::new("init")])
        .status
        .success());
    let src = env.path("src");
    for d in 0..10 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..30 {
            fs::write(
                src.join(format!("d{d}/f{f}")),
                pseudo_random(4096 + (d * 30 + f) * 211, (d * 30 + f) as u64),
            )
            .unwrap();
        }
    }
    // Hold writeback back: nothing reaches the image unless snap syncs it.
    let _vm = Sysctl::set(&[
        ("dirty_expire_centisecs", "360000"),
        ("dirty_writeback_centisecs", "0"),
        ("dirty_background_ratio", "60"),
        ("dirty_ratio", "90"),
    ]);
    let t = Instant::now();
    assert!(snap_in(
        &repo,
        &facts,
        &[
            OsStr::new("backup"),
            OsStr::new("--tag"),
            OsStr::new("warm"),
            src.as_os_str()
        ]
    )
    .status
    .success());
    let duration = t.elapsed().max(Duration::from_millis(20));
    let mut manifests = BTreeMap::from([("warm".to_owned(), manifest(&src))]);
    let mut returned: Vec<String> = vec!["warm".into()];

    for i in 0..20u64 {
        for k in 0..15u64 {
            let (d, f) = ((i * 3 + k) % 10, (i * 7 + k * 2) % 30);
            fs::write(
                src.join(format!("d{d}/f{f}")),
                pseudo_random(8192, 10_000 + i * 100 + k),
            )
            .unwrap();
        }
        let tag = format!("t{i}");
        manifests.insert(tag.clone(), manifest(&src));
        let mut child = Command::new(snap_bin())
            .arg("--repo")
            .arg(&repo)
            .args([
                OsStr::new("backup"),
                OsStr::new("--tag"),
                OsStr::new(&tag),
                src.as_os_str(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A pseudo-random instant within the run.
        let frac = ((i * 7919 + 13) % 97) as f64 / 97.0;
        std::thread::sleep(duration.mul_f64(frac * 1.2));
        sh(&format!("kill -STOP {} 2>/dev/null || true", child.id()));
        let finished_before = matches!(child.try_wait(), Ok(Some(s)) if s.success());
        // The power cut: what the image holds right now.
        let copy = env.path(&format!("cut-{i}.img"));
        sh(&format!(
            "cp --sparse=always '{}' '{}'",
            img.display(),
            copy.display()
        ));
        sh(&format!("kill -CONT {} 2>/dev/null || true", child.id()));
        let ok = child.wait().unwrap().success();
        assert!(ok, "backup {tag} failed after SIGCONT");
        let must_list = returned.clone();
        if finished_before {
            // Exited before the freeze: its fsyncs had all returned.
            returned.push(tag.clone());
        }

        // Mount the copy (journal replay) and verify it.
        let cmnt = env.path(&format!("cut-{i}"));
        {
            let _c = mount_image(&copy, &cmnt, fstype);
            let crepo = cmnt.join("repo");
            let cf = env.path(&format!("cut-{i}.jsonl"));
            let check = snap_in(
                &crepo,
                &cf,
                &[OsStr::new("check"), OsStr::new("--read-data")],
            );
            assert!(
                check.status.success(),
                "power cut {i}: check failed: {}",
                String::from_utf8_lossy(&check.stderr)
            );
            let mut listed = Vec::new();
            for e in fs::read_dir(crepo.join("snapshots")).unwrap() {
                let p = e.unwrap().path();
                let rec: serde_json::Value =
                    serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
                listed.push((
                    p.file_stem().unwrap().to_str().unwrap().to_owned(),
                    rec["tags"][0].as_str().unwrap().to_owned(),
                ));
            }
            for t in &must_list {
                assert!(
                    listed.iter().any(|(_, tag)| tag == t),
                    "power cut {i}: backup {t} had returned but is not listed"
                );
            }
            for (id, tag) in &listed {
                let out = env.path(&format!("r-{i}-{tag}"));
                let r = snap_in(
                    &crepo,
                    &cf,
                    &[
                        OsStr::new("restore"),
                        OsStr::new(id),
                        OsStr::new("--target"),
                        out.as_os_str(),
                    ],
                );
                assert!(
                    r.status.success(),
                    "power cut {i}: restore {tag}: {}",
                    String::from_utf8_lossy(&r.stderr)
                );
                assert!(
                    manifest(&out) == manifests[tag],
                    "power cut {i}: snapshot {tag} is not byte-exact"
                );
                sh(&format!("rm -rf '{}'", out.display()));
            }
            read_facts(&cf);
        }
        fs::remove_file(&copy).unwrap();
        returned.push(tag.clone());
        returned.dedup();
    }
    read_facts(&facts);
}

#[test]
fn power_loss_at_twenty_instants_keeps_every_returned_snapshot() {
    if !is_root() || !has_tool("mkfs.ext4") {
        eprintln!("skipped: needs root (loop mounts, /proc/sys/vm) and mkfs.ext4");
        return;
    }
    run("ext4");
    if has_tool("mkfs.xfs") {
        run("xfs");
    } else {
        eprintln!("xfs part skipped: mkfs.xfs not installed");
    }
}

/// A durable backup after a `--no-durability` one depends on files the
/// durable run reuses rather than writes (the parent's entries file, its
/// packs and index): after a power cut right after it returned, it must
/// still be listed, pass `check --read-data` and restore byte-exact.
fn mixed_durability(fstype: &str) {
    let env = Env::new();
    let (img, mnt, _m) = new_image(&env, fstype);
    let repo = mnt.join("repo");
    let facts = env.path("facts.jsonl");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for f in 0..40 {
        fs::write(
            src.join(format!("f{f}")),
            pseudo_random(20_000 + f * 997, f as u64),
        )
        .unwrap();
    }
    let ok = |args: &[&OsStr]| {
        let o = snap_in(&repo, &facts, args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    ok(&[OsStr::new("init")]);
    ok(&[OsStr::new("backup"), src.as_os_str()]);
    sh("sync");
    let _vm = Sysctl::set(&[
        ("dirty_expire_centisecs", "360000"),
        ("dirty_writeback_centisecs", "0"),
        ("dirty_background_ratio", "60"),
        ("dirty_ratio", "90"),
    ]);
    for f in 0..10 {
        fs::write(src.join(format!("f{f}")), pseudo_random(30_000, 500 + f)).unwrap();
    }
    ok(&[
        OsStr::new("backup"),
        OsStr::new("--no-durability"),
        src.as_os_str(),
    ]);
    // Same tree: this durable run writes no pack and names its parent's
    // entries file.
    ok(&[
        OsStr::new("backup"),
        OsStr::new("--tag"),
        OsStr::new("durable"),
        src.as_os_str(),
    ]);
    let want = manifest(&src);
    let copy = env.path("cut.img");
    sh(&format!(
        "cp --sparse=always '{}' '{}'",
        img.display(),
        copy.display()
    ));
    let cmnt = env.path("cut");
    let _c = mount_image(&copy, &cmnt, fstype);
    let crepo = cmnt.join("repo");
    let cf = env.path("cut.jsonl");
    let check = snap_in(
        &crepo,
        &cf,
        &[OsStr::new("check"), OsStr::new("--read-data")],
    );
    assert!(
        check.status.success(),
        "{fstype}: check after the cut: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut durable = None;
    for e in fs::read_dir(crepo.join("snapshots")).unwrap() {
        let p = e.unwrap().path();
        let rec: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        if rec["tags"][0] == "durable" {
            durable = Some(p.file_stem().unwrap().to_str().unwrap().to_owned());
        }
    }
    let id = durable.unwrap_or_else(|| panic!("{fstype}: the durable backup is not listed"));
    let out = env.path("restored");
    let r = snap_in(
        &crepo,
        &cf,
        &[
            OsStr::new("restore"),
            OsStr::new(&id),
            OsStr::new("--target"),
            out.as_os_str(),
        ],
    );
    assert!(
        r.status.success(),
        "{fstype}: restore: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(manifest(&out) == want, "{fstype}: not byte-exact");
}

#[test]
fn a_durable_backup_after_a_no_durability_one_survives_a_power_cut() {
    if !is_root() || !has_tool("mkfs.ext4") {
        eprintln!("skipped: needs root (loop mounts, /proc/sys/vm) and mkfs.ext4");
        return;
    }
    mixed_durability("ext4");
    for (fs, tool) in [("xfs", "mkfs.xfs"), ("btrfs", "mkfs.btrfs")] {
        if has_tool(tool) {
            mixed_durability(fs);
        } else {
            eprintln!("{fs} part skipped: {tool} not installed");
        }
    }
}

/// A run killed after its packs were renamed into place but before the
/// `syncfs` that makes those names durable (strace kills it at the
/// packer's second `syncfs`); the next backup of the same data finds the
/// packs in place and writes none. After a power cut right after that
/// backup returned, its snapshot must restore.
fn killed_then_dedup(fstype: &str) {
    let env = Env::new();
    let (img, mnt, _m) = new_image(&env, fstype);
    let repo = mnt.join("repo");
    let facts = env.path("facts.jsonl");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for f in 0..20 {
        fs::write(
            src.join(format!("f{f}")),
            pseudo_random(100_000 + f * 1013, 70 + f as u64),
        )
        .unwrap();
    }
    let o = snap_in(&repo, &facts, &[OsStr::new("init")]);
    assert!(o.status.success());
    sh("sync");
    let _vm = Sysctl::set(&[
        ("dirty_expire_centisecs", "360000"),
        ("dirty_writeback_centisecs", "0"),
        ("dirty_background_ratio", "60"),
        ("dirty_ratio", "90"),
    ]);
    let killed = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=syncfs"])
        .args(["-e", "inject=syncfs:error=EIO:signal=KILL:when=2"])
        .arg(snap_bin())
        .arg("--repo")
        .arg(&repo)
        .arg("backup")
        .arg(&src)
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the run was meant to be killed");
    let packs_in_place = fs::read_dir(repo.join("packs")).unwrap().count();
    assert!(
        packs_in_place > 0,
        "the killed run renamed no pack into place"
    );
    let o = snap_in(
        &repo,
        &facts,
        &[
            OsStr::new("backup"),
            OsStr::new("--tag"),
            OsStr::new("after"),
            src.as_os_str(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = manifest(&src);
    let copy = env.path("cut.img");
    sh(&format!(
        "cp --sparse=always '{}' '{}'",
        img.display(),
        copy.display()
    ));
    let cmnt = env.path("cut");
    let _c = mount_image(&copy, &cmnt, fstype);
    let crepo = cmnt.join("repo");
    let cf = env.path("cut.jsonl");
    let check = snap_in(
        &crepo,
        &cf,
        &[OsStr::new("check"), OsStr::new("--read-data")],
    );
    assert!(
        check.status.success(),
        "{fstype}: check after the cut: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = env.path("restored");
    let r = snap_in(
        &crepo,
        &cf,
        &[
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            out.as_os_str(),
        ],
    );
    assert!(
        r.status.success(),
        "{fstype}: restore: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(manifest(&out) == want, "{fstype}: not byte-exact");
}

#[test]
fn packs_a_killed_run_left_in_place_are_made_durable_by_the_run_that_reuses_them() {
    if !is_root() || !has_tool("mkfs.ext4") || !has_tool("strace") {
        eprintln!("skipped: needs root (loop mounts, /proc/sys/vm), mkfs.ext4 and strace");
        return;
    }
    killed_then_dedup("ext4");
    for (fs, tool) in [("xfs", "mkfs.xfs"), ("btrfs", "mkfs.btrfs")] {
        if has_tool(tool) {
            killed_then_dedup(fs);
        } else {
            eprintln!("{fs} part skipped: {tool} not installed");
        }
    }
}

/// The generations the prune test keeps; the others are forgotten first.
const KEPT: [&str; 3] = ["g2", "g5", "g7"];

fn snap_ok(repo: &Path, facts: &Path, args: &[&OsStr], what: &str) -> std::process::Output {
    let o = snap_in(repo, facts, args);
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Power cuts during a prune: the repository holds the eight generations
/// of `prune_history` with all but [`KEPT`] forgotten; at instants spread
/// over the prune, snap is frozen and the image copied, until `cuts` have
/// landed while it ran. Each copy
/// must pass `check --read-data`, hold exactly the kept snapshots, restore
/// them byte-exact, and let the next prune complete.
fn prune_cuts(fstype: &str, cuts: u32) {
    let env = Env::new();
    let (img, mnt, m) = new_image(&env, fstype);
    let repo = mnt.join("repo");
    let facts = env.path("facts.jsonl");
    snap_ok(&repo, &facts, &[OsStr::new("init")], "init");
    let src = env.path("src");
    let manifests = prune_history(&src, 8, |tag| {
        snap_ok(
            &repo,
            &facts,
            &[
                OsStr::new("backup"),
                OsStr::new("--tag"),
                OsStr::new(tag),
                src.as_os_str(),
            ],
            tag,
        );
    });
    let mut forget: Vec<OsString> = vec!["forget".into()];
    for (id, tag) in tagged_snapshots(&repo) {
        if !KEPT.contains(&tag.as_str()) {
            forget.push(id.into());
        }
    }
    let forget: Vec<&OsStr> = forget.iter().map(OsString::as_os_str).collect();
    snap_ok(&repo, &facts, &forget, "forget");
    // The starting state, whole on the image.
    drop(m);
    let template = env.path("template.img");
    sh(&format!(
        "cp --sparse=always '{}' '{}'",
        img.display(),
        template.display()
    ));
    let fresh = || {
        sh(&format!(
            "cp --sparse=always '{}' '{}'",
            template.display(),
            img.display()
        ));
        mount_image(&img, &mnt, fstype)
    };
    // A cut image: mounted (journal replay), it passes `check
    // --read-data`, holds exactly the kept snapshots, restores them
    // byte-exact, and the next prune completes.
    let verify = |copy: &Path, what: &str, name: &str| {
        let cmnt = env.path(&format!("cut-{name}"));
        {
            let _c = mount_image(copy, &cmnt, fstype);
            let crepo = cmnt.join("repo");
            let cf = env.path(&format!("cut-{name}.jsonl"));
            snap_ok(
                &crepo,
                &cf,
                &[OsStr::new("check"), OsStr::new("--read-data")],
                &format!("{what}: check"),
            );
            let snaps = tagged_snapshots(&crepo);
            let mut tags: Vec<&str> = snaps.iter().map(|(_, t)| t.as_str()).collect();
            tags.sort_unstable();
            assert_eq!(tags, KEPT.to_vec(), "{what}: the snapshots");
            for (id, tag) in &snaps {
                let out = env.path(&format!("r-{name}-{tag}"));
                snap_ok(
                    &crepo,
                    &cf,
                    &[
                        OsStr::new("restore"),
                        OsStr::new(id),
                        OsStr::new("--target"),
                        out.as_os_str(),
                    ],
                    &format!("{what}: restore {tag}"),
                );
                assert!(
                    manifest(&out) == manifests[tag],
                    "{what}: snapshot {tag} is not byte-exact"
                );
                sh(&format!("rm -rf '{}'", out.display()));
            }
            snap_ok(
                &crepo,
                &cf,
                &[OsStr::new("prune")],
                &format!("{what}: the next prune"),
            );
            snap_ok(
                &crepo,
                &cf,
                &[OsStr::new("check"), OsStr::new("--read-data")],
                &format!("{what}: check after the next prune"),
            );
            read_facts(&cf);
        }
        fs::remove_file(copy).unwrap();
    };
    let _vm = Sysctl::set(&[
        ("dirty_expire_centisecs", "360000"),
        ("dirty_writeback_centisecs", "0"),
        ("dirty_background_ratio", "60"),
        ("dirty_ratio", "90"),
    ]);
    let mut duration = Duration::MAX;
    for _ in 0..2 {
        let _m = fresh();
        let t = Instant::now();
        snap_ok(&repo, &facts, &[OsStr::new("prune")], "timed prune");
        duration = duration.min(t.elapsed());
    }
    // First a cut right after each barrier (`syncfs`) of the prune, found
    // with strace: each durable state the prune passes through, in turn.
    let args = [OsStr::new("--repo"), repo.as_os_str(), OsStr::new("prune")];
    let syncs = {
        let _m = fresh();
        count_syscalls("syncfs", &args)
    };
    for n in 1..=syncs.unwrap_or(0) {
        let copy = env.path(&format!("sync-{n}.img"));
        {
            let _m = fresh();
            let mut child = snap_signalled_at("syncfs", n, "STOP", &args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            wait_stopped(child.id());
            sh(&format!(
                "cp --sparse=always '{}' '{}'",
                img.display(),
                copy.display()
            ));
            resume(&mut child);
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{fstype}: the prune stopped at syncfs {n} failed after SIGCONT: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        verify(
            &copy,
            &format!("{fstype} power cut after syncfs {n} of a prune"),
            &format!("s{n}"),
        );
    }
    match syncs {
        Some(n) => eprintln!("{fstype}: a power cut after each of the prune's {n} syncfs"),
        None => eprintln!("{fstype}: strace missing: no cuts at the sync points"),
    }
    // Cut until `cuts` have landed inside a prune (at most three times as
    // many tries), at instants spread over 90 % of its measured duration
    // (golden-ratio steps); a prune that exits first refines the estimate.
    let mut landed = 0;
    let mut tries = 0;
    while landed < cuts && tries < 3 * cuts {
        let i = tries;
        tries += 1;
        let frac = 0.05 + 0.85 * ((f64::from(i) * 0.618_034) % 1.0);
        let copy = env.path(&format!("cut-{i}.img"));
        {
            let _m = fresh();
            let mut child = Command::new(snap_bin())
                .arg("--repo")
                .arg(&repo)
                .arg("prune")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let started = Instant::now();
            std::thread::sleep(duration.mul_f64(frac));
            sh(&format!("kill -STOP {} 2>/dev/null || true", child.id()));
            if matches!(child.try_wait(), Ok(Some(_))) {
                duration = duration.min(started.elapsed());
            } else {
                landed += 1;
            }
            // The power cut: what the image holds right now.
            sh(&format!(
                "cp --sparse=always '{}' '{}'",
                img.display(),
                copy.display()
            ));
            sh(&format!("kill -CONT {} 2>/dev/null || true", child.id()));
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{fstype}: the prune cut at {i} failed after SIGCONT: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        verify(
            &copy,
            &format!("{fstype} power cut {i} during prune"),
            &format!("t{i}"),
        );
    }
    eprintln!(
        "{fstype}: {tries} power cuts over a prune of {duration:?}; {landed} landed while it ran"
    );
    assert!(
        landed >= cuts,
        "{fstype}: only {landed} of {tries} cuts landed inside the prune"
    );
    read_facts(&facts);
}

#[test]
fn power_cuts_during_a_prune_keep_every_remaining_snapshot() {
    if !is_root() || !has_tool("mkfs.ext4") {
        eprintln!("skipped: needs root (loop mounts, /proc/sys/vm) and mkfs.ext4");
        return;
    }
    prune_cuts("ext4", 10);
    if has_tool("mkfs.xfs") {
        prune_cuts("xfs", 10);
    } else {
        eprintln!("xfs part skipped: mkfs.xfs not installed");
    }
}

/// Waits until the snap process strace (`tracer`) runs is stopped: all its
/// threads in a stop for three polls in a row, 20 ms apart (a tracee is
/// in a stop for microseconds at each traced syscall too).
fn wait_stopped(tracer: u32) {
    let start = Instant::now();
    let mut streak = 0;
    while start.elapsed() < Duration::from_secs(30) {
        let pid = fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .map(str::to_owned);
        let stopped = pid.is_some_and(|pid| {
            fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
                tasks.filter_map(Result::ok).all(|t| {
                    fs::read_to_string(t.path().join("stat")).is_ok_and(|st| {
                        st.rsplit_once(')')
                            .and_then(|(_, rest)| rest.split_whitespace().next())
                            .is_some_and(|state| state == "t" || state == "T")
                    })
                })
            })
        });
        streak = if stopped { streak + 1 } else { 0 };
        if streak >= 3 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("snap under strace {tracer} did not stop within 30 s");
}

/// Sends SIGCONT to the snap process under strace `child` until the run
/// ends: a SIGCONT that arrives while strace is still delivering the
/// injected SIGSTOP is consumed before the stop takes hold.
fn resume(child: &mut std::process::Child) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        sh(&format!("pkill -CONT -P {} || true", child.id()));
        for _ in 0..10 {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("snap under strace {} did not resume", child.id());
}
