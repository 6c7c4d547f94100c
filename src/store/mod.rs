//! The PostgreSQL side: embedded migrations, the connection pool and every
//! query. PostgreSQL is the final arbiter of seats: the winner's transaction
//! takes them with a conditional `UPDATE`, and the schema's `CHECK` and
//! partial `UNIQUE` index hold the invariants even if Redis is wrong.
//!
//! Queries are small async functions over `&mut AsyncPgConnection` (in
//! [`queries`]), so they can run inside any transaction; [`Store`] adds the
//! pool and the error mapping.

mod prepared;
pub mod queries;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bb8::{Pool, PooledConnection, RunError};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{
    AsyncConnection, AsyncMigrationHarness, AsyncPgConnection,
    pooled_connection::{AsyncDieselConnectionManager, PoolError},
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tracing::{Instrument, field::Empty, info_span};

use crate::{
    domain::{
        CancelReason, MenuItem, NewReservation, ReservationId, ReservationKind, ReservationStatus, SlotCapacity,
        SlotKey,
    },
    gate::SlotFigures,
    pools::ConnectFailures,
    stats::Counters,
};
pub use queries::{Cancelled, Confirmed, Inserted, Lapsed, OpenOutcome, Opened, Seats};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

type Manager = AsyncDieselConnectionManager<AsyncPgConnection>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL could not be reached in time (pool wait, connect, lost
    /// connection). Retryable.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database query failed: {0}")]
    Query(DieselError),
    #[error("migration failed: {0}")]
    Migration(String),
    /// A row the schema allows but the code does not expect.
    #[error("unexpected data: {0}")]
    Corrupt(String),
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match e {
            // The connection failed or closed (diesel-async reports I/O
            // errors as UnableToSendCommand).
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => Self::Unavailable(info.message().to_owned()),
            // The server ended the session: shutdown, crash recovery, admin
            // termination (SQLSTATE 57P01-57P03). diesel keeps no SQLSTATE
            // for these, only PostgreSQL's fixed messages.
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) if is_server_going_away(info.message()) => {
                Self::Unavailable(info.message().to_owned())
            }
            // A rollback that could not be sent: the connection is gone.
            DieselError::BrokenTransactionManager => Self::Unavailable("connection lost mid-transaction".into()),
            e => Self::Query(e),
        }
    }
}

fn is_server_going_away(message: &str) -> bool {
    ["terminating connection", "the database system is", "server closed the connection", "connection to server"]
        .iter()
        .any(|m| message.contains(m))
}

impl From<RunError<PoolError>> for StoreError {
    fn from(e: RunError<PoolError>) -> Self {
        match e {
            RunError::TimedOut => Self::Unavailable("timed out waiting for a database connection".into()),
            RunError::User(e) => Self::Unavailable(e.to_string()),
        }
    }
}

/// A reservation as stored, with its slot and items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub code: String,
    pub request_id: String,
    pub fingerprint: i64,
    pub slot: SlotKey,
    pub user_id: String,
    pub party_size: i32,
    pub kind: ReservationKind,
    pub status: ReservationStatus,
    pub created_at: DateTime<Utc>,
    pub deposit_deadline: Option<DateTime<Utc>>,
    pub cancel_reason: Option<CancelReason>,
    pub items: Vec<ReservedItem>,
}

impl Reservation {
    pub fn is_active(&self) -> bool {
        matches!(self.status, ReservationStatus::PendingDeposit | ReservationStatus::Confirmed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedItem {
    pub menu_id: i64,
    pub quantity: i32,
    pub unit_price: i64,
}

/// Applies pending migrations over a connection of its own. Replicas that
/// start together take turns on a session advisory lock, so only the first
/// one migrates; the lock goes with the connection.
pub async fn migrate(database_url: &str) -> Result<usize, StoreError> {
    let mut conn =
        AsyncPgConnection::establish(database_url).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
    queries::lock_migrations(&mut conn).await?;
    // The harness drives async diesel through `block_in_place`; a blocking
    // thread runs it on either runtime flavour.
    tokio::task::spawn_blocking(move || {
        let mut harness = AsyncMigrationHarness::new(conn);
        harness.run_pending_migrations(MIGRATIONS).map(|applied| applied.len())
    })
    .await
    .map_err(|e| StoreError::Migration(e.to_string()))?
    .map_err(|e| StoreError::Migration(e.to_string()))
}

/// The PostgreSQL pool and the operations the use cases need.
pub struct Store {
    pool: Pool<Manager>,
    pool_timeout: Duration,
    failures: ConnectFailures,
    counters: Arc<Counters>,
}

impl Store {
    /// Builds the pool without connecting (connections open on demand), so
    /// the service starts while PostgreSQL is down and recovers by itself.
    pub fn new(database_url: &str, pool_size: u32, pool_timeout: Duration, counters: Arc<Counters>) -> Self {
        let failures = ConnectFailures::new("database");
        let pool = Pool::builder()
            .max_size(pool_size)
            .connection_timeout(pool_timeout)
            .error_sink(Box::new(failures.clone()))
            // diesel-async marks a connection broken after a failed query;
            // a `SELECT 1` on every checkout would add a round trip to every
            // winner's transaction for nothing.
            .test_on_check_out(false)
            // A refused connect is not retried in the background; the next
            // checkout tries again (see `pools`).
            .retry_connection(false)
            .build_unchecked(Manager::new(database_url));
        Self { pool, pool_timeout, failures, counters }
    }

    /// Every database access goes through here, so `db_checkouts` counts
    /// each time a request reached PostgreSQL.
    ///
    /// The wait for a connection is this service's lock wait: it gets a span
    /// and a histogram of its own.
    async fn conn(&self) -> Result<PooledConnection<'_, Manager>, StoreError> {
        let started = Instant::now();
        let checkout = self.failures.checkout(self.pool_timeout, self.pool.get());
        let conn = checkout.instrument(info_span!("db.pool.wait")).await;
        self.counters.db_pool_wait.record(started.elapsed().as_secs_f64(), &[]);
        let conn =
            conn.ok_or_else(|| StoreError::Unavailable("no database connection within the pool timeout".into()))??;
        Counters::bump(&self.counters.db_checkouts);
        Ok(conn)
    }

    /// (connections in use, idle connections).
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections - state.idle_connections, state.idle_connections)
    }

    /// The winner's transaction; see [`queries::insert_reservation`].
    pub async fn insert_reservation(
        &self,
        new: &NewReservation,
        now: DateTime<Utc>,
        deposit_deadline: DateTime<Utc>,
        seats: Seats,
    ) -> Result<Inserted, StoreError> {
        let mut conn = self.conn().await?;
        Counters::bump(&self.counters.store_transactions);
        let span = info_span!("db.transaction", slot = %new.slot, party_size = new.party_size, outcome = Empty);
        let inserted =
            queries::insert_reservation(&mut conn, new, now, deposit_deadline, seats).instrument(span.clone()).await;
        span.record(
            "outcome",
            match &inserted {
                Ok(Inserted::Created(_)) => "COMMITTED",
                Ok(Inserted::SoldOut) => "SOLD_OUT",
                Ok(Inserted::SlotMissing) => "SLOT_MISSING",
                Ok(Inserted::MenuItemMissing(_)) => "MENU_ITEM_MISSING",
                Ok(Inserted::Existing(_)) => "EXISTING",
                Ok(Inserted::Reused) => "REUSED",
                Ok(Inserted::Duplicate(_)) => "DUPLICATE",
                Err(_) => "ERROR",
            },
        );
        inserted
    }

    pub async fn confirm_reservation(&self, id: ReservationId, now: DateTime<Utc>) -> Result<Confirmed, StoreError> {
        let mut conn = self.conn().await?;
        queries::confirm_reservation(&mut conn, id, now).await
    }

    pub async fn expire_due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Lapsed>, StoreError> {
        let mut conn = self.conn().await?;
        queries::expire_due(&mut conn, now, limit).await
    }

    pub async fn find_reservation(&self, id: ReservationId) -> Result<Option<Reservation>, StoreError> {
        let mut conn = self.conn().await?;
        queries::find_reservation(&mut conn, id).await
    }

    pub async fn existing_ids(
        &self,
        ids: &[ReservationId],
    ) -> Result<std::collections::HashSet<ReservationId>, StoreError> {
        let mut conn = self.conn().await?;
        queries::existing_ids(&mut conn, ids).await
    }

    pub async fn cancel_reservation(&self, id: ReservationId, reason: CancelReason) -> Result<Cancelled, StoreError> {
        let mut conn = self.conn().await?;
        queries::cancel_reservation(&mut conn, id, reason).await
    }

    pub async fn slot_figures(&self, slot: &SlotKey) -> Result<Option<SlotFigures>, StoreError> {
        let mut conn = self.conn().await?;
        queries::slot_figures(&mut conn, slot).await
    }

    pub async fn slots_from(&self, from: Option<NaiveDate>) -> Result<Vec<(SlotKey, SlotFigures)>, StoreError> {
        let mut conn = self.conn().await?;
        queries::slots_from(&mut conn, from).await
    }

    pub async fn slot_keys_from(&self, from: NaiveDate) -> Result<Vec<SlotKey>, StoreError> {
        let mut conn = self.conn().await?;
        queries::slot_keys_from(&mut conn, from).await
    }

    pub async fn open_slots(&self, slots: &[SlotCapacity]) -> Result<OpenOutcome, StoreError> {
        let mut conn = self.conn().await?;
        queries::open_slots(&mut conn, slots).await
    }

    pub async fn put_menu(&self, restaurant_id: i64, items: &[MenuItem]) -> Result<usize, StoreError> {
        let mut conn = self.conn().await?;
        queries::put_menu(&mut conn, restaurant_id, items).await
    }
}
