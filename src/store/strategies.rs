//! The two database-only strategies slotgate is compared with (`--gate
//! db-lock`, `--gate fair-lock`): no Redis, every request checked and
//! decided inside the PostgreSQL transaction, under a lock. The product's
//! path never comes here.

use diesel::{
    OptionalExtension, QueryableByName,
    sql_types::{BigInt, Date, Integer, Text, Time, Uuid as SqlUuid},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{ACTIVE, prepared::prepared};
use crate::domain::{NewReservation, ReservationId};

/// The lock a database-only strategy decides under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatLock {
    /// `SELECT ... FOR UPDATE` on the slot row, then check and take: the
    /// obvious design.
    Row,
    /// One lock per slot held across the whole transaction (an advisory
    /// lock, which queues fairly, like Redisson's FairLock), and the seats
    /// counted with a `SUM` over reservations: the design slotgate replaces.
    Slot,
}

/// What a strategy's checks found.
pub(super) enum Checked {
    /// The request may take its seats.
    Free,
    /// A replay or a user who already holds a seat: the caller classifies
    /// it like any other conflict.
    Conflict,
    SoldOut,
}

/// The locking strategies' checks, in the gate's order (a replay, then a
/// user who already holds a seat, then capacity), under the strategy's lock.
pub(super) async fn lock_and_check(
    conn: &mut AsyncPgConnection,
    new: &NewReservation,
    id: ReservationId,
    lock: SeatLock,
) -> Result<Checked, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Slot {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = Integer)]
        capacity: i32,
        #[diesel(sql_type = Integer)]
        reserved: i32,
    }
    let row_lock = if lock == SeatLock::Row { "FOR UPDATE" } else { "" };
    let slot: Option<Slot> = prepared(format!(
        "SELECT id, capacity, reserved FROM slots
         WHERE restaurant_id = $1 AND slot_date = $2 AND slot_time = $3 {row_lock}"
    ))
    .bind::<BigInt, _>(new.slot.restaurant_id)
    .bind::<Date, _>(new.slot.date)
    .bind::<Time, _>(new.slot.time)
    .get_result(conn)
    .await
    .optional()?;
    // A missing slot makes the insert find nothing: classified as such.
    let Some(slot) = slot else { return Ok(Checked::Free) };
    if lock == SeatLock::Slot {
        // Slot ids are small; the two fixed advisory keys are not.
        prepared("SELECT pg_advisory_xact_lock($1)").bind::<BigInt, _>(slot.id).execute(conn).await?;
    }
    #[derive(QueryableByName)]
    struct Seen {
        #[diesel(sql_type = BigInt)]
        replay: i64,
        #[diesel(sql_type = BigInt)]
        holder: i64,
        #[diesel(sql_type = BigInt)]
        booked: i64,
    }
    let seen: Seen = prepared(format!(
        "SELECT (SELECT count(*) FROM reservations WHERE id = $1) AS replay,
                (SELECT count(*) FROM reservations
                 WHERE slot_id = $2 AND user_id = $3 AND status IN {ACTIVE}) AS holder,
                (SELECT COALESCE(sum(party_size), 0) FROM reservations
                 WHERE slot_id = $2 AND status IN {ACTIVE})::bigint AS booked"
    ))
    .bind::<SqlUuid, _>(id.0)
    .bind::<BigInt, _>(slot.id)
    .bind::<Text, _>(&new.user_id)
    .get_result(conn)
    .await?;
    if seen.replay > 0 || seen.holder > 0 {
        return Ok(Checked::Conflict);
    }
    let taken = if lock == SeatLock::Slot { seen.booked } else { i64::from(slot.reserved) };
    if taken + i64::from(new.party_size) > i64::from(slot.capacity) {
        return Ok(Checked::SoldOut);
    }
    Ok(Checked::Free)
}
