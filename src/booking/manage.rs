//! A reservation after it is made: look it up, cancel it, confirm its
//! deposit, expire it. The database frees the seats of a reservation that
//! ends; the gate's counter then gets them back.

use std::sync::Arc;

use tracing::warn;

use super::{Booking, BookingError};
use crate::{
    domain::{CancelReason, ReservationId, ReservationStatus, SlotKey},
    store::{Cancelled, Confirmed, Reservation},
};

/// What a cancel call did.
#[derive(Debug, Clone)]
pub struct Cancellation {
    pub reservation: Reservation,
    /// It was cancelled before this call; nothing changed.
    pub already_cancelled: bool,
}

impl Booking {
    pub async fn get(&self, id: ReservationId) -> Result<Reservation, BookingError> {
        self.store.find_reservation(id).await?.ok_or(BookingError::ReservationNotFound)
    }

    /// The reservation with this code (as [`crate::domain::parse_code`]
    /// gives it).
    pub async fn get_by_code(&self, code: &str) -> Result<Reservation, BookingError> {
        self.store.find_by_code(code).await?.ok_or(BookingError::ReservationNotFound)
    }

    /// Cancels a reservation and gives its seats back. `caller` (the calling
    /// service) is recorded in the change's event.
    pub async fn cancel(
        self: &Arc<Self>,
        id: ReservationId,
        reason: CancelReason,
        caller: String,
    ) -> Result<Cancellation, BookingError> {
        let this = Arc::clone(self);
        self.run_to_completion(async move {
            match this.store.cancel_reservation(id, reason, &caller).await? {
                Cancelled::Now { reservation: r, version } => {
                    this.give_back(&r.slot, r.id, &r.user_id, r.party_size, version).await;
                    Ok(Cancellation { reservation: r, already_cancelled: false })
                }
                Cancelled::Already(r) => Ok(Cancellation { reservation: r, already_cancelled: true }),
                Cancelled::NotActive(r) => Err(BookingError::NotCancellable(r.status)),
                Cancelled::Missing => Err(BookingError::ReservationNotFound),
            }
        })
        .await
    }

    /// Payment arrived: confirms a pending reservation. Past its deadline it
    /// expires instead, and its seats go back. `caller` is recorded in the
    /// change's event.
    pub async fn confirm(self: &Arc<Self>, id: ReservationId, caller: String) -> Result<Reservation, BookingError> {
        let this = Arc::clone(self);
        self.run_to_completion(async move {
            match this.store.confirm_reservation(id, this.clock.offset(), &caller).await? {
                Confirmed::Now(r) | Confirmed::Already(r) => Ok(r),
                Confirmed::ExpiredNow { reservation: r, version } => {
                    this.give_back(&r.slot, r.id, &r.user_id, r.party_size, version).await;
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
            let lapsed = self.store.expire_due(self.clock.offset(), BATCH).await?;
            for l in &lapsed {
                self.give_back(&l.slot, l.id, &l.user_id, l.party_size, l.version).await;
            }
            expired += lapsed.len();
            if (lapsed.len() as i64) < BATCH {
                return Ok(expired);
            }
        }
    }

    /// The database freed a reservation's seats, leaving its slot at
    /// `version`; the counter gets them back too. If Redis cannot be
    /// reached, the reconciler restores them later.
    async fn give_back(&self, slot: &SlotKey, id: ReservationId, user: &str, party: i32, version: i64) {
        let Some(gate) = self.gate() else { return };
        if let Err(e) = gate.give_back(slot, id, user, party, version).await {
            warn!(error = %e, reservation = %id, "seats freed in the database but not yet in the counter");
        }
    }
}
