//! The one place where errors become `tonic::Status`.
//!
//! Every status carries a `google.rpc.ErrorInfo` with a machine-readable
//! `reason` (the constants in [`reason`]), so callers never parse messages.
//! Messages never carry internals (SQL, Redis replies, paths): those go to
//! the log, next to the request's span.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::{error, warn};

use crate::{booking::BookingError, gate::GateError, store::StoreError};

/// `ErrorInfo.domain` of every slotgate error.
pub const DOMAIN: &str = "slotgate.v1";

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
    pub const CAPACITY_BELOW_RESERVED: &str = "CAPACITY_BELOW_RESERVED";
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
const RETRY_AFTER: Duration = Duration::from_millis(500);

fn status<const N: usize>(code: Code, reason: &str, message: String, metadata: [(&str, String); N]) -> Status {
    crate::telemetry::record_reason(reason);
    let metadata: HashMap<String, String> = metadata.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Status::with_error_details(code, message, ErrorDetails::with_error_info(reason, DOMAIN, metadata))
}

fn unavailable(reason: &str, dependency: &str, detail: &str) -> Status {
    crate::telemetry::record_reason(reason);
    warn!(dependency, detail, "dependency unavailable");
    let mut details = ErrorDetails::with_error_info(
        reason,
        DOMAIN,
        HashMap::from([("dependency".to_owned(), dependency.to_owned())]),
    );
    details.set_retry_info(Some(RETRY_AFTER));
    Status::with_error_details(Code::Unavailable, format!("{dependency} is unavailable; retry shortly"), details)
}

fn internal(detail: &str) -> Status {
    error!(detail, "internal error");
    status(Code::Internal, reason::INTERNAL, "internal error".into(), [])
}

impl From<BookingError> for Status {
    fn from(e: BookingError) -> Self {
        use BookingError as E;
        let message = e.to_string();
        match e {
            E::Invalid(f) => {
                crate::telemetry::record_reason(reason::INVALID_FIELD);
                let mut details = ErrorDetails::with_bad_request_violation(&f.field, &f.description);
                details.set_error_info(
                    reason::INVALID_FIELD,
                    DOMAIN,
                    HashMap::from([("field".to_owned(), f.field.clone())]),
                );
                Status::with_error_details(Code::InvalidArgument, f.to_string(), details)
            }
            E::RequestIdReused => status(Code::InvalidArgument, reason::REQUEST_ID_REUSED, message, []),
            E::SoldOut { remaining } => {
                status(Code::FailedPrecondition, reason::SOLD_OUT, message, [("remaining", remaining.to_string())])
            }
            E::Duplicate { existing } => {
                status(Code::AlreadyExists, reason::DUPLICATE, message, [("reservation_id", existing.to_string())])
            }
            E::RequestInProgress => status(Code::Aborted, reason::REQUEST_IN_PROGRESS, message, []),
            E::SlotNotFound(slot) => {
                status(Code::NotFound, reason::SLOT_NOT_FOUND, message, [("slot", slot.to_string())])
            }
            E::MenuItemNotFound(menu_id) => {
                status(Code::NotFound, reason::MENU_ITEM_NOT_FOUND, message, [("menu_id", menu_id.to_string())])
            }
            E::ReservationNotFound => status(Code::NotFound, reason::RESERVATION_NOT_FOUND, message, []),
            E::NotCancellable(s) => {
                status(Code::FailedPrecondition, reason::NOT_CANCELLABLE, message, [("status", s.as_str().to_owned())])
            }
            E::NotConfirmable(s) => {
                status(Code::FailedPrecondition, reason::NOT_CONFIRMABLE, message, [("status", s.as_str().to_owned())])
            }
            E::DepositExpired => status(Code::FailedPrecondition, reason::DEPOSIT_EXPIRED, message, []),
            E::CapacityBelowReserved { slot, reserved } => status(
                Code::FailedPrecondition,
                reason::CAPACITY_BELOW_RESERVED,
                message,
                [("slot", slot.to_string()), ("reserved", reserved.to_string())],
            ),
            E::UserThrottled { retry_after } => {
                crate::telemetry::record_reason(reason::USER_RATE_LIMITED);
                let mut details = ErrorDetails::with_error_info(reason::USER_RATE_LIMITED, DOMAIN, HashMap::new());
                details.set_retry_info(Some(retry_after));
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            E::DeadlineExceeded => status(Code::DeadlineExceeded, reason::DEADLINE_EXCEEDED, message, []),
            E::Gate(GateError::Unavailable(detail)) => unavailable(reason::REDIS_UNAVAILABLE, "redis", &detail),
            E::Store(StoreError::Unavailable(detail)) => unavailable(reason::DATABASE_UNAVAILABLE, "database", &detail),
            E::Gate(GateError::Protocol(detail)) => internal(&detail),
            E::Store(e @ (StoreError::Query(_) | StoreError::Migration(_) | StoreError::Corrupt(_))) => {
                internal(&e.to_string())
            }
            E::Crashed(detail) => internal(&detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldError;

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
}
