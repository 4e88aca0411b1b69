//! Repositories written by an older snap keep working: the committed
//! format-2 fixture (`tests/fixtures/format2`, written by the last format-2
//! build with `make.sh`) lists, checks and restores byte-exact with this
//! build, compared by an independent view (`find -printf`, `sha256sum`).

mod common;

use std::path::Path;
use std::process::Command;

use common::{tagged_snapshots, Env};

fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/format2"
    ))
}

/// A writable copy of the fixture repository at `env.repo`.
fn copy_fixture(env: &Env) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(fixture().join("repo"))
        .arg(&env.repo)
        .status()
        .unwrap();
    assert!(st.success());
}

/// `find -printf` and `sha256sum` of `root`, as `make.sh` wrote them for
/// the fixture's source.
fn view(root: &Path) -> (Vec<u8>, Vec<u8>) {
    let sh = |script: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(root)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    (
        sh("find . -mindepth 1 -printf '%y %m %T@ %p -> %l\\n' | sort"),
        sh("find . -type f -print0 | sort -z | xargs -0 sha256sum"),
    )
}

fn snapshot(env: &Env, tag: &str) -> String {
    tagged_snapshots(&env.repo)
        .into_iter()
        .find(|(_, t)| t == tag)
        .unwrap_or_else(|| panic!("no snapshot tagged {tag}"))
        .0
}

#[test]
fn the_format2_fixture_lists_checks_and_restores_byte_exact() {
    let env = Env::new();
    copy_fixture(&env);
    let list = env.snap(["list"]).ok();
    assert_eq!(list.fact("list.result")["snapshots"], 2, "{}", list.stdout);
    check_and_restore_second(&env);
}

/// `check --read-data` passes, and the fixture's snapshot "second"
/// restores to exactly the manifest `make.sh` wrote for it.
fn check_and_restore_second(env: &Env) {
    env.snap(["check", "--read-data"]).ok();
    let target = env.path("restored");
    let id = snapshot(env, "second");
    env.snap(["restore", id.as_str(), "--target", target.to_str().unwrap()])
        .ok();
    let (find, sums) = view(&target);
    let want_find = std::fs::read(fixture().join("second.find")).unwrap();
    let want_sums = std::fs::read(fixture().join("second.sha256")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&find),
        String::from_utf8_lossy(&want_find)
    );
    assert_eq!(find, want_find);
    assert_eq!(sums, want_sums);
}

/// `snap migrate` killed (SIGKILL, injected by strace as each of its
/// writing calls returns) leaves a repository of format 2 or 3, never
/// neither: it opens, passes `check --read-data`, and restores the
/// fixture's snapshot byte-exact; a second migrate completes.
#[test]
fn a_migrate_killed_at_any_of_its_writes_leaves_a_working_repository() {
    if !common::has_tool("strace") {
        eprintln!("skipped: no strace");
        return;
    }
    let mut versions = std::collections::BTreeSet::new();
    // (syscall, occurrence, whether the call is kept from running): the
    // new config's fsync, the rename refused and killed (the state just
    // before it), the rename done and killed before the directory fsync,
    // and after that fsync.
    for (syscall, when, refused) in [
        ("fsync", 1, false),
        ("renameat2", 1, true),
        ("renameat2", 1, false),
        ("fsync", 2, false),
    ] {
        let env = Env::new();
        copy_fixture(&env);
        let args = [
            std::ffi::OsStr::new("--repo"),
            env.repo.as_os_str(),
            std::ffi::OsStr::new("migrate"),
        ];
        let out = if refused {
            Command::new("strace")
                .args(["-f", "-qq", "-o", "/dev/null", "-e"])
                .arg(format!("trace={syscall}"))
                .arg("-e")
                .arg(format!(
                    "inject={syscall}:error=EIO:signal=SIGKILL:when={when}"
                ))
                .arg(common::snap_bin())
                .args(args)
                .output()
        } else {
            common::snap_signalled_at(syscall, when, "SIGKILL", &args).output()
        }
        .unwrap();
        assert!(
            !out.status.success(),
            "{syscall} {when}: snap was not killed"
        );
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(env.repo.join("config.json")).unwrap()).unwrap();
        versions.insert(config["version"].as_u64().unwrap());
        check_and_restore_second(&env);
        let m = env.snap(["migrate"]).ok();
        assert_eq!(m.fact("migrate.result")["to_version"], 3);
    }
    assert!(
        versions.contains(&2) && versions.contains(&3),
        "the kills land on both sides of the rename: {versions:?}"
    );
}
