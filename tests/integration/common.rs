//! Helpers shared by the integration tests: a scratch directory, a config
//! file in it, and the built `reimage` binary run with a timeout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long one run of the binary may take before the test fails: a guard
/// against hangs, not a speed check.
pub const LIMIT: Duration = Duration::from_secs(90);

/// The built binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_reimage"))
}

/// A scratch directory removed on drop.
pub struct Scratch {
    /// Its path.
    pub dir: PathBuf,
}

impl Scratch {
    /// A new empty scratch directory named after the test.
    pub fn new(name: &str) -> Scratch {
        // One test binary runs every area: a counter keeps two scratch
        // directories of the same name apart.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "reimage-test-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch { dir }
    }

    /// A path inside it.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Writes a file inside it (parents created) and returns its path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("create parent");
        }
        std::fs::write(&p, text).expect("write file");
        p
    }

    /// Writes an executable script inside it.
    pub fn script(&self, rel: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.write(rel, text);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    /// Writes `reimage.toml` with `state_dir` set to a folder in here,
    /// followed by `body`.
    pub fn config(&self, body: &str) -> PathBuf {
        let text = format!("state_dir = \"{}\"\n{body}", self.path("state").display());
        self.write("reimage.toml", &text)
    }

    /// The computer's event log lines, parsed.
    pub fn events(&self, computer: &str) -> Vec<serde_json::Value> {
        let p = self.path(&format!("state/computers/{computer}/events.jsonl"));
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("event log line is JSON"))
            .collect()
    }
}

impl Scratch {
    /// The computer's event log while a run may still be appending to it:
    /// a line caught half written is left out (the next read has it).
    pub fn events_so_far(&self, computer: &str) -> Vec<serde_json::Value> {
        let p = self.path(&format!("state/computers/{computer}/events.jsonl"));
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits for `child` at most `limit`; kills it and panics past that.
pub fn wait_limit(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("reimage did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True when process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Peak resident memory (KiB) and exit code of a command, as GNU time(1)
/// measures it. Not by wait4(2) from here: the child of a big test
/// process starts as (a copy of) its memory, and the kernel keeps that
/// high-water mark across exec, so the number grew with the test binary
/// (89 MB for a run that peaks at 12 MB when the whole suite runs). time
/// is small, and forks the command from itself.
pub fn run_measured(cmd: Command) -> (i32, i64) {
    let out = std::env::temp_dir().join(format!(
        "reimage-maxrss-{}-{}",
        std::process::id(),
        NEXT_MEASURE.fetch_add(1, Ordering::Relaxed)
    ));
    let mut time = Command::new("/usr/bin/time");
    time.args(["-f", "%M", "-o"])
        .arg(&out)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => time.env(k, v),
            None => time.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        time.current_dir(d);
    }
    let mut child = time.spawn().expect("spawn /usr/bin/time");
    let code = wait_limit(&mut child, LIMIT).unwrap_or(-1);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    // time writes "Command exited with non-zero status N" before the
    // number when the command fails: the number is the last line.
    let kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from time(1): {text:?}"));
    (code, kib)
}

static NEXT_MEASURE: AtomicUsize = AtomicUsize::new(0);

/// Polls `f` until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Events of one kind.
pub fn of_kind<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// The path of a file in the repository.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Records the command line of every process on this machine, every few
/// milliseconds, until stopped: a test then checks that a secret never
/// showed up in a process listing (what `ps` shows, from /proc/PID/cmdline).
pub struct ProcWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<std::collections::BTreeSet<String>>>,
}

impl ProcWatch {
    /// Starts watching.
    pub fn start() -> ProcWatch {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(dir) = std::fs::read_dir("/proc") {
                    for e in dir.flatten() {
                        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
                            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
                            if !line.trim().is_empty() {
                                seen.insert(line);
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        });
        ProcWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns every command line seen.
    pub fn finish(mut self) -> std::collections::BTreeSet<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

/// One booted guest at a time across every area (qemu, e2e, debian): the
/// machine has few cores and TCG is slow.
pub fn one_vm_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A config for computer `pc7` and image `img`: the `script` provisioner
/// runs `load` (TOML array text) with `timeout`; the generic OS profile
/// waits for `steps` (TOML inline tables, "" for nothing).
pub fn command_config(s: &Scratch, load: &str, timeout: &str, steps: &str) {
    s.config(&format!(
        r#"max_attempts = 2

[provisioners.script]
kind = "command"
load = {load}
timeout = "{timeout}"

[os.appliance]
family = "generic"
channel = "none"
steps = [{steps}]

[images.img]
os = "appliance"
provisioner = "script"
source = "src"

[computers.pc7]
address = "127.0.0.1"
"#
    ));
}

/// `examples/NAME` as a site has it, for `check`: copied into `s`, with
/// every path that starts with one of `site` (say "/etc/reimage/") moved
/// under `s` and made there, private and runnable (mode 0700, as a secret
/// or a script may need): a copy of examples/ FILE when the repo has one
/// of that name (libvirt-domain.xml), else empty. `check` looks at every
/// file a config names, and the examples name a site's.
pub fn site_example(s: &Scratch, name: &str, site: &[&str]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let mut text = std::fs::read_to_string(repo(&format!("examples/{name}"))).expect("example");
    for prefix in site {
        let quoted = format!("\"{prefix}");
        let paths: std::collections::BTreeSet<String> = text
            .match_indices(&quoted)
            .filter_map(|(i, _)| text[i + 1..].split('"').next().map(str::to_string))
            .collect();
        for path in paths {
            let moved = s.dir.join(path.trim_start_matches('/'));
            let Some(file) = Path::new(&path).file_name() else {
                continue;
            };
            let shipped = repo(&format!("examples/{}", file.to_string_lossy()));
            std::fs::create_dir_all(moved.parent().expect("a parent")).expect("mkdir");
            let body = std::fs::read(&shipped).unwrap_or_default();
            std::fs::write(&moved, body).expect("write a site file");
            std::fs::set_permissions(&moved, std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
            text = text.replace(&format!("\"{path}\""), &format!("\"{}\"", moved.display()));
        }
    }
    s.write(name, &text)
}

/// Writes a secret file inside `s` (a password, a key), readable by its
/// owner alone, as `check` wants a secret; returns its path.
pub fn secret(s: &Scratch, rel: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = s.write(rel, text);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}
