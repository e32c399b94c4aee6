//! One operation on the coordination store, bounded by the clock.
//!
//! postgres' own timeouts do not bound an operation: `connect_timeout`
//! covers the TCP connect, `tcp_user_timeout` and keepalives notice only a
//! peer that stops acknowledging, and `statement_timeout` is the server's.
//! A server that accepts a connection and never answers (a stopped
//! postmaster, a PgBouncer whose server is gone, a paused database VM)
//! would hold the login or a query forever. Here every try (connect, TLS,
//! login and the statements, as one future) runs on a small tokio runtime
//! under a deadline of our own clock: at the deadline the future is
//! dropped, which closes the socket, and the try has failed. A try also
//! ends within [`CANCEL_LOOK`] when its caller cancels it (a signal, or a
//! lease that is being given back).

use anyhow::{Context, Result, anyhow};
use postgres_openssl::MakeTlsConnector;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, NoTls, Socket};

use super::clock;
use crate::backoff::Backoff;
use crate::duration;

/// How often a running try looks whether it was cancelled: soon enough
/// for SIGTERM, rare enough that a thousand runs waiting on a slow server
/// do not slow it down further.
const CANCEL_LOOK: Duration = Duration::from_millis(100);
/// The shortest try the end of an operation's time leaves.
const MIN_TRY: Duration = Duration::from_millis(250);
/// How long a finished try waits for its connection to say goodbye.
const CLOSE_GRACE: Duration = Duration::from_millis(50);

/// How to reach the store.
#[derive(Clone)]
pub struct Db {
    config: Config,
    tls: Option<MakeTlsConnector>,
    /// Where it is, for messages (never the password).
    pub place: String,
    /// Why the password file was not used, said when the login fails.
    pub password_note: Option<String>,
}

/// How long an operation may take: each try at most `per_try`; tries that
/// failed in a way worth another are made again until `until`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// One try: connect, TLS, login and the statements together.
    pub per_try: Duration,
    /// No try starts after this.
    pub until: Instant,
}

impl Limits {
    /// Tries of `per_try` each for `total` from now.
    pub fn new(per_try: Duration, total: Duration) -> Limits {
        Limits {
            per_try,
            until: Instant::now() + total,
        }
    }
}

/// The operation was cancelled by its caller.
#[derive(Debug)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled")
    }
}

impl std::error::Error for Cancelled {}

/// Why one try failed.
enum TryError {
    Pg(tokio_postgres::Error),
    /// No answer within this long.
    Timeout(Duration),
}

impl TryError {
    /// Trying again soon may help: the server is full or starting, the
    /// connection failed, or nothing answered in time.
    fn transient(&self) -> bool {
        match self {
            TryError::Timeout(_) => true,
            TryError::Pg(e) => transient(e),
        }
    }
}

/// True when trying again soon may help: the server is full or starting,
/// or the connection itself failed.
fn transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(c) => {
            *c == SqlState::TOO_MANY_CONNECTIONS
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::ADMIN_SHUTDOWN
        }
        // Not from the server: network errors are worth another try; TLS,
        // authentication and configuration errors are not.
        None => {
            let msg = e.to_string();
            e.is_closed()
                || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                || msg.starts_with("timeout")
                || msg.starts_with("error connecting to server")
        }
    }
}

/// The server's message (and SQLSTATE), or the connection error.
fn pg_message(e: &tokio_postgres::Error) -> String {
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

/// Runs `f` until `cancel` says stop: None then.
async fn unless_cancelled<F: Future>(cancel: &dyn Fn() -> bool, f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut look = pin!(async {
        loop {
            if cancel() {
                return;
            }
            tokio::time::sleep(CANCEL_LOOK).await;
        }
    });
    poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if look.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// One session: connect with `tls`, run `op` while driving the
/// connection, then close it.
async fn session<T, M>(
    config: &Config,
    tls: M,
    op: &mut impl AsyncFnMut(&mut Client) -> Result<T, tokio_postgres::Error>,
) -> Result<T, tokio_postgres::Error>
where
    M: MakeTlsConnect<Socket>,
{
    let (mut client, conn) = config.connect(tls).await?;
    let mut conn = pin!(conn);
    let mut conn_done = false;
    let r = {
        let mut work = pin!(op(&mut client));
        poll_fn(|cx| {
            if let Poll::Ready(v) = work.as_mut().poll(cx) {
                return Poll::Ready(v);
            }
            if !conn_done && let Poll::Ready(r) = conn.as_mut().poll(cx) {
                conn_done = true;
                // The connection failed: the work gets that error too, but
                // it may be waiting for an answer that will not come.
                if let Err(e) = r {
                    return Poll::Ready(Err(e));
                }
            }
            Poll::Pending
        })
        .await
    };
    // Dropping the client makes the connection send Terminate and end.
    drop(client);
    if !conn_done {
        let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
    }
    r
}

impl Db {
    /// The store at `config` (TLS with `tls`).
    pub fn new(config: Config, tls: Option<MakeTlsConnector>, place: String) -> Db {
        Db {
            config,
            tls,
            place,
            password_note: None,
        }
    }

    /// Runs `op` on a fresh connection, each try bounded by `limits`,
    /// retrying failures worth another try. Returns its value and when
    /// (on [`clock::now`]) the try that gave it began. Fails with
    /// [`Cancelled`] as soon as `cancel` says so.
    pub fn run<T>(
        &self,
        limits: Limits,
        cancel: &dyn Fn() -> bool,
        mut op: impl AsyncFnMut(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<(T, Duration)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .with_context(|| {
                format!("coordination store {}: cannot start its client", self.place)
            })?;
        let r = rt.block_on(self.tries(limits, cancel, &mut op));
        // A name lookup still running on the blocking pool is left behind.
        rt.shutdown_background();
        r
    }

    async fn tries<T>(
        &self,
        limits: Limits,
        cancel: &dyn Fn() -> bool,
        op: &mut impl AsyncFnMut(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<(T, Duration)> {
        let mut pause = Backoff::new(Duration::from_millis(20), Duration::from_secs(1)).jittered();
        let mut tries = 0;
        loop {
            tries += 1;
            let began = clock::now();
            let start = Instant::now();
            // Every operation makes one try, also one that begins late,
            // and no try is cut shorter than MIN_TRY by the total.
            let shortest = start + limits.per_try.min(MIN_TRY);
            let end = (start + limits.per_try).min(limits.until.max(shortest));
            let one = tokio::time::timeout_at(end.into(), self.one_try(op));
            let e = match unless_cancelled(cancel, one).await {
                None => return Err(anyhow!(Cancelled)),
                Some(Ok(Ok(v))) => return Ok((v, began)),
                Some(Ok(Err(e))) => TryError::Pg(e),
                Some(Err(_)) => TryError::Timeout(end - start),
            };
            if !e.transient() || Instant::now() >= limits.until {
                return Err(self.failure(&e, tries));
            }
            let p = pause.next_until(limits.until);
            if unless_cancelled(cancel, tokio::time::sleep(p))
                .await
                .is_none()
            {
                return Err(anyhow!(Cancelled));
            }
        }
    }

    async fn one_try<T>(
        &self,
        op: &mut impl AsyncFnMut(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, tokio_postgres::Error> {
        match &self.tls {
            Some(t) => session(&self.config, t.clone(), op).await,
            None => session(&self.config, NoTls, op).await,
        }
    }

    /// The error a failed operation ends with.
    fn failure(&self, e: &TryError, tries: u32) -> anyhow::Error {
        let mut msg = match e {
            TryError::Timeout(d) => format!(
                "no answer within {} (connecting, logging in or running a statement)",
                duration::fmt(*d)
            ),
            TryError::Pg(e) => pg_message(e),
        };
        if tries > 1 {
            msg.push_str(&format!(" ({tries} tries)"));
        }
        if let (TryError::Pg(_), Some(note)) = (e, &self.password_note)
            && msg.contains("password")
        {
            msg.push_str(&format!("; {note}"));
        }
        anyhow!("coordination store {}: {msg}", self.place)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn db_at(port: u16) -> Db {
        let mut c: Config = format!("postgresql://reimage@127.0.0.1:{port}/reimage")
            .parse()
            .expect("url");
        c.password("x");
        Db::new(c, None, format!("127.0.0.1:{port}"))
    }

    /// A server that accepts and never answers: each try ends at its
    /// bound, and the operation when its time is up.
    #[test]
    fn a_silent_server_costs_the_limits_not_forever() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        // Accepted connections are kept open and never read or written.
        let keep = std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().take(50) {
                held.push(s);
            }
        });
        let db = db_at(port);
        let t = Instant::now();
        let r = db.run(
            Limits::new(Duration::from_millis(200), Duration::from_millis(700)),
            &|| false,
            async |c| c.simple_query("SELECT 1").await.map(|_| ()),
        );
        let took = t.elapsed();
        let e = format!("{:#}", r.expect_err("no answer"));
        assert!(e.contains("no answer within"), "{e}");
        assert!(e.contains("tries"), "{e}");
        // Bounded: the last try starts before 700 ms and lasts 200 ms.
        assert!(took < Duration::from_secs(30), "{took:?}");
        drop(keep);
    }

    #[test]
    fn a_cancelled_operation_ends_at_once() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let db = db_at(port);
        let r = db.run(
            Limits::new(Duration::from_secs(600), Duration::from_secs(600)),
            &|| true,
            async |c| c.simple_query("SELECT 1").await.map(|_| ()),
        );
        let e = r.expect_err("cancelled");
        assert!(e.is::<Cancelled>(), "{e:#}");
        drop(l);
    }
}
