//! Index files (`index/<id>.idx`) and the blob map they load into. Pure:
//! parsing, no I/O.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most bytes an index file may hold; a backup whose index would be
/// larger writes several ([`INDEX_BLOBS_PER_FILE`]).
pub const INDEX_MAX: u64 = 1 << 30;
/// Blobs a backup lists in one index file (a row is under 150 bytes, so
/// a file stays well below [`INDEX_MAX`]).
pub const INDEX_BLOBS_PER_FILE: usize = 4 << 20;

/// The first bytes of a zstd frame (RFC 8878, 3.1.1): a format-3 index
/// file is stored as one; JSON never starts so.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// An index file's stored bytes for repository format `version`: format
/// 3 stores the JSON as one zstd frame (level 3, with its content size),
/// format 2 as it is.
///
/// # Errors
///
/// zstd's errors (none for valid input and enough memory).
pub fn encode_file(json: Vec<u8>, version: u32) -> std::io::Result<Vec<u8>> {
    if version < 3 {
        return Ok(json);
    }
    zstd::bulk::compress(&json, 3)
}

/// An index file's JSON from its stored bytes: a zstd frame is decoded
/// (its declared size at most [`INDEX_MAX`], allocated once), anything else
/// is the JSON itself.
///
/// # Errors
///
/// A message for a frame without a size, over the bound, or damaged.
pub fn decode_file(stored: Vec<u8>) -> Result<Vec<u8>, String> {
    if !stored.starts_with(&ZSTD_MAGIC) {
        return Ok(stored);
    }
    let size = match zstd::zstd_safe::get_frame_content_size(&stored) {
        Ok(Some(n)) if n <= INDEX_MAX => n as usize,
        Ok(Some(n)) => return Err(format!("index frame of {n} bytes is over {INDEX_MAX}")),
        _ => return Err("index frame does not declare its size".into()),
    };
    let out = zstd::bulk::decompress(&stored, size)
        .map_err(|e| format!("index frame does not decode: {e}"))?;
    if out.len() != size {
        return Err(format!(
            "index frame decodes to {} bytes, not {size}",
            out.len()
        ));
    }
    Ok(out)
}

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Pack id.
    pub pack: blake3::Hash,
    /// Byte offset in the pack.
    pub offset: u64,
    /// Stored length in bytes.
    pub length: u32,
    /// Plaintext length when the stored bytes are a zstd frame (format 3);
    /// `None` when they are the plaintext.
    pub raw: Option<u32>,
}

impl BlobLocation {
    /// The blob's plaintext length: `raw` when compressed, else the stored
    /// length less what sealing adds (`overhead`: 0, or
    /// [`crate::repo::crypto::OVERHEAD`] in an encrypted repository).
    pub fn plain_len(&self, overhead: usize) -> u64 {
        match self.raw {
            Some(n) => u64::from(n),
            None => u64::from(self.length).saturating_sub(overhead as u64),
        }
    }
}

/// Every blob of a repository and where it lives, as loaded from its
/// index files by `Repo::load_index`.
///
/// Memory: 48 bytes per blob slot (the 32-byte id and a 16-byte location
/// naming its pack by number) plus 32 bytes per pack; a map keyed by id
/// with a [`BlobLocation`] value would take 80 per slot.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<blake3::Hash>,
    blobs: IdMap<Slot>,
}

/// Where a blob lives, its pack named by number in [`Index::packs`];
/// `raw` is 0 for a blob stored as it is. Offsets fit in 32 bits: a pack
/// holds about 16 MiB (at most 24 MiB) of blob data, and a loaded index
/// naming a larger offset is refused.
#[derive(Debug, Clone, Copy)]
struct Slot {
    pack: u32,
    length: u32,
    offset: u32,
    raw: u32,
}

impl Index {
    /// Where blob `id` lives.
    pub fn get(&self, id: &blake3::Hash) -> Option<BlobLocation> {
        self.blobs.get(id).map(|s| BlobLocation {
            pack: self.packs[s.pack as usize],
            offset: u64::from(s.offset),
            length: s.length,
            raw: (s.raw != 0).then_some(s.raw),
        })
    }

    /// Whether blob `id` is stored.
    pub fn contains(&self, id: &blake3::Hash) -> bool {
        self.blobs.contains_key(id)
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether no blob is stored.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}

/// One index file (`index/<id>.idx`): which blobs each pack holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct IndexFile {
    /// Index format version, 1.
    pub v: u32,
    /// Packs written by one backup.
    pub packs: Vec<IndexPack>,
}

/// One pack in an [`IndexFile`].
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IndexPack {
    /// Pack id (BLAKE3-256 hex of the pack file).
    pub id: String,
    /// The pack's blobs.
    pub blobs: Vec<IndexBlob>,
}

impl IndexPack {
    /// The listing of pack `id` holding `rows` (its footer's rows).
    pub fn of_rows(id: String, rows: &[super::pack::PackRow]) -> IndexPack {
        IndexPack {
            id,
            blobs: rows
                .iter()
                .map(|r| IndexBlob {
                    id: r.id.to_hex().to_string(),
                    offset: r.offset,
                    length: r.length,
                    raw_length: r.raw,
                })
                .collect(),
        }
    }
}

/// One blob in an [`IndexPack`].
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct IndexBlob {
    /// Blob id (BLAKE3-256 hex of the blob bytes).
    pub id: String,
    /// Byte offset in the pack.
    pub offset: u64,
    /// Stored length in bytes.
    pub length: u32,
    /// Plaintext length, present when the stored bytes are a zstd frame
    /// (format 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_length: Option<u32>,
}

/// A hasher for maps keyed by BLAKE3 ids: the id is already uniformly
/// random, so its first 8 bytes are the hash (SipHash would cost more than
/// the lookup it serves).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // A `[u8; 32]` is hashed as its length, then its bytes.
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }

    fn write_usize(&mut self, _len: usize) {}
}

/// A map keyed by BLAKE3 ids.
pub type IdMap<V> = HashMap<blake3::Hash, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Adds the blobs of one index file ([`IndexFile`] JSON) to `map`,
/// parsing every id where it lies in `bytes`: no string is allocated per
/// id, and only one pack's blobs (48 bytes each) are held until the pack's
/// own id is known (parsed into `IndexFile` records, a 300,000-blob index
/// needed about 40 MB beside the map). Room for the file's blobs is made
/// first, counted by their `"offset"` keys, so the map does not grow (and
/// briefly exist twice) while it is filled.
///
/// # Errors
///
/// A message for malformed JSON, a missing pack id or an id that is not
/// BLAKE3-256 hex.
pub fn index_into(bytes: &[u8], map: &mut Index) -> serde_json::Result<()> {
    use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
    use std::fmt;

    /// A BLAKE3-256 hex id, parsed from the string in place.
    struct Hex(blake3::Hash);
    impl<'de> Deserialize<'de> for Hex {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Hex, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Hex;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a BLAKE3-256 hex id")
                }
                fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Hex, E> {
                    blake3::Hash::from_hex(s)
                        .map(Hex)
                        .map_err(|_| E::custom(format!("{s:?} is not a BLAKE3-256 hex id")))
                }
            }
            d.deserialize_str(V)
        }
    }
    #[derive(Deserialize)]
    struct Blob {
        id: Hex,
        offset: u64,
        length: u32,
        #[serde(default)]
        raw_length: Option<u32>,
    }
    #[derive(Deserialize)]
    #[serde(field_identifier, rename_all = "lowercase")]
    enum Field {
        Packs,
        Id,
        Blobs,
        #[serde(other)]
        Other,
    }
    /// The file (a map holding `packs`) or one pack (a map holding `id` and
    /// `blobs`, in either order), as `outer`.
    struct Seed<'m> {
        map: &'m mut Index,
        outer: bool,
    }
    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(if self.outer {
                "an index file"
            } else {
                "a pack"
            })
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> std::result::Result<(), A::Error> {
            let (mut id, mut blobs) = (None, Vec::<Blob>::new());
            while let Some(k) = a.next_key::<Field>()? {
                match k {
                    Field::Packs if self.outer => a.next_value_seed(Packs(&mut *self.map))?,
                    Field::Id if !self.outer => id = Some(a.next_value::<Hex>()?.0),
                    Field::Blobs if !self.outer => blobs = a.next_value()?,
                    _ => {
                        a.next_value::<IgnoredAny>()?;
                    }
                }
            }
            if self.outer {
                return Ok(());
            }
            let pack = id.ok_or_else(|| A::Error::missing_field("id"))?;
            let n = u32::try_from(self.map.packs.len())
                .map_err(|_| A::Error::custom("more than 2^32 packs"))?;
            self.map.packs.push(pack);
            for b in blobs {
                let offset = u32::try_from(b.offset).map_err(|_| {
                    A::Error::custom(format!(
                        "blob offset {} is past any pack snap writes (4 GiB)",
                        b.offset
                    ))
                })?;
                let raw = match b.raw_length {
                    None => 0,
                    Some(r) if r > 0 && r <= super::blob::BLOB_RAW_MAX => r,
                    Some(r) => {
                        return Err(A::Error::custom(format!(
                            "blob plaintext length {r} is outside 1..={}",
                            super::blob::BLOB_RAW_MAX
                        )))
                    }
                };
                let slot = Slot {
                    pack: n,
                    length: b.length,
                    offset,
                    raw,
                };
                self.map.blobs.insert(b.id.0, slot);
            }
            Ok(())
        }
    }
    struct Packs<'m>(&'m mut Index);
    impl<'de> DeserializeSeed<'de> for Packs<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for Packs<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of packs")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> std::result::Result<(), A::Error> {
            while a
                .next_element_seed(Seed {
                    map: &mut *self.0,
                    outer: false,
                })?
                .is_some()
            {}
            Ok(())
        }
    }
    map.blobs
        .reserve(memchr::memmem::find_iter(bytes, b"\"offset\"").count());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Seed { map, outer: true }.deserialize(&mut de)?;
    de.end()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_format3_index_file_is_a_zstd_frame_and_decodes_back() {
        let json = br#"{"v":1,"packs":[]}"#.repeat(100);
        let stored = super::encode_file(json.clone(), 3).unwrap();
        assert!(stored.len() < json.len() / 10);
        assert_eq!(super::decode_file(stored.clone()).unwrap(), json);
        assert_eq!(super::encode_file(json.clone(), 2).unwrap(), json);
        assert_eq!(super::decode_file(json.clone()).unwrap(), json);
        let mut bad = stored.clone();
        let n = bad.len();
        bad[n - 3] ^= 0xff;
        assert!(super::decode_file(bad).is_err() || n < 8);
        assert!(super::decode_file(stored[..6].to_vec()).is_err());
    }

    #[test]
    fn index_into_reads_every_blob_in_either_key_order_and_refuses_bad_ids() {
        use super::{index_into, BlobLocation, Index, IndexBlob, IndexFile, IndexPack};
        let id = |n: u32| blake3::hash(&n.to_le_bytes());
        let file = IndexFile {
            v: 1,
            packs: (0..3)
                .map(|p| IndexPack {
                    id: id(1000 + p).to_hex().to_string(),
                    blobs: (0..50)
                        .map(|b| IndexBlob {
                            id: id(p * 50 + b).to_hex().to_string(),
                            offset: u64::from(b) * 4096,
                            length: 4096 + b,
                            raw_length: (b == 7).then_some(9000),
                        })
                        .collect(),
                })
                .collect(),
        };
        let mut map = Index::default();
        index_into(&serde_json::to_vec(&file).unwrap(), &mut map).unwrap();
        assert_eq!(map.len(), 150);
        assert!(map.contains(&id(149)) && !map.contains(&id(150)));
        assert_eq!(
            map.get(&id(2 * 50 + 7)).unwrap(),
            BlobLocation {
                pack: id(1002),
                offset: 7 * 4096,
                length: 4103,
                raw: Some(9000),
            }
        );
        // Blobs before the pack id, and an unknown key.
        let text = format!(
            r#"{{"packs":[{{"x":[1],"blobs":[{{"id":"{}","offset":5,"length":6}}],"id":"{}"}}],"v":1}}"#,
            id(7).to_hex(),
            id(8).to_hex()
        );
        index_into(text.as_bytes(), &mut map).unwrap();
        assert_eq!(map.get(&id(7)).unwrap().pack, id(8));
        assert_eq!(
            map.get(&id(2)).unwrap().pack,
            id(1000),
            "earlier files stay"
        );
        for bad in [
            r#"{"v":1,"packs":[{"id":"zz","blobs":[]}]}"#.to_owned(),
            format!(
                r#"{{"v":1,"packs":[{{"blobs":[{{"id":"{}","offset":0,"length":1}}]}}]}}"#,
                id(1).to_hex()
            ),
            r#"{"v":1,"packs":[]} trailing"#.to_owned(),
            format!(
                r#"{{"v":1,"packs":[{{"id":"{}","blobs":[{{"id":"{}","offset":0,"length":1,"raw_length":0}}]}}]}}"#,
                id(1).to_hex(),
                id(2).to_hex()
            ),
            format!(
                r#"{{"v":1,"packs":[{{"id":"{}","blobs":[{{"id":"{}","offset":5000000000,"length":1}}]}}]}}"#,
                id(1).to_hex(),
                id(2).to_hex()
            ),
        ] {
            assert!(
                index_into(bad.as_bytes(), &mut Index::default()).is_err(),
                "{bad}"
            );
        }
    }
}
