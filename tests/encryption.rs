//! Encrypted repositories (`snap init --encrypt`, issue 15): round trips
//! at every tier with each compression mode, checked against the source
//! by `lstat`, bytes and `getfattr`; no repository file holds a canary
//! file's content, name, path, xattr value or unkeyed BLAKE3; a wrong or
//! missing password is `E_PASSWORD` (exit 63) from every source; `snap
//! key add|list|remove|passwd`; a flipped ciphertext byte in a pack, an
//! index file, a snapshot record or the config is caught; forget and
//! prune keep an encrypted repository whole.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{assert_same_tree, has_tool, pseudo_random, Env, Run};

const PW: &str = "correct horse battery staple";

/// Runs snap on `env.repo` with `SNAP_PASSWORD` set to `pw` (unset for
/// `None`) and stdin not a terminal.
fn esnap<I, S>(env: &Env, pw: Option<&str>, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(common::snap_bin());
    cmd.arg("--repo")
        .arg(&env.repo)
        .env_remove("SNAP_PASSWORD")
        .env_remove("SNAP_NEW_PASSWORD")
        .env_remove("SNAP_PASSWORD_FILE")
        .env_remove("SNAP_PASSWORD_COMMAND")
        .stdin(Stdio::null());
    if let Some(p) = pw {
        cmd.env("SNAP_PASSWORD", p);
    }
    env.run_cmd(cmd, args)
}

fn init(env: &Env) {
    let r = esnap(env, Some(PW), ["init", "--encrypt"]).ok();
    assert_eq!(r.fact("repo.init")["encrypted"], true);
}

/// Text that compresses, random bytes that do not, a small file, an
/// empty one, a symlink, a hard link and (with setfattr) a user xattr.
fn build(src: &Path) {
    fs::create_dir_all(src.join("d/e")).unwrap();
    let text: Vec<u8> = (0..60_000u32)
        .flat_map(|i| format!("{i:08} the quick brown fox {}\n", i % 97).into_bytes())
        .collect();
    fs::write(src.join("text"), &text).unwrap();
    fs::write(src.join("d/noise"), pseudo_random(1_200_000, 7)).unwrap();
    fs::write(src.join("d/e/small"), b"small file\n").unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("../text", src.join("d/link")).unwrap();
    fs::hard_link(src.join("d/e/small"), src.join("d/hard")).unwrap();
    if has_tool("setfattr") {
        common::sh(&format!(
            "setfattr -n user.note -v xattr-value-42 {}",
            src.join("d/e/small").display()
        ));
    }
}

/// (id, first tag) of every snapshot, from `snap list`'s fact.
fn snapshots(env: &Env) -> Vec<(String, String)> {
    let r = esnap(env, Some(PW), ["list"]).ok();
    r.fact("list.result")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["tags"][0].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn getfattr(p: &Path) -> String {
    let out = Command::new("getfattr")
        .args(["-d", "-m", "user\\."])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("# file"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_tier_round_trips_encrypted_with_every_compression_mode() {
    for mode in ["off", "auto", "max"] {
        let env = Env::new();
        init(&env);
        let src = env.path("src");
        build(&src);
        for tier in ["basic", "extended", "full"] {
            let b = esnap(
                &env,
                Some(PW),
                [
                    OsStr::new("backup"),
                    OsStr::new("--tier"),
                    OsStr::new(tier),
                    OsStr::new("--compression"),
                    OsStr::new(mode),
                    OsStr::new("--tag"),
                    OsStr::new(tier),
                    src.as_os_str(),
                ],
            )
            .ok();
            assert_eq!(b.fact("backup.summary")["encrypted"], true);
        }
        let c = esnap(&env, Some(PW), ["check", "--read-data"]).ok();
        assert_eq!(c.fact("check.result")["problems"], serde_json::json!([]));
        let s = esnap(&env, Some(PW), ["stats"]).ok();
        let s = s.fact("stats.result");
        let (stored, plain) = (
            s["unique_bytes"].as_u64().unwrap(),
            s["unique_plain_bytes"].as_u64().unwrap(),
        );
        if mode == "off" {
            // Sealing adds a nonce and a tag (40 bytes) to every blob.
            assert!(
                stored > plain && stored < plain + 40 * 64,
                "{stored} of {plain}"
            );
        } else {
            assert!(stored < plain - 1_000_000, "{mode}: {stored} of {plain}");
        }
        for (id, tier) in snapshots(&env) {
            let out = env.path(&format!("out-{tier}"));
            let r = esnap(
                &env,
                Some(PW),
                [
                    OsStr::new("restore"),
                    OsStr::new(&id),
                    OsStr::new("--target"),
                    out.as_os_str(),
                ],
            )
            .ok();
            assert_eq!(r.fact("restore.summary")["encrypted"], true);
            if tier == "basic" {
                for f in ["text", "d/noise", "d/e/small", "d/hard", "empty"] {
                    assert_eq!(
                        fs::read(src.join(f)).unwrap(),
                        fs::read(out.join(f)).unwrap(),
                        "{mode}/{tier}: {f}"
                    );
                }
            } else {
                assert_same_tree(&src, &out, false);
            }
            if tier == "full" && has_tool("getfattr") {
                let want = getfattr(&src.join("d/e/small"));
                assert!(want.contains("xattr-value-42"), "{want}");
                assert_eq!(getfattr(&out.join("d/e/small")), want);
            }
        }
        // A dump reads through the same sealed blobs.
        let d = esnap(&env, Some(PW), ["dump", "latest", "d/e/small"]).ok();
        assert_eq!(d.stdout, "small file\n");
    }
}

#[test]
fn no_repository_file_holds_a_canary_its_name_its_path_or_its_plain_hash() {
    let env = Env::new();
    init(&env);
    let src = env.path("src");
    let dir = src.join("canary-directory-q7");
    fs::create_dir_all(&dir).unwrap();
    let content: Vec<u8> = b"CANARY-CONTENT-3f9a2c ".repeat(4000);
    fs::write(dir.join("canary-name-b81d.txt"), &content).unwrap();
    // Small enough to be one blob: its unkeyed BLAKE3 would be its id.
    let small = b"canary small content 55e1\n".to_vec();
    fs::write(dir.join("small-canary"), &small).unwrap();
    if has_tool("setfattr") {
        common::sh(&format!(
            "setfattr -n user.canary -v xattr-canary-d00d {}",
            dir.join("small-canary").display()
        ));
    }
    for mode in ["off", "auto"] {
        esnap(
            &env,
            Some(PW),
            [
                OsStr::new("backup"),
                OsStr::new("--tier"),
                OsStr::new("full"),
                OsStr::new("--compression"),
                OsStr::new(mode),
                src.as_os_str(),
            ],
        )
        .ok();
        // The second run stores new entries (another mode changes nothing
        // in them, so touch the tree).
        fs::write(src.join(format!("after-{mode}")), b"x").unwrap();
    }
    let hash = blake3::hash(&small);
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("content", b"CANARY-CONTENT-3f9a2c".to_vec()),
        ("small content", b"canary small content 55e1".to_vec()),
        ("file name", b"canary-name-b81d".to_vec()),
        ("directory name", b"canary-directory-q7".to_vec()),
        ("source path", src.to_str().unwrap().as_bytes().to_vec()),
        ("xattr value", b"xattr-canary-d00d".to_vec()),
        ("xattr name", b"user.canary".to_vec()),
        ("unkeyed BLAKE3 hex", hash.to_hex().as_bytes().to_vec()),
        ("unkeyed BLAKE3 bytes", hash.as_bytes().to_vec()),
    ];
    let files = files_under(&env.repo);
    assert!(files.len() >= 6, "{files:?}");
    for f in &files {
        let bytes = fs::read(f).unwrap();
        let name = f.to_str().unwrap().as_bytes();
        for (what, n) in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == &n[..]),
                "{} holds the canary's {what}",
                f.display()
            );
            assert!(
                !name.windows(n.len()).any(|w| w == &n[..]),
                "{} is named by the canary's {what}",
                f.display()
            );
        }
    }
    // And snap itself reads it all back.
    let out = env.path("out");
    esnap(
        &env,
        Some(PW),
        [
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            out.as_os_str(),
        ],
    )
    .ok();
    assert_eq!(
        fs::read(out.join("canary-directory-q7/canary-name-b81d.txt")).unwrap(),
        content
    );
}

#[test]
fn a_wrong_or_missing_password_is_e_password_from_every_source() {
    let env = Env::new();
    init(&env);
    let src = env.path("src");
    build(&src);
    esnap(&env, Some(PW), [OsStr::new("backup"), src.as_os_str()]).ok();
    let refused = |r: Run, why: &str| {
        assert_eq!(r.code, 63, "{why}: {}", r.stderr);
        assert!(r.stderr.contains("[E_PASSWORD]"), "{why}: {}", r.stderr);
        assert_eq!(r.fact("command.failed")["error_id"], "E_PASSWORD", "{why}");
    };
    refused(esnap(&env, Some("wrong"), ["list"]), "wrong SNAP_PASSWORD");
    refused(esnap(&env, None, ["list"]), "no password, no terminal");
    refused(
        esnap(&env, Some("wrong"), [OsStr::new("backup"), src.as_os_str()]),
        "backup",
    );
    let out = env.path("out");
    refused(
        esnap(
            &env,
            None,
            [
                OsStr::new("restore"),
                OsStr::new("latest"),
                OsStr::new("--target"),
                out.as_os_str(),
            ],
        ),
        "restore",
    );
    assert!(!out.exists());
    let pwfile = env.path("pw");
    fs::write(&pwfile, format!("{PW}\n")).unwrap();
    let wrongfile = env.path("wrong");
    fs::write(&wrongfile, "nope\n").unwrap();
    let with = |flag: &str, value: &OsStr| {
        esnap(&env, None, [OsStr::new(flag), value, OsStr::new("list")])
    };
    with("--password-file", pwfile.as_os_str()).ok();
    refused(with("--password-file", wrongfile.as_os_str()), "wrong file");
    refused(
        with("--password-file", env.path("missing").as_os_str()),
        "missing file",
    );
    let cmd = format!("cat {}", pwfile.display());
    with("--password-command", OsStr::new(&cmd)).ok();
    refused(
        with("--password-command", OsStr::new("exit 7")),
        "failing command",
    );
    refused(
        with("--password-command", OsStr::new("echo nope")),
        "wrong command",
    );
    // A file given wins over SNAP_PASSWORD.
    let r = esnap(
        &env,
        Some("wrong"),
        [
            OsStr::new("--password-file"),
            pwfile.as_os_str(),
            OsStr::new("list"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Both flags at once are a usage error.
    let r = esnap(
        &env,
        None,
        [
            OsStr::new("--password-file"),
            pwfile.as_os_str(),
            OsStr::new("--password-command"),
            OsStr::new("true"),
            OsStr::new("list"),
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    // An empty password is refused at init.
    let e2 = Env::new();
    let r = esnap(&e2, Some(""), ["init", "--encrypt"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!e2.repo.join("config.json").exists());
}

fn key_ids(env: &Env, pw: &str) -> (String, Vec<String>) {
    let r = esnap(env, Some(pw), ["key", "list"]).ok();
    let f = r.fact("key.result");
    let ids = f["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    (f["current"].as_str().unwrap().to_owned(), ids)
}

#[test]
fn key_add_list_remove_and_passwd() {
    let env = Env::new();
    init(&env);
    let src = env.path("src");
    build(&src);
    esnap(&env, Some(PW), [OsStr::new("backup"), src.as_os_str()]).ok();
    let (first, ids) = key_ids(&env, PW);
    assert_eq!(ids, vec![first.clone()]);
    // add: a second password opens the same repository.
    let second = env.path("second");
    fs::write(&second, "second password\n").unwrap();
    let r = esnap(
        &env,
        Some(PW),
        [
            OsStr::new("key"),
            OsStr::new("add"),
            OsStr::new("--new-password-file"),
            second.as_os_str(),
        ],
    )
    .ok();
    let added = r.fact("key.result")["added"].as_str().unwrap().to_owned();
    assert_eq!(files_under(&env.repo.join("keys")).len(), 2);
    let (cur, ids) = key_ids(&env, "second password");
    assert_eq!(cur, added);
    assert_eq!(ids.len(), 2);
    let list = esnap(&env, Some("second password"), ["key", "list"]).ok();
    assert!(
        list.stdout.contains(&format!("*{}", &added[..12])),
        "{}",
        list.stdout
    );
    // remove: not the key in use; another one, by prefix.
    let r = esnap(&env, Some(PW), ["key", "remove", &first[..10]]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("the one the password opened"),
        "{}",
        r.stderr
    );
    let r = esnap(&env, Some(PW), ["key", "remove", "zz"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    esnap(
        &env,
        Some("second password"),
        ["key", "remove", &first[..10]],
    )
    .ok();
    let r = esnap(&env, Some(PW), ["list"]);
    assert_eq!(r.code, 63, "the removed key's password no longer opens");
    // passwd: the new password opens, the old one does not.
    let r = esnap(&env, Some("second password"), ["key", "passwd"]);
    assert_eq!(r.code, 63, "no new password given: {}", r.stderr);
    let mut cmd = Command::new(common::snap_bin());
    cmd.arg("--repo")
        .arg(&env.repo)
        .env("SNAP_PASSWORD", "second password")
        .env("SNAP_NEW_PASSWORD", "third password")
        .stdin(Stdio::null());
    let r = env.run_cmd(cmd, ["key", "passwd"]).ok();
    let f = r.fact("key.result");
    assert_eq!(f["removed"], added.as_str());
    assert_eq!(f["keys"].as_array().unwrap().len(), 1);
    assert_eq!(esnap(&env, Some("second password"), ["list"]).code, 63);
    let out = env.path("out");
    esnap(
        &env,
        Some("third password"),
        [
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            out.as_os_str(),
        ],
    )
    .ok();
    assert_same_tree(&src, &out, false);
    // A repository that is not encrypted has no keys.
    let plain = Env::new();
    plain.snap(["init"]).ok();
    let r = plain.snap(["key", "list"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// Flips one bit of `file` at `at` (from the end when negative).
fn flip(file: &Path, at: i64) {
    let mut b = fs::read(file).unwrap();
    let i = if at < 0 {
        (b.len() as i64 + at) as usize
    } else {
        at as usize
    };
    b[i] ^= 0x04;
    fs::write(file, &b).unwrap();
}

#[test]
fn a_flipped_ciphertext_byte_is_caught_by_restore_and_check() {
    let env = Env::new();
    init(&env);
    let src = env.path("src");
    build(&src);
    esnap(&env, Some(PW), [OsStr::new("backup"), src.as_os_str()]).ok();
    let repo_copy = env.path("pristine");
    common::sh(&format!(
        "cp -a {} {}",
        env.repo.display(),
        repo_copy.display()
    ));
    let reset = || {
        common::sh(&format!(
            "rm -rf {r} && cp -a {c} {r}",
            r = env.repo.display(),
            c = repo_copy.display()
        ))
    };
    let restore_fails = |what: &str, code: i32| {
        let out = env.path("out");
        let r = esnap(
            &env,
            Some(PW),
            [
                OsStr::new("restore"),
                OsStr::new("latest"),
                OsStr::new("--target"),
                out.as_os_str(),
            ],
        );
        assert_eq!(r.code, code, "{what}: {}", r.stderr);
        assert!(!out.exists(), "{what}");
    };
    let check_fails = |what: &str, name: &str| {
        let r = esnap(&env, Some(PW), ["check", "--read-data"]);
        assert_eq!(r.code, 90, "{what}: {}", r.stderr);
        assert!(r.stderr.contains(name), "{what}: {}", r.stderr);
    };
    // The largest pack holds the noise: a bit inside its first blob's
    // ciphertext (after the 24-byte nonce).
    let packs = files_under(&env.repo.join("packs"));
    let big = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let name = big.file_name().unwrap().to_str().unwrap().to_owned();
    flip(&big, 100);
    restore_fails("pack blob", 90);
    check_fails("pack blob", &name);
    reset();
    // The sealed footer (just before the 24-byte trailer).
    flip(&big, -30);
    check_fails("pack footer", &name);
    reset();
    // An index file: its name no longer matches; re-named to match, the
    // ciphertext does not open.
    let idx = files_under(&env.repo.join("index")).remove(0);
    flip(&idx, 50);
    check_fails("index file", "index");
    let renamed = idx.with_file_name(format!(
        "{}.idx",
        blake3::hash(&fs::read(&idx).unwrap()).to_hex()
    ));
    fs::rename(&idx, &renamed).unwrap();
    check_fails("index file, renamed", "does not authenticate");
    restore_fails("index file, renamed", 90);
    reset();
    // A snapshot record, re-named to match: it is damaged, not listed.
    let rec = files_under(&env.repo.join("snapshots")).remove(0);
    flip(&rec, 60);
    let renamed = rec.with_file_name(format!(
        "{}.json",
        blake3::hash(&fs::read(&rec).unwrap()).to_hex()
    ));
    fs::rename(&rec, &renamed).unwrap();
    check_fails("snapshot record", "does not authenticate");
    restore_fails("snapshot record", 60);
    reset();
    // The sealed config.
    let cfg = env.repo.join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    let s = c["sealed"].as_str().unwrap().to_owned();
    let flipped = if s.starts_with('A') { "B" } else { "A" };
    c["sealed"] = format!("{flipped}{}", &s[1..]).into();
    fs::write(&cfg, serde_json::to_vec(&c).unwrap()).unwrap();
    let r = esnap(&env, Some(PW), ["list"]);
    assert_eq!(r.code, 90, "{}", r.stderr);
    reset();
    esnap(&env, Some(PW), ["check", "--read-data"]).ok();
}

#[test]
fn forget_and_prune_keep_an_encrypted_repository_whole() {
    let env = Env::new();
    init(&env);
    let src = env.path("src");
    build(&src);
    for i in 0..3 {
        if i > 0 {
            fs::remove_file(src.join(format!("gen-{}", i - 1))).unwrap();
        }
        fs::write(
            src.join(format!("gen-{i}")),
            pseudo_random(600_000, 1000 + 10 * i),
        )
        .unwrap();
        esnap(
            &env,
            Some(PW),
            [
                OsStr::new("backup"),
                OsStr::new("--tag"),
                OsStr::new(&format!("g{i}")),
                src.as_os_str(),
            ],
        )
        .ok();
    }
    let p = esnap(&env, Some(PW), ["forget", "--keep-last", "1", "--prune"]).ok();
    let pr = p.fact("prune.result");
    assert!(pr["bytes_freed"].as_u64().unwrap() >= 1_000_000, "{pr}");
    esnap(&env, Some(PW), ["check", "--read-data"]).ok();
    let snaps = snapshots(&env);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].1, "g2");
    let out = env.path("out");
    esnap(
        &env,
        Some(PW),
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
fn a_key_of_another_repository_or_a_damaged_key_does_not_hide_the_right_one() {
    let a = Env::new();
    init(&a);
    let b = Env::new();
    init(&b);
    let src = a.path("src");
    build(&src);
    esnap(&a, Some(PW), [OsStr::new("backup"), src.as_os_str()]).ok();
    // B's key opens with the same password, but not A's config; whichever
    // sorts first, A opens with its own.
    for k in files_under(&b.repo.join("keys")) {
        fs::copy(&k, a.repo.join("keys").join(k.file_name().unwrap())).unwrap();
    }
    let r = esnap(&a, Some(PW), ["list"]).ok();
    assert_eq!(r.fact("list.result")["snapshots"], 1);
    // A damaged key file: named in check's problems; the others still open.
    let own = files_under(&a.repo.join("keys"))
        .into_iter()
        .find(|k| !b.repo.join("keys").join(k.file_name().unwrap()).exists())
        .unwrap();
    let mut bytes = fs::read(&own).unwrap();
    bytes.extend_from_slice(b" ");
    fs::write(
        a.repo.join("keys").join(format!("{}.json", "0".repeat(64))),
        &bytes,
    )
    .unwrap();
    let c = esnap(&a, Some(PW), ["check"]);
    assert_eq!(c.code, 90, "{}", c.stderr);
    assert!(
        c.stderr.contains("key file does not match its BLAKE3 id"),
        "{}",
        c.stderr
    );
    esnap(&a, Some(PW), ["list"]).ok();
    // Only B's key left: the password opens it, not A's config.
    fs::remove_file(&own).unwrap();
    fs::remove_file(a.repo.join("keys").join(format!("{}.json", "0".repeat(64)))).unwrap();
    let r = esnap(&a, Some(PW), ["list"]);
    assert_eq!(r.code, 90, "{}", r.stderr);
    assert!(r.stderr.contains("does not open"), "{}", r.stderr);
}

/// Runs `snap ARGS` on a terminal (`script(1)` gives it a pty) and types
/// each of `lines` after a pause (so the prompt has turned echo off).
fn on_terminal(env: &Env, args: &str, lines: &[&str]) -> (i32, String) {
    let typed: String = lines
        .iter()
        .map(|l| format!("sleep 1; printf '%s\\n' '{l}'; "))
        .collect();
    let cmd = format!(
        "({typed}sleep 1) | env -u SNAP_PASSWORD script -qec '{} --repo {} {args}' /dev/null",
        common::snap_bin(),
        env.repo.display()
    );
    let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn on_a_terminal_the_password_is_asked_without_echo() {
    if !has_tool("script") {
        eprintln!("skipped: script(1) (util-linux) is not installed");
        return;
    }
    let env = Env::new();
    // init asks twice; two different answers create nothing.
    let (code, out) = on_terminal(&env, "init --encrypt", &["tty-pw-1", "tty-pw-2"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("the two passwords differ"), "{out}");
    assert!(!env.repo.join("config.json").exists());
    let (code, out) = on_terminal(&env, "init --encrypt", &["tty-pw-1", "tty-pw-1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("enter new password:"), "{out}");
    assert!(!out.contains("tty-pw-1"), "the password was echoed: {out}");
    let (code, out) = on_terminal(&env, "list", &["tty-pw-1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("enter password for repository:"), "{out}");
    assert!(!out.contains("tty-pw-1"), "the password was echoed: {out}");
    let (code, out) = on_terminal(&env, "list", &["wrong"]);
    assert_eq!(code, 63, "{out}");
    assert_eq!(esnap(&env, Some("tty-pw-1"), ["list"]).code, 0);
}

#[test]
fn passwd_that_cannot_remove_the_old_key_says_both_passwords_still_open() {
    if !has_tool("strace") {
        eprintln!("skipped: strace is not installed");
        return;
    }
    let env = Env::new();
    init(&env);
    let out = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "trace=unlinkat", "-e"])
        .arg("inject=unlinkat:error=EIO")
        .arg(common::snap_bin())
        .arg("--repo")
        .arg(&env.repo)
        .args(["key", "passwd"])
        .env("SNAP_PASSWORD", PW)
        .env("SNAP_NEW_PASSWORD", "new password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("[E_UNCONFIRMED]"), "{stderr}");
    assert!(stderr.contains("the old password still opens"), "{stderr}");
    assert_eq!(esnap(&env, Some(PW), ["list"]).code, 0);
    assert_eq!(esnap(&env, Some("new password"), ["list"]).code, 0);
    assert_eq!(files_under(&env.repo.join("keys")).len(), 2);
}
