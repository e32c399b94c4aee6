//! The configuration file as read: its text kept, so an error found later
//! can name FILE:LINE:COL.

use std::path::PathBuf;

use super::error::{ConfigError, KeyError};
use super::family::Families;
use super::locate;
use super::model::Config;

/// The configuration file as read, with its path and text kept so later
/// checks can point at a line and column.
#[derive(Debug)]
pub struct Loaded {
    /// Where it came from.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// The parsed model.
    pub config: Config,
    /// The OS families its profiles resolve against.
    pub families: Families,
}

impl Loaded {
    /// A config error at the key `path` (e.g. `["images", "c7", "os"]`),
    /// pointing at its line and column when the key is in the file.
    pub fn error_at(&self, path: &[&str], msg: impl std::fmt::Display) -> ConfigError {
        let at = locate::key_span(&self.text, path)
            .map(|s| locate::line_col(&self.text, s.start))
            .map(|(l, c)| format!("{}:{l}:{c}", self.path.display()))
            .unwrap_or_else(|| self.path.display().to_string());
        ConfigError(format!("{at}: {msg}"))
    }

    /// A [`KeyError`] from the table at `table` (e.g. `["provisioners",
    /// "xc"]`), pointing at the bad key, or at the table when the key is not
    /// written in the file.
    pub fn key_error(&self, table: &[&str], e: &KeyError) -> ConfigError {
        let mut path: Vec<&str> = table.to_vec();
        path.extend(e.path.iter().map(String::as_str));
        let mut n = path.len();
        while n > table.len() && locate::key_span(&self.text, &path[..n]).is_none() {
            n -= 1;
        }
        self.error_at(&path[..n], &e.message)
    }

    /// A [`KeyError`] whose path starts at the file's top, at exactly that
    /// key (the file alone when the key is not written there).
    pub fn error(&self, e: &KeyError) -> ConfigError {
        let path: Vec<&str> = e.path.iter().map(String::as_str).collect();
        self.error_at(&path, &e.message)
    }
}
