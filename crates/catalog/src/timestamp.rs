//! Event timestamps: unix seconds (integer or decimal) or RFC 3339 date-times.

/// Parses `text` as unix seconds (`1537747200`, `1537747200.5`, rounded down) or as an RFC 3339
/// date-time (`2018-09-24T00:00:00Z`, `2018-09-24 02:00:00+02:00`, fractions ignored).
///
/// ```
/// use pinnersage_catalog::timestamp::parse_timestamp;
/// assert_eq!(parse_timestamp("1537747200"), Ok(1_537_747_200));
/// assert_eq!(parse_timestamp("1537747200.9"), Ok(1_537_747_200));
/// assert_eq!(parse_timestamp("2018-09-24T00:00:00Z"), Ok(1_537_747_200));
/// assert_eq!(parse_timestamp("2018-09-24 02:30:00.25+02:30"), Ok(1_537_747_200));
/// assert!(parse_timestamp("yesterday").is_err());
/// ```
pub fn parse_timestamp(text: &str) -> Result<i64, TimestampError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(TimestampError::Empty);
    }
    if t.bytes()
        .all(|b| b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'+')
        && !t[1..].contains('-')
    {
        return t
            .parse::<f64>()
            .ok()
            .and_then(unix_seconds)
            .ok_or_else(|| TimestampError::NotUnixSeconds(t.to_owned()));
    }
    parse_rfc3339(t).ok_or_else(|| TimestampError::Unrecognised(t.to_owned()))
}

/// Why a value is not a timestamp.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimestampError {
    /// Nothing but white space.
    #[error("empty timestamp")]
    Empty,
    /// A number that is not a finite whole-second time.
    #[error("{0:?} is not a unix timestamp")]
    NotUnixSeconds(String),
    /// A number value that is not finite or beyond ±9e15 seconds.
    #[error("{0} is not a unix timestamp")]
    OutOfRange(f64),
    /// Text that is neither a number nor an RFC 3339 date-time.
    #[error("{0:?} is neither unix seconds nor an RFC 3339 date-time (2018-09-24T10:00:00Z)")]
    Unrecognised(String),
}

/// Unix seconds from a decimal value, rounded down; `None` if not finite or beyond ±9e15
/// (where `f64` stops holding whole seconds exactly).
///
/// ```
/// use pinnersage_catalog::timestamp::unix_seconds;
/// assert_eq!(unix_seconds(1537747200.9), Some(1_537_747_200));
/// assert_eq!(unix_seconds(f64::NAN), None);
/// ```
pub fn unix_seconds(v: f64) -> Option<i64> {
    (v.is_finite() && v.abs() < 9.0e15).then(|| v.floor() as i64)
}

fn parse_rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    let num = |s: &[u8]| -> Option<i64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (hour, minute, second) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &rest[1 + digits..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let minutes = num(&[*h1, *h2])? * 60 + num(&[*m1, *m2])?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (`YYYY-MM-DD`, UTC) of a unix day number (days since 1970-01-01; Howard Hinnant's
/// inverse of [`days_from_civil`]).
///
/// ```
/// use pinnersage_catalog::timestamp::date_of_day;
/// assert_eq!(date_of_day(0), "1970-01-01");
/// assert_eq!(date_of_day(19_675), "2023-11-14");
/// ```
pub fn date_of_day(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl pinnersage_core::error::Kind for TimestampError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        BadInput
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_of_days_invert_days_from_civil() {
        for day in (-800_000..800_000).step_by(97) {
            let date = date_of_day(day);
            let (ym, d) = date.rsplit_once('-').unwrap();
            let (y, m) = ym.rsplit_once('-').unwrap();
            let ymd = [y, m, d].map(|part| part.parse::<i64>().unwrap());
            assert_eq!(days_from_civil(ymd[0], ymd[1], ymd[2]), day, "{date}");
        }
        assert_eq!(date_of_day(-1), "1969-12-31");
        assert_eq!(date_of_day(11_016), "2000-02-29");
    }

    #[test]
    fn calendar_edges() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_timestamp("2000-02-29T12:00:00Z"), Ok(951_825_600));
        assert_eq!(parse_timestamp("1969-12-31T23:59:59Z"), Ok(-1));
        assert_eq!(
            parse_timestamp("2024-12-31T23:59:59-01:00"),
            Ok(1_735_693_199)
        );
        assert_eq!(parse_timestamp("-5"), Ok(-5));
        for bad in [
            "2018-13-01T00:00:00Z",
            "2018-09-24T00:00:00",
            "2018-09-24",
            "1e3x",
            "12:00",
            "",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }
}
