//! The password file libpq reads (`PGPASSFILE`, else `~/.pgpass`): lines of
//! `hostname:port:database:username:password`, `*` matching anything,
//! `\:` and `\\` escaped. Like libpq, a file others can read is ignored.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::secret::Secret;

fn path() -> Option<PathBuf> {
    match std::env::var_os("PGPASSFILE") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")),
    }
}

/// What the password file gave for a connection.
pub enum Found {
    /// The password.
    Password(Secret),
    /// None; why, to add to a login that fails for want of a password
    /// (None: there is no password file, as for most sites with
    /// `password_file` or a trust setup).
    Nothing(Option<String>),
}

/// The password for this connection, if the password file has one.
pub fn lookup(host: &str, port: u16, db: &str, user: &str) -> Found {
    let Some(p) = path() else {
        return Found::Nothing(None);
    };
    let shown = p.display();
    let meta = match std::fs::metadata(&p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Nothing(None),
        Err(e) => {
            return Found::Nothing(Some(format!("cannot read the password file {shown}: {e}")));
        }
    };
    if !meta.is_file() {
        return Found::Nothing(Some(format!(
            "the password file {shown} is not a regular file, so it was not read"
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Found::Nothing(Some(format!(
            "the password file {shown} was ignored because group or others may access it (mode {mode:04o}); libpq ignores it too: chmod 600 {shown}"
        )));
    }
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) => {
            return Found::Nothing(Some(format!("cannot read the password file {shown}: {e}")));
        }
    };
    match find(&text, host, port, db, user) {
        Some(s) => Found::Password(s),
        None => Found::Nothing(Some(format!(
            "the password file {shown} has no line for {host}:{port}:{db}:{user}"
        ))),
    }
}

/// The first line of `text` matching the connection.
pub fn find(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<Secret> {
    let port = port.to_string();
    let want = [host, port.as_str(), db, user];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(fields)
        .find(|f| {
            f.iter()
                .zip(want)
                .all(|(have, want)| have == "*" || have == want)
        })
        .map(|f| Secret::new(f[4].clone()))
}

/// The five fields of a line (the password may contain unescaped colons,
/// as libpq allows).
fn fields(line: &str) -> Option<Vec<String>> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.last_mut()?.push(chars.next().unwrap_or('\\')),
            ':' if out.len() < 5 => out.push(String::new()),
            c => out.last_mut()?.push(c),
        }
    }
    (out.len() == 5).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_wildcards_and_escapes() {
        let text = "# comment\nother:5432:*:reimage:no\n*:5432:site\\:db:reimage:pa\\:ss:x\n";
        let p = find(text, "db.example", 5432, "site:db", "reimage").expect("a match");
        assert_eq!(p.expose(), "pa:ss:x");
        assert!(find(text, "db.example", 5433, "site:db", "reimage").is_none());
        let p = find(text, "other", 5432, "x", "reimage").expect("first line");
        assert_eq!(p.expose(), "no");
    }
}
