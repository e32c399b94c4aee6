//! Sizes as people write them in the config: "8MiB", "512KiB", "1GiB",
//! "10MB", or a bare number of bytes.

use serde::Deserializer;

/// Parses "8MiB", "512 KiB", "1GiB", "10MB", "64kB", "4096B" or "4096".
/// Binary units (KiB, MiB, GiB) are powers of 1024, decimal ones (kB, MB,
/// GB) powers of 1000.
pub fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let unit_bytes: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad(s)),
    };
    let n: f64 = num.parse().map_err(|_| bad(s))?;
    let bytes = n * unit_bytes as f64;
    // 2^53: every whole number up to here is exact in an f64.
    if !bytes.is_finite() || bytes > (1u64 << 53) as f64 {
        return Err(format!("`{s}` is larger than reimage takes"));
    }
    Ok(bytes as u64)
}

fn bad(s: &str) -> String {
    format!("`{s}` is not a size like \"8MiB\", \"512KiB\" or a number of bytes")
}

/// What a size is, for serde's "invalid type: ..., expected ..." errors.
const EXPECTING: &str = "a size like \"8MiB\", \"512KiB\" or a number of bytes";

/// serde: a size from a string ("8MiB") or a number of bytes. Anything
/// else is told as what it is and what was expected (not "did not match
/// any variant of untagged enum").
pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(EXPECTING)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<u64, E> {
            parse(s).map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<u64, E> {
            Ok(n)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n)
                .map_err(|_| E::custom(format!("{n} is negative: expected {EXPECTING}")))
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_of_the_wrong_type_says_what_a_size_is() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[serde(deserialize_with = "de")]
            #[allow(dead_code)]
            max_bytes: u64,
        }
        for (text, says) in [
            (
                "max_bytes = true",
                "invalid type: boolean `true`, expected a size like",
            ),
            (
                "max_bytes = 1.5",
                "invalid type: floating point `1.5`, expected a size like",
            ),
            ("max_bytes = -1", "-1 is negative: expected a size like"),
            (
                "max_bytes = [1]",
                "invalid type: sequence, expected a size like",
            ),
        ] {
            let e = toml::from_str::<T>(text).expect_err(text).to_string();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains("untagged"), "{text}: {e}");
        }
    }

    #[test]
    fn parses_the_forms_people_write() {
        assert_eq!(parse("8MiB"), Ok(8 << 20));
        assert_eq!(parse("512 KiB"), Ok(512 << 10));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("10MB"), Ok(10_000_000));
        assert_eq!(parse("64kB"), Ok(64_000));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("4096B"), Ok(4096));
        assert_eq!(parse("1.5KiB"), Ok(1536));
        assert_eq!(parse("0"), Ok(0));
        assert!(parse("").is_err());
        assert!(parse("8 megs").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("MiB").is_err());
        assert!(parse("1e9").is_err());
        assert!(parse("99999999GiB").is_err());
    }
}
