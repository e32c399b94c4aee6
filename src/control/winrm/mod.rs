//! WinRM channel: WS-Management (DMTF DSP0226, Microsoft MS-WSMV) over HTTP
//! or HTTPS with `ureq`, Basic authentication, and the Windows Remote Shell
//! resource (`.../windows/shell/cmd`).
//!
//! The protocol needed here is six SOAP messages (Identify, Create, Command,
//! Send, Receive, Signal, Delete): they are written as format strings with
//! [`xml::escape`] and read with [`crate::xml`] (roxmltree), matching element
//! names by local name in any namespace, as WinRM versions differ in the
//! prefixes they use.
//!
//! Error classes (see [`ChannelError`]): connection refused, reset, or no
//! answer in time → `Unreachable`; HTTP 401/403 → `Auth` (fatal); a TLS
//! certificate that does not verify → `HostKey` (fatal: the computer is not
//! the one the CA vouches for, a reload will not change that); a command
//! past its deadline → `Timeout`; anything malformed or any other SOAP fault
//! → `Protocol`. Messages name host, port and the WS-Man action; the
//! password never appears in them, in logs, or in any process's argv.

use super::{Channel, ChannelError, CommandOutput};
use crate::encoding;
use crate::secret::Secret;
use crate::signal;
use crate::xml;
use anyhow::{Context, anyhow};
use std::fmt;
use std::path::PathBuf;
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
/// Extra time the HTTP layer waits beyond the OperationTimeout the server
/// was given, so the server's own TimedOut fault arrives first.
const HTTP_GRACE: Duration = Duration::from_secs(5);
/// Shortest OperationTimeout sent; Windows rejects tiny values.
const MIN_OPERATION_TIMEOUT: Duration = Duration::from_millis(500);
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
    /// Account for Basic authentication (a local account on the computer).
    pub user: String,
    /// File whose first line is the password; the password is never put in
    /// argv, logs or error messages. None: send no credentials (any command
    /// then fails with `Auth`).
    pub password_file: Option<PathBuf>,
    /// PEM file with the CA certificate(s) that signed the listener's
    /// certificate. Without it, HTTPS verifies against the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// Skip TLS certificate verification: an explicit opt-out for labs whose
    /// listeners use throw-away self-signed certificates.
    pub insecure: bool,
    /// WS-Man OperationTimeout for each request; a Receive waits at most
    /// this long on the server before answering `w:TimedOut`.
    pub operation_timeout: Duration,
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

/// A WinRM connection to one computer: an HTTP agent (keeps connections
/// alive between requests) plus the Basic credentials.
pub struct WinRm {
    cfg: WinRmConfig,
    url: String,
    /// `Basic base64(user:password)`, or None without a password file.
    authorization: Option<Secret>,
    tls: ureq::tls::TlsConfig,
    agent: ureq::Agent,
    /// How many Receive polls came back `w:TimedOut` (a long command);
    /// for progress reports and tests.
    timed_out_polls: std::cell::Cell<u64>,
}

impl fmt::Debug for WinRm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WinRm")
            .field("url", &self.url)
            .field("user", &self.cfg.user)
            .field("authorization", &self.authorization)
            .finish()
    }
}

/// What one WS-Man request got back: a SOAP body, or a SOAP fault.
enum Reply {
    Body(String),
    Fault(Fault),
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

impl WinRm {
    /// Reads the password file and the CA file and prepares the HTTP agent;
    /// connects to nothing yet.
    pub fn new(cfg: WinRmConfig) -> anyhow::Result<WinRm> {
        let host = if cfg.host.contains(':') && !cfg.host.starts_with('[') {
            format!("[{}]", cfg.host)
        } else {
            cfg.host.clone()
        };
        let scheme = if cfg.https { "https" } else { "http" };
        let url = format!("{scheme}://{host}:{}/wsman", cfg.port);

        let authorization = match &cfg.password_file {
            None => None,
            Some(path) => {
                let password = Secret::from_file(path, "the WinRM password file")?;
                Some(Secret::basic_auth(&cfg.user, &password))
            }
        };

        let mut tls = ureq::tls::TlsConfig::builder();
        if cfg.insecure {
            tls = tls.disable_verification(true);
        } else if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("reading the WinRM CA file {}", ca.display()))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                let item = item.with_context(|| format!("parsing the CA file {}", ca.display()))?;
                if let ureq::tls::PemItem::Certificate(c) = item {
                    certs.push(c);
                }
            }
            if certs.is_empty() {
                anyhow::bail!(
                    "the WinRM CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    ca.display()
                );
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let tls = tls.build();
        let agent = make_agent(&tls);
        Ok(WinRm {
            cfg,
            url,
            authorization,
            tls,
            agent,
            timed_out_polls: std::cell::Cell::new(0),
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

    /// Sends one SOAP message and sorts the answer: a body, a fault, or a
    /// classified error.
    fn post(
        &self,
        action: &str,
        body: &str,
        timeout: Duration,
        authenticate: bool,
    ) -> Result<Reply, ChannelError> {
        let what = self.what(action);
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", CONTENT_TYPE);
        if authenticate {
            if let Some(auth) = &self.authorization {
                req = req.header("Authorization", auth.expose());
            }
        } else {
            req = req.header("WSMANIDENTIFY", "unauthenticated");
        }
        let result = req
            .config()
            .timeout_global(Some(timeout))
            .build()
            .send(body);
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => return Err(self.classify(&what, e, timeout)),
        };
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            let hint = if self.authorization.is_none() {
                "no password file is configured"
            } else {
                "check the user name and the password file; Basic authentication must be allowed (winrm set winrm/config/service/auth @{Basic=\"true\"})"
            };
            return Err(ChannelError::Auth(anyhow!(
                "{what}: credentials for user {:?} rejected (HTTP {status}); {hint}",
                self.cfg.user
            )));
        }
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.classify(&what, e, timeout))?;
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
        let hint = if self.cfg.ca_file.is_some() {
            "the listener's certificate is not signed by the CA in the CA file, or not issued for this host name"
        } else {
            "give the CA that signed the listener's certificate as the CA file, or opt out of verification (insecure) for a lab"
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
    ) -> Result<CommandOutput, ChannelError> {
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
                return Ok(CommandOutput {
                    status,
                    stdout: String::from_utf8_lossy(&stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
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
    ) -> Result<CommandOutput, ChannelError> {
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
    ) -> Result<Vec<CommandOutput>, ChannelError> {
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
    fn run(&mut self, argv: &[String], timeout: Duration) -> Result<CommandOutput, ChannelError> {
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

    /// Drops pooled connections; the next request connects again.
    fn disconnect(&mut self) {
        self.agent = make_agent(&self.tls);
    }
}

/// An agent that returns 4xx/5xx responses instead of errors (WS-Man sends
/// faults with HTTP 500) and connects within 10 s at most.
fn make_agent(tls: &ureq::tls::TlsConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls.clone())
        .timeout_connect(Some(Duration::from_secs(10)))
        .user_agent(concat!("reimage/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
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
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;

    const USER: &str = "Administrator";
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
    /// MS-WSMV formats; no Windows runs here) as a child process, killed on
    /// drop.
    struct Standin {
        child: Child,
        port: u16,
        listening: mpsc::Receiver<Instant>,
        scratch: Scratch,
    }

    impl Standin {
        fn start(extra: &[&str]) -> Standin {
            let scratch = Scratch::new("standin");
            let pw = scratch.path("server-password");
            std::fs::write(&pw, format!("{PASSWORD}\n")).expect("write password file");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("pick a free port")
                .port();
            let script = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/standins/winrm_standin.py"
            );
            let mut child = Command::new("python3")
                .arg(script)
                .args([
                    "--port",
                    &port.to_string(),
                    "--user",
                    USER,
                    "--password-file",
                ])
                .arg(&pw)
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start python3 winrm_standin.py");
            let stdout = child.stdout.take().expect("stand-in stdout");
            let (tx, listening) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.contains("listening") {
                        let _ = tx.send(Instant::now());
                    }
                }
            });
            Standin {
                child,
                port,
                listening,
                scratch,
            }
        }

        /// When the stand-in said it listens.
        fn listening_at(&self) -> Instant {
            self.listening
                .recv_timeout(Duration::from_secs(15))
                .expect("stand-in did not start listening")
        }

        fn config(&self, password: Option<&str>) -> WinRmConfig {
            let password_file = password.map(|p| {
                let f = self.scratch.path("client-password");
                std::fs::write(&f, format!("{p}\r\nsecond line ignored\n")).expect("write");
                f
            });
            WinRmConfig {
                host: "127.0.0.1".into(),
                port: self.port,
                https: false,
                user: USER.into(),
                password_file,
                ca_file: None,
                insecure: false,
                operation_timeout: Duration::from_secs(20),
            }
        }

        fn client(&self) -> WinRm {
            let _ = self.listening_at();
            WinRm::new(self.config(Some(PASSWORD))).expect("client")
        }
    }

    impl Drop for Standin {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
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
        assert!(msg.contains(&format!("127.0.0.1:{}", s.port)), "{msg}");
        assert!(msg.contains("Create"), "{msg}");

        // No password file at all: the same class.
        let mut w = WinRm::new(s.config(None)).expect("client");
        let e = w.run(&argv(&["hostname"]), T).expect_err("no credentials");
        assert!(matches!(e, ChannelError::Auth(_)), "{e}");
    }

    #[test]
    fn closed_port_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let cfg = WinRmConfig {
            host: "127.0.0.1".into(),
            port,
            https: false,
            user: USER.into(),
            password_file: None,
            ca_file: None,
            insecure: false,
            operation_timeout: Duration::from_secs(5),
        };
        let w = WinRm::new(cfg).expect("client");
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
        let s = Standin::start(&["--delay-start", "1.5"]);
        let w = WinRm::new(s.config(None)).expect("client");
        let t0 = Instant::now();
        let mut pause = Duration::from_millis(20);
        let mut failures = 0;
        let detected = loop {
            match w.identify(Duration::from_millis(500)) {
                Ok(_) => break Instant::now(),
                Err(ChannelError::Unreachable(_)) => failures += 1,
                Err(e) => panic!("unexpected {e}"),
            }
            assert!(t0.elapsed() < Duration::from_secs(15), "never detected");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        };
        let listening = s.listening_at();
        let delay = detected.saturating_duration_since(listening);
        println!(
            "listener detected {delay:?} after it started listening ({failures} refused probes, {:?} after the first)",
            detected - t0
        );
        assert!(failures > 0, "the stand-in was listening at once");
        // How soon is a benchmark's question; this bound only tells a
        // client that keeps probing from one that stops, on a loaded machine.
        assert!(delay < Duration::from_secs(5), "detected after {delay:?}");
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

    #[test]
    fn https_verifies_against_the_ca_file() {
        let dir = Scratch::new("tls");
        let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
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
        let cert_s = cert.to_string_lossy().into_owned();
        let key_s = key.to_string_lossy().into_owned();
        let s = Standin::start(&["--tls-cert", &cert_s, "--tls-key", &key_s]);
        s.listening_at();

        let mut cfg = s.config(Some(PASSWORD));
        cfg.https = true;
        cfg.ca_file = Some(cert.clone());
        let mut w = WinRm::new(cfg.clone()).expect("client");
        w.login(T).expect("login over HTTPS with the CA file");
        let out = w.run(&argv(&["hostname"]), T).expect("hostname");
        assert_eq!(out.stdout, "WIN-STANDIN\r\n");

        cfg.ca_file = None;
        let w = WinRm::new(cfg.clone()).expect("client");
        let e = w.identify(Duration::from_secs(5)).expect_err("untrusted");
        println!("without CA file: {e}");
        assert!(matches!(e, ChannelError::HostKey(_)), "{e}");
        assert!(e.is_fatal());
        assert!(e.to_string().contains("TLS certificate"), "{e}");

        cfg.insecure = true;
        let w = WinRm::new(cfg).expect("client");
        w.identify(Duration::from_secs(5))
            .expect("insecure opt-out");
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
