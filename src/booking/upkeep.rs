//! Running the slots: opening and closing them, changing capacities and
//! windows, time zones, menus, and keeping the gate's counters true (warm,
//! read, reconcile, reap expired holds). With a database-only strategy there are no counters, and the
//! counter passes do nothing.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use tracing::warn;

use super::{Booking, BookingError, create::COLD_RETRIES};
use crate::{
    domain::{
        FieldError, MenuUpload, Remaining, ReservationId, SlotCapacity, SlotFigures, SlotKey, Waitlisted, ZoneChange,
    },
    gate::{self, Gate, GateError, Overwrite, Probe, Reconciled, Release, Warm},
    store::{CloseOutcome, OpenOutcome, Opened, ZoneOutcome},
};

/// What a reaper pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Expired holds whose reservation had committed: seats stay taken.
    pub finalized: u32,
    /// Expired holds with no reservation: released, their seats went back.
    pub released: u32,
}

/// One counter a reconcile pass rewrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Correction {
    pub slot: SlotKey,
    pub left_before: i64,
    pub left_after: i64,
    pub capacity: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Warm slots looked at.
    pub checked: u32,
    /// Slots skipped because a hold was in flight or they changed meanwhile.
    pub busy: u32,
    pub corrections: Vec<Correction>,
    pub took: Duration,
}

/// A slot [`Booking::close_slots`] closed, and when its sales ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    pub slot: SlotKey,
    pub closes_at: DateTime<Utc>,
}

/// What [`Booking::put_restaurant`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSet {
    pub time_zone: String,
    pub slots_moved: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warmed {
    pub warmed: u32,
    pub already_warm: u32,
    pub took: Duration,
}

/// Slots probed per Redis round trip during a reconcile or reaper pass.
const PROBE_BATCH: usize = 500;

/// The first date the counter passes look at by default: the oldest slot
/// date whose keys may still be in Redis (older slots' keys have expired,
/// holds and all), so every hold is reaped and every counter reconciled.
pub(super) fn oldest_kept() -> NaiveDate {
    gate::oldest_kept(Utc::now().date_naive())
}

impl Booking {
    /// Creates slots or changes capacities and windows, then brings their
    /// counters in line: a new slot's counter is written, a changed one
    /// brought to the new capacity and window (commutes with holds in
    /// flight; see `resize.lua`), a cold one loaded. Every counter is warm
    /// when this returns, also for a window that opens later, so the
    /// opening burst meets warm counters.
    pub async fn open_slots(self: &Arc<Self>, slots: Vec<SlotCapacity>) -> Result<Vec<Opened>, BookingError> {
        let this = Arc::clone(self);
        self.run_to_completion(async move {
            let opened = match this.store.open_slots(&slots, this.offer_terms()).await? {
                OpenOutcome::Opened(opened) => opened,
                OpenOutcome::BelowReserved { slot, reserved } => {
                    return Err(BookingError::CapacityBelowReserved { slot, reserved });
                }
                OpenOutcome::Started { index, starts_at } => {
                    let at = starts_at.to_rfc3339_opts(SecondsFormat::Secs, true);
                    let why = format!("has already started (at {at}, in its restaurant's time zone)");
                    return Err(FieldError::new(format!("slots[{index}].slot"), why).into());
                }
            };
            let Some(gate) = this.gate() else { return Ok(opened) };
            for o in &opened {
                if o.waitlist {
                    this.refresh_counter(o.slot).await;
                    continue;
                }
                match o.previous_capacity {
                    None => {
                        let figures = SlotFigures {
                            capacity: o.capacity,
                            version: o.version,
                            window: o.window,
                            waitlist: Waitlisted { limit: o.waitlist_limit, ..Default::default() },
                            ..Default::default()
                        };
                        gate.warm(&o.slot, &figures, Overwrite::Always).await?;
                    }
                    Some(_) => {
                        if !gate.resize(&o.slot, o.capacity, &o.window, o.version).await? {
                            this.load_counter(gate, o.slot).await?;
                        }
                    }
                }
            }
            Ok(opened)
        })
        .await
    }

    /// Ends the sales of `slots` now, by the gate's clock (the one that
    /// decides), unless they ended earlier; see [`Closed`]. All or nothing.
    pub async fn close_slots(self: &Arc<Self>, slots: Vec<SlotKey>) -> Result<Vec<Closed>, BookingError> {
        let this = Arc::clone(self);
        self.run_to_completion(async move {
            // To the millisecond, the gate's precision, rounded down: closed
            // from the moment this call reached the gate.
            let now = match this.gate() {
                Some(gate) => gate.now_for(&slots).await?,
                None => this.clock.now(),
            };
            let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
            let closed = match this.store.close_slots(&slots, now).await? {
                CloseOutcome::Closed(closed) => closed,
                CloseOutcome::Missing(slot) => return Err(BookingError::SlotNotFound(slot)),
            };
            if let Some(gate) = this.gate() {
                for c in &closed {
                    // A cold counter has nothing to change: its load reads
                    // the new window.
                    gate.resize(&c.slot, c.capacity, &c.window, c.version).await?;
                }
            }
            Ok(closed
                .into_iter()
                .map(|c| Closed { slot: c.slot, closes_at: c.window.closes_at.unwrap_or(now) })
                .collect())
        })
        .await
    }

    /// Sets a restaurant's time zone; the starts of its slots (those whose
    /// keys may still be in Redis) move with it, counters included.
    pub async fn put_restaurant(self: &Arc<Self>, change: ZoneChange) -> Result<ZoneSet, BookingError> {
        let this = Arc::clone(self);
        self.run_to_completion(async move {
            let zone = change.time_zone.as_deref();
            let set = this.store.put_restaurant(change.restaurant_id, zone, oldest_kept()).await?;
            let (time_zone, moved, slots) = match set {
                ZoneOutcome::Set { time_zone, moved, slots } => (time_zone, moved, slots),
                ZoneOutcome::Unknown => {
                    return Err(FieldError::new("time_zone", "is not a time zone of the IANA database").into());
                }
            };
            // Every slot, not only the moved ones: a counter a failed earlier
            // call left behind is brought up to date (a resize at a version
            // the counter has changes nothing).
            if let Some(gate) = this.gate() {
                for s in &slots {
                    gate.resize(&s.slot, s.capacity, &s.window, s.version).await?;
                }
            }
            Ok(ZoneSet { time_zone, slots_moved: moved })
        })
        .await
    }

    /// Creates or updates menu items; returns how many were written.
    pub async fn put_menu(&self, menu: MenuUpload) -> Result<usize, BookingError> {
        Ok(self.store.put_menu(&menu).await?)
    }

    /// Loads the counter of every slot dated `from` or later that has none.
    pub async fn warm_slots(&self, from: Option<NaiveDate>) -> Result<Warmed, BookingError> {
        let started = Instant::now();
        let (mut warmed, mut already_warm) = (0, 0);
        if let Some(gate) = self.gate() {
            for (slot, figures) in self.store.slots_from(from).await? {
                match gate.warm(&slot, &figures, Overwrite::IfCold).await? {
                    Warm::Written => warmed += 1,
                    Warm::AlreadyWarm => already_warm += 1,
                    // A change overtook the figures read: load them again.
                    Warm::Stale { .. } => {
                        self.load_counter(gate, slot).await?;
                        warmed += 1;
                    }
                }
            }
        }
        Ok(Warmed { warmed, already_warm, took: started.elapsed() })
    }

    /// Seats left, capacity, window and state of a slot: from its counter
    /// (loaded if cold) and the gate's clock, or from the database when no
    /// gate is used.
    ///
    /// A slot dated before the oldest date whose keys Redis keeps has
    /// started everywhere and has no counter to read: it is answered from
    /// the database too.
    pub async fn remaining(&self, slot: SlotKey) -> Result<Remaining, BookingError> {
        let Some(gate) = self.gate().filter(|_| slot.date >= oldest_kept()) else {
            let figures = self.store.slot_figures(&slot).await?.ok_or(BookingError::SlotNotFound(slot))?;
            return Ok(Remaining {
                left: figures.capacity - figures.reserved - figures.waitlist.set_aside,
                capacity: figures.capacity,
                window: figures.window,
                state: figures.window.state_at(self.clock.now()),
            });
        };
        for _ in 0..COLD_RETRIES {
            if let Some(remaining) = gate.remaining(&slot).await? {
                return Ok(remaining);
            }
            self.load_counter(gate, slot).await?;
        }
        Err(GateError::Unavailable("the slot's counter keeps disappearing".into()).into())
    }

    /// The counter state of every slot dated `from` or later.
    async fn probe_from(&self, gate: &Gate, from: NaiveDate) -> Result<Vec<(SlotKey, Probe)>, BookingError> {
        let keys = self.store.slot_keys_from(from).await?;
        let mut probed = Vec::with_capacity(keys.len());
        for batch in keys.chunks(PROBE_BATCH) {
            probed.extend(batch.iter().copied().zip(gate.probe(batch).await?));
        }
        Ok(probed)
    }

    /// Rewrites drifted counters of the warm slots dated `from` or later
    /// (default: every slot whose keys may still be in Redis).
    ///
    /// Order matters: each slot's epoch is read before its database figures,
    /// and the rewrite only happens if the epoch has not moved since and no
    /// hold is in flight, so a reservation landing meanwhile is never
    /// overwritten by figures that predate it.
    pub async fn reconcile(&self, from: Option<NaiveDate>) -> Result<Reconciliation, BookingError> {
        let started = Instant::now();
        let Some(gate) = self.gate() else { return Ok(Reconciliation::default()) };
        // Whose namespace it is comes first: counters of another
        // deployment's are not this one's to correct.
        gate.check_owner().await?;
        let from = from.unwrap_or_else(oldest_kept);
        let probed = self.probe_from(gate, from).await?;
        let figures: HashMap<SlotKey, SlotFigures> = self.store.slots_from(Some(from)).await?.into_iter().collect();

        let mut report = Reconciliation::default();
        for (slot, probe) in probed {
            let (true, Some(epoch)) = (probe.warm, probe.epoch.as_deref()) else { continue };
            report.checked += 1;
            if probe.holds > 0 {
                report.busy += 1;
                continue;
            }
            // Deleted meanwhile, or created after the key list: next pass.
            let Some(figures) = figures.get(&slot) else { continue };
            // The script compares every entry, not only the counts, before it
            // rewrites anything.
            let want = i64::from(figures.capacity - figures.reserved);
            match gate.reconcile(&slot, epoch, figures).await? {
                Reconciled::Corrected { left_before } => report.corrections.push(Correction {
                    slot,
                    left_before,
                    left_after: want,
                    capacity: figures.capacity,
                }),
                Reconciled::Busy => report.busy += 1,
                Reconciled::AlreadyRight | Reconciled::Cold => {}
            }
        }
        report.took = started.elapsed();
        self.metrics.counters_corrected.fetch_add(report.corrections.len() as u64, Ordering::Relaxed);
        for c in &report.corrections {
            warn!(slot = %c.slot, left_before = c.left_before, left_after = c.left_after, "reconciled a drifted counter");
        }
        Ok(report)
    }

    /// Ends every hold whose lease has run out: the process that took it died
    /// or lost Redis before finalizing or releasing it. A hold is finalized
    /// (the seats stay taken) only when its own attempt committed its
    /// reservation in its own slot; any other is released: a request id
    /// reused in another slot, or a second attempt of an id that another
    /// attempt committed, took seats that nothing books. Both are done with
    /// the hold's own nonce, so several replicas reaping at once, or the
    /// owner waking up late, end each hold once. Every slot whose keys may
    /// still be in Redis is looked at, however old. Seats released go to
    /// the slot's waitlist first, if it has one (an offer round).
    pub async fn reap(&self) -> Result<Reaped, BookingError> {
        let Some(gate) = self.gate() else { return Ok(Reaped::default()) };
        let mut expired = Vec::new();
        for (slot, probe) in self.probe_from(gate, oldest_kept()).await? {
            if probe.holds > 0 {
                expired.extend(gate.expired_holds(&slot).await?.into_iter().map(|hold| (slot, hold)));
            }
        }
        if expired.is_empty() {
            return Ok(Reaped::default());
        }
        let ids: Vec<ReservationId> = expired.iter().map(|(_, hold)| hold.id).collect();
        let committed = self.store.committed(&ids).await?;
        let mut reaped = Reaped::default();
        // Slots whose waitlist gets the seats released first, and how many.
        let slots: Vec<SlotKey> = expired.iter().map(|(slot, _)| *slot).collect();
        let with_waitlist: std::collections::HashSet<SlotKey> =
            self.store.with_waitlist(&slots).await?.into_iter().collect();
        let mut withheld: std::collections::BTreeMap<SlotKey, i32> = Default::default();
        for (slot, hold) in expired {
            let row = committed.get(&hold.id).filter(|row| row.slot == slot);
            if let Some(row) = row.filter(|row| row.attempt == Some(hold.nonce)) {
                if gate.finalize(&slot, hold.id, hold.nonce, &hold.user, row.slot_version).await? {
                    reaped.finalized += 1;
                }
                continue;
            }
            let how = match row {
                Some(row) if row.active => Release::KeepEntries,
                Some(_) => Release::ForgetUser,
                None => Release::Forget,
            };
            let withhold = with_waitlist.contains(&slot);
            let seats = gate.release_keeping(&slot, hold.id, &hold.user, hold.nonce, how, withhold).await?;
            if seats > 0 {
                reaped.released += 1;
                if withhold {
                    *withheld.entry(slot).or_default() += seats as i32;
                }
            }
        }
        // Seats kept out of the counters go to the slots' waitlists first;
        // then each counter is loaded afresh (with whatever is left public),
        // also if the offer failed: until then it reads low, never high.
        for (slot, seats) in withheld {
            if let Err(e) = self.store.offer_round(&slot, seats, self.offer_terms()).await {
                warn!(error = %e, %slot, "could not offer released seats to the waitlist");
            }
            self.refresh_counter(slot).await;
        }
        if reaped != Reaped::default() {
            self.metrics.holds_reaped_finalized.fetch_add(reaped.finalized.into(), Ordering::Relaxed);
            self.metrics.holds_reaped_released.fetch_add(reaped.released.into(), Ordering::Relaxed);
            warn!(finalized = reaped.finalized, released = reaped.released, "reaped expired holds");
        }
        Ok(reaped)
    }
}
