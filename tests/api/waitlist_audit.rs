//! The waitlist's invariants, audited against the database and a Redis
//! after a run of the concurrent model (and the fault tests).

use std::collections::{HashMap, HashSet};

use diesel::{QueryableByName, sql_query};
use diesel_async::RunQueryDsl;

use crate::{fault_kit::PrivateRedis, helpers::TestApp};

/// What failed, said.
#[derive(Debug)]
pub struct Broken(pub String);

impl From<Broken> for crate::concurrent::Failure {
    fn from(b: Broken) -> Self {
        Self(b.0)
    }
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Broken(format!($($msg)+)).into());
        }
    };
}

#[derive(QueryableByName)]
struct EntryRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    time: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    user_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    state: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    offer: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    offer_status: Option<String>,
}

#[derive(QueryableByName)]
struct SlotRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    time: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    capacity: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    reserved: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    set_aside: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    waiting: i32,
}

/// Every entry answered OK is a row; every offer is a reservation in the
/// status its entry says (offered: pending; accepted: confirmed; lapsed:
/// expired; left: cancelled), and no reservation is offered twice; each
/// slot's `waiting` counts its entries in line, its reserved and set-aside
/// seats fit its capacity, and a warm gate's waiters are exactly the
/// entries in line.
pub async fn audit<E: From<Broken>>(app: &TestApp, redis: &PrivateRedis, joined: &HashSet<String>) -> Result<(), E> {
    let mut db = app.database().await;
    let entries: Vec<EntryRow> = sql_query(
        "SELECT w.id::text AS id, to_char(s.slot_time, 'HH24:MI') AS time, w.user_id, w.state,
                w.offer_reservation_id::text AS offer, r.status AS offer_status
         FROM waitlist_entries w JOIN slots s ON s.id = w.slot_id
         LEFT JOIN reservations r ON r.id = w.offer_reservation_id",
    )
    .load(&mut db)
    .await
    .map_err(|e| Broken(e.to_string()))?;
    let ids: HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let missing: Vec<_> = joined.iter().filter(|j| !ids.contains(j.as_str())).collect();
    ensure!(missing.is_empty(), "joins answered OK but not in the database: {missing:?}");
    let mut offered = HashSet::new();
    for e in &entries {
        let expected = match e.state.as_str() {
            "WAITING" => None,
            "OFFERED" => Some("PENDING_DEPOSIT"),
            "ACCEPTED" => Some("CONFIRMED"),
            "LAPSED" => Some("EXPIRED"),
            _ => e.offer.as_ref().map(|_| "CANCELLED"),
        };
        ensure!(
            e.offer_status.as_deref() == expected,
            "entry {} is {} with its offer {:?}",
            e.id,
            e.state,
            e.offer_status
        );
        if let Some(offer) = &e.offer {
            ensure!(offered.insert(offer.clone()), "reservation {offer} offered twice");
        }
    }

    let slots: Vec<SlotRow> =
        sql_query("SELECT to_char(slot_time, 'HH24:MI') AS time, capacity, reserved, set_aside, waiting FROM slots")
            .load(&mut db)
            .await
            .map_err(|e| Broken(e.to_string()))?;
    let mut conn = redis.connection().await;
    for s in &slots {
        let in_line: HashMap<String, String> = entries
            .iter()
            .filter(|e| e.time == s.time && e.state == "WAITING")
            .map(|e| (e.user_id.clone(), e.id.clone()))
            .collect();
        ensure!(s.waiting as usize == in_line.len(), "{}: waiting {} != {} in line", s.time, s.waiting, in_line.len());
        ensure!(
            s.reserved + s.set_aside <= s.capacity,
            "{}: {} reserved and {} set aside of {}",
            s.time,
            s.reserved,
            s.set_aside,
            s.capacity
        );
        let slot = crate::helpers::slot_at(&s.time);
        let left: Option<i32> =
            redis::cmd("HGET").arg(app.key(&slot, "seats")).arg("left").query_async(&mut conn).await.unwrap();
        if left.is_none() {
            continue;
        }
        let mut waiters: HashMap<String, String> =
            redis::cmd("HGETALL").arg(app.key(&slot, "waiters")).query_async(&mut conn).await.unwrap();
        ensure!(waiters.remove("").is_some(), "{}: the waiters key lost its sentinel and was not reloaded", s.time);
        ensure!(waiters == in_line, "{}: waiters in the gate {waiters:?}, in the database {in_line:?}", s.time);
    }
    Ok(())
}
