//! The stored form of a blob (repository format 3): its plaintext, or a
//! zstd frame (RFC 8878) of it. The blob id is over the plaintext either
//! way, so the stored form never changes what deduplicates; a reader
//! decodes and then checks the id. Pure: no I/O.

use crate::policy::Compression;
use crate::repo::crypto::{Ad, Crypto};

/// Most plaintext bytes a stored blob may decode to: a data chunk is at
/// most the chunker's maximum (8 MiB), a metadata chunk at most 4 MiB.
/// A larger length in an index or footer is refused before anything is
/// allocated for it.
pub const BLOB_RAW_MAX: u32 = 64 << 20;

/// Bytes of a blob's head tried first in [`Compression::Auto`].
const SAMPLE: usize = 64 << 10;

/// Compresses blobs by a [`Compression`] mode, reusing one zstd context.
pub struct Encoder {
    mode: Compression,
    main: Option<zstd::bulk::Compressor<'static>>,
    sample: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

impl Encoder {
    /// An encoder for `mode`.
    ///
    /// # Errors
    ///
    /// The zstd context cannot be made (out of memory).
    pub fn new(mode: Compression) -> std::io::Result<Encoder> {
        let (main, sample) = match mode {
            Compression::Off => (None, None),
            Compression::Auto => (
                Some(zstd::bulk::Compressor::new(3)?),
                Some(zstd::bulk::Compressor::new(1)?),
            ),
            Compression::Max => (Some(zstd::bulk::Compressor::new(19)?), None),
        };
        Ok(Encoder {
            mode,
            main,
            sample,
            scratch: Vec::new(),
        })
    }

    /// The mode.
    pub fn mode(&self) -> Compression {
        self.mode
    }

    /// The zstd frame to store for the blob whose plaintext is `parts` in
    /// order, or `None` to store the plaintext: when the mode is off, when
    /// the frame would not be smaller, or (auto) when the first 64 KiB of a
    /// larger blob do not compress to 97 % or less at level 1.
    ///
    /// # Errors
    ///
    /// zstd's own errors (it has none for valid input and enough memory).
    pub fn encode(&mut self, parts: &[&[u8]]) -> std::io::Result<Option<Vec<u8>>> {
        let Some(main) = self.main.as_mut() else {
            return Ok(None);
        };
        let plain: &[u8] = match parts {
            [one] => one,
            _ => {
                self.scratch.clear();
                for p in parts {
                    self.scratch.extend_from_slice(p);
                }
                &self.scratch
            }
        };
        if plain.len() > 2 * SAMPLE {
            if let Some(s) = self.sample.as_mut() {
                let head = s.compress(&plain[..SAMPLE])?;
                if head.len() * 100 > SAMPLE * 97 {
                    return Ok(None);
                }
            }
        }
        let frame = main.compress(plain)?;
        Ok((frame.len() < plain.len()).then_some(frame))
    }
}

/// Decodes a stored blob into `out`: opens it when `crypto` seals
/// (XChaCha20-Poly1305, `docs/FORMAT.md` "Encryption"), then `raw` is
/// `Some(n)` for a zstd frame of `n` plaintext bytes (the index and
/// footer say so), `None` for a blob stored as it is. Returns the
/// plaintext (`stored` itself when it was stored as it is and not sealed).
///
/// # Errors
///
/// A message when the sealed bytes do not open, the frame is damaged,
/// decodes to another length than `raw`, or `raw` is over
/// [`BLOB_RAW_MAX`].
pub fn decode<'a>(
    crypto: &Crypto,
    stored: &'a [u8],
    raw: Option<u32>,
    out: &'a mut Vec<u8>,
) -> Result<&'a [u8], String> {
    if crypto.is_encrypted() {
        thread_local! {
            // The opened stored form of a compressed blob, reused.
            static OPENED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        return OPENED.with(|o| {
            let mut o = o.borrow_mut();
            match raw {
                None => crypto.open_into(Ad::Blob, stored, out)?,
                Some(n) => {
                    crypto.open_into(Ad::Blob, stored, &mut o)?;
                    unzstd(&o, n, out)?;
                }
            }
            Ok(&out[..])
        });
    }
    let Some(n) = raw else {
        return Ok(stored);
    };
    unzstd(stored, n, out)?;
    Ok(&out[..])
}

/// Decodes the zstd frame `frame` of `n` plaintext bytes into `out`.
fn unzstd(frame: &[u8], n: u32, out: &mut Vec<u8>) -> Result<(), String> {
    if n > BLOB_RAW_MAX {
        return Err(format!(
            "blob's plaintext length {n} is over the format's {BLOB_RAW_MAX}"
        ));
    }
    thread_local! {
        // One decompression context per thread, reused: making one costs
        // more than decoding a small blob.
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    out.clear();
    out.reserve(n as usize);
    let got = DCTX
        .with(|d| -> std::io::Result<usize> {
            let mut d = d.borrow_mut();
            let d = match d.as_mut() {
                Some(d) => d,
                None => d.insert(zstd::bulk::Decompressor::new()?),
            };
            d.decompress_to_buffer(frame, out)
        })
        .map_err(|e| format!("zstd frame does not decode: {e}"))?;
    if got != n as usize {
        return Err(format!("zstd frame decodes to {got} bytes, not {n}"));
    }
    Ok(())
}

/// [`decode`], then checks the plaintext against the blob's `id`
/// ([`Crypto::id`]: BLAKE3-256, keyed when encrypted): the bytes a reader
/// may use.
///
/// # Errors
///
/// As [`decode`]; `"does not match its BLAKE3"` for a plaintext that is not
/// the blob.
pub fn verified<'a>(
    crypto: &Crypto,
    stored: &'a [u8],
    raw: Option<u32>,
    id: &blake3::Hash,
    out: &'a mut Vec<u8>,
) -> Result<&'a [u8], String> {
    let plain = decode(crypto, stored, raw, out)?;
    if crypto.id(plain) != *id {
        return Err("does not match its BLAKE3".into());
    }
    Ok(plain)
}

/// [`verified`] for stored bytes the caller owns: returns the plaintext,
/// `stored` itself when it was stored as it is and not sealed.
///
/// # Errors
///
/// As [`verified`].
pub fn verified_owned(
    crypto: &Crypto,
    stored: Vec<u8>,
    raw: Option<u32>,
    id: &blake3::Hash,
) -> Result<Vec<u8>, String> {
    let mut plain = Vec::new();
    verified(crypto, &stored, raw, id, &mut plain)?;
    Ok(if raw.is_some() || crypto.is_encrypted() {
        plain
    } else {
        stored
    })
}

/// The bytes to store for a blob whose stored form (a zstd frame, or the
/// plaintext) the caller owns: sealed where it lies when `crypto` seals,
/// else returned as it is.
///
/// # Errors
///
/// `getrandom(2)`'s error.
pub fn seal_owned(crypto: &Crypto, stored: Vec<u8>) -> std::io::Result<Vec<u8>> {
    crypto.seal_vec(Ad::Blob, stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_only_what_compresses_and_decode_checks_the_length() {
        let text: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let mut e = Encoder::new(Compression::Auto).unwrap();
        let frame = e
            .encode(&[&text[..1000], &text[1000..]])
            .unwrap()
            .expect("text compresses");
        assert!(frame.len() < text.len() / 3);
        let mut out = Vec::new();
        assert_eq!(
            decode(&Crypto::plain(), &frame, Some(text.len() as u32), &mut out).unwrap(),
            &text[..]
        );
        assert!(decode(&Crypto::plain(), &frame, Some(7), &mut out).is_err());
        assert!(decode(
            &Crypto::plain(),
            &frame[1..],
            Some(text.len() as u32),
            &mut out
        )
        .is_err());
        assert!(decode(&Crypto::plain(), &frame, Some(BLOB_RAW_MAX + 1), &mut out).is_err());
        // Incompressible bytes (an xorshift stream) are stored as they are.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..400_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(e.encode(&[&noise]).unwrap().is_none());
        assert!(Encoder::new(Compression::Off)
            .unwrap()
            .encode(&[&text])
            .unwrap()
            .is_none());
        let max = Encoder::new(Compression::Max)
            .unwrap()
            .encode(&[&text[..50_000]])
            .unwrap()
            .unwrap();
        assert_eq!(
            decode(&Crypto::plain(), &max, Some(50_000), &mut out).unwrap(),
            &text[..50_000]
        );
        assert_eq!(
            decode(&Crypto::plain(), b"as is", None, &mut out).unwrap(),
            b"as is"
        );
    }
}
