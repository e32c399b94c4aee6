//! Opens the channel the profile names, for the plan's computer.

use anyhow::Result;

use crate::config::{ChannelKind, Plan};
use crate::control::Channel;

/// The channel for this plan, or `None` for `channel = "none"`.
pub fn open(plan: &Plan) -> Result<Option<Box<dyn Channel>>> {
    match plan.profile.channel {
        ChannelKind::None => Ok(None),
        other => anyhow::bail!("channel `{}` is not available in this build", other.name()),
    }
}
