//! The clock a lease is kept by: CLOCK_BOOTTIME, which, unlike the
//! monotonic clock behind `Instant`, goes on while the machine is
//! suspended, as the database's clock does. A management node that wakes
//! from a suspend then sees at once how old its last renewal is.

use rustix::time::{ClockId, clock_gettime};
use std::time::Duration;

/// Time since boot, suspends included.
pub fn now() -> Duration {
    let t = clock_gettime(ClockId::Boottime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}
