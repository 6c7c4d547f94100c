//! Creating a reservation: the gate decides, the winner commits, the hold
//! ends either way. A cold counter is loaded once per slot at a time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

use chrono::Days;
use tracing::{Instrument, Span, warn};

use super::{Booking, BookingError, Decider};
use crate::{
    domain::{NewReservation, ReservationId, SlotKey},
    gate::{Admission, Gate, GateError, Overwrite, Release, Warm, attempt_nonce},
    metrics::Metrics,
    store::{Inserted, Reservation, SeatLock, StoreError, Timing},
};

/// How often a request re-loads a counter that vanished right after it was
/// loaded (Redis flushed or evicting under memory pressure), or that turned
/// out stale, before giving up.
pub(super) const COLD_RETRIES: usize = 3;

/// Polls of an attempt in flight before a retry also looks in the database:
/// the first attempt may have committed and then failed to end its hold
/// (Redis unreachable for a moment), which leaves the hold until its lease
/// runs out although the answer is known.
const POLLS_BEFORE_LOOKING: u32 = 5;

/// What became of a transaction whose answer was lost.
enum Outcome {
    /// It committed: the reservation, and its slot's version.
    Committed(Reservation, i64),
    NotCommitted,
    /// The database cannot say now either.
    Unknown,
}

/// One lock per slot whose counter is being loaded: the single flight.
#[derive(Default)]
pub(super) struct CounterLoads(Mutex<HashMap<SlotKey, Arc<tokio::sync::Mutex<()>>>>);

/// A load's hold on its slot's lock. Dropped however the load ends (done,
/// or its caller gone), it forgets the lock when no one else holds it.
struct LoadTurn<'a> {
    loads: &'a CounterLoads,
    slot: SlotKey,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> LoadTurn<'a> {
    fn take(loads: &'a CounterLoads, slot: SlotKey) -> Self {
        let mut loading = loads.0.lock().unwrap_or_else(PoisonError::into_inner);
        Self { loads, slot, lock: Arc::clone(loading.entry(slot).or_default()) }
    }
}

impl Drop for LoadTurn<'_> {
    fn drop(&mut self) {
        // The map holds one reference and this turn another: when no one
        // else holds the lock, forget it. (Others clone it only under the
        // map's mutex, held here.)
        let mut loading = self.loads.0.lock().unwrap_or_else(PoisonError::into_inner);
        if Arc::strong_count(&self.lock) == 2 {
            loading.remove(&self.slot);
        }
    }
}

impl Booking {
    /// Books seats for `new`, or says why not.
    ///
    /// The gate's decision is made in the caller's task: a refusal, which is
    /// what nearly every call of a burst gets, costs no task of its own.
    /// From the moment the gate admits the request, the rest (the
    /// transaction, then ending the hold) runs to completion in a task of
    /// its own, whatever becomes of the caller. A caller dropped while its
    /// acquire is in flight (deadline passed, client gone) voids the attempt
    /// instead: a release is sent in a task of its own, so seats the acquire
    /// took, or would take if it still reaches Redis, go back at once rather
    /// than at the end of a hold lease.
    pub async fn create(self: &Arc<Self>, new: NewReservation) -> Result<Reservation, BookingError> {
        // A slot dated before yesterday has started in every time zone (and
        // its keys have expired from Redis; see the gate's key layout).
        if new.slot.date < self.clock.now().date_naive() - Days::new(1) {
            return Err(BookingError::SlotStarted(new.slot));
        }
        match &self.decider {
            Decider::Gate(gate) => self.decide(gate, new).await,
            Decider::Database(lock) => {
                let (this, lock) = (Arc::clone(self), *lock);
                self.run_to_completion(async move { this.decide_in_database(&new, lock).await }).await
            }
        }
    }

    async fn decide(self: &Arc<Self>, gate: &Arc<Gate>, new: NewReservation) -> Result<Reservation, BookingError> {
        let id = new.reservation_id();
        let fingerprint = new.fingerprint();
        let nonce = attempt_nonce();
        let give_up = Instant::now() + self.settings.replay_wait;
        let mut backoff = Duration::from_millis(2);
        let (mut loads, mut polls) = (0, 0);
        // The awaits off the refusal path (loading a cold counter, replays,
        // the undo of a lost reply) are boxed: this future is allocated for
        // every call, and kept small it is cheap to allocate and move.
        loop {
            let undo = VoidOnDrop::arm(self, gate, &new, id, nonce);
            let admission = match gate.acquire(&new.slot, id, &new.user_id, new.party_size, fingerprint, nonce).await {
                Ok(admission) => admission,
                Err(e) => {
                    // The reply was lost (timeout, connection cut): the script
                    // may have run and taken seats for this attempt. Undo that
                    // if so; the nonce keeps a concurrent retry's hold safe.
                    let undone = Box::pin(gate.release(&new.slot, id, &new.user_id, nonce, Release::Void)).await;
                    if let Err(failed) = undone {
                        warn!(error = %failed, reservation = %id, "could not undo an acquire whose reply was lost");
                    }
                    undo.disarm();
                    return Err(e.into());
                }
            };
            undo.disarm();
            if !matches!(admission, Admission::Admitted { .. } | Admission::Cold | Admission::Replay { .. }) {
                Metrics::bump(&self.metrics.gate_refused);
            }
            match admission {
                Admission::Admitted { .. } => {
                    Metrics::bump(&self.metrics.gate_admitted);
                    // Spawned before anything else is awaited: from here the
                    // hold ends (committed or released) whatever the caller
                    // does.
                    let (this, gate) = (Arc::clone(self), Arc::clone(gate));
                    return self
                        .run_to_completion(async move {
                            this.metrics.holds_in_flight.fetch_add(1, Ordering::Relaxed);
                            let committed = this.commit(&gate, &new, id, nonce).await;
                            this.metrics.holds_in_flight.fetch_sub(1, Ordering::Relaxed);
                            committed
                        })
                        .await;
                }
                Admission::Cold if loads < COLD_RETRIES => {
                    loads += 1;
                    Box::pin(self.load_counter(gate, new.slot)).await?;
                }
                Admission::Cold => {
                    return Err(GateError::Unavailable("the slot's counter keeps disappearing".into()).into());
                }
                Admission::SoldOut { remaining } => return Err(BookingError::SoldOut { remaining }),
                Admission::Duplicate { existing } => return Err(BookingError::Duplicate { existing }),
                Admission::Waiting { entry } => return Err(BookingError::AlreadyWaiting { entry }),
                Admission::Reused => return Err(BookingError::RequestIdReused),
                Admission::Shut(shut) => return Err(BookingError::shut(new.slot, shut)),
                Admission::Replay { held: false } => {
                    // Admitted before and no longer held: it committed.
                    match Box::pin(self.store.find_reservation(id)).await? {
                        Some(r) if r.fingerprint == fingerprint => return Ok(r),
                        Some(_) => return Err(BookingError::RequestIdReused),
                        // Entries left by a hold that was lost (a flush, an
                        // eviction): nothing committed. The slot is reloaded
                        // from the database and the request decided afresh.
                        None if loads < COLD_RETRIES => {
                            warn!(reservation = %id, "the gate knew a request the database does not; reloading its slot");
                            loads += 1;
                            if Box::pin(gate.distrust(&new.slot, id, &new.user_id)).await? {
                                Box::pin(self.load_counter(gate, new.slot)).await?;
                            }
                        }
                        None => {
                            return Err(StoreError::Corrupt(format!(
                                "redis keeps knowing reservation {id}, the database does not"
                            ))
                            .into());
                        }
                    }
                }
                Admission::Replay { held: true } => {
                    // The first attempt is between admission and commit. Its
                    // outcome lands within one transaction: ask again shortly.
                    // (If it fails, its release forgets the id and the next
                    // acquire treats this retry as a fresh attempt.)
                    polls += 1;
                    if polls >= POLLS_BEFORE_LOOKING && polls % POLLS_BEFORE_LOOKING == 0 {
                        match Box::pin(self.store.find_reservation(id)).await? {
                            Some(r) if r.fingerprint == fingerprint => return Ok(r),
                            Some(_) => return Err(BookingError::RequestIdReused),
                            None => {}
                        }
                    }
                    if Instant::now() + backoff > give_up {
                        return Err(BookingError::RequestInProgress);
                    }
                    Box::pin(tokio::time::sleep(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    fn timing(&self) -> Timing {
        Timing { offset: self.clock.offset(), deposit_window: self.settings.deposit_window }
    }

    /// The admitted path: one transaction, then end the hold either way.
    async fn commit(
        &self,
        gate: &Gate,
        new: &NewReservation,
        id: ReservationId,
        nonce: u64,
    ) -> Result<Reservation, BookingError> {
        // Bounded well within the lease (the configuration guarantees it),
        // and on the server too (the session's statement, lock and idle
        // timeouts): a transaction still running when the reaper looks at
        // its hold could commit after the reaper released the seats.
        let bound = self.settings.commit_bound;
        let inserted =
            tokio::time::timeout(bound, self.store.insert_reservation(new, self.timing(), None, Some(nonce)))
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("no commit within {bound:?}"))));
        // A lost answer (a timeout, a connection cut after COMMIT was sent)
        // is asked about: a commit that landed is finalized like any other,
        // and one the database cannot say anything about yet leaves its hold
        // to the reaper, which asks again once the lease is over.
        let inserted = match inserted {
            Err(StoreError::Unavailable(e)) => match self.outcome_of(new, id, nonce).await {
                Outcome::Committed(reservation, version) => Ok(Inserted::Created { reservation, version }),
                Outcome::NotCommitted => Err(StoreError::Unavailable(e)),
                Outcome::Unknown => return Err(StoreError::Unavailable(e).into()),
            },
            inserted => inserted,
        };
        if let Ok(Inserted::Created { reservation, version }) = inserted {
            if let Err(e) = gate.finalize(&new.slot, id, nonce, &new.user_id, version).await {
                // The seats stay taken either way; only the hold record lingers.
                warn!(error = %e, reservation = %id, "could not end the hold of a committed reservation");
            }
            return Ok(reservation);
        }
        // Not committed: the hold is released. When the id names a
        // reservation that exists (a replay after Redis lost its state), its
        // fingerprint entry stays, and so does its user's entry if it is
        // active: they are true.
        let how = match &inserted {
            Ok(Inserted::Existing(r)) if r.is_active() => Release::KeepEntries,
            Ok(Inserted::Existing(_)) => Release::ForgetUser,
            _ => Release::Forget,
        };
        if let Err(e) = gate.release(&new.slot, id, &new.user_id, nonce, how).await {
            warn!(error = %e, reservation = %id, "could not release a hold; the counter stays low until reconciled");
        }
        settle(new, inserted?)
    }

    /// Whether this attempt's transaction committed after all, when its
    /// answer was lost.
    async fn outcome_of(&self, new: &NewReservation, id: ReservationId, nonce: u64) -> Outcome {
        let Ok(committed) = self.store.committed(&[id]).await else { return Outcome::Unknown };
        match committed.get(&id) {
            Some(row) if row.slot == new.slot && row.attempt == Some(nonce) => {
                match self.store.find_reservation(id).await {
                    Ok(Some(reservation)) => Outcome::Committed(reservation, row.slot_version),
                    _ => Outcome::Unknown,
                }
            }
            _ => Outcome::NotCommitted,
        }
    }

    /// A database-only strategy: every request decided inside a PostgreSQL
    /// transaction under `lock`.
    async fn decide_in_database(&self, new: &NewReservation, lock: SeatLock) -> Result<Reservation, BookingError> {
        let inserted = self.store.insert_reservation(new, self.timing(), Some(lock), None).await?;
        settle(new, inserted)
    }

    /// Loads a cold counter from the database, once per slot per process
    /// however many requests meet it at once: the first loads, the others
    /// wait for it and then find the counter warm, and one that comes after
    /// the load ended finds it warm at once. (Several processes may each
    /// load once; `warm` keeps the first counter written.)
    pub(super) async fn load_counter(&self, gate: &Gate, slot: SlotKey) -> Result<(), BookingError> {
        let turn = LoadTurn::take(&self.loads, slot);
        let lock = &turn.lock;
        match lock.try_lock() {
            // A load may have ended between the answer that found the slot
            // cold and this call (that answer was read late, or came over
            // another connection than the load's): then there is nothing to
            // load, and the database is not asked again.
            Ok(_leader) => match gate.remaining(&slot).await? {
                Some(_) => Ok(()),
                None => self.load_counter_now(gate, slot).await,
            },
            Err(_) => {
                let _after_the_leader = lock.lock().await;
                match gate.remaining(&slot).await {
                    Ok(Some(_)) => Ok(()),
                    // The loader failed (or the counter vanished again): try
                    // ourselves.
                    Ok(None) => self.load_counter_now(gate, slot).await,
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Reads the slot's figures and loads them. Figures that a newer change
    /// overtook while they were read are read again; if they are still
    /// older than that change, which committed before it was reported, the
    /// database's versions went back (a restore), and they are loaded as
    /// they are.
    async fn load_counter_now(&self, gate: &Gate, slot: SlotKey) -> Result<(), BookingError> {
        let mut overtaken_by = None;
        for _ in 0..COLD_RETRIES {
            let figures = self.store.slot_figures(&slot).await?.ok_or(BookingError::SlotNotFound(slot))?;
            Metrics::bump(&self.metrics.counters_loaded);
            let mode = match overtaken_by {
                Some(seen) if figures.version < seen => {
                    warn!(%slot, seen, version = figures.version, "the slot's version went back in the database");
                    Overwrite::IfColdVersionsWentBack
                }
                _ => Overwrite::IfCold,
            };
            match gate.warm(&slot, &figures, mode).await? {
                Warm::Stale { seen } => overtaken_by = Some(seen),
                Warm::Written | Warm::AlreadyWarm => return Ok(()),
            }
        }
        Err(GateError::Unavailable("the slot kept changing while its counter was loaded".into()).into())
    }
}

/// Voids an attempt whose caller was dropped while its acquire was in
/// flight: the script may have run (and taken seats) or may still reach
/// Redis. The release it sends (with [`Release::Void`], idempotent for the
/// attempt's nonce) runs in a tracked task of its own, as the caller is
/// gone; the attempt's hold, if any, ends at once and a late acquire takes
/// nothing.
struct VoidOnDrop<'a> {
    armed: Option<(&'a Booking, &'a Arc<Gate>, &'a NewReservation)>,
    id: ReservationId,
    nonce: u64,
}

impl<'a> VoidOnDrop<'a> {
    fn arm(booking: &'a Booking, gate: &'a Arc<Gate>, new: &'a NewReservation, id: ReservationId, nonce: u64) -> Self {
        Self { armed: Some((booking, gate, new)), id, nonce }
    }

    /// The acquire's answer arrived (or its undo ran): nothing to void.
    fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for VoidOnDrop<'_> {
    fn drop(&mut self) {
        let Some((booking, gate, new)) = self.armed.take() else { return };
        Metrics::bump(&booking.metrics.attempts_voided);
        // Dropped outside a runtime, or by one shutting down (which drops
        // what is spawned on it), nothing is sent: the hold, if any, ends
        // when its lease runs out, as for a process that died.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (gate, slot, user, id, nonce) = (Arc::clone(gate), new.slot, new.user_id.clone(), self.id, self.nonce);
        let void = async move {
            if let Err(e) = gate.release(&slot, id, &user, nonce, Release::Void).await {
                warn!(error = %e, reservation = %id, "could not void the attempt of a caller that left mid-acquire");
            }
        };
        // The call's span is current here: an instrumented future enters its
        // span while it is dropped, as while it is polled.
        booking.tasks.spawn_on(void.instrument(Span::current()), &runtime);
    }
}

/// What a reservation's transaction found, as the caller's answer.
fn settle(new: &NewReservation, inserted: Inserted) -> Result<Reservation, BookingError> {
    match inserted {
        Inserted::Created { reservation: r, .. } | Inserted::Existing(r) => Ok(r),
        Inserted::SoldOut => Err(BookingError::SoldOut { remaining: 0 }),
        Inserted::SlotMissing => Err(BookingError::SlotNotFound(new.slot)),
        Inserted::MenuItemMissing(menu_id) => Err(BookingError::MenuItemNotFound(menu_id)),
        Inserted::Reused => Err(BookingError::RequestIdReused),
        Inserted::Duplicate(existing) => Err(BookingError::Duplicate { existing }),
    }
}
