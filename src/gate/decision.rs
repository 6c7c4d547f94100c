//! The gate's answers to a booking and to a join, read from the scripts'
//! replies (`acquire.lua`, `join.lua`, and the sale window both share,
//! `window.lua`).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::GateError;
use crate::domain::{EntryId, ReservationId};

/// Why a slot takes neither bookings nor joins now, by Redis's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shut {
    /// The sale window opens at `opens_at`, `wait` from now.
    NotOpen { opens_at: DateTime<Utc>, wait: Duration },
    /// The sale window closed at `closes_at`.
    Closed { closes_at: DateTime<Utc> },
    /// The slot started at `starts_at`.
    Started { starts_at: DateTime<Utc> },
}

impl Shut {
    /// Replies 7 to 9 of `window.lua` (`None` for any other code).
    pub(super) fn decode(code: i64, detail: &str, script: &str) -> Option<Result<Self, GateError>> {
        let bad = || GateError::Protocol(format!("{script}: bad detail {detail:?}"));
        let instant = |ms: &str| {
            let ms: i64 = ms.parse().map_err(|_| bad())?;
            DateTime::from_timestamp_millis(ms).ok_or_else(bad).map(|t| (ms, t))
        };
        let shut = match code {
            7 => (|| {
                let (opens, now) = detail.split_once(' ').ok_or_else(bad)?;
                let (opens, opens_at) = instant(opens)?;
                let now: i64 = now.parse().map_err(|_| bad())?;
                // `now` in microseconds: the exact time left, never more.
                let wait = Duration::from_micros(opens.saturating_mul(1_000).saturating_sub(now).max(0) as u64);
                Ok(Self::NotOpen { opens_at, wait })
            })(),
            8 => instant(detail).map(|(_, closes_at)| Self::Closed { closes_at }),
            9 => instant(detail).map(|(_, starts_at)| Self::Started { starts_at }),
            _ => return None,
        };
        Some(shut)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::NotOpen { .. } => "SLOT_NOT_OPEN",
            Self::Closed { .. } => "SLOT_CLOSED",
            Self::Started { .. } => "SLOT_STARTED",
        }
    }
}

/// The gate's decision on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Seats taken and a hold recorded; `remaining` seats are left.
    Admitted {
        remaining: i64,
    },
    /// No counter for the slot: load it from the database and ask again.
    Cold,
    SoldOut {
        remaining: i64,
    },
    /// The user already holds `existing` in this slot.
    Duplicate {
        existing: ReservationId,
    },
    /// The user is in the slot's waitlist, as `entry`.
    Waiting {
        entry: EntryId,
    },
    /// This request id was admitted before with the same payload; `held`
    /// while its transaction is still in flight.
    Replay {
        held: bool,
    },
    /// This request id was admitted before with another payload.
    Reused,
    /// The slot takes no bookings now.
    Shut(Shut),
}

impl Admission {
    /// `acquire.lua`'s reply.
    pub(super) fn decode(code: i64, detail: &str) -> Result<Self, GateError> {
        if let Some(shut) = Shut::decode(code, detail, "acquire") {
            return shut.map(Self::Shut);
        }
        let bad = || GateError::Protocol(format!("acquire: bad detail {detail:?}"));
        let number = || detail.parse::<i64>().map_err(|_| bad());
        Ok(match code {
            0 => Self::Admitted { remaining: number()? },
            1 => Self::Cold,
            2 => Self::SoldOut { remaining: number()? },
            3 => Self::Duplicate { existing: detail.parse().map_err(|_| bad())? },
            4 => Self::Replay { held: number()? == 1 },
            5 => Self::Reused,
            // Only an attempt whose caller already gave up (and voided it)
            // gets this; nobody reads it.
            6 => return Err(GateError::Unavailable("the attempt was given up before it ran".into())),
            10 => Self::Waiting { entry: detail.parse().map_err(|_| bad())? },
            _ => return Err(GateError::Protocol(format!("acquire: unknown code {code}"))),
        })
    }

    /// The outcome as spans and logs name it.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Self::Admitted { .. } => "ADMITTED",
            Self::Cold => "COLD",
            Self::SoldOut { .. } => "SOLD_OUT",
            Self::Duplicate { .. } | Self::Waiting { .. } => "DUPLICATE",
            Self::Replay { .. } => "REPLAY",
            Self::Reused => "REUSED",
            Self::Shut(shut) => shut.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shut_slot_reads_its_instant_and_the_wait_never_overstated() {
        let shut = Shut::decode(7, "1767225600000 1767225599999500", "t").unwrap().unwrap();
        let opens_at = DateTime::from_timestamp_millis(1_767_225_600_000).unwrap();
        assert_eq!(shut, Shut::NotOpen { opens_at, wait: Duration::from_micros(500) });
        assert_eq!(Shut::decode(8, "1767225600000", "t").unwrap().unwrap(), Shut::Closed { closes_at: opens_at });
        assert!(Shut::decode(9, "x", "t").unwrap().is_err());
        assert!(Shut::decode(2, "4", "t").is_none());
    }
}
