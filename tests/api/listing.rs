//! After the burst: who won, what a user holds, what is left on a day.
//! Listings page by page from PostgreSQL (AIP-158, keyset tokens);
//! availability from the gate's counters.

use std::time::Instant;

use diesel::{QueryableByName, sql_query, sql_types::Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use slotgate::{
    domain::{ListFilter, SlotKey},
    pb::{self, ReservationStatus, SlotState},
    store::reservations::list_statement,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::{
    bursts::clicks,
    helpers::{TestApp, burst, generous_timeouts, reason_of, reserve, slot_at, spawn_app, spawn_app_with},
};

async fn list(app: &TestApp, request: pb::ListReservationsRequest) -> Result<pb::ListReservationsResponse, Status> {
    app.reservations.clone().list_reservations(request).await.map(tonic::Response::into_inner)
}

fn by_slot(slot: &pb::SlotRef, page_size: i32, token: &str) -> pb::ListReservationsRequest {
    pb::ListReservationsRequest { slot: Some(slot.clone()), page_size, page_token: token.into(), ..Default::default() }
}

/// Every page of a listing, from its first.
async fn pages(app: &TestApp, first: pb::ListReservationsRequest) -> Vec<Vec<pb::Reservation>> {
    let mut request = first;
    let mut pages = Vec::new();
    loop {
        let page = list(app, request.clone()).await.unwrap();
        pages.push(page.reservations);
        if page.next_page_token.is_empty() {
            return pages;
        }
        request.page_token = page.next_page_token;
    }
}

fn ids(reservations: &[pb::Reservation]) -> Vec<String> {
    reservations.iter().map(|r| r.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_burst_the_winners_are_listed_in_pages_of_four() {
    let app = spawn_app_with(generous_timeouts).await;
    let slot = slot_at("19:00");
    app.open(&[(slot.clone(), 40)]).await;
    let results = burst(app.addr, clicks(std::slice::from_ref(&slot), 2_000, 3), 8).await;
    let mut winners: Vec<pb::Reservation> = results.into_iter().flatten().collect();
    assert_eq!(winners.len(), 10);
    winners.sort_by_key(|r| (r.created_at.map(|t| (t.seconds, t.nanos)), r.id.clone()));

    let pages = pages(&app, by_slot(&slot, 4, "")).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
    // In the order they were made, each once.
    assert_eq!(ids(&pages.concat()), ids(&winners));
    assert_eq!(pages.concat(), winners);
}

/// Cancels and new reservations between pages neither skip nor repeat a
/// reservation that was there all along.
#[tokio::test(flavor = "multi_thread")]
async fn changes_between_pages_skip_and_repeat_nothing() {
    let app = spawn_app().await;
    let slot = slot_at("19:30");
    app.open(&[(slot.clone(), 100)]).await;
    let mut made = Vec::new();
    for u in 0..10 {
        made.push(app.create(reserve(&format!("r-{u}"), &format!("user-{u}"), &slot, 2)).await.unwrap());
    }
    let first = list(&app, by_slot(&slot, 4, "")).await.unwrap();
    assert_eq!(ids(&first.reservations), ids(&made[..4]));
    // One already listed and one not yet listed are cancelled; a new one
    // is made.
    app.cancel(&made[1].id, pb::CancelReason::User).await.unwrap();
    app.cancel(&made[6].id, pb::CancelReason::User).await.unwrap();
    let late = app.create(reserve("r-late", "user-late", &slot, 2)).await.unwrap();
    let mut rest = Vec::new();
    let mut token = first.next_page_token;
    while !token.is_empty() {
        let page = list(&app, by_slot(&slot, 4, &token)).await.unwrap();
        rest.extend(page.reservations);
        token = page.next_page_token;
    }
    let mut expected = ids(&made[4..]);
    expected.push(late.id.clone());
    assert_eq!(ids(&rest), expected);
    assert_eq!(rest[2].status(), ReservationStatus::Cancelled);

    // Only active ones: the cancelled ones are left out, the rest in order.
    let active = pb::ListReservationsRequest {
        statuses: vec![ReservationStatus::PendingDeposit as i32, ReservationStatus::Confirmed as i32],
        ..by_slot(&slot, 3, "")
    };
    let listed = pages(&app, active).await.concat();
    let mut expected: Vec<String> =
        made.iter().map(|r| r.id.clone()).filter(|id| *id != made[1].id && *id != made[6].id).collect();
    expected.push(late.id);
    assert_eq!(ids(&listed), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_users_reservations_across_slots_and_a_restaurants_day() {
    let app = spawn_app().await;
    let slots = [slot_at("18:00"), slot_at("20:00"), slot_at("19:00")];
    let elsewhere = pb::SlotRef { restaurant_id: 68, ..slot_at("19:00") };
    let next_day = pb::SlotRef { date: "2036-12-25".into(), ..slot_at("12:00") };
    let mut opening: Vec<(pb::SlotRef, i32)> = slots.iter().map(|s| (s.clone(), 40)).collect();
    opening.extend([(elsewhere.clone(), 40), (next_day.clone(), 40)]);
    app.open(&opening).await;
    let mut alices = Vec::new();
    for (i, slot) in slots.iter().chain([&elsewhere, &next_day]).enumerate() {
        alices.push(app.create(reserve(&format!("a-{i}"), "alice", slot, 2)).await.unwrap());
        app.create(reserve(&format!("b-{i}"), "bob", slot, 2)).await.unwrap();
    }
    let by_user = pb::ListReservationsRequest { user_id: "alice".into(), page_size: 2, ..Default::default() };
    let listed = pages(&app, by_user).await;
    assert_eq!(listed.len(), 3);
    assert_eq!(ids(&listed.concat()), ids(&alices));

    // Restaurant 67's 24 December: by slot time, then in the order made.
    let day = pb::ListReservationsRequest {
        restaurant_id: 67,
        date: "2036-12-24".into(),
        page_size: 4,
        ..Default::default()
    };
    let listed = pages(&app, day).await.concat();
    let times: Vec<(String, String)> =
        listed.iter().map(|r| (r.slot.as_ref().unwrap().time.clone(), r.user_id.clone())).collect();
    let expected: Vec<(String, String)> = ["18:00", "19:00", "20:00"]
        .iter()
        .flat_map(|t| [(t.to_string(), "alice".to_string()), (t.to_string(), "bob".to_string())])
        .collect();
    assert_eq!(times, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_page_sizes_filters_and_tokens_are_refused() {
    let app = spawn_app().await;
    let (slot, other) = (slot_at("19:00"), slot_at("20:00"));
    app.open(&[(slot.clone(), 40), (other.clone(), 40)]).await;
    for u in 0..3 {
        app.create(reserve(&format!("r-{u}"), &format!("user-{u}"), &slot, 2)).await.unwrap();
    }
    let field = |e: &Status| e.get_details_bad_request().unwrap().field_violations[0].field.clone();

    let negative = list(&app, by_slot(&slot, -1, "")).await.unwrap_err();
    assert_eq!(
        (reason_of(&negative), field(&negative)),
        ((Code::InvalidArgument, "INVALID_FIELD".into()), "page_size".into())
    );
    // Too large is read as the largest; zero as the default.
    assert_eq!(list(&app, by_slot(&slot, 5_000, "")).await.unwrap().reservations.len(), 3);
    assert_eq!(list(&app, by_slot(&slot, 0, "")).await.unwrap().reservations.len(), 3);

    let first = list(&app, by_slot(&slot, 1, "")).await.unwrap();
    let reused = list(&app, by_slot(&other, 1, &first.next_page_token)).await.unwrap_err();
    assert_eq!(field(&reused), "page_token");
    let by_user = pb::ListReservationsRequest {
        user_id: "user-0".into(),
        page_token: first.next_page_token.clone(),
        ..Default::default()
    };
    assert_eq!(field(&list(&app, by_user).await.unwrap_err()), "page_token");
    let filtered = pb::ListReservationsRequest {
        statuses: vec![ReservationStatus::Cancelled as i32],
        ..by_slot(&slot, 1, &first.next_page_token)
    };
    assert_eq!(field(&list(&app, filtered).await.unwrap_err()), "page_token");
    assert_eq!(field(&list(&app, by_slot(&slot, 1, "not-a-token")).await.unwrap_err()), "page_token");
    // The same filter with another page size continues.
    assert_eq!(list(&app, by_slot(&slot, 10, &first.next_page_token)).await.unwrap().reservations.len(), 2);

    let none = list(&app, pb::ListReservationsRequest::default()).await.unwrap_err();
    assert_eq!(reason_of(&none).0, Code::InvalidArgument);
    let two = pb::ListReservationsRequest { user_id: "user-0".into(), ..by_slot(&slot, 1, "") };
    assert_eq!(reason_of(&list(&app, two).await.unwrap_err()).0, Code::InvalidArgument);
    let bad_date = pb::ListReservationsRequest { restaurant_id: 67, date: "2036-02-30".into(), ..Default::default() };
    assert_eq!(field(&list(&app, bad_date).await.unwrap_err()), "date");
}

/// Rows the listing plan check seeds (`SLOTGATE_LIST_ROWS`, default
/// 1,000,000): enough that a scan would be the planner's choice if no index
/// served the filter.
fn seeded_rows() -> i64 {
    std::env::var("SLOTGATE_LIST_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

/// With a million reservations, each listing's page is read through an
/// index, never by scanning the table. (How long a page takes is printed,
/// not asserted.)
#[tokio::test(flavor = "multi_thread")]
async fn a_page_is_served_by_an_index_over_a_million_reservations() {
    #[derive(QueryableByName)]
    struct Plan {
        #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
        line: String,
    }
    let app = spawn_app().await;
    let rows = seeded_rows();
    let mut db = app.database().await;
    // A thousand slots over ten restaurants and a hundred days, a thousand
    // users, reservations spread over them (expired ones, so a user may
    // have many in one slot).
    db.batch_execute(&format!(
        "INSERT INTO restaurants (id) SELECT g FROM generate_series(1, 10) g;
         INSERT INTO slots (restaurant_id, slot_date, slot_time, capacity, reserved)
           SELECT 1 + g % 10, DATE '2036-01-01' + (g / 10), TIME '19:00', 1000000, 0 FROM generate_series(0, 999) g;
         INSERT INTO reservations (id, code, request_id, fingerprint, slot_id, user_id, party_size, kind, status, created_at)
           SELECT md5(g::text)::uuid, 'SG-' || g, 'seed-' || g, 0, (SELECT min(id) FROM slots) + g % 1000,
                  'user-' || (g % 1000), 2, 'RESERVATION_DEPOSIT', 'EXPIRED',
                  TIMESTAMPTZ '2036-01-01' + g * interval '1 second'
           FROM generate_series(1, {rows}) g;
         ANALYZE reservations; ANALYZE slots;"
    ))
    .await
    .unwrap();
    let seeded_slot = pb::SlotRef { restaurant_id: 1, date: "2036-01-01".into(), time: "19:00".into() };
    let requests = [
        ("user", pb::ListReservationsRequest { user_id: "user-7".into(), ..Default::default() }),
        ("slot", by_slot(&seeded_slot, 0, "")),
        ("day", pb::ListReservationsRequest { restaurant_id: 1, date: "2036-01-01".into(), ..Default::default() }),
    ];
    for (name, request) in requests {
        let first = list(&app, request.clone()).await.unwrap();
        assert_eq!(first.reservations.len(), 50, "{name}");
        let started = Instant::now();
        let next =
            list(&app, pb::ListReservationsRequest { page_token: first.next_page_token, ..request }).await.unwrap();
        println!("{name}: a page of {} after {rows} rows took {:?}", next.reservations.len(), started.elapsed());
        assert_eq!(next.reservations.len(), 50, "{name}");
    }
    // The statements the server runs, as their plans.
    // The statements the server runs, as the database plans them.
    let nil = "'00000000-0000-0000-0000-000000000000'";
    let plans = [
        (ListFilter::User(String::new()), "reservations_by_user", format!("'{{}}', 'user-7', '2036-01-01', {nil}, 51")),
        (
            ListFilter::Slot(SlotKey::parse(Some(&seeded_slot), "slot").unwrap()),
            "reservations_by_slot",
            format!("'{{}}', 1, '2036-01-01', '19:00', '2036-01-01', {nil}, 51"),
        ),
        (
            ListFilter::Day { restaurant_id: 1, date: "2036-01-01".parse().unwrap() },
            "reservations_by_slot",
            format!("'{{}}', 1, '2036-01-01', '00:00', '2036-01-01', {nil}, 51"),
        ),
    ];
    for (i, (filter, index, args)) in plans.into_iter().enumerate() {
        db.batch_execute(&format!("PREPARE listing_{i} AS {}", list_statement(&filter))).await.unwrap();
        let plan: Vec<Plan> = sql_query(format!("EXPLAIN EXECUTE listing_{i}({args})")).load(&mut db).await.unwrap();
        let text = plan.into_iter().map(|p| p.line).collect::<Vec<_>>().join("\n");
        assert!(text.contains(index), "not served by {index}:\n{text}");
        assert!(!text.contains("Seq Scan on reservations"), "a scan of the table:\n{text}");
    }
}

async fn availability(
    app: &TestApp,
    restaurant_id: i64,
    date: &str,
    party_size: i32,
) -> Result<Vec<pb::SlotAvailability>, Status> {
    let request = pb::ListAvailabilityRequest { restaurant_id, date: date.into(), party_size };
    app.reservations.clone().list_availability(request).await.map(|r| r.into_inner().slots)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_days_availability_lists_every_slot_in_time_order_from_the_counters() {
    let app = spawn_app().await;
    let (early, mid, late) = (slot_at("18:00"), slot_at("19:00"), slot_at("21:00"));
    let elsewhere = pb::SlotRef { restaurant_id: 68, ..slot_at("19:00") };
    app.open(&[(late.clone(), 8), (early.clone(), 40), (mid.clone(), 6), (elsewhere, 40)]).await;
    app.create(reserve("r-1", "alice", &mid, 4)).await.unwrap();
    app.admin.clone().close_slots(pb::CloseSlotsRequest { slots: vec![late.clone()] }).await.unwrap();

    let slots = availability(&app, 67, "2036-12-24", 4).await.unwrap();
    let seen: Vec<(String, i32, i32, SlotState, bool)> = slots
        .iter()
        .map(|s| (s.slot.as_ref().unwrap().time.clone(), s.capacity, s.remaining, s.state(), s.fits))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("18:00".into(), 40, 40, SlotState::Open, true),
            ("19:00".into(), 6, 2, SlotState::Open, false),
            ("21:00".into(), 8, 8, SlotState::Closed, false),
        ]
    );
    assert!(slots[2].closes_at.is_some() && slots[0].starts_at.is_some());

    // Cold counters are loaded; a counter below zero (capacity lowered
    // under holds in flight) reads as none left.
    app.flush_redis().await;
    let _: () = redis::cmd("HSET")
        .arg(app.key(&early, "seats"))
        .arg("left")
        .arg(-3)
        .arg("cap")
        .arg(40)
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    let slots = availability(&app, 67, "2036-12-24", 0).await.unwrap();
    let left: Vec<i32> = slots.iter().map(|s| s.remaining).collect();
    assert_eq!(left, vec![0, 2, 8]);
    assert!(!slots[0].fits && slots[1].fits);

    assert!(availability(&app, 67, "2036-12-23", 2).await.unwrap().is_empty());

    // A day older than the keys Redis keeps (opened before it started):
    // answered from the database, started.
    let old_day = (chrono::Utc::now().date_naive() - chrono::Days::new(5)).to_string();
    let mut db = app.database().await;
    db.batch_execute(&format!(
        "INSERT INTO slots (restaurant_id, slot_date, slot_time, capacity) VALUES (67, '{old_day}', '19:00', 12)"
    ))
    .await
    .unwrap();
    let old = availability(&app, 67, &old_day, 2).await.unwrap();
    assert_eq!(
        old.iter().map(|s| (s.remaining, s.state(), s.fits)).collect::<Vec<_>>(),
        vec![(12, SlotState::Started, false)]
    );
    let refused = availability(&app, 67, "2036-12-24", -1).await.unwrap_err();
    assert_eq!(refused.get_details_bad_request().unwrap().field_violations[0].field, "party_size");
    let refused = availability(&app, 0, "2036-12-24", 2).await.unwrap_err();
    assert_eq!(refused.get_details_bad_request().unwrap().field_violations[0].field, "restaurant_id");
}
