//! A reservation after it is made: cancel, confirm, expire. Each ends or
//! moves one reservation and frees its seats in the database in one
//! transaction, so `reserved` always equals the seats of active
//! reservations.

use diesel::{
    OptionalExtension, QueryableByName,
    sql_types::{Array, BigInt, Integer, Text, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{
    ACTIVE, Reservation, StoreError,
    offers::{FREED_COLUMNS, FreedIn, OfferTerms, end_offer, offers_ended_with, settle_freed},
    prepared::prepared,
    reservations::find_reservation,
    slots::SlotKeyRow,
};
use crate::domain::{CancelReason, ReservationId, ReservationStatus, SlotKey, is_offer_request};

#[derive(Debug)]
pub enum Cancelled {
    /// This call cancelled it and freed its seats in the database; the slot
    /// is at `version` after it. `waitlist`: the slot's waitlist had a say
    /// in the seats (see [`Freed`]).
    Now {
        reservation: Reservation,
        version: i64,
        waitlist: bool,
    },
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
    /// seats in the database; the slot is at `version` after it.
    ExpiredNow {
        reservation: Reservation,
        version: i64,
        waitlist: bool,
    },
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
    /// The slot's version after the sweep freed these seats.
    pub version: i64,
    /// The slot's waitlist had a say in the seats (see [`Freed`]).
    pub waitlist: bool,
}

/// Seats a change freed in the database, as the gate's counter is to learn
/// them: given back (`waitlist` false), or, when the slot's waitlist had a
/// say in them (offers made, seats set aside), by loading the counter
/// afresh at `version` or later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freed {
    pub version: i64,
    pub waitlist: bool,
}

/// The caller events name for expiry by the deposit deadline.
pub const SWEEPER: &str = "slotgate";

/// The event of a reservation an `UPDATE ... RETURNING id, status,
/// cancel_reason, slot_id, user_id` in a CTE named `moved` changed, as a
/// CTE of the same statement: the event is written exactly when the change
/// is. Its type is the new status (`CONFIRMED`, `CANCELLED`, `EXPIRED`);
/// the caller is the statement's third parameter.
const EVENT_OF_MOVED: &str = "INSERT INTO event_inbox
       (type, reservation_id, restaurant_id, user_id, status, cancel_reason, caller)
     SELECT m.status, m.id, s.restaurant_id, m.user_id, m.status, m.cancel_reason, $3
     FROM moved m JOIN slots s ON s.id = m.slot_id
     RETURNING id";

/// A reservation a statement moved to another status, and the seats it held.
#[derive(QueryableByName)]
struct Moved {
    #[diesel(sql_type = Text)]
    status: String,
    /// Tells a waitlist offer's reservation (see [`is_offer_request`]).
    #[diesel(sql_type = Text)]
    request_id: String,
    #[diesel(sql_type = BigInt)]
    slot_id: i64,
    #[diesel(sql_type = Integer)]
    party_size: i32,
}

/// Cancels an active reservation and frees its seats in the database, in one
/// transaction; only the call that moves it out of an active status frees
/// them. A cancelled waitlist offer ends its entry (LEFT); the seats go on
/// to the waitlist (see [`settle_freed`]).
pub async fn cancel_reservation(
    conn: &mut AsyncPgConnection,
    id: ReservationId,
    reason: CancelReason,
    caller: &str,
    terms: OfferTerms,
) -> Result<Cancelled, StoreError> {
    cancel_from(conn, id, reason, caller, terms, ACTIVE).await
}

/// Gives up a waitlist offer: cancels its reservation (reason USER) only
/// while it is still `PENDING_DEPOSIT`, as [`cancel_reservation`] does; an
/// offer confirmed (accepted) meanwhile is left alone and answered
/// [`Cancelled::NotActive`].
pub async fn give_up_offer(
    conn: &mut AsyncPgConnection,
    id: ReservationId,
    caller: &str,
    terms: OfferTerms,
) -> Result<Cancelled, StoreError> {
    cancel_from(conn, id, CancelReason::User, caller, terms, "('PENDING_DEPOSIT')").await
}

/// Cancels the reservation if its status is one of `from` (SQL), freeing
/// its seats, in one transaction.
async fn cancel_from(
    conn: &mut AsyncPgConnection,
    id: ReservationId,
    reason: CancelReason,
    caller: &str,
    terms: OfferTerms,
    from: &str,
) -> Result<Cancelled, StoreError> {
    let changed = conn
        .transaction(async |conn| {
            let freed: Option<Moved> = prepared(format!(
                "WITH moved AS (
                     UPDATE reservations SET status = 'CANCELLED', cancel_reason = $2, updated_at = now()
                     WHERE id = $1 AND status IN {from}
                     RETURNING id, status, cancel_reason, slot_id, user_id, party_size, request_id
                 ), event AS ({EVENT_OF_MOVED})
                 SELECT status, slot_id, party_size, request_id FROM moved"
            ))
            .bind::<SqlUuid, _>(id.0)
            .bind::<Text, _>(reason.as_str())
            .bind::<Text, _>(caller)
            .get_result(conn)
            .await
            .optional()?;
            match &freed {
                Some(f) => {
                    let offer = is_offer_request(&f.request_id).then_some((id.0, caller));
                    Ok::<_, diesel::result::Error>(Some(free_seats(conn, f.slot_id, f.party_size, terms, offer).await?))
                }
                None => Ok(None),
            }
        })
        .await?;
    Ok(match (find_reservation(conn, id).await?, changed) {
        (None, _) => Cancelled::Missing,
        (Some(reservation), Some(f)) => Cancelled::Now { reservation, version: f.version, waitlist: f.waitlist },
        (Some(r), None) if r.status == ReservationStatus::Cancelled => Cancelled::Already(r),
        (Some(r), None) => Cancelled::NotActive(r),
    })
}

/// Frees a reservation's seats in the database (its slot's `reserved` goes
/// down), inside the transaction that ended the reservation, ends its
/// waitlist offer if it was one (`offer`: its id, and the caller who ended
/// it), and offers the seats to the slot's waitlist if it has a say in
/// them. The slot's row is locked first, then entries.
async fn free_seats(
    conn: &mut AsyncPgConnection,
    slot_id: i64,
    seats: i32,
    terms: OfferTerms,
    offer: Option<(Uuid, &str)>,
) -> Result<Freed, diesel::result::Error> {
    let row: FreedIn = prepared(format!(
        "UPDATE slots SET reserved = reserved - $2, version = version + 1, updated_at = now()
         WHERE id = $1 RETURNING {FREED_COLUMNS}"
    ))
    .bind::<BigInt, _>(slot_id)
    .bind::<Integer, _>(seats)
    .get_result(conn)
    .await?;
    if let Some((id, caller)) = offer {
        end_offer(conn, id, caller).await?;
    }
    let (version, waitlist) = settle_freed(conn, row, seats, terms).await?;
    Ok(Freed { version, waitlist })
}

/// Confirms a pending reservation, or expires it if its deadline has passed
/// (by the database's clock, shifted by `terms.offset`), in one transaction
/// (its seats are freed with the expiry). A confirmed waitlist offer is
/// ACCEPTED; an expired one LAPSED.
pub async fn confirm_reservation(
    conn: &mut AsyncPgConnection,
    id: ReservationId,
    terms: OfferTerms,
    caller: &str,
) -> Result<Confirmed, StoreError> {
    let moved = conn
        .transaction(async |conn| {
            // A late confirm expires the reservation: its event says so.
            let moved: Option<Moved> = prepared(format!(
                "WITH moved AS (
                     UPDATE reservations
                     SET status = CASE WHEN deposit_deadline > now() + $2 * interval '1 microsecond'
                                       THEN 'CONFIRMED' ELSE 'EXPIRED' END,
                         updated_at = now()
                     WHERE id = $1 AND status = 'PENDING_DEPOSIT'
                     RETURNING id, status, cancel_reason, slot_id, user_id, party_size, request_id
                 ), event AS ({EVENT_OF_MOVED})
                 SELECT status, slot_id, party_size, request_id FROM moved"
            ))
            .bind::<SqlUuid, _>(id.0)
            .bind::<BigInt, _>(terms.offset.micros())
            .bind::<Text, _>(caller)
            .get_result(conn)
            .await
            .optional()?;
            let Some(m) = moved else { return Ok::<_, diesel::result::Error>(None) };
            let offer = is_offer_request(&m.request_id).then_some((id.0, caller));
            let freed = if m.status == "EXPIRED" {
                Some(free_seats(conn, m.slot_id, m.party_size, terms, offer).await?)
            } else {
                // An accepted offer frees nothing; its entry needs no slot lock.
                if let Some((id, caller)) = offer {
                    end_offer(conn, id, caller).await?;
                }
                None
            };
            Ok(Some(freed))
        })
        .await?;
    Ok(match (find_reservation(conn, id).await?, moved) {
        (None, _) => Confirmed::Missing,
        (Some(r), Some(None)) => Confirmed::Now(r),
        (Some(reservation), Some(Some(f))) => {
            Confirmed::ExpiredNow { reservation, version: f.version, waitlist: f.waitlist }
        }
        (Some(r), None) if r.status == ReservationStatus::Confirmed => Confirmed::Already(r),
        (Some(r), None) => Confirmed::NotPending(r),
    })
}

/// Expires up to `limit` unpaid reservations whose deadline has passed (by
/// the database's clock, shifted by `terms.offset`; see [`crate::clock`])
/// and frees their seats, in one transaction; expired waitlist offers are
/// LAPSED and the seats go on to the waitlist. `SKIP LOCKED` lets several
/// replicas sweep at once without waiting on, or double-counting, each
/// other's rows.
///
/// Slot rows are locked in id order before they are updated, the order
/// `OpenSlots` locks them in, so the two never deadlock.
pub async fn expire_due(
    conn: &mut AsyncPgConnection,
    terms: OfferTerms,
    limit: i64,
) -> Result<Vec<Lapsed>, StoreError> {
    #[derive(QueryableByName)]
    struct Due {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = BigInt)]
        slot_id: i64,
    }
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
        #[diesel(embed)]
        freed: FreedIn,
    }
    let lapsed: Vec<(Row, bool)> = conn
        .transaction(async |conn| {
            let due: Vec<Due> = prepared(
                "SELECT id, slot_id FROM reservations
                 WHERE status = 'PENDING_DEPOSIT' AND deposit_deadline <= now() + $1 * interval '1 microsecond'
                 ORDER BY deposit_deadline
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED",
            )
            .bind::<BigInt, _>(terms.offset.micros())
            .bind::<BigInt, _>(limit)
            .load(conn)
            .await?;
            if due.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<Uuid> = due.iter().map(|d| d.id).collect();
            let slot_ids: Vec<i64> = due.iter().map(|d| d.slot_id).collect();
            // NO KEY UPDATE, the lock the UPDATE below takes anyway: FOR
            // UPDATE would also wait for every winner inserting into the
            // slot (their foreign key takes KEY SHARE on its row), and new
            // winners would keep overtaking it through a burst.
            prepared("SELECT id FROM slots WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
                .bind::<Array<BigInt>, _>(&slot_ids)
                .execute(conn)
                .await?;
            let rows: Vec<Row> = prepared(format!(
                "WITH lapsed AS (
                     UPDATE reservations r SET status = 'EXPIRED', updated_at = now()
                     WHERE r.id = ANY($1)
                     RETURNING r.id, r.status, r.slot_id, r.user_id, r.party_size
                 ), event AS (
                     INSERT INTO event_inbox (type, reservation_id, restaurant_id, user_id, status, caller)
                     SELECT 'EXPIRED', l.id, s.restaurant_id, l.user_id, 'EXPIRED', $2
                     FROM lapsed l JOIN slots s ON s.id = l.slot_id
                     RETURNING id
                 ), {}, freed AS (
                     UPDATE slots s
                     SET reserved = s.reserved - f.seats, version = s.version + 1, updated_at = now()
                     FROM (SELECT slot_id, sum(party_size)::int AS seats FROM lapsed GROUP BY slot_id) f
                     WHERE s.id = f.slot_id
                     RETURNING s.id, s.version, s.waiting, s.set_aside
                 )
                 SELECT l.id, l.user_id, l.party_size, s.restaurant_id, s.slot_date, s.slot_time,
                        f.id AS slot_id, f.version, f.waiting, f.set_aside
                 FROM lapsed l JOIN slots s ON s.id = l.slot_id JOIN freed f ON f.id = l.slot_id",
                offers_ended_with("lapsed", "$2")
            ))
            .bind::<Array<SqlUuid>, _>(&ids)
            .bind::<Text, _>(SWEEPER)
            .load(conn)
            .await?;
            // Each slot whose waitlist has a say gets the seats it freed
            // offered on, once, in slot id order (the order they are locked
            // in).
            let mut seats: std::collections::BTreeMap<i64, (FreedIn, i32)> = Default::default();
            for r in rows.iter().filter(|r| r.freed.concerns_waitlist()) {
                seats.entry(r.freed.slot_id).or_insert((r.freed, 0)).1 += r.party_size;
            }
            let mut versions = std::collections::HashMap::new();
            for (slot_id, (freed, n)) in seats {
                versions.insert(slot_id, settle_freed(conn, freed, n, terms).await?.0);
            }
            Ok::<_, diesel::result::Error>(
                rows.into_iter()
                    .map(|mut r| {
                        let offered = versions.get(&r.freed.slot_id).copied();
                        if let Some(v) = offered {
                            r.freed.version = v;
                        }
                        (r, offered.is_some())
                    })
                    .collect(),
            )
        })
        .await?;
    Ok(lapsed
        .into_iter()
        .map(|(r, waitlist)| Lapsed {
            id: ReservationId(r.id),
            slot: r.slot.key(),
            user_id: r.user_id,
            party_size: r.party_size,
            version: r.freed.version,
            waitlist,
        })
        .collect())
}
