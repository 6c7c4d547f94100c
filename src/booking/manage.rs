//! A reservation after it is made: look it up, cancel it, confirm its
//! deposit, expire it. The database frees the seats of a reservation that
//! ends; the gate's counter then gets them back.

use std::sync::Arc;

use tracing::warn;

use super::{Booking, BookingError};
use crate::{
    domain::{CancelReason, ReservationId, ReservationStatus, SlotKey},
    store::{Cancelled, Confirmed, Freed, OfferTerms, Reservation},
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
        self.run_to_completion(async move { this.cancel_now(id, reason, &caller).await }).await
    }

    /// [`Booking::cancel`]'s work, in the caller's task.
    pub(super) async fn cancel_now(
        &self,
        id: ReservationId,
        reason: CancelReason,
        caller: &str,
    ) -> Result<Cancellation, BookingError> {
        match self.store.cancel_reservation(id, reason, caller, self.offer_terms()).await? {
            Cancelled::Now { reservation: r, version, waitlist } => {
                self.seats_freed(&r.slot, r.id, &r.user_id, r.party_size, Freed { version, waitlist }).await;
                Ok(Cancellation { reservation: r, already_cancelled: false })
            }
            Cancelled::Already(r) => Ok(Cancellation { reservation: r, already_cancelled: true }),
            Cancelled::NotActive(r) => Err(BookingError::NotCancellable(r.status)),
            Cancelled::Missing => Err(BookingError::ReservationNotFound),
        }
    }

    /// The terms offers to the waitlist are made on now.
    pub(super) fn offer_terms(&self) -> OfferTerms {
        OfferTerms { offset: self.clock.offset(), window: self.settings.offer_window }
    }

    /// Payment arrived: confirms a pending reservation. Past its deadline it
    /// expires instead, and its seats go back. `caller` is recorded in the
    /// change's event.
    pub async fn confirm(self: &Arc<Self>, id: ReservationId, caller: String) -> Result<Reservation, BookingError> {
        let this = Arc::clone(self);
        self.run_to_completion(async move {
            match this.store.confirm_reservation(id, this.offer_terms(), &caller).await? {
                Confirmed::Now(r) | Confirmed::Already(r) => Ok(r),
                Confirmed::ExpiredNow { reservation: r, version, waitlist } => {
                    this.seats_freed(&r.slot, r.id, &r.user_id, r.party_size, Freed { version, waitlist }).await;
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
            let lapsed = self.store.expire_due(self.offer_terms(), BATCH).await?;
            let mut refreshed = std::collections::HashSet::new();
            for l in &lapsed {
                // One refresh per slot whose waitlist had a say.
                if l.waitlist && !refreshed.insert(l.slot) {
                    continue;
                }
                let freed = Freed { version: l.version, waitlist: l.waitlist };
                self.seats_freed(&l.slot, l.id, &l.user_id, l.party_size, freed).await;
            }
            expired += lapsed.len();
            if (lapsed.len() as i64) < BATCH {
                return Ok(expired);
            }
        }
    }

    /// The database freed a reservation's seats; the counter gets them
    /// back too, or, when the slot's waitlist had a say in them (offers,
    /// seats set aside), is loaded afresh. If Redis cannot be reached, the
    /// reconciler restores them later.
    pub(super) async fn seats_freed(&self, slot: &SlotKey, id: ReservationId, user: &str, party: i32, freed: Freed) {
        let Some(gate) = self.gate() else { return };
        if freed.waitlist {
            return self.refresh_counter(*slot).await;
        }
        if let Err(e) = gate.give_back(slot, id, user, party, freed.version).await {
            warn!(error = %e, reservation = %id, "seats freed in the database but not yet in the counter");
        }
    }
}
