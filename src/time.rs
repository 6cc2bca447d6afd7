//! Event time: RFC 3339 timestamps and `5m`-style durations.
//!
//! The core never reads a clock. Every instant it sees is a [`Timestamp`]
//! taken from a record, held as whole milliseconds since the Unix epoch in
//! UTC. Parsing and formatting are hand-written because they sit on the hot
//! path of replay (one parse per record) and must be exact and allocation
//! free on input.

use std::fmt;

/// An instant in event time: milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// A span of event time in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub i64);

/// Why a timestamp or duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("not an RFC 3339 timestamp: {0:?}")]
    Timestamp(String),
    #[error("not a duration (expected <integer><unit> with unit ms, s, m, h, d or w): {0:?}")]
    Duration(String),
    #[error("{0} ms since the epoch is outside the years 1970 to 9999")]
    OutOfRange(i64),
}

pub const SECOND: i64 = 1_000;
pub const MINUTE: i64 = 60 * SECOND;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;

/// Earliest and latest instants accepted from outside (years 1970..=9999).
const MIN_MS: i64 = 0;
const MAX_MS: i64 = 253_402_300_799_999;

impl Timestamp {
    /// Parses RFC 3339: `2026-03-01T10:00:00Z`, fractional seconds and any
    /// numeric offset (`+00:00`, `-05:30`). Sub-millisecond digits are
    /// truncated. Years before 1970 are refused, except Alertmanager's
    /// "zero time" `0001-01-01T00:00:00Z`, which callers check with
    /// [`Timestamp::is_zero_time`] first.
    pub fn parse(s: &str) -> Result<Timestamp, TimeError> {
        parse_rfc3339(s.as_bytes()).ok_or_else(|| TimeError::Timestamp(s.to_string()))
    }

    /// An instant from milliseconds since the epoch, refused outside the
    /// years 1970 to 9999 as parsed timestamps are.
    pub fn from_millis(ms: i64) -> Result<Timestamp, TimeError> {
        if (MIN_MS..=MAX_MS).contains(&ms) {
            Ok(Timestamp(ms))
        } else {
            Err(TimeError::OutOfRange(ms))
        }
    }

    /// Alertmanager writes `0001-01-01T00:00:00Z` for "no end time".
    pub fn is_zero_time(s: &str) -> bool {
        s.starts_with("0001-01-01T00:00:00")
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }

    pub fn minus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(d.0))
    }

    /// The latest multiple of `step` at or before this instant.
    pub fn floor(self, step: i64) -> Timestamp {
        Timestamp(self.0.div_euclid(step) * step)
    }
}

/// Remembers the last timestamp text parsed: consecutive records of a
/// replay stream usually carry the same one.
#[derive(Debug, Default, Clone)]
pub struct TimeCache {
    text: String,
    value: Option<Timestamp>,
}

impl TimeCache {
    pub fn new() -> TimeCache {
        TimeCache::default()
    }

    /// [`Timestamp::parse`], from the cache when `text` is the last text.
    pub fn parse(&mut self, text: &str) -> Result<Timestamp, TimeError> {
        if let Some(v) = self.value.filter(|_| self.text == text) {
            return Ok(v);
        }
        let v = Timestamp::parse(text)?;
        self.text.clear();
        self.text.push_str(text);
        self.value = Some(v);
        Ok(v)
    }
}

impl fmt::Display for Timestamp {
    /// UTC with a `Z`; milliseconds only when they are not zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(DAY);
        let ms_of_day = self.0.rem_euclid(DAY);
        let (y, m, d) = civil_from_days(days);
        let secs = ms_of_day / SECOND;
        let ms = ms_of_day % SECOND;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )?;
        if ms != 0 {
            write!(f, ".{ms:03}")?;
        }
        f.write_str("Z")
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub fn minutes(n: i64) -> Duration {
        Duration(n * MINUTE)
    }

    pub fn hours(n: i64) -> Duration {
        Duration(n * HOUR)
    }

    pub fn days(n: i64) -> Duration {
        Duration(n * DAY)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses `<integer><unit>` with unit `ms`, `s`, `m`, `h`, `d` or `w`.
    /// Compound forms such as `1h30m` are accepted too (Prometheus style).
    pub fn parse(s: &str) -> Result<Duration, TimeError> {
        let err = || TimeError::Duration(s.to_string());
        let b = s.trim().as_bytes();
        if b.is_empty() {
            return Err(err());
        }
        let mut total: i64 = 0;
        let mut i = 0;
        while i < b.len() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start || i - start > 12 {
                return Err(err());
            }
            let n: i64 = std::str::from_utf8(&b[start..i])
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(err)?;
            let unit = if b[i..].starts_with(b"ms") {
                i += 2;
                1
            } else {
                let u = match b.get(i) {
                    Some(b's') => SECOND,
                    Some(b'm') => MINUTE,
                    Some(b'h') => HOUR,
                    Some(b'd') => DAY,
                    Some(b'w') => 7 * DAY,
                    _ => return Err(err()),
                };
                i += 1;
                u
            };
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(err)?;
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    /// `<integer><unit>` with the largest of d, h, m, s that divides the
    /// span exactly (`5m`, `1h`, `3d`); `ms` when nothing else fits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (unit, name) in [(DAY, "d"), (HOUR, "h"), (MINUTE, "m"), (SECOND, "s")] {
            if v != 0 && v % unit == 0 {
                return write!(f, "{}{name}", v / unit);
            }
        }
        if v == 0 {
            return f.write_str("0s");
        }
        write!(f, "{v}ms")
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let mut v = 0i64;
    for i in at..at + n {
        let c = *b.get(i)?;
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

fn parse_rfc3339(b: &[u8]) -> Option<Timestamp> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    let (h, mi, s) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                ms = ms * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            ms *= 10;
        }
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (digits(b, i + 1, 2)?, digits(b, i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 60 + om;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s.min(59) - offset_min * 60;
    let t = secs * SECOND + ms;
    (MIN_MS..=MAX_MS).contains(&t).then_some(Timestamp(t))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_utc() {
        let t = Timestamp::parse("2026-03-01T10:00:00Z").unwrap();
        assert_eq!(t.to_string(), "2026-03-01T10:00:00Z");
        let t2 = Timestamp::parse("2026-03-01T10:00:00.250+00:00").unwrap();
        assert_eq!(t2.0 - t.0, 250);
        assert_eq!(t2.to_string(), "2026-03-01T10:00:00.250Z");
        let t3 = Timestamp::parse("2026-03-01T12:30:00+02:30").unwrap();
        assert_eq!(t3, t);
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "2026-03-01",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-03-01T10:00:00",
            "2026-03-01T10:00:00.Z",
            "2026-03-01T10:00:00Zjunk",
            "0001-01-01T00:00:00Z",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn millis_outside_the_accepted_years_are_refused() {
        assert_eq!(Timestamp::from_millis(0), Ok(Timestamp(0)));
        assert_eq!(Timestamp::from_millis(MAX_MS), Ok(Timestamp(MAX_MS)));
        assert!(Timestamp::from_millis(-1).is_err());
        assert!(Timestamp::from_millis(MAX_MS + 1).is_err());
    }

    #[test]
    fn time_cache_parses_as_timestamp_parse() {
        let mut c = TimeCache::new();
        for text in [
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:00Z",
            "soon",
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:01Z",
        ] {
            assert_eq!(c.parse(text), Timestamp::parse(text), "{text}");
        }
    }

    #[test]
    fn round_trips_across_centuries() {
        for days in [-1, 0, 59, 365 * 30 + 7, 11_000, 20_000, 2_932_896] {
            let t = Timestamp(days * DAY + 12 * HOUR + 5);
            if t.0 >= 0 {
                assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
            }
        }
    }

    #[test]
    fn durations_parse_and_print_in_one_unit() {
        assert_eq!(Duration::parse("5m").unwrap(), Duration::minutes(5));
        assert_eq!(Duration::parse("1h30m").unwrap(), Duration::minutes(90));
        assert_eq!(Duration::parse("30d").unwrap(), Duration::days(30));
        assert_eq!(Duration::parse("250ms").unwrap(), Duration(250));
        assert_eq!(Duration::minutes(90).to_string(), "90m");
        assert_eq!(Duration::days(3).to_string(), "3d");
        assert_eq!(Duration::hours(1).to_string(), "1h");
        for bad in ["", "5", "m", "5x", "-5m", "1.5h"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }
}
