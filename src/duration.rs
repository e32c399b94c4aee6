//! Durations as people write them in the config: "90s", "45m", "2h", "1h30m",
//! "500ms", or a bare number of seconds.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Parses "90s", "45m", "2h", "1h30m", "250ms", "1.5h", "0".
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return from_secs(secs, s);
    }
    let mut total = 0.0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{s}` needs a unit: ms, s, m, h or d"))?;
        if num_end == 0 {
            return Err(format!(
                "`{s}` is not a duration like \"90s\", \"45m\" or \"2h\""
            ));
        }
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("`{s}` is not a duration like \"90s\", \"45m\" or \"2h\""))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match rest[..unit_end].trim() {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hours" => 3600.0,
            "d" | "days" => 86_400.0,
            u => return Err(format!("unknown unit `{u}` in `{s}`: use ms, s, m, h or d")),
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    from_secs(total, s)
}

fn from_secs(secs: f64, s: &str) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a duration of zero or more"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration the way the config writes it: "45m", "1h30m", "2.5s".
pub fn fmt(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        if ms < 1000 {
            return format!("{ms}ms");
        }
        return format!("{:.1}s", d.as_secs_f64());
    }
    let mut s = d.as_secs();
    let mut out = String::new();
    for (unit, n) in [("h", 3600), ("m", 60)] {
        if s >= n {
            out.push_str(&format!("{}{unit}", s / n));
            s %= n;
        }
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// serde: a duration from a string ("45m") or a number of seconds.
pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(f64),
    }
    match Raw::deserialize(d)? {
        Raw::S(s) => parse(&s).map_err(serde::de::Error::custom),
        Raw::N(n) => from_secs(n, &n.to_string()).map_err(serde::de::Error::custom),
    }
}

/// serde: an optional duration.
pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_people_write() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("45m"), Ok(Duration::from_secs(2700)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("12"), Ok(Duration::from_secs(12)));
        assert!(parse("ten minutes").is_err());
        assert!(parse("5 fortnights").is_err());
        assert!(parse("-3s").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for s in ["45m", "1h30m", "90ms", "5s", "2h"] {
            assert_eq!(fmt(parse(s).expect("parses")), s);
        }
    }
}
