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

use super::{StoreError, prepared::prepared, reservations};
use crate::domain::{CancelReason, ReservationStatus};

/// Transaction advisory lock of the sequencer: one numbering pass at a time
/// across the deployment.
const SEQUENCER_LOCK: i64 = super::MIGRATION_LOCK + 2;

/// What happened to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Confirmed,
    Cancelled,
    Expired,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }

    fn from_db(s: &str) -> Option<Self> {
        [Self::Created, Self::Confirmed, Self::Cancelled, Self::Expired].into_iter().find(|k| k.as_str() == s)
    }
}

/// One numbered event: the change, and the reservation as it left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub sequence: u64,
    pub kind: EventKind,
    pub reservation: reservations::Reservation,
    pub occurred_at: DateTime<Utc>,
    pub caller: String,
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// 0: every restaurant.
    pub restaurant_id: i64,
    /// Empty: every user.
    pub user_id: String,
}

impl EventFilter {
    pub fn matches(&self, event: &Event) -> bool {
        (self.restaurant_id == 0 || event.reservation.slot.restaurant_id == self.restaurant_id)
            && (self.user_id.is_empty() || event.reservation.user_id == self.user_id)
    }
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

/// Numbers up to `batch` committed events not numbered yet, in the order
/// they were written, after the highest number handed out; returns how many.
/// Does nothing (and answers 0) while another replica's pass holds the lock.
pub async fn number_events(conn: &mut AsyncPgConnection, batch: i64) -> Result<usize, StoreError> {
    #[derive(QueryableByName)]
    struct Any {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        any: bool,
    }
    let pending: Any = prepared("SELECT EXISTS (SELECT 1 FROM reservation_events WHERE sequence IS NULL) AS any")
        .get_result(conn)
        .await?;
    if !pending.any {
        return Ok(0);
    }
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let numbered = conn
        .transaction(async |conn| {
            let locked: Locked = prepared("SELECT pg_try_advisory_xact_lock($1) AS locked")
                .bind::<BigInt, _>(SEQUENCER_LOCK)
                .get_result(conn)
                .await?;
            if !locked.locked {
                return Ok::<_, diesel::result::Error>(0);
            }
            // A statement of its own after the lock: its snapshot includes
            // every pass that committed before this one took the lock.
            #[derive(QueryableByName)]
            struct Count {
                #[diesel(sql_type = BigInt)]
                n: i64,
            }
            let moved: Count = prepared(
                "WITH next AS (
                   SELECT id, row_number() OVER (ORDER BY id) AS n
                   FROM reservation_events WHERE sequence IS NULL ORDER BY id LIMIT $1
                 ), numbered AS (
                   UPDATE reservation_events e SET sequence = l.last_sequence + next.n
                   FROM next, event_log l
                   WHERE e.id = next.id
                   RETURNING e.sequence
                 )
                 UPDATE event_log SET last_sequence = last_sequence + (SELECT count(*) FROM numbered)
                 RETURNING (SELECT count(*) FROM numbered) AS n",
            )
            .bind::<BigInt, _>(batch)
            .get_result(conn)
            .await?;
            Ok(moved.n as usize)
        })
        .await?;
    Ok(numbered)
}

#[derive(QueryableByName)]
struct EventRow {
    #[diesel(sql_type = BigInt)]
    sequence: i64,
    #[diesel(sql_type = Text)]
    type_: String,
    #[diesel(sql_type = SqlUuid)]
    reservation_id: Uuid,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    cancel_reason: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    occurred_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    caller: String,
}

/// Up to `limit` numbered events after `after` that `filter` takes, in
/// sequence order, each with its reservation as the change left it.
pub async fn events_after(
    conn: &mut AsyncPgConnection,
    after: u64,
    filter: &EventFilter,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let rows: Vec<EventRow> = prepared(
        "SELECT sequence, type AS type_, reservation_id, status, cancel_reason, occurred_at, caller
         FROM reservation_events
         WHERE sequence > $1 AND ($2 = 0 OR restaurant_id = $2) AND ($3 = '' OR user_id = $3)
         ORDER BY sequence LIMIT $4",
    )
    .bind::<BigInt, _>(after as i64)
    .bind::<BigInt, _>(filter.restaurant_id)
    .bind::<Text, _>(&filter.user_id)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.reservation_id).collect();
    let found = reservations::find_many(conn, &ids).await?;
    rows.into_iter()
        .map(|row| {
            let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("event {}: {what} {v:?}", row.sequence));
            let mut reservation = found
                .get(&row.reservation_id)
                .cloned()
                .ok_or_else(|| corrupt("reservation", &row.reservation_id.to_string()))?;
            reservation.status =
                ReservationStatus::from_db(&row.status).ok_or_else(|| corrupt("status", &row.status))?;
            reservation.cancel_reason = match &row.cancel_reason {
                None => None,
                Some(r) => Some(CancelReason::from_db(r).ok_or_else(|| corrupt("cancel reason", r))?),
            };
            Ok(Event {
                sequence: row.sequence as u64,
                kind: EventKind::from_db(&row.type_).ok_or_else(|| corrupt("type", &row.type_))?,
                reservation,
                occurred_at: row.occurred_at,
                caller: row.caller,
            })
        })
        .collect()
}

/// Deletes numbered events that occurred before `before` (oldest first, up
/// to `batch`), moving `pruned_through` past them; returns how many.
pub async fn prune(conn: &mut AsyncPgConnection, before: DateTime<Utc>, batch: i64) -> Result<usize, StoreError> {
    #[derive(QueryableByName)]
    struct Pruned {
        #[diesel(sql_type = Nullable<BigInt>)]
        through: Option<i64>,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let pruned: Option<Pruned> = prepared(
        "WITH gone AS (
           DELETE FROM reservation_events WHERE id IN (
             SELECT id FROM reservation_events
             WHERE sequence IS NOT NULL AND occurred_at < $1
             ORDER BY sequence LIMIT $2)
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
