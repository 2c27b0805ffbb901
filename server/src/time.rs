//! Timestamps as RFC 3339 in Japan time (`+09:00`), the hub's time zone.

use pmh_engine::Date;

const JST: i64 = 9 * 3600;

/// `YYYY-MM-DDThh:mm:ss+09:00` of a Unix time in seconds.
pub fn rfc3339_tokyo(unix_secs: i64) -> String {
    let local = unix_secs + JST;
    let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    let d = Date::from_days(days as i32);
    format!("{d}T{:02}:{:02}:{:02}+09:00", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `YYYY-MM-DDThh:mm:ss.ffffff+09:00` of a Unix time in microseconds.
pub fn rfc3339_tokyo_micros(unix_micros: i64) -> String {
    let secs = unix_micros.div_euclid(1_000_000);
    let frac = unix_micros.rem_euclid(1_000_000);
    let s = rfc3339_tokyo(secs);
    format!("{}.{frac:06}+09:00", &s[..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_japan_time() {
        // 2026-11-22T15:00:00Z is midnight of the 23rd in Tokyo.
        let t = Date::parse("2026-11-23").unwrap().tokyo_midnight_unix();
        assert_eq!(rfc3339_tokyo(t), "2026-11-23T00:00:00+09:00");
        assert_eq!(rfc3339_tokyo(t - 1), "2026-11-22T23:59:59+09:00");
        assert_eq!(rfc3339_tokyo_micros(t * 1_000_000 + 42), "2026-11-23T00:00:00.000042+09:00");
        assert_eq!(rfc3339_tokyo(0), "1970-01-01T09:00:00+09:00");
    }
}
