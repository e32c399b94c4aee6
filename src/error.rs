//! The errors that stop reimage before or around a module, each with its
//! exit code. What a module says (done, retry, fatal) is an `Outcome`, not
//! an error: this type is for the run itself.

use std::fmt;

use crate::outcome::{EXIT_CONFIG, EXIT_FATAL, EXIT_LOCKED, EXIT_NOPERM, EXIT_STORE, EXIT_USAGE};

/// Why reimage could not run a module, or stopped around one.
#[derive(Debug)]
pub enum Error {
    /// Bad command line, unknown computer or image (exit 64).
    Usage(String),
    /// The configuration is wrong; the text starts with FILE:LINE:COL
    /// (exit 78).
    Config(String),
    /// The computer is locked by another run (exit 73).
    Locked(String),
    /// The coordination store could not be used (exit 69).
    Store(String),
    /// A view (`status`, `log`) cannot read the state directory as this
    /// user (exit 77).
    NoPermission(String),
    /// A signal (or the loss of the coordination store) stopped the run
    /// before its first phase (exit 128 plus the signal's number; 69 for
    /// the store).
    Interrupted(crate::signal::Interrupted),
    /// Anything else that stopped the run (exit 1).
    Fatal(anyhow::Error),
}

impl Error {
    /// The exit code the contract gives this error.
    pub fn code(&self) -> i32 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Config(_) => EXIT_CONFIG,
            Error::Locked(_) => EXIT_LOCKED,
            Error::Store(_) => EXIT_STORE,
            Error::NoPermission(_) => EXIT_NOPERM,
            Error::Interrupted(i) => i.code(),
            Error::Fatal(_) => EXIT_FATAL,
        }
    }
}

impl Error {
    /// The name of this kind of error in JSON events.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Usage(_) => "usage",
            Error::Config(_) => "config",
            Error::Locked(_) => "locked",
            Error::Store(_) => "store",
            Error::NoPermission(_) => "permission",
            Error::Interrupted(_) => "interrupted",
            Error::Fatal(_) => "fatal",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m)
            | Error::Config(m)
            | Error::Locked(m)
            | Error::Store(m)
            | Error::NoPermission(m) => f.write_str(m),
            Error::Interrupted(i) => write!(f, "{i}"),
            Error::Fatal(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::signal::Interrupted> for Error {
    fn from(i: crate::signal::Interrupted) -> Error {
        Error::Interrupted(i)
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Error {
        Error::Fatal(e)
    }
}
