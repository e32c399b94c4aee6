//! Sizes as people write them in the config: "8MiB", "512KiB", "1GiB",
//! "10MB", or a bare number of bytes.

use serde::{Deserialize, Deserializer};

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

/// serde: a size from a string ("8MiB") or a number of bytes.
pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(u64),
    }
    match Raw::deserialize(d)? {
        Raw::S(s) => parse(&s).map_err(serde::de::Error::custom),
        Raw::N(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
