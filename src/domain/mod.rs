//! Validated request types, slot keys and identifiers. No I/O here: the gRPC
//! handlers turn proto messages into these types on their first line, and
//! nothing deeper sees a raw proto message.

mod ids;
mod menu;
mod request;
mod slot;

pub use ids::{ReservationId, parse_code, reservation_code};
pub use menu::{MenuItem, MenuUpload, parse_put_menu};
pub use request::{
    CancelReason, Cancellation, Limits, MenuOrder, NewReservation, ReservationKind, ReservationStatus, SlotCapacity,
    parse_cancel, parse_open_slots,
};
pub use slot::{Holder, KnownRequest, Remaining, SlotFigures, SlotKey, parse_date};

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
