//! The man pages keep up with `--help`: every subcommand and every flag the
//! binary accepts appears in man/reimage.1, and every config key the
//! examples use appears in man/reimage.toml.5.

use crate::common;
use crate::test::run;
use common::{bin, repo};
use std::process::Command;
use std::time::Duration;

fn flags(help: &str) -> Vec<String> {
    let mut v = Vec::new();
    for line in help.lines() {
        for word in line.split_whitespace() {
            let w = word.trim_end_matches([',', '.']);
            if w.starts_with("--")
                && w.len() > 2
                && w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-')
            {
                v.push(w.to_string());
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

#[test]
fn every_subcommand_and_flag_is_in_the_man_page() {
    let man = std::fs::read_to_string(repo("man/reimage.1")).expect("man/reimage.1");
    // roff writes a dash as `\-`.
    let man = man.replace("\\-", "-");
    let top = run(Command::new(bin()).arg("--help"), Duration::from_secs(10));
    top.code(0);
    let subs = [
        "provision",
        "load",
        "post-load",
        "power-off",
        "check",
        "status",
        "log",
        "setup-db",
        "completions",
        "grant",
        "revoke",
    ];
    for s in subs {
        assert!(top.stdout.contains(s), "`{s}` missing from --help");
        assert!(
            man.contains(&format!(".B {s}")),
            "subcommand `{s}` missing from man/reimage.1"
        );
        // ... described in COMMANDS, not in a later section.
        let at = man.find(&format!("\n.TP\n.B {s}")).unwrap_or(0);
        let section = man[..at].rfind("\n.SH ").map(|i| &man[i + 5..at]);
        assert!(
            section.is_some_and(|t| t.starts_with("COMMANDS")),
            "subcommand `{s}` is not in man/reimage.1's COMMANDS"
        );
        let h = run(
            Command::new(bin()).args([s, "--help"]),
            Duration::from_secs(10),
        );
        h.code(0);
        for f in flags(&h.stdout) {
            assert!(
                man.contains(&f),
                "flag `{f}` of `{s}` missing from man/reimage.1"
            );
        }
    }
    for f in flags(&top.stdout) {
        assert!(
            man.contains(&f),
            "global flag `{f}` missing from man/reimage.1"
        );
    }
    for code in ["0", "1", "64", "69", "73", "75", "78", "129", "130", "143"] {
        assert!(
            man.contains(&format!(".B {code}\n"))
                || man.contains(&format!(" {code} \""))
                || man.contains(&format!("{code}\""))
                || man.contains(&format!(" {code}\n"))
                || man.contains(&format!(".BR {code} ")),
            "exit code {code} missing"
        );
    }
}

#[test]
fn every_config_key_in_the_examples_is_in_the_man_page() {
    let man = std::fs::read_to_string(repo("man/reimage.toml.5")).expect("man/reimage.toml.5");
    let man = man
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(repo("examples")).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("example");
        let doc: toml::Table = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        let mut keys = Vec::new();
        collect(&toml::Value::Table(doc), &mut keys, 0);
        for k in keys {
            if !man.contains(&k) {
                missing.push(format!("{}: {k}", path.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys missing from man/reimage.toml.5:\n{}",
        missing.join("\n")
    );
}

/// Keys of the tables (skipping user-chosen names at depth 1: the names of
/// computers, images, profiles and provisioners; and the image names of a
/// provisioner's `images` table).
fn collect(v: &toml::Value, out: &mut Vec<String>, depth: usize) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                if depth != 1 {
                    out.push(k.clone());
                }
                match (k.as_str(), v) {
                    // `timeouts = { step = ... }` keys are step names.
                    ("timeouts", _) => {}
                    // `[provisioners.P.images.IMAGE]`: IMAGE is a name.
                    ("images", toml::Value::Table(images)) if depth == 2 => {
                        for image in images.values() {
                            collect(image, out, depth + 2);
                        }
                    }
                    _ => collect(v, out, depth + 1),
                }
            }
        }
        toml::Value::Array(a) => {
            for v in a {
                collect(v, out, depth + 2);
            }
        }
        _ => {}
    }
}
