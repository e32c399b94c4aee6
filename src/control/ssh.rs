//! SSH control channel (ssh2/libssh2): key, agent or password login, a
//! known-hosts policy that fits computers whose host keys change with every
//! load, and commands given as argument vectors, quoted once for the remote
//! POSIX shell by [`shell_quote`].
//!
//! One [`Ssh`] value keeps one SSH session open between calls (connecting
//! costs a key exchange; a wait sequence polls often) and reconnects once
//! when the previous connection turns out to have dropped.
//!
//! # Known-hosts names
//!
//! The entry for a computer is stored and looked up under exactly
//! [`SshConfig::host_alias`]. When that is empty, the name OpenSSH itself
//! uses is taken: `host` for port 22, `[host]:port` otherwise, so `ssh`,
//! `ssh-keyscan` and `ssh-keygen -F/-R` work on the same file. A caller that
//! reaches a computer under changing addresses (DHCP) should pass the
//! computer's name from the config as the alias, so its entry follows it.
//!
//! # Timeouts
//!
//! Every operation gets a deadline from its `timeout`. The TCP connect is
//! bounded by `connect_timeout` (and the deadline); every blocking libssh2
//! call by the session timeout set to what is left of the deadline; the
//! command itself runs in a non-blocking loop that polls the socket in short
//! slices, checks [`crate::signal::check`] and stops at the deadline.

use anyhow::anyhow;
use rustix::event::{PollFd, PollFlags, Timespec};
use ssh2::{CheckResult, ErrorCode, HashType, KnownHostFileKind, Session};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Channel, ChannelError};
use crate::exec::Output;
use crate::names::names;
use crate::signal;

/// What to do with the computer's SSH host key (`host_keys` of an OS
/// profile: the configuration keeps the name, this channel decodes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// The key must already be in the known-hosts file: for standing
    /// machines whose keys never change.
    Strict,
    /// A missing entry is added (trust on first use); a different key is
    /// refused, like OpenSSH's `StrictHostKeyChecking accept-new`.
    AcceptNew,
    /// A freshly loaded computer has new host keys: whatever the file
    /// holds for it is replaced on the first connection this SSH channel
    /// makes; after that the key is pinned, so a different key later in
    /// the same run (say after a reboot step) is refused.
    #[default]
    ReplaceAfterLoad,
}

names!(HostKeyPolicy {
    Strict => "strict",
    AcceptNew => "accept-new",
    ReplaceAfterLoad => "replace-after-load",
});

impl std::str::FromStr for HostKeyPolicy {
    type Err = String;

    /// Parses the config spelling: `strict`, `accept-new`,
    /// `replace-after-load`.
    fn from_str(s: &str) -> Result<HostKeyPolicy, String> {
        HostKeyPolicy::from_name(s).ok_or_else(|| {
            format!(
                "unknown host key policy `{s}`: use {}",
                HostKeyPolicy::choices()
            )
        })
    }
}

/// Where and how to log in.
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// Address or DNS name to connect to.
    pub host: String,
    /// TCP port, usually 22.
    pub port: u16,
    /// Remote user name.
    pub user: String,
    /// Private key file (OpenSSH or PEM, unencrypted); `None` tries the
    /// keys of the running ssh-agent (`SSH_AUTH_SOCK`).
    pub key_file: Option<PathBuf>,
    /// File whose first line is the password, tried after the key; the
    /// password never appears in argv, messages or logs.
    pub password_file: Option<PathBuf>,
    /// OpenSSH-format known-hosts file; created (with its directory) when a
    /// policy needs to write it.
    pub known_hosts: PathBuf,
    /// What to do with the host key.
    pub host_keys: HostKeyPolicy,
    /// The name the known-hosts entry is stored under; empty means the
    /// OpenSSH name for host and port (see [`openssh_host_name`]).
    pub host_alias: String,
    /// Bound on one TCP connect attempt.
    pub connect_timeout: Duration,
}

impl SshConfig {
    /// The name this computer's known-hosts entry is stored and looked up
    /// under: `host_alias`, or the OpenSSH name when that is empty.
    pub fn known_hosts_name(&self) -> String {
        if self.host_alias.is_empty() {
            openssh_host_name(&self.host, self.port)
        } else {
            self.host_alias.clone()
        }
    }
}

/// The name OpenSSH stores a host under in known_hosts: `host` for port 22,
/// `[host]:port` for any other port.
pub fn openssh_host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// An SSH connection to one computer, opened on first use and kept open.
pub struct Ssh {
    cfg: SshConfig,
    conn: Option<Conn>,
    /// The host key accepted by the first connection (ReplaceAfterLoad).
    pinned: Option<Vec<u8>>,
    /// SHA256 fingerprint of the last host key seen.
    fingerprint: Option<String>,
    /// Successful connections made, for tests and events.
    connects: u32,
}

struct Conn {
    sess: Session,
    /// A second handle (dup) on the socket inside `sess`, for poll(2) and
    /// shutdown(2).
    sock: TcpStream,
}

impl Conn {
    /// Drops a connection that failed or timed out without waiting on the
    /// peer: once the socket is shut down, libssh2 frees channels that are
    /// still open instead of waiting for their remote close.
    fn abandon(self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        self.sess.set_blocking(true);
        self.sess.set_timeout(200);
    }
}

/// Why running a command failed, and whether it had started: a command that
/// never started may be retried on a new connection.
struct ExecFail {
    started: bool,
    err: ChannelError,
}

impl Ssh {
    /// A channel for `cfg`; nothing is connected until the first call.
    pub fn new(cfg: SshConfig) -> Ssh {
        Ssh {
            cfg,
            conn: None,
            pinned: None,
            fingerprint: None,
            connects: 0,
        }
    }

    /// The SHA256 fingerprint (`SHA256:...`, as `ssh-keygen -l` prints it)
    /// of the host key the last connection presented, for events and for
    /// users comparing keys.
    pub fn host_key_fingerprint(&self) -> Option<String> {
        self.fingerprint.clone()
    }

    fn abandon(&mut self) {
        if let Some(c) = self.conn.take() {
            c.abandon();
        }
    }

    fn target(&self) -> String {
        format!("{}@{}:{}", self.cfg.user, self.cfg.host, self.cfg.port)
    }

    /// Connects, checks the host key and authenticates.
    fn connect(&mut self, deadline: Instant) -> Result<(), ChannelError> {
        self.abandon();
        let target = self.target();
        let addrs: Vec<SocketAddr> = (self.cfg.host.as_str(), self.cfg.port)
            .to_socket_addrs()
            .map_err(|e| {
                ChannelError::Unreachable(anyhow!("cannot resolve {}: {e}", self.cfg.host))
            })?
            .collect();
        let mut last = anyhow!("{} resolves to no address", self.cfg.host);
        let mut stream = None;
        for addr in addrs {
            signal::check().map_err(interrupted)?;
            let left = remaining(deadline).ok_or_else(|| {
                ChannelError::Unreachable(anyhow!("connecting to {target}: timed out"))
            })?;
            let t = left
                .min(self.cfg.connect_timeout)
                .max(Duration::from_millis(1));
            match TcpStream::connect_timeout(&addr, t) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = anyhow!("connecting to {target} ({addr}): {e}"),
            }
        }
        let stream = stream.ok_or(ChannelError::Unreachable(last))?;
        let left = remaining(deadline).unwrap_or(Duration::from_millis(1));
        // Belt and braces: libssh2 switches the socket to non-blocking and
        // waits itself, bounded by the session timeout set below.
        let _ = stream.set_read_timeout(Some(left));
        let _ = stream.set_write_timeout(Some(left));
        let _ = stream.set_nodelay(true);
        let sock = stream.try_clone().map_err(|e| {
            ChannelError::Unreachable(anyhow!("duplicating the socket to {target}: {e}"))
        })?;

        let mut sess = Session::new().map_err(|e| {
            ChannelError::Protocol(anyhow!("cannot start an SSH session: {}", e.message()))
        })?;
        sess.set_tcp_stream(stream);
        sess.set_blocking(true);
        set_session_timeout(&sess, deadline);
        sess.handshake().map_err(|e| {
            let msg = anyhow!("SSH handshake with {target}: {}", e.message());
            match code(&e) {
                // Answered, but no common algorithms or garbage: not SSH as
                // we speak it.
                -5 | -14 | -33 | -51 => ChannelError::Protocol(msg),
                // EOF, reset, banner timeout: sshd still starting or going.
                _ => ChannelError::Unreachable(msg),
            }
        })?;

        self.check_host_key(&sess)?;
        self.authenticate(&sess, deadline)?;
        self.conn = Some(Conn { sess, sock });
        self.connects += 1;
        Ok(())
    }

    /// Applies the host-key policy to the key `sess` presents.
    fn check_host_key(&mut self, sess: &Session) -> Result<(), ChannelError> {
        let name = self.cfg.known_hosts_name();
        let file = self.cfg.known_hosts.clone();
        let (key, key_type) = sess
            .host_key()
            .map(|(k, t)| (k.to_vec(), t))
            .ok_or_else(|| ChannelError::Protocol(anyhow!("{name} presented no host key")))?;
        let fp = sess
            .host_key_hash(HashType::Sha256)
            .map(|h| {
                format!(
                    "SHA256:{}",
                    crate::encoding::base64_encode(h).trim_end_matches('=')
                )
            })
            .unwrap_or_else(|| "SHA256:?".into());
        self.fingerprint = Some(fp.clone());

        if let (HostKeyPolicy::ReplaceAfterLoad, Some(pinned)) = (self.cfg.host_keys, &self.pinned)
        {
            if *pinned == key {
                return Ok(());
            }
            return Err(ChannelError::HostKey(anyhow!(
                "the host key of {name} changed during this run (now {fp}); the key \
                 accepted after the load no longer matches, so this may not be the \
                 computer that was loaded: check it, then run reimage again"
            )));
        }

        let kh = KnownHostsFile::load(sess, &file, &name, &key)?;
        match (self.cfg.host_keys, kh.verdict()) {
            (HostKeyPolicy::Strict | HostKeyPolicy::AcceptNew, CheckResult::Match) => Ok(()),
            (HostKeyPolicy::Strict, CheckResult::NotFound) => Err(ChannelError::HostKey(anyhow!(
                "{name} is not in {} and the host key policy is strict (presented \
                 {fp}): add it after checking that fingerprint, e.g. `ssh-keyscan -p {} {} \
                 >> {}` (the entry must be named `{name}`), or use host_keys = \
                 \"accept-new\"",
                file.display(),
                self.cfg.port,
                self.cfg.host,
                file.display()
            ))),
            (HostKeyPolicy::AcceptNew, CheckResult::NotFound) => {
                kh.save_with(sess, &name, &key, key_type)
            }
            (HostKeyPolicy::Strict | HostKeyPolicy::AcceptNew, _) => {
                Err(ChannelError::HostKey(anyhow!(
                    "the host key of {name} does not match its entry in {} (presented \
                     {fp}): if the computer was reinstalled, remove the old entry with \
                     `ssh-keygen -R '{name}' -f {}` or use host_keys = \
                     \"replace-after-load\"; otherwise someone may be in the middle",
                    file.display(),
                    file.display()
                )))
            }
            (HostKeyPolicy::ReplaceAfterLoad, verdict) => {
                if !(matches!(verdict, CheckResult::Match) && kh.ours == 1) {
                    kh.save_with(sess, &name, &key, key_type)?;
                }
                self.pinned = Some(key);
                Ok(())
            }
        }
    }

    /// Key file, then password file; the agent when neither is set.
    fn authenticate(&self, sess: &Session, deadline: Instant) -> Result<(), ChannelError> {
        let user = &self.cfg.user;
        let target = self.target();
        let mut tried: Vec<String> = Vec::new();
        let dropped = |e: &ssh2::Error| -> Option<ChannelError> {
            is_connection_error(e).then(|| {
                ChannelError::Unreachable(anyhow!(
                    "connection to {target} dropped during login: {}",
                    e.message()
                ))
            })
        };
        if let Some(key) = &self.cfg.key_file {
            set_session_timeout(sess, deadline);
            match sess.userauth_pubkey_file(user, None, key, None) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let Some(d) = dropped(&e) {
                        return Err(d);
                    }
                    tried.push(format!("key {} ({})", key.display(), e.message()));
                }
            }
        }
        if let Some(pwfile) = &self.cfg.password_file {
            let text = std::fs::read_to_string(pwfile).map_err(|e| {
                ChannelError::Auth(anyhow!(
                    "cannot read password file {}: {e}",
                    pwfile.display()
                ))
            })?;
            let password = text.lines().next().unwrap_or("");
            set_session_timeout(sess, deadline);
            match sess.userauth_password(user, password) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let Some(d) = dropped(&e) {
                        return Err(d);
                    }
                    // libssh2's message is generic; never echo anything
                    // that could carry the password.
                    tried.push(format!("password from {}", pwfile.display()));
                }
            }
        }
        if self.cfg.key_file.is_none() && self.cfg.password_file.is_none() {
            set_session_timeout(sess, deadline);
            match sess.userauth_agent(user) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let Some(d) = dropped(&e) {
                        return Err(d);
                    }
                    tried.push(format!("the keys in ssh-agent ({})", e.message()));
                }
            }
        }
        if sess.authenticated() {
            return Ok(());
        }
        Err(ChannelError::Auth(anyhow!(
            "{target} did not accept user {user} with {}: check that the public key is in \
             ~{user}/.ssh/authorized_keys on the computer (or in the image) and that the \
             configured key file or password is the right one",
            tried.join(", then ")
        )))
    }

    /// Runs `argv` with `stdin`, connecting first if needed and once more
    /// if the kept connection turns out to be dead.
    fn run_with(
        &mut self,
        argv: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, ChannelError> {
        if argv.is_empty() {
            return Err(ChannelError::Protocol(anyhow!("empty command")));
        }
        let deadline = Instant::now() + timeout;
        let cmd = shell_quote(argv);
        let reused = self.conn.is_some();
        if !reused {
            self.connect(deadline)?;
        }
        let first = self.exec(&cmd, stdin, deadline);
        let result = match first {
            Err(ExecFail {
                started: false,
                err,
            }) if reused && !is_timeout(&err) => {
                // The kept connection went away (sshd restarted, computer
                // rebooted, NAT forgot us): connect again, once.
                self.connect(deadline)?;
                self.exec(&cmd, stdin, deadline)
            }
            r => r,
        };
        result.map_err(|f| {
            self.abandon();
            f.err
        })
    }

    /// Opens a channel, execs `cmd`, feeds `stdin`, and collects both output
    /// streams and the exit status.
    fn exec(
        &mut self,
        cmd: &str,
        stdin: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Output, ExecFail> {
        let target = self.target();
        let conn = self.conn.as_ref().ok_or_else(|| ExecFail {
            started: false,
            err: ChannelError::Unreachable(anyhow!("not connected to {target}")),
        })?;
        let sess = &conn.sess;
        let not_started = |e: ssh2::Error| ExecFail {
            started: false,
            err: classify(&e, &format!("starting a command on {target}")),
        };
        sess.set_blocking(true);
        set_session_timeout(sess, deadline);
        let mut ch = sess.channel_session().map_err(not_started)?;
        ch.exec(cmd).map_err(not_started)?;
        sess.set_blocking(false);
        let r = pump(&mut ch, sess, &conn.sock, stdin, deadline, &target, cmd);
        if r.is_err() {
            // Freed while non-blocking: libssh2 would otherwise wait for the
            // remote close of a channel whose command is still running. The
            // caller drops the whole session after an error anyway.
            drop(ch);
        }
        sess.set_blocking(true);
        r.map_err(|err| ExecFail { started: true, err })
    }
}

/// Moves data both ways on a started channel until the remote side closes
/// it, the deadline passes or a signal arrives. Non-blocking throughout, so
/// a command that fills stderr while we wait on stdout cannot stall us.
fn pump(
    ch: &mut ssh2::Channel,
    sess: &Session,
    sock: &TcpStream,
    stdin: Option<&[u8]>,
    deadline: Instant,
    target: &str,
    cmd: &str,
) -> Result<Output, ChannelError> {
    let started = Instant::now();
    let mut p = Pump {
        ch,
        sess,
        sock,
        deadline,
        target,
        cmd,
    };
    let (out, err) = p.transfer(stdin.unwrap_or(&[]))?;
    // Output is complete; the exit status arrives with the close.
    p.wait_close()?;
    Ok(Output {
        status: p.status(),
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        elapsed: started.elapsed(),
    })
}

/// One command's traffic on a started, non-blocking channel: see [`pump`].
struct Pump<'a> {
    ch: &'a mut ssh2::Channel,
    sess: &'a Session,
    sock: &'a TcpStream,
    deadline: Instant,
    target: &'a str,
    cmd: &'a str,
}

impl Pump<'_> {
    /// The connection failed under the command.
    fn fail(&self, e: std::io::Error) -> ChannelError {
        ChannelError::Unreachable(anyhow!(
            "connection to {} failed while running `{}`: {e}",
            self.target,
            self.cmd
        ))
    }

    /// Waits for the socket (see [`wait_socket`]).
    fn wait(&self) -> Result<(), ChannelError> {
        wait_socket(self.sess, self.sock, self.deadline, self.target, self.cmd)
    }

    /// Writes `data` as stdin, sends EOF after it, and reads stdout and
    /// stderr until the remote side sends EOF.
    fn transfer(&mut self, data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ChannelError> {
        let mut written = 0;
        let mut eof_sent = false;
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            signal::check().map_err(interrupted)?;
            let n = self.write(&data[written..])?;
            written += n;
            let mut progressed = n > 0;
            if !eof_sent && written == data.len() {
                eof_sent = self.send_eof()?;
            }
            progressed |= self.read(0, &mut out, &mut buf)?;
            progressed |= self.read(1, &mut err, &mut buf)?;
            if self.ch.eof() {
                return Ok((out, err));
            }
            if !progressed {
                self.wait()?;
            }
        }
    }

    /// Writes what the channel takes of `data` now; the bytes written.
    fn write(&mut self, data: &[u8]) -> Result<usize, ChannelError> {
        let mut written = 0;
        while written < data.len() {
            match self.ch.write(&data[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(self.fail(e)),
            }
        }
        Ok(written)
    }

    /// Sends EOF on stdin; false when libssh2 would block (try again).
    fn send_eof(&mut self) -> Result<bool, ChannelError> {
        match self.ch.send_eof() {
            Ok(()) => Ok(true),
            Err(e) if code(&e) == -37 => Ok(false),
            Err(e) => Err(self.fail(e.into())),
        }
    }

    /// Reads what stream `id` (0 stdout, 1 stderr) has now into `sink`;
    /// true when there was something.
    fn read(&mut self, id: i32, sink: &mut Vec<u8>, buf: &mut [u8]) -> Result<bool, ChannelError> {
        let mut s = self.ch.stream(id);
        let mut progressed = false;
        loop {
            match s.read(buf) {
                Ok(0) => return Ok(progressed),
                Ok(n) => {
                    sink.extend_from_slice(&buf[..n]);
                    progressed = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(progressed),
                Err(e) => {
                    drop(s);
                    return Err(self.fail(e));
                }
            }
        }
    }

    /// Waits for the remote close, which brings the exit status.
    fn wait_close(&mut self) -> Result<(), ChannelError> {
        loop {
            match self.ch.wait_close() {
                Ok(()) => return Ok(()),
                Err(e) if code(&e) == -37 => {
                    signal::check().map_err(interrupted)?;
                    self.wait()?;
                }
                Err(e) => return Err(self.fail(e.into())),
            }
        }
    }

    /// The exit status; 128 + N for a command killed by signal N.
    fn status(&self) -> i32 {
        match self.ch.exit_signal().ok().and_then(|s| s.exit_signal) {
            Some(sig) => 128 + signal_number(&sig),
            None => self.ch.exit_status().unwrap_or(-1),
        }
    }
}

/// Waits until the socket is ready the way libssh2 needs, at most 100 ms
/// (so signals are noticed), failing with `Timeout` at the deadline.
fn wait_socket(
    sess: &Session,
    sock: &TcpStream,
    deadline: Instant,
    target: &str,
    cmd: &str,
) -> Result<(), ChannelError> {
    let Some(left) = remaining(deadline) else {
        return Err(ChannelError::Timeout(anyhow!(
            "`{cmd}` on {target} timed out"
        )));
    };
    let events = match sess.block_directions() {
        ssh2::BlockDirections::Outbound => PollFlags::OUT,
        ssh2::BlockDirections::Both => PollFlags::IN | PollFlags::OUT,
        _ => PollFlags::IN,
    };
    let wait = left
        .min(Duration::from_millis(100))
        .max(Duration::from_millis(1));
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: wait.subsec_nanos().into(),
    };
    // An error (EINTR) just loops again.
    let _ = rustix::event::poll(&mut [PollFd::new(sock, events)], Some(&timeout));
    Ok(())
}

impl Channel for Ssh {
    fn identity(&self) -> Option<String> {
        self.host_key_fingerprint().map(|f| format!("host key {f}"))
    }

    fn login(&mut self, timeout: Duration) -> Result<(), ChannelError> {
        let out = self.run_with(&["true".to_string()], None, timeout)?;
        if out.status != 0 {
            return Err(ChannelError::Protocol(anyhow!(
                "logged in to {}, but `true` exited {}: {}",
                self.target(),
                out.status,
                out.stderr.trim()
            )));
        }
        Ok(())
    }

    fn run(&mut self, argv: &[String], timeout: Duration) -> Result<Output, ChannelError> {
        self.run_with(argv, None, timeout)
    }

    fn upload(
        &mut self,
        data: &[u8],
        path: &str,
        mode: i32,
        timeout: Duration,
    ) -> Result<(), ChannelError> {
        if !(0..=0o7777).contains(&mode) {
            return Err(ChannelError::Protocol(anyhow!(
                "file mode {mode:o} for {path} is not a Unix permission mode"
            )));
        }
        // Plain sh + cat (no sftp-server on dropbear/busybox guests); the
        // file appears under its name only when complete.
        let script = format!(
            "umask 077; t=\"$1.reimage-tmp\"; cat > \"$t\" && chmod {mode:o} \"$t\" && \
             mv -f \"$t\" \"$1\" || {{ rm -f \"$t\"; exit 1; }}"
        );
        let argv: Vec<String> = ["sh", "-c", &script, "sh", path]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = self.run_with(&argv, Some(data), timeout)?;
        if out.status != 0 {
            return Err(ChannelError::Protocol(anyhow!(
                "writing {path} on {} failed (exit {}): {}",
                self.target(),
                out.status,
                out.stderr.trim()
            )));
        }
        Ok(())
    }

    fn disconnect(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.sess.set_blocking(true);
            conn.sess.set_timeout(1000);
            let _ = conn.sess.disconnect(None, "reimage done", None);
        }
    }
}

/// The known-hosts file as lines, with the verdict for one host and key.
struct KnownHostsFile {
    path: PathBuf,
    /// Lines that are not about this host, kept verbatim (comments, other
    /// hosts, lines libssh2 cannot parse such as `@cert-authority`).
    others: Vec<String>,
    /// Entries for this host: how many, and whether one matches.
    ours: usize,
    matched: bool,
}

impl KnownHostsFile {
    /// Reads `path` (missing is empty) and sorts each entry by libssh2's
    /// own matching (plain names, patterns and hashed names alike).
    fn load(
        sess: &Session,
        path: &Path,
        name: &str,
        key: &[u8],
    ) -> Result<KnownHostsFile, ChannelError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(ChannelError::HostKey(anyhow!(
                    "cannot read known-hosts file {}: {e}",
                    path.display()
                )));
            }
        };
        let mut f = KnownHostsFile {
            path: path.to_path_buf(),
            others: Vec::new(),
            ours: 0,
            matched: false,
        };
        for line in text.lines() {
            let t = line.trim();
            let verdict = if t.is_empty() || t.starts_with('#') {
                CheckResult::NotFound
            } else {
                let mut one = sess.known_hosts().map_err(|e| {
                    ChannelError::Protocol(anyhow!("libssh2 known-hosts: {}", e.message()))
                })?;
                match one.read_str(t, KnownHostFileKind::OpenSSH) {
                    Ok(()) => one.check(name, key),
                    Err(_) => CheckResult::NotFound,
                }
            };
            match verdict {
                CheckResult::Match => {
                    f.ours += 1;
                    f.matched = true;
                }
                CheckResult::Mismatch => f.ours += 1,
                _ => f.others.push(line.to_string()),
            }
        }
        Ok(f)
    }

    /// Match if any entry for the host has this key, Mismatch if entries
    /// exist but none has it, NotFound if there are none.
    fn verdict(&self) -> CheckResult {
        if self.matched {
            CheckResult::Match
        } else if self.ours > 0 {
            CheckResult::Mismatch
        } else {
            CheckResult::NotFound
        }
    }

    /// Writes the other lines plus one entry `name key`, atomically.
    fn save_with(
        &self,
        sess: &Session,
        name: &str,
        key: &[u8],
        key_type: ssh2::HostKeyType,
    ) -> Result<(), ChannelError> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            ChannelError::HostKey(anyhow!(
                "cannot record the host key of {name} in {}: {what}: {e}",
                self.path.display()
            ))
        };
        let mut kh = sess.known_hosts().map_err(|e| err("libssh2", &e))?;
        kh.add(name, key, "", key_type.into())
            .map_err(|e| err("adding the entry", &e))?;
        let host = kh
            .hosts()
            .map_err(|e| err("listing entries", &e))?
            .into_iter()
            .next()
            .ok_or_else(|| err("adding the entry", &"libssh2 kept no entry"))?;
        let line = kh
            .write_string(&host, KnownHostFileKind::OpenSSH)
            .map_err(|e| err("formatting the entry", &e))?;
        let mut text = String::new();
        for l in &self.others {
            text.push_str(l);
            text.push('\n');
        }
        text.push_str(line.trim_end());
        text.push('\n');
        crate::state::write_atomic(&self.path, text.as_bytes())
            .map_err(|e| err("writing", &format!("{e:#}")))
    }
}

/// Quotes an argument vector into one line for a POSIX remote shell (sh,
/// dash, bash, busybox ash): each word comes out as exactly one argument,
/// with no expansion. Words made only of characters that are never special
/// stay bare for readable logs; everything else is single-quoted, with an
/// embedded `'` written as `'\''`.
pub fn shell_quote(argv: &[String]) -> String {
    argv.iter()
        .map(|w| quote_word(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote_word(w: &str) -> String {
    // `=` is left out so a first word is never taken as an assignment;
    // reserved words would be parsed as syntax in command position.
    const RESERVED: &[&str] = &[
        "case", "do", "done", "elif", "else", "esac", "fi", "for", "function", "if", "in",
        "select", "then", "time", "until", "while",
    ];
    let safe = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+:,./-".contains(&b))
        && !RESERVED.contains(&w);
    if safe {
        return w.to_string();
    }
    let mut q = String::with_capacity(w.len() + 2);
    q.push('\'');
    for c in w.chars() {
        if c == '\'' {
            q.push_str("'\\''");
        } else {
            q.push(c);
        }
    }
    q.push('\'');
    q
}

fn code(e: &ssh2::Error) -> i32 {
    match e.code() {
        ErrorCode::Session(c) => c,
        ErrorCode::SFTP(c) => c,
    }
}

/// Socket-level failures, timeouts and disconnects: the connection is gone.
fn is_connection_error(e: &ssh2::Error) -> bool {
    matches!(
        code(e),
        -1 | -2 | -3 | -7 | -9 | -13 | -26 | -30 | -43 | -45
    )
}

fn classify(e: &ssh2::Error, doing: &str) -> ChannelError {
    let msg = anyhow!("{doing}: {}", e.message());
    match code(e) {
        -9 | -30 => ChannelError::Timeout(msg),
        _ if is_connection_error(e) => ChannelError::Unreachable(msg),
        _ => ChannelError::Protocol(msg),
    }
}

fn is_timeout(e: &ChannelError) -> bool {
    matches!(e, ChannelError::Timeout(_))
}

/// A signal arrived: reported as a timeout (retryable, never fatal) whose
/// inner error downcasts to [`signal::Interrupted`].
fn interrupted(i: signal::Interrupted) -> ChannelError {
    ChannelError::Timeout(anyhow::Error::new(i))
}

fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

/// Session timeout = what is left of the deadline (libssh2 reads 0 as
/// "wait forever", so never less than 1 ms).
fn set_session_timeout(sess: &Session, deadline: Instant) {
    let ms = remaining(deadline)
        .map(|d| d.as_millis())
        .unwrap_or(1)
        .clamp(1, u32::MAX as u128);
    sess.set_timeout(ms as u32);
}

/// Signal number for an SSH exit-signal name ("TERM", "KILL", ...).
fn signal_number(name: &str) -> i32 {
    match name.trim_start_matches("SIG") {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 127,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Cmd;
    use testbed::port::Port;
    use testbed::sshd::{Fixture, Sshd, pub_b64};

    const T: Duration = Duration::from_secs(10);

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    fn sh(script: &str) -> Vec<String> {
        argv(&["sh", "-c", script])
    }

    fn config(fx: &Fixture, port: u16, policy: HostKeyPolicy) -> SshConfig {
        SshConfig {
            host: "127.0.0.1".into(),
            port,
            user: fx.user.clone(),
            key_file: Some(fx.client_key.clone()),
            password_file: None,
            known_hosts: fx.dir.join("state/known_hosts"),
            host_keys: policy,
            host_alias: String::new(),
            connect_timeout: Duration::from_secs(2),
        }
    }

    fn known_hosts_line(name: &str, key: &Path) -> String {
        format!("{name} ssh-ed25519 {}\n", pub_b64(key))
    }

    // ---- shell_quote ----

    #[test]
    fn shell_quote_leaves_safe_words_bare_and_quotes_the_rest() {
        assert_eq!(
            shell_quote(&argv(&["ls", "-la", "/tmp/x.y"])),
            "ls -la /tmp/x.y"
        );
        assert_eq!(shell_quote(&argv(&["echo", ""])), "echo ''");
        assert_eq!(shell_quote(&argv(&["echo", "a b"])), "echo 'a b'");
        assert_eq!(shell_quote(&argv(&["echo", "it's"])), r"echo 'it'\''s'");
        assert_eq!(shell_quote(&argv(&["A=1"])), "'A=1'");
        assert_eq!(shell_quote(&argv(&["if"])), "'if'");
        assert_eq!(shell_quote(&argv(&["~root"])), "'~root'");
    }

    #[test]
    fn shell_quote_round_trips_through_a_real_sh() {
        let nasty = argv(&[
            "",
            " ",
            "two words",
            "it's",
            "'",
            "''",
            "\"double\"",
            "$(echo pwned)",
            "`echo pwned`",
            "$HOME",
            "${IFS}",
            "a\nb\n",
            "\t tab",
            "back\\slash\\",
            "*",
            "~",
            "-n",
            "!x",
            "a;b|c&d>e<f",
            "é ünï",
            "A=1",
            "if",
        ]);
        let mut words = argv(&["printf", "%s\\0"]);
        words.extend(nasty.iter().cloned());
        let line = shell_quote(&words);
        let out = Cmd::new(&["sh", "-c", &line], T).run().expect("sh runs");
        assert_eq!(out.status, 0, "{line}: {}", out.stderr);
        let got: Vec<String> = out
            .stdout
            .split('\0')
            .map(|s| s.to_string())
            .collect::<Vec<_>>();
        let got = &got[..got.len() - 1];
        assert_eq!(got, &nasty[..], "line was: {line}");
    }

    #[test]
    fn known_hosts_name_follows_openssh_unless_aliased() {
        assert_eq!(openssh_host_name("pc7", 22), "pc7");
        assert_eq!(openssh_host_name("10.0.0.7", 2222), "[10.0.0.7]:2222");
        let fx_cfg = SshConfig {
            host: "10.0.0.7".into(),
            port: 22,
            user: "root".into(),
            key_file: None,
            password_file: None,
            known_hosts: PathBuf::from("/nonexistent"),
            host_keys: HostKeyPolicy::default(),
            host_alias: "lab-pc-07".into(),
            connect_timeout: Duration::from_secs(1),
        };
        assert_eq!(fx_cfg.known_hosts_name(), "lab-pc-07");
        assert_eq!(HostKeyPolicy::default(), HostKeyPolicy::ReplaceAfterLoad);
        assert_eq!("accept-new".parse(), Ok(HostKeyPolicy::AcceptNew));
        assert!("yes".parse::<HostKeyPolicy>().is_err());
    }

    // ---- against a real sshd ----

    #[test]
    fn login_and_run_return_stdout_stderr_and_status() {
        let fx = Fixture::new("run");
        let sshd = fx.start(&fx.host_key_a);
        let mut ssh = Ssh::new(config(&fx, sshd.port, HostKeyPolicy::ReplaceAfterLoad));
        ssh.login(T).expect("login");
        let out = ssh
            .run(&sh("echo hi; echo err >&2; exit 3"), T)
            .expect("run");
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status, 3);
        let fp = ssh.host_key_fingerprint().expect("fingerprint");
        let keygen = Cmd::new(
            &["ssh-keygen", "-l", "-f", &fx.host_key_a.to_string_lossy()],
            T,
        )
        .run_ok()
        .expect("ssh-keygen -l");
        assert!(keygen.stdout.contains(&fp), "{fp} not in {}", keygen.stdout);
        assert_eq!(ssh.connects, 1);
    }

    #[test]
    fn arguments_arrive_as_given() {
        let fx = Fixture::new("args");
        let sshd = fx.start(&fx.host_key_a);
        let mut ssh = Ssh::new(config(&fx, sshd.port, HostKeyPolicy::ReplaceAfterLoad));
        let words = argv(&["printf", "[%s]", "a b", "", "it's", "$(id)", "x\ny"]);
        let out = ssh.run(&words, T).expect("run");
        assert_eq!(out.stdout, "[a b][][it's][$(id)][x\ny]");
    }

    #[test]
    fn large_stderr_before_stdout_does_not_deadlock() {
        let fx = Fixture::new("big");
        let sshd = fx.start(&fx.host_key_a);
        let mut ssh = Ssh::new(config(&fx, sshd.port, HostKeyPolicy::ReplaceAfterLoad));
        let out = ssh
            .run(&sh("head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 3000000 /dev/zero | tr '\\0' o"), T)
            .expect("run");
        assert_eq!(out.status, 0);
        assert_eq!(out.stderr.len(), 3_000_000);
        assert_eq!(out.stdout.len(), 3_000_000);
        assert!(out.stdout.bytes().all(|b| b == b'o'));
    }

    #[test]
    fn command_past_its_timeout_is_timeout_and_the_next_run_works() {
        let fx = Fixture::new("timeout");
        let sshd = fx.start(&fx.host_key_a);
        let mut ssh = Ssh::new(config(&fx, sshd.port, HostKeyPolicy::ReplaceAfterLoad));
        ssh.login(T).expect("login");
        let t = Instant::now();
        let r = ssh.run(&argv(&["sleep", "10"]), Duration::from_millis(700));
        let took = t.elapsed();
        assert!(
            matches!(r, Err(ChannelError::Timeout(_))),
            "{:?}",
            r.map(|o| o.status)
        );
        println!("700ms timeout returned after {took:?}");
        // Well before the 10 s the command runs, with room for load.
        assert!(took < Duration::from_secs(5), "timeout took {took:?}");
        let out = ssh
            .run(&argv(&["echo", "again"]), T)
            .expect("run after timeout");
        assert_eq!(out.stdout, "again\n");
    }

    #[test]
    fn repeated_runs_share_one_session_until_output_matches() {
        let fx = Fixture::new("poll");
        let sshd = fx.start(&fx.host_key_a);
        let mut ssh = Ssh::new(config(&fx, sshd.port, HostKeyPolicy::ReplaceAfterLoad));
        let flag = fx.dir.join("ready-flag");
        let flag2 = flag.clone();
        // The flag appears once a run has seen it missing, however long
        // the first run (with its login) took.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = done.clone();
        let writer = std::thread::spawn(move || {
            let t = Instant::now();
            while seen.load(std::sync::atomic::Ordering::SeqCst) == 0
                && t.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::fs::write(flag2, "ready\n").expect("write flag");
        });
        let path = flag.to_string_lossy().into_owned();
        let t = Instant::now();
        let mut runs = 0;
        loop {
            let out = ssh
                .run(
                    &sh(&format!("cat {} 2>/dev/null || true", quote_word(&path))),
                    T,
                )
                .expect("run");
            runs += 1;
            if out.stdout.trim() == "ready" {
                break;
            }
            done.store(runs, std::sync::atomic::Ordering::SeqCst);
            assert!(t.elapsed() < Duration::from_secs(60), "flag never seen");
            std::thread::sleep(Duration::from_millis(50));
        }
        writer.join().expect("writer");
        println!("{runs} runs on one session over {:?}", t.elapsed());
        assert!(runs >= 2, "only {runs} runs");
        assert_eq!(ssh.connects, 1, "runs must reuse the session");
    }

    #[test]
    fn dropped_connection_is_recovered_on_the_next_run() {
        let fx = Fixture::new("drop");
        let mut sshd = fx.start(&fx.host_key_a);
        let mut ssh = Ssh::new(config(&fx, sshd.port, HostKeyPolicy::ReplaceAfterLoad));
        ssh.login(T).expect("first login");
        sshd.kill();
        let _sshd2: Sshd = fx
            .start_on(&fx.host_key_a, &sshd.held)
            .expect("restart on the same port");
        let out = ssh
            .run(&argv(&["echo", "back"]), T)
            .expect("run after the drop");
        assert_eq!(out.stdout, "back\n");
        assert_eq!(ssh.connects, 2, "must have reconnected once");
    }

    #[test]
    fn wrong_key_is_a_fatal_auth_error_naming_user_and_key() {
        let fx = Fixture::new("auth");
        let sshd = fx.start(&fx.host_key_a);
        let mut cfg = config(&fx, sshd.port, HostKeyPolicy::ReplaceAfterLoad);
        cfg.key_file = Some(fx.wrong_client_key.clone());
        let pw = fx.dir.join("password");
        std::fs::write(&pw, "hunter2-not-the-password\n").expect("write password file");
        cfg.password_file = Some(pw);
        let mut ssh = Ssh::new(cfg);
        let e = ssh.login(T).expect_err("must be refused");
        let msg = e.to_string();
        assert!(matches!(e, ChannelError::Auth(_)), "{}: {msg}", e.class());
        assert!(e.is_fatal());
        assert!(msg.contains(&fx.user), "{msg}");
        assert!(msg.contains("wrong_client"), "{msg}");
        assert!(msg.contains("password from"), "{msg}");
        assert!(!msg.contains("hunter2"), "password leaked: {msg}");
    }

    #[test]
    fn strict_refuses_a_changed_or_missing_key() {
        let fx = Fixture::new("strict");
        let sshd = fx.start(&fx.host_key_b);
        let cfg = config(&fx, sshd.port, HostKeyPolicy::Strict);
        let name = cfg.known_hosts_name();
        // Missing entry.
        let e = Ssh::new(cfg.clone())
            .login(T)
            .expect_err("missing entry refused");
        assert!(matches!(e, ChannelError::HostKey(_)), "{e}");
        assert!(e.to_string().contains("ssh-keyscan"), "{e}");
        // Entry with the other key.
        std::fs::create_dir_all(fx.dir.join("state")).expect("mkdir");
        std::fs::write(&cfg.known_hosts, known_hosts_line(&name, &fx.host_key_a)).expect("write");
        let e = Ssh::new(cfg.clone())
            .login(T)
            .expect_err("changed key refused");
        assert!(matches!(e, ChannelError::HostKey(_)) && e.is_fatal(), "{e}");
        assert!(e.to_string().contains("ssh-keygen -R"), "{e}");
        // The right key passes.
        std::fs::write(&cfg.known_hosts, known_hosts_line(&name, &fx.host_key_b)).expect("write");
        Ssh::new(cfg.clone())
            .login(T)
            .expect("matching key accepted");
        // Hashed entries (`ssh-keygen -H`, HashKnownHosts) match too ...
        Cmd::new(
            &["ssh-keygen", "-H", "-f", &cfg.known_hosts.to_string_lossy()],
            T,
        )
        .run_ok()
        .expect("ssh-keygen -H");
        let hashed = std::fs::read_to_string(&cfg.known_hosts).expect("read");
        assert!(hashed.starts_with("|1|"), "{hashed}");
        Ssh::new(cfg.clone())
            .login(T)
            .expect("hashed entry accepted");
        // ... and a hashed stale entry is what ReplaceAfterLoad replaces.
        let sshd2 = fx.start(&fx.host_key_a);
        let mut replace = config(&fx, sshd2.port, HostKeyPolicy::ReplaceAfterLoad);
        replace.known_hosts = cfg.known_hosts.clone();
        replace.host_alias = name.clone();
        Ssh::new(replace)
            .login(T)
            .expect("hashed stale entry replaced");
        let text = std::fs::read_to_string(&cfg.known_hosts).expect("read");
        assert_eq!(text, known_hosts_line(&name, &fx.host_key_a), "{text}");
    }

    #[test]
    fn replace_after_load_replaces_stale_entry_then_pins() {
        let fx = Fixture::new("replace");
        let mut sshd = fx.start(&fx.host_key_b);
        let cfg = config(&fx, sshd.port, HostKeyPolicy::ReplaceAfterLoad);
        let name = cfg.known_hosts_name();
        std::fs::create_dir_all(fx.dir.join("state")).expect("mkdir");
        let other = "[10.9.9.9]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm1F2Yu0nBhS0p1cqYdKX6bJ5W0x0G1UeyWqgQ9xYpN\n";
        std::fs::write(
            &cfg.known_hosts,
            format!("# kept\n{}{other}", known_hosts_line(&name, &fx.host_key_a)),
        )
        .expect("write stale entry");
        let mut ssh = Ssh::new(cfg.clone());
        ssh.login(T).expect("stale entry replaced");
        let text = std::fs::read_to_string(&cfg.known_hosts).expect("read known_hosts");
        assert!(text.contains(&pub_b64(&fx.host_key_b)), "{text}");
        assert!(!text.contains(&pub_b64(&fx.host_key_a)), "{text}");
        assert!(
            text.contains("# kept") && text.contains(other.trim()),
            "{text}"
        );
        // OpenSSH itself finds the new entry.
        let found = Cmd::new(
            &[
                "ssh-keygen",
                "-F",
                &name,
                "-f",
                &cfg.known_hosts.to_string_lossy(),
            ],
            T,
        )
        .run_ok()
        .expect("ssh-keygen -F finds the entry");
        assert!(
            found.stdout.contains(&pub_b64(&fx.host_key_b)),
            "{}",
            found.stdout
        );
        // The computer comes back with another key within the same run.
        sshd.kill();
        let _sshd2 = fx
            .start_on(&fx.host_key_a, &sshd.held)
            .expect("restart with key a");
        let e = ssh
            .run(&argv(&["true"]), T)
            .expect_err("changed key refused");
        assert!(matches!(e, ChannelError::HostKey(_)) && e.is_fatal(), "{e}");
        // ... and the file still holds the key accepted after the load.
        let after = std::fs::read_to_string(&cfg.known_hosts).expect("read known_hosts");
        assert_eq!(after, text);
    }

    #[test]
    fn accept_new_adds_a_missing_entry_and_refuses_a_changed_one() {
        let fx = Fixture::new("acceptnew");
        let mut sshd = fx.start(&fx.host_key_a);
        let port = sshd.port;
        let mut cfg = config(&fx, port, HostKeyPolicy::AcceptNew);
        cfg.known_hosts = fx.dir.join("new/dir/known_hosts");
        Ssh::new(cfg.clone()).login(T).expect("accept new");
        let text = std::fs::read_to_string(&cfg.known_hosts).expect("file created");
        assert!(
            text.starts_with(&format!("[127.0.0.1]:{port} ssh-ed25519 ")),
            "{text}"
        );
        assert!(text.contains(&pub_b64(&fx.host_key_a)), "{text}");
        // The written file satisfies Strict.
        let mut strict = cfg.clone();
        strict.host_keys = HostKeyPolicy::Strict;
        Ssh::new(strict)
            .login(T)
            .expect("strict accepts the added entry");
        sshd.kill();
        let _sshd2 = fx
            .start_on(&fx.host_key_b, &sshd.held)
            .expect("restart with key b");
        let e = Ssh::new(cfg.clone())
            .login(T)
            .expect_err("changed key refused");
        assert!(matches!(e, ChannelError::HostKey(_)), "{e}");
        assert_eq!(
            std::fs::read_to_string(&cfg.known_hosts).expect("read"),
            text
        );
    }

    #[test]
    fn login_succeeds_after_a_late_sshd_starts() {
        let fx = Fixture::new("late");
        let port = Port::new();
        let mut cfg = config(&fx, port.num(), HostKeyPolicy::ReplaceAfterLoad);
        cfg.connect_timeout = Duration::from_millis(200);
        // sshd starts once a login was refused, however slow the machine.
        let refused = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            let starter = s.spawn(|| {
                let t = Instant::now();
                while refused.load(std::sync::atomic::Ordering::SeqCst) == 0
                    && t.elapsed() < Duration::from_secs(30)
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                fx.start_on(&fx.host_key_a, &port)
                    .expect("late sshd starts")
            });
            let mut ssh = Ssh::new(cfg);
            let t = Instant::now();
            let mut failures = 0;
            let ok_at = loop {
                match ssh.login(Duration::from_millis(500)) {
                    Ok(()) => break Instant::now(),
                    Err(e) => {
                        assert!(!e.is_fatal(), "{e}");
                        // Refused before sshd listens; a handshake cut short
                        // by the 500 ms budget on a loaded machine is a timeout.
                        assert!(matches!(e.class(), "unreachable" | "timeout"), "{e}");
                        failures += 1;
                        refused.store(failures, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                assert!(t.elapsed() < Duration::from_secs(60), "never logged in");
                std::thread::sleep(Duration::from_millis(20));
            };
            let sshd = starter.join().expect("starter thread");
            let lag = ok_at.saturating_duration_since(sshd.spawned_at);
            println!("late sshd: login {lag:?} after sshd was spawned ({failures} refused tries)");
            // How soon is a benchmark's question (examples/bench_ready.rs);
            // this test asserts that refusals before sshd listens leave the
            // channel able to log in once it does.
            assert!(failures > 0, "sshd was not late");
        });
    }

    #[test]
    fn upload_writes_content_and_mode() {
        let fx = Fixture::new("upload");
        let sshd = fx.start(&fx.host_key_a);
        let mut ssh = Ssh::new(config(&fx, sshd.port, HostKeyPolicy::ReplaceAfterLoad));
        let mut data: Vec<u8> = (0..=255u8).collect();
        data.extend_from_slice(b"'\"$(x)\n\r\0end");
        data.extend(std::iter::repeat_n(0xA5u8, 1_000_000));
        let path = fx.dir.join("up dir 'q'");
        std::fs::create_dir_all(&path).expect("mkdir");
        let file = path.join("secret file");
        ssh.upload(&data, &file.to_string_lossy(), 0o640, T)
            .expect("upload");
        let got = std::fs::read(&file).expect("uploaded file");
        assert!(
            got == data,
            "content differs ({} vs {} bytes)",
            got.len(),
            data.len()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        // A second upload replaces it.
        ssh.upload(b"two", &file.to_string_lossy(), 0o600, T)
            .expect("upload again");
        assert_eq!(std::fs::read(&file).expect("read"), b"two");
        // Into a missing directory: an error, not a hang.
        let e = ssh
            .upload(b"x", &fx.dir.join("missing/f").to_string_lossy(), 0o600, T)
            .expect_err("missing dir");
        assert!(matches!(e, ChannelError::Protocol(_)), "{e}");
    }
}
