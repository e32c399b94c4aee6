//! A small fluent builder for one run of the built binary, in the shape of
//! casey/just's `tests/test.rs`: say what to run, run it, then assert on the
//! result with `#[track_caller]` methods so a failure points at the test.
//!
//!     Test::new()
//!         .config(TOML)
//!         .script("load.sh", "#!/bin/sh\nexit 75\n")
//!         .load("pc7", "img")
//!         .attempt(3, 3)
//!         .run()
//!         .code(1)
//!         .stderr_has("no attempts left");
//!
//! `Test::new()` owns a fresh scratch directory; `Test::with(&scratch)` runs
//! in one a test has set up already. `$DIR` in `config` and `script` text is
//! replaced by the scratch directory.

use crate::common::{LIMIT, Scratch, bin, wait_limit};
use std::ffi::OsString;
use std::io::Read;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

enum Dir<'a> {
    Owned(Scratch),
    Borrowed(&'a Scratch),
}

impl Deref for Dir<'_> {
    type Target = Scratch;
    fn deref(&self) -> &Scratch {
        match self {
            Dir::Owned(s) => s,
            Dir::Borrowed(s) => s,
        }
    }
}

/// One run of `reimage`, being described.
pub struct Test<'a> {
    dir: Dir<'a>,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    computer: Option<String>,
    limit: Duration,
    config_flag: bool,
}

impl Test<'static> {
    /// A run in a fresh scratch directory, named after the calling test.
    #[track_caller]
    pub fn new() -> Test<'static> {
        let caller = std::panic::Location::caller();
        let name = format!(
            "{}-{}",
            caller.file().replace(['/', '.'], "_"),
            caller.line()
        );
        Test::from_dir(Dir::Owned(Scratch::new(&name)))
    }
}

impl<'a> Test<'a> {
    /// A run in `scratch`, which the test has filled already.
    pub fn with(scratch: &'a Scratch) -> Test<'a> {
        Test::from_dir(Dir::Borrowed(scratch))
    }

    fn from_dir(dir: Dir<'a>) -> Test<'a> {
        Test {
            dir,
            args: Vec::new(),
            env: vec![
                ("REIMAGE_CONFIG".into(), None),
                ("REIMAGE_STATE_DIR".into(), None),
            ],
            computer: None,
            limit: LIMIT,
            config_flag: true,
        }
    }

    /// The scratch directory the run happens in.
    pub fn scratch(&self) -> &Scratch {
        &self.dir
    }

    /// Writes `reimage.toml` (`state_dir` first, then `toml`).
    pub fn config(self, toml: &str) -> Self {
        let text = self.expand(toml);
        self.dir.config(&text);
        self
    }

    /// Writes an executable script into the scratch directory.
    pub fn script(self, rel: &str, text: &str) -> Self {
        let text = self.expand(text);
        self.dir.script(rel, &text);
        self
    }

    fn expand(&self, text: &str) -> String {
        text.replace("$DIR", &self.dir.dir.display().to_string())
    }

    /// `load COMPUTER --image IMAGE`.
    pub fn load(self, computer: &str, image: &str) -> Self {
        self.step("load", computer, image)
    }

    /// `post-load COMPUTER --image IMAGE`.
    pub fn post_load(self, computer: &str, image: &str) -> Self {
        self.step("post-load", computer, image)
    }

    /// `provision COMPUTER --image IMAGE`.
    pub fn provision(self, computer: &str, image: &str) -> Self {
        self.step("provision", computer, image)
    }

    /// `check COMPUTER --image IMAGE`.
    pub fn check(self, computer: &str, image: &str) -> Self {
        self.step("check", computer, image)
    }

    /// `power-off COMPUTER` (add `--image` with `args`).
    pub fn power_off(mut self, computer: &str) -> Self {
        self.computer = Some(computer.to_string());
        self.args(&["power-off", computer])
    }

    fn step(mut self, sub: &str, computer: &str, image: &str) -> Self {
        self.computer = Some(computer.to_string());
        self.args(&[sub, computer, "--image", image])
    }

    /// `--attempt N --of OF`.
    pub fn attempt(self, n: u32, of: u32) -> Self {
        self.args(&["--attempt", &n.to_string(), "--of", &of.to_string()])
    }

    /// More arguments, as given.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the run.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Runs without `--config` (the test passes its own or none).
    pub fn no_config_flag(mut self) -> Self {
        self.config_flag = false;
        self
    }

    /// How long the run may take before the test fails (default `LIMIT`).
    pub fn limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// The command as it would run.
    pub fn command(&self) -> Command {
        let mut c = Command::new(bin());
        if self.config_flag {
            c.arg("--config").arg(self.dir.path("reimage.toml"));
        }
        c.args(&self.args);
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    /// Runs it to the end; fails the test past the limit.
    pub fn run(self) -> Output {
        let mut out = run(&mut self.command(), self.limit);
        out.event_log = self
            .computer
            .as_ref()
            .map(|c| self.dir.path(&format!("state/computers/{c}/events.jsonl")));
        // Keep an owned scratch directory until the output is dropped.
        if let Dir::Owned(s) = self.dir {
            out._dir = Some(s);
        }
        out
    }
}

/// Runs any command to the end, failing the test past `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the command under test");
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait_limit(&mut child, limit);
    Output {
        code: status.unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        took: start.elapsed(),
        event_log: None,
        _dir: None,
    }
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    })
}

/// What a finished run left.
pub struct Output {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub took: Duration,
    event_log: Option<PathBuf>,
    _dir: Option<Scratch>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

impl Output {
    /// Asserts the exit code.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code; {self:?}");
        self
    }

    /// Asserts that standard output contains `text`.
    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}; {self:?}"
        );
        self
    }

    /// Asserts that standard output does not contain `text`.
    #[track_caller]
    pub fn stdout_lacks(&self, text: &str) -> &Self {
        assert!(!self.stdout.contains(text), "stdout has {text:?}; {self:?}");
        self
    }

    /// Asserts that standard error contains `text`.
    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}; {self:?}"
        );
        self
    }

    /// Asserts that standard error does not contain `text`.
    #[track_caller]
    pub fn stderr_lacks(&self, text: &str) -> &Self {
        assert!(!self.stderr.contains(text), "stderr has {text:?}; {self:?}");
        self
    }

    /// The computer's event log text (empty when there is none).
    #[track_caller]
    pub fn event_log(&self) -> String {
        let p = self
            .event_log
            .as_ref()
            .expect("event_log needs a run built with load/post_load/provision/check");
        std::fs::read_to_string(p).unwrap_or_default()
    }

    /// The computer's event log, parsed.
    #[track_caller]
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.event_log()
            .lines()
            .map(|l| serde_json::from_str(l).expect("event log line is JSON"))
            .collect()
    }

    /// Asserts that the computer's event log contains `text`.
    #[track_caller]
    pub fn event_log_has(&self, text: &str) -> &Self {
        let log = self.event_log();
        assert!(
            log.contains(text),
            "event log lacks {text:?}:\n{log}\n{self:?}"
        );
        self
    }
}
