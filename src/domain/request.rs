use std::collections::HashSet;

use super::{FieldError, ReservationId, SlotKey, ids::fnv1a64};
use crate::pb;

/// Longest `request_id` / `user_id` accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Most of one menu item a pre-order may carry.
pub const MAX_QUANTITY: i32 = 999;

/// Configurable bounds on a reservation request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_party_size: i32,
    pub max_menu_items: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationKind {
    Deposit,
    PreorderPrepay,
}

impl ReservationKind {
    /// Name stored in the database (the proto enum's value name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deposit => "RESERVATION_DEPOSIT",
            Self::PreorderPrepay => "PREORDER_PREPAY",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        [Self::Deposit, Self::PreorderPrepay].into_iter().find(|k| k.as_str() == s)
    }

    pub fn to_proto(self) -> pb::ReservationType {
        match self {
            Self::Deposit => pb::ReservationType::ReservationDeposit,
            Self::PreorderPrepay => pb::ReservationType::PreorderPrepay,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    PendingDeposit,
    Confirmed,
    Cancelled,
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingDeposit => "PENDING_DEPOSIT",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        [Self::PendingDeposit, Self::Confirmed, Self::Cancelled, Self::Expired].into_iter().find(|k| k.as_str() == s)
    }

    pub fn to_proto(self) -> pb::ReservationStatus {
        match self {
            Self::PendingDeposit => pb::ReservationStatus::PendingDeposit,
            Self::Confirmed => pb::ReservationStatus::Confirmed,
            Self::Cancelled => pb::ReservationStatus::Cancelled,
            Self::Expired => pb::ReservationStatus::Expired,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    User,
    Restaurant,
    Refund,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "USER",
            Self::Restaurant => "RESTAURANT",
            Self::Refund => "REFUND",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        [Self::User, Self::Restaurant, Self::Refund].into_iter().find(|k| k.as_str() == s)
    }

    pub fn to_proto(self) -> pb::CancelReason {
        match self {
            Self::User => pb::CancelReason::User,
            Self::Restaurant => pb::CancelReason::Restaurant,
            Self::Refund => pb::CancelReason::Refund,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MenuOrder {
    pub menu_id: i64,
    pub quantity: i32,
}

/// A validated `CreateReservationRequest`.
#[derive(Debug, Clone)]
pub struct NewReservation {
    /// The authenticated calling service ("" without authentication): its
    /// request ids are its own.
    pub caller: String,
    pub request_id: String,
    pub user_id: String,
    pub slot: SlotKey,
    pub party_size: i32,
    pub kind: ReservationKind,
    /// Sorted by menu id, so equal orders fingerprint equally.
    pub items: Vec<MenuOrder>,
}

impl NewReservation {
    pub fn parse(req: &pb::CreateReservationRequest, limits: Limits) -> Result<Self, FieldError> {
        let request_id = parse_id(&req.request_id, "request_id")?;
        let user_id = parse_id(&req.user_id, "user_id")?;
        let slot = SlotKey::parse(req.slot.as_ref(), "slot")?;
        if !(1..=limits.max_party_size).contains(&req.party_size) {
            return Err(FieldError::new("party_size", format!("must be between 1 and {}", limits.max_party_size)));
        }
        let kind = match pb::ReservationType::try_from(req.r#type) {
            Ok(pb::ReservationType::ReservationDeposit) => ReservationKind::Deposit,
            Ok(pb::ReservationType::PreorderPrepay) => ReservationKind::PreorderPrepay,
            Ok(pb::ReservationType::Unspecified) | Err(_) => {
                return Err(FieldError::new("type", "must be RESERVATION_DEPOSIT or PREORDER_PREPAY"));
            }
        };
        let items = parse_items(&req.menu_items, kind, limits)?;
        Ok(Self { caller: String::new(), request_id, user_id, slot, party_size: req.party_size, kind, items })
    }

    pub fn reservation_id(&self) -> ReservationId {
        ReservationId::for_request(&self.caller, &self.request_id)
    }

    /// Digest of everything a retry must repeat unchanged (all fields but the
    /// request id itself).
    pub fn fingerprint(&self) -> i64 {
        use std::fmt::Write;
        let mut canon = String::with_capacity(64 + self.user_id.len() + 16 * self.items.len());
        // Writing to a String cannot fail.
        let _ = write!(canon, "v1\0{}\0{}\0{}\0{}\0", self.user_id, self.slot, self.party_size, self.kind.as_str());
        for item in &self.items {
            let _ = write!(canon, "{}x{},", item.menu_id, item.quantity);
        }
        fnv1a64(canon.as_bytes())
    }
}

pub(super) fn parse_id(value: &str, field: &str) -> Result<String, FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(FieldError::new(field, format!("must be at most {MAX_ID_LEN} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

fn parse_items(
    items: &[pb::MenuItemOrder],
    kind: ReservationKind,
    limits: Limits,
) -> Result<Vec<MenuOrder>, FieldError> {
    match kind {
        ReservationKind::Deposit if !items.is_empty() => {
            return Err(FieldError::new("menu_items", "only PREORDER_PREPAY reservations carry menu items"));
        }
        ReservationKind::Deposit => return Ok(Vec::new()),
        ReservationKind::PreorderPrepay if items.is_empty() => {
            return Err(FieldError::new("menu_items", "PREORDER_PREPAY needs at least one menu item"));
        }
        ReservationKind::PreorderPrepay => {}
    }
    if items.len() > limits.max_menu_items as usize {
        return Err(FieldError::new("menu_items", format!("at most {} distinct items", limits.max_menu_items)));
    }
    let mut seen = HashSet::with_capacity(items.len());
    let mut orders = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if item.menu_id <= 0 {
            return Err(FieldError::new(format!("menu_items[{i}].menu_id"), "must be a positive id"));
        }
        if !seen.insert(item.menu_id) {
            return Err(FieldError::new(
                format!("menu_items[{i}].menu_id"),
                "appears twice; give each item once with its total quantity",
            ));
        }
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(FieldError::new(
                format!("menu_items[{i}].quantity"),
                format!("must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        orders.push(MenuOrder { menu_id: item.menu_id, quantity: item.quantity });
    }
    orders.sort_unstable();
    Ok(orders)
}

/// A validated `CancelReservationRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancellation {
    pub id: ReservationId,
    pub reason: CancelReason,
}

pub fn parse_cancel(req: &pb::CancelReservationRequest) -> Result<Cancellation, FieldError> {
    let id = req.id.parse().map_err(|_| FieldError::new("id", "must be a reservation id (a UUID)"))?;
    let reason = match pb::CancelReason::try_from(req.reason) {
        Ok(pb::CancelReason::User) => CancelReason::User,
        Ok(pb::CancelReason::Restaurant) => CancelReason::Restaurant,
        Ok(pb::CancelReason::Refund) => CancelReason::Refund,
        Ok(pb::CancelReason::Unspecified) | Err(_) => {
            return Err(FieldError::new(
                "reason",
                "must be CANCEL_REASON_USER, CANCEL_REASON_RESTAURANT or CANCEL_REASON_REFUND",
            ));
        }
    };
    Ok(Cancellation { id, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_party_size: 8, max_menu_items: 3 };

    fn valid() -> pb::CreateReservationRequest {
        pb::CreateReservationRequest {
            request_id: "r-1".into(),
            user_id: "u-1".into(),
            slot: Some(pb::SlotRef { restaurant_id: 67, date: "2026-01-16".into(), time: "11:00".into() }),
            party_size: 4,
            r#type: pb::ReservationType::ReservationDeposit as i32,
            menu_items: vec![],
        }
    }

    fn preorder(items: &[(i64, i32)]) -> pb::CreateReservationRequest {
        pb::CreateReservationRequest {
            r#type: pb::ReservationType::PreorderPrepay as i32,
            menu_items: items.iter().map(|&(menu_id, quantity)| pb::MenuItemOrder { menu_id, quantity }).collect(),
            ..valid()
        }
    }

    fn field_of(req: pb::CreateReservationRequest) -> String {
        NewReservation::parse(&req, LIMITS).unwrap_err().field
    }

    #[test]
    fn a_valid_request_parses() {
        let r = NewReservation::parse(&valid(), LIMITS).unwrap();
        assert_eq!((r.party_size, r.kind), (4, ReservationKind::Deposit));
    }

    #[test]
    fn empty_over_long_or_control_character_ids_are_rejected() {
        assert_eq!(field_of(pb::CreateReservationRequest { request_id: String::new(), ..valid() }), "request_id");
        assert_eq!(field_of(pb::CreateReservationRequest { request_id: "x".repeat(129), ..valid() }), "request_id");
        assert_eq!(field_of(pb::CreateReservationRequest { user_id: String::new(), ..valid() }), "user_id");
        assert_eq!(field_of(pb::CreateReservationRequest { user_id: "a\nb".into(), ..valid() }), "user_id");
        assert!(
            NewReservation::parse(&pb::CreateReservationRequest { user_id: "x".repeat(128), ..valid() }, LIMITS)
                .is_ok()
        );
    }

    #[test]
    fn a_party_size_outside_one_to_max_is_rejected() {
        for size in [0, -1, 9] {
            assert_eq!(field_of(pb::CreateReservationRequest { party_size: size, ..valid() }), "party_size");
        }
    }

    #[test]
    fn an_unspecified_or_unknown_type_is_rejected() {
        assert_eq!(field_of(pb::CreateReservationRequest { r#type: 0, ..valid() }), "type");
        assert_eq!(field_of(pb::CreateReservationRequest { r#type: 42, ..valid() }), "type");
    }

    #[test]
    fn menu_items_are_required_for_preorders_and_forbidden_for_deposits() {
        assert_eq!(field_of(preorder(&[])), "menu_items");
        let deposit_with_items = pb::CreateReservationRequest { r#type: 1, ..preorder(&[(1, 1)]) };
        assert_eq!(field_of(deposit_with_items), "menu_items");
    }

    #[test]
    fn duplicate_zero_negative_or_too_many_items_are_rejected() {
        assert_eq!(field_of(preorder(&[(1, 1), (1, 2)])), "menu_items[1].menu_id");
        assert_eq!(field_of(preorder(&[(1, 0)])), "menu_items[0].quantity");
        assert_eq!(field_of(preorder(&[(1, 1), (2, -3)])), "menu_items[1].quantity");
        assert_eq!(field_of(preorder(&[(0, 1)])), "menu_items[0].menu_id");
        assert_eq!(field_of(preorder(&[(1, 1), (2, 1), (3, 1), (4, 1)])), "menu_items");
    }

    #[test]
    fn the_fingerprint_ignores_item_order_but_not_content() {
        let a = NewReservation::parse(&preorder(&[(1, 2), (2, 1)]), LIMITS).unwrap();
        let b = NewReservation::parse(&preorder(&[(2, 1), (1, 2)]), LIMITS).unwrap();
        let c = NewReservation::parse(&preorder(&[(2, 2), (1, 1)]), LIMITS).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        let other_size =
            NewReservation::parse(&pb::CreateReservationRequest { party_size: 3, ..valid() }, LIMITS).unwrap();
        assert_ne!(NewReservation::parse(&valid(), LIMITS).unwrap().fingerprint(), other_size.fingerprint());
    }
}
