//! AIP-155 request ids: replays, reuse, duplicate users.

use slotgate::{metrics::Metrics, pb};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{burst, reason_of, reserve, slot_at, spawn_app, spawn_app_with, tally};

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_with_the_same_request_id_gets_the_same_reservation_back() {
    let app = spawn_app().await;
    let slot = slot_at("18:00");
    app.open(&[(slot.clone(), 40)]).await;
    let first = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    for _ in 0..3 {
        let again = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
        assert_eq!(again, first);
    }
    assert_eq!(app.remaining(&slot).await.remaining, 36);
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
    assert_eq!(Metrics::read(&app.metrics.store_transactions), 1, "replays never reach the database's write path");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_retries_of_one_request_all_get_the_one_reservation() {
    // Fifty retries at once from one user would meet the click guard; this
    // test is about how retries coalesce, so the guard is off.
    let app = spawn_app_with(|c| c.user_burst = 0).await;
    let slot = slot_at("18:00");
    app.open(&[(slot.clone(), 40)]).await;
    let results = burst(app.addr, vec![reserve("r-1", "alice", &slot, 4); 50], 4).await;
    assert_eq!(tally(&results).get("OK"), Some(&50), "{:?}", tally(&results));
    let ids: std::collections::HashSet<_> = results.iter().flatten().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
    assert_eq!(app.remaining(&slot).await.remaining, 36);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_reused_with_another_payload_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let (slot, other_slot) = (slot_at("18:00"), slot_at("19:00"));
    app.open(&[(slot.clone(), 40), (other_slot.clone(), 40)]).await;
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();

    for changed in [
        reserve("r-1", "alice", &slot, 2),
        reserve("r-1", "bob", &slot, 4),
        pb::CreateReservationRequest {
            r#type: pb::ReservationType::PreorderPrepay as i32,
            menu_items: vec![pb::MenuItemOrder { menu_id: 1, quantity: 1 }],
            ..reserve("r-1", "alice", &slot, 4)
        },
        // Another slot: the gate there has never seen r-1; the database's
        // primary key on the derived id catches it.
        reserve("r-1", "alice", &other_slot, 4),
    ] {
        let status = app.create(changed).await.unwrap_err();
        assert_eq!(reason_of(&status), (Code::InvalidArgument, "REQUEST_ID_REUSED".into()));
    }
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
    assert_eq!(app.db_slot(&other_slot).await, (40, 0, 0));
    assert_eq!(app.remaining(&slot).await.remaining, 36);
    assert_eq!(app.remaining(&other_slot).await.remaining, 40, "the refused attempt's hold went back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_holding_a_reservation_gets_duplicate_for_a_new_request_id() {
    let app = spawn_app().await;
    let slot = slot_at("18:00");
    app.open(&[(slot.clone(), 40)]).await;
    let first = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    let status = app.create(reserve("r-2", "alice", &slot, 2)).await.unwrap_err();
    assert_eq!(reason_of(&status), (Code::AlreadyExists, "DUPLICATE".into()));
    assert_eq!(status.get_details_error_info().unwrap().metadata["reservation_id"], first.id);
    assert_eq!(app.remaining(&slot).await.remaining, 36);
    assert_eq!(Metrics::read(&app.metrics.store_transactions), 1, "the duplicate never reached the database");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_redis_loses_everything_replays_and_duplicates_are_still_answered_right() {
    let app = spawn_app().await;
    let slot = slot_at("18:00");
    app.open(&[(slot.clone(), 40)]).await;
    let first = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    app.flush_redis().await;

    assert_eq!(app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap(), first);
    let status = app.create(reserve("r-2", "alice", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&status), (Code::AlreadyExists, "DUPLICATE".into()));
    // The counter was rebuilt from the database with its holders, so the
    // gate itself answered both: no new transaction.
    assert_eq!(Metrics::read(&app.metrics.store_transactions), 1);
    assert_eq!(Metrics::read(&app.metrics.counters_loaded), 1);
    assert_eq!(app.remaining(&slot).await.remaining, 36);
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_on_a_closed_slot_whose_ids_key_was_lost_is_still_the_booking() {
    let app = spawn_app().await;
    let slot = slot_at("18:30");
    app.open(&[(slot.clone(), 40)]).await;
    let first = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    redis::cmd("DEL").arg(app.key(&slot, "ids")).query_async::<()>(&mut app.redis().await).await.unwrap();
    app.admin.clone().close_slots(pb::CloseSlotsRequest { slots: vec![slot.clone()] }).await.unwrap();
    // The lost key makes the slot reload before the window is looked at.
    assert_eq!(app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap(), first);
    let late = app.create(reserve("r-2", "bob", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&late), (Code::FailedPrecondition, "SLOT_CLOSED".into()));
}
