//! Cancellation gives seats back exactly once.

use slotgate::pb;
use tonic::Code;

use crate::helpers::{burst, reason_of, reserve, slot_at, spawn_app, tally};

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_gives_the_seats_back_and_the_user_can_book_again() {
    let app = spawn_app().await;
    let slot = slot_at("20:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();

    let cancelled = app.cancel(&booked.id, pb::CancelReason::User).await.unwrap();
    assert!(!cancelled.already_cancelled);
    let r = cancelled.reservation.unwrap();
    assert_eq!((r.status(), r.cancel_reason()), (pb::ReservationStatus::Cancelled, pb::CancelReason::User));
    assert_eq!(app.remaining(&slot).await.remaining, 40);
    assert_eq!(app.db_slot(&slot).await, (40, 0, 0));

    let rebooked = app.create(reserve("r-2", "alice", &slot, 4)).await.unwrap();
    assert_ne!(rebooked.id, booked.id);
    assert_eq!(app.remaining(&slot).await.remaining, 36);
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_cancel_changes_nothing_and_says_so() {
    let app = spawn_app().await;
    let slot = slot_at("20:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    assert!(!app.cancel(&booked.id, pb::CancelReason::User).await.unwrap().already_cancelled);
    for _ in 0..2 {
        assert!(app.cancel(&booked.id, pb::CancelReason::User).await.unwrap().already_cancelled);
    }
    assert_eq!(app.remaining(&slot).await.remaining, 40, "seats went back once, not three times");
    assert_eq!(app.db_slot(&slot).await, (40, 0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_a_cancelled_request_returns_it_cancelled_and_books_nothing() {
    let app = spawn_app().await;
    let slot = slot_at("20:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    app.cancel(&booked.id, pb::CancelReason::User).await.unwrap();
    let replayed = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    assert_eq!((replayed.id.as_str(), replayed.status()), (booked.id.as_str(), pb::ReservationStatus::Cancelled));
    assert_eq!(app.db_slot(&slot).await, (40, 0, 0));
    assert_eq!(app.remaining(&slot).await.remaining, 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_cancellation_in_a_sold_out_slot_lets_exactly_one_more_party_in() {
    let app = spawn_app().await;
    let slot = slot_at("20:00");
    app.open(&[(slot.clone(), 40)]).await;
    let first: Vec<_> = (0..10).map(|u| reserve(&format!("a{u}"), &format!("early-{u}"), &slot, 4)).collect();
    let winners: Vec<_> = burst(app.addr, first, 2).await.into_iter().map(Result::unwrap).collect();
    app.cancel(&winners[3].id, pb::CancelReason::User).await.unwrap();

    let late: Vec<_> = (0..100).map(|u| reserve(&format!("b{u}"), &format!("late-{u}"), &slot, 4)).collect();
    let results = burst(app.addr, late, 4).await;
    let outcomes = tally(&results);
    assert_eq!(outcomes.get("OK"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.get("FailedPrecondition/SOLD_OUT"), Some(&99), "{outcomes:?}");
    assert_eq!(app.db_slot(&slot).await, (40, 40, 40));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_an_unknown_or_malformed_reservation_is_refused() {
    let app = spawn_app().await;
    let unknown = app.cancel("9b2e6a4c-0d1f-4a8e-9c3b-6f5d4e3c2b1a", pb::CancelReason::User).await.unwrap_err();
    assert_eq!(reason_of(&unknown), (Code::NotFound, "RESERVATION_NOT_FOUND".into()));
    let malformed = app.cancel("not-an-id", pb::CancelReason::User).await.unwrap_err();
    assert_eq!(reason_of(&malformed), (Code::InvalidArgument, "INVALID_FIELD".into()));
    let no_reason = app
        .reservations
        .clone()
        .cancel_reservation(pb::CancelReservationRequest {
            id: "9b2e6a4c-0d1f-4a8e-9c3b-6f5d4e3c2b1a".into(),
            reason: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(reason_of(&no_reason), (Code::InvalidArgument, "INVALID_FIELD".into()));
}
