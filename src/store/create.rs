//! The winner's transaction: a reservation is written and its seats taken,
//! or nothing is.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension, QueryableByName,
    result::{DatabaseErrorKind, Error as DieselError},
    sql_types::{Array, BigInt, Date, Integer, Nullable, Text, Time, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{
    ACTIVE, Reservation, ReservedItem, StoreError,
    menus::{Prices, unit_prices},
    prepared::prepared,
    reservations::find_reservation,
    strategies::{Checked, SeatLock, lock_and_check},
};
use crate::{
    clock::Offset,
    domain::{NewReservation, ReservationId, ReservationStatus, reservation_code},
};

/// How a reservation's times are set: by the database's clock, shifted by
/// `offset`, with its deposit due `deposit_window` later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub offset: Offset,
    pub deposit_window: Duration,
}

/// How many reservation codes a winner tries: a code taken by another
/// reservation (about one chance in 2^30 after a billion reservations) is
/// replaced by a fresh one.
const CODE_TRIES: u32 = 4;

/// What the winner's transaction found.
#[derive(Debug)]
pub enum Inserted {
    /// Committed: seats taken, reservation and items written; the slot is
    /// at `version` after it.
    Created {
        reservation: Reservation,
        version: i64,
    },
    /// The conditional update found too few seats (Redis let through more
    /// than the database holds). Nothing written.
    SoldOut,
    SlotMissing,
    MenuItemMissing(i64),
    /// This request id's reservation exists already with the same payload.
    Existing(Reservation),
    /// This request id's reservation exists with another payload.
    Reused,
    /// The user holds another active reservation in the slot.
    Duplicate(ReservationId),
}

impl Inserted {
    /// The outcome as spans name it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Created { .. } => "COMMITTED",
            Self::SoldOut => "SOLD_OUT",
            Self::SlotMissing => "SLOT_MISSING",
            Self::MenuItemMissing(_) => "MENU_ITEM_MISSING",
            Self::Existing(_) => "EXISTING",
            Self::Reused => "REUSED",
            Self::Duplicate(_) => "DUPLICATE",
        }
    }
}

#[derive(QueryableByName)]
struct InsertedRow {
    #[diesel(sql_type = BigInt)]
    slot_id: i64,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    deposit_deadline: Option<DateTime<Utc>>,
}

/// Why the winner's transaction rolled back.
enum Abort {
    /// The id exists already, or the user holds another active reservation.
    Conflict,
    /// Another reservation has this code.
    CodeTaken,
    SoldOut,
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for Abort {
    fn from(e: diesel::result::Error) -> Self {
        match &e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => match info.constraint_name() {
                Some("reservations_one_active_per_user") => Self::Conflict,
                Some("reservations_code_key") => Self::CodeTaken,
                _ => Self::Db(e),
            },
            _ => Self::Db(e),
        }
    }
}

/// The winner's transaction: one per admitted request.
///
/// Prices are read first, outside the transaction. Inside, the reservation
/// row and its items are written before the seats are taken, so the slot's
/// row lock (the one every winner of the slot queues on) is held only for
/// the final `UPDATE` and the commit. The `UPDATE` is conditional
/// (`reserved + n <= capacity`), which PostgreSQL re-checks against the row
/// it waited for, so it is safe at READ COMMITTED.
///
/// `lock` is `None` on the product's path (the gate admitted the request)
/// and `attempt` names the hold it admitted (the reaper reads it); a
/// database-only comparison strategy passes its lock, under which the
/// transaction checks and decides the request itself.
pub async fn insert_reservation(
    conn: &mut AsyncPgConnection,
    new: &NewReservation,
    timing: Timing,
    lock: Option<SeatLock>,
    attempt: Option<u64>,
) -> Result<Inserted, StoreError> {
    let id = new.reservation_id();
    let unit_prices = match unit_prices(conn, new.slot.restaurant_id, &new.items).await? {
        Prices::Found(prices) => prices,
        Prices::Missing(menu_id) => return Ok(Inserted::MenuItemMissing(menu_id)),
    };
    let fingerprint = new.fingerprint();
    for salt in 0..CODE_TRIES {
        let code = reservation_code(id, salt);
        match try_insert(conn, new, &code, timing, lock, attempt, &unit_prices).await {
            Err(Abort::CodeTaken) => continue,
            Ok((row, version)) => {
                let reservation = Reservation {
                    id,
                    code,
                    request_id: new.request_id.clone(),
                    fingerprint,
                    slot: new.slot,
                    user_id: new.user_id.clone(),
                    party_size: new.party_size,
                    kind: new.kind,
                    status: ReservationStatus::PendingDeposit,
                    created_at: row.created_at,
                    deposit_deadline: row.deposit_deadline,
                    cancel_reason: None,
                    items: new
                        .items
                        .iter()
                        .zip(&unit_prices)
                        .map(|(i, &unit_price)| ReservedItem { menu_id: i.menu_id, quantity: i.quantity, unit_price })
                        .collect(),
                };
                return Ok(Inserted::Created { reservation, version });
            }
            Err(Abort::SoldOut) => return Ok(Inserted::SoldOut),
            Err(Abort::Conflict) => return classify_conflict(conn, new, id, fingerprint).await,
            Err(Abort::Db(e)) => return Err(e.into()),
        }
    }
    Err(StoreError::Corrupt(format!("{CODE_TRIES} reservation codes in a row were taken")))
}

/// One try of the winner's transaction with reservation code `code`.
async fn try_insert(
    conn: &mut AsyncPgConnection,
    new: &NewReservation,
    code: &str,
    timing: Timing,
    lock: Option<SeatLock>,
    attempt: Option<u64>,
    unit_prices: &[i64],
) -> Result<(InsertedRow, i64), Abort> {
    let id = new.reservation_id();
    let fingerprint = new.fingerprint();
    conn.transaction(async |conn| {
        if let Some(lock) = lock {
            match lock_and_check(conn, new, id, lock).await? {
                Checked::Free => {}
                Checked::Conflict => return Err(Abort::Conflict),
                Checked::SoldOut => return Err(Abort::SoldOut),
            }
        }
        // ON CONFLICT (id) covers a replay or a reused request id; the
        // one-active-reservation-per-user index and the code's raise a
        // unique violation, which `Abort` tells apart. Either waits for
        // a conflicting transaction in flight to finish first.
        let row: Option<InsertedRow> = prepared(
            "INSERT INTO reservations
                     (id, code, request_id, fingerprint, slot_id, user_id, party_size, kind, status,
                      created_at, deposit_deadline, attempt)
                 SELECT $1, $2, $3, $4, s.id, $5, $6, $7, 'PENDING_DEPOSIT',
                        now() + $8 * interval '1 microsecond',
                        now() + ($8 + $12) * interval '1 microsecond', $13
                 FROM slots s
                 WHERE s.restaurant_id = $9 AND s.slot_date = $10 AND s.slot_time = $11
                 ON CONFLICT (id) DO NOTHING
                 RETURNING slot_id, created_at, deposit_deadline",
        )
        .bind::<SqlUuid, _>(id.0)
        .bind::<Text, _>(code)
        .bind::<Text, _>(&new.request_id)
        .bind::<BigInt, _>(fingerprint)
        .bind::<Text, _>(&new.user_id)
        .bind::<Integer, _>(new.party_size)
        .bind::<Text, _>(new.kind.as_str())
        .bind::<BigInt, _>(timing.offset.micros())
        .bind::<BigInt, _>(new.slot.restaurant_id)
        .bind::<Date, _>(new.slot.date)
        .bind::<Time, _>(new.slot.time)
        .bind::<BigInt, _>(i64::try_from(timing.deposit_window.as_micros()).unwrap_or(i64::MAX))
        // The nonce's bits, as PostgreSQL's signed BIGINT holds them.
        .bind::<Nullable<BigInt>, _>(attempt.map(|a| a as i64))
        .get_result(conn)
        .await
        .optional()?;
        let Some(row) = row else { return Err(Abort::Conflict) };

        if !new.items.is_empty() {
            let menu_ids: Vec<i64> = new.items.iter().map(|i| i.menu_id).collect();
            let quantities: Vec<i32> = new.items.iter().map(|i| i.quantity).collect();
            prepared(
                "INSERT INTO reservation_items (reservation_id, menu_id, quantity, unit_price)
                     SELECT $1, m, q, p FROM unnest($2::bigint[], $3::int[], $4::bigint[]) AS t(m, q, p)",
            )
            .bind::<SqlUuid, _>(id.0)
            .bind::<Array<BigInt>, _>(&menu_ids)
            .bind::<Array<Integer>, _>(&quantities)
            .bind::<Array<BigInt>, _>(unit_prices)
            .execute(conn)
            .await?;
        }

        #[derive(QueryableByName)]
        struct Taken {
            #[diesel(sql_type = BigInt)]
            version: i64,
        }
        // The seats, and the reservation's CREATED event in the same
        // statement (written only when the seats were taken).
        let taken: Option<Taken> = prepared(
            "WITH taken AS (
                 UPDATE slots SET reserved = reserved + $2, version = version + 1, updated_at = now()
                 WHERE id = $1 AND reserved + set_aside + $2 <= capacity
                 RETURNING restaurant_id, version
             ), created AS (
                 INSERT INTO event_inbox (type, reservation_id, restaurant_id, user_id, status, caller)
                 SELECT 'CREATED', $3, restaurant_id, $4, 'PENDING_DEPOSIT', $5 FROM taken
             )
             SELECT version FROM taken",
        )
        .bind::<BigInt, _>(row.slot_id)
        .bind::<Integer, _>(new.party_size)
        .bind::<SqlUuid, _>(id.0)
        .bind::<Text, _>(&new.user_id)
        .bind::<Text, _>(&new.caller)
        .get_result(conn)
        .await
        .optional()?;
        match taken {
            Some(t) => Ok((row, t.version)),
            None => Err(Abort::SoldOut),
        }
    })
    .await
}

/// The insert wrote nothing: find out why, after the rollback. The row it
/// conflicted with has committed (ON CONFLICT waited for it).
async fn classify_conflict(
    conn: &mut AsyncPgConnection,
    new: &NewReservation,
    id: ReservationId,
    fingerprint: i64,
) -> Result<Inserted, StoreError> {
    if let Some(existing) = find_reservation(conn, id).await? {
        return Ok(if existing.fingerprint == fingerprint { Inserted::Existing(existing) } else { Inserted::Reused });
    }
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Nullable<SqlUuid>)]
        holder: Option<Uuid>,
    }
    let found: Option<Found> = prepared(format!(
        "SELECT (SELECT r.id FROM reservations r
                 WHERE r.slot_id = s.id AND r.user_id = $4 AND r.status IN {ACTIVE}) AS holder
         FROM slots s WHERE s.restaurant_id = $1 AND s.slot_date = $2 AND s.slot_time = $3"
    ))
    .bind::<BigInt, _>(new.slot.restaurant_id)
    .bind::<Date, _>(new.slot.date)
    .bind::<Time, _>(new.slot.time)
    .bind::<Text, _>(&new.user_id)
    .get_result(conn)
    .await
    .optional()?;
    match found {
        None => Ok(Inserted::SlotMissing),
        Some(Found { holder: Some(holder) }) => Ok(Inserted::Duplicate(ReservationId(holder))),
        // The conflicting reservation was cancelled between the insert and
        // this read; the caller's retry will find the seat free.
        Some(Found { holder: None }) => {
            Err(StoreError::Unavailable("a conflicting reservation changed meanwhile; retry".into()))
        }
    }
}
