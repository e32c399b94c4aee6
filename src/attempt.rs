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

/// The most a timeout grows to: a week.
pub const CEILING: Duration = crate::duration::CONFIG_MAX;

/// `base * growth^(number-1)`, saturating at [`CEILING`] so neither a silly
/// growth factor nor a huge attempt number (`--attempt 4000000000`) can
/// overflow or wrap; it never shrinks below `base` (growth is at least 1).
pub fn scale(base: Duration, number: u32, growth: f64) -> Duration {
    if base.is_zero() || base >= CEILING {
        return base.min(CEILING);
    }
    // An exponent past i32 saturates: the factor is then infinite (or 1).
    let exp = i32::try_from(number.saturating_sub(1)).unwrap_or(i32::MAX);
    let f = growth.max(1.0).powi(exp);
    let secs = base.as_secs_f64() * f;
    if !secs.is_finite() || secs >= CEILING.as_secs_f64() {
        return CEILING;
    }
    Duration::from_secs_f64(secs).max(base)
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

    #[test]
    fn huge_attempt_numbers_saturate_and_never_wrap_to_zero() {
        let m = Duration::from_secs(60);
        for n in [1 << 31, (1 << 31) + 1, u32::MAX] {
            assert_eq!(scale(m, n, 1.5), CEILING, "attempt {n}");
            assert_eq!(scale(m, n, 1.0), m, "attempt {n}, no growth");
        }
        assert_eq!(scale(Duration::ZERO, u32::MAX, 2.0), Duration::ZERO);
        assert_eq!(scale(CEILING * 2, 1, 1.0), CEILING);
    }
}
