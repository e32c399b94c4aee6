//! The attempt number and count, and how timeouts grow with the attempt.

use std::time::Duration;

/// Attempt `number` of `of` (both 1-based), and the growth factor applied to
/// every load and wait timeout on later attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attempt {
    /// This attempt, from 1.
    pub number: u32,
    /// How many attempts there are in all.
    pub of: u32,
    /// Attempt k multiplies timeouts by `growth^(k-1)`.
    pub growth: f64,
}

impl Attempt {
    /// Attempt `number` of `of` with timeout growth `growth`.
    pub fn new(number: u32, of: u32, growth: f64) -> Attempt {
        Attempt { number, of, growth }
    }

    /// True on the last attempt: a module should answer fatal rather than
    /// ask for a reload that will not come.
    pub fn is_last(&self) -> bool {
        self.number >= self.of
    }

    /// `base` stretched for this attempt.
    pub fn scale(&self, base: Duration) -> Duration {
        scale(base, self.number, self.growth)
    }
}

/// "30m, 45m, 1h7m30s": `base` at every attempt of `of` with growth
/// `growth`, as `check` prints a timeout.
pub fn per_attempt(base: Duration, of: u32, growth: f64) -> String {
    (1..=of)
        .map(|k| crate::duration::fmt(scale(base, k, growth)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `base * growth^(number-1)`, saturating at a day-long ceiling so a silly
/// growth factor cannot overflow.
pub fn scale(base: Duration, number: u32, growth: f64) -> Duration {
    let f = growth.powi(number.saturating_sub(1) as i32);
    let secs = (base.as_secs_f64() * f).min(7.0 * 86_400.0);
    Duration::from_secs_f64(secs.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_grow_with_the_attempt() {
        let a = Attempt::new(1, 3, 1.5);
        assert_eq!(a.scale(Duration::from_secs(60)), Duration::from_secs(60));
        let a = Attempt::new(3, 3, 1.5);
        assert_eq!(a.scale(Duration::from_secs(60)), Duration::from_secs(135));
        assert!(a.is_last());
        assert!(!Attempt::new(2, 3, 1.5).is_last());
    }

    #[test]
    fn per_attempt_lists_every_attempt() {
        assert_eq!(
            per_attempt(Duration::from_secs(60), 3, 1.5),
            "1m, 1m30s, 2m15s"
        );
        assert_eq!(per_attempt(Duration::from_secs(60), 1, 2.0), "1m");
    }
}
