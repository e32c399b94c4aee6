//! The defaults of an OS profile that every family shares; what differs
//! by family comes from its [`super::FamilyRules`].

use std::time::Duration;

/// Connect timeout of one channel attempt unless told otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between port or banner probes while the target answers (refuses
/// or sends a wrong banner): the poller's own 40 ms, 25 probes a second.
/// `probe_interval` may only lengthen it.
pub const PROBE_INTERVAL: Duration = crate::wait::Rate::TCP.answering;
/// The shortest `probe_interval`: the cap of 25 probes a second.
pub const PROBE_INTERVAL_MIN: Duration = PROBE_INTERVAL;
/// The longest `probe_interval`.
pub const PROBE_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// Timeout of one first-boot command unless told otherwise.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
