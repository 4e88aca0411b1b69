//! `--exclude` patterns: gitignore's rules for where a pattern applies
//! (`gitignore(5)`, "PATTERN FORMAT"), matched with globset. No side
//! effects.

use std::path::Path;

use globset::{GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::fs::RelPath;

/// Exclude patterns compiled for matching (see [`Policy::excludes`]),
/// gitignore's rules for where a pattern applies (`gitignore(5)`,
/// "PATTERN FORMAT"): without `/` a name at any depth; with `/` the path
/// relative to the source (a leading `/` only anchors); a trailing `/`
/// matches directories only.
pub(super) struct Excludes {
    pub(super) by_name: GlobSet,
    pub(super) by_path: GlobSet,
    pub(super) dir_by_name: GlobSet,
    pub(super) dir_by_path: GlobSet,
}

impl Excludes {
    /// Compiles `patterns` for a backup of `source` (absolute).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for an invalid glob, and for a pattern that can
    /// never match: an absolute path of the source (or under it), which
    /// patterns are not (they are relative to it), and an empty one.
    pub(super) fn new(patterns: &[String], source: &Path) -> Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        let mut dir_by_name = GlobSetBuilder::new();
        let mut dir_by_path = GlobSetBuilder::new();
        let src = source.as_os_str().as_bytes();
        for p in patterns {
            let (dirs_only, body) = match p.strip_suffix('/') {
                Some(b) => (true, b),
                None => (false, p.as_str()),
            };
            if body.is_empty() || body == "/" {
                return Err(Error::Usage(format!(
                    "--exclude {p:?} matches nothing (an empty pattern)"
                )));
            }
            if src.len() > 1
                && body.as_bytes().starts_with(src)
                && matches!(body.as_bytes().get(src.len()), None | Some(b'/'))
            {
                let rest = &body[src.len()..];
                return Err(Error::Usage(format!(
                    "--exclude {p:?} can never match: patterns are relative to the source {}, so write {:?}",
                    source.display(),
                    if rest.is_empty() { "*".to_owned() } else { format!("{rest}{}", if dirs_only { "/" } else { "" }) }
                )));
            }
            let (set, pat) = match (body.strip_prefix('/'), dirs_only) {
                (Some(rest), false) => (&mut by_path, rest),
                (Some(rest), true) => (&mut dir_by_path, rest),
                (None, false) if body.contains('/') => (&mut by_path, body),
                (None, true) if body.contains('/') => (&mut dir_by_path, body),
                (None, false) => (&mut by_name, body),
                (None, true) => (&mut dir_by_name, body),
            };
            let glob = globset::GlobBuilder::new(pat)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::Usage(format!("invalid --exclude pattern {p:?}: {e}")))?;
            set.add(glob);
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Usage(format!("invalid --exclude patterns: {e}")))
        };
        Ok(Self {
            by_name: build(by_name)?,
            by_path: build(by_path)?,
            dir_by_name: build(dir_by_name)?,
            dir_by_path: build(dir_by_path)?,
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
            && self.by_path.is_empty()
            && self.dir_by_name.is_empty()
            && self.dir_by_path.is_empty()
    }

    /// Whether the entry at `rel` (a directory when `is_dir`) is left out.
    pub(super) fn matches(&self, rel: &RelPath, is_dir: bool) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let Some(name) = rel.file_name() else {
            return false;
        };
        let name_path = Path::new(std::ffi::OsStr::from_bytes(name.as_bytes()));
        if self.by_name.is_match(name_path) || (is_dir && self.dir_by_name.is_match(name_path)) {
            return true;
        }
        let bytes = rel.to_bytes();
        let path = Path::new(std::ffi::OsStr::from_bytes(&bytes));
        self.by_path.is_match(path) || (is_dir && self.dir_by_path.is_match(path))
    }
}
