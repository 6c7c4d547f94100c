//! Exactness where the races are: each interleaving that once gave a wrong
//! answer or stranded seats, forced deterministically (a row lock held by
//! the test, a key deleted at the right moment, a script delivered twice),
//! and the answer the service must give.

use std::time::Duration;

use chrono::{DateTime, Days, Utc};
use diesel::{
    QueryableByName, sql_query,
    sql_types::{BigInt, Text},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use slotgate::{
    booking::Reaped,
    domain::{ReservationId, reservation_code},
    pb,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    fault_kit::PrivateRedis,
    helpers::{
        Patience, TestApp, by_hand, eventually, reason_of, reserve, shortest_lease, slot_at, spawn_app_by_hand,
        spawn_app_with,
    },
    reaper::orphan_hold,
};

/// Far in the future: keys written by hand here outlive the test.
const FAR: i64 = 4_102_444_800;

async fn redis_cmd<T: redis::FromRedisValue>(app: &TestApp, cmd: &mut redis::Cmd) -> T {
    cmd.query_async(&mut app.redis().await).await.unwrap()
}

/// Runs one of the gate's scripts by hand, as a client library's retry
/// would send it again.
async fn eval(app: &TestApp, script: &str, keys: &[String], args: &[String]) -> redis::Value {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len());
    for k in keys {
        cmd.arg(k);
    }
    for a in args {
        cmd.arg(a);
    }
    redis_cmd(app, &mut cmd).await
}

fn slot_keys(app: &TestApp, slot: &pb::SlotRef) -> Vec<String> {
    ["seats", "users", "ids", "holds"].iter().map(|k| app.key(slot, k)).collect()
}

/// The id slotgate derives from a request id (authentication is off here).
fn id_of(request_id: &str) -> ReservationId {
    ReservationId::for_request("", request_id)
}

/// Holds the slot's row lock in a transaction of the test's own, so a
/// winner's seat update waits on it; `ROLLBACK` (or `COMMIT`) lets it go.
async fn lock_slot_row(app: &TestApp, slot: &pb::SlotRef) -> AsyncPgConnection {
    let mut conn = app.database().await;
    conn.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM slots WHERE restaurant_id = {} AND slot_date = '{}' AND slot_time = '{}' FOR UPDATE",
        slot.restaurant_id, slot.date, slot.time
    ))
    .await
    .unwrap();
    conn
}

/// Sends alice's booking of 4 seats as `r-1` while the test holds the
/// slot's row lock: it is admitted, and its transaction waits on the lock.
async fn winner_waiting_on_the_row(
    app: &TestApp,
    slot: &pb::SlotRef,
) -> (AsyncPgConnection, tokio::task::JoinHandle<Result<tonic::Response<pb::Reservation>, tonic::Status>>) {
    let lock = lock_slot_row(app, slot).await;
    let winner = tokio::spawn({
        let mut client = app.reservations.clone();
        let request = reserve("r-1", "alice", slot, 4);
        async move { client.create_reservation(request).await }
    });
    lock_waiters(app, 1).await;
    (lock, winner)
}

/// How many backends of the app's database wait on a lock now.
async fn lock_waiter_count(app: &TestApp) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let found: Count = sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .get_result(&mut app.database().await)
    .await
    .unwrap();
    found.n
}

/// Waits until `n` backends of the app's database wait on a lock.
async fn lock_waiters(app: &TestApp, n: i64) {
    let waiting = eventually(Patience::default(), async || lock_waiter_count(app).await, |w| *w >= n).await;
    assert!(waiting >= n, "{waiting} backends wait on a lock, not {n}");
}

async fn db_now(app: &TestApp) -> DateTime<Utc> {
    #[derive(QueryableByName)]
    struct Now {
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        now: DateTime<Utc>,
    }
    let now: Now = sql_query("SELECT now()").get_result(&mut app.database().await).await.unwrap();
    now.now
}

/// 1. A client library that sends the same acquire twice (a retry after a
/// connection reset) finds the attempt's own hold: the second delivery must
/// answer ADMITTED like the first, not "replay, still in flight", which
/// left the request polling until REQUEST_IN_PROGRESS.
#[tokio::test(flavor = "multi_thread")]
async fn an_acquire_delivered_twice_answers_admitted_both_times() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    let mut keys = slot_keys(&app, &slot);
    keys.push(app.key(&slot, "void:42"));
    keys.push(app.key(&slot, "waiters"));
    let id = id_of("r-1").to_string();
    let args: Vec<String> =
        [id.as_str(), "alice", "4", "12345", "30000", "42", &FAR.to_string()].map(str::to_owned).to_vec();
    let script = concat!(include_str!("../../src/gate/window.lua"), include_str!("../../src/gate/acquire.lua"));
    let first = eval(&app, script, &keys, &args).await;
    let second = eval(&app, script, &keys, &args).await;
    let admitted = redis::Value::Array(vec![redis::Value::Int(0), redis::Value::BulkString(b"36".to_vec())]);
    assert_eq!((first, second), (admitted.clone(), admitted));
    assert_eq!((app.remaining(&slot).await.remaining, app.holds(&slot).await), (36, 1), "taken once");
}

/// 1 and 5. A capacity change is applied as "new capacity minus the one the
/// counter has", and only if newer than what the counter has: delivered
/// twice, or after a newer change, it moves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_capacity_change_delivered_twice_or_late_moves_the_counter_once() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    app.open(&[(slot.clone(), 50)]).await;
    assert_eq!(app.remaining(&slot).await.remaining, 46);

    let version = slot_version(&app, &slot).await;
    let script = concat!(include_str!("../../src/gate/versions.lua"), include_str!("../../src/gate/resize.lua"));
    let seats = vec![app.key(&slot, "seats")];
    // No window: opens, closes and starts empty.
    let resize =
        |cap: i32, v: i64| vec![cap.to_string(), v.to_string(), FAR.to_string(), "".into(), "".into(), "".into()];
    eval(&app, script, &seats, &resize(50, version)).await;
    assert_eq!(app.remaining(&slot).await.remaining, 46, "the same change again");
    eval(&app, script, &seats, &resize(45, version - 1)).await;
    assert_eq!(app.remaining(&slot).await.remaining, 46, "an older change, late");
    eval(&app, script, &seats, &resize(30, version + 1)).await;
    assert_eq!(app.remaining(&slot).await.remaining, 26, "a newer one");
}

async fn slot_version(app: &TestApp, slot: &pb::SlotRef) -> i64 {
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = BigInt)]
        version: i64,
    }
    let v: Version = sql_query(format!(
        "SELECT version FROM slots WHERE restaurant_id = {} AND slot_date = '{}' AND slot_time = '{}'",
        slot.restaurant_id, slot.date, slot.time
    ))
    .get_result(&mut app.database().await)
    .await
    .unwrap();
    v.version
}

/// 2. The reaper keeps an expired hold's seats only when that very attempt
/// committed, in that slot: not for a request id reused in another slot,
/// nor for a second attempt of an id another attempt committed.
#[tokio::test(flavor = "multi_thread")]
async fn the_reaper_keeps_seats_only_for_the_attempt_that_committed_in_that_slot() {
    let app = spawn_app_by_hand().await;
    let (a, b) = (slot_at("10:00"), slot_at("11:00"));
    app.open(&[(a.clone(), 40), (b.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &a, 4)).await.unwrap();
    // The same request id admitted in slot B (a reused id) and a second
    // attempt of it in slot A, both with their releases lost.
    orphan_hold(&app, &b, &booked.id, "alice", 4, 1).await;
    redis::pipe()
        .cmd("HINCRBY")
        .arg(app.key(&a, "seats"))
        .arg("left")
        .arg(-4)
        .cmd("HSET")
        .arg(app.key(&a, "holds"))
        .arg(&booked.id)
        .arg("4|alice|1|78")
        .query_async::<()>(&mut app.redis().await)
        .await
        .unwrap();
    assert_eq!((app.remaining(&a).await.remaining, app.remaining(&b).await.remaining), (32, 36));

    assert_eq!(app.booking.reap().await.unwrap(), Reaped { finalized: 0, released: 2 });
    assert_eq!((app.remaining(&a).await.remaining, app.remaining(&b).await.remaining), (36, 40));
    // Alice's booking in A still stands in the gate; B is free for her.
    let dup = app.create(reserve("r-2", "alice", &a, 4)).await.unwrap_err();
    assert_eq!(reason_of(&dup), (Code::AlreadyExists, "DUPLICATE".into()));
    app.create(reserve("r-3", "alice", &b, 4)).await.unwrap();
    assert_eq!((app.db_slot(&a).await, app.db_slot(&b).await), ((40, 4, 4), (40, 4, 4)));
}

/// 3. One key of a slot lost (evicted, deleted): the replay of a booked
/// request is that booking, not a DUPLICATE of itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_the_ids_key_is_lost_returns_the_booking() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    redis_cmd::<()>(&app, redis::cmd("DEL").arg(app.key(&slot, "ids"))).await;
    assert_eq!(app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap(), booked);
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
}

/// 3. The hold of an admitted request is lost while its transaction waits,
/// and the transaction then fails: its entries must not make every replay
/// fail INTERNAL. The slot is reloaded and the replay decided afresh.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_hold_whose_transaction_failed_leaves_nothing_that_breaks_replays() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    let (mut lock, first) = winner_waiting_on_the_row(&app, &slot).await;
    redis_cmd::<()>(&app, redis::cmd("DEL").arg(app.key(&slot, "holds"))).await;
    // The waiting transaction fails (its backend ends, as in a failover).
    lock.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .await
    .unwrap();
    let failed = first.await.unwrap().unwrap_err();
    assert_eq!(reason_of(&failed), (Code::Unavailable, "DATABASE_UNAVAILABLE".into()));
    lock.batch_execute("ROLLBACK").await.unwrap();

    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    assert_eq!(app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap(), booked);
    assert_eq!((app.db_slot(&slot).await, app.remaining(&slot).await.remaining), ((40, 4, 4), 36));
}

/// 3. Redis out of memory (`maxmemory` reached, `noeviction`) refuses the
/// acquire's first write: a retryable UNAVAILABLE, nothing taken.
#[tokio::test(flavor = "multi_thread")]
async fn redis_out_of_memory_answers_unavailable_and_takes_nothing() {
    let redis = PrivateRedis::start().await;
    let app = spawn_app_with(|c| {
        c.redis_url = redis.url.clone();
        by_hand(c);
    })
    .await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    let config_set = async |value: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(value)
            .query_async::<()>(&mut redis.connection().await)
            .await
            .unwrap();
    };
    config_set("1").await;
    let refused = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::Unavailable, "REDIS_UNAVAILABLE".into()), "{refused:?}");
    config_set("0").await;
    assert_eq!(app.remaining(&slot).await.remaining, 40);
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
}

/// 3. A slot's keys expire once its day is over everywhere (the start, in
/// UTC, of the third day after its date), so Redis does not keep every
/// past slot for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_slots_keys_expire_after_its_day() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    let expected = (chrono::NaiveDate::parse_from_str(&slot.date, "%Y-%m-%d").unwrap() + Days::new(3))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    for which in ["seats", "users", "ids"] {
        let at: i64 = redis_cmd(&app, redis::cmd("EXPIRETIME").arg(app.key(&slot, which))).await;
        assert_eq!(at, expected, "{which}");
    }
}

/// 3. Reconcile compares every users and ids entry with the database, not
/// their counts: a wrong entry is rewritten and a stray one pruned.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_rewrites_wrong_and_stray_entries_not_only_counts() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    redis_cmd::<()>(&app, redis::cmd("HSET").arg(app.key(&slot, "users")).arg("alice").arg("not-her-booking")).await;
    let report = app.booking.reconcile(None).await.unwrap();
    assert_eq!(report.corrections.len(), 1, "a wrong entry, the counts right");
    redis_cmd::<()>(&app, redis::cmd("HSET").arg(app.key(&slot, "ids")).arg("stray").arg("1")).await;

    let report = app.booking.reconcile(None).await.unwrap();
    assert_eq!(report.corrections.len(), 1);
    let alice: String = redis_cmd(&app, redis::cmd("HGET").arg(app.key(&slot, "users")).arg("alice")).await;
    let stray: bool = redis_cmd(&app, redis::cmd("HEXISTS").arg(app.key(&slot, "ids")).arg("stray")).await;
    assert_eq!((alice, stray), (booked.id, false));
}

/// 4 and 14. A winner that commits after the counter was reloaded without
/// it (its hold lost in a flush while its transaction waited) must not
/// leave the counter reading high: the slot is reloaded with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_winner_committing_after_a_flush_and_reload_is_counted() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 8)]).await;
    let (mut lock, first) = winner_waiting_on_the_row(&app, &slot).await;
    app.flush_redis().await;
    assert_eq!(app.remaining(&slot).await.remaining, 8, "reloaded before the winner committed");
    lock.batch_execute("ROLLBACK").await.unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(app.remaining(&slot).await.remaining, 4, "and counted once it did");
}

/// 4. A cancel that reaches a cold slot is recorded by its version: a load
/// that read the database before the cancel is refused as stale, and the
/// next load includes the cancel.
#[tokio::test(flavor = "multi_thread")]
async fn a_load_older_than_a_change_it_missed_is_refused() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    let before_cancel = slot_version(&app, &slot).await;
    redis_cmd::<()>(&app, redis::cmd("HDEL").arg(app.key(&slot, "seats")).arg("left")).await;
    app.cancel(&booked.id, pb::CancelReason::User).await.unwrap();

    // The figures as read before the cancel: alice active, 4 reserved.
    let script = concat!(
        include_str!("../../src/gate/versions.lua"),
        include_str!("../../src/gate/figures.lua"),
        include_str!("../../src/gate/warm.lua")
    );
    // mode, capacity, reserved, version, expiry, window (none), holders.
    let figures = ["0", "40", "4", &before_cancel.to_string(), &FAR.to_string(), "", "", "", "1", "alice", &booked.id];
    let stale = eval(&app, script, &slot_keys(&app, &slot), &figures.map(str::to_owned)).await;
    let after_cancel = slot_version(&app, &slot).await;
    let expected = redis::Value::Array(vec![redis::Value::Int(2), redis::Value::Int(after_cancel)]);
    assert_eq!(stale, expected, "stale: read the figures again");
    assert_eq!(app.remaining(&slot).await.remaining, 40);
    app.create(reserve("r-2", "alice", &slot, 4)).await.unwrap();
}

/// 6. PostgreSQL itself bounds the winner's transaction: a seat update that
/// waits on a lock longer than the transaction timeout is ended by the
/// server, the call answers UNAVAILABLE, and the hold is released.
#[tokio::test(flavor = "multi_thread")]
async fn a_winner_waiting_past_the_transaction_timeout_is_ended_by_the_server() {
    let app = spawn_app_with(|c| {
        c.db_transaction_timeout = Duration::from_millis(300);
        c.request_timeout = Duration::from_secs(60);
        shortest_lease(c);
        by_hand(c);
    })
    .await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    let mut lock = lock_slot_row(&app, &slot).await;
    let refused = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::Unavailable, "DATABASE_UNAVAILABLE".into()), "{refused:?}");
    // The server ended the wait: a client giving up alone would leave its
    // backend waiting on the lock (PostgreSQL does not notice a client gone
    // while it waits) and able to go on once the lock is free.
    assert_eq!(lock_waiter_count(&app).await, 0, "the transaction's backend still waits on the row");
    lock.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!((app.db_slot(&slot).await, app.remaining(&slot).await.remaining), ((40, 0, 0), 40));
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
}

/// 7. A reservation's times come from the database's clock, the one every
/// replica shares, not from the clock of the replica that took it.
#[tokio::test(flavor = "multi_thread")]
async fn a_reservations_times_come_from_the_database_clock() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before = db_now(&app).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    let after = db_now(&app).await;
    let created = booked.created_at.map(|t| DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()).unwrap();
    assert!(before <= created && created <= after, "{before} <= {created} <= {after}");
}

fn days_ago(days: u64) -> pb::SlotRef {
    let date = Utc::now().date_naive() - Days::new(days);
    pb::SlotRef { restaurant_id: 67, date: date.to_string(), time: "10:00".into() }
}

/// 8. A slot dated before yesterday has started in every time zone: booking
/// it is refused. A hold left in a slot dated two days ago (its keys are
/// still kept) is reaped all the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_slot_in_the_past_is_refused_and_old_holds_are_still_reaped() {
    let app = spawn_app_by_hand().await;
    let (past, older) = (days_ago(2), days_ago(3));
    // Opened before they started (OpenSlots refuses a slot that has).
    let mut db = app.database().await;
    db.batch_execute("INSERT INTO restaurants (id) VALUES (67)").await.unwrap();
    for slot in [&past, &older] {
        sql_query(
            "INSERT INTO slots (restaurant_id, slot_date, slot_time, capacity) VALUES ($1, $2::date, $3::time, 40)",
        )
        .bind::<BigInt, _>(slot.restaurant_id)
        .bind::<Text, _>(&slot.date)
        .bind::<Text, _>(&slot.time)
        .execute(&mut db)
        .await
        .unwrap();
    }
    for slot in [&past, &older] {
        let refused = app.create(reserve("r-1", "alice", slot, 4)).await.unwrap_err();
        assert_eq!(reason_of(&refused), (Code::FailedPrecondition, "SLOT_STARTED".into()));
    }
    // A hold from before the slot's date passed, by a process that died.
    app.booking.warm_slots(Some(past.date.parse().unwrap())).await.unwrap();
    orphan_hold(&app, &past, &id_of("r-0").to_string(), "bob", 4, 1).await;
    assert_eq!(app.booking.reap().await.unwrap(), Reaped { finalized: 0, released: 1 });
}

/// 9. A replay of a cancelled reservation, after its id's entry was lost,
/// answers the cancelled reservation and puts back the (true) entry.
#[tokio::test(flavor = "multi_thread")]
async fn a_replay_of_a_cancelled_reservation_keeps_its_id_known() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    app.cancel(&booked.id, pb::CancelReason::User).await.unwrap();
    redis_cmd::<()>(&app, redis::cmd("HDEL").arg(app.key(&slot, "ids")).arg(&booked.id)).await;

    let replayed = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    assert_eq!((replayed.id.as_str(), replayed.status()), (booked.id.as_str(), pb::ReservationStatus::Cancelled));
    let known: bool = redis_cmd(&app, redis::cmd("HEXISTS").arg(app.key(&slot, "ids")).arg(&booked.id)).await;
    assert!(known);
    assert_eq!((app.db_slot(&slot).await, app.remaining(&slot).await.remaining), ((40, 0, 0), 40));
}

/// 9. A counter below zero (capacity lowered under holds in flight) reads
/// as sold out with 0 left, never a negative number.
#[tokio::test(flavor = "multi_thread")]
async fn sold_out_never_reports_negative_seats() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    redis_cmd::<()>(&app, redis::cmd("HSET").arg(app.key(&slot, "seats")).arg("left").arg(-4)).await;
    let refused = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::FailedPrecondition, "SOLD_OUT".into()));
    assert_eq!(refused.get_details_error_info().unwrap().metadata["remaining"], "0");
}

/// 10. The first attempt committed but could not end its hold (Redis
/// unreachable for a moment): a retry finds the booking in the database
/// instead of waiting for the hold's lease.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_of_a_commit_whose_hold_lingers_returns_the_booking() {
    let app = spawn_app_with(|c| {
        c.replay_wait = Duration::from_secs(30);
        by_hand(c);
    })
    .await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    let hold = format!("4|alice|{}|99", FAR * 1000);
    redis_cmd::<()>(&app, redis::cmd("HSET").arg(app.key(&slot, "holds")).arg(&booked.id).arg(hold)).await;
    assert_eq!(app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap(), booked);
}

/// 11. A reservation code another reservation already has is replaced by a
/// fresh one; the booking goes through.
#[tokio::test(flavor = "multi_thread")]
async fn a_code_collision_gets_a_fresh_code() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    let taken = reservation_code(id_of("r-1"), 0);
    app.database()
        .await
        .batch_execute(&format!(
            "INSERT INTO reservations (id, code, request_id, fingerprint, slot_id, user_id, party_size, kind, status,
                                       cancel_reason)
             SELECT gen_random_uuid(), '{taken}', 'someone-else', 0, id, 'zed', 1, 'RESERVATION_DEPOSIT',
                    'CANCELLED', 'USER'
             FROM slots LIMIT 1"
        ))
        .await
        .unwrap();
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    assert_ne!(booked.code, taken);
    assert_eq!(app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap(), booked, "its replay");
}

/// 12. The expiry sweep and `OpenSlots` lock slot rows in the same order
/// (by id), so the two never deadlock. Forced: `OpenSlots` over eight slots
/// waits on the first while the sweep starts. A sweep that locked slots in
/// any other order (one `UPDATE` over all of them locks in the order its
/// plan meets them: for these eight ids, a hash aggregate meets 8 and 7
/// before 1) would hold what `OpenSlots` needs next while waiting on what it
/// holds, and PostgreSQL would end one of them.
#[tokio::test(flavor = "multi_thread")]
async fn the_expiry_sweep_and_open_slots_take_slot_locks_in_one_order() {
    let app = spawn_app_by_hand().await;
    let slots: Vec<pb::SlotRef> =
        ["10:00", "11:00", "12:00", "13:00", "14:00", "15:00", "16:00", "17:00"].map(slot_at).to_vec();
    for (n, slot) in slots.iter().enumerate() {
        app.open(&[(slot.clone(), 40)]).await;
        app.create(reserve(&format!("r-{n}"), &format!("user-{n}"), slot, 4)).await.unwrap();
    }
    app.clock.advance(Duration::from_secs(24 * 3600));

    let mut lock = lock_slot_row(&app, &slots[0]).await;
    let open = tokio::spawn({
        let mut admin = app.admin.clone();
        let request = pb::OpenSlotsRequest {
            slots: slots
                .iter()
                .map(|s| pb::SlotCapacity { slot: Some(s.clone()), capacity: 44, ..Default::default() })
                .collect(),
        };
        async move { admin.open_slots(request).await }
    });
    lock_waiters(&app, 1).await;
    let sweep = tokio::spawn({
        let booking = app.booking.clone();
        async move { booking.expire_due().await }
    });
    lock_waiters(&app, 2).await;
    lock.batch_execute("COMMIT").await.unwrap();
    open.await.unwrap().unwrap();
    assert_eq!(sweep.await.unwrap().unwrap(), 8);
    for slot in &slots {
        assert_eq!((app.db_slot(slot).await, app.remaining(slot).await.remaining), ((44, 0, 0), 44));
    }
}

/// Eight bookings of one seat at once, so several pooled connections are
/// open (and then idle) on both pools.
async fn open_pooled_connections(app: &TestApp, slot: &pb::SlotRef) {
    let warmup: Vec<_> = (0..8)
        .map(|u| {
            let mut client = app.reservations.clone();
            let request = reserve(&format!("w-{u}"), &format!("w-{u}"), slot, 1);
            tokio::spawn(async move { client.create_reservation(request).await })
        })
        .collect();
    for w in warmup {
        w.await.unwrap().unwrap();
    }
}

async fn twenty_winners_one_after_another(app: &TestApp, slot: &pb::SlotRef) {
    for u in 0..20 {
        app.create(reserve(&format!("r-{u}"), &format!("user-{u}"), slot, 4)).await.unwrap();
    }
}

/// 13. With slotgate idle, every backend of its database is terminated (a
/// failover, a pooler restart): the next callers must not meet the dead
/// pooled connections.
#[tokio::test(flavor = "multi_thread")]
async fn callers_never_meet_pooled_database_connections_the_server_closed() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 400)]).await;
    // Several pooled connections, idle.
    open_pooled_connections(&app, &slot).await;
    app.database()
        .await
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    twenty_winners_one_after_another(&app, &slot).await;
    assert_eq!(app.db_slot(&slot).await, (400, 88, 88));
}

/// 13. The same for Redis: after it restarts (empty), the pool's dead
/// connections are replaced and the callers go on.
#[tokio::test(flavor = "multi_thread")]
async fn callers_never_meet_pooled_redis_connections_of_a_restarted_redis() {
    let mut redis = PrivateRedis::start().await;
    let app = spawn_app_with(|c| {
        c.redis_url = redis.url.clone();
        by_hand(c);
    })
    .await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 400)]).await;
    open_pooled_connections(&app, &slot).await;
    redis.kill();
    redis.restart().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    twenty_winners_one_after_another(&app, &slot).await;
    assert_eq!((app.db_slot(&slot).await, app.remaining(&slot).await.remaining), ((400, 88, 88), 312));
}

/// A database restored to an earlier point (or reseeded) has slot versions
/// below those the gate has seen: a cold slot is loaded all the same, once
/// the figures read again are still older, instead of being refused as
/// stale for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_slot_whose_database_version_went_back_still_loads() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    let seats = app.key(&slot, "seats");
    redis_cmd::<()>(&app, redis::cmd("HSET").arg(&seats).arg("seen").arg(1_000)).await;
    redis_cmd::<()>(&app, redis::cmd("HDEL").arg(&seats).arg("left")).await;
    assert_eq!(app.remaining(&slot).await.remaining, 36);
    app.create(reserve("r-2", "bob", &slot, 4)).await.unwrap();
    assert_eq!(app.remaining(&slot).await.remaining, 32);
}

/// A load of a cold slot keeps the holds in flight that its figures do not
/// include (their seats stay taken), so their commits need no second load.
#[tokio::test(flavor = "multi_thread")]
async fn a_load_keeps_the_holds_in_flight_and_their_commits_need_no_reload() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    let (mut lock, winner) = winner_waiting_on_the_row(&app, &slot).await;
    redis_cmd::<()>(&app, redis::cmd("HDEL").arg(app.key(&slot, "seats")).arg("left")).await;
    let loads = slotgate::metrics::Metrics::read(&app.metrics.counters_loaded);
    assert_eq!((app.remaining(&slot).await.remaining, app.holds(&slot).await), (36, 1), "the hold kept");
    lock.batch_execute("ROLLBACK").await.unwrap();
    winner.await.unwrap().unwrap();
    assert_eq!((app.remaining(&slot).await.remaining, app.holds(&slot).await), (36, 0));
    assert_eq!(slotgate::metrics::Metrics::read(&app.metrics.counters_loaded), loads + 1, "one load");
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
}

/// The expiry sweep locks slot rows as an update does (`NO KEY UPDATE`):
/// winners inserting into the slot (whose foreign key takes `KEY SHARE` on
/// its row) do not hold it up.
#[tokio::test(flavor = "multi_thread")]
async fn the_expiry_sweep_does_not_wait_for_winners_inserting_into_the_slot() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    app.clock.advance(Duration::from_secs(24 * 3600));
    // A winner's transaction, open: its insert holds KEY SHARE on the slot.
    let mut winner = app.database().await;
    winner
        .batch_execute(
            "BEGIN; INSERT INTO reservations (id, code, request_id, fingerprint, slot_id, user_id, party_size, kind,
                                              status)
             SELECT gen_random_uuid(), 'SG-OPEN-TXN', 'open', 0, id, 'zed', 1, 'RESERVATION_DEPOSIT',
                    'PENDING_DEPOSIT'
             FROM slots LIMIT 1",
        )
        .await
        .unwrap();
    assert_eq!(app.booking.expire_due().await.unwrap(), 1, "swept with the winner's transaction open");
    winner.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(app.db_slot(&slot).await, (40, 0, 0));
}

/// 9. A request id booked in one slot and sent again for another is
/// refused as reused there too, even where that slot would refuse it for
/// another reason (sold out, or the user already holds one there).
#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_reused_in_another_slot_is_refused_as_reused_there() {
    let app = spawn_app_by_hand().await;
    let (a, full, held) = (slot_at("10:00"), slot_at("11:00"), slot_at("12:00"));
    app.open(&[(a.clone(), 40), (full.clone(), 4), (held.clone(), 40)]).await;
    app.create(reserve("r-1", "alice", &a, 4)).await.unwrap();
    app.create(reserve("r-2", "bob", &full, 4)).await.unwrap();
    app.create(reserve("r-3", "alice", &held, 4)).await.unwrap();
    for slot in [&full, &held] {
        let refused = app.create(reserve("r-1", "alice", slot, 4)).await.unwrap_err();
        assert_eq!(reason_of(&refused), (Code::InvalidArgument, "REQUEST_ID_REUSED".into()), "{}", slot.time);
    }
    // A request id whose attempt booked nothing is free for another slot.
    let nothing = app.create(reserve("r-4", "carol", &full, 4)).await.unwrap_err();
    assert_eq!(reason_of(&nothing).1, "SOLD_OUT");
    app.create(reserve("r-4", "carol", &a, 4)).await.unwrap();
}

/// A commit whose hold was wiped by a reload, while a second attempt of the
/// same id holds seats of its own: the counter does not count the commit
/// (the second attempt will give its seats back), so the slot is reloaded.
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_hidden_behind_another_attempts_hold_makes_the_slot_reload() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    let version = slot_version(&app, &slot).await;
    let id = id_of("r-1").to_string();
    // The second attempt (nonce 2) was admitted after the reload.
    redis::pipe()
        .cmd("HSET")
        .arg(app.key(&slot, "users"))
        .arg("alice")
        .arg(&id)
        .cmd("HSET")
        .arg(app.key(&slot, "holds"))
        .arg(&id)
        .arg(format!("4|alice|{}|2", FAR * 1000))
        .query_async::<()>(&mut app.redis().await)
        .await
        .unwrap();
    let script = concat!(include_str!("../../src/gate/versions.lua"), include_str!("../../src/gate/finalize.lua"));
    let keys = [app.key(&slot, "seats"), app.key(&slot, "users"), app.key(&slot, "holds")];
    // The first attempt (nonce 1) committed, at a version past the load's.
    let args = [id.clone(), "1".into(), "alice".into(), (version + 1).to_string(), FAR.to_string()];
    assert_eq!(eval(&app, script, &keys, &args).await, redis::Value::Int(0), "no hold of its own");
    let left: Option<i64> = redis_cmd(&app, redis::cmd("HGET").arg(app.key(&slot, "seats")).arg("left")).await;
    assert_eq!(left, None, "cold: the next request loads figures that include the commit");
}

/// The undo of an attempt whose reply was lost finds no hold, and entries of
/// its id that another attempt committed: it must not make the slot cold
/// (it may never have run), only void itself.
#[tokio::test(flavor = "multi_thread")]
async fn the_undo_of_a_lost_reply_leaves_a_committed_ids_entries_and_the_counter_alone() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("10:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    let mut keys = slot_keys(&app, &slot);
    keys.push(app.key(&slot, "void:5"));
    let args = [
        booked.id.clone(),
        "alice".into(),
        "5".into(),
        "1".into(),
        "30000".into(),
        format!("67:{}:{}", slot.date, slot.time),
    ];
    let released = eval(&app, include_str!("../../src/gate/release.lua"), &keys, &args).await;
    assert_eq!(released, redis::Value::Int(0));
    assert_eq!(app.remaining(&slot).await.remaining, 36);
    let known: bool = redis_cmd(&app, redis::cmd("HEXISTS").arg(app.key(&slot, "ids")).arg(&booked.id)).await;
    assert!(known);
    assert_eq!(slotgate::metrics::Metrics::read(&app.metrics.counters_loaded), 0, "never reloaded");
}
