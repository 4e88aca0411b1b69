//! Hostile repositories, generated: a real repository is mutated (a field
//! of an entries record, snapshot record or index file changed, dropped,
//! duplicated or swapped; bytes of any file flipped), the names re-hashed
//! so the BLAKE3 checks pass and the mutation reaches the parsers, and
//! `restore`, `check` and `ls` run on it with a time limit. Every run must
//! end, without a panic, with an exit code from the documented table; a
//! failed restore leaves no target; and `check` must refuse whatever
//! `restore` refuses as corrupt (it applies every rule restore applies).
//!
//! `SNAP_HOSTILE_CASES` sets the number of cases (default 1,000),
//! `SNAP_HOSTILE_SEED` another set of them.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// xorshift64*: reproducible cases from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Exit codes of the README's table (141: a closed stdout).
const DOCUMENTED: [i32; 17] = [
    0, 1, 2, 3, 4, 10, 11, 20, 30, 40, 41, 50, 60, 61, 70, 80, 90,
];

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_in(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A value to put where a field was: of another type, huge, negative,
/// a hostile path, the kernel's special nanoseconds...
fn weird(rng: &mut Rng, old: &Value) -> Value {
    let pick = [
        Value::Null,
        Value::Bool(true),
        serde_json::json!(-1),
        serde_json::json!(u64::MAX),
        serde_json::json!(i64::MIN),
        serde_json::json!(0x3FFF_FFFF),
        serde_json::json!(0x3FFF_FFFE),
        serde_json::json!(4_294_967_295u64),
        serde_json::json!(""),
        serde_json::json!("../../etc/passwd"),
        serde_json::json!("/etc/passwd"),
        serde_json::json!("a//b"),
        serde_json::json!("."),
        serde_json::json!("x\u{0}y"),
        serde_json::json!("dir"),
        serde_json::json!("file"),
        serde_json::json!("hardlink"),
        serde_json::json!("symlink"),
        serde_json::json!("fifo"),
        serde_json::json!("char"),
        serde_json::json!("socket"),
        serde_json::json!({"sec": i64::MAX, "nsec": 0x3FFF_FFFF}),
        serde_json::json!({"sec": -1, "nsec": 999_999_999}),
        serde_json::json!([[0, u64::MAX], [1, 1]]),
        serde_json::json!(["00".repeat(32)]),
        serde_json::json!(["zz"]),
        serde_json::json!({"major": 1, "minor": 2}),
        serde_json::json!({"user.x": "!!notbase64"}),
        serde_json::json!([]),
        serde_json::json!(2),
    ];
    match rng.below(4) {
        // Something of the field's own type, nudged.
        0 => match old {
            Value::Number(n) => {
                serde_json::json!(n.as_u64().unwrap_or(0).wrapping_add(1 + rng.next() % 5000))
            }
            Value::String(s) if !s.is_empty() => {
                let mut b = s.clone().into_bytes();
                let i = rng.below(b.len());
                b[i] = b"0123456789abcdef/._"[rng.below(19)];
                Value::String(String::from_utf8_lossy(&b).into_owned())
            }
            _ => pick[rng.below(pick.len())].clone(),
        },
        _ => pick[rng.below(pick.len())].clone(),
    }
}

/// Changes, drops or adds one field somewhere in `v` (recursing into
/// objects and arrays).
fn mutate_value(rng: &mut Rng, v: &mut Value, depth: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = keys[rng.below(keys.len())].clone();
            match rng.below(5) {
                0 => {
                    m.remove(&k);
                }
                1 if depth < 3 => mutate_value(rng, m.get_mut(&k).unwrap(), depth + 1),
                2 => {
                    let extra = [
                        "link", "target", "rdev", "sparse", "chunks", "size", "children", "uid",
                        "xattrs", "flags",
                    ];
                    m.insert(
                        extra[rng.below(extra.len())].into(),
                        weird(rng, &Value::Null),
                    );
                }
                _ => {
                    let old = m[&k].clone();
                    m.insert(k, weird(rng, &old));
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = rng.below(a.len());
            match rng.below(3) {
                0 => {
                    a.remove(i);
                }
                1 => {
                    let dup = a[i].clone();
                    a.push(dup);
                }
                _ if depth < 3 => mutate_value(rng, &mut a[i], depth + 1),
                _ => a[i] = weird(rng, &a[i]),
            }
        }
        _ => *v = weird(rng, v),
    }
}

/// Writes `bytes` as the content-addressed file `dir/<hash><suffix>`
/// (fan-out `fan` digits), removing `old`; returns the new id.
fn rehash(old: &Path, dir: &Path, suffix: &str, fan: bool, bytes: &[u8]) -> String {
    let id = hex(bytes);
    fs::remove_file(old).unwrap();
    let d = if fan {
        dir.join(&id[..2])
    } else {
        dir.to_path_buf()
    };
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(format!("{id}{suffix}")), bytes).unwrap();
    id
}

/// Points the (only) snapshot record at the entries stream `id`: an
/// entries file (`chunks` none), or the blobs `chunks` (format 3); and
/// re-hashes the record.
fn repoint(repo: &Path, entries_id: &str, chunks: Option<Vec<String>>) {
    let rec = files_in(&repo.join("snapshots")).remove(0);
    let mut v: Value = serde_json::from_slice(&fs::read(&rec).unwrap()).unwrap();
    v["entries"]["id"] = Value::String(entries_id.into());
    match chunks {
        Some(c) => v["entries"]["chunks"] = c.into(),
        None => {
            v["entries"].as_object_mut().unwrap().remove("chunks");
        }
    }
    let bytes = serde_json::to_vec_pretty(&v).unwrap();
    rehash(&rec, &repo.join("snapshots"), ".json", false, &bytes);
}

/// Stores `stream` as one format-3 entries blob (stored as it is) in a
/// pack of its own with an index file listing it, as a backup would;
/// returns the blob id.
fn put_entries_blob(repo: &Path, stream: &[u8]) -> String {
    let blob = blake3::hash(stream);
    let mut tail = Vec::new();
    tail.extend_from_slice(blob.as_bytes());
    tail.extend_from_slice(&0u64.to_le_bytes());
    tail.extend_from_slice(&(stream.len() as u32).to_le_bytes());
    tail.extend_from_slice(&[0u8; 8]); // plaintext length 0, flags 0
    tail.extend_from_slice(&1u32.to_le_bytes());
    tail.extend_from_slice(&0u32.to_le_bytes());
    tail.extend_from_slice(&(stream.len() as u64).to_le_bytes());
    tail.extend_from_slice(b"SNAPPAK3");
    let pack = blake3::hash(&tail).to_hex().to_string();
    let mut bytes = stream.to_vec();
    bytes.extend_from_slice(&tail);
    let d = repo.join(format!("packs/{}", &pack[..2]));
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(format!("{pack}.pack")), &bytes).unwrap();
    let idx = serde_json::json!({"v": 1, "packs": [{"id": pack, "blobs": [
        {"id": blob.to_hex().to_string(), "offset": 0, "length": stream.len()}]}]});
    let idx = serde_json::to_vec(&idx).unwrap();
    fs::write(repo.join(format!("index/{}.idx", hex(&idx))), &idx).unwrap();
    blob.to_hex().to_string()
}

/// An index file's JSON (format 3 stores it as a zstd frame).
fn index_json(bytes: Vec<u8>) -> Vec<u8> {
    if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::decode_all(&bytes[..]).unwrap()
    } else {
        bytes
    }
}

/// Applies one mutation to the repository at `repo`; returns what it did.
fn mutate(rng: &mut Rng, repo: &Path) -> String {
    let rec: Value =
        serde_json::from_slice(&fs::read(files_in(&repo.join("snapshots")).remove(0)).unwrap())
            .unwrap();
    match rng.below(10) {
        // An entries record: a field, or the lines themselves.
        0..=4 => {
            let text = String::from_utf8(entries_text(repo, &rec)).unwrap();
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            let i = rng.below(lines.len());
            let what = match rng.below(6) {
                0 => {
                    let dup = lines[i].clone();
                    let at = rng.below(lines.len() + 1);
                    lines.insert(at, dup);
                    format!("duplicate line {i}")
                }
                1 => {
                    let j = rng.below(lines.len());
                    lines.swap(i, j);
                    format!("swap lines {i} {j}")
                }
                2 if lines.len() > 1 => {
                    lines.remove(i);
                    format!("drop line {i}")
                }
                _ => {
                    let mut v: Value = serde_json::from_str(&lines[i]).unwrap();
                    mutate_value(rng, &mut v, 0);
                    lines[i] = serde_json::to_string(&v).unwrap();
                    format!("entries line {i}: {}", lines[i])
                }
            };
            let mut bytes = lines.join("\n").into_bytes();
            bytes.push(b'\n');
            let id = hex(&bytes);
            if rng.below(2) == 0 {
                let d = repo.join(format!("entries/{}", &id[..2]));
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join(format!("{id}.jsonl")), &bytes).unwrap();
                repoint(repo, &id, None);
                format!("{what}, as an entries file")
            } else {
                let blob = put_entries_blob(repo, &bytes);
                repoint(repo, &id, Some(vec![blob]));
                format!("{what}, as an entries blob")
            }
        }
        // The snapshot record.
        5 | 6 => {
            let rec = files_in(&repo.join("snapshots")).remove(0);
            let mut v: Value = serde_json::from_slice(&fs::read(&rec).unwrap()).unwrap();
            mutate_value(rng, &mut v, 0);
            let bytes = serde_json::to_vec_pretty(&v).unwrap();
            rehash(&rec, &repo.join("snapshots"), ".json", false, &bytes);
            format!("snapshot record: {v}")
        }
        // An index file.
        7 | 8 => {
            let idx = files_in(&repo.join("index")).remove(0);
            let mut v: Value =
                serde_json::from_slice(&index_json(fs::read(&idx).unwrap())).unwrap();
            mutate_value(rng, &mut v, 0);
            let bytes = serde_json::to_vec(&v).unwrap();
            rehash(&idx, &repo.join("index"), ".idx", false, &bytes);
            "index file".into()
        }
        // Raw bytes of any file (names left as they are).
        _ => {
            let all = files_in(repo);
            let f = &all[rng.below(all.len())];
            let mut b = fs::read(f).unwrap();
            if b.is_empty() {
                return "nothing".into();
            }
            let i = rng.below(b.len());
            b[i] ^= 1 << rng.below(8);
            fs::write(f, &b).unwrap();
            format!("flip byte {i} of {}", f.display())
        }
    }
}

fn run(repo: &Path, args: &[&OsStr]) -> (i32, String) {
    let mut child = Command::new(snap_bin())
        .arg("--repo")
        .arg(repo)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if t.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            return (-2, "timed out".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn mutated_repositories_never_panic_hang_or_pass_check_when_restore_refuses_them() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d/e")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("a"), b"alpha").unwrap();
    fs::write(src.join("d/big"), pseudo_random(1_700_000, 3)).unwrap();
    fs::write(src.join("d/e/small"), pseudo_random(9000, 4)).unwrap();
    fs::hard_link(src.join("a"), src.join("d/link")).unwrap();
    std::os::unix::fs::symlink("../a", src.join("d/sym")).unwrap();
    sh(&format!("mkfifo '{}'", src.join("d/fifo").display()));
    // A sparse file, and (as root, at tier full) an xattr and inode flags,
    // so those records' fields are there to be mutated.
    let sparse = fs::File::create(src.join("d/sparse")).unwrap();
    sparse.set_len(3 << 20).unwrap();
    drop(sparse);
    fs::write(src.join("d/e/tail"), b"t").unwrap();
    let mut tier = "extended";
    if is_root() && has_tool("setfattr") && has_tool("chattr") {
        sh(&format!(
            "setfattr -n user.k -v v '{}'",
            src.join("a").display()
        ));
        sh(&format!(
            "chattr +A '{}' || true",
            src.join("d/e/small").display()
        ));
        tier = "full";
    }
    env.snap([
        OsStr::new("backup"),
        OsStr::new("--tier"),
        OsStr::new(tier),
        src.as_os_str(),
    ])
    .ok();
    let cases: usize = std::env::var("SNAP_HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    // Another seed explores other cases (`SNAP_HOSTILE_SEED`).
    let seed: u64 = std::env::var("SNAP_HOSTILE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let base = env.repo.clone();
    let work = env.path("cases");
    fs::create_dir(&work).unwrap();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let (failures, seen): (Vec<String>, std::collections::BTreeMap<(i32, i32), u32>) =
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (base, work) = (&base, &work);
                s.spawn(move || {
                    let mut bad = Vec::new();
                    let mut seen = std::collections::BTreeMap::<(i32, i32), u32>::new();
                    for case in (t..cases).step_by(threads) {
                        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (case as u64 + 1 + (seed << 32)).wrapping_mul(0xD1B5_4A32_D192_ED03));
                        let dir = work.join(format!("c{case}"));
                        let repo = dir.join("repo");
                        fs::create_dir(&dir).unwrap();
                        sh(&format!("cp -a '{}' '{}'", base.display(), repo.display()));
                        let what = mutate(&mut rng, &repo);
                        let target = dir.join("out");
                        let (rc, rerr) = run(&repo, &[OsStr::new("restore"), OsStr::new("latest"), OsStr::new("--target"), target.as_os_str()]);
                        let (cc, cerr) = run(&repo, &[OsStr::new("check"), OsStr::new("--read-data")]);
                        let (lc, lerr) = run(&repo, &[OsStr::new("ls"), OsStr::new("latest")]);
                        for (cmd, code, err) in [("restore", rc, &rerr), ("check", cc, &cerr), ("ls", lc, &lerr)] {
                            if !DOCUMENTED.contains(&code) || err.contains("panicked") {
                                bad.push(format!("case {case} ({what}): {cmd} exited {code}: {err}"));
                            }
                        }
                        *seen.entry((rc, cc)).or_default() += 1;
                        if rc != 0 && target.exists() {
                            bad.push(format!("case {case} ({what}): a failed restore left its target"));
                        }
                        if rc == 90 && cc != 90 {
                            bad.push(format!("case {case} ({what}): restore refused it ({rerr}) but check exited {cc}"));
                        }
                        // A restored tree may carry the immutable flags
                        // its (mutated) records asked for.
                        sh(&format!(
                            "chattr -R -i -a '{0}' >/dev/null 2>&1; rm -rf '{0}'",
                            dir.display()
                        ));
                    }
                    (bad, seen)
                })
            })
            .collect();
            let mut all = (Vec::new(), std::collections::BTreeMap::new());
            for h in hs {
                let (b, seen) = h.join().unwrap();
                all.0.extend(b);
                for (k, n) in seen {
                    *all.1.entry(k).or_default() += n;
                }
            }
            all
        });
    eprintln!("{cases} mutated repositories run through restore, check and ls; (restore, check) exit codes: {seen:?}");
    // The mutations must reach the parsers: most cases are refused.
    let refused: u32 = seen
        .iter()
        .filter(|((r, _), _)| *r != 0)
        .map(|(_, n)| n)
        .sum();
    assert!(
        refused as usize * 2 > cases,
        "only {refused} of {cases} mutations were refused: {seen:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
