//! `reimage check --online`: asks each system a run will drive what the
//! run will ask, read-only and each bounded in time: the provisioner's
//! own questions ([`provision::Provisioner::online`]), the coordination
//! store, the SSH key, and the port of the computer's channel. One line a
//! check; exit 1 when one failed.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::cli::CheckArgs;
use crate::config::{ChannelSettings, Loaded, Plan};
use crate::error::Error;
use crate::exec::{Cmd, excerpt};
use crate::fleet::Out;
use crate::provision::{Checked, Verdict};
use crate::{coord, report};

/// The longest a port check waits for a connect.
const PORT_WAIT: Duration = Duration::from_secs(3);
/// The longest `ssh-keygen -y` may take on a key.
const KEYGEN_WAIT: Duration = Duration::from_secs(10);

/// Runs the checks of `a`'s computer and image, or of every pair with
/// `--all`, and prints them.
pub fn run(
    loaded: &Loaded,
    a: &CheckArgs,
    dir: &Path,
    format: report::Format,
) -> Result<i32, Error> {
    let pairs: Vec<(&str, &str)> = match (&a.computer, &a.image, a.all) {
        (Some(c), Some(i), false) => vec![(c.as_str(), i.as_str())],
        (None, None, true) => super::pairs(loaded),
        _ => {
            return Err(Error::Usage(
                "--online asks the systems of one run: give COMPUTER --image IMAGE, or --all for every computer and image a run could pair".into(),
            ));
        }
    };
    let mut out = Out::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut failed = 0;
    let mut shown = 0;
    let mut say = |c: Checked, out: &mut Out| {
        if !seen.insert(c.what.clone()) {
            return;
        }
        shown += 1;
        if c.verdict == Verdict::Failed {
            failed += 1;
        }
        print(out, &c, format);
    };
    if let Some(s) = &loaded.config.coordination {
        say(store(s), &mut out);
    }
    for (computer, image) in pairs {
        let plan = super::vet_pair(loaded, computer, image, dir)?;
        let p = super::prepare(loaded, &plan)?;
        for c in p.online(&plan) {
            say(c, &mut out);
        }
        for c in channel(&plan) {
            say(c, &mut out);
        }
    }
    let code = i32::from(failed > 0);
    match format {
        report::Format::Json => out.json(
            &serde_json::json!({
                "time": report::rfc3339(std::time::SystemTime::now()),
                "kind": "check",
                "config": loaded.path,
                "result": if failed > 0 { "failed" } else { "ok" },
                "code": code,
                "checks": shown,
                "failed": failed,
            })
            .to_string(),
        ),
        report::Format::Human => out.line(&if failed > 0 {
            format!("{failed} of {shown} checks failed")
        } else {
            format!("all {shown} checks passed")
        }),
    }
    out.done(code)
}

/// One check as a line: `ok      WHAT: DETAIL`, or a JSON object.
fn print(out: &mut Out, c: &Checked, format: report::Format) {
    match format {
        report::Format::Json => out.json(
            &serde_json::json!({
                "time": report::rfc3339(std::time::SystemTime::now()),
                "kind": "online",
                "what": c.what,
                "result": c.verdict.name(),
                "detail": c.detail,
            })
            .to_string(),
        ),
        report::Format::Human => out.line(&report::printable(&format!(
            "{:<7} {}: {}",
            c.verdict.name(),
            c.what,
            c.detail
        ))),
    }
}

/// The coordination store answers and has a schema this reimage reads.
fn store(s: &coord::Settings) -> Checked {
    match coord::store::probe(s) {
        Ok((place, 0)) => Checked::note(
            format!("coordination store {place}"),
            "answers, no schema yet (the first run or `reimage setup-db` makes it)",
        ),
        Ok((place, v)) => Checked::new(
            format!("coordination store {place}"),
            true,
            format!("answers, schema version {v}"),
        ),
        Err(e) => Checked::new("coordination store", false, format!("{e:#}")),
    }
}

/// The channel's questions: the SSH key loads without a passphrase (as
/// the run loads it), and the channel's port answers (a note when not:
/// the computer may be off until its load).
fn channel(plan: &Plan) -> Vec<Checked> {
    let mut v = Vec::new();
    if let ChannelSettings::Ssh(s) = &plan.profile.channel
        && let Some(key) = &s.key_file
    {
        v.push(ssh_key(key));
    }
    if let Some(port) = plan.port() {
        v.push(port_answers(&plan.computer.address, port, plan));
    }
    v
}

/// `ssh-keygen -y -P "" -f KEY`: the key is one OpenSSH reads, and needs
/// no passphrase (a run has none to give).
fn ssh_key(key: &Path) -> Checked {
    let what = format!("SSH key {}", key.display());
    let argv = [
        "ssh-keygen".to_string(),
        "-y".into(),
        "-P".into(),
        String::new(),
        "-f".into(),
        key.display().to_string(),
    ];
    match Cmd::new(&argv, KEYGEN_WAIT).run() {
        Ok(o) if o.success() => Checked::new(what, true, "loads without a passphrase"),
        Ok(o) => Checked::new(
            what,
            false,
            format!(
                "does not load without a passphrase, and a run has none to give: {}",
                excerpt(&o.stderr, 2)
            ),
        ),
        Err(e) => Checked::note(what, format!("cannot run ssh-keygen to read it: {e}")),
    }
}

/// A TCP connect to the channel's port, bounded by [`PORT_WAIT`] (and the
/// profile's connect timeout).
fn port_answers(address: &str, port: u16, plan: &Plan) -> Checked {
    let what = format!(
        "{} port {address}:{port} of computer {}",
        plan.profile.channel.kind().name(),
        plan.computer.name
    );
    let wait = PORT_WAIT.min(plan.profile.connect_timeout.max(Duration::from_millis(100)));
    let addrs = match (address, port).to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => return Checked::new(what, false, format!("the address does not resolve: {e}")),
    };
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, wait) {
            Ok(_) => return Checked::new(what, true, "answers"),
            Err(e) => last = e.to_string(),
        }
    }
    Checked::note(
        what,
        format!(
            "does not answer ({last}; waited at most {}): fine while the computer is off, a load starts it",
            crate::duration::fmt(wait)
        ),
    )
}
