//! The Linux first boot: hostname, sshd enabled, SSH open only from the
//! management network, the clock synced, private keys that came with the
//! image removed, the post-load marker, the image's own scripts, then a
//! fresh root password (Apache VCL's Linux.pm post_load does the same:
//! firewall, synchronize_time, set_password, clear_private_keys). Each
//! action is idempotent and tolerates what a small image lacks (no
//! systemd, no firewall), saying so in its event.
//!
//! The scripts take every file path under `${REIMAGE_ROOT:-}`: unset on a
//! real computer; the tests set it (sshd's SetEnv) so the scripts run on
//! the CI machine without touching its own /root/.ssh.
//!
//! The shell programs are files of this folder (`*.sh`, linted by
//! shellcheck in CI), run as `sh -c PROGRAM sh ARGS...`: every value
//! reaches them as a positional argument, never inside the program text.

use std::time::SystemTime;

use crate::attempt::Attempt;
use crate::config::Plan;
use crate::config::network::{Addressing, parse_mac};
use crate::control::Channel;
use crate::os::actions::Actions;
use crate::os::first_boot::{Account, allow_from, new_password, password_taken};
use crate::os::hooks::{Env, HookShell};
use crate::outcome::Outcome;
use crate::report::{Reporter, rfc3339};

/// The account whose password the linux first boot sets.
pub const ROOT: Account = Account { name: "root" };

/// Where the post-load marker goes; a later run reads it to see that
/// post-load already ran for this load.
pub const MARKER: &str = "/var/lib/reimage/post-load";

/// Sets the host name given as the argument, and the 127.0.1.1 line of
/// /etc/hosts that goes with it.
const HOSTNAME: &str = include_str!("hostname.sh");

/// Enables the SSH server's unit, where systemd runs.
const SSHD: &str = include_str!("sshd.sh");

/// Opens SSH (TCP 22) only from the sources given as arguments (with `-i`,
/// on the private interface only): firewalld (rich rules, or a zone of its
/// own for the interface; the open `ssh` service removed), ufw (commented
/// allows ahead of a deny), nftables (Debian's default since 10: in every input
/// base chain, the open `tcp dport 22 accept` out, an accept per source at
/// the head, a drop for the rest at the end; also in /etc/nftables.conf) or
/// iptables/ip6tables (ACCEPT from each source, then DROP for the rest;
/// also in iptables-persistent's or iptables-services' saved rules, and
/// taken before nftables when the image has those).
/// Ping is left to the image's firewall (in the man page).
/// firewall-common.sh goes first (the `-i` interface, the saved-rules
/// files), as in GRANT_FIREWALL.
pub(super) const FIREWALL: &str = concat!(
    include_str!("firewall-common.sh"),
    include_str!("firewall.sh")
);

/// Removes the private keys under root's ~/.ssh that came with the image
/// (and their .pub): VCL's Linux.pm clear_private_keys removes root's
/// id_rsa; any file whose first line is a PEM or OpenSSH private-key header
/// goes here. authorized_keys, known_hosts and config stay.
const SCRUB_KEYS: &str = include_str!("scrub-keys.sh");

/// Points the clock at the servers given as arguments and syncs it:
/// chrony (runtime sources, then a step), systemd-timesyncd (a drop-in,
/// restarted, waited for), or ntpdate. VCL's Linux.pm synchronize_time
/// uses rdate/ntpd; today's images ship these instead. Exit 3: no tool
/// (fatal); other failures: a server that did not answer (retry).
const TIME: &str = include_str!("time.sh");

/// Configures the public interface, found by its MAC: a static address
/// (with gateway and DNS) or DHCP, through systemd-networkd,
/// NetworkManager or ifupdown, whichever the image runs; prints the
/// interface, the tool and the address it has afterwards (VCL's Linux.pm
/// activates the interfaces and sets the public address the same way).
const PUBLIC_NET: &str = include_str!("public-net.sh");

/// Sets root's password from the file named by the argument (`root:PW`, as
/// chpasswd reads it on stdin) and deletes the file: the password never
/// reaches a command line.
const PASSWORD: &str = include_str!("set-password.sh");

/// A program of this folder as `sh -c` takes it: without its `#!` line
/// (there for shellcheck and editors) and its last line end.
pub(super) fn program(file: &str) -> &str {
    let body = file.strip_prefix("#!/bin/sh\n").unwrap_or(file);
    body.strip_suffix('\n').unwrap_or(body)
}

/// Where the programs too long for one command line are written.
const SCRIPTS: &str = "/var/lib/reimage/scripts";

/// Runs program `file` of this folder as action `name` with `args`, from
/// a file: dropbear takes at most 9000 bytes as one command (its
/// MAX_CMD_LEN), and the firewall programs are longer than that. The file
/// (`SCRIPTS/stem`, mode 0700) is written anew each time, atomically, so
/// what runs is this reimage's own; a failure of the program is fatal.
pub(super) fn run_file(
    a: &mut Actions,
    name: &str,
    stem: &str,
    file: &str,
    args: &[&str],
) -> Result<(), Outcome> {
    // The upload says what went wrong when the folder cannot be made.
    let _ = a.ch.run(&sh(r#"mkdir -p "$1""#, &[SCRIPTS]), a.timeout);
    let path = format!("{SCRIPTS}/{stem}");
    a.upload(
        &format!("{name}-program"),
        program(file).as_bytes(),
        &path,
        0o700,
    )?;
    let mut argv = vec!["sh".to_string(), path];
    argv.extend(args.iter().map(|s| s.to_string()));
    a.run(name, &argv, Outcome::Fatal)?;
    Ok(())
}

/// `sh -c PROGRAM sh ARGS...`: the program of this folder `file`, the
/// values as its positional arguments.
pub(super) fn sh(file: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec![
        "sh".to_string(),
        "-c".into(),
        program(file).into(),
        "sh".into(),
    ];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// The post-load marker's text.
pub fn marker(plan: &Plan, attempt: Attempt) -> String {
    format!(
        "image={}\nreservation={}\nattempt={}\ntime={}\n",
        plan.image.name,
        plan.reservation.as_deref().unwrap_or(""),
        attempt.number,
        rfc3339(SystemTime::now())
    )
}

/// Runs the Linux first-boot configuration, in the order of the module's
/// doc.
pub fn run(
    plan: &Plan,
    attempt: Attempt,
    ch: &mut dyn Channel,
    state: &crate::state::StateDir,
    report: &Reporter,
) -> Result<(), Outcome> {
    let from = sources(plan)?;
    let mut a = Actions::new(plan, attempt, ch, report);
    let name = plan.computer.name.as_str();
    // A hostname or unit that cannot be set will not be fixed by a reload
    // of the same image.
    a.run("set-hostname", &sh(HOSTNAME, &[name]), Outcome::Fatal)?;
    a.run("enable-sshd", &sh(SSHD, &[]), Outcome::Fatal)?;
    let mut args: Vec<&str> = Vec::new();
    let private = private_interface(plan);
    if let Some(p) = &private {
        args.extend(["-i", p.as_str()]);
    }
    args.extend(from.iter().map(String::as_str));
    run_file(&mut a, "firewall-ssh", "firewall.sh", FIREWALL, &args)?;
    public_network(&mut a)?;
    sync_time(&mut a, &plan.profile.time_servers)?;
    a.run("remove-private-keys", &sh(SCRUB_KEYS, &[]), Outcome::Fatal)?;
    a.run(
        "mkdir-state",
        &sh("mkdir -p /var/lib/reimage/scripts", &[]),
        Outcome::Retry,
    )?;
    a.upload(
        "write-marker",
        marker(plan, attempt).as_bytes(),
        MARKER,
        0o644,
    )?;
    a.hooks(&hook_shell())?;
    a.scripts("/var/lib/reimage/scripts", '/', hook_command)?;
    match new_password(plan, ROOT, None, state, report)? {
        Some(pw) => {
            set_root_password(&mut a, &pw)?;
            password_taken(plan, ROOT, state, report)
        }
        None => Ok(()),
    }
}

/// Lists the image's own VCL post-load scripts (VCL's Linux.pm paths).
pub(super) const VCL_POST_LOAD: &str = include_str!("vcl-post-load.sh");

/// Lists the executable files of the image's `/etc/reimage/post-load.d`.
pub(super) const POST_LOAD_D: &str = include_str!("post-load-d.sh");

/// Runs one hook or script.
const RUN_HOOK: &str = include_str!("run-hook.sh");

/// How Linux finds and runs the image's hooks.
fn hook_shell() -> HookShell {
    HookShell {
        vcl: sh(VCL_POST_LOAD, &[]),
        dir: sh(POST_LOAD_D, &[]),
        dir_prefix: "",
        run: hook_command,
    }
}

/// `env K=V ... sh -c RUN PATH`: the hook or script at `path` with the
/// environment `env`; run itself when it is executable, else by sh (VCL's
/// `/etc/init.d/vcl_post_load` need not be).
pub(super) fn hook_command(path: &str, env: &Env) -> Result<Vec<String>, String> {
    let mut v = vec!["env".to_string()];
    v.extend(env.iter().map(|(k, val)| format!("{k}={val}")));
    v.extend(sh(RUN_HOOK, &[path]));
    Ok(v)
}

/// Where SSH is opened to: the profile's `allow_from`, or else this node's
/// own address toward the computer and `@peer`, the address the computer
/// sees the connection come from (behind NAT, not the same).
fn sources(plan: &Plan) -> Result<Vec<String>, Outcome> {
    let mut from = allow_from(plan).map_err(Outcome::Fatal)?;
    if plan.profile.allow_from.is_empty() {
        from.push("@peer".into());
    }
    Ok(from)
}

/// The interface the lockdown's accepts bind to (FIREWALL's `-i`): none
/// when the computer has no public interface (every interface, as
/// before); else the private one, by `mac` when the config names it, or
/// else `@peer`, the interface the SSH connection came in on.
pub(super) fn private_interface(plan: &Plan) -> Option<String> {
    plan.computer.public.as_ref()?;
    Some(match &plan.computer.mac {
        Some(m) => parse_mac(m).unwrap_or_else(|| m.clone()),
        None => "@peer".to_string(),
    })
}

/// The public interface configured, when the computer names one, and its
/// address reported. No interface with its MAC, or no tool the program
/// knows, is fatal (a reload of the same image changes neither); no
/// address in time (a DHCP server that did not answer) is a retry.
fn public_network(a: &mut Actions) -> Result<(), Outcome> {
    let Some(nic) = &a.plan.computer.public else {
        return Ok(());
    };
    let (mode, gateway, dns) = match &nic.addressing {
        Addressing::Dhcp => ("dhcp".to_string(), String::new(), Vec::new()),
        Addressing::Static(s) => (
            s.cidr(),
            s.gateway.map(|g| g.to_string()).unwrap_or_default(),
            s.dns.iter().map(|d| d.to_string()).collect(),
        ),
    };
    let mut args = vec![nic.mac.as_str(), mode.as_str(), gateway.as_str()];
    args.extend(dns.iter().map(String::as_str));
    let out = a.run_classified("public-network", &sh(PUBLIC_NET, &args), |code| {
        if code == 3 || code == 4 {
            Outcome::Fatal
        } else {
            Outcome::Retry
        }
    })?;
    if let Some(addr) = public_address(&out.stdout) {
        a.report.public_address(&addr);
    }
    Ok(())
}

/// The address (`A.B.C.D/N`) in the public-network program's last line,
/// `public interface IFACE (TOOL): A.B.C.D/N`.
pub(super) fn public_address(stdout: &str) -> Option<String> {
    let last = stdout.lines().rfind(|l| !l.trim().is_empty())?;
    let (_, addr) = last.rsplit_once(": ")?;
    let addr = addr.trim();
    let (ip, prefix) = addr.split_once('/')?;
    let ok =
        ip.parse::<std::net::Ipv4Addr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= 32);
    ok.then(|| addr.to_string())
}

/// The clock synced from `servers`, when there are any: no tool is fatal
/// (exit 3), a server that did not answer a retry.
fn sync_time(a: &mut Actions, servers: &[String]) -> Result<(), Outcome> {
    if servers.is_empty() {
        return Ok(());
    }
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    a.run_classified("time-sync", &sh(TIME, &servers), |code| {
        if code == 3 {
            Outcome::Fatal
        } else {
            Outcome::Retry
        }
    })?;
    Ok(())
}

/// Root's new password, uploaded as a file the program deletes; should it
/// fail, the file is deleted here.
fn set_root_password(a: &mut Actions, pw: &crate::secret::Secret) -> Result<(), Outcome> {
    // Named after this run, so two runs against one host (tests, or a
    // computer that is its own management node) never share the file.
    let file = format!("/var/lib/reimage/root-password.{}", std::process::id());
    a.upload(
        "upload-root-password",
        format!("root:{}\n", pw.expose()).as_bytes(),
        &file,
        0o600,
    )?;
    let r = a.run("set-root-password", &sh(PASSWORD, &[&file]), Outcome::Fatal);
    if r.is_err() {
        let _ = a.ch.run(&sh(r#"rm -f "$1""#, &[&file]), a.timeout);
    }
    r.map(|_| ())
}
