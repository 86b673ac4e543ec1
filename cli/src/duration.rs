//! Parsing durations such as `90s`, `15m`, `1h` or `7d` from the command line.

use std::time::Duration;

/// Parses `<number><unit>` with unit `s`, `m`, `h` or `d` (a bare number is seconds).
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 1h or 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_units() {
        assert_eq!(super::parse("90").unwrap().as_secs(), 90);
        assert_eq!(super::parse("15m").unwrap().as_secs(), 900);
        assert_eq!(super::parse("1h").unwrap().as_secs(), 3600);
        assert_eq!(super::parse("7d").unwrap().as_secs(), 604_800);
        assert!(super::parse("1y").is_err());
        assert!(super::parse("h").is_err());
    }
}
