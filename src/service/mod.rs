//! The gRPC handlers, one module per proto service. Each handler parses its
//! request into domain types on its first line, calls one use case, and
//! turns the outcome into a response; errors become `Status` in [`error`]
//! only.

mod admin;
mod convert;
pub mod error;
mod reservations;

pub use admin::AdminService;
pub use error::{DOMAIN, reason};
pub use reservations::ReservationsService;
