//! Calendar dates and "today" in Asia/Tokyo.
//!
//! Japan Standard Time is UTC+9 with no daylight saving since 1951, so the civil date in
//! Tokyo is a fixed offset from UTC and needs no time-zone database. A [`Date`] is a count
//! of days since 1970-01-01, which makes period checks a pair of integer comparisons.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds east of UTC for Japan Standard Time (日本標準時).
pub const JST_OFFSET_SECS: i64 = 9 * 3600;

/// A civil date (proleptic Gregorian), stored as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(i32);

/// Why a date string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("date must be YYYY-MM-DD or YYYYMMDD and exist in the calendar")]
pub struct DateError;

impl Date {
    /// The date from days since 1970-01-01.
    pub const fn from_days(days: i32) -> Date {
        Date(days)
    }

    /// Days since 1970-01-01.
    pub const fn days(self) -> i32 {
        self.0
    }

    /// The date from year, month (1–12) and day (1–31), if it exists.
    pub fn from_ymd(y: i32, m: u32, d: u32) -> Option<Date> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || !(1..=9999).contains(&y) {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy as i32;
        Some(Date(era * 146_097 + doe - 719_468))
    }

    /// Year, month, day.
    pub fn ymd(self) -> (i32, u32, u32) {
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (if m <= 2 { y + 1 } else { y }, m, d)
    }

    /// Parses `YYYY-MM-DD` or `YYYYMMDD`.
    pub fn parse(s: &str) -> Result<Date, DateError> {
        // Slicing below is by byte position; a non-ASCII string must not reach it.
        if !s.is_ascii() {
            return Err(DateError);
        }
        let b = s.as_bytes();
        let (y, m, d) = match b.len() {
            10 if b[4] == b'-' && b[7] == b'-' => (&s[0..4], &s[5..7], &s[8..10]),
            8 => (&s[0..4], &s[4..6], &s[6..8]),
            _ => return Err(DateError),
        };
        let num = |t: &str| -> Result<u32, DateError> {
            if t.bytes().all(|c| c.is_ascii_digit()) { t.parse().map_err(|_| DateError) } else { Err(DateError) }
        };
        Date::from_ymd(num(y)? as i32, num(m)?, num(d)?).ok_or(DateError)
    }

    /// Today's date in Asia/Tokyo.
    pub fn today_tokyo() -> Date {
        Date::tokyo_date_of(unix_now())
    }

    /// The Tokyo civil date at a Unix time (seconds).
    pub fn tokyo_date_of(unix_secs: i64) -> Date {
        Date((unix_secs + JST_OFFSET_SECS).div_euclid(86_400) as i32)
    }

    /// The Unix time (seconds) of midnight at the start of this date in Tokyo.
    pub fn tokyo_midnight_unix(self) -> i64 {
        i64::from(self.0) * 86_400 - JST_OFFSET_SECS
    }

    /// The next day.
    pub fn succ(self) -> Date {
        Date(self.0 + 1)
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Microseconds since the Unix epoch, now (access-log timestamps).
pub fn unix_now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_round_trips() {
        let d = Date::parse("2026-11-21").unwrap();
        assert_eq!(Date::parse("20261121").unwrap(), d);
        assert_eq!(d.to_string(), "2026-11-21");
        assert_eq!(Date::parse("1970-01-01").unwrap().days(), 0);
        assert_eq!(Date::parse("2024-02-29").unwrap().succ().to_string(), "2024-03-01");
    }

    #[test]
    fn rejects_impossible_dates() {
        for s in [
            "2023-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-04-31",
            "2026/11/21",
            "26-11-21",
            "2026-1-021",
            "+026-11-21",
            "",
            // Non-ASCII of a matching byte length must be an error, not a slicing panic
            // (regression: ",ア ｱ" is 8 bytes and panicked).
            ",ア ｱ",
            "２０２６-1-1",
            "2026年1月1",
        ] {
            assert!(Date::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn every_day_round_trips() {
        for days in -800_000..800_000 {
            let d = Date::from_days(days);
            let (y, m, dd) = d.ymd();
            if (1..=9999).contains(&y) {
                assert_eq!(Date::from_ymd(y, m, dd), Some(d));
            }
        }
    }

    #[test]
    fn tokyo_day_starts_at_15_utc() {
        // 2026-11-21T14:59:59Z is 23:59:59 JST on the 21st; one second later is the 22nd.
        let t = Date::parse("2026-11-21").unwrap().tokyo_midnight_unix() + 86_400 - 1;
        assert_eq!(Date::tokyo_date_of(t).to_string(), "2026-11-21");
        assert_eq!(Date::tokyo_date_of(t + 1).to_string(), "2026-11-22");
    }
}
