//! Pack files: blobs back to back, a footer listing them, a fixed trailer.
//!
//! ```text
//! blob 0 | blob 1 | ... | footer | trailer
//! footer  = per blob: id (32 bytes BLAKE3) | offset (u64 LE) | length (u32 LE)   -- 44 bytes each
//! trailer = blob count (u32 LE) | reserved 0 (u32) | footer offset (u64 LE) | magic "SNAPPAK1"  -- 24 bytes
//! ```
//!
//! The pack id is the BLAKE3-256 of footer and trailer (repository format
//! 2; the footer names every blob by its own BLAKE3). Pure data: the
//! repository writes and reads the bytes.

use super::index::BlobLocation;

/// The last 8 bytes of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"SNAPPAK1";
/// Length of the fixed trailer.
pub const TRAILER_LEN: usize = 24;
/// Length of one footer row.
pub const FOOTER_ROW_LEN: usize = 44;
/// Most bytes a pack's footer may hold: about 24 million blobs. A backup
/// closes a pack at about 16 MiB of blob data, so its footer holds at most
/// 16 million rows (1-byte blobs), 704 MB.
pub const PACK_FOOTER_MAX: usize = 1 << 30;

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
    blobs: Vec<(blake3::Hash, u64, u32)>,
}

/// A finished pack: the blob pieces, then `tail` (footer and trailer).
pub struct FinishedPack<B> {
    /// Blob bytes, in pack order.
    pub parts: Vec<Part<B>>,
    /// Footer and trailer, written after the parts.
    pub tail: Vec<u8>,
    /// The pack id (format 2: BLAKE3 of `tail`).
    pub id: blake3::Hash,
    /// The blobs as (id, offset, length).
    pub blobs: Vec<(blake3::Hash, u64, u32)>,
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
    /// Appends a blob whose bytes are `parts` in order.
    pub fn add(&mut self, id: blake3::Hash, parts: impl IntoIterator<Item = Part<B>>) {
        let offset = self.len;
        for part in parts {
            self.len += part.range.len() as u64;
            self.parts.push(part);
        }
        self.blobs.push((id, offset, (self.len - offset) as u32));
    }

    /// Bytes of blob data so far.
    pub fn data_len(&self) -> usize {
        self.len as usize
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Builds footer and trailer and the pack id.
    pub fn finish(self) -> FinishedPack<B> {
        let footer_offset = self.len;
        let mut tail = Vec::with_capacity(self.blobs.len() * FOOTER_ROW_LEN + TRAILER_LEN);
        for (id, off, len) in &self.blobs {
            tail.extend_from_slice(id.as_bytes());
            tail.extend_from_slice(&off.to_le_bytes());
            tail.extend_from_slice(&len.to_le_bytes());
        }
        tail.extend_from_slice(&(self.blobs.len() as u32).to_le_bytes());
        tail.extend_from_slice(&0u32.to_le_bytes());
        tail.extend_from_slice(&footer_offset.to_le_bytes());
        tail.extend_from_slice(PACK_MAGIC);
        // Format 2: the id covers the footer and trailer, which name every
        // blob by its own BLAKE3 and place it; the blob bytes are covered
        // by those ids. Hashing the whole pack again would cost a third
        // BLAKE3 pass over every byte a backup stores.
        let id = blake3::hash(&tail);
        FinishedPack {
            parts: self.parts,
            tail,
            id,
            blobs: self.blobs,
        }
    }
}

/// Parses the fixed trailer of a pack of `pack_len` bytes: returns the
/// blob count and the footer offset, checked to fit.
///
/// # Errors
///
/// A message naming what is inconsistent.
pub fn parse_trailer(trailer: &[u8], pack_len: u64) -> Result<(usize, u64), String> {
    if pack_len < TRAILER_LEN as u64 || trailer.len() != TRAILER_LEN {
        return Err(format!(
            "pack is {pack_len} bytes, shorter than its trailer"
        ));
    }
    if &trailer[16..24] != PACK_MAGIC {
        return Err("pack trailer magic missing".into());
    }
    let count = u32::from_le_bytes(trailer[0..4].try_into().map_err(|_| "trailer")?) as usize;
    let footer_offset = u64::from_le_bytes(trailer[8..16].try_into().map_err(|_| "trailer")?);
    let footer_end = pack_len - TRAILER_LEN as u64;
    // Every blob holds at least one byte (an empty file has no chunk), and
    // a footer past PACK_FOOTER_MAX is not one a backup writes: both keep
    // what a reader allocates for the footer bounded by what the format
    // allows, not by a (sparse, hostile) file's length.
    if count as u64 > footer_offset || count * FOOTER_ROW_LEN > PACK_FOOTER_MAX {
        return Err(format!(
            "pack trailer names {count} blobs, more than its {footer_offset} data bytes or a footer may hold"
        ));
    }
    if footer_offset > footer_end || footer_end - footer_offset != (count * FOOTER_ROW_LEN) as u64 {
        return Err(format!(
            "pack footer of {count} blobs does not fit between offset {footer_offset} and {footer_end}"
        ));
    }
    Ok((count, footer_offset))
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
) -> Result<Vec<(blake3::Hash, BlobLocation)>, String> {
    let mut out = Vec::with_capacity(rows.len() / FOOTER_ROW_LEN);
    for row in rows.chunks_exact(FOOTER_ROW_LEN) {
        let id = blake3::Hash::from_bytes(row[0..32].try_into().map_err(|_| "row")?);
        let offset = u64::from_le_bytes(row[32..40].try_into().map_err(|_| "row")?);
        let length = u32::from_le_bytes(row[40..44].try_into().map_err(|_| "row")?);
        if offset + u64::from(length) > footer_offset {
            return Err(format!("blob {id} extends past the data area"));
        }
        out.push((
            id,
            BlobLocation {
                pack: pack_id,
                offset,
                length,
            },
        ));
    }
    Ok(out)
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
        let len = pack.len() as u64;
        if pack.len() < TRAILER_LEN {
            return Err(format!("pack is {len} bytes, shorter than its trailer"));
        }
        let (_, footer_offset) = parse_trailer(&pack[pack.len() - TRAILER_LEN..], len)?;
        parse_rows(
            &pack[footer_offset as usize..pack.len() - TRAILER_LEN],
            footer_offset,
            pack_id,
        )
    }

    #[test]
    fn footer_round_trips_and_rejects_damage() {
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
        } = b.finish();
        let mut bytes: Vec<u8> = parts.iter().flat_map(|p| p.as_ref().to_vec()).collect();
        bytes.extend_from_slice(&tail);
        // Format 2: the id is the BLAKE3 of footer and trailer.
        assert_eq!(id, blake3::hash(&bytes[10..]));
        assert_ne!(id, blake3::hash(&bytes));
        let parsed = parse_footer(&bytes, id).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].0, z);
        assert_eq!((parsed[1].1.offset, parsed[1].1.length), (5, 5));
        assert_eq!(blobs[0], (a, 0, 5));
        let mut cut = bytes.clone();
        cut.truncate(bytes.len() - 1);
        assert!(parse_footer(&cut, id).is_err());
    }
}
