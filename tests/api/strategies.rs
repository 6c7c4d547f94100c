//! The designs slotgate is compared with (`--gate db-lock`, `--gate
//! fair-lock`) give the same exact answers; they differ only in speed, which
//! the load kit measures, not these tests.

use std::time::Duration;

use slotgate::{config::Strategy, metrics::Metrics, pb};
use tonic::Code;

use crate::{
    bursts::{Decided, Scenario, assert_exact_outcome, clicks, scenario},
    helpers::{TestApp, burst, by_hand, reason_of, reserve, seats, shortest_lease, slot_at, spawn_app_with},
};

async fn app_with(gate: Strategy) -> TestApp {
    spawn_app_with(|c| {
        c.strategy = gate;
        // Every request waits for the database here: give the waits room
        // (this is about answers, not speed).
        c.pool_timeout = Duration::from_secs(120);
        c.request_timeout = Duration::from_secs(120);
        shortest_lease(c);
        by_hand(c);
    })
    .await
}

async fn duplicate_2000_is_exact(gate: Strategy) {
    let app = app_with(gate).await;
    let slot = slot_at("12:00");
    app.open(&[(slot.clone(), 40)]).await;
    let Scenario { users, clicks: per_user } = scenario("duplicate-2000");
    let requests = clicks(std::slice::from_ref(&slot), users, per_user);
    let before = Metrics::read(&app.metrics.db_checkouts);
    let results = burst(app.addr, requests.clone(), 8).await;
    assert_exact_outcome(&app, Decided::InTheDatabase, before, &requests, &results, &[slot]).await;
}

async fn replays_duplicates_and_cancels_answer_as_the_gate_does(gate: Strategy) {
    let app = app_with(gate).await;
    let slot = slot_at("13:00");
    app.open(&[(slot.clone(), 8)]).await;
    let first = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    assert_eq!(app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap(), first, "replay");
    let reused = app.create(reserve("r-1", "alice", &slot, 2)).await.unwrap_err();
    assert_eq!(reason_of(&reused), (Code::InvalidArgument, "REQUEST_ID_REUSED".into()));
    let dup = app.create(reserve("r-2", "alice", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&dup), (Code::AlreadyExists, "DUPLICATE".into()));
    app.create(reserve("r-3", "bob", &slot, 4)).await.unwrap();
    let sold_out = app.create(reserve("r-4", "carol", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&sold_out), (Code::FailedPrecondition, "SOLD_OUT".into()));
    // A sold-out slot still answers DUPLICATE to a holder, as the gate does.
    let dup = app.create(reserve("r-5", "bob", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&dup), (Code::AlreadyExists, "DUPLICATE".into()));

    app.cancel(&first.id, pb::CancelReason::User).await.unwrap();
    assert_eq!(seats(&app.remaining(&slot).await), (4, 8));
    app.create(reserve("r-6", "carol", &slot, 4)).await.unwrap();
    assert_eq!(app.db_slot(&slot).await, (8, 8, 8));
    let missing = app.create(reserve("r-7", "dave", &slot_at("03:00"), 4)).await.unwrap_err();
    assert_eq!(reason_of(&missing), (Code::NotFound, "SLOT_NOT_FOUND".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn db_lock_books_exactly_ten_in_duplicate_2000() {
    duplicate_2000_is_exact(Strategy::DbLock).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fair_lock_books_exactly_ten_in_duplicate_2000() {
    duplicate_2000_is_exact(Strategy::FairLock).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn db_lock_answers_replays_duplicates_and_cancels_as_the_gate_does() {
    replays_duplicates_and_cancels_answer_as_the_gate_does(Strategy::DbLock).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fair_lock_answers_replays_duplicates_and_cancels_as_the_gate_does() {
    replays_duplicates_and_cancels_answer_as_the_gate_does(Strategy::FairLock).await;
}
