//! Cheap reachability checks: TCP connect, banner line, ICMP through the
//! system `ping`. Each answers at once with what it saw; the step engine
//! decides how often to ask.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::exec::Cmd;

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The condition holds.
    Up(String),
    /// Not yet; the text says what was seen ("connection refused").
    Down(String),
}

/// Resolves `host:port` (the first address).
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

/// Short text for a connect error, stable enough to detect "no change".
pub fn io_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut | WouldBlock => "no answer".into(),
        HostUnreachable => "host unreachable".into(),
        NetworkUnreachable => "network unreachable".into(),
        UnexpectedEof => "closed before answering".into(),
        _ => e.to_string(),
    }
}

/// TCP connect to `addr` within `timeout`.
pub fn port(addr: SocketAddr, timeout: Duration) -> Seen {
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => Seen::Up(format!("{addr} accepts connections")),
        Err(e) => Seen::Down(io_text(&e)),
    }
}

/// TCP connect and read the first line; Up when it matches `re`.
pub fn banner(addr: SocketAddr, re: &regex::Regex, timeout: Duration) -> Seen {
    let s = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => return Seen::Down(io_text(&e)),
    };
    let _ = s.set_read_timeout(Some(timeout));
    let mut line = String::new();
    let mut r = BufReader::new(s).take_line_limit();
    match r.read_line(&mut line) {
        Ok(0) => Seen::Down("closed before sending a banner".into()),
        Ok(_) => {
            let l = line.trim_end().to_string();
            if re.is_match(&l) {
                Seen::Up(format!("banner `{l}`"))
            } else {
                Seen::Down(format!("banner `{l}` does not match /{}/", re.as_str()))
            }
        }
        Err(e) => Seen::Down(format!("no banner: {}", io_text(&e))),
    }
}

trait LineLimit: Sized {
    fn take_line_limit(self) -> std::io::Take<Self>;
}

impl<R: std::io::Read> LineLimit for BufReader<R> {
    /// A banner is one short line; never read a stream without bound.
    fn take_line_limit(self) -> std::io::Take<Self> {
        std::io::Read::take(self, 4096)
    }
}

/// One ICMP echo through the system `ping` (no raw sockets needed here).
pub fn ping(host: &str, timeout: Duration) -> Seen {
    let secs = timeout.as_secs().max(1).to_string();
    let cmd = Cmd::new(
        &["ping", "-n", "-c", "1", "-W", &secs, host],
        timeout + Duration::from_secs(2),
    );
    match cmd.run() {
        Ok(o) if o.success() => Seen::Up(format!("{host} answers ping")),
        Ok(o) if o.code == 1 => Seen::Down("no echo reply".into()),
        Ok(o) => Seen::Down(format!("ping exited {}: {}", o.code, o.text())),
        Err(e) => Seen::Down(format!("ping: {e} (install iputils-ping)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn port_and_banner_see_a_listener() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let t = std::thread::spawn(move || {
            for mut s in l.incoming().take(2).flatten() {
                let _ = s.write_all(b"SSH-2.0-Test\r\n");
            }
        });
        assert!(matches!(port(addr, Duration::from_secs(1)), Seen::Up(_)));
        let re = regex::Regex::new("^SSH-").expect("re");
        assert!(matches!(
            banner(addr, &re, Duration::from_secs(1)),
            Seen::Up(_)
        ));
        let _ = t.join();
    }

    #[test]
    fn closed_port_is_refused() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        assert_eq!(
            port(addr, Duration::from_secs(1)),
            Seen::Down("connection refused".into())
        );
    }
}
