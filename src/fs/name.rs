//! Validated path components ([`Name`]) and relative paths ([`RelPath`]).
//!
//! Owns no state and performs no I/O. Every name that reaches a syscall in
//! [`crate::fs`] passes through [`Name::new`], which refuses the empty name,
//! `.`, `..`, and any byte string holding `/` or NUL. This is what keeps
//! names read from a repository (possibly hostile) from escaping the
//! directory they are applied to.

use std::fmt;

use base64::Engine as _;

/// One path component: non-empty bytes without `/` or NUL, never `.` or `..`.
///
/// Names are bytes, not strings: Linux file names need not be UTF-8 and snap
/// stores them losslessly.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Box<[u8]>);

/// Why a byte string is not a valid [`Name`] or [`RelPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The component is empty (`a//b`, or a leading/trailing `/`).
    #[error("empty path component")]
    Empty,
    /// The component is `.` or `..`.
    #[error("path component {0:?} is not allowed")]
    Dot(String),
    /// The component holds a NUL byte.
    #[error("path component holds a NUL byte")]
    Nul,
    /// The component holds `/` (only possible through [`Name::new`]).
    #[error("path component holds '/'")]
    Slash,
    /// A relative path was expected but the string starts with `/`.
    #[error("path is absolute")]
    Absolute,
    /// The stored base64 form of a path is not valid base64.
    #[error("invalid base64 path {0:?}")]
    Encoding(String),
}

impl Name {
    /// Validates `bytes` as a single path component.
    ///
    /// # Errors
    ///
    /// [`NameError`] when `bytes` is empty, `.`, `..`, or holds `/` or NUL.
    pub fn new(bytes: &[u8]) -> Result<Self, NameError> {
        if bytes.is_empty() {
            return Err(NameError::Empty);
        }
        if bytes == b"." || bytes == b".." {
            return Err(NameError::Dot(String::from_utf8_lossy(bytes).into_owned()));
        }
        if bytes.contains(&0) {
            return Err(NameError::Nul);
        }
        if bytes.contains(&b'/') {
            return Err(NameError::Slash);
        }
        Ok(Self(bytes.into()))
    }

    /// The raw bytes of the name.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// A relative path: zero or more [`Name`]s. Zero components is the root of
/// whatever directory the path is applied to.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Vec<Name>);

impl RelPath {
    /// The empty path (the root).
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Parses `a/b/c` (bytes). The empty string is the root.
    ///
    /// # Errors
    ///
    /// [`NameError::Absolute`] for a leading `/`; otherwise the first invalid
    /// component's [`NameError`] (`a//b`, `a/./b`, `../x`, NUL).
    pub fn parse(bytes: &[u8]) -> Result<Self, NameError> {
        if bytes.is_empty() {
            return Ok(Self::root());
        }
        if bytes[0] == b'/' {
            return Err(NameError::Absolute);
        }
        bytes
            .split(|b| *b == b'/')
            .map(Name::new)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Parses the stored form of a path: `b64` (standard base64 of the raw
    /// bytes) when present, else the UTF-8 `text`.
    ///
    /// # Errors
    ///
    /// [`NameError`] as for [`RelPath::parse`]; [`NameError::Encoding`] for
    /// invalid base64.
    pub fn from_stored(text: &str, b64: Option<&str>) -> Result<Self, NameError> {
        match b64 {
            Some(b) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|_| NameError::Encoding(b.to_owned()))?;
                Self::parse(&raw)
            }
            None => Self::parse(text.as_bytes()),
        }
    }

    /// The components.
    pub fn components(&self) -> &[Name] {
        &self.0
    }

    /// True for the root (no components).
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The last component, `None` for the root.
    pub fn file_name(&self) -> Option<&Name> {
        self.0.last()
    }

    /// The path without its last component, `None` for the root.
    pub fn parent(&self) -> Option<RelPath> {
        if self.0.is_empty() {
            None
        } else {
            Some(Self(self.0[..self.0.len() - 1].to_vec()))
        }
    }

    /// This path with `name` appended.
    pub fn join(&self, name: Name) -> RelPath {
        let mut v = self.0.clone();
        v.push(name);
        Self(v)
    }

    /// True when `prefix` is this path or one of its ancestors.
    pub fn starts_with(&self, prefix: &RelPath) -> bool {
        self.0.len() >= prefix.0.len() && self.0[..prefix.0.len()] == prefix.0[..]
    }

    /// This path with the leading `prefix` removed, `None` when it does not
    /// start with `prefix`.
    pub fn strip_prefix(&self, prefix: &RelPath) -> Option<RelPath> {
        self.starts_with(prefix)
            .then(|| Self(self.0[prefix.0.len()..].to_vec()))
    }

    /// The raw bytes, components joined with `/`; empty for the root.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(n.as_bytes());
        }
        out
    }

    /// The stored form: (UTF-8 text, base64 of the raw bytes when they are
    /// not valid UTF-8). The text is lossy only when the base64 is present.
    pub fn to_stored(&self) -> (String, Option<String>) {
        bytes_to_stored(&self.to_bytes())
    }
}

/// Splits raw bytes into the stored (text, optional base64) pair used for
/// paths and symlink targets in sidecar records.
pub fn bytes_to_stored(raw: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(raw) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(raw).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(raw)),
        ),
    }
}

/// Inverse of [`bytes_to_stored`].
///
/// # Errors
///
/// A message naming the invalid base64.
pub fn stored_to_bytes(text: &str, b64: Option<&str>) -> Result<Vec<u8>, String> {
    match b64 {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| format!("invalid base64 {b:?}: {e}")),
        None => Ok(text.as_bytes().to_vec()),
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.to_bytes()))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_hostile_components() {
        assert_eq!(Name::new(b""), Err(NameError::Empty));
        assert!(matches!(Name::new(b".."), Err(NameError::Dot(_))));
        assert!(matches!(Name::new(b"."), Err(NameError::Dot(_))));
        assert_eq!(Name::new(b"a/b"), Err(NameError::Slash));
        assert_eq!(Name::new(b"a\0b"), Err(NameError::Nul));
        assert_eq!(RelPath::parse(b"/etc/passwd"), Err(NameError::Absolute));
        assert!(RelPath::parse(b"a/../../b").is_err());
        assert!(RelPath::parse(b"a//b").is_err());
        assert!(RelPath::parse(b"a/").is_err());
        assert_eq!(RelPath::parse(b"a/b\xff").unwrap().components().len(), 2);
    }

    proptest! {
        #[test]
        fn stored_form_round_trips(parts in proptest::collection::vec(
            proptest::collection::vec(1u8..=255, 1..12), 0..5)) {
            let parts: Vec<Vec<u8>> = parts.into_iter()
                .map(|p| p.into_iter().map(|b| if b == b'/' { b'x' } else { b }).collect())
                .filter(|p: &Vec<u8>| p != b"." && p != b"..")
                .collect();
            let joined = parts.join(&b'/');
            let path = RelPath::parse(&joined).unwrap();
            let (text, b64) = path.to_stored();
            let back = RelPath::from_stored(&text, b64.as_deref()).unwrap();
            prop_assert_eq!(back.to_bytes(), joined);
        }
    }
}
