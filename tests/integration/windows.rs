//! The Windows OS modules end to end over WinRM, through the built binary,
//! against the WinRM STAND-IN (tests/standins/winrm_standin.py, built from
//! the MS-WSMV formats; no Windows runs here). The stand-in simulates the
//! Windows state the first-boot actions change and dumps it as JSON after
//! every change: the tests assert on that file. The computer is a standing
//! (`lab`) machine: there is nothing to load.

use crate::common;
use crate::test::{Output, Test};
use common::{Scratch, free_port, of_kind, repo};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LOGIN_PW: &str = "Image-Pw-4711";
const ADMIN_SECRET: &str = "Fresh-Secret-9b2e";

/// A running stand-in; killed on drop.
struct Standin {
    child: Child,
    state: PathBuf,
}

impl Standin {
    /// Starts the stand-in on `port` with Administrator's password
    /// `LOGIN_PW`; waits for "listening" unless `--delay-start` is in `extra`.
    fn start(s: &Scratch, port: u16, extra: &[&str]) -> Standin {
        let pw = s.write("standin-pw", &format!("{LOGIN_PW}\n"));
        let state = s.path("standin-state.json");
        let mut child = Command::new("python3")
            .arg(repo("tests/standins/winrm_standin.py"))
            .args(["--port", &port.to_string(), "--user", "Administrator"])
            .arg("--password-file")
            .arg(&pw)
            .arg("--state-file")
            .arg(&state)
            .args(if extra.contains(&"--no-powershell") {
                ["--answer-files", "xp"]
            } else {
                ["--answer-files", "all"]
            })
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 winrm_standin.py");
        if !extra.contains(&"--delay-start") {
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("stand-in output");
            assert!(line.contains("listening"), "stand-in said {line:?}");
        }
        Standin { child, state }
    }

    /// The simulated Windows state as the stand-in last dumped it.
    fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.state).expect("stand-in state file");
        serde_json::from_str(&text).expect("stand-in state is JSON")
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config for computer `pcw` (127.0.0.1:`port`, lab provisioner) with
/// images `w7` (virtual) and `w7sys` (Sysprep), over WinRM as
/// Administrator. `login_pw` goes to the login password file; `response`
/// is the response step's timeout. The OS family is windows-6.
fn config(s: &Scratch, port: u16, login_pw: &str, response: &str) {
    config_family(s, port, login_pw, response, "windows-6")
}

/// `config` with OS family `family`.
fn config_family(s: &Scratch, port: u16, login_pw: &str, response: &str, family: &str) {
    let pw = s.write("secrets/winrm-pw", &format!("{login_pw}\n"));
    let admin = s.write("secrets/admin-pw", &format!("{ADMIN_SECRET}\n"));
    let script = s.write("setup.cmd", "echo configuring\r\nexit /b 0\r\n");
    let os = |extra: &str| {
        format!(
            "family = \"{family}\"\nchannel = \"winrm\"\nport = {port}\nuser = \"Administrator\"\n\
             password_file = \"{}\"\nadmin_password_file = \"{}\"\nstable_for = \"1s\"\n\
             timeouts = {{ initial-wait = \"0s\", response = \"{response}\", login = \"20s\"{extra} }}\n",
            pw.display(),
            admin.display()
        )
    };
    s.config(&format!(
        "[os.win]\n{}\n[os.winsys]\n{}\n\
         [images.w7]\nos = \"win\"\nvirtual = true\npost_load = [\"{}\"]\n\
         image_check = {{ command = [\"hostname\"], expect = \"^WIN-STANDIN\" }}\n\n\
         [images.w7sys]\nos = \"winsys\"\nsysprep = true\n\n\
         [computers.pcw]\naddress = \"127.0.0.1\"\nprovisioner = \"lab\"\n",
        os(""),
        os(", sysprep-reboot = \"30s\""),
        script.display()
    ));
}

fn post_load(s: &Scratch, image: &str, extra: &[&str]) -> Output {
    Test::with(s).post_load("pcw", image).args(extra).run()
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("--json line is JSON"))
        .collect()
}

/// The step-end event of step `name` (the last one).
fn step_end<'a>(events: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    events
        .iter()
        .rev()
        .find(|e| e["kind"] == "step-end" && e["step"] == name)
        .unwrap_or_else(|| panic!("no step-end for {name}"))
}

fn no_secrets(s: &Scratch, r: &Output) {
    let log =
        std::fs::read_to_string(s.path("state/computers/pcw/events.jsonl")).unwrap_or_default();
    for secret in [ADMIN_SECRET, LOGIN_PW] {
        assert!(!r.stdout.contains(secret), "secret on stdout");
        assert!(!r.stderr.contains(secret), "secret on stderr");
        assert!(!log.contains(secret), "secret in the event log");
    }
}

#[test]
fn ready_over_winrm_with_first_boot_configuration() {
    let s = Scratch::new("win-ready");
    let port = free_port();
    let w = Standin::start(&s, port, &[]);
    config(&s, port, LOGIN_PW, "20s");
    let r = post_load(&s, "w7", &["--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    let st = w.state();
    assert_eq!(st["pending_computer_name"], "pcw", "{st}");
    assert_eq!(st["computer_name"], "WIN-STANDIN");
    assert_eq!(st["fDenyTSConnections"], 0);
    assert_eq!(st["rdp_firewall_enabled"], true);
    assert_eq!(st["icmp_rules"], 1);
    assert_eq!(st["powercfg"]["standby-timeout-ac"], 0);
    assert_eq!(st["powercfg"]["hibernate"], "off");
    assert_eq!(st["answer_files"], serde_json::json!([]));
    assert_eq!(st["administrator_password"], ADMIN_SECRET);
    assert_eq!(
        st["scripts_run"],
        serde_json::json!([r"C:\Windows\Temp\reimage\setup.cmd"])
    );
    // The uploaded password file is gone, and the password was never in a
    // command line.
    let files = st["files"].as_array().unwrap();
    assert!(
        !files
            .iter()
            .any(|f| f.as_str().unwrap().contains("admin-password")),
        "{files:?}"
    );
    for c in st["commands"].as_array().unwrap() {
        assert!(!c.as_str().unwrap().contains(ADMIN_SECRET), "secret in {c}");
    }
    no_secrets(&s, &r);

    let ev = json_lines(&r.stdout);
    let steps: Vec<&str> = of_kind(&ev, "step-end")
        .iter()
        .filter(|e| e["result"] == "ok")
        .filter_map(|e| e["step"].as_str())
        .collect();
    for want in [
        "initial-wait",
        "response",
        "login",
        "stable",
        "image-check",
        "mkdir-state",
        "set-computer-name",
        "enable-rdp",
        "firewall-rdp",
        "firewall-ping",
        "disable-sleep",
        "disable-hibernate",
        "remove-answer-files",
        "upload setup.cmd",
        "script setup.cmd",
        "upload-admin-password",
        "set-admin-password",
    ] {
        assert!(steps.contains(&want), "no ok step {want} in {steps:?}");
    }
    // The order: the scripts before the password, the password last.
    let pos = |n: &str| steps.iter().position(|s| *s == n).unwrap();
    assert!(pos("script setup.cmd") < pos("set-admin-password"));
    assert!(pos("stable") < pos("mkdir-state"));
    assert!(of_kind(&ev, "step-end").iter().all(|e| e["result"] == "ok"));
    // The event log has the same story.
    assert!(
        s.events("pcw")
            .iter()
            .any(|e| e["kind"] == "step-end" && e["step"] == "set-admin-password")
    );
}

#[test]
fn waits_for_a_listener_that_starts_late() {
    let s = Scratch::new("win-late");
    let port = free_port();
    let w = Standin::start(&s, port, &["--delay-start", "2"]);
    config(&s, port, LOGIN_PW, "20s");
    let r = post_load(&s, "w7", &["--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let ev = json_lines(&r.stdout);
    let resp = step_end(&ev, "response");
    assert_eq!(resp["result"], "ok");
    let ms = resp["elapsed_ms"].as_u64().unwrap();
    assert!((1500..6000).contains(&ms), "response took {ms} ms");
    assert_eq!(w.state()["icmp_rules"], 1);
}

#[test]
fn bad_password_is_fatal_at_once() {
    let s = Scratch::new("win-badpw");
    let port = free_port();
    let w = Standin::start(&s, port, &[]);
    config(&s, port, "not-the-password", "20s");
    // Not the last attempt: a wrong password is fatal anyway (reloading
    // does not fix it), and well before the login step's 20 s.
    let r = post_load(&s, "w7", &["--attempt", "1", "--of", "3"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.took < Duration::from_secs(10), "took {:?}", r.took);
    r.stderr_has("credentials");
    assert!(!r.stderr.contains("not-the-password"));
    // Nothing was configured.
    assert_eq!(w.state()["icmp_rules"], 0);
    assert_eq!(w.state()["administrator_password"], LOGIN_PW);
}

#[test]
fn sysprep_image_waits_for_the_sysprep_reboot() {
    let s = Scratch::new("win-sysprep");
    let port = free_port();
    let w = Standin::start(&s, port, &["--reboot-after", "1", "--down-for", "2"]);
    let boot0 = w.state()["boot_time"].as_str().unwrap().to_string();
    config(&s, port, LOGIN_PW, "20s");
    let r = post_load(&s, "w7sys", &["--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    let st = w.state();
    assert_eq!(st["boots"], 2, "{st}");
    assert_ne!(st["boot_time"].as_str().unwrap(), boot0);
    // windows-6 reads the boot time with wmic: WMI's CIM datetime.
    let boot1 = st["boot_time_cim"].as_str().unwrap();
    let ev = json_lines(&r.stdout);
    let rb = step_end(&ev, "sysprep-reboot");
    assert_eq!(rb["result"], "ok");
    let msg = rb["message"].as_str().unwrap();
    assert!(msg.contains(&format!("new boot id {boot1}")), "{msg}");
    // The reboot took the stand-in's 1 s + 2 s down, at least.
    assert!(rb["elapsed_ms"].as_u64().unwrap() >= 2500, "{rb}");
    // Then login and the stability window, after the reboot.
    let order: Vec<&str> = of_kind(&ev, "step-end")
        .iter()
        .filter_map(|e| e["step"].as_str())
        .collect();
    let pos = |n: &str| order.iter().position(|s| *s == n).unwrap();
    assert!(pos("sysprep-reboot") < pos("login") && pos("login") < pos("stable"));
    assert_eq!(step_end(&ev, "stable")["result"], "ok");
    assert_eq!(st["icmp_rules"], 1);
    no_secrets(&s, &r);
}

#[test]
fn sysprep_image_that_does_not_reboot_is_not_ready() {
    // --wrong-os: the listener goes away and comes back, but the boot time
    // stays: not the reboot the sequence waits for.
    let s = Scratch::new("win-noreboot");
    let port = free_port();
    let _w = Standin::start(
        &s,
        port,
        &["--reboot-after", "0.5", "--down-for", "1", "--wrong-os"],
    );
    config(&s, port, LOGIN_PW, "20s");
    let text = std::fs::read_to_string(s.path("reimage.toml"))
        .unwrap()
        .replace("sysprep-reboot = \"30s\"", "sysprep-reboot = \"4s\"");
    std::fs::write(s.path("reimage.toml"), text).unwrap();
    let r = post_load(&s, "w7sys", &["--attempt", "1", "--of", "2", "--json"]);
    assert_eq!(r.code, 75, "{}", r.stderr);
    let ev = json_lines(&r.stdout);
    let rb = step_end(&ev, "sysprep-reboot");
    assert_eq!(rb["result"], "failed");
}

#[test]
fn no_listener_is_retry_then_fatal_on_the_last_attempt() {
    let s = Scratch::new("win-nolistener");
    let port = free_port();
    config(&s, port, LOGIN_PW, "2s");
    let r = post_load(&s, "w7", &["--attempt", "1", "--of", "3"]);
    assert_eq!(r.code, 75, "{}", r.stderr);
    let r = post_load(&s, "w7", &["--attempt", "1", "--of", "1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.took < Duration::from_secs(15), "took {:?}", r.took);
    let ev = s.events("pcw");
    let resp = step_end(&ev, "response");
    assert_eq!(resp["result"], "failed");
}

#[test]
fn running_twice_is_idempotent() {
    let s = Scratch::new("win-twice");
    let port = free_port();
    let w = Standin::start(&s, port, &[]);
    config(&s, port, LOGIN_PW, "20s");
    // First through the whole attempt loop (lab: nothing to load).
    let r = Test::with(&s).provision("pcw", "w7").run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(w.state()["icmp_rules"], 1);
    assert_eq!(w.state()["administrator_password"], ADMIN_SECRET);
    // Without a reload the Administrator password now is the secret: the
    // next run logs in with it (the stand-in rejects the old one).
    config(&s, port, ADMIN_SECRET, "20s");
    let r = post_load(&s, "w7", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let st = w.state();
    assert_eq!(st["icmp_rules"], 1, "{st}");
    assert_eq!(
        st["firewall_rules"],
        serde_json::json!(["reimage ICMPv4 echo"])
    );
    assert_eq!(st["pending_computer_name"], "pcw");
    assert_eq!(st["administrator_password"], ADMIN_SECRET);
    assert_eq!(st["scripts_run"].as_array().unwrap().len(), 2);
    no_secrets(&s, &r);
}

/// The ok step-ends, in order.
fn ok_steps(ev: &[serde_json::Value]) -> Vec<&str> {
    of_kind(ev, "step-end")
        .iter()
        .filter(|e| e["result"] == "ok")
        .filter_map(|e| e["step"].as_str())
        .collect()
}

/// The command lines the stand-in ran.
fn commands(st: &serde_json::Value) -> Vec<String> {
    st["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn windows_5_without_powershell() {
    // --no-powershell: XP / Server 2003 as installed. Everything goes
    // through cmd.exe, reg, netsh firewall, wmic and cscript.
    // A Sysprep image: the sysprep-reboot step reads the boot id before
    // and after the stand-in's reboot.
    let s = Scratch::new("win5");
    let port = free_port();
    let w = Standin::start(
        &s,
        port,
        &["--no-powershell", "--reboot-after", "1", "--down-for", "1"],
    );
    config_family(&s, port, LOGIN_PW, "20s", "windows-5");
    let r = post_load(&s, "w7sys", &["--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    let st = w.state();
    assert_eq!(st["pending_computer_name"], "pcw", "{st}");
    assert_eq!(st["computer_name"], "WIN-STANDIN");
    assert_eq!(st["fDenyTSConnections"], 0);
    assert_eq!(
        st["legacy_firewall"],
        serde_json::json!({"remotedesktop": true, "icmp8": true})
    );
    assert_eq!(st["powercfg"]["standby-timeout-ac"], 0);
    assert_eq!(st["powercfg"]["hibernate"], "off");
    assert_eq!(st["answer_files"], serde_json::json!([]));
    assert_eq!(st["administrator_password"], ADMIN_SECRET);
    let files = st["files"].as_array().unwrap();
    assert!(
        !files
            .iter()
            .any(|f| f.as_str().unwrap().contains("admin-password")),
        "{files:?}"
    );
    let cmds = commands(&st);
    for c in &cmds {
        assert!(!c.contains(ADMIN_SECRET), "secret in {c}");
        assert!(!c.to_lowercase().contains("powershell"), "{c}");
    }
    // The boot id came from wmic, the password from the uploaded VBScript.
    assert!(
        cmds.iter()
            .any(|c| c == "cmd /c wmic os get lastbootuptime /value <nul"),
        "{cmds:?}"
    );
    assert!(
        cmds.iter().any(|c| c.starts_with("cscript //nologo ")
            && c.ends_with(r"\set-password.vbs C:\Windows\Temp\reimage\admin-password.txt")),
        "{cmds:?}"
    );
    no_secrets(&s, &r);

    let ev = json_lines(&r.stdout);
    let steps = ok_steps(&ev);
    let rb = step_end(&ev, "sysprep-reboot")["message"].as_str().unwrap();
    let boot1 = st["boot_time_cim"].as_str().unwrap();
    assert!(rb.contains(&format!("new boot id {boot1}")), "{rb}");
    for want in [
        "sysprep-reboot",
        "login",
        "stable",
        "set-computer-name",
        "enable-rdp",
        "firewall-rdp",
        "firewall-ping",
        "disable-sleep",
        "disable-hibernate",
        "remove-answer-files",
        "upload-password-script",
        "upload-admin-password",
        "set-admin-password",
    ] {
        assert!(steps.contains(&want), "no ok step {want} in {steps:?}");
    }
    assert!(of_kind(&ev, "step-end").iter().all(|e| e["result"] == "ok"));
    let gone = step_end(&ev, "remove-answer-files")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(gone.contains(r"C:\sysprep\unattend.txt"), "{gone}");
    // XP's own commands, not 6.x's.
    assert!(cmds.contains(&"powercfg /change /standby-timeout-ac 0".to_string()));
    assert!(!cmds.iter().any(|c| c.contains("advfirewall")));

    // Again, without a reload: the name is pending already (the guard
    // compares with the running name, so wmic renames again: same result),
    // the answer files are gone, the password is the secret.
    config_family(&s, port, ADMIN_SECRET, "20s", "windows-5");
    let r = post_load(&s, "w7", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let st = w.state();
    assert_eq!(st["pending_computer_name"], "pcw");
    assert_eq!(st["administrator_password"], ADMIN_SECRET);
    assert_eq!(
        st["scripts_run"],
        serde_json::json!([r"C:\Windows\Temp\reimage\setup.cmd"])
    );
    no_secrets(&s, &r);
}

#[test]
fn windows_6_with_powershell_2() {
    // --powershell-2: stock 7 / 2008 R2. No Get-CimInstance,
    // Rename-Computer or Get-Content -Raw: windows-6 needs none of them.
    let s = Scratch::new("win6-ps2");
    let port = free_port();
    let w = Standin::start(&s, port, &["--powershell-2"]);
    config(&s, port, LOGIN_PW, "20s");
    let r = post_load(&s, "w7", &["--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let st = w.state();
    assert_eq!(st["pending_computer_name"], "pcw", "{st}");
    assert_eq!(st["icmp_rules"], 1);
    assert_eq!(st["answer_files"], serde_json::json!([]));
    assert_eq!(st["administrator_password"], ADMIN_SECRET);
    assert!(
        of_kind(&json_lines(&r.stdout), "step-end")
            .iter()
            .all(|e| e["result"] == "ok")
    );
    no_secrets(&s, &r);
}

#[test]
fn windows_10_uses_powershell() {
    let s = Scratch::new("win10");
    let port = free_port();
    let w = Standin::start(&s, port, &["--reboot-after", "0.5", "--down-for", "1"]);
    config_family(&s, port, LOGIN_PW, "20s", "windows-10");
    let r = post_load(&s, "w7sys", &["--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let st = w.state();
    assert_eq!(st["pending_computer_name"], "pcw", "{st}");
    assert_eq!(st["answer_files"], serde_json::json!([]));
    assert_eq!(st["administrator_password"], ADMIN_SECRET);
    let cmds = commands(&st);
    assert!(
        cmds.iter().any(|c| c.contains("Get-CimInstance")),
        "{cmds:?}"
    );
    assert!(
        !cmds
            .iter()
            .any(|c| c.contains("wmic") || c.contains("cscript"))
    );
    no_secrets(&s, &r);
}

#[test]
fn windows_10_profile_fails_without_its_powershell() {
    // A windows-10 profile pointed at a PowerShell 2 machine: the boot id
    // cannot be read, so the sysprep-reboot step cannot see the reboot: a
    // retryable failure that names the missing cmdlet.
    let s = Scratch::new("win10-ps2");
    let port = free_port();
    let _w = Standin::start(&s, port, &["--powershell-2"]);
    config_family(&s, port, LOGIN_PW, "20s", "windows-10");
    let text = std::fs::read_to_string(s.path("reimage.toml"))
        .unwrap()
        .replace("sysprep-reboot = \"30s\"", "sysprep-reboot = \"2s\"");
    std::fs::write(s.path("reimage.toml"), text).unwrap();
    let r = post_load(&s, "w7sys", &["--attempt", "1", "--of", "2"]);
    assert_eq!(r.code, 75, "{}", r.stderr);
    r.stderr_has("Get-CimInstance");
}
