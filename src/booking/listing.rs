//! Reading what the burst left: pages of reservations (from PostgreSQL
//! only) and a restaurant's day's availability (from the gate's counters).

use std::collections::HashMap;

use super::{Booking, BookingError, create::COLD_RETRIES, upkeep::oldest_kept};
use crate::{
    domain::{DayQuery, ListQuery, Remaining, SlotKey, SlotState},
    gate::GateError,
    store::Reservation,
};

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub reservations: Vec<Reservation>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// One slot of a restaurant's day, as the gate sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Availability {
    pub slot: SlotKey,
    pub remaining: Remaining,
    /// The slot is open and has room for the party.
    pub fits: bool,
}

impl Booking {
    /// One page of reservations matching `query`, served from the database.
    pub async fn list(&self, query: &ListQuery) -> Result<Page, BookingError> {
        let mut reservations = self.store.list_reservations(query).await?;
        let more = reservations.len() as i64 > query.page_size;
        reservations.truncate(query.page_size as usize);
        let next_page_token = match reservations.last() {
            Some(last) if more => query.token_after(last.slot.time, last.created_at, last.id.0),
            _ => String::new(),
        };
        Ok(Page { reservations, next_page_token })
    }

    /// Every slot of a restaurant's day in time order, with the seats left
    /// in each: the slots from the database, the seats from the gate's
    /// counters in one round trip (a cold counter is loaded, once per slot,
    /// and read again).
    pub async fn availability(&self, day: DayQuery) -> Result<Vec<Availability>, BookingError> {
        let slots = self.store.day_slots(day.restaurant_id, day.date).await?;
        // A day older than the keys Redis keeps has started everywhere and
        // has no counters: it is answered from the database.
        let gate = self.gate().filter(|_| day.date >= oldest_kept());
        let remaining: Vec<Remaining> = match gate {
            None => {
                let now = self.clock.now();
                slots
                    .iter()
                    .map(|s| Remaining {
                        left: (s.capacity - s.reserved).max(0),
                        capacity: s.capacity,
                        window: s.window,
                        state: s.window.state_at(now),
                    })
                    .collect()
            }
            Some(gate) => {
                let keys: Vec<SlotKey> = slots.iter().map(|s| s.slot).collect();
                let mut read: HashMap<SlotKey, Remaining> = HashMap::with_capacity(keys.len());
                let mut missing = keys.clone();
                for _ in 0..=COLD_RETRIES {
                    if missing.is_empty() {
                        break;
                    }
                    let found = gate.remaining_many(&missing).await?;
                    let mut cold = Vec::new();
                    for (slot, remaining) in missing.iter().zip(found) {
                        match remaining {
                            Some(r) => {
                                read.insert(*slot, r);
                            }
                            None => cold.push(*slot),
                        }
                    }
                    for slot in &cold {
                        self.load_counter(gate, *slot).await?;
                    }
                    missing = cold;
                }
                if !missing.is_empty() {
                    return Err(GateError::Unavailable("the slots' counters keep disappearing".into()).into());
                }
                keys.iter().filter_map(|k| read.remove(k)).collect()
            }
        };
        Ok(slots
            .iter()
            .zip(remaining)
            .map(|(s, r)| Availability {
                slot: s.slot,
                fits: r.state == SlotState::Open && r.left >= day.party_size,
                remaining: r,
            })
            .collect())
    }
}
