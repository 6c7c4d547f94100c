//! Restaurants' time zones: setting one moves the starts of its slots
//! (see `slots` for how a start is worked out).

use chrono::NaiveDate;
use diesel::{
    QueryableByName,
    sql_types::{BigInt, Date, Nullable, Text},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{
    StoreError,
    prepared::prepared,
    slots::{OPEN_SLOTS_LOCK, Reshaped, STARTS_AT, SlotRow, slot_columns},
};

/// What [`put_restaurant`] did.
#[derive(Debug)]
pub enum ZoneOutcome {
    /// The zone is set. `moved` slots start at another instant now; `slots`
    /// are every slot of the restaurant from the date given, with their
    /// figures after the change (all of them, so that a call repeated after
    /// its counters could not be updated updates them).
    Set { time_zone: String, moved: usize, slots: Vec<Reshaped> },
    /// PostgreSQL knows no such zone.
    Unknown,
}

/// Sets a restaurant's time zone (`None`: the default zone), creating the
/// restaurant if it is new. Every slot of it dated `from` or later whose
/// start this moves gets a new version, returned with its new window.
pub async fn put_restaurant(
    conn: &mut AsyncPgConnection,
    restaurant_id: i64,
    time_zone: Option<&str>,
    from: NaiveDate,
) -> Result<ZoneOutcome, StoreError> {
    if let Some(zone) = time_zone
        && !zone_exists(conn, zone).await?
    {
        return Ok(ZoneOutcome::Unknown);
    }
    #[derive(QueryableByName)]
    struct Zone {
        #[diesel(sql_type = Text)]
        zone: String,
    }
    let (moved, slots) = conn
        .transaction(async |conn| {
            // Serialised with OpenSlots and CloseSlots: a slot opened or
            // closed meanwhile is either seen here or done under the new
            // zone.
            prepared("SELECT pg_advisory_xact_lock($1)").bind::<BigInt, _>(OPEN_SLOTS_LOCK).execute(conn).await?;
            let old: Zone = prepared(
                "SELECT COALESCE((SELECT time_zone FROM restaurants WHERE id = $1), current_setting('TimeZone')) AS zone",
            )
            .bind::<BigInt, _>(restaurant_id)
            .get_result(conn)
            .await?;
            prepared(
                "INSERT INTO restaurants (id, time_zone) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET time_zone = EXCLUDED.time_zone",
            )
            .bind::<BigInt, _>(restaurant_id)
            .bind::<Nullable<Text>, _>(time_zone)
            .execute(conn)
            .await?;
            // The slots' rows in id order, as every statement that locks
            // several slots takes them.
            prepared(
                "SELECT id FROM slots WHERE restaurant_id = $1 AND slot_date >= $2 ORDER BY id FOR NO KEY UPDATE",
            )
            .bind::<BigInt, _>(restaurant_id)
            .bind::<Date, _>(from)
            .execute(conn)
            .await?;
            let moved = prepared(format!(
                "UPDATE slots s SET version = s.version + 1, updated_at = now()
                 FROM restaurants z
                 WHERE z.id = s.restaurant_id AND s.restaurant_id = $1 AND s.slot_date >= $2
                   AND (s.slot_date + s.slot_time) AT TIME ZONE $3 IS DISTINCT FROM {STARTS_AT}"
            ))
            .bind::<BigInt, _>(restaurant_id)
            .bind::<Date, _>(from)
            .bind::<Text, _>(&old.zone)
            .execute(conn)
            .await?;
            let slots: Vec<SlotRow> = prepared(format!(
                "SELECT {} FROM slots s JOIN restaurants z ON z.id = s.restaurant_id
                 WHERE s.restaurant_id = $1 AND s.slot_date >= $2 ORDER BY s.id",
                slot_columns()
            ))
            .bind::<BigInt, _>(restaurant_id)
            .bind::<Date, _>(from)
            .load(conn)
            .await?;
            Ok::<_, diesel::result::Error>((moved, slots))
        })
        .await?;
    let time_zone = match time_zone {
        Some(zone) => zone.to_owned(),
        None => current_zone(conn).await?,
    };
    Ok(ZoneOutcome::Set { time_zone, moved, slots: slots.iter().map(SlotRow::reshaped).collect() })
}

/// Whether PostgreSQL's time zone database has `zone` (an IANA name, in
/// its canonical spelling).
pub async fn zone_exists(conn: &mut AsyncPgConnection, zone: &str) -> Result<bool, StoreError> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    // Names of the zone files that are no zone of their own are left out.
    let found: Found = prepared(
        "SELECT EXISTS (SELECT 1 FROM pg_timezone_names
                        WHERE name = $1 AND name NOT IN ('localtime', 'posixrules', 'Factory')) AS found",
    )
    .bind::<Text, _>(zone)
    .get_result(conn)
    .await?;
    Ok(found.found)
}

/// The connection's `TimeZone`: the default zone.
async fn current_zone(conn: &mut AsyncPgConnection) -> Result<String, StoreError> {
    #[derive(QueryableByName)]
    struct Zone {
        #[diesel(sql_type = Text)]
        zone: String,
    }
    let zone: Zone = prepared("SELECT current_setting('TimeZone') AS zone").get_result(conn).await?;
    Ok(zone.zone)
}
