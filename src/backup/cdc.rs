//! FastCDC cut points found over a file's bytes as they arrive in pieces,
//! so the chunker cuts the walker's read buffers where they lie instead of
//! first copying them into one contiguous buffer.
//!
//! The cut points are exactly those of `fastcdc::v2020::FastCDC` (FastCDC
//! 2020, Xia et al., "The Design of Fast Content-Defined Chunking for
//! Data Deduplication Based Storage Systems", IEEE TPDS 2020; normalization
//! level 1, gear table of seed 0) over the concatenation of the pieces:
//! repositories written before keep deduplicating. The tests compare the
//! two on random data split at random places.
//!
//! The crate's `cut_gear` rolls the gear hash `h = (h << 1) + GEAR[byte]`
//! from position `min` of a chunk (rounded down to even) and cuts before
//! the first position `j` where `h & mask == 0`, with the stricter mask
//! below `avg` (rounded down to even) and the looser one above. At the end
//! of the file it examines positions below the remaining length rounded
//! down to even, and a chunk of at most `min` bytes is never examined. A
//! chunk ends at `max` when no position qualifies. The gear hash of a
//! position depends on the 64 bytes before it, so the state carried from
//! piece to piece is `h` and the position.
//!
//! No side effects: pure computation over the bytes it is given.

use fastcdc::v2020::{
    get_gear_with_seed, AVERAGE_MAX, AVERAGE_MIN, MASKS, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX,
    MINIMUM_MIN,
};

use crate::error::{Error, Result};
use crate::repo::ChunkerParams;

/// The state of the cut search in the current chunk.
pub struct Cutter {
    /// First position examined (`min` rounded down to even).
    start: usize,
    /// Chunks of at most this many bytes are cut at the end of the file
    /// unexamined.
    min: usize,
    /// First position of the looser mask (`avg` rounded down to even).
    mid: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    /// Next position of the current chunk to examine.
    pos: usize,
    /// Gear hash of the bytes before `pos`.
    h: u64,
}

impl Cutter {
    /// A cutter at the start of a chunk.
    ///
    /// # Errors
    ///
    /// [`Error::Integrity`] naming `config.json` when `params` lie outside
    /// FastCDC 2020's bounds (minimum 64 B–1 MiB, average 256 B–4 MiB,
    /// maximum 1 KiB–16 MiB, as the crate asserts) or are not ordered
    /// minimum ≤ average ≤ maximum.
    pub fn new(params: &ChunkerParams) -> Result<Self> {
        let (min, avg, max) = (
            params.min as usize,
            params.avg as usize,
            params.max as usize,
        );
        let bounds = (MINIMUM_MIN..=MINIMUM_MAX).contains(&params.min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&params.avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&params.max);
        if !bounds || min > avg || avg > max {
            return Err(Error::Integrity {
                path: "config.json".into(),
                detail: format!("chunker parameters {min}/{avg}/{max} are out of bounds"),
            });
        }
        let bits = fastcdc::v2020::logarithm2(params.avg) as usize;
        let (gear, gear_ls) = get_gear_with_seed(0);
        Ok(Self {
            start: min / 2 * 2,
            min,
            mid: avg / 2 * 2,
            max,
            mask_s: MASKS[bits + 1],
            mask_l: MASKS[bits - 1],
            gear,
            gear_ls,
            pos: min / 2 * 2,
            h: 0,
        })
    }

    /// Finds the end of the current chunk, whose first `avail` bytes are
    /// `pieces` in order (`eof`: no more bytes follow). Returns its length,
    /// after which the cutter is at the start of the next chunk, or `None`
    /// when the end depends on bytes not yet seen. Bytes examined once are
    /// not examined again: the next call must pass the same bytes followed
    /// by more.
    pub fn next_cut<'a>(
        &mut self,
        pieces: impl Iterator<Item = &'a [u8]>,
        avail: usize,
        eof: bool,
    ) -> Option<usize> {
        if eof && avail <= self.min {
            return self.cut(avail);
        }
        // Positions from `max` rounded down to even on are never examined.
        // Without the end of the file, the last byte seen is not examined
        // either: at an even position it would not be if it were the last.
        let max_scan = self.max / 2 * 2;
        let limit = if eof {
            avail / 2 * 2
        } else {
            avail.saturating_sub(1)
        }
        .min(max_scan);
        let mut at = 0;
        for piece in pieces {
            if self.pos >= limit {
                break;
            }
            let end = at + piece.len();
            if end > self.pos {
                let from = self.pos - at;
                let to = piece.len().min(limit - at);
                if let Some(j) = self.scan(&piece[from..to]) {
                    return self.cut(j);
                }
            }
            at = end;
        }
        if avail >= self.max && self.pos >= max_scan {
            self.cut(self.max)
        } else if eof {
            self.cut(avail.min(self.max))
        } else {
            None
        }
    }

    /// Forgets the chunk in progress: the next bytes start a new one.
    pub fn restart(&mut self) {
        self.pos = self.start;
        self.h = 0;
    }

    /// Resets for the next chunk and returns `len`.
    fn cut(&mut self, len: usize) -> Option<usize> {
        self.restart();
        (len > 0).then_some(len)
    }

    /// Examines `bytes`, which sit at positions `pos..`; returns the first
    /// position that qualifies, or moves `pos` past them.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut bytes = bytes;
        if self.pos < self.mid {
            let n = bytes.len().min(self.mid - self.pos);
            if let Some(j) = self.scan_mask(&bytes[..n], self.mask_s) {
                return Some(j);
            }
            bytes = &bytes[n..];
        }
        self.scan_mask(bytes, self.mask_l)
    }

    /// As [`Cutter::scan`] with one mask, two bytes per step as in the
    /// crate's loop (`gear_ls` holds the table shifted left by one, so the
    /// even step's hash is twice the gear hash).
    #[inline(always)]
    fn scan_mask(&mut self, bytes: &[u8], mask: u64) -> Option<usize> {
        let (gear, gear_ls) = (&*self.gear, &*self.gear_ls);
        let mut h = self.h;
        let mut pos = self.pos;
        let mut rest = bytes;
        if pos % 2 == 1 {
            if let Some((&b, tail)) = rest.split_first() {
                h = (h << 1).wrapping_add(gear[b as usize]);
                if h & mask == 0 {
                    return Some(pos);
                }
                pos += 1;
                rest = tail;
            }
        }
        let mask_ls = mask << 1;
        let mut pairs = rest.chunks_exact(2);
        for pair in &mut pairs {
            let x = (h << 2).wrapping_add(gear_ls[pair[0] as usize]);
            if x & mask_ls == 0 {
                return Some(pos);
            }
            h = x.wrapping_add(gear[pair[1] as usize]);
            if h & mask == 0 {
                return Some(pos + 1);
            }
            pos += 2;
        }
        if let [b] = pairs.remainder() {
            h = (h << 1).wrapping_add(gear[*b as usize]);
            if h & mask == 0 {
                return Some(pos);
            }
            pos += 1;
        }
        self.h = h;
        self.pos = pos;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::ChunkerAlgorithm;
    use proptest::prelude::*;

    fn params(min: u32, avg: u32, max: u32) -> ChunkerParams {
        ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min,
            avg,
            max,
        }
    }

    /// The crate's chunk lengths over the whole buffer.
    fn whole(data: &[u8], p: &ChunkerParams) -> Vec<usize> {
        fastcdc::v2020::FastCDC::new(data, p.min, p.avg, p.max)
            .map(|c| c.length)
            .collect()
    }

    /// Chunk lengths when `data` arrives in pieces ending at `splits`, fed
    /// as the chunker feeds them.
    fn pieced(data: &[u8], splits: &[usize], p: &ChunkerParams) -> Vec<usize> {
        let mut cutter = Cutter::new(p).unwrap();
        let mut bounds: Vec<usize> = splits.iter().map(|&s| s.min(data.len())).collect();
        bounds.push(data.len());
        bounds.sort_unstable();
        let mut out = Vec::new();
        // Pending pieces, as slices from the current chunk's start.
        let mut pending: Vec<&[u8]> = Vec::new();
        let mut prev = 0;
        for (k, &b) in bounds.iter().enumerate() {
            pending.push(&data[prev..b]);
            prev = b;
            let eof = k == bounds.len() - 1;
            loop {
                let avail = pending.iter().map(|p| p.len()).sum();
                let Some(mut len) = cutter.next_cut(pending.iter().copied(), avail, eof) else {
                    break;
                };
                out.push(len);
                while len > 0 {
                    let first = pending[0];
                    if first.len() <= len {
                        len -= first.len();
                        pending.remove(0);
                    } else {
                        pending[0] = &first[len..];
                        len = 0;
                    }
                }
            }
        }
        assert!(pending.iter().all(|p| p.is_empty()), "bytes left uncut");
        out
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn pieces_give_the_crate_cut_points_at_the_repository_parameters() {
        let p = params(512 * 1024, 1024 * 1024, 8 * 1024 * 1024);
        // Random data, a run of zeros (cut at the maximum) and random again.
        let mut data = noise(12 << 20, 7);
        data.extend(std::iter::repeat_n(0u8, 9 << 20));
        data.extend(noise(5 << 20, 11));
        let want = whole(&data, &p);
        assert!(want.len() > 10 && want.contains(&(8 << 20)), "{want:?}");
        for read in [4 << 20, (1 << 20) + 1, 3 << 20, 64 << 20] {
            let splits: Vec<usize> = (1..)
                .map(|k| k * read)
                .take_while(|&s| s < data.len())
                .collect();
            assert_eq!(pieced(&data, &splits, &p), want, "reads of {read} bytes");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn pieces_give_the_crate_cut_points(
            seed in any::<u64>(),
            len in 0usize..40_000,
            zeros in 0usize..5_000,
            splits in proptest::collection::vec(0usize..45_000, 0..12),
            which in 0usize..3,
        ) {
            // Odd and even sizes: the crate rounds positions down to even.
            let p = [params(64, 256, 1024), params(999, 3001, 9001), params(64, 4096, 4096)][which];
            let mut data = noise(len, seed);
            let at = (seed as usize) % (len + 1);
            data.splice(at..at, std::iter::repeat_n(0u8, zeros));
            prop_assert_eq!(pieced(&data, &splits, &p), whole(&data, &p));
        }
    }

    /// `n` zeros and one byte that makes position `n` a cut candidate for
    /// `p` (found with the crate as the oracle).
    fn candidate_at(n: usize, p: &ChunkerParams) -> Vec<u8> {
        let mut data = vec![0u8; n + 1];
        for b in 0..=255u8 {
            data[n] = b;
            data.extend([0u8; 64]);
            let first = whole(&data, p)[0];
            data.truncate(n + 1);
            if first == n {
                return data;
            }
        }
        panic!("no byte makes {n} a candidate");
    }

    #[test]
    fn edges_where_the_crate_rounds_to_even() {
        // A candidate at the last byte of the file, at an even position, is
        // not a cut: with the end not yet known, it must not be taken.
        let p = params(64, 256, 1024);
        let data = candidate_at(300, &p);
        assert_eq!(whole(&data, &p), vec![301]);
        assert_eq!(pieced(&data, &[301], &p), vec![301]);
        assert_eq!(pieced(&data, &[100, 301], &p), vec![301]);
        // With one byte more it is a cut.
        let mut more = data.clone();
        more.push(1);
        assert_eq!(pieced(&more, &[301], &p), whole(&more, &p));
        assert_eq!(whole(&more, &p)[0], 300);
        // With an odd maximum, its position rounded down is not examined.
        let odd = params(64, 256, 1025);
        let mut data = candidate_at(1024, &params(64, 256, 2048));
        data.extend([0u8; 200]);
        assert_eq!(whole(&data, &odd)[0], 1025);
        assert_eq!(pieced(&data, &[500, 1025], &odd), whole(&data, &odd));
    }

    #[test]
    fn parameters_out_of_bounds_are_an_integrity_error() {
        for p in [
            params(32, 256, 1024),
            params(4096, 1024, 8192),
            params(64, 256, 32 << 20),
        ] {
            let e = Cutter::new(&p).err().expect("refused");
            assert!(e.to_string().contains("config.json"), "{e}");
        }
    }
}
