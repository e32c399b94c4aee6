//! SIGINT/SIGTERM: remember that one arrived so every wait loop and child
//! command can stop, save its state and release the lock.
//!
//! A signal handler can only set a flag, so this is the one piece of
//! process-wide state reimage has; everything else is passed down. The
//! coordination store's lease keeper raises the same flag when the store is
//! lost ([`STORE_LOST`]), so a lost store stops the run the way SIGTERM does.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

static CAUGHT: AtomicI32 = AtomicI32::new(0);
static LOST: Mutex<String> = Mutex::new(String::new());

/// Not a signal: the flag's value when the coordination store was lost.
pub const STORE_LOST: i32 = -1;

/// Stops the run because the coordination store was lost; `why` is the
/// message the run ends with. A signal that came first wins.
pub fn stop_store_lost(why: String) {
    if let Ok(mut l) = LOST.lock() {
        *l = why;
    }
    let _ = CAUGHT.compare_exchange(0, STORE_LOST, Ordering::SeqCst, Ordering::SeqCst);
}

extern "C" fn on_signal(sig: libc::c_int) {
    CAUGHT.store(sig, Ordering::SeqCst);
}

/// Installs the handlers for SIGINT and SIGTERM.
pub fn install() {
    // SAFETY: the handler only stores into an atomic, which is
    // async-signal-safe; sigaction is given a zeroed, then filled struct.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The signal that arrived, if any.
pub fn caught() -> Option<i32> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
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
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
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
