//! `config.json`: what a repository is (format, version, id, hash,
//! chunker bounds). Pure: parsing and building, no I/O.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::key::{self, SealedConfig};
use crate::error::{Error, Result};

/// The `format` value of `config.json`.
pub const FORMAT_NAME: &str = "snap";
/// The repository format version this build writes (`snap init`).
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format version this build reads and writes into (a
/// format-2 repository stays format 2: packs without compression).
pub const FORMAT_OLDEST: u32 = 2;
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
    /// Format version: 2 or 3.
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
    /// version this build does not know. The version is read first, so a
    /// newer repository is refused as such whatever else its config holds;
    /// fields this build does not know are ignored.
    ///
    /// # Errors
    ///
    /// [`Error::RepoVersion`] for a version newer than [`FORMAT_VERSION`];
    /// [`Error::Integrity`] for malformed JSON, another format name, or a
    /// version older than [`FORMAT_OLDEST`].
    pub fn parse(bytes: &[u8], path: &str) -> Result<Config> {
        match Self::parse_file(bytes, path)? {
            ConfigFile::Plain(c) => Ok(c),
            ConfigFile::Sealed(_) => Err(Error::Integrity {
                path: path.to_owned(),
                detail: "a sealed config holds another sealed config".into(),
            }),
        }
    }

    /// Parses `config.json` (shown as `path`): a plain config, or the
    /// outer part of an encrypted repository's (one with an `encryption`
    /// object), whose sealed config [`Config::parse`] reads once a key
    /// opened it. Versions are checked as [`Config::parse`] says; an
    /// encryption this build does not know is refused.
    ///
    /// # Errors
    ///
    /// As [`Config::parse`].
    pub fn parse_file(bytes: &[u8], path: &str) -> Result<ConfigFile> {
        #[derive(Deserialize)]
        struct Head {
            format: String,
            version: u32,
            #[serde(default)]
            encryption: Option<serde_json::Value>,
        }
        let malformed = |e: serde_json::Error| Error::Integrity {
            path: path.to_owned(),
            detail: format!("malformed config: {e}"),
        };
        let head: Head = serde_json::from_slice(bytes).map_err(malformed)?;
        if head.format == FORMAT_NAME && head.version > FORMAT_VERSION {
            return Err(Error::RepoVersion {
                path: path.to_owned(),
                version: head.version,
                oldest: FORMAT_OLDEST,
                newest: FORMAT_VERSION,
            });
        }
        if head.format != FORMAT_NAME || head.version < FORMAT_OLDEST {
            return Err(Error::Integrity {
                path: path.to_owned(),
                detail: format!(
                    "repository format {:?} version {} is not supported (this snap reads {FORMAT_NAME:?} versions {FORMAT_OLDEST} to {FORMAT_VERSION})",
                    head.format, head.version
                ),
            });
        }
        if head.encryption.is_some() {
            let sealed: SealedConfig = serde_json::from_slice(bytes).map_err(malformed)?;
            if sealed.version < 3
                || sealed.encryption.aead != key::AEAD
                || sealed.encryption.kdf != key::KDF
            {
                return Err(Error::Integrity {
                    path: path.to_owned(),
                    detail: format!(
                        "format {} encrypted with {} and {} is not supported (this snap encrypts format 3 with {} and {})",
                        sealed.version,
                        sealed.encryption.aead,
                        sealed.encryption.kdf,
                        key::AEAD,
                        key::KDF
                    ),
                });
            }
            return Ok(ConfigFile::Sealed(sealed));
        }
        serde_json::from_slice(bytes)
            .map(ConfigFile::Plain)
            .map_err(malformed)
    }

    /// Whether content ids are keyed BLAKE3 (an encrypted repository's
    /// sealed config says `"hash": "blake3-keyed"`).
    pub fn keyed(&self) -> bool {
        self.hash == HASH_KEYED
    }
}

/// The `hash` of an encrypted repository's sealed config.
pub const HASH_KEYED: &str = "blake3-keyed";

/// What `config.json` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    /// The config itself.
    Plain(Config),
    /// An encrypted repository's: the config is sealed inside.
    Sealed(SealedConfig),
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
        old.version = 2;
        assert_eq!(
            Config::parse(&old.to_bytes().unwrap(), "c")
                .unwrap()
                .version,
            2
        );
        // A newer version is refused as such, even with fields this build
        // cannot parse; an unknown field of a known version is ignored.
        let newer = br#"{"format":"snap","version":4,"chunker":"something new"}"#;
        let e = Config::parse(newer, "c").unwrap_err();
        assert_eq!(e.id(), crate::error::ErrorId::E_REPO_VERSION);
        assert!(e.to_string().contains("version 4"), "{e}");
        let mut v = serde_json::to_value(&c).unwrap();
        v["later"] = serde_json::json!([1, 2]);
        assert_eq!(
            Config::parse(&serde_json::to_vec(&v).unwrap(), "c").unwrap(),
            c
        );
    }
}
