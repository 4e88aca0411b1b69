//! The conformance suite every [`Backend`] must pass (after restic's
//! `internal/backend/test/tests.go`): run [`run`] on a fresh, prepared
//! backend from the implementation's tests.
//!
//! Side effects: writes, reads and removes files through the backend under
//! test (a temporary directory, or memory).

use std::io::ErrorKind;

use super::{Backend, FileKind, Put, Syncs};
use crate::repo::layout;

fn id(n: u32) -> String {
    blake3::hash(&n.to_le_bytes()).to_hex().to_string()
}

/// Runs every check on `b`, which must be prepared and empty.
pub fn run(b: &dyn Backend) {
    empty(b);
    put_read_and_create_only(b);
    ranges(b);
    listing(b);
    bounds(b);
    staged(b);
    remove(b);
    ids(b);
    locks(b);
    barrier_and_syncs(b);
}

fn empty(b: &dyn Backend) {
    for kind in FileKind::ALL {
        assert!(b.list(kind).unwrap().is_empty(), "{kind:?} lists nothing");
    }
    let e = b.read(FileKind::Index, &id(0), 1 << 20).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = b.open(FileKind::Pack, &id(0)).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(!b.exists(FileKind::Snapshot, &id(0)).unwrap());
    assert!(b.staging().unwrap().is_empty());
}

fn put_read_and_create_only(b: &dyn Backend) {
    let mut syncs = Syncs::on();
    for (n, kind) in FileKind::ALL.into_iter().enumerate() {
        let i = id(100 + n as u32);
        let bytes = format!("first {kind:?}").into_bytes();
        assert_eq!(
            b.put(kind, &i, &bytes, &mut syncs).unwrap(),
            Put::Created(bytes.len() as u64)
        );
        assert!(b.exists(kind, &i).unwrap());
        assert_eq!(b.read(kind, &i, 1 << 20).unwrap(), bytes);
        // Create-only: a second put keeps the first bytes.
        assert_eq!(
            b.put(kind, &i, b"second", &mut syncs).unwrap(),
            Put::Existed
        );
        let mut s = b.stage(kind).unwrap();
        s.append(&[b"staged second"]).unwrap();
        assert_eq!(
            b.put_staged(s, kind, &i, true, &mut syncs).unwrap(),
            Put::Existed
        );
        assert_eq!(b.read(kind, &i, 1 << 20).unwrap(), bytes, "{kind:?}");
    }
    assert!(b.staging().unwrap().is_empty(), "no staged file left");
    // The config has one file, whatever id it is given.
    assert!(b.exists(FileKind::Config, "anything").unwrap());
    b.remove(FileKind::Config, "").unwrap();
    assert!(!b.exists(FileKind::Config, "").unwrap());
}

fn ranges(b: &dyn Backend) {
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let i = id(200);
    b.put(FileKind::Pack, &i, &bytes, &mut Syncs::default())
        .unwrap();
    assert_eq!(
        b.read_range(FileKind::Pack, &i, 7, 1000).unwrap(),
        &bytes[7..1007]
    );
    assert_eq!(
        b.read_range(FileKind::Pack, &i, 99_000, 1000).unwrap(),
        &bytes[99_000..]
    );
    let e = b.read_range(FileKind::Pack, &i, 99_500, 1000).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}");
    let f = b.open(FileKind::Pack, &i).unwrap();
    assert_eq!(f.size().unwrap(), bytes.len() as u64);
    let mut buf = vec![0u8; 10];
    assert_eq!(f.read_at(&mut buf, 99_995).unwrap(), 5, "short at the end");
    assert_eq!(f.read_at(&mut buf, 200_000).unwrap(), 0, "past the end");
    b.remove(FileKind::Pack, &i).unwrap();
}

fn listing(b: &dyn Backend) {
    let mut syncs = Syncs::default();
    let want: Vec<String> = (300..340).map(id).collect();
    for kind in [FileKind::Pack, FileKind::Entries, FileKind::Index] {
        let before: Vec<String> = b.list(kind).unwrap();
        for i in &want {
            b.put(kind, i, i.as_bytes(), &mut syncs).unwrap();
        }
        let mut got: Vec<String> = b
            .list(kind)
            .unwrap()
            .iter()
            .filter(|n| !before.contains(n))
            .filter_map(|n| layout::id_of(kind, n).map(str::to_owned))
            .collect();
        got.sort();
        let mut w = want.clone();
        w.sort();
        assert_eq!(got, w, "{kind:?}");
        for i in &want {
            b.remove(kind, i).unwrap();
        }
        let left: Vec<_> = b
            .list(kind)
            .unwrap()
            .into_iter()
            .filter(|n| !before.contains(n))
            .collect();
        assert!(left.is_empty(), "{kind:?}: {left:?}");
    }
}

fn bounds(b: &dyn Backend) {
    let i = id(400);
    b.put(FileKind::Index, &i, &[7u8; 5000], &mut Syncs::default())
        .unwrap();
    assert_eq!(b.read(FileKind::Index, &i, 5000).unwrap().len(), 5000);
    let e = b.read(FileKind::Index, &i, 4999).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
    b.remove(FileKind::Index, &i).unwrap();
}

fn staged(b: &dyn Backend) {
    let mut syncs = Syncs::default();
    let mut s = b.stage(FileKind::Pack).unwrap();
    assert!(s.is_empty());
    s.append(&[b"ab", b"", b"cde"]).unwrap();
    s.append(&[b"f"]).unwrap();
    s.start_writeback().unwrap();
    assert_eq!(s.len(), 6);
    // (A remote backend stages packs in memory: nothing to list.)
    assert!(b.staging().unwrap().len() <= 1, "one staged file at most");
    let i = id(500);
    assert!(!b.exists(FileKind::Pack, &i).unwrap(), "not visible yet");
    assert_eq!(
        b.put_staged(s, FileKind::Pack, &i, false, &mut syncs)
            .unwrap(),
        Put::Created(6)
    );
    b.sync_names(FileKind::Pack, &i, &mut syncs).unwrap();
    assert_eq!(b.read(FileKind::Pack, &i, 100).unwrap(), b"abcdef");
    assert!(b.staging().unwrap().is_empty());
    // Discarded: nothing left.
    let mut s = b.stage(FileKind::Entries).unwrap();
    s.append(&[b"gone"]).unwrap();
    assert_eq!(b.staging().unwrap().len(), 1, "a staged file is listed");
    s.discard();
    assert!(b.staging().unwrap().is_empty());
    // Dropped (a crashed run): left for the cleanup.
    let mut s = b.stage(FileKind::Index).unwrap();
    s.append(&[b"left"]).unwrap();
    drop(s);
    assert_eq!(b.staging().unwrap().len(), 1);
    assert_eq!(b.clean_staging().unwrap(), 1);
    assert!(b.staging().unwrap().is_empty());
    b.remove(FileKind::Pack, &i).unwrap();
}

fn remove(b: &dyn Backend) {
    let i = id(600);
    b.put(FileKind::Snapshot, &i, b"{}", &mut Syncs::default())
        .unwrap();
    b.remove(FileKind::Snapshot, &i).unwrap();
    assert!(!b.exists(FileKind::Snapshot, &i).unwrap());
    let e = b.remove(FileKind::Snapshot, &i).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = b.read(FileKind::Snapshot, &i, 100).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

fn ids(b: &dyn Backend) {
    let mut syncs = Syncs::default();
    for bad in ["", "../x", "a/b", ".", "x\0"] {
        let e = b.put(FileKind::Index, bad, b"x", &mut syncs).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}: {e}");
        let e = b.read(FileKind::Snapshot, bad, 10).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}: {e}");
    }
    assert!(b.staging().unwrap().is_empty());
}

fn locks(b: &dyn Backend) {
    let x = b.try_lock(true).unwrap().expect("a free lock is taken");
    assert!(b.try_lock(true).unwrap().is_none(), "exclusive excludes");
    assert!(b.try_lock(false).unwrap().is_none(), "and readers");
    assert!(!b.lock_note().is_empty());
    drop(x);
    let r1 = b.try_lock(false).unwrap().expect("shared");
    let r2 = b.try_lock(false).unwrap().expect("shared twice");
    assert!(
        b.try_lock(true).unwrap().is_none(),
        "readers exclude a writer"
    );
    drop((r1, r2));
    let l = super::lock(b, true, 0).unwrap();
    assert_eq!((l.attempts, l.exclusive), (1, true));
    let e = super::lock(b, false, 30).unwrap_err();
    assert_eq!(e.id(), crate::error::ErrorId::E_LOCKING);
    drop(l);
}

fn barrier_and_syncs(b: &dyn Backend) {
    let mut off = Syncs::default();
    b.barrier(&mut off).unwrap();
    assert_eq!(off.count, 0, "no sync is made when syncs are off");
    let mut on = Syncs::on();
    b.barrier(&mut on).unwrap();
    assert_eq!(on.count, 1, "a barrier is one sync");
}
