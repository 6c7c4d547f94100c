//! Every malformed input is refused with INVALID_ARGUMENT naming the field,
//! before it costs a Redis or database call.

use slotgate::{metrics::Metrics, pb};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{reserve, slot_at, spawn_app_with};

fn with(f: impl FnOnce(&mut pb::CreateReservationRequest)) -> pb::CreateReservationRequest {
    let mut request = reserve("r-1", "alice", &slot_at("11:00"), 4);
    f(&mut request);
    request
}

fn items(list: &[(i64, i32)]) -> Vec<pb::MenuItemOrder> {
    list.iter().map(|&(menu_id, quantity)| pb::MenuItemOrder { menu_id, quantity }).collect()
}

fn preorder(list: &[(i64, i32)]) -> impl FnOnce(&mut pb::CreateReservationRequest) {
    let list = items(list);
    move |r| {
        r.r#type = pb::ReservationType::PreorderPrepay as i32;
        r.menu_items = list;
    }
}

fn assert_invalid(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!((info.reason.as_str(), info.metadata["field"].as_str()), ("INVALID_FIELD", field));
    let violation = &status.get_details_bad_request().expect("BadRequest").field_violations[0];
    assert_eq!(violation.field, field);
    assert!(status.message().contains(field), "the message names the field: {}", status.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_malformed_reservation_request_is_refused_with_the_field_named() {
    let app = spawn_app_with(|c| {
        c.max_party_size = 6;
        c.max_menu_items = 3;
    })
    .await;
    let cases: Vec<(pb::CreateReservationRequest, &str)> = vec![
        (with(|r| r.request_id.clear()), "request_id"),
        (with(|r| r.request_id = "x".repeat(129)), "request_id"),
        (with(|r| r.user_id.clear()), "user_id"),
        (with(|r| r.user_id = "u".repeat(200)), "user_id"),
        (with(|r| r.slot = None), "slot"),
        (with(|r| r.slot.as_mut().unwrap().restaurant_id = -67), "slot.restaurant_id"),
        (with(|r| r.slot.as_mut().unwrap().date = "2026-02-30".into()), "slot.date"),
        (with(|r| r.slot.as_mut().unwrap().date = "24/12/2026".into()), "slot.date"),
        (with(|r| r.slot.as_mut().unwrap().time = "24:00".into()), "slot.time"),
        (with(|r| r.slot.as_mut().unwrap().time = "7pm".into()), "slot.time"),
        (with(|r| r.party_size = 0), "party_size"),
        (with(|r| r.party_size = -4), "party_size"),
        (with(|r| r.party_size = 7), "party_size"),
        (with(|r| r.r#type = 0), "type"),
        (with(|r| r.r#type = 9), "type"),
        (with(preorder(&[])), "menu_items"),
        (with(|r| r.menu_items = items(&[(1, 1)])), "menu_items"),
        (with(preorder(&[(1, 1), (1, 1)])), "menu_items[1].menu_id"),
        (with(preorder(&[(1, 0)])), "menu_items[0].quantity"),
        (with(preorder(&[(1, -2)])), "menu_items[0].quantity"),
        (with(preorder(&[(1, 1), (2, 1), (3, 1), (4, 1)])), "menu_items"),
    ];
    for (request, field) in cases {
        let status = app.create(request).await.unwrap_err();
        assert_invalid(&status, field);
    }
    // Refused at the edge: neither Redis nor PostgreSQL was asked.
    assert_eq!(Metrics::read(&app.metrics.gate_refused), 0);
    assert_eq!(Metrics::read(&app.metrics.gate_admitted), 0);
    assert_eq!(Metrics::read(&app.metrics.store_transactions), 0);
    // The configured maximum itself is fine (the slot does not exist).
    let status = app.create(with(|r| r.party_size = 6)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_and_read_requests_validate_their_fields_too() {
    let app = spawn_app_with(|_| {}).await;
    let open = |slots: Vec<pb::SlotCapacity>| {
        let mut admin = app.admin.clone();
        async move { admin.open_slots(pb::OpenSlotsRequest { slots }).await.unwrap_err() }
    };
    let slot = Some(slot_at("11:00"));
    assert_invalid(
        &open(vec![pb::SlotCapacity { slot: slot.clone(), capacity: 0, ..Default::default() }]).await,
        "slots[0].capacity",
    );
    assert_invalid(
        &open(vec![pb::SlotCapacity { slot: slot.clone(), capacity: -40, ..Default::default() }]).await,
        "slots[0].capacity",
    );
    assert_invalid(&open(vec![]).await, "slots");
    let bad_date = Some(pb::SlotRef { date: "2026-13-01".into(), ..slot_at("11:00") });
    assert_invalid(
        &open(vec![pb::SlotCapacity { slot: bad_date, capacity: 40, ..Default::default() }]).await,
        "slots[0].slot.date",
    );

    let status = app.reservations.clone().get_remaining(pb::GetRemainingRequest { slot: None }).await.unwrap_err();
    assert_invalid(&status, "slot");
    use pb::get_reservation_request::Key;
    let get = |key: Option<Key>| {
        let mut reservations = app.reservations.clone();
        async move { reservations.get_reservation(pb::GetReservationRequest { key }).await.unwrap_err() }
    };
    assert_invalid(&get(Some(Key::Id("42".into()))).await, "id");
    assert_invalid(&get(None).await, "id");
    assert_invalid(&get(Some(Key::Code("SG-1234".into()))).await, "code");
    assert_invalid(&get(Some(Key::Code("SG-1234-5678-9ABU".into()))).await, "code");
}
