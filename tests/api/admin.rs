//! SlotAdmin: opening slots, changing capacities, warming counters.

use slotgate::{metrics::Metrics, pb};
use tonic::Code;

use crate::helpers::{reason_of, reserve, seats, slot_at, spawn_app};

#[tokio::test(flavor = "multi_thread")]
async fn raising_a_sold_out_slots_capacity_lets_more_parties_in() {
    let app = spawn_app().await;
    let slot = slot_at("21:00");
    let opened = app.open(&[(slot.clone(), 8)]).await;
    assert!(opened.slots[0].created);
    app.create(reserve("r-1", "u1", &slot, 4)).await.unwrap();
    app.create(reserve("r-2", "u2", &slot, 4)).await.unwrap();
    let sold_out = app.create(reserve("r-3", "u3", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&sold_out), (Code::FailedPrecondition, "SOLD_OUT".into()));

    let raised = app.open(&[(slot.clone(), 12)]).await.slots.remove(0);
    assert_eq!((raised.created, raised.capacity, raised.reserved, raised.remaining), (false, 12, 8, 4));
    assert_eq!(seats(&app.remaining(&slot).await), (4, 12));
    app.create(reserve("r-4", "u3", &slot, 4)).await.unwrap();
    let sold_out = app.create(reserve("r-5", "u4", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&sold_out), (Code::FailedPrecondition, "SOLD_OUT".into()));
    assert_eq!(app.db_slot(&slot).await, (12, 12, 12));
}

#[tokio::test(flavor = "multi_thread")]
async fn lowering_a_capacity_moves_the_counter_but_never_below_the_seats_reserved() {
    let app = spawn_app().await;
    let slot = slot_at("21:00");
    app.open(&[(slot.clone(), 40)]).await;
    app.create(reserve("r-1", "u1", &slot, 4)).await.unwrap();
    app.create(reserve("r-2", "u2", &slot, 4)).await.unwrap();

    app.open(&[(slot.clone(), 20)]).await;
    assert_eq!(seats(&app.remaining(&slot).await), (12, 20));
    assert_eq!(app.db_slot(&slot).await, (20, 8, 8));

    let below = app
        .admin
        .clone()
        .open_slots(pb::OpenSlotsRequest {
            slots: vec![pb::SlotCapacity { slot: Some(slot.clone()), capacity: 4, ..Default::default() }],
        })
        .await
        .unwrap_err();
    assert_eq!(reason_of(&below), (Code::FailedPrecondition, "CAPACITY_BELOW_RESERVED".into()));
    assert_eq!(app.db_slot(&slot).await, (20, 8, 8), "a refused change changes nothing");
    assert_eq!(app.remaining(&slot).await.remaining, 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_slots_loads_every_cold_counter_from_a_date_on() {
    let app = spawn_app().await;
    let (a, b) = (slot_at("12:00"), slot_at("13:00"));
    let earlier = pb::SlotRef { date: "2036-12-01".into(), ..slot_at("12:00") };
    app.open(&[(a.clone(), 40), (b.clone(), 10), (earlier.clone(), 40)]).await;
    app.create(reserve("r-1", "alice", &a, 4)).await.unwrap();
    app.flush_redis().await;

    let warm = |from: &str| {
        let mut admin = app.admin.clone();
        let from_date = from.to_owned();
        async move { admin.warm_slots(pb::WarmSlotsRequest { from_date }).await.unwrap().into_inner() }
    };
    let first = warm("2036-12-10").await;
    assert_eq!((first.warmed, first.already_warm), (2, 0));
    let again = warm("2036-12-10").await;
    assert_eq!((again.warmed, again.already_warm), (0, 2));
    assert_eq!(Metrics::read(&app.metrics.counters_loaded), 0, "no request met a cold counter");
    assert_eq!(seats(&app.remaining(&a).await), (36, 40));
    assert_eq!(seats(&app.remaining(&b).await), (10, 10));
    // The warmed holders make the gate refuse alice's second booking itself.
    let dup = app.create(reserve("r-2", "alice", &a, 4)).await.unwrap_err();
    assert_eq!(reason_of(&dup), (Code::AlreadyExists, "DUPLICATE".into()));
    assert_eq!(Metrics::read(&app.metrics.store_transactions), 1);

    let bad = app.admin.clone().warm_slots(pb::WarmSlotsRequest { from_date: "2026-12-32".into() }).await.unwrap_err();
    assert_eq!(reason_of(&bad), (Code::InvalidArgument, "INVALID_FIELD".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_meeting_a_cold_counter_loads_it_from_the_database() {
    let app = spawn_app().await;
    let slot = slot_at("12:00");
    app.open(&[(slot.clone(), 40)]).await;
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    app.flush_redis().await;
    app.create(reserve("r-2", "bob", &slot, 4)).await.unwrap();
    assert_eq!(Metrics::read(&app.metrics.counters_loaded), 1);
    assert_eq!(app.remaining(&slot).await.remaining, 32);
    assert_eq!(app.db_slot(&slot).await, (40, 8, 8));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unopened_slot_is_not_found() {
    let app = spawn_app().await;
    let slot = slot_at("06:00");
    let status = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&status), (Code::NotFound, "SLOT_NOT_FOUND".into()));
    let status =
        app.reservations.clone().get_remaining(pb::GetRemainingRequest { slot: Some(slot) }).await.unwrap_err();
    assert_eq!(reason_of(&status), (Code::NotFound, "SLOT_NOT_FOUND".into()));
    let status = app
        .reservations
        .clone()
        .get_reservation(pb::GetReservationRequest {
            key: Some(pb::get_reservation_request::Key::Id("9b2e6a4c-0d1f-4a8e-9c3b-6f5d4e3c2b1a".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(reason_of(&status), (Code::NotFound, "RESERVATION_NOT_FOUND".into()));
}
