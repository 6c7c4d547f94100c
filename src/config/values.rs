//! The values settings take on the command line and in the environment,
//! beyond numbers: durations, spans, names.

use std::time::Duration;

/// A span of time: a number and a unit (`d`, `h`, `m`, `s`), or seconds.
pub(super) fn parse_span(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number.parse().map_err(|_| format!("expected a number and a unit (7d, 12h, 30m, 45s): {s:?}"))?;
    let seconds = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(format!("unknown unit {unit:?}: d, h, m or s")),
    };
    n.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| "too long".into())
}

pub(super) fn parse_zone(s: &str) -> Result<String, String> {
    if crate::domain::valid_zone_name(s) {
        Ok(s.to_owned())
    } else {
        Err("expected an IANA time zone name, e.g. UTC or Asia/Seoul".into())
    }
}

pub(super) fn parse_millis(s: &str) -> Result<Duration, String> {
    s.parse::<u64>().map(Duration::from_millis).map_err(|e| format!("expected milliseconds: {e}"))
}

pub(super) fn parse_namespace(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(s.to_owned()) } else { Err("1 to 64 characters from [A-Za-z0-9._-]".to_owned()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_take_a_unit_or_seconds_and_refuse_the_rest() {
        assert_eq!(parse_span("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_span("12h").unwrap(), Duration::from_secs(12 * 3_600));
        assert_eq!(parse_span("45").unwrap(), Duration::from_secs(45));
        for bad in ["", "d", "7w", "-1s", "1.5h"] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
        assert!(parse_zone("Asia/Seoul").is_ok() && parse_zone("Asia/../etc").is_err());
    }
}
