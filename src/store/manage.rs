//! A reservation after it is made: cancel, confirm, expire. Each ends or
//! moves one reservation and frees its seats in the database in one
//! transaction, so `reserved` always equals the seats of active
//! reservations.

use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension, QueryableByName,
    sql_types::{BigInt, Integer, Text, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{ACTIVE, Reservation, StoreError, prepared::prepared, reservations::find_reservation, slots::SlotKeyRow};
use crate::domain::{CancelReason, ReservationId, ReservationStatus, SlotKey};

#[derive(Debug)]
pub enum Cancelled {
    /// This call cancelled it and freed its seats in the database.
    Now(Reservation),
    /// It was cancelled before; nothing changed.
    Already(Reservation),
    /// It is neither active nor cancelled (expired): no seats to free.
    NotActive(Reservation),
    Missing,
}

#[derive(Debug)]
pub enum Confirmed {
    /// This call confirmed it.
    Now(Reservation),
    /// It was confirmed before; nothing changed.
    Already(Reservation),
    /// Its deposit deadline had passed: this call expired it and freed its
    /// seats in the database.
    ExpiredNow(Reservation),
    /// Cancelled or expired before: nothing to confirm.
    NotPending(Reservation),
    Missing,
}

/// A reservation the expiry sweep ended; its seats were freed in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lapsed {
    pub id: ReservationId,
    pub slot: SlotKey,
    pub user_id: String,
    pub party_size: i32,
}

/// A reservation a statement moved to another status, and the seats it held.
#[derive(QueryableByName)]
struct Moved {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    slot_id: i64,
    #[diesel(sql_type = Integer)]
    party_size: i32,
}

/// Cancels an active reservation and frees its seats in the database, in one
/// transaction; only the call that moves it out of an active status frees
/// them.
pub async fn cancel_reservation(
    conn: &mut AsyncPgConnection,
    id: ReservationId,
    reason: CancelReason,
) -> Result<Cancelled, StoreError> {
    let changed = conn
        .transaction(async |conn| {
            let freed: Option<Moved> = prepared(format!(
                "UPDATE reservations SET status = 'CANCELLED', cancel_reason = $2, updated_at = now()
                 WHERE id = $1 AND status IN {ACTIVE}
                 RETURNING status, slot_id, party_size"
            ))
            .bind::<SqlUuid, _>(id.0)
            .bind::<Text, _>(reason.as_str())
            .get_result(conn)
            .await
            .optional()?;
            if let Some(f) = &freed {
                free_seats(conn, f.slot_id, f.party_size).await?;
            }
            Ok::<_, diesel::result::Error>(freed.is_some())
        })
        .await?;
    Ok(match find_reservation(conn, id).await? {
        None => Cancelled::Missing,
        Some(r) if changed => Cancelled::Now(r),
        Some(r) if r.status == ReservationStatus::Cancelled => Cancelled::Already(r),
        Some(r) => Cancelled::NotActive(r),
    })
}

/// Frees a reservation's seats in the database (its slot's `reserved` goes
/// down), inside the transaction that ended the reservation.
async fn free_seats(conn: &mut AsyncPgConnection, slot_id: i64, seats: i32) -> Result<(), diesel::result::Error> {
    prepared("UPDATE slots SET reserved = reserved - $2, updated_at = now() WHERE id = $1")
        .bind::<BigInt, _>(slot_id)
        .bind::<Integer, _>(seats)
        .execute(conn)
        .await?;
    Ok(())
}

/// Confirms a pending reservation, or expires it if its deadline is past
/// `now`, in one transaction (its seats are freed with the expiry).
pub async fn confirm_reservation(
    conn: &mut AsyncPgConnection,
    id: ReservationId,
    now: DateTime<Utc>,
) -> Result<Confirmed, StoreError> {
    let moved = conn
        .transaction(async |conn| {
            let moved: Option<Moved> = prepared(
                "UPDATE reservations
                 SET status = CASE WHEN deposit_deadline > $2 THEN 'CONFIRMED' ELSE 'EXPIRED' END,
                     updated_at = now()
                 WHERE id = $1 AND status = 'PENDING_DEPOSIT'
                 RETURNING status, slot_id, party_size",
            )
            .bind::<SqlUuid, _>(id.0)
            .bind::<Timestamptz, _>(now)
            .get_result(conn)
            .await
            .optional()?;
            if let Some(m) = moved.as_ref().filter(|m| m.status == "EXPIRED") {
                free_seats(conn, m.slot_id, m.party_size).await?;
            }
            Ok::<_, diesel::result::Error>(moved.map(|m| m.status))
        })
        .await?;
    Ok(match (find_reservation(conn, id).await?, moved.as_deref()) {
        (None, _) => Confirmed::Missing,
        (Some(r), Some("CONFIRMED")) => Confirmed::Now(r),
        (Some(r), Some(_)) => Confirmed::ExpiredNow(r),
        (Some(r), None) if r.status == ReservationStatus::Confirmed => Confirmed::Already(r),
        (Some(r), None) => Confirmed::NotPending(r),
    })
}

/// Expires up to `limit` unpaid reservations whose deadline is past `now`
/// and frees their seats, in one statement. `SKIP LOCKED` lets several
/// replicas sweep at once without waiting on, or double-counting, each
/// other's rows.
pub async fn expire_due(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Lapsed>, StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Text)]
        user_id: String,
        #[diesel(sql_type = Integer)]
        party_size: i32,
        #[diesel(embed)]
        slot: SlotKeyRow,
    }
    let rows: Vec<Row> = prepared(
        "WITH due AS (
             SELECT id FROM reservations
             WHERE status = 'PENDING_DEPOSIT' AND deposit_deadline <= $1
             ORDER BY deposit_deadline
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         ), lapsed AS (
             UPDATE reservations r SET status = 'EXPIRED', updated_at = now()
             FROM due WHERE r.id = due.id
             RETURNING r.id, r.slot_id, r.user_id, r.party_size
         ), freed AS (
             UPDATE slots s SET reserved = s.reserved - f.seats, updated_at = now()
             FROM (SELECT slot_id, sum(party_size)::int AS seats FROM lapsed GROUP BY slot_id) f
             WHERE s.id = f.slot_id
         )
         SELECT l.id, l.user_id, l.party_size, s.restaurant_id, s.slot_date, s.slot_time
         FROM lapsed l JOIN slots s ON s.id = l.slot_id",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Lapsed { id: ReservationId(r.id), slot: r.slot.key(), user_id: r.user_id, party_size: r.party_size })
        .collect())
}
