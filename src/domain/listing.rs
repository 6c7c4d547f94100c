//! `ListReservations` and `ListAvailability` requests, and the page token.
//!
//! Pages follow AIP-158: a page size of 0 means [`DEFAULT_PAGE_SIZE`], more
//! than [`MAX_PAGE_SIZE`] is read as that, a negative one is refused. The
//! token is keyset-based: it holds the listing order's key of the last
//! reservation returned, and the next page starts after that key. Rows
//! inserted or cancelled between pages shift nothing: every reservation
//! that matches the filter on both pages is returned once, in order. A
//! token also holds a fingerprint of its filter and statuses, and one used
//! with another filter is refused.

use chrono::{DateTime, NaiveDate, NaiveTime, Timelike, Utc};
use uuid::Uuid;

use super::{FieldError, ReservationStatus, SlotKey, ids::fnv1a64, parse_date, request::MAX_ID_LEN};
use crate::pb;

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 1_000;

/// Which reservations a listing walks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFilter {
    /// One user's, in the order they were made.
    User(String),
    /// One slot's, in the order they were made.
    Slot(SlotKey),
    /// Every slot of a restaurant's day: by slot time, then in the order
    /// they were made.
    Day { restaurant_id: i64, date: NaiveDate },
}

/// Where a page starts: after this key of the listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The slot's time (day listings only; midnight otherwise).
    pub slot_time: NaiveTime,
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: ListFilter,
    /// Empty: every status.
    pub statuses: Vec<ReservationStatus>,
    /// Rows to read: one more than the page, to know whether another
    /// follows.
    pub page_size: i64,
    pub after: Option<Cursor>,
}

impl ListQuery {
    /// The token that continues after `last`, the page's last reservation.
    pub fn token_after(&self, slot_time: NaiveTime, created_at: DateTime<Utc>, id: Uuid) -> String {
        let mut bytes = Vec::with_capacity(TOKEN_LEN);
        bytes.push(TOKEN_VERSION);
        bytes.extend_from_slice(&filter_fingerprint(&self.filter, &self.statuses).to_be_bytes());
        bytes.extend_from_slice(&slot_time.num_seconds_from_midnight().to_be_bytes());
        bytes.extend_from_slice(&created_at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(id.as_bytes());
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

const TOKEN_VERSION: u8 = 1;
const TOKEN_LEN: usize = 1 + 8 + 4 + 8 + 16;

/// A fingerprint of what a listing shows, so a token is only taken back
/// with the filter it was made for.
fn filter_fingerprint(filter: &ListFilter, statuses: &[ReservationStatus]) -> i64 {
    let mut canonical = match filter {
        ListFilter::User(user) => format!("user\0{user}"),
        ListFilter::Slot(slot) => format!("slot\0{slot}"),
        ListFilter::Day { restaurant_id, date } => format!("day\0{restaurant_id}\0{date}"),
    };
    for status in statuses {
        canonical.push('\0');
        canonical.push_str(status.as_str());
    }
    fnv1a64(canonical.as_bytes())
}

fn decode_token(token: &str, fingerprint: i64) -> Result<Cursor, FieldError> {
    let invalid = || FieldError::new("page_token", "is not a page token of this listing (same filter and statuses)");
    if token.len() != 2 * TOKEN_LEN || !token.is_ascii() {
        return Err(invalid());
    }
    let bytes: Vec<u8> = (0..TOKEN_LEN)
        .map(|i| u8::from_str_radix(&token[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| invalid())?;
    let take = |from: usize, n: usize| &bytes[from..from + n];
    if bytes[0] != TOKEN_VERSION || take(1, 8) != fingerprint.to_be_bytes() {
        return Err(invalid());
    }
    let seconds = u32::from_be_bytes(take(9, 4).try_into().map_err(|_| invalid())?);
    let micros = i64::from_be_bytes(take(13, 8).try_into().map_err(|_| invalid())?);
    Ok(Cursor {
        slot_time: NaiveTime::from_num_seconds_from_midnight_opt(seconds, 0).ok_or_else(invalid)?,
        created_at: DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?,
        id: Uuid::from_slice(take(21, 16)).map_err(|_| invalid())?,
    })
}

/// AIP-158 page size: 0 is the default, above the maximum is the maximum.
pub fn page_size(requested: i32) -> Result<i64, FieldError> {
    match i64::from(requested) {
        n if n < 0 => Err(FieldError::new("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

pub fn parse_list_reservations(req: &pb::ListReservationsRequest) -> Result<ListQuery, FieldError> {
    let by_user = !req.user_id.is_empty();
    let by_slot = req.slot.is_some();
    let by_day = req.restaurant_id != 0 || !req.date.is_empty();
    let filter = match (by_user, by_slot, by_day) {
        (true, false, false) => {
            if req.user_id.len() > MAX_ID_LEN {
                return Err(FieldError::new("user_id", format!("must be at most {MAX_ID_LEN} bytes")));
            }
            ListFilter::User(req.user_id.clone())
        }
        (false, true, false) => ListFilter::Slot(SlotKey::parse(req.slot.as_ref(), "slot")?),
        (false, false, true) => {
            if req.restaurant_id <= 0 {
                return Err(FieldError::new("restaurant_id", "must be a positive id (with date)"));
            }
            let date = parse_date(&req.date).map_err(|d| FieldError::new("date", d))?;
            ListFilter::Day { restaurant_id: req.restaurant_id, date }
        }
        _ => {
            return Err(FieldError::new(
                "user_id",
                "give exactly one filter: user_id, slot, or restaurant_id with date",
            ));
        }
    };
    let mut statuses = Vec::with_capacity(req.statuses.len());
    for (i, &status) in req.statuses.iter().enumerate() {
        let status = match pb::ReservationStatus::try_from(status) {
            Ok(pb::ReservationStatus::PendingDeposit) => ReservationStatus::PendingDeposit,
            Ok(pb::ReservationStatus::Confirmed) => ReservationStatus::Confirmed,
            Ok(pb::ReservationStatus::Cancelled) => ReservationStatus::Cancelled,
            Ok(pb::ReservationStatus::Expired) => ReservationStatus::Expired,
            Ok(pb::ReservationStatus::Unspecified) | Err(_) => {
                return Err(FieldError::new(format!("statuses[{i}]"), "is not a reservation status"));
            }
        };
        if !statuses.contains(&status) {
            statuses.push(status);
        }
    }
    statuses.sort_by_key(|s| s.as_str());
    let page_size = page_size(req.page_size)?;
    let after = match req.page_token.as_str() {
        "" => None,
        token => Some(decode_token(token, filter_fingerprint(&filter, &statuses))?),
    };
    Ok(ListQuery { filter, statuses, page_size, after })
}

/// Which reservation events a watcher wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// 0: every restaurant.
    pub restaurant_id: i64,
    /// Empty: every user.
    pub user_id: String,
}

impl EventFilter {
    /// Whether an event of `user_id`'s reservation at `restaurant_id` is one.
    pub fn takes(&self, restaurant_id: i64, user_id: &str) -> bool {
        (self.restaurant_id == 0 || restaurant_id == self.restaurant_id)
            && (self.user_id.is_empty() || user_id == self.user_id)
    }
}

/// A validated `WatchReservationEventsRequest`: the cursor and the filter.
pub fn parse_watch(req: &pb::WatchReservationEventsRequest) -> Result<(u64, EventFilter), FieldError> {
    if req.restaurant_id < 0 {
        return Err(FieldError::new("restaurant_id", "must be a positive id, or 0 for every restaurant"));
    }
    if req.user_id.len() > MAX_ID_LEN {
        return Err(FieldError::new("user_id", format!("must be at most {MAX_ID_LEN} bytes")));
    }
    if req.after_sequence > i64::MAX as u64 {
        return Err(FieldError::new("after_sequence", "is beyond any sequence"));
    }
    let filter = EventFilter { restaurant_id: req.restaurant_id, user_id: req.user_id.clone() };
    Ok((req.after_sequence, filter))
}

/// A validated `ListAvailabilityRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayQuery {
    pub restaurant_id: i64,
    pub date: NaiveDate,
    pub party_size: i32,
}

pub fn parse_list_availability(req: &pb::ListAvailabilityRequest, max_party_size: i32) -> Result<DayQuery, FieldError> {
    if req.restaurant_id <= 0 {
        return Err(FieldError::new("restaurant_id", "must be a positive id"));
    }
    let date = parse_date(&req.date).map_err(|d| FieldError::new("date", d))?;
    let party_size = match req.party_size {
        0 => 1,
        n if (1..=max_party_size).contains(&n) => n,
        _ => return Err(FieldError::new("party_size", format!("must be between 1 and {max_party_size} (0: 1)"))),
    };
    Ok(DayQuery { restaurant_id: req.restaurant_id, date, party_size })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_user(user: &str, token: &str) -> pb::ListReservationsRequest {
        pb::ListReservationsRequest { user_id: user.into(), page_token: token.into(), ..Default::default() }
    }

    #[test]
    fn page_sizes_follow_aip_158() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(1_000_000).unwrap(), MAX_PAGE_SIZE);
        assert_eq!(page_size(-1).unwrap_err().field, "page_size");
    }

    #[test]
    fn a_token_continues_its_own_listing_and_no_other() {
        let query = parse_list_reservations(&by_user("u1", "")).unwrap();
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::from_u128(42);
        let token = query.token_after(NaiveTime::MIN, at, id);
        let next = parse_list_reservations(&by_user("u1", &token)).unwrap();
        assert_eq!(next.after, Some(Cursor { slot_time: NaiveTime::MIN, created_at: at, id }));
        assert_eq!(parse_list_reservations(&by_user("u2", &token)).unwrap_err().field, "page_token");
        let mut with_status = by_user("u1", &token);
        with_status.statuses = vec![pb::ReservationStatus::Confirmed as i32];
        assert_eq!(parse_list_reservations(&with_status).unwrap_err().field, "page_token");
        for garbage in ["x", "zz", &token[..token.len() - 2], &format!("{token}00")] {
            assert_eq!(parse_list_reservations(&by_user("u1", garbage)).unwrap_err().field, "page_token");
        }
    }

    #[test]
    fn exactly_one_filter_is_taken() {
        let slot = pb::SlotRef { restaurant_id: 67, date: "2036-12-24".into(), time: "19:00".into() };
        let none = pb::ListReservationsRequest::default();
        let two = pb::ListReservationsRequest { user_id: "u".into(), slot: Some(slot.clone()), ..Default::default() };
        let date_alone = pb::ListReservationsRequest { date: "2036-12-24".into(), ..Default::default() };
        assert!(parse_list_reservations(&none).is_err());
        assert!(parse_list_reservations(&two).is_err());
        assert_eq!(parse_list_reservations(&date_alone).unwrap_err().field, "restaurant_id");
        let day = pb::ListReservationsRequest { restaurant_id: 67, date: "2036-12-24".into(), ..Default::default() };
        assert!(matches!(parse_list_reservations(&day).unwrap().filter, ListFilter::Day { restaurant_id: 67, .. }));
        let bad = pb::ListReservationsRequest { statuses: vec![0], ..by_user("u", "") };
        assert_eq!(parse_list_reservations(&bad).unwrap_err().field, "statuses[0]");
    }
}
