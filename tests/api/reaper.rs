//! The lease reaper: holds whose owner died end, their seats kept if the
//! reservation committed and given back if not, once.

use std::time::Duration;

use diesel_async::RunQueryDsl;
use slotgate::{booking::Reaped, pb};

use crate::helpers::{Patience, TestApp, eventually, reserve, slot_at, spawn_app_by_hand, spawn_app_with};

const ORPHAN: &str = "9b2e6a4c-0d1f-4a8e-9c3b-6f5d4e3c2b1a";

/// Leaves what acquire leaves for an admitted request whose process then
/// died: seats taken, user and id recorded, a hold with its lease deadline.
pub async fn orphan_hold(app: &TestApp, slot: &pb::SlotRef, id: &str, user: &str, party: i32, deadline_ms: u64) {
    let mut redis = app.redis().await;
    redis::pipe()
        .cmd("HINCRBY")
        .arg(app.key(slot, "seats"))
        .arg("left")
        .arg(-party)
        .cmd("HINCRBY")
        .arg(app.key(slot, "seats"))
        .arg("epoch")
        .arg(1)
        .cmd("HSET")
        .arg(app.key(slot, "users"))
        .arg(user)
        .arg(id)
        .cmd("HSET")
        .arg(app.key(slot, "ids"))
        .arg(id)
        .arg("12345")
        .cmd("HSET")
        .arg(app.key(slot, "holds"))
        .arg(id)
        .arg(format!("{party}|{user}|{deadline_ms}|77"))
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_hold_with_no_reservation_gives_its_seats_back_once() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("16:00");
    app.open(&[(slot.clone(), 40)]).await;
    orphan_hold(&app, &slot, ORPHAN, "carol", 4, 1).await;
    assert_eq!(app.remaining(&slot).await.remaining, 36);

    assert_eq!(app.booking.reap().await.unwrap(), Reaped { finalized: 0, released: 1 });
    assert_eq!(app.booking.reap().await.unwrap(), Reaped::default(), "once");
    assert_eq!((app.remaining(&slot).await.remaining, app.holds(&slot).await), (40, 0));
    // Nothing of the dead attempt stands in carol's way.
    app.create(reserve("r-1", "carol", &slot, 4)).await.unwrap();
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_hold_whose_reservation_committed_keeps_its_seats() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("16:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    // As if the process died between its commit and its finalize: the hold
    // of the attempt that committed is back, and the seats it took are the
    // committed ones.
    #[derive(diesel::QueryableByName)]
    struct Attempt {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        attempt: i64,
    }
    let row: Attempt = diesel::sql_query(format!("SELECT attempt FROM reservations WHERE id = '{}'", booked.id))
        .get_result(&mut app.database().await)
        .await
        .unwrap();
    redis::cmd("HSET")
        .arg(app.key(&slot, "holds"))
        .arg(&booked.id)
        .arg(format!("4|alice|1|{}", row.attempt as u64))
        .query_async::<()>(&mut app.redis().await)
        .await
        .unwrap();

    assert_eq!(app.booking.reap().await.unwrap(), Reaped { finalized: 1, released: 0 });
    assert_eq!((app.remaining(&slot).await.remaining, app.holds(&slot).await), (36, 0));
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_within_its_lease_is_left_alone() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("16:00");
    app.open(&[(slot.clone(), 40)]).await;
    orphan_hold(&app, &slot, ORPHAN, "carol", 4, u64::MAX / 2).await;
    assert_eq!(app.booking.reap().await.unwrap(), Reaped::default());
    assert_eq!((app.remaining(&slot).await.remaining, app.holds(&slot).await), (36, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_reaping_at_once_give_seats_back_once() {
    let app = spawn_app_by_hand().await;
    let replica = app.spawn_replica().await;
    let slot = slot_at("16:00");
    app.open(&[(slot.clone(), 400)]).await;
    for u in 0..50 {
        let id = format!("9b2e6a4c-0d1f-4a8e-9c3b-{u:012}");
        orphan_hold(&app, &slot, &id, &format!("user-{u}"), 4, 1).await;
    }
    assert_eq!(app.remaining(&slot).await.remaining, 200);
    let (mine, theirs) = tokio::join!(app.booking.reap(), replica.booking.reap());
    assert_eq!(mine.unwrap().released + theirs.unwrap().released, 50);
    assert_eq!(app.remaining(&slot).await.remaining, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_background_reaper_ends_expired_holds_on_its_own() {
    let app = spawn_app_with(|c| c.reap_interval = Duration::from_millis(50)).await;
    let slot = slot_at("16:00");
    app.open(&[(slot.clone(), 40)]).await;
    orphan_hold(&app, &slot, ORPHAN, "carol", 4, 1).await;
    let remaining = eventually(Patience::default(), async || app.remaining(&slot).await.remaining, |r| *r == 40).await;
    assert_eq!(remaining, 40);
}
