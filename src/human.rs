//! Text for people: sizes, counts and times as the human output of every
//! command shows them. Facts keep exact numbers and RFC 3339 UTC times.
//! No side effects (the time zone is read by the C library, `tzset(3)`).

/// A size in binary units through indicatif's `BinaryBytes` (`"0 B"`,
/// `"7.33 KiB"`, `"123.00 MiB"`).
pub fn size(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}

/// The progress line: with a known total, the percent done, bytes over
/// the total, the rate and the time left (indicatif's estimate from the
/// recent rate); without one, the bytes so far and the rate. The message
/// (files, errors, the current file) takes the rest of the terminal's
/// width and is cut there.
pub fn progress_style(total_known: bool) -> indicatif::ProgressStyle {
    let template = if total_known {
        "{spinner} {elapsed_precise} {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {wide_msg}"
    } else {
        "{spinner} {elapsed_precise} {bytes} {bytes_per_sec} {wide_msg}"
    };
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

/// `"1 file"`, `"2 files"`: `n` and the noun in the number it takes.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// An RFC 3339 time (as records and facts hold it) in this host's time
/// zone, to the second, with the zone's UTC offset:
/// `"2026-12-04 20:09:51 +0100"`. The zone is the C library's (`TZ`, else
/// `/etc/localtime`, else UTC; [`crate::sys::local_civil`]). A time that
/// does not parse is shown as it is.
pub fn local_time(rfc3339: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339(rfc3339) else {
        return rfc3339.to_owned();
    };
    let secs = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let c = crate::sys::local_civil(secs);
    let off = c.offset.unsigned_abs() / 60;
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {}{:02}{:02}",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        if c.offset < 0 { '-' } else { '+' },
        off / 60,
        off % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_counts_and_local_times() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1536), "1.50 KiB");
        assert_eq!(count(1, "file", "files"), "1 file");
        assert_eq!(count(0, "file", "files"), "0 files");
        // The zone is the process's (tests/cli.rs checks it with TZ set);
        // whatever it is, the shape holds.
        let t = local_time("2026-12-04T19:09:51.487006313Z");
        assert_eq!(t.len(), "2026-12-04 19:09:51 +0000".len(), "{t}");
        assert!(
            t.starts_with("2026-12-0") && t[20..21].contains(['+', '-']),
            "{t}"
        );
        assert_eq!(local_time("not a time"), "not a time");
    }
}
