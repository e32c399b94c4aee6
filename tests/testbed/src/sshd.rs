//! A real OpenSSH `sshd` on 127.0.0.1, with host and client keys generated
//! per test in a temp dir, killed (with every connection it forked) on
//! drop. The SSH channel's unit tests (src/control/ssh.rs) and the
//! integration tests both start it from here.

use crate::port::Port;
use rustix::process::{Pid, Signal};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A temp dir with two host keys, an authorized client key and an
/// unauthorized one.
pub struct Fixture {
    pub dir: PathBuf,
    pub host_key_a: PathBuf,
    pub host_key_b: PathBuf,
    pub client_key: PathBuf,
    pub wrong_client_key: PathBuf,
    pub user: String,
    /// More sshd_config lines (e.g. `SetEnv ...` for the sessions).
    pub extra_config: String,
}

impl Fixture {
    pub fn new(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("reimage-sshd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test dir");
        let f = Fixture {
            host_key_a: keygen(&dir, "host_a"),
            host_key_b: keygen(&dir, "host_b"),
            client_key: keygen(&dir, "client"),
            wrong_client_key: keygen(&dir, "wrong_client"),
            user: String::from_utf8_lossy(
                &Command::new("id")
                    .arg("-un")
                    .output()
                    .expect("id -un")
                    .stdout,
            )
            .trim()
            .to_string(),
            extra_config: String::new(),
            dir,
        };
        let pubkey = std::fs::read_to_string(pub_of(&f.client_key)).expect("client .pub");
        std::fs::write(f.dir.join("authorized_keys"), pubkey).expect("write authorized_keys");
        f
    }

    /// Starts sshd with `host_key` on a port of its own.
    pub fn start(&self, host_key: &Path) -> Sshd {
        self.start_on(host_key, &Port::new())
            .unwrap_or_else(|e| panic!("sshd did not start: {e}"))
    }

    /// Starts sshd on `held` (sshd binds it with SO_REUSEADDR); Ok once
    /// it logs that it listens.
    pub fn start_on(&self, host_key: &Path, held: &Port) -> Result<Sshd, String> {
        let port = held.num();
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
        let config = self.dir.join(format!("sshd_config.{port}"));
        let text = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             PidFile none\nUsePAM no\nStrictModes no\nPermitRootLogin yes\n\
             PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPrintMotd no\n\
             LogLevel INFO\n{}\n",
            host_key.display(),
            self.dir.join("authorized_keys").display(),
            self.extra_config
        );
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        let spawned_at = Instant::now();
        let mut child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning sshd: {e}"))?;
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        let mut sshd = Sshd {
            port,
            held: held.clone(),
            child,
            log,
            spawned_at,
        };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if sshd.log().contains("Server listening on") {
                return Ok(sshd);
            }
            if let Ok(Some(st)) = sshd.child.try_wait() {
                return Err(format!("sshd on port {port} exited {st}: {}", sshd.log()));
            }
            thread::sleep(Duration::from_millis(5));
        }
        Err(format!(
            "sshd on port {port} did not listen within 30s: {}",
            sshd.log()
        ))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running sshd.
pub struct Sshd {
    pub port: u16,
    /// The port, held for as long as this value lives (and any clone):
    /// another sshd can start on it after this one is killed.
    pub held: Port,
    /// Just before the process was spawned.
    pub spawned_at: Instant,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Sshd {
    /// What sshd wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Kills sshd and every process it forked (the per-connection children
    /// call setsid, so a process group kill would miss them).
    pub fn kill(&mut self) {
        let root = self.child.id() as i32;
        let mut all = vec![root];
        let mut i = 0;
        while i < all.len() {
            let parent = all[i];
            all.extend(children_of(parent));
            i += 1;
        }
        for pid in all.into_iter().rev().filter_map(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Generates an ed25519 key pair `dir/name` (+ `.pub`), no passphrase.
pub fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen");
    assert!(st.success(), "ssh-keygen failed");
    path
}

/// `key.pub`.
pub fn pub_of(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// The base64 key field of `key.pub`.
pub fn pub_b64(key: &Path) -> String {
    std::fs::read_to_string(pub_of(key))
        .expect("read .pub")
        .split_whitespace()
        .nth(1)
        .expect("key field")
        .to_string()
}
