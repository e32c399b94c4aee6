//! The corpus of broken configurations in tests/configs/broken: one file
//! each, whose header says where the error is and what it says:
//!
//!     # expect: LINE:COL: a fragment of the message
//!     # args: check pc7 --image img      (optional; default `check`)
//!
//! Each must exit 78 with FILE:LINE:COL and the fragment, and never panic.

use crate::common::{LIMIT, repo};
use crate::test::run;
use std::process::Command;

struct Case {
    file: std::path::PathBuf,
    at: String,
    fragment: String,
    args: Vec<String>,
}

fn cases() -> Vec<Case> {
    let dir = repo("tests/configs/broken");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/configs/broken")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let bytes = std::fs::read(&file).expect("read");
            let text = String::from_utf8_lossy(&bytes);
            let header = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                    .map(str::to_string)
            };
            let expect = header("expect")
                .unwrap_or_else(|| panic!("{}: no `# expect:` line", file.display()));
            let mut parts = expect.splitn(3, ':');
            let (line, col) = (parts.next().expect("line"), parts.next().expect("col"));
            let fragment = parts.next().expect("fragment").trim().to_string();
            let args = header("args")
                .unwrap_or_else(|| "check".into())
                .split_whitespace()
                .map(str::to_string)
                .collect();
            Case {
                at: format!("{}:{line}:{col}:", file.display()),
                fragment,
                args,
                file,
            }
        })
        .collect()
}

#[test]
fn every_broken_config_names_its_line_column_and_fault() {
    let cases = cases();
    assert!(cases.len() >= 15, "the corpus is there");
    let mut failures = Vec::new();
    for c in &cases {
        let mut cmd = Command::new(crate::common::bin());
        cmd.arg("--config")
            .arg(&c.file)
            .args(&c.args)
            .env_remove("REIMAGE_CONFIG")
            .env("REIMAGE_STATE_DIR", std::env::temp_dir());
        let r = run(&mut cmd, LIMIT);
        if r.code != 78 || !r.stderr.contains(&c.at) || !r.stderr.contains(&c.fragment) {
            failures.push(format!(
                "{}: wanted exit 78, `{}` and `{}`; got {r:?}",
                c.file.display(),
                c.at,
                c.fragment
            ));
        }
        assert!(!r.stderr.contains("panicked"), "{r:?}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Issue 25, item 5: `check` prints both interfaces of a two-network
/// computer, the private one with the channel and the lockdown on it, the
/// public one with its addressing; a one-network computer keeps one line.
#[test]
fn check_prints_both_interfaces() {
    let s = crate::common::Scratch::new("check-two-nics");
    s.config(
        r#"
[os.none]
family = "linux"

[provisioners.script]
kind = "command"
load = ["true"]

[images.img]
os = "none"
provisioner = "script"

[computers.pc7]
address = "10.0.0.7"
mac = "52:54:00:00:00:07"
public_mac = "52-54-00-00-01-07"
public_address = "192.0.2.10"
public_netmask = "255.255.255.0"
public_gateway = "192.0.2.1"
public_dns = ["192.0.2.53", "192.0.2.54"]

[computers.pc8]
address = "10.0.0.8"
mac = "52:54:00:00:00:08"
public_mac = "52:54:00:00:01:08"

[computers.pc9]
address = "10.0.0.9"
mac = "52:54:00:00:00:09"
"#,
    );
    crate::test::Test::with(&s)
        .check("pc7", "img")
        .run()
        .code(0)
        .stdout_has("  private interface: mac 52:54:00:00:00:07; the channel to 10.0.0.7 and the lockdown\n")
        .stdout_has("  public interface: mac 52:54:00:00:01:07; static 192.0.2.10/24 (mask 255.255.255.0), gateway 192.0.2.1, dns 192.0.2.53 192.0.2.54\n");
    crate::test::Test::with(&s)
        .check("pc8", "img")
        .run()
        .code(0)
        .stdout_has("  public interface: mac 52:54:00:00:01:08; DHCP (renewed at first boot)\n");
    crate::test::Test::with(&s)
        .check("pc9", "img")
        .run()
        .code(0)
        .stdout_has("  interface: mac 52:54:00:00:00:09 (one network)\n")
        .stdout_lacks("public interface");
    // The Linux first boot says what it does with the public interface.
    crate::test::Test::with(&s)
        .check("pc8", "img")
        .run()
        .stdout_has("public network: the interface with MAC 52:54:00:00:01:08 configured through systemd-networkd, NetworkManager or ifupdown");
}
