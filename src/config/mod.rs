//! The TOML model: computers, images, OS profiles and provisioners; their
//! validation with file:line:column errors; and the resolved plan for one
//! computer and image that the runner executes.

mod defaults;
mod family;
mod locate;
mod model;
mod plan;
mod step;

pub use family::{Families, FamilyRules};
pub use model::*;
pub use plan::{Activation, ChannelSettings, ComputerPlan, Plan, ProvisionerRef, resolve};
pub use step::{Probe, Step, StepLimits, Wait};

use std::path::{Path, PathBuf};

use crate::error::Error;

/// A configuration error, already formatted as `FILE:LINE:COL: message`
/// (exit 78).
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e.0)
    }
}

/// An error inside one table that its owner decodes (a provisioner's):
/// the key path inside that table, and what is wrong. [`Loaded::key_error`]
/// turns it into FILE:LINE:COL.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyError {
    /// Keys from the table down to the bad one (array items by index);
    /// empty when the table as a whole is wrong.
    pub path: Vec<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl KeyError {
    /// An error at `key` of the table.
    pub fn at(key: &str, message: impl Into<String>) -> KeyError {
        KeyError {
            path: vec![key.to_string()],
            message: message.into(),
        }
    }

    /// An error about the table as a whole.
    pub fn table(message: impl Into<String>) -> KeyError {
        KeyError {
            path: Vec::new(),
            message: message.into(),
        }
    }
}

/// The configuration file as read, with its path and text kept so later
/// checks can point at a line and column.
#[derive(Debug)]
pub struct Loaded {
    /// Where it came from.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// The parsed model.
    pub config: Config,
    /// The OS families its profiles resolve against.
    pub families: Families,
}

impl Loaded {
    /// A config error at the key `path` (e.g. `["images", "c7", "os"]`),
    /// pointing at its line and column when the key is in the file.
    pub fn error_at(&self, path: &[&str], msg: impl std::fmt::Display) -> ConfigError {
        let at = locate::key_span(&self.text, path)
            .map(|s| locate::line_col(&self.text, s.start))
            .map(|(l, c)| format!("{}:{l}:{c}", self.path.display()))
            .unwrap_or_else(|| self.path.display().to_string());
        ConfigError(format!("{at}: {msg}"))
    }

    /// A [`KeyError`] from the table at `table` (e.g. `["provisioners",
    /// "xc"]`), pointing at the bad key, or at the table when the key is not
    /// written in the file.
    pub fn key_error(&self, table: &[&str], e: &KeyError) -> ConfigError {
        let mut path: Vec<&str> = table.to_vec();
        path.extend(e.path.iter().map(String::as_str));
        let mut n = path.len();
        while n > table.len() && locate::key_span(&self.text, &path[..n]).is_none() {
            n -= 1;
        }
        self.error_at(&path[..n], &e.message)
    }
}

/// The largest configuration file reimage reads. A site's file is a few
/// kilobytes; anything near this is a mistake (say `--config /dev/zero`).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Reads and validates the configuration at `path`. `builtin` names the
/// provisioners that exist without a `[provisioners.NAME]` table;
/// `families` are the OS families, from the OS floor. Only a
/// regular file of at most [`MAX_CONFIG_BYTES`] is read, so a device or a
/// FIFO given by mistake neither grows without bound nor blocks.
pub fn load(path: &Path, builtin: &[&str], families: Families) -> Result<Loaded, ConfigError> {
    use std::io::Read;
    let fail = |what: String| {
        ConfigError(format!(
            "{}: {what} (give another with --config or REIMAGE_CONFIG)",
            path.display()
        ))
    };
    let meta =
        std::fs::metadata(path).map_err(|e| fail(format!("cannot read the configuration: {e}")))?;
    if !meta.is_file() {
        return Err(fail("the configuration is not a regular file".into()));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(fail(format!(
            "the configuration is {} bytes; the most reimage reads is {MAX_CONFIG_BYTES}",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(format!("cannot read the configuration: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(fail(format!(
            "the configuration grew past {MAX_CONFIG_BYTES} bytes while being read"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let col = good.len() - good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        ConfigError(format!(
            "{}:{line}:{col}: the configuration is not UTF-8 text (TOML files are UTF-8)",
            path.display()
        ))
    })?;
    parse(path, text, builtin, families)
}

/// Parses and validates configuration text that came from `path`.
pub fn parse(
    path: &Path,
    text: String,
    builtin: &[&str],
    families: Families,
) -> Result<Loaded, ConfigError> {
    let config: Config = match toml::from_str(&text) {
        Ok(c) => c,
        Err(e) => return Err(locate::toml_error(path, &text, &e)),
    };
    let loaded = Loaded {
        path: path.to_path_buf(),
        text,
        config,
        families,
    };
    model::validate(&loaded, builtin)?;
    // Every image's profile resolves (step names in `timeouts` exist), so
    // `reimage check` finds what a run would trip over.
    for (name, img) in &loaded.config.images {
        let profile = plan::resolve_profile(&loaded, &img.os, img, Path::new("."))?;
        if img.image_check.is_some() && profile.channel.kind() == ChannelKind::None {
            return Err(loaded.error_at(
                &["images", name, "image_check"],
                format!(
                    "image `{name}` has an image_check, but its OS profile `{}` has channel none, so the check could never run: remove it, or use a profile with channel ssh or winrm",
                    img.os
                ),
            ));
        }
    }
    Ok(loaded)
}
