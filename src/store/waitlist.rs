//! The waitlist in the database, which decides it: entries and their
//! places; joining, leaving, reading. Offers are in [`super::offers`].

use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension, QueryableByName,
    result::{DatabaseErrorKind, Error as DieselError},
    sql_types::{Array, BigInt, Date, Integer, Nullable, Text, Time, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{
    ACTIVE, StoreError,
    offers::{FreedIn, OfferTerms, offer_freed},
    prepared::prepared,
    slots::SlotKeyRow,
};
use crate::{
    clock::Offset,
    domain::{EntryId, Join, ReservationId, SlotKey, WaitlistQuery, WaitlistState},
};

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
