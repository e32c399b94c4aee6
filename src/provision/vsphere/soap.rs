//! vim25 SOAP over ureq: one POST to `/sdk` per call, the session cookie
//! (`vmware_soap_session`), answers read with roxmltree, and faults
//! classified by their type (the `xsi:type` of the element in the fault's
//! `detail`), never by their message.
//!
//! A call runs on a helper thread while the caller watches the signal flag,
//! so SIGINT/SIGTERM ends a load at once even in a long blocking call (the
//! abandoned request ends at its own timeout or with the process). A Login
//! is the exception: the session it opens would outlive an abandoned
//! request, so its answer is still waited for, up to [`SETTLE`], and the
//! session it opened is logged out.

use std::cell::RefCell;
use std::fmt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::secret::Secret;
use crate::signal;
use crate::xml::escape;

/// The session cookie's name, as ESXi and vCenter set it.
pub const COOKIE: &str = "vmware_soap_session";
/// How often a waiting call looks at the signal flag.
const SIGNAL_TICK: Duration = Duration::from_millis(100);
/// The longest answer read (property dumps of big inventories are large).
const MAX_BODY: u64 = 64 << 20;

/// A managed object reference: `<x type="VirtualMachine">vm-42</x>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoRef {
    pub ty: String,
    pub value: String,
}

impl MoRef {
    pub fn new(ty: &str, value: &str) -> MoRef {
        MoRef {
            ty: ty.into(),
            value: value.into(),
        }
    }

    /// The reference as element `tag`.
    pub fn xml(&self, tag: &str) -> String {
        format!(
            "<{tag} type=\"{}\">{}</{tag}>",
            escape(&self.ty),
            escape(&self.value)
        )
    }
}

impl fmt::Display for MoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ty, self.value)
    }
}

/// An owned XML element of an answer: enough of it to read properties, and
/// its source text to send parts of it back (a device being edited).
#[derive(Debug, Clone, Default)]
pub struct Elem {
    /// Local name.
    pub name: String,
    /// Local part of `xsi:type`, if any.
    pub xsi_type: Option<String>,
    /// The `type` attribute (managed object references).
    pub mo_type: Option<String>,
    /// Text of a leaf.
    pub text: String,
    pub children: Vec<Elem>,
    /// The element as it appeared in the answer.
    pub raw: String,
}

const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// The source text of `n` with the answer's prefix of the XML Schema
/// instance namespace written `xsi`, the one the requests declare: an
/// element sent back (a device being edited) keeps its `xsi:type`. vcsim
/// answers with `XMLSchema-instance:type`, declared on an ancestor the
/// element's text leaves behind; sent back as is, the server reads the
/// device's backing as a bare VirtualDeviceBackingInfo and the clone's NIC
/// loses its network.
fn xsi_as_sent(n: roxmltree::Node, raw: &str) -> String {
    match n.lookup_prefix(XSI) {
        Some(p) if !p.is_empty() && p != "xsi" => raw.replace(&format!("{p}:type="), "xsi:type="),
        _ => raw.to_string(),
    }
}

impl Elem {
    fn from_node(n: roxmltree::Node, src: &str) -> Elem {
        let xsi_type = n
            .attribute((XSI, "type"))
            .map(|t| t.rsplit(':').next().unwrap_or(t).to_string());
        let children: Vec<Elem> = n
            .children()
            .filter(|c| c.is_element())
            .map(|c| Elem::from_node(c, src))
            .collect();
        let text = if children.is_empty() {
            n.text().unwrap_or("").to_string()
        } else {
            String::new()
        };
        Elem {
            name: n.tag_name().name().to_string(),
            xsi_type,
            mo_type: n
                .attributes()
                .find(|a| a.name() == "type" && a.namespace().is_none())
                .map(|a| a.value().to_string()),
            text,
            children,
            raw: xsi_as_sent(n, src.get(n.range()).unwrap_or("")),
        }
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Elem> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Elem> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The element at a `/`-separated path of child names.
    pub fn at(&self, path: &str) -> Option<&Elem> {
        path.split('/').try_fold(self, |e, name| e.child(name))
    }

    /// The text at a path.
    pub fn text_at(&self, path: &str) -> Option<&str> {
        self.at(path).map(|e| e.text.as_str())
    }

    /// This element as a managed object reference.
    pub fn moref(&self) -> Option<MoRef> {
        Some(MoRef::new(self.mo_type.as_deref()?, self.text.trim()))
    }
}

/// What went wrong in a call.
#[derive(Debug)]
pub enum Error {
    /// The server answered with a SOAP fault (or a task ended in one).
    Fault {
        /// The fault type, e.g. `InvalidLogin`, `FileNotFound`.
        ty: String,
        message: String,
        detail: Box<Elem>,
    },
    /// No usable answer: connection, timeout, TLS, HTTP status.
    Transport { retry: bool, message: String },
    /// An answer we cannot read.
    Malformed(String),
    /// SIGINT/SIGTERM arrived during the call.
    Interrupted(i32),
}

/// What a failed call means for the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Loading again will not help.
    Fatal,
    /// Loading again may help.
    Retry,
    /// The session expired: log in again, once, and repeat the call.
    Relogin,
}

/// Fault types that say "try again later". Subtypes of
/// InsufficientResourcesFault all start with `Insufficient`.
const RETRY_FAULTS: [&str; 11] = [
    "TaskInProgress",
    "HostConnectionLost",
    "HostNotConnected",
    "HostNotReachable",
    "HostCommunication",
    "ResourceInUse",
    "ConcurrentAccess",
    "RequestCanceled",
    "Timedout",
    "NotEnoughLicenses",
    "SystemError",
];

impl Error {
    /// The load's view of this error.
    pub fn class(&self) -> Class {
        match self {
            Error::Fault { ty, .. } => classify_fault(ty),
            Error::Transport { retry, .. } => {
                if *retry {
                    Class::Retry
                } else {
                    Class::Fatal
                }
            }
            Error::Malformed(_) => Class::Fatal,
            Error::Interrupted(_) => Class::Fatal,
        }
    }

    /// The fault type, if this is a fault.
    pub fn fault_type(&self) -> Option<&str> {
        match self {
            Error::Fault { ty, .. } => Some(ty),
            _ => None,
        }
    }
}

/// Classifies a fault by its type name.
pub fn classify_fault(ty: &str) -> Class {
    if ty == "NotAuthenticated" {
        Class::Relogin
    } else if ty.starts_with("Insufficient") || RETRY_FAULTS.contains(&ty) {
        Class::Retry
    } else {
        Class::Fatal
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Fault {
                ty,
                message,
                detail,
            } => {
                write!(f, "fault {ty}")?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                // What the fault is about, when it says (FileFault.file,
                // InvalidArgument.invalidProperty, ...).
                for key in ["file", "name", "invalidProperty", "privilegeId"] {
                    if let Some(v) = detail.text_at(key).filter(|v| !v.is_empty()) {
                        write!(f, " ({key} {v})")?;
                    }
                }
                Ok(())
            }
            Error::Transport { message, .. } | Error::Malformed(message) => f.write_str(message),
            Error::Interrupted(s) => write!(f, "{}", signal::Interrupted(*s)),
        }
    }
}

/// The SOAP endpoint and the session cookie.
pub struct Client {
    agent: ureq::Agent,
    /// `https://host/sdk`.
    url: String,
    /// `urn:vim25/VERSION`, from the endpoint's about.apiVersion once known.
    action: RefCell<String>,
    cookie: RefCell<Option<Secret>>,
}

/// What a call does when SIGINT/SIGTERM arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnSignal {
    /// Stops waiting: the call fails as interrupted.
    Stop,
    /// Runs to its end (the logout that follows an interrupt).
    Finish,
    /// Waits up to [`SETTLE`] more for the answer, to keep what the call
    /// opened (the session of a Login), then fails as interrupted.
    Settle,
}

/// How long a call that opens something (Login) is still waited for after
/// SIGINT/SIGTERM, so that what it opened can be closed.
pub const SETTLE: Duration = Duration::from_secs(10);

impl Client {
    pub fn new(agent: ureq::Agent, url: String) -> Client {
        Client {
            agent,
            url,
            action: RefCell::new("urn:vim25/6.0".into()),
            cookie: RefCell::new(None),
        }
    }

    /// Speaks this API version from now on (`SOAPAction: urn:vim25/V`).
    pub fn set_version(&self, v: &str) {
        *self.action.borrow_mut() = format!("urn:vim25/{v}");
    }

    pub fn has_session(&self) -> bool {
        self.cookie.borrow().is_some()
    }

    pub fn forget_session(&self) {
        *self.cookie.borrow_mut() = None;
    }

    /// Calls `method` on `this` with `body` (the request's elements after
    /// `_this`), within `timeout`. Ok is the `*Response` element.
    pub fn call(
        &self,
        method: &str,
        this: &MoRef,
        body: &str,
        timeout: Duration,
    ) -> Result<Elem, Error> {
        self.exchange(method, this, body, timeout, OnSignal::Stop).0
    }

    /// A call that runs even after SIGINT/SIGTERM: the logout that follows
    /// an interrupt.
    pub fn call_uninterruptible(
        &self,
        method: &str,
        this: &MoRef,
        body: &str,
        timeout: Duration,
    ) -> Result<Elem, Error> {
        self.exchange(method, this, body, timeout, OnSignal::Finish)
            .0
    }

    /// A call that opens something the server keeps (Login: a session):
    /// after SIGINT/SIGTERM its answer is still waited for, up to
    /// [`SETTLE`], so the caller learns whether it opened and can close
    /// it. The call's own result (its answer, or interrupted when none
    /// came in time), and the signal that came during it.
    pub fn call_settling(
        &self,
        method: &str,
        this: &MoRef,
        body: &str,
        timeout: Duration,
    ) -> (Result<Elem, Error>, Option<i32>) {
        self.exchange(method, this, body, timeout, OnSignal::Settle)
    }

    /// Sends one call on a helper thread and waits for its answer, looking
    /// at the signal flag every tick; what a signal does is `on_signal`'s.
    /// The answer (a session cookie it sets is kept), and the signal that
    /// came during the call.
    fn exchange(
        &self,
        method: &str,
        this: &MoRef,
        body: &str,
        timeout: Duration,
        on_signal: OnSignal,
    ) -> (Result<Elem, Error>, Option<i32>) {
        let signalled = || {
            if on_signal == OnSignal::Finish {
                None
            } else {
                signal::check().err().map(|i| i.0)
            }
        };
        if let Some(s) = signalled() {
            return (Err(Error::Interrupted(s)), Some(s));
        }
        let envelope = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"{XSI}\">\
<soapenv:Body><{method} xmlns=\"urn:vim25\">{}{body}</{method}></soapenv:Body></soapenv:Envelope>",
            this.xml("_this")
        );
        let agent = self.agent.clone();
        let url = self.url.clone();
        let action = self.action.borrow().clone();
        let cookie = self.cookie.borrow().clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(post(
                &agent,
                &url,
                &action,
                cookie.as_ref(),
                envelope,
                timeout,
            ));
        });
        // An interruption is an Err: nothing of the answer is kept.
        let (got, signal) = wait_answer(&rx, method, on_signal, &signalled);
        let answer = got.and_then(|(status, set_cookie, text)| {
            if let Some(c) = set_cookie {
                *self.cookie.borrow_mut() = Some(c);
            }
            parse_answer(method, status, &text)
        });
        (answer, signal)
    }
}

/// Waits for the request thread's answer, looking at the signal flag every
/// tick: a signal ends the wait at once (`OnSignal::Stop`) or after
/// [`SETTLE`] (`OnSignal::Settle`). The answer, and the signal that came.
fn wait_answer<T>(
    rx: &mpsc::Receiver<Result<T, Error>>,
    method: &str,
    on_signal: OnSignal,
    signalled: &dyn Fn() -> Option<i32>,
) -> (Result<T, Error>, Option<i32>) {
    let mut signal = None;
    let mut settle_until = None;
    loop {
        match rx.recv_timeout(SIGNAL_TICK) {
            Ok(r) => return (r, signal),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let e = Error::Transport {
                    retry: true,
                    message: format!("{method}: the request thread ended without an answer"),
                };
                return (Err(e), signal);
            }
        }
        if signal.is_none() {
            signal = signalled();
            if signal.is_some() && on_signal == OnSignal::Settle {
                settle_until = Some(Instant::now() + SETTLE);
            }
        }
        if let Some(s) = signal
            && (on_signal == OnSignal::Stop || settle_until.is_some_and(|u| Instant::now() >= u))
        {
            return (Err(Error::Interrupted(s)), signal);
        }
    }
}

/// One POST; (status, session cookie if set, body).
fn post(
    agent: &ureq::Agent,
    url: &str,
    action: &str,
    cookie: Option<&Secret>,
    envelope: String,
    timeout: Duration,
) -> Result<(u16, Option<Secret>, String), Error> {
    let mut req = agent
        .post(url)
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", action);
    if let Some(c) = cookie {
        req = req.header("Cookie", format!("{COOKIE}={}", c.expose()));
    }
    let mut resp = req
        .config()
        .timeout_global(Some(timeout))
        .build()
        .send(envelope)
        .map_err(|e| transport(e, timeout))?;
    let status = resp.status().as_u16();
    let set_cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session_cookie)
        .map(Secret::new);
    let text = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .map_err(|e| transport(e, timeout))?;
    Ok((status, set_cookie, text))
}

/// The value of `vmware_soap_session` in a Set-Cookie header (quotes kept:
/// ESXi quotes it and wants it back so).
fn session_cookie(header: &str) -> Option<String> {
    let first = header.split(';').next()?.trim();
    let (name, value) = first.split_once('=')?;
    (name.trim() == COOKIE && !value.is_empty()).then(|| value.to_string())
}

/// Classifies a transport error: certificates fatal, the rest retry.
fn transport(e: ureq::Error, timeout: Duration) -> Error {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let tls = matches!(e, ureq::Error::Rustls(_) | ureq::Error::Tls(_));
    if tls || lower.contains("certificate") {
        return Error::Transport {
            retry: false,
            message: format!("TLS: {text}"),
        };
    }
    let message = match e {
        ureq::Error::Timeout(_) => format!(
            "no answer within {} ({text})",
            crate::duration::fmt(timeout)
        ),
        _ => text,
    };
    Error::Transport {
        retry: true,
        message,
    }
}

/// Reads an answer: the `*Response` element, or the fault. An HTTP error
/// status without a SOAP fault is judged by the status alone, whatever the
/// body is (HTML, a proxy's XML, a SOAP envelope without a fault): 5xx, 408
/// and 429 ask for a retry, the rest are fatal.
pub fn parse_answer(method: &str, status: u16, text: &str) -> Result<Elem, Error> {
    let doc = match crate::xml::parse(text) {
        Ok(d) => d,
        Err(_) if status >= 300 => return Err(http_error(method, status, text)),
        Err(e) => {
            return Err(Error::Malformed(format!(
                "{method}: not XML ({e}){}",
                excerpt(text)
            )));
        }
    };
    let first = doc
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "Body")
        .and_then(|body| body.children().find(|n| n.is_element()));
    match first {
        Some(first) => {
            let el = Elem::from_node(first, text);
            if el.name == "Fault" {
                Err(fault_of(&el))
            } else if status >= 300 {
                Err(http_error(method, status, text))
            } else {
                Ok(el)
            }
        }
        None if status >= 300 => Err(http_error(method, status, text)),
        None => Err(Error::Malformed(format!(
            "{method}: no SOAP Body, or an empty one, in the answer{}",
            excerpt(text)
        ))),
    }
}

/// An HTTP error status that came without a SOAP fault.
fn http_error(method: &str, status: u16, text: &str) -> Error {
    let excerpt = excerpt(text);
    if status >= 500 || status == 408 || status == 429 {
        Error::Transport {
            retry: true,
            message: format!("{method}: HTTP {status} without a SOAP fault{excerpt}"),
        }
    } else {
        Error::Transport {
            retry: false,
            message: format!(
                "{method}: HTTP {status} without a SOAP fault{excerpt}; is `url` an ESXi host or a vCenter (it must answer on /sdk)?"
            ),
        }
    }
}

/// A `soapenv:Fault` as an error: its type from the detail element.
fn fault_of(el: &Elem) -> Error {
    let message = el.text_at("faultstring").unwrap_or("").trim().to_string();
    let detail = el
        .child("detail")
        .and_then(|d| d.children.first())
        .cloned()
        .unwrap_or_default();
    let ty = detail.xsi_type.clone().unwrap_or_else(|| {
        detail
            .name
            .strip_suffix("Fault")
            .unwrap_or(&detail.name)
            .to_string()
    });
    let ty = if ty.is_empty() {
        // No detail: a server-side failure without a vim25 type.
        "SystemError".to_string()
    } else {
        ty
    };
    Error::Fault {
        ty,
        message,
        detail: Box::new(detail),
    }
}

/// A task's `info.error` (LocalizedMethodFault) as an error.
pub fn task_fault(error: &Elem) -> Error {
    let fault = error.child("fault").cloned().unwrap_or_default();
    let ty = fault
        .xsi_type
        .clone()
        .unwrap_or_else(|| "SystemError".into());
    let message = error
        .text_at("localizedMessage")
        .unwrap_or("")
        .trim()
        .to_string();
    Error::Fault {
        ty,
        message,
        detail: Box::new(fault),
    }
}

/// A short, single-line excerpt of an answer for a message.
fn excerpt(text: &str) -> String {
    let t: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.is_empty() {
        return String::new();
    }
    let cut: String = t.chars().take(200).collect();
    if cut.len() < t.len() {
        format!(": {cut}…")
    } else {
        format!(": {cut}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAULT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Login failure</faultstring><detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;

    #[test]
    fn faults_are_classified_by_type() {
        let e = parse_answer("Login", 500, FAULT).unwrap_err();
        assert_eq!(e.fault_type(), Some("InvalidLogin"));
        assert_eq!(e.class(), Class::Fatal);
        assert!(e.to_string().contains("Login failure"));
        assert_eq!(classify_fault("NotAuthenticated"), Class::Relogin);
        assert_eq!(classify_fault("NoPermission"), Class::Fatal);
        assert_eq!(
            classify_fault("InsufficientMemoryResourcesFault"),
            Class::Retry
        );
        assert_eq!(classify_fault("TaskInProgress"), Class::Retry);
        assert_eq!(classify_fault("HostConnectionLost"), Class::Retry);
        assert_eq!(classify_fault("FileNotFound"), Class::Fatal);
        // A fault whose message mentions a retryable condition stays fatal:
        // the type decides.
        let text = FAULT.replace("Login failure", "TaskInProgress, try later");
        assert_eq!(
            parse_answer("Login", 500, &text).unwrap_err().class(),
            Class::Fatal
        );
    }

    #[test]
    fn answers_and_http_errors() {
        let ok = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><LoginResponse xmlns="urn:vim25"><returnval><key>k</key><userName>u</userName></returnval></LoginResponse></soapenv:Body></soapenv:Envelope>"#;
        let r = parse_answer("Login", 200, ok).expect("ok");
        assert_eq!(r.text_at("returnval/userName"), Some("u"));
        let e = parse_answer("Login", 503, "Service Unavailable").unwrap_err();
        assert_eq!(e.class(), Class::Retry);
        let e = parse_answer("Login", 404, "<html>not found").unwrap_err();
        assert_eq!(e.class(), Class::Fatal);
        assert!(e.to_string().contains("/sdk"));
        // A 5xx is a retry whatever its body, as long as it is no fault:
        // well-formed XML without an envelope (a proxy's or a load
        // balancer's error page), an envelope without a Body, an empty
        // Body, a Body with something else than a fault.
        for body in [
            "<?xml version=\"1.0\"?><error><code>503</code><message>vpxd is starting</message></error>",
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"/>",
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body/></soapenv:Envelope>",
            ok,
            "",
        ] {
            for status in [500, 502, 503, 504] {
                let e = parse_answer("Login", status, body).unwrap_err();
                assert_eq!(e.class(), Class::Retry, "{status} {body}: {e}");
                assert!(e.to_string().contains(&format!("HTTP {status}")), "{e}");
            }
            let e = parse_answer("Login", 403, body).unwrap_err();
            assert_eq!(e.class(), Class::Fatal, "403 {body}: {e}");
        }
        // A fault is read whatever the status.
        assert_eq!(
            parse_answer("Login", 503, FAULT).unwrap_err().fault_type(),
            Some("InvalidLogin")
        );
        // 2xx without a Body is an answer we cannot read.
        let e = parse_answer("Login", 200, "<?xml version=\"1.0\"?><x/>").unwrap_err();
        assert!(matches!(e, Error::Malformed(_)), "{e}");
    }

    #[test]
    fn session_cookie_and_escaping() {
        assert_eq!(
            session_cookie("vmware_soap_session=\"52ab\"; Path=/; HttpOnly; Secure;"),
            Some("\"52ab\"".into())
        );
        assert_eq!(session_cookie("other=1"), None);
    }
}
