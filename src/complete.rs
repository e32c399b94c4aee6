//! Shell completion: `reimage completions SHELL` prints a script that,
//! at every TAB, runs `reimage` with `_REIMAGE_COMPLETE=SHELL` and the
//! words typed so far (clap_complete's dynamic completion). Subcommands and
//! options come from the command line's definition; a computer or image
//! name from the config the command line names (`--config`, else
//! `REIMAGE_CONFIG`, else /etc/reimage/reimage.toml), read leniently: a
//! config that does not load whole still completes the names it has, and
//! one that cannot be read completes nothing.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::engine::CompletionCandidate;
use clap_complete::env::EnvCompleter;

use crate::cli::Cli;

/// The environment variable the scripts set: its own name, so that a
/// `COMPLETE` another program's scripts set never turns a run into a
/// completion.
pub const VAR: &str = "_REIMAGE_COMPLETE";

/// The most of the config read for names.
const CONFIG_BYTES: u64 = 1 << 20;

/// When the shell asks (`_REIMAGE_COMPLETE` is set): prints the
/// candidates and exits. Otherwise returns at once. First thing in main,
/// before any thread starts.
pub fn answer_the_shell() {
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(VAR)
        .complete();
}

/// The completion script for `shell`, calling `reimage` on the PATH.
pub fn script(shell: clap_complete::Shell) -> std::io::Result<Vec<u8>> {
    use clap_complete::env::{Bash, Elvish, Fish, Powershell, Zsh};
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Zsh => &Zsh,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::PowerShell => &Powershell,
        _ => {
            return Err(std::io::Error::other(format!(
                "no completion script for {shell}"
            )));
        }
    };
    let mut out = Vec::new();
    completer.write_registration(VAR, "reimage", "reimage", "reimage", &mut out)?;
    Ok(out)
}

/// The computers of the config, each with its address as help.
pub fn computers() -> Vec<CompletionCandidate> {
    names("computers", |t| {
        t.get("address")
            .and_then(toml::Value::as_str)
            .map(String::from)
    })
}

/// The images of the config, each with its OS and provisioner as help.
pub fn images() -> Vec<CompletionCandidate> {
    names("images", |t| {
        let get = |k: &str| t.get(k).and_then(toml::Value::as_str);
        match (get("os"), get("provisioner")) {
            (Some(os), Some(p)) => Some(format!("{os} by {p}")),
            (Some(os), None) => Some(os.to_string()),
            _ => None,
        }
    })
}

/// The keys of `[table.NAME]` in the config, with what `help` says of each.
fn names(table: &str, help: impl Fn(&toml::Table) -> Option<String>) -> Vec<CompletionCandidate> {
    let Some(config) = read_config() else {
        return Vec::new();
    };
    let Some(entries) = config.get(table).and_then(toml::Value::as_table) else {
        return Vec::new();
    };
    entries
        .iter()
        .map(|(name, v)| {
            let h = v.as_table().and_then(&help);
            CompletionCandidate::new(name).help(h.map(Into::into))
        })
        .collect()
}

/// The config the words typed name, parsed as TOML.
fn read_config() -> Option<toml::Table> {
    let path = config_path(std::env::args_os())?;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(CONFIG_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    text.parse().ok()
}

/// `--config PATH` or `--config=PATH` among the words typed (after the
/// `--` the script passes), else REIMAGE_CONFIG, else the default.
fn config_path(args: impl IntoIterator<Item = OsString>) -> Option<PathBuf> {
    let words: Vec<OsString> = args.into_iter().collect();
    let typed = words
        .iter()
        .position(|w| w == "--")
        .map_or(&words[..], |i| &words[i + 1..]);
    let mut given = None;
    for (i, w) in typed.iter().enumerate() {
        let w = w.to_string_lossy();
        if w == "--config" {
            given = typed.get(i + 1).map(PathBuf::from);
        } else if let Some(p) = w.strip_prefix("--config=") {
            given = Some(PathBuf::from(p));
        }
    }
    let given = given.filter(|p| !p.as_os_str().is_empty());
    given
        .or_else(|| std::env::var_os("REIMAGE_CONFIG").map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .or_else(|| Some(PathBuf::from("/etc/reimage/reimage.toml")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<OsString> {
        w.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_config_is_the_one_the_words_name() {
        let p = config_path(words(&[
            "reimage",
            "--",
            "reimage",
            "--config",
            "/x.toml",
            "provision",
            "",
        ]));
        assert_eq!(p, Some(PathBuf::from("/x.toml")));
        let p = config_path(words(&[
            "reimage",
            "--",
            "reimage",
            "check",
            "--config=/y.toml",
        ]));
        assert_eq!(p, Some(PathBuf::from("/y.toml")));
        // Before the `--`, the words are the completer's own.
        let p = config_path(words(&[
            "reimage", "--config", "/z", "--", "reimage", "log",
        ]));
        assert_ne!(p, Some(PathBuf::from("/z")));
    }

    #[test]
    fn every_shell_gets_a_script_that_calls_reimage() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let s = String::from_utf8(script(shell).expect("script")).expect("utf-8");
            assert!(s.contains(VAR), "{shell}: {s}");
            assert!(s.contains("reimage"), "{shell}: {s}");
        }
    }
}
