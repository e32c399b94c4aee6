//! A reservation's user on the computer: what `grant` and `revoke` ask of
//! a family, over the OS module's channel (Apache VCL's OS modules do the
//! same in `create_user`, `grant_access` and `delete_user`), and the
//! checks every family shares.

use std::time::Duration;

use super::actions::Actions;
use super::channel;
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::outcome::Outcome;
use crate::report::Reporter;
use crate::secret::Secret;

/// What one `grant` asks for.
pub struct Request<'a> {
    /// The reservation it is for.
    pub reservation: &'a str,
    /// The account.
    pub user: &'a str,
    /// Public keys (one OpenSSH line each) for its authorized_keys.
    pub keys: &'a [String],
    /// Every address its way in is open to: this grant's and the earlier
    /// ones' of the reservation.
    pub from: &'a [String],
    /// The TCP ports its way in opens: the family's (SSH 22, RDP 3389),
    /// then the profile's `ports`, each once.
    pub ports: &'a [u16],
    /// The addresses of every grant on the computer, this one's included,
    /// each once: a firewall with one scope per port for every user
    /// (Windows XP's `netsh firewall`) opens the port to them all.
    pub every_from: &'a [String],
    /// An administrator (sudo, Administrators).
    pub admin: bool,
    /// Its new password, when the family sets one.
    pub password: Option<&'a Secret>,
}

/// What one `revoke` asks for.
pub struct Revoke<'a> {
    /// The accounts that go.
    pub users: &'a [String],
    /// The addresses of the grants that stay on the computer (every other
    /// user's), each once: what a scope shared by every user is
    /// narrowed to.
    pub keep_from: &'a [String],
}

/// How a family lets its users in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WayIn {
    /// What the user connects with: "ssh", "rdp".
    pub protocol: &'static str,
    /// The TCP port the firewall opens for the user.
    pub port: u16,
    /// A password even when keys are given (Windows: always).
    pub password_always: bool,
}

/// The longest account name: Windows' limit for a local account (Linux's
/// is 32).
pub const MAX_USER_LEN: usize = 20;

/// Names no grant may take: the accounts the image and reimage itself
/// log in with.
const RESERVED: [&str; 6] = [
    "root",
    "administrator",
    "guest",
    "admin",
    "daemon",
    "nobody",
];

/// A user name as `grant` takes it: a lower-case letter or `_`, then
/// lower-case letters, digits, `_` or `-`, at most [`MAX_USER_LEN`]: what
/// useradd's default NAME_REGEX and Windows' local accounts both take, and
/// nothing a shell or cmd.exe reads as syntax.
pub fn check_user(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_USER_LEN
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        return Err(format!(
            "user name {name:?} is not allowed: use 1 to {MAX_USER_LEN} lower-case letters, digits, '_' or '-', starting with a letter or '_'"
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "user name {name:?} is an account of the image or of reimage: give the reservation's user another"
        ));
    }
    Ok(())
}

/// An address as `--from` takes it: ADDRESS or ADDRESS/PREFIX, IPv4 or
/// IPv6, written back in its plain form.
pub fn check_source(s: &str) -> Result<String, String> {
    let bad = || format!("--from {s:?} is not an ADDRESS or ADDRESS/PREFIX (IPv4 or IPv6)");
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix {
        None => Ok(ip.to_string()),
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max && !p.starts_with('+') => Ok(format!("{ip}/{n}")),
            _ => Err(bad()),
        },
    }
}

/// A public key line as `--ssh-key` files hold them: one key per line,
/// `TYPE BASE64 [COMMENT]`; blank lines and `#` comments skipped. Err
/// names the file and what is wrong.
pub fn key_lines(text: &str, file: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(kind), Some(body)) = (words.next(), words.next()) else {
            return Err(format!("{file}:{}: not a public key line", n + 1));
        };
        let kind_ok =
            kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
        let body_ok = body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
        if !kind_ok || !body_ok || line.chars().any(char::is_control) {
            return Err(format!(
                "{file}:{}: not a public key line (TYPE BASE64 [COMMENT]; options are not taken)",
                n + 1
            ));
        }
        keys.push(line.to_string());
    }
    if keys.is_empty() {
        return Err(format!("{file}: no public key in it"));
    }
    Ok(keys)
}

/// Runs `f` with actions over the plan's channel, logged in: a computer
/// that does not answer is a retry (75: try again later), bad credentials
/// and what the OS refuses are fatal.
pub fn over_channel(
    plan: &Plan,
    account: Option<crate::os::first_boot::Account>,
    report: &Reporter,
    f: impl FnOnce(&mut Actions) -> Result<(), Outcome>,
) -> Outcome {
    let who = &plan.computer.name;
    let mut ch = match channel::open(plan, account) {
        Ok(c) => c,
        Err(e) => return Outcome::Fatal(e),
    };
    if !ch.logs_in() {
        return Outcome::Fatal(anyhow::anyhow!(
            "{who}: profile `{}` has channel none: grant and revoke need a login (ssh or winrm)",
            plan.profile.name
        ));
    }
    report.step("login", Some(plan.profile.connect_timeout));
    if let Err(e) = ch.login(plan.profile.connect_timeout.max(Duration::from_secs(5))) {
        report.step_failed(&e.to_string());
        return e.into_outcome(format!("{who}: login"));
    }
    report.step_done("logged in");
    let attempt = Attempt::new(1, 1, 1.0);
    let r = {
        let mut a = Actions::new(plan, attempt, ch.as_mut(), report);
        f(&mut a)
    };
    ch.disconnect();
    match r {
        Ok(()) => Outcome::Done,
        Err(o) => o,
    }
}

/// The family that has no way to make accounts (generic, channel none).
pub fn unsupported(family: &str, plan: &Plan) -> Outcome {
    Outcome::Fatal(anyhow::anyhow!(
        "{}: family {family} makes no accounts: grant and revoke need a linux or windows profile",
        plan.computer.name,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_plain_and_not_the_images_own() {
        for ok in ["ann", "_x", "u-1", "bob_2", "abcdefghij0123456789"] {
            assert_eq!(check_user(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Ann",
            "1a",
            "-a",
            "a b",
            "a;b",
            "a\"b",
            "root",
            "administrator",
            "abcdefghij0123456789x",
            "a\u{e9}",
        ] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sources_are_addresses_or_prefixes() {
        assert_eq!(check_source("192.0.2.7"), Ok("192.0.2.7".into()));
        assert_eq!(check_source("10.1.0.0/16"), Ok("10.1.0.0/16".into()));
        assert_eq!(check_source("2001:db8::1/64"), Ok("2001:db8::1/64".into()));
        for bad in [
            "",
            "any",
            "10.1.0.0/33",
            "::/129",
            "1.2.3.4/+8",
            "1.2.3.4/",
            "h;x",
        ] {
            assert!(check_source(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_files_hold_public_key_lines_only() {
        let text =
            "# ann's keys\n\nssh-ed25519 AAAAC3Nza+/= ann@laptop\necdsa-sha2-nistp256 AAAA=\n";
        assert_eq!(
            key_lines(text, "k").expect("keys"),
            [
                "ssh-ed25519 AAAAC3Nza+/= ann@laptop",
                "ecdsa-sha2-nistp256 AAAA="
            ]
        );
        for bad in [
            "",
            "# nothing\n",
            "command=\"x\" ssh-ed25519 AAAA\n",
            "ssh-ed25519\n",
            "ssh-ed25519 AA;AA\n",
            "-----BEGIN OPENSSH PRIVATE KEY-----\n",
        ] {
            assert!(key_lines(bad, "k").is_err(), "{bad:?}");
        }
    }
}
