//! The waitlist's requests and its one rule: which waiting entries the
//! seats that come back are offered to.
//!
//! Seats freed in a slot (a cancel, an expiry, a capacity raise) go to the
//! slot's waiting entries in line order before any become public:
//!
//! - an entry whose party fits the seats still to give gets an offer;
//! - one whose party does not fit keeps its place, and the seats go on to
//!   the first later entry that fits; the entry passed over counts it;
//! - an entry passed over [`MAX_PASSES`] times is not passed over again:
//!   from then on the seats that come back are set aside for it (neither
//!   public nor offered to anyone later) until its party fits, so a large
//!   party is not starved by a stream of small ones;
//! - seats no entry takes become public.

use std::{fmt, str::FromStr};

use uuid::Uuid;

use super::{
    FieldError, Limits, SlotKey,
    ids::fnv1a64,
    listing::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE},
    request::parse_id,
};
use crate::pb;

/// How often a waiting entry may be passed over (seats went to a later
/// entry because its party did not fit them) before seats are set aside
/// for it.
pub const MAX_PASSES: i32 = 3;

/// Names a waitlist entry; derived from the join's `request_id`, so a
/// replay names the same entry before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryId(pub Uuid);

/// Namespace of the UUIDv5 derivation of entry ids (not a reservation's):
/// never change it.
const NAMESPACE: Uuid = Uuid::from_u128(0x5e47_6a7e_0000_4000_8000_7761_6974_6c73);

impl EntryId {
    pub fn for_request(caller: &str, request_id: &str) -> Self {
        if caller.is_empty() {
            Self(Uuid::new_v5(&NAMESPACE, request_id.as_bytes()))
        } else {
            Self(Uuid::new_v5(&NAMESPACE, format!("{caller}\0{request_id}").as_bytes()))
        }
    }

    /// The request id of the reservation that offers seats to this entry:
    /// each entry gets at most one offer, so its id is fixed.
    pub fn offer_request_id(self) -> String {
        format!("{OFFER_REQUEST_PREFIX}{}", self.0.hyphenated())
    }
}

const OFFER_REQUEST_PREFIX: &str = "waitlist-offer:";

/// Whether a reservation with this request id may be a waitlist offer (a
/// caller's own request id may look like one too: ending its offer then
/// finds none). Cancels and confirms of other reservations skip the
/// statement that ends offers.
pub fn is_offer_request(request_id: &str) -> bool {
    request_id.starts_with(OFFER_REQUEST_PREFIX)
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for EntryId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitlistState {
    Waiting,
    Offered,
    Accepted,
    Lapsed,
    Left,
}

impl WaitlistState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "WAITING",
            Self::Offered => "OFFERED",
            Self::Accepted => "ACCEPTED",
            Self::Lapsed => "LAPSED",
            Self::Left => "LEFT",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        [Self::Waiting, Self::Offered, Self::Accepted, Self::Lapsed, Self::Left].into_iter().find(|k| k.as_str() == s)
    }

    pub fn to_proto(self) -> pb::WaitlistState {
        match self {
            Self::Waiting => pb::WaitlistState::Waiting,
            Self::Offered => pb::WaitlistState::Offered,
            Self::Accepted => pb::WaitlistState::Accepted,
            Self::Lapsed => pb::WaitlistState::Lapsed,
            Self::Left => pb::WaitlistState::Left,
        }
    }
}

/// A validated `JoinWaitlistRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The authenticated calling service ("" without authentication).
    pub caller: String,
    pub request_id: String,
    pub user_id: String,
    pub slot: SlotKey,
    pub party_size: i32,
}

impl Join {
    pub fn parse(req: &pb::JoinWaitlistRequest, limits: Limits) -> Result<Self, FieldError> {
        let request_id = parse_id(&req.request_id, "request_id")?;
        let user_id = parse_id(&req.user_id, "user_id")?;
        let slot = SlotKey::parse(req.slot.as_ref(), "slot")?;
        if !(1..=limits.max_party_size).contains(&req.party_size) {
            return Err(FieldError::new("party_size", format!("must be between 1 and {}", limits.max_party_size)));
        }
        Ok(Self { caller: String::new(), request_id, user_id, slot, party_size: req.party_size })
    }

    pub fn entry_id(&self) -> EntryId {
        EntryId::for_request(&self.caller, &self.request_id)
    }

    /// Digest of what a replay must repeat unchanged.
    pub fn fingerprint(&self) -> i64 {
        fnv1a64(format!("w1\0{}\0{}\0{}", self.user_id, self.slot, self.party_size).as_bytes())
    }
}

/// An entry id field.
pub fn parse_entry_id(id: &str) -> Result<EntryId, FieldError> {
    id.parse().map_err(|_| FieldError::new("id", "must be a waitlist entry id (a UUID)"))
}

/// A validated `ListWaitlistRequest`: the slot, the page size (one more row
/// is read, to know whether another page follows) and the position after
/// which the page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitlistQuery {
    pub slot: SlotKey,
    pub page_size: i64,
    pub after_position: i32,
}

impl WaitlistQuery {
    /// The token of the page after the entry at `position`.
    pub fn token_after(&self, position: i32) -> String {
        format!("{:016x}{position:08x}", slot_fingerprint(&self.slot))
    }
}

fn slot_fingerprint(slot: &SlotKey) -> u64 {
    fnv1a64(format!("waitlist\0{slot}").as_bytes()) as u64
}

pub fn parse_list_waitlist(req: &pb::ListWaitlistRequest) -> Result<WaitlistQuery, FieldError> {
    let slot = SlotKey::parse(req.slot.as_ref(), "slot")?;
    let page_size = match i64::from(req.page_size) {
        n if n < 0 => return Err(FieldError::new("page_size", "must not be negative")),
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    let after_position = if req.page_token.is_empty() {
        0
    } else {
        let invalid = || FieldError::new("page_token", "is not a page token of this slot's waitlist");
        let token = &req.page_token;
        if token.len() != 24 || !token.is_ascii() {
            return Err(invalid());
        }
        let fingerprint = u64::from_str_radix(&token[..16], 16).map_err(|_| invalid())?;
        let position = u32::from_str_radix(&token[16..], 16).map_err(|_| invalid())?;
        if fingerprint != slot_fingerprint(&slot) {
            return Err(invalid());
        }
        i32::try_from(position).map_err(|_| invalid())?
    };
    Ok(WaitlistQuery { slot, page_size, after_position })
}

/// A waiting entry as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    pub party_size: i32,
    pub passed_over: i32,
}

/// What the rule decided for seats that came back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfferPlan {
    /// Indexes (into the waiters given) of the entries offered seats.
    pub offered: Vec<usize>,
    /// Indexes of the entries passed over: a later entry, or the public,
    /// got seats their party did not fit.
    pub passed: Vec<usize>,
    /// Seats set aside for an entry passed over [`MAX_PASSES`] times.
    pub set_aside: i32,
}

/// Offers `seats` (freed now, plus any set aside before) to `waiters`, in
/// line order; see the module's rule. An entry whose party is larger than
/// `capacity` can never be seated and never has seats set aside for it.
pub fn plan_offers(seats: i32, waiters: &[Waiter], capacity: i32) -> OfferPlan {
    let mut plan = OfferPlan::default();
    let mut left = seats;
    let mut skipped = Vec::new();
    for (i, w) in waiters.iter().enumerate() {
        if left <= 0 {
            break;
        }
        if w.party_size <= left {
            plan.offered.push(i);
            left -= w.party_size;
            plan.passed.append(&mut skipped);
        } else if w.passed_over >= MAX_PASSES && w.party_size <= capacity {
            plan.set_aside = left;
            return plan;
        } else {
            skipped.push(i);
        }
    }
    // Seats nobody took go public, past the entries they did not fit.
    if left > 0 {
        plan.passed.append(&mut skipped);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(party_size: i32, passed_over: i32) -> Waiter {
        Waiter { party_size, passed_over }
    }

    #[test]
    fn seats_go_in_line_order_to_the_entries_that_fit() {
        let plan = plan_offers(4, &[w(2, 0), w(2, 0), w(2, 0)], 10);
        assert_eq!(plan, OfferPlan { offered: vec![0, 1], passed: vec![], set_aside: 0 });
    }

    #[test]
    fn an_entry_that_does_not_fit_keeps_its_place_and_is_passed_over() {
        let plan = plan_offers(3, &[w(5, 0), w(3, 0), w(1, 0)], 10);
        assert_eq!(plan, OfferPlan { offered: vec![1], passed: vec![0], set_aside: 0 });
        // Nobody later fits: the seats go public, past both.
        let plan = plan_offers(3, &[w(5, 0), w(4, 0)], 10);
        assert_eq!(plan, OfferPlan { offered: vec![], passed: vec![0, 1], set_aside: 0 });
        // No seats: nobody is passed over.
        assert_eq!(plan_offers(0, &[w(5, 0)], 10), OfferPlan::default());
    }

    #[test]
    fn an_entry_passed_over_as_often_as_allowed_gets_the_seats_set_aside() {
        let plan = plan_offers(3, &[w(5, MAX_PASSES), w(3, 0)], 10);
        assert_eq!(plan, OfferPlan { offered: vec![], passed: vec![], set_aside: 3 });
        // Set-aside seats plus new ones: it fits now.
        let plan = plan_offers(5, &[w(5, MAX_PASSES), w(3, 0)], 10);
        assert_eq!(plan, OfferPlan { offered: vec![0], passed: vec![], set_aside: 0 });
        // A party larger than the slot never has seats set aside.
        let plan = plan_offers(3, &[w(12, MAX_PASSES), w(3, 0)], 10);
        assert_eq!(plan, OfferPlan { offered: vec![1], passed: vec![0], set_aside: 0 });
    }

    #[test]
    fn a_page_token_is_only_taken_back_for_its_slot() {
        let slot = |time| pb::SlotRef { restaurant_id: 1, date: "2030-01-01".into(), time };
        let req = |t: &str, token: String| pb::ListWaitlistRequest {
            slot: Some(slot(t.into())),
            page_size: 2,
            page_token: token,
        };
        let q = parse_list_waitlist(&req("19:00", String::new())).unwrap();
        let token = q.token_after(7);
        assert_eq!(parse_list_waitlist(&req("19:00", token.clone())).unwrap().after_position, 7);
        assert!(parse_list_waitlist(&req("20:00", token)).is_err());
        assert!(parse_list_waitlist(&req("19:00", "zz".into())).is_err());
    }

    #[test]
    fn entry_ids_are_not_reservation_ids_of_the_same_request() {
        let entry = EntryId::for_request("", "r1");
        assert!(is_offer_request(&entry.offer_request_id()) && !is_offer_request("r1"));
        assert_ne!(entry.0, super::super::ReservationId::for_request("", "r1").0);
        assert_eq!(entry, EntryId::for_request("", "r1"));
        assert_ne!(entry, EntryId::for_request("svc", "r1"));
    }
}
