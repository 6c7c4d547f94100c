//! PREORDER_PREPAY: items stored with the prices of the moment.

use slotgate::pb;
use tonic::Code;

use crate::helpers::{TestApp, reason_of, reserve, slot_at, spawn_app};

async fn put_menu(app: &TestApp, items: &[(i64, &str, i64)]) -> Result<pb::PutMenuResponse, tonic::Status> {
    let request = pb::PutMenuRequest {
        restaurant_id: 67,
        items: items.iter().map(|&(menu_id, name, price)| pb::MenuItem { menu_id, name: name.into(), price }).collect(),
    };
    app.admin.clone().put_menu(request).await.map(tonic::Response::into_inner)
}

fn preorder(request_id: &str, user: &str, slot: &pb::SlotRef, items: &[(i64, i32)]) -> pb::CreateReservationRequest {
    pb::CreateReservationRequest {
        r#type: pb::ReservationType::PreorderPrepay as i32,
        menu_items: items.iter().map(|&(menu_id, quantity)| pb::MenuItemOrder { menu_id, quantity }).collect(),
        ..reserve(request_id, user, slot, 4)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preorder_keeps_its_items_at_the_prices_of_the_moment() {
    let app = spawn_app().await;
    let slot = slot_at("19:00");
    app.open(&[(slot.clone(), 40)]).await;
    assert_eq!(put_menu(&app, &[(1, "Tasting menu", 12_000), (2, "Wine pairing", 3_500)]).await.unwrap().upserted, 2);

    let booked = app.create(preorder("p-1", "alice", &slot, &[(2, 4), (1, 2)])).await.unwrap();
    assert_eq!(booked.r#type(), pb::ReservationType::PreorderPrepay);
    let items: Vec<_> = booked.items.iter().map(|i| (i.menu_id, i.quantity, i.unit_price)).collect();
    assert_eq!(items, vec![(1, 2, 12_000), (2, 4, 3_500)]);
    assert_eq!(booked.total_price, 2 * 12_000 + 4 * 3_500);

    // A later price change leaves the booked prices alone.
    put_menu(&app, &[(1, "Tasting menu", 15_000)]).await.unwrap();
    let read = app
        .reservations
        .clone()
        .get_reservation(pb::GetReservationRequest {
            key: Some(pb::get_reservation_request::Key::Id(booked.id.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, booked);
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preorder_of_an_unknown_menu_item_is_not_found_and_takes_no_seats() {
    let app = spawn_app().await;
    let slot = slot_at("19:00");
    app.open(&[(slot.clone(), 40)]).await;
    put_menu(&app, &[(1, "Tasting menu", 12_000)]).await.unwrap();

    let status = app.create(preorder("p-1", "alice", &slot, &[(1, 1), (99, 1)])).await.unwrap_err();
    assert_eq!(reason_of(&status), (Code::NotFound, "MENU_ITEM_NOT_FOUND".into()));
    assert_eq!(app.remaining(&slot).await.remaining, 40);
    assert_eq!(app.db_slot(&slot).await, (40, 0, 0));
    // Nothing of the attempt is left behind: the same user books at once.
    app.create(preorder("p-2", "alice", &slot, &[(1, 1)])).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn put_menu_rejects_negative_prices_blank_names_and_repeated_items() {
    let app = spawn_app().await;
    for (items, field) in [
        (vec![(1, "Soup", -1)], "items[0].price"),
        (vec![(1, "  ", 100)], "items[0].name"),
        (vec![(1, "Soup", 100), (1, "Soup again", 100)], "items[1].menu_id"),
        (vec![(0, "Soup", 100)], "items[0].menu_id"),
        (vec![], "items"),
    ] {
        let status = put_menu(&app, &items).await.unwrap_err();
        assert_eq!(reason_of(&status), (Code::InvalidArgument, "INVALID_FIELD".into()));
        let info = tonic_types::StatusExt::get_details_error_info(&status).unwrap();
        assert_eq!(info.metadata["field"], field);
    }
}
