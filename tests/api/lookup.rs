//! Finding a reservation again: by its id, or by the code printed on it.

use slotgate::pb::{self, get_reservation_request::Key};
use tonic::Code;

use crate::helpers::{TestApp, reason_of, reserve, slot_at, spawn_app};

async fn get(app: &TestApp, key: Key) -> Result<pb::Reservation, tonic::Status> {
    app.reservations.clone().get_reservation(pb::GetReservationRequest { key: Some(key) }).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reservation_is_found_by_its_code_as_by_its_id() {
    let app = spawn_app().await;
    let slot = slot_at("18:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    assert_eq!(get(&app, Key::Id(booked.id.clone())).await.unwrap(), booked);
    assert_eq!(get(&app, Key::Code(booked.code.clone())).await.unwrap(), booked);
    // Typed by a person: lower case, and Crockford's look-alikes.
    let typed = booked.code.to_lowercase().replace('1', "l").replace('0', "o");
    assert_eq!(get(&app, Key::Code(typed)).await.unwrap(), booked);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_code_is_not_found() {
    let app = spawn_app().await;
    let missing = get(&app, Key::Code("SG-0000-0000-0000".into())).await.unwrap_err();
    assert_eq!(reason_of(&missing), (Code::NotFound, "RESERVATION_NOT_FOUND".into()));
}
