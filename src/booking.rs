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

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

use chrono::{Days, NaiveDate, Utc};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, warn};

use crate::{
    clock::Clock,
    domain::{
        CancelReason, FieldError, MenuItem, NewReservation, ReservationId, ReservationStatus, SlotCapacity, SlotKey,
    },
    gate::{Acquire, Gate, GateError, Reconciled, Release, SlotFigures, attempt_nonce},
    stats::Counters,
    store::{Cancelled, Confirmed, Inserted, OpenOutcome, Opened, Reservation, Seats, Store, StoreError},
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
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The task doing the work panicked. A bug.
    #[error("task failed: {0}")]
    Crashed(String),
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a new reservation may stay unpaid.
    pub deposit_window: Duration,
    /// How long a retry waits for the first attempt of its request id.
    pub replay_wait: Duration,
    /// Lease of a hold. The winner's transaction must finish well within
    /// it (see `commit`), so a reaper never ends the hold of a transaction
    /// that can still commit.
    pub hold_lease: Duration,
    /// How seats are taken: through the Redis gate (the product), or by one
    /// of the database-only strategies it is compared with.
    pub seats: Seats,
}

/// What a reaper pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Expired holds whose reservation had committed: seats stay taken.
    pub finalized: u32,
    /// Expired holds with no reservation: seats went back.
    pub released: u32,
}

/// How often a request re-loads a counter that vanished right after it was
/// loaded (Redis flushed or evicting under memory pressure) before giving up.
const COLD_RETRIES: usize = 3;

pub struct Booking {
    gate: Gate,
    store: Store,
    settings: Settings,
    counters: Arc<Counters>,
    clock: Arc<dyn Clock>,
    /// One lock per slot whose counter is being loaded: the single flight.
    loading: Mutex<HashMap<SlotKey, Arc<tokio::sync::Mutex<()>>>>,
    /// The tasks doing admitted work, waited for on shutdown.
    tasks: TaskTracker,
}

/// One counter a reconcile pass rewrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Correction {
    pub slot: SlotKey,
    pub left_before: i64,
    pub left_after: i64,
    pub capacity: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Warm slots looked at.
    pub checked: u32,
    /// Slots skipped because a hold was in flight or they changed meanwhile.
    pub busy: u32,
    pub corrections: Vec<Correction>,
    pub took: Duration,
}

/// Slots probed per Redis round trip during a reconcile pass.
const PROBE_BATCH: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warmed {
    pub warmed: u32,
    pub already_warm: u32,
    pub took: Duration,
}

impl Booking {
    pub fn new(gate: Gate, store: Store, settings: Settings, counters: Arc<Counters>, clock: Arc<dyn Clock>) -> Self {
        Self { gate, store, settings, counters, clock, loading: Mutex::default(), tasks: TaskTracker::new() }
    }

    /// (Redis pool, PostgreSQL pool) as (connections in use, idle).
    pub fn pool_states(&self) -> ((u32, u32), (u32, u32)) {
        (self.gate.pool_state(), self.store.pool_state())
    }

    /// Books seats for `new`, or says why not.
    pub async fn create(self: &Arc<Self>, new: NewReservation) -> Result<Reservation, BookingError> {
        let this = Arc::clone(self);
        self.run_to_completion(async move { this.decide(new).await }).await
    }

    /// On shutdown, after the server stopped taking calls: waits (up to
    /// `patience`) for the work already admitted to finish, so its holds
    /// are finalized or released now rather than left to the reaper.
    /// Returns whether everything finished.
    pub async fn drain(&self, patience: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(patience, self.tasks.wait()).await.is_ok()
    }

    async fn decide(&self, new: NewReservation) -> Result<Reservation, BookingError> {
        if self.settings.seats != Seats::Conditional {
            return self.decide_in_database(&new, self.settings.seats).await;
        }
        let id = new.reservation_id();
        let fingerprint = new.fingerprint();
        let nonce = attempt_nonce();
        let give_up = Instant::now() + self.settings.replay_wait;
        let mut backoff = Duration::from_millis(2);
        let mut loads = 0;
        loop {
            let decision =
                match self.gate.acquire(&new.slot, id, &new.user_id, new.party_size, fingerprint, nonce).await {
                    Ok(decision) => decision,
                    Err(e) => {
                        // The reply was lost (timeout, connection cut): the script
                        // may have run and taken seats for this attempt. Undo that
                        // if so; the nonce keeps a concurrent retry's hold safe.
                        if let Err(undo) = self.gate.release(&new.slot, id, &new.user_id, nonce, Release::Void).await {
                            warn!(error = %undo, reservation = %id, "could not undo an acquire whose reply was lost");
                        }
                        return Err(e.into());
                    }
                };
            if !matches!(decision, Acquire::Admitted { .. } | Acquire::Cold | Acquire::Replay { .. }) {
                Counters::bump(&self.counters.gate_refused);
            }
            match decision {
                Acquire::Admitted { .. } => {
                    Counters::bump(&self.counters.gate_admitted);
                    self.counters.holds_in_flight.fetch_add(1, Ordering::Relaxed);
                    let committed = self.commit(&new, id, nonce).await;
                    self.counters.holds_in_flight.fetch_sub(1, Ordering::Relaxed);
                    return committed;
                }
                Acquire::Cold if loads < COLD_RETRIES => {
                    loads += 1;
                    self.load_counter(new.slot).await?;
                }
                Acquire::Cold => {
                    return Err(GateError::Unavailable("the slot's counter keeps disappearing".into()).into());
                }
                Acquire::SoldOut { remaining } => return Err(BookingError::SoldOut { remaining }),
                Acquire::Duplicate { existing } => return Err(BookingError::Duplicate { existing }),
                Acquire::Reused => return Err(BookingError::RequestIdReused),
                Acquire::Replay { held: false } => {
                    // Admitted before and no longer held: it committed.
                    return match self.store.find_reservation(id).await? {
                        Some(r) if r.fingerprint == fingerprint => Ok(r),
                        Some(_) => Err(BookingError::RequestIdReused),
                        None => {
                            Err(StoreError::Corrupt(format!("redis knows reservation {id}, the database does not"))
                                .into())
                        }
                    };
                }
                Acquire::Replay { held: true } => {
                    // The first attempt is between admission and commit. Its
                    // outcome lands within one transaction: ask again shortly.
                    // (If it fails, its release forgets the id and the next
                    // acquire treats this retry as a fresh attempt.)
                    if Instant::now() + backoff > give_up {
                        return Err(BookingError::RequestInProgress);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    /// The admitted path: one transaction, then end the hold either way.
    async fn commit(&self, new: &NewReservation, id: ReservationId, nonce: u64) -> Result<Reservation, BookingError> {
        let now = self.clock.now();
        // Bounded by half the lease: a transaction still running when the
        // reaper looks at its hold could commit after the reaper gave the
        // seats back. (If COMMIT was already sent, the outcome is unknown;
        // the database still cannot overbook, and reconciliation mends the
        // counter.)
        let bound = self.settings.hold_lease / 2;
        let inserted = match tokio::time::timeout(
            bound,
            self.store.insert_reservation(new, now, now + self.settings.deposit_window, Seats::Conditional),
        )
        .await
        {
            Ok(inserted) => inserted,
            Err(_) => Err(StoreError::Unavailable(format!("no commit within {bound:?}"))),
        };
        if let Ok(Inserted::Created(reservation)) = inserted {
            if let Err(e) = self.gate.finalize(&new.slot, id, nonce).await {
                // The seats stay taken either way; only the hold record lingers.
                warn!(error = %e, reservation = %id, "could not end the hold of a committed reservation");
            }
            return Ok(reservation);
        }
        // Not committed: the hold's seats go back. When the id names an
        // active reservation that exists (a replay after Redis lost its
        // state), its user and fingerprint entries stay: they are true.
        let keep = matches!(&inserted, Ok(Inserted::Existing(r)) if r.is_active());
        let how = if keep { Release::KeepEntries } else { Release::Forget };
        if let Err(e) = self.gate.release(&new.slot, id, &new.user_id, nonce, how).await {
            warn!(error = %e, reservation = %id, "could not release a hold; the counter stays low until reconciled");
        }
        settle(new, inserted?)
    }

    /// The comparison strategies: no Redis, every request decided inside a
    /// PostgreSQL transaction under a lock (see `Seats`).
    async fn decide_in_database(&self, new: &NewReservation, seats: Seats) -> Result<Reservation, BookingError> {
        let now = self.clock.now();
        let inserted = self.store.insert_reservation(new, now, now + self.settings.deposit_window, seats).await?;
        settle(new, inserted)
    }

    /// Loads a cold counter from the database, once per slot per process
    /// however many requests meet it at once: the first loads, the others
    /// wait for it and then find the counter warm. (Several processes may
    /// each load once; `warm` keeps the first counter written.)
    async fn load_counter(&self, slot: SlotKey) -> Result<(), BookingError> {
        let lock = {
            let mut loading = self.loading.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(loading.entry(slot).or_default())
        };
        let result = match lock.try_lock() {
            Ok(_leader) => self.load_counter_now(slot).await,
            Err(_) => {
                let _turn = lock.lock().await;
                match self.gate.remaining(&slot).await {
                    Ok(Some(_)) => Ok(()),
                    // The loader failed (or the counter vanished again): try
                    // ourselves.
                    Ok(None) => self.load_counter_now(slot).await,
                    Err(e) => Err(e.into()),
                }
            }
        };
        // The map holds one reference and this call another: when no one
        // else holds the lock, forget it. (Others clone it only under the
        // map's mutex, held here.)
        let mut loading = self.loading.lock().unwrap_or_else(PoisonError::into_inner);
        if Arc::strong_count(&lock) == 2 {
            loading.remove(&slot);
        }
        result
    }

    async fn load_counter_now(&self, slot: SlotKey) -> Result<(), BookingError> {
        let figures = self.store.slot_figures(&slot).await?.ok_or(BookingError::SlotNotFound(slot))?;
        Counters::bump(&self.counters.counters_loaded);
        self.gate.warm(&slot, &figures, false).await?;
        Ok(())
    }

    pub async fn get(&self, id: ReservationId) -> Result<Reservation, BookingError> {
        self.store.find_reservation(id).await?.ok_or(BookingError::ReservationNotFound)
    }

    /// Cancels a reservation; the flag says it was cancelled already.
    pub async fn cancel(
        self: &Arc<Self>,
        id: ReservationId,
        reason: CancelReason,
    ) -> Result<(Reservation, bool), BookingError> {
        let this = Arc::clone(self);
        self.run_to_completion(async move {
            match this.store.cancel_reservation(id, reason).await? {
                Cancelled::Now(r) => {
                    this.give_back(&r.slot, r.id, &r.user_id, r.party_size).await;
                    Ok((r, false))
                }
                Cancelled::Already(r) => Ok((r, true)),
                Cancelled::NotActive(r) => Err(BookingError::NotCancellable(r.status)),
                Cancelled::Missing => Err(BookingError::ReservationNotFound),
            }
        })
        .await
    }

    /// Payment arrived: confirms a pending reservation. Past its deadline it
    /// expires instead, and its seats go back.
    pub async fn confirm(self: &Arc<Self>, id: ReservationId) -> Result<Reservation, BookingError> {
        let this = Arc::clone(self);
        self.run_to_completion(async move {
            match this.store.confirm_reservation(id, this.clock.now()).await? {
                Confirmed::Now(r) | Confirmed::Already(r) => Ok(r),
                Confirmed::ExpiredNow(r) => {
                    this.give_back(&r.slot, r.id, &r.user_id, r.party_size).await;
                    Err(BookingError::DepositExpired)
                }
                Confirmed::NotPending(r) if r.status == ReservationStatus::Expired => Err(BookingError::DepositExpired),
                Confirmed::NotPending(r) => Err(BookingError::NotConfirmable(r.status)),
                Confirmed::Missing => Err(BookingError::ReservationNotFound),
            }
        })
        .await
    }

    /// Expires every unpaid reservation past its deadline and gives its seats
    /// back; returns how many. Safe in several replicas at once.
    pub async fn expire_due(&self) -> Result<usize, BookingError> {
        const BATCH: i64 = 500;
        let mut expired = 0;
        loop {
            let lapsed = self.store.expire_due(self.clock.now(), BATCH).await?;
            for l in &lapsed {
                self.give_back(&l.slot, l.id, &l.user_id, l.party_size).await;
            }
            expired += lapsed.len();
            if (lapsed.len() as i64) < BATCH {
                return Ok(expired);
            }
        }
    }

    /// Seats the database already took back go back to the counter. If Redis
    /// cannot be reached, the reconciler restores them later.
    async fn give_back(&self, slot: &SlotKey, id: ReservationId, user: &str, party: i32) {
        if !self.uses_gate() {
            return;
        }
        if let Err(e) = self.gate.give_back(slot, id, user, party).await {
            warn!(error = %e, reservation = %id, "seats went back in the database but not yet in the counter");
        }
    }

    /// Ends every hold whose lease has run out: the process that took it died
    /// or lost Redis before finalizing or releasing it. A hold whose
    /// reservation committed is finalized (the seats stay taken); any other
    /// gives its seats back. Both are done with the hold's own nonce, so
    /// several replicas reaping at once, or the owner waking up late, end
    /// each hold once.
    pub async fn reap(&self) -> Result<Reaped, BookingError> {
        if !self.uses_gate() {
            return Ok(Reaped::default());
        }
        let from = Utc::now().date_naive() - Days::new(1);
        let keys = self.store.slot_keys_from(from).await?;
        let mut expired = Vec::new();
        for batch in keys.chunks(PROBE_BATCH) {
            for (slot, probe) in batch.iter().zip(self.gate.probe(batch).await?) {
                if probe.holds > 0 {
                    expired.extend(self.gate.expired_holds(slot).await?.into_iter().map(|hold| (*slot, hold)));
                }
            }
        }
        if expired.is_empty() {
            return Ok(Reaped::default());
        }
        let ids: Vec<ReservationId> = expired.iter().map(|(_, hold)| hold.id).collect();
        let committed = self.store.existing_ids(&ids).await?;
        let mut reaped = Reaped::default();
        for (slot, hold) in expired {
            if committed.contains(&hold.id) {
                if self.gate.finalize(&slot, hold.id, hold.nonce).await? {
                    reaped.finalized += 1;
                }
            } else if self.gate.release(&slot, hold.id, &hold.user, hold.nonce, Release::Forget).await? > 0 {
                reaped.released += 1;
            }
        }
        if reaped != Reaped::default() {
            self.counters.holds_reaped_finalized.fetch_add(reaped.finalized.into(), Ordering::Relaxed);
            self.counters.holds_reaped_released.fetch_add(reaped.released.into(), Ordering::Relaxed);
            warn!(finalized = reaped.finalized, released = reaped.released, "reaped expired holds");
        }
        Ok(reaped)
    }

    fn uses_gate(&self) -> bool {
        self.settings.seats == Seats::Conditional
    }

    /// Seats left and capacity of a slot.
    pub async fn remaining(&self, slot: SlotKey) -> Result<(i32, i32), BookingError> {
        if !self.uses_gate() {
            let figures = self.store.slot_figures(&slot).await?.ok_or(BookingError::SlotNotFound(slot))?;
            return Ok((figures.capacity - figures.reserved, figures.capacity));
        }
        for _ in 0..COLD_RETRIES {
            if let Some(figures) = self.gate.remaining(&slot).await? {
                return Ok(figures);
            }
            self.load_counter(slot).await?;
        }
        Err(GateError::Unavailable("the slot's counter keeps disappearing".into()).into())
    }

    /// Creates slots or changes capacities, then brings their counters in
    /// line: a new slot's counter is written, a changed one moved by the
    /// difference (commutes with holds in flight), a cold one loaded.
    pub async fn open_slots(self: &Arc<Self>, slots: Vec<SlotCapacity>) -> Result<Vec<Opened>, BookingError> {
        let this = Arc::clone(self);
        self.run_to_completion(async move {
            let opened = match this.store.open_slots(&slots).await? {
                OpenOutcome::Opened(opened) => opened,
                OpenOutcome::BelowReserved { slot, reserved } => {
                    return Err(BookingError::CapacityBelowReserved { slot, reserved });
                }
            };
            if !this.uses_gate() {
                return Ok(opened);
            }
            for o in &opened {
                match o.previous_capacity {
                    None => {
                        let figures = SlotFigures { capacity: o.capacity, ..Default::default() };
                        // A slot that did not exist cannot have a true
                        // counter: overwrite any leftover.
                        this.gate.warm(&o.slot, &figures, true).await?;
                    }
                    Some(previous) => {
                        if !this.gate.resize(&o.slot, o.capacity, o.capacity - previous).await? {
                            this.load_counter(o.slot).await?;
                        }
                    }
                }
            }
            Ok(opened)
        })
        .await
    }

    /// Loads the counter of every slot dated `from` or later that has none.
    pub async fn warm_slots(&self, from: Option<NaiveDate>) -> Result<Warmed, BookingError> {
        let started = Instant::now();
        if !self.uses_gate() {
            return Ok(Warmed { warmed: 0, already_warm: 0, took: started.elapsed() });
        }
        let (mut warmed, mut already_warm) = (0, 0);
        for (slot, figures) in self.store.slots_from(from).await? {
            if self.gate.warm(&slot, &figures, false).await? {
                warmed += 1;
            } else {
                already_warm += 1;
            }
        }
        Ok(Warmed { warmed, already_warm, took: started.elapsed() })
    }

    /// Rewrites drifted counters of the warm slots dated `from` or later
    /// (default: yesterday, UTC, so every time zone's today is covered).
    ///
    /// Order matters: each slot's epoch is read before its database figures,
    /// and the rewrite only happens if the epoch has not moved since and no
    /// hold is in flight, so a reservation landing meanwhile is never
    /// overwritten by figures that predate it.
    pub async fn reconcile(&self, from: Option<NaiveDate>) -> Result<Reconciliation, BookingError> {
        let started = Instant::now();
        if !self.uses_gate() {
            return Ok(Reconciliation::default());
        }
        let from = from.unwrap_or_else(|| Utc::now().date_naive() - Days::new(1));
        let keys = self.store.slot_keys_from(from).await?;
        let mut probed = Vec::with_capacity(keys.len());
        for batch in keys.chunks(PROBE_BATCH) {
            probed.extend(batch.iter().copied().zip(self.gate.probe(batch).await?));
        }
        let figures: HashMap<SlotKey, SlotFigures> = self.store.slots_from(Some(from)).await?.into_iter().collect();

        let mut report = Reconciliation::default();
        for (slot, probe) in probed {
            let (Some(left), Some(epoch)) = (probe.left, probe.epoch.as_deref()) else { continue };
            report.checked += 1;
            if probe.holds > 0 {
                report.busy += 1;
                continue;
            }
            // Deleted meanwhile, or created after the key list: next pass.
            let Some(figures) = figures.get(&slot) else { continue };
            let want = i64::from(figures.capacity - figures.reserved);
            let looks_right = left == want
                && probe.capacity == Some(i64::from(figures.capacity))
                && probe.users == figures.holders.len() as i64;
            if looks_right {
                continue;
            }
            match self.gate.reconcile(&slot, epoch, figures).await? {
                Reconciled::Corrected { left_before } => report.corrections.push(Correction {
                    slot,
                    left_before,
                    left_after: want,
                    capacity: figures.capacity,
                }),
                Reconciled::Busy => report.busy += 1,
                Reconciled::AlreadyRight | Reconciled::Cold => {}
            }
        }
        report.took = started.elapsed();
        self.counters.counters_corrected.fetch_add(report.corrections.len() as u64, Ordering::Relaxed);
        for c in &report.corrections {
            warn!(slot = %c.slot, left_before = c.left_before, left_after = c.left_after, "reconciled a drifted counter");
        }
        Ok(report)
    }

    pub async fn put_menu(&self, restaurant_id: i64, items: Vec<MenuItem>) -> Result<usize, BookingError> {
        Ok(self.store.put_menu(restaurant_id, &items).await?)
    }
}

/// What a reservation's transaction found, as the caller's answer.
fn settle(new: &NewReservation, inserted: Inserted) -> Result<Reservation, BookingError> {
    match inserted {
        Inserted::Created(r) | Inserted::Existing(r) => Ok(r),
        Inserted::SoldOut => Err(BookingError::SoldOut { remaining: 0 }),
        Inserted::SlotMissing => Err(BookingError::SlotNotFound(new.slot)),
        Inserted::MenuItemMissing(menu_id) => Err(BookingError::MenuItemNotFound(menu_id)),
        Inserted::Reused => Err(BookingError::RequestIdReused),
        Inserted::Duplicate(existing) => Err(BookingError::Duplicate { existing }),
    }
}

impl Booking {
    /// Runs work that changes Redis and PostgreSQL in its own task, so it
    /// finishes even if the caller's future is dropped half-way (deadline
    /// passed, client gone): cut between "seats taken" and "row committed",
    /// it would leave seats held with no transaction behind them (DEPS.md
    /// trap 5). The task is tracked, so shutdown waits for it.
    ///
    /// The task carries the caller's span, so its spans (gate, database)
    /// stay children of the call in the trace.
    async fn run_to_completion<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, BookingError>> + Send + 'static,
    ) -> Result<T, BookingError> {
        self.tasks.spawn(work.instrument(Span::current())).await.map_err(|e| BookingError::Crashed(e.to_string()))?
    }
}
