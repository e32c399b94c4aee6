//! Who may load a computer, and how many loads may run at once: the local
//! flock and flock semaphore of the state directory (the default), or the
//! site-wide leases of a PostgreSQL coordination store (`[coordination]`).
//!
//! The rest of reimage sees two things: a [`Hold`] on the computer for the
//! length of the run, and [`Slots`], the semaphore a provisioner takes a
//! load slot from. Which kind both are is decided once, in [`hold`].

mod clock;
mod db;
pub mod lease;
mod pgpass;
pub mod store;

use anyhow::Result;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::duration;
use crate::error::Error;
use crate::state::{self, StateDir};

/// `[coordination]`: the site-wide store.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `postgresql://USER@HOST[:PORT]/DB[?sslmode=require]`.
    pub url: String,
    /// File whose first line is the password (else `PGPASSFILE`/`~/.pgpass`).
    pub password_file: Option<PathBuf>,
    /// CA certificates to verify the server with (`sslmode=require`).
    pub ca_file: Option<PathBuf>,
    /// Lease length: a dead run frees its computer and slots this long
    /// after its last renewal.
    #[serde(default = "default_lease", deserialize_with = "duration::de")]
    pub lease: Duration,
    /// This management node's name in the store (default: host name).
    pub host: Option<String>,
}

fn default_lease() -> Duration {
    Duration::from_secs(60)
}

impl Settings {
    /// Checks serde cannot make: the key that is wrong and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.lease < lease::MIN_LEASE {
            return Err((
                "lease",
                format!(
                    "`lease` must be {} or more: renewals need 2 s to get through, and a run that lost its store needs 2 s more to end its load before another host may take the computer",
                    duration::fmt(lease::MIN_LEASE)
                ),
            ));
        }
        if let Some(h) = &self.host
            && h.trim().is_empty()
        {
            return Err(("host", "`host` must not be empty".into()));
        }
        let c: tokio_postgres::Config = self.url.parse().map_err(|e| {
            (
                "url",
                format!("`url` is not a PostgreSQL URL ({e}): write postgresql://USER@HOST/DB"),
            )
        })?;
        if c.get_user().is_none() {
            return Err((
                "url",
                "`url` names no user: write postgresql://USER@HOST/DB".into(),
            ));
        }
        Ok(())
    }
}

/// A run's hold on its computer: the state directory's flock, and with a
/// store its lease (renewed until dropped). Released when dropped, the
/// lease first.
#[derive(Debug)]
pub struct Hold {
    lease: Option<lease::Lease>,
    _lock: state::Lock,
}

impl Hold {
    /// What the run's events say about its lease (its generation, the
    /// terms, a takeover), and whether that is a warning; None without a
    /// store.
    pub fn note(&self) -> Option<(String, bool)> {
        self.lease.as_ref().map(lease::Lease::note)
    }
}

/// Where load slots come from: the state directory's flock semaphore, or
/// the store (the slots then count every management node's runs).
#[derive(Clone)]
pub struct Slots(SlotSource);

#[derive(Clone)]
enum SlotSource {
    Local(StateDir),
    Site(Arc<store::Shared>),
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            SlotSource::Local(_) => f.write_str("Slots(local)"),
            SlotSource::Site(_) => f.write_str("Slots(site)"),
        }
    }
}

impl Slots {
    /// Slots shared by the reimage processes that use `state`.
    pub fn local(state: StateDir) -> Slots {
        Slots(SlotSource::Local(state))
    }

    /// Takes one of `max` slots of the limit class `class`, waiting up to
    /// `wait` and calling `waiting` with the time waited; None when none
    /// came free in time.
    pub fn acquire(
        &self,
        class: &str,
        max: u32,
        wait: Duration,
        waiting: impl FnMut(Duration),
    ) -> Result<Option<Slot>> {
        Ok(match &self.0 {
            SlotSource::Local(s) => s.acquire_slot(class, max, wait, waiting)?.map(|s| Slot {
                local: Some(s),
                site: None,
            }),
            SlotSource::Site(s) => s.acquire_slot(class, max, wait, waiting)?.map(|s| Slot {
                local: None,
                site: Some(s),
            }),
        })
    }

    /// The labels of the held slots of `class` (e.g. the xCAT nodes that
    /// reimage runs load now): this host's with the state directory, every
    /// host's with the store (empty if the store cannot be read now; the
    /// store itself still caps the slots).
    pub fn labels(&self, class: &str) -> Vec<String> {
        match &self.0 {
            SlotSource::Local(s) => s.slot_labels(class),
            SlotSource::Site(s) => s.slot_labels(class).unwrap_or_default(),
        }
    }
}

/// A limit class as `reimage status` shows it: a provisioner's load
/// slots and what its own system shows loading now.
#[derive(Debug, Clone)]
pub struct SlotClass {
    /// The semaphore's name ([`Slots::acquire`]'s `class`).
    pub class: String,
    /// Which provisioner and system, in words.
    pub title: String,
    /// Slots in all.
    pub max: u32,
    /// The nodes the system itself shows loading now (they take slots
    /// whether reimage started them or not), or why it could not be asked.
    pub loading: Result<Vec<String>, String>,
    /// The command that frees the slot of a node no run loads, `{node}`
    /// standing for the node.
    pub free_with: String,
}

/// A held load slot; freed when dropped.
pub struct Slot {
    local: Option<state::Slot>,
    site: Option<store::SiteSlot>,
}

impl Slot {
    /// Says what the slot is held for (e.g. a node name), for
    /// [`Slots::labels`].
    pub fn label(&self, text: &str) {
        if let Some(s) = &self.local {
            s.label(text);
        }
        if let Some(s) = &self.site {
            s.label(text);
        }
    }
}

/// Takes `computer` for a run of `command`: the local flock, and with a
/// store its lease too. Exit 73 when another run holds it (naming host,
/// pid, command and start), 69 when the store cannot be used.
pub fn hold(
    settings: Option<&Settings>,
    state: &StateDir,
    computer: &str,
    command: &str,
) -> Result<(Hold, Slots), Error> {
    let host = settings
        .and_then(|s| s.host.clone())
        .unwrap_or_else(store::hostname);
    let lock = state
        .lock(computer)
        .map_err(|e| local_holder(e, state, computer, &host))?;
    let Some(s) = settings else {
        return Ok((
            Hold {
                lease: None,
                _lock: lock,
            },
            Slots::local(state.clone()),
        ));
    };
    let store = store::Store::new(s).map_err(|e| Error::Store(format!("{e:#}")))?;
    match store.acquire(computer, command) {
        Ok(lease) => {
            let slots = Slots(SlotSource::Site(lease.shared()));
            Ok((
                Hold {
                    lease: Some(lease),
                    _lock: lock,
                },
                slots,
            ))
        }
        Err(store::StoreError::Held(Some(h))) if h.revoked => Err(Error::Locked(format!(
            "computer `{computer}` is held by another reimage run: {}; an admin revoked its lease: it stops at its next renewal and gives the computer back, at the latest when its lease runs out in {:.0}s",
            h.describe(),
            h.expires_in.max(0.0)
        ))),
        Err(store::StoreError::Held(Some(h))) => Err(Error::Locked(format!(
            "computer `{computer}` is held by another reimage run: {} (lease for {:.0}s more unless renewed); wait for it to finish or stop it",
            h.describe(),
            h.expires_in.max(0.0)
        ))),
        Err(store::StoreError::Held(None)) => Err(Error::Locked(format!(
            "computer `{computer}` is held by another reimage run (see `reimage status {computer}`)"
        ))),
        Err(store::StoreError::Down(e)) if e.is::<db::Cancelled>() => Err(Error::Store(format!(
            "{}: stopped while taking the lease on `{computer}` in the coordination store; nothing was loaded",
            crate::signal::check()
                .err()
                .map(|i| i.to_string())
                .unwrap_or_else(|| "interrupted".into())
        ))),
        Err(store::StoreError::Down(e)) => Err(Error::Store(format!(
            "{e:#}; not running without it (a run elsewhere could load `{computer}` at the same time): fix the store or remove [coordination]"
        ))),
    }
}

/// The local lock's refusal, naming the run that holds it as the store
/// does: host, pid, command and start, from that run's record (written as
/// it starts its first phase; before that only the pid is known).
fn local_holder(e: Error, state: &StateDir, computer: &str, host: &str) -> Error {
    let Error::Locked(msg) = e else {
        return e;
    };
    let Some(r) = state
        .read_last_run(computer)
        .filter(|r| r.result == state::RunResult::Running)
        .filter(|r| i32::try_from(r.pid).is_ok_and(crate::exec::alive))
        .filter(|r| msg.contains(&format!("(pid {})", r.pid)))
    else {
        return Error::Locked(format!("{msg} (on this host, {host})"));
    };
    let image = &r.image;
    Error::Locked(format!(
        "computer `{computer}` is held by another reimage run: host {host}, pid {}, `{} --image {image}` (attempt {} of {}), started {}; wait for it to finish or stop it",
        r.pid,
        r.command,
        r.attempt.max(1),
        r.of,
        r.started
    ))
}
