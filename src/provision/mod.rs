//! Provisioning modules: put the image on the computer and start it. A
//! provisioner never logs in to the OS; the OS module does that.

pub mod command;
mod disk;
pub mod lab;
pub mod libvirt;
pub mod qemu;
pub mod vsphere;
pub mod xcat;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::attempt::Attempt;
use crate::config::{KeyError, LocalFile, Plan, ProvisionerRef};
use crate::names::names;
use crate::outcome::Outcome;
use crate::report::Reporter;

/// Provisioner names that exist without a `[provisioners.NAME]` table (each
/// is its own kind, with every key at its default).
pub const BUILTIN: [&str; 2] = ["lab", "qemu"];

/// Every kind a `[provisioners.NAME]` table can name.
pub const KINDS: [&str; 6] = ["command", "lab", "qemu", "libvirt", "xcat", "vsphere"];

/// Puts an image on a computer and starts it.
pub trait Provisioner {
    /// Loads the plan's image onto its computer, attempt `attempt`. Done when
    /// the image is loaded and the computer is starting; never waits for the
    /// OS. Retry when loading again could help: the runner, not the module,
    /// turns a retry on the last attempt into fatal.
    fn load(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Outcome;

    /// False for provisioners that leave the running OS in place (`lab`):
    /// the OS module then does not expect a new boot id after the load.
    fn reloads(&self) -> bool {
        true
    }

    /// Resets the computer's power during attempt `attempt`, for OS profiles
    /// that do so when a first wait fails. `None` when this provisioner
    /// cannot.
    fn power_reset(&self, _plan: &Plan, _attempt: Attempt, _report: &Reporter) -> Option<Outcome> {
        None
    }

    /// The provisioner's own power-off (`reimage power-off`), `None` when
    /// it has none (`lab`; `command` without a `power_off` command).
    fn power_off(&self) -> Option<&dyn PowerOff> {
        None
    }

    /// Lines for `reimage check`: the settings that shape a load, with the
    /// timeout at each attempt.
    fn describe(&self, plan: &Plan) -> Vec<String>;

    /// Refuses a plan this provisioner must not load as configured: above
    /// all one whose load would destroy or overwrite the image's own base
    /// (the golden disk). `reimage check` turns the refusal into a config
    /// error (exit 78) at the key's file:line:column (the path runs from
    /// the file's root); every load runs it first and is fatal on it,
    /// before anything changes. It looks only at the config and local
    /// files; what only the endpoint knows, each load checks itself.
    fn vet(&self, _plan: &Plan) -> Result<(), KeyError> {
        Ok(())
    }

    /// The limit class this provisioner takes load slots from, with what
    /// its system shows loading now (`reimage status`; asked read-only,
    /// within the provisioner's command timeout). `name` is the
    /// provisioner's. `None` when it takes no slots.
    fn slot_class(&self, _name: &str) -> Option<crate::coord::SlotClass> {
        None
    }

    /// The local files a load of `plan` reads or runs (a base disk, a
    /// password file, a load script), each with the key that names it:
    /// `reimage check` makes sure they are there, readable, and private
    /// when secret.
    fn local_files(&self, _plan: &Plan) -> Vec<LocalFile> {
        Vec::new()
    }

    /// Read-only questions to the systems a load of `plan` will drive (is
    /// the node defined, the template there), each bounded in time: what
    /// `reimage check --online` prints, a line each.
    fn online(&self, _plan: &Plan) -> Vec<Checked> {
        Vec::new()
    }

    /// The image names this provisioner's table has settings for
    /// (`[provisioners.NAME.images.IMAGE]`): each must be an image of the
    /// file.
    fn image_tables(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One answer of `check --online`: what was asked, and what came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// What was asked, e.g. "xCAT node pc7".
    pub what: String,
    /// How it went.
    pub verdict: Verdict,
    /// What came back, or what to do.
    pub detail: String,
}

/// How one online check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// As a run needs it.
    Ok,
    /// Not as a run needs it: `check --online` exits 1.
    Failed,
    /// Worth knowing, no failure (a port that does not answer on a
    /// computer that may be off).
    Note,
}

names!(Verdict {
    Ok => "ok",
    Failed => "failed",
    Note => "note",
});

impl Checked {
    /// A check that went as `ok` says, with `detail`.
    pub fn new(what: impl Into<String>, ok: bool, detail: impl Into<String>) -> Checked {
        Checked {
            what: what.into(),
            verdict: if ok { Verdict::Ok } else { Verdict::Failed },
            detail: detail.into(),
        }
    }

    /// A note.
    pub fn note(what: impl Into<String>, detail: impl Into<String>) -> Checked {
        Checked {
            what: what.into(),
            verdict: Verdict::Note,
            detail: detail.into(),
        }
    }
}

/// A fatal outcome from a refusal of [`Provisioner::vet`], for a load.
pub fn refused(plan: &Plan, e: KeyError) -> Outcome {
    Outcome::Fatal(anyhow::anyhow!(
        "refusing to load image `{}` onto computer `{}`: {}",
        plan.image.name,
        plan.computer.name,
        e.message
    ))
}

/// Turns a computer off the way its provisioner turns it on: the hard way
/// (QMP quit, `virsh destroy`, PowerOffVM_Task, `rpower off`), since the
/// next load puts the image on again. A scheduler's power saving (Slurm's
/// SuspendProgram) calls it through `reimage power-off`.
pub trait PowerOff {
    /// Powers the plan's computer off. Done when it is off, also when it
    /// was off already or has no VM at all; retry when trying again could
    /// help (a timeout, a daemon that does not answer).
    fn off(&self, plan: &Plan, report: &Reporter) -> Outcome;
}

/// The provisioner `r` names, decoded and validated from its table (Packer's
/// `Prepare`): errors name the key inside the table.
pub fn prepare(r: &ProvisionerRef) -> Result<Box<dyn Provisioner>, KeyError> {
    let t = &r.table;
    Ok(match r.kind.as_str() {
        "command" => Box::new(command::CommandProvisioner::new(decode(
            t,
            |c: &command::CommandConfig| c.validate(),
        )?)),
        "lab" => Box::new(lab::Lab::new(decode(t, |_: &lab::LabConfig| Ok(()))?)),
        "qemu" => Box::new(qemu::Qemu::new(decode(t, qemu::QemuConfig::validate)?)),
        "libvirt" => Box::new(libvirt::Libvirt::new(decode(
            t,
            libvirt::LibvirtConfig::validate,
        )?)),
        "xcat" => Box::new(xcat::Xcat::new(decode(t, xcat::XcatConfig::validate)?)),
        "vsphere" => Box::new(vsphere::Vsphere::new(decode(
            t,
            vsphere::VsphereConfig::validate,
        )?)),
        k => {
            return Err(KeyError::at(
                "kind",
                format!(
                    "provisioner `{}` has unknown kind `{k}` (kinds: {})",
                    r.name,
                    KINDS.join(", ")
                ),
            ));
        }
    })
}

/// Decodes a provisioner's table into its config type, then runs its
/// checks. Serde errors carry the path to the bad key; a check's message
/// names its key first, in backquotes (`` `timeout` must be ... ``; a
/// dotted `` `images.win11.vtpm` `` for a key in a sub-table), and points
/// there.
fn decode<T: DeserializeOwned>(
    table: &toml::Table,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, KeyError> {
    let value = toml::Value::Table(table.clone());
    let c: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let raw = e.inner().to_string();
        if let Some(key) = raw
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            path.push(key.to_string());
        }
        let message = crate::config::toml_words(&raw);
        KeyError { path, message }
    })?;
    check(&c).map_err(|message| {
        // A dotted key (`images.win11.vtpm`) is a path into the table.
        let path: Vec<String> = message
            .strip_prefix('`')
            .and_then(|r| r.split(['`', ' ', '=']).next())
            .unwrap_or_default()
            .split('.')
            .filter(|k| !k.is_empty())
            .map(String::from)
            .collect();
        if path.is_empty() {
            KeyError::table(message)
        } else {
            KeyError { path, message }
        }
    })?;
    Ok(c)
}

/// The name a value of a config enum has in the file: serde's (the enum's
/// `rename_all`), so each enum's names are spelled once.
fn config_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The placeholder values of a plan at an attempt: `{computer} {node}
/// {address} {image} {source} {attempt} {attempts} {reservation}`.
pub fn placeholders(plan: &Plan, attempt: Attempt) -> Vec<(&'static str, String)> {
    vec![
        ("computer", plan.computer.name.clone()),
        ("node", plan.computer.node.clone()),
        ("address", plan.computer.address.clone()),
        ("image", plan.image.name.clone()),
        ("source", plan.image.source.clone()),
        ("attempt", attempt.number.to_string()),
        ("attempts", attempt.of.to_string()),
        ("reservation", plan.reservation.clone().unwrap_or_default()),
    ]
}

/// The placeholders every provisioner fills, as [`placeholders`] names
/// them.
pub const PLACEHOLDERS: [&str; 8] = [
    "computer",
    "node",
    "address",
    "image",
    "source",
    "attempt",
    "attempts",
    "reservation",
];

/// The first `{name}` in `s` (a name of letters, digits and `_`; `{{` and
/// `}}` are braces) that is neither one of [`PLACEHOLDERS`] nor of
/// `extra`: the message names it and the nearest known one. `expand`
/// would pass it through as written, so a typo (`{nod}`) would reach the
/// command literally.
pub fn unknown_placeholder(s: &str, extra: &[&str]) -> Option<String> {
    let known: Vec<&str> = PLACEHOLDERS.iter().chain(extra).copied().collect();
    let mut rest = s;
    while let Some(i) = rest.find(['{', '}']) {
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            rest = &tail[2..];
            continue;
        }
        let Some((name, after)) = tail.strip_prefix('{').and_then(|t| t.split_once('}')) else {
            rest = &tail[1..];
            continue;
        };
        rest = after;
        let word = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !word || known.contains(&name) {
            continue;
        }
        let hint = crate::config::nearest(name, &known)
            .map(|k| format!(": did you mean `{{{k}}}`?"))
            .unwrap_or_default();
        let list: Vec<String> = known.iter().map(|k| format!("{{{k}}}")).collect();
        return Some(format!(
            "placeholder `{{{name}}}` is not one reimage fills{hint} (placeholders: {}; write `{{{{` and `}}}}` for braces)",
            list.join(" ")
        ));
    }
    None
}

/// [`unknown_placeholder`] over the words of an argument vector, the key
/// named first (as a provisioner's `validate` names it).
pub fn check_argv_placeholders(key: &str, argv: &[String], extra: &[&str]) -> Result<(), String> {
    match argv.iter().find_map(|w| unknown_placeholder(w, extra)) {
        Some(why) => Err(format!("`{key}`: {why}")),
        None => Ok(()),
    }
}

/// Replaces `{name}` placeholders in `s`; `{{` and `}}` stand for braces.
pub fn expand(s: &str, values: &[(&'static str, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if let Some((name, after)) = tail.strip_prefix('{').and_then(|t| t.split_once('}')) {
            match values.iter().find(|(k, _)| *k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
            }
            rest = after;
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_placeholders_and_escapes() {
        let v = vec![("node", "pc7".to_string()), ("attempt", "2".to_string())];
        assert_eq!(expand("{node}-{attempt}", &v), "pc7-2");
        assert_eq!(expand("{{node}} {unknown}", &v), "{node} {unknown}");
        assert_eq!(expand("a}b{", &v), "a}b{");
    }

    #[test]
    fn an_unknown_placeholder_is_named_with_the_nearest() {
        let e = unknown_placeholder("/bin/load {nod}", &[]).expect("unknown");
        assert!(
            e.contains("`{nod}`") && e.contains("did you mean `{node}`?"),
            "{e}"
        );
        assert!(unknown_placeholder("{node}-{attempt} {{x}} {1..3} a}b{", &[]).is_none());
        assert!(unknown_placeholder("{disk}", &["disk"]).is_none());
        let e = unknown_placeholder("{zzzzzzz}", &[]).expect("unknown");
        assert!(!e.contains("did you mean"), "{e}");
    }
}
