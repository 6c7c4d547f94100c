use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc};

use super::{EntryId, FieldError, ReservationId};
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
    /// The sale window and the slot's start (in its restaurant's zone);
    /// changing them moves `version` up too.
    pub window: Window,
    /// Every active reservation's user.
    pub holders: Vec<Holder>,
    /// Every reservation of the slot, whatever its status: a replay of any
    /// of them must be recognised as one, not mistaken for a duplicate or a
    /// new request.
    pub requests: Vec<KnownRequest>,
    pub waitlist: Waitlisted,
}

/// A slot's waitlist, as its counter is loaded with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waitlisted {
    /// The slot's own limit (`None`: the server's default; 0: off).
    pub limit: Option<i32>,
    /// Seats set aside for a waiting entry passed over too often: neither
    /// public nor offered. Seats public are `capacity - reserved -
    /// set_aside`.
    pub set_aside: i32,
    /// The highest position handed out.
    pub last_position: i32,
    /// Every entry in line (WAITING): its user and id.
    pub waiting: Vec<(String, EntryId)>,
    /// Every entry of the slot, whatever its state, with its join's
    /// fingerprint: a replay of any is recognised as one.
    pub joins: Vec<(EntryId, i64)>,
}

/// When a slot takes reservations: from `opens_at` (none: at once) until
/// `closes_at` (none: until it starts), and never from `starts_at` on.
/// Instants, to the millisecond (the gate's precision).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub opens_at: Option<DateTime<Utc>>,
    pub closes_at: Option<DateTime<Utc>>,
    /// The slot's local date and time in its restaurant's zone. `None` only
    /// for a counter loaded by a slotgate that did not record it.
    pub starts_at: Option<DateTime<Utc>>,
}

/// Whether a slot takes reservations at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    Open,
    NotYetOpen,
    Closed,
    Started,
}

impl Window {
    /// The state at `now`. A slot that has started is `Started` whatever
    /// its window says; one that has closed is `Closed` even if it never
    /// opened (closed before its opening).
    pub fn state_at(&self, now: DateTime<Utc>) -> SlotState {
        if self.starts_at.is_some_and(|t| now >= t) {
            SlotState::Started
        } else if self.closes_at.is_some_and(|t| now >= t) {
            SlotState::Closed
        } else if self.opens_at.is_some_and(|t| now < t) {
            SlotState::NotYetOpen
        } else {
            SlotState::Open
        }
    }
}

impl SlotState {
    pub fn to_proto(self) -> pb::SlotState {
        match self {
            Self::Open => pb::SlotState::Open,
            Self::NotYetOpen => pb::SlotState::NotYetOpen,
            Self::Closed => pb::SlotState::Closed,
            Self::Started => pb::SlotState::Started,
        }
    }
}

/// Seats left in a slot, its capacity, its window and its state, as the
/// gate's clock had it when they were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    pub left: i32,
    pub capacity: i32,
    pub window: Window,
    pub state: SlotState,
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
/// Written field by field: every request's keys and fingerprint are built
/// from it, and a chrono format string would be parsed anew each time.
impl fmt::Display for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (date, time) = (self.date, self.time);
        if (0..=9999).contains(&date.year()) {
            write!(
                f,
                "{}:{:04}-{:02}-{:02}:{:02}:{:02}",
                self.restaurant_id,
                date.year(),
                date.month(),
                date.day(),
                time.hour(),
                time.minute()
            )
        } else {
            // Years a request cannot name (it takes four digits), as chrono
            // writes them.
            write!(f, "{}:{}:{}", self.restaurant_id, date.format("%Y-%m-%d"), time.format("%H:%M"))
        }
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
    // Digits only, checked above: read them directly (every request names
    // a slot, and a chrono format string would be parsed each time).
    NaiveDate::from_ymd_opt(digits(&b[..4]) as i32, digits(&b[5..7]), digits(&b[8..])).ok_or("is not a calendar date")
}

/// The number ASCII digits (at most four here) spell.
fn digits(b: &[u8]) -> u32 {
    b.iter().fold(0, |n, c| n * 10 + u32::from(c - b'0'))
}

/// Strict `HH:MM`, 00:00 to 23:59.
fn parse_time(s: &str) -> Result<NaiveTime, &'static str> {
    let b = s.as_bytes();
    let shaped = b.len() == 5 && b[2] == b':' && b.iter().enumerate().all(|(i, c)| i == 2 || c.is_ascii_digit());
    if !shaped {
        return Err("must be a time formatted HH:MM");
    }
    NaiveTime::from_hms_opt(digits(&b[..2]), digits(&b[3..]), 0).ok_or("is not a time of day (00:00 to 23:59)")
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
    fn the_hash_tag_is_what_chrono_writes_for_every_year() {
        for (y, m, d, h, min) in [
            (1, 1, 1, 0, 0),
            (999, 12, 31, 23, 59),
            (2026, 7, 4, 9, 5),
            (9999, 1, 2, 3, 4),
            (-1, 1, 1, 0, 0),
            (10000, 1, 1, 0, 0),
        ] {
            let key = SlotKey {
                restaurant_id: -3,
                date: NaiveDate::from_ymd_opt(y, m, d).unwrap(),
                time: NaiveTime::from_hms_opt(h, min, 0).unwrap(),
            };
            let chrono = format!("-3:{}:{}", key.date.format("%Y-%m-%d"), key.time.format("%H:%M"));
            assert_eq!(key.to_string(), chrono);
        }
    }

    #[test]
    fn dates_and_times_are_read_as_chrono_reads_them() {
        for y in ["0000", "1999", "2024", "2026", "9999"] {
            for m in 0..=13 {
                for d in 0..=32 {
                    let text = format!("{y}-{m:02}-{d:02}");
                    assert_eq!(parse_date(&text).ok(), NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok(), "{text}");
                }
            }
        }
        for h in 0..=25 {
            for m in 0..=61 {
                let text = format!("{h:02}:{m:02}");
                assert_eq!(parse_time(&text).ok(), NaiveTime::parse_from_str(&text, "%H:%M").ok(), "{text}");
            }
        }
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
    fn a_slots_state_follows_its_window_and_start() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let window = Window {
            opens_at: Some(at("2036-12-20T09:00:00Z")),
            closes_at: Some(at("2036-12-24T08:00:00Z")),
            starts_at: Some(at("2036-12-24T10:00:00Z")),
        };
        assert_eq!(window.state_at(at("2036-12-20T08:59:59.999Z")), SlotState::NotYetOpen);
        assert_eq!(window.state_at(at("2036-12-20T09:00:00Z")), SlotState::Open);
        assert_eq!(window.state_at(at("2036-12-24T08:00:00Z")), SlotState::Closed);
        assert_eq!(window.state_at(at("2036-12-24T10:00:00Z")), SlotState::Started);
        // Closed before it opened: closed.
        let early_close = Window { closes_at: Some(at("2036-12-19T00:00:00Z")), ..window };
        assert_eq!(early_close.state_at(at("2036-12-19T12:00:00Z")), SlotState::Closed);
        assert_eq!(Window::default().state_at(at("2036-12-19T12:00:00Z")), SlotState::Open);
    }

    #[test]
    fn a_missing_slot_or_a_non_positive_restaurant_is_rejected() {
        assert_eq!(SlotKey::parse(None, "slot").unwrap_err().field, "slot");
        let mut s = slot("2026-01-16", "11:00");
        s.restaurant_id = 0;
        assert_eq!(SlotKey::parse(Some(&s), "slot").unwrap_err().field, "slot.restaurant_id");
    }
}
