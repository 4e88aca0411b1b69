//! Where each repository file lives: the one place that spells a
//! repository path (`docs/FORMAT.md`, "Layout").
//!
//! ```text
//! <repo>/config.json  lock  packs/<2 hex>/<id>.pack  index/<id>.idx
//!        entries/<2 hex>/<id>.jsonl  snapshots/<id>.json  keys/<id>.json  tmp/
//! ```
//!
//! Pure: names and paths, no I/O. Ids come from the repository (a
//! listing, a record) and are validated here before they become a name:
//! only ASCII letters, digits, `-` and `_`, so no id can name a path
//! outside its directory.

use std::fmt;

/// The kinds of repository file a [`crate::repo::storage::Backend`]
/// stores, each keyed by an id (the config has one file; its id is
/// ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    /// `config.json`.
    Config,
    /// `packs/<2 hex>/<id>.pack`.
    Pack,
    /// `index/<id>.idx`.
    Index,
    /// `entries/<2 hex>/<id>.jsonl`.
    Entries,
    /// `snapshots/<id>.json`.
    Snapshot,
    /// `keys/<id>.json` (encrypted repositories).
    Key,
}

impl FileKind {
    /// Every kind.
    pub const ALL: [FileKind; 6] = [
        FileKind::Config,
        FileKind::Pack,
        FileKind::Index,
        FileKind::Entries,
        FileKind::Snapshot,
        FileKind::Key,
    ];

    /// The directory holding files of this kind (`""` for the config, at
    /// the top).
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "",
            FileKind::Pack => PACKS,
            FileKind::Index => INDEX,
            FileKind::Entries => ENTRIES,
            FileKind::Snapshot => SNAPSHOTS,
            FileKind::Key => KEYS,
        }
    }

    /// The file name's suffix after the id.
    pub fn suffix(self) -> &'static str {
        match self {
            FileKind::Config => "",
            FileKind::Pack => ".pack",
            FileKind::Index => ".idx",
            FileKind::Entries => ".jsonl",
            FileKind::Snapshot => ".json",
            FileKind::Key => ".json",
        }
    }

    /// Whether files sit in a fan-out directory named by the first two
    /// characters of their id (there are many of them).
    pub fn fans_out(self) -> bool {
        matches!(self, FileKind::Pack | FileKind::Entries)
    }

    /// The kind's name in messages (`"pack"`, `"index file"`, …).
    pub fn noun(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Pack => "pack",
            FileKind::Index => "index file",
            FileKind::Entries => "entries file",
            FileKind::Snapshot => "snapshot record",
            FileKind::Key => "key file",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// The config file's name.
pub const CONFIG: &str = "config.json";
/// The lock file's name.
pub const LOCK: &str = "lock";
/// Packs.
pub const PACKS: &str = "packs";
/// Index files.
pub const INDEX: &str = "index";
/// Entries files.
pub const ENTRIES: &str = "entries";
/// Snapshot records.
pub const SNAPSHOTS: &str = "snapshots";
/// Key files (encrypted repositories).
pub const KEYS: &str = "keys";
/// Files being written; anything here is garbage after a crash.
pub const STAGING: &str = "tmp";
/// The directories a new repository gets, in creation order.
pub const DIRS: [&str; 6] = [PACKS, INDEX, ENTRIES, SNAPSHOTS, KEYS, STAGING];

/// Why an id cannot name a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} id {id:?} is not a valid id (ASCII letters, digits, '-' or '_'{more})")]
pub struct BadId {
    /// The kind.
    pub kind: FileKind,
    /// The id as given.
    pub id: String,
    more: &'static str,
}

/// Checks that `id` can name a file of `kind`: 1 to 128 ASCII letters,
/// digits, `-` or `_`, and at least 2 for a kind that fans out.
///
/// # Errors
///
/// [`BadId`].
pub fn check_id(kind: FileKind, id: &str) -> Result<(), BadId> {
    if kind == FileKind::Config {
        return Ok(());
    }
    let min = if kind.fans_out() { 2 } else { 1 };
    let ok = (min..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(BadId {
            kind,
            id: id.to_owned(),
            more: if kind.fans_out() { "; at least 2" } else { "" },
        })
    }
}

/// The file name of `id` (`<id><suffix>`, or `config.json`).
pub fn file_name(kind: FileKind, id: &str) -> String {
    match kind {
        FileKind::Config => CONFIG.to_owned(),
        _ => format!("{id}{}", kind.suffix()),
    }
}

/// The fan-out directory of `id` under the kind's directory, when the
/// kind fans out (`Some("ab")` for `ab12…`).
pub fn fanout(kind: FileKind, id: &str) -> Option<&str> {
    if kind.fans_out() {
        id.get(..2)
    } else {
        None
    }
}

/// The path of `id` relative to the repository root
/// (`packs/ab/ab12….pack`, `index/….idx`, `config.json`).
pub fn path(kind: FileKind, id: &str) -> String {
    let mut p = String::new();
    if !kind.dir().is_empty() {
        p.push_str(kind.dir());
        p.push('/');
    }
    if let Some(sub) = fanout(kind, id) {
        p.push_str(sub);
        p.push('/');
    }
    p.push_str(&file_name(kind, id));
    p
}

/// The id a listed name stands for: `name` is relative to the kind's
/// directory (`ab/<id>.pack` for a kind that fans out, `<id>.idx`
/// otherwise). `None` for a name no file of the kind has: another suffix,
/// a fan-out directory that is not the id's first two characters, an id
/// [`check_id`] refuses.
pub fn id_of(kind: FileKind, name: &str) -> Option<&str> {
    let file = if kind.fans_out() {
        let (sub, file) = name.split_once('/')?;
        let id = file.strip_suffix(kind.suffix())?;
        if id.get(..2) != Some(sub) {
            return None;
        }
        file
    } else {
        name
    };
    let id = file.strip_suffix(kind.suffix())?;
    check_id(kind, id).ok().map(|()| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_format_and_names_map_back_to_ids() {
        let id = "ab".repeat(32);
        assert_eq!(path(FileKind::Pack, &id), format!("packs/ab/{id}.pack"));
        assert_eq!(
            path(FileKind::Entries, &id),
            format!("entries/ab/{id}.jsonl")
        );
        assert_eq!(path(FileKind::Index, &id), format!("index/{id}.idx"));
        assert_eq!(
            path(FileKind::Snapshot, &id),
            format!("snapshots/{id}.json")
        );
        assert_eq!(path(FileKind::Config, "x"), "config.json");
        for kind in FileKind::ALL {
            if kind == FileKind::Config {
                continue;
            }
            let rel = path(kind, &id);
            let name = &rel[kind.dir().len() + 1..];
            assert_eq!(id_of(kind, name), Some(id.as_str()), "{rel}");
        }
        assert_eq!(id_of(FileKind::Pack, &format!("cd/{id}.pack")), None);
        assert_eq!(id_of(FileKind::Pack, &format!("{id}.pack")), None);
        assert_eq!(id_of(FileKind::Index, &format!("{id}.json")), None);
        assert_eq!(id_of(FileKind::Snapshot, "x y.json"), None);
    }

    #[test]
    fn ids_that_could_leave_their_directory_are_refused() {
        for bad in ["", "..", "a/b", "a\0", "é", &"a".repeat(129)] {
            assert!(check_id(FileKind::Index, bad).is_err(), "{bad:?}");
        }
        assert!(check_id(FileKind::Pack, "a").is_err());
        assert!(check_id(FileKind::Index, "a").is_ok());
        assert!(check_id(FileKind::Config, "../x").is_ok(), "ignored");
    }
}
