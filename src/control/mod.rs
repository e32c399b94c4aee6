//! How an OS module talks to the computer: `ssh`, `winrm`, or `none`
//! (network probes only). The OS profile picks one; a provisioner never uses
//! these.

pub mod none;
pub mod ssh;
pub mod winrm;

use std::time::Duration;

use crate::exec::Output;

/// Why a channel operation failed, classified for the module boundary.
#[derive(Debug)]
pub enum ChannelError {
    /// Not answering (yet): refused, reset, no route, connect timeout. Keep
    /// waiting within the step; retry when the step times out.
    Unreachable(anyhow::Error),
    /// Credentials rejected: fatal, a reload will not fix a wrong key.
    Auth(anyhow::Error),
    /// The host key does not match what is pinned: fatal.
    HostKey(anyhow::Error),
    /// The channel's settings cannot work with what answers (WinRM: the
    /// listener does not take the configured auth scheme, or refuses
    /// unencrypted messages): fatal at once, the message says what to
    /// change; waiting or reloading would not.
    Config(anyhow::Error),
    /// A command ran past its timeout: retry.
    Timeout(anyhow::Error),
    /// Answered, but not as the protocol says: retry.
    Protocol(anyhow::Error),
}

impl ChannelError {
    /// True when loading the image again cannot help.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ChannelError::Auth(_) | ChannelError::HostKey(_) | ChannelError::Config(_)
        )
    }

    /// The error inside.
    pub fn into_inner(self) -> anyhow::Error {
        match self {
            ChannelError::Unreachable(e)
            | ChannelError::Auth(e)
            | ChannelError::HostKey(e)
            | ChannelError::Config(e)
            | ChannelError::Timeout(e)
            | ChannelError::Protocol(e) => e,
        }
    }

    /// The contract's class, with `what` (the computer and the step) as
    /// context: fatal for credentials and host keys, retry for the rest (the
    /// computer went away, a command hung).
    pub fn into_outcome(self, what: String) -> crate::outcome::Outcome {
        let fatal = self.is_fatal();
        let err = self.into_inner().context(what);
        if fatal {
            crate::outcome::Outcome::Fatal(err)
        } else {
            crate::outcome::Outcome::Retry(err)
        }
    }

    /// Short class name for events.
    pub fn class(&self) -> &'static str {
        match self {
            ChannelError::Unreachable(_) => "unreachable",
            ChannelError::Auth(_) => "auth",
            ChannelError::HostKey(_) => "host-key",
            ChannelError::Config(_) => "config",
            ChannelError::Timeout(_) => "timeout",
            ChannelError::Protocol(_) => "protocol",
        }
    }
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelError::Unreachable(e)
            | ChannelError::Auth(e)
            | ChannelError::HostKey(e)
            | ChannelError::Config(e)
            | ChannelError::Timeout(e)
            | ChannelError::Protocol(e) => write!(f, "{e:#}"),
        }
    }
}

/// A way to log in to the computer's OS and run commands there.
pub trait Channel {
    /// False for channel none, which logs in nowhere and runs nothing: its
    /// [`Channel::login`] only checks that the computer answers on its
    /// port.
    fn logs_in(&self) -> bool {
        true
    }

    /// Connects if needed, authenticates, and runs a no-op: Ok means the OS
    /// accepts us now.
    fn login(&mut self, timeout: Duration) -> Result<(), ChannelError>;

    /// Runs one command given as an argument vector. The channel turns it
    /// into what the remote side needs (one quoted line for an SSH remote
    /// shell; command plus arguments for WinRM) and reconnects if the
    /// previous connection dropped.
    fn run(&mut self, argv: &[String], timeout: Duration) -> Result<Output, ChannelError>;

    /// Writes `data` to `path` on the computer with Unix `mode` where that
    /// applies; secrets travel this way, never in a command line.
    fn upload(
        &mut self,
        data: &[u8],
        path: &str,
        mode: i32,
        timeout: Duration,
    ) -> Result<(), ChannelError>;

    /// What identifies the other end once connected (an SSH host-key
    /// fingerprint), for events; `None` where the channel has nothing.
    fn identity(&self) -> Option<String> {
        None
    }

    /// Which of the credentials it may use the other end took, when it
    /// has a choice, for events; never a secret.
    fn login_note(&self) -> Option<String> {
        None
    }

    /// Drops the connection; the next call connects again.
    fn disconnect(&mut self);
}
