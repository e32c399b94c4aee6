//! Cheap reachability checks: TCP connect, banner line, ICMP through the
//! system `ping`. Each answers at once with what it saw; the step engine
//! decides how often to ask.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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

/// A TCP connect started without blocking; see [`start_connect`].
pub enum Started {
    /// Connected at once.
    Connected(TcpStream),
    /// Refused or unreachable at once (a loopback or LAN target usually
    /// answers before `connect` returns). The socket is closed: Linux lets
    /// a failed socket connect again only after one more failing call
    /// (ECONNABORTED), which costs what a new socket does.
    Failed(std::io::Error),
    /// On its way: poll it (its `as_fd`) for writable, then
    /// [`Pending::finish`].
    Pending(Pending),
}

/// A TCP socket not connected yet.
struct Socket {
    fd: OwnedFd,
}

/// A non-blocking connect in flight; dropping it closes the socket.
pub struct Pending {
    sock: Socket,
}

/// The socket's pending error (SO_ERROR), which reading clears.
fn so_error(fd: &OwnedFd) -> std::io::Result<Option<std::io::Error>> {
    match rustix::net::sockopt::socket_error(fd)? {
        Ok(()) => Ok(None),
        Err(e) => Ok(Some(e.into())),
    }
}

/// The socket, for poll(2) (POLLOUT when the connect has an answer).
impl AsFd for Pending {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.fd.as_fd()
    }
}

impl Pending {
    /// The connect's result once poll(2) said the socket is writable.
    pub fn finish(self) -> std::io::Result<TcpStream> {
        match so_error(&self.sock.fd)? {
            None => Ok(TcpStream::from(self.sock.fd)),
            Some(e) => Err(e),
        }
    }
}

fn new_socket(v6: bool) -> std::io::Result<Socket> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = if v6 {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    Ok(Socket { fd })
}

/// Starts a TCP connect to `addr` without blocking: a `socket` and a
/// `connect` call, no thread. The stream of a finished connect stays
/// non-blocking.
pub fn start_connect(addr: SocketAddr) -> Started {
    let sock = match new_socket(addr.is_ipv6()) {
        Ok(s) => s,
        Err(e) => return Started::Failed(e),
    };
    match rustix::net::connect(&sock.fd, &addr) {
        Ok(()) => return Started::Connected(TcpStream::from(sock.fd)),
        Err(rustix::io::Errno::INPROGRESS) => {}
        Err(e) => return Started::Failed(e.into()),
    }
    // A loopback or LAN refusal has usually arrived already: take it now
    // rather than after another trip through poll(2).
    match so_error(&sock.fd) {
        Ok(Some(e)) => Started::Failed(e),
        _ => Started::Pending(Pending { sock }),
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
        Ok(o) if o.status == 1 => Seen::Down("no echo reply".into()),
        Ok(o) => Seen::Down(format!("ping exited {}: {}", o.status, o.text())),
        Err(e) => Seen::Down(format!("ping: {e} (install iputils-ping)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn port_and_start_connect_see_a_listener() {
        // The kernel completes both handshakes into the listen backlog; the
        // listener lives until both connects are done (no accept needed).
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        assert!(matches!(port(addr, Duration::from_secs(1)), Seen::Up(_)));
        assert!(matches!(
            start_connect(addr),
            Started::Connected(_) | Started::Pending(_)
        ));
        drop(l);
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
