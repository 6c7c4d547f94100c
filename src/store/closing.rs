//! Closing slots: their sales end now, all or nothing.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use diesel::sql_types::{Array, BigInt, Date, Time, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{
    StoreError,
    prepared::prepared,
    slots::{OPEN_SLOTS_LOCK, Reshaped, SlotRow, slot_columns},
};
use crate::domain::SlotKey;

#[derive(Debug)]
pub enum CloseOutcome {
    Closed(Vec<Reshaped>),
    /// No such slot; nothing was changed.
    Missing(SlotKey),
}

/// Ends the sales of `slots` at `now` (the gate's clock), unless they ended
/// earlier, all or nothing. Every slot named moves its version up, so a
/// counter loaded from figures read before the close cannot reopen it.
pub async fn close_slots(
    conn: &mut AsyncPgConnection,
    slots: &[SlotKey],
    now: DateTime<Utc>,
) -> Result<CloseOutcome, StoreError> {
    let restaurants: Vec<i64> = slots.iter().map(|s| s.restaurant_id).collect();
    let dates: Vec<NaiveDate> = slots.iter().map(|s| s.date).collect();
    let times: Vec<NaiveTime> = slots.iter().map(|s| s.time).collect();
    let outcome = conn
        .transaction(async |conn| {
            // Serialised with OpenSlots and PutRestaurant (a start read
            // under a zone being changed would be stale), and the rows
            // locked in id order, as every statement that locks several
            // slots takes them.
            prepared("SELECT pg_advisory_xact_lock($1)").bind::<BigInt, _>(OPEN_SLOTS_LOCK).execute(conn).await?;
            prepared(
                "SELECT s.id FROM slots s
                 JOIN unnest($1::bigint[], $2::date[], $3::time[]) AS v(r, d, t)
                   ON s.restaurant_id = v.r AND s.slot_date = v.d AND s.slot_time = v.t
                 ORDER BY s.id FOR NO KEY UPDATE OF s",
            )
            .bind::<Array<BigInt>, _>(&restaurants)
            .bind::<Array<Date>, _>(&dates)
            .bind::<Array<Time>, _>(&times)
            .execute(conn)
            .await?;
            let closed: Vec<SlotRow> = prepared(format!(
                "WITH closed AS (
                   UPDATE slots s SET closes_at = LEAST(COALESCE(s.closes_at, $4), $4),
                                      version = s.version + 1, updated_at = now()
                   FROM unnest($1::bigint[], $2::date[], $3::time[]) AS v(r, d, t)
                   WHERE s.restaurant_id = v.r AND s.slot_date = v.d AND s.slot_time = v.t
                   RETURNING s.*)
                 SELECT {} FROM closed s JOIN restaurants z ON z.id = s.restaurant_id",
                slot_columns()
            ))
            .bind::<Array<BigInt>, _>(&restaurants)
            .bind::<Array<Date>, _>(&dates)
            .bind::<Array<Time>, _>(&times)
            .bind::<Timestamptz, _>(now)
            .load(conn)
            .await?;
            if closed.len() < slots.len() {
                let found: HashSet<SlotKey> = closed.iter().map(SlotRow::key).collect();
                if let Some(missing) = slots.iter().find(|s| !found.contains(s)) {
                    // Nothing is half-done: the updates roll back.
                    return Err(Missing(*missing));
                }
            }
            let by_key: HashMap<SlotKey, Reshaped> = closed.iter().map(|r| (r.key(), r.reshaped())).collect();
            Ok(slots.iter().filter_map(|s| by_key.get(s).copied()).collect())
        })
        .await;
    match outcome {
        Ok(closed) => Ok(CloseOutcome::Closed(closed)),
        Err(Missing(slot)) => Ok(CloseOutcome::Missing(slot)),
        Err(Failed(e)) => Err(e.into()),
    }
}

/// Why [`close_slots`]' transaction rolled back.
enum CloseFailed {
    Missing(SlotKey),
    Failed(diesel::result::Error),
}
use CloseFailed::{Failed, Missing};

impl From<diesel::result::Error> for CloseFailed {
    fn from(e: diesel::result::Error) -> Self {
        Failed(e)
    }
}
