use std::fmt;

use chrono::{NaiveDate, NaiveTime};

use super::{FieldError, ReservationId};
use crate::pb;

/// A slot as callers name it: restaurant, local date and local start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotKey {
    pub restaurant_id: i64,
    pub date: NaiveDate,
    pub time: NaiveTime,
}

impl SlotKey {
    /// Parses a proto `SlotRef`; `field` is the path of the message in the
    /// request (e.g. `slot`, `slots[3].slot`) for error reports.
    pub fn parse(slot: Option<&pb::SlotRef>, field: &str) -> Result<Self, FieldError> {
        let slot = slot.ok_or_else(|| FieldError::new(field, "is required"))?;
        if slot.restaurant_id <= 0 {
            return Err(FieldError::new(format!("{field}.restaurant_id"), "must be a positive id"));
        }
        Ok(Self {
            restaurant_id: slot.restaurant_id,
            date: parse_date(&slot.date).map_err(|d| FieldError::new(format!("{field}.date"), d))?,
            time: parse_time(&slot.time).map_err(|d| FieldError::new(format!("{field}.time"), d))?,
        })
    }

    pub fn to_proto(self) -> pb::SlotRef {
        pb::SlotRef {
            restaurant_id: self.restaurant_id,
            date: self.date.format("%Y-%m-%d").to_string(),
            time: self.time.format("%H:%M").to_string(),
        }
    }
}

/// A slot's state as the database knows it: what a seat counter is loaded
/// or reconciled from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotFigures {
    pub capacity: i32,
    pub reserved: i32,
    /// The slot's version in the database when these figures were read:
    /// every change of `capacity` or `reserved` moves it up.
    pub version: i64,
    /// Every active reservation's user.
    pub holders: Vec<Holder>,
    /// Every reservation of the slot, whatever its status: a replay of any
    /// of them must be recognised as one, not mistaken for a duplicate or a
    /// new request.
    pub requests: Vec<KnownRequest>,
}

/// Seats left in a slot, and its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    pub left: i32,
    pub capacity: i32,
}

/// A user holding an active reservation in a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub user: String,
    pub id: ReservationId,
}

/// A reservation and the fingerprint of the request that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownRequest {
    pub id: ReservationId,
    pub fingerprint: i64,
}

/// `67:2026-01-16:11:00`: the slot's part of its Redis keys (the hash tag).
impl fmt::Display for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.restaurant_id, self.date.format("%Y-%m-%d"), self.time.format("%H:%M"))
    }
}

/// Strict `YYYY-MM-DD`: chrono alone would also take `2026-1-5`.
pub fn parse_date(s: &str) -> Result<NaiveDate, &'static str> {
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return Err("must be a date formatted YYYY-MM-DD");
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| "is not a calendar date")
}

/// Strict `HH:MM`, 00:00 to 23:59.
fn parse_time(s: &str) -> Result<NaiveTime, &'static str> {
    let b = s.as_bytes();
    let shaped = b.len() == 5 && b[2] == b':' && b.iter().enumerate().all(|(i, c)| i == 2 || c.is_ascii_digit());
    if !shaped {
        return Err("must be a time formatted HH:MM");
    }
    NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| "is not a time of day (00:00 to 23:59)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(date: &str, time: &str) -> pb::SlotRef {
        pb::SlotRef { restaurant_id: 67, date: date.into(), time: time.into() }
    }

    #[test]
    fn a_well_formed_slot_parses_and_prints_its_hash_tag() {
        let key = SlotKey::parse(Some(&slot("2026-01-16", "11:00")), "slot").unwrap();
        assert_eq!(key.to_string(), "67:2026-01-16:11:00");
        assert_eq!(key.to_proto(), slot("2026-01-16", "11:00"));
    }

    #[test]
    fn impossible_dates_and_times_are_rejected_with_the_field_named() {
        for (date, time, field) in [
            ("2026-02-30", "11:00", "slot.date"),
            ("2026-13-01", "11:00", "slot.date"),
            ("2026-1-5", "11:00", "slot.date"),
            ("", "11:00", "slot.date"),
            ("2026-01-16", "24:00", "slot.time"),
            ("2026-01-16", "11:60", "slot.time"),
            ("2026-01-16", "9:00", "slot.time"),
            ("2026-01-16", "11:00:00", "slot.time"),
        ] {
            let err = SlotKey::parse(Some(&slot(date, time)), "slot").unwrap_err();
            assert_eq!(err.field, field, "{date} {time}");
        }
    }

    #[test]
    fn a_missing_slot_or_a_non_positive_restaurant_is_rejected() {
        assert_eq!(SlotKey::parse(None, "slot").unwrap_err().field, "slot");
        let mut s = slot("2026-01-16", "11:00");
        s.restaurant_id = 0;
        assert_eq!(SlotKey::parse(Some(&s), "slot").unwrap_err().field, "slot.restaurant_id");
    }
}
