//! The tri-state result every module returns, and its exit code.
//!
//! Every error is classified at the module boundary on purpose: `Retry` means
//! loading the image again could help (network, timeouts, a VM that died),
//! `Fatal` means it cannot (bad credentials, unknown image, host-key mismatch,
//! bad configuration).

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::names::names;

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
/// Exit code (EX_NOPERM): the views (`status`, `log`) cannot read the
/// state directory as this user.
pub const EXIT_NOPERM: i32 = 77;
/// Exit code (EX_TEMPFAIL): load the image again.
pub const EXIT_RETRY: i32 = 75;
/// Exit code (EX_CONFIG): the configuration file is wrong.
pub const EXIT_CONFIG: i32 = 78;

/// The two steps of an attempt, as events and the last-run record name
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Phase {
    /// The provisioning module.
    Load,
    /// The OS module.
    PostLoad,
}

names!(Phase {
    Load => "load",
    PostLoad => "post-load",
});

/// An outcome without its error: what events and records keep (as the
/// result of an event and of the last-run record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// See [`Outcome::Done`].
    Done,
    /// See [`Outcome::Retry`].
    Retry,
    /// See [`Outcome::Fatal`].
    Fatal,
}

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

    /// The outcome without its error, as events and the last-run record
    /// keep it.
    pub fn verdict(&self) -> Verdict {
        match self {
            Outcome::Done => Verdict::Done,
            Outcome::Retry(_) => Verdict::Retry,
            Outcome::Fatal(_) => Verdict::Fatal,
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

    #[test]
    fn names_on_disk_stay_as_they_were() {
        fn j<T: Serialize>(v: &T) -> String {
            serde_json::to_string(v).unwrap_or_default()
        }
        assert_eq!(j(&Phase::Load), r#""load""#);
        assert_eq!(j(&Phase::PostLoad), r#""post-load""#);
        // A verdict reaches the disk as the record's and the event's result.
        for (v, name) in [
            (Verdict::Done, r#""done""#),
            (Verdict::Retry, r#""retry""#),
            (Verdict::Fatal, r#""fatal""#),
        ] {
            assert_eq!(j(&crate::state::RunResult::from(v)), name);
            assert_eq!(j(&crate::report::EventResult::from(v)), name);
        }
        assert_eq!(Phase::PostLoad.to_string(), "post-load");
        let p: Phase = serde_json::from_str(r#""post-load""#).expect("parses");
        assert_eq!(p, Phase::PostLoad);
    }
}
