//! Retention rules: which snapshots of a group `snap forget` keeps.
//!
//! The semantics are restic's (`doc/060_forget.rst`, `ApplyPolicy` in
//! `internal/data/snapshot_policy.go`; rustic's `commands/forget.rs`
//! follows the same rules):
//!
//! - snapshots are taken newest first; a snapshot is kept when any rule
//!   keeps it, and the reasons of every rule that does are reported;
//! - `--keep-last N` keeps the N newest; `--keep-hourly/daily/weekly/
//!   monthly/yearly N` keep the newest snapshot of each of the N newest
//!   hours/days/ISO weeks/months/years (local time, natural boundaries)
//!   that have a snapshot; when a rule still has counts left at the
//!   oldest snapshot, that one is kept too ("oldest daily snapshot", as
//!   restic 0.17 does); `unlimited` counts are never used up;
//! - `--keep-within 1y2m3d4h` keeps every snapshot newer than the newest
//!   snapshot (leaving out ones dated in the future) minus the duration,
//!   calendar years and months first (Go's `AddDate`: 31 March minus one
//!   month is 3 March), then days and hours;
//! - `--keep-tag a,b` keeps every snapshot holding all of `a` and `b`
//!   (repeatable: any list); `""` matches untagged snapshots;
//! - beyond restic: the newest snapshot of a group is always kept (a
//!   policy never empties a group; only naming a snapshot removes it).
//!
//! Pure: no I/O. Times come in as seconds since the epoch with their
//! local civil time (the caller converts with the host's zone, see
//! [`crate::sys::local_civil`]).

/// How many periods a count rule keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Count {
    /// The rule is off.
    #[default]
    Off,
    /// The newest `n` periods (`n` ≥ 1).
    N(u32),
    /// Every period (`unlimited`).
    All,
}

impl std::str::FromStr for Count {
    type Err = String;

    /// `0` (off), a positive count, or `unlimited`.
    fn from_str(s: &str) -> Result<Count, String> {
        if s == "unlimited" {
            return Ok(Count::All);
        }
        match s.parse::<u32>() {
            Ok(0) => Ok(Count::Off),
            Ok(n) => Ok(Count::N(n)),
            Err(_) => Err(format!(
                "{s:?} is not a count: give a number or `unlimited`"
            )),
        }
    }
}

/// A calendar duration, `1y5m7d2h` (restic's `--keep-within` syntax):
/// years, months, days and hours, each optional, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Within {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

impl std::str::FromStr for Within {
    type Err = String;

    fn from_str(s: &str) -> Result<Within, String> {
        let bad = || format!("{s:?} is not a duration like 1y5m7d2h (years, months, days, hours)");
        let mut w = Within::default();
        let mut num = String::new();
        let mut last = 0;
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let rank = match c {
                'y' => 1,
                'm' => 2,
                'd' => 3,
                'h' => 4,
                _ => return Err(bad()),
            };
            if num.is_empty() || rank <= last {
                return Err(bad());
            }
            let n: u32 = num.parse().map_err(|_| bad())?;
            num.clear();
            last = rank;
            match c {
                'y' => w.years = n,
                'm' => w.months = n,
                'd' => w.days = n,
                _ => w.hours = n,
            }
        }
        if !num.is_empty() || last == 0 {
            return Err(bad());
        }
        Ok(w)
    }
}

impl std::fmt::Display for Within {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, u) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{u}")?;
            }
        }
        Ok(())
    }
}

/// The rules of one `snap forget`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// `--keep-last`.
    pub last: Count,
    /// `--keep-hourly`.
    pub hourly: Count,
    /// `--keep-daily`.
    pub daily: Count,
    /// `--keep-weekly`.
    pub weekly: Count,
    /// `--keep-monthly`.
    pub monthly: Count,
    /// `--keep-yearly`.
    pub yearly: Count,
    /// `--keep-within`.
    pub within: Option<Within>,
    /// `--keep-tag`: tag lists, each kept when a snapshot has all of it.
    pub tags: Vec<Vec<String>>,
}

impl Rules {
    /// Whether no rule is set (such a policy would keep nothing, and
    /// `snap forget` refuses it).
    pub fn is_empty(&self) -> bool {
        [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
        ]
        .iter()
        .all(|c| *c == Count::Off)
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// Local civil time of an instant, as `localtime_r(3)` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year (e.g. 2026).
    pub year: i64,
    /// Month, 1-12.
    pub month: u32,
    /// Day of the month, 1-31.
    pub day: u32,
    /// Hour, 0-23.
    pub hour: u32,
    /// Minute, 0-59.
    pub minute: u32,
    /// Second, 0-60.
    pub second: u32,
    /// Seconds east of UTC.
    pub offset: i64,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, "chrono-Compatible Low-Level Date Algorithms").
/// `month` may lie outside 1-12 and `day` outside the month: they carry
/// over, as Go's `time.Date` normalises.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let (year, month) = (
        year + (month - 1).div_euclid(12),
        (month - 1).rem_euclid(12) + 1,
    );
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + 1 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 + (day - 1)
}

/// The civil date of a day number (inverse of [`days_from_civil`]):
/// (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl Civil {
    /// The UTC civil time of `sec` seconds since the epoch.
    pub fn utc(sec: i64) -> Civil {
        let (days, rem) = (sec.div_euclid(86_400), sec.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
            offset: 0,
        }
    }

    /// ISO 8601 week: (week-numbering year, week 1-53); weeks run
    /// Monday to Sunday and week 1 holds the year's first Thursday.
    pub fn iso_week(&self) -> (i64, u32) {
        let days = days_from_civil(self.year, i64::from(self.month), i64::from(self.day));
        // 1970-01-01 was a Thursday: Monday = 1 … Sunday = 7.
        let weekday = (days + 3).rem_euclid(7) + 1;
        let ordinal = days - days_from_civil(self.year, 1, 1) + 1;
        let week = (ordinal - weekday + 10) / 7;
        let weeks_in = |y: i64| {
            // A year has 53 weeks when 1 January is a Thursday, or a
            // Wednesday in a leap year.
            let jan1 = (days_from_civil(y, 1, 1) + 3).rem_euclid(7) + 1;
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            if jan1 == 4 || (leap && jan1 == 3) {
                53u32
            } else {
                52u32
            }
        };
        if week < 1 {
            (self.year - 1, weeks_in(self.year - 1))
        } else if week > i64::from(weeks_in(self.year)) {
            (self.year + 1, 1)
        } else {
            (self.year, week as u32)
        }
    }
}

/// Nanoseconds since the epoch of a snapshot time as records hold it:
/// RFC 3339 in UTC, `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (RFC 3339 §5.6;
/// the fraction up to 9 digits). `None` for anything else.
pub fn parse_utc_ns(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())
            .flatten()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let rest = s.get(19..)?;
    let frac = rest.strip_suffix('Z')?;
    let nanos = match frac.strip_prefix('.') {
        None if frac.is_empty() => 0,
        Some(f) if (1..=9).contains(&f.len()) && f.bytes().all(|c| c.is_ascii_digit()) => {
            f.parse::<i64>().ok()? * 10i64.pow(9 - f.len() as u32)
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

/// One snapshot of a group, as the rules see it.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its time, in nanoseconds since the epoch.
    pub time_ns: i128,
    /// Its local civil time.
    pub civil: Civil,
    /// Its tags.
    pub tags: Vec<String>,
}

/// The instant `w` before `latest` (local civil time `civil`), in
/// nanoseconds: years and months on the calendar, then days, then hours
/// (Go's `AddDate(-y, -m, -d).Add(-h)`, which restic uses).
fn before(latest_ns: i128, civil: &Civil, w: &Within) -> i128 {
    let months = i64::from(civil.month) - i64::from(w.months) - 12 * i64::from(w.years);
    let days = days_from_civil(civil.year, months, i64::from(civil.day)) - i64::from(w.days);
    let secs = days * 86_400
        + i64::from(civil.hour) * 3600
        + i64::from(civil.minute) * 60
        + i64::from(civil.second)
        - civil.offset
        - i64::from(w.hours) * 3600;
    let sub_ns = latest_ns.rem_euclid(1_000_000_000);
    i128::from(secs) * 1_000_000_000 + sub_ns
}

/// Applies `rules` to one group. `items` may come in any order; the
/// result has one entry per item, in the same order: `Some(reasons)` to
/// keep it (why, in rule order), `None` to remove it. `now_ns` is the
/// current time (`--keep-within` measures from the newest snapshot not in
/// the future). With no rule set every item is kept ("policy is empty").
pub fn apply(items: &[Item], rules: &Rules, now_ns: i128) -> Vec<Option<Vec<String>>> {
    let mut out: Vec<Option<Vec<String>>> = vec![None; items.len()];
    if items.is_empty() {
        return out;
    }
    if rules.is_empty() {
        return vec![Some(vec!["policy is empty".to_owned()]); items.len()];
    }
    // Newest first; equal times keep their input order.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| items[b].time_ns.cmp(&items[a].time_ns));
    let latest = order
        .iter()
        .map(|&i| &items[i])
        .find(|it| it.time_ns < now_ns)
        .unwrap_or(&items[order[0]]);
    type Bucket = fn(&Civil, usize) -> i64;
    let buckets: [(Count, Bucket, &str); 6] = [
        (rules.last, |_, nr| nr as i64, "last snapshot"),
        (
            rules.hourly,
            |c, _| {
                c.year * 1_000_000
                    + i64::from(c.month) * 10_000
                    + i64::from(c.day) * 100
                    + i64::from(c.hour)
            },
            "hourly snapshot",
        ),
        (
            rules.daily,
            |c, _| c.year * 10_000 + i64::from(c.month) * 100 + i64::from(c.day),
            "daily snapshot",
        ),
        (
            rules.weekly,
            |c, _| {
                let (y, w) = c.iso_week();
                y * 100 + i64::from(w)
            },
            "weekly snapshot",
        ),
        (
            rules.monthly,
            |c, _| c.year * 100 + i64::from(c.month),
            "monthly snapshot",
        ),
        (rules.yearly, |c, _| c.year, "yearly snapshot"),
    ];
    let mut left: Vec<Option<u32>> = buckets
        .iter()
        .map(|(c, _, _)| match c {
            Count::Off => Some(0),
            Count::N(n) => Some(*n),
            Count::All => None,
        })
        .collect();
    let mut last_val: [Option<i64>; 6] = [None; 6];
    let threshold = rules
        .within
        .map(|w| before(latest.time_ns, &latest.civil, &w));
    let n = order.len();
    for (nr, &i) in order.iter().enumerate() {
        let cur = &items[i];
        let mut reasons = Vec::new();
        for list in &rules.tags {
            let has = if list.iter().all(|t| t.is_empty()) {
                cur.tags.is_empty()
            } else {
                list.iter()
                    .filter(|t| !t.is_empty())
                    .all(|t| cur.tags.contains(t))
            };
            if has {
                reasons.push(format!("has tags {}", list.join(",")));
            }
        }
        if let (Some(t), Some(w)) = (threshold, rules.within) {
            if cur.time_ns > t {
                reasons.push(format!("within {w}"));
            }
        }
        for (b, (_, bucket, reason)) in buckets.iter().enumerate() {
            if left[b] == Some(0) {
                continue;
            }
            let val = bucket(&cur.civil, nr);
            let oldest = nr == n - 1;
            if last_val[b] != Some(val) || oldest {
                if last_val[b] == Some(val) {
                    reasons.push(format!("oldest {reason}"));
                } else {
                    reasons.push((*reason).to_owned());
                }
                last_val[b] = Some(val);
                if let Some(l) = &mut left[b] {
                    *l -= 1;
                }
            }
        }
        if nr == 0 && reasons.is_empty() {
            reasons.push("newest of its group".to_owned());
        }
        if !reasons.is_empty() {
            out[i] = Some(reasons);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NS: i128 = 1_000_000_000;

    fn at(y: i64, mo: u32, d: u32, h: u32, mi: u32) -> Item {
        let sec = days_from_civil(y, i64::from(mo), i64::from(d)) * 86_400
            + i64::from(h) * 3600
            + i64::from(mi) * 60;
        item(sec)
    }

    fn item(sec: i64) -> Item {
        Item {
            time_ns: i128::from(sec) * NS,
            civil: Civil::utc(sec),
            tags: vec![],
        }
    }

    fn kept(items: &[Item], rules: &Rules) -> Vec<usize> {
        apply(items, rules, i128::MAX)
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.as_ref().map(|_| i))
            .collect()
    }

    #[test]
    fn calendar_helpers_agree_with_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        // Months and days carry over (Go's time.Date): 31 March - 1 month.
        assert_eq!(civil_from_days(days_from_civil(2026, 2, 31)), (2026, 3, 3));
        assert_eq!(days_from_civil(2026, 0, 1), days_from_civil(2025, 12, 1));
        // ISO weeks at year ends.
        let week = |y, m, d| at(y, m, d, 12, 0).civil.iso_week();
        assert_eq!(week(2019, 12, 30), (2020, 1));
        assert_eq!(week(2021, 1, 3), (2020, 53));
        assert_eq!(week(2026, 12, 2), (2026, 49));
        assert_eq!(week(2024, 12, 31), (2025, 1));
        assert_eq!(week(2027, 1, 1), (2026, 53));
    }

    #[test]
    fn counts_and_durations_parse_as_restic_writes_them() {
        assert_eq!("unlimited".parse::<Count>(), Ok(Count::All));
        assert_eq!("0".parse::<Count>(), Ok(Count::Off));
        assert_eq!("7".parse::<Count>(), Ok(Count::N(7)));
        assert!("-1".parse::<Count>().is_err());
        let w: Within = "1y5m7d2h".parse().unwrap();
        assert_eq!((w.years, w.months, w.days, w.hours), (1, 5, 7, 2));
        assert_eq!(w.to_string(), "1y5m7d2h");
        assert_eq!("7d".parse::<Within>().unwrap().days, 7);
        for bad in ["", "7", "d", "1w", "2d1y", "1d1d", "x1d"] {
            assert!(bad.parse::<Within>().is_err(), "{bad}");
        }
    }

    /// restic's worked example (`doc/060_forget.rst`): one backup every
    /// Sunday at 11:00 for 12 weeks from 2019-09-01; `--keep-daily 4`
    /// keeps the last four Sundays.
    #[test]
    fn restics_worked_example_keeps_the_last_four_sundays() {
        let sundays: Vec<(&str, Item)> = [
            ("0a1f9759", (2019, 9, 1)),
            ("46cfe4d5", (2019, 9, 8)),
            ("f6b1f037", (2019, 9, 15)),
            ("eb430a5d", (2019, 9, 22)),
            ("8cf1cb9a", (2019, 9, 29)),
            ("5d33b116", (2019, 10, 6)),
            ("b9553125", (2019, 10, 13)),
            ("e1a7b58b", (2019, 10, 20)),
            ("8f8018c0", (2019, 10, 27)),
            ("59403279", (2019, 11, 3)),
            ("dfee9fb4", (2019, 11, 10)),
            ("e1ae2f40", (2019, 11, 17)),
        ]
        .into_iter()
        .map(|(id, (y, m, d))| (id, at(y, m, d, 11, 0)))
        .collect();
        let items: Vec<Item> = sundays.iter().map(|(_, i)| i.clone()).collect();
        let rules = Rules {
            daily: Count::N(4),
            ..Rules::default()
        };
        let result = apply(&items, &rules, i128::MAX);
        let table: Vec<(&str, Option<Vec<String>>)> = sundays
            .iter()
            .zip(result)
            .map(|((id, _), k)| (*id, k))
            .collect();
        let daily = || Some(vec!["daily snapshot".to_owned()]);
        let expected: Vec<(&str, Option<Vec<String>>)> = vec![
            ("0a1f9759", None),
            ("46cfe4d5", None),
            ("f6b1f037", None),
            ("eb430a5d", None),
            ("8cf1cb9a", None),
            ("5d33b116", None),
            ("b9553125", None),
            ("e1a7b58b", None),
            ("8f8018c0", daily()),
            ("59403279", daily()),
            ("dfee9fb4", daily()),
            ("e1ae2f40", daily()),
        ];
        assert_eq!(table, expected);
        // The same Sundays with --keep-weekly 2 --keep-monthly 3: the two
        // newest weeks, and the last Sunday of each of Nov, Oct, Sep.
        let rules = Rules {
            weekly: Count::N(2),
            monthly: Count::N(3),
            ..Rules::default()
        };
        assert_eq!(kept(&items, &rules), vec![4, 8, 10, 11]);
    }

    #[test]
    fn the_oldest_is_kept_while_a_bucket_has_counts_left() {
        // Three days, one snapshot each, --keep-daily 5: all three; two
        // snapshots on the oldest day: the older one as "oldest".
        let items = vec![
            at(2026, 1, 1, 8, 0),
            at(2026, 1, 1, 9, 0),
            at(2026, 1, 2, 9, 0),
            at(2026, 1, 3, 9, 0),
        ];
        let rules = Rules {
            daily: Count::N(5),
            ..Rules::default()
        };
        let r = apply(&items, &rules, i128::MAX);
        assert_eq!(r[0], Some(vec!["oldest daily snapshot".to_owned()]));
        assert_eq!(r[1], Some(vec!["daily snapshot".to_owned()]));
        assert!(r.iter().all(Option::is_some));
    }

    #[test]
    fn within_tags_and_the_newest_of_a_group() {
        let mut items: Vec<Item> = (0..10).map(|d| at(2026, 3, 31 - d, 12, 0)).collect();
        items[3].tags = vec!["keep".into(), "db".into()];
        items[9].tags = vec!["keep".into()];
        // 31 March minus "1m" is 3 March (Go's AddDate), so 22..31 March
        // are all within; minus "2d": 29 March 12:00 exclusive.
        let r = Rules {
            within: Some("2d".parse().unwrap()),
            ..Rules::default()
        };
        assert_eq!(kept(&items, &r), vec![0, 1]);
        let r = Rules {
            tags: vec![vec!["keep".into(), "db".into()]],
            ..Rules::default()
        };
        let res = apply(&items, &r, i128::MAX);
        assert_eq!(res[3], Some(vec!["has tags keep,db".to_owned()]));
        assert_eq!(res[0], Some(vec!["newest of its group".to_owned()]));
        assert_eq!(kept(&items, &r), vec![0, 3]);
        // Untagged only.
        let r = Rules {
            tags: vec![vec![String::new()]],
            ..Rules::default()
        };
        assert_eq!(kept(&items, &r).len(), 8);
        // A snapshot in the future is not the reference for --keep-within.
        let mut future = items.clone();
        future.push(at(2030, 1, 1, 0, 0));
        let now = at(2026, 4, 1, 0, 0).time_ns;
        let r = Rules {
            within: Some("2d".parse().unwrap()),
            ..Rules::default()
        };
        let kept_now: Vec<usize> = apply(&future, &r, now)
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.as_ref().map(|_| i))
            .collect();
        assert_eq!(kept_now, vec![0, 1, 10]);
    }

    fn arb_items() -> impl Strategy<Value = Vec<Item>> {
        // Up to 60 snapshots over about three years.
        proptest::collection::vec(0i64..100_000_000, 1..60).prop_map(|secs| {
            secs.into_iter()
                .map(|s| item(1_700_000_000 + s))
                .collect::<Vec<_>>()
        })
    }

    fn arb_count() -> impl Strategy<Value = Count> {
        prop_oneof![
            Just(Count::Off),
            (1u32..8).prop_map(Count::N),
            Just(Count::All)
        ]
    }

    fn arb_rules() -> impl Strategy<Value = Rules> {
        (
            arb_count(),
            arb_count(),
            arb_count(),
            arb_count(),
            arb_count(),
            proptest::option::of((0u32..2, 0u32..3, 0u32..20, 0u32..30)),
        )
            .prop_map(|(last, hourly, daily, weekly, monthly, w)| Rules {
                last,
                hourly,
                daily,
                weekly,
                monthly,
                yearly: Count::Off,
                within: w
                    .map(|(years, months, days, hours)| Within {
                        years,
                        months,
                        days,
                        hours,
                    })
                    .filter(|w| *w != Within::default()),
                tags: vec![],
            })
    }

    proptest! {
        #[test]
        fn the_newest_is_always_kept_and_forget_is_idempotent(
            items in arb_items(), rules in arb_rules()
        ) {
            let r = apply(&items, &rules, i128::MAX);
            let newest = (0..items.len()).max_by_key(|&i| (items[i].time_ns, std::cmp::Reverse(i))).unwrap();
            prop_assert!(r[newest].is_some());
            // Applying the rules again to what was kept keeps all of it.
            let survivors: Vec<Item> = items.iter().zip(&r)
                .filter(|(_, k)| k.is_some()).map(|(i, _)| i.clone()).collect();
            let again = apply(&survivors, &rules, i128::MAX);
            prop_assert!(again.iter().all(Option::is_some));
        }

        #[test]
        fn keep_last_n_keeps_exactly_n(items in arb_items(), n in 1u32..10) {
            let rules = Rules { last: Count::N(n), ..Rules::default() };
            let r = apply(&items, &rules, i128::MAX);
            let kept = r.iter().filter(|k| k.is_some()).count();
            prop_assert_eq!(kept, items.len().min(n as usize));
            // ... and they are the newest.
            let mut times: Vec<i128> = items.iter().map(|i| i.time_ns).collect();
            times.sort_unstable_by(|a, b| b.cmp(a));
            let cut = times[kept - 1];
            for (i, k) in r.iter().enumerate() {
                if k.is_some() { prop_assert!(items[i].time_ns >= cut); }
            }
        }
    }

    #[test]
    fn record_times_parse_to_nanoseconds() {
        assert_eq!(parse_utc_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_utc_ns("2000-02-29T00:00:01.5Z"),
            Some(951_782_401_500_000_000)
        );
        assert_eq!(
            parse_utc_ns("2026-12-02T00:00:00.000000001Z"),
            Some(i128::from(days_from_civil(2026, 12, 2)) * 86_400 * 1_000_000_000 + 1)
        );
        for bad in [
            "",
            "2026-12-02",
            "2026-13-01T00:00:00Z",
            "2026-12-02T00:00:00+01:00",
            "2026-12-02T00:00:00.Z",
            "2026-12-02T00:00:00.1234567890Z",
        ] {
            assert_eq!(parse_utc_ns(bad), None, "{bad}");
        }
    }
}
