//! Tier full with every kind of metadata Linux holds, backed up and
//! restored by the real binary, compared with independent tools (`stat`,
//! `getfattr`, `getfacl`, `lsattr`, `getcap`, `du`). Needs root (chown to
//! foreign ids, `trusted.*`, `chattr +i`, `mknod`); skips with a reason
//! otherwise.

mod common;

use std::ffi::OsStr;
use std::fs;

use common::*;

#[test]
fn full_tier_round_trips_every_metadata_kind() {
    if !fixture_possible() {
        return;
    }
    let env = Env::new();
    let _unprotect = Unprotect(env.dir.path().to_path_buf());
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    build_fixture(&src);
    // Settle the fixture, so the second backup takes every file from the
    // first unread: the restore below then also proves that xattrs, inode
    // flags and sparse maps survive that path.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let backup = || {
        env.snap([
            OsStr::new("backup"),
            OsStr::new("--tier"),
            OsStr::new("full"),
            src.as_os_str(),
        ])
        .ok()
    };
    let b = backup();
    let s = b.fact("backup.summary");
    assert_eq!(s["backup_durable"], true);
    assert_eq!(s["policy"]["tier"], "full");
    let again = backup();
    let s2 = &again.fact("backup.summary")["stats"];
    assert_eq!(s2["files_unchanged"], s2["files"], "{s2}");
    assert_eq!(s2["new_blobs"], 0);
    // Remove the socket, then put the directory's mtime back as recorded.
    remove_fixture_socket(&src);

    let out = env.path("out");
    let r = env.restore_latest(&out).ok();
    let warnings: Vec<_> = r
        .facts
        .iter()
        .filter(|f| f["event"] == "restore.warning")
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "only the socket is not restored: {warnings:?}"
    );
    assert_eq!(warnings[0]["path"], "sock");
    let rs = r.fact("restore.summary");
    assert_eq!(rs["decision"], "warn");
    let pa = &rs["preservation_applied"];
    let n = |field: &str, k: &str| pa[field][k].as_u64().unwrap();
    assert_eq!((n("acls", "applied"), n("acls", "skipped")), (2, 0), "{pa}");
    assert_eq!((n("caps", "applied"), n("caps", "skipped")), (1, 0), "{pa}");
    assert_eq!(
        (n("flags", "applied"), n("flags", "skipped")),
        (4, 0),
        "{pa}"
    );
    assert_eq!(
        (
            n("sparse", "applied"),
            n("devices", "applied"),
            n("devices", "skipped")
        ),
        (1, 1, 1),
        "{pa}"
    );
    assert!(
        n("xattrs", "applied") >= 4 && n("xattrs", "skipped") == 0,
        "{pa}"
    );
    assert!(
        n("owner", "applied") > 10 && n("owner", "skipped") == 0,
        "{pa}"
    );

    // Kind, mode, owner, size, mtime ns, link targets, hard links, content.
    assert_same_tree(&src, &out, true);
    // Independent tools, run in each tree with relative names.
    for cmd in METADATA_VIEWS {
        let a = view(&src, cmd);
        let b = view(&out, cmd);
        assert!(!a.trim().is_empty(), "{cmd} printed nothing");
        assert_eq!(a, b, "`{cmd}` differs");
    }
    let attrs = view(&out, "getfattr -h -d -m - -e text xattrs link");
    for want in [
        "user.color=\"blue\"",
        "security.snaptest=\"audit\"",
        "trusted.onlink=\"linkvalue\"",
    ] {
        assert!(attrs.contains(want), "{want} missing from {attrs}");
    }
    assert!(view(&out, "getcap capbin").contains("cap_net_raw=ep"));
    assert!(
        view(&out, "lsattr -d immutable").starts_with("----i"),
        "immutable flag"
    );
    assert!(
        view(&out, "lsattr -d append").starts_with("-----a"),
        "append flag"
    );
    // The sparse file: 1 GiB long, about 2 MiB on disk.
    assert_eq!(fs::metadata(out.join("sparse")).unwrap().len(), 1 << 30);
    let du: u64 = view(&out, "du -k sparse")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(du < 4 * 1024, "restored sparse file uses {du} KiB");
    assert_eq!(view(&out, "stat -c %t:%T chardev").trim(), "1:3");
}

#[test]
fn by_name_maps_owners_through_this_hosts_databases() {
    if !is_root() {
        eprintln!("skipped: chown to another user needs root");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    // Tier full records owner names (and ctime) beside the ids.
    let b = env
        .snap([
            OsStr::new("backup"),
            OsStr::new("--tier"),
            OsStr::new("full"),
            src.as_os_str(),
        ])
        .ok();
    let id = b.fact("backup.summary")["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ls = env.snap(["ls", &id]).ok();
    assert!(ls.stdout.contains(" f"), "{}", ls.stdout);
    let rec: serde_json::Value =
        serde_json::from_slice(&fs::read(env.repo.join(format!("snapshots/{id}.json"))).unwrap())
            .unwrap();
    let text = String::from_utf8(entries_text(&env.repo, &rec)).unwrap();
    let f: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["path"] == "f")
        .unwrap();
    assert_eq!(f["user"], "root");
    assert_eq!(f["group"], "root");
    assert!(f["ctime"]["sec"].is_i64());
    // Pretend the backup host called uid/gid 0 "nobody"/"nogroup": rewrite
    // the record (content-addressed, so new entries and snapshot ids).
    let nobody_group = if view(&src, "getent group nogroup || true").is_empty() {
        "nobody"
    } else {
        "nogroup"
    };
    let rewritten: String = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if v["path"] == "f" {
                v["user"] = "nobody".into();
                v["group"] = nobody_group.into();
            }
            format!("{v}\n")
        })
        .collect();
    let new_eid = blake3::hash(rewritten.as_bytes()).to_hex().to_string();
    let edir = env.repo.join(format!("entries/{}", &new_eid[..2]));
    fs::create_dir_all(&edir).unwrap();
    fs::write(edir.join(format!("{new_eid}.jsonl")), &rewritten).unwrap();
    let mut rec = rec;
    rec["entries"]["id"] = new_eid.into();
    // The rewritten records go into an entries file (as a format-2
    // snapshot's are, which a format-3 repository reads too).
    rec["entries"].as_object_mut().unwrap().remove("chunks");
    let bytes = serde_json::to_vec(&rec).unwrap();
    let sid = blake3::hash(&bytes).to_hex().to_string();
    fs::write(env.repo.join(format!("snapshots/{sid}.json")), &bytes).unwrap();

    let by_id = env.path("by-id");
    env.snap([
        OsStr::new("restore"),
        OsStr::new(&sid),
        OsStr::new("--target"),
        by_id.as_os_str(),
    ])
    .ok();
    assert_eq!(view(&by_id, "stat -c %u:%g f").trim(), "0:0");
    let by_name = env.path("by-name");
    env.snap([
        OsStr::new("restore"),
        OsStr::new(&sid),
        OsStr::new("--by-name"),
        OsStr::new("--target"),
        by_name.as_os_str(),
    ])
    .ok();
    assert_eq!(
        view(&by_name, "stat -c %U:%G f").trim(),
        format!("nobody:{nobody_group}")
    );
}
