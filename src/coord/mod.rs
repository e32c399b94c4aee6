//! Who may load a computer, and how many loads may run at once: the local
//! flock and flock semaphore of the state directory (the default), or the
//! site-wide leases of a PostgreSQL coordination store (`[coordination]`).
//!
//! The rest of reimage sees two things: a [`Hold`] on the computer for the
//! length of the run, and [`Slots`], the semaphore a provisioner takes a
//! load slot from. Which kind both are is decided once, in [`hold`].

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
        if self.lease < Duration::from_secs(2) {
            return Err(("lease", "`lease` must be 2s or more".into()));
        }
        if let Some(h) = &self.host
            && h.trim().is_empty()
        {
            return Err(("host", "`host` must not be empty".into()));
        }
        let c: postgres::Config = self.url.parse().map_err(|e| {
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
    _lease: Option<store::Lease>,
    _lock: state::Lock,
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
    let lock = state.lock(computer)?;
    let Some(s) = settings else {
        return Ok((
            Hold {
                _lease: None,
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
                    _lease: Some(lease),
                    _lock: lock,
                },
                slots,
            ))
        }
        Err(store::StoreError::Held(Some(h))) => Err(Error::Locked(format!(
            "computer `{computer}` is held by another reimage run: {} (lease for {:.0}s more unless renewed); wait for it to finish or stop it",
            h.describe(),
            h.expires_in.max(0.0)
        ))),
        Err(store::StoreError::Held(None)) => Err(Error::Locked(format!(
            "computer `{computer}` is held by another reimage run (see `reimage status {computer}`)"
        ))),
        Err(store::StoreError::Down(e)) => Err(Error::Store(format!(
            "{e:#}; not running without it (a run elsewhere could load `{computer}` at the same time): fix the store or remove [coordination]"
        ))),
    }
}
