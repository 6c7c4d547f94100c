//! The model's check after every step: every invariant against the real
//! database and gate.

use std::collections::HashMap;

use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{Failure, Model, slots, waitlist};
use crate::helpers::{TestApp, audit_slots};

/// Connections the check reads through, kept for a whole sequence.
pub struct Probe {
    pub database: AsyncPgConnection,
    pub redis: redis::aio::MultiplexedConnection,
}

/// Every invariant, against the real database and gate. Counters are read
/// as they are: a cold one (no `left`) is fine, a warm one must be exact.
pub async fn check(app: &TestApp, probe: &mut Probe, model: &Model) -> Result<(), Failure> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        request_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        status: String,
    }
    let rows: Vec<Row> = sql_query("SELECT request_id, status FROM reservations")
        .load(&mut probe.database)
        .await
        .map_err(|e| Failure(e.to_string()))?;
    let actual: HashMap<String, String> = rows.into_iter().map(|r| (r.request_id, r.status)).collect();
    let expected: HashMap<String, String> =
        model.booked.iter().map(|(k, b)| (k.clone(), b.status.db().to_owned())).collect();
    ensure!(actual == expected, "reservations: database {actual:?}, model {expected:?}");

    let figures = audit_slots(&mut probe.database).await.map_err(|e| Failure(e.to_string()))?;
    let mut counters = redis::pipe();
    for slot in &slots() {
        counters.cmd("HGET").arg(app.key(slot, "seats")).arg("left");
    }
    let lefts: Vec<Option<i32>> = counters.query_async(&mut probe.redis).await.map_err(|e| Failure(e.to_string()))?;
    for (i, (f, left)) in figures.iter().zip(lefts).enumerate() {
        let (capacity, taken) = (model.capacity[i], model.seats_taken(i));
        ensure!(f.doubled == 0, "slot {i}: a user holds two reservations");
        ensure!(
            (f.capacity, f.reserved, f.active) == (capacity, taken, i64::from(taken)),
            "slot {i} in the database: {:?}, model {:?}",
            (f.capacity, f.reserved, f.active),
            (capacity, taken)
        );
        if let Some(left) = left {
            ensure!(left == model.left(i), "slot {i}: counter says {left}, model {}", model.left(i));
        }
    }
    waitlist::check(probe, model).await
}
