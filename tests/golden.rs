//! Golden tests (`insta`) of what people and pipelines read: the human
//! output of every command on a small tree with fixed times, and one fact
//! of each of the 28 event kinds (every kind `schemas/fact.schema.json`
//! names). Times, ids, sizes, durations, the host name, the temp dir and
//! the I/O backend are redacted, so a change that shows is a change of
//! wording, layout or fact shape. Review a
//! change with `cargo insta review` (or `INSTA_UPDATE=always cargo test
//! --test golden` and `git diff tests/snapshots`).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;
use regex::Regex;
use serde_json::Value;

/// The redactions, in order (ids before the shorter hex runs they hold).
fn redactions() -> Vec<(Regex, &'static str)> {
    [
        (r"[0-9a-f]{64}", "[id]"),
        (r"\b[0-9a-f]{32}\b", "[id32]"),
        (r"\b[0-9a-f]{12}\b", "[short-id]"),
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
            "[time]",
        ),
        (
            r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4}",
            "[local time]",
        ),
        (r"\b\d+(\.\d+)? (B|KiB|MiB|GiB|TiB)\b", "[size]"),
        (r"\b\d+\.\d+ s\b", "[secs] s"),
        (r"\bio_uring\b|\bfallback\b", "[io]"),
        // tracing's uptime and the timings -v logs.
        (r"(?m)^ *\d+\.\d+s +", "[uptime] "),
        (r"\b(ms|waited_ms)=\d+", "$1=[n]"),
    ]
    .into_iter()
    .map(|(re, to)| (Regex::new(re).unwrap(), to))
    .collect()
}

struct Redact {
    tmp: String,
    host: String,
    rules: Vec<(Regex, &'static str)>,
}

impl Redact {
    fn text(&self, s: &str) -> String {
        let mut s = s.replace(&self.tmp, "[tmp]");
        for (re, to) in &self.rules {
            s = re.replace_all(&s, *to).into_owned();
        }
        if !self.host.is_empty() {
            let host = Regex::new(&format!(r"\b{}\b", regex::escape(&self.host))).unwrap();
            s = host.replace_all(&s, "[host]").into_owned();
        }
        s
    }

    /// A fact with its envelope's run-specific values, every string
    /// redacted as text, and the numbers that measure time or bytes
    /// replaced.
    fn fact(&self, v: &Value, key: &str) -> Value {
        let measured = Regex::new(
            r"(^|_)(ms|bytes|size|free|used|pid|added|uploaded|downloaded|count|waited|attempts|duration)(_|$)|_ms$",
        )
        .unwrap();
        match v {
            Value::String(s) => Value::String(self.text(s)),
            Value::Number(_) if measured.is_match(key) => Value::String("[n]".into()),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.fact(x, key)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| {
                        let x = match k.as_str() {
                            "ts" | "run_id" | "seq" => Value::String(format!("[{k}]")),
                            "version" if x.is_string() => Value::String("[version]".into()),
                            _ => self.fact(x, k),
                        };
                        (k.clone(), x)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// A small tree with every common kind of entry and fixed times.
fn tree(root: &Path) {
    fs::create_dir_all(root.join("docs/deep")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("docs/a.txt"), "alpha\n").unwrap();
    fs::write(root.join("docs/deep/b.md"), "# beta\n").unwrap();
    fs::write(root.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("docs/a.txt", root.join("link")).unwrap();
    stamp(root);
}

/// Every entry's mtime and atime set to one instant (`touch -h`).
fn stamp(root: &Path) {
    sh(&format!(
        "find '{}' -exec touch -h -d '2026-01-02 03:04:05 UTC' {{}} +",
        root.display()
    ));
}

#[test]
fn human_output_of_every_command_and_one_fact_of_each_kind() {
    if !is_root() {
        eprintln!("skipped: the golden output shows root's owner names and capabilities");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    tree(&src);
    // Files changed more than 1 s before a backup starts are settled: the
    // next backup may take them unread ("unmodified"), whatever the load.
    let settle = || std::thread::sleep(std::time::Duration::from_millis(1200));
    settle();
    let r = Redact {
        tmp: env.dir.path().display().to_string(),
        host: fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        rules: redactions(),
    };
    let mut facts: BTreeMap<String, Value> = BTreeMap::new();
    let repo = env.repo.to_str().unwrap().to_owned();
    let snap = || Command::new(snap_bin());
    // `cmd` is snap, or snap under setpriv(1).
    let mut run_with = |mut cmd: Command, repo: &str, name: &str, args: &[&str], want: i32| {
        cmd.args(["--repo", repo])
            .env("TZ", "UTC0")
            .env("COLUMNS", "80")
            // The same reader on every machine and in both passes of the
            // README's test command (io_uring where it works).
            .env("SNAP_IO", "fallback")
            .env("SNAP_PASSWORD", "golden secret");
        let out = env.run_cmd(cmd, args);
        assert_eq!(out.code, want, "{name}: {}{}", out.stdout, out.stderr);
        for f in &out.facts {
            let event = f["event"].as_str().unwrap().to_owned();
            facts.entry(event).or_insert_with(|| r.fact(f, ""));
        }
        // A JSON document (`snap show`) is redacted as a fact is.
        let mut shown = match serde_json::from_str::<Value>(&out.stdout) {
            Ok(v) if v.is_object() => serde_json::to_string_pretty(&r.fact(&v, "")).unwrap(),
            _ => r.text(&out.stdout),
        };
        if !out.stderr.is_empty() {
            shown.push_str("--- stderr\n");
            shown.push_str(&r.text(&out.stderr));
        }
        insta::assert_snapshot!(name, shown);
    };
    let s = src.to_str().unwrap();
    let out = env.path("out");
    let out = out.to_str().unwrap();
    let other = env.path("other");
    let other = other.to_str().unwrap();
    run_with(snap(), &repo, "init", &["init"], 0);
    run_with(
        snap(),
        &repo,
        "preflight_backup",
        &["preflight", "backup", s],
        0,
    );
    run_with(
        snap(),
        &repo,
        "backup",
        &["backup", "-v", "--tag", "golden", s],
        0,
    );
    fs::write(src.join("docs/a.txt"), "alpha, changed\n").unwrap();
    fs::write(src.join("docs/new.txt"), "new\n").unwrap();
    sh(&format!(
        "cd '{}' && touch -h -d '2026-01-02 03:04:05 UTC' docs docs/a.txt docs/new.txt",
        src.display()
    ));
    settle();
    run_with(snap(), &repo, "backup_again", &["backup", "-v", s], 0);
    run_with(
        snap(),
        &repo,
        "backup_dry_run",
        &["backup", "--dry-run", s],
        0,
    );
    run_with(snap(), &repo, "list", &["list"], 0);
    run_with(snap(), &repo, "ls", &["ls", "latest"], 0);
    let ids = snapshot_ids(&env);
    run_with(snap(), &repo, "diff", &["diff", &ids[0], &ids[1]], 0);
    run_with(snap(), &repo, "find", &["find", "*.txt"], 0);
    run_with(snap(), &repo, "dump", &["dump", "latest", "docs/a.txt"], 0);
    run_with(snap(), &repo, "stats", &["stats"], 0);
    run_with(snap(), &repo, "show", &["show", "latest"], 0);
    run_with(snap(), &repo, "check", &["check", "--read-data"], 0);
    run_with(
        snap(),
        &repo,
        "preflight_restore",
        &["preflight", "restore", "latest", "--target", out],
        0,
    );
    run_with(
        snap(),
        &repo,
        "restore",
        &["restore", "latest", "--target", out],
        0,
    );
    run_with(
        snap(),
        &repo,
        "restore_exists",
        &["restore", "latest", "--target", out],
        41,
    );
    run_with(snap(), &repo, "policy", &["policy", "show"], 0);
    run_with(snap(), &repo, "forget", &["forget", "--keep-last", "1"], 0);
    run_with(snap(), &repo, "prune", &["prune"], 0);
    run_with(snap(), other, "init_other", &["init"], 0);
    run_with(snap(), other, "copy", &["copy", "--from", &repo], 0);
    run_with(snap(), &repo, "version", &["version"], 0);
    let schemas = env.path("schemas");
    run_with(
        snap(),
        &repo,
        "schema",
        &["schema", "--out", schemas.to_str().unwrap()],
        0,
    );
    // A format-2 repository, migrated.
    let old = env.path("old");
    let old = old.to_str().unwrap();
    run_with(snap(), old, "init_old", &["init"], 0);
    let config = Path::new(old).join("config.json");
    let mut c: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    c["version"] = 2.into();
    fs::write(&config, serde_json::to_vec(&c).unwrap()).unwrap();
    run_with(snap(), old, "migrate", &["migrate"], 0);
    // An encrypted repository's keys (SNAP_PASSWORD is set for every run).
    let enc = env.path("enc");
    let enc = enc.to_str().unwrap();
    run_with(snap(), enc, "init_encrypted", &["init", "--encrypt"], 0);
    run_with(snap(), enc, "key_list", &["key", "list"], 0);
    // A damaged snapshot record is left out and reported.
    let rec = fs::read_dir(Path::new(other).join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    fs::write(&rec, b"{ not a record").unwrap();
    run_with(snap(), other, "list_damaged", &["list"], 0);
    run_with(
        snap(),
        &repo,
        "missing_source",
        &["backup", &format!("{s}/nope")],
        10,
    );
    // Warnings: a file root cannot read once setpriv(1) drops
    // CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (backup.warning, exit 3),
    // and a socket, which tier full records and restore does not make
    // (restore.warning).
    let w = env.path("warn");
    fs::create_dir_all(&w).unwrap();
    fs::write(w.join("ok"), "ok\n").unwrap();
    fs::write(w.join("secret"), "secret\n").unwrap();
    fs::set_permissions(w.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    drop(std::os::unix::net::UnixListener::bind(w.join("sock")).unwrap());
    stamp(&w);
    let mut capped = Command::new("setpriv");
    capped.args([
        "--bounding-set",
        "-dac_override,-dac_read_search",
        snap_bin(),
    ]);
    let wp = w.to_str().unwrap();
    run_with(
        capped,
        &repo,
        "backup_unreadable",
        &["backup", "--tier", "full", wp],
        3,
    );
    let wout = env.path("warn-out");
    let wout = wout.to_str().unwrap();
    run_with(
        snap(),
        &repo,
        "restore_socket",
        &["restore", "latest", "--target", wout],
        0,
    );
    // Every event kind the fact schema names was met.
    let schema =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/fact.schema.json"))
            .unwrap();
    let kinds: std::collections::BTreeSet<String> = Regex::new(r#""const": "([a-z_]+\.[a-z_]+)""#)
        .unwrap()
        .captures_iter(&schema)
        .map(|c| c[1].to_owned())
        .collect();
    let met: std::collections::BTreeSet<String> = facts.keys().cloned().collect();
    assert_eq!(met, kinds, "event kinds met vs the schema's");
    let all: Vec<Value> = facts.into_values().collect();
    insta::assert_snapshot!("facts", serde_json::to_string_pretty(&all).unwrap());
}
