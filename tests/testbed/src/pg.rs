//! A throwaway PostgreSQL cluster for the coordination store's tests and
//! bench: Debian's `postgresql` package (initdb and postgres from
//! /usr/lib/postgresql/VERSION/bin), a data directory in a temp dir,
//! listening on 127.0.0.1 and a private socket directory, with the server's
//! defaults (max_connections = 100). Removed on drop.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, initdb,
//! postgres and psql run as `nobody` through `setpriv` (util-linux), and
//! the temp dir is handed to `nobody`.
//!
//! Two ways to make the store hang instead of fail, as a site sees it: a
//! [`Proxy`] in front of the cluster that stops forwarding (its
//! connections stay open, nothing is answered: a PgBouncer whose server is
//! gone, a hung network path), and [`Pg::pause`], SIGSTOP of the
//! postmaster (new connections wait in its listen queue, unanswered: a
//! paused database).

use crate::port::Port;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

/// The newest installed PostgreSQL's bin directory.
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (Debian package postgresql; .ci/run installs it)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|(_, p)| p)
        .expect("no /usr/lib/postgresql/*/bin/postgres")
}

fn as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A command for a PostgreSQL program, as `nobody` when we are root.
fn pg_command(prog: &Path) -> Command {
    if as_root() {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .arg(prog);
        c.env("HOME", "/tmp");
        c
    } else {
        Command::new(prog)
    }
}

fn give_away(p: &Path) {
    if as_root() {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).expect("chown to nobody");
    }
}

/// Runs a short command to its end with a limit; panics with its output on
/// failure.
fn run_ok(c: &mut Command, what: &str, limit: Duration) -> String {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running throwaway cluster.
pub struct Pg {
    /// Its directory (data, socket, log, certificate).
    pub dir: PathBuf,
    bin: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The port, held while the cluster lives (postgres binds it with
    /// SO_REUSEADDR), so a restart finds it free.
    _held: Port,
    server: Option<Child>,
}

impl Pg {
    /// initdb, start, and create the database `reimage` owned by the role
    /// `reimage` (trust authentication on loopback).
    pub fn start(name: &str) -> Pg {
        Pg::start_with(name, None)
    }

    /// Like [`Pg::start`], but TCP connections need `password`
    /// (scram-sha-256) and TLS is on, with a self-signed certificate for
    /// `localhost` at [`Pg::cert`].
    pub fn start_secure(name: &str, password: &str) -> Pg {
        Pg::start_with(name, Some(password))
    }

    /// The server's certificate (its own CA), for `ca_file`.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    fn start_with(name: &str, password: Option<&str>) -> Pg {
        let dir = std::env::temp_dir().join(format!(
            "reimage-pg-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sock")).expect("pg dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        give_away(&dir);
        give_away(&dir.join("sock"));
        let bin = bin_dir();
        run_ok(
            pg_command(&bin.join("initdb"))
                .arg("-D")
                .arg(dir.join("data"))
                .args([
                    "-U",
                    "reimage",
                    "--auth-local=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ])
                .arg(if password.is_some() {
                    "--auth-host=scram-sha-256"
                } else {
                    "--auth-host=trust"
                }),
            "initdb",
            Duration::from_secs(120),
        );
        let tls = password.is_some();
        if tls {
            run_ok(
                Command::new("openssl")
                    .args([
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    ])
                    .args(["-subj", "/CN=localhost"])
                    .args(["-addext", "subjectAltName=DNS:localhost"])
                    .arg("-keyout")
                    .arg(dir.join("server.key"))
                    .arg("-out")
                    .arg(dir.join("server.crt")),
                "openssl req",
                Duration::from_secs(60),
            );
            std::fs::set_permissions(
                dir.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod key");
            give_away(&dir.join("server.key"));
            give_away(&dir.join("server.crt"));
        }
        let held = Port::new();
        let mut pg = Pg {
            dir,
            bin,
            port: held.num(),
            _held: held,
            server: None,
        };
        pg.run_server(tls);
        run_ok(
            pg_command(&pg.bin.join("createdb"))
                .arg("-h")
                .arg(pg.dir.join("sock"))
                .args(["-p", &pg.port.to_string(), "-U", "reimage"])
                .arg("reimage"),
            "createdb",
            Duration::from_secs(60),
        );
        if let Some(pw) = password {
            pg.psql(&format!("ALTER ROLE reimage PASSWORD '{pw}'"));
        }
        pg
    }

    fn run_server(&mut self, tls: bool) {
        let log = std::fs::File::create(self.dir.join("server.log")).expect("server log");
        let child = pg_command(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-k")
            .arg(self.dir.join("sock"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(if tls {
                vec![
                    "-c".to_string(),
                    "ssl=on".to_string(),
                    "-c".to_string(),
                    format!("ssl_cert_file={}", self.dir.join("server.crt").display()),
                    "-c".to_string(),
                    format!("ssl_key_file={}", self.dir.join("server.key").display()),
                ]
            } else {
                Vec::new()
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.server = Some(child);
        let start = Instant::now();
        loop {
            let ok = pg_command(&self.bin.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(self.dir.join("sock"))
                .args(["-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            if let Some(Ok(Some(st))) = self.server.as_mut().map(|c| c.try_wait()) {
                panic!("postgres exited ({st}): {}", self.server_log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "postgres did not accept connections within 60 s: {}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The URL reimage's `[coordination] url` takes.
    pub fn url(&self) -> String {
        format!("postgresql://reimage@127.0.0.1:{}/reimage", self.port)
    }

    /// Runs SQL with psql; the unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        run_ok(
            pg_command(&self.bin.join("psql"))
                .args(["-X", "-At", "-v", "ON_ERROR_STOP=1"])
                .arg("-h")
                .arg(self.dir.join("sock"))
                .args(["-p", &self.port.to_string()])
                .args(["-U", "reimage", "-d", "reimage", "-c", sql]),
            "psql",
            Duration::from_secs(30),
        )
    }

    /// Runs SQL with psql: Ok(output), or Err(what psql said) when the
    /// server refused it.
    pub fn psql_result(&self, sql: &str) -> Result<String, String> {
        let out = pg_command(&self.bin.join("psql"))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.dir.join("sock"))
            .args(["-p", &self.port.to_string()])
            .args(["-U", "reimage", "-d", "reimage", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = self
            .server
            .as_ref()
            .and_then(|c| rustix::process::Pid::from_raw(c.id() as i32))
            .expect("the server runs");
        rustix::process::kill_process(pid, sig).expect("signal the postmaster");
    }

    /// SIGSTOP of the postmaster: connections are accepted by the kernel
    /// into its listen queue and never answered; sessions that run already
    /// (their backends are other processes) go on.
    pub fn pause(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// SIGCONT of the postmaster: it takes the queued connections.
    pub fn resume(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    /// Stops the server (fast shutdown: sessions are ended) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.server.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                // A paused server would not see the shutdown.
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP forwarder on 127.0.0.1 to a server's port that can be frozen:
/// while frozen it accepts connections but connects nowhere, and stops
/// forwarding on the connections it has; every socket stays open and
/// nothing is answered (what a client sees when a PgBouncer's server is
/// gone or a path hangs). Thawed, it forwards again. A proxy made frozen
/// is a server that accepts and never answers.
pub struct Proxy {
    /// The port it listens on.
    pub port: u16,
    frozen: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

/// How long a forwarding thread waits on one socket before it looks at
/// the other one and at the switches.
const PROXY_LOOK: Duration = Duration::from_millis(2);

impl Proxy {
    /// Forwards to 127.0.0.1:`to`.
    pub fn to(to: u16) -> Proxy {
        Proxy::start(to, false)
    }

    /// Accepts connections and never answers (until thawed).
    pub fn silent(to: u16) -> Proxy {
        Proxy::start(to, true)
    }

    fn start(to: u16, frozen: bool) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        l.set_nonblocking(true).expect("nonblocking listener");
        let port = l.local_addr().expect("proxy address").port();
        let frozen = Arc::new(AtomicBool::new(frozen));
        let done = Arc::new(AtomicBool::new(false));
        let (f, d) = (frozen.clone(), done.clone());
        std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((client, _)) => {
                        let (f, d) = (f.clone(), d.clone());
                        std::thread::spawn(move || forward(client, to, &f, &d));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { port, frozen, done }
    }

    /// Stops forwarding; connections stay open, unanswered.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Forwards again.
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }

    /// The URL reimage's `[coordination] url` takes to reach the cluster
    /// through the proxy.
    pub fn url(&self) -> String {
        format!("postgresql://reimage@127.0.0.1:{}/reimage", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// One connection: connects to the server once not frozen, then copies
/// both ways while not frozen. Ends when either side closes or the proxy
/// is dropped.
fn forward(mut client: TcpStream, to: u16, frozen: &AtomicBool, done: &AtomicBool) {
    let idle = || {
        while frozen.load(Ordering::SeqCst) && !done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        !done.load(Ordering::SeqCst)
    };
    if !idle() {
        return;
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", to)) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if client.set_read_timeout(Some(PROXY_LOOK)).is_err()
        || server.set_read_timeout(Some(PROXY_LOOK)).is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !idle() {
            return;
        }
        if !pump(&mut client, &mut server, &mut buf) || !pump(&mut server, &mut client, &mut buf) {
            return;
        }
    }
}

/// Copies what `from` has within [`PROXY_LOOK`] to `to`; false when
/// either is closed.
fn pump(from: &mut TcpStream, to: &mut TcpStream, buf: &mut [u8]) -> bool {
    match from.read(buf) {
        Ok(0) => false,
        Ok(n) => to.write_all(&buf[..n]).is_ok(),
        Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}
