//! The waitlist when slotgate is killed (`kill -9`) and Redis is flushed
//! at its worst moments: between a cancel and its offer, between a join
//! and the promotion that should reach it, and between the gate's
//! decision on a join and the database's insert. Rebuilt from PostgreSQL:
//! no double offer, no seat both offered and public, reserved and set-aside
//! seats within capacity.

use std::time::Duration;

use diesel::{QueryableByName, sql_query, sql_types::BigInt};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use slotgate::pb::{self, reservations_client::ReservationsClient};
use tonic::{Code, transport::Channel};

use crate::{
    fault_kit::{PrivateRedis, SlotgateProcess},
    helpers::{Patience, TestApp, by_hand, eventually, reason_of, reserve, slot_at, spawn_app_with},
    waitlist::{entry, join, open_with},
    waitlist_audit,
};

/// An app (background passes off) and a slotgate process sharing its
/// database and a private Redis, which the test can stall and flush.
async fn setup() -> (TestApp, PrivateRedis, SlotgateProcess) {
    let redis = PrivateRedis::start().await;
    let app = spawn_app_with(|c| {
        by_hand(c);
        c.redis_url = redis.url.clone();
        c.user_burst = 1_000;
    })
    .await;
    let mut env = app.env_by_hand();
    env.push(("SLOTGATE_USER_BURST".into(), "1000".into()));
    // The process waits on a stalled Redis rather than giving up first.
    env.push(("SLOTGATE_REDIS_COMMAND_TIMEOUT_MS".into(), "10000".into()));
    env.push(("SLOTGATE_HOLD_LEASE_MS".into(), "60000".into()));
    let process = SlotgateProcess::start(env).await;
    (app, redis, process)
}

fn client(process: &SlotgateProcess) -> ReservationsClient<Channel> {
    ReservationsClient::new(Channel::from_shared(format!("http://{}", process.addr)).unwrap().connect_lazy())
}

async fn offers_made(app: &TestApp) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let row: Count = sql_query("SELECT count(*) AS n FROM reservations WHERE request_id LIKE 'waitlist-offer:%'")
        .get_result(&mut app.database().await)
        .await
        .unwrap();
    row.n
}

async fn counter_left(redis: &PrivateRedis, app: &TestApp, slot: &pb::SlotRef) -> Option<i32> {
    redis::cmd("HGET").arg(app.key(slot, "seats")).arg("left").query_async(&mut redis.connection().await).await.unwrap()
}

/// New callers through `process`, one seat each: none may get a seat.
async fn new_callers_are_refused(process: &SlotgateProcess, slot: &pb::SlotRef, tag: &str) {
    let mut client = client(process);
    for i in 0..20 {
        let answer = client.create_reservation(reserve(&format!("{tag}-{i}"), &format!("{tag}-{i}"), slot, 1)).await;
        assert_eq!(reason_of(&answer.unwrap_err()), (Code::FailedPrecondition, "SOLD_OUT".into()), "caller {i}");
    }
}

/// After a reconcile pass the gate is the database's again, and every
/// waitlist invariant holds.
async fn heals(app: &TestApp, redis: &PrivateRedis, slot: &pb::SlotRef) {
    app.booking.reconcile(None).await.unwrap();
    app.remaining(slot).await;
    let (capacity, reserved, _) = app.db_slot(slot).await;
    assert_eq!(counter_left(redis, app, slot).await, Some(capacity - reserved));
    waitlist_audit::audit::<waitlist_audit::Broken>(app, redis, &Default::default()).await.unwrap();
}

async fn killed_between_a_cancel_and_its_offer(flush: bool) {
    let (app, redis, mut process) = setup().await;
    let slot = slot_at("19:00");
    open_with(&app, &slot, 4, None).await;
    let alice = app.create(reserve("r-alice", "alice", &slot, 4)).await.unwrap();
    let bob = join(&app, "j-bob", "bob", &slot, 4).await.unwrap();

    // Redis stalls; the cancel commits its offer in the database and then
    // waits on Redis to refresh the counter: killed there.
    let stall = redis.stall(Duration::from_secs(3)).await;
    let mut cancelling = client(&process);
    let cancel = tokio::spawn(async move {
        let request = pb::CancelReservationRequest { id: alice.id, reason: pb::CancelReason::User as i32 };
        cancelling.cancel_reservation(request).await
    });
    let offered =
        eventually(Patience::up_to(Duration::from_secs(3)), async || offers_made(&app).await, |n| *n == 1).await;
    assert_eq!(offered, 1, "the offer committed with the cancel");
    process.kill();
    assert!(cancel.await.unwrap().is_err(), "the killed server's caller got no answer");
    stall.await.unwrap();
    if flush {
        redis::cmd("FLUSHALL").query_async::<()>(&mut redis.connection().await).await.unwrap();
    }

    // Whatever Redis holds, no seat is public: the counter never shows one.
    assert!(counter_left(&redis, &app, &slot).await.unwrap_or(0) <= 0);
    process.restart().await;
    new_callers_are_refused(&process, &slot, "after").await;
    assert_eq!(app.remaining(&slot).await.remaining, 0);
    let bob = entry(&app, &bob.id).await;
    assert_eq!(bob.state(), pb::WaitlistState::Offered);
    assert_eq!(offers_made(&app).await, 1, "one offer, never two");
    heals(&app, &redis, &slot).await;
    let mut client = client(&process);
    client.confirm_reservation(pb::ConfirmReservationRequest { id: bob.offer_reservation_id.clone() }).await.unwrap();
    assert_eq!(entry(&app, &bob.id).await.state(), pb::WaitlistState::Accepted);
    assert_eq!(app.db_slot(&slot).await, (4, 4, 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn slotgate_killed_between_a_cancel_and_its_offer() {
    killed_between_a_cancel_and_its_offer(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slotgate_killed_between_a_cancel_and_its_offer_and_redis_flushed() {
    killed_between_a_cancel_and_its_offer(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slotgate_killed_and_redis_flushed_between_a_join_and_its_promotion() {
    let (app, redis, mut process) = setup().await;
    let slot = slot_at("20:00");
    open_with(&app, &slot, 4, None).await;
    let alice = app.create(reserve("r-alice", "alice", &slot, 4)).await.unwrap();
    let mut c = client(&process);
    let request = crate::waitlist::join_request("j-bob", "bob", &slot, 2);
    let bob = c.join_waitlist(request).await.unwrap().into_inner();
    process.kill();
    redis::cmd("FLUSHALL").query_async::<()>(&mut redis.connection().await).await.unwrap();
    process.restart().await;

    // The line is rebuilt from the database: the freed seats reach bob
    // first, and the rest go public.
    let mut c = client(&process);
    c.cancel_reservation(pb::CancelReservationRequest { id: alice.id, reason: pb::CancelReason::User as i32 })
        .await
        .unwrap();
    assert_eq!(entry(&app, &bob.id).await.state(), pb::WaitlistState::Offered);
    assert_eq!(app.remaining(&slot).await.remaining, 2);
    let again = c.join_waitlist(crate::waitlist::join_request("j-bob-2", "bob", &slot, 2)).await.unwrap_err();
    assert_eq!(reason_of(&again), (Code::AlreadyExists, "DUPLICATE".into()));
    heals(&app, &redis, &slot).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slotgate_killed_between_the_gates_join_and_the_databases_insert() {
    let (app, redis, mut process) = setup().await;
    let slot = slot_at("21:00");
    open_with(&app, &slot, 4, None).await;
    app.create(reserve("r-alice", "alice", &slot, 4)).await.unwrap();
    join(&app, "j-bob", "bob", &slot, 4).await.unwrap();

    // The slot's row is locked: the gate takes carol's join, the insert
    // waits, and slotgate is killed there.
    let mut lock = AsyncPgConnection::establish(&app.config.database.database_url).await.unwrap();
    lock.batch_execute("BEGIN; SELECT * FROM slots FOR UPDATE").await.unwrap();
    let mut c = client(&process);
    let joining = tokio::spawn(async move {
        let request = crate::waitlist::join_request("j-carol", "carol", &slot_at("21:00"), 2);
        c.join_waitlist(request).await
    });
    let waiters = app.key(&slot, "waiters");
    let in_gate = eventually(
        Patience::up_to(Duration::from_secs(3)),
        async || -> bool {
            redis::cmd("HEXISTS").arg(&waiters).arg("carol").query_async(&mut redis.connection().await).await.unwrap()
        },
        |found| *found,
    );
    assert!(in_gate.await, "the gate took the join");
    process.kill();
    assert!(joining.await.unwrap().is_err());
    lock.batch_execute("ROLLBACK").await.unwrap();

    // The gate knows a join the database never got: reconciling the slot
    // drops it, and carol can join.
    process.restart().await;
    heals(&app, &redis, &slot).await;
    let carol = join(&app, "j-carol-2", "carol", &slot, 2).await.unwrap();
    assert_eq!((carol.state(), carol.parties_ahead), (pb::WaitlistState::Waiting, 1));
    assert!(carol.position > 1);
}
