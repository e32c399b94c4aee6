//! A run's lease on its computer, kept by the clock, not by the network.
//!
//! Two threads watch it. The keeper renews it every quarter lease; each
//! try is bounded ([`super::db`]), and a renewal that finds the lease gone
//! (taken over, revoked by an admin, expired) stops the run at once. The
//! watchdog depends on nothing but the clock: once the last successful
//! renewal is older than [`Terms::stop_after`] (the lease less a quarter,
//! at least 2 s) it raises the store-lost stop
//! ([`signal::stop_store_lost`]), which kills the running command the way
//! SIGTERM does and ends the run with 69; if the run is still there at
//! [`Terms::exit_after`] (the lease less half that), the watchdog ends the
//! process itself, and its commands die with it.
//!
//! Why that is enough: a renewal's `expires` is the database's now() in
//! the renewal plus a lease, and that now() is later than the moment the
//! try began on this host. Another host can take the computer only once
//! `expires` has passed, so no earlier than a whole lease after that
//! moment; this run stopped its command [`Terms::spare`] before that, and
//! was gone half of it before. The margin is at least 2 s (1 s after the
//! process's own end), as long as the database's clock does not jump
//! forward by that much.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::clock;
use super::db::Limits;
use super::store::{Holder, Renewal, Store};
use crate::backoff::Backoff;
use crate::duration;
use crate::outcome::EXIT_STORE;
use crate::signal;

/// The shortest lease: 2 s for renewals to get through, 1 s to end the
/// running command (SIGTERM, a grace, SIGKILL), 1 s to spare.
pub const MIN_LEASE: Duration = Duration::from_secs(4);

/// The longest wait for a give-back after a signal when the store is not
/// answering renewals: SIGTERM ends the run promptly whatever the store
/// does (the lease then runs out by itself). A store that answers gets one
/// try, so that a thousand runs stopped at once (a shutdown) still give
/// their computers back to a loaded server.
const RELEASE_AFTER_SIGNAL: Duration = Duration::from_secs(2);

/// A renewal under way this long counts as not answered, for the give-back
/// after a signal.
const RENEWAL_OVERDUE: Duration = Duration::from_secs(1);

/// The times a lease of one length implies, in one place (reimage(1) and
/// reimage.toml(5) state them).
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    /// The lease: a computer is free this long after its holder's last
    /// renewal.
    pub lease: Duration,
}

impl Terms {
    /// The terms of `lease`.
    pub fn new(lease: Duration) -> Terms {
        Terms { lease }
    }

    /// How often the keeper renews.
    pub fn renew_every(&self) -> Duration {
        self.lease / 4
    }

    /// One try of any store operation (connect, TLS, login, statements):
    /// a quarter lease, between 1 and 15 s. A renewal begun on time has a
    /// whole try before the watchdog's time; a server slowed by load gets
    /// that long to answer (a try cut short is a connection the server
    /// may still accept and serve for nothing).
    pub fn try_limit(&self) -> Duration {
        (self.lease / 4).clamp(Duration::from_secs(1), Duration::from_secs(15))
    }

    /// The most the start of a run (or `setup-db`, `status`) waits for a
    /// store that is down or silent: a quarter lease, between 2 and 15 s.
    pub fn start_limit(&self) -> Duration {
        (self.lease / 4).clamp(Duration::from_secs(2), Duration::from_secs(15))
    }

    /// The time between the watchdog's stop and the earliest takeover by
    /// another host: a quarter lease, at least 2 s. Half of it ends the
    /// running command (SIGTERM, a grace, SIGKILL), the other half is to
    /// spare.
    pub fn spare(&self) -> Duration {
        (self.lease / 4).max(Duration::from_secs(2))
    }

    /// The watchdog stops the run when the last successful renewal began
    /// this long ago: the lease less [`Terms::spare`] (three quarters of
    /// it from 8 s on). Renewals have from a quarter lease to then to get
    /// through.
    pub fn stop_after(&self) -> Duration {
        self.lease.saturating_sub(self.spare())
    }

    /// The watchdog ends the process when the run has not ended this long
    /// after the last successful renewal began: the lease less half the
    /// spare.
    pub fn exit_after(&self) -> Duration {
        self.lease.saturating_sub(self.spare() / 2)
    }
}

/// How the lease was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// The store did not answer in time.
    Unanswered,
    /// The store answered that the lease is not ours (taken, revoked).
    Gone,
}

/// What the keeper, the watchdog and the run share, under one lock.
struct State {
    /// The lease is being given back: the threads end.
    stop: bool,
    /// When the last successful renewal (or the take) began, on
    /// [`clock::now`].
    last_ok: Duration,
    /// Why the last failed renewal failed, for the watchdog's message.
    last_error: Option<String>,
    /// When the renewal under way began, on [`clock::now`].
    renewing: Option<Duration>,
    lost: Option<Lost>,
}

/// What the keeper thread, the watchdog and the slots share.
pub struct Shared {
    store: Store,
    token: String,
    computer: String,
    generation: i64,
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A thread that panicked holding it left plain data behind.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits up to `d`, or until stopped or woken; true when stopped.
    fn wait(&self, d: Duration) -> bool {
        let g = self.state();
        if g.stop {
            return true;
        }
        let (g, _) = self
            .wake
            .wait_timeout(g, d)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.stop
    }

    fn stopped(&self) -> bool {
        self.state().stop
    }

    fn lost(&self) -> Option<Lost> {
        self.state().lost
    }

    /// Stops the run: the lease is lost for `why`.
    fn lose(&self, how: Lost, why: String) {
        {
            let mut g = self.state();
            if g.lost.is_some() {
                return;
            }
            g.lost = Some(how);
        }
        self.wake.notify_all();
        signal::stop_store_lost(why);
    }

    fn what(&self) -> String {
        format!(
            "lease lost on computer `{}` (generation {})",
            self.computer, self.generation
        )
    }

    /// Takes one of `max` slots of `class`, waiting up to `wait` (calling
    /// `waiting` while it waits); renewed with the computer's lease.
    pub fn acquire_slot(
        self: &Arc<Shared>,
        class: &str,
        max: u32,
        wait: Duration,
        mut waiting: impl FnMut(Duration),
    ) -> anyhow::Result<Option<SiteSlot>> {
        let start = Instant::now();
        let mut pause = Backoff::new(Duration::from_millis(160), Duration::from_secs(5)).jittered();
        loop {
            // A store that fails now and then only delays the slot: the
            // keeper and the watchdog decide when the lease is lost.
            let failed = match self.store.try_slot(&self.token, &self.computer, class, max) {
                Ok(Some(index)) => {
                    return Ok(Some(SiteSlot {
                        shared: self.clone(),
                        class: class.to_string(),
                        index,
                    }));
                }
                Ok(None) => None,
                Err(e) => Some(e),
            };
            signal::check()?;
            if start.elapsed() >= wait {
                return match failed {
                    Some(e) => Err(e),
                    None => Ok(None),
                };
            }
            waiting(start.elapsed());
            // Up to 5 s between tries: 1,000 waiting runs make at most
            // 200 short connections a second.
            signal::sleep(pause.next_until(start + wait))?;
        }
    }

    /// The labels of the live slots of `class`, every host's.
    pub fn slot_labels(&self, class: &str) -> anyhow::Result<Vec<String>> {
        self.store.slot_labels(class)
    }
}

/// A run's lease on a computer, renewed by a keeper thread and watched by
/// a watchdog until dropped.
pub struct Lease {
    shared: Arc<Shared>,
    keeper: Option<JoinHandle<()>>,
    watchdog: Option<JoinHandle<()>>,
    /// The computer's holder before this run, if it had one.
    previous: Option<Holder>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Lease({}, generation {})",
            self.shared.computer, self.shared.generation
        )
    }
}

impl Lease {
    /// Starts keeping the lease `token` took on `computer` as `generation`
    /// in a try that began at `began` (on [`clock::now`]).
    pub(super) fn start(
        store: Store,
        token: String,
        computer: String,
        generation: i64,
        previous: Option<Holder>,
        began: Duration,
    ) -> Lease {
        let shared = Arc::new(Shared {
            store,
            token,
            computer,
            generation,
            state: Mutex::new(State {
                stop: false,
                last_ok: began,
                last_error: None,
                renewing: None,
                lost: None,
            }),
            wake: Condvar::new(),
        });
        let spawn = |name: &str, f: fn(&Shared)| {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || f(&s))
                .ok()
        };
        let watchdog = spawn("reimage-watchdog", watch);
        let keeper = spawn("reimage-lease", keep);
        if keeper.is_none() || watchdog.is_none() {
            shared.lose(
                Lost::Unanswered,
                format!(
                    "{}: cannot start the threads that keep it; stopped this run",
                    shared.what()
                ),
            );
        }
        Lease {
            shared,
            keeper,
            watchdog,
            previous,
        }
    }

    /// What slots of this run need.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// What the run's events say about its lease: the generation, the
    /// terms, and the holder it took over from. True when that is a
    /// warning (it took over from a run that did not give the computer
    /// back).
    pub fn note(&self) -> (String, bool) {
        let s = &self.shared;
        let t = s.store.terms;
        let terms = format!(
            "lease of {} renewed every {}; the run stops if no renewal succeeds for {}",
            duration::fmt(t.lease),
            duration::fmt(t.renew_every()),
            duration::fmt(t.stop_after())
        );
        match &self.previous {
            Some(p) if !p.released => (
                format!(
                    "took over computer `{}` as generation {} in {}: the lease of generation {} ({}) ran out {:.1}s ago without being given back{}; {terms}",
                    s.computer,
                    s.generation,
                    s.store.place,
                    p.generation,
                    p.describe(),
                    -p.expires_in,
                    if p.revoked {
                        " (an admin had revoked it)"
                    } else {
                        ""
                    }
                ),
                true,
            ),
            _ => (
                format!(
                    "holding computer `{}` as generation {} in {}; {terms}",
                    s.computer, s.generation, s.store.place
                ),
                false,
            ),
        }
    }
}

/// The keeper: renews every quarter lease, retrying failures until the
/// lease is renewed, lost, or given back. It decides nothing by time: that
/// is the watchdog's, which does not wait for it.
fn keep(s: &Shared) {
    let t = s.store.terms;
    let cancel = || s.stopped() || s.lost().is_some();
    loop {
        let next = (s.state().last_ok + t.renew_every()).saturating_sub(clock::now());
        if s.wait(next) {
            return;
        }
        let mut pause = Backoff::new(Duration::from_millis(80), Duration::from_secs(1)).jittered();
        loop {
            if cancel() {
                return;
            }
            // One try of a fresh connection (retried within its time if
            // it is refused at once), so that the watchdog's message has
            // the latest failure.
            s.state().renewing = Some(clock::now());
            let r = s
                .store
                .renew(&s.token, &s.computer, s.store.brief(), &cancel);
            s.state().renewing = None;
            match r {
                Ok((Renewal::Renewed, began)) => {
                    let mut g = s.state();
                    g.last_ok = g.last_ok.max(began);
                    g.last_error = None;
                    drop(g);
                    s.wake.notify_all();
                    break;
                }
                Ok((Renewal::Gone(why), _)) => {
                    s.lose(Lost::Gone, format!("{}: {why}; stopped this run", s.what()));
                    return;
                }
                Err(e) => {
                    s.state().last_error = Some(format!("{e:#}"));
                    if s.wait(pause.next_pause()) {
                        return;
                    }
                }
            }
        }
    }
}

/// The longest the watchdog sleeps between looks at the clock: a machine
/// that wakes from a suspend is noticed this soon.
const WATCH_LOOK: Duration = Duration::from_secs(1);

/// Waits until the last successful renewal is `age` old; false when the
/// lease was given back first.
fn wait_for_age(s: &Shared, age: Duration) -> bool {
    loop {
        let (stop, last) = {
            let g = s.state();
            (g.stop, g.last_ok)
        };
        if stop {
            return false;
        }
        let now = clock::now();
        if now >= last + age {
            return true;
        }
        if s.wait((last + age - now).min(WATCH_LOOK)) {
            return false;
        }
    }
}

/// The watchdog: stops the run at [`Terms::stop_after`] without a
/// successful renewal, and ends the process at [`Terms::exit_after`].
fn watch(s: &Shared) {
    let t = s.store.terms;
    if !wait_for_age(s, t.stop_after()) {
        return;
    }
    let (last, err) = {
        let g = s.state();
        (g.last_ok, g.last_error.clone())
    };
    s.lose(
        Lost::Unanswered,
        format!(
            "{}: no renewal succeeded in the coordination store {} for {} ({}); stopped the load before the lease runs out, so that no other host loads `{}` while this one does",
            s.what(),
            s.store.place,
            duration::fmt(clock::now().saturating_sub(last)),
            err.as_deref().unwrap_or("the renewal is still waiting for an answer"),
            s.computer
        ),
    );
    if !wait_for_age(s, t.exit_after()) {
        return;
    }
    // The run did not end in time (a step that does not look at signals):
    // end the process. Its commands die with it (PR_SET_PDEATHSIG).
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "reimage: {}: the run did not stop within {} of its last renewal; exiting now ({EXIT_STORE})\n",
            s.what(),
            duration::fmt(t.exit_after())
        )
        .as_bytes(),
    );
    std::process::exit(EXIT_STORE);
}

impl Drop for Lease {
    fn drop(&mut self) {
        let s = &self.shared;
        let answering = {
            let g = s.state();
            g.last_error.is_none()
                && g.renewing
                    .is_none_or(|t| clock::now().saturating_sub(t) < RENEWAL_OVERDUE)
        };
        s.state().stop = true;
        s.wake.notify_all();
        // Both end within 100 ms: the keeper's store operation is
        // cancelled, the watchdog only waits on the condition variable.
        for t in [self.keeper.take(), self.watchdog.take()]
            .into_iter()
            .flatten()
        {
            let _ = t.join();
        }
        // A store that did not answer is not asked again (the lease runs
        // out by itself); one that said the lease is gone is (a revoked
        // lease is given back now that the load has ended).
        if s.lost() == Some(Lost::Unanswered) {
            return;
        }
        let t = s.store.terms;
        let limit = if signal::caught().is_some() && !answering {
            t.try_limit().min(RELEASE_AFTER_SIGNAL)
        } else {
            t.try_limit()
        };
        let _ = s.store.release(&s.token, Limits::new(limit, limit));
    }
}

/// A held load slot in the store; freed when dropped (or when the run's
/// lease expires).
pub struct SiteSlot {
    shared: Arc<Shared>,
    class: String,
    /// Which slot, from 0.
    pub index: u32,
}

impl SiteSlot {
    /// Says what the slot is held for (best effort: a label is only
    /// information).
    pub fn label(&self, text: &str) {
        let s = &self.shared;
        let _ = s.store.label_slot(&s.token, &self.class, self.index, text);
    }
}

impl Drop for SiteSlot {
    fn drop(&mut self) {
        let s = &self.shared;
        if s.lost() == Some(Lost::Unanswered) {
            return;
        }
        let _ = s.store.free_slot(&s.token, &self.class, self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For every allowed lease, the run is stopped and gone before another
    /// host can take the computer, with at least a second to spare, and a
    /// renewal begun on time has a whole try before the watchdog's time.
    #[test]
    fn the_terms_leave_a_margin_for_every_lease() {
        for ms in [
            4000, 5000, 7999, 8000, 10_000, 20_000, 60_000, 300_000, 86_400_000,
        ] {
            let t = Terms::new(Duration::from_millis(ms));
            assert!(t.lease >= MIN_LEASE, "{t:?}");
            assert!(t.stop_after() < t.exit_after(), "{t:?}");
            assert!(
                t.exit_after() - t.stop_after() >= Duration::from_secs(1),
                "{t:?}"
            );
            assert!(t.lease - t.exit_after() >= Duration::from_secs(1), "{t:?}");
            assert!(t.renew_every() + t.try_limit() <= t.stop_after(), "{t:?}");
            assert!(t.start_limit() < t.lease, "{t:?}");
        }
        let t = Terms::new(Duration::from_secs(60));
        assert_eq!(
            (t.stop_after(), t.exit_after()),
            (Duration::from_secs(45), Duration::from_millis(52_500))
        );
        let t = Terms::new(MIN_LEASE);
        assert_eq!(
            (t.stop_after(), t.exit_after()),
            (Duration::from_secs(2), Duration::from_secs(3))
        );
    }
}
