//! Sale windows and time zones: a slot takes reservations from `opens_at`
//! until `closes_at` or its start, decided by the gate's clock (Redis's),
//! the same instant for every replica.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use slotgate::{
    clock::ManualClock,
    config::Config,
    metrics::Metrics,
    pb::{self, SlotState},
    server::Application,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::{
    bursts::{Decided, assert_exact_outcome, clicks},
    fault_kit::PrivateRedis,
    helpers::{
        TestApp, burst, by_hand, generous_timeouts, reason_of, release_together, reserve, slot_at, spawn_app,
        spawn_app_with, tally,
    },
};

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn instant(t: &prost_types::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

/// Now, to the millisecond (the gate's precision), so instants compare
/// exactly after a round trip.
fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

async fn open_window(
    app: &TestApp,
    slot: &pb::SlotRef,
    capacity: i32,
    opens_at: Option<DateTime<Utc>>,
    closes_at: Option<DateTime<Utc>>,
) -> Result<pb::OpenSlotsResponse, Status> {
    let request = pb::OpenSlotsRequest {
        slots: vec![pb::SlotCapacity {
            slot: Some(slot.clone()),
            capacity,
            opens_at: opens_at.map(timestamp),
            closes_at: closes_at.map(timestamp),
            ..Default::default()
        }],
    };
    app.admin.clone().open_slots(request).await.map(tonic::Response::into_inner)
}

async fn close(app: &TestApp, slots: &[pb::SlotRef]) -> Result<pb::CloseSlotsResponse, Status> {
    let request = pb::CloseSlotsRequest { slots: slots.to_vec() };
    app.admin.clone().close_slots(request).await.map(tonic::Response::into_inner)
}

async fn put_restaurant(app: &TestApp, restaurant_id: i64, zone: &str) -> Result<pb::PutRestaurantResponse, Status> {
    let request = pb::PutRestaurantRequest { restaurant_id, time_zone: zone.into() };
    app.admin.clone().put_restaurant(request).await.map(tonic::Response::into_inner)
}

async fn sleep_until(t: DateTime<Utc>) {
    if let Ok(wait) = (t - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

/// The seat counter's raw fields (left, epoch), to see that nothing moved it.
async fn counter(app: &TestApp, slot: &pb::SlotRef) -> (Option<i64>, Option<i64>) {
    redis::cmd("HMGET")
        .arg(app.key(slot, "seats"))
        .arg("left")
        .arg("epoch")
        .query_async(&mut app.redis().await)
        .await
        .unwrap()
}

/// The seed's duplicate-2000 burst before the opening: every call refused
/// SLOT_NOT_OPEN with the opening instant and a hint that never exceeds the
/// wait, and nothing reaches the database or moves the counter. At the
/// opening, the same burst books exactly ten.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_before_the_opening_is_refused_to_the_last_call_and_the_opening_books_exactly() {
    let app = spawn_app_with(|c| {
        generous_timeouts(c);
        by_hand(c);
    })
    .await;
    let slot = slot_at("19:00");
    // Far enough ahead that the whole burst lands before it, however
    // slow the machine.
    let opens_at = now_ms() + TimeDelta::minutes(10);
    open_window(&app, &slot, 40, Some(opens_at), None).await.unwrap();
    let remaining = app.remaining(&slot).await;
    assert_eq!(remaining.state(), SlotState::NotYetOpen);
    assert_eq!(remaining.opens_at.as_ref().map(instant), Some(opens_at));

    let before = counter(&app, &slot).await;
    assert_eq!(before.0, Some(40), "OpenSlots leaves the counter warm ahead of the opening");
    let checkouts = Metrics::read(&app.metrics.db_checkouts);
    let requests = clicks(std::slice::from_ref(&slot), 2_000, 3);
    let sent = Utc::now();
    let results = burst(app.addr, requests, 8).await;
    assert_eq!(
        tally(&results).into_iter().collect::<Vec<_>>(),
        vec![(String::from("FailedPrecondition/SLOT_NOT_OPEN"), 6_000)]
    );
    for refused in results.iter().map(|r| r.as_ref().unwrap_err()) {
        let info = refused.get_details_error_info().unwrap();
        assert_eq!(DateTime::parse_from_rfc3339(&info.metadata["opens_at"]).unwrap(), opens_at);
        let hint = refused.get_details_retry_info().and_then(|r| r.retry_delay).expect("a retry hint");
        assert!(hint > Duration::ZERO && hint <= (opens_at - sent).to_std().unwrap(), "hint {hint:?}");
    }
    assert_eq!(
        Metrics::read(&app.metrics.db_checkouts),
        checkouts,
        "a refusal before the opening reached the database"
    );
    assert_eq!(counter(&app, &slot).await, before, "a refusal before the opening moved the counter");

    // The sale is moved to a moment from now; the burst fires at it.
    let opens_at = now_ms() + TimeDelta::milliseconds(1_500);
    open_window(&app, &slot, 40, Some(opens_at), None).await.unwrap();
    sleep_until(opens_at).await;
    let checkouts = Metrics::read(&app.metrics.db_checkouts);
    let requests = clicks(std::slice::from_ref(&slot), 2_000, 3);
    let results = burst(app.addr, requests.clone(), 8).await;
    assert_exact_outcome(&app, Decided::AtTheGate, checkouts, &requests, &results, std::slice::from_ref(&slot)).await;
    assert_eq!(app.remaining(&slot).await.state(), SlotState::Open);
}

/// Calls sent from 500 ms before the opening on: none is admitted early
/// (every reservation was made at or after the opening, by the shared
/// clock), and every call answered before it was refused SLOT_NOT_OPEN.
#[tokio::test(flavor = "multi_thread")]
async fn clicks_just_before_the_opening_are_refused_and_nothing_is_admitted_early() {
    let app = spawn_app_with(generous_timeouts).await;
    let slot = slot_at("19:30");
    let opens_at = now_ms() + TimeDelta::milliseconds(1_500);
    open_window(&app, &slot, 40, Some(opens_at), None).await.unwrap();
    sleep_until(opens_at - TimeDelta::milliseconds(500)).await;
    let mut answered = Vec::new();
    let mut client = app.reservations.clone();
    for i in 0..40 {
        let result = client.create_reservation(reserve(&format!("r-{i}"), &format!("user-{i}"), &slot, 4)).await;
        answered.push((Utc::now(), result.map(tonic::Response::into_inner)));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut refused_early = 0;
    for (at, result) in &answered {
        match result {
            Ok(r) => assert!(instant(r.created_at.as_ref().unwrap()) >= opens_at, "admitted before the opening"),
            Err(e) if *at < opens_at => {
                assert_eq!(reason_of(e), (Code::FailedPrecondition, "SLOT_NOT_OPEN".into()));
                refused_early += 1;
            }
            Err(e) => assert!(matches!(reason_of(e).1.as_str(), "SLOT_NOT_OPEN" | "SOLD_OUT"), "{e:?}"),
        }
    }
    assert!(refused_early > 0, "no call was answered before the opening");
    assert_eq!(answered.iter().filter(|(_, r)| r.is_ok()).count(), 10);
}

/// Two replicas whose process clocks are two seconds apart: the gate's
/// clock decides for both, so neither admits early and both admit on time.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_with_clocks_apart_agree_on_the_opening() {
    let app = spawn_app_with(generous_timeouts).await;
    let ahead = ManualClock::starting_now();
    ahead.advance(Duration::from_secs(2));
    let replica = app.spawn_replica_with_clock(ahead).await;
    let slot = slot_at("20:00");
    let opens_at = now_ms() + TimeDelta::milliseconds(2_500);
    open_window(&app, &slot, 40, Some(opens_at), None).await.unwrap();

    // Half a second before the opening: the replica that thinks it is 1.5 s
    // past it admits nothing, nor does the other.
    sleep_until(opens_at - TimeDelta::milliseconds(500)).await;
    let early: Vec<_> = (0..2).map(|u| reserve(&format!("early-{u}"), &format!("early-user-{u}"), &slot, 4)).collect();
    for addr in [app.addr, replica.addr] {
        for result in burst(addr, early.clone(), 1).await {
            match result {
                Err(e) => assert_eq!(reason_of(&e), (Code::FailedPrecondition, "SLOT_NOT_OPEN".into())),
                Ok(r) => assert!(instant(r.created_at.as_ref().unwrap()) >= opens_at, "admitted early via {addr}"),
            }
        }
    }

    sleep_until(opens_at).await;
    let late = |prefix: &str| -> Vec<pb::CreateReservationRequest> {
        (0..5).map(|u| reserve(&format!("{prefix}-{u}"), &format!("{prefix}-user-{u}"), &slot, 4)).collect()
    };
    let (a, b) = tokio::join!(burst(app.addr, late("a"), 2), burst(replica.addr, late("b"), 2));
    for r in a.iter().chain(&b) {
        let r = r.as_ref().expect("booked on time");
        assert!(instant(r.created_at.as_ref().unwrap()) >= opens_at);
    }
    // Ten winners in all, five through each replica, every one of them a
    // distinct reservation.
    let booked: std::collections::HashSet<&str> = a.iter().chain(&b).flatten().map(|r| r.id.as_str()).collect();
    assert_eq!((a.iter().flatten().count(), b.iter().flatten().count(), booked.len()), (5, 5, 10));
    assert_eq!(app.db_slot(&slot).await, (40, 40, 40));
}

/// `FLUSHALL` before the opening (on a Redis of the test's own) does not
/// open the slot: the counter is loaded again from the database, window
/// and all.
#[tokio::test(flavor = "multi_thread")]
async fn a_flushed_counter_before_the_opening_does_not_open_the_slot_early() {
    let redis = PrivateRedis::start().await;
    let app = spawn_app_with(|c| c.redis_url = redis.url.clone()).await;
    let slot = slot_at("20:30");
    let opens_at = now_ms() + TimeDelta::minutes(10);
    open_window(&app, &slot, 40, Some(opens_at), None).await.unwrap();
    redis::cmd("FLUSHALL").query_async::<()>(&mut redis.connection().await).await.unwrap();
    let refused = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::FailedPrecondition, "SLOT_NOT_OPEN".into()));
    assert_eq!(Metrics::read(&app.metrics.counters_loaded), 1, "the counter was not loaded again");
    assert_eq!(app.remaining(&slot).await.state(), SlotState::NotYetOpen);
    assert_eq!(app.db_slot(&slot).await, (40, 0, 0));
}

/// The seed's burst fired 500 ms before the opening, each client retrying
/// after the hint it is given, as a well-behaved client does: nothing is
/// admitted before the opening, every call answered before it is
/// SLOT_NOT_OPEN with a hint that does not overshoot the opening (or, for
/// a user clicking too often, USER_RATE_LIMITED), and the retries at the
/// opening book exactly ten.
#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_burst_fired_before_the_opening_and_retried_at_the_hint_books_exactly_ten() {
    let app = spawn_app_with(generous_timeouts).await;
    let slot = slot_at("22:00");
    let opens_at = now_ms() + TimeDelta::milliseconds(1_500);
    open_window(&app, &slot, 40, Some(opens_at), None).await.unwrap();
    let requests = clicks(std::slice::from_ref(&slot), 2_000, 3);
    sleep_until(opens_at - TimeDelta::milliseconds(500)).await;
    let calls = release_together(app.addr, 8, requests, move |mut client, request| async move {
        let mut attempts = Vec::new();
        for _ in 0..20 {
            let sent = Utc::now();
            let result = client.create_reservation(request.clone()).await.map(tonic::Response::into_inner);
            let hint = result.as_ref().err().and_then(|e| e.get_details_retry_info()).and_then(|r| r.retry_delay);
            attempts.push((sent, Utc::now(), result));
            match hint {
                Some(wait) => tokio::time::sleep(wait).await,
                None => break,
            }
        }
        attempts
    });
    let attempts: Vec<_> = calls.await.results().await.into_iter().flatten().collect();
    let mut winners = 0;
    for (sent, answered, result) in &attempts {
        match result {
            Ok(r) => {
                assert!(instant(r.created_at.as_ref().unwrap()) >= opens_at, "admitted before the opening");
                winners += 1;
            }
            Err(e) if reason_of(e).1 == "SLOT_NOT_OPEN" => {
                let hint = e.get_details_retry_info().and_then(|r| r.retry_delay).unwrap();
                assert!(*sent + TimeDelta::from_std(hint).unwrap() <= opens_at, "a hint past the opening");
            }
            // A user's clicks and their retries together may pass the
            // per-user guard's burst: throttled, with a hint, and retried.
            Err(e) if reason_of(e).1 == "USER_RATE_LIMITED" => {}
            Err(e) => {
                assert!(*answered >= opens_at, "refused before the opening with {e:?}");
                assert!(["SOLD_OUT", "DUPLICATE"].contains(&reason_of(e).1.as_str()), "unexpected {e:?}");
            }
        }
    }
    let early = attempts.iter().filter(|(_, at, _)| *at < opens_at).count();
    println!("{} attempts, {early} answered before the opening", attempts.len());
    assert!(early > 0, "no call was answered before the opening");
    assert_eq!(winners, 10);
    assert_eq!(app.db_slot(&slot).await, (40, 40, 40));
}

/// A counter whose window drifted from the database's (a counter loaded
/// by a slotgate that kept no window, a field lost) is rewritten by the
/// reconciler, window and all.
#[tokio::test(flavor = "multi_thread")]
async fn the_reconciler_restores_a_lost_window() {
    let app = spawn_app_with(by_hand).await;
    let slot = slot_at("17:00");
    open_window(&app, &slot, 40, Some(now_ms() + TimeDelta::minutes(10)), None).await.unwrap();
    let _: () = redis::cmd("HDEL")
        .arg(app.key(&slot, "seats"))
        .arg("opens")
        .arg("starts")
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    assert_eq!(app.remaining(&slot).await.state(), SlotState::Open, "the window was not lost");
    let report = app.admin.clone().reconcile_slots(pb::ReconcileSlotsRequest::default()).await.unwrap().into_inner();
    assert_eq!(report.corrected, 1);
    assert_eq!(app.remaining(&slot).await.state(), SlotState::NotYetOpen);
    let refused = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::FailedPrecondition, "SLOT_NOT_OPEN".into()));
}

/// CloseSlots ends sales at once; cancelling and confirming still work on
/// the closed slot; an unknown slot closes nothing; OpenSlots with a new
/// window opens it again. A window whose end passes closes by itself.
#[tokio::test(flavor = "multi_thread")]
async fn closing_stops_sales_but_not_cancel_or_confirm() {
    let app = spawn_app().await;
    let (slot, other) = (slot_at("18:00"), slot_at("18:30"));
    app.open(&[(slot.clone(), 40), (other.clone(), 40)]).await;
    let kept = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    let cancelled = app.create(reserve("r-2", "bob", &slot, 4)).await.unwrap();

    let unknown = close(&app, &[other.clone(), slot_at("03:00")]).await.unwrap_err();
    assert_eq!(reason_of(&unknown), (Code::NotFound, "SLOT_NOT_FOUND".into()));
    assert_eq!(app.remaining(&other).await.state(), SlotState::Open, "an unknown slot closed the others");

    let before = Utc::now() - TimeDelta::seconds(1);
    let closed = close(&app, std::slice::from_ref(&slot)).await.unwrap();
    let closes_at = instant(closed.slots[0].closes_at.as_ref().unwrap());
    assert!(before < closes_at && closes_at <= Utc::now(), "{closes_at}");
    let refused = app.create(reserve("r-3", "carol", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::FailedPrecondition, "SLOT_CLOSED".into()));
    assert_eq!(
        DateTime::parse_from_rfc3339(&refused.get_details_error_info().unwrap().metadata["closes_at"]).unwrap(),
        closes_at
    );
    // A replay of a reservation made before the close still answers it.
    assert_eq!(app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap().id, kept.id);
    // Closing again keeps the first closing instant.
    let again = close(&app, std::slice::from_ref(&slot)).await.unwrap();
    assert_eq!(instant(again.slots[0].closes_at.as_ref().unwrap()), closes_at);

    let confirm = pb::ConfirmReservationRequest { id: kept.id.clone() };
    let confirmed = app.reservations.clone().confirm_reservation(confirm).await.unwrap().into_inner();
    assert_eq!(confirmed.status(), pb::ReservationStatus::Confirmed);
    app.cancel(&cancelled.id, pb::CancelReason::User).await.unwrap();
    let remaining = app.remaining(&slot).await;
    assert_eq!((remaining.remaining, remaining.state()), (36, SlotState::Closed));
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));

    // Reopened with a window ending in a moment: open, then closed by itself.
    let closes_at = now_ms() + TimeDelta::milliseconds(1_000);
    open_window(&app, &slot, 40, None, Some(closes_at)).await.unwrap();
    app.create(reserve("r-4", "dave", &slot, 4)).await.unwrap();
    sleep_until(closes_at).await;
    let refused = app.create(reserve("r-5", "erin", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::FailedPrecondition, "SLOT_CLOSED".into()));
}

/// An opening far in the future (year 9000) is refused with its wait as
/// for any other: the gate's numbers stay exact whatever their size.
#[tokio::test(flavor = "multi_thread")]
async fn an_opening_far_ahead_is_refused_with_its_exact_instant() {
    let app = spawn_app().await;
    let slot = slot_at("23:00");
    let opens_at = DateTime::parse_from_rfc3339("9000-01-01T00:00:00.123Z").unwrap().with_timezone(&Utc);
    open_window(&app, &slot, 40, Some(opens_at), None).await.unwrap();
    let sent = Utc::now();
    let refused = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::FailedPrecondition, "SLOT_NOT_OPEN".into()));
    let info = refused.get_details_error_info().unwrap();
    assert_eq!(DateTime::parse_from_rfc3339(&info.metadata["opens_at"]).unwrap(), opens_at);
    let hint = refused.get_details_retry_info().and_then(|r| r.retry_delay).unwrap();
    let wait = (opens_at - sent).to_std().unwrap();
    assert!(hint <= wait && wait - hint < Duration::from_secs(5), "hint {hint:?}, wait {wait:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_window_that_closes_before_it_opens_or_a_bad_timestamp_is_refused() {
    let app = spawn_app().await;
    let slot = slot_at("21:00");
    let t = now_ms() + TimeDelta::hours(1);
    let refused = open_window(&app, &slot, 40, Some(t), Some(t)).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::InvalidArgument, "INVALID_FIELD".into()));
    assert_eq!(refused.get_details_bad_request().unwrap().field_violations[0].field, "slots[0].closes_at");
    let bad = pb::OpenSlotsRequest {
        slots: vec![pb::SlotCapacity {
            slot: Some(slot.clone()),
            capacity: 40,
            opens_at: Some(prost_types::Timestamp { seconds: 0, nanos: -1 }),
            ..Default::default()
        }],
    };
    let refused = app.admin.clone().open_slots(bad).await.unwrap_err();
    assert_eq!(refused.get_details_bad_request().unwrap().field_violations[0].field, "slots[0].opens_at");
    let refused = close(&app, &[]).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::InvalidArgument, "INVALID_FIELD".into()));
}

/// When slots start, zone by zone: the start is the local date and time in
/// the restaurant's zone, across the date line and daylight-saving changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_slot_starts_at_its_local_time_in_its_restaurants_zone() {
    let app = spawn_app().await;
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let cases = [
        // 19:00 in Seoul (UTC+9) is 10:00 UTC.
        (1, "Asia/Seoul", "2036-12-24", "19:00", "2036-12-24T10:00:00Z"),
        // Across the date line: UTC+14 is already the 25th, UTC-11 still the 24th.
        (2, "Pacific/Kiritimati", "2036-12-25", "09:00", "2036-12-24T19:00:00Z"),
        (3, "Pacific/Pago_Pago", "2036-12-24", "09:00", "2036-12-24T20:00:00Z"),
        // New York springs forward at 02:00 on 8 March 2037: 01:30 is EST
        // (UTC-5), 03:30 EDT (UTC-4); 02:30 never happens and is read with
        // the offset before the change, the same instant as 03:30.
        (4, "America/New_York", "2037-03-08", "01:30", "2037-03-08T06:30:00Z"),
        (4, "America/New_York", "2037-03-08", "02:30", "2037-03-08T07:30:00Z"),
        (4, "America/New_York", "2037-03-08", "03:30", "2037-03-08T07:30:00Z"),
        (4, "America/New_York", "2036-12-24", "19:00", "2036-12-25T00:00:00Z"),
        // Without a zone of its own: the default, UTC.
        (5, "", "2036-12-24", "19:00", "2036-12-24T19:00:00Z"),
    ];
    for (restaurant, zone, date, time, starts) in cases {
        let set = put_restaurant(&app, restaurant, zone).await.unwrap();
        assert_eq!(set.time_zone, if zone.is_empty() { "UTC" } else { zone });
        let slot = pb::SlotRef { restaurant_id: restaurant, date: date.into(), time: time.into() };
        app.open(&[(slot.clone(), 10)]).await;
        let remaining = app.remaining(&slot).await;
        assert_eq!(remaining.starts_at.as_ref().map(instant), Some(at(starts)), "{zone} {date} {time}");
    }

    // Moving a restaurant to another zone moves its slots' starts.
    let slot = pb::SlotRef { restaurant_id: 1, date: "2036-12-24".into(), time: "19:00".into() };
    let moved = put_restaurant(&app, 1, "America/New_York").await.unwrap();
    assert_eq!(moved.slots_moved, 1);
    assert_eq!(app.remaining(&slot).await.starts_at.as_ref().map(instant), Some(at("2036-12-25T00:00:00Z")));

    // Back to the default zone (UTC): the start moves back.
    let cleared = put_restaurant(&app, 1, "").await.unwrap();
    assert_eq!((cleared.time_zone.as_str(), cleared.slots_moved), ("UTC", 1));
    assert_eq!(app.remaining(&slot).await.starts_at.as_ref().map(instant), Some(at("2036-12-24T19:00:00Z")));
    // The same zone again moves nothing.
    assert_eq!(put_restaurant(&app, 1, "").await.unwrap().slots_moved, 0);

    for bad in ["Mars/Olympus_Mons", "Asia/../etc", "not a zone", "posixrules"] {
        let refused = put_restaurant(&app, 6, bad).await.unwrap_err();
        assert_eq!(reason_of(&refused), (Code::InvalidArgument, "INVALID_FIELD".into()), "{bad}");
        assert_eq!(refused.get_details_bad_request().unwrap().field_violations[0].field, "time_zone");
    }
}

/// A slot whose local time has passed in its zone has started: booking it
/// is refused SLOT_STARTED, and opening it is refused. The same local time
/// in a zone where it is still ahead takes reservations.
#[tokio::test(flavor = "multi_thread")]
async fn a_slot_that_has_started_in_its_zone_is_refused() {
    let app = spawn_app().await;
    // Two minutes ago in Seoul (UTC+9, no daylight saving), as a local time:
    // as UTC it is still nine hours ahead.
    let seoul: NaiveDateTime = (Utc::now() + TimeDelta::hours(9) - TimeDelta::minutes(2)).naive_utc();
    let slot = pb::SlotRef {
        restaurant_id: 11,
        date: seoul.format("%Y-%m-%d").to_string(),
        time: seoul.format("%H:%M").to_string(),
    };
    app.open(&[(slot.clone(), 40)]).await;
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();

    let moved = put_restaurant(&app, 11, "Asia/Seoul").await.unwrap();
    assert_eq!(moved.slots_moved, 1);
    let refused = app.create(reserve("r-2", "bob", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::FailedPrecondition, "SLOT_STARTED".into()));
    assert_eq!(app.remaining(&slot).await.state(), SlotState::Started);
    // Loaded from the database after a loss, it has started all the same.
    app.flush_redis().await;
    let refused = app.create(reserve("r-3", "carol", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::FailedPrecondition, "SLOT_STARTED".into()));
    // Opening it (again, or anew) is refused.
    let other = pb::SlotRef { time: slot.time.clone(), date: slot.date.clone(), restaurant_id: 11 };
    let request = pb::OpenSlotsRequest {
        slots: vec![pb::SlotCapacity { slot: Some(other), capacity: 50, ..Default::default() }],
    };
    let refused = app.admin.clone().open_slots(request).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::InvalidArgument, "INVALID_FIELD".into()));
    assert_eq!(refused.get_details_bad_request().unwrap().field_violations[0].field, "slots[0].slot");
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4), "a refused OpenSlots changed the slot");
}

/// Restaurants without a zone start their slots in `--default-time-zone`;
/// a default the database does not know stops the start.
#[tokio::test(flavor = "multi_thread")]
async fn the_default_zone_applies_to_restaurants_without_one_and_must_exist() {
    let app = spawn_app_with(|c| c.default_time_zone = "Asia/Seoul".into()).await;
    let slot = slot_at("19:00");
    app.open(&[(slot.clone(), 10)]).await;
    let starts = app.remaining(&slot).await.starts_at.as_ref().map(instant);
    assert_eq!(starts, Some(DateTime::parse_from_rfc3339("2036-12-24T10:00:00Z").unwrap().with_timezone(&Utc)));
    assert_eq!(put_restaurant(&app, 67, "").await.unwrap().time_zone, "Asia/Seoul");

    let mut config: Config = app.config.clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.default_time_zone = "Mars/Olympus_Mons".into();
    let refused = Application::build(config).await.err().expect("an unknown default zone is refused");
    assert!(refused.to_string().contains("--default-time-zone"), "{refused}");
}
