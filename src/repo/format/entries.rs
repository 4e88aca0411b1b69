//! Entries files (`entries/<2 hex>/<id>.jsonl`) as bytes: lines, their
//! records, and parts for parsing on every core. Pure: no I/O (the
//! streaming reader is `repo::entries`).

use super::sidecar::EntryRecord;
use crate::error::{Error, Result};

/// Most bytes one record (line) of an entries file may hold: a file of
/// 16 TiB at the average chunk size lists about 16 million chunk ids of
/// 67 bytes each.
pub const ENTRIES_LINE_MAX: usize = 1 << 30;

/// Parses the records of `part`, a run of whole lines of the entries file
/// shown as `path` whose first line is number `first_line` (from 1).
///
/// # Errors
///
/// [`Error::Integrity`] naming `path:line` for a malformed record.
pub fn parse_lines(path: &str, part: &[u8], first_line: usize) -> Result<Vec<EntryRecord>> {
    lines(part)
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, line)| {
            EntryRecord::from_line(line).map_err(|detail| Error::Integrity {
                path: format!("{path}:{}", first_line + i),
                detail,
            })
        })
        .collect()
}

/// The lines of `part` without their `\n` (a last line may lack one),
/// found with memchr.
pub fn lines(part: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = part;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(nl) => (&rest[..nl], &rest[nl + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        Some(line)
    })
}

/// Splits `bytes` into at most `n` parts of about equal size, each ending
/// at a line end (or the end): (part, its first line's number from 1).
/// Parts of under 1 MiB are not worth a thread and stay whole.
pub fn split_lines(bytes: &[u8], n: usize) -> Vec<(&[u8], usize)> {
    let n = n.clamp(1, bytes.len() / (1 << 20) + 1);
    let mut out = Vec::with_capacity(n);
    let (mut start, mut line) = (0usize, 1usize);
    for k in 1..=n {
        let mut end = if k == n {
            bytes.len()
        } else {
            bytes.len() * k / n
        };
        if end < start {
            end = start;
        }
        while end < bytes.len() && end > 0 && bytes[end - 1] != b'\n' {
            end += 1;
        }
        if end > start {
            let part = &bytes[start..end];
            out.push((part, line));
            line += memchr::memchr_iter(b'\n', part).count();
            start = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split_lines;

    #[test]
    fn split_lines_cuts_at_line_ends_and_numbers_lines() {
        let mut text = Vec::new();
        for i in 0..100_000 {
            text.extend_from_slice(format!("line {i} {}\n", "x".repeat(i % 50)).as_bytes());
        }
        assert!(text.len() > 3 << 20);
        for n in [1, 2, 3, 7] {
            let parts = split_lines(&text, n);
            // At most one part per MiB.
            assert_eq!(parts.len(), n.min(text.len() / (1 << 20) + 1));
            assert_eq!(parts.concat_bytes(), text);
            for (part, first) in &parts {
                assert!(part.ends_with(b"\n"));
                let want = format!("line {} ", first - 1);
                assert!(part.starts_with(want.as_bytes()), "part at line {first}");
            }
        }
        // Small inputs stay whole; an empty one has no part.
        assert_eq!(split_lines(b"a\nb\n", 4), vec![(&b"a\nb\n"[..], 1)]);
        assert!(split_lines(b"", 2).is_empty());
    }

    #[test]
    fn lines_splits_at_line_ends() {
        let got: Vec<&[u8]> = super::lines(b"a\n\nbc\nd").collect();
        assert_eq!(got, vec![&b"a"[..], b"", b"bc", b"d"]);
        assert_eq!(super::lines(b"x\n").count(), 1);
        assert_eq!(super::lines(b"").count(), 0);
    }

    trait Concat {
        fn concat_bytes(&self) -> Vec<u8>;
    }

    impl Concat for Vec<(&[u8], usize)> {
        fn concat_bytes(&self) -> Vec<u8> {
            self.iter().flat_map(|(p, _)| p.iter().copied()).collect()
        }
    }
}
