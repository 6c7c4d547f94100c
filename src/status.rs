//! The one place a `tonic::Status` is built.
//!
//! It sits below both its users: the gRPC handlers ([`crate::service`]) and
//! the tower layers in front of them ([`crate::overload`], [`crate::auth`]),
//! whose request extensions (deadline, caller) the handlers read.
//!
//! Every status carries a `google.rpc.ErrorInfo` with a machine-readable
//! `reason` (the constants in [`reason`]), so callers never parse messages,
//! and a `RetryInfo` where waiting helps. Messages never carry internals
//! (SQL, Redis replies, paths): those go to the log, next to the request's
//! span. Handlers turn a [`BookingError`] into a status with `?`; the tower
//! layers in front of them refuse with [`Refusal::response`].

use std::{collections::HashMap, time::Duration};

use chrono::SecondsFormat;
use tonic::{Code, Status, body::Body, codegen::http::Response};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::{Span, error, warn};

use crate::{booking::BookingError, domain::FieldError, gate::GateError, store::StoreError};

/// `ErrorInfo.domain` of every slotgate error.
pub const DOMAIN: &str = "slotgate.v1";

/// The field of a call's `rpc` span that names why it was refused.
pub const REASON_FIELD: &str = "error.reason";

/// `ErrorInfo.reason` values.
pub mod reason {
    pub const INVALID_FIELD: &str = "INVALID_FIELD";
    pub const REQUEST_ID_REUSED: &str = "REQUEST_ID_REUSED";
    pub const DUPLICATE: &str = "DUPLICATE";
    pub const SOLD_OUT: &str = "SOLD_OUT";
    pub const REQUEST_IN_PROGRESS: &str = "REQUEST_IN_PROGRESS";
    pub const SLOT_NOT_FOUND: &str = "SLOT_NOT_FOUND";
    pub const MENU_ITEM_NOT_FOUND: &str = "MENU_ITEM_NOT_FOUND";
    pub const RESERVATION_NOT_FOUND: &str = "RESERVATION_NOT_FOUND";
    pub const NOT_CANCELLABLE: &str = "NOT_CANCELLABLE";
    pub const NOT_CONFIRMABLE: &str = "NOT_CONFIRMABLE";
    pub const DEPOSIT_EXPIRED: &str = "DEPOSIT_EXPIRED";
    pub const SLOT_STARTED: &str = "SLOT_STARTED";
    pub const SLOT_NOT_OPEN: &str = "SLOT_NOT_OPEN";
    pub const SLOT_CLOSED: &str = "SLOT_CLOSED";
    pub const EVENTS_COMPACTED: &str = "EVENTS_COMPACTED";
    pub const WATCHER_TOO_SLOW: &str = "WATCHER_TOO_SLOW";
    pub const SHUTTING_DOWN: &str = "SHUTTING_DOWN";
    pub const CAPACITY_BELOW_RESERVED: &str = "CAPACITY_BELOW_RESERVED";
    pub const SEATS_AVAILABLE: &str = "SEATS_AVAILABLE";
    pub const WAITLIST_FULL: &str = "WAITLIST_FULL";
    pub const WAITLIST_OFF: &str = "WAITLIST_OFF";
    pub const WAITLIST_ENTRY_NOT_FOUND: &str = "WAITLIST_ENTRY_NOT_FOUND";
    pub const WAITLIST_ENTRY_ENDED: &str = "WAITLIST_ENTRY_ENDED";
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    pub const ADMIN_REQUIRED: &str = "ADMIN_REQUIRED";
    pub const OVERLOADED: &str = "OVERLOADED";
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    pub const USER_RATE_LIMITED: &str = "USER_RATE_LIMITED";
    pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
    pub const REDIS_UNAVAILABLE: &str = "REDIS_UNAVAILABLE";
    pub const DATABASE_UNAVAILABLE: &str = "DATABASE_UNAVAILABLE";
    pub const INTERNAL: &str = "INTERNAL";
}

/// How long a caller should wait before retrying a dependency outage.
const RETRY_AFTER_OUTAGE: Duration = Duration::from_millis(500);

/// The reason a layer refused a call, carried as a response extension so
/// the tracing layer (outside the refusing layer's span) can record it.
#[derive(Debug, Clone, Copy)]
pub struct Refused(pub &'static str);

/// A refusal being built: code, reason, message, and the details a caller
/// acts on.
#[derive(Debug)]
#[must_use = "a refusal is sent only as a status or a response"]
pub struct Refusal {
    code: Code,
    reason: &'static str,
    message: String,
    metadata: Vec<(&'static str, String)>,
    retry_after: Option<Duration>,
    invalid: Option<Box<FieldError>>,
}

impl Refusal {
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), metadata: Vec::new(), retry_after: None, invalid: None }
    }

    /// Adds an `ErrorInfo.metadata` entry.
    pub fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        self.metadata.push((key, value.to_string()));
        self
    }

    /// Adds a `BadRequest` naming the invalid field.
    fn invalid(mut self, field: FieldError) -> Self {
        self.invalid = Some(Box::new(field));
        self
    }

    /// Adds a `RetryInfo`: how long to wait before trying again.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// The status, its message and details moved in (a refusal is the hot
    /// path of a burst: nothing is copied).
    fn into_status(self) -> Status {
        let mut details = match self.invalid {
            Some(f) => ErrorDetails::with_bad_request_violation(f.field, f.description),
            None => ErrorDetails::new(),
        };
        let metadata: HashMap<String, String> = self.metadata.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        details.set_error_info(self.reason, DOMAIN, metadata);
        if let Some(wait) = self.retry_after {
            details.set_retry_info(Some(wait));
        }
        Status::with_error_details(self.code, self.message, details)
    }

    /// The status, its reason recorded on the current call's span.
    pub fn status(self) -> Status {
        Span::current().record(REASON_FIELD, self.reason);
        self.into_status()
    }

    /// The status as the HTTP response a gRPC client reads it from, for the
    /// tower layers, with the reason as a [`Refused`] extension.
    pub fn response(self) -> Response<Body> {
        let why = self.reason;
        let mut response = self.into_status().into_http();
        response.extensions_mut().insert(Refused(why));
        response
    }
}

fn unavailable(reason: &'static str, dependency: &str, detail: &str) -> Refusal {
    warn!(dependency, detail, "dependency unavailable");
    Refusal::new(Code::Unavailable, reason, format!("{dependency} is unavailable; retry shortly"))
        .with("dependency", dependency)
        .retry_after(RETRY_AFTER_OUTAGE)
}

fn internal(detail: &str) -> Refusal {
    error!(detail, "internal error");
    Refusal::new(Code::Internal, reason::INTERNAL, "internal error")
}

impl From<BookingError> for Status {
    fn from(e: BookingError) -> Self {
        use BookingError as E;
        let message = e.to_string();
        let refusal = match e {
            E::Invalid(f) => Refusal::new(Code::InvalidArgument, reason::INVALID_FIELD, f.to_string())
                .with("field", &f.field)
                .invalid(f),
            E::RequestIdReused => Refusal::new(Code::InvalidArgument, reason::REQUEST_ID_REUSED, message),
            E::SoldOut { remaining } => {
                Refusal::new(Code::FailedPrecondition, reason::SOLD_OUT, message).with("remaining", remaining)
            }
            E::Duplicate { existing } => {
                Refusal::new(Code::AlreadyExists, reason::DUPLICATE, message).with("reservation_id", existing)
            }
            E::RequestInProgress => Refusal::new(Code::Aborted, reason::REQUEST_IN_PROGRESS, message),
            E::SlotNotFound(slot) => Refusal::new(Code::NotFound, reason::SLOT_NOT_FOUND, message).with("slot", slot),
            E::MenuItemNotFound(menu_id) => {
                Refusal::new(Code::NotFound, reason::MENU_ITEM_NOT_FOUND, message).with("menu_id", menu_id)
            }
            E::ReservationNotFound => Refusal::new(Code::NotFound, reason::RESERVATION_NOT_FOUND, message),
            E::NotCancellable(s) => {
                Refusal::new(Code::FailedPrecondition, reason::NOT_CANCELLABLE, message).with("status", s.as_str())
            }
            E::NotConfirmable(s) => {
                Refusal::new(Code::FailedPrecondition, reason::NOT_CONFIRMABLE, message).with("status", s.as_str())
            }
            E::DepositExpired => Refusal::new(Code::FailedPrecondition, reason::DEPOSIT_EXPIRED, message),
            E::SlotStarted(slot) => {
                Refusal::new(Code::FailedPrecondition, reason::SLOT_STARTED, message).with("slot", slot)
            }
            E::SlotNotOpen { slot, opens_at, wait } => {
                Refusal::new(Code::FailedPrecondition, reason::SLOT_NOT_OPEN, message)
                    .with("slot", slot)
                    .with("opens_at", opens_at.to_rfc3339_opts(SecondsFormat::Millis, true))
                    .retry_after(wait)
            }
            E::SlotClosed { slot, closes_at } => Refusal::new(Code::FailedPrecondition, reason::SLOT_CLOSED, message)
                .with("slot", slot)
                .with("closes_at", closes_at.to_rfc3339_opts(SecondsFormat::Millis, true)),
            E::CapacityBelowReserved { slot, reserved } => {
                Refusal::new(Code::FailedPrecondition, reason::CAPACITY_BELOW_RESERVED, message)
                    .with("slot", slot)
                    .with("reserved", reserved)
            }
            E::UserThrottled { retry_after } => {
                Refusal::new(Code::ResourceExhausted, reason::USER_RATE_LIMITED, message).retry_after(retry_after)
            }
            E::DeadlineExceeded => Refusal::new(Code::DeadlineExceeded, reason::DEADLINE_EXCEEDED, message),
            E::EventsCompacted { oldest } => Refusal::new(Code::FailedPrecondition, reason::EVENTS_COMPACTED, message)
                .with("oldest_sequence", oldest),
            E::WatcherTooSlow { resume_after, missed } => {
                Refusal::new(Code::ResourceExhausted, reason::WATCHER_TOO_SLOW, message)
                    .with("resume_after", resume_after)
                    .with("missed", missed)
            }
            E::ShuttingDown => {
                Refusal::new(Code::Unavailable, reason::SHUTTING_DOWN, message).retry_after(RETRY_AFTER_OUTAGE)
            }
            E::SeatsAvailable { left } => {
                Refusal::new(Code::FailedPrecondition, reason::SEATS_AVAILABLE, message).with("remaining", left)
            }
            E::AlreadyWaiting { entry } => {
                Refusal::new(Code::AlreadyExists, reason::DUPLICATE, message).with("waitlist_entry_id", entry)
            }
            E::WaitlistFull { limit } => {
                Refusal::new(Code::FailedPrecondition, reason::WAITLIST_FULL, message).with("limit", limit)
            }
            E::WaitlistOff => Refusal::new(Code::FailedPrecondition, reason::WAITLIST_OFF, message),
            E::WaitlistEntryNotFound => Refusal::new(Code::NotFound, reason::WAITLIST_ENTRY_NOT_FOUND, message),
            E::WaitlistEntryEnded(state) => {
                Refusal::new(Code::FailedPrecondition, reason::WAITLIST_ENTRY_ENDED, message)
                    .with("state", state.as_str())
            }
            E::Gate(GateError::Unavailable(detail) | GateError::Foreign(detail)) => {
                unavailable(reason::REDIS_UNAVAILABLE, "redis", &detail)
            }
            E::Store(StoreError::Unavailable(detail)) => unavailable(reason::DATABASE_UNAVAILABLE, "database", &detail),
            E::Gate(GateError::Protocol(detail)) => internal(&detail),
            E::Store(StoreError::Link(e)) => unavailable(reason::DATABASE_UNAVAILABLE, "database", &e.to_string()),
            E::Store(
                e
                @ (StoreError::Query(_) | StoreError::Migration(_) | StoreError::Corrupt(_) | StoreError::Mismatch(_)),
            ) => internal(&e.to_string()),
            E::Crashed(detail) => internal(&detail),
        };
        refusal.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_field_names_the_field_in_error_info_and_bad_request() {
        let s = Status::from(BookingError::Invalid(FieldError::new("slot.date", "is not a calendar date")));
        assert_eq!(s.code(), Code::InvalidArgument);
        let info = s.get_details_error_info().unwrap();
        assert_eq!((info.reason.as_str(), info.domain.as_str()), (reason::INVALID_FIELD, DOMAIN));
        assert_eq!(info.metadata["field"], "slot.date");
        assert_eq!(s.get_details_bad_request().unwrap().field_violations[0].field, "slot.date");
    }

    #[test]
    fn a_dependency_outage_is_unavailable_with_a_retry_hint_and_no_internals() {
        let s = Status::from(BookingError::Store(StoreError::Unavailable("connection refused at 10.0.0.7".into())));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.get_details_error_info().unwrap().reason, reason::DATABASE_UNAVAILABLE);
        assert!(s.get_details_retry_info().is_some());
        assert!(!s.message().contains("10.0.0.7"), "{}", s.message());
    }

    #[test]
    fn an_internal_error_says_nothing_about_its_cause() {
        let s = Status::from(BookingError::Gate(GateError::Protocol("ERR script line 7: secret".into())));
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "internal error");
    }

    #[test]
    fn a_layers_refusal_carries_its_reason_as_an_extension_and_in_error_info() {
        let response = Refusal::new(Code::Unavailable, reason::OVERLOADED, "busy")
            .retry_after(Duration::from_millis(100))
            .response();
        assert!(matches!(response.extensions().get::<Refused>(), Some(Refused(reason::OVERLOADED))));
        let status = Status::from_header_map(response.headers()).expect("a trailers-only status");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.get_details_error_info().unwrap().reason, reason::OVERLOADED);
        assert_eq!(status.get_details_retry_info().unwrap().retry_delay, Some(Duration::from_millis(100)));
    }
}
