//! Time as the core sees it: values handed in by the host, formatted the way Barman does.

use std::fmt::Write as _;

/// Formats a float exactly like Python's `repr(float)` (shortest round-trip digits; fixed
/// notation with at least one decimal for exponents -4..16, else `1e+16` style), which is
/// what Barman writes in the catalogue's time column.
pub fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    // Rust's `{:e}` prints the shortest round-trip digits, e.g. "1.7337752042337587e9".
    let sci = format!("{:e}", value.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    // Value = 0.DIGITS × 10^decpt.
    let decpt = exponent + 1;
    let mut out = String::new();
    if value.is_sign_negative() {
        out.push('-');
    }
    if (-3..=16).contains(&decpt) {
        if decpt <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', decpt.unsigned_abs() as usize));
            out.push_str(&digits);
        } else {
            let point = decpt as usize;
            if digits.len() <= point {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.unsigned_abs()
        );
    }
    out
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// UTC calendar fields of a Unix time: (year, month, day, hour, minute, second).
pub fn utc_fields(unix_seconds: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400) as u32;
    let (y, mo, d) = civil_from_days(days);
    (y, mo, d, secs / 3600, secs / 60 % 60, secs % 60)
}

/// The `YYYYMMDDTHHMMSSZ` UTC stamp Barman puts in error file names.
pub fn utc_stamp(unix_seconds: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_fields(unix_seconds);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// ISO 8601 UTC, `YYYY-MM-DDTHH:MM:SSZ`, for reports.
pub fn utc_iso8601(unix_seconds: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_fields(unix_seconds);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_python_repr() {
        // Values checked against CPython 3.11's repr().
        for (value, text) in [
            (1_700_000_000.0, "1700000000.0"),
            (1_733_775_204.233_758_7, "1733775204.2337587"),
            (43.0, "43.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.5, "0.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e16, "1.5e+16"),
            (123_456_789_012_345_680.0, "1.2345678901234568e+17"),
            (1e-300, "1e-300"),
            (-2.5, "-2.5"),
            (1795271606.7682235, "1795271606.7682235"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(python_float_repr(value), text, "{value}");
        }
    }

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(1_700_000_000), "20231114T221320Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(-1), "19691231T235959Z");
        assert_eq!(utc_iso8601(1_795_305_600), "2026-11-22T00:00:00Z");
    }

    proptest! {
        #[test]
        fn repr_round_trips(value in any::<f64>().prop_filter("finite", |v| v.is_finite())) {
            prop_assert_eq!(python_float_repr(value).parse::<f64>().ok(), Some(value));
        }
    }
}
