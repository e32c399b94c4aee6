//! The tri-state result every module returns, and its exit code.
//!
//! Every error is classified at the module boundary on purpose: `Retry` means
//! loading the image again could help (network, timeouts, a VM that died),
//! `Fatal` means it cannot (bad credentials, unknown image, host-key mismatch,
//! bad configuration).

use std::fmt;

/// Exit code: the step is done.
pub const EXIT_DONE: i32 = 0;
/// Exit code: a module failed for a reason that may not come back.
pub const EXIT_FATAL: i32 = 1;
/// Exit code (EX_USAGE): bad command line, unknown computer or image.
pub const EXIT_USAGE: i32 = 64;
/// Exit code (EX_CANTCREAT): the computer is locked by another reimage run.
pub const EXIT_LOCKED: i32 = 73;
/// Exit code (EX_UNAVAILABLE): the coordination store could not be used,
/// or was lost mid-run (the run stopped its child).
pub const EXIT_STORE: i32 = 69;
/// Exit code (EX_TEMPFAIL): load the image again.
pub const EXIT_RETRY: i32 = 75;
/// Exit code (EX_CONFIG): the configuration file is wrong.
pub const EXIT_CONFIG: i32 = 78;

/// What a provisioning module's `load` or an OS module's `post_load` says.
#[derive(Debug)]
pub enum Outcome {
    /// The step succeeded: image loaded, or OS ready for the user.
    Done,
    /// The step failed; loading the image again may help.
    Retry(anyhow::Error),
    /// The step failed; loading the image again will not help.
    Fatal(anyhow::Error),
}

impl Outcome {
    /// Exit code of a single `load` or `post-load` run that ended this way.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Done => EXIT_DONE,
            Outcome::Retry(_) => EXIT_RETRY,
            Outcome::Fatal(_) => EXIT_FATAL,
        }
    }

    /// Short lower-case name used in events and the last-run record.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Retry(_) => "retry",
            Outcome::Fatal(_) => "fatal",
        }
    }

    /// The error behind a failed outcome, if any.
    pub fn error(&self) -> Option<&anyhow::Error> {
        match self {
            Outcome::Done => None,
            Outcome::Retry(e) | Outcome::Fatal(e) => Some(e),
        }
    }

    /// Adds context to the error of a failed outcome.
    pub fn context<C: fmt::Display + Send + Sync + 'static>(self, c: C) -> Outcome {
        match self {
            Outcome::Done => Outcome::Done,
            Outcome::Retry(e) => Outcome::Retry(e.context(c)),
            Outcome::Fatal(e) => Outcome::Fatal(e.context(c)),
        }
    }
}

/// Collapses a `Result<(), Outcome>` written with `?` into an outcome.
pub fn collapse(r: Result<(), Outcome>) -> Outcome {
    match r {
        Ok(()) => Outcome::Done,
        Err(o) => o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(Outcome::Done.exit_code(), 0);
        assert_eq!(Outcome::Retry(anyhow::anyhow!("x")).exit_code(), 75);
        assert_eq!(Outcome::Fatal(anyhow::anyhow!("x")).exit_code(), 1);
    }
}
