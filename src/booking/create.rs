//! Creating a reservation: the gate decides, the winner commits, the hold
//! ends either way. A cold counter is loaded once per slot at a time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

use tracing::warn;

use super::{Booking, BookingError, Decider};
use crate::{
    domain::{NewReservation, ReservationId, SlotKey},
    gate::{Admission, Gate, GateError, Overwrite, Release, attempt_nonce},
    metrics::Metrics,
    store::{Inserted, Reservation, SeatLock, StoreError, Timestamps},
};

/// How often a request re-loads a counter that vanished right after it was
/// loaded (Redis flushed or evicting under memory pressure) before giving up.
pub(super) const COLD_RETRIES: usize = 3;

/// One lock per slot whose counter is being loaded: the single flight.
#[derive(Default)]
pub(super) struct CounterLoads(Mutex<HashMap<SlotKey, Arc<tokio::sync::Mutex<()>>>>);

impl Booking {
    /// Books seats for `new`, or says why not.
    pub async fn create(self: &Arc<Self>, new: NewReservation) -> Result<Reservation, BookingError> {
        let this = Arc::clone(self);
        self.run_to_completion(async move {
            match &this.decider {
                Decider::Gate(gate) => this.decide(gate, new).await,
                Decider::Database(lock) => this.decide_in_database(&new, *lock).await,
            }
        })
        .await
    }

    async fn decide(&self, gate: &Gate, new: NewReservation) -> Result<Reservation, BookingError> {
        let id = new.reservation_id();
        let fingerprint = new.fingerprint();
        let nonce = attempt_nonce();
        let give_up = Instant::now() + self.settings.replay_wait;
        let mut backoff = Duration::from_millis(2);
        let mut loads = 0;
        loop {
            let admission = match gate.acquire(&new.slot, id, &new.user_id, new.party_size, fingerprint, nonce).await {
                Ok(admission) => admission,
                Err(e) => {
                    // The reply was lost (timeout, connection cut): the script
                    // may have run and taken seats for this attempt. Undo that
                    // if so; the nonce keeps a concurrent retry's hold safe.
                    if let Err(undo) = gate.release(&new.slot, id, &new.user_id, nonce, Release::Void).await {
                        warn!(error = %undo, reservation = %id, "could not undo an acquire whose reply was lost");
                    }
                    return Err(e.into());
                }
            };
            if !matches!(admission, Admission::Admitted { .. } | Admission::Cold | Admission::Replay { .. }) {
                Metrics::bump(&self.metrics.gate_refused);
            }
            match admission {
                Admission::Admitted { .. } => {
                    Metrics::bump(&self.metrics.gate_admitted);
                    self.metrics.holds_in_flight.fetch_add(1, Ordering::Relaxed);
                    let committed = self.commit(gate, &new, id, nonce).await;
                    self.metrics.holds_in_flight.fetch_sub(1, Ordering::Relaxed);
                    return committed;
                }
                Admission::Cold if loads < COLD_RETRIES => {
                    loads += 1;
                    self.load_counter(gate, new.slot).await?;
                }
                Admission::Cold => {
                    return Err(GateError::Unavailable("the slot's counter keeps disappearing".into()).into());
                }
                Admission::SoldOut { remaining } => return Err(BookingError::SoldOut { remaining }),
                Admission::Duplicate { existing } => return Err(BookingError::Duplicate { existing }),
                Admission::Reused => return Err(BookingError::RequestIdReused),
                Admission::Replay { held: false } => {
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
                Admission::Replay { held: true } => {
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

    fn timestamps(&self) -> Timestamps {
        let now = self.clock.now();
        Timestamps { now, deposit_deadline: now + self.settings.deposit_window }
    }

    /// The admitted path: one transaction, then end the hold either way.
    async fn commit(
        &self,
        gate: &Gate,
        new: &NewReservation,
        id: ReservationId,
        nonce: u64,
    ) -> Result<Reservation, BookingError> {
        // Bounded by half the lease: a transaction still running when the
        // reaper looks at its hold could commit after the reaper released the
        // seats. (If COMMIT was already sent, the outcome is unknown; the
        // database still cannot overbook, and reconciliation mends the
        // counter.)
        let bound = self.settings.hold_lease / 2;
        let inserted = tokio::time::timeout(bound, self.store.insert_reservation(new, self.timestamps(), None))
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("no commit within {bound:?}"))));
        if let Ok(Inserted::Created(reservation)) = inserted {
            if let Err(e) = gate.finalize(&new.slot, id, nonce).await {
                // The seats stay taken either way; only the hold record lingers.
                warn!(error = %e, reservation = %id, "could not end the hold of a committed reservation");
            }
            return Ok(reservation);
        }
        // Not committed: the hold is released. When the id names an active
        // reservation that exists (a replay after Redis lost its state), its
        // user and fingerprint entries stay: they are true.
        let keep = matches!(&inserted, Ok(Inserted::Existing(r)) if r.is_active());
        let how = if keep { Release::KeepEntries } else { Release::Forget };
        if let Err(e) = gate.release(&new.slot, id, &new.user_id, nonce, how).await {
            warn!(error = %e, reservation = %id, "could not release a hold; the counter stays low until reconciled");
        }
        settle(new, inserted?)
    }

    /// A database-only strategy: every request decided inside a PostgreSQL
    /// transaction under `lock`.
    async fn decide_in_database(&self, new: &NewReservation, lock: SeatLock) -> Result<Reservation, BookingError> {
        let inserted = self.store.insert_reservation(new, self.timestamps(), Some(lock)).await?;
        settle(new, inserted)
    }

    /// Loads a cold counter from the database, once per slot per process
    /// however many requests meet it at once: the first loads, the others
    /// wait for it and then find the counter warm. (Several processes may
    /// each load once; `warm` keeps the first counter written.)
    pub(super) async fn load_counter(&self, gate: &Gate, slot: SlotKey) -> Result<(), BookingError> {
        let lock = {
            let mut loading = self.loads.0.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(loading.entry(slot).or_default())
        };
        let result = match lock.try_lock() {
            Ok(_leader) => self.load_counter_now(gate, slot).await,
            Err(_) => {
                let _turn = lock.lock().await;
                match gate.remaining(&slot).await {
                    Ok(Some(_)) => Ok(()),
                    // The loader failed (or the counter vanished again): try
                    // ourselves.
                    Ok(None) => self.load_counter_now(gate, slot).await,
                    Err(e) => Err(e.into()),
                }
            }
        };
        // The map holds one reference and this call another: when no one
        // else holds the lock, forget it. (Others clone it only under the
        // map's mutex, held here.)
        let mut loading = self.loads.0.lock().unwrap_or_else(PoisonError::into_inner);
        if Arc::strong_count(&lock) == 2 {
            loading.remove(&slot);
        }
        result
    }

    async fn load_counter_now(&self, gate: &Gate, slot: SlotKey) -> Result<(), BookingError> {
        let figures = self.store.slot_figures(&slot).await?.ok_or(BookingError::SlotNotFound(slot))?;
        Metrics::bump(&self.metrics.counters_loaded);
        gate.warm(&slot, &figures, Overwrite::IfCold).await?;
        Ok(())
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
