//! Reading reservations: one by id, with its items, and what the rows of
//! some ids say.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension, QueryableByName,
    sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{ACTIVE, StoreError, prepared::prepared, slots::SlotKeyRow};
use crate::domain::{CancelReason, ReservationId, ReservationKind, ReservationStatus, SlotKey};

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
