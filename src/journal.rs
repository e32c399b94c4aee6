//! `[logs] journald = true` or `syslog = true`: each event also goes, as
//! one datagram, to the system's log.
//!
//! - journald's native protocol (systemd's `sd_journal_send`, documented
//!   in systemd.journal-fields(7) and "Native Journal Protocol" at
//!   systemd.io/JOURNAL_NATIVE_PROTOCOL): `FIELD=value` lines to the
//!   datagram socket /run/systemd/journal/socket; a value holding a
//!   newline is the field name, a newline, its length as 64-bit little
//!   endian, the bytes, a newline. Field names are upper-case letters,
//!   digits and `_`, not starting with `_`.
//! - syslog, RFC 5424 to /dev/log: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID
//!   [SD] MSG`, the fields as structured data `[reimage@32473 ...]`
//!   (32473 is the private enterprise number RFC 5612 sets aside for
//!   examples and documentation; reimage has none of its own).
//!
//! The socket is non-blocking: a log daemon that does not keep up loses
//! events (said once in the event log), it never holds up a run.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// Where journald takes native-protocol datagrams.
pub const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";
/// Where syslog takes datagrams.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// The most bytes of one message sent: a datagram socket's default
/// buffer (net.core.wmem_default, 208 KiB on Linux) takes it whole.
const MESSAGE_CAP: usize = 48 * 1024;

/// Which protocol the datagrams speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// journald's native protocol.
    Journald,
    /// RFC 5424.
    Syslog,
}

/// How bad an event is, as syslog's severities (journald's PRIORITY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// 3: a run or phase failed.
    Error = 3,
    /// 4: something to fix.
    Warning = 4,
    /// 5: a run ended well, or a phase did.
    Notice = 5,
    /// 6: what happens.
    Info = 6,
    /// 7: commands' output.
    Debug = 7,
}

/// One event as the log gets it.
#[derive(Debug, Default)]
pub struct Entry<'a> {
    /// The line a person reads.
    pub message: String,
    /// The event's kind (`REIMAGE_KIND`).
    pub kind: &'a str,
    /// The fields, by journald name: COMPUTER, IMAGE, PHASE, RESULT,
    /// RESERVATION, ... (absent ones are left out).
    pub fields: Vec<(&'static str, String)>,
}

/// The open socket.
#[derive(Debug)]
pub struct Sink {
    protocol: Protocol,
    socket: UnixDatagram,
    path: PathBuf,
    host: String,
}

impl Sink {
    /// A sink for `protocol` sending to `path` (default: the protocol's
    /// socket). Fails when the socket is not there or refuses.
    pub fn open(protocol: Protocol, path: Option<&Path>) -> io::Result<Sink> {
        let path = path.map_or_else(
            || {
                PathBuf::from(match protocol {
                    Protocol::Journald => JOURNALD_SOCKET,
                    Protocol::Syslog => SYSLOG_SOCKET,
                })
            },
            Path::to_path_buf,
        );
        let socket = UnixDatagram::unbound()?;
        socket.connect(&path)?;
        socket.set_nonblocking(true)?;
        Ok(Sink {
            protocol,
            socket,
            path,
            host: hostname(),
        })
    }

    /// Where it sends.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one event.
    pub fn send(&self, e: &Entry<'_>, severity: Severity) -> io::Result<()> {
        let data = match self.protocol {
            Protocol::Journald => journald(e, severity),
            Protocol::Syslog => syslog(e, severity, &self.host),
        };
        self.socket.send(&data).map(|_| ())
    }
}

/// This host's name, as syslog's HOSTNAME ("-" when unknown).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty() && h.is_ascii() && !h.contains(' '))
        .unwrap_or_else(|| "-".into())
}

/// The message, cut to [`MESSAGE_CAP`] (its head and tail).
fn capped(m: &str) -> String {
    if m.len() > MESSAGE_CAP {
        crate::exec::shorten(m, MESSAGE_CAP)
    } else {
        m.to_string()
    }
}

/// One native-protocol datagram.
pub fn journald(e: &Entry<'_>, severity: Severity) -> Vec<u8> {
    let mut out = Vec::new();
    let mut field = |name: &str, value: &str| {
        if value.contains('\n') {
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        } else {
            out.extend_from_slice(format!("{name}={value}\n").as_bytes());
        }
    };
    field("MESSAGE", &capped(&e.message));
    field("PRIORITY", &(severity as u8).to_string());
    field("SYSLOG_IDENTIFIER", "reimage");
    field("SYSLOG_PID", &std::process::id().to_string());
    field("REIMAGE_KIND", e.kind);
    for (name, value) in &e.fields {
        field(name, &capped(value));
    }
    out
}

/// An RFC 5424 PARAM-VALUE: `"`, `\` and `]` escaped.
fn param(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// One RFC 5424 message: facility daemon (3), the fields as structured
/// data, the message in UTF-8 after a BOM.
pub fn syslog(e: &Entry<'_>, severity: Severity, host: &str) -> Vec<u8> {
    let pri = 3 * 8 + severity as u8;
    let time = humantime::format_rfc3339_micros(std::time::SystemTime::now());
    let mut sd = String::from("[reimage@32473");
    sd.push_str(&format!(" kind=\"{}\"", param(e.kind)));
    for (name, value) in &e.fields {
        // Structured-data names: printable ASCII but `=`, ` `, `]`, `"`.
        sd.push_str(&format!(
            " {}=\"{}\"",
            name.to_ascii_lowercase(),
            param(&capped(value))
        ));
    }
    sd.push(']');
    let mut out = format!(
        "<{pri}>1 {time} {host} reimage {} {} {sd} ",
        std::process::id(),
        if e.kind.is_empty() { "-" } else { e.kind }
    )
    .into_bytes();
    out.extend_from_slice("\u{feff}".as_bytes());
    out.extend_from_slice(capped(&e.message).as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            message: "two\nlines".into(),
            kind: "result",
            fields: vec![
                ("COMPUTER", "pc7".into()),
                ("RESULT", "fatal \"x\"]".into()),
            ],
        }
    }

    #[test]
    fn a_journald_value_with_a_newline_is_sent_with_its_length() {
        let d = journald(&entry(), Severity::Error);
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\nPRIORITY=3\n");
        assert!(d.starts_with(&want), "{:?}", String::from_utf8_lossy(&d));
        assert!(d.ends_with(b"COMPUTER=pc7\nRESULT=fatal \"x\"]\n"));
    }

    #[test]
    fn syslog_escapes_structured_data() {
        let d = String::from_utf8(syslog(&entry(), Severity::Warning, "mn1")).expect("utf-8");
        assert!(d.starts_with("<28>1 "), "{d}");
        assert!(
            d.contains(" mn1 reimage ")
                && d.contains(
                    r#"[reimage@32473 kind="result" computer="pc7" result="fatal \"x\"\]"] "#
                ),
            "{d}"
        );
        assert!(d.ends_with("\u{feff}two\nlines"), "{d}");
    }
}
