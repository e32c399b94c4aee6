//! reimage: gets one computer ready for one reservation. `main` parses the
//! command line, builds the plan and the two modules, runs, and maps the
//! result to an exit code.

mod attempt;
mod cli;
mod config;
mod control;
mod duration;
mod encoding;
mod exec;
mod os;
mod outcome;
mod probe;
mod provision;
mod report;
mod runner;
mod signal;
mod state;
mod xml;

use clap::Parser;
use std::path::PathBuf;

use cli::{Cli, Command};
use config::{ConfigError, UsageError};
use outcome::{EXIT_CONFIG, EXIT_FATAL, EXIT_LOCKED, EXIT_USAGE};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    signal::install();
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("reimage: error: {e:#}");
            exit_code_of(&e)
        }
    };
    std::process::exit(code);
}

/// The exit code for an error that stopped reimage before a module ran.
fn exit_code_of(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<ConfigError>().is_some() {
        EXIT_CONFIG
    } else if e.downcast_ref::<UsageError>().is_some() {
        EXIT_USAGE
    } else if e.downcast_ref::<state::Locked>().is_some() {
        EXIT_LOCKED
    } else {
        EXIT_FATAL
    }
}

fn state_dir(cli: &Cli, loaded: &config::Loaded) -> PathBuf {
    cli.state_dir
        .clone()
        .or_else(|| loaded.config.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from("/var/lib/reimage"))
}

fn run(cli: &Cli) -> anyhow::Result<i32> {
    let loaded = config::load(&cli.config)?;
    let (computer, image, reservation) = match &cli.command {
        Command::Check(a) => {
            let (Some(c), Some(i)) = (&a.computer, &a.image) else {
                let c = &loaded.config;
                println!(
                    "{}: OK ({} computers, {} images, {} OS profiles, {} provisioners)",
                    loaded.path.display(),
                    c.computers.len(),
                    c.images.len(),
                    c.os.len(),
                    c.provisioners.len()
                );
                return Ok(0);
            };
            let plan = config::resolve(&loaded, c, i, &state_dir(cli, &loaded), None)?;
            print!("{}", plan.describe());
            return Ok(0);
        }
        Command::Provision(a) => (&a.computer, &a.image, &a.reservation),
        Command::Load(a) | Command::PostLoad(a) => (&a.computer, &a.image, &a.reservation),
    };
    let dir = state_dir(cli, &loaded);
    let plan = config::resolve(&loaded, computer, image, &dir, reservation.clone())?;
    let state = state::StateDir::new(&dir);
    let _lock = state.lock(&plan.computer.name)?;
    let report = report::Reporter::new(
        &plan.computer.name,
        &plan.image.name,
        reservation.clone(),
        cli.json,
        cli.quiet,
        cli.verbose,
    );
    let log = state.event_log(&plan.computer.name);
    if let Err(e) = report.log_to(&log) {
        report.warn(&format!("cannot open the event log {}: {e}", log.display()));
    }
    let provisioner = provision::build(&plan);
    let os = os::build(&plan);
    let (name, of) = match &cli.command {
        Command::Provision(a) => ("provision", a.attempts.unwrap_or(plan.max_attempts)),
        Command::Load(a) => ("load", a.of.unwrap_or(plan.max_attempts)),
        Command::PostLoad(a) => ("post-load", a.of.unwrap_or(plan.max_attempts)),
        Command::Check(_) => unreachable!("check returned above"),
    };
    let mut runner = runner::Runner {
        plan: &plan,
        provisioner: provisioner.as_ref(),
        os: os.as_ref(),
        state: &state,
        report: &report,
        record: runner::Runner::record_for(&plan, name, of),
    };
    let code = match &cli.command {
        Command::Provision(_) => runner.provision(of),
        Command::Load(a) => runner.single(
            runner::Phase::Load,
            attempt::Attempt::new(a.attempt, of.max(a.attempt), plan.growth),
        ),
        Command::PostLoad(a) => runner.single(
            runner::Phase::PostLoad,
            attempt::Attempt::new(a.attempt, of.max(a.attempt), plan.growth),
        ),
        Command::Check(_) => unreachable!("check returned above"),
    };
    if report.mode() != report::Mode::Json && code != 0 && !cli.quiet {
        eprintln!("reimage: event log: {}", log.display());
    }
    Ok(code)
}
