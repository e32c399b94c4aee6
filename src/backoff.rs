//! The one backoff: a pause that grows from a first value up to a longest
//! one, optionally jittered. Every loop that polls or tries again paces
//! itself with it (`wait`'s polls, the lock and slot waits of the state
//! directory and the store, a command's exit watch without a pidfd). A
//! leaf: it imports nothing of reimage, so any module may use it.

use std::io::Read;
use std::time::{Duration, Instant};

/// A pause that grows from a first value by a factor up to a longest one,
/// optionally with jitter: the one backoff every polling loop uses.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    factor: f64,
    jitter: bool,
}

impl Backoff {
    /// Doubles from `first` up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            next: first.min(max),
            max,
            factor: 2.0,
            jitter: false,
        }
    }

    /// Grows by `factor` (more than 1) instead of doubling.
    pub fn growing_by(self, factor: f64) -> Backoff {
        Backoff { factor, ..self }
    }

    /// Each pause a random 50-100 % of its value, so that many runs that
    /// failed together do not come back together.
    pub fn jittered(self) -> Backoff {
        Backoff {
            jitter: true,
            ..self
        }
    }

    /// The next pause; the one after it is longer, up to the longest.
    pub fn next_pause(&mut self) -> Duration {
        let d = self.next;
        self.next = self.max.min(self.next.mul_f64(self.factor));
        if self.jitter {
            d.mul_f64(0.5 + (random_u64() % 1000) as f64 / 2000.0)
        } else {
            d
        }
    }

    /// The next pause, but not past `deadline`.
    pub fn next_until(&mut self, deadline: Instant) -> Duration {
        self.next_pause()
            .min(deadline.saturating_duration_since(Instant::now()))
    }
}

/// 64 random bits from the kernel (time and pid if that fails): for
/// jitter and tokens that only need to differ, never for secrets.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ u64::from(std::process::id()).rotate_left(32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_longest_and_jitter_stays_within_half() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(10), ms(50));
        let seen: Vec<_> = (0..5).map(|_| b.next_pause()).collect();
        assert_eq!(seen, [ms(10), ms(20), ms(40), ms(50), ms(50)]);
        let mut p = Backoff::new(ms(100), ms(2000)).growing_by(1.5);
        assert_eq!((p.next_pause(), p.next_pause()), (ms(100), ms(150)));
        let mut j = Backoff::new(ms(1000), ms(1000)).jittered();
        for _ in 0..50 {
            let d = j.next_pause();
            assert!(d >= ms(500) && d <= ms(1000), "{d:?}");
        }
        let mut late = Backoff::new(ms(1000), ms(1000));
        assert!(late.next_until(Instant::now() + ms(30)) <= ms(30));
    }
}
