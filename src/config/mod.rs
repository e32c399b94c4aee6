//! The TOML model: computers, images, OS profiles and provisioners; their
//! validation with file:line:column errors; and the resolved plan for one
//! computer and image that the runner executes.
//!
//! Its files import downwards only: `model` (the file's shape) and
//! `defaults` at the bottom; `network` (a computer's two interfaces),
//! `step` and `family` (what an OS family tells the configuration) on the
//! model; `error`, `locate` and `loaded` (the
//! text kept to place errors); `plan` (the resolution); `validate` above
//! the plan; this file, the loader, on top.

mod defaults;
mod describe;
mod error;
mod family;
mod files;
mod loaded;
mod locate;
mod model;
pub mod network;
mod plan;
mod step;
mod validate;
mod words;

pub use describe::OsLines;
pub use error::{ConfigError, KeyError};
pub use family::{Families, FamilyRules};
pub use files::{FileUse, LocalFile, config_files};
pub use loaded::Loaded;
pub use model::*;
pub use plan::{
    Activation, ChannelSettings, Plan, ProvisionerRef, SshSettings, WinrmSettings, resolve,
};
pub use step::{Probe, Step, StepLimits, Wait};
pub use validate::{duplicates, unicast_mac};
pub use words::{nearest, toml_words};

use std::path::Path;

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
    validate::validate(&loaded.config, builtin, &loaded.families).map_err(|e| loaded.error(&e))?;
    Ok(loaded)
}
