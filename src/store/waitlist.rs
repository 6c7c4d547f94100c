//! The waitlist in the database, which decides it: entries, their places,
//! and offers. An offer is made in the transaction that frees the seats
//! (a cancel, an expiry, a capacity raise, an offer given up): seats that
//! come back are never public in between, and a crash cannot split the two.
//! The rule for who gets them is [`crate::domain::plan_offers`].
//!
//! Locks are taken slot row first, then entries (or reservation row, then
//! slot row, then entries, on the paths that end a reservation), as every
//! other writer of a slot takes them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension, QueryableByName,
    result::{DatabaseErrorKind, Error as DieselError},
    sql_types::{Array, BigInt, Date, Integer, Nullable, Text, Time, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{ACTIVE, StoreError, manage::SWEEPER, prepared::prepared, slots::SlotKeyRow};
use crate::{
    clock::Offset,
    domain::{
        EntryId, Join, ReservationId, SlotKey, Waiter, WaitlistQuery, WaitlistState, plan_offers, reservation_code,
    },
};

/// What an offer is made with: slotgate's clock shift, and the server's
/// offer window (a slot's own overrides it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferTerms {
    pub offset: Offset,
    pub window: Duration,
}

impl OfferTerms {
    fn window_secs(self) -> i64 {
        i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX)
    }
}

/// A waitlist entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: EntryId,
    pub request_id: String,
    pub fingerprint: i64,
    pub slot: SlotKey,
    pub user_id: String,
    pub party_size: i32,
    pub position: i32,
    pub state: WaitlistState,
    /// WAITING entries ahead of this one (0 unless it is WAITING).
    pub parties_ahead: i32,
    pub offer_reservation_id: Option<ReservationId>,
    pub offer_deadline: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct EntryRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    request_id: String,
    #[diesel(sql_type = BigInt)]
    fingerprint: i64,
    #[diesel(embed)]
    slot: SlotKeyRow,
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Integer)]
    party_size: i32,
    #[diesel(sql_type = Integer)]
    position: i32,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = BigInt)]
    parties_ahead: i64,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    offer_reservation_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    offer_deadline: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

impl EntryRow {
    fn entry(self) -> Result<Entry, StoreError> {
        let state = WaitlistState::from_db(&self.state)
            .ok_or_else(|| StoreError::Corrupt(format!("waitlist entry {}: state {:?}", self.id, self.state)))?;
        Ok(Entry {
            id: EntryId(self.id),
            request_id: self.request_id,
            fingerprint: self.fingerprint,
            slot: self.slot.key(),
            user_id: self.user_id,
            party_size: self.party_size,
            position: self.position,
            state,
            parties_ahead: i32::try_from(self.parties_ahead).unwrap_or(i32::MAX),
            offer_reservation_id: self.offer_reservation_id.map(ReservationId),
            offer_deadline: self.offer_deadline,
            created_at: self.created_at,
        })
    }
}

/// The columns of an [`EntryRow`], over `waitlist_entries w` joined with
/// `slots s`.
const ENTRY_COLUMNS: &str = "w.id, w.request_id, w.fingerprint, s.restaurant_id, s.slot_date, s.slot_time,
     w.user_id, w.party_size, w.position, w.state,
     CASE WHEN w.state = 'WAITING' THEN
       (SELECT count(*) FROM waitlist_entries a
        WHERE a.slot_id = w.slot_id AND a.state = 'WAITING' AND a.position < w.position)
     ELSE 0 END AS parties_ahead,
     w.offer_reservation_id, w.offer_deadline, w.created_at";

pub async fn find_entry(conn: &mut AsyncPgConnection, id: EntryId) -> Result<Option<Entry>, StoreError> {
    let row: Option<EntryRow> = prepared(format!(
        "SELECT {ENTRY_COLUMNS} FROM waitlist_entries w JOIN slots s ON s.id = w.slot_id WHERE w.id = $1"
    ))
    .bind::<SqlUuid, _>(id.0)
    .get_result(conn)
    .await
    .optional()?;
    row.map(EntryRow::entry).transpose()
}

/// The entries of `ids` that exist, by id.
pub async fn find_many(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Entry>, StoreError> {
    let rows: Vec<EntryRow> = prepared(format!(
        "SELECT {ENTRY_COLUMNS} FROM waitlist_entries w JOIN slots s ON s.id = w.slot_id WHERE w.id = ANY($1)"
    ))
    .bind::<Array<SqlUuid>, _>(ids)
    .load(conn)
    .await?;
    rows.into_iter().map(|r| r.entry().map(|e| (e.id.0, e))).collect()
}

/// A page of a slot's entries in line order, one more than the page size
/// (the caller tells from it whether another page follows).
pub async fn list_entries(conn: &mut AsyncPgConnection, query: &WaitlistQuery) -> Result<Vec<Entry>, StoreError> {
    let rows: Vec<EntryRow> = prepared(format!(
        "SELECT {ENTRY_COLUMNS} FROM waitlist_entries w JOIN slots s ON s.id = w.slot_id
         WHERE s.restaurant_id = $1 AND s.slot_date = $2 AND s.slot_time = $3 AND w.position > $4
         ORDER BY w.position
         LIMIT $5"
    ))
    .bind::<BigInt, _>(query.slot.restaurant_id)
    .bind::<Date, _>(query.slot.date)
    .bind::<Time, _>(query.slot.time)
    .bind::<Integer, _>(query.after_position)
    .bind::<BigInt, _>(query.page_size + 1)
    .load(conn)
    .await?;
    rows.into_iter().map(EntryRow::entry).collect()
}

/// What persisting a join found.
#[derive(Debug)]
pub enum Joined {
    /// Committed: the entry is in line; the slot is at `version` after it.
    Created {
        entry: Entry,
        version: i64,
    },
    /// This request id's entry exists already with the same payload.
    Existing(Entry),
    /// This request id's entry exists with another payload.
    Reused,
    /// The user is in the slot's line already, with this entry.
    Duplicate(EntryId),
    /// The user holds this active reservation in the slot.
    Holding(ReservationId),
    /// The slot's line is at its limit (0: no waitlist).
    Full {
        limit: i32,
    },
    SlotMissing,
    /// Another entry has this position: the gate's numbering was lost and
    /// rebuilt while this join was on its way. Nothing written.
    PositionTaken,
}

/// Why a join's transaction rolled back.
enum JoinAbort {
    NotTaken,
    Conflict,
    Duplicate,
    PositionTaken,
    Db(DieselError),
}

impl From<DieselError> for JoinAbort {
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => match info.constraint_name() {
                Some("waitlist_one_per_user") => Self::Duplicate,
                Some("waitlist_position_unique") => Self::PositionTaken,
                _ => Self::Db(e),
            },
            _ => Self::Db(e),
        }
    }
}

/// Persists a join the gate admitted at `position`. The database stays the
/// arbiter: the slot's limit (`default_limit` unless the slot has its own),
/// one entry per user in line, and no entry for a user holding a
/// reservation in the slot are checked again here, in one transaction with
/// the entry's WAITLIST_JOINED event.
pub async fn insert_entry(
    conn: &mut AsyncPgConnection,
    join: &Join,
    position: i32,
    default_limit: i32,
    offset: Offset,
) -> Result<Joined, StoreError> {
    let id = join.entry_id();
    let fingerprint = join.fingerprint();
    let result = conn
        .transaction(async |conn| {
            #[derive(QueryableByName)]
            struct Taken {
                #[diesel(sql_type = BigInt)]
                id: i64,
                #[diesel(sql_type = BigInt)]
                restaurant_id: i64,
                #[diesel(sql_type = BigInt)]
                version: i64,
            }
            let taken: Option<Taken> = prepared(format!(
                "UPDATE slots s SET waiting = waiting + 1, last_position = GREATEST(last_position, $4),
                        version = version + 1, updated_at = now()
                 WHERE s.restaurant_id = $1 AND s.slot_date = $2 AND s.slot_time = $3
                   AND s.waiting < COALESCE(s.waitlist_limit, $5)
                   AND NOT EXISTS (SELECT 1 FROM reservations r
                                   WHERE r.slot_id = s.id AND r.user_id = $6 AND r.status IN {ACTIVE})
                 RETURNING s.id, s.restaurant_id, s.version"
            ))
            .bind::<BigInt, _>(join.slot.restaurant_id)
            .bind::<Date, _>(join.slot.date)
            .bind::<Time, _>(join.slot.time)
            .bind::<Integer, _>(position)
            .bind::<Integer, _>(default_limit)
            .bind::<Text, _>(&join.user_id)
            .get_result(conn)
            .await
            .optional()?;
            let Some(taken) = taken else { return Err(JoinAbort::NotTaken) };
            let inserted = prepared(
                "WITH entry AS (
                     INSERT INTO waitlist_entries
                         (id, request_id, fingerprint, slot_id, user_id, party_size, position, state, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'WAITING', now() + $8 * interval '1 microsecond')
                     ON CONFLICT (id) DO NOTHING
                     RETURNING id
                 )
                 INSERT INTO event_inbox (type, waitlist_entry_id, restaurant_id, user_id, status, caller)
                 SELECT 'WAITLIST_JOINED', id, $9, $5, 'WAITING', $10 FROM entry",
            )
            .bind::<SqlUuid, _>(id.0)
            .bind::<Text, _>(&join.request_id)
            .bind::<BigInt, _>(fingerprint)
            .bind::<BigInt, _>(taken.id)
            .bind::<Text, _>(&join.user_id)
            .bind::<Integer, _>(join.party_size)
            .bind::<Integer, _>(position)
            .bind::<BigInt, _>(offset.micros())
            .bind::<BigInt, _>(taken.restaurant_id)
            .bind::<Text, _>(&join.caller)
            .execute(conn)
            .await?;
            if inserted == 0 {
                return Err(JoinAbort::Conflict);
            }
            Ok(taken.version)
        })
        .await;
    let found = find_entry(conn, id).await?;
    match result {
        Ok(version) => {
            let entry = found.ok_or_else(|| StoreError::Corrupt(format!("waitlist entry {id} vanished")))?;
            Ok(Joined::Created { entry, version })
        }
        Err(JoinAbort::Db(e)) => Err(e.into()),
        Err(JoinAbort::PositionTaken) => Ok(Joined::PositionTaken),
        Err(JoinAbort::Conflict | JoinAbort::Duplicate | JoinAbort::NotTaken) => {
            if let Some(existing) = found {
                return Ok(if existing.fingerprint == fingerprint {
                    Joined::Existing(existing)
                } else {
                    Joined::Reused
                });
            }
            why_not_taken(conn, join, default_limit).await
        }
    }
}

/// The join wrote nothing and its id names no entry: why.
async fn why_not_taken(conn: &mut AsyncPgConnection, join: &Join, default_limit: i32) -> Result<Joined, StoreError> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Nullable<SqlUuid>)]
        holding: Option<Uuid>,
        #[diesel(sql_type = Nullable<SqlUuid>)]
        waiting: Option<Uuid>,
        #[diesel(sql_type = Integer)]
        waiting_count: i32,
        #[diesel(sql_type = Integer)]
        limit: i32,
    }
    let found: Option<Found> = prepared(format!(
        "SELECT (SELECT r.id FROM reservations r
                 WHERE r.slot_id = s.id AND r.user_id = $4 AND r.status IN {ACTIVE}) AS holding,
                (SELECT w.id FROM waitlist_entries w
                 WHERE w.slot_id = s.id AND w.user_id = $4 AND w.state IN ('WAITING', 'OFFERED')) AS waiting,
                s.waiting AS waiting_count, COALESCE(s.waitlist_limit, $5) AS limit
         FROM slots s WHERE s.restaurant_id = $1 AND s.slot_date = $2 AND s.slot_time = $3"
    ))
    .bind::<BigInt, _>(join.slot.restaurant_id)
    .bind::<Date, _>(join.slot.date)
    .bind::<Time, _>(join.slot.time)
    .bind::<Text, _>(&join.user_id)
    .bind::<Integer, _>(default_limit)
    .get_result(conn)
    .await
    .optional()?;
    Ok(match found {
        None => Joined::SlotMissing,
        Some(Found { holding: Some(id), .. }) => Joined::Holding(ReservationId(id)),
        Some(Found { waiting: Some(id), .. }) => Joined::Duplicate(EntryId(id)),
        Some(Found { waiting_count, limit, .. }) if waiting_count >= limit => Joined::Full { limit },
        // What stood in the way ended between the write and this read.
        Some(_) => return Err(StoreError::Unavailable("the waitlist changed meanwhile; retry".into())),
    })
}

/// What leaving did.
#[derive(Debug)]
pub enum Left {
    /// This call took a WAITING entry out of line; the slot is at `version`.
    Now {
        entry: Entry,
        version: i64,
    },
    /// The entry holds an offer: the offer's reservation is to be
    /// cancelled (which ends the entry too, and offers its seats on).
    Offered {
        entry: Entry,
        reservation: ReservationId,
    },
    /// It had ended before (left, lapsed, accepted): nothing changed.
    Ended(Entry),
    Missing,
}

/// Takes a WAITING entry out of line, with its WAITLIST_LEFT event; an
/// entry holding an offer is answered with its reservation, which the
/// caller cancels (see [`Left::Offered`]). Seats set aside in the slot (for
/// this entry, or one ahead) are offered again by the rule without it.
pub async fn leave_entry(
    conn: &mut AsyncPgConnection,
    id: EntryId,
    caller: &str,
    terms: OfferTerms,
) -> Result<Left, StoreError> {
    let Some(entry) = find_entry(conn, id).await? else { return Ok(Left::Missing) };
    match (entry.state, entry.offer_reservation_id) {
        (WaitlistState::Waiting, _) => {}
        (WaitlistState::Offered, Some(reservation)) => return Ok(Left::Offered { entry, reservation }),
        _ => return Ok(Left::Ended(entry)),
    }
    let left = conn
        .transaction(async |conn| {
            // Slot row first, then the entry: the order offers take them in.
            let left: Option<FreedIn> = prepared(
                "WITH slot AS (
                     SELECT s.id FROM slots s JOIN waitlist_entries w ON w.slot_id = s.id
                     WHERE w.id = $1 FOR NO KEY UPDATE OF s
                 ), entry AS (
                     UPDATE waitlist_entries w SET state = 'LEFT', updated_at = now()
                     FROM slot WHERE w.id = $1 AND w.slot_id = slot.id AND w.state = 'WAITING'
                     RETURNING w.id, w.slot_id, w.user_id
                 ), event AS (
                     INSERT INTO event_inbox (type, waitlist_entry_id, restaurant_id, user_id, status, caller)
                     SELECT 'WAITLIST_LEFT', e.id, s.restaurant_id, e.user_id, 'LEFT', $2
                     FROM entry e JOIN slots s ON s.id = e.slot_id
                 )
                 UPDATE slots s SET waiting = waiting - 1, version = version + 1, updated_at = now()
                 FROM entry e WHERE s.id = e.slot_id
                 RETURNING s.id AS slot_id, s.version, s.waiting, s.set_aside",
            )
            .bind::<SqlUuid, _>(id.0)
            .bind::<Text, _>(caller)
            .get_result(conn)
            .await
            .optional()?;
            match left {
                Some(freed) if freed.set_aside > 0 => Ok(Some(offer_freed(conn, freed, 0, terms).await?.0)),
                Some(freed) => Ok::<_, DieselError>(Some(freed.version)),
                None => Ok(None),
            }
        })
        .await?;
    let entry = find_entry(conn, id).await?.ok_or_else(|| StoreError::Corrupt(format!("entry {id} vanished")))?;
    Ok(match left {
        Some(version) => Left::Now { entry, version },
        // It moved on meanwhile (an offer came, or it left twice at once).
        None if entry.state == WaitlistState::Offered => match entry.offer_reservation_id {
            Some(reservation) => Left::Offered { entry, reservation },
            None => Left::Ended(entry),
        },
        None => Left::Ended(entry),
    })
}

/// The part of a statement ending reservations (a CTE named `ended`,
/// returning `id` and the new `status`, and one named `event` writing
/// their events and returning a row each) that ends their waitlist offers
/// with them: a confirmed offer is ACCEPTED, an expired one LAPSED, a
/// cancelled one LEFT, each but the acceptance with its event (the caller
/// is parameter `caller`), written after the reservation's own (reading
/// `event` first makes it run first).
pub(super) fn offers_ended_with(ended: &str, caller: &str) -> String {
    format!(
        "offer AS (
             UPDATE waitlist_entries w
             SET state = CASE x.status WHEN 'CONFIRMED' THEN 'ACCEPTED' WHEN 'EXPIRED' THEN 'LAPSED' ELSE 'LEFT' END,
                 updated_at = now()
             FROM {ended} x WHERE w.offer_reservation_id = x.id AND w.state = 'OFFERED'
             RETURNING w.id, w.state, w.user_id, w.slot_id, x.id AS reservation_id
         ), offer_event AS (
             INSERT INTO event_inbox
                 (type, reservation_id, waitlist_entry_id, restaurant_id, user_id, status, caller)
             SELECT 'WAITLIST_' || o.state, o.reservation_id, o.id, s.restaurant_id, o.user_id, o.state, {caller}
             FROM offer o JOIN slots s ON s.id = o.slot_id
             WHERE o.state <> 'ACCEPTED' AND (SELECT count(*) FROM event) > 0
         )"
    )
}

/// A slot's row after seats were freed in it, inside the transaction that
/// freed them: whether its waitlist has a say in them.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub(super) struct FreedIn {
    #[diesel(sql_type = BigInt)]
    pub slot_id: i64,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    #[diesel(sql_type = Integer)]
    pub waiting: i32,
    #[diesel(sql_type = Integer)]
    pub set_aside: i32,
}

impl FreedIn {
    /// Whether the seats freed are the waitlist's to give: entries wait, or
    /// seats are set aside already.
    pub fn concerns_waitlist(&self) -> bool {
        self.waiting > 0 || self.set_aside > 0
    }
}

/// Offers `freed` seats (just freed in the database, inside the calling
/// transaction, which holds the slot's row lock) and the seats set aside
/// before to the slot's waiting entries, by the rule. Each offer is a
/// PENDING_DEPOSIT reservation due at the offer's deadline, written with
/// its CREATED and WAITLIST_OFFERED events. Returns the slot's version
/// after it, and its seats not public then (reserved or set aside).
pub(super) async fn offer_freed(
    conn: &mut AsyncPgConnection,
    freed: FreedIn,
    seats: i32,
    terms: OfferTerms,
) -> Result<(i64, i32), DieselError> {
    #[derive(QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Integer)]
        party_size: i32,
        #[diesel(sql_type = Integer)]
        passed_over: i32,
    }
    #[derive(QueryableByName)]
    struct Slot {
        #[diesel(sql_type = Integer)]
        capacity: i32,
        #[diesel(sql_type = BigInt)]
        restaurant_id: i64,
    }
    // Users who meanwhile booked seats of their own in the slot leave the
    // line: their entry can no longer be offered anything.
    prepared(format!(
        "WITH gone AS (
             UPDATE waitlist_entries w SET state = 'LEFT', updated_at = now()
             WHERE w.slot_id = $1 AND w.state = 'WAITING'
               AND EXISTS (SELECT 1 FROM reservations r
                           WHERE r.slot_id = w.slot_id AND r.user_id = w.user_id AND r.status IN {ACTIVE})
             RETURNING w.id, w.user_id
         ), event AS (
             INSERT INTO event_inbox (type, waitlist_entry_id, restaurant_id, user_id, status, caller)
             SELECT 'WAITLIST_LEFT', g.id, s.restaurant_id, g.user_id, 'LEFT', $2 FROM gone g, slots s WHERE s.id = $1
         )
         UPDATE slots SET waiting = waiting - (SELECT count(*) FROM gone)
         WHERE id = $1 AND EXISTS (SELECT 1 FROM gone)"
    ))
    .bind::<BigInt, _>(freed.slot_id)
    .bind::<Text, _>(SWEEPER)
    .execute(conn)
    .await?;
    let waiting: Vec<Waiting> = prepared(
        "SELECT id, party_size, passed_over FROM waitlist_entries
         WHERE slot_id = $1 AND state = 'WAITING' ORDER BY position FOR UPDATE",
    )
    .bind::<BigInt, _>(freed.slot_id)
    .load(conn)
    .await?;
    let slot: Slot = prepared("SELECT capacity, restaurant_id FROM slots WHERE id = $1")
        .bind::<BigInt, _>(freed.slot_id)
        .get_result(conn)
        .await?;
    let waiters: Vec<Waiter> =
        waiting.iter().map(|w| Waiter { party_size: w.party_size, passed_over: w.passed_over }).collect();
    let plan = plan_offers(seats + freed.set_aside, &waiters, slot.capacity);

    let offered: Vec<Uuid> = plan.offered.iter().map(|&i| waiting[i].id).collect();
    let passed: Vec<Uuid> = plan.passed.iter().map(|&i| waiting[i].id).collect();
    let offer_ids: Vec<Uuid> =
        offered.iter().map(|&e| ReservationId::for_request(OFFER_CALLER, &EntryId(e).to_string()).0).collect();
    let codes = free_codes(conn, &offer_ids).await?;
    let requests: Vec<String> = offered.iter().map(|&e| EntryId(e).offer_request_id()).collect();
    let seats_offered: i32 = plan.offered.iter().map(|&i| waiting[i].party_size).sum();

    #[derive(QueryableByName)]
    struct After {
        #[diesel(sql_type = BigInt)]
        version: i64,
        #[diesel(sql_type = Integer)]
        not_public: i32,
    }
    let row: After = prepared(
        "WITH v AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[]) AS v(entry, rid, code, req)
         ), made AS (
             INSERT INTO reservations
                 (id, code, request_id, fingerprint, slot_id, user_id, party_size, kind, status,
                  created_at, deposit_deadline)
             SELECT v.rid, v.code, v.req, 0, w.slot_id, w.user_id, w.party_size, 'RESERVATION_DEPOSIT',
                    'PENDING_DEPOSIT', now() + $5 * interval '1 microsecond',
                    now() + $5 * interval '1 microsecond'
                          + COALESCE(s.offer_window_secs, $6) * interval '1 second'
             FROM v JOIN waitlist_entries w ON w.id = v.entry JOIN slots s ON s.id = w.slot_id
             RETURNING id, user_id, deposit_deadline
         ), offered AS (
             UPDATE waitlist_entries w
             SET state = 'OFFERED', offer_reservation_id = m.id, offer_deadline = m.deposit_deadline,
                 updated_at = now()
             FROM v JOIN made m ON m.id = v.rid
             WHERE w.id = v.entry
             RETURNING w.id, w.user_id, w.position, m.id AS rid
         ), events AS (
             INSERT INTO event_inbox
                 (type, reservation_id, waitlist_entry_id, restaurant_id, user_id, status, caller)
             SELECT t.type, o.rid, CASE WHEN t.type = 'CREATED' THEN NULL ELSE o.id END, $7, o.user_id,
                    t.status, $8
             FROM offered o
             CROSS JOIN (VALUES (1, 'CREATED', 'PENDING_DEPOSIT'), (2, 'WAITLIST_OFFERED', 'OFFERED'))
                 AS t(n, type, status)
             ORDER BY o.position, t.n
         ), passed AS (
             UPDATE waitlist_entries SET passed_over = passed_over + 1, updated_at = now()
             WHERE id = ANY($9)
         )
         UPDATE slots SET reserved = reserved + $10, set_aside = $11,
                          waiting = waiting - cardinality($1::uuid[]), version = version + 1, updated_at = now()
         WHERE id = $12
         RETURNING version, reserved + set_aside AS not_public",
    )
    .bind::<Array<SqlUuid>, _>(&offered)
    .bind::<Array<SqlUuid>, _>(&offer_ids)
    .bind::<Array<Text>, _>(&codes)
    .bind::<Array<Text>, _>(&requests)
    .bind::<BigInt, _>(terms.offset.micros())
    .bind::<BigInt, _>(terms.window_secs())
    .bind::<BigInt, _>(slot.restaurant_id)
    .bind::<Text, _>(SWEEPER)
    .bind::<Array<SqlUuid>, _>(&passed)
    .bind::<Integer, _>(seats_offered)
    .bind::<Integer, _>(plan.set_aside)
    .bind::<BigInt, _>(freed.slot_id)
    .get_result(conn)
    .await?;
    Ok((row.version, row.not_public))
}

/// The calling-service name offers' reservation ids are derived under: it
/// holds a NUL, which no caller's name does, so no caller's request id can
/// name an offer.
const OFFER_CALLER: &str = "slotgate\0waitlist";

/// A code for each offer reservation that no other reservation has (see
/// [`reservation_code`]).
async fn free_codes(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> Result<Vec<String>, DieselError> {
    #[derive(QueryableByName)]
    struct Taken {
        #[diesel(sql_type = Integer)]
        #[allow(dead_code)]
        one: i32,
    }
    let mut codes = Vec::with_capacity(ids.len());
    for &id in ids {
        let mut salt = 0;
        loop {
            let code = reservation_code(ReservationId(id), salt);
            let taken: Option<Taken> = prepared("SELECT 1 AS one FROM reservations WHERE code = $1")
                .bind::<Text, _>(&code)
                .get_result(conn)
                .await
                .optional()?;
            if taken.is_none() || salt >= 8 {
                codes.push(code);
                break;
            }
            salt += 1;
        }
    }
    Ok(codes)
}

/// After seats were freed in `freed`'s slot (`seats` of them) inside the
/// calling transaction: offers them to its waitlist if it has a say.
/// Returns the slot's version after it and whether offers were looked at
/// (the gate's counter is then loaded afresh rather than given seats back).
pub(super) async fn settle_freed(
    conn: &mut AsyncPgConnection,
    freed: FreedIn,
    seats: i32,
    terms: OfferTerms,
) -> Result<(i64, bool), DieselError> {
    if !freed.concerns_waitlist() {
        return Ok((freed.version, false));
    }
    Ok((offer_freed(conn, freed, seats, terms).await?.0, true))
}

/// The version of a slot's row, with what its waitlist holds, as a
/// statement freeing seats returns it: `RETURNING` these columns.
pub(super) const FREED_COLUMNS: &str = "id AS slot_id, version, waiting, set_aside";
