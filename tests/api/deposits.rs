//! Deposits: pending, confirmed, expired; seats go back once.

use std::time::Duration;

use slotgate::pb;
use tonic::Code;

use crate::helpers::{Patience, TestApp, eventually, reason_of, reserve, slot_at, spawn_app_by_hand, spawn_app_with};

const WINDOW: Duration = Duration::from_secs(600);

async fn confirm(app: &TestApp, id: &str) -> Result<pb::Reservation, tonic::Status> {
    app.reservations
        .clone()
        .confirm_reservation(pb::ConfirmReservationRequest { id: id.into() })
        .await
        .map(tonic::Response::into_inner)
}

async fn status_of(app: &TestApp, id: &str) -> pb::ReservationStatus {
    app.reservations
        .clone()
        .get_reservation(pb::GetReservationRequest { key: Some(pb::get_reservation_request::Key::Id(id.into())) })
        .await
        .unwrap()
        .into_inner()
        .status()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confirmed_reservation_keeps_its_seats_and_can_still_be_cancelled() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("13:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    assert_eq!(booked.status(), pb::ReservationStatus::PendingDeposit);
    let deadline = booked.deposit_deadline.unwrap();
    let created = booked.created_at.unwrap();
    assert_eq!(deadline.seconds - created.seconds, WINDOW.as_secs() as i64);

    assert_eq!(confirm(&app, &booked.id).await.unwrap().status(), pb::ReservationStatus::Confirmed);
    assert_eq!(confirm(&app, &booked.id).await.unwrap().status(), pb::ReservationStatus::Confirmed, "idempotent");
    // A confirmed reservation never lapses.
    app.clock.advance(WINDOW * 2);
    assert_eq!(app.booking.expire_due().await.unwrap(), 0);
    assert_eq!(app.remaining(&slot).await.remaining, 36);

    let cancelled = app.cancel(&booked.id, pb::CancelReason::Refund).await.unwrap();
    assert_eq!(cancelled.reservation.unwrap().cancel_reason(), pb::CancelReason::Refund);
    assert_eq!(app.remaining(&slot).await.remaining, 40);
    assert_eq!(app.db_slot(&slot).await, (40, 0, 0));
    let status = confirm(&app, &booked.id).await.unwrap_err();
    assert_eq!(reason_of(&status), (Code::FailedPrecondition, "NOT_CONFIRMABLE".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unpaid_reservation_expires_at_its_deadline_and_its_seats_go_back_once() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("13:00");
    app.open(&[(slot.clone(), 40)]).await;
    let a = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    let b = app.create(reserve("r-2", "bob", &slot, 2)).await.unwrap();

    // The database's clock runs on while the test does (the test's clock
    // only shifts it): a margin of a minute either side of the deadline.
    app.clock.advance(WINDOW - Duration::from_secs(60));
    assert_eq!(app.booking.expire_due().await.unwrap(), 0, "not yet");
    app.clock.advance(Duration::from_secs(120));
    assert_eq!(app.booking.expire_due().await.unwrap(), 2);
    assert_eq!(app.booking.expire_due().await.unwrap(), 0, "each expires once");
    for id in [&a.id, &b.id] {
        assert_eq!(status_of(&app, id).await, pb::ReservationStatus::Expired);
    }
    assert_eq!(app.remaining(&slot).await.remaining, 40);
    assert_eq!(app.db_slot(&slot).await, (40, 0, 0));

    let late = app.cancel(&a.id, pb::CancelReason::User).await.unwrap_err();
    assert_eq!(reason_of(&late), (Code::FailedPrecondition, "NOT_CANCELLABLE".into()));
    assert_eq!(app.remaining(&slot).await.remaining, 40, "nothing given back twice");
    // The user may book again.
    app.create(reserve("r-3", "alice", &slot, 4)).await.unwrap();
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn confirming_after_the_deadline_is_refused_and_the_seats_go_back() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("13:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    app.clock.advance(WINDOW + Duration::from_secs(60));

    for _ in 0..2 {
        let status = confirm(&app, &booked.id).await.unwrap_err();
        assert_eq!(reason_of(&status), (Code::FailedPrecondition, "DEPOSIT_EXPIRED".into()));
    }
    assert_eq!(status_of(&app, &booked.id).await, pb::ReservationStatus::Expired);
    assert_eq!(app.booking.expire_due().await.unwrap(), 0, "already expired by the confirm");
    assert_eq!(app.remaining(&slot).await.remaining, 40);
    assert_eq!(app.db_slot(&slot).await, (40, 0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_background_sweeper_expires_unpaid_reservations_on_its_own() {
    let app = spawn_app_with(|c| c.expiry_sweep_interval = Duration::from_millis(50)).await;
    let slot = slot_at("13:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    app.clock.advance(WINDOW + Duration::from_secs(60));

    let read = async || status_of(&app, &booked.id).await;
    let status = eventually(Patience::default(), read, |s| *s == pb::ReservationStatus::Expired).await;
    assert_eq!(status, pb::ReservationStatus::Expired);
    assert_eq!(app.remaining(&slot).await.remaining, 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_sweeping_at_once_expire_each_reservation_once() {
    let app = spawn_app_by_hand().await;
    let replica = app.spawn_replica().await;
    let slots: Vec<_> = (0..4).map(|i| slot_at(&format!("14:{:02}", i * 15))).collect();
    app.open(&slots.iter().map(|s| (s.clone(), 400)).collect::<Vec<_>>()).await;
    for (i, slot) in slots.iter().enumerate() {
        for u in 0..150 {
            app.create(reserve(&format!("r-{i}-{u}"), &format!("user-{u}"), slot, 2)).await.unwrap();
        }
    }
    app.clock.advance(WINDOW * 2);

    let (mine, theirs) = tokio::join!(app.booking.expire_due(), replica.booking.expire_due());
    assert_eq!(mine.unwrap() + theirs.unwrap(), 600);
    for slot in &slots {
        assert_eq!(app.db_slot(slot).await, (400, 0, 0));
        assert_eq!(app.remaining(slot).await.remaining, 400, "seats went back exactly once");
    }
}
