//! Channel `none`: network probes only. It logs in nowhere and runs
//! nothing; "logging in" is the computer accepting a TCP connection on its
//! port, which is all the stability window asks of it.

use anyhow::anyhow;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Channel, ChannelError};
use crate::exec::Output;
use crate::probe::{self, Seen};

/// The channel of a profile with `channel = "none"`.
pub struct NoChannel {
    host: String,
    port: Option<u16>,
    /// The address, looked up at the first login after a connect or a
    /// failed login.
    addr: Option<Result<SocketAddr, String>>,
}

impl NoChannel {
    /// Probes `host` on `port` (`None`: the profile and the computer name
    /// none, so it never answers).
    pub fn new(host: &str, port: Option<u16>) -> NoChannel {
        NoChannel {
            host: host.to_string(),
            port,
            addr: None,
        }
    }

    fn refuse(&self, what: &str) -> ChannelError {
        ChannelError::Protocol(anyhow!(
            "channel none cannot {what} on {}: it only probes the port",
            self.host
        ))
    }
}

impl Channel for NoChannel {
    fn logs_in(&self) -> bool {
        false
    }

    /// A TCP connect to the port within `timeout`.
    fn login(&mut self, timeout: Duration) -> Result<(), ChannelError> {
        let Some(port) = self.port else {
            return Err(ChannelError::Unreachable(anyhow!(
                "channel none has no port to probe on {}",
                self.host
            )));
        };
        let host = &self.host;
        let addr = self.addr.get_or_insert_with(|| probe::resolve(host, port));
        match addr {
            Ok(a) => match probe::port(*a, timeout) {
                Seen::Up(_) => Ok(()),
                Seen::Down(m) => Err(ChannelError::Unreachable(anyhow!("{a}: {m}"))),
            },
            Err(m) => Err(ChannelError::Unreachable(anyhow!("{m}"))),
        }
    }

    fn run(&mut self, _argv: &[String], _timeout: Duration) -> Result<Output, ChannelError> {
        Err(self.refuse("run a command"))
    }

    fn upload(
        &mut self,
        _data: &[u8],
        path: &str,
        _mode: i32,
        _timeout: Duration,
    ) -> Result<(), ChannelError> {
        Err(self.refuse(&format!("write {path}")))
    }

    fn disconnect(&mut self) {
        self.addr = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logging_in_is_the_port_answering_and_nothing_runs() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let port = l.local_addr().expect("address").port();
        let mut ch = NoChannel::new("127.0.0.1", Some(port));
        assert!(!ch.logs_in());
        ch.login(Duration::from_secs(5)).expect("the port answers");
        let e = ch
            .run(&["true".to_string()], Duration::from_secs(1))
            .expect_err("runs nothing");
        assert_eq!(e.class(), "protocol");
        assert!(
            ch.upload(b"x", "/tmp/x", 0o600, Duration::from_secs(1))
                .is_err()
        );
        let mut portless = NoChannel::new("127.0.0.1", None);
        let e = portless.login(Duration::from_secs(1)).expect_err("no port");
        assert_eq!(e.class(), "unreachable");
        assert!(!e.is_fatal());
    }
}
