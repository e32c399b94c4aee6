//! Durations as people write them in the config: "90s", "45m", "2h", "1h30m",
//! "500ms", or a bare number of seconds. The units are humantime's
//! (`parse_duration`), which checks every step for overflow.

use serde::Deserializer;
use std::time::Duration;

/// The longest duration taken: 100 years. Longer values are errors, not
/// panics later, when a deadline `Instant::now() + d` would overflow.
pub const MAX: Duration = Duration::from_secs(36_525 * 86_400);

/// Parses "90s", "45m", "2h", "1h30m", "1h 30m", "250ms", "1.5h", "2d",
/// "0", or a bare number of seconds ("12", "0.5").
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return from_secs(secs, s);
    }
    let d = humantime::parse_duration(t).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => too_long(s),
        e => format!("`{s}` is not a duration like \"90s\", \"45m\" or \"1h30m\": {e}"),
    })?;
    if d > MAX {
        return Err(too_long(s));
    }
    Ok(d)
}

fn from_secs(secs: f64, s: &str) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a duration of zero or more"));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= MAX => Ok(d),
        _ => Err(too_long(s)),
    }
}

fn too_long(s: &str) -> String {
    format!("`{s}` is longer than the longest duration reimage takes (100 years)")
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

/// What a duration looks like, for type errors.
const EXPECTING: &str = "a duration like \"90s\", \"45m\" or \"1h30m\", or a number of seconds";

/// serde: a duration from a string ("45m") or a number of seconds; any
/// other type is an error that says what a duration looks like.
pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(EXPECTING)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
            parse(s).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
            from_secs(n as f64, &n.to_string()).map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
            from_secs(n as f64, &n.to_string()).map_err(E::custom)
        }
        fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Duration, E> {
            from_secs(n, &n.to_string()).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

/// serde: an optional duration.
pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

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
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse(" 0 "), Ok(Duration::ZERO));
        assert_eq!(parse("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse("").is_err());
        assert!(parse("90").is_ok_and(|d| d == Duration::from_secs(90)));
        assert!(parse("1x").is_err());
        assert!(parse("inf").is_err());
        assert!(parse("NaN").is_err());
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        for s in [
            "1e20",
            "99999999999999999999h",
            "18446744073709551615s",
            "10000000000000000000",
            "101y",
            "36526d",
            "9999999999999999999999999999999999999999",
        ] {
            let e = parse(s).expect_err(s);
            assert!(e.contains("longer than"), "{s}: {e}");
        }
        assert_eq!(parse("36525d"), Ok(MAX));
        assert!(parse("100y").is_ok());
    }

    #[test]
    fn numbers_from_toml_are_seconds_and_checked() {
        #[derive(Deserialize)]
        struct C {
            #[serde(deserialize_with = "de")]
            t: Duration,
        }
        let t = |text: &str| toml::from_str::<C>(text).map(|c| c.t);
        assert_eq!(t("t = 90").ok(), Some(Duration::from_secs(90)));
        assert_eq!(t("t = 1.5").ok(), Some(Duration::from_millis(1500)));
        assert_eq!(t("t = \"1h30m\"").ok(), Some(Duration::from_secs(5400)));
        for bad in ["t = 1e20", "t = -1", "t = 9223372036854775807", "t = nan"] {
            let e = t(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_says_what_a_duration_looks_like() {
        #[derive(Deserialize, Debug)]
        struct C {
            #[allow(dead_code)]
            #[serde(deserialize_with = "de")]
            t: Duration,
        }
        for bad in ["t = true", "t = [1]", "t = { a = 1 }", "t = 1979-05-27"] {
            let e = toml::from_str::<C>(bad).expect_err(bad).to_string();
            assert!(e.contains("expected a duration like"), "{bad}: {e}");
            assert!(!e.contains("untagged"), "{bad}: {e}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["45m", "1h30m", "90ms", "5s", "2h"] {
            assert_eq!(fmt(parse(s).expect("parses")), s);
        }
    }
}
