//! SIGINT/SIGTERM/SIGHUP: remember that one arrived so every wait loop and child
//! command can stop, save its state and release the lock.
//!
//! A signal handler can only set a flag, so this is the one piece of
//! process-wide state reimage has; everything else is passed down. The
//! coordination store's lease keeper raises the same flag when the store is
//! lost ([`STORE_LOST`]), so a lost store stops the run the way SIGTERM does.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// The number of the signal that arrived last; 0 for none.
static CAUGHT: LazyLock<Arc<AtomicUsize>> = LazyLock::new(|| Arc::new(AtomicUsize::new(0)));
/// Why the coordination store counts as lost.
static LOST: Mutex<String> = Mutex::new(String::new());
/// [`CAUGHT`]'s value for a lost store: no signal has this number.
const LOST_FLAG: usize = usize::MAX;

/// Not a signal: what [`caught`] says when the coordination store was lost.
pub const STORE_LOST: i32 = -1;

/// Stops the run because the coordination store was lost; `why` is the
/// message the run ends with. A signal that came first wins.
pub fn stop_store_lost(why: String) {
    if let Ok(mut l) = LOST.lock() {
        *l = why;
    }
    let _ = CAUGHT.compare_exchange(0, LOST_FLAG, Ordering::SeqCst, Ordering::SeqCst);
}

/// Installs the handlers for SIGINT, SIGTERM and SIGHUP (a closed terminal
/// or session: handled like SIGTERM, exit 129): each stores its number in
/// [`CAUGHT`] (signal-hook's handler does only that atomic store).
pub fn install() {
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        // Fails only for signals that may not be caught (SIGKILL, SIGSTOP).
        if let Err(e) = signal_hook::flag::register_usize(sig, Arc::clone(&CAUGHT), sig as usize) {
            // A closed stderr is ignored: it must not end the run.
            let _ = writeln!(std::io::stderr(), "reimage: cannot catch signal {sig}: {e}");
        }
    }
}

/// The signal that arrived, if any.
pub fn caught() -> Option<i32> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        LOST_FLAG => Some(STORE_LOST),
        s => i32::try_from(s).ok(),
    }
}

/// An error that says the run was interrupted; wait loops return it so the
/// caller can stop at once.
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == STORE_LOST {
            let why = LOST.lock().map(|l| l.clone()).unwrap_or_default();
            return f.write_str(&why);
        }
        let name = match self.0 {
            SIGINT => "SIGINT",
            SIGTERM => "SIGTERM",
            SIGHUP => "SIGHUP",
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
