//! Time as slotgate sees it.
//!
//! Every decision that replicas must agree on reads a shared clock, never a
//! replica's own: deposit deadlines, confirmation and expiry are decided by
//! PostgreSQL's `now()`, hold leases by Redis's `TIME`. A replica's own clock
//! is read only where a day's precision is enough (is a slot's date past?).
//!
//! A [`Clock`] shifts slotgate's time by an [`Offset`]: zero in production;
//! tests hold a [`ManualClock`] and move it forward, so deadlines pass
//! without sleeping. The shift is applied to the database's clock in SQL
//! (`now() + offset`), so shifted time stays one shared clock.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};

/// How far slotgate's time is ahead of the shared clocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offset(pub TimeDelta);

impl Offset {
    /// In microseconds, as the SQL statements take it.
    pub fn micros(self) -> i64 {
        self.0.num_microseconds().unwrap_or(i64::MAX)
    }
}

pub trait Clock: Send + Sync + 'static {
    fn offset(&self) -> Offset;

    /// This replica's idea of now, shifted; for day-precision checks only.
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset().0
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn offset(&self) -> Offset {
        Offset::default()
    }
}

/// A clock that runs with the shared clocks but can be moved forward.
#[derive(Debug, Default)]
pub struct ManualClock(Mutex<TimeDelta>);

impl ManualClock {
    pub fn starting_now() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn advance(&self, by: Duration) {
        let mut offset = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *offset += TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
    }
}

impl Clock for ManualClock {
    fn offset(&self) -> Offset {
        Offset(*self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
