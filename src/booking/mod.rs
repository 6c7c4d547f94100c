//! The use cases: gate and store combined, with no gRPC in sight.
//!
//! A reservation request makes one Redis round trip to be refused and one
//! PostgreSQL transaction to win:
//!
//! ```text
//! acquire (Lua) ── refused ──▶ answer now: nothing taken, no database call
//!      │ admitted (hold)
//!      ▼
//! insert_reservation (one transaction) ── committed ──▶ finalize hold
//!                                      └─ refused/failed ─▶ release hold
//! ```
//!
//! - [`create`](Booking::create): deciding a request and committing a winner.
//! - `manage`: get, cancel, confirm and expire a reservation.
//! - `upkeep`: open and close slots, time zones, warm, read and reconcile
//!   counters, reap holds.
//! - `listing`: pages of reservations, a restaurant's day's availability.
//! - `waitlist`: joining, leaving and listing a slot's waitlist; offers are
//!   made by the database in the transactions that free seats.

mod create;
mod events;
mod listing;
mod manage;
mod upkeep;
mod waitlist;

use std::{future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span};

pub use self::{
    events::{EventHub, EventSettings, Watched},
    listing::{Availability, Page},
    manage::Cancellation,
    upkeep::{Closed, Correction, Reaped, Reconciliation, Warmed, ZoneSet},
    waitlist::EntryPage,
};
use crate::{
    clock::Clock,
    domain::{EntryId, FieldError, ReservationId, ReservationStatus, SlotKey, WaitlistState},
    gate::{Gate, GateError, Shut},
    metrics::Metrics,
    pools::PoolStates,
    store::{SeatLock, Store, StoreError},
};

/// Every way a use case can end other than success.
#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    #[error("invalid argument: {0}")]
    Invalid(#[from] FieldError),
    #[error("sold out ({remaining} seats left)")]
    SoldOut { remaining: i64 },
    #[error("the user already holds reservation {existing} in this slot")]
    Duplicate { existing: ReservationId },
    #[error("this request_id was used for a different request")]
    RequestIdReused,
    #[error("an earlier attempt with this request_id is still in flight")]
    RequestInProgress,
    #[error("no slot {0}")]
    SlotNotFound(SlotKey),
    /// The slot has started (by the gate's clock, or, dated before
    /// yesterday, in every time zone).
    #[error("slot {0} has already started")]
    SlotStarted(SlotKey),
    /// The slot's sale window opens at `opens_at`, `wait` from when the
    /// gate decided.
    #[error("slot {slot} takes reservations from {}", .opens_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))]
    SlotNotOpen { slot: SlotKey, opens_at: DateTime<Utc>, wait: Duration },
    #[error("slot {slot} stopped taking reservations at {}", .closes_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))]
    SlotClosed { slot: SlotKey, closes_at: DateTime<Utc> },
    #[error("no menu item {0} at this restaurant")]
    MenuItemNotFound(i64),
    #[error("no such reservation")]
    ReservationNotFound,
    #[error("the reservation is {}, not cancellable", .0.as_str())]
    NotCancellable(ReservationStatus),
    #[error("the reservation is {}, not awaiting payment", .0.as_str())]
    NotConfirmable(ReservationStatus),
    #[error("the deposit deadline has passed; the reservation expired and its seats went back")]
    DepositExpired,
    #[error("slot {slot} has {reserved} seats reserved, more than the new capacity")]
    CapacityBelowReserved { slot: SlotKey, reserved: i32 },
    #[error("too many requests from this user; retry after the hinted delay")]
    UserThrottled { retry_after: Duration },
    #[error("the deadline passed before the work could start")]
    DeadlineExceeded,
    /// The events after the watcher's cursor were pruned; the oldest kept
    /// is `oldest`.
    #[error("events before sequence {oldest} are no longer kept")]
    EventsCompacted { oldest: u64 },
    /// The watcher's client read too slowly: `missed` events went by.
    #[error("the watcher fell too far behind; resume after sequence {resume_after}")]
    WatcherTooSlow { resume_after: u64, missed: u64 },
    /// The server is shutting down; the caller resumes on another replica.
    #[error("the server is shutting down; resume on another replica")]
    ShuttingDown,
    /// The party fits in the seats public now: book them instead.
    #[error("{left} seats are free; book them instead of joining the waitlist")]
    SeatsAvailable { left: i64 },
    /// The user is in the slot's line already.
    #[error("the user is on this slot's waitlist already, as entry {entry}")]
    AlreadyWaiting { entry: EntryId },
    #[error("the slot's waitlist is full ({limit} entries)")]
    WaitlistFull { limit: i32 },
    #[error("this slot takes no waitlist")]
    WaitlistOff,
    #[error("no such waitlist entry")]
    WaitlistEntryNotFound,
    #[error("the waitlist entry is {}, no longer in line", .0.as_str())]
    WaitlistEntryEnded(WaitlistState),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The task doing the work panicked. A bug.
    #[error("task failed: {0}")]
    Crashed(String),
}

impl BookingError {
    /// The refusal of a booking or a join in `slot`, shut by its window.
    pub fn shut(slot: SlotKey, shut: Shut) -> Self {
        match shut {
            Shut::NotOpen { opens_at, wait } => Self::SlotNotOpen { slot, opens_at, wait },
            Shut::Closed { closes_at } => Self::SlotClosed { slot, closes_at },
            Shut::Started { .. } => Self::SlotStarted(slot),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a new reservation may stay unpaid.
    pub deposit_window: Duration,
    /// How long a retry waits for the first attempt of its request id.
    pub replay_wait: Duration,
    /// Longest the winner's transaction may take, pool wait included. The
    /// hold's lease is at least twice as long (the configuration is refused
    /// otherwise), so a reaper never ends the hold of a transaction that can
    /// still commit.
    pub commit_bound: Duration,
    /// A slot's waitlist limit unless it has its own (0: none).
    pub waitlist_limit: i32,
    /// How long an offer to a waitlist entry stays open unless the slot
    /// has its own window.
    pub offer_window: Duration,
}

/// Who decides a reservation request.
pub enum Decider {
    /// The product: the Redis gate admits or refuses each request, and the
    /// database commits the winners.
    Gate(Arc<Gate>),
    /// A database-only strategy slotgate is compared with: no Redis; every
    /// request is decided inside its transaction, under this lock.
    Database(SeatLock),
}

pub struct Booking {
    decider: Decider,
    store: Store,
    settings: Settings,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// Cold counters being loaded, one load per slot at a time.
    loads: create::CounterLoads,
    /// The tasks doing admitted work, waited for on shutdown.
    tasks: TaskTracker,
    /// This replica's reservation events broadcast.
    events: EventHub,
}

impl Booking {
    pub fn new(
        decider: Decider,
        store: Store,
        settings: Settings,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        events: EventSettings,
    ) -> Self {
        Self {
            decider,
            store,
            settings,
            metrics,
            clock,
            loads: Default::default(),
            tasks: TaskTracker::new(),
            events: EventHub::new(events),
        }
    }

    /// The Redis gate, unless a database-only strategy decides.
    fn gate(&self) -> Option<&Gate> {
        match &self.decider {
            Decider::Gate(gate) => Some(gate),
            Decider::Database(_) => None,
        }
    }

    pub fn pool_states(&self) -> PoolStates {
        PoolStates { redis: self.gate().map(Gate::pool_state), database: self.store.pool_state() }
    }

    /// On shutdown, after the server stopped taking calls: waits (up to
    /// `patience`) for the work already admitted to finish, so its holds
    /// are finalized or released now rather than left to the reaper.
    /// Returns whether everything finished.
    pub async fn drain(&self, patience: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(patience, self.tasks.wait()).await.is_ok()
    }

    /// Runs work that changes Redis and PostgreSQL in its own task, so it
    /// finishes even if the caller's future is dropped half-way (deadline
    /// passed, client gone). Cut between "seats taken" and "row committed",
    /// it would leave seats held with no transaction behind them, and a
    /// caller told DEADLINE_EXCEEDED for a row that did commit. The task is
    /// tracked, so shutdown waits for it.
    ///
    /// The task is spawned at once, before the returned future is first
    /// polled, so no await lies between the caller deciding to run the work
    /// and the work being under way.
    ///
    /// The task carries the caller's span, so its spans (gate, database)
    /// stay children of the call in the trace.
    fn run_to_completion<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, BookingError>> + Send + 'static,
    ) -> impl Future<Output = Result<T, BookingError>> {
        let task = self.tasks.spawn(work.instrument(Span::current()));
        async move { task.await.map_err(|e| BookingError::Crashed(e.to_string()))? }
    }
}
