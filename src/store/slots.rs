//! Slots: opening them and changing capacities, and reading the figures a
//! seat counter is loaded or reconciled from.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveTime};
use diesel::{
    QueryableByName,
    sql_types::{Array, BigInt, Date, Integer, Nullable, Text, Time, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{ACTIVE, MIGRATION_LOCK, StoreError, prepared::prepared};
use crate::domain::{Holder, KnownRequest, ReservationId, SlotCapacity, SlotFigures, SlotKey};

/// Transaction advisory lock that serialises `OpenSlots` calls, so two
/// operators changing one slot cannot interleave their capacity deltas.
const OPEN_SLOTS_LOCK: i64 = MIGRATION_LOCK + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub slot: SlotKey,
    pub capacity: i32,
    pub reserved: i32,
    /// The capacity before this call; `None` for a slot it created.
    pub previous_capacity: Option<i32>,
    /// The slot's version after this call.
    pub version: i64,
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
}

/// A slot's natural key as selected from `slots` (embedded in other rows).
#[derive(QueryableByName)]
pub(super) struct SlotKeyRow {
    #[diesel(sql_type = BigInt)]
    restaurant_id: i64,
    #[diesel(sql_type = Date)]
    slot_date: NaiveDate,
    #[diesel(sql_type = Time)]
    slot_time: NaiveTime,
}

impl SlotKeyRow {
    pub(super) fn key(&self) -> SlotKey {
        SlotKey { restaurant_id: self.restaurant_id, date: self.slot_date, time: self.slot_time }
    }
}

/// A slot's natural key and seat figures, as selected from `slots s`.
#[derive(QueryableByName)]
struct SlotRow {
    #[diesel(embed)]
    natural: SlotKeyRow,
    #[diesel(sql_type = Integer)]
    capacity: i32,
    #[diesel(sql_type = Integer)]
    reserved: i32,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

impl SlotRow {
    fn key(&self) -> SlotKey {
        self.natural.key()
    }
}

#[derive(QueryableByName)]
struct FigureRow {
    #[diesel(embed)]
    slot: SlotRow,
    #[diesel(sql_type = Nullable<Text>)]
    user_id: Option<String>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    id: Option<Uuid>,
    #[diesel(sql_type = Nullable<BigInt>)]
    fingerprint: Option<i64>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Bool>)]
    active: Option<bool>,
}

/// Capacity, seats reserved, and the reservations of slots (active ones
/// name their holders), read in one statement: one snapshot, so `reserved`
/// and the holders agree.
fn figures_query(filter: &str) -> String {
    format!(
        "SELECT s.restaurant_id, s.slot_date, s.slot_time, s.capacity, s.reserved, s.version,
                r.user_id, r.id, r.fingerprint,
                r.status IN {ACTIVE} AS active
         FROM slots s
         LEFT JOIN reservations r ON r.slot_id = s.id
         WHERE {filter}
         ORDER BY s.id"
    )
}

fn group_figures(rows: Vec<FigureRow>) -> Vec<(SlotKey, SlotFigures)> {
    let mut out: Vec<(SlotKey, SlotFigures)> = Vec::new();
    for row in rows {
        let key = row.slot.key();
        if out.last().is_none_or(|(k, _)| *k != key) {
            let figures = SlotFigures {
                capacity: row.slot.capacity,
                reserved: row.slot.reserved,
                version: row.slot.version,
                ..Default::default()
            };
            out.push((key, figures));
        }
        if let (Some(user), Some(id), Some(fp), Some(active), Some((_, figures))) =
            (row.user_id, row.id, row.fingerprint, row.active, out.last_mut())
        {
            let id = ReservationId(id);
            figures.requests.push(KnownRequest { id, fingerprint: fp });
            if active {
                figures.holders.push(Holder { user, id });
            }
        }
    }
    out
}

pub async fn slot_figures(conn: &mut AsyncPgConnection, slot: &SlotKey) -> Result<Option<SlotFigures>, StoreError> {
    let rows: Vec<FigureRow> =
        prepared(figures_query("s.restaurant_id = $1 AND s.slot_date = $2 AND s.slot_time = $3"))
            .bind::<BigInt, _>(slot.restaurant_id)
            .bind::<Date, _>(slot.date)
            .bind::<Time, _>(slot.time)
            .load(conn)
            .await?;
    Ok(group_figures(rows).pop().map(|(_, f)| f))
}

/// The keys of every slot dated `from` or later. A background read (see
/// [`UNBOUNDED`]).
pub async fn slot_keys_from(conn: &mut AsyncPgConnection, from: NaiveDate) -> Result<Vec<SlotKey>, StoreError> {
    let keys: Vec<SlotKeyRow> = conn
        .transaction(async |conn| {
            prepared(UNBOUNDED).execute(conn).await?;
            prepared("SELECT restaurant_id, slot_date, slot_time FROM slots WHERE slot_date >= $1 ORDER BY id")
                .bind::<Date, _>(from)
                .load(conn)
                .await
        })
        .await?;
    Ok(keys.iter().map(SlotKeyRow::key).collect())
}

/// Every slot dated `from` or later (default: the database's current date).
/// A background read of every reservation of those slots (see
/// [`UNBOUNDED`]).
pub async fn slots_from(
    conn: &mut AsyncPgConnection,
    from: Option<NaiveDate>,
) -> Result<Vec<(SlotKey, SlotFigures)>, StoreError> {
    let rows: Vec<FigureRow> = conn
        .transaction(async |conn| {
            prepared(UNBOUNDED).execute(conn).await?;
            prepared(figures_query("s.slot_date >= COALESCE($1, CURRENT_DATE)"))
                .bind::<Nullable<Date>, _>(from)
                .load(conn)
                .await
        })
        .await?;
    Ok(group_figures(rows))
}

/// The background passes (warm, reconcile, reap) read in a transaction of
/// their own with no statement timeout: the session's bound is for the work
/// of requests, and a pass over every slot of a large deployment may rightly
/// take longer. Those reads take no locks.
const UNBOUNDED: &str = "SET LOCAL statement_timeout = 0";

/// Creates slots or changes capacities, all or nothing.
pub async fn open_slots(conn: &mut AsyncPgConnection, slots: &[SlotCapacity]) -> Result<OpenOutcome, StoreError> {
    #[derive(QueryableByName)]
    struct Existing {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(embed)]
        slot: SlotRow,
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
            // Locks the existing rows: winners of these slots wait until the
            // capacities below are committed, so `reserved` cannot move under
            // the check.
            let existing: Vec<Existing> = prepared(
                "SELECT s.id, s.restaurant_id, s.slot_date, s.slot_time, s.capacity, s.reserved, s.version
                 FROM slots s
                 JOIN unnest($1::bigint[], $2::date[], $3::time[]) AS v(r, d, t)
                   ON s.restaurant_id = v.r AND s.slot_date = v.d AND s.slot_time = v.t
                 ORDER BY s.id
                 FOR UPDATE OF s",
            )
            .bind::<Array<BigInt>, _>(&restaurants)
            .bind::<Array<Date>, _>(&dates)
            .bind::<Array<Time>, _>(&times)
            .load(conn)
            .await?;
            let existing: HashMap<SlotKey, Existing> = existing.into_iter().map(|e| (e.slot.key(), e)).collect();

            let mut opened = Vec::with_capacity(slots.len());
            let (mut changed_ids, mut changed_caps) = (Vec::new(), Vec::new());
            let mut fresh = Vec::new();
            for s in slots {
                match existing.get(&s.slot) {
                    Some(Existing { slot: e, .. }) if s.capacity < e.reserved => {
                        return Ok(OpenOutcome::BelowReserved { slot: s.slot, reserved: e.reserved });
                    }
                    Some(Existing { id, slot: e }) => {
                        let changed = e.capacity != s.capacity;
                        if changed {
                            changed_ids.push(*id);
                            changed_caps.push(s.capacity);
                        }
                        opened.push(Opened {
                            slot: s.slot,
                            capacity: s.capacity,
                            reserved: e.reserved,
                            previous_capacity: Some(e.capacity),
                            // The UPDATE below moves it by one.
                            version: e.version + i64::from(changed),
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
                        });
                    }
                }
            }
            if !changed_ids.is_empty() {
                prepared(
                    "UPDATE slots s SET capacity = v.cap, version = s.version + 1, updated_at = now()
                     FROM unnest($1::bigint[], $2::int[]) AS v(id, cap) WHERE s.id = v.id",
                )
                .bind::<Array<BigInt>, _>(&changed_ids)
                .bind::<Array<Integer>, _>(&changed_caps)
                .execute(conn)
                .await?;
            }
            if !fresh.is_empty() {
                // The advisory lock above rules out a concurrent insert of the
                // same slot, so a plain INSERT cannot conflict.
                prepared(
                    "INSERT INTO slots (restaurant_id, slot_date, slot_time, capacity)
                     SELECT * FROM unnest($1::bigint[], $2::date[], $3::time[], $4::int[])",
                )
                .bind::<Array<BigInt>, _>(fresh.iter().map(|s| s.slot.restaurant_id).collect::<Vec<_>>())
                .bind::<Array<Date>, _>(fresh.iter().map(|s| s.slot.date).collect::<Vec<_>>())
                .bind::<Array<Time>, _>(fresh.iter().map(|s| s.slot.time).collect::<Vec<_>>())
                .bind::<Array<Integer>, _>(fresh.iter().map(|s| s.capacity).collect::<Vec<_>>())
                .execute(conn)
                .await?;
            }
            Ok::<_, diesel::result::Error>(OpenOutcome::Opened(opened))
        })
        .await?;
    Ok(outcome)
}
