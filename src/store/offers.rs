//! Offers to the waitlist, made in the transactions that free seats (a
//! cancel, an expiry, a capacity raise, an offer given up): seats that
//! come back are never public in between, and a crash cannot split the
//! two. (Seats that only the gate held, released by the reaper, are kept
//! out of its counter and get a round of their own.) The rule for who gets them is [`crate::domain::plan_offers`].
//!
//! Locks are taken slot row first, then entries (or reservation row, then
//! slot row, then entries, on the paths that end a reservation), as every
//! other writer of a slot takes them.

use std::time::Duration;

use diesel::{
    OptionalExtension, QueryableByName,
    result::Error as DieselError,
    sql_types::{Array, BigInt, Date, Integer, Text, Time, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{ACTIVE, StoreError, manage::SWEEPER, prepared::prepared, slots::STARTS_AT};
use crate::{
    clock::Offset,
    domain::{EntryId, OfferPlan, ReservationId, SlotKey, Waiter, plan_offers, reservation_code},
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

/// The part of a statement ending reservations (a CTE named `ended`,
/// returning `id` and the new `status`, and one named `event` writing
/// their events and returning a row each) that ends their waitlist offers
/// with them: a confirmed offer is ACCEPTED, an expired one LAPSED, a
/// cancelled one LEFT, each but the acceptance with its event (the caller
/// is parameter `caller`), written after the reservation's own (reading
/// `event` first makes it run first). The statement must hold the slots'
/// rows already (an entry is locked after its slot, as everywhere).
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

/// Ends the waitlist offer of reservation `id` if it is one, with its
/// status after the change that just ended it (see [`offers_ended_with`]),
/// inside that change's transaction: after the slot's row was locked when
/// seats were freed, so an entry is never locked before its slot.
pub(super) async fn end_offer(conn: &mut AsyncPgConnection, id: Uuid, caller: &str) -> Result<(), DieselError> {
    prepared(format!(
        "WITH ended AS (SELECT id, status FROM reservations WHERE id = $1),
              event AS (SELECT 1 AS one), {}
         SELECT 1 AS one",
        offers_ended_with("ended", "$2")
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(caller)
    .execute(conn)
    .await?;
    Ok(())
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

/// Offers `seats` (just freed in the database, inside the calling
/// transaction, which holds the slot's row lock) and the seats set aside
/// before to the slot's waiting entries, by the rule. Only those: seats the
/// gate's counter already shows public stay public, so an offer never
/// takes a seat the counter may still show (whatever becomes of the
/// counter's refresh, it can only read low). Each offer is a
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
        #[diesel(sql_type = Integer)]
        reserved: i32,
        #[diesel(sql_type = BigInt)]
        restaurant_id: i64,
        /// Its sale closed or it started (by slotgate's clock): nobody can
        /// book it, so nothing is offered either.
        #[diesel(sql_type = diesel::sql_types::Bool)]
        over: bool,
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
    let slot: Slot = prepared(format!(
        "SELECT s.capacity, s.reserved, s.restaurant_id,
                COALESCE(s.closes_at <= now() + $2 * interval '1 microsecond', false)
                  OR {STARTS_AT} <= now() + $2 * interval '1 microsecond' AS over
         FROM slots s JOIN restaurants z ON z.id = s.restaurant_id WHERE s.id = $1"
    ))
    .bind::<BigInt, _>(freed.slot_id)
    .bind::<BigInt, _>(terms.offset.micros())
    .get_result(conn)
    .await?;
    let waiters: Vec<Waiter> =
        waiting.iter().map(|w| Waiter { party_size: w.party_size, passed_over: w.passed_over }).collect();
    let plan = if slot.over {
        OfferPlan::default()
    } else {
        // Never more than the database has free (a round after a
        // capacity cut, say).
        let pool = (seats + freed.set_aside).min(slot.capacity - slot.reserved);
        plan_offers(pool, &waiters, slot.capacity)
    };

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
        #[diesel(sql_type = diesel::sql_types::Bool)]
        taken: bool,
    }
    let mut codes = Vec::with_capacity(ids.len());
    for &id in ids {
        let mut salt = 0;
        loop {
            let code = reservation_code(ReservationId(id), salt);
            let found: Taken = prepared("SELECT EXISTS (SELECT 1 FROM reservations WHERE code = $1) AS taken")
                .bind::<Text, _>(&code)
                .get_result(conn)
                .await?;
            // After a few salts a code is taken only by a bug; the unique
            // index then refuses the insert rather than this loop spin.
            if !found.taken || salt >= 8 {
                codes.push(code);
                break;
            }
            salt += 1;
        }
    }
    Ok(codes)
}

/// After `seats` were freed in `freed`'s slot inside the calling
/// transaction: offers them to its waitlist if it has a say. Returns the
/// slot's version after it and whether offers were looked at (the gate's
/// counter is then loaded afresh rather than given seats back).
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

/// Offers `seats` that came back to the gate without the database seeing a
/// change (the reaper released holds whose request never committed, and
/// kept them out of the counter) and the seats set aside to `slot`'s
/// waitlist. Locks the slot's row; returns whether its waitlist had a say.
pub async fn offer_round(
    conn: &mut AsyncPgConnection,
    slot: &SlotKey,
    seats: i32,
    terms: OfferTerms,
) -> Result<bool, StoreError> {
    let round = conn
        .transaction(async |conn| {
            let row: Option<FreedIn> = prepared(format!(
                "SELECT {FREED_COLUMNS} FROM slots
                 WHERE restaurant_id = $1 AND slot_date = $2 AND slot_time = $3
                 FOR NO KEY UPDATE"
            ))
            .bind::<BigInt, _>(slot.restaurant_id)
            .bind::<Date, _>(slot.date)
            .bind::<Time, _>(slot.time)
            .get_result(conn)
            .await
            .optional()?;
            match row {
                Some(row) if row.concerns_waitlist() => {
                    offer_freed(conn, row, seats, terms).await?;
                    Ok::<_, DieselError>(true)
                }
                _ => Ok(false),
            }
        })
        .await?;
    Ok(round)
}

/// Those of `slots` whose waitlist has a say in seats that come back
/// (entries wait, or seats are set aside).
pub async fn with_waitlist(conn: &mut AsyncPgConnection, slots: &[SlotKey]) -> Result<Vec<SlotKey>, StoreError> {
    #[derive(QueryableByName)]
    struct Key {
        #[diesel(embed)]
        key: super::slots::SlotKeyRow,
    }
    let restaurants: Vec<i64> = slots.iter().map(|s| s.restaurant_id).collect();
    let dates: Vec<chrono::NaiveDate> = slots.iter().map(|s| s.date).collect();
    let times: Vec<chrono::NaiveTime> = slots.iter().map(|s| s.time).collect();
    let keys: Vec<Key> = prepared(
        "SELECT s.restaurant_id, s.slot_date, s.slot_time FROM slots s
         JOIN unnest($1::bigint[], $2::date[], $3::time[]) AS v(r, d, t)
           ON s.restaurant_id = v.r AND s.slot_date = v.d AND s.slot_time = v.t
         WHERE s.waiting > 0 OR s.set_aside > 0",
    )
    .bind::<Array<BigInt>, _>(&restaurants)
    .bind::<Array<Date>, _>(&dates)
    .bind::<Array<Time>, _>(&times)
    .load(conn)
    .await?;
    Ok(keys.iter().map(|k| k.key.key()).collect())
}

/// The version of a slot's row, with what its waitlist holds, as a
/// statement freeing seats returns it: `RETURNING` these columns.
pub(super) const FREED_COLUMNS: &str = "id AS slot_id, version, waiting, set_aside";
