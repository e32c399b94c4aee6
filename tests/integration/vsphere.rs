//! The `vsphere` provisioner over the built binary, against a STAND-IN for
//! vCenter's Automation REST API (tests/standins/vsphere_standin.py, built
//! from the API reference: no vCenter, and no vcsim serving `/api`, runs
//! here). The stand-in keeps an in-memory inventory, writes it to a state
//! file after each change, and logs every request (method, path, whether
//! the session header was there), which is what these tests assert on.

use crate::common;
use crate::test::{Output, Test, run};
use common::{LIMIT, Scratch, free_port, of_kind};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const USER: &str = "reimage@vsphere.local";
const PASSWORD: &str = "Pw-for-stand-in-7731";

/// A running stand-in, killed on drop.
struct Standin {
    child: Child,
    port: u16,
    log: PathBuf,
    state: PathBuf,
}

impl Standin {
    /// Starts the stand-in with `extra` arguments and waits for its
    /// "listening" line.
    fn start(s: &Scratch, extra: &[&str]) -> Standin {
        let pw = s.write("standin-password", &format!("{PASSWORD}\n"));
        let log = s.path("standin-requests.jsonl");
        let state = s.path("standin-state.json");
        let mut child = Command::new("python3")
            .arg(common::repo("tests/standins/vsphere_standin.py"))
            .args(["--port", "0", "--user", USER, "--password-file"])
            .arg(&pw)
            .arg("--log")
            .arg(&log)
            .arg("--state-file")
            .arg(&state)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 vsphere_standin.py");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("stand-in did not start");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Standin {
            child,
            port,
            log,
            state,
        }
    }

    fn url(&self, scheme: &str, host: &str) -> String {
        format!("{scheme}://{host}:{}", self.port)
    }

    /// The requests so far.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line is JSON"))
            .collect()
    }

    /// "METHOD /path?query" of each request.
    fn calls(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| {
                let q = r["query"].as_str().unwrap_or("");
                let p = r["path"].as_str().unwrap_or("");
                let m = r["method"].as_str().unwrap_or("");
                if q.is_empty() {
                    format!("{m} {p}")
                } else {
                    format!("{m} {p}?{q}")
                }
            })
            .collect()
    }

    /// The inventory now.
    fn inventory(&self) -> Value {
        let text = std::fs::read_to_string(&self.state).expect("stand-in state file");
        serde_json::from_str(&text).expect("state is JSON")
    }

    /// The VMs named `name`: (id, object).
    fn vms_named(&self, name: &str) -> Vec<(String, Value)> {
        let inv = self.inventory();
        inv["vms"]
            .as_object()
            .expect("vms")
            .iter()
            .filter(|(_, v)| v["name"] == name)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the config: provisioner `vc` at `url` with `extra` keys, and the
/// password file the provisioner reads (`password`).
fn config(s: &Scratch, url: &str, password: &str, extra: &str) {
    let pw = s.write("vc-password", &format!("{password}\n"));
    s.config(&format!(
        r#"
[os.none]
family = "generic"
channel = "none"
steps = []

[provisioners.vc]
kind = "vsphere"
url = "{url}"
username = "{USER}"
password_file = "{}"
{extra}

[images.w7]
os = "none"
provisioner = "vc"
source = "win7-template"

[computers.pc1]
address = "127.0.0.1"
node = "pc1"
"#,
        pw.display()
    ));
}

const PLACEMENT: &str = r#"datacenter = "Lab"
folder = "reimage"
resource_pool = "Lab-Pool"
datastore = "datastore1""#;

fn load(s: &Scratch, extra: &[&str]) -> Output {
    let r = Test::with(s).load("pc1", "w7").args(extra).run();
    println!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        r.code, r.stdout, r.stderr
    );
    r
}

/// The password appears nowhere the run left text.
fn assert_no_password(s: &Scratch, r: &Output) {
    assert!(!r.stderr.contains(PASSWORD) && !r.stdout.contains(PASSWORD));
    let events =
        std::fs::read_to_string(s.path("state/computers/pc1/events.jsonl")).unwrap_or_default();
    assert!(!events.contains(PASSWORD), "password in the event log");
}

/// Every request after the login carried the session, and the last one
/// deleted it.
fn assert_session_used_and_deleted(st: &Standin) {
    let reqs = st.requests();
    assert!(reqs.len() >= 2, "{reqs:?}");
    assert_eq!(reqs[0]["method"], "POST");
    assert_eq!(reqs[0]["path"], "/api/session");
    assert_eq!(reqs[0]["session"], false);
    for r in &reqs[1..] {
        assert_eq!(
            r["session_valid"], true,
            "request without a live session: {r}"
        );
    }
    let last = reqs.last().expect("a request");
    assert_eq!(
        (&last["method"], &last["path"]),
        (&"DELETE".into(), &"/api/session".into())
    );
    assert_eq!(last["status"], 204);
    assert_eq!(st.inventory()["sessions"], 0, "a session was left open");
}

#[test]
fn clean_load_replaces_the_vm_and_powers_it_on() {
    let s = Scratch::new("vsphere-clean");
    let st = Standin::start(&s, &[]);
    config(&s, &st.url("http", "127.0.0.1"), PASSWORD, PLACEMENT);
    let old = st.vms_named("pc1");
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].1["power_state"], "POWERED_ON");
    let old_id = old[0].0.clone();

    let r = load(&s, &[]);
    r.code(0);

    let calls = st.calls();
    println!("{calls:#?}");
    let pos = |c: &str| {
        calls
            .iter()
            .position(|x| x == c)
            .unwrap_or_else(|| panic!("no call {c} in {calls:#?}"))
    };
    let stop = pos(&format!("POST /api/vcenter/vm/{old_id}/power?action=stop"));
    let delete = pos(&format!("DELETE /api/vcenter/vm/{old_id}"));
    let clone = pos("POST /api/vcenter/vm?action=clone");
    let template = pos("GET /api/vcenter/vm?names=win7-template&datacenters=datacenter-2");
    assert!(
        template < stop,
        "template looked up before anything is deleted"
    );
    assert!(stop < delete && delete < clone);
    assert!(calls.contains(&"GET /api/vcenter/datacenter?names=Lab".to_string()));
    assert!(
        calls.contains(
            &"GET /api/vcenter/folder?names=reimage&type=VIRTUAL_MACHINE&datacenters=datacenter-2"
                .to_string()
        )
    );

    // The clone spec: name, source, placement ids resolved from the names.
    let reqs = st.requests();
    let body = &reqs[clone]["body"];
    assert_eq!(body["name"], "pc1");
    assert_eq!(body["source"], "vm-100");
    assert_eq!(body["placement"]["folder"], "group-v10");
    assert_eq!(body["placement"]["resource_pool"], "resgroup-8");
    assert_eq!(body["placement"]["datastore"], "datastore-11");

    let new = st.vms_named("pc1");
    assert_eq!(new.len(), 1);
    let (new_id, vm) = &new[0];
    assert_ne!(*new_id, old_id, "a new VM");
    assert_eq!(vm["power_state"], "POWERED_ON");
    assert_eq!(vm["cloned_from"], "vm-100");
    assert_eq!(vm["clone_kind"], "clone");
    let start = pos(&format!("POST /api/vcenter/vm/{new_id}/power?action=start"));
    let polled = pos(&format!("GET /api/vcenter/vm/{new_id}/power"));
    assert!(clone < start && start < polled);
    assert_eq!(st.inventory()["deleted"][0]["vm"], old_id.as_str());
    assert_session_used_and_deleted(&st);
    assert_no_password(&s, &r);
}

#[test]
fn bad_password_is_fatal_and_names_the_call() {
    let s = Scratch::new("vsphere-badpw");
    let st = Standin::start(&s, &[]);
    config(&s, &st.url("http", "127.0.0.1"), "not-the-password", "");
    let r = load(&s, &[]);
    r.code(1);
    r.stderr_has("POST /api/session");
    r.stderr_has("check username and password_file");
    r.stderr_has("VM pc1");
    assert!(!r.stderr.contains("not-the-password"));
    assert_eq!(st.calls(), vec!["POST /api/session"]);
    assert_eq!(st.vms_named("pc1")[0].1["power_state"], "POWERED_ON");
}

#[test]
fn missing_template_is_fatal_and_keeps_the_old_vm() {
    let s = Scratch::new("vsphere-notemplate");
    let st = Standin::start(&s, &[]);
    config(&s, &st.url("http", "127.0.0.1"), PASSWORD, "");
    let text = std::fs::read_to_string(s.path("reimage.toml")).expect("config");
    s.write(
        "reimage.toml",
        &text.replace(
            "source = \"win7-template\"",
            "source = \"no-such-template\"",
        ),
    );
    let r = load(&s, &[]);
    r.code(1);
    r.stderr_has("template not found");
    assert!(
        r.stderr
            .contains("GET /api/vcenter/vm?names=no-such-template")
    );
    let old = st.vms_named("pc1");
    assert_eq!(
        old.len(),
        1,
        "the old VM stays when the template is missing"
    );
    assert_eq!(old[0].1["power_state"], "POWERED_ON");
    assert_session_used_and_deleted(&st);
}

#[test]
fn unavailable_clone_asks_for_a_retry_until_the_last_attempt() {
    let s = Scratch::new("vsphere-503");
    let st = Standin::start(&s, &["--fail", "clone-503"]);
    config(&s, &st.url("http", "127.0.0.1"), PASSWORD, "");
    let r = load(&s, &[]);
    r.code(75);
    r.stderr_has("POST /api/vcenter/vm?action=clone");
    r.stderr_has("503 SERVICE_UNAVAILABLE");
    assert_session_used_and_deleted(&st);

    let r = load(&s, &["--attempt", "3", "--of", "3"]);
    assert_eq!(r.code, 1, "no reload left on the last attempt");
    r.stderr_has("no attempts left");
}

#[test]
fn connection_refused_asks_for_a_retry() {
    let s = Scratch::new("vsphere-refused");
    let port = free_port();
    config(&s, &format!("http://127.0.0.1:{port}"), PASSWORD, "");
    let r = load(&s, &[]);
    r.code(75);
    r.stderr_has("POST /api/session");
    r.stderr_has("VM pc1");
    assert_no_password(&s, &r);
}

#[test]
fn slow_power_on_is_polled_and_a_stuck_one_times_out() {
    let s = Scratch::new("vsphere-slow");
    let st = Standin::start(&s, &["--power-on-delay", "1.5"]);
    config(&s, &st.url("http", "127.0.0.1"), PASSWORD, "");
    let r = load(&s, &["--json"]);
    r.code(0);
    let polls = st
        .calls()
        .iter()
        .filter(|c| c.starts_with("GET /api/vcenter/vm/") && c.ends_with("/power"))
        .count();
    assert!(polls >= 2, "power state polled until on ({polls} polls)");
    let events = s.events("pc1");
    assert!(
        of_kind(&events, "progress")
            .iter()
            .any(|e| e["message"] == "power state POWERED_OFF"),
        "progress reported while waiting"
    );
    assert_eq!(st.vms_named("pc1")[0].1["power_state"], "POWERED_ON");
    drop(st);

    let s = Scratch::new("vsphere-stuck");
    let st = Standin::start(&s, &["--power-on-delay", "600"]);
    config(
        &s,
        &st.url("http", "127.0.0.1"),
        PASSWORD,
        "power_on_timeout = \"1s\"",
    );
    let r = load(&s, &[]);
    r.code(75);
    r.stderr_has("did not report POWERED_ON");
    assert_session_used_and_deleted(&st);
}

#[test]
fn instant_clone_of_a_running_source() {
    let s = Scratch::new("vsphere-instant");
    let st = Standin::start(&s, &["--template-power", "POWERED_ON"]);
    config(
        &s,
        &st.url("http", "127.0.0.1"),
        PASSWORD,
        "clone = \"instant\"",
    );
    let r = load(&s, &[]);
    r.code(0);
    let vm = &st.vms_named("pc1")[0].1;
    assert_eq!(vm["clone_kind"], "instant-clone");
    assert_eq!(vm["power_state"], "POWERED_ON");
    assert!(
        st.calls()
            .contains(&"POST /api/vcenter/vm?action=instant-clone".to_string())
    );
    drop(st);

    let s = Scratch::new("vsphere-instant-off");
    let st = Standin::start(&s, &[]);
    config(
        &s,
        &st.url("http", "127.0.0.1"),
        PASSWORD,
        "clone = \"instant\"",
    );
    let r = load(&s, &[]);
    r.code(1);
    r.stderr_has("running source VM");
    assert_eq!(st.vms_named("pc1").len(), 1, "old VM kept");
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert, key).
fn self_signed(s: &Scratch) -> (PathBuf, PathBuf) {
    let (cert, key) = (s.path("cert.pem"), s.path("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl")
        .success();
    assert!(ok, "openssl req failed");
    (cert, key)
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn https_verifies_against_ca_file() {
    let s = Scratch::new("vsphere-tls");
    let (cert, key) = self_signed(&s);
    let st = Standin::start(
        &s,
        &["--tls-cert", &path_str(&cert), "--tls-key", &path_str(&key)],
    );
    let url = st.url("https", "localhost");

    config(
        &s,
        &url,
        PASSWORD,
        &format!("ca_file = \"{}\"", cert.display()),
    );
    let r = load(&s, &[]);
    r.code(0);
    assert_eq!(st.vms_named("pc1")[0].1["cloned_from"], "vm-100");
    r.stderr_lacks("warning");

    config(&s, &url, PASSWORD, "");
    let r = load(&s, &[]);
    r.code(1);
    r.stderr_has("TLS");
    r.stderr_has("set ca_file");
    r.stderr_has("POST /api/session");
}

#[test]
fn insecure_warns_and_connects() {
    let s = Scratch::new("vsphere-insecure");
    let (cert, key) = self_signed(&s);
    let st = Standin::start(
        &s,
        &["--tls-cert", &path_str(&cert), "--tls-key", &path_str(&key)],
    );
    config(
        &s,
        &st.url("https", "127.0.0.1"),
        PASSWORD,
        "insecure = true",
    );
    let r = load(&s, &[]);
    r.code(0);
    r.stderr_has("insecure = true");
    let events = s.events("pc1");
    let warns = of_kind(&events, "warn");
    assert!(
        warns.iter().any(|e| e["message"]
            .as_str()
            .unwrap_or("")
            .contains("verification is off")),
        "{warns:?}"
    );
}

#[test]
fn check_describes_the_plan() {
    let s = Scratch::new("vsphere-check");
    config(&s, "https://vcenter.example", PASSWORD, PLACEMENT);
    let r = Test::with(&s).check("pc1", "w7").run();
    println!("{}\n{}", r.stdout, r.stderr);
    r.code(0);
    for want in [
        "vCenter: https://vcenter.example as reimage@vsphere.local",
        "template VM: win7-template",
        "folder reimage",
        "clone: full",
        "power-on timeout: 10m, ",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?} in\n{}", r.stdout);
    }

    let text = std::fs::read_to_string(s.path("reimage.toml")).expect("config");
    s.write(
        "reimage.toml",
        &text.replace("url = \"https://", "url = \"ftp://"),
    );
    let r = Test::with(&s).args(&["check"]).run();
    assert_eq!(r.code, 78, "{}", r.stderr);
    r.stderr_has("https://");
}

#[test]
fn the_example_config_checks() {
    let example = common::repo("examples/vsphere.toml");
    for (computer, image, want) in [
        ("win7-03", "win7-sysprep", "clone: full"),
        ("lnx-11", "ubuntu-desk", "clone: instant"),
    ] {
        let r = run(
            Command::new(common::bin())
                .arg("--config")
                .arg(&example)
                .args(["check", computer, "--image", image])
                .env_remove("REIMAGE_CONFIG")
                .env_remove("REIMAGE_STATE_DIR"),
            LIMIT,
        );
        r.code(0);
        r.stdout_has("kind vsphere");
        assert!(r.stdout.contains(want), "{}", r.stdout);
    }
}

#[test]
fn a_wait_that_times_out_resets_the_vm() {
    let s = Scratch::new("vsphere-reset");
    let st = Standin::start(&s, &[]);
    config(&s, &st.url("http", "127.0.0.1"), PASSWORD, "");
    let closed = free_port();
    let text = std::fs::read_to_string(s.path("reimage.toml")).expect("config");
    s.write(
        "reimage.toml",
        &text.replace(
            "steps = []",
            &format!(
                "steps = [{{ wait = \"port\", port = {closed}, timeout = \"1s\", reset_on_timeout = \"1s\" }}]"
            ),
        ),
    );
    let r = Test::with(&s).post_load("pc1", "w7").run();
    println!("exit {}\n{}", r.code, r.stderr);
    assert_eq!(r.code, 75, "{}", r.stderr);
    let calls = st.calls();
    assert!(
        calls.contains(&"POST /api/vcenter/vm/vm-101/power?action=reset".to_string()),
        "{calls:#?}"
    );
    r.stderr_has("power was reset");
    assert_session_used_and_deleted(&st);
}

#[test]
fn busy_and_unavailable_error_types_ask_for_a_retry() {
    for (mode, call, shown) in [
        (
            "session-503",
            "POST /api/session",
            "503 SERVICE_UNAVAILABLE",
        ),
        (
            "delete-busy",
            "DELETE /api/vcenter/vm/vm-101",
            "400 RESOURCE_BUSY",
        ),
        (
            "stop-500",
            "POST /api/vcenter/vm/vm-101/power?action=stop",
            "500 ERROR",
        ),
    ] {
        let s = Scratch::new(&format!("vsphere-{mode}"));
        let st = Standin::start(&s, &["--fail", mode]);
        config(&s, &st.url("http", "127.0.0.1"), PASSWORD, "");
        let r = load(&s, &[]);
        assert_eq!(r.code, 75, "{mode}: {}", r.stderr);
        assert!(r.stderr.contains(call), "{mode}: {}", r.stderr);
        assert!(r.stderr.contains(shown), "{mode}: {}", r.stderr);
        if mode != "session-503" {
            assert_session_used_and_deleted(&st);
        }
    }
}

#[test]
fn a_post_load_retry_on_the_last_attempt_is_fatal() {
    let s = Scratch::new("vsphere-post-last");
    // An OS step nothing can pass, on a vSphere VM; post-load does not talk
    // to vSphere for it, so no stand-in runs.
    config(
        &s,
        &format!("http://127.0.0.1:{}", free_port()),
        PASSWORD,
        &format!(
            "\n[os.closed]\nfamily = \"generic\"\nchannel = \"none\"\n\
             steps = [{{ wait = \"port\", port = {}, timeout = \"300ms\" }}]\n\n\
             [images.closed]\nos = \"closed\"\nprovisioner = \"vc\"\nsource = \"win7-template\"\n",
            free_port()
        ),
    );
    Test::with(&s)
        .post_load("pc1", "closed")
        .attempt(3, 3)
        .run()
        .code(1)
        .stderr_has("no attempts left");
    Test::with(&s)
        .post_load("pc1", "closed")
        .attempt(1, 3)
        .run()
        .code(75)
        .stderr_lacks("no attempts left");
}
