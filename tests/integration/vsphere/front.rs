//! A plain-HTTP front between reimage and the simulator, in the place of
//! what stands between a site and its vCenter (a reverse proxy, a load
//! balancer, vCenter's own envoy): it passes every SOAP call on to the
//! simulator unchanged (body, SOAPAction, session cookie, User-Agent) and
//! the answer back (status, Set-Cookie, body), and lets a test act at the
//! one call it picks: answer it itself, or end the caller's session in the
//! simulator (SessionManager.TerminateSession, from a session of the
//! test's own) before passing it on. The simulator stays the one that
//! answers everything else.
//!
//! It also records the calls it saw, so a test can wait for one to be in
//! flight. Each request gets its own connection (`Connection: close`).

use super::Api;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the front does with a call.
pub enum Act {
    /// Passes it on.
    Pass,
    /// Answers it itself with this status and body (text/xml).
    Answer(u16, String),
    /// Ends the caller's session in the simulator, then passes the call
    /// on (which the simulator then refuses: NotAuthenticated).
    EndSession,
}

/// One call the front saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The SOAP method, e.g. `WaitForUpdatesEx`.
    pub method: String,
    /// The status the caller got; None while the call is in flight.
    pub status: Option<u16>,
    /// For [`Act::EndSession`]: whether TerminateSession succeeded.
    pub ended: Option<bool>,
}

type Pick = Box<dyn FnMut(&str) -> Act + Send>;

/// A running front; its threads end with the test process.
pub struct Front {
    /// `http://127.0.0.1:PORT`, for `url`.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Front {
    /// Starts a front for `api`'s simulator; `pick` is asked about every
    /// call, in the order they come, by method name.
    pub fn start(api: &Api, pick: impl FnMut(&str) -> Act + Send + 'static) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the front");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("the front's address")
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let pick: Arc<Mutex<Pick>> = Arc::new(Mutex::new(Box::new(pick)));
        let (api, log) = (api.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (api, log, pick) = (api.clone(), log.clone(), pick.clone());
                std::thread::spawn(move || serve(conn, &api, &log, &pick));
            }
        });
        Front { url, seen }
    }

    /// The calls seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("the front's log").clone()
    }

    /// Waits until a call of `method` was seen and `done` holds for it.
    pub fn wait_for(&self, method: &str, done: impl Fn(&Seen) -> bool) -> Seen {
        let mut found = None;
        let ok = crate::common::eventually(Duration::from_secs(60), || {
            found = self
                .seen()
                .into_iter()
                .find(|c| c.method == method && done(c));
            found.is_some()
        });
        assert!(ok, "no {method} as wanted among {:?}", self.seen());
        found.expect("found")
    }
}

/// A request as read: the headers the simulator needs, and the body.
struct Request {
    soap_action: String,
    cookie: Option<String>,
    user_agent: String,
    body: String,
}

/// Serves one request on `conn`.
fn serve(conn: TcpStream, api: &Api, log: &Mutex<Vec<Seen>>, pick: &Mutex<Pick>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let Some(req) = read_request(&conn) else {
        return;
    };
    let method = method_of(&req.body);
    let act = (pick.lock().expect("the front's pick"))(&method);
    let index = {
        let mut l = log.lock().expect("the front's log");
        l.push(Seen {
            method: method.clone(),
            status: None,
            ended: None,
        });
        l.len() - 1
    };
    let (status, set_cookie, body) = match act {
        Act::Answer(status, body) => (status, None, body),
        Act::Pass => forward(api, &req),
        Act::EndSession => {
            let ended = req
                .cookie
                .as_deref()
                .and_then(session_key)
                .is_some_and(|key| api.terminate_session(&key));
            log.lock().expect("the front's log")[index].ended = Some(ended);
            forward(api, &req)
        }
    };
    // Recorded before the answer goes back: a test that sees the status
    // knows the simulator has done the call.
    log.lock().expect("the front's log")[index].status = Some(status);
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    if let Some(c) = set_cookie {
        head.push_str(&format!("Set-Cookie: {c}\r\n"));
    }
    head.push_str("\r\n");
    let mut conn = conn;
    // The caller may be gone (interrupted): nothing to do about it.
    let _ = conn
        .write_all(head.as_bytes())
        .and_then(|()| conn.write_all(body.as_bytes()));
}

/// Reads one HTTP/1.1 request with a Content-Length body.
fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    if !line.starts_with("POST ") {
        return None;
    }
    let (mut len, mut soap_action, mut cookie, mut user_agent) =
        (0usize, String::new(), None, String::new());
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':')?;
        let value = value.trim().to_string();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => len = value.parse().ok()?,
            "soapaction" => soap_action = value,
            "cookie" => cookie = Some(value),
            "user-agent" => user_agent = value,
            _ => {}
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        soap_action,
        cookie,
        user_agent,
        body: String::from_utf8(body).ok()?,
    })
}

/// The SOAP method: the first element in the envelope's Body. Read from
/// the text, not parsed: a body need not be namespace-well-formed for the
/// simulator (Go's decoder ignores unbound prefixes).
fn method_of(body: &str) -> String {
    let Some(i) = body.find("Body>") else {
        return String::new();
    };
    let rest = &body[i + "Body>".len()..];
    let rest = rest.trim_start().strip_prefix('<').unwrap_or("");
    let name = rest
        .split(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .next()
        .unwrap_or("");
    name.rsplit(':').next().unwrap_or("").to_string()
}

/// `vmware_soap_session`'s value in a Cookie header, quotes taken off.
fn session_key(cookie: &str) -> Option<String> {
    cookie.split(';').find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == "vmware_soap_session").then(|| value.trim_matches('"').to_string())
    })
}

/// Passes the call on to the simulator: (status, Set-Cookie, body).
fn forward(api: &Api, req: &Request) -> (u16, Option<String>, String) {
    let mut call = api
        .agent
        .post(&format!("{}/sdk", api.base))
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", &req.soap_action)
        .header("User-Agent", &req.user_agent);
    if let Some(c) = &req.cookie {
        call = call.header("Cookie", c);
    }
    match call.send(req.body.as_str()) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let set_cookie = resp
                .headers()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            (status, set_cookie, body)
        }
        Err(e) => (502, None, format!("the simulator did not answer: {e}")),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
