//! Validated operator requests: opening and closing slots, restaurants'
//! time zones.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{FieldError, SlotKey};
use crate::pb;

/// A validated entry of `OpenSlotsRequest`: the slot, its capacity and its
/// sale window (`Window::starts_at` is the database's to work out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotCapacity {
    pub slot: SlotKey,
    pub capacity: i32,
    pub opens_at: Option<DateTime<Utc>>,
    pub closes_at: Option<DateTime<Utc>>,
    /// The slot's own waitlist limit (`None`: the server's default; 0: no
    /// waitlist).
    pub waitlist_limit: Option<i32>,
    /// The slot's own offer window in seconds (`None`: the server's
    /// default).
    pub offer_window_secs: Option<i32>,
}

/// A proto timestamp as an instant, rounded up to the millisecond (the
/// gate's precision: a window never opens or closes before the instant
/// given).
pub fn parse_timestamp(ts: &prost_types::Timestamp, field: &str) -> Result<DateTime<Utc>, FieldError> {
    let invalid = || FieldError::new(field, "is not a valid timestamp");
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(invalid());
    }
    let millis = (i64::from(ts.nanos) + 999_999) / 1_000_000;
    // Years 1 to 9999, as RFC 3339 (and PostgreSQL) take them.
    if !(-62_135_596_800..=253_402_300_799).contains(&ts.seconds) {
        return Err(invalid());
    }
    DateTime::from_timestamp_millis(ts.seconds * 1_000 + millis).ok_or_else(invalid)
}

/// The longest waitlist a slot may have.
pub const MAX_WAITLIST_LIMIT: i32 = 10_000;

/// The longest an offer may stay open: a week.
pub const MAX_OFFER_WINDOW_SECS: i32 = 7 * 24 * 3600;

/// Most slots one `OpenSlots` call may open.
pub const MAX_OPEN_SLOTS: usize = 10_000;

/// `slots` of an `OpenSlots` or `CloseSlots` call: 1 to [`MAX_OPEN_SLOTS`].
fn check_slot_count(count: usize) -> Result<(), FieldError> {
    match count {
        0 => Err(FieldError::new("slots", "give at least one slot")),
        n if n > MAX_OPEN_SLOTS => Err(FieldError::new("slots", format!("at most {MAX_OPEN_SLOTS} slots per call"))),
        _ => Ok(()),
    }
}

pub fn parse_open_slots(req: &pb::OpenSlotsRequest) -> Result<Vec<SlotCapacity>, FieldError> {
    check_slot_count(req.slots.len())?;
    let mut seen = HashSet::with_capacity(req.slots.len());
    req.slots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let slot = SlotKey::parse(s.slot.as_ref(), &format!("slots[{i}].slot"))?;
            if s.capacity <= 0 {
                return Err(FieldError::new(format!("slots[{i}].capacity"), "must be positive"));
            }
            if !seen.insert(slot) {
                return Err(FieldError::new(format!("slots[{i}].slot"), "appears twice"));
            }
            let opens_at =
                s.opens_at.as_ref().map(|t| parse_timestamp(t, &format!("slots[{i}].opens_at"))).transpose()?;
            let closes_at =
                s.closes_at.as_ref().map(|t| parse_timestamp(t, &format!("slots[{i}].closes_at"))).transpose()?;
            if let (Some(opens), Some(closes)) = (opens_at, closes_at)
                && closes <= opens
            {
                return Err(FieldError::new(format!("slots[{i}].closes_at"), "must be after opens_at"));
            }
            if s.waitlist_limit.is_some_and(|l| !(0..=MAX_WAITLIST_LIMIT).contains(&l)) {
                let why = format!("must be between 0 and {MAX_WAITLIST_LIMIT}");
                return Err(FieldError::new(format!("slots[{i}].waitlist_limit"), why));
            }
            if s.offer_window_secs.is_some_and(|w| !(1..=MAX_OFFER_WINDOW_SECS).contains(&w)) {
                let why = format!("must be between 1 and {MAX_OFFER_WINDOW_SECS}");
                return Err(FieldError::new(format!("slots[{i}].offer_window_secs"), why));
            }
            Ok(SlotCapacity {
                slot,
                capacity: s.capacity,
                opens_at,
                closes_at,
                waitlist_limit: s.waitlist_limit,
                offer_window_secs: s.offer_window_secs,
            })
        })
        .collect()
}

/// Slots named by `CloseSlotsRequest`, each once.
pub fn parse_close_slots(req: &pb::CloseSlotsRequest) -> Result<Vec<SlotKey>, FieldError> {
    check_slot_count(req.slots.len())?;
    let mut seen = HashSet::with_capacity(req.slots.len());
    let mut slots = Vec::with_capacity(req.slots.len());
    for (i, s) in req.slots.iter().enumerate() {
        let slot = SlotKey::parse(Some(s), &format!("slots[{i}]"))?;
        if !seen.insert(slot) {
            return Err(FieldError::new(format!("slots[{i}]"), "appears twice"));
        }
        slots.push(slot);
    }
    Ok(slots)
}

/// A validated `PutRestaurantRequest`. Whether the zone exists is the time
/// zone database's to say (PostgreSQL's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneChange {
    pub restaurant_id: i64,
    /// `None`: the server's default zone.
    pub time_zone: Option<String>,
}

/// Whether `zone` is shaped like an IANA time zone name (`Asia/Seoul`,
/// `America/Argentina/Buenos_Aires`, `Etc/GMT+5`, `UTC`).
pub fn valid_zone_name(zone: &str) -> bool {
    (1..=64).contains(&zone.len())
        && zone.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-+.".contains(&b))
        })
}

pub fn parse_put_restaurant(req: &pb::PutRestaurantRequest) -> Result<ZoneChange, FieldError> {
    if req.restaurant_id <= 0 {
        return Err(FieldError::new("restaurant_id", "must be a positive id"));
    }
    let time_zone = match req.time_zone.as_str() {
        "" => None,
        zone if valid_zone_name(zone) => Some(zone.to_owned()),
        _ => return Err(FieldError::new("time_zone", "must be an IANA time zone name, e.g. Asia/Seoul")),
    };
    Ok(ZoneChange { restaurant_id: req.restaurant_id, time_zone })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_slots_rejects_non_positive_capacity_and_repeated_slots() {
        let slot = Some(pb::SlotRef { restaurant_id: 67, date: "2026-01-16".into(), time: "11:00".into() });
        let req = |caps: &[i32]| pb::OpenSlotsRequest {
            slots: caps
                .iter()
                .map(|&capacity| pb::SlotCapacity { slot: slot.clone(), capacity, ..Default::default() })
                .collect(),
        };
        assert_eq!(parse_open_slots(&req(&[0])).unwrap_err().field, "slots[0].capacity");
        assert_eq!(parse_open_slots(&req(&[-5])).unwrap_err().field, "slots[0].capacity");
        assert_eq!(parse_open_slots(&req(&[4, 4])).unwrap_err().field, "slots[1].slot");
        assert_eq!(parse_open_slots(&req(&[])).unwrap_err().field, "slots");
        assert_eq!(parse_open_slots(&req(&[40])).unwrap()[0].capacity, 40);
    }

    #[test]
    fn timestamps_round_up_to_the_millisecond_and_windows_must_open_before_they_close() {
        let at = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        assert_eq!(parse_timestamp(&at(10, 1), "t").unwrap().timestamp_millis(), 10_001);
        assert_eq!(parse_timestamp(&at(10, 0), "t").unwrap().timestamp_millis(), 10_000);
        assert!(parse_timestamp(&at(10, -1), "t").is_err());
        let slot = Some(pb::SlotRef { restaurant_id: 67, date: "2036-12-24".into(), time: "19:00".into() });
        let req = pb::OpenSlotsRequest {
            slots: vec![pb::SlotCapacity {
                slot,
                capacity: 4,
                opens_at: Some(at(20, 0)),
                closes_at: Some(at(20, 0)),
                ..Default::default()
            }],
        };
        assert_eq!(parse_open_slots(&req).unwrap_err().field, "slots[0].closes_at");
    }
}
