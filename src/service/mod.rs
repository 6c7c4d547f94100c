//! The gRPC handlers, one module per proto service. Each handler parses its
//! request into domain types on its first line, calls one use case, and
//! turns the outcome into a response; errors become a `Status` in
//! [`crate::status`] only.

mod admin;
pub(crate) mod convert;
mod reservations;

pub use admin::AdminService;
pub use reservations::ReservationsService;
