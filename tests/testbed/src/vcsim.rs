//! govmomi's vSphere simulator (vcsim), built from Debian's
//! golang-github-vmware-govmomi-dev by tests/vcsim/build.sh (tests/vcsim/
//! main.go adds the flags reimage's tests need: a password file, a
//! certificate file, a method delay): not a stand-in, the simulator VMware's
//! own Go SDK is tested with. It binds a port of its own choosing and says
//! which on its first line, so nothing races for one.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The simulator binary at `out`, built once per process.
pub fn binary(out: &Path) -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let start = Instant::now();
        let st = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../vcsim/build.sh"))
            .arg(out)
            .status()
            .expect("run tests/vcsim/build.sh");
        assert!(st.success(), "tests/vcsim/build.sh failed");
        println!("vcsim ready in {:?}", start.elapsed());
        out.to_path_buf()
    })
}

/// A running simulator, killed on drop.
pub struct Vcsim {
    child: Child,
    /// `https://127.0.0.1:PORT` (no /sdk).
    pub base: String,
    /// The SHA-1 thumbprint of its certificate, as vSphere shows it.
    pub thumbprint: String,
    /// Its certificate (PEM).
    pub cert: PathBuf,
}

impl Vcsim {
    /// Starts `bin` as `model` ("vpx": a vCenter, "esx": a standalone
    /// host) for `user` with the password in `password_file`, its
    /// certificate and datastores in `dir`, each call held for `delay`
    /// when given; returns once it listens.
    pub fn start(
        bin: &Path,
        dir: &Path,
        model: &str,
        user: &str,
        password_file: &Path,
        delay: Option<&str>,
    ) -> Vcsim {
        let cert = dir.join("vcsim-cert.pem");
        let mut cmd = Command::new(bin);
        cmd.args(["-model", model, "-user", user])
            .arg("-password-file")
            .arg(password_file)
            .arg("-cert")
            .arg(&cert);
        if let Some(d) = delay {
            cmd.args(["-delay", d]);
        }
        // Its datastores are temporary directories: in `dir`, they go with
        // it even when the simulator is killed.
        cmd.env("TMPDIR", dir);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vcsim");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("vcsim did not start");
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts.len(), 3, "vcsim said {line:?}");
        Vcsim {
            child,
            base: parts[1].trim_end_matches("/sdk").to_string(),
            thumbprint: parts[2].to_string(),
            cert,
        }
    }

    /// Kills the simulator at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        self.kill();
    }
}
