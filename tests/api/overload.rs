//! Excess load is refused at once, by the right layer, with the right
//! reason; probes keep answering; exact winners still win.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use slotgate::{
    domain::{SlotCapacity, SlotKey},
    metrics::Metrics,
    pb,
};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_types::StatusExt;

use crate::{
    fault_kit::PrivateRedis,
    helpers::{Patience, burst, connect, eventually, reason_of, reserve, slot_at, spawn_app_with, tally},
};

#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_calls_past_a_limit_of_64_are_shed_at_once_and_exact_winners_still_win() {
    let app = spawn_app_with(|c| c.concurrency_limit = 64).await;
    let slot = slot_at("19:00");
    app.open(&[(slot.clone(), 40)]).await;

    let requests: Vec<_> = (0..5_000).map(|u| reserve(&format!("r-{u}"), &format!("user-{u}"), &slot, 4)).collect();
    let started = Instant::now();
    let results = burst(app.addr, requests, 8).await;
    let all_answered = started.elapsed();

    let outcomes = tally(&results);
    for kind in outcomes.keys() {
        assert!(
            ["OK", "FailedPrecondition/SOLD_OUT", "Unavailable/OVERLOADED"].contains(&kind.as_str()),
            "refused by something other than the load shedder: {kind} in {outcomes:?}"
        );
    }
    assert_eq!(outcomes.get("OK"), Some(&10), "{outcomes:?}");
    let shed = outcomes.get("Unavailable/OVERLOADED").copied().unwrap_or(0);
    assert!(shed > 0, "nothing was shed: {outcomes:?}");
    let overloaded = results.iter().filter_map(|r| r.as_ref().err()).find(|s| reason_of(s).1 == "OVERLOADED").unwrap();
    assert!(overloaded.get_details_retry_info().is_some(), "a shed call says when to retry");
    assert_eq!(app.db_slot(&slot).await, (40, 40, 40));

    // Right after, the service serves normally.
    let other = slot_at("19:30");
    app.open(&[(other.clone(), 40)]).await;
    app.create(reserve("after", "late-user", &other, 4)).await.unwrap();
    eprintln!(
        "overload report: 5000 calls at once, concurrency limit 64: all answered within {:.0} ms; {:?}",
        all_answered.as_secs_f64() * 1e3,
        outcomes.iter().collect::<BTreeMap<_, _>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_keep_answering_while_business_calls_are_shed() {
    let redis = PrivateRedis::start().await;
    let app = spawn_app_with(|c| {
        c.redis_url = redis.url.clone();
        c.concurrency_limit = 1;
        c.redis_command_timeout = Duration::from_secs(5);
    })
    .await;
    let slot = slot_at("19:00");
    app.open(&[(slot.clone(), 40)]).await;

    // Redis stalls, so the one call allowed in flight stays in flight.
    let stalled = redis.stall(Duration::from_millis(800)).await;
    let first = tokio::spawn({
        let app_client = app.reservations.clone();
        let request = reserve("r-1", "alice", &slot, 4);
        async move { app_client.clone().create_reservation(request).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let second = app.create(reserve("r-2", "bob", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&second), (Code::Unavailable, "OVERLOADED".into()));
    let mut health = HealthClient::new(connect(app.addr).await);
    for _ in 0..20 {
        let status = health.check(HealthCheckRequest { service: "slotgate.v1.Reservations".into() }).await.unwrap();
        assert_eq!(status.into_inner().status(), ServingStatus::Serving);
    }
    stalled.await.unwrap();
    first.await.unwrap().unwrap();
    app.create(reserve("r-2", "bob", &slot, 4)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_rate_limit_calls_are_refused_at_once_with_a_retry_hint() {
    let app = spawn_app_with(|c| {
        c.rate_limit = 5;
        c.rate_burst = 5;
    })
    .await;
    let slot = slot_at("19:00");
    app.open(&[(slot.clone(), 40)]).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await; // OpenSlots spent a token

    let calls = (0..20).map(|_| {
        let mut client = app.reservations.clone();
        let slot = slot.clone();
        tokio::spawn(async move { client.get_remaining(pb::GetRemainingRequest { slot: Some(slot) }).await })
    });
    let mut refused = Vec::new();
    let mut passed = 0;
    for call in calls.collect::<Vec<_>>() {
        match call.await.unwrap() {
            Ok(_) => passed += 1,
            Err(status) => refused.push(status),
        }
    }
    // The bucket holds 5 and refills 5/s: a slow machine may let one more in.
    assert!((5..=7).contains(&passed), "passed {passed}");
    for status in &refused {
        assert_eq!(reason_of(status), (Code::ResourceExhausted, "RATE_LIMITED".into()));
        let wait = status.get_details_retry_info().unwrap().retry_delay.unwrap();
        assert!(wait <= Duration::from_millis(200), "retry hint {wait:?}");
    }
    // Probes are not rate limited.
    let mut health = HealthClient::new(connect(app.addr).await);
    for _ in 0..50 {
        health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_user_hammering_is_throttled_before_any_redis_work() {
    let app = spawn_app_with(|c| c.user_burst = 5).await;
    let slot = slot_at("19:00");
    app.open(&[(slot.clone(), 40)]).await;
    let clicks: Vec<_> = (0..12).map(|c| reserve(&format!("click-{c}"), "alice", &slot, 4)).collect();
    let outcomes = tally(&burst(app.addr, clicks, 1).await);
    assert_eq!(outcomes.get("OK"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.get("AlreadyExists/DUPLICATE"), Some(&4), "{outcomes:?}");
    assert_eq!(outcomes.get("ResourceExhausted/USER_RATE_LIMITED"), Some(&7), "{outcomes:?}");
    let gate = Metrics::read(&app.metrics.gate_admitted) + Metrics::read(&app.metrics.gate_refused);
    assert_eq!(gate, 5, "only the clicks the guard let through reached Redis");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_the_server_timeout_ends_deadline_exceeded() {
    let redis = PrivateRedis::start().await;
    let app = spawn_app_with(|c| {
        c.redis_url = redis.url.clone();
        c.request_timeout = Duration::from_millis(200);
        c.redis_command_timeout = Duration::from_secs(5);
    })
    .await;
    let slot = slot_at("19:00");
    // Opened through the use case: the 200 ms bound is for the call under
    // test, and a loaded machine may take longer over the setup's.
    let capacity = SlotCapacity {
        slot: SlotKey::parse(Some(&slot), "slot").unwrap(),
        capacity: 40,
        opens_at: None,
        closes_at: None,
        waitlist_limit: None,
        offer_window_secs: None,
    };
    app.booking.open_slots(vec![capacity]).await.unwrap();
    let stalled = redis.stall(Duration::from_millis(600)).await;
    let status =
        app.reservations.clone().get_remaining(pb::GetRemainingRequest { slot: Some(slot.clone()) }).await.unwrap_err();
    assert_eq!(reason_of(&status), (Code::DeadlineExceeded, "DEADLINE_EXCEEDED".into()));
    stalled.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_whose_deadline_has_already_passed_starts_no_work() {
    let app = spawn_app_with(|_| {}).await;
    let slot = slot_at("19:00");
    app.open(&[(slot.clone(), 40)]).await;
    for timeout in ["0n", "1n"] {
        let mut request = tonic::Request::new(reserve(&format!("r-{timeout}"), "alice", &slot, 4));
        request.metadata_mut().insert("grpc-timeout", timeout.parse().unwrap());
        let status = app.reservations.clone().create_reservation(request).await.unwrap_err();
        assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
    }
    let gate = Metrics::read(&app.metrics.gate_admitted) + Metrics::read(&app.metrics.gate_refused);
    assert_eq!(gate, 0, "no work started for calls nobody waits for");
    assert_eq!(app.db_slot(&slot).await, (40, 0, 0));
}

/// A caller that gives up while its acquire waits in Redis (stalled here)
/// leaves nothing behind: its attempt is voided, so once Redis runs again
/// the seats the acquire took go back at once (not when the hold's lease
/// runs out, a minute here), nothing is booked, and the caller's retry is
/// decided afresh.
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_gone_while_its_acquire_waits_in_redis_books_nothing_and_holds_nothing() {
    let redis = PrivateRedis::start().await;
    let app = spawn_app_with(|c| {
        c.redis_url = redis.url.clone();
        c.redis_command_timeout = Duration::from_secs(5);
        c.hold_lease = Duration::from_secs(60);
    })
    .await;
    let slot = slot_at("19:00");
    app.open(&[(slot.clone(), 40)]).await;
    assert_eq!(app.remaining(&slot).await.remaining, 40);

    let stalled = redis.stall(Duration::from_millis(800)).await;
    let mut request = tonic::Request::new(reserve("r-1", "alice", &slot, 4));
    request.set_timeout(Duration::from_millis(100));
    let status = app.reservations.clone().create_reservation(request).await.unwrap_err();
    assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
    stalled.await.unwrap();

    let seats_left = async || -> Option<i32> {
        let mut redis = app.redis().await;
        redis::cmd("HGET").arg(app.key(&slot, "seats")).arg("left").query_async(&mut redis).await.unwrap()
    };
    let patience = Patience::up_to(Duration::from_secs(10));
    let state =
        eventually(patience, async || (app.holds(&slot).await, seats_left().await), |s| *s == (0, Some(40))).await;
    assert_eq!(state, (0, Some(40)), "(holds, seats left) once Redis ran the acquire and its void");
    assert_eq!(Metrics::read(&app.metrics.attempts_voided), 1);
    assert_eq!(app.db_slot(&slot).await, (40, 0, 0), "nothing was booked");

    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    assert_eq!(app.remaining(&slot).await.remaining, 36);
    assert_eq!(app.holds(&slot).await, 0);
}
