//! The reservation events' outbox: numbering committed events, reading
//! them in sequence order, pruning old ones. Events are written by the
//! statements that change reservations (see `create` and `manage`), in the
//! same transaction; see the migration `reservation_events` for why they
//! are numbered after they commit.
//!
//! These run on a connection of the event pump's own, not the pool's: the
//! pump polls often, and its queries should neither wait behind requests
//! for a connection nor make a trace each.

use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension, QueryableByName,
    sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{
    StoreError,
    prepared::prepared,
    reservations,
    waitlist::{self, Entry},
};
use crate::domain::{CancelReason, EventFilter, ReservationStatus, WaitlistState};

/// Transaction advisory lock of the sequencer: one numbering pass at a time
/// across the deployment.
const SEQUENCER_LOCK: i64 = super::MIGRATION_LOCK + 2;

/// What happened to a reservation or a waitlist entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Confirmed,
    Cancelled,
    Expired,
    WaitlistJoined,
    WaitlistOffered,
    WaitlistLapsed,
    WaitlistLeft,
}

impl EventKind {
    const ALL: [Self; 8] = [
        Self::Created,
        Self::Confirmed,
        Self::Cancelled,
        Self::Expired,
        Self::WaitlistJoined,
        Self::WaitlistOffered,
        Self::WaitlistLapsed,
        Self::WaitlistLeft,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
            Self::WaitlistJoined => "WAITLIST_JOINED",
            Self::WaitlistOffered => "WAITLIST_OFFERED",
            Self::WaitlistLapsed => "WAITLIST_LAPSED",
            Self::WaitlistLeft => "WAITLIST_LEFT",
        }
    }

    fn from_db(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The status an offer's reservation has after a waitlist event.
    fn offer_status(self) -> Option<ReservationStatus> {
        match self {
            Self::WaitlistOffered => Some(ReservationStatus::PendingDeposit),
            Self::WaitlistLapsed => Some(ReservationStatus::Expired),
            Self::WaitlistLeft => Some(ReservationStatus::Cancelled),
            _ => None,
        }
    }
}

/// One numbered event: the change, and the reservation and waitlist entry
/// it concerns as it left them (a waitlist event names a reservation only
/// when an offer is involved; a reservation event names no entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub sequence: u64,
    pub kind: EventKind,
    pub restaurant_id: i64,
    pub user_id: String,
    pub reservation: Option<reservations::Reservation>,
    pub entry: Option<Entry>,
    pub occurred_at: DateTime<Utc>,
    pub caller: String,
}

/// The log's bounds: the highest sequence handed out, and the highest
/// pruned (events after it are kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct LogBounds {
    #[diesel(sql_type = BigInt)]
    pub last_sequence: i64,
    #[diesel(sql_type = BigInt)]
    pub pruned_through: i64,
}

pub async fn bounds(conn: &mut AsyncPgConnection) -> Result<LogBounds, StoreError> {
    Ok(prepared("SELECT last_sequence, pruned_through FROM event_log").get_result(conn).await?)
}

/// Numbers up to `batch` committed events of the inbox, in the order they
/// were written, after the highest number handed out, moving them into the
/// log; returns how many, and the highest number handed out after it.
/// Does nothing (and answers 0) while another replica's pass holds the lock.
pub async fn number_events(conn: &mut AsyncPgConnection, batch: i64) -> Result<(usize, i64), StoreError> {
    #[derive(QueryableByName)]
    struct Any {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        any: bool,
        #[diesel(sql_type = BigInt)]
        last: i64,
    }
    let pending: Any =
        prepared("SELECT EXISTS (SELECT 1 FROM event_inbox) AS any, (SELECT last_sequence FROM event_log) AS last")
            .get_result(conn)
            .await?;
    if !pending.any {
        return Ok((0, pending.last));
    }
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let numbered = conn
        .transaction(async |conn| {
            // The reasoning below needs a snapshot per statement.
            prepared("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").execute(conn).await?;
            let locked: Locked = prepared("SELECT pg_try_advisory_xact_lock($1) AS locked")
                .bind::<BigInt, _>(SEQUENCER_LOCK)
                .get_result(conn)
                .await?;
            if !locked.locked {
                return Ok::<_, diesel::result::Error>((0, pending.last));
            }
            // A statement of its own after the lock: its snapshot includes
            // every pass that committed before this one took the lock.
            #[derive(QueryableByName)]
            struct Count {
                #[diesel(sql_type = BigInt)]
                n: i64,
                #[diesel(sql_type = BigInt)]
                last: i64,
            }
            let moved: Count = prepared(
                "WITH next AS (
                   DELETE FROM event_inbox
                   WHERE id IN (SELECT id FROM event_inbox ORDER BY id LIMIT $1)
                   RETURNING *
                 ), numbered AS (
                   INSERT INTO reservation_events
                     (sequence, type, reservation_id, restaurant_id, user_id, status, cancel_reason, occurred_at,
                      caller, waitlist_entry_id)
                   SELECT l.last_sequence + row_number() OVER (ORDER BY n.id), n.type, n.reservation_id,
                          n.restaurant_id, n.user_id, n.status, n.cancel_reason, n.occurred_at, n.caller,
                          n.waitlist_entry_id
                   FROM next n, event_log l
                   RETURNING sequence
                 )
                 UPDATE event_log SET last_sequence = last_sequence + (SELECT count(*) FROM numbered)
                 RETURNING (SELECT count(*) FROM numbered) AS n, last_sequence AS last",
            )
            .bind::<BigInt, _>(batch)
            .get_result(conn)
            .await?;
            Ok((moved.n as usize, moved.last))
        })
        .await?;
    Ok(numbered)
}

#[derive(QueryableByName)]
struct EventRow {
    #[diesel(sql_type = BigInt)]
    pruned_through: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    sequence: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    type_: Option<String>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    reservation_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    waitlist_entry_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<BigInt>)]
    restaurant_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    user_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    status: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    cancel_reason: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    occurred_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    caller: Option<String>,
}

/// A page of numbered events, and the log's pruned bound as of the same
/// snapshot: when it is past the cursor, events after the cursor are gone
/// and the page has a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    pub pruned_through: u64,
    pub events: Vec<Event>,
}

/// The statement reading a page of events for `filter`'s shape: each
/// shape walks an index of its own in sequence order (a catch-all
/// `$2 = 0 OR ...` would walk the whole log for a rare restaurant).
fn page_statement(filter: &EventFilter) -> String {
    let only = match (filter.restaurant_id != 0, !filter.user_id.is_empty()) {
        (false, false) => "",
        (true, false) => "AND restaurant_id = $2",
        (false, true) => "AND user_id = $3",
        (true, true) => "AND user_id = $3 AND restaurant_id = $2",
    };
    format!(
        "SELECT l.pruned_through, e.sequence, e.type AS type_, e.reservation_id, e.waitlist_entry_id,
                e.restaurant_id, e.user_id, e.status, e.cancel_reason, e.occurred_at, e.caller
         FROM event_log l
         LEFT JOIN LATERAL (
           SELECT * FROM reservation_events
           WHERE sequence > $1 {only} AND $2 = $2 AND $3 = $3
           ORDER BY sequence LIMIT $4
         ) e ON true
         ORDER BY e.sequence"
    )
}

/// Up to `limit` numbered events after `after` that `filter` takes, in
/// sequence order, each with its reservation as the change left it, with
/// the pruned bound read in the same statement.
pub async fn events_after(
    conn: &mut AsyncPgConnection,
    after: u64,
    filter: &EventFilter,
    limit: i64,
) -> Result<EventPage, StoreError> {
    let rows: Vec<EventRow> = prepared(page_statement(filter))
        .bind::<BigInt, _>(after as i64)
        .bind::<BigInt, _>(filter.restaurant_id)
        .bind::<Text, _>(&filter.user_id)
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await?;
    let pruned_through = rows.iter().map(|r| r.pruned_through).next().unwrap_or_default() as u64;
    let rows: Vec<EventRow> = rows.into_iter().filter(|r| r.sequence.is_some()).collect();
    if rows.is_empty() {
        return Ok(EventPage { pruned_through, events: Vec::new() });
    }
    let ids: Vec<Uuid> = rows.iter().filter_map(|r| r.reservation_id).collect();
    let found = reservations::find_many(conn, &ids).await?;
    let entry_ids: Vec<Uuid> = rows.iter().filter_map(|r| r.waitlist_entry_id).collect();
    let entries = if entry_ids.is_empty() { Default::default() } else { waitlist::find_many(conn, &entry_ids).await? };
    let events = rows
        .into_iter()
        .map(|row| {
            let sequence = row.sequence.unwrap_or_default();
            let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("event {sequence}: {what} {v:?}"));
            let (Some(kind), Some(restaurant_id), Some(user_id), Some(status), Some(occurred_at), Some(caller)) =
                (row.type_, row.restaurant_id, row.user_id, row.status, row.occurred_at, row.caller)
            else {
                return Err(corrupt("row", "incomplete"));
            };
            let kind = EventKind::from_db(&kind).ok_or_else(|| corrupt("type", &kind))?;
            let entry = match row.waitlist_entry_id {
                None => None,
                Some(id) => {
                    let mut entry = entries.get(&id).cloned().ok_or_else(|| corrupt("entry", &id.to_string()))?;
                    entry.state = WaitlistState::from_db(&status).ok_or_else(|| corrupt("state", &status))?;
                    entry.parties_ahead = 0;
                    // Still waiting then: no offer yet.
                    if entry.state == WaitlistState::Waiting {
                        (entry.offer_reservation_id, entry.offer_deadline) = (None, None);
                    }
                    Some(entry)
                }
            };
            let reservation = match row.reservation_id {
                None => None,
                Some(id) => {
                    let mut r = found.get(&id).cloned().ok_or_else(|| corrupt("reservation", &id.to_string()))?;
                    r.status = match (entry.is_some(), kind.offer_status()) {
                        (true, Some(status)) => status,
                        _ => ReservationStatus::from_db(&status).ok_or_else(|| corrupt("status", &status))?,
                    };
                    if entry.is_none() {
                        r.cancel_reason = match &row.cancel_reason {
                            None => None,
                            Some(c) => Some(CancelReason::from_db(c).ok_or_else(|| corrupt("cancel reason", c))?),
                        };
                    }
                    Some(r)
                }
            };
            Ok(Event {
                sequence: sequence as u64,
                kind,
                restaurant_id,
                user_id,
                reservation,
                entry,
                occurred_at,
                caller,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(EventPage { pruned_through, events })
}

/// Deletes the oldest numbered events, in sequence order, up to the first
/// that occurred at `before` or later (at most `batch`), moving
/// `pruned_through` past them; returns how many. Only a prefix of the log
/// goes: events are not numbered in the order their transactions started
/// (`occurred_at`), and one left behind a pruned one could never be
/// delivered (its cursor would be refused as compacted).
pub async fn prune(conn: &mut AsyncPgConnection, before: DateTime<Utc>, batch: i64) -> Result<usize, StoreError> {
    #[derive(QueryableByName)]
    struct Pruned {
        #[diesel(sql_type = Nullable<BigInt>)]
        through: Option<i64>,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let pruned: Option<Pruned> = prepared(
        "WITH head AS (
           SELECT sequence, occurred_at FROM reservation_events ORDER BY sequence LIMIT $2
         ), kept AS (
           SELECT min(sequence) AS first FROM head WHERE occurred_at >= $1
         ), gone AS (
           DELETE FROM reservation_events WHERE sequence IN (
             SELECT sequence FROM head, kept WHERE kept.first IS NULL OR head.sequence < kept.first)
           RETURNING sequence
         ), moved AS (
           UPDATE event_log SET pruned_through = GREATEST(pruned_through, (SELECT max(sequence) FROM gone))
           WHERE EXISTS (SELECT 1 FROM gone)
         )
         SELECT (SELECT max(sequence) FROM gone) AS through, (SELECT count(*) FROM gone) AS n",
    )
    .bind::<Timestamptz, _>(before)
    .bind::<BigInt, _>(batch)
    .get_result(conn)
    .await
    .optional()?;
    Ok(pruned.map_or(0, |p| if p.through.is_some() { p.n as usize } else { 0 }))
}

/// The highest sequence the relay has had confirmed by the broker.
pub async fn relayed_through(conn: &mut AsyncPgConnection) -> Result<u64, StoreError> {
    #[derive(QueryableByName)]
    struct Relayed {
        #[diesel(sql_type = BigInt)]
        through: i64,
    }
    let r: Relayed = prepared("SELECT relayed_through AS through FROM event_log").get_result(conn).await?;
    Ok(r.through as u64)
}

/// Records that the broker confirmed every event up to `through`.
pub async fn set_relayed_through(conn: &mut AsyncPgConnection, through: u64) -> Result<(), StoreError> {
    prepared("UPDATE event_log SET relayed_through = GREATEST(relayed_through, $1)")
        .bind::<BigInt, _>(through as i64)
        .execute(conn)
        .await?;
    Ok(())
}
