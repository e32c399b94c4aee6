//! The WinRM STAND-IN (tests/standins/winrm_standin.py: a Windows WinRM
//! listener written from MS-WSMV and Microsoft's documentation; no Windows
//! runs here), as a child process killed on drop. Its password file and the
//! JSON dump of the Windows state it simulates live in a temp dir of its
//! own, removed on drop.

use crate::port::Port;
use std::cell::OnceCell;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The account the stand-in lets in.
pub const USER: &str = "Administrator";

/// The stand-in's script.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../standins/winrm_standin.py")
}

/// A running stand-in.
pub struct Standin {
    child: Child,
    port: Port,
    dir: PathBuf,
    listening: mpsc::Receiver<Instant>,
    listening_at: OnceCell<Instant>,
}

impl Standin {
    /// Spawns the stand-in on 127.0.0.1:`port` (it binds the held port
    /// with SO_REUSEADDR, again after each simulated reboot), `USER`'s
    /// password `password`, with more `args`; returns at once (see
    /// [`Standin::listening_at`]).
    pub fn spawn(port: &Port, password: &str, args: &[&str]) -> Standin {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "testbed-winrm-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the stand-in's dir");
        let pw = dir.join("password");
        std::fs::write(&pw, format!("{password}\n")).expect("write the password file");
        let mut child = Command::new("python3")
            .arg(script())
            .args(["--port", &port.num().to_string(), "--user", USER])
            .arg("--password-file")
            .arg(&pw)
            .arg("--state-file")
            .arg(dir.join("state.json"))
            .arg("--wire-log")
            .arg(dir.join("wire.jsonl"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 winrm_standin.py");
        let stdout = child.stdout.take().expect("stand-in stdout");
        let (tx, listening) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = tx.send(Instant::now());
                }
            }
        });
        Standin {
            child,
            port: port.clone(),
            dir,
            listening,
            listening_at: OnceCell::new(),
        }
    }

    /// [`Standin::spawn`], then waits until it listens.
    pub fn start(port: &Port, password: &str, args: &[&str]) -> Standin {
        let s = Standin::spawn(port, password, args);
        s.listening_at();
        s
    }

    /// When the stand-in said it listens (waits for that, 30 s at most).
    pub fn listening_at(&self) -> Instant {
        *self.listening_at.get_or_init(|| {
            self.listening
                .recv_timeout(Duration::from_secs(30))
                .expect("the WinRM stand-in did not start listening")
        })
    }

    /// Its TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port.num()
    }

    /// Its process id (a test's load command signals it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file the stand-in dumps the simulated Windows state to, after
    /// every change (a test's load command may wait on it).
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The simulated Windows state as the stand-in last dumped it.
    pub fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state_file()).expect("the stand-in's state file");
        serde_json::from_str(&text).expect("the stand-in's state is JSON")
    }
}

impl Standin {
    /// Every request body the stand-in received, as it came over the wire
    /// (what a client sent: command lines, arguments, shell environment,
    /// stdin), in order.
    pub fn wire(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("wire.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a wire log line is a JSON string"))
            .collect()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
