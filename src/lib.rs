//! reimage gets one computer ready for one reservation: a provisioning
//! module loads the image, then an OS module waits for the OS and configures
//! it, in an attempt loop whose results map to exit codes.
//!
//! The modules stand on floors; a floor imports only floors below it:
//!
//! - this file and `cli`: parse, one dispatch, the exit code from [`Error`];
//! - `runner`: the attempt loop and the contract's rules;
//! - `provision` and `os`, side by side (neither imports the other; the OS
//!   module gets only a [`os::PowerReset`] from the runner);
//! - `control`: how an OS module talks to the computer (SSH, WinRM);
//! - `config`: the TOML model, validation with file:line:col, the plan;
//! - `fleet`: the admin's views (status, log) over records and the store;
//! - `report`, `state`, `coord`: events and logs; lock and records; the
//!   site-wide lock and load-limit store;
//! - `wait`, `backoff`, `exec`, `tree`, `probe`, `signal`, `stdio`,
//!   `outcome`, `names`, `attempt`, `duration`, `encoding`, `xml`,
//!   `secret`, `error`: shared mechanisms.

mod attempt;
mod backoff;
mod cli;
mod config;
mod control;
mod coord;
mod duration;
mod encoding;
mod error;
mod exec;
mod fleet;
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
mod tree;
mod wait;
mod xml;

use clap::{CommandFactory, Parser};
use std::path::PathBuf;

use cli::{CheckArgs, Cli, Command, CompletionsArgs, StepArgs};
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
    if let Some(var) = empty_env() {
        let e = Error::Usage(format!(
            "the environment variable {var} is set but empty: unset it, or set it to a path"
        ));
        if std::env::args_os().any(|a| a == "--json") {
            json_event(None, None, &e);
        }
        report::stderr_line(&format!("reimage: error: {e}"));
        return e.code();
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    signal::install();
    match execute(&cli) {
        Ok(code) => code,
        Err(e) => {
            if cli.json {
                json_end(&cli, &e);
            }
            report::stderr_line(&format!("reimage: error: {e}"));
            e.code()
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
fn json_end(cli: &Cli, e: &Error) {
    let (computer, image) = match &cli.command {
        Command::Provision(a) => (Some(&a.computer), Some(&a.image)),
        Command::Load(a) | Command::PostLoad(a) => (Some(&a.computer), Some(&a.image)),
        Command::Check(a) => (a.computer.as_ref(), a.image.as_ref()),
        Command::Log(a) => (Some(&a.computer), None),
        Command::Status(_) | Command::SetupDb | Command::Completions(_) => (None, None),
    };
    json_event(computer, image, e);
}

/// The final `run` event of a run that stopped on `e`.
fn json_event(computer: Option<&String>, image: Option<&String>, e: &Error) {
    let event = serde_json::json!({
        "time": report::rfc3339(std::time::SystemTime::now()),
        "kind": report::EventKind::Run,
        "computer": computer,
        "image": image,
        "result": e.kind(),
        "message": e.to_string(),
        "code": e.code(),
    });
    report::stdout_line(&event.to_string());
}

/// What a run does once its computer and image are known.
enum Job {
    /// The whole attempt loop with this many attempts (default: the plan's),
    /// and whether a preload may stand in for the load.
    Provision(Option<u32>, bool),
    /// One phase at attempt K of N (N default: the plan's).
    Single(Phase, u32, Option<u32>),
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
        Command::Check(a) => return check(cli, &load(cli)?, a),
        Command::Status(a) => {
            let loaded = load(cli)?;
            let state = state::StateDir::new(&state_dir(cli, &loaded));
            return fleet::status(&loaded, &state, &a.computers, format(cli));
        }
        Command::Log(a) => {
            let loaded = load(cli)?;
            let state = state::StateDir::new(&state_dir(cli, &loaded));
            return fleet::log(&state, a, format(cli));
        }
        Command::SetupDb => return setup_db(&load(cli)?),
        Command::Provision(a) => (
            (&a.computer, &a.image, &a.reservation),
            Job::Provision(a.attempts, a.reuse),
        ),
        Command::Load(a) => (target(a), single(Phase::Load, a)?),
        Command::PostLoad(a) => (target(a), single(Phase::PostLoad, a)?),
    };
    let (computer, image, reservation) = target;
    run(cli, &load(cli)?, computer, image, reservation.clone(), job)
}

/// Loads the config and decodes every provisioner table up front, so
/// `check` finds what a run would trip over, and a run fails before it
/// takes the lock.
fn load(cli: &Cli) -> Result<Loaded, Error> {
    let loaded = config::load(&cli.config, &provision::BUILTIN)?;
    for (name, table) in &loaded.config.provisioners {
        let r = config::ProvisionerRef::from_table(name, table);
        provision::prepare(&r).map_err(|e| loaded.key_error(&["provisioners", name], &e))?;
    }
    Ok(loaded)
}

/// Writes the completion script for `a.shell` on stdout; it needs no config,
/// so the packages generate theirs with the binary they ship.
fn completions(a: &CompletionsArgs) -> Result<i32, Error> {
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "reimage", &mut script);
    std::io::stdout()
        .write_all(&script)
        .map_err(|e| Error::Fatal(anyhow::anyhow!("cannot write the completion script: {e}")))?;
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

fn check(cli: &Cli, loaded: &Loaded, a: &CheckArgs) -> Result<i32, Error> {
    let (Some(computer), Some(image)) = (&a.computer, &a.image) else {
        let c = &loaded.config;
        report::stdout_line(&format!(
            "{}: OK ({} computers, {} images, {} OS profiles, {} provisioners)",
            loaded.path.display(),
            c.computers.len(),
            c.images.len(),
            c.os.len(),
            c.provisioners.len()
        ));
        return Ok(0);
    };
    let plan = config::resolve(loaded, computer, image, &state_dir(cli, loaded), None)?;
    let lines = provisioner(loaded, &plan)?.describe(&plan);
    report::stdout_line(plan.describe(&lines).trim_end_matches('\n'));
    report::stdout_line(
        reuse_rule(&plan, &state::StateDir::new(&state_dir(cli, loaded))).trim_end_matches('\n'),
    );
    Ok(0)
}

/// `check`'s account of `provision --reuse` for this computer and image.
fn reuse_rule(plan: &Plan, state: &state::StateDir) -> String {
    let name = &plan.computer.name;
    let mut s = String::from(
        "reuse (provision --reservation ID --reuse):\n  skips the load only when this computer still runs a preload: a `provision`\n  without --reservation that reimage ran to ready, no run of any kind on the\n  computer since (every run ends the preload, so one handed to a reservation\n  is never reused), and now the same boot id and a passing image_check;\n  otherwise it loads as usual. The events say which way and why.\n",
    );
    match &plan.image.config.image_check {
        Some(c) => s.push_str(&format!(
            "  image check: `{}` must match /{}/\n",
            c.command.join(" "),
            c.expect
        )),
        None => s.push_str(&format!(
            "  image check: none for `{}`, so this image is never reused\n",
            plan.image.name
        )),
    }
    match state.read_preload(name) {
        Some(p) => s.push_str(&format!(
            "  preload now: image `{}`, boot id {}, verified {}\n",
            p.image, p.boot_id, p.verified
        )),
        None => s.push_str("  preload now: none\n"),
    }
    s
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
    };
    if let Some(r) = reservation {
        s.push_str(&format!(" --reservation {r}"));
    }
    s
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
    let os = os::build(&plan);
    let state = state::StateDir::open(&dir)?;
    let command = describe_job(&job, &plan.image.name, &reservation);
    let (_hold, slots) = coord::hold(
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
    let log = state.event_log(&plan.computer.name);
    // Under the lock and before this run's first event: no one writes it.
    if let Err(e) = retention::trim(&log, loaded.config.logs.retention()) {
        report.warn(&format!("cannot trim the event log: {e:#}"));
    }
    if let Err(e) = report.log_to(&log) {
        report.warn(&format!("cannot open the event log {}: {e}", log.display()));
    }
    report.start(&command);
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
    let (name, of) = match job {
        Job::Provision(n, _) => ("provision", n.unwrap_or(plan.max_attempts)),
        Job::Single(p, _, of) => (p.name(), of.unwrap_or(plan.max_attempts)),
    };
    let previous = state.read_last_run(&plan.computer.name);
    let mut runner = runner::Runner {
        plan: &plan,
        provisioner: provisioner.as_ref(),
        os: os.as_ref(),
        state: &state,
        report: &report,
        record: runner::Runner::record_for(&plan, name, of),
        record_failed: false,
    };
    runner.note_previous(previous);
    // Every run takes the preload record away as it starts: a preload is
    // reused at most once, and never after anyone else has had the computer.
    let preload = state.take_preload(&plan.computer.name).unwrap_or_else(|e| {
        report.warn(&format!("{e:#}: nothing will be reused"));
        None
    });
    let code = match job {
        Job::Provision(_, true) => runner.provision(of, runner::Reuse::Asked(preload)),
        Job::Provision(_, false) => runner.provision(of, runner::Reuse::Off),
        // Without --of, an attempt past the plan's count is the last one.
        Job::Single(phase, k, _) => runner.single(phase, plan.attempt(k, of.max(k))),
    };
    if report.mode() != report::Mode::Json && code != 0 && !cli.quiet {
        report::stderr_line(&format!("reimage: event log: {}", log.display()));
    }
    Ok(code)
}
