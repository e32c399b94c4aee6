//! Finding where a key stands in the TOML text, so every configuration
//! error can name file:line:column.

use std::ops::Range;
use std::path::Path;
use toml::de::{DeArray, DeTable, DeValue};

use super::error::ConfigError;

/// 1-based line and column of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// The span of the key at `path` (table names, then the key), or of the
/// deepest table on that path that exists.
pub fn key_span(text: &str, path: &[&str]) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let mut table: &DeTable = doc.get_ref();
    let mut found = None;
    for (i, name) in path.iter().enumerate() {
        let (k, v) = table.get_key_value(*name)?;
        found = Some(k.span());
        if i + 1 == path.len() {
            break;
        }
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            DeValue::Array(a) => return item_span(a, &path[i + 1..]),
            _ => return found,
        }
    }
    found
}

/// `steps.2.timeout`: the span at `path` (an index, then keys) in an array
/// of tables; of the item when the keys are not in it.
fn item_span(a: &DeArray, path: &[&str]) -> Option<Range<usize>> {
    let idx: usize = path.first()?.parse().ok()?;
    let item = a.get(idx)?;
    let found = Some(item.span());
    match item.get_ref() {
        DeValue::Table(t) if path.len() > 1 => sub_span(t, &path[1..]).or(found),
        _ => found,
    }
}

fn sub_span(table: &DeTable, path: &[&str]) -> Option<Range<usize>> {
    let (k, v) = table.get_key_value(*path.first()?)?;
    if path.len() == 1 {
        return Some(k.span());
    }
    match v.get_ref() {
        DeValue::Table(t) => sub_span(t, &path[1..]).or(Some(k.span())),
        _ => Some(k.span()),
    }
}

/// A TOML or serde error as `FILE:LINE:COL: message`. Errors inside a
/// provisioner or step table (where serde loses the exact key) are narrowed
/// to the unknown key when the message names it.
pub fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let msg = e.message().trim().to_string();
    let mut span = e.span();
    if let (Some(s), Some(key)) = (span.clone(), unknown_field(&msg))
        && let Some(k) = find_key_in(text, s, &key)
    {
        span = Some(k);
    }
    let msg = super::words::toml_words(&msg);
    match span {
        Some(s) => {
            let (l, c) = line_col(text, s.start);
            ConfigError(format!("{}:{l}:{c}: {msg}", path.display()))
        }
        None => ConfigError(format!("{}: {msg}", path.display())),
    }
}

fn unknown_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// The first occurrence of `key` as a key (followed by `=`) inside `within`,
/// or, when `within` is a table header, inside the table it opens.
fn find_key_in(text: &str, within: Range<usize>, key: &str) -> Option<Range<usize>> {
    let mut within = within;
    if text.get(within.clone())?.trim_start().starts_with('[') {
        // The header's span: the table runs to the next header or the end.
        let body = within.end;
        let next = text[body..]
            .match_indices('\n')
            .map(|(i, _)| body + i + 1)
            .find(|&i| text[i..].trim_start().starts_with('['))
            .unwrap_or(text.len());
        within = within.start..next;
    }
    let region = text.get(within.clone())?;
    let mut from = 0;
    while let Some(i) = region[from..].find(key) {
        let at = from + i;
        let before_ok = at == 0
            || !region[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-');
        let after = region[at + key.len()..].trim_start();
        if before_ok && after.starts_with('=') {
            return Some(within.start + at..within.start + at + key.len());
        }
        from = at + key.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys() {
        let t = "a = 1\n[images.c7]\nos = \"x\"\n";
        let s = key_span(t, &["images", "c7", "os"]).expect("found");
        assert_eq!(line_col(t, s.start), (3, 1));
    }

    #[test]
    fn finds_keys_in_arrays_of_tables() {
        let t = "[os.p]\nsteps = [\n  { wait = \"port\" },\n  { wait = \"x\", port = 2 },\n]\n";
        let s = key_span(t, &["os", "p", "steps", "1", "port"]).expect("found");
        assert_eq!(line_col(t, s.start), (4, 17));
    }
}
