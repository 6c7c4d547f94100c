//! The connection pools of Redis and PostgreSQL, built and checked out the
//! same way.
//!
//! - Built without connecting: the service starts while a dependency is down
//!   and answers UNAVAILABLE until it is back.
//! - No ping on checkout: it would add a round trip to every request. A
//!   connection that failed is flagged by its manager and dropped instead,
//!   and one that is already known to be closed (the server ended it while
//!   it sat idle: a failover, a restart, an administrator terminating
//!   backends) is dropped at checkout and another taken, so no caller meets
//!   it ([`Liveness`]).
//! - Waiting for a pooled connection is this service's lock wait: every
//!   checkout is a span of its own and a histogram sample.
//! - Failing fast while a dependency is down. bb8 never hands a connect
//!   error to a caller waiting for a connection: the error goes to the pool's
//!   error sink and the caller waits out the whole pool timeout.
//!   [`ConnectFailures`] is that sink. After a connect failed, and until a
//!   checkout succeeds again, a checkout waits only [`WHILE_DOWN`]: enough for
//!   a fresh connect attempt (which the checkout itself triggers, so the pool
//!   heals as soon as the dependency is back), not the full timeout, so
//!   callers hear UNAVAILABLE in milliseconds.

use std::{
    fmt::Display,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bb8::{ManageConnection, Pool, PooledConnection, RunError};
use opentelemetry::metrics::Histogram;
use tracing::{Instrument, Span, info, warn};

/// A check of a pooled connection that costs no round trip.
pub trait Liveness {
    /// The connection is known to be closed (its peer ended it), so nothing
    /// sent on it could arrive.
    fn is_closed(&mut self) -> bool;
}

impl Liveness for diesel_async::AsyncPgConnection {
    fn is_closed(&mut self) -> bool {
        // A closed socket, or a transaction left broken: either way, unusable.
        diesel_async::pooled_connection::PoolableConnection::is_broken(self)
    }
}

/// How long a checkout waits while the dependency is down.
pub const WHILE_DOWN: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Most connections open at once.
    pub size: u32,
    /// Longest wait for a pooled connection.
    pub timeout: Duration,
}

/// How a pool's checkouts are recorded.
#[derive(Debug, Clone)]
pub struct WaitRecording {
    /// Makes the span a checkout waits in (its name is the pool's).
    pub span: fn() -> Span,
    pub histogram: Histogram<f64>,
}

/// Connections of one pool, now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolState {
    pub in_use: u32,
    pub idle: u32,
}

/// Both pools, now; no Redis pool when no Redis gate is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStates {
    pub redis: Option<PoolState>,
    pub database: PoolState,
}

/// Why a checkout gave no connection.
#[derive(Debug)]
pub enum CheckoutError<E> {
    /// None came free (or could be opened) within the pool timeout, or
    /// within [`WHILE_DOWN`] while the dependency is down.
    TimedOut,
    /// Opening a connection failed.
    Connect(E),
}

/// A bb8 pool with the checkout described in the module docs.
pub struct Pooled<M: ManageConnection> {
    pool: Pool<M>,
    timeout: Duration,
    failures: ConnectFailures,
    waits: WaitRecording,
}

impl<M> Pooled<M>
where
    M: ManageConnection,
    M::Connection: Liveness,
    M::Error: Display,
{
    /// Builds the pool without connecting; `dependency` names it in logs.
    pub fn new(manager: M, dependency: &'static str, settings: PoolSettings, waits: WaitRecording) -> Self {
        let failures = ConnectFailures::new(dependency);
        let pool = Pool::builder()
            .max_size(settings.size)
            .connection_timeout(settings.timeout)
            .test_on_check_out(false)
            // A refused connect is not retried in the background; the next
            // checkout tries again.
            .retry_connection(false)
            .error_sink(Box::new(failures.clone()))
            .build_unchecked(manager);
        Self { pool, timeout: settings.timeout, failures, waits }
    }

    /// A pooled connection, timed and traced.
    pub async fn get(&self) -> Result<PooledConnection<'_, M>, CheckoutError<M::Error>> {
        let started = Instant::now();
        let was_down = self.failures.is_down();
        let patience = if was_down { WHILE_DOWN.min(self.timeout) } else { self.timeout };
        let checkout = async {
            // Each connection found closed goes back broken (bb8 drops it),
            // so this ends with a live one, a fresh connect, or the timeout.
            loop {
                let mut conn = self.pool.get().await?;
                if !conn.is_closed() {
                    return Ok(conn);
                }
                info!(dependency = self.failures.dependency, "dropped a pooled connection its server had closed");
            }
        };
        let got = tokio::time::timeout(patience, checkout).instrument((self.waits.span)()).await;
        self.waits.histogram.record(started.elapsed().as_secs_f64(), &[]);
        match got {
            Ok(Ok(conn)) => {
                // Only a checkout made while the dependency was down shows it
                // is back: one that began before a connect failed says
                // nothing about the connects since.
                if was_down {
                    self.failures.connected();
                }
                Ok(conn)
            }
            Ok(Err(RunError::User(e))) => Err(CheckoutError::Connect(e)),
            Ok(Err(RunError::TimedOut)) | Err(_) => Err(CheckoutError::TimedOut),
        }
    }

    pub fn state(&self) -> PoolState {
        let state = self.pool.state();
        PoolState { in_use: state.connections - state.idle_connections, idle: state.idle_connections }
    }
}

/// The bb8 error sink of a pool: knows whether the dependency is down.
#[derive(Debug, Clone)]
struct ConnectFailures {
    dependency: &'static str,
    down: Arc<AtomicBool>,
}

impl ConnectFailures {
    fn new(dependency: &'static str) -> Self {
        Self { dependency, down: Arc::default() }
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// A checkout made while the dependency was down succeeded: it is up.
    fn connected(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            info!(dependency = self.dependency, "connected again");
        }
    }
}

impl<E: Display + Send + 'static> bb8::ErrorSink<E> for ConnectFailures {
    fn sink(&self, error: E) {
        if !self.down.swap(true, Ordering::Relaxed) {
            warn!(dependency = self.dependency, error = %error, "cannot connect; failing fast until it is back");
        }
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<E>> {
        Box::new(self.clone())
    }
}
