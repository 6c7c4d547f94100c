//! The PostgreSQL side: embedded migrations, the connection pool and every
//! query. PostgreSQL is the final arbiter of seats: the winner's transaction
//! takes them with a conditional `UPDATE`, and the schema's `CHECK` and
//! partial `UNIQUE` index hold the rules even if Redis is wrong.
//!
//! Queries are small async functions over `&mut AsyncPgConnection`, one
//! file per concern, so they can run inside any transaction; [`Store`] adds
//! the pool and the error mapping.
//!
//! - [`create`]: the winner's transaction.
//! - [`reservations`]: reading reservations.
//! - [`manage`]: cancel, confirm, expire (seats freed in the same
//!   transaction).
//! - [`opening`]: opening slots, changing capacities and windows;
//!   [`slots`]: the figures a counter is loaded from; [`closing`] and
//!   [`zones`]: closing them, restaurants' time zones.
//! - [`waitlist`]: waitlist entries; [`offers`]: the offers made to them,
//!   in the transactions that free seats.
//! - [`events`]: the reservation events' outbox, numbered after commit.
//! - [`menus`]: menus and the prices pre-orders are charged.
//! - [`strategies`]: the database-only strategies slotgate is compared with.
//! - `prepared`: statements prepared once per connection.

pub mod closing;
pub mod create;
pub mod deployment;
pub mod events;
pub mod manage;
pub mod menus;
pub mod offers;
pub mod opening;
mod prepared;
pub mod reservations;
pub mod slots;
pub mod strategies;
pub mod waitlist;
pub mod zones;

use std::{collections::HashMap, sync::Arc, time::Duration};

use bb8::PooledConnection;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::{
    result::{DatabaseErrorKind, Error as DieselError},
    sql_types::BigInt,
};
use diesel_async::{
    AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    pooled_connection::{AsyncDieselConnectionManager, ManagerConfig},
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tracing::{Instrument, field::Empty, info_span};

use self::prepared::prepared;
pub use self::{
    closing::CloseOutcome,
    create::{Inserted, Timing},
    deployment::{Bound, Moved},
    manage::{Cancelled, Confirmed, Freed, Lapsed},
    offers::OfferTerms,
    opening::{OpenOutcome, Opened},
    reservations::{Committed, Reservation, ReservedItem},
    slots::{DaySlot, Reshaped},
    strategies::SeatLock,
    waitlist::{Entry, Joined, Left},
    zones::ZoneOutcome,
};
use crate::{
    clock::Offset,
    domain::{
        CancelReason, EntryId, EventFilter, Join, ListQuery, MenuUpload, NewReservation, ReservationId, SlotCapacity,
        SlotFigures, SlotKey, WaitlistQuery,
    },
    links::{LinkError, PgLink},
    metrics::Metrics,
    pools::{CheckoutError, PoolSettings, PoolState, Pooled, WaitRecording},
};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Session advisory lock taken while migrating ("slotgate" in ASCII).
const MIGRATION_LOCK: i64 = 0x736c_6f74_6761_7465;

/// The statuses that hold seats, as SQL.
const ACTIVE: &str = "('PENDING_DEPOSIT', 'CONFIRMED')";

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
    /// The database belongs to another Redis namespace (see [`deployment`]).
    #[error("{0}")]
    Mismatch(String),
    /// The database refused the link or could not be verified (see
    /// [`LinkError`]): a setting to fix.
    #[error(transparent)]
    Link(LinkError),
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
            // Two transactions waited on each other (PostgreSQL ended one),
            // or a session limit ran out (statement, lock wait, idle in a
            // transaction): nothing was written; retryable. diesel keeps no
            // SQLSTATE for these either.
            DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, info) => {
                Self::Unavailable(info.message().to_owned())
            }
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) if is_retryable(info.message()) => {
                Self::Unavailable(info.message().to_owned())
            }
            e => Self::Query(e),
        }
    }
}

fn is_retryable(message: &str) -> bool {
    [
        "deadlock detected",
        "canceling statement due to statement timeout",
        "canceling statement due to lock timeout",
        "idle-in-transaction timeout",
    ]
    .iter()
    .any(|m| message.contains(m))
}

fn is_server_going_away(message: &str) -> bool {
    ["terminating connection", "the database system is", "server closed the connection", "connection to server"]
        .iter()
        .any(|m| message.contains(m))
}

impl From<LinkError> for StoreError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Unreachable(why) => Self::Unavailable(why),
            refused => Self::Link(refused),
        }
    }
}

/// Applies pending migrations over a connection of its own. Replicas that
/// start together take turns on a session advisory lock, so only the first
/// one migrates; the lock goes with the connection.
pub async fn migrate(link: &PgLink) -> Result<usize, StoreError> {
    let mut conn = link.connect().await?;
    prepared("SELECT pg_advisory_lock($1)").bind::<BigInt, _>(MIGRATION_LOCK).execute(&mut conn).await?;
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

/// Binds the database to the Redis namespace `namespace` over a connection
/// of its own; see [`deployment::bind`].
pub async fn bind_deployment(link: &PgLink, namespace: &str) -> Result<Bound, StoreError> {
    deployment::bind(&mut link.connect().await?, namespace).await
}

/// Moves the database's deployment to another namespace; see
/// [`deployment::move_namespace`].
pub async fn move_namespace(link: &PgLink, from: &str, to: &str) -> Result<Moved, StoreError> {
    deployment::move_namespace(&mut link.connect().await?, from, to).await
}

/// Whether the database's time zone rules know `zone`, asked over a
/// connection of its own (the pool's connections set the default zone when
/// they open, so with an unknown one none would open).
pub async fn zone_known(link: &PgLink, zone: &str) -> Result<bool, StoreError> {
    let mut conn = link.connect().await?;
    zones::zone_exists(&mut conn, zone).await
}

/// A connection of its own (not the pool's), with the pool's session
/// limits (see [`session_setup`]), for background work that polls often.
pub async fn connect_bounded(
    link: &PgLink,
    transaction: Duration,
    default_zone: &str,
) -> Result<AsyncPgConnection, StoreError> {
    let mut conn = link.connect().await?;
    conn.batch_execute(&session_setup(transaction, default_zone)).await?;
    Ok(conn)
}

/// The PostgreSQL pool and the operations the use cases need.
pub struct Store {
    pool: Pooled<Manager>,
    metrics: Arc<Metrics>,
}

/// The session settings every pooled connection sets when it opens: limits,
/// so that no statement, lock wait or open transaction of slotgate's
/// outlasts `transaction` on the server, whatever happens to the client
/// (PostgreSQL itself ends it and rolls it back); and the default time zone,
/// which slots of restaurants without a zone of their own start in (see
/// [`slots`]).
fn session_setup(transaction: Duration, default_zone: &str) -> String {
    let ms = transaction.as_millis().max(1);
    let zone = default_zone.replace('\'', "''");
    format!(
        "SET statement_timeout = {ms}; SET lock_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms}; \
         SET TimeZone = '{zone}'"
    )
}

impl Store {
    /// Builds the pool without connecting (connections open on demand), so
    /// the service starts while PostgreSQL is down and recovers by itself.
    /// (diesel-async marks a connection broken after a failed query, so the
    /// pool never hands out one it knows is dead.) Each connection's session
    /// is bounded by `transaction` (see [`session_setup`]).
    pub fn new(
        link: Arc<PgLink>,
        pool: PoolSettings,
        transaction: Duration,
        default_zone: &str,
        metrics: Arc<Metrics>,
    ) -> Self {
        let waits = WaitRecording { span: || info_span!("db.pool.wait"), histogram: metrics.db_pool_wait.clone() };
        let setup = session_setup(transaction, default_zone);
        let mut config = ManagerConfig::default();
        // Connections open over the link (its URL, read again on reload, and
        // its TLS); the manager's own URL is unused.
        config.custom_setup = Box::new(move |_| {
            let (link, setup) = (Arc::clone(&link), setup.clone());
            Box::pin(async move {
                let mut conn =
                    link.connect().await.map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                conn.batch_execute(&setup).await.map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            })
        });
        let manager = Manager::new_with_config("postgres://", config);
        Self { pool: Pooled::new(manager, "database", pool, waits), metrics }
    }

    /// Every database access goes through here, so `db_checkouts` counts
    /// each time a request reached PostgreSQL.
    async fn conn(&self) -> Result<PooledConnection<'_, Manager>, StoreError> {
        let conn = self.pool.get().await.map_err(|e| match e {
            CheckoutError::TimedOut => StoreError::Unavailable("no database connection within the pool timeout".into()),
            CheckoutError::Connect(e) => StoreError::Unavailable(e.to_string()),
        })?;
        Metrics::bump(&self.metrics.db_checkouts);
        Ok(conn)
    }

    pub fn pool_state(&self) -> PoolState {
        self.pool.state()
    }

    /// The winner's transaction; see [`create::insert_reservation`].
    pub async fn insert_reservation(
        &self,
        new: &NewReservation,
        timing: Timing,
        lock: Option<SeatLock>,
        attempt: Option<u64>,
    ) -> Result<Inserted, StoreError> {
        let mut conn = self.conn().await?;
        Metrics::bump(&self.metrics.store_transactions);
        let span = info_span!("db.transaction", slot = %new.slot, party_size = new.party_size, outcome = Empty);
        let inserted = create::insert_reservation(&mut conn, new, timing, lock, attempt).instrument(span.clone()).await;
        span.record("outcome", inserted.as_ref().map_or("ERROR", Inserted::name));
        inserted
    }

    pub async fn confirm_reservation(
        &self,
        id: ReservationId,
        terms: OfferTerms,
        caller: &str,
    ) -> Result<Confirmed, StoreError> {
        manage::confirm_reservation(&mut *self.conn().await?, id, terms, caller).await
    }

    pub async fn cancel_reservation(
        &self,
        id: ReservationId,
        reason: CancelReason,
        caller: &str,
        terms: OfferTerms,
    ) -> Result<Cancelled, StoreError> {
        manage::cancel_reservation(&mut *self.conn().await?, id, reason, caller, terms).await
    }

    pub async fn expire_due(&self, terms: OfferTerms, limit: i64) -> Result<Vec<Lapsed>, StoreError> {
        manage::expire_due(&mut *self.conn().await?, terms, limit).await
    }

    pub async fn find_reservation(&self, id: ReservationId) -> Result<Option<Reservation>, StoreError> {
        reservations::find_reservation(&mut *self.conn().await?, id).await
    }

    pub async fn find_by_code(&self, code: &str) -> Result<Option<Reservation>, StoreError> {
        reservations::find_by_code(&mut *self.conn().await?, code).await
    }

    pub async fn committed(&self, ids: &[ReservationId]) -> Result<HashMap<ReservationId, Committed>, StoreError> {
        reservations::committed(&mut *self.conn().await?, ids).await
    }

    pub async fn slot_figures(&self, slot: &SlotKey) -> Result<Option<SlotFigures>, StoreError> {
        slots::slot_figures(&mut *self.conn().await?, slot).await
    }

    pub async fn slots_from(&self, from: Option<NaiveDate>) -> Result<Vec<(SlotKey, SlotFigures)>, StoreError> {
        slots::slots_from(&mut *self.conn().await?, from).await
    }

    pub async fn slot_keys_from(&self, from: NaiveDate) -> Result<Vec<SlotKey>, StoreError> {
        slots::slot_keys_from(&mut *self.conn().await?, from).await
    }

    pub async fn open_slots(&self, slots: &[SlotCapacity], terms: OfferTerms) -> Result<OpenOutcome, StoreError> {
        opening::open_slots(&mut *self.conn().await?, slots, terms).await
    }

    /// Persists a join the gate admitted; see [`waitlist::insert_entry`].
    pub async fn insert_entry(
        &self,
        join: &Join,
        position: i32,
        default_limit: i32,
        offset: Offset,
    ) -> Result<Joined, StoreError> {
        let mut conn = self.conn().await?;
        Metrics::bump(&self.metrics.store_transactions);
        waitlist::insert_entry(&mut conn, join, position, default_limit, offset).await
    }

    pub async fn find_entry(&self, id: EntryId) -> Result<Option<Entry>, StoreError> {
        waitlist::find_entry(&mut *self.conn().await?, id).await
    }

    /// Cancels a waitlist offer's reservation while it is still pending;
    /// see [`manage::give_up_offer`].
    pub async fn give_up_offer(
        &self,
        id: ReservationId,
        caller: &str,
        terms: OfferTerms,
    ) -> Result<Cancelled, StoreError> {
        manage::give_up_offer(&mut *self.conn().await?, id, caller, terms).await
    }

    /// An offer round in `slot`; see [`offers::offer_round`].
    pub async fn offer_round(&self, slot: &SlotKey, seats: i32, terms: OfferTerms) -> Result<bool, StoreError> {
        offers::offer_round(&mut *self.conn().await?, slot, seats, terms).await
    }

    /// Those of `slots` whose waitlist has a say; see [`offers::with_waitlist`].
    pub async fn with_waitlist(&self, slots: &[SlotKey]) -> Result<Vec<SlotKey>, StoreError> {
        offers::with_waitlist(&mut *self.conn().await?, slots).await
    }

    pub async fn leave_entry(&self, id: EntryId, caller: &str, terms: OfferTerms) -> Result<Left, StoreError> {
        waitlist::leave_entry(&mut *self.conn().await?, id, caller, terms).await
    }

    pub async fn list_entries(&self, query: &WaitlistQuery) -> Result<Vec<Entry>, StoreError> {
        waitlist::list_entries(&mut *self.conn().await?, query).await
    }

    pub async fn close_slots(&self, slots: &[SlotKey], now: DateTime<Utc>) -> Result<CloseOutcome, StoreError> {
        closing::close_slots(&mut *self.conn().await?, slots, now).await
    }

    pub async fn put_restaurant(
        &self,
        restaurant_id: i64,
        time_zone: Option<&str>,
        from: NaiveDate,
    ) -> Result<ZoneOutcome, StoreError> {
        zones::put_restaurant(&mut *self.conn().await?, restaurant_id, time_zone, from).await
    }

    pub async fn day_slots(&self, restaurant_id: i64, date: NaiveDate) -> Result<Vec<DaySlot>, StoreError> {
        slots::day_slots(&mut *self.conn().await?, restaurant_id, date).await
    }

    pub async fn event_bounds(&self) -> Result<events::LogBounds, StoreError> {
        events::bounds(&mut *self.conn().await?).await
    }

    pub async fn events_after(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: i64,
    ) -> Result<events::EventPage, StoreError> {
        events::events_after(&mut *self.conn().await?, after, filter, limit).await
    }

    pub async fn list_reservations(&self, query: &ListQuery) -> Result<Vec<Reservation>, StoreError> {
        reservations::list(&mut *self.conn().await?, query).await
    }

    pub async fn put_menu(&self, menu: &MenuUpload) -> Result<usize, StoreError> {
        menus::put_menu(&mut *self.conn().await?, menu).await
    }
}
