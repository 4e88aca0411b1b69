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
    env.snap(["check", "--read-data"]).ok();
    let target = env.path("restored");
    let id = snapshot(&env, "second");
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
