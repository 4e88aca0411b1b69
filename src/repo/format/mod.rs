//! The repository format's file kinds as types and parsers, one module per
//! kind (`docs/FORMAT.md`): `config.json`, snapshot records, index files,
//! pack footers and trailers, entries files and their sidecar v2 records.
//!
//! Pure: no I/O and no side effects. The bytes come from and go to a
//! [`crate::repo::storage::Backend`]; every parser here checks what it
//! reads against the format (ids, versions, bounds) and names the file it
//! was given in its errors.

pub mod blob;
pub mod config;
pub mod entries;
pub mod index;
pub mod key;
pub mod pack;
pub mod sidecar;
pub mod snapshot;
pub mod tier;

use crate::error::{Error, Result};

/// Target size of a pack's blob data, in bytes.
pub const PACK_TARGET: usize = 16 * 1024 * 1024;

/// [`Error::Integrity`] unless `bytes` hash (BLAKE3-256) to the hex `id`;
/// `what` names the file kind in the message.
///
/// # Errors
///
/// As above.
pub fn check_id(bytes: &[u8], id: &str, path: &str, what: &str) -> Result<()> {
    check_hash(&blake3::hash(bytes), id, path, what)
}

/// [`Error::Integrity`] unless `hash` is the hex `id`.
///
/// # Errors
///
/// As above.
pub fn check_hash(hash: &blake3::Hash, id: &str, path: &str, what: &str) -> Result<()> {
    if hash.to_hex().as_str() == id {
        Ok(())
    } else {
        Err(Error::Integrity {
            path: path.to_owned(),
            detail: format!("{what} does not match its BLAKE3 id"),
        })
    }
}

/// Whether `s` is a BLAKE3-256 id in hex (64 hex digits).
pub fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_id_compares_the_blake3_of_the_bytes() {
        let id = blake3::hash(b"x").to_hex().to_string();
        assert!(super::check_id(b"x", &id, "p", "f").is_ok());
        let e = super::check_id(b"y", &id, "p", "index file").unwrap_err();
        assert!(e
            .to_string()
            .contains("index file does not match its BLAKE3 id"));
        assert!(super::is_hex_id(&id) && !super::is_hex_id("ab"));
    }
}
