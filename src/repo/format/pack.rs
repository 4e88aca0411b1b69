//! Pack files: blobs back to back, a footer listing them, a fixed trailer.
//!
//! ```text
//! blob 0 | blob 1 | ... | footer | trailer
//! format 3: footer = per blob: id (32) | offset (u64 LE) | stored length (u32 LE)
//!                              | plaintext length (u32 LE, 0: stored as it is) | flags (u32 LE) -- 52 bytes
//!           trailer = blob count (u32 LE) | 0 (u32) | footer offset (u64 LE) | "SNAPPAK3"  -- 24 bytes
//! format 2: footer = per blob: id (32) | offset (u64 LE) | length (u32 LE)  -- 44 bytes
//!           trailer = as above with "SNAPPAK1"
//! ```
//!
//! Flags (format 3): bit 0 set when the stored bytes are a zstd frame of
//! the plaintext length given; no other bit is defined (a reader refuses
//! them). The pack id is the BLAKE3-256 of footer and trailer (the footer
//! names every blob by its own id and places it). In an encrypted
//! repository every blob's stored bytes and the footer are each sealed
//! (`crate::repo::crypto`); the trailer is not. Pure data apart from the
//! nonces sealing draws: the repository writes and reads the bytes.

use super::index::BlobLocation;
use crate::repo::crypto::{Ad, Crypto};

/// The last 8 bytes of a format-3 pack.
pub const PACK_MAGIC: &[u8; 8] = b"SNAPPAK3";
/// The last 8 bytes of a format-2 pack.
pub const PACK_MAGIC_V2: &[u8; 8] = b"SNAPPAK1";
/// Length of the fixed trailer.
pub const TRAILER_LEN: usize = 24;
/// Length of one format-3 footer row.
pub const FOOTER_ROW_LEN: usize = 52;
/// Length of one format-2 footer row.
pub const FOOTER_ROW_LEN_V2: usize = 44;
/// Flag bit of a format-3 row: the stored bytes are a zstd frame.
pub const FLAG_ZSTD: u32 = 1;
/// Most bytes a pack's footer may hold: about 20 million blobs. A backup
/// closes a pack at about 16 MiB of blob data, so its footer holds at most
/// 16 million rows (1-byte blobs).
pub const PACK_FOOTER_MAX: usize = 1 << 30;

/// One blob of a pack as its footer lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackRow {
    /// Blob id.
    pub id: blake3::Hash,
    /// Byte offset of the stored bytes in the pack.
    pub offset: u64,
    /// Stored length in bytes.
    pub length: u32,
    /// Plaintext length when the stored bytes are a zstd frame.
    pub raw: Option<u32>,
}

/// The footer layout of a pack, found from its trailer's magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackVersion {
    /// Format 2: 44-byte rows, every blob stored as it is.
    V2,
    /// Format 3: 52-byte rows with plaintext length and flags.
    V3,
}

impl PackVersion {
    /// The pack layout of repository format `version` (2 or 3).
    pub fn of_format(version: u32) -> PackVersion {
        if version >= 3 {
            PackVersion::V3
        } else {
            PackVersion::V2
        }
    }

    /// Bytes per footer row.
    pub fn row_len(self) -> usize {
        match self {
            PackVersion::V2 => FOOTER_ROW_LEN_V2,
            PackVersion::V3 => FOOTER_ROW_LEN,
        }
    }

    fn magic(self) -> &'static [u8; 8] {
        match self {
            PackVersion::V2 => PACK_MAGIC_V2,
            PackVersion::V3 => PACK_MAGIC,
        }
    }
}

/// A piece of a blob: `range` of the bytes of `buf`.
pub struct Part<B> {
    /// The buffer holding the piece.
    pub buf: B,
    /// Where the piece lies in it.
    pub range: std::ops::Range<usize>,
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for Part<B> {
    fn as_ref(&self) -> &[u8] {
        &self.buf.as_ref()[self.range.clone()]
    }
}

/// A pack being assembled: its blobs stay where they lie (pieces of the
/// buffers `B` they were read into) until the pack is written with one
/// vectored write.
pub struct PackBuilder<B> {
    parts: Vec<Part<B>>,
    len: u64,
    blobs: Vec<PackRow>,
}

/// A finished pack: the blob pieces, then `tail` (footer and trailer).
pub struct FinishedPack<B> {
    /// Blob bytes, in pack order.
    pub parts: Vec<Part<B>>,
    /// Footer and trailer, written after the parts.
    pub tail: Vec<u8>,
    /// The pack id (BLAKE3 of `tail`).
    pub id: blake3::Hash,
    /// The blobs, in pack order.
    pub blobs: Vec<PackRow>,
}

impl<B: AsRef<[u8]>> Default for PackBuilder<B> {
    fn default() -> Self {
        Self {
            parts: Vec::new(),
            len: 0,
            blobs: Vec::new(),
        }
    }
}

impl<B: AsRef<[u8]>> PackBuilder<B> {
    /// Appends a blob stored as it is, whose bytes are `parts` in order.
    pub fn add(&mut self, id: blake3::Hash, parts: impl IntoIterator<Item = Part<B>>) {
        self.add_stored(id, parts, None);
    }

    /// Appends a blob whose stored bytes are `parts` in order: a zstd
    /// frame of `raw` plaintext bytes when `raw` is given.
    pub fn add_stored(
        &mut self,
        id: blake3::Hash,
        parts: impl IntoIterator<Item = Part<B>>,
        raw: Option<u32>,
    ) {
        let offset = self.len;
        for part in parts {
            self.len += part.range.len() as u64;
            self.parts.push(part);
        }
        self.blobs.push(PackRow {
            id,
            offset,
            length: (self.len - offset) as u32,
            raw,
        });
    }

    /// The blobs so far, and their stored bytes as pieces in order
    /// (`parts` of each blob lie in the returned parts between its offset
    /// and the next blob's).
    pub fn into_parts(self) -> (Vec<PackRow>, Vec<Part<B>>) {
        (self.blobs, self.parts)
    }

    /// Bytes of blob data so far.
    pub fn data_len(&self) -> usize {
        self.len as usize
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Builds footer and trailer (layout `version`) and the pack id; the
    /// footer is sealed when `crypto` seals (an encrypted repository: its
    /// rows name blobs by their keyed ids and give their lengths).
    ///
    /// # Errors
    ///
    /// `getrandom(2)`'s error (sealing).
    ///
    /// # Panics
    ///
    /// Never for [`PackVersion::V3`]; a compressed blob in a
    /// [`PackVersion::V2`] pack is a bug (format 2 has no field for it).
    pub fn finish(self, version: PackVersion, crypto: &Crypto) -> std::io::Result<FinishedPack<B>> {
        let footer_offset = self.len;
        let mut tail = Vec::with_capacity(self.blobs.len() * version.row_len() + TRAILER_LEN);
        for b in &self.blobs {
            tail.extend_from_slice(b.id.as_bytes());
            tail.extend_from_slice(&b.offset.to_le_bytes());
            tail.extend_from_slice(&b.length.to_le_bytes());
            match version {
                PackVersion::V2 => {
                    assert!(b.raw.is_none(), "a format-2 pack stores blobs as they are")
                }
                PackVersion::V3 => {
                    tail.extend_from_slice(&b.raw.unwrap_or(0).to_le_bytes());
                    let flags = if b.raw.is_some() { FLAG_ZSTD } else { 0 };
                    tail.extend_from_slice(&flags.to_le_bytes());
                }
            }
        }
        if crypto.is_encrypted() {
            tail = crypto.seal(Ad::Footer, &[&tail])?;
        }
        tail.extend_from_slice(&(self.blobs.len() as u32).to_le_bytes());
        tail.extend_from_slice(&0u32.to_le_bytes());
        tail.extend_from_slice(&footer_offset.to_le_bytes());
        tail.extend_from_slice(version.magic());
        // Format 2: the id covers the footer and trailer, which name every
        // blob by its own BLAKE3 and place it; the blob bytes are covered
        // by those ids. Hashing the whole pack again would cost a third
        // BLAKE3 pass over every byte a backup stores.
        let id = blake3::hash(&tail);
        Ok(FinishedPack {
            parts: self.parts,
            tail,
            id,
            blobs: self.blobs,
        })
    }
}

/// Parses the fixed trailer of a pack of `pack_len` bytes whose footer
/// sealing adds `overhead` bytes (0, or [`crate::repo::crypto::OVERHEAD`]
/// in an encrypted repository): returns the blob count, the footer
/// offset (checked to fit) and the layout.
///
/// # Errors
///
/// A message naming what is inconsistent.
pub fn parse_trailer(
    trailer: &[u8],
    pack_len: u64,
    overhead: usize,
) -> Result<(usize, u64, PackVersion), String> {
    if pack_len < TRAILER_LEN as u64 || trailer.len() != TRAILER_LEN {
        return Err(format!(
            "pack is {pack_len} bytes, shorter than its trailer"
        ));
    }
    let version = match &trailer[16..24] {
        m if m == PACK_MAGIC => PackVersion::V3,
        m if m == PACK_MAGIC_V2 => PackVersion::V2,
        _ => return Err("pack trailer magic missing".into()),
    };
    let row_len = version.row_len();
    let count = u32::from_le_bytes(trailer[0..4].try_into().map_err(|_| "trailer")?) as usize;
    let footer_offset = u64::from_le_bytes(trailer[8..16].try_into().map_err(|_| "trailer")?);
    let footer_end = pack_len - TRAILER_LEN as u64;
    // Every blob holds at least one byte (an empty file has no chunk), and
    // a footer past PACK_FOOTER_MAX is not one a backup writes: both keep
    // what a reader allocates for the footer bounded by what the format
    // allows, not by a (sparse, hostile) file's length.
    if count as u64 > footer_offset || count * row_len > PACK_FOOTER_MAX {
        return Err(format!(
            "pack trailer names {count} blobs, more than its {footer_offset} data bytes or a footer may hold"
        ));
    }
    if footer_offset > footer_end
        || footer_end - footer_offset != (count * row_len + overhead) as u64
    {
        return Err(format!(
            "pack footer of {count} blobs does not fit between offset {footer_offset} and {footer_end}"
        ));
    }
    Ok((count, footer_offset, version))
}

/// Parses footer rows (the bytes between the footer offset and the
/// trailer) into blob locations in pack `pack_id`, each checked to lie in
/// the data area.
///
/// # Errors
///
/// A message naming the first blob that does not fit.
pub fn parse_rows(
    rows: &[u8],
    footer_offset: u64,
    pack_id: blake3::Hash,
    version: PackVersion,
) -> Result<Vec<(blake3::Hash, BlobLocation)>, String> {
    let row_len = version.row_len();
    let mut out = Vec::with_capacity(rows.len() / row_len);
    let u32_at = |row: &[u8], at: usize| -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            row[at..at + 4].try_into().map_err(|_| "row")?,
        ))
    };
    for row in rows.chunks_exact(row_len) {
        let id = blake3::Hash::from_bytes(row[0..32].try_into().map_err(|_| "row")?);
        let offset = u64::from_le_bytes(row[32..40].try_into().map_err(|_| "row")?);
        let length = u32_at(row, 40)?;
        if offset + u64::from(length) > footer_offset {
            return Err(format!("blob {id} extends past the data area"));
        }
        let raw = match version {
            PackVersion::V2 => None,
            PackVersion::V3 => {
                let (raw, flags) = (u32_at(row, 44)?, u32_at(row, 48)?);
                match flags {
                    0 if raw == 0 => None,
                    FLAG_ZSTD if raw > 0 && raw <= super::blob::BLOB_RAW_MAX => Some(raw),
                    _ => {
                        return Err(format!(
                            "blob {id}: flags {flags:#x} with plaintext length {raw} are not a stored form this build knows"
                        ))
                    }
                }
            }
        };
        out.push((
            id,
            BlobLocation {
                pack: pack_id,
                offset,
                length,
                raw,
            },
        ));
    }
    Ok(out)
}

/// Parses footer and trailer `tail` (the bytes from the footer offset to
/// the end) of pack `pack_id`: opens the footer when `crypto` seals, then
/// [`parse_rows`].
///
/// # Errors
///
/// A message when the sealed footer does not open, or as [`parse_rows`].
pub fn parse_tail(
    tail: &[u8],
    footer_offset: u64,
    pack_id: blake3::Hash,
    version: PackVersion,
    crypto: &Crypto,
) -> Result<Vec<(blake3::Hash, BlobLocation)>, String> {
    let rows = tail
        .get(..tail.len().saturating_sub(TRAILER_LEN))
        .unwrap_or_default();
    if !crypto.is_encrypted() {
        return parse_rows(rows, footer_offset, pack_id, version);
    }
    let rows = crypto
        .open(Ad::Footer, rows.to_vec())
        .map_err(|e| format!("pack footer: {e}"))?;
    parse_rows(&rows, footer_offset, pack_id, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a pack's footer from its complete bytes.
    ///
    /// # Errors
    ///
    /// A message naming what is inconsistent.
    fn parse_footer(
        pack: &[u8],
        pack_id: blake3::Hash,
    ) -> Result<Vec<(blake3::Hash, BlobLocation)>, String> {
        parse_footer_with(pack, pack_id, &Crypto::plain())
    }

    fn parse_footer_with(
        pack: &[u8],
        pack_id: blake3::Hash,
        crypto: &Crypto,
    ) -> Result<Vec<(blake3::Hash, BlobLocation)>, String> {
        let len = pack.len() as u64;
        if pack.len() < TRAILER_LEN {
            return Err(format!("pack is {len} bytes, shorter than its trailer"));
        }
        let (_, footer_offset, v) =
            parse_trailer(&pack[pack.len() - TRAILER_LEN..], len, crypto.overhead())?;
        parse_tail(
            &pack[footer_offset as usize..],
            footer_offset,
            pack_id,
            v,
            crypto,
        )
    }

    #[test]
    fn a_sealed_footer_opens_with_its_key_only() {
        let c = Crypto::sealed(&crate::repo::crypto::MasterKey::generate().unwrap());
        let mut b = PackBuilder::default();
        let a = c.id(b"alpha");
        b.add(
            a,
            [Part {
                buf: &b"alpha"[..],
                range: 0..5,
            }],
        );
        let fin = b.finish(PackVersion::V3, &c).unwrap();
        assert_eq!(
            fin.tail.len(),
            FOOTER_ROW_LEN + crate::repo::crypto::OVERHEAD + TRAILER_LEN
        );
        assert!(
            !fin.tail.windows(32).any(|w| w == a.as_bytes()),
            "rows are sealed"
        );
        let mut bytes = b"alpha".to_vec();
        bytes.extend_from_slice(&fin.tail);
        assert_eq!(parse_footer_with(&bytes, fin.id, &c).unwrap()[0].0, a);
        let other = Crypto::sealed(&crate::repo::crypto::MasterKey::generate().unwrap());
        assert!(parse_footer_with(&bytes, fin.id, &other).is_err());
        assert!(
            parse_footer(&bytes, fin.id).is_err(),
            "the plain layout does not fit"
        );
        bytes[7] ^= 1;
        assert!(parse_footer_with(&bytes, fin.id, &c).is_err());
    }

    #[test]
    fn footer_round_trips_and_rejects_damage() {
        for v in [PackVersion::V2, PackVersion::V3] {
            round_trip(v);
        }
    }

    #[test]
    fn a_v3_footer_keeps_the_plaintext_length_and_refuses_unknown_flags() {
        let mut b = PackBuilder::default();
        let a = blake3::hash(b"alpha");
        b.add_stored(
            a,
            [Part {
                buf: &b"frame"[..],
                range: 0..5,
            }],
            Some(900),
        );
        let fin = b.finish(PackVersion::V3, &Crypto::plain()).unwrap();
        let mut bytes = b"frame".to_vec();
        bytes.extend_from_slice(&fin.tail);
        let parsed = parse_footer(&bytes, fin.id).unwrap();
        assert_eq!(parsed[0].1.raw, Some(900));
        let mut bad = bytes.clone();
        bad[5 + 48] = 2;
        assert!(parse_footer(&bad, fin.id).unwrap_err().contains("flags"));
    }

    fn round_trip(v: PackVersion) {
        let mut b = PackBuilder::default();
        let a = blake3::hash(b"alpha");
        let z = blake3::hash(b"zeta!");
        let part = |buf: &'static [u8], range| Part { buf, range };
        b.add(a, [part(b"alpha", 0..5)]);
        b.add(z, [part(b"xze", 1..3), part(b"ta!", 0..3)]);
        let FinishedPack {
            parts,
            tail,
            id,
            blobs,
        } = b.finish(v, &Crypto::plain()).unwrap();
        let mut bytes: Vec<u8> = parts.iter().flat_map(|p| p.as_ref().to_vec()).collect();
        bytes.extend_from_slice(&tail);
        // Format 2: the id is the BLAKE3 of footer and trailer.
        assert_eq!(id, blake3::hash(&bytes[10..]));
        assert_ne!(id, blake3::hash(&bytes));
        let parsed = parse_footer(&bytes, id).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].0, z);
        assert_eq!((parsed[1].1.offset, parsed[1].1.length), (5, 5));
        assert_eq!((blobs[0].id, blobs[0].offset, blobs[0].length), (a, 0, 5));
        let mut cut = bytes.clone();
        cut.truncate(bytes.len() - 1);
        assert!(parse_footer(&cut, id).is_err());
    }
}
