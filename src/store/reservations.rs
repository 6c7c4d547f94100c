//! Reading reservations: one by id or code, with its items, pages of a
//! listing, and what the rows of some ids say.

use std::collections::HashMap;

use chrono::{DateTime, NaiveTime, Utc};
use diesel::{
    OptionalExtension, QueryableByName,
    sql_types::{Array, BigInt, Bool, Date, Integer, Nullable, Text, Time, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{ACTIVE, StoreError, prepared::prepared, slots::SlotKeyRow};
use crate::domain::{
    CancelReason, Cursor, ListFilter, ListQuery, ReservationId, ReservationKind, ReservationStatus, SlotKey,
};

/// A reservation as stored, with its slot and items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub code: String,
    pub request_id: String,
    pub fingerprint: i64,
    pub slot: SlotKey,
    pub user_id: String,
    pub party_size: i32,
    pub kind: ReservationKind,
    pub status: ReservationStatus,
    pub created_at: DateTime<Utc>,
    pub deposit_deadline: Option<DateTime<Utc>>,
    pub cancel_reason: Option<CancelReason>,
    pub items: Vec<ReservedItem>,
}

impl Reservation {
    pub fn is_active(&self) -> bool {
        matches!(self.status, ReservationStatus::PendingDeposit | ReservationStatus::Confirmed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedItem {
    pub menu_id: i64,
    pub quantity: i32,
    pub unit_price: i64,
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
    #[diesel(embed)]
    slot: SlotKeyRow,
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
            slot: self.slot.key(),
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

const RESERVATION_COLUMNS: &str = "r.id, r.code, r.request_id, r.fingerprint, s.restaurant_id, s.slot_date,
     s.slot_time, r.user_id, r.party_size, r.kind, r.status, r.created_at, r.deposit_deadline, r.cancel_reason";

/// The reservation with this code (as [`crate::domain::parse_code`] gives
/// it), through the code's unique index.
pub async fn find_by_code(conn: &mut AsyncPgConnection, code: &str) -> Result<Option<Reservation>, StoreError> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let found: Option<Id> = prepared("SELECT id FROM reservations WHERE code = $1")
        .bind::<Text, _>(code)
        .get_result(conn)
        .await
        .optional()?;
    match found {
        Some(Id { id }) => find_reservation(conn, ReservationId(id)).await,
        None => Ok(None),
    }
}

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

/// What the database holds for a reservation id a hold names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub slot: SlotKey,
    /// The attempt whose transaction committed it (`None` when a
    /// database-only strategy made it).
    pub attempt: Option<u64>,
    pub active: bool,
    /// Its slot's version now.
    pub slot_version: i64,
}

/// The reservation rows of `ids` (committed, whatever their status).
pub async fn committed(
    conn: &mut AsyncPgConnection,
    ids: &[ReservationId],
) -> Result<HashMap<ReservationId, Committed>, StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Nullable<BigInt>)]
        attempt: Option<i64>,
        #[diesel(sql_type = Bool)]
        active: bool,
        #[diesel(embed)]
        slot: SlotKeyRow,
        #[diesel(sql_type = BigInt)]
        version: i64,
    }
    let uuids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let found: Vec<Row> = prepared(format!(
        "SELECT r.id, r.attempt, r.status IN {ACTIVE} AS active, s.restaurant_id, s.slot_date, s.slot_time, s.version
         FROM reservations r JOIN slots s ON s.id = r.slot_id
         WHERE r.id = ANY($1)"
    ))
    .bind::<Array<SqlUuid>, _>(&uuids)
    .load(conn)
    .await?;
    Ok(found
        .into_iter()
        .map(|r| {
            let committed = Committed {
                slot: r.slot.key(),
                attempt: r.attempt.map(|a| a as u64),
                active: r.active,
                slot_version: r.version,
            };
            (ReservationId(r.id), committed)
        })
        .collect())
}

/// The statement that reads a page of a listing by `filter`. Its
/// parameters: `$1` the statuses (empty: all), then the filter's values
/// (user; restaurant, date, time; restaurant, date), then the cursor
/// (created_at, id; for a day, the slot's time before them), then the
/// number of rows to read.
pub fn list_statement(filter: &ListFilter) -> String {
    let only = "(cardinality($1::text[]) = 0 OR r.status = ANY($1))";
    let base = format!("SELECT {RESERVATION_COLUMNS} FROM reservations r JOIN slots s ON s.id = r.slot_id");
    match filter {
        ListFilter::User(_) => format!(
            "{base} WHERE r.user_id = $2 AND (r.created_at, r.id) > ($3::timestamptz, $4::uuid) AND {only}
             ORDER BY r.created_at, r.id LIMIT $5"
        ),
        ListFilter::Slot(_) => format!(
            "{base} WHERE r.slot_id = (SELECT id FROM slots
                                        WHERE restaurant_id = $2 AND slot_date = $3 AND slot_time = $4)
               AND (r.created_at, r.id) > ($5::timestamptz, $6::uuid) AND {only}
             ORDER BY r.created_at, r.id LIMIT $7"
        ),
        // Slot by slot in time order, each slot's rows read in order through
        // its index from the cursor on (the cursor's own slot from its key,
        // later slots from their first row), at most a page from each: a
        // page costs the same however many reservations the day has.
        ListFilter::Day { .. } => format!(
            "SELECT {RESERVATION_COLUMNS}
             FROM slots s
             CROSS JOIN LATERAL (
               SELECT * FROM reservations r
               WHERE r.slot_id = s.id
                 AND (r.created_at, r.id) > (CASE WHEN s.slot_time > $4::time THEN '-infinity' ELSE $5::timestamptz END,
                                             CASE WHEN s.slot_time > $4::time THEN '00000000-0000-0000-0000-000000000000' ELSE $6::uuid END)
                 AND {only}
               ORDER BY r.created_at, r.id
               LIMIT $7) r
             WHERE s.restaurant_id = $2 AND s.slot_date = $3 AND s.slot_time >= $4::time
             ORDER BY s.slot_time, r.created_at, r.id LIMIT $7"
        ),
    }
}

/// One page of a listing (one row more than the page, when there is one):
/// walks the filter's index in the listing's order from the cursor on, so
/// a page costs the same however deep it is, and rows inserted or ended
/// between pages shift nothing.
pub async fn list(conn: &mut AsyncPgConnection, query: &ListQuery) -> Result<Vec<Reservation>, StoreError> {
    // The first page starts before every key.
    let start = Cursor {
        slot_time: NaiveTime::MIN,
        created_at: DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or_default(),
        id: Uuid::nil(),
    };
    let after = query.after.unwrap_or(start);
    let statuses: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
    // Read one more than the page, to know whether another page follows.
    let limit = query.page_size + 1;
    let sql = list_statement(&query.filter);
    let rows: Vec<ReservationRow> = match &query.filter {
        ListFilter::User(user) => {
            prepared(sql)
                .bind::<Array<Text>, _>(&statuses)
                .bind::<Text, _>(user)
                .bind::<Timestamptz, _>(after.created_at)
                .bind::<SqlUuid, _>(after.id)
                .bind::<BigInt, _>(limit)
                .load(conn)
                .await?
        }
        ListFilter::Slot(slot) => {
            prepared(sql)
                .bind::<Array<Text>, _>(&statuses)
                .bind::<BigInt, _>(slot.restaurant_id)
                .bind::<Date, _>(slot.date)
                .bind::<Time, _>(slot.time)
                .bind::<Timestamptz, _>(after.created_at)
                .bind::<SqlUuid, _>(after.id)
                .bind::<BigInt, _>(limit)
                .load(conn)
                .await?
        }
        ListFilter::Day { restaurant_id, date } => {
            prepared(sql)
                .bind::<Array<Text>, _>(&statuses)
                .bind::<BigInt, _>(*restaurant_id)
                .bind::<Date, _>(*date)
                .bind::<Time, _>(after.slot_time)
                .bind::<Timestamptz, _>(after.created_at)
                .bind::<SqlUuid, _>(after.id)
                .bind::<BigInt, _>(limit)
                .load(conn)
                .await?
        }
    };
    with_items(conn, rows).await
}

/// The reservations of `rows` with their items, read in one statement.
async fn with_items(conn: &mut AsyncPgConnection, rows: Vec<ReservationRow>) -> Result<Vec<Reservation>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    #[derive(QueryableByName)]
    struct OwnedItem {
        #[diesel(sql_type = SqlUuid)]
        reservation_id: Uuid,
        #[diesel(embed)]
        item: ItemRow,
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let items: Vec<OwnedItem> = prepared(
        "SELECT reservation_id, menu_id, quantity, unit_price FROM reservation_items
         WHERE reservation_id = ANY($1) ORDER BY reservation_id, menu_id",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .load(conn)
    .await?;
    let mut by_id: HashMap<Uuid, Vec<ReservedItem>> = HashMap::new();
    for owned in items {
        by_id.entry(owned.reservation_id).or_default().push(owned.item.into());
    }
    rows.into_iter()
        .map(|row| {
            let items = by_id.remove(&row.id).unwrap_or_default();
            row.into_reservation(items)
        })
        .collect()
}

/// The reservations of `ids` (those that exist), with their items.
pub async fn find_many(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> Result<HashMap<Uuid, Reservation>, StoreError> {
    let rows: Vec<ReservationRow> = prepared(format!(
        "SELECT {RESERVATION_COLUMNS} FROM reservations r JOIN slots s ON s.id = r.slot_id WHERE r.id = ANY($1)"
    ))
    .bind::<Array<SqlUuid>, _>(ids)
    .load(conn)
    .await?;
    Ok(with_items(conn, rows).await?.into_iter().map(|r| (r.id.0, r)).collect())
}
