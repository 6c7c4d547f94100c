//! Reconciliation: drifted counters are rewritten from the database, never
//! while a hold is in flight.

use std::time::Duration;

use slotgate::{metrics::Metrics, pb};
use tonic::Code;

use crate::helpers::{
    Patience, TestApp, burst, by_hand, eventually, generous_timeouts, reason_of, reserve, slot_at, spawn_app_by_hand,
    spawn_app_with, tally,
};

async fn reconcile(app: &TestApp) -> pb::ReconcileSlotsResponse {
    app.admin
        .clone()
        .reconcile_slots(pb::ReconcileSlotsRequest { from_date: "2026-12-01".into() })
        .await
        .unwrap()
        .into_inner()
}

async fn hset(app: &TestApp, key: &str, field: &str, value: &str) {
    redis::cmd("HSET").arg(key).arg(field).arg(value).query_async::<()>(&mut app.redis().await).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drifted_counter_is_rewritten_from_the_database_and_reported() {
    let app = spawn_app_by_hand().await;
    let (slot, healthy) = (slot_at("17:00"), slot_at("17:30"));
    app.open(&[(slot.clone(), 40), (healthy.clone(), 40)]).await;
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    app.create(reserve("r-2", "bob", &slot, 4)).await.unwrap();
    hset(&app, &app.key(&slot, "seats"), "left", "7").await;

    let report = reconcile(&app).await;
    assert_eq!((report.checked, report.corrected, report.busy), (2, 1, 0));
    let c = &report.corrections[0];
    assert_eq!((c.slot.as_ref(), c.remaining_before, c.remaining_after, c.capacity), (Some(&slot), 7, 32, 40));
    assert_eq!(app.remaining(&slot).await.remaining, 32);
    assert_eq!(reconcile(&app).await.corrected, 0, "a second pass finds nothing to do");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_holder_entry_is_restored_so_the_gate_refuses_duplicates_again() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("17:00");
    app.open(&[(slot.clone(), 40)]).await;
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    redis::cmd("HDEL")
        .arg(app.key(&slot, "users"))
        .arg("alice")
        .query_async::<()>(&mut app.redis().await)
        .await
        .unwrap();

    assert_eq!(reconcile(&app).await.corrected, 1);
    let transactions = Metrics::read(&app.metrics.store_transactions);
    let dup = app.create(reserve("r-2", "alice", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&dup), (Code::AlreadyExists, "DUPLICATE".into()));
    assert_eq!(Metrics::read(&app.metrics.store_transactions), transactions, "refused by the gate itself");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_with_a_hold_in_flight_is_left_alone() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("17:00");
    app.open(&[(slot.clone(), 40)]).await;
    // A hold whose transaction could still commit: rewriting the counter now
    // could hand its seats out twice.
    hset(&app, &app.key(&slot, "holds"), "9b2e6a4c-0d1f-4a8e-9c3b-6f5d4e3c2b1a", "4|carol|99999999999999|1").await;
    hset(&app, &app.key(&slot, "seats"), "left", "7").await;

    let report = reconcile(&app).await;
    assert_eq!((report.checked, report.corrected, report.busy), (1, 0, 1));
    assert_eq!(app.remaining(&slot).await.remaining, 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_periodic_reconciler_repairs_drift_on_its_own() {
    let app = spawn_app_with(|c| c.reconcile_interval = Duration::from_millis(100)).await;
    let slot = slot_at("17:00");
    app.open(&[(slot.clone(), 40)]).await;
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    hset(&app, &app.key(&slot, "seats"), "left", "0").await;

    let remaining = eventually(Patience::default(), async || app.remaining(&slot).await.remaining, |r| *r == 36).await;
    assert_eq!(remaining, 36);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_meeting_a_cold_counter_loads_it_once() {
    let app = spawn_app_with(|c| {
        generous_timeouts(c);
        by_hand(c);
    })
    .await;
    let slot = slot_at("17:00");
    app.open(&[(slot.clone(), 40)]).await;
    app.flush_redis().await;

    let checkouts_before = Metrics::read(&app.metrics.db_checkouts);
    let requests: Vec<_> = (0..300)
        .flat_map(|u| (0..2).map(move |c| (u, c)))
        .map(|(u, c)| reserve(&format!("u{u}-c{c}"), &format!("user-{u}"), &slot, 4))
        .collect();
    let results = burst(app.addr, requests, 4).await;
    assert_eq!(tally(&results).get("OK"), Some(&10), "{:?}", tally(&results));
    assert_eq!(Metrics::read(&app.metrics.counters_loaded), 1, "one load for 600 requests");
    let reached = Metrics::read(&app.metrics.db_checkouts) - checkouts_before;
    assert_eq!(reached, 1 + Metrics::read(&app.metrics.gate_admitted), "one read, then the winners only");
    assert_eq!(app.db_slot(&slot).await, (40, 40, 40));
}
