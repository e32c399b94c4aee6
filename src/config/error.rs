//! The configuration's errors: one already placed at FILE:LINE:COL, and one
//! that names its key as data, for whoever holds the file's text to place.

use crate::error::Error;

/// A configuration error, already formatted as `FILE:LINE:COL: message`
/// (exit 78).
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e.0)
    }
}

/// An error at a key: the path of keys to it, and what is wrong. Inside a
/// table its owner decodes (a provisioner's, a family's), the path starts
/// at that table; from validation, at the file's top.
/// [`super::Loaded::key_error`] and [`super::Loaded::error`] turn it into
/// FILE:LINE:COL.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyError {
    /// Keys down to the bad one (array items by index); empty when the
    /// table as a whole is wrong.
    pub path: Vec<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl KeyError {
    /// An error at the key `path`.
    pub fn new(path: &[&str], message: impl Into<String>) -> KeyError {
        KeyError {
            path: path.iter().map(|k| k.to_string()).collect(),
            message: message.into(),
        }
    }

    /// An error at `key` of the table.
    pub fn at(key: &str, message: impl Into<String>) -> KeyError {
        KeyError::new(&[key], message)
    }

    /// An error about the table as a whole.
    pub fn table(message: impl Into<String>) -> KeyError {
        KeyError::new(&[], message)
    }

    /// The same error, its path under `table`.
    pub fn under(mut self, table: &[&str]) -> KeyError {
        let mut path: Vec<String> = table.iter().map(|k| k.to_string()).collect();
        path.append(&mut self.path);
        self.path = path;
        self
    }
}
