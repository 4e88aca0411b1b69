//! `config.json`: what a repository is (format, version, id, hash,
//! chunker bounds). Pure: parsing and building, no I/O.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `format` value of `config.json`.
pub const FORMAT_NAME: &str = "snap";
/// The repository format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;
/// Most bytes a `config.json` may hold.
pub const CONFIG_MAX: u64 = 64 << 10;

/// Content-defined chunking parameters (FastCDC 2020), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChunkerParams {
    /// Always `"fastcdc-2020"`.
    pub algorithm: ChunkerAlgorithm,
    /// Minimum chunk size.
    pub min: u32,
    /// Average (target) chunk size.
    pub avg: u32,
    /// Maximum chunk size.
    pub max: u32,
}

/// The chunking algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ChunkerAlgorithm {
    /// FastCDC as in Xia et al. 2020, `fastcdc::v2020`.
    #[serde(rename = "fastcdc-2020")]
    FastCdc2020,
}

/// `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Config {
    /// Always `"snap"`.
    pub format: String,
    /// Format version, 1.
    pub version: u32,
    /// Random repository id, 32 hex digits.
    pub id: String,
    /// Blob and file hash: `"blake3"` (BLAKE3-256).
    pub hash: String,
    /// Chunker parameters; fixed for the life of the repository so that
    /// chunks deduplicate across snapshots.
    pub chunker: ChunkerParams,
}

impl Config {
    /// A new repository's config: this build's format and version, the
    /// random `id` (32 hex digits), BLAKE3, and FastCDC bounds of 512 KiB
    /// min, 1 MiB average, 8 MiB max (see `docs/FORMAT.md`, "Blobs and
    /// chunks").
    pub fn new(id: String) -> Config {
        Config {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id,
            hash: "blake3".into(),
            chunker: ChunkerParams {
                algorithm: ChunkerAlgorithm::FastCdc2020,
                min: 512 * 1024,
                avg: 1024 * 1024,
                max: 8 * 1024 * 1024,
            },
        }
    }

    /// The file's bytes (pretty JSON).
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] should serialising fail (it cannot).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::serialise("the config", e))
    }

    /// Parses `config.json` (shown as `path`) and refuses a format or
    /// version this build does not know.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] for malformed JSON or an unknown format/version.
    pub fn parse(bytes: &[u8], path: &str) -> Result<Config> {
        let config: Config = serde_json::from_slice(bytes).map_err(|e| Error::Integrity {
            path: path.to_owned(),
            detail: format!("malformed config: {e}"),
        })?;
        if config.format != FORMAT_NAME || config.version != FORMAT_VERSION {
            return Err(Error::Integrity {
                path: path.to_owned(),
                detail: format!(
                    "repository format {:?} version {} is not supported (this snap reads {FORMAT_NAME:?} version {FORMAT_VERSION})",
                    config.format, config.version
                ),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_config_parses_back_and_an_unknown_version_is_refused() {
        let c = Config::new("ab".repeat(16));
        assert_eq!(Config::parse(&c.to_bytes().unwrap(), "c").unwrap(), c);
        let mut old = c.clone();
        old.version = 1;
        let e = Config::parse(&old.to_bytes().unwrap(), "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 1 is not supported"), "{e}");
        assert!(Config::parse(b"{", "c").is_err());
    }
}
