//! Pack files: blobs back to back, a footer listing them, a fixed trailer.
//!
//! ```text
//! blob 0 | blob 1 | ... | footer | trailer
//! footer  = per blob: id (32 bytes BLAKE3) | offset (u64 LE) | length (u32 LE)   -- 44 bytes each
//! trailer = blob count (u32 LE) | reserved 0 (u32) | footer offset (u64 LE) | magic "SNAPPAK1"  -- 24 bytes
//! ```
//!
//! The pack id is the BLAKE3-256 of the whole pack file. Pure data: the
//! repository writes and reads the bytes.

use super::BlobLocation;

/// The last 8 bytes of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"SNAPPAK1";
/// Length of the fixed trailer.
pub const TRAILER_LEN: usize = 24;
/// Length of one footer row.
pub const FOOTER_ROW_LEN: usize = 44;

/// A pack being assembled in memory.
#[derive(Default)]
pub struct PackBuilder {
    data: Vec<u8>,
    blobs: Vec<(blake3::Hash, u64, u32)>,
}

impl PackBuilder {
    /// An empty pack with room for `capacity` bytes of blobs.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            data: Vec::with_capacity(capacity + capacity / 64),
            blobs: Vec::new(),
        }
    }

    /// An empty pack filling `buf` (cleared; its capacity is kept, so a
    /// recycled buffer needs no fresh pages).
    pub fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        Self {
            data: buf,
            blobs: Vec::new(),
        }
    }

    /// Appends a blob.
    pub fn add(&mut self, id: blake3::Hash, bytes: &[u8]) {
        let offset = self.data.len() as u64;
        self.data.extend_from_slice(bytes);
        self.blobs.push((id, offset, bytes.len() as u32));
    }

    /// Bytes of blob data so far.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Appends footer and trailer; returns the pack bytes, the pack id and
    /// the blobs as (id, offset, length).
    pub fn finish(mut self) -> (Vec<u8>, blake3::Hash, Vec<(blake3::Hash, u64, u32)>) {
        let footer_offset = self.data.len() as u64;
        for (id, off, len) in &self.blobs {
            self.data.extend_from_slice(id.as_bytes());
            self.data.extend_from_slice(&off.to_le_bytes());
            self.data.extend_from_slice(&len.to_le_bytes());
        }
        self.data
            .extend_from_slice(&(self.blobs.len() as u32).to_le_bytes());
        self.data.extend_from_slice(&0u32.to_le_bytes());
        self.data.extend_from_slice(&footer_offset.to_le_bytes());
        self.data.extend_from_slice(PACK_MAGIC);
        // Format 2: the id covers the footer and trailer, which name every
        // blob by its own BLAKE3 and place it; the blob bytes are covered
        // by those ids. Hashing the whole pack again would cost a third
        // BLAKE3 pass over every byte a backup stores.
        let id = blake3::hash(&self.data[footer_offset as usize..]);
        (self.data, id, self.blobs)
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
        let mut b = PackBuilder::with_capacity(100);
        let a = blake3::hash(b"alpha");
        let z = blake3::hash(b"zeta!");
        b.add(a, b"alpha");
        b.add(z, b"zeta!");
        let (bytes, id, blobs) = b.finish();
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
