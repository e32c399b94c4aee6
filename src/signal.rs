//! SIGINT/SIGTERM/SIGHUP: remember that one arrived so every wait loop and child
//! command can stop, save its state and release the lock.
//!
//! A signal handler can only set a flag, so this is the one piece of
//! process-wide state reimage has; everything else is passed down. The
//! coordination store's lease keeper raises the same flag when the store is
//! lost ([`STORE_LOST`]), so a lost store stops the run the way SIGTERM does.
//!
//! Waiting costs no wake-ups of its own: after setting the flag, the
//! handler writes a byte to a socket pair whose read end ([`wake_fd`]) every
//! sleep polls ([`sleep`]), so a sleep lasts as long as it was asked to and
//! still ends the moment a signal arrives. The byte is never read: once
//! interrupted, every later sleep returns at once and the run winds down.

use rustix::event::{PollFd, PollFlags, Timespec};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The number of the signal that arrived last; 0 for none.
static CAUGHT: LazyLock<Arc<AtomicUsize>> = LazyLock::new(|| Arc::new(AtomicUsize::new(0)));
/// Why the coordination store counts as lost.
static LOST: Mutex<String> = Mutex::new(String::new());
/// The wake-up pair: (read end, write end). None when the process cannot
/// make one (out of descriptors at start): [`poll`] then looks at the flag
/// every 50 ms instead.
static WAKE: LazyLock<Option<(UnixStream, UnixStream)>> = LazyLock::new(bell);

/// A socket pair, both ends non-blocking: a byte written to the second
/// makes the first readable, for a thread that sleeps in poll(2).
pub fn bell() -> Option<(UnixStream, UnixStream)> {
    let (r, w) = UnixStream::pair().ok()?;
    r.set_nonblocking(true).ok()?;
    w.set_nonblocking(true).ok()?;
    Some((r, w))
}
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
    if let Some((_, w)) = WAKE.as_ref() {
        // Full means a byte is already there: the sleepers wake anyway.
        let _ = (&*w).write(&[0]);
    }
}

/// Installs the handlers for SIGINT, SIGTERM and SIGHUP (a closed terminal
/// or session: handled like SIGTERM, exit 129): each stores its number in
/// [`CAUGHT`] (signal-hook's handler does only that atomic store), then
/// writes a byte to the wake-up pair (a non-blocking send; the handlers run
/// in the order registered, so the flag is set before any sleeper wakes).
pub fn install() {
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        // Fails only for signals that may not be caught (SIGKILL, SIGSTOP).
        if let Err(e) = signal_hook::flag::register_usize(sig, Arc::clone(&CAUGHT), sig as usize) {
            // A closed stderr is ignored: it must not end the run.
            let _ = writeln!(std::io::stderr(), "reimage: cannot catch signal {sig}: {e}");
        }
        if let Some(w) = WAKE.as_ref().and_then(|(_, w)| w.try_clone().ok())
            && let Err(e) = signal_hook::low_level::pipe::register(sig, w)
        {
            let _ = writeln!(std::io::stderr(), "reimage: cannot watch signal {sig}: {e}");
        }
    }
}

/// The descriptor that turns readable when a signal arrives (or the store
/// is lost).
fn wake_fd() -> Option<BorrowedFd<'static>> {
    WAKE.as_ref().map(|(r, _)| r.as_fd())
}

/// One poll(2) on `fds` for at most `d` that also ends when a signal
/// arrives (without the wake-up pair: after at most 50 ms). The callers
/// read each descriptor's `revents` (all empty after an error: EINTR from
/// a stop/continue); a signal shows in [`check`].
pub fn poll(fds: &mut Vec<PollFd<'_>>, d: Duration) {
    let (timeout, ours) = match wake_fd() {
        Some(fd) => {
            fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
            (d, true)
        }
        None => (d.min(Duration::from_millis(50)), false),
    };
    let ts = Timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    let _ = rustix::event::poll(fds, Some(&ts));
    if ours {
        fds.pop();
    }
}

/// Sleeps `d`, ending early only when a signal arrives: Err then (also
/// when one had arrived before).
pub fn sleep(d: Duration) -> Result<(), Interrupted> {
    let until = Instant::now() + d;
    loop {
        check()?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        poll(&mut Vec::new(), left);
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
