//! The command line (clap derive). Only definitions live here; `main`
//! parses, builds and runs.

use clap::{Args, Parser, Subcommand};
use clap_complete::ArgValueCandidates;
use std::path::PathBuf;

/// The heading of the options every subcommand takes, apart from the
/// subcommand's own in `--help`.
const GLOBAL: &str = "Global options";

/// Get one computer ready for one reservation: a provisioning module loads
/// the image, then an OS module waits for the OS and configures it.
///
/// Exit codes: 0 done, 75 retry (load the image again), 1 fatal (don't),
/// 64 usage error, 69 coordination store unreachable or lost, 73 computer
/// locked by another run, 78 configuration error, 129/130/143 interrupted by
/// SIGHUP/SIGINT/SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "reimage", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "REIMAGE_CONFIG",
        default_value = "/etc/reimage/reimage.toml",
        value_name = "PATH"
    )]
    pub config: PathBuf,

    /// State directory: locks, event logs, last-run records (default: the
    /// config's state_dir, else /var/lib/reimage).
    #[arg(long, global = true, help_heading = GLOBAL, env = "REIMAGE_STATE_DIR", value_name = "DIR", value_parser = state_dir)]
    pub state_dir: Option<PathBuf>,

    /// Write events as JSON lines on stdout.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    /// Only warnings, results and errors on stderr.
    #[arg(short, long, global = true, help_heading = GLOBAL, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also show status changes and command output.
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub verbose: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole attempt loop: load, then post-load; on retry load again.
    ///
    /// Exits 0 when the OS module says ready, 1 when a module says fatal or
    /// every attempt asked for a retry.
    Provision(ProvisionArgs),
    /// Run the provisioning module once: load the image and start the computer.
    ///
    /// Exits 0 loaded, 75 retry, 1 fatal.
    Load(StepArgs),
    /// Run the OS module once: wait for the OS, check it, configure it.
    ///
    /// Exits 0 ready, 75 retry, 1 fatal.
    #[command(name = "post-load")]
    PostLoad(StepArgs),
    /// Power the computer off through its provisioner (qemu, libvirt,
    /// vsphere, xcat; command with `power_off`), e.g. from a scheduler's
    /// power saving.
    ///
    /// Exits 0 off (or off already), 75 retry, 1 fatal; 64 when the
    /// provisioner has no power-off (lab; command without `power_off`).
    #[command(name = "power-off")]
    PowerOff(PowerOffArgs),
    /// Give a reservation's user access to the computer: the account (made
    /// when missing), its keys or a fresh password, and its way in (SSH on
    /// Linux, RDP on Windows) opened to each --from address only.
    ///
    /// A second grant adds keys and addresses. Prints where to connect.
    /// Exits 0 done, 75 the computer does not answer (try again), 1 the OS
    /// refused, 64 another reservation's computer (see --force), 73 locked.
    Grant(GrantArgs),
    /// Take a reservation's access back: the way in closed, the users'
    /// sessions ended, their accounts and password files removed.
    ///
    /// Idempotent. Exits as grant does.
    Revoke(RevokeArgs),
    /// Validate the configuration; with a computer and image, print the plan:
    /// provisioner, OS profile, and each wait step with its timeout at every
    /// attempt.
    Check(CheckArgs),
    /// Print a completion script for a shell on stdout (needs no config).
    ///
    /// The packages install them; by hand, e.g.
    /// `reimage completions bash > /etc/bash_completion.d/reimage`.
    Completions(CompletionsArgs),
    /// Show the fleet: one line per computer with its last run, and whether
    /// a run is in progress (here, or anywhere when [coordination] is set).
    ///
    /// A record that says running but whose process is gone is shown as
    /// stale.
    Status(StatusArgs),
    /// Show a computer's event log: the last run, one run, or all.
    Log(LogArgs),
    /// Create the coordination store's tables (also done on first use).
    ///
    /// Exits 0 with the schema version, 69 when the store cannot be used.
    #[command(name = "setup-db")]
    SetupDb,
}

/// `reimage status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Computers to show (default: every computer in the config or the
    /// state directory).
    #[arg(add = ArgValueCandidates::new(crate::complete::computers))]
    pub computers: Vec<String>,
    /// Only computers whose last run failed: retry, fatal, interrupted, or
    /// its process died while it ran (stale).
    #[arg(long)]
    pub failed: bool,
    /// Only runs updated since then: a duration back from now ("12h",
    /// "2d") or a time ("2026-12-05 18:00", local time unless --utc; or RFC
    /// 3339 with its offset).
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// Only runs for this reservation.
    #[arg(long, value_name = "ID")]
    pub reservation: Option<String>,
    /// Times in UTC (default: local time, from TZ, else /etc/localtime).
    #[arg(long)]
    pub utc: bool,
    /// Every column, times to the second, reasons whole (default: a table
    /// that fits 100 columns).
    #[arg(short, long)]
    pub wide: bool,
}

/// `reimage log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Computer name.
    #[arg(add = ArgValueCandidates::new(crate::complete::computers))]
    pub computer: String,
    /// Show run N (1 is the oldest in the log; default: the last run).
    #[arg(long, value_name = "N", conflicts_with = "all", value_parser = clap::value_parser!(u32).range(1..))]
    pub run: Option<u32>,
    /// Show every run in the log.
    #[arg(long)]
    pub all: bool,
    /// Keep showing new events of the last run until it ends.
    #[arg(short, long, conflicts_with_all = ["run", "all"])]
    pub follow: bool,
    /// List the runs in the log, one line each: its number (for --run),
    /// start, command, reservation, result, exit code and reason.
    #[arg(short, long, conflicts_with_all = ["run", "all", "follow"])]
    pub list: bool,
    /// With --list: times in UTC (default: local time).
    #[arg(long, requires = "list")]
    pub utc: bool,
}

/// `reimage provision`.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Computer name from [computers.NAME].
    #[arg(add = ArgValueCandidates::new(crate::complete::computers))]
    pub computer: String,
    /// Image name from [images.NAME].
    #[arg(long, value_name = "IMAGE", add = ArgValueCandidates::new(crate::complete::images))]
    pub image: String,
    /// Attempts (default: the image's max_attempts, else the config's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub attempts: Option<u32>,
    /// Reservation id, passed to modules and recorded in events (not
    /// starting with '-', no control characters).
    #[arg(long, value_name = "ID", value_parser = reservation_id)]
    pub reservation: Option<String>,
    /// Skip the load when the computer still runs a preload: a `provision`
    /// without --reservation that reimage ran to ready, no run on the
    /// computer since, the same boot id now and the image check passing.
    /// Otherwise load as usual. `check COMPUTER --image IMAGE` explains.
    #[arg(long, requires = "reservation")]
    pub reuse: bool,
}

/// `reimage load` and `reimage post-load`.
#[derive(Debug, Args)]
pub struct StepArgs {
    /// Computer name from [computers.NAME].
    #[arg(add = ArgValueCandidates::new(crate::complete::computers))]
    pub computer: String,
    /// Image name from [images.NAME].
    #[arg(long, value_name = "IMAGE", add = ArgValueCandidates::new(crate::complete::images))]
    pub image: String,
    /// This attempt's number (modules stretch timeouts on later attempts).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub attempt: u32,
    /// Attempts in all (on the last one a module answers fatal, not retry).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub of: Option<u32>,
    /// Reservation id, passed to modules and recorded in events (not
    /// starting with '-', no control characters).
    #[arg(long, value_name = "ID", value_parser = reservation_id)]
    pub reservation: Option<String>,
}

/// `reimage grant`.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Computer name from [computers.NAME].
    pub computer: String,
    /// The reservation the computer was provisioned for.
    #[arg(long, value_name = "ID", value_parser = reservation_id)]
    pub reservation: String,
    /// The user's account name (lower-case letters, digits, '_', '-').
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// A file of public keys (OpenSSH lines) for the user's
    /// authorized_keys (Linux); repeat for more. Without one, the user
    /// gets a fresh password.
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_keys: Vec<PathBuf>,
    /// An address (ADDRESS or ADDRESS/PREFIX) the user connects from;
    /// repeat for more. A later grant adds to the earlier ones.
    #[arg(long, value_name = "ADDRESS[/PREFIX]", required = true)]
    pub from: Vec<String>,
    /// Make the user an administrator (sudo on Linux, Administrators on
    /// Windows).
    #[arg(long)]
    pub admin: bool,
    /// Grant although the computer was last provisioned for another
    /// reservation.
    #[arg(long)]
    pub force: bool,
}

/// `reimage revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Computer name from [computers.NAME].
    pub computer: String,
    /// The reservation whose access is taken back.
    #[arg(long, value_name = "ID", value_parser = reservation_id)]
    pub reservation: String,
    /// Only this user's (default: every user of the reservation).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
}

/// `reimage power-off`.
#[derive(Debug, Args)]
pub struct PowerOffArgs {
    /// Computer name from [computers.NAME].
    #[arg(add = ArgValueCandidates::new(crate::complete::computers))]
    pub computer: String,
    /// Image name from [images.NAME]: the provisioner is the computer's,
    /// else this image's (default: the image of the computer's last run).
    #[arg(long, value_name = "IMAGE", add = ArgValueCandidates::new(crate::complete::images))]
    pub image: Option<String>,
}

/// `--state-dir`: not empty ("" would be whatever directory reimage runs
/// in; an empty REIMAGE_STATE_DIR is told before clap, naming the variable).
fn state_dir(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("the state directory cannot be empty: give a directory".into());
    }
    Ok(PathBuf::from(s))
}

/// A reservation id as `--reservation` takes it. It reaches the load
/// command's argument vector as `{reservation}`: one that starts with '-'
/// would be taken as an option there, so it is refused (64), as are an
/// empty one and control characters (it is written to records and logs).
fn reservation_id(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a reservation id cannot be empty".into());
    }
    if s.starts_with('-') {
        return Err(
            "it starts with '-', which a load command would take as an option: give the reservation's id".into(),
        );
    }
    if s.chars().any(char::is_control) {
        return Err("it holds control characters: give the reservation's id".into());
    }
    Ok(s.to_string())
}

/// `reimage check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Computer to plan for (needs --image).
    #[arg(requires = "image", add = ArgValueCandidates::new(crate::complete::computers))]
    pub computer: Option<String>,
    /// Image to plan for (needs a computer).
    #[arg(long, value_name = "IMAGE", requires = "computer", add = ArgValueCandidates::new(crate::complete::images))]
    pub image: Option<String>,
    /// Also ask the systems a run will drive, read-only and bounded in
    /// time (xCAT, libvirt, vSphere, the store, the SSH key, the
    /// computer's port), for COMPUTER --image IMAGE or --all; one line a
    /// check, exit 1 when one fails.
    #[arg(long)]
    pub online: bool,
    /// With --online: every computer and image a run could pair.
    #[arg(long, requires = "online", conflicts_with = "computer")]
    pub all: bool,
}

/// `reimage completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_id_never_looks_like_an_option() {
        assert_eq!(reservation_id("4711"), Ok("4711".into()));
        assert_eq!(reservation_id("r-1"), Ok("r-1".into()));
        for bad in ["", "-x", "--all", "a\nb", "\u{1b}[2J"] {
            assert!(reservation_id(bad).is_err(), "{bad:?}");
        }
        assert!(state_dir("").is_err());
    }
}
