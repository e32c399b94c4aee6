//! Secrets (passwords, session ids, Authorization headers): read from files,
//! held in a type whose `Debug` never shows them, and handed out only where
//! a request or an upload needs the value.

use std::fmt;
use std::path::Path;

/// A value that must not reach argv, logs or events.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The first line of `path` (without a trailing `\r`). `what` names the
    /// setting in errors, e.g. "password_file"; the errors name the file,
    /// never its content.
    pub fn from_file(path: &Path, what: &str) -> anyhow::Result<Secret> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if line.is_empty() {
            anyhow::bail!(
                "{what} {} is empty: its first line must be the password",
                path.display()
            );
        }
        Ok(Secret(line.to_string()))
    }

    /// A fresh random password of `len` (at least 4) characters from the
    /// kernel's random source: letters and digits, at least one upper-case
    /// letter, one lower-case letter and one digit (Windows' complexity rule
    /// wants three of four classes), and nothing a command line, cmd.exe or
    /// VBScript would read as syntax.
    pub fn random(len: usize) -> anyhow::Result<Secret> {
        use std::io::Read;
        const SETS: [&[u8]; 3] = [
            b"ABCDEFGHJKLMNPQRSTUVWXYZ",
            b"abcdefghijkmnopqrstuvwxyz",
            b"23456789",
        ];
        let all: Vec<u8> = SETS.concat();
        let len = len.max(4);
        let mut f = std::fs::File::open("/dev/urandom")
            .map_err(|e| anyhow::anyhow!("cannot open /dev/urandom: {e}"))?;
        loop {
            let mut out = Vec::with_capacity(len);
            let mut buf = [0u8; 64];
            while out.len() < len {
                f.read_exact(&mut buf)
                    .map_err(|e| anyhow::anyhow!("cannot read /dev/urandom: {e}"))?;
                // Rejection sampling keeps every character equally likely.
                let limit = 256 - 256 % all.len();
                out.extend(
                    buf.iter()
                        .filter(|b| (**b as usize) < limit)
                        .map(|b| all[*b as usize % all.len()])
                        .take(len - out.len()),
                );
            }
            if SETS.iter().all(|set| out.iter().any(|c| set.contains(c))) {
                return Ok(Secret(String::from_utf8_lossy(&out).into_owned()));
            }
        }
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `Basic base64(user:password)`, for an HTTP Authorization header.
    pub fn basic_auth(user: &str, password: &Secret) -> Secret {
        let pair = format!("{user}:{}", password.0);
        Secret(format!(
            "Basic {}",
            crate::encoding::base64_encode(pair.as_bytes())
        ))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn random_passwords_differ_and_keep_the_rules() {
        let a = Secret::random(16).expect("random");
        let b = Secret::random(16).expect("random");
        assert_ne!(a, b);
        for s in [&a, &b] {
            let v = s.expose();
            assert_eq!(v.len(), 16);
            assert!(v.chars().any(|c| c.is_ascii_uppercase()), "{v}");
            assert!(v.chars().any(|c| c.is_ascii_lowercase()), "{v}");
            assert!(v.chars().any(|c| c.is_ascii_digit()), "{v}");
            assert!(v.chars().all(|c| c.is_ascii_alphanumeric()), "{v}");
        }
    }

    #[test]
    fn reads_the_first_line_and_refuses_an_empty_file() {
        let dir = std::env::temp_dir().join(format!("reimage-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret\r\nsecond line\n").expect("write");
        let s = Secret::from_file(&f, "password_file").expect("read");
        assert_eq!(s.expose(), "s3cret");
        std::fs::write(&f, "\n").expect("write");
        let e = Secret::from_file(&f, "password_file").expect_err("empty");
        assert!(format!("{e}").contains("is empty"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
