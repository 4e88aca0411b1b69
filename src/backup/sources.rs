//! Several sources in one snapshot (`snap backup /etc /usr/share/doc`,
//! `--files-from`): the directory they are walked from and which paths
//! under it are taken.
//!
//! One source is the snapshot's root, as it always was. Several are
//! walked from the deepest directory holding them all (`/` for `/etc` and
//! `/usr/share/doc`), and entries are relative to it
//! (`etc/hostname`, `usr/share/doc/bash/README`): the directories between
//! it and a source are recorded with their own metadata and only the
//! names that lead to a source, as restic records a source's parent
//! directories (`doc/040_backup.rst`). `docs/FORMAT.md`, "Snapshot
//! records".

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::{Name, RelPath};

/// The sources of one backup, resolved.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Every source as stored in the record: absolute, sorted, duplicates
    /// dropped. Several sources have their parent directories resolved
    /// (symbolic links and `..`; the last component is kept as given, so
    /// a symbolic link named as a source is stored as the link); one
    /// source is kept as given, made absolute.
    pub paths: Vec<PathBuf>,
    /// The snapshot's root: the one source, or the deepest directory
    /// holding every source.
    pub root: PathBuf,
    /// Which paths under `root` are taken; `None` for one source (all).
    pub selection: Option<Selection>,
}

/// The paths under the root that several sources select.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The sources, relative to the root.
    sources: HashSet<RelPath>,
    /// Every directory between the root and a source (the root included).
    between: HashSet<RelPath>,
    /// The `st_dev` of every source, the filesystems `-x` stays on.
    pub devices: Vec<(u32, u32)>,
}

impl Selection {
    /// Whether everything in (or at) `rel` is taken: `rel` is a source or
    /// lies under one. O(depth) lookups.
    pub fn inside(&self, rel: &RelPath) -> bool {
        let mut prefix = RelPath::root();
        if self.sources.contains(&prefix) {
            return true;
        }
        for name in rel.components() {
            prefix = prefix.join(name.clone());
            if self.sources.contains(&prefix) {
                return true;
            }
        }
        false
    }

    /// Whether `rel`, in a directory not [`Selection::inside`] a source,
    /// is taken: it is a source or leads to one.
    pub fn wanted(&self, rel: &RelPath) -> bool {
        self.sources.contains(rel) || self.between.contains(rel)
    }
}

/// `path` made absolute without touching the filesystem, with `.`
/// components and trailing slashes dropped.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io("resolve", path.display(), e))
}

/// `path` with its parent directories resolved (`realpath(3)`), the last
/// component kept: a source that is a symbolic link stays one; and the
/// `st_dev` of what it names (`lstat`, once).
fn resolve(path: &Path) -> Result<(PathBuf, (u32, u32))> {
    let abs = absolute(path)?;
    let missing = || Error::SourceMissing {
        path: abs.display().to_string(),
    };
    let canon = |p: &Path| {
        std::fs::canonicalize(p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => missing(),
            _ => Error::io("resolve", p.display(), e),
        })
    };
    let resolved = match (abs.parent(), abs.components().next_back()) {
        (Some(parent), Some(Component::Normal(name))) => canon(parent)?.join(name),
        // `/`, or a path ending in `..`.
        _ => canon(&abs)?,
    };
    match crate::fs::lstat_path(&resolved) {
        Ok(Some(st)) => Ok((resolved, st.dev)),
        Ok(None) => Err(missing()),
        Err(e) => Err(Error::io("stat", resolved.display(), e)),
    }
}

impl Sources {
    /// Resolves the sources given on the command line and in
    /// `--files-from`.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for no source; [`Error::SourceMissing`] naming the
    /// first source that does not exist; an I/O error resolving one.
    pub fn new(given: &[PathBuf]) -> Result<Sources> {
        let one = |p: &Path| -> Result<Sources> {
            let p = absolute(p)?;
            Ok(Sources {
                paths: vec![p.clone()],
                root: p,
                selection: None,
            })
        };
        match given {
            [] => return Err(Error::Usage("no source given".into())),
            [p] => return one(p),
            _ => {}
        }
        let mut found = given
            .iter()
            .map(|p| resolve(p))
            .collect::<Result<Vec<_>>>()?;
        found.sort();
        found.dedup();
        let (paths, devices): (Vec<PathBuf>, Vec<(u32, u32)>) = found.into_iter().unzip();
        if paths.len() == 1 {
            return one(&given[0]);
        }
        // The deepest common directory, component by component.
        let comps: Vec<Vec<Component>> = paths.iter().map(|p| p.components().collect()).collect();
        let mut depth = 0;
        while comps
            .iter()
            .all(|c| depth < c.len() && c[depth] == comps[0][depth])
        {
            depth += 1;
        }
        let root: PathBuf = comps[0][..depth].iter().collect();
        let mut sel = Selection {
            devices,
            ..Selection::default()
        };
        for (p, c) in paths.iter().zip(&comps) {
            let mut rel = RelPath::root();
            for comp in &c[depth..] {
                sel.between.insert(rel.clone());
                let name = Name::new(comp.as_os_str().as_bytes())
                    .map_err(|e| Error::Usage(format!("source {}: {e}", p.display())))?;
                rel = rel.join(name);
            }
            sel.sources.insert(rel);
        }
        Ok(Sources {
            paths,
            root,
            selection: Some(sel),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn several_sources_share_their_deepest_directory() {
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        for p in ["a/x/1", "a/y", "b"] {
            std::fs::create_dir_all(base.join(p)).unwrap();
        }
        std::os::unix::fs::symlink(base.join("a"), base.join("link")).unwrap();
        let s =
            Sources::new(&[base.join("a/x/1"), base.join("link/y"), base.join("a/x/1/")]).unwrap();
        // `link/y` resolves through the link; duplicates are dropped.
        assert_eq!(s.paths, vec![base.join("a/x/1"), base.join("a/y")]);
        assert_eq!(s.root, base.join("a"));
        let sel = s.selection.unwrap();
        assert!(sel.wanted(&rel("x")) && sel.wanted(&rel("x/1")) && sel.wanted(&rel("y")));
        assert!(!sel.wanted(&rel("z")) && !sel.wanted(&rel("x/2")));
        assert!(sel.inside(&rel("x/1")) && sel.inside(&rel("x/1/deep/er")));
        assert!(!sel.inside(&rel("x")) && !sel.inside(&RelPath::root()));

        // A source inside another: the outer one takes everything.
        let s = Sources::new(&[base.join("a"), base.join("a/x")]).unwrap();
        assert_eq!(s.root, base.join("a"));
        assert!(s.selection.unwrap().inside(&rel("z")));

        // One source is kept as given; a missing one is named.
        let s = Sources::new(&[base.join("link")]).unwrap();
        assert_eq!(s.root, base.join("link"));
        assert!(s.selection.is_none());
        match Sources::new(&[base.join("a"), base.join("nope/x")]) {
            Err(Error::SourceMissing { path }) => assert!(path.ends_with("nope/x"), "{path}"),
            other => panic!("{other:?}"),
        }
    }
}
