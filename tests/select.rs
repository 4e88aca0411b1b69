//! What a backup selects: `-x/--one-file-system` (a tmpfs mounted inside
//! the source), `--exclude-caches` (CACHEDIR.TAG), `--exclude-if-present`,
//! `--exclude-file` with gitignore rules (negation, `dir/`, anchored and
//! absolute paths). Each is checked on the restored tree with `find`, an
//! independent view, and on the policy in the summary fact.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// The paths under `root`, relative, sorted (`find -printf '%P\n'`).
fn found(root: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(root)
        .args(["-mindepth", "1", "-printf", "%P\\n"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut v: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

fn write(p: &Path, bytes: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

#[test]
fn one_file_system_keeps_a_mount_point_empty() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a");
    let mnt = src.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m,mode=0750", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let _guard = Mount(mnt.clone());
    write(&mnt.join("deep/inside"), b"on the tmpfs");
    // Without -x the mount is crossed.
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    env.restore_latest(env.path("all")).ok();
    assert_eq!(
        fs::read(env.path("all/mnt/deep/inside")).unwrap(),
        b"on the tmpfs"
    );
    // With -x the mount point is kept, empty, with the mode stat sees.
    let r = env
        .snap([OsStr::new("backup"), OsStr::new("-x"), src.as_os_str()])
        .ok();
    assert_eq!(r.fact("backup.summary")["policy"]["one_file_system"], true);
    let out = env.path("x");
    env.restore_latest(&out).ok();
    assert_eq!(found(&out), ["a.txt", "mnt"]);
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    };
    assert_eq!(mode(&out.join("mnt")), mode(&mnt));
}

#[test]
fn cache_tags_and_if_present_keep_their_directories_empty() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a");
    write(
        &src.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    );
    write(&src.join("cache/sub/blob"), b"cached");
    // A tag without the signature does not count.
    write(&src.join("fake/CACHEDIR.TAG"), b"Signature: 0000\n");
    write(&src.join("proj/node_modules/.nobackup"), b"");
    write(&src.join("proj/node_modules/m.js"), b"m");
    write(&src.join("proj/src/main.rs"), b"fn main() {}");
    let r = env
        .snap([
            OsStr::new("backup"),
            OsStr::new("--exclude-caches"),
            OsStr::new("--exclude-if-present"),
            OsStr::new(".nobackup"),
            src.as_os_str(),
        ])
        .ok();
    let s = r.fact("backup.summary");
    assert_eq!(s["policy"]["exclude_caches"], true);
    assert_eq!(
        s["policy"]["exclude_if_present"],
        serde_json::json!([".nobackup"])
    );
    let out = env.path("out");
    env.restore_latest(&out).ok();
    assert_eq!(
        found(&out),
        [
            "a.txt",
            "cache",
            "fake",
            "fake/CACHEDIR.TAG",
            "proj",
            "proj/node_modules",
            "proj/src",
            "proj/src/main.rs"
        ]
    );
    // Without the flags everything is kept.
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let all = env.path("all");
    env.restore_latest(&all).ok();
    assert_same_tree(&src, &all, false);
    // A name with a `/` is refused.
    let r = env.snap([
        OsStr::new("backup"),
        OsStr::new("--exclude-if-present"),
        OsStr::new("a/b"),
        src.as_os_str(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("a/b"), "{}", r.stderr);
}

#[test]
fn exclude_file_with_gitignore_rules_and_absolute_paths() {
    let env = Env::new();
    let src = env.path("src");
    for p in [
        "logs/a.log",
        "logs/keep.log",
        "x/logs/b.log",
        "bash/file",
        "doc/bash",
        "top",
        "sub/top",
        "abs/gone",
        "abs/kept",
    ] {
        write(&src.join(p), p.as_bytes());
    }
    let list = env.path("excludes.txt");
    let abs = src.join("abs/gone");
    fs::write(
        &list,
        format!(
            "# comment\n\n*.log\n!keep.log\nbash/\n/top\n{}\n",
            abs.display()
        ),
    )
    .unwrap();
    let r = env
        .snap([
            OsStr::new("backup"),
            OsStr::new("--exclude-file"),
            list.as_os_str(),
            src.as_os_str(),
        ])
        .ok();
    let policy = &r.fact("backup.summary")["policy"];
    assert_eq!(policy["excludes"].as_array().unwrap().len(), 5, "{policy}");
    let out = env.path("out");
    env.restore_latest(&out).ok();
    assert_eq!(
        found(&out),
        [
            "abs",
            "abs/kept",
            "doc",
            "doc/bash",
            "logs",
            "logs/keep.log",
            "sub",
            "sub/top",
            "x",
            "x/logs"
        ]
    );
    // A missing exclude file is a usage error naming it; nothing is written.
    let before = snapshot_ids(&env).len();
    let r = env.snap([
        OsStr::new("backup"),
        OsStr::new("--exclude-file"),
        env.path("missing.txt").as_os_str(),
        src.as_os_str(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("missing.txt"), "{}", r.stderr);
    assert_eq!(snapshot_ids(&env).len(), before);
    // Excluding the source itself is refused.
    let r = env.snap([
        OsStr::new("backup"),
        OsStr::new("--exclude"),
        src.as_os_str(),
        src.as_os_str(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn dry_run_counts_what_a_backup_would_store_and_writes_nothing() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), &pseudo_random(300_000, 1));
    env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    write(&src.join("b"), &pseudo_random(500_000, 2));
    let before = manifest(&env.repo);
    let names: Vec<_> = lstat_tree(&env.repo).into_keys().collect();
    let r = env
        .snap([
            OsStr::new("backup"),
            OsStr::new("--dry-run"),
            src.as_os_str(),
        ])
        .ok();
    assert!(
        r.stdout.contains("dry run, nothing written"),
        "{}",
        r.stdout
    );
    let s = r.fact("backup.summary");
    assert_eq!(s["dry_run"], true);
    assert_eq!(s["backup_durable"], false);
    assert_eq!(s["stats"]["files"], 2);
    let would = s["stats"]["bytes_added"].as_u64().unwrap();
    assert!(would >= 500_000, "{s}");
    // The repository is byte-identical: same files, same contents.
    assert_eq!(manifest(&env.repo), before);
    let after: Vec<_> = lstat_tree(&env.repo).into_keys().collect();
    assert_eq!(after, names, "no file or directory made or removed");
    assert_eq!(snapshot_ids(&env).len(), 1);
    // The real backup adds what the dry run said (the same packs, index,
    // entries and record, give or take the record's time and counts).
    let r = env.snap([OsStr::new("backup"), src.as_os_str()]).ok();
    let added = r.fact("backup.summary")["stats"]["bytes_added"]
        .as_u64()
        .unwrap();
    assert!(added.abs_diff(would) < 4096, "{added} vs {would}");
    // No repository: an error, and none is created.
    let none = env.path("none");
    let r = env.run_cmd(
        Command::new(snap_bin()),
        [
            OsStr::new("--repo"),
            none.as_os_str(),
            OsStr::new("backup"),
            OsStr::new("--dry-run"),
            src.as_os_str(),
        ],
    );
    assert_ne!(r.code, 0);
    assert!(!none.exists());
}

/// Two sources and a single file in one snapshot, then the same list
/// through `--files-from`: the restored tree holds each under its path
/// from `/` and nothing else beside it (checked by `find`, the byte and
/// metadata views), the record and facts list every source, the second
/// run takes the first as its parent, and `--path` picks by any source.
#[test]
fn several_sources_in_one_snapshot_and_files_from() {
    let env = Env::new();
    let full = fixture_possible();
    let one = env.path("src/one");
    if full {
        fs::create_dir_all(&one).unwrap();
        build_fixture(&one);
        remove_fixture_socket(&one);
    } else {
        write(&one.join("a/b.txt"), b"plain tree");
    }
    let note = env.path("src/other/notes.txt");
    write(&note, b"a single file");
    write(&env.path("src/other/left-out"), b"not a source");
    let doc = Path::new("/usr/share/doc");
    let tier = if full { "full" } else { "extended" };
    fn args<'a>(tier: &'a str, extra: &[&'a OsStr]) -> Vec<&'a OsStr> {
        let mut v: Vec<&OsStr> = vec![OsStr::new("backup"), OsStr::new("--tier"), OsStr::new(tier)];
        v.extend_from_slice(extra);
        v
    }
    let r = env
        .snap(args(
            tier,
            &[one.as_os_str(), note.as_os_str(), doc.as_os_str()],
        ))
        .ok();
    let s = r.fact("backup.summary");
    assert_eq!(s["source"], "/");
    let mut want = vec![
        one.display().to_string(),
        note.display().to_string(),
        "/usr/share/doc".to_owned(),
    ];
    want.sort();
    assert_eq!(s["sources"], serde_json::json!(want));
    let first = s["snapshot_id"].as_str().unwrap().to_owned();

    let out = env.path("out");
    env.restore_latest(&out).ok();
    let rel = |p: &Path| out.join(p.strip_prefix("/").unwrap());
    // Between the root and a source, only the names leading to one.
    let base = env.path("src");
    assert_eq!(found(&rel(&base)), found_sources(&rel(&base)));
    assert_eq!(fs::read(rel(&note)).unwrap(), b"a single file");
    assert_eq!(found(&rel(doc)), found(doc));
    assert_same_tree(doc, &rel(doc), false);
    assert_same_tree(&one, &rel(&one), false);
    if full {
        for v in METADATA_VIEWS {
            assert_eq!(view(&one, v), view(&rel(&one), v), "{v}");
        }
    }
    let top: Vec<String> = found(&out)
        .into_iter()
        .filter(|p| !p.contains('/'))
        .collect();
    let first_of = |p: &Path| {
        p.strip_prefix("/")
            .unwrap()
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned()
    };
    let mut tops = vec![first_of(&one), "usr".to_owned()];
    tops.sort();
    tops.dedup();
    assert_eq!(top, tops);

    // The same sources from a list (comments, blank lines, a trailing
    // slash): the first snapshot is the parent, nothing new is read.
    let list = env.path("list");
    fs::write(
        &list,
        format!(
            "# what to keep\n{}/\n\n{}\n{}\n",
            one.display(),
            note.display(),
            doc.display()
        ),
    )
    .unwrap();
    let r = env
        .snap(args(tier, &[OsStr::new("--files-from"), list.as_os_str()]))
        .ok();
    let s = r.fact("backup.summary");
    assert_eq!(s["parent"], first.as_str());
    assert_eq!(s["sources"], serde_json::json!(want));
    assert_eq!(s["stats"]["new_blobs"], 0);

    // --path matches a snapshot holding that source among others.
    let ids = |path: &str| {
        let r = env.snap(["list", "--path", path]).ok();
        r.fact("list.result")["items"].as_array().unwrap().len()
    };
    assert_eq!(ids("/usr/share/doc"), 2);
    assert_eq!(ids(&note.display().to_string()), 2);
    assert_eq!(ids("/usr/share"), 0);

    // A missing source is named and nothing is committed.
    let missing = env.path("src/nope");
    let r = env.snap(args(tier, &[one.as_os_str(), missing.as_os_str()]));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("src/nope"), "{}", r.stderr);
    assert_eq!(snapshot_ids(&env).len(), 2);
    // An empty list with no argument is a usage error.
    let empty = env.path("empty");
    fs::write(&empty, "# nothing\n\n").unwrap();
    let r = env.snap(args(tier, &[OsStr::new("--files-from"), empty.as_os_str()]));
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// The paths under `src/` a restore of the test's sources holds: `one`
/// and its tree, `other` and `other/notes.txt` (not `other/left-out`).
fn found_sources(base: &Path) -> Vec<String> {
    let mut v: Vec<String> = found(&base.join("one"))
        .into_iter()
        .map(|p| format!("one/{p}"))
        .collect();
    v.extend(["one".into(), "other".into(), "other/notes.txt".into()]);
    v.sort();
    v
}
