//! `--exclude` patterns, matched with the `ignore` crate's gitignore
//! matcher (`gitignore(5)`, "PATTERN FORMAT"), rooted at the source. No
//! side effects.

use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::{Error, Result};
use crate::fs::RelPath;

/// Exclude patterns compiled for matching (see
/// [`crate::policy::Policy::excludes`]), with gitignore's rules, rooted at
/// the source:
///
/// - a pattern without `/` (but a trailing one) matches a name at any
///   depth; one with `/` at its start or in its middle matches the path
///   relative to the source;
/// - a trailing `/` matches directories only;
/// - `*` does not cross `/`, `**` does;
/// - `!pattern` takes an entry back in (a later pattern wins); an entry
///   under an excluded directory stays out, since the walk never enters
///   it;
/// - an absolute path of the source or under it (`/usr/share/doc/bash`
///   for a backup of `/usr/share/doc`) is taken as that path, as restic
///   takes it; a pattern starting with `/` that is not one is anchored at
///   the source, as in a `.gitignore` at its root.
pub(super) struct Excludes {
    matcher: Gitignore,
}

impl Excludes {
    /// Compiles `patterns` for a backup of `source` (absolute).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for an empty pattern and one the matcher rejects
    /// (an invalid glob), naming it.
    pub(super) fn new(patterns: &[String], source: &Path) -> Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let mut b = GitignoreBuilder::new(source);
        let src = source.as_os_str().as_bytes();
        for p in patterns {
            let (neg, body) = match p.strip_prefix('!') {
                Some(rest) => ("!", rest),
                None => ("", p.as_str()),
            };
            if body.trim_end_matches('/').is_empty() {
                return Err(Error::Usage(format!(
                    "--exclude {p:?} matches nothing (an empty pattern)"
                )));
            }
            // An absolute path of the source itself or under it.
            let line = if src.len() > 1
                && body.as_bytes().starts_with(src)
                && matches!(body.as_bytes().get(src.len()), None | Some(b'/'))
            {
                let rest = &body[src.len()..];
                if rest.trim_end_matches('/').is_empty() {
                    return Err(Error::Usage(format!(
                        "--exclude {p:?} is the source {} itself: it would leave nothing",
                        source.display()
                    )));
                }
                format!("{neg}{rest}")
            } else {
                p.clone()
            };
            b.add_line(None, &line)
                .map_err(|e| Error::Usage(format!("invalid --exclude pattern {p:?}: {e}")))?;
        }
        let matcher = b
            .build()
            .map_err(|e| Error::Usage(format!("invalid --exclude patterns: {e}")))?;
        Ok(Self { matcher })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.matcher.is_empty()
    }

    /// Whether the entry at `rel` (a directory when `is_dir`) is left out:
    /// the last pattern that matches it decides.
    pub(super) fn matches(&self, rel: &RelPath, is_dir: bool) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let bytes = rel.to_bytes();
        if bytes.is_empty() {
            return false;
        }
        let path = Path::new(std::ffi::OsStr::from_bytes(&bytes));
        self.matcher.matched(path, is_dir).is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        let mut r = RelPath::default();
        for c in s.split('/') {
            r = r.join(crate::fs::Name::new(c.as_bytes()).unwrap());
        }
        r
    }

    fn ex(patterns: &[&str]) -> Excludes {
        let p: Vec<String> = patterns.iter().map(|s| (*s).to_owned()).collect();
        Excludes::new(&p, Path::new("/usr/share/doc")).unwrap()
    }

    /// gitignore's rules: names at any depth, anchored and slashed paths,
    /// directories only, `**`, negation (the last match wins), and
    /// absolute paths under the source.
    #[test]
    fn gitignore_rules_with_absolute_paths() {
        let e = ex(&["*.gz", "!keep.gz", "bash/", "/top", "a/b"]);
        assert!(e.matches(&rel("x/y/z.gz"), false));
        assert!(!e.matches(&rel("x/keep.gz"), false));
        assert!(e.matches(&rel("bash"), true) && e.matches(&rel("x/bash"), true));
        assert!(
            !e.matches(&rel("bash"), false),
            "dir/ matches directories only"
        );
        assert!(e.matches(&rel("top"), false) && !e.matches(&rel("x/top"), false));
        assert!(e.matches(&rel("a/b"), false) && !e.matches(&rel("x/a/b"), false));
        let e = ex(&[
            "/usr/share/doc/bash",
            "/usr/share/doc/x/**/*.html",
            "**/cache/**",
        ]);
        assert!(e.matches(&rel("bash"), true));
        assert!(!e.matches(&rel("y/bash"), true));
        assert!(e.matches(&rel("x/a/b/c.html"), false));
        assert!(e.matches(&rel("p/cache/q"), false));
        assert!(!e.matches(&rel("p/cache"), true));
        for bad in ["", "/", "!", "/usr/share/doc", "/usr/share/doc/"] {
            let p = vec![bad.to_owned()];
            assert!(
                Excludes::new(&p, Path::new("/usr/share/doc")).is_err(),
                "{bad:?}"
            );
        }
    }
}
