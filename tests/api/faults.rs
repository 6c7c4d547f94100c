//! Dependencies misbehaving: nothing may be left half-done.

use std::time::Duration;

use tonic::Code;

use crate::helpers::{PrivateRedis, reason_of, reserve, slot_at, spawn_app_with};

/// Keeps Redis busy (it answers no one) for `millis` milliseconds.
const BUSY: &str = "local t0 = redis.call('TIME') local start = t0[1] * 1000000 + t0[2]
    while true do local t = redis.call('TIME') if t[1] * 1000000 + t[2] - start > tonumber(ARGV[1]) * 1000 then break end end
    return 1";

#[tokio::test(flavor = "multi_thread")]
async fn an_acquire_whose_reply_is_lost_takes_no_seats_for_good() {
    let redis = PrivateRedis::start().await;
    let app = spawn_app_with(|c| {
        c.redis_url = redis.url.clone();
        c.redis_command_timeout = Duration::from_millis(100);
    })
    .await;
    let slot = slot_at("15:00");
    app.open(&[(slot.clone(), 40)]).await;
    // Loads the acquire script: otherwise the stalled call would meet
    // NOSCRIPT and never run, proving nothing.
    app.create(reserve("r-0", "bob", &slot, 4)).await.unwrap();

    // Redis stalls; the request's script queues behind the stall, its reply
    // times out, and the request is answered UNAVAILABLE. The script still
    // runs once Redis wakes up: the seats it takes must come back.
    let mut stall = redis.connection().await;
    let stalled = tokio::spawn(async move {
        redis::cmd("EVAL").arg(BUSY).arg(0).arg(600).query_async::<i64>(&mut stall).await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&status), (Code::Unavailable, "REDIS_UNAVAILABLE".into()));
    stalled.await.unwrap();

    let mut conn = redis.connection().await;
    let mut state = (0, 0);
    for _ in 0..50 {
        let holds: usize = redis::cmd("HLEN")
            .arg(format!("{}:{{67:2026-12-24:15:00}}:holds", app.namespace))
            .query_async(&mut conn)
            .await
            .unwrap();
        let left: i32 = redis::cmd("HGET")
            .arg(format!("{}:{{67:2026-12-24:15:00}}:seats", app.namespace))
            .arg("left")
            .query_async(&mut conn)
            .await
            .unwrap();
        state = (holds, left);
        if state == (0, 36) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, (0, 36), "(holds, seats left) once Redis caught up");
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
    // Nothing of the lost attempt stands in the user's way.
    app.create(reserve("r-2", "alice", &slot, 4)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn while_redis_is_down_requests_fail_fast_and_it_heals_when_redis_returns_empty() {
    let mut redis = PrivateRedis::start().await;
    let app = spawn_app_with(|c| c.redis_url = redis.url.clone()).await;
    let slot = slot_at("15:00");
    app.open(&[(slot.clone(), 40)]).await;
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();

    redis.kill();
    for (request_id, user) in [("r-2", "bob"), ("r-3", "carol")] {
        let status = app.create(reserve(request_id, user, &slot, 4)).await.unwrap_err();
        assert_eq!(reason_of(&status), (Code::Unavailable, "REDIS_UNAVAILABLE".into()));
    }
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4), "nothing was booked while Redis was down");

    // Back, empty: the counter and its holders are rebuilt from PostgreSQL.
    redis.restart().await;
    app.create(reserve("r-2", "bob", &slot, 4)).await.unwrap();
    let dup = app.create(reserve("r-4", "alice", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&dup), (Code::AlreadyExists, "DUPLICATE".into()));
    assert_eq!(app.remaining(&slot).await.remaining, 32);
    assert_eq!(app.db_slot(&slot).await, (40, 8, 8));
}
