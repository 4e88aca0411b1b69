//! Key files (`keys/<id>.json`) and the `encryption` part of an encrypted
//! repository's `config.json` (`docs/FORMAT.md`, "Encryption"). Pure:
//! parsing and building, no I/O.

use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::repo::crypto::KdfParams;

/// Most bytes a key file may hold.
pub const KEY_FILE_MAX: u64 = 64 << 10;
/// The AEAD every sealed file of format 3 uses.
pub const AEAD: &str = "xchacha20-poly1305";
/// The key derivation of key files.
pub const KDF: &str = "argon2id";

/// A key file: the master key sealed under a key derived from one
/// password. A repository has one per password; any of them opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeyFile {
    /// Key file version: 1.
    pub v: u32,
    /// When it was made (RFC 3339, UTC).
    pub created: String,
    /// The host it was made on.
    #[serde(default)]
    pub host: String,
    /// The user (login name, else uid) who made it.
    #[serde(default)]
    pub user: String,
    /// How the wrapping key is derived from the password.
    pub kdf: Kdf,
    /// The AEAD sealing the master key: `"xchacha20-poly1305"`.
    pub aead: String,
    /// The sealed master key (nonce, ciphertext, tag), standard base64.
    pub key: String,
}

/// Argon2id parameters and salt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Kdf {
    /// `"argon2id"`.
    pub algorithm: String,
    /// Argon2 version: 19 (0x13).
    pub version: u32,
    /// Memory, in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
    /// Salt, standard base64 (16 random bytes).
    pub salt: String,
}

impl KeyFile {
    /// A key file holding `sealed`, wrapped with `params` and `salt`.
    pub fn new(params: KdfParams, salt: &[u8], sealed: &[u8], created: String) -> KeyFile {
        let b64 = base64::engine::general_purpose::STANDARD;
        KeyFile {
            v: 1,
            created,
            host: crate::sys::hostname(),
            user: crate::sys::username(),
            kdf: Kdf {
                algorithm: KDF.into(),
                version: 0x13,
                m_cost: params.m_cost,
                t_cost: params.t_cost,
                p_cost: params.p_cost,
                salt: b64.encode(salt),
            },
            aead: AEAD.into(),
            key: b64.encode(sealed),
        }
    }

    /// The file's bytes (pretty JSON).
    ///
    /// # Errors
    ///
    /// A message should serialising fail (it cannot).
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec_pretty(self).map_err(|e| e.to_string())
    }

    /// Parses a key file, refusing versions, algorithms and parameters
    /// this build does not use (fields it does not know are ignored).
    ///
    /// # Errors
    ///
    /// A message naming what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<KeyFile, String> {
        let k: KeyFile =
            serde_json::from_slice(bytes).map_err(|e| format!("malformed key file: {e}"))?;
        if k.v != 1 {
            return Err(format!("key file version {} is not supported", k.v));
        }
        if k.kdf.algorithm != KDF || k.kdf.version != 0x13 || k.aead != AEAD {
            return Err(format!(
                "key file uses {} version {} and {}, not {KDF} version 19 and {AEAD}",
                k.kdf.algorithm, k.kdf.version, k.aead
            ));
        }
        k.params().check()?;
        k.salt()?;
        k.sealed()?;
        Ok(k)
    }

    /// The Argon2id parameters.
    pub fn params(&self) -> KdfParams {
        KdfParams {
            m_cost: self.kdf.m_cost,
            t_cost: self.kdf.t_cost,
            p_cost: self.kdf.p_cost,
        }
    }

    /// The salt's bytes.
    ///
    /// # Errors
    ///
    /// A message for base64 that does not decode, or a salt outside 8 to
    /// 64 bytes.
    pub fn salt(&self) -> Result<Vec<u8>, String> {
        let s = base64::engine::general_purpose::STANDARD
            .decode(&self.kdf.salt)
            .map_err(|e| format!("key file salt: {e}"))?;
        if !(8..=64).contains(&s.len()) {
            return Err(format!("key file salt of {} bytes", s.len()));
        }
        Ok(s)
    }

    /// The sealed master key's bytes.
    ///
    /// # Errors
    ///
    /// A message for base64 that does not decode or a length that is not
    /// a sealed master key's.
    pub fn sealed(&self) -> Result<Vec<u8>, String> {
        let s = base64::engine::general_purpose::STANDARD
            .decode(&self.key)
            .map_err(|e| format!("key file key: {e}"))?;
        let want = crate::repo::crypto::MASTER_KEY_LEN + crate::repo::crypto::OVERHEAD;
        if s.len() != want {
            return Err(format!("key file key of {} bytes, not {want}", s.len()));
        }
        Ok(s)
    }
}

/// The `encryption` object of an encrypted repository's `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Encryption {
    /// `"xchacha20-poly1305"`.
    pub aead: String,
    /// `"argon2id"`: how key files wrap the master key.
    pub kdf: String,
}

/// An encrypted repository's `config.json`: what is needed to open it.
/// The repository's own config ([`crate::repo::Config`]) is sealed in
/// `sealed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SealedConfig {
    /// Always `"snap"`.
    pub format: String,
    /// Format version: 3.
    pub version: u32,
    /// The algorithms.
    pub encryption: Encryption,
    /// The sealed config (nonce, ciphertext, tag), standard base64.
    pub sealed: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Hostile key files and configs: any bytes, or a valid key file
        // with one byte changed, are refused or parsed, never a panic,
        // and a parsed one's parameters are within the bounds.
        #[test]
        fn any_bytes_are_refused_or_parsed_within_bounds(
            junk in proptest::collection::vec(any::<u8>(), 0..400),
            at in 0usize..400,
            to in any::<u8>(),
        ) {
            if let Ok(k) = KeyFile::parse(&junk) {
                prop_assert!(k.params().check().is_ok());
            }
            let _ = crate::repo::Config::parse_file(&junk, "c");
            let good = KeyFile::new(
                KdfParams { m_cost: 64, t_cost: 1, p_cost: 1 },
                &[3; 16],
                &[9; 104],
                "t".into(),
            )
            .to_bytes()
            .unwrap();
            let mut bad = good.clone();
            let i = at % bad.len();
            bad[i] = to;
            if let Ok(k) = KeyFile::parse(&bad) {
                prop_assert!(k.params().check().is_ok());
                prop_assert!(k.salt().is_ok() && k.sealed().is_ok());
            }
        }
    }

    #[test]
    fn key_files_round_trip_and_refuse_what_this_build_does_not_use() {
        let p = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let k = KeyFile::new(p, &[7; 16], &[1; 104], "2026-12-04T00:00:00Z".into());
        let b = k.to_bytes().unwrap();
        let back = KeyFile::parse(&b).unwrap();
        assert_eq!(back, k);
        assert_eq!(back.params(), p);
        assert_eq!(back.salt().unwrap(), vec![7; 16]);
        let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        v["later"] = serde_json::json!(1);
        assert!(KeyFile::parse(&serde_json::to_vec(&v).unwrap()).is_ok());
        for (field, value) in [
            ("/v", serde_json::json!(2)),
            ("/aead", serde_json::json!("aes-256-gcm")),
            ("/kdf/algorithm", serde_json::json!("scrypt")),
            ("/kdf/m_cost", serde_json::json!(u32::MAX)),
            ("/kdf/salt", serde_json::json!("AA==")),
            ("/key", serde_json::json!("AAAA")),
        ] {
            let mut bad = v.clone();
            *bad.pointer_mut(field).unwrap() = value;
            assert!(
                KeyFile::parse(&serde_json::to_vec(&bad).unwrap()).is_err(),
                "{field}"
            );
        }
    }
}
