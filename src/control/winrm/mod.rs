//! WinRM channel: WS-Management (DMTF DSP0226, Microsoft MS-WSMV) over HTTP
//! or HTTPS with `ureq`, and the Windows Remote Shell resource
//! (`.../windows/shell/cmd`).
//!
//! Authentication ([`auth`]): by default HTTP `Negotiate` with NTLMv2 in
//! SPNEGO, and over plain HTTP every message sealed with the session's keys
//! in MS-WSMV's `multipart/encrypted` envelope ([`encryption`]): what a
//! Windows accepts as shipped (`Auth/Basic = false`, `AllowUnencrypted =
//! false`). `ntlm` sends bare NTLM tokens; `basic` sends the password with
//! every request and needs HTTPS or an explicit allowance. Over HTTPS the
//! listener's certificate is checked against the system's roots, a CA
//! file, a pinned SHA-256 ([`crate::tls`], as the vSphere provisioner pins
//! its endpoint), or a pin learned on first use ([`pin`]).
//!
//! The protocol needed here is six SOAP messages (Identify, Create, Command,
//! Send, Receive, Signal, Delete): they are written as format strings with
//! [`xml::escape`] and read with [`crate::xml`] (roxmltree), matching element
//! names by local name in any namespace, as WinRM versions differ in the
//! prefixes they use.
//!
//! Error classes (see [`ChannelError`]): connection refused, reset, or no
//! answer in time → `Unreachable`; HTTP 401/403 for the configured scheme
//! → `Auth` (an OS module may wait on it: Sysprep keeps Administrator
//! disabled for a while); a 401 that offers only other schemes, or a
//! refused unencrypted message → `Config` (fatal at once: the settings must
//! change); a TLS certificate that does not verify or match its pin →
//! `HostKey` (fatal: the computer is not the one trusted, a reload will not
//! change that); a command past its deadline → `Timeout`; anything
//! malformed or any other SOAP fault → `Protocol`. Messages name host, port
//! and the WS-Man action; the password never appears in them, in logs, or
//! in any process's argv, and the session keys never leave `sspi`'s
//! context.

pub mod auth;
pub mod encryption;
pub mod pin;

use super::{Channel, ChannelError};
use crate::encoding;
use crate::exec::Output;
use crate::secret::Secret;
use crate::signal;
use crate::tls;
use crate::xml;
use anyhow::anyhow;
use auth::{Auth, Challenge};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
const NS_ADDRESSING: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
const NS_WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
const NS_MS_WSMAN: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd";
const NS_SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
const NS_IDENTITY: &str = "http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd";
const RESOURCE_CMD: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";
const ACTION_CREATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create";
const ACTION_DELETE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete";
const ACTION_COMMAND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command";
const ACTION_SEND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send";
const ACTION_RECEIVE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive";
const ACTION_SIGNAL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal";
const SIGNAL_TERMINATE: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate";
const CONTENT_TYPE: &str = "application/soap+xml;charset=UTF-8";
/// WSManFault code of `w:TimedOut`: a Receive found no output within the
/// OperationTimeout. Expected while a command runs; poll again.
const FAULT_TIMED_OUT: u64 = 2150858793;
/// Bound on one TCP connect (and TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time the HTTP layer waits beyond the OperationTimeout the server
/// was given, so the server's own TimedOut fault arrives first.
const HTTP_GRACE: Duration = Duration::from_secs(5);
/// Shortest OperationTimeout sent; Windows rejects tiny values.
const MIN_OPERATION_TIMEOUT: Duration = Duration::from_millis(500);
/// Rounds of every password rejected after which a channel sends only
/// the first (see [`WinRm::post_authenticated`]).
const MAX_ROUNDS: u32 = 3;

/// Bytes of file data per Send message (base64 grows it by a third; the
/// default MaxEnvelopeSize on Windows is 150 KiB, 500 KiB from WinRM 2.0).
const UPLOAD_CHUNK: usize = 57 * 1024;

/// Where and how to reach one computer's WinRM listener.
#[derive(Debug, Clone)]
pub struct WinRmConfig {
    /// Host name or IP address of the computer.
    pub host: String,
    /// Listener port: 5985 for HTTP, 5986 for HTTPS by Windows' defaults.
    pub port: u16,
    /// Use HTTPS (TLS) instead of plain HTTP.
    pub https: bool,
    /// Account to log in as: a local account of the computer, or
    /// `DOMAIN\user` / `user@domain`.
    pub user: String,
    /// File whose first line is the password; the password is never put in
    /// argv, logs or error messages. None: send no credentials (any command
    /// then fails with `Auth`).
    pub password_file: Option<PathBuf>,
    /// The passwords to try, in order, instead of `password_file`'s alone
    /// (empty: `password_file`'s): a login the listener rejects (HTTP 401
    /// or 403) with one is tried with the next, and the channel keeps the
    /// one that was taken. An OS module lists the password its first boot
    /// set first, the image's next.
    pub passwords: Vec<LoginPassword>,
    /// How to authenticate.
    pub auth: Auth,
    /// How the HTTPS listener's certificate is trusted.
    pub trust: Trust,
    /// WS-Man OperationTimeout for each request; a Receive waits at most
    /// this long on the server before answering `w:TimedOut`.
    pub operation_timeout: Duration,
}

/// One password a login may use, and where it comes from (for events and
/// messages; never the value).
#[derive(Debug, Clone)]
pub struct LoginPassword {
    /// The password.
    pub secret: Secret,
    /// Where it comes from, e.g. "the image's (password_file /etc/...)".
    pub from: String,
}

/// How the HTTPS listener's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The Mozilla roots ureq ships, with host-name checks.
    System,
    /// The CA certificate(s) of a PEM file, with host-name checks.
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256; names are not checked
    /// (a cloned image's certificate names no computer in particular).
    Pinned([u8; 32]),
    /// A SHA-256 learned on first use and kept in `file` (see [`pin`]).
    Learned {
        /// The record in the state directory.
        file: PathBuf,
        /// The channel a before-load step opens: it checks the record but
        /// never writes a new certificate into it, and marks it replaceable
        /// by the first connection after the load.
        before_load: bool,
    },
    /// No verification at all (`insecure = true`).
    Insecure,
}

/// What an Identify probe learned about the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// ProductVendor, e.g. "Microsoft Corporation".
    pub vendor: String,
    /// ProductVersion, e.g. "OS: 6.1.7601 SP: 1.0 Stack: 2.0".
    pub version: String,
    /// ProtocolVersion, the WS-Management namespace URI.
    pub protocol: String,
}

/// A learned pin this channel has yet to record, and what it replaces.
#[derive(Debug)]
struct Learning {
    file: PathBuf,
    seen: Arc<tls::FirstUse>,
    /// The record it replaces (a first connection after a load).
    previous: Option<[u8; 32]>,
    recorded: bool,
}

/// A WinRM connection to one computer: HTTP agents (they keep connections
/// alive between requests), the credentials, and, for Negotiate, the
/// security context of the current connection.
pub struct WinRm {
    cfg: WinRmConfig,
    url: String,
    /// The passwords to log in with, in order ([`WinRmConfig::passwords`]);
    /// none without a password file.
    passwords: Vec<LoginPassword>,
    /// The one in use: the first, or the one the listener last took.
    current: Cell<usize>,
    /// Rounds in which the listener rejected every password: after
    /// [`MAX_ROUNDS`] only the first is sent (each wrong one counts
    /// toward the account's lockout).
    rounds: Cell<u32>,
    trust: tls::Trust,
    /// Authenticated requests.
    agent: ureq::Agent,
    /// The anonymous Identify: its own connections, so that it never rides
    /// one that Negotiate authenticated (and whose messages must be
    /// sealed).
    anonymous: ureq::Agent,
    /// The NTLM context of the agent's connection, once established.
    session: RefCell<Option<auth::Context>>,
    learning: RefCell<Option<Learning>>,
    /// What the certificate check says, for events.
    pin_note: RefCell<Option<String>>,
    /// How many Receive polls came back `w:TimedOut` (a long command);
    /// for progress reports and tests.
    timed_out_polls: Cell<u64>,
    /// Negotiate handshakes made; for tests and the benchmark.
    handshakes: Cell<u64>,
}

impl fmt::Debug for WinRm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WinRm")
            .field("url", &self.url)
            .field("user", &self.cfg.user)
            .field("auth", &self.cfg.auth)
            .field("passwords", &self.passwords)
            .field("session", &self.session)
            .finish()
    }
}

/// What one WS-Man request got back: a SOAP body, or a SOAP fault.
enum Reply {
    Body(String),
    Fault(Fault),
}

/// One HTTP answer, its body unsealed when it came sealed.
struct Answer {
    status: u16,
    challenges: Vec<Challenge>,
    content_type: String,
    body: Vec<u8>,
}

/// The parts of a SOAP fault that matter here.
#[derive(Debug, Clone, Default, PartialEq)]
struct Fault {
    /// HTTP status that carried it (Windows sends faults with 500).
    status: u16,
    /// Code/Subcode/Value, e.g. `w:TimedOut`.
    subcode: String,
    /// Reason/Text.
    reason: String,
    /// WSManFault/@Code, e.g. 2150858793.
    wsman_code: Option<u64>,
}

impl Fault {
    fn is_timed_out(&self) -> bool {
        self.wsman_code == Some(FAULT_TIMED_OUT) || xml::local_name(&self.subcode) == "TimedOut"
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SOAP fault (HTTP {})", self.status)?;
        if !self.subcode.is_empty() {
            write!(f, " {}", self.subcode)?;
        }
        if let Some(code) = self.wsman_code {
            write!(f, " code {code}")?;
        }
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason.trim())?;
        }
        Ok(())
    }
}

/// How a new channel trusts the listener's certificate, the pin it has
/// yet to record, and what the certificate check says for events.
struct TrustSetup {
    trust: tls::Trust,
    learning: Option<Learning>,
    note: Option<String>,
}

impl TrustSetup {
    fn plain(trust: tls::Trust) -> TrustSetup {
        TrustSetup {
            trust,
            learning: None,
            note: None,
        }
    }
}

/// The trust of `cfg` (none needed over plain HTTP): a CA file read, a
/// learned pin looked up ([`learned`]).
fn trust_setup(cfg: &WinRmConfig) -> anyhow::Result<TrustSetup> {
    Ok(match &cfg.trust {
        _ if !cfg.https => TrustSetup::plain(tls::Trust::System),
        Trust::System => TrustSetup::plain(tls::Trust::System),
        Trust::Insecure => TrustSetup::plain(tls::Trust::Off),
        Trust::CaFile(ca) => TrustSetup::plain(
            tls::Trust::ca_file(ca, "the WinRM ca_file").map_err(anyhow::Error::msg)?,
        ),
        Trust::Pinned(p) => TrustSetup::plain(tls::Trust::Pinned(*p)),
        Trust::Learned { file, before_load } => learned(file, *before_load)?,
    })
}

/// A pin learned on first use ([`pin`]): a before-load channel holds to
/// the record and marks it replaceable (or, with none, learns for itself
/// and records nothing); any other holds to a record that is not
/// replaceable, and otherwise learns the first certificate it sees, to
/// record it.
fn learned(file: &std::path::Path, before_load: bool) -> anyhow::Result<TrustSetup> {
    let record = pin::read(file).map_err(anyhow::Error::msg)?;
    Ok(match (record, before_load) {
        (Some(r), true) => {
            if !r.replaceable {
                pin::write(
                    file,
                    &pin::Record {
                        replaceable: true,
                        ..r
                    },
                )?;
            }
            TrustSetup::plain(tls::Trust::Pinned(r.pin))
        }
        (None, true) => TrustSetup::plain(tls::Trust::FirstUse(tls::FirstUse::new())),
        (Some(r), false) if !r.replaceable => TrustSetup {
            trust: tls::Trust::Pinned(r.pin),
            learning: None,
            note: Some(format!(
                "certificate SHA-256 {} as recorded",
                tls::fmt_thumbprint(&r.pin)
            )),
        },
        (r, false) => {
            let seen = tls::FirstUse::new();
            TrustSetup {
                trust: tls::Trust::FirstUse(seen.clone()),
                learning: Some(Learning {
                    file: file.to_path_buf(),
                    seen,
                    previous: r.map(|r| r.pin),
                    recorded: false,
                }),
                note: None,
            }
        }
    })
}

impl WinRm {
    /// Reads the password file, the CA file and a learned pin, and prepares
    /// the HTTP agents; connects to nothing yet. A before-load channel
    /// marks a learned pin replaceable here.
    pub fn new(cfg: WinRmConfig) -> anyhow::Result<WinRm> {
        let host = if cfg.host.contains(':') && !cfg.host.starts_with('[') {
            format!("[{}]", cfg.host)
        } else {
            cfg.host.clone()
        };
        let scheme = if cfg.https { "https" } else { "http" };
        let url = format!("{scheme}://{host}:{}/wsman", cfg.port);

        let passwords = match (&cfg.password_file, cfg.passwords.is_empty()) {
            (_, false) => cfg.passwords.clone(),
            (None, true) => Vec::new(),
            (Some(path), true) => vec![LoginPassword {
                secret: Secret::from_file(path, "the WinRM password file")?,
                from: format!("password_file {}", path.display()),
            }],
        };

        let TrustSetup {
            trust,
            learning,
            note: pin_note,
        } = trust_setup(&cfg)?;
        let agent = tls::agent(trust.clone(), CONNECT_TIMEOUT);
        let anonymous = tls::agent(trust.clone(), CONNECT_TIMEOUT);
        Ok(WinRm {
            cfg,
            url,
            passwords,
            current: Cell::new(0),
            rounds: Cell::new(0),
            trust,
            agent,
            anonymous,
            session: RefCell::new(None),
            learning: RefCell::new(learning),
            pin_note: RefCell::new(pin_note),
            timed_out_polls: Cell::new(0),
            handshakes: Cell::new(0),
        })
    }

    /// Unauthenticated readiness probe: Windows answers Identify before
    /// anyone logs in, so this tells "WinRM is up" apart from "credentials
    /// work". One request, bounded by `timeout`.
    pub fn identify(&self, timeout: Duration) -> Result<Identity, ChannelError> {
        let body = format!(
            "<s:Envelope xmlns:s=\"{NS_SOAP}\" xmlns:wsmid=\"{NS_IDENTITY}\">\
             <s:Header/><s:Body><wsmid:Identify/></s:Body></s:Envelope>"
        );
        let xml = match self.post("Identify", &body, timeout, false)? {
            Reply::Body(xml) => xml,
            Reply::Fault(f) => {
                return Err(ChannelError::Protocol(anyhow!(
                    "{}: {f}",
                    self.what("Identify")
                )));
            }
        };
        let doc = self.read("Identify", &xml)?;
        let field = |name: &str| xml::descendant(doc.root(), name).map(xml::text);
        match (
            field("ProductVendor"),
            field("ProductVersion"),
            field("ProtocolVersion"),
        ) {
            (Some(vendor), Some(version), Some(protocol)) => Ok(Identity {
                vendor,
                version,
                protocol,
            }),
            _ => Err(ChannelError::Protocol(anyhow!(
                "{}: the answer is not an IdentifyResponse (no ProductVendor/ProductVersion/ProtocolVersion)",
                self.what("Identify")
            ))),
        }
    }

    /// Receive polls so far that the server answered with `w:TimedOut`
    /// because a command was still running.
    #[cfg(test)]
    pub fn timed_out_polls(&self) -> u64 {
        self.timed_out_polls.get()
    }

    /// Negotiate handshakes so far (one per connection).
    #[cfg(test)]
    pub fn handshakes(&self) -> u64 {
        self.handshakes.get()
    }

    /// "WinRM host:port Action", the prefix of every error message.
    fn what(&self, action: &str) -> String {
        format!("WinRM {}:{} {action}", self.cfg.host, self.cfg.port)
    }

    /// Parses an answer's body; malformed XML is a `Protocol` error.
    fn read<'a>(&self, action: &str, text: &'a str) -> Result<xml::Document<'a>, ChannelError> {
        xml::parse(text).map_err(|e| {
            ChannelError::Protocol(anyhow!(
                "{}: the answer is not well-formed XML ({e}){}",
                self.what(action),
                snippet(text)
            ))
        })
    }

    /// Messages are sealed: Negotiate or NTLM over plain HTTP.
    fn sealed(&self) -> bool {
        !self.cfg.https && self.cfg.auth != Auth::Basic
    }

    /// Sends one SOAP message and sorts the answer: a body, a fault, or a
    /// classified error. `authenticate` false: the anonymous Identify.
    fn post(
        &self,
        action: &str,
        body: &str,
        timeout: Duration,
        authenticate: bool,
    ) -> Result<Reply, ChannelError> {
        let what = self.what(action);
        let answer = if !authenticate {
            let headers = [
                ("WSMANIDENTIFY", "unauthenticated".to_string()),
                ("Content-Type", CONTENT_TYPE.to_string()),
            ];
            self.exchange(&self.anonymous, &what, &headers, body.as_bytes(), timeout)?
        } else {
            self.post_authenticated(&what, body, timeout)?
        };
        self.sort(&what, answer)
    }

    /// A request with credentials: with the password in use, then, when
    /// the listener rejects it, with each next one in turn (the rejected
    /// ones are not tried again for this request). When all are rejected
    /// the next request starts over from the first: an account that
    /// Sysprep keeps disabled for a while takes its password later. After
    /// [`MAX_ROUNDS`] such rounds only the first is sent: each wrong
    /// password counts toward the account's lockout threshold, and a
    /// disabled account's right one does not.
    fn post_authenticated(
        &self,
        what: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<Answer, ChannelError> {
        loop {
            let r = if self.cfg.auth == Auth::Basic {
                self.post_basic(what, body, timeout)
            } else {
                self.post_negotiate(what, body, timeout)
            };
            let rejected = match &r {
                Err(ChannelError::Auth(_)) => true,
                Ok(a) => a.status == 401 || a.status == 403,
                Err(_) => false,
            };
            if !rejected {
                return r;
            }
            self.session.replace(None);
            let next = self.current.get() + 1;
            if next >= self.passwords.len() || self.rounds.get() >= MAX_ROUNDS {
                self.current.set(0);
                self.rounds.set(self.rounds.get().saturating_add(1));
                return match r {
                    Err(ChannelError::Auth(e)) if self.passwords.len() > 1 => {
                        let tried: Vec<&str> =
                            self.passwords.iter().map(|p| p.from.as_str()).collect();
                        Err(ChannelError::Auth(anyhow!(
                            "{e:#} (each password tried in turn: {})",
                            tried.join("; ")
                        )))
                    }
                    r => r,
                };
            }
            self.current.set(next);
        }
    }

    /// The password in use, if there is one.
    fn password(&self) -> Option<&LoginPassword> {
        self.passwords.get(self.current.get())
    }

    /// Where the password in use comes from, when the OS module chose the
    /// passwords ([`WinRmConfig::passwords`]): for events ("logged in with
    /// ...").
    pub fn password_from(&self) -> Option<&str> {
        if self.cfg.passwords.is_empty() {
            return None;
        }
        self.password().map(|p| p.from.as_str())
    }

    /// A request with Basic credentials; a 401 that does not offer Basic
    /// is a settings error, not a wrong password.
    fn post_basic(
        &self,
        what: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<Answer, ChannelError> {
        let mut headers = vec![("Content-Type", CONTENT_TYPE.to_string())];
        if let Some(p) = self.password() {
            let a = Secret::basic_auth(&self.cfg.user, &p.secret);
            headers.push(("Authorization", a.expose().to_string()));
        }
        let answer = self.exchange(&self.agent, what, &headers, body.as_bytes(), timeout)?;
        if answer.status == 401 && !auth::offers(&answer.challenges, "Basic") {
            return Err(self.wrong_scheme(what, &answer));
        }
        if answer.status == 500 && answer.body.is_empty() && !self.cfg.https {
            return Err(ChannelError::Config(anyhow!(
                "{what}: the listener refused a message sent in clear over HTTP (HTTP 500 without a body): it keeps AllowUnencrypted = false, as Windows ships; leave `auth` out (negotiate encrypts every message) or use https = true"
            )));
        }
        Ok(answer)
    }

    /// A request over Negotiate: a handshake first when the connection has
    /// no context, the message sealed over HTTP, the answer unsealed. A 401
    /// to a message on a context from an earlier request means the
    /// connection was replaced (the listener forgot the context): one new
    /// handshake, then the message once more.
    fn post_negotiate(
        &self,
        what: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<Answer, ChannelError> {
        let Some(password) = self.password().map(|p| &p.secret) else {
            return Err(ChannelError::Auth(anyhow!(
                "{what}: no password file is configured for user {:?}",
                self.cfg.user
            )));
        };
        for again in [false, true] {
            let fresh = self.session.borrow().is_none();
            if fresh {
                self.handshake(what, password, timeout)?;
            }
            let (content_type, payload) = if self.sealed() {
                let mut session = self.session.borrow_mut();
                let ctx = session.as_mut().ok_or_else(|| lost(what))?;
                let sealed = encryption::wrap(ctx, body.as_bytes()).map_err(|e| {
                    ChannelError::Protocol(anyhow!("{what}: cannot seal the message: {e:#}"))
                })?;
                (encryption::content_type(), sealed)
            } else {
                (CONTENT_TYPE.to_string(), body.as_bytes().to_vec())
            };
            let headers = [("Content-Type", content_type)];
            let mut answer = match self.exchange(&self.agent, what, &headers, &payload, timeout) {
                Ok(a) => a,
                Err(e) => {
                    // The listener may hold a sequence number we did not
                    // see answered: start over on the next request.
                    self.session.replace(None);
                    return Err(e);
                }
            };
            if answer.status == 401 {
                self.session.replace(None);
                if !fresh && !again {
                    continue;
                }
                return Ok(answer);
            }
            self.unseal(what, &mut answer)?;
            return Ok(answer);
        }
        Err(lost(what))
    }

    /// Unseals a sealed answer in place; over HTTP with sealing on, an
    /// answer with a body in clear is refused (anyone on the path could
    /// have written it).
    fn unseal(&self, what: &str, answer: &mut Answer) -> Result<(), ChannelError> {
        if !self.sealed() || answer.body.is_empty() {
            return Ok(());
        }
        if !encryption::is_encrypted(&answer.content_type) {
            self.session.replace(None);
            return Err(ChannelError::Protocol(anyhow!(
                "{what}: HTTP {} came in clear ({}) although messages are encrypted{}",
                answer.status,
                answer.content_type,
                snippet(&String::from_utf8_lossy(&answer.body))
            )));
        }
        let mut session = self.session.borrow_mut();
        let ctx = session.as_mut().ok_or_else(|| lost(what))?;
        match encryption::unwrap(ctx, &answer.body) {
            Ok(plain) => {
                answer.body = plain;
                answer.content_type = CONTENT_TYPE.into();
                Ok(())
            }
            Err(e) => {
                drop(session);
                self.session.replace(None);
                Err(ChannelError::Protocol(anyhow!(
                    "{what}: the encrypted answer does not unseal: {e:#}"
                )))
            }
        }
    }

    /// The Negotiate handshake on the agent's connection (RFC 4559 with
    /// MS-WSMV's empty-bodied legs): NEGOTIATE, the listener's CHALLENGE in
    /// a 401, AUTHENTICATE, then 200 (with SPNEGO's last token).
    fn handshake(
        &self,
        what: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<(), ChannelError> {
        let protocol = |e: anyhow::Error| {
            ChannelError::Protocol(anyhow!("{what}: Negotiate authentication: {e:#}"))
        };
        let mut ctx = auth::Context::new(self.cfg.auth, &self.cfg.user, password, &self.cfg.host)
            .map_err(|e| ChannelError::Config(anyhow!("{what}: {e:#}")))?;
        let first = ctx.step(None).map_err(protocol)?;
        self.handshakes.set(self.handshakes.get() + 1);
        let answer = self.leg(what, &first.token, timeout)?;
        if answer.status != 401 {
            return Err(ChannelError::Protocol(anyhow!(
                "{what}: HTTP {} to the Negotiate token, not 401 with a challenge",
                answer.status
            )));
        }
        let Some(challenge) = auth::negotiate_token(&answer.challenges) else {
            if !auth::offers(&answer.challenges, auth::NEGOTIATE) {
                return Err(self.wrong_scheme(what, &answer));
            }
            return Err(ChannelError::Protocol(anyhow!(
                "{what}: the listener answered the Negotiate token with a 401 without a challenge"
            )));
        };
        let challenge = encoding::base64_decode(challenge).ok_or_else(|| {
            ChannelError::Protocol(anyhow!("{what}: the Negotiate challenge is not base64"))
        })?;
        let second = ctx.step(Some(&challenge)).map_err(protocol)?;
        let answer = self.leg(what, &second.token, timeout)?;
        match answer.status {
            200 => {}
            401 | 403 => {
                return Err(ChannelError::Auth(anyhow!(
                    "{what}: credentials for user {:?} rejected (HTTP {}, Negotiate/NTLM); check the user name (a local account, or DOMAIN\\user) and the password file",
                    self.cfg.user,
                    answer.status
                )));
            }
            s => {
                return Err(ChannelError::Protocol(anyhow!(
                    "{what}: HTTP {s} to the Negotiate authentication{}",
                    snippet(&String::from_utf8_lossy(&answer.body))
                )));
            }
        }
        if !ctx.done() {
            let last = auth::negotiate_token(&answer.challenges)
                .and_then(encoding::base64_decode)
                .ok_or_else(|| {
                    ChannelError::Protocol(anyhow!(
                        "{what}: the listener accepted the login without the last Negotiate token"
                    ))
                })?;
            let step = ctx.step(Some(&last)).map_err(protocol)?;
            if !step.done {
                return Err(ChannelError::Protocol(anyhow!(
                    "{what}: the Negotiate handshake did not finish"
                )));
            }
        }
        self.session.replace(Some(ctx));
        Ok(())
    }

    /// One empty-bodied handshake request carrying `token`.
    fn leg(&self, what: &str, token: &[u8], timeout: Duration) -> Result<Answer, ChannelError> {
        let headers = [(
            "Authorization",
            format!("{} {}", auth::NEGOTIATE, encoding::base64_encode(token)),
        )];
        self.exchange(&self.agent, what, &headers, &[], timeout)
    }

    /// A 401 offering only other schemes: the settings must change.
    fn wrong_scheme(&self, what: &str, answer: &Answer) -> ChannelError {
        let offered: Vec<&str> = answer
            .challenges
            .iter()
            .map(|c| c.scheme.as_str())
            .collect();
        let offered = if offered.is_empty() {
            "no scheme".to_string()
        } else {
            offered.join(", ")
        };
        let hint = match self.cfg.auth {
            Auth::Basic => {
                "leave `auth` out (negotiate: NTLM, what Windows accepts as shipped), or enable Basic on the image (winrm set winrm/config/service/auth @{Basic=\"true\"})"
            }
            Auth::Negotiate | Auth::Ntlm => {
                "Negotiate is turned off on this listener (winrm/config/service/auth Negotiate = false): turn it back on in the image, or set auth = \"basic\" if Basic is what it offers"
            }
        };
        ChannelError::Config(anyhow!(
            "{what}: the listener does not accept {} authentication (HTTP 401 offering {offered}): {hint}",
            auth::scheme(self.cfg.auth)
        ))
    }

    /// Sorts an answer: 200 is a body, 401/403 rejected credentials, other
    /// statuses a SOAP fault or a Protocol error.
    fn sort(&self, what: &str, answer: Answer) -> Result<Reply, ChannelError> {
        let status = answer.status;
        if status == 401 || status == 403 {
            let hint = if self.passwords.is_empty() {
                "no password file is configured"
            } else {
                match self.cfg.auth {
                    Auth::Basic => {
                        "check the user name and the password file; Basic authentication must be allowed (winrm set winrm/config/service/auth @{Basic=\"true\"})"
                    }
                    _ => "check the user name and the password file",
                }
            };
            return Err(ChannelError::Auth(anyhow!(
                "{what}: credentials for user {:?} rejected (HTTP {status}); {hint}",
                self.cfg.user
            )));
        }
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        if status == 200 {
            return Ok(Reply::Body(text));
        }
        match parse_fault(&text, status) {
            Some(f) => Ok(Reply::Fault(f)),
            None => Err(ChannelError::Protocol(anyhow!(
                "{what}: HTTP {status} without a SOAP fault{}",
                snippet(&text)
            ))),
        }
    }

    /// One HTTP POST on `agent`; the answer whatever its status, or a
    /// classified transport error. Records a certificate learned by it.
    fn exchange(
        &self,
        agent: &ureq::Agent,
        what: &str,
        headers: &[(&str, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Answer, ChannelError> {
        let mut req = agent.post(&self.url);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let result = req
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(body);
        let mut resp = result.map_err(|e| self.classify(what, e, timeout))?;
        self.note_certificate()?;
        let status = resp.status().as_u16();
        let challenges = auth::challenges(
            resp.headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| self.classify(what, e, timeout))?;
        Ok(Answer {
            status,
            challenges,
            content_type,
            body,
        })
    }

    /// Records a certificate learned on first use (accept-new), once.
    fn note_certificate(&self) -> Result<(), ChannelError> {
        let mut learning = self.learning.borrow_mut();
        let Some(l) = learning.as_mut().filter(|l| !l.recorded) else {
            return Ok(());
        };
        let Some(seen) = l.seen.pinned() else {
            return Ok(());
        };
        let record = pin::Record {
            pin: seen,
            replaceable: false,
        };
        pin::write(&l.file, &record).map_err(|e| {
            ChannelError::Protocol(anyhow!(
                "cannot record the WinRM certificate of {} in {}: {e:#}",
                self.cfg.host,
                l.file.display()
            ))
        })?;
        l.recorded = true;
        let fp = tls::fmt_thumbprint(&seen);
        let note = match l.previous {
            None => format!("certificate SHA-256 {fp} learned (accept-new)"),
            Some(p) if p == seen => format!("certificate SHA-256 {fp} as recorded"),
            Some(p) => format!(
                "certificate SHA-256 {fp} after the load, replacing {}",
                tls::fmt_thumbprint(&p)
            ),
        };
        self.pin_note.replace(Some(note));
        Ok(())
    }

    /// Sorts a ureq error into the channel's classes.
    fn classify(&self, what: &str, e: ureq::Error, timeout: Duration) -> ChannelError {
        use std::io::ErrorKind as K;
        let text = e.to_string();
        let tls_cert = |t: &str| {
            let t = t.to_ascii_lowercase();
            t.contains("certificate")
                || t.contains("unknownissuer")
                || t.contains("notvalidforname")
        };
        match &e {
            ureq::Error::Io(io) if tls_cert(&io.to_string()) => self.tls_error(what, &text),
            ureq::Error::Rustls(_) | ureq::Error::Tls(_) if tls_cert(&text) => {
                self.tls_error(what, &text)
            }
            ureq::Error::Io(io) => match io.kind() {
                K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::BrokenPipe
                | K::TimedOut
                | K::WouldBlock
                | K::UnexpectedEof
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::AddrNotAvailable => {
                    ChannelError::Unreachable(anyhow!("{what}: {}: {text}", self.url))
                }
                _ => ChannelError::Protocol(anyhow!("{what}: {}: {text}", self.url)),
            },
            ureq::Error::Timeout(_) => ChannelError::Unreachable(anyhow!(
                "{what}: no answer from {} within {timeout:?} ({text})",
                self.url
            )),
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => {
                ChannelError::Unreachable(anyhow!("{what}: {}: {text}", self.url))
            }
            _ => ChannelError::Protocol(anyhow!("{what}: {}: {text}", self.url)),
        }
    }

    fn tls_error(&self, what: &str, text: &str) -> ChannelError {
        let learned_now = self.learning.borrow().as_ref().is_some_and(|l| l.recorded);
        let hint = match &self.cfg.trust {
            Trust::CaFile(_) => {
                "the listener's certificate is not signed by the CA in the CA file, or not issued for this host name".to_string()
            }
            Trust::Pinned(_) => {
                "the listener's certificate is not the one `thumbprint` pins: if the image got a new certificate, check the server's SHA-256 above and put it in `thumbprint` (or use thumbprint = \"accept-new\"); otherwise this may not be the computer".to_string()
            }
            Trust::Learned { file, .. } if learned_now => format!(
                "the certificate changed during this run, after {} recorded it: this may not be the computer that was loaded; check it, then run reimage again",
                file.display()
            ),
            Trust::Learned { file, .. } => format!(
                "the certificate differs from the one recorded in {} and no load ran since (a changed certificate is accepted only right after a load): if the computer was reinstalled some other way, check the server's SHA-256 above and delete that file; otherwise someone may be in the middle",
                file.display()
            ),
            Trust::System | Trust::Insecure => {
                "give the CA that signed the listener's certificate as ca_file, pin it with thumbprint (the certificate's SHA-256, or \"accept-new\"), or opt out of verification (insecure) for a lab".to_string()
            }
        };
        ChannelError::HostKey(anyhow!(
            "{what}: TLS certificate of {} not trusted: {text}; {hint}",
            self.url
        ))
    }

    /// OperationTimeout for a request due before `deadline`.
    fn op_timeout(&self, deadline: Instant) -> Duration {
        let left = deadline.saturating_duration_since(Instant::now());
        self.cfg
            .operation_timeout
            .min(left)
            .max(MIN_OPERATION_TIMEOUT)
    }

    /// A request to the shell resource: header, options, body.
    fn shell_request(
        &self,
        action: &str,
        shell_id: Option<&str>,
        options: &[(&str, &str)],
        op_timeout: Duration,
        body: &str,
    ) -> String {
        let mut s = String::with_capacity(2048 + body.len());
        s.push_str(&format!(
            "<s:Envelope xmlns:s=\"{NS_SOAP}\" xmlns:a=\"{NS_ADDRESSING}\" xmlns:w=\"{NS_WSMAN}\" \
             xmlns:p=\"{NS_MS_WSMAN}\" xmlns:rsp=\"{NS_SHELL}\"><s:Header>\
             <a:To>{}</a:To>\
             <a:ReplyTo><a:Address s:mustUnderstand=\"true\">{NS_ADDRESSING}/role/anonymous</a:Address></a:ReplyTo>\
             <w:ResourceURI s:mustUnderstand=\"true\">{RESOURCE_CMD}</w:ResourceURI>\
             <a:Action s:mustUnderstand=\"true\">{}</a:Action>\
             <w:MaxEnvelopeSize s:mustUnderstand=\"true\">153600</w:MaxEnvelopeSize>\
             <a:MessageID>{}</a:MessageID>\
             <w:Locale xml:lang=\"en-US\" s:mustUnderstand=\"false\"/>\
             <p:DataLocale xml:lang=\"en-US\" s:mustUnderstand=\"false\"/>\
             <w:OperationTimeout>{}</w:OperationTimeout>",
            xml::escape(&self.url),
            xml::escape(action),
            message_id(),
            xs_duration(op_timeout),
        ));
        if let Some(id) = shell_id {
            s.push_str(&format!(
                "<w:SelectorSet><w:Selector Name=\"ShellId\">{}</w:Selector></w:SelectorSet>",
                xml::escape(id)
            ));
        }
        if !options.is_empty() {
            s.push_str("<w:OptionSet>");
            for (name, value) in options {
                s.push_str(&format!(
                    "<w:Option Name=\"{}\">{}</w:Option>",
                    xml::escape(name),
                    xml::escape(value)
                ));
            }
            s.push_str("</w:OptionSet>");
        }
        s.push_str("</s:Header><s:Body>");
        s.push_str(body);
        s.push_str("</s:Body></s:Envelope>");
        s
    }

    /// Sends a shell request due before `deadline`; a fault is a Protocol
    /// error here (Receive handles its TimedOut fault itself).
    fn shell_call(
        &self,
        name: &str,
        action: &str,
        shell_id: Option<&str>,
        options: &[(&str, &str)],
        body: &str,
        deadline: Instant,
    ) -> Result<String, ChannelError> {
        let op = self.op_timeout(deadline);
        let msg = self.shell_request(action, shell_id, options, op, body);
        match self.post(name, &msg, op + HTTP_GRACE, true)? {
            Reply::Body(xml) => Ok(xml),
            Reply::Fault(f) => Err(ChannelError::Protocol(anyhow!("{}: {f}", self.what(name)))),
        }
    }

    /// Creates a cmd shell; returns its ShellId.
    fn create_shell(&self, deadline: Instant) -> Result<String, ChannelError> {
        let body = "<rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams>\
                    <rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>";
        let options = [("WINRS_NOPROFILE", "FALSE"), ("WINRS_CODEPAGE", "65001")];
        let xml = self.shell_call("Create", ACTION_CREATE, None, &options, body, deadline)?;
        let doc = self.read("Create", &xml)?;
        let from_selector = xml::descendants(doc.root(), "Selector")
            .find(|e| e.attribute("Name") == Some("ShellId"))
            .map(xml::text);
        match from_selector.or_else(|| xml::descendant(doc.root(), "ShellId").map(xml::text)) {
            Some(id) if !id.is_empty() => Ok(id),
            _ => Err(ChannelError::Protocol(anyhow!(
                "{}: no ShellId in the answer{}",
                self.what("Create"),
                snippet(&xml)
            ))),
        }
    }

    /// Deletes a shell; best effort, within a short time.
    fn delete_shell(&self, shell_id: &str) {
        let deadline = Instant::now() + self.cfg.operation_timeout.min(Duration::from_secs(10));
        let _ = self.shell_call("Delete", ACTION_DELETE, Some(shell_id), &[], "", deadline);
    }

    /// Starts `argv` in the shell; returns its CommandId.
    fn start_command(
        &self,
        shell_id: &str,
        argv: &[String],
        deadline: Instant,
    ) -> Result<String, ChannelError> {
        let Some((command, args)) = argv.split_first() else {
            return Err(ChannelError::Protocol(anyhow!(
                "{}: empty argument vector",
                self.what("Command")
            )));
        };
        let mut body = format!(
            "<rsp:CommandLine><rsp:Command>{}</rsp:Command>",
            xml::escape(command)
        );
        for a in args {
            body.push_str(&format!(
                "<rsp:Arguments>{}</rsp:Arguments>",
                xml::escape(a)
            ));
        }
        body.push_str("</rsp:CommandLine>");
        let options = [
            ("WINRS_CONSOLEMODE_STDIN", "TRUE"),
            ("WINRS_SKIP_CMD_SHELL", "FALSE"),
        ];
        let xml = self.shell_call(
            "Command",
            ACTION_COMMAND,
            Some(shell_id),
            &options,
            &body,
            deadline,
        )?;
        let doc = self.read("Command", &xml)?;
        match xml::descendant(doc.root(), "CommandId").map(xml::text) {
            Some(id) if !id.is_empty() => Ok(id),
            _ => Err(ChannelError::Protocol(anyhow!(
                "{}: no CommandId in the answer{}",
                self.what("Command"),
                snippet(&xml)
            ))),
        }
    }

    /// Sends `data` to the command's stdin, closing it after the last chunk.
    fn send_stdin(
        &self,
        shell_id: &str,
        command_id: &str,
        data: &[u8],
        deadline: Instant,
    ) -> Result<(), ChannelError> {
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(UPLOAD_CHUNK).collect()
        };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            check_signal()?;
            let body = format!(
                "<rsp:Send><rsp:Stream Name=\"stdin\" CommandId=\"{}\"{}>{}</rsp:Stream></rsp:Send>",
                xml::escape(command_id),
                if i == last { " End=\"true\"" } else { "" },
                encoding::base64_encode(chunk)
            );
            self.shell_call("Send", ACTION_SEND, Some(shell_id), &[], &body, deadline)?;
        }
        Ok(())
    }

    /// Receives until the command is Done, polling again on `w:TimedOut`;
    /// past `deadline` it signals terminate and gives `Timeout`.
    fn receive_all(
        &self,
        shell_id: &str,
        command_id: &str,
        label: &str,
        started: Instant,
        deadline: Instant,
    ) -> Result<Output, ChannelError> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let body = format!(
            "<rsp:Receive><rsp:DesiredStream CommandId=\"{}\">stdout stderr</rsp:DesiredStream></rsp:Receive>",
            xml::escape(command_id)
        );
        loop {
            check_signal()?;
            if Instant::now() >= deadline {
                self.terminate(shell_id, command_id);
                return Err(ChannelError::Timeout(anyhow!(
                    "{}: command `{label}` did not finish within {:?}",
                    self.what("Receive"),
                    deadline.saturating_duration_since(started)
                )));
            }
            let op = self.op_timeout(deadline);
            let msg = self.shell_request(ACTION_RECEIVE, Some(shell_id), &[], op, &body);
            let xml = match self.post("Receive", &msg, op + HTTP_GRACE, true)? {
                Reply::Body(xml) => xml,
                Reply::Fault(f) if f.is_timed_out() => {
                    self.timed_out_polls.set(self.timed_out_polls.get() + 1);
                    continue;
                }
                Reply::Fault(f) => {
                    return Err(ChannelError::Protocol(anyhow!(
                        "{}: command `{label}`: {f}",
                        self.what("Receive")
                    )));
                }
            };
            let chunk = parse_receive(&xml).map_err(|e| {
                ChannelError::Protocol(anyhow!("{}: command `{label}`: {e}", self.what("Receive")))
            })?;
            stdout.extend_from_slice(&chunk.stdout);
            stderr.extend_from_slice(&chunk.stderr);
            if let Some(status) = chunk.exit_code {
                self.terminate(shell_id, command_id);
                return Ok(Output {
                    status,
                    stdout: String::from_utf8_lossy(&stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
                    elapsed: started.elapsed(),
                });
            }
        }
    }

    /// Signals terminate: ends a running command and frees a finished one
    /// on the server. Best effort.
    fn terminate(&self, shell_id: &str, command_id: &str) {
        let body = format!(
            "<rsp:Signal CommandId=\"{}\"><rsp:Code>{SIGNAL_TERMINATE}</rsp:Code></rsp:Signal>",
            xml::escape(command_id)
        );
        let deadline = Instant::now() + self.cfg.operation_timeout.min(Duration::from_secs(10));
        let _ = self.shell_call(
            "Signal",
            ACTION_SIGNAL,
            Some(shell_id),
            &[],
            &body,
            deadline,
        );
    }

    /// Runs one command in an existing shell, feeding `stdin` if given.
    fn run_in_shell(
        &self,
        shell_id: &str,
        argv: &[String],
        stdin: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Output, ChannelError> {
        let started = Instant::now();
        let label = argv.first().map(String::as_str).unwrap_or("");
        let command_id = self.start_command(shell_id, argv, deadline)?;
        if let Some(data) = stdin
            && let Err(e) = self.send_stdin(shell_id, &command_id, data, deadline)
        {
            self.terminate(shell_id, &command_id);
            return Err(e);
        }
        self.receive_all(shell_id, &command_id, label, started, deadline)
    }

    /// Runs `argvs` one after another in one shell; stops at the first
    /// error or non-zero exit and returns all outputs so far.
    fn run_steps(
        &self,
        steps: &[(Vec<String>, Option<&[u8]>)],
        deadline: Instant,
    ) -> Result<Vec<Output>, ChannelError> {
        let shell_id = self.create_shell(deadline)?;
        let mut outputs = Vec::new();
        let mut result = Ok(());
        for (argv, stdin) in steps {
            match self.run_in_shell(&shell_id, argv, *stdin, deadline) {
                Ok(out) => {
                    let failed = out.status != 0;
                    outputs.push(out);
                    if failed {
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.delete_shell(&shell_id);
        result.map(|()| outputs)
    }
}

impl Channel for WinRm {
    /// Identify (unauthenticated), then `cmd /c exit 0` with the
    /// credentials: Ok means WinRM is up and accepts us.
    fn login(&mut self, timeout: Duration) -> Result<(), ChannelError> {
        let deadline = Instant::now() + timeout;
        self.identify(timeout)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let argv = ["cmd", "/c", "exit", "0"].map(String::from);
        let out = self.run(&argv, left.max(MIN_OPERATION_TIMEOUT))?;
        if out.status != 0 {
            return Err(ChannelError::Protocol(anyhow!(
                "{}: login check `cmd /c exit 0` exited {}",
                self.what("Command"),
                out.status
            )));
        }
        Ok(())
    }

    /// One shell per call: Create, Command (argv[0] as Command, each further
    /// element as one Arguments element, XML-escaped), Receive until Done,
    /// Signal terminate, Delete. Windows joins Command and Arguments with
    /// spaces into one command line, so an element holding spaces needs its
    /// own quotes, as on a cmd.exe line.
    fn run(&mut self, argv: &[String], timeout: Duration) -> Result<Output, ChannelError> {
        let deadline = Instant::now() + timeout;
        let mut outs = self.run_steps(&[(argv.to_vec(), None)], deadline)?;
        outs.pop().ok_or_else(|| {
            ChannelError::Protocol(anyhow!("{}: no command output", self.what("Receive")))
        })
    }

    /// Writes the file without putting its content in any command line: in
    /// one shell, `cmd /c findstr "^" > "PATH.reimage-b64"` gets the data as
    /// base64 lines on stdin (WS-Man Send), `certutil -f -decode` turns that
    /// into PATH, and `cmd /c del /q` removes the temporary file. `certutil`
    /// and `findstr` ship with every Windows since XP/2003. `mode` does not
    /// apply on Windows (ACLs are inherited from the folder). PATH goes to
    /// cmd.exe as is (so `%TEMP%` expands) and must not hold `"` or line
    /// breaks.
    fn upload(
        &mut self,
        data: &[u8],
        path: &str,
        _mode: i32,
        timeout: Duration,
    ) -> Result<(), ChannelError> {
        if path.is_empty() || path.contains(['"', '\r', '\n']) {
            return Err(ChannelError::Protocol(anyhow!(
                "{}: upload path {path:?} is empty or holds a quote or line break",
                self.what("Command")
            )));
        }
        let deadline = Instant::now() + timeout;
        let tmp = format!("\"{path}.reimage-b64\"");
        let target = format!("\"{path}\"");
        let encoded = base64_lines(data);
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let steps = [
            (
                argv(&["cmd", "/c", "findstr", "\"^\"", ">", &tmp]),
                Some(encoded.as_bytes()),
            ),
            (argv(&["certutil", "-f", "-decode", &tmp, &target]), None),
            (argv(&["cmd", "/c", "del", "/q", &tmp]), None),
        ];
        let outs = self.run_steps(&steps, deadline)?;
        if let Some(bad) = outs.iter().position(|o| o.status != 0) {
            let (step, o) = (&steps[bad].0, &outs[bad]);
            return Err(ChannelError::Protocol(anyhow!(
                "{}: upload to {path}: `{}` exited {}: {}{}",
                self.what("Command"),
                step.join(" "),
                o.status,
                o.stdout.trim(),
                o.stderr.trim()
            )));
        }
        Ok(())
    }

    /// Which of several passwords the listener took, for events.
    fn login_note(&self) -> Option<String> {
        self.password_from().map(|f| format!("password: {f}"))
    }

    /// The listener's certificate as checked (HTTPS with a pin), for
    /// events.
    fn identity(&self) -> Option<String> {
        self.pin_note.borrow().clone()
    }

    /// Drops pooled connections and the security context; the next
    /// request connects and authenticates again. Right after a load, a
    /// certificate learned that is the one recorded before the load may
    /// have been the old OS's, still up (the OS module disconnects when
    /// the boot id says so): the next connection learns again.
    fn disconnect(&mut self) {
        self.session.replace(None);
        if let Some(l) = self.learning.get_mut()
            && l.previous.is_some()
            && l.seen.pinned() == l.previous
        {
            l.seen = tls::FirstUse::new();
            l.recorded = false;
            self.trust = tls::Trust::FirstUse(l.seen.clone());
        }
        self.agent = tls::agent(self.trust.clone(), CONNECT_TIMEOUT);
        self.anonymous = tls::agent(self.trust.clone(), CONNECT_TIMEOUT);
    }
}

/// The listener's lost context: a request found none to seal with.
fn lost(what: &str) -> ChannelError {
    ChannelError::Protocol(anyhow!(
        "{what}: the listener kept refusing the authenticated connection"
    ))
}

/// The signal check every wait loop makes; an interruption comes back as
/// `Timeout` holding [`signal::Interrupted`] (downcast to tell it apart).
fn check_signal() -> Result<(), ChannelError> {
    signal::check().map_err(|i| ChannelError::Timeout(anyhow::Error::new(i)))
}

/// A fresh `uuid:...` MessageID (random enough to pair requests and
/// answers; not a secret).
fn message_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let (a, b) = (next(), next());
    format!(
        "uuid:{:08X}-{:04X}-4{:03X}-{:04X}-{:012X}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFF,
        0x8000 | ((b >> 48) & 0x3FFF),
        b & 0xFFFF_FFFF_FFFF
    )
}

/// xs:duration as WS-Man wants it: `PT20.000S`.
fn xs_duration(d: Duration) -> String {
    format!("PT{}.{:03}S", d.as_secs(), d.subsec_millis())
}

/// The fault in a response, if it holds one: Code/Subcode/Value (or
/// Code/Value), Reason/Text (or the WSManFault Message) and the WSManFault
/// Code from the Detail.
fn parse_fault(text: &str, status: u16) -> Option<Fault> {
    let doc = xml::parse(text).ok()?;
    let f = xml::soap_fault(&doc)?;
    let wsman = f.detail.and_then(|d| xml::descendant(d, "WSManFault"));
    let reason = if f.reason.is_empty() {
        wsman
            .and_then(|w| xml::descendant(w, "Message"))
            .map(xml::text)
            .unwrap_or_default()
    } else {
        f.reason
    };
    let wsman_code = wsman
        .and_then(|w| w.attribute("Code"))
        .and_then(|c| c.trim().parse().ok());
    Some(Fault {
        status,
        subcode: f.subcodes.into_iter().next().unwrap_or(f.code),
        reason,
        wsman_code,
    })
}

/// What one ReceiveResponse carried.
#[derive(Debug, Default, PartialEq)]
struct ReceiveChunk {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Some(code) once CommandState is Done.
    exit_code: Option<i32>,
}

fn parse_receive(text: &str) -> anyhow::Result<ReceiveChunk> {
    let doc = xml::parse(text)
        .map_err(|e| anyhow!("the answer is not well-formed XML ({e}){}", snippet(text)))?;
    let Some(response) = xml::descendant(doc.root(), "ReceiveResponse") else {
        anyhow::bail!("the answer is not a ReceiveResponse{}", snippet(text));
    };
    let mut chunk = ReceiveChunk::default();
    for s in xml::descendants(response, "Stream") {
        let data = encoding::base64_decode(&xml::text(s))
            .ok_or_else(|| anyhow!("a Stream element holds invalid base64"))?;
        match s.attribute("Name") {
            Some("stdout") => chunk.stdout.extend(data),
            Some("stderr") => chunk.stderr.extend(data),
            _ => {}
        }
    }
    for state in xml::descendants(response, "CommandState") {
        let done = state
            .attribute("State")
            .is_some_and(|s| s.trim_end().ends_with("/Done"));
        if done {
            let code = xml::descendant(state, "ExitCode")
                .map(xml::text)
                .ok_or_else(|| anyhow!("CommandState Done without ExitCode"))?;
            // Windows exit codes are DWORDs; 0xC0000005 comes as 3221225477.
            let code = code
                .parse::<i64>()
                .map_err(|_| anyhow!("ExitCode {code:?} is not a number"))?;
            chunk.exit_code = Some(code as i32);
        }
    }
    Ok(chunk)
}

/// " (body: ...)" with an excerpt of an HTTP body, or nothing when empty.
fn snippet(text: &str) -> String {
    match crate::exec::excerpt(text, 5) {
        t if t.is_empty() => t,
        t => format!(" (body: {t})"),
    }
}

/// Base64 in CRLF-terminated lines of 76 characters, as certutil writes
/// and reads it.
fn base64_lines(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(57) {
        out.push_str(&encoding::base64_encode(chunk));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use testbed::port::Port;
    use testbed::winrm::USER;

    const PASSWORD: &str = "S3cret&<pw> \"x\"";

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "reimage-winrm-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("create scratch dir");
            Scratch(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The WinRM STAND-IN (tests/standins/winrm_standin.py, built from the
    /// MS-WSMV formats; no Windows runs here) with `USER`'s password
    /// `PASSWORD`, and a scratch directory for the client's files.
    struct Standin {
        standin: testbed::winrm::Standin,
        scratch: Scratch,
    }

    impl Standin {
        fn start(extra: &[&str]) -> Standin {
            Standin::start_on(&Port::new(), extra)
        }

        /// On `port`, which a test may hand to the next stand-in (the
        /// same computer, rebooted with another certificate).
        fn start_on(port: &Port, extra: &[&str]) -> Standin {
            Standin {
                standin: testbed::winrm::Standin::spawn(port, PASSWORD, extra),
                scratch: Scratch::new("standin"),
            }
        }

        /// When the stand-in said it listens.
        fn listening_at(&self) -> Instant {
            self.standin.listening_at()
        }

        fn config(&self, password: Option<&str>) -> WinRmConfig {
            let password_file = password.map(|p| {
                let f = self.scratch.path("client-password");
                std::fs::write(&f, format!("{p}\r\nsecond line ignored\n")).expect("write");
                f
            });
            client_config(self.standin.port(), password_file)
        }

        fn client(&self) -> WinRm {
            let _ = self.listening_at();
            WinRm::new(self.config(Some(PASSWORD))).expect("client")
        }
    }

    /// A client of 127.0.0.1:`port` as `USER`.
    fn client_config(port: u16, password_file: Option<PathBuf>) -> WinRmConfig {
        WinRmConfig {
            host: "127.0.0.1".into(),
            port,
            https: false,
            user: USER.into(),
            password_file,
            passwords: Vec::new(),
            auth: Auth::Negotiate,
            trust: Trust::System,
            operation_timeout: Duration::from_secs(20),
        }
    }

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const T: Duration = Duration::from_secs(20);

    #[test]
    fn identify_needs_no_credentials() {
        let s = Standin::start(&[]);
        s.listening_at();
        let w = WinRm::new(s.config(None)).expect("client");
        let id = w.identify(Duration::from_secs(5)).expect("identify");
        assert_eq!(id.vendor, "Microsoft Corporation");
        assert_eq!(id.version, "OS: 6.1.7601 SP: 1.0 Stack: 3.0");
        assert_eq!(id.protocol, NS_WSMAN);
    }

    #[test]
    fn runs_commands_with_exit_code_and_output() {
        let s = Standin::start(&[]);
        let mut w = s.client();
        w.login(T).expect("login");

        let out = w.run(&argv(&["hostname"]), T).expect("hostname");
        assert_eq!((out.status, out.stdout.as_str()), (0, "WIN-STANDIN\r\n"));

        // Quoted: cmd.exe (and the stand-in) would take a bare `&` as "run
        // the next command"; inside quotes echo prints it as is.
        let odd = "\"x&y <z>\" 'q' é";
        let out = w.run(&argv(&["cmd", "/c", "echo", odd]), T).expect("echo");
        assert_eq!(out.status, 0);
        assert_eq!(out.stdout, format!("{odd}\r\n"));
        assert_eq!(out.stderr, "");

        let out = w.run(&argv(&["cmd", "/c", "exit", "7"]), T).expect("exit");
        assert_eq!(out.status, 7);

        let out = w.run(&argv(&["frobnicate", "--now"]), T).expect("unknown");
        assert_eq!(out.status, 1);
        assert_eq!(out.stdout, "");
        assert!(
            out.stderr.starts_with("'frobnicate' is not recognized"),
            "{}",
            out.stderr
        );

        w.run(&argv(&["set-name", "LAB-PC-07"]), T)
            .expect("set-name");
        w.disconnect();
        let out = w.run(&argv(&["hostname"]), T).expect("hostname");
        assert_eq!(out.stdout, "LAB-PC-07\r\n");
    }

    #[test]
    fn long_command_outlasts_receive_timeouts() {
        let s = Standin::start(&[]);
        let mut cfg = s.config(Some(PASSWORD));
        s.listening_at();
        cfg.operation_timeout = Duration::from_secs(1);
        let mut w = WinRm::new(cfg).expect("client");
        let t0 = Instant::now();
        let out = w.run(&argv(&["sleep", "2.5"]), T).expect("sleep");
        assert_eq!((out.status, out.stdout.as_str()), (0, "slept 2.5\r\n"));
        assert!(t0.elapsed() >= Duration::from_millis(2500));
        assert!(w.timed_out_polls() >= 1, "no w:TimedOut fault seen");
        println!(
            "sleep 2.5 took {:?}, {} TimedOut polls",
            t0.elapsed(),
            w.timed_out_polls()
        );

        // Past the run's own timeout: Timeout, and soon.
        let t0 = Instant::now();
        let e = w
            .run(&argv(&["sleep", "30"]), Duration::from_millis(1500))
            .expect_err("must time out");
        assert!(matches!(e, ChannelError::Timeout(_)), "{e}");
        assert!(!e.is_fatal());
        // Well before the 30 s the command runs, with room for a loaded
        // machine (it normally returns in under 2.5 s).
        assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
        assert!(e.to_string().contains("sleep"), "{e}");
    }

    /// A client of the stand-in that tries `passwords` in order.
    fn with_passwords(s: &Standin, passwords: &[(&str, &str)]) -> WinRm {
        let mut cfg = s.config(None);
        cfg.passwords = passwords
            .iter()
            .map(|(p, from)| LoginPassword {
                secret: Secret::new(*p),
                from: from.to_string(),
            })
            .collect();
        WinRm::new(cfg).expect("client")
    }

    #[test]
    fn a_rejected_password_falls_back_to_the_next_and_the_taken_one_stays() {
        // The stand-in remembers a password change (SetPassword): the old
        // password gets 401 from then on, on new logins.
        let s = Standin::start(&[]);
        let mut w = s.client();
        let set = argv(&[
            "powershell",
            "-NoProfile",
            "-Command",
            "([adsi]'WinNT://./Administrator,user').SetPassword('New-Pw-4711')",
        ]);
        assert_eq!(w.run(&set, T).expect("set").status, 0);
        let mut old = WinRm::new(s.config(Some(PASSWORD))).expect("client");
        let e = old.login(T).expect_err("the old password is gone");
        assert!(matches!(e, ChannelError::Auth(_)), "{e}");

        // Tried in order: the rejected one first, then the taken one,
        // which the channel keeps for its next requests.
        let mut w = with_passwords(&s, &[(PASSWORD, "the image's"), ("New-Pw-4711", "kept")]);
        w.login(T).expect("the second password logs in");
        assert_eq!(w.login_note().as_deref(), Some("password: kept"));
        let before = w.handshakes();
        w.disconnect();
        w.login(T).expect("again");
        assert_eq!(
            w.handshakes(),
            before + 1,
            "no second try of the rejected one"
        );

        // All rejected: Auth naming each source, never a value; the next
        // login starts over from the first.
        let mut w = with_passwords(&s, &[("Wr0ng-1", "first"), ("Wr0ng-2", "second")]);
        let e = w.login(T).expect_err("none fits");
        assert!(matches!(e, ChannelError::Auth(_)), "{e}");
        let msg = format!("{e} {w:?}");
        assert!(msg.contains("first; second"), "{msg}");
        assert!(!msg.contains("Wr0ng-"), "{msg}");
        assert_eq!(w.login_note().as_deref(), Some("password: first"));
        // Two more rounds, then only the first password is sent.
        for _ in 0..2 {
            w.login(T).expect_err("none fits");
        }
        let before = w.handshakes();
        w.login(T).expect_err("none fits");
        assert_eq!(w.handshakes(), before + 1, "only the first after 3 rounds");
    }

    #[test]
    fn bad_password_is_fatal_auth_and_not_printed() {
        let s = Standin::start(&[]);
        s.listening_at();
        let wrong = "Wr0ng-pass";
        let mut w = WinRm::new(s.config(Some(wrong))).expect("client");
        let e = w.login(T).expect_err("must be rejected");
        assert!(matches!(e, ChannelError::Auth(_)), "{e}");
        assert!(e.is_fatal());
        let msg = format!("{e} {e:?} {w:?}");
        assert!(!msg.contains(wrong) && !msg.contains(PASSWORD), "{msg}");
        assert!(
            msg.contains(&format!("127.0.0.1:{}", s.standin.port())),
            "{msg}"
        );
        assert!(msg.contains("Create"), "{msg}");

        // No password file at all: the same class.
        let mut w = WinRm::new(s.config(None)).expect("client");
        let e = w.run(&argv(&["hostname"]), T).expect_err("no credentials");
        assert!(matches!(e, ChannelError::Auth(_)), "{e}");
    }

    #[test]
    fn closed_port_is_unreachable() {
        let port = testbed::port::closed();
        let w = WinRm::new(client_config(port, None)).expect("client");
        let e = w
            .identify(Duration::from_secs(2))
            .expect_err("nothing listens");
        assert!(matches!(e, ChannelError::Unreachable(_)), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("127.0.0.1:{port} Identify")),
            "{e}"
        );
    }

    #[test]
    fn detects_listener_soon_after_it_starts() {
        // The stand-in starts on the (held, closed) port once a probe was
        // refused, however slow the machine.
        let port = Port::new();
        let w = WinRm::new(client_config(port.num(), None)).expect("client");
        let mut standin = None;
        let t0 = Instant::now();
        let mut pause = Duration::from_millis(20);
        let mut failures = 0;
        let detected = loop {
            match w.identify(Duration::from_millis(500)) {
                Ok(_) => break Instant::now(),
                Err(ChannelError::Unreachable(_)) => {
                    failures += 1;
                    standin.get_or_insert_with(|| {
                        testbed::winrm::Standin::spawn(&port, PASSWORD, &[])
                    });
                }
                Err(e) => panic!("unexpected {e}"),
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "never detected");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        };
        let listening = standin.expect("started").listening_at();
        // How soon is a benchmark's question (examples/bench_ready.rs); this
        // test asserts that refused probes leave the client able to see the
        // listener once it is there.
        println!(
            "listener detected {:?} after it said it listens ({failures} refused probes)",
            detected.saturating_duration_since(listening)
        );
        assert!(failures > 0, "the stand-in was listening at once");
    }

    #[test]
    fn upload_writes_the_file_via_stdin() {
        let s = Standin::start(&[]);
        let mut w = s.client();
        let mut data = String::new();
        let mut i = 0;
        while data.len() < 150_000 {
            data.push_str(&format!("line {i}: secret=\"{i}\" & <é>\r\n"));
            i += 1;
        }
        let path = "C:\\Windows\\Temp\\unattend part.txt";
        w.upload(data.as_bytes(), path, 0o600, T).expect("upload");
        let out = w
            .run(&argv(&["cmd", "/c", "type", &format!("\"{path}\"")]), T)
            .expect("type");
        assert_eq!(out.status, 0);
        assert!(out.stdout == data, "uploaded content differs");
        let out = w
            .run(
                &argv(&["cmd", "/c", "type", &format!("\"{path}.reimage-b64\"")]),
                T,
            )
            .expect("type tmp");
        assert_eq!(out.status, 1, "temporary file left behind");

        let e = w.upload(b"x", "C:\\a\"b", 0, T).expect_err("quote in path");
        assert!(matches!(e, ChannelError::Protocol(_)));
    }

    /// A self-signed certificate for 127.0.0.1 (openssl), as a Windows
    /// listener's own: (certificate, key).
    fn self_signed(dir: &Scratch, tag: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.path(&format!("{tag}-cert.pem")),
            dir.path(&format!("{tag}-key.pem")),
        );
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl req failed");
        (cert, key)
    }

    /// The SHA-256 of a PEM certificate file.
    fn thumbprint_of(cert: &std::path::Path) -> [u8; 32] {
        let pem = std::fs::read(cert).expect("read cert");
        let der = ureq::tls::parse_pem(&pem)
            .find_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.der().to_vec()),
                _ => None,
            })
            .expect("a certificate");
        tls::sha256(&der)
    }

    #[test]
    fn stock_windows_takes_negotiate_with_sealed_messages_only() {
        // --stock: Basic off, AllowUnencrypted false, as Windows ships.
        let s = Standin::start(&["--stock"]);
        s.listening_at();
        for auth in [Auth::Negotiate, Auth::Ntlm] {
            let mut cfg = s.config(Some(PASSWORD));
            cfg.auth = auth;
            let mut w = WinRm::new(cfg).expect("client");
            w.login(T).expect("login");
            let out = w.run(&argv(&["hostname"]), T).expect("hostname");
            assert_eq!(out.stdout, "WIN-STANDIN\r\n", "{auth:?}");
            // One handshake for the connection, not one per request.
            assert_eq!(w.handshakes(), 1, "{auth:?}");
            w.disconnect();
            w.run(&argv(&["hostname"]), T).expect("after disconnect");
            assert_eq!(w.handshakes(), 2, "{auth:?}");
        }
        // Basic: the listener offers only Negotiate; a settings error at
        // once, saying what to change.
        let mut cfg = s.config(Some(PASSWORD));
        cfg.auth = Auth::Basic;
        let mut w = WinRm::new(cfg).expect("client");
        let t0 = Instant::now();
        let e = w.login(T).expect_err("Basic is off");
        assert!(matches!(e, ChannelError::Config(_)), "{e}");
        assert!(e.is_fatal());
        let m = e.to_string();
        assert!(
            m.contains("does not accept Basic") && m.contains("offering Negotiate"),
            "{m}"
        );
        assert!(m.contains("leave `auth` out"), "{m}");
        assert!(!m.contains(PASSWORD));
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_wrong_password_over_negotiate_is_auth() {
        let s = Standin::start(&["--stock"]);
        s.listening_at();
        let wrong = "Wr0ng-pass";
        let mut w = WinRm::new(s.config(Some(wrong))).expect("client");
        let e = w.login(T).expect_err("must be rejected");
        assert!(matches!(e, ChannelError::Auth(_)), "{e}");
        let msg = format!("{e} {e:?} {w:?}");
        assert!(msg.contains("HTTP 401"), "{msg}");
        assert!(!msg.contains(wrong) && !msg.contains(PASSWORD), "{msg}");
    }

    #[test]
    fn a_context_lost_with_its_connection_is_made_again() {
        // The stand-in reboots (SIGUSR1): every connection and context is
        // gone; the channel authenticates on the new connection by itself.
        let s = Standin::start(&["--stock"]);
        let mut w = s.client();
        w.run(&argv(&["hostname"]), T).expect("hostname");
        assert_eq!(w.handshakes(), 1);
        let pid = s.standin.pid().to_string();
        let killed = Command::new("kill")
            .args(["-USR1", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        let t0 = Instant::now();
        // Down first (once the stand-in took the signal; down for its next
        // connections)...
        while w.identify(Duration::from_secs(1)).is_ok() {
            assert!(t0.elapsed() < Duration::from_secs(30), "never went down");
            std::thread::sleep(Duration::from_millis(20));
        }
        // ...then up again on a new boot, with nothing of the old context.
        loop {
            match w.run(&argv(&["hostname"]), Duration::from_secs(5)) {
                Ok(out) if out.stdout == "WIN-STANDIN\r\n" => break,
                Ok(out) => panic!("{out:?}"),
                Err(e) if !e.is_fatal() => {
                    assert!(t0.elapsed() < Duration::from_secs(30), "{e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(w.handshakes() >= 2, "{}", w.handshakes());
    }

    #[test]
    fn https_pins_a_thumbprint_or_learns_one() {
        let dir = Scratch::new("pin");
        let (cert_a, key_a) = self_signed(&dir, "a");
        let (cert_b, key_b) = self_signed(&dir, "b");
        let (a, b) = (thumbprint_of(&cert_a), thumbprint_of(&cert_b));
        let tls_args = |c: &PathBuf, k: &PathBuf| {
            [
                "--stock".to_string(),
                "--tls-cert".into(),
                c.display().to_string(),
                "--tls-key".into(),
                k.display().to_string(),
            ]
        };
        let args_a = tls_args(&cert_a, &key_a);
        let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
        let s = Standin::start(&args_a);
        s.listening_at();
        let https = |trust: Trust| {
            let mut cfg = s.config(Some(PASSWORD));
            cfg.https = true;
            cfg.trust = trust;
            WinRm::new(cfg).expect("client")
        };
        // Pinned: names are not checked (the certificate says 127.0.0.1
        // either way, but no CA vouches for it).
        let mut w = https(Trust::Pinned(a));
        w.run(&argv(&["hostname"]), T).expect("pinned");
        let e = https(Trust::Pinned(b))
            .identify(Duration::from_secs(5))
            .expect_err("wrong pin");
        assert!(matches!(e, ChannelError::HostKey(_)), "{e}");
        assert!(e.to_string().contains(&tls::fmt_thumbprint(&a)), "{e}");

        // Learned: recorded on first use, then pinned.
        let file = dir.path("state/winrm-thumbprint");
        let learned = |before_load| Trust::Learned {
            file: file.clone(),
            before_load,
        };
        let mut w = https(learned(false));
        w.run(&argv(&["hostname"]), T).expect("first use");
        assert_eq!(
            pin::read(&file),
            Ok(Some(pin::Record {
                pin: a,
                replaceable: false
            }))
        );
        assert!(w.identity().expect("note").contains("learned"));
        drop(s);

        // The computer now shows certificate b: refused, no load ran.
        let args_b = tls_args(&cert_b, &key_b);
        let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
        let s = Standin::start(&args_b);
        s.listening_at();
        let https = |trust: Trust| {
            let mut cfg = s.config(Some(PASSWORD));
            cfg.https = true;
            cfg.trust = trust;
            WinRm::new(cfg).expect("client")
        };
        let e = https(learned(false))
            .identify(Duration::from_secs(5))
            .expect_err("changed without a load");
        assert!(matches!(e, ChannelError::HostKey(_)), "{e}");
        let m = e.to_string();
        assert!(m.contains(&tls::fmt_thumbprint(&b)), "{m}");
        assert!(m.contains("no load ran"), "{m}");
        // A before-load channel checks (refuses b) and marks the record.
        let before = https(learned(true));
        assert!(before.identify(Duration::from_secs(5)).is_err());
        assert_eq!(
            pin::read(&file).map(|r| r.map(|r| r.replaceable)),
            Ok(Some(true))
        );
        // The first connection after the load takes b, and pins it.
        let mut w = https(learned(false));
        w.run(&argv(&["hostname"]), T).expect("after the load");
        assert_eq!(
            pin::read(&file),
            Ok(Some(pin::Record {
                pin: b,
                replaceable: false
            }))
        );
        assert!(w.identity().expect("note").contains("replacing"));
        drop(s);

        // The next load: its first connection reaches the old OS, still
        // up with b (the OS module disconnects on the old boot id); the
        // new OS then comes up with a, which the channel takes.
        let args_b = tls_args(&cert_b, &key_b);
        let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
        let port = Port::new();
        let s = Standin::start_on(&port, &args_b);
        s.listening_at();
        let mut cfg = s.config(Some(PASSWORD));
        cfg.https = true;
        cfg.trust = learned(true);
        WinRm::new(cfg.clone()).expect("before the load");
        cfg.trust = learned(false);
        let mut w = WinRm::new(cfg).expect("after the load");
        w.run(&argv(&["hostname"]), T).expect("the old OS");
        w.disconnect();
        drop(s);
        let s = Standin::start_on(&port, &args_a);
        s.listening_at();
        w.run(&argv(&["hostname"]), T).expect("the new OS");
        assert_eq!(pin::read(&file).map(|r| r.map(|r| r.pin)), Ok(Some(a)));
        // From now on this run holds to a.
        drop(s);
        let s = Standin::start_on(&port, &args_b);
        s.listening_at();
        w.disconnect();
        let e = w
            .run(&argv(&["hostname"]), T)
            .expect_err("changed in the run");
        assert!(e.to_string().contains("changed during this run"), "{e}");
    }

    #[test]
    fn https_verifies_against_the_ca_file() {
        let dir = Scratch::new("tls");
        let (cert, key) = self_signed(&dir, "a");
        let cert_s = cert.to_string_lossy().into_owned();
        let key_s = key.to_string_lossy().into_owned();
        let s = Standin::start(&["--tls-cert", &cert_s, "--tls-key", &key_s]);
        s.listening_at();

        let mut cfg = s.config(Some(PASSWORD));
        cfg.https = true;
        cfg.trust = Trust::CaFile(cert.clone());
        let mut w = WinRm::new(cfg.clone()).expect("client");
        w.login(T).expect("login over HTTPS with the CA file");
        let out = w.run(&argv(&["hostname"]), T).expect("hostname");
        assert_eq!(out.stdout, "WIN-STANDIN\r\n");

        cfg.trust = Trust::System;
        let w = WinRm::new(cfg.clone()).expect("client");
        let e = w.identify(Duration::from_secs(5)).expect_err("untrusted");
        println!("without CA file: {e}");
        assert!(matches!(e, ChannelError::HostKey(_)), "{e}");
        assert!(e.is_fatal());
        assert!(e.to_string().contains("TLS certificate"), "{e}");

        cfg.trust = Trust::Insecure;
        let w = WinRm::new(cfg).expect("client");
        w.identify(Duration::from_secs(5))
            .expect("insecure opt-out");
    }

    /// Not a timed assertion: prints what one command costs over Basic (in
    /// clear, the stand-in allowing it) and over Negotiate with every
    /// message sealed (the stand-in as Windows ships it), as a benchmark
    /// would; the results only have to be right.
    #[test]
    fn round_trip_of_one_command_basic_vs_negotiate() {
        const N: usize = 40;
        let mut report = Vec::new();
        for (auth, extra) in [(Auth::Basic, &[][..]), (Auth::Negotiate, &["--stock"][..])] {
            let s = Standin::start(extra);
            s.listening_at();
            let mut cfg = s.config(Some(PASSWORD));
            cfg.auth = auth;
            let mut w = WinRm::new(cfg).expect("client");
            let t0 = Instant::now();
            let out = w.run(&argv(&["hostname"]), T).expect("first");
            let first = t0.elapsed();
            assert_eq!(out.stdout, "WIN-STANDIN\r\n");
            let mut times: Vec<Duration> = (0..N)
                .map(|_| {
                    let t0 = Instant::now();
                    let out = w.run(&argv(&["hostname"]), T).expect("run");
                    assert_eq!(out.status, 0);
                    t0.elapsed()
                })
                .collect();
            times.sort();
            report.push(format!(
                "{auth:?}: first command (with the connection{}) {first:?}; then median {:?}, p90 {:?} over {N} (5 HTTP requests each: Create, Command, Receive, Signal, Delete)",
                if auth == Auth::Basic { "" } else { " and the NTLM handshake" },
                times[N / 2],
                times[N * 9 / 10]
            ));
        }
        for line in report {
            println!("winrm round trip: {line}");
        }
    }

    #[test]
    fn faults_are_parsed() {
        let xml = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault>
            <s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:TimedOut</s:Value></s:Subcode></s:Code>
            <s:Reason><s:Text xml:lang="en-US">The WS-Management service cannot complete the operation.</s:Text></s:Reason>
            <s:Detail><f:WSManFault xmlns:f="urn:f" Code="2150858793" Machine="m"><f:Message>m</f:Message></f:WSManFault></s:Detail>
            </s:Fault></s:Body></s:Envelope>"#;
        let f = parse_fault(xml, 500).expect("fault");
        assert_eq!(f.subcode, "w:TimedOut");
        assert_eq!(f.wsman_code, Some(FAULT_TIMED_OUT));
        assert!(f.is_timed_out());
        assert!(f.to_string().contains("cannot complete"), "{f}");
        let other = parse_fault(
            &xml.replace("2150858793", "1").replace("TimedOut", "Other"),
            500,
        );
        assert!(!other.expect("fault").is_timed_out());
        assert!(parse_fault("<html>oops</html>", 500).is_none());
        assert!(parse_fault("<html>oops", 500).is_none());
        // No Reason/Text: the WSManFault's Message is the reason.
        let message_only = parse_fault(
            &xml.replace("<s:Text", "<s:Other")
                .replace("</s:Text>", "</s:Other>"),
            500,
        );
        assert_eq!(message_only.expect("fault").reason, "m");
    }

    #[test]
    fn receive_responses_are_parsed() {
        let xml = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
            xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Body><rsp:ReceiveResponse>
            <rsp:Stream Name="stdout" CommandId="C">aGkN
            Cg==</rsp:Stream><rsp:Stream Name="stderr" CommandId="C">b29wcw==</rsp:Stream>
            <rsp:Stream Name="stdout" CommandId="C" End="true"></rsp:Stream>
            <rsp:CommandState CommandId="C" State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done">
            <rsp:ExitCode>3221225477</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse></s:Body></s:Envelope>"#;
        let c = parse_receive(xml).expect("parse");
        assert_eq!(c.stdout, b"hi\r\n");
        assert_eq!(c.stderr, b"oops");
        assert_eq!(c.exit_code, Some(0xC000_0005_u32 as i32));
        let running = xml.replace("CommandState/Done", "CommandState/Running");
        assert_eq!(parse_receive(&running).expect("parse").exit_code, None);
        let no_response = parse_receive("<x/>").expect_err("not a ReceiveResponse");
        assert!(no_response.to_string().contains("not a ReceiveResponse"));
        let malformed = parse_receive("<rsp:ReceiveResponse>").expect_err("malformed");
        assert!(
            malformed.to_string().contains("not well-formed"),
            "{malformed}"
        );
        assert!(parse_receive(&xml.replace("b29wcw==", "b29w!!")).is_err());
        assert!(parse_receive(&xml.replace("3221225477", "x")).is_err());
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(encoding::base64_encode(b""), "");
        assert_eq!(encoding::base64_encode(b"f"), "Zg==");
        assert_eq!(encoding::base64_encode(b"fo"), "Zm8=");
        assert_eq!(encoding::base64_encode(b"foo"), "Zm9v");
        assert_eq!(encoding::base64_encode(b"foobar"), "Zm9vYmFy");
        let all: Vec<u8> = (0..=255).collect();
        for n in 0..all.len() {
            assert_eq!(
                encoding::base64_decode(&encoding::base64_encode(&all[..n])).as_deref(),
                Some(&all[..n])
            );
        }
        assert_eq!(
            encoding::base64_decode(&base64_lines(&all)).as_deref(),
            Some(&all[..])
        );
        assert!(base64_lines(&all).lines().all(|l| l.len() <= 76));
        assert_eq!(encoding::base64_decode("Zg=x"), None);
        assert_eq!(encoding::base64_decode("Z"), None);
    }

    #[test]
    fn small_formats() {
        assert_eq!(xs_duration(Duration::from_millis(20_500)), "PT20.500S");
        let (a, b) = (message_id(), message_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), "uuid:".len() + 36);
        assert!(a.starts_with("uuid:"));
    }
}
