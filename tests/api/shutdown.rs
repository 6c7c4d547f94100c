//! SIGTERM in the middle of a burst: every client answered, every admitted
//! request either booked or its seats back, exit 0.

use std::time::Duration;

use slotgate::pb::reservations_client::ReservationsClient;
use tonic::Code;

use crate::{
    fault_kit::{FaultProxy, SlotgateProcess},
    helpers::{Patience, TestApp, burst, connect, eventually, reason_of, reserve, slot_at, spawn_app_by_hand, tally},
};

/// A slotgate process on `app`'s database and Redis namespace, with its
/// background work off and `extra` settings, reaching PostgreSQL through a
/// proxy that adds `delay` to every exchange.
async fn process_behind_slow_database(
    app: &TestApp,
    delay: Duration,
    extra: &[(&str, &str)],
) -> (FaultProxy, SlotgateProcess) {
    let mut env = app.env_by_hand();
    assert_eq!(env[0].0, "DATABASE_URL");
    let url = env[0].1.clone();
    let (prefix, database) = url.rsplit_once('/').unwrap();
    let proxy = FaultProxy::start(prefix.rsplit_once('@').unwrap().1.parse().unwrap()).await;
    proxy.set_delay(delay);
    env[0].1 = format!("postgres://postgres@{}/{database}", proxy.addr);
    env.extend(extra.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())));
    let server = SlotgateProcess::start(env).await;
    (proxy, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_burst_answers_everyone_loses_nothing_and_exits_zero() {
    // The in-process app only inspects; its background work is off, so
    // nothing here cleans up after the process being stopped.
    let app = spawn_app_by_hand().await;
    let slot = slot_at("22:00");
    app.open(&[(slot.clone(), 40)]).await;
    // The process reaches PostgreSQL through a proxy that slows every
    // exchange down, so winners are mid-transaction, holds in flight, when
    // the signal comes.
    // Exact outcomes, not speed: the tail of the burst waits rather than
    // being refused UNAVAILABLE or DEADLINE_EXCEEDED on a loaded machine.
    let settings = [
        ("SLOTGATE_SHUTDOWN_GRACE_MS", "10000"),
        ("SLOTGATE_POOL_TIMEOUT_MS", "60000"),
        ("SLOTGATE_REDIS_COMMAND_TIMEOUT_MS", "60000"),
        ("SLOTGATE_REDIS_CONNECT_TIMEOUT_MS", "60000"),
        ("SLOTGATE_REQUEST_TIMEOUT_MS", "60000"),
        // The shortest lease these timeouts allow (2 x (60 + 60 + 5) s).
        ("SLOTGATE_HOLD_LEASE_MS", "250000"),
    ];
    let (_proxy, mut server) = process_behind_slow_database(&app, Duration::from_millis(30), &settings).await;

    let requests: Vec<_> = (0..2_000)
        .flat_map(|u| (0..3).map(move |c| (u, c)))
        .map(|(u, c)| reserve(&format!("st-u{u}-c{c}"), &format!("st-user-{u}"), &slot, 4))
        .collect();
    let addr = server.addr;
    let burst = tokio::spawn({
        let requests = requests.clone();
        async move { burst(addr, requests, 4).await }
    });
    // Mid-burst: as soon as anything has been booked.
    let soon = Patience::default().every(Duration::from_millis(2));
    eventually(soon, async || app.db_slot(&slot).await.1, |reserved| *reserved > 0).await;
    server.signal_terminate();
    let results = burst.await.unwrap();
    assert_eq!(server.wait_exit(Duration::from_secs(20)).await, Some(0), "exit code after SIGTERM");

    // Every client got an answer: slotgate's decision, or, for calls still
    // queued in the client when the server sent GOAWAY, an immediate
    // transport refusal with no decision behind it (tonic's client reports
    // those as UNAVAILABLE, INTERNAL "h2 protocol error", CANCELLED or
    // UNKNOWN, without an ErrorInfo). None of those was booked: see the count
    // of OK answers against the seats reserved below.
    let outcomes = tally(&results);
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        let (code, reason) = reason_of(status);
        let decided = matches!(
            (code, reason.as_str()),
            (Code::AlreadyExists, "DUPLICATE") | (Code::FailedPrecondition, "SOLD_OUT")
        );
        let refused_by_transport =
            reason.is_empty() && matches!(code, Code::Unavailable | Code::Internal | Code::Cancelled | Code::Unknown);
        assert!(decided || refused_by_transport, "unexpected {code:?}/{reason} {:?}: {outcomes:?}", status.message());
    }

    // Nothing admitted was lost or left half-done: the process finalized or
    // released every hold before exiting, so the counter already matches
    // the database with no reaper having run.
    let (capacity, reserved, active) = app.db_slot(&slot).await;
    assert_eq!(i64::from(reserved), active);
    assert!(reserved <= capacity);
    assert_eq!(app.holds(&slot).await, 0, "holds left behind");
    assert_eq!(app.remaining(&slot).await.remaining, capacity - reserved);
    // Every booking the clients were told about exists.
    let booked = results.iter().flatten().count() as i32;
    assert_eq!(booked * 4, reserved, "OK answers vs seats reserved: {outcomes:?}");
    eprintln!(
        "shutdown report: SIGTERM mid-burst, holds in flight: {outcomes:?}; {reserved} seats booked; no hold left; exit 0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_waits_for_admitted_work_whose_callers_already_gave_up() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("22:30");
    app.open(&[(slot.clone(), 40)]).await;
    // Every winner's transaction now takes far longer than its caller waits.
    let (_proxy, mut server) = process_behind_slow_database(&app, Duration::from_millis(60), &[]).await;

    let client = ReservationsClient::new(connect(server.addr).await);
    let calls: Vec<_> = (0..8)
        .map(|u| {
            let mut client = client.clone();
            let mut request = tonic::Request::new(reserve(&format!("gu-{u}"), &format!("gone-{u}"), &slot, 4));
            request.set_timeout(Duration::from_millis(100));
            tokio::spawn(async move { client.create_reservation(request).await })
        })
        .collect();
    for call in calls {
        let status = call.await.unwrap().unwrap_err();
        assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
    }
    // Every caller is gone; their admitted work is still running.
    server.signal_terminate();
    assert_eq!(server.wait_exit(Duration::from_secs(30)).await, Some(0));

    let (capacity, reserved, active) = app.db_slot(&slot).await;
    assert_eq!(i64::from(reserved), active);
    assert_eq!(app.holds(&slot).await, 0, "the process exited with admitted work unfinished");
    assert_eq!(app.remaining(&slot).await.remaining, capacity - reserved);
    assert_eq!(reserved, 32, "the work went on without its callers and committed");
}
