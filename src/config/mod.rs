//! The TOML model: computers, images, OS profiles and provisioners; their
//! validation with file:line:column errors; and the resolved plan for one
//! computer and image that the runner executes.

mod builtin;
mod locate;
mod model;
mod plan;
mod step;

pub use model::*;
pub use plan::{ChannelSettings, ComputerPlan, Plan, resolve};
pub use step::{Probe, Step, StepLimits, Wait};

use anyhow::Result;
use std::path::{Path, PathBuf};

/// A configuration error, already formatted as `FILE:LINE:COL: message`;
/// `main` exits 78 on it.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A usage error (unknown computer or image); `main` exits 64 on it.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

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
}

/// Reads and validates the configuration at `path`.
pub fn load(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "{}: cannot read the configuration: {e} (give another with --config or REIMAGE_CONFIG)",
            path.display()
        ))
    })?;
    parse(path, text)
}

/// Parses and validates configuration text that came from `path`.
pub fn parse(path: &Path, text: String) -> Result<Loaded> {
    let config: Config = match toml::from_str(&text) {
        Ok(c) => c,
        Err(e) => return Err(locate::toml_error(path, &text, &e).into()),
    };
    let loaded = Loaded {
        path: path.to_path_buf(),
        text,
        config,
    };
    model::validate(&loaded)?;
    // Every image's profile resolves (step names in `timeouts` exist), so
    // `reimage check` finds what a run would trip over.
    for img in loaded.config.images.values() {
        plan::resolve_profile(&loaded, &img.os, img, Path::new("."))?;
    }
    Ok(loaded)
}
