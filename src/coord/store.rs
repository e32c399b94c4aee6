//! The PostgreSQL coordination store: leases on computers and on load
//! slots, each operation one short connection bounded by the clock
//! ([`super::db`]); the lease's keeper and watchdog are in
//! [`super::lease`].
//!
//! Why short connections: a site may run 1,000 reimage processes against a
//! server with the default `max_connections = 100`. A run holds no
//! connection between operations; it connects, runs one statement or one
//! short transaction, and disconnects. With the default 60 s lease a run
//! renews every 15 s, so 1,000 runs make about 67 short connections a
//! second, each open for milliseconds. A server that is briefly full
//! (SQLSTATE 53300) is retried with jittered backoff within the time the
//! operation has.
//!
//! Times are the database's (`now()`), so the hosts' clocks need not agree.

use anyhow::{Context, Result, anyhow, bail};
use openssl::ssl::{SslConnector, SslMethod};
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};

use super::Settings;
use super::db::{Db, Limits};
use super::lease::{Lease, Terms};
use super::pgpass;
use crate::secret::Secret;
use crate::signal;

pub use super::lease::{Shared, SiteSlot};

/// The schema, plain SQL (also in the man page's terms: reimage.toml(5)).
pub const SCHEMA: &str = include_str!("schema.sql");
/// The schema version this reimage writes and reads.
pub const SCHEMA_VERSION: i32 = 2;
/// Advisory lock key that serializes schema setup ("reimage" in ASCII).
const SETUP_LOCK: i64 = 0x0072_6569_6d61_6765;

/// How to reach the store, and the lease terms.
#[derive(Clone)]
pub struct Store {
    db: Db,
    /// Where it is, for messages (never the password).
    pub place: String,
    /// The lease and the times derived from it.
    pub terms: Terms,
    /// This management node's name in the store.
    pub host: String,
}

/// Who holds (or last held) a computer, as the store says.
#[derive(Debug, Clone)]
pub struct Holder {
    /// The computer.
    pub computer: String,
    /// Management node.
    pub host: String,
    /// Its process id there.
    pub pid: i32,
    /// What it runs.
    pub command: String,
    /// RFC 3339 UTC.
    pub started: String,
    /// Seconds of lease left (negative: expired that long ago).
    pub expires_in: f64,
    /// How many runs have taken the computer, this one included.
    pub generation: i64,
    /// An admin deleted the live row: its run stops at its next renewal.
    pub revoked: bool,
    /// Its run ended and gave the computer back.
    pub released: bool,
}

impl Holder {
    /// "host H, pid P, `COMMAND`, started T, generation G".
    pub fn describe(&self) -> String {
        format!(
            "host {}, pid {}, `{}`, started {}, generation {}",
            self.host, self.pid, self.command, self.started, self.generation
        )
    }

    /// Free for the taking: given back, or expired.
    fn free(&self) -> bool {
        self.released || self.expires_in <= 0.0
    }
}

/// The columns of a [`Holder`], for [`holder_row`].
const HOLDER_COLUMNS: &str = "computer, host, pid, command,
        to_char(started AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
        extract(epoch FROM expires - now())::float8,
        generation, revoked IS NOT NULL, released IS NOT NULL";

fn holder_row(r: &tokio_postgres::Row) -> Holder {
    Holder {
        computer: r.get(0),
        host: r.get(1),
        pid: r.get(2),
        command: r.get(3),
        started: r.get(4),
        expires_in: r.get(5),
        generation: r.get(6),
        revoked: r.get(7),
        released: r.get(8),
    }
}

/// What one try at taking a computer found.
enum Take {
    /// The schema is missing (0) or has this version, not ours.
    Schema(i32),
    /// Taken, as this generation; the row's previous holder, if any.
    Got(i64, Option<Holder>),
    /// Held by another run.
    Held(Holder),
    /// Another run created the row between the look and the insert.
    Raced,
}

/// One run's try to take a computer: who asks, and the lease it asks for.
struct Taker<'a> {
    computer: &'a str,
    command: &'a str,
    host: &'a str,
    /// This run's secret in the holder row.
    token: String,
    pid: i32,
    /// The lease, in seconds.
    secs: f64,
}

impl Taker<'_> {
    /// The values of a holder row this run writes, as $1 to $6: computer,
    /// token, host, pid, command, the lease in seconds.
    fn row_values(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 6] {
        [
            &self.computer,
            &self.token,
            &self.host,
            &self.pid,
            &self.command,
            &self.secs,
        ]
    }

    /// The take, in one transaction: the schema version, then the row,
    /// locked.
    async fn take(&self, c: &mut Client) -> Result<Take, tokio_postgres::Error> {
        let v = schema_version(c).await?;
        if v != SCHEMA_VERSION {
            return Ok(Take::Schema(v));
        }
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                &format!(
                    "SELECT {HOLDER_COLUMNS}, token = $2 FROM reimage_holder
                      WHERE computer = $1 FOR UPDATE"
                ),
                &[&self.computer, &self.token],
            )
            .await?;
        let previous = row.as_ref().map(holder_row);
        let ours = row.as_ref().is_some_and(|r| r.get::<_, bool>(9));
        let got = match &previous {
            // An earlier try of this run took it, and its answer was lost:
            // renew it, so that the lease runs from this try as the keeper
            // will count it.
            Some(h) if ours && !h.free() && !h.revoked => self.renew(&tx).await?.map(|g| (g, None)),
            Some(h) if !h.free() => return Ok(Take::Held(h.clone())),
            Some(_) => self.take_over(&tx).await?.map(|g| (g, previous.clone())),
            None => self.insert(&tx).await?.map(|g| (g, None)),
        };
        let Some((g, previous)) = got else {
            return Ok(Take::Raced);
        };
        tx.commit().await?;
        Ok(Take::Got(g, previous))
    }

    /// Renews this run's own lease; its generation.
    async fn renew(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<Option<i64>, tokio_postgres::Error> {
        let row = tx
            .query_opt(
                "UPDATE reimage_holder
                    SET expires = now() + $3::float8 * interval '1 second'
                  WHERE computer = $1 AND token = $2
                 RETURNING generation",
                &[&self.computer, &self.token, &self.secs],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Takes a free row over, as the next generation.
    async fn take_over(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<Option<i64>, tokio_postgres::Error> {
        let row = tx
            .query_opt(
                "UPDATE reimage_holder
                    SET token = $2, host = $3, pid = $4, command = $5, started = now(),
                        expires = now() + $6::float8 * interval '1 second',
                        generation = generation + 1, released = NULL, revoked = NULL
                  WHERE computer = $1
                 RETURNING generation",
                &self.row_values(),
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The computer's first row, unless another run inserted it first.
    async fn insert(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<Option<i64>, tokio_postgres::Error> {
        let row = tx
            .query_opt(
                "INSERT INTO reimage_holder
                    (computer, token, host, pid, command, started, expires, generation)
                 VALUES ($1, $2, $3, $4, $5, now(),
                         now() + $6::float8 * interval '1 second', 1)
                 ON CONFLICT (computer) DO NOTHING
                 RETURNING generation",
                &self.row_values(),
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }
}

/// What a renewal found.
#[derive(Debug)]
pub enum Renewal {
    /// Renewed for another lease.
    Renewed,
    /// The lease is not this run's any more; why.
    Gone(String),
}

/// Why an operation failed: the store could not be used, or it answered no.
#[derive(Debug)]
pub enum StoreError {
    /// The computer is held by another run.
    Held(Option<Holder>),
    /// The store could not be reached or used.
    Down(anyhow::Error),
}

impl From<anyhow::Error> for StoreError {
    fn from(e: anyhow::Error) -> StoreError {
        StoreError::Down(e)
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// A wait on the main thread ends when a signal arrives.
fn on_signal() -> bool {
    signal::caught().is_some()
}

/// The schema version (0: none yet).
async fn schema_version(c: &mut Client) -> Result<i32, tokio_postgres::Error> {
    match c
        .query_one("SELECT max(version) FROM reimage_schema", &[])
        .await
    {
        Ok(r) => Ok(r.get::<_, Option<i32>>(0).unwrap_or(0)),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(0),
        Err(e) => Err(e),
    }
}

impl Store {
    /// The store `s` describes: URL parsed, password found (URL, the
    /// password file, `PGPASSFILE` or `~/.pgpass`), TLS set up when the URL
    /// asks for `sslmode=require`.
    pub fn new(s: &Settings) -> Result<Store> {
        let mut config: Config = s
            .url
            .parse()
            .map_err(|e| anyhow!("coordination url: {e}"))?;
        let user = config.get_user().map(str::to_string).ok_or_else(|| {
            anyhow!("coordination url names no user: write postgresql://USER@HOST/DB")
        })?;
        let (host, port) = first_host(&config);
        let db = config.get_dbname().unwrap_or(&user).to_string();
        let mut password_note = None;
        if config.get_password().is_none() {
            if let Some(f) = &s.password_file {
                let p = Secret::from_file(f, "coordination password_file")?;
                config.password(p.expose());
            } else {
                match pgpass::lookup(&host, port, &db, &user) {
                    pgpass::Found::Password(p) => {
                        config.password(p.expose());
                    }
                    pgpass::Found::Nothing(note) => password_note = note,
                }
            }
        }
        let terms = Terms::new(s.lease);
        // Kernel-level bounds on top of the client's own deadline: they
        // end a connection whose peer is gone sooner on some paths.
        config.connect_timeout(terms.try_limit());
        config.tcp_user_timeout(terms.try_limit());
        config.keepalives(true);
        // Whole seconds: the kernel takes no less than 1 (EINVAL).
        config.keepalives_idle(terms.try_limit().max(Duration::from_secs(1)));
        config.application_name("reimage");
        // The server's side of the bound: a statement that waits for a
        // lock is ended there too.
        config.options(format!(
            "-c statement_timeout={}",
            terms.try_limit().as_millis()
        ));
        let tls = match config.get_ssl_mode() {
            SslMode::Require => {
                let mut b = SslConnector::builder(SslMethod::tls_client())
                    .context("cannot set up TLS for the coordination store")?;
                if let Some(ca) = &s.ca_file {
                    b.set_ca_file(ca).with_context(|| {
                        format!("cannot read the coordination ca_file {}", ca.display())
                    })?;
                }
                Some(postgres_openssl::MakeTlsConnector::new(b.build()))
            }
            // TLS only when the URL asks for it: `prefer` would quietly
            // fall back to plain text.
            _ => {
                config.ssl_mode(SslMode::Disable);
                None
            }
        };
        let place = format!("postgresql://{user}@{host}:{port}/{db}");
        let mut db = Db::new(config, tls, place.clone());
        db.password_note = password_note;
        Ok(Store {
            db,
            place,
            terms,
            host: s.host.clone().unwrap_or_else(hostname),
        })
    }

    /// An operation at the start of a run (or of `setup-db`, `status`):
    /// nothing is held yet, so a store that is down or silent costs at most
    /// [`Terms::start_limit`]; a signal ends it at once.
    fn at_start(&self) -> Limits {
        Limits::new(self.terms.try_limit(), self.terms.start_limit())
    }

    /// One bounded operation while the run holds its lease.
    pub(super) fn brief(&self) -> Limits {
        Limits::new(self.terms.try_limit(), self.terms.try_limit())
    }

    /// Creates or upgrades the schema and returns its version; fails if
    /// the store has a newer schema than this reimage knows.
    pub fn setup(&self) -> Result<i32> {
        let (v, _) = self.db.run(self.at_start(), &on_signal, async |c| {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK])
                .await?;
            let exists: bool = tx
                .query_one("SELECT to_regclass('reimage_schema') IS NOT NULL", &[])
                .await?
                .get(0);
            let found = if exists {
                tx.query_one("SELECT max(version) FROM reimage_schema", &[])
                    .await?
                    .get::<_, Option<i32>>(0)
                    .unwrap_or(0)
            } else {
                0
            };
            // Never down: a newer reimage's schema stays as it is.
            if found > SCHEMA_VERSION {
                return Ok(found);
            }
            tx.batch_execute(SCHEMA).await?;
            let v: Option<i32> = tx
                .query_one("SELECT max(version) FROM reimage_schema", &[])
                .await?
                .get(0);
            tx.commit().await?;
            Ok(v.unwrap_or(0))
        })?;
        self.check_version(v)?;
        Ok(v)
    }

    fn check_version(&self, v: i32) -> Result<()> {
        if v > SCHEMA_VERSION {
            bail!(
                "coordination store {} has schema version {v}, newer than this reimage knows ({SCHEMA_VERSION}): upgrade reimage on this host",
                self.place
            );
        }
        Ok(())
    }

    /// Takes `computer` for a run of `command`, or says who holds it. One
    /// connection: the schema version, then the take in one transaction
    /// (the schema is set up or upgraded first if it is not ours).
    pub fn acquire(&self, computer: &str, command: &str) -> Result<Lease, StoreError> {
        let limits = self.at_start();
        let taker = Taker {
            computer,
            command,
            host: &self.host,
            token: format!(
                "{:016x}{:016x}",
                crate::backoff::random_u64(),
                crate::backoff::random_u64()
            ),
            pid: std::process::id() as i32,
            secs: self.terms.lease.as_secs_f64(),
        };
        let mut set_up = false;
        let mut tries = 0;
        loop {
            tries += 1;
            // The lease runs from the database's now() in the take, which
            // is later than the start of the try that made it.
            let (r, began) = self
                .db
                .run(limits, &on_signal, async |c| taker.take(c).await)?;
            match r {
                Take::Got(generation, previous) => {
                    return Ok(Lease::start(
                        self.clone(),
                        taker.token,
                        computer.to_string(),
                        generation,
                        previous,
                        began,
                    ));
                }
                Take::Held(h) => return Err(StoreError::Held(Some(h))),
                Take::Raced if tries < 3 => {}
                Take::Raced => return Err(StoreError::Held(None)),
                Take::Schema(v) if v > SCHEMA_VERSION || set_up => {
                    self.check_version(v)?;
                    return Err(StoreError::Down(anyhow!(
                        "coordination store {}: schema version {v} after setting it up, not {SCHEMA_VERSION}",
                        self.place
                    )));
                }
                Take::Schema(_) => {
                    self.setup()?;
                    set_up = true;
                }
            }
        }
    }

    /// Live holders of `computers` (every computer when empty).
    pub fn holders(&self, computers: &[String]) -> Result<Vec<Holder>> {
        let (found, _) = self.db.run(self.at_start(), &on_signal, async |c| {
            let v = schema_version(c).await?;
            if v != SCHEMA_VERSION {
                return Ok(Err(v));
            }
            c.query(
                &format!(
                    "SELECT {HOLDER_COLUMNS} FROM reimage_holder
                     WHERE expires > now() AND released IS NULL
                       AND (cardinality($1::text[]) = 0 OR computer = ANY($1))
                     ORDER BY computer"
                ),
                &[&computers],
            )
            .await
            .map(Ok)
        })?;
        match found {
            Ok(rows) => Ok(rows.iter().map(holder_row).collect()),
            Err(v) => {
                self.check_version(v)?;
                // No schema, or an older one: set it up for the runs (no
                // one holds anything without one).
                let now = self.setup()?;
                if now != SCHEMA_VERSION {
                    bail!(
                        "coordination store {}: schema version {now} after setting it up, not {SCHEMA_VERSION}",
                        self.place
                    );
                }
                self.holders(computers)
            }
        }
    }

    /// Renews the lease `token` has on `computer`, and its slots. A lease
    /// that expired is not renewed even if nobody took it: another run may
    /// be taking it now.
    pub(super) fn renew(
        &self,
        token: &str,
        computer: &str,
        limits: Limits,
        cancel: &dyn Fn() -> bool,
    ) -> Result<(Renewal, Duration)> {
        let secs = self.terms.lease.as_secs_f64();
        self.db.run(limits, cancel, async |c| {
            let r = c
                .query_one(
                    "WITH h AS (UPDATE reimage_holder
                                  SET expires = now() + $2::float8 * interval '1 second'
                                WHERE token = $1 AND computer = $3 AND expires > now()
                                  AND released IS NULL AND revoked IS NULL
                                RETURNING 1),
                          s AS (UPDATE reimage_slot
                                  SET expires = now() + $2::float8 * interval '1 second'
                                WHERE token = $1 AND EXISTS (SELECT 1 FROM h)
                                RETURNING 1)
                     SELECT (SELECT count(*) FROM h), (SELECT count(*) FROM s)",
                    &[&token, &secs, &computer],
                )
                .await?;
            if r.get::<_, i64>(0) > 0 {
                return Ok(Renewal::Renewed);
            }
            let row = c
                .query_opt(
                    &format!(
                        "SELECT {HOLDER_COLUMNS}, token = $2 FROM reimage_holder
                          WHERE computer = $1"
                    ),
                    &[&computer, &token],
                )
                .await?;
            Ok(Renewal::Gone(gone(row.as_ref())))
        })
    }

    /// Gives the computer back (its row stays, released, with its
    /// generation) and frees the run's slots.
    pub(super) fn release(&self, token: &str, limits: Limits) -> Result<()> {
        self.db
            .run(limits, &|| false, async |c| {
                let tx = c.transaction().await?;
                tx.execute("DELETE FROM reimage_slot WHERE token = $1", &[&token])
                    .await?;
                tx.execute(
                    "UPDATE reimage_holder SET released = now(), expires = now()
                      WHERE token = $1 AND released IS NULL",
                    &[&token],
                )
                .await?;
                tx.commit().await
            })
            .map(|_| ())
    }

    /// One try at a free slot of `class` (at most `max`) for the run
    /// `token` on `computer`; its index.
    pub(super) fn try_slot(
        &self,
        token: &str,
        computer: &str,
        class: &str,
        max: u32,
    ) -> Result<Option<u32>> {
        let secs = self.terms.lease.as_secs_f64();
        let pid = std::process::id() as i32;
        let max = max.min(i32::MAX as u32) as i32;
        let (got, _) = self.db.run(self.brief(), &on_signal, async |c| {
            let tx = c.transaction().await?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('reimage_slot'), hashtext($1))",
                &[&class],
            )
            .await?;
            tx.execute(
                "DELETE FROM reimage_slot WHERE class = $1 AND expires < now()",
                &[&class],
            )
            .await?;
            let taken: Vec<i32> = tx
                .query("SELECT slot FROM reimage_slot WHERE class = $1", &[&class])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let Some(free) = (0..max).find(|i| !taken.contains(i)) else {
                return Ok(None);
            };
            tx.execute(
                "INSERT INTO reimage_slot (class, slot, token, computer, host, pid, taken, expires)
                 VALUES ($1, $2, $3, $4, $5, $6, now(), now() + $7::float8 * interval '1 second')",
                &[&class, &free, &token, &computer, &self.host, &pid, &secs],
            )
            .await?;
            tx.commit().await?;
            Ok(Some(free as u32))
        })?;
        Ok(got)
    }

    pub(super) fn free_slot(&self, token: &str, class: &str, index: u32) -> Result<()> {
        let index = index as i32;
        self.db
            .run(self.brief(), &|| false, async |c| {
                c.execute(
                    "DELETE FROM reimage_slot WHERE class = $1 AND slot = $2 AND token = $3",
                    &[&class, &index, &token],
                )
                .await
                .map(|_| ())
            })
            .map(|_| ())
    }

    /// Says what a slot is held for.
    pub(super) fn label_slot(
        &self,
        token: &str,
        class: &str,
        index: u32,
        text: &str,
    ) -> Result<()> {
        let index = index as i32;
        self.db
            .run(self.brief(), &on_signal, async |c| {
                c.execute(
                    "UPDATE reimage_slot SET label = $4 WHERE class = $1 AND slot = $2 AND token = $3",
                    &[&class, &index, &token, &text],
                )
                .await
                .map(|_| ())
            })
            .map(|_| ())
    }

    /// The labels of the live slots of `class`, every host's.
    pub fn slot_labels(&self, class: &str) -> Result<Vec<String>> {
        let (rows, _) = self.db.run(self.brief(), &on_signal, async |c| {
            c.query(
                "SELECT label FROM reimage_slot
                 WHERE class = $1 AND expires > now() AND label <> '' ORDER BY label",
                &[&class],
            )
            .await
        })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// Why a renewal found no lease of this run: `row` is the computer's row
/// (with `ours` last), if it has one.
fn gone(row: Option<&tokio_postgres::Row>) -> String {
    let Some(r) = row else {
        return "its row is gone from the store".into();
    };
    let h = holder_row(r);
    let ours: bool = r.get(9);
    if !ours {
        format!(
            "the lease expired and another run took the computer ({})",
            h.describe()
        )
    } else if h.revoked {
        "an admin revoked it (deleted its row)".into()
    } else if h.released {
        "it was released".into()
    } else {
        format!(
            "it expired {:.1}s ago before a renewal reached the store",
            -h.expires_in
        )
    }
}

fn first_host(c: &Config) -> (String, u16) {
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        // libpq matches socket connections as "localhost" in .pgpass.
        _ => "localhost".into(),
    };
    (host, c.get_ports().first().copied().unwrap_or(5432))
}

/// Creates or upgrades the schema at the store `s` names; for `reimage
/// setup-db`.
pub fn setup(s: &Settings) -> Result<(String, i32)> {
    let store = Store::new(s)?;
    let v = store.setup()?;
    Ok((store.place, v))
}

/// Connects to the store `s` names and reads its schema version, writing
/// nothing; for `reimage check --online`. Bounded as a run's start is.
pub fn probe(s: &Settings) -> Result<(String, i32)> {
    let store = Store::new(s)?;
    let (v, _) = store.db.run(store.at_start(), &on_signal, async |c| {
        schema_version(c).await
    })?;
    store.check_version(v)?;
    Ok((store.place, v))
}
