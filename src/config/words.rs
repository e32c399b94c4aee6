//! The words of configuration errors: serde names Rust's types (`u32`,
//! `sequence`, `map`), the file is TOML (a whole number, an array, a
//! table); and a misspelt key or placeholder gets the nearest valid one.

/// `msg` with Rust's and serde's type names put as TOML names them, and,
/// for an unknown key or value with a list of the expected ones, the
/// nearest of them suggested.
pub fn toml_words(msg: &str) -> String {
    let mut out = msg.to_string();
    // Longest first, so `u16` is not taken for a part of `u160`.
    for (rust, toml) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected i8", "expected a whole number"),
        ("expected i16", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
        ("expected path string", "expected a string (a path)"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: table"),
        ("floating point", "float"),
    ] {
        out = replace_word(&out, rust, toml);
    }
    out = struct_to_table(&out);
    match suggestion(&out) {
        Some(s) => format!("{out}: did you mean `{s}`?"),
        None => out,
    }
}

/// `from` replaced by `to` wherever it ends a word.
fn replace_word(s: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        out.push_str(&rest[..i]);
        if after.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// serde's "expected struct ComputerConfig" is a table in the file.
fn struct_to_table(s: &str) -> String {
    let Some(i) = s.find("expected struct ") else {
        return s.to_string();
    };
    let name_end = s[i + 16..]
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(s.len(), |j| i + 16 + j);
    format!("{}expected a table{}", &s[..i], &s[name_end..])
}

/// For "unknown field `adress`, expected one of `address`, `node`": the
/// nearest expected name (`address`), when one is near enough.
fn suggestion(msg: &str) -> Option<String> {
    let rest = msg
        .strip_prefix("unknown field `")
        .or_else(|| msg.strip_prefix("unknown variant `"))?;
    let (got, rest) = rest.split_once('`')?;
    let list = rest
        .strip_prefix(", expected one of ")
        .or_else(|| rest.strip_prefix(", expected "))?;
    let known: Vec<&str> = list
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, k)| k)
        .collect();
    nearest(got, &known).map(str::to_string)
}

/// The one of `known` nearest to `got` by edit distance (case ignored),
/// when it is near enough to be a slip: at most a third of the word's
/// letters (at least one) apart.
pub fn nearest<'a>(got: &str, known: &[&'a str]) -> Option<&'a str> {
    let g = got.to_lowercase();
    let limit = (g.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (distance(&g, &k.to_lowercase()), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_types_become_toml_words() {
        assert_eq!(
            toml_words("invalid type: string \"x\", expected u32"),
            "invalid type: string \"x\", expected a whole number from 0 to 4294967295"
        );
        assert_eq!(
            toml_words("invalid type: sequence, expected struct ImageCheck"),
            "invalid type: array, expected a table"
        );
        assert_eq!(
            toml_words("invalid type: floating point `1.5`, expected i64"),
            "invalid type: float `1.5`, expected a whole number"
        );
        assert_eq!(toml_words("expected u160"), "expected u160");
    }

    #[test]
    fn a_misspelt_key_gets_the_nearest() {
        let m = toml_words("unknown field `adress`, expected one of `address`, `node`, `mac`");
        assert!(m.ends_with("did you mean `address`?"), "{m}");
        let m = toml_words("unknown field `zzzzzz`, expected one of `address`, `node`");
        assert!(!m.contains("did you mean"), "{m}");
        let m = toml_words("unknown field `Node`, expected `node`");
        assert!(m.ends_with("did you mean `node`?"), "{m}");
        assert_eq!(nearest("nod", &["node", "address"]), Some("node"));
        assert_eq!(nearest("x", &["node"]), None);
    }
}
