//! Slots: a restaurant's day, and the figures a seat counter is loaded or
//! reconciled from. Opening them and changing capacities and windows is in
//! `opening`, closing them in `closing`, time zones in `zones`.
//!
//! A slot starts at its local date and time in its restaurant's time zone,
//! or, for a restaurant without one, in the connection's `TimeZone` (each
//! pooled connection sets it to `--default-time-zone`). PostgreSQL's zone
//! rules apply: a local time that a daylight-saving change skips (02:30 on a
//! spring-forward night) is read with the offset before the change, so it
//! is the same instant as the hour after it (03:30); one that happens twice
//! (01:30 on a fall-back night) is the second, the one after the change.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use diesel::{
    QueryableByName,
    sql_types::{BigInt, Date, Integer, Nullable, Text, Time, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{ACTIVE, MIGRATION_LOCK, StoreError, prepared::prepared};
use crate::domain::{EntryId, Holder, KnownRequest, ReservationId, SlotFigures, SlotKey, Waitlisted, Window};

/// A slot's start, as SQL over `slots s` joined with `restaurants z`.
pub(super) const STARTS_AT: &str =
    "((s.slot_date + s.slot_time) AT TIME ZONE COALESCE(z.time_zone, current_setting('TimeZone')))";

/// Transaction advisory lock that serialises `OpenSlots` calls, so two
/// operators changing one slot cannot interleave their capacity deltas.
pub(super) const OPEN_SLOTS_LOCK: i64 = MIGRATION_LOCK + 1;

/// A slot's seat figures and window, after a change that moved its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reshaped {
    pub slot: SlotKey,
    pub capacity: i32,
    pub version: i64,
    pub window: Window,
}

/// A slot of a restaurant's day: what `ListAvailability` shows besides the
/// seats left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaySlot {
    pub slot: SlotKey,
    pub capacity: i32,
    /// Seats not public: reserved, and set aside for the waitlist.
    pub reserved: i32,
    pub window: Window,
}

/// A slot's natural key as selected from `slots` (embedded in other rows).
#[derive(QueryableByName)]
pub(super) struct SlotKeyRow {
    #[diesel(sql_type = BigInt)]
    restaurant_id: i64,
    #[diesel(sql_type = Date)]
    slot_date: NaiveDate,
    #[diesel(sql_type = Time)]
    slot_time: NaiveTime,
}

impl SlotKeyRow {
    pub(super) fn key(&self) -> SlotKey {
        SlotKey { restaurant_id: self.restaurant_id, date: self.slot_date, time: self.slot_time }
    }
}

/// A slot's natural key and seat figures, as selected from `slots s`.
#[derive(QueryableByName)]
pub(super) struct SlotRow {
    #[diesel(embed)]
    natural: SlotKeyRow,
    #[diesel(sql_type = Integer)]
    pub(super) capacity: i32,
    #[diesel(sql_type = Integer)]
    pub(super) reserved: i32,
    #[diesel(sql_type = BigInt)]
    pub(super) version: i64,
    #[diesel(embed)]
    pub(super) window: WindowRow,
}

impl SlotRow {
    pub(super) fn key(&self) -> SlotKey {
        self.natural.key()
    }

    pub(super) fn reshaped(&self) -> Reshaped {
        Reshaped { slot: self.key(), capacity: self.capacity, version: self.version, window: self.window.window() }
    }
}

/// A slot's window as selected from `slots s` (with [`STARTS_AT`]).
#[derive(QueryableByName)]
pub(super) struct WindowRow {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub(super) opens_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub(super) closes_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    pub(super) starts_at: DateTime<Utc>,
}

impl WindowRow {
    pub(super) fn window(&self) -> Window {
        Window { opens_at: self.opens_at, closes_at: self.closes_at, starts_at: Some(self.starts_at) }
    }
}

/// The columns of a [`SlotRow`], over `slots s` joined with `restaurants z`.
pub(super) fn slot_columns() -> String {
    format!(
        "s.restaurant_id, s.slot_date, s.slot_time, s.capacity, s.reserved, s.version,
         s.opens_at, s.closes_at, {STARTS_AT} AS starts_at"
    )
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
    /// Set for a waitlist entry (whether it is WAITING), not for a
    /// reservation.
    #[diesel(sql_type = Nullable<diesel::sql_types::Bool>)]
    waiting: Option<bool>,
    #[diesel(sql_type = Integer)]
    set_aside: i32,
    #[diesel(sql_type = Nullable<Integer>)]
    waitlist_limit: Option<i32>,
    #[diesel(sql_type = Integer)]
    last_position: i32,
}

/// Capacity, seats reserved, the reservations of slots (active ones name
/// their holders) and their waitlists, read in one statement: one
/// snapshot, so `reserved`, the holders and the entries agree.
fn figures_query(filter: &str) -> String {
    format!(
        "SELECT {}, s.set_aside, s.waitlist_limit, s.last_position, r.user_id, r.id, r.fingerprint, r.active, r.waiting
         FROM slots s
         JOIN restaurants z ON z.id = s.restaurant_id
         LEFT JOIN (
             SELECT slot_id, user_id, id, fingerprint, status IN {ACTIVE} AS active, NULL::boolean AS waiting
             FROM reservations
             UNION ALL
             SELECT slot_id, user_id, id, fingerprint, false, state = 'WAITING' FROM waitlist_entries
         ) r ON r.slot_id = s.id
         WHERE {filter}
         ORDER BY s.id",
        slot_columns()
    )
}

fn group_figures(rows: Vec<FigureRow>) -> Vec<(SlotKey, SlotFigures)> {
    let mut out: Vec<(SlotKey, SlotFigures)> = Vec::new();
    for row in rows {
        let key = row.slot.key();
        if out.last().is_none_or(|(k, _)| *k != key) {
            let figures = SlotFigures {
                capacity: row.slot.capacity,
                reserved: row.slot.reserved,
                version: row.slot.version,
                window: row.slot.window.window(),
                waitlist: Waitlisted {
                    limit: row.waitlist_limit,
                    set_aside: row.set_aside,
                    last_position: row.last_position,
                    ..Default::default()
                },
                ..Default::default()
            };
            out.push((key, figures));
        }
        let (Some(user), Some(id), Some(fp), Some(active), Some((_, figures))) =
            (row.user_id, row.id, row.fingerprint, row.active, out.last_mut())
        else {
            continue;
        };
        match row.waiting {
            Some(waiting) => {
                figures.waitlist.joins.push((EntryId(id), fp));
                if waiting {
                    figures.waitlist.waiting.push((user, EntryId(id)));
                }
            }
            None => {
                let id = ReservationId(id);
                figures.requests.push(KnownRequest { id, fingerprint: fp });
                if active {
                    figures.holders.push(Holder { user, id });
                }
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

/// The keys of every slot dated `from` or later. A background read (see
/// [`UNBOUNDED`]).
pub async fn slot_keys_from(conn: &mut AsyncPgConnection, from: NaiveDate) -> Result<Vec<SlotKey>, StoreError> {
    let keys: Vec<SlotKeyRow> = conn
        .transaction(async |conn| {
            prepared(UNBOUNDED).execute(conn).await?;
            prepared("SELECT restaurant_id, slot_date, slot_time FROM slots WHERE slot_date >= $1 ORDER BY id")
                .bind::<Date, _>(from)
                .load(conn)
                .await
        })
        .await?;
    Ok(keys.iter().map(SlotKeyRow::key).collect())
}

/// Every slot dated `from` or later (default: the database's current date).
/// A background read of every reservation of those slots (see
/// [`UNBOUNDED`]).
pub async fn slots_from(
    conn: &mut AsyncPgConnection,
    from: Option<NaiveDate>,
) -> Result<Vec<(SlotKey, SlotFigures)>, StoreError> {
    let rows: Vec<FigureRow> = conn
        .transaction(async |conn| {
            prepared(UNBOUNDED).execute(conn).await?;
            prepared(figures_query("s.slot_date >= COALESCE($1, CURRENT_DATE)"))
                .bind::<Nullable<Date>, _>(from)
                .load(conn)
                .await
        })
        .await?;
    Ok(group_figures(rows))
}

/// The background passes (warm, reconcile, reap) read in a transaction of
/// their own with no statement timeout: the session's bound is for the work
/// of requests, and a pass over every slot of a large deployment may rightly
/// take longer. Those reads take no locks.
const UNBOUNDED: &str = "SET LOCAL statement_timeout = 0";

/// Every slot of a restaurant's local day, in time order.
pub async fn day_slots(
    conn: &mut AsyncPgConnection,
    restaurant_id: i64,
    date: NaiveDate,
) -> Result<Vec<DaySlot>, StoreError> {
    #[derive(QueryableByName)]
    struct DayRow {
        #[diesel(embed)]
        slot: SlotRow,
        #[diesel(sql_type = Integer)]
        set_aside: i32,
    }
    let rows: Vec<DayRow> = prepared(format!(
        "SELECT {}, s.set_aside FROM slots s JOIN restaurants z ON z.id = s.restaurant_id
         WHERE s.restaurant_id = $1 AND s.slot_date = $2
         ORDER BY s.slot_time",
        slot_columns()
    ))
    .bind::<BigInt, _>(restaurant_id)
    .bind::<Date, _>(date)
    .load(conn)
    .await?;
    Ok(rows
        .iter()
        .map(|r| DaySlot {
            slot: r.slot.key(),
            capacity: r.slot.capacity,
            reserved: r.slot.reserved + r.set_aside,
            window: r.slot.window.window(),
        })
        .collect())
}
