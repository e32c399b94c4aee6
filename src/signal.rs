//! SIGINT/SIGTERM: remember that one arrived so every wait loop and child
//! command can stop, save its state and release the lock.
//!
//! A signal handler can only set a flag, so this is the one piece of
//! process-wide state reimage has; everything else is passed down.

use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

/// The number of the signal that arrived last; 0 for none.
static CAUGHT: LazyLock<Arc<AtomicUsize>> = LazyLock::new(|| Arc::new(AtomicUsize::new(0)));

/// Installs the handlers for SIGINT and SIGTERM: each stores its number in
/// [`CAUGHT`] (signal-hook's handler does only that atomic store).
pub fn install() {
    for sig in [SIGINT, SIGTERM] {
        // Fails only for signals that may not be caught (SIGKILL, SIGSTOP).
        if let Err(e) = signal_hook::flag::register_usize(sig, Arc::clone(&CAUGHT), sig as usize) {
            eprintln!("reimage: cannot catch signal {sig}: {e}");
        }
    }
}

/// The signal that arrived, if any.
pub fn caught() -> Option<i32> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        s => i32::try_from(s).ok(),
    }
}

/// An error that says the run was interrupted; wait loops return it so the
/// caller can stop at once.
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            SIGINT => "SIGINT",
            SIGTERM => "SIGTERM",
            _ => "a signal",
        };
        write!(f, "interrupted by {name}")
    }
}

impl std::error::Error for Interrupted {}

/// Err(Interrupted) when a signal has arrived; call it in every wait loop.
pub fn check() -> Result<(), Interrupted> {
    match caught() {
        Some(s) => Err(Interrupted(s)),
        None => Ok(()),
    }
}
