//! reimage gets one computer ready for one reservation: a provisioning
//! module loads the image, then an OS module waits for the OS and configures
//! it, in an attempt loop whose results map to exit codes.
//!
//! The modules stand on floors; a floor imports only floors below it:
//!
//! - this file and `cli`: parse, one dispatch, the exit code from [`Error`];
//! - `runner`: the attempt loop and the contract's rules; `power-off`
//!   through a provisioner's [`provision::PowerOff`] capability;
//! - `provision` and `os`, side by side (neither imports the other; the OS
//!   module gets only a [`os::PowerReset`] from the runner). A provisioner
//!   is a file of `provision/` (`lab`, `command`, `qemu`, `libvirt`) or a
//!   folder with a file per step: `provision/xcat/` (`config`, `slot`,
//!   `power`, `install`, `answers`, `monitor`) and `provision/vsphere/`
//!   (`config`, `vcenter`, `esxi`, `soap`, `vim`). An OS family
//!   is one place: `os/linux/`, `os/windows/` (windows-5, -6, -10) and
//!   `os/generic.rs`, each owning its defaults, wait sequence, the keys it
//!   takes, the first-boot plan `check` prints, its boot id, before-load
//!   and first boot, and its scripts as files (`*.sh`, `*.vbs`, `*.ps1`);
//!   what every family goes through is `os/module.rs` and
//!   `os/sequence.rs`. This file hands the families to `config` (as it
//!   hands it the provisioners' names) through `config::FamilyRules`;
//! - `control`: how an OS module talks to the computer (`ssh`, `winrm/`
//!   with its `auth`, `encryption` and `pin`, `none`);
//! - `config`: the TOML model, validation with file:line:col, the plan;
//!   it names no OS family and no provisioner kind;
//! - `fleet`: the admin's views (status, log) over records and the store;
//!   `metrics` (the node_exporter textfile a run rewrites as it ends) and
//!   `journal` (events to journald or syslog, which `report` sends);
//! - `report`, `state`, `coord`: events and logs; lock and records, and the
//!   state directory's layout (in `state` only) as a trust boundary, read
//!   with bounds; the site-wide lock and load-limit store;
//! - `wait`, `backoff`, `exec`, `tree`, `probe`, `signal`, `stdio`,
//!   `outcome`, `names`, `attempt`, `duration`, `encoding`, `xml`,
//!   `secret`, `tls`, `error`: shared mechanisms (`backoff` the one backoff,
//!   `tree` the process trees commands start, `stdio` stdout and stderr
//!   that never block a run, `exec::Output` the one
//!   command output, `names` the one table of names per enum, `tls` the
//!   certificate trust of the HTTPS clients: vSphere's and WinRM's).
//!
//! The tests' servers and stand-ins are started by the `testbed` crate
//! (tests/testbed), for the unit tests here and the integration binary.

mod access;
mod attempt;
mod backoff;
mod check;
mod cli;
mod complete;
mod config;
mod control;
mod coord;
mod duration;
mod encoding;
mod error;
mod exec;
mod fleet;
mod journal;
mod metrics;
mod names;
mod os;
mod outcome;
mod probe;
#[cfg(test)]
mod proptests;
mod provision;
mod report;
mod retention;
mod runner;
mod secret;
mod signal;
mod size;
mod state;
mod stdio;
mod tls;
mod tree;
mod wait;
mod xml;

use clap::Parser;
use std::path::PathBuf;

use cli::{Cli, Command, CompletionsArgs, GrantArgs, PowerOffArgs, RevokeArgs, StepArgs};
use config::{Loaded, Plan};
pub use error::Error;
use outcome::EXIT_USAGE;
use runner::Phase;

/// Runs reimage with the process's arguments and returns the exit code,
/// once its stdout and stderr took what was written (or a short while
/// passed: a reader that does not read cannot hold the exit).
pub fn main() -> i32 {
    let code = run_main();
    stdio::drain_all();
    code
}

fn run_main() -> i32 {
    // A shell asking for completions gets them, and nothing else runs.
    complete::answer_the_shell();
    if let Some(var) = empty_env() {
        let e = Error::Usage(format!(
            "the environment variable {var} is set but empty: unset it, or set it to a path"
        ));
        if std::env::args_os().any(|a| a == "--json") {
            json_event(None, None, &e, e.code());
        }
        report::stderr_line(&format!("reimage: error: {e}"));
        return e.code();
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            // A usage error ends a --json run with its `run` event too
            // (--help and --version are no errors).
            if code != 0 && std::env::args_os().any(|a| a == "--json") {
                let text = e.render().to_string();
                let e = Error::Usage(text.trim_end().to_string());
                json_event(None, None, &e, e.code());
            }
            let _ = e.print();
            return code;
        }
    };
    signal::install();
    match execute(&cli) {
        Ok(code) => code,
        Err(e) => {
            // A run that stopped on a signal before its events began (in
            // the wait for the store) exits as an interrupted run does.
            let code = match signal::caught() {
                Some(sig) if sig > 0 => 128 + sig,
                _ => e.code(),
            };
            if cli.json {
                json_end(&cli, &e, code);
            }
            // The error may quote what a command or a guest printed.
            let text = e.to_string();
            report::stderr_line(&format!("reimage: error: {}", report::printable(&text)));
            code
        }
    }
}

/// An environment variable that stands for a flag, set but empty, while
/// its flag is not given: clap would blame the flag.
fn empty_env() -> Option<&'static str> {
    [
        ("REIMAGE_CONFIG", "--config"),
        ("REIMAGE_STATE_DIR", "--state-dir"),
    ]
    .into_iter()
    .find(|(var, flag)| {
        std::env::var_os(var).is_some_and(|v| v.is_empty())
            && !std::env::args_os().any(|a| {
                a.to_str()
                    .is_some_and(|a| a == *flag || a.starts_with(&format!("{flag}=")))
            })
    })
    .map(|(var, _)| var)
}

/// With `--json`, a run that stops before its events start (usage, config,
/// lock) still ends with one `run` event that carries the exit code.
fn json_end(cli: &Cli, e: &Error, code: i32) {
    let (computer, image) = match &cli.command {
        Command::Provision(a) => (Some(&a.computer), Some(&a.image)),
        Command::Load(a) | Command::PostLoad(a) => (Some(&a.computer), Some(&a.image)),
        Command::Check(a) => (a.computer.as_ref(), a.image.as_ref()),
        Command::PowerOff(a) => (Some(&a.computer), a.image.as_ref()),
        Command::Log(a) => (Some(&a.computer), None),
        Command::Grant(a) => (Some(&a.computer), None),
        Command::Revoke(a) => (Some(&a.computer), None),
        Command::Status(_) | Command::SetupDb | Command::Completions(_) => (None, None),
    };
    json_event(computer, image, e, code);
}

/// The final `run` event of a run that stopped on `e`, exiting `code`.
fn json_event(computer: Option<&String>, image: Option<&String>, e: &Error, code: i32) {
    let event = serde_json::json!({
        "time": report::rfc3339(std::time::SystemTime::now()),
        "kind": report::EventKind::Run,
        "computer": computer,
        "image": image,
        "result": e.kind(),
        "message": e.to_string(),
        "code": code,
    });
    report::stdout_line(&report::json_safe(&event.to_string()));
}

/// What a run does once its computer and image are known.
enum Job {
    /// The whole attempt loop with this many attempts (default: the plan's),
    /// and whether a preload may stand in for the load.
    Provision(Option<u32>, bool),
    /// One phase at attempt K of N (N default: the plan's).
    Single(Phase, u32, Option<u32>),
    /// The provisioner's power-off.
    PowerOff,
}

/// The one dispatch over the subcommand.
fn execute(cli: &Cli) -> Result<i32, Error> {
    if !matches!(
        cli.command,
        Command::Provision(_) | Command::Load(_) | Command::PostLoad(_)
    ) {
        // A view holds nothing a run waits for: its output waits for its
        // reader (a pager) rather than being dropped.
        stdio::patient();
    }
    let (target, job) = match &cli.command {
        Command::Completions(a) => return completions(a),
        Command::Check(a) => {
            let loaded = load(cli)?;
            return check::run(&loaded, a, &state_dir(cli, &loaded), format(cli));
        }
        Command::Status(a) => {
            let loaded = load(cli)?;
            let state = state::StateDir::new(&state_dir(cli, &loaded));
            let classes = slot_classes(&loaded, a, cli);
            return fleet::status(&loaded, &state, a, format(cli), &classes);
        }
        Command::Log(a) => {
            let loaded = load(cli)?;
            let state = state::StateDir::new(&state_dir(cli, &loaded));
            return fleet::log(&state, a, format(cli));
        }
        Command::SetupDb => return setup_db(&load(cli)?),
        Command::Grant(a) => return grant(cli, a),
        Command::Revoke(a) => return revoke(cli, a),
        Command::Provision(a) => (
            (&a.computer, &a.image, &a.reservation),
            Job::Provision(a.attempts, a.reuse),
        ),
        Command::Load(a) => (target(a), single(Phase::Load, a)?),
        Command::PostLoad(a) => (target(a), single(Phase::PostLoad, a)?),
        Command::PowerOff(a) => {
            let loaded = load(cli)?;
            let image = power_off_image(cli, &loaded, a)?;
            return run(cli, &loaded, &a.computer, &image, None, Job::PowerOff);
        }
    };
    let (computer, image, reservation) = target;
    run(cli, &load(cli)?, computer, image, reservation.clone(), job)
}

/// `reimage grant`: checked, then run under the computer's lock.
fn grant(cli: &Cli, a: &GrantArgs) -> Result<i32, Error> {
    let ask = access::check_ask(&a.reservation, &a.user, &a.ssh_keys, &a.from, a.admin)?;
    let mut command = format!(
        "grant --reservation {} --user {} --from {}",
        a.reservation,
        a.user,
        ask.from.join(",")
    );
    if a.admin {
        command.push_str(" --admin");
    }
    access_run(cli, &a.computer, &a.reservation, a.force, &command, |r| {
        access::grant(r.plan, r.os, r.state, r.report, &ask)
    })
}

/// `reimage revoke`: run under the computer's lock.
fn revoke(cli: &Cli, a: &RevokeArgs) -> Result<i32, Error> {
    if let Some(u) = &a.user {
        os::check_user(u).map_err(Error::Usage)?;
    }
    let mut command = format!("revoke --reservation {}", a.reservation);
    if let Some(u) = &a.user {
        command.push_str(&format!(" --user {u}"));
    }
    access_run(cli, &a.computer, &a.reservation, true, &command, |r| {
        access::revoke(
            r.plan,
            r.os,
            r.state,
            r.report,
            &a.reservation,
            a.user.as_deref(),
        )
    })
}

/// What `grant` and `revoke` run with.
struct AccessRun<'a> {
    plan: &'a Plan,
    os: &'a dyn os::OsModule,
    state: &'a state::StateDir,
    report: &'a report::Reporter,
}

/// `f` under the computer's lock, with the run's events, for the
/// computer's last image and `reservation`: refused (64) when the
/// computer was last provisioned for another reservation, unless `any`.
fn access_run(
    cli: &Cli,
    computer: &str,
    reservation: &str,
    any: bool,
    command: &str,
    f: impl FnOnce(&AccessRun) -> Result<i32, Error>,
) -> Result<i32, Error> {
    let loaded = load(cli)?;
    if !loaded.config.computers.contains_key(computer) {
        return Err(Error::Usage(format!(
            "unknown computer `{computer}`: it has no [computers.{computer}] in {}",
            loaded.path.display()
        )));
    }
    let dir = state_dir(cli, &loaded);
    let state = state::StateDir::open(&dir)?;
    let (hold, _slots) = coord::hold(
        loaded.config.coordination.as_ref(),
        &state,
        computer,
        command,
    )?;
    let last = state
        .read_last_run(computer)
        .filter(|r| !r.image.is_empty());
    let Some(last) = last else {
        return Err(Error::Usage(format!(
            "computer `{computer}` has no last run: provision it for reservation {reservation} first"
        )));
    };
    if !any && last.reservation.as_deref() != Some(reservation) {
        return Err(Error::Usage(format!(
            "computer `{computer}` was last provisioned for {}, not reservation {reservation}: provision it for {reservation} first, or give --force",
            last.reservation
                .as_deref()
                .map_or("no reservation".to_string(), |r| format!("reservation {r}"))
        )));
    }
    let plan = config::resolve(
        &loaded,
        computer,
        &last.image,
        &dir,
        Some(reservation.into()),
    )?;
    let os = os::build(&plan);
    let report = report::Reporter::new(
        computer,
        &last.image,
        Some(reservation.into()),
        format(cli),
        verbosity(cli),
    );
    let log = open_event_log(&state, computer, &loaded, &dir, &report)?;
    let unsent = open_sink(&loaded.config.logs, &report);
    start_events(&report, command, (hold.note(), unsent), &plan);
    // Someone has had the computer: no preload of it is reused.
    if let Err(e) = state.take_preload(computer) {
        report.warn(&format!("{e:#}"));
    }
    let code = f(&AccessRun {
        plan: &plan,
        os: os.as_ref(),
        state: &state,
        report: &report,
    })?;
    if report.mode() != report::Mode::Json && code != 0 && !cli.quiet {
        report::stderr_line(&format!("reimage: event log: {}", log.display()));
    }
    Ok(code)
}

/// Before a provision or load, the earlier grants go ([`access`]): on the
/// computer when it may not be loaded (`--reuse`, or a provisioner that
/// `reloads` nothing); true when `provision --reuse` may still reuse it.
fn earlier_grants(
    job: &Job,
    reloads: bool,
    plan: &Plan,
    os: &dyn os::OsModule,
    state: &state::StateDir,
    report: &report::Reporter,
) -> bool {
    match job {
        Job::Provision(_, reuse) => {
            access::before_provision(plan, os, state, report, *reuse || !reloads, reloads) && *reuse
        }
        Job::Single(Phase::Load, ..) => {
            access::before_provision(plan, os, state, report, !reloads, reloads);
            false
        }
        _ => false,
    }
}

/// The image `power-off` resolves its plan with (the provisioner is the
/// computer's, else the image's): `--image`, else the computer's last run's.
fn power_off_image(cli: &Cli, loaded: &Loaded, a: &PowerOffArgs) -> Result<String, Error> {
    if let Some(i) = &a.image {
        return Ok(i.clone());
    }
    let state = state::StateDir::new(&state_dir(cli, loaded));
    match state.read_last_run(&a.computer) {
        Some(r) if !r.image.is_empty() => Ok(r.image),
        _ => Err(Error::Usage(format!(
            "computer `{}` has no last run to take the image from: give --image IMAGE, whose provisioner (or the computer's) powers it off",
            a.computer
        ))),
    }
}

/// The limit classes `status` shows (for people, with no filter): one per
/// management node the config's provisioners take load slots from, each
/// asked once what it loads now.
fn slot_classes(loaded: &Loaded, a: &cli::StatusArgs, cli: &Cli) -> Vec<coord::SlotClass> {
    if cli.json || a.failed || a.since.is_some() || a.reservation.is_some() {
        return Vec::new();
    }
    let c = &loaded.config;
    // Every table, and every built-in name used without one.
    let mut refs: Vec<config::ProvisionerRef> = c
        .provisioners
        .iter()
        .map(|(name, table)| config::ProvisionerRef::from_table(name, table))
        .collect();
    let named = c.computers.values().filter_map(|x| x.provisioner.as_ref());
    let named = named.chain(c.images.values().filter_map(|x| x.provisioner.as_ref()));
    for name in named.collect::<std::collections::BTreeSet<_>>() {
        if !c.provisioners.contains_key(name) {
            refs.push(config::ProvisionerRef {
                name: name.clone(),
                kind: name.clone(),
                table: toml::Table::new(),
            });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut classes = Vec::new();
    for r in &refs {
        let name = &r.name;
        let Ok(p) = provision::prepare(r) else {
            continue;
        };
        if let Some(c) = p.slot_class(name)
            && seen.insert(c.class.clone())
        {
            classes.push(c);
        }
    }
    classes
}

/// Loads the config and decodes every provisioner table up front, so
/// `check` finds what a run would trip over, and a run fails before it
/// takes the lock.
fn load(cli: &Cli) -> Result<Loaded, Error> {
    let loaded = config::load(&cli.config, &provision::BUILTIN, os::families())?;
    for (name, table) in &loaded.config.provisioners {
        let r = config::ProvisionerRef::from_table(name, table);
        let p =
            provision::prepare(&r).map_err(|e| loaded.key_error(&["provisioners", name], &e))?;
        if let Some(image) = p
            .image_tables()
            .into_iter()
            .find(|i| !loaded.config.images.contains_key(i))
        {
            return Err(loaded
                .error_at(
                    &["provisioners", name, "images", &image],
                    format!(
                        "provisioner `{name}` has settings for image `{image}`, but there is no [images.{image}]: fix the name or remove the table"
                    ),
                )
                .into());
        }
    }
    Ok(loaded)
}

/// Writes the completion script for `a.shell` on stdout; it needs no config,
/// so the packages generate theirs with the binary they ship. At each TAB
/// the script asks `reimage` (see `complete`), which reads the config for
/// computer and image names.
fn completions(a: &CompletionsArgs) -> Result<i32, Error> {
    use std::io::Write;
    let fail = |e: std::io::Error| {
        Error::Fatal(anyhow::anyhow!("cannot write the completion script: {e}"))
    };
    let script = complete::script(a.shell).map_err(fail)?;
    std::io::stdout().write_all(&script).map_err(fail)?;
    Ok(0)
}

fn target(a: &StepArgs) -> (&String, &String, &Option<String>) {
    (&a.computer, &a.image, &a.reservation)
}

fn single(phase: Phase, a: &StepArgs) -> Result<Job, Error> {
    if let Some(of) = a.of
        && a.attempt > of
    {
        return Err(Error::Usage(format!(
            "--attempt {} is more than --of {of}: attempts count from 1 to --of",
            a.attempt
        )));
    }
    Ok(Job::Single(phase, a.attempt, a.of))
}

fn state_dir(cli: &Cli, loaded: &Loaded) -> PathBuf {
    cli.state_dir
        .clone()
        .or_else(|| loaded.config.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from("/var/lib/reimage"))
}

/// How events and views are written: `--json` or for people.
fn format(cli: &Cli) -> report::Format {
    if cli.json {
        report::Format::Json
    } else {
        report::Format::Human
    }
}

/// How much the screen shows: `-q` or `-v` (clap lets only one through).
fn verbosity(cli: &Cli) -> report::Verbosity {
    match (cli.quiet, cli.verbose) {
        (true, _) => report::Verbosity::Quiet,
        (false, true) => report::Verbosity::Verbose,
        (false, false) => report::Verbosity::Normal,
    }
}

/// The plan's provisioner, decoded (its table was checked in `execute`).
fn provisioner(loaded: &Loaded, plan: &Plan) -> Result<Box<dyn provision::Provisioner>, Error> {
    provision::prepare(&plan.provisioner).map_err(|e| {
        loaded
            .key_error(&["provisioners", &plan.provisioner.name], &e)
            .into()
    })
}

fn setup_db(loaded: &Loaded) -> Result<i32, Error> {
    let Some(s) = &loaded.config.coordination else {
        return Err(Error::Usage(format!(
            "{} has no [coordination] table: setup-db needs url = \"postgresql://USER@HOST/DB\"",
            loaded.path.display()
        )));
    };
    let (place, v) = coord::store::setup(s).map_err(|e| Error::Store(format!("{e:#}")))?;
    report::stdout_line(&format!("{place}: schema version {v} ready"));
    Ok(0)
}

/// Trims the computer's event log and has `report` append to it; the
/// caller holds the lock, and no event is written yet, so no one writes the
/// log. A log the state directory refuses (a link, another user's file)
/// refuses the run (78); one that cannot be trimmed or opened otherwise is
/// said, and the run goes on without it.
fn open_event_log(
    state: &state::StateDir,
    computer: &str,
    loaded: &Loaded,
    dir: &std::path::Path,
    report: &report::Reporter,
) -> Result<PathBuf, Error> {
    let refused = |e: &anyhow::Error| e.downcast_ref::<state::Refused>().is_some();
    let log = state.event_log(computer);
    let trimmed = match retention::trim(state, computer, loaded.config.logs.retention()) {
        Err(e) if refused(&e) => return Err(state::setup_error(e, dir)),
        other => other,
    };
    match state.append_event_log(computer) {
        Ok(f) => report.log_to(f, &log),
        Err(e) if refused(&e) => return Err(state::setup_error(e, dir)),
        Err(e) => report.warn(&format!(
            "cannot open the event log {}: {e:#}",
            log.display()
        )),
    }
    match trimmed {
        Err(e) => report.warn(&format!("cannot trim the event log: {e:#}")),
        Ok(t) if t.unread_bytes > 0 => report.warn(&format!(
            "the event log {} was larger than anything it keeps: its first {} bytes were dropped unread",
            log.display(),
            t.unread_bytes
        )),
        Ok(_) => {}
    }
    Ok(log)
}

/// With `[logs] journald` or `syslog`, has `report` send its events there
/// too; a socket that cannot be reached is a warning for the run's first
/// events (the event log still gets every event).
fn open_sink(logs: &config::LogsConfig, report: &report::Reporter) -> Option<String> {
    let protocol = match (logs.journald, logs.syslog) {
        (true, _) => journal::Protocol::Journald,
        (false, true) => journal::Protocol::Syslog,
        (false, false) => return None,
    };
    match journal::Sink::open(protocol, logs.socket.as_deref()) {
        Ok(sink) => {
            report.send_to(sink);
            None
        }
        Err(e) => {
            let path = logs.socket.clone().unwrap_or_else(|| {
                PathBuf::from(match protocol {
                    journal::Protocol::Journald => journal::JOURNALD_SOCKET,
                    journal::Protocol::Syslog => journal::SYSLOG_SOCKET,
                })
            });
            Some(format!(
                "[logs]: cannot send events to {}: {e}; they go to the event log only",
                path.display()
            ))
        }
    }
}

/// The command as the store and the event log name it.
fn describe_job(job: &Job, image: &str, reservation: &Option<String>) -> String {
    let mut s = match job {
        Job::Provision(n, reuse) => format!(
            "provision --image {image}{}{}",
            n.map(|n| format!(" --attempts {n}")).unwrap_or_default(),
            if *reuse { " --reuse" } else { "" }
        ),
        Job::Single(p, k, of) => format!(
            "{} --image {image} --attempt {k}{}",
            p.name(),
            of.map(|n| format!(" --of {n}")).unwrap_or_default()
        ),
        Job::PowerOff => format!("power-off --image {image}"),
    };
    if let Some(r) = reservation {
        s.push_str(&format!(" --reservation {r}"));
    }
    s
}

/// Starts the run's events (the event log is open): the start, what the
/// lease says (its generation, a takeover), that journald or syslog cannot
/// be reached (`unsent`), and what the profile's channel gives up on
/// purpose (said on every run).
fn start_events(
    report: &report::Reporter,
    command: &str,
    (hold, unsent): (Option<(String, bool)>, Option<String>),
    plan: &Plan,
) {
    report.start(command);
    if let Some(w) = unsent {
        report.warn(&w);
    }
    match hold {
        Some((note, true)) => report.warn(&note),
        Some((note, false)) => report.info(&note),
        None => {}
    }
    for w in os::channel_warnings(plan) {
        report.warn(&w);
    }
}

/// The usage error of `power-off` for a computer whose provisioner
/// cannot power it off, with what to change.
fn cannot_power_off(plan: &Plan) -> Error {
    Error::Usage(format!(
        "provisioner `{}` (kind {}) of computer `{}` cannot power it off: {}",
        plan.provisioner.name,
        plan.provisioner.kind,
        plan.computer.name,
        if plan.provisioner.kind == "command" {
            "give it a power_off command"
        } else {
            "it leaves the computer's power alone"
        }
    ))
}

/// The record's name of a job, and the attempts it may use.
fn job_attempts(job: &Job, plan: &Plan) -> (&'static str, u32) {
    match *job {
        Job::Provision(n, _) => ("provision", n.unwrap_or(plan.max_attempts)),
        // Without --of, an attempt past the plan's count is the last one
        // (as `single` runs it), and the record says so: 5/5, not 5/2.
        Job::Single(p, k, of) => (p.name(), of.unwrap_or(plan.max_attempts).max(k)),
        Job::PowerOff => ("power-off", 1),
    }
}

fn run(
    cli: &Cli,
    loaded: &Loaded,
    computer: &str,
    image: &str,
    reservation: Option<String>,
    job: Job,
) -> Result<i32, Error> {
    let dir = state_dir(cli, loaded);
    let mut plan = config::resolve(loaded, computer, image, &dir, reservation.clone())?;
    let provisioner = provisioner(loaded, &plan)?;
    if matches!(job, Job::PowerOff) && provisioner.power_off().is_none() {
        return Err(cannot_power_off(&plan));
    }
    let os = os::build(&plan);
    let state = state::StateDir::open(&dir)?;
    let command = describe_job(&job, &plan.image.name, &reservation);
    let (hold, slots) = coord::hold(
        loaded.config.coordination.as_ref(),
        &state,
        &plan.computer.name,
        &command,
    )?;
    plan.slots = slots;
    let report = report::Reporter::new(
        &plan.computer.name,
        &plan.image.name,
        reservation,
        format(cli),
        verbosity(cli),
    );
    let log = open_event_log(&state, &plan.computer.name, loaded, &dir, &report)?;
    let unsent = open_sink(&loaded.config.logs, &report);
    start_events(&report, &command, (hold.note(), unsent), &plan);
    // Before anything loads: what an earlier run left ends, and this run's
    // commands get their process trees. Dropped (everything of them
    // ended) before the lock is let go.
    let _tree = match tree::Run::start(&state, &plan.computer.name, &report) {
        Ok(t) => t,
        Err(e) => {
            report.warn(&e.to_string());
            report.finish(e.code(), report::EventResult::Fatal, &e.to_string());
            return Ok(e.code());
        }
    };
    let (name, of) = job_attempts(&job, &plan);
    let previous = state.read_last_run(&plan.computer.name);
    let mut runner = runner::Runner {
        plan: &plan,
        provisioner: provisioner.as_ref(),
        os: os.as_ref(),
        state: &state,
        report: &report,
        record: runner::Runner::record_for(&plan, name, of),
        record_failed: false,
        timing: runner::Timing::new(loaded.config.metrics.textfile.clone()),
    };
    runner.note_previous(previous);
    // Every run takes the preload record away as it starts: a preload is
    // reused at most once, and never after anyone else has had the computer.
    let preload = state.take_preload(&plan.computer.name).unwrap_or_else(|e| {
        report.warn(&format!("{e:#}: nothing will be reused"));
        None
    });
    let reloads = provisioner.reloads();
    let reuse = earlier_grants(&job, reloads, &plan, os.as_ref(), &state, &report);
    let code = match job {
        Job::Provision(_, true) if reuse => runner.provision(of, runner::Reuse::Asked(preload)),
        Job::Provision(..) => runner.provision(of, runner::Reuse::Off),
        // Without --of, an attempt past the plan's count is the last one.
        Job::Single(phase, k, _) => runner.single(phase, plan.attempt(k, of.max(k))),
        Job::PowerOff => runner.power_off(),
    };
    if report.mode() != report::Mode::Json && code != 0 && !cli.quiet {
        report::stderr_line(&format!("reimage: event log: {}", log.display()));
    }
    Ok(code)
}
