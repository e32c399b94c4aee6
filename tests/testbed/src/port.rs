//! Ports handed out without races.
//!
//! A port number picked by binding port 0 and closing the socket again is
//! free only for a moment: a parallel test (or another test binary on the
//! machine) can be handed the same number before the server that was meant
//! to get it binds it. A [`Port`] instead stays bound for as long as the
//! test holds it, by a socket that never listens:
//!
//! - the kernel gave the number to this socket, and hands a bound port to
//!   no one else (neither `bind` to port 0 nor a client's `connect`);
//! - a `bind` without `SO_REUSEADDR` to it fails;
//! - connecting to it is refused while nothing listens: it is a closed
//!   port, for tests that need one;
//! - a server started for the test binds it anyway, because both sockets
//!   set `SO_REUSEADDR` and this one never listens (Linux lets a listener
//!   share the address with bound sockets that do not listen). sshd,
//!   PostgreSQL, QEMU's user network (slirp's host forwarding), Python's
//!   socketserver and Rust's `TcpListener::bind` all set it; a server that
//!   does not fails with EADDRINUSE instead of taking someone else's port.
//!   Two listeners on one port still fail (EADDRINUSE), so a mix-up shows.
//!
//! Servers that can bind port 0 themselves and say which port they got do
//! not need one (vcsim prints its URL).

use rustix::fd::OwnedFd;
use rustix::net::{AddressFamily, SocketType};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::sync::{Arc, Mutex};

/// A TCP port on 127.0.0.1 held for the test (clones share the hold);
/// released when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Port {
    num: u16,
    _hold: Arc<OwnedFd>,
}

impl Port {
    /// A port the kernel picked, held from now on.
    pub fn new() -> Port {
        let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)
            .expect("a TCP socket");
        rustix::net::sockopt::set_socket_reuseaddr(&fd, true).expect("SO_REUSEADDR");
        rustix::net::bind(&fd, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .expect("bind 127.0.0.1:0");
        let addr = rustix::net::getsockname(&fd).expect("getsockname");
        let num = SocketAddrV4::try_from(addr)
            .expect("an IPv4 address")
            .port();
        Port {
            num,
            _hold: Arc::new(fd),
        }
    }

    /// Its number.
    pub fn num(&self) -> u16 {
        self.num
    }

    /// Starts listening on it here (it was closed until now).
    pub fn listen(&self) -> TcpListener {
        TcpListener::bind((Ipv4Addr::LOCALHOST, self.num)).expect("listen on a held port")
    }
}

/// A port that stays closed until this process ends: nothing listens on
/// it and no other socket can take it (a server started for the test still
/// can, as with [`Port`]). For the ports a test only waits on in vain.
pub fn closed() -> u16 {
    static KEPT: Mutex<Vec<Port>> = Mutex::new(Vec::new());
    let port = Port::new();
    let num = port.num();
    KEPT.lock().unwrap_or_else(|p| p.into_inner()).push(port);
    num
}

impl Default for Port {
    fn default() -> Port {
        Port::new()
    }
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.num)
    }
}
