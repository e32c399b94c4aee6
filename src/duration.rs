//! Durations as people write them in the config: "90s", "45m", "2h", "1h30m",
//! "500ms", or a bare number of seconds. The units are the ones
//! reimage.toml(5) lists ([`UNITS`]); humantime's `parse_duration` reads
//! them and checks every step for overflow, and its other units (`M`
//! months, `y` years, `us`, ...) are refused: "25M" is not 25 minutes.

use serde::Deserializer;
use std::time::Duration;

/// The longest duration taken: 100 years. Longer values are errors, not
/// panics later, when a deadline `Instant::now() + d` would overflow.
pub const MAX: Duration = Duration::from_secs(36_525 * 86_400);

/// The longest duration a configuration file takes: a week, the most any
/// timeout grows to (`attempt::CEILING`). A longer one is an error at its
/// key, not a timeout cut short without a word.
pub const CONFIG_MAX: Duration = Duration::from_secs(7 * 86_400);

/// The units reimage takes, as reimage.toml(5) lists them.
pub const UNITS: [&str; 14] = [
    "ms", "s", "sec", "secs", "m", "min", "mins", "h", "hr", "hours", "d", "days", "w", "weeks",
];

/// The units humantime takes that reimage does not, and what they mean
/// there, so the error can say what "25M" would have been.
const OTHER_UNITS: [(&str, &str); 20] = [
    ("M", "months"),
    ("month", "months"),
    ("months", "months"),
    ("y", "years"),
    ("year", "years"),
    ("years", "years"),
    ("ns", "nanoseconds"),
    ("nsec", "nanoseconds"),
    ("us", "microseconds"),
    ("usec", "microseconds"),
    ("msec", "milliseconds"),
    ("second", "seconds"),
    ("seconds", "seconds"),
    ("minute", "minutes"),
    ("minutes", "minutes"),
    ("hour", "hours"),
    ("hrs", "hours"),
    ("day", "days"),
    ("week", "weeks"),
    ("Ms", "months"),
];

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
    check_units(t, s)?;
    let d = humantime::parse_duration(t).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => too_long(s),
        e => format!("`{s}` is not a duration like \"90s\", \"45m\" or \"1h30m\": {e}"),
    })?;
    if d > MAX {
        return Err(too_long(s));
    }
    Ok(d)
}

/// Every unit in `t` is one of [`UNITS`].
fn check_units(t: &str, s: &str) -> Result<(), String> {
    let units = t
        .split(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
        .filter(|u| !u.is_empty());
    for u in units {
        if UNITS.contains(&u) {
            continue;
        }
        let meant = OTHER_UNITS
            .iter()
            .find(|(o, _)| *o == u)
            .map(|(_, m)| format!(" (`{u}` would be {m})"))
            .unwrap_or_default();
        return Err(format!(
            "`{s}` has the unit `{u}`, which reimage does not take{meant}: units are {}",
            UNITS.join(", ")
        ));
    }
    Ok(())
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

/// serde: a duration from a string ("45m") or a number of seconds, at
/// most [`CONFIG_MAX`]; any other type is an error that says what a
/// duration looks like.
pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(EXPECTING)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
            capped(parse(s), s).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
            let s = n.to_string();
            capped(from_secs(n as f64, &s), &s).map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
            let s = n.to_string();
            capped(from_secs(n as f64, &s), &s).map_err(E::custom)
        }
        fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Duration, E> {
            let s = n.to_string();
            capped(from_secs(n, &s), &s).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

/// A parsed configuration duration, refused past [`CONFIG_MAX`] with the
/// value as written.
fn capped(d: Result<Duration, String>, s: &str) -> Result<Duration, String> {
    match d? {
        d if d > CONFIG_MAX => Err(format!(
            "`{s}` is longer than the longest duration reimage takes in a configuration (7 days, the most a timeout grows to): a longer timeout would be cut to 7 days"
        )),
        d => Ok(d),
    }
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
        assert_eq!(parse("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse("90 secs"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn units_beyond_the_documented_ones_are_refused() {
        let e = parse("25M").expect_err("months");
        assert!(e.contains("`M` would be months"), "{e}");
        for bad in ["1y", "5us", "3 minutes", "1hour", "2Ms"] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains("units are ms, s,"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_config_duration_over_a_week_is_an_error_not_a_cap() {
        #[derive(Deserialize, Debug)]
        struct C {
            #[allow(dead_code)]
            #[serde(deserialize_with = "de")]
            t: Duration,
        }
        assert!(toml::from_str::<C>("t = \"7d\"").is_ok());
        let e = toml::from_str::<C>("t = \"8d\"").expect_err("8 days");
        assert!(e.to_string().contains("longer than the longest"), "{e}");
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        for s in [
            "1e20",
            "99999999999999999999h",
            "18446744073709551615s",
            "10000000000000000000",
            "36526d",
            "9999999999999999999999999999999999999999",
        ] {
            let e = parse(s).expect_err(s);
            assert!(e.contains("longer than"), "{s}: {e}");
        }
        assert_eq!(parse("36525d"), Ok(MAX));
        assert!(parse("5217w").is_ok());
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
