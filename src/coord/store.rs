//! The PostgreSQL coordination store: leases on computers and on load
//! slots, renewed by a keeper thread over short connections.
//!
//! Why short connections: a site may run 1,000 reimage processes against a
//! server with the default `max_connections = 100`. A run holds no
//! connection between operations; it connects, runs one statement or one
//! short transaction, and disconnects. With the default 60 s lease a run
//! renews every 15 s, so 1,000 runs make about 67 short connections a
//! second, each open for milliseconds. A server that is briefly full
//! (SQLSTATE 53300) is retried with jittered backoff inside the time a
//! renewal has left.
//!
//! Times are the database's (`now()`), so the hosts' clocks need not agree.

use crate::backoff::Backoff;
use anyhow::{Context, Result, anyhow, bail};
use openssl::ssl::{SslConnector, SslMethod};
use postgres::config::{Host, SslMode};
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls};
use postgres_openssl::MakeTlsConnector;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Settings;
use super::pgpass;
use crate::duration;
use crate::secret::Secret;
use crate::signal;

/// The schema, plain SQL (also in the man page's terms: reimage.toml(5)).
pub const SCHEMA: &str = include_str!("schema.sql");
/// The schema version this reimage writes and reads.
pub const SCHEMA_VERSION: i32 = 1;
/// Advisory lock key that serializes schema setup ("reimage" in ASCII).
const SETUP_LOCK: i64 = 0x0072_6569_6d61_6765;

/// How to reach the store, and the lease terms.
#[derive(Clone)]
pub struct Store {
    config: Config,
    tls: Option<MakeTlsConnector>,
    /// Where it is, for messages (never the password).
    pub place: String,
    /// The lease: a dead holder's computer and slots are free this long
    /// after its last renewal.
    pub lease: Duration,
    /// This management node's name in the store.
    pub host: String,
}

/// Who holds a computer, as the store says.
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
    /// Seconds of lease left.
    pub expires_in: f64,
}

impl Holder {
    /// "host H, pid P, `COMMAND`, started T".
    pub fn describe(&self) -> String {
        format!(
            "host {}, pid {}, `{}`, started {}",
            self.host, self.pid, self.command, self.started
        )
    }
}

/// The columns of a [`Holder`], for [`holder_row`].
const HOLDER_SELECT: &str = "SELECT computer, host, pid, command,
        to_char(started AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
        extract(epoch FROM expires - now())::float8
    FROM reimage_holder";

fn holder_row(r: &postgres::Row) -> Holder {
    Holder {
        computer: r.get(0),
        host: r.get(1),
        pid: r.get(2),
        command: r.get(3),
        started: r.get(4),
        expires_in: r.get(5),
    }
}

/// What one try at taking a computer found.
enum Take {
    /// The schema is missing (0) or has this version, not ours.
    Schema(i32),
    /// Taken.
    Got,
    /// Held by this run (None: gone by the time we looked).
    Held(Option<Holder>),
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

/// True when trying again soon may help: the server is full or starting,
/// or the connection itself failed.
fn transient(e: &postgres::Error) -> bool {
    match e.code() {
        Some(c) => {
            *c == SqlState::TOO_MANY_CONNECTIONS
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::ADMIN_SHUTDOWN
        }
        // Not from the server: network and timeouts are worth another try;
        // TLS, authentication and configuration errors are not.
        None => {
            let msg = e.to_string();
            e.is_closed()
                || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                || msg.starts_with("timeout")
                || msg.starts_with("error connecting to server")
        }
    }
}

/// This machine's host name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
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
        if config.get_password().is_none() {
            if let Some(f) = &s.password_file {
                let p = Secret::from_file(f, "coordination password_file")?;
                config.password(p.expose());
            } else if let Some(p) = pgpass::lookup(&host, port, &db, &user) {
                config.password(p.expose());
            }
        }
        let op = op_timeout(s.lease);
        config.connect_timeout(op);
        config.tcp_user_timeout(op);
        config.keepalives(true);
        config.keepalives_idle(op);
        config.application_name("reimage");
        config.options(&format!("-c statement_timeout={}", op.as_millis()));
        let tls = match config.get_ssl_mode() {
            SslMode::Require => {
                let mut b = SslConnector::builder(SslMethod::tls_client())
                    .context("cannot set up TLS for the coordination store")?;
                if let Some(ca) = &s.ca_file {
                    b.set_ca_file(ca).with_context(|| {
                        format!("cannot read the coordination ca_file {}", ca.display())
                    })?;
                }
                Some(MakeTlsConnector::new(b.build()))
            }
            // TLS only when the URL asks for it: `prefer` would quietly
            // fall back to plain text.
            _ => {
                config.ssl_mode(SslMode::Disable);
                None
            }
        };
        Ok(Store {
            config,
            tls,
            place: format!("postgresql://{user}@{host}:{port}/{db}"),
            lease: s.lease,
            host: s.host.clone().unwrap_or_else(hostname),
        })
    }

    fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            Some(t) => self.config.connect(t.clone()),
            None => self.config.connect(NoTls),
        }
    }

    /// Runs `f` on a fresh connection, retrying transient failures until
    /// `deadline`.
    fn with_client<T>(
        &self,
        deadline: Instant,
        mut f: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut pause = Backoff::new(ms(20), Duration::from_secs(1)).jittered();
        loop {
            let r = self.connect().and_then(|mut c| {
                let r = f(&mut c);
                let _ = c.close();
                r
            });
            match r {
                Ok(v) => return Ok(v),
                Err(e) if transient(&e) && Instant::now() < deadline => {
                    std::thread::sleep(pause.next_until(deadline));
                }
                Err(e) => {
                    return Err(anyhow!(
                        "coordination store {}: {}",
                        self.place,
                        pg_message(&e)
                    ));
                }
            }
        }
    }

    /// Creates the schema if it is missing and returns its version; fails
    /// if the store has a newer schema than this reimage knows.
    pub fn setup(&self) -> Result<i32> {
        let deadline = Instant::now() + self.lease / 2;
        let v = self.with_client(deadline, |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK])?;
            tx.batch_execute(SCHEMA)?;
            let v: Option<i32> = tx
                .query_one("SELECT max(version) FROM reimage_schema", &[])?
                .get(0);
            tx.commit()?;
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

    /// The schema version, setting the schema up if it is missing.
    fn ensure_schema(&self, deadline: Instant) -> Result<()> {
        let found = self.with_client(deadline, |c| {
            match c.query_one("SELECT max(version) FROM reimage_schema", &[]) {
                Ok(r) => Ok(Some(r.get::<_, Option<i32>>(0).unwrap_or(0))),
                Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        match found {
            Some(v) if v > 0 => self.check_version(v),
            _ => self.setup().map(|_| ()),
        }
    }

    /// Takes `computer` for a run of `command`, or says who holds it. One
    /// connection: the schema version, then the take (the schema is set up
    /// first if it is missing).
    pub fn acquire(&self, computer: &str, command: &str) -> Result<Lease, StoreError> {
        // Nothing is held yet, so a busy or restarting server may take up
        // to a whole lease to answer.
        let deadline = Instant::now() + self.lease;
        let token = format!(
            "{:016x}{:016x}",
            crate::backoff::random_u64(),
            crate::backoff::random_u64()
        );
        let pid = std::process::id() as i32;
        let secs = self.lease.as_secs_f64();
        let mut began = Instant::now();
        let mut set_up = false;
        let mut tries = 0;
        loop {
            tries += 1;
            let r = self.with_client(deadline, |c| {
                let v = match c.query_one("SELECT max(version) FROM reimage_schema", &[]) {
                    Ok(r) => r.get::<_, Option<i32>>(0).unwrap_or(0),
                    Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => 0,
                    Err(e) => return Err(e),
                };
                if v == 0 || v > SCHEMA_VERSION {
                    return Ok(Take::Schema(v));
                }
                // The lease runs from the database's now() in this
                // statement, which is later than this.
                began = Instant::now();
                let got = c.query_opt(
                    "INSERT INTO reimage_holder AS h (computer, token, host, pid, command, started, expires)
                     VALUES ($1, $2, $3, $4, $5, now(), now() + $6::float8 * interval '1 second')
                     ON CONFLICT (computer) DO UPDATE
                       SET token = EXCLUDED.token, host = EXCLUDED.host, pid = EXCLUDED.pid,
                           command = EXCLUDED.command, started = EXCLUDED.started,
                           expires = EXCLUDED.expires
                       WHERE h.expires < now()
                     RETURNING token",
                    &[&computer, &token, &self.host, &pid, &command, &secs],
                )?;
                if got.is_some() {
                    return Ok(Take::Got);
                }
                let held = c.query_opt(
                    &format!("{HOLDER_SELECT} WHERE computer = $1"),
                    &[&computer],
                )?;
                Ok(Take::Held(held.as_ref().map(holder_row)))
            })?;
            match r {
                Take::Got => break,
                // Expired (or released) between the take and the look:
                // take it again.
                Take::Held(h) if tries < 3 && h.as_ref().is_none_or(|h| h.expires_in <= 0.0) => {}
                Take::Held(h) => return Err(StoreError::Held(h)),
                Take::Schema(v) if v > SCHEMA_VERSION || set_up => {
                    self.check_version(v)?;
                    return Err(StoreError::Down(anyhow!(
                        "coordination store {}: no schema version after setting it up",
                        self.place
                    )));
                }
                Take::Schema(_) => {
                    self.setup()?;
                    set_up = true;
                }
            }
        }
        Ok(Lease::start(
            self.clone(),
            token,
            computer.to_string(),
            began,
        ))
    }

    /// Live holders of `computers` (every computer when empty).
    pub fn holders(&self, computers: &[String]) -> Result<Vec<Holder>> {
        let deadline = Instant::now() + self.lease / 2;
        self.ensure_schema(deadline)?;
        let rows = self.with_client(deadline, |c| {
            c.query(
                &format!(
                    "{HOLDER_SELECT}
                     WHERE expires > now() AND (cardinality($1::text[]) = 0 OR computer = ANY($1))
                     ORDER BY computer"
                ),
                &[&computers],
            )
        })?;
        Ok(rows.iter().map(holder_row).collect())
    }

    /// Renews every lease of `token`; false when the computer's lease is
    /// gone (expired and taken by another run, or deleted by an admin).
    fn renew(&self, token: &str, deadline: Instant) -> Result<bool> {
        let secs = self.lease.as_secs_f64();
        self.with_client(deadline, |c| {
            let r = c.query_one(
                "WITH h AS (UPDATE reimage_holder
                              SET expires = now() + $2::float8 * interval '1 second'
                            WHERE token = $1 RETURNING 1),
                      s AS (UPDATE reimage_slot
                              SET expires = now() + $2::float8 * interval '1 second'
                            WHERE token = $1 RETURNING 1)
                 SELECT (SELECT count(*) FROM h), (SELECT count(*) FROM s)",
                &[&token, &secs],
            )?;
            Ok(r.get::<_, i64>(0) > 0)
        })
    }

    fn release(&self, token: &str) -> Result<()> {
        let deadline = Instant::now() + op_timeout(self.lease);
        self.with_client(deadline, |c| {
            c.batch_execute("BEGIN")?;
            c.execute("DELETE FROM reimage_slot WHERE token = $1", &[&token])?;
            c.execute("DELETE FROM reimage_holder WHERE token = $1", &[&token])?;
            c.batch_execute("COMMIT")
        })
    }

    /// One try at a free slot of `class` (at most `max`); its index.
    fn try_slot(&self, lease: &Shared, class: &str, max: u32) -> Result<Option<u32>> {
        let deadline = Instant::now() + op_timeout(self.lease);
        let secs = self.lease.as_secs_f64();
        let pid = std::process::id() as i32;
        let max = max.min(i32::MAX as u32) as i32;
        self.with_client(deadline, |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('reimage_slot'), hashtext($1))",
                &[&class],
            )?;
            tx.execute(
                "DELETE FROM reimage_slot WHERE class = $1 AND expires < now()",
                &[&class],
            )?;
            let taken: Vec<i32> = tx
                .query("SELECT slot FROM reimage_slot WHERE class = $1", &[&class])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let Some(free) = (0..max).find(|i| !taken.contains(i)) else {
                return Ok(None);
            };
            tx.execute(
                "INSERT INTO reimage_slot (class, slot, token, computer, host, pid, taken, expires)
                 VALUES ($1, $2, $3, $4, $5, $6, now(), now() + $7::float8 * interval '1 second')",
                &[
                    &class,
                    &free,
                    &lease.token,
                    &lease.computer,
                    &self.host,
                    &pid,
                    &secs,
                ],
            )?;
            tx.commit()?;
            Ok(Some(free as u32))
        })
    }

    fn free_slot(&self, token: &str, class: &str, index: u32) -> Result<()> {
        let deadline = Instant::now() + op_timeout(self.lease);
        let index = index as i32;
        self.with_client(deadline, |c| {
            c.execute(
                "DELETE FROM reimage_slot WHERE class = $1 AND slot = $2 AND token = $3",
                &[&class, &index, &token],
            )
            .map(|_| ())
        })
    }
}

/// The longest one try of a store operation may take (connect timeout,
/// TCP user timeout, statement timeout): a quarter of the lease, between 1
/// and 15 seconds. A renewal that begins just before the keeper gives up
/// (half a lease) ends by three quarters of the lease, so the run stops
/// while its lease still holds.
fn op_timeout(lease: Duration) -> Duration {
    (lease / 4).clamp(Duration::from_secs(1), Duration::from_secs(15))
}

fn first_host(c: &Config) -> (String, u16) {
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        // libpq matches socket connections as "localhost" in .pgpass.
        _ => "localhost".into(),
    };
    (host, c.get_ports().first().copied().unwrap_or(5432))
}

/// The server's message (and SQLSTATE), or the connection error.
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} (SQLSTATE {})", d.message(), d.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(x) = src {
                s.push_str(&format!(": {x}"));
                src = x.source();
            }
            s
        }
    }
}

/// What the keeper thread and the slots share.
pub struct Shared {
    store: Store,
    token: String,
    computer: String,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    /// Waits `d` or until stopped; true when stopped.
    fn sleep(&self, d: Duration) -> bool {
        let Ok(g) = self.stop.lock() else {
            return true;
        };
        match self.wake.wait_timeout_while(g, d, |s| !*s) {
            Ok((g, _)) => *g,
            Err(_) => true,
        }
    }

    /// Takes one of `max` slots of `class`, waiting up to `wait` (calling
    /// `waiting` while it waits); renewed with the computer's lease.
    pub fn acquire_slot(
        self: &Arc<Shared>,
        class: &str,
        max: u32,
        wait: Duration,
        mut waiting: impl FnMut(Duration),
    ) -> Result<Option<SiteSlot>> {
        let start = Instant::now();
        let mut pause = Backoff::new(ms(160), Duration::from_secs(5)).jittered();
        loop {
            // A store that fails now and then only delays the slot: the
            // keeper decides when the store is lost.
            let failed = match self.store.try_slot(self, class, max) {
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
}

impl Shared {
    /// The labels of the live slots of `class`, every host's.
    pub fn slot_labels(&self, class: &str) -> Result<Vec<String>> {
        let store = &self.store;
        let deadline = Instant::now() + op_timeout(store.lease);
        let rows = store.with_client(deadline, |c| {
            c.query(
                "SELECT label FROM reimage_slot
                 WHERE class = $1 AND expires > now() AND label <> '' ORDER BY label",
                &[&class],
            )
        })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// A run's lease on a computer, renewed by a keeper thread until dropped.
/// If renewing fails for half the lease, the keeper raises the store-lost
/// stop (see [`signal::STORE_LOST`]) so the run kills its child and ends.
pub struct Lease {
    shared: Arc<Shared>,
    keeper: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({})", self.shared.computer)
    }
}

impl Lease {
    fn start(store: Store, token: String, computer: String, taken: Instant) -> Lease {
        let shared = Arc::new(Shared {
            store,
            token,
            computer,
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let s = shared.clone();
        let keeper = std::thread::Builder::new()
            .name("reimage-lease".into())
            .spawn(move || keep(&s, taken))
            .ok();
        if keeper.is_none() {
            signal::stop_store_lost("cannot start the thread that renews the lease".into());
        }
        Lease { shared, keeper }
    }

    /// What slots of this run need.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

/// The keeper: renew every quarter lease; retry failures; give up (and
/// stop the run) when half the lease has passed since the last renewal
/// began. The lease in the store runs at least a full lease from then, so
/// the run stops while it still holds the computer.
fn keep(s: &Shared, taken: Instant) {
    let lease = s.store.lease;
    let every = lease / 4;
    let give_up = lease / 2;
    let mut last_ok = taken;
    loop {
        let next = every.saturating_sub(last_ok.elapsed());
        if s.sleep(next) {
            return;
        }
        let mut pause = Backoff::new(ms(80), Duration::from_secs(1)).jittered();
        loop {
            let began = Instant::now();
            let deadline = (last_ok + give_up).max(began + Duration::from_millis(1));
            match s.store.renew(&s.token, deadline) {
                Ok(true) => {
                    last_ok = began;
                    break;
                }
                Ok(false) => {
                    signal::stop_store_lost(format!(
                        "lost the lease on computer `{}` in the coordination store {}: another run took it over or an admin removed it; stopped this run",
                        s.computer, s.store.place
                    ));
                    return;
                }
                Err(e) => {
                    if last_ok.elapsed() >= give_up {
                        signal::stop_store_lost(format!(
                            "lost the coordination store: no lease renewal for {} ({e:#}); stopped this run so that it does not go on unprotected",
                            duration::fmt(last_ok.elapsed())
                        ));
                        return;
                    }
                    if s.sleep(pause.next_until(last_ok + give_up)) {
                        return;
                    }
                }
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut g) = self.shared.stop.lock() {
            *g = true;
        }
        self.shared.wake.notify_all();
        if let Some(k) = self.keeper.take() {
            let _ = k.join();
        }
        // Best effort: if the store is gone the lease expires by itself,
        // so a run that lost it does not wait for it again.
        if signal::caught() != Some(signal::STORE_LOST) {
            let _ = self.shared.store.release(&self.shared.token);
        }
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
        let store = &self.shared.store;
        let deadline = Instant::now() + op_timeout(store.lease);
        let index = self.index as i32;
        let _ = store.with_client(deadline, |c| {
            c.execute(
                "UPDATE reimage_slot SET label = $4 WHERE class = $1 AND slot = $2 AND token = $3",
                &[&self.class, &index, &self.shared.token, &text],
            )
        });
    }
}

impl Drop for SiteSlot {
    fn drop(&mut self) {
        if signal::caught() == Some(signal::STORE_LOST) {
            return;
        }
        let _ = self
            .shared
            .store
            .free_slot(&self.shared.token, &self.class, self.index);
    }
}

/// Creates the schema at the store `s` names; for `reimage setup-db`.
pub fn setup(s: &Settings) -> Result<(String, i32)> {
    let store = Store::new(s)?;
    let v = store.setup()?;
    Ok((store.place, v))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
