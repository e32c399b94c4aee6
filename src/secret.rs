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
