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
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGXFSZ};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The number of the signal that arrived last; 0 for none.
static CAUGHT: LazyLock<Arc<AtomicUsize>> = LazyLock::new(|| Arc::new(AtomicUsize::new(0)));
/// Set when SIGXFSZ came; nothing reads it: a flag is signal-hook's safe
/// handler that does nothing else (the failed write says EFBIG itself).
static FILE_TOO_LARGE: LazyLock<Arc<AtomicBool>> =
    LazyLock::new(|| Arc::new(AtomicBool::new(false)));
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
///
/// SIGXFSZ (a write past the file size limit, `ulimit -f`) is caught and
/// does nothing, so such a write fails with EFBIG and is reported like a
/// full disk instead of killing reimage with a torn line and a record that
/// says "running". The commands reimage runs get the default action back
/// at exec, as with every caught signal.
pub fn install() {
    if let Err(e) = signal_hook::flag::register(SIGXFSZ, Arc::clone(&FILE_TOO_LARGE)) {
        let _ = writeln!(std::io::stderr(), "reimage: cannot catch SIGXFSZ: {e}");
    }
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
/// read each descriptor's `revents` (all empty after an error); a signal
/// shows in [`check`].
///
/// The end is an absolute time on the monotonic clock (a timer descriptor
/// of this thread), not a relative timeout: the kernel restarts a ppoll
/// that a stop (SIGSTOP, SIGTSTP) interrupted with the time that was left
/// when it stopped, so a relative timeout would end late by as long as the
/// process was stopped. Without a timer descriptor (none left), the
/// timeout is relative.
pub fn poll(fds: &mut Vec<PollFd<'_>>, d: Duration) {
    let (d, wake) = match wake_fd() {
        Some(fd) => (d, Some(fd)),
        None => (d.min(Duration::from_millis(50)), None),
    };
    let before = fds.len();
    if let Some(fd) = wake {
        fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
    }
    TIMER.with(|timer| {
        let armed = timer.as_ref().filter(|t| !d.is_zero() && arm(t, d));
        match armed {
            Some(t) => {
                // SAFETY: the timer is this thread's and lives as long as
                // the thread; its entry leaves `fds` before this returns.
                let t = unsafe { BorrowedFd::borrow_raw(t.as_raw_fd()) };
                fds.push(PollFd::from_borrowed_fd(t, PollFlags::IN));
                let _ = rustix::event::poll(fds, None);
            }
            None => {
                let _ = rustix::event::poll(fds, Some(&timespec(d)));
            }
        }
        fds.truncate(before);
    });
}

thread_local! {
    /// This thread's timer for [`poll`]'s deadline; None when it cannot
    /// have one.
    static TIMER: Option<OwnedFd> = rustix::time::timerfd_create(
        rustix::time::TimerfdClockId::Monotonic,
        rustix::time::TimerfdFlags::CLOEXEC | rustix::time::TimerfdFlags::NONBLOCK,
    )
    .ok();
}

/// Sets `timer` to expire `d` from now, on the monotonic clock (which goes
/// on while the process is stopped). Setting it clears an earlier expiry.
fn arm(timer: &OwnedFd, d: Duration) -> bool {
    use rustix::time::{ClockId, Itimerspec, TimerfdTimerFlags, clock_gettime};
    let now = clock_gettime(ClockId::Monotonic);
    let now = Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    );
    let Some(end) = now.checked_add(d) else {
        return false;
    };
    let spec = Itimerspec {
        it_interval: timespec(Duration::ZERO),
        it_value: timespec(end),
    };
    rustix::time::timerfd_settime(timer, TimerfdTimerFlags::ABSTIME, &spec).is_ok()
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: d.subsec_nanos().into(),
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

impl Interrupted {
    /// The exit code: 128 plus the signal's number; 69 for a lost store.
    pub fn code(&self) -> i32 {
        if self.0 == STORE_LOST {
            crate::outcome::EXIT_STORE
        } else {
            128 + self.0
        }
    }
}

/// Err(Interrupted) when a signal has arrived; call it in every wait loop.
pub fn check() -> Result<(), Interrupted> {
    match caught() {
        Some(s) => Err(Interrupted(s)),
        None => Ok(()),
    }
}
