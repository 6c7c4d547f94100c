//! Opening slots: creating them, changing their capacities, sale windows
//! and waitlist settings, all or nothing; seats a capacity raise adds go to
//! the waitlist first.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use diesel::{
    QueryableByName,
    sql_types::{Array, BigInt, Date, Integer, Nullable, Time, Timestamptz},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{
    StoreError,
    offers::{FreedIn, OfferTerms, offer_freed},
    prepared::prepared,
    slots::{OPEN_SLOTS_LOCK, SlotRow, slot_columns},
};
use crate::domain::{SlotCapacity, SlotKey, Window};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub slot: SlotKey,
    pub capacity: i32,
    /// Seats not public after this call: reserved (offers to the waitlist
    /// included), and set aside for it.
    pub reserved: i32,
    /// The capacity before this call; `None` for a slot it created.
    pub previous_capacity: Option<i32>,
    /// The slot's version after this call.
    pub version: i64,
    /// Its window after this call, start included.
    pub window: Window,
    /// Whether this call changed the slot (capacity or window).
    pub changed: bool,
    /// Its own waitlist limit after this call (`None`: the server's).
    pub waitlist_limit: Option<i32>,
    /// Its waitlist had a say (offers made or seats set aside by a raise,
    /// set-aside seats cut by a cut, its limit changed): the gate's counter
    /// is loaded afresh rather than resized.
    pub waitlist: bool,
}

#[derive(Debug)]
pub enum OpenOutcome {
    Opened(Vec<Opened>),
    /// The new capacity of `slot` is below the seats it has reserved;
    /// nothing was changed.
    BelowReserved {
        slot: SlotKey,
        reserved: i32,
    },
    /// The slot (entry `index` of the call) has already started; nothing
    /// was changed.
    Started {
        index: usize,
        starts_at: DateTime<Utc>,
    },
}

/// Creates slots or changes their capacities and windows, all or nothing.
/// A slot that has started by slotgate's clock (`now() + offset`) is
/// refused, whether it exists or not.
pub async fn open_slots(
    conn: &mut AsyncPgConnection,
    slots: &[SlotCapacity],
    terms: OfferTerms,
) -> Result<OpenOutcome, StoreError> {
    #[derive(QueryableByName)]
    struct Existing {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(embed)]
        slot: SlotRow,
        #[diesel(sql_type = Integer)]
        waiting: i32,
        #[diesel(sql_type = Integer)]
        set_aside: i32,
        #[diesel(sql_type = Nullable<Integer>)]
        waitlist_limit: Option<i32>,
        #[diesel(sql_type = Nullable<Integer>)]
        offer_window_secs: Option<i32>,
    }
    let offset = terms.offset;
    #[derive(QueryableByName)]
    struct Start {
        #[diesel(sql_type = Timestamptz)]
        starts_at: DateTime<Utc>,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        started: bool,
    }
    let restaurants: Vec<i64> = slots.iter().map(|s| s.slot.restaurant_id).collect();
    let dates: Vec<NaiveDate> = slots.iter().map(|s| s.slot.date).collect();
    let times: Vec<NaiveTime> = slots.iter().map(|s| s.slot.time).collect();

    let outcome = conn
        .transaction(async |conn| {
            prepared("SELECT pg_advisory_xact_lock($1)").bind::<BigInt, _>(OPEN_SLOTS_LOCK).execute(conn).await?;
            prepared("INSERT INTO restaurants (id) SELECT DISTINCT unnest($1::bigint[]) ON CONFLICT DO NOTHING")
                .bind::<Array<BigInt>, _>(&restaurants)
                .execute(conn)
                .await?;
            let starts: Vec<Start> = prepared(
                "SELECT (v.d + v.t) AT TIME ZONE COALESCE(z.time_zone, current_setting('TimeZone')) AS starts_at,
                        (v.d + v.t) AT TIME ZONE COALESCE(z.time_zone, current_setting('TimeZone'))
                          <= now() + $4 * interval '1 microsecond' AS started
                 FROM unnest($1::bigint[], $2::date[], $3::time[]) WITH ORDINALITY AS v(r, d, t, i)
                 JOIN restaurants z ON z.id = v.r
                 ORDER BY v.i",
            )
            .bind::<Array<BigInt>, _>(&restaurants)
            .bind::<Array<Date>, _>(&dates)
            .bind::<Array<Time>, _>(&times)
            .bind::<BigInt, _>(offset.micros())
            .load(conn)
            .await?;
            if let Some(index) = starts.iter().position(|s| s.started) {
                return Ok(OpenOutcome::Started { index, starts_at: starts[index].starts_at });
            }
            // Locks the existing rows: winners of these slots wait until the
            // capacities below are committed, so `reserved` cannot move under
            // the check.
            let existing: Vec<Existing> = prepared(format!(
                "SELECT s.id, {}, s.waiting, s.set_aside, s.waitlist_limit, s.offer_window_secs
                 FROM slots s
                 JOIN restaurants z ON z.id = s.restaurant_id
                 JOIN unnest($1::bigint[], $2::date[], $3::time[]) AS v(r, d, t)
                   ON s.restaurant_id = v.r AND s.slot_date = v.d AND s.slot_time = v.t
                 ORDER BY s.id
                 FOR UPDATE OF s",
                slot_columns()
            ))
            .bind::<Array<BigInt>, _>(&restaurants)
            .bind::<Array<Date>, _>(&dates)
            .bind::<Array<Time>, _>(&times)
            .load(conn)
            .await?;
            let existing: HashMap<SlotKey, Existing> = existing.into_iter().map(|e| (e.slot.key(), e)).collect();
            let ids_by_slot: HashMap<SlotKey, i64> = existing.iter().map(|(k, e)| (*k, e.id)).collect();

            let mut opened = Vec::with_capacity(slots.len());
            let mut changed = Vec::new();
            let mut fresh = Vec::new();
            let mut raises = Vec::new();
            for (s, start) in slots.iter().zip(&starts) {
                let window = Window { opens_at: s.opens_at, closes_at: s.closes_at, starts_at: Some(start.starts_at) };
                match existing.get(&s.slot) {
                    Some(Existing { slot: e, .. }) if s.capacity < e.reserved => {
                        return Ok(OpenOutcome::BelowReserved { slot: s.slot, reserved: e.reserved });
                    }
                    Some(x @ Existing { id, slot: e, .. }) => {
                        let waitlist_differs =
                            x.waitlist_limit != s.waitlist_limit || x.offer_window_secs != s.offer_window_secs;
                        let differs = e.capacity != s.capacity
                            || e.window.opens_at != s.opens_at
                            || e.window.closes_at != s.closes_at
                            || waitlist_differs;
                        if differs {
                            changed.push((*id, s));
                        }
                        // Seats a raise adds come back like freed ones;
                        // set-aside seats a cut leaves no room for go, and
                        // those left are planned again for the new
                        // capacity (the party they wait for may no longer
                        // fit the slot at all).
                        let raised = s.capacity - e.capacity;
                        let concerns_waitlist = x.waiting > 0 || x.set_aside > 0;
                        let replan = (raised > 0 && concerns_waitlist) || (raised != 0 && x.set_aside > 0);
                        if replan {
                            let aside = x.set_aside.min(s.capacity - e.reserved);
                            raises.push((*id, raised.max(0), x.waiting, aside));
                        }
                        let cut_aside = x.set_aside > s.capacity - e.reserved;
                        opened.push(Opened {
                            slot: s.slot,
                            capacity: s.capacity,
                            reserved: e.reserved + x.set_aside.min(s.capacity - e.reserved),
                            previous_capacity: Some(e.capacity),
                            // The UPDATE below moves it by one.
                            version: e.version + i64::from(differs),
                            window,
                            changed: differs,
                            waitlist_limit: s.waitlist_limit,
                            waitlist: replan || cut_aside || x.waitlist_limit != s.waitlist_limit,
                        });
                    }
                    None => {
                        fresh.push(*s);
                        opened.push(Opened {
                            slot: s.slot,
                            capacity: s.capacity,
                            reserved: 0,
                            previous_capacity: None,
                            version: 1,
                            window,
                            changed: true,
                            waitlist_limit: s.waitlist_limit,
                            waitlist: false,
                        });
                    }
                }
            }
            if !changed.is_empty() {
                prepared(
                    "UPDATE slots s SET capacity = v.cap, opens_at = v.opens, closes_at = v.closes,
                            waitlist_limit = v.wl, offer_window_secs = v.ow,
                            set_aside = LEAST(s.set_aside, v.cap - s.reserved),
                            version = s.version + 1, updated_at = now()
                     FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::timestamptz[], $5::int[], $6::int[])
                          AS v(id, cap, opens, closes, wl, ow)
                     WHERE s.id = v.id",
                )
                .bind::<Array<BigInt>, _>(changed.iter().map(|(id, _)| *id).collect::<Vec<_>>())
                .bind::<Array<Integer>, _>(changed.iter().map(|(_, s)| s.capacity).collect::<Vec<_>>())
                .bind::<Array<Nullable<Timestamptz>>, _>(changed.iter().map(|(_, s)| s.opens_at).collect::<Vec<_>>())
                .bind::<Array<Nullable<Timestamptz>>, _>(changed.iter().map(|(_, s)| s.closes_at).collect::<Vec<_>>())
                .bind::<Array<Nullable<Integer>>, _>(changed.iter().map(|(_, s)| s.waitlist_limit).collect::<Vec<_>>())
                .bind::<Array<Nullable<Integer>>, _>(
                    changed.iter().map(|(_, s)| s.offer_window_secs).collect::<Vec<_>>(),
                )
                .execute(conn)
                .await?;
            }
            // Seats a raise added go to the waitlist first (and set-aside
            // seats are planned again after any change of capacity), slot by
            // slot in id order (the order the rows were locked in).
            raises.sort_unstable_by_key(|r| r.0);
            for (slot_id, raised, waiting, set_aside) in raises {
                let freed = FreedIn { slot_id, version: 0, waiting, set_aside };
                let (version, not_public) = offer_freed(conn, freed, raised, terms).await?;
                if let Some(o) = opened.iter_mut().find(|o| ids_by_slot.get(&o.slot) == Some(&slot_id)) {
                    o.version = version;
                    o.reserved = not_public;
                }
            }
            if !fresh.is_empty() {
                // The advisory lock above rules out a concurrent insert of the
                // same slot, so a plain INSERT cannot conflict.
                prepared(
                    "INSERT INTO slots (restaurant_id, slot_date, slot_time, capacity, opens_at, closes_at,
                                        waitlist_limit, offer_window_secs)
                     SELECT * FROM unnest($1::bigint[], $2::date[], $3::time[], $4::int[],
                                          $5::timestamptz[], $6::timestamptz[], $7::int[], $8::int[])",
                )
                .bind::<Array<BigInt>, _>(fresh.iter().map(|s| s.slot.restaurant_id).collect::<Vec<_>>())
                .bind::<Array<Date>, _>(fresh.iter().map(|s| s.slot.date).collect::<Vec<_>>())
                .bind::<Array<Time>, _>(fresh.iter().map(|s| s.slot.time).collect::<Vec<_>>())
                .bind::<Array<Integer>, _>(fresh.iter().map(|s| s.capacity).collect::<Vec<_>>())
                .bind::<Array<Nullable<Timestamptz>>, _>(fresh.iter().map(|s| s.opens_at).collect::<Vec<_>>())
                .bind::<Array<Nullable<Timestamptz>>, _>(fresh.iter().map(|s| s.closes_at).collect::<Vec<_>>())
                .bind::<Array<Nullable<Integer>>, _>(fresh.iter().map(|s| s.waitlist_limit).collect::<Vec<_>>())
                .bind::<Array<Nullable<Integer>>, _>(fresh.iter().map(|s| s.offer_window_secs).collect::<Vec<_>>())
                .execute(conn)
                .await?;
            }
            Ok::<_, diesel::result::Error>(OpenOutcome::Opened(opened))
        })
        .await?;
    Ok(outcome)
}
