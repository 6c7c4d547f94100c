//! Every SQL statement slotgate runs, as small functions over one connection.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use diesel::{
    OptionalExtension, QueryableByName,
    sql_types::{Array, BigInt, Date, Integer, Nullable, Text, Time, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{Reservation, ReservedItem, StoreError, prepared::prepared};
use crate::{
    domain::{
        CancelReason, MenuItem, NewReservation, ReservationId, ReservationKind, ReservationStatus, SlotCapacity,
        SlotKey, reservation_code,
    },
    gate::SlotFigures,
};

/// Session advisory lock taken while migrating ("slotgate" in ASCII).
const MIGRATION_LOCK: i64 = 0x736c_6f74_6761_7465;
/// Transaction advisory lock that serialises `OpenSlots` calls, so two
/// operators changing one slot cannot interleave their capacity deltas.
const OPEN_SLOTS_LOCK: i64 = MIGRATION_LOCK + 1;

const ACTIVE: &str = "('PENDING_DEPOSIT', 'CONFIRMED')";

/// How a reservation's transaction takes its seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seats {
    /// The product: the Redis gate admitted the request; the transaction's
    /// conditional `UPDATE` is the final check.
    Conditional,
    /// No Redis: `SELECT ... FOR UPDATE` on the slot row, then check and
    /// take, all requests in the database (the obvious design).
    RowLock,
    /// The seed's first version: one lock per slot held across the whole
    /// transaction (an advisory lock, which queues fairly, like Redisson's
    /// FairLock), and the seats counted with a `SUM` over reservations.
    SlotLock,
}

/// What the winner's transaction found.
#[derive(Debug)]
pub enum Inserted {
    /// Committed: seats taken, reservation and items written.
    Created(Reservation),
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

#[derive(Debug)]
pub enum Cancelled {
    /// This call cancelled it: its seats went back in the database.
    Now(Reservation),
    /// It was cancelled before; nothing changed.
    Already(Reservation),
    /// It is neither active nor cancelled (expired): nothing to give back.
    NotActive(Reservation),
    Missing,
}

#[derive(Debug)]
pub enum Confirmed {
    /// This call confirmed it.
    Now(Reservation),
    /// It was confirmed before; nothing changed.
    Already(Reservation),
    /// Its deposit deadline had passed: this call expired it and its seats
    /// went back in the database.
    ExpiredNow(Reservation),
    /// Cancelled or expired before: nothing to confirm.
    NotPending(Reservation),
    Missing,
}

/// A reservation the expiry sweep ended; its seats went back in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lapsed {
    pub id: ReservationId,
    pub slot: SlotKey,
    pub user_id: String,
    pub party_size: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub slot: SlotKey,
    pub capacity: i32,
    pub reserved: i32,
    /// The capacity before this call; `None` for a slot it created.
    pub previous_capacity: Option<i32>,
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

pub async fn lock_migrations(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    prepared("SELECT pg_advisory_lock($1)").bind::<BigInt, _>(MIGRATION_LOCK).execute(conn).await?;
    Ok(())
}

#[derive(QueryableByName)]
struct ReservationRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    code: String,
    #[diesel(sql_type = Text)]
    request_id: String,
    #[diesel(sql_type = BigInt)]
    fingerprint: i64,
    #[diesel(sql_type = BigInt)]
    restaurant_id: i64,
    #[diesel(sql_type = Date)]
    slot_date: NaiveDate,
    #[diesel(sql_type = Time)]
    slot_time: NaiveTime,
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Integer)]
    party_size: i32,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    deposit_deadline: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    cancel_reason: Option<String>,
}

impl ReservationRow {
    fn into_reservation(self, items: Vec<ReservedItem>) -> Result<Reservation, StoreError> {
        let corrupt =
            |what: &str, value: &str| StoreError::Corrupt(format!("reservation {}: {what} {value:?}", self.id));
        Ok(Reservation {
            id: ReservationId(self.id),
            kind: ReservationKind::from_db(&self.kind).ok_or_else(|| corrupt("kind", &self.kind))?,
            status: ReservationStatus::from_db(&self.status).ok_or_else(|| corrupt("status", &self.status))?,
            cancel_reason: match &self.cancel_reason {
                None => None,
                Some(r) => Some(CancelReason::from_db(r).ok_or_else(|| corrupt("cancel reason", r))?),
            },
            code: self.code,
            request_id: self.request_id,
            fingerprint: self.fingerprint,
            slot: SlotKey { restaurant_id: self.restaurant_id, date: self.slot_date, time: self.slot_time },
            user_id: self.user_id,
            party_size: self.party_size,
            created_at: self.created_at,
            deposit_deadline: self.deposit_deadline,
            items,
        })
    }
}

#[derive(QueryableByName)]
struct ItemRow {
    #[diesel(sql_type = BigInt)]
    menu_id: i64,
    #[diesel(sql_type = Integer)]
    quantity: i32,
    #[diesel(sql_type = BigInt)]
    unit_price: i64,
}

impl From<ItemRow> for ReservedItem {
    fn from(r: ItemRow) -> Self {
        Self { menu_id: r.menu_id, quantity: r.quantity, unit_price: r.unit_price }
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

#[derive(QueryableByName)]
struct Price {
    #[diesel(sql_type = BigInt)]
    menu_id: i64,
    #[diesel(sql_type = BigInt)]
    price: i64,
}

/// The locking strategies' checks, in the gate's order (a replay, then a
/// user who already holds a seat, then capacity), under the strategy's lock.
/// A replay or duplicate aborts as a conflict, which the caller classifies
/// like any other.
async fn lock_and_check(
    conn: &mut AsyncPgConnection,
    new: &NewReservation,
    id: ReservationId,
    seats: Seats,
) -> Result<(), Abort> {
    #[derive(QueryableByName)]
    struct Slot {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = Integer)]
        capacity: i32,
        #[diesel(sql_type = Integer)]
        reserved: i32,
    }
    let lock = if seats == Seats::RowLock { "FOR UPDATE" } else { "" };
    let slot: Option<Slot> = prepared(format!(
        "SELECT id, capacity, reserved FROM slots
         WHERE restaurant_id = $1 AND slot_date = $2 AND slot_time = $3 {lock}"
    ))
    .bind::<BigInt, _>(new.slot.restaurant_id)
    .bind::<Date, _>(new.slot.date)
    .bind::<Time, _>(new.slot.time)
    .get_result(conn)
    .await
    .optional()?;
    // A missing slot makes the insert find nothing: classified as such.
    let Some(slot) = slot else { return Ok(()) };
    if seats == Seats::SlotLock {
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
        return Err(Abort::Conflict);
    }
    let taken = if seats == Seats::SlotLock { seen.booked } else { i64::from(slot.reserved) };
    if taken + i64::from(new.party_size) > i64::from(slot.capacity) {
        return Err(Abort::SoldOut);
    }
    Ok(())
}

/// Why the winner's transaction rolled back.
enum Abort {
    Conflict,
    SoldOut,
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for Abort {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e)
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
pub async fn insert_reservation(
    conn: &mut AsyncPgConnection,
    new: &NewReservation,
    now: DateTime<Utc>,
    deposit_deadline: DateTime<Utc>,
    seats: Seats,
) -> Result<Inserted, StoreError> {
    let id = new.reservation_id();
    let mut unit_prices = Vec::with_capacity(new.items.len());
    if !new.items.is_empty() {
        let menu_ids: Vec<i64> = new.items.iter().map(|i| i.menu_id).collect();
        let prices: HashMap<i64, i64> =
            prepared("SELECT menu_id, price FROM menus WHERE restaurant_id = $1 AND menu_id = ANY($2)")
                .bind::<BigInt, _>(new.slot.restaurant_id)
                .bind::<Array<BigInt>, _>(&menu_ids)
                .load::<Price>(conn)
                .await?
                .into_iter()
                .map(|p| (p.menu_id, p.price))
                .collect();
        for item in &new.items {
            match prices.get(&item.menu_id) {
                Some(&price) => unit_prices.push(price),
                None => return Ok(Inserted::MenuItemMissing(item.menu_id)),
            }
        }
    }

    let code = reservation_code(id);
    let fingerprint = new.fingerprint();
    let outcome = conn
        .transaction(async |conn| {
            if seats != Seats::Conditional {
                lock_and_check(conn, new, id, seats).await?;
            }
            // ON CONFLICT DO NOTHING covers the id (a replay or a reused
            // request id) and the one-active-reservation-per-user index; it
            // waits for a conflicting transaction in flight to finish first.
            let row: Option<InsertedRow> = prepared(
                "INSERT INTO reservations
                     (id, code, request_id, fingerprint, slot_id, user_id, party_size, kind, status,
                      created_at, deposit_deadline)
                 SELECT $1, $2, $3, $4, s.id, $5, $6, $7, 'PENDING_DEPOSIT', $8, $12
                 FROM slots s
                 WHERE s.restaurant_id = $9 AND s.slot_date = $10 AND s.slot_time = $11
                 ON CONFLICT DO NOTHING
                 RETURNING slot_id, created_at, deposit_deadline",
            )
            .bind::<SqlUuid, _>(id.0)
            .bind::<Text, _>(&code)
            .bind::<Text, _>(&new.request_id)
            .bind::<BigInt, _>(fingerprint)
            .bind::<Text, _>(&new.user_id)
            .bind::<Integer, _>(new.party_size)
            .bind::<Text, _>(new.kind.as_str())
            .bind::<Timestamptz, _>(now)
            .bind::<BigInt, _>(new.slot.restaurant_id)
            .bind::<Date, _>(new.slot.date)
            .bind::<Time, _>(new.slot.time)
            .bind::<Timestamptz, _>(deposit_deadline)
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
                .bind::<Array<BigInt>, _>(&unit_prices)
                .execute(conn)
                .await?;
            }

            let taken = prepared(
                "UPDATE slots SET reserved = reserved + $2, updated_at = now()
                 WHERE id = $1 AND reserved + $2 <= capacity",
            )
            .bind::<BigInt, _>(row.slot_id)
            .bind::<Integer, _>(new.party_size)
            .execute(conn)
            .await?;
            if taken == 1 { Ok(row) } else { Err(Abort::SoldOut) }
        })
        .await;

    match outcome {
        Ok(row) => Ok(Inserted::Created(Reservation {
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
        })),
        Err(Abort::SoldOut) => Ok(Inserted::SoldOut),
        Err(Abort::Conflict) => classify_conflict(conn, new, id, fingerprint).await,
        Err(Abort::Db(e)) => Err(e.into()),
    }
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

const RESERVATION_COLUMNS: &str = "r.id, r.code, r.request_id, r.fingerprint, s.restaurant_id, s.slot_date,
     s.slot_time, r.user_id, r.party_size, r.kind, r.status, r.created_at, r.deposit_deadline, r.cancel_reason";

pub async fn find_reservation(
    conn: &mut AsyncPgConnection,
    id: ReservationId,
) -> Result<Option<Reservation>, StoreError> {
    let row: Option<ReservationRow> = prepared(format!(
        "SELECT {RESERVATION_COLUMNS} FROM reservations r JOIN slots s ON s.id = r.slot_id WHERE r.id = $1"
    ))
    .bind::<SqlUuid, _>(id.0)
    .get_result(conn)
    .await
    .optional()?;
    let Some(row) = row else { return Ok(None) };
    let items: Vec<ItemRow> = prepared(
        "SELECT menu_id, quantity, unit_price FROM reservation_items WHERE reservation_id = $1 ORDER BY menu_id",
    )
    .bind::<SqlUuid, _>(id.0)
    .load(conn)
    .await?;
    row.into_reservation(items.into_iter().map(Into::into).collect()).map(Some)
}

/// Which of `ids` have a reservation row (committed, whatever its status).
pub async fn existing_ids(
    conn: &mut AsyncPgConnection,
    ids: &[ReservationId],
) -> Result<std::collections::HashSet<ReservationId>, StoreError> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let uuids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let found: Vec<Id> =
        prepared("SELECT id FROM reservations WHERE id = ANY($1)").bind::<Array<SqlUuid>, _>(&uuids).load(conn).await?;
    Ok(found.into_iter().map(|r| ReservationId(r.id)).collect())
}

/// Cancels an active reservation and gives its seats back in the database,
/// in one transaction; only the call that moves it out of an active status
/// gives seats back.
pub async fn cancel_reservation(
    conn: &mut AsyncPgConnection,
    id: ReservationId,
    reason: CancelReason,
) -> Result<Cancelled, StoreError> {
    #[derive(QueryableByName)]
    struct Freed {
        #[diesel(sql_type = BigInt)]
        slot_id: i64,
        #[diesel(sql_type = Integer)]
        party_size: i32,
    }
    let changed = conn
        .transaction(async |conn| {
            let freed: Option<Freed> = prepared(format!(
                "UPDATE reservations SET status = 'CANCELLED', cancel_reason = $2, updated_at = now()
                 WHERE id = $1 AND status IN {ACTIVE}
                 RETURNING slot_id, party_size"
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

/// Gives a reservation's seats back to its slot, inside the transaction that
/// ended the reservation.
async fn free_seats(conn: &mut AsyncPgConnection, slot_id: i64, seats: i32) -> Result<(), diesel::result::Error> {
    prepared("UPDATE slots SET reserved = reserved - $2, updated_at = now() WHERE id = $1")
        .bind::<BigInt, _>(slot_id)
        .bind::<Integer, _>(seats)
        .execute(conn)
        .await?;
    Ok(())
}

/// A slot's natural key and seat figures, as selected from `slots s`.
#[derive(QueryableByName)]
struct SlotRow {
    #[diesel(sql_type = BigInt)]
    restaurant_id: i64,
    #[diesel(sql_type = Date)]
    slot_date: NaiveDate,
    #[diesel(sql_type = Time)]
    slot_time: NaiveTime,
    #[diesel(sql_type = Integer)]
    capacity: i32,
    #[diesel(sql_type = Integer)]
    reserved: i32,
}

impl SlotRow {
    fn key(&self) -> SlotKey {
        SlotKey { restaurant_id: self.restaurant_id, date: self.slot_date, time: self.slot_time }
    }
}

/// Confirms a pending reservation, or expires it if its deadline is past
/// `now`, in one transaction (seats go back with the expiry).
pub async fn confirm_reservation(
    conn: &mut AsyncPgConnection,
    id: ReservationId,
    now: DateTime<Utc>,
) -> Result<Confirmed, StoreError> {
    #[derive(QueryableByName)]
    struct Moved {
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = BigInt)]
        slot_id: i64,
        #[diesel(sql_type = Integer)]
        party_size: i32,
    }
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
/// and gives their seats back, in one statement. `SKIP LOCKED` lets several
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
        #[diesel(sql_type = BigInt)]
        restaurant_id: i64,
        #[diesel(sql_type = Date)]
        slot_date: NaiveDate,
        #[diesel(sql_type = Time)]
        slot_time: NaiveTime,
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
        .map(|r| Lapsed {
            id: ReservationId(r.id),
            slot: SlotKey { restaurant_id: r.restaurant_id, date: r.slot_date, time: r.slot_time },
            user_id: r.user_id,
            party_size: r.party_size,
        })
        .collect())
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
        "SELECT s.restaurant_id, s.slot_date, s.slot_time, s.capacity, s.reserved, r.user_id, r.id, r.fingerprint,
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
            let figures =
                SlotFigures { capacity: row.slot.capacity, reserved: row.slot.reserved, ..Default::default() };
            out.push((key, figures));
        }
        if let (Some(user), Some(id), Some(fp), Some(active), Some((_, figures))) =
            (row.user_id, row.id, row.fingerprint, row.active, out.last_mut())
        {
            let id = ReservationId(id);
            figures.fingerprints.push((id, fp));
            if active {
                figures.holders.push((user, id));
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

/// The keys of every slot dated `from` or later.
pub async fn slot_keys_from(conn: &mut AsyncPgConnection, from: NaiveDate) -> Result<Vec<SlotKey>, StoreError> {
    #[derive(QueryableByName)]
    struct Key {
        #[diesel(sql_type = BigInt)]
        restaurant_id: i64,
        #[diesel(sql_type = Date)]
        slot_date: NaiveDate,
        #[diesel(sql_type = Time)]
        slot_time: NaiveTime,
    }
    let keys: Vec<Key> =
        prepared("SELECT restaurant_id, slot_date, slot_time FROM slots WHERE slot_date >= $1 ORDER BY id")
            .bind::<Date, _>(from)
            .load(conn)
            .await?;
    Ok(keys
        .into_iter()
        .map(|k| SlotKey { restaurant_id: k.restaurant_id, date: k.slot_date, time: k.slot_time })
        .collect())
}

/// Every slot dated `from` or later (default: the database's current date).
pub async fn slots_from(
    conn: &mut AsyncPgConnection,
    from: Option<NaiveDate>,
) -> Result<Vec<(SlotKey, SlotFigures)>, StoreError> {
    let rows: Vec<FigureRow> = prepared(figures_query("s.slot_date >= COALESCE($1, CURRENT_DATE)"))
        .bind::<Nullable<Date>, _>(from)
        .load(conn)
        .await?;
    Ok(group_figures(rows))
}

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
                "SELECT s.id, s.restaurant_id, s.slot_date, s.slot_time, s.capacity, s.reserved
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
                        if e.capacity != s.capacity {
                            changed_ids.push(*id);
                            changed_caps.push(s.capacity);
                        }
                        opened.push(Opened {
                            slot: s.slot,
                            capacity: s.capacity,
                            reserved: e.reserved,
                            previous_capacity: Some(e.capacity),
                        });
                    }
                    None => {
                        fresh.push(*s);
                        opened.push(Opened {
                            slot: s.slot,
                            capacity: s.capacity,
                            reserved: 0,
                            previous_capacity: None,
                        });
                    }
                }
            }
            if !changed_ids.is_empty() {
                prepared(
                    "UPDATE slots s SET capacity = v.cap, updated_at = now()
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

/// Creates or updates menu items; returns how many were written.
pub async fn put_menu(
    conn: &mut AsyncPgConnection,
    restaurant_id: i64,
    items: &[MenuItem],
) -> Result<usize, StoreError> {
    let ids: Vec<i64> = items.iter().map(|i| i.menu_id).collect();
    let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
    let prices: Vec<i64> = items.iter().map(|i| i.price).collect();
    let written = conn
        .transaction(async |conn| {
            prepared("INSERT INTO restaurants (id) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind::<BigInt, _>(restaurant_id)
                .execute(conn)
                .await?;
            prepared(
                "INSERT INTO menus (restaurant_id, menu_id, name, price)
                 SELECT $1, m, n, p FROM unnest($2::bigint[], $3::text[], $4::bigint[]) AS t(m, n, p)
                 ON CONFLICT (restaurant_id, menu_id)
                 DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price, updated_at = now()",
            )
            .bind::<BigInt, _>(restaurant_id)
            .bind::<Array<BigInt>, _>(&ids)
            .bind::<Array<Text>, _>(&names)
            .bind::<Array<BigInt>, _>(&prices)
            .execute(conn)
            .await
        })
        .await?;
    Ok(written)
}
