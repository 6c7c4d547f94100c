//! The concurrent model's audit, once the clients and faults are done.

use std::collections::{HashMap, HashSet};

use diesel::{QueryableByName, sql_query};
use diesel_async::RunQueryDsl;

use super::{Failure, slots};
use crate::{
    fault_kit::PrivateRedis,
    helpers::{TestApp, audit_slots},
};

pub async fn audit(app: &TestApp, redis: &PrivateRedis, booked: &HashSet<String>) -> Result<(), Failure> {
    let mut db = app.database().await;
    let rows = audit_slots(&mut db).await.map_err(|e| Failure(e.to_string()))?;
    #[derive(QueryableByName)]
    struct Holder {
        #[diesel(sql_type = diesel::sql_types::Text)]
        time: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        user_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    let holders: Vec<Holder> = sql_query(
        "SELECT to_char(s.slot_time, 'HH24:MI') AS time, r.user_id, r.id::text AS id
         FROM reservations r JOIN slots s ON s.id = r.slot_id
         WHERE r.status IN ('PENDING_DEPOSIT', 'CONFIRMED')",
    )
    .load(&mut db)
    .await
    .map_err(|e| Failure(e.to_string()))?;
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    let ids: HashSet<String> = sql_query("SELECT id::text AS id FROM reservations")
        .load::<Id>(&mut db)
        .await
        .map_err(|e| Failure(e.to_string()))?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let missing: Vec<_> = booked.difference(&ids).collect();
    ensure!(missing.is_empty(), "answered OK but not in the database: {missing:?}");

    let mut conn = redis.connection().await;
    for slot in slots() {
        let row = rows.iter().find(|r| r.time == slot.time).ok_or_else(|| Failure("a slot vanished".into()))?;
        ensure!(row.reserved <= row.capacity, "{}: {} reserved of {}", slot.time, row.reserved, row.capacity);
        ensure!(
            i64::from(row.reserved) == row.active,
            "{}: reserved {} != active {}",
            slot.time,
            row.reserved,
            row.active
        );
        ensure!(row.doubled == 0, "{}: {} users hold two reservations", slot.time, row.doubled);
        let holds: i64 = redis::cmd("HLEN").arg(app.key(&slot, "holds")).query_async(&mut conn).await.unwrap();
        ensure!(holds == 0, "{}: {holds} holds left after their lease and a reaper pass", slot.time);
        let left: Option<i32> =
            redis::cmd("HGET").arg(app.key(&slot, "seats")).arg("left").query_async(&mut conn).await.unwrap();
        let Some(left) = left else { continue };
        ensure!(
            left == row.capacity - row.reserved - row.set_aside,
            "{}: counter {left}, database {} - {} - {} set aside, after a lease and a reconcile interval",
            slot.time,
            row.capacity,
            row.reserved,
            row.set_aside
        );
        let mut users: HashMap<String, String> =
            redis::cmd("HGETALL").arg(app.key(&slot, "users")).query_async(&mut conn).await.unwrap();
        ensure!(users.remove("").is_some(), "{}: the users key lost its sentinel and was not reloaded", slot.time);
        let expected: HashMap<String, String> =
            holders.iter().filter(|h| h.time == slot.time).map(|h| (h.user_id.clone(), h.id.clone())).collect();
        ensure!(users == expected, "{}: holders in the gate {users:?}, in the database {expected:?}", slot.time);
    }
    Ok(())
}
