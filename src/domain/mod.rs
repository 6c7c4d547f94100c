//! Validated request types, slot keys and identifiers. No I/O here: the gRPC
//! handlers turn proto messages into these types on their first line, and
//! nothing deeper sees a raw proto message.

mod admin;
mod ids;
mod listing;
mod menu;
mod request;
mod slot;
mod waitlist;

pub use admin::{
    SlotCapacity, ZoneChange, parse_close_slots, parse_open_slots, parse_put_restaurant, parse_timestamp,
    valid_zone_name,
};
pub use ids::{ReservationId, parse_code, reservation_code};
pub use listing::{
    Cursor, DEFAULT_PAGE_SIZE, DayQuery, EventFilter, ListFilter, ListQuery, MAX_PAGE_SIZE, parse_list_availability,
    parse_list_reservations, parse_watch,
};
pub use menu::{MenuItem, MenuUpload, parse_put_menu};
pub use request::{
    CancelReason, Cancellation, Limits, MenuOrder, NewReservation, ReservationKind, ReservationStatus, parse_cancel,
};
pub use slot::{Holder, KnownRequest, Remaining, SlotFigures, SlotKey, SlotState, Waitlisted, Window, parse_date};
pub use waitlist::{
    EntryId, Join, MAX_PASSES, OfferPlan, Waiter, WaitlistQuery, WaitlistState, is_offer_request, parse_entry_id,
    parse_list_waitlist, plan_offers,
};

/// One invalid field: which one (as a proto field path, e.g. `slot.date`) and
/// why. Becomes `INVALID_ARGUMENT` with a `google.rpc.BadRequest` naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {description}")]
pub struct FieldError {
    pub field: String,
    pub description: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}
