//! Reservation events: written with their change (the outbox), numbered
//! after commit, replayed and followed by watchers with no gaps and no
//! repeats.

use std::{collections::HashMap, time::Duration};

use diesel::{QueryableByName, sql_query, sql_types::Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use slotgate::pb::{self, ReservationEventType as Kind};
use tokio::time::timeout;
use tonic::{Code, Streaming};

use crate::{
    bursts::clicks,
    helpers::{
        Rng, TestApp, burst, by_hand, generous_timeouts, model_seeds, reason_of, reserve, slot_at, spawn_app_by_hand,
        spawn_app_with,
    },
};

async fn watch(app: &TestApp, after: u64) -> Result<Streaming<pb::ReservationEvent>, tonic::Status> {
    let request = pb::WatchReservationEventsRequest { after_sequence: after, ..Default::default() };
    app.reservations.clone().watch_reservation_events(request).await.map(tonic::Response::into_inner)
}

/// The next `n` events of a stream (heartbeats skipped), waiting up to
/// `within` for them.
pub async fn next_events(
    stream: &mut Streaming<pb::ReservationEvent>,
    n: usize,
    within: Duration,
) -> Vec<pb::ReservationEvent> {
    let mut events = Vec::with_capacity(n);
    let collect = async {
        while events.len() < n {
            let event = stream.message().await.expect("the stream failed").expect("the stream ended");
            if event.r#type() != Kind::Heartbeat {
                events.push(event);
            }
        }
    };
    timeout(within, collect).await.unwrap_or_else(|_| panic!("{} of {n} events came", events.len()));
    events
}

/// (type, reservation id) of every event row, numbered or not.
async fn event_rows(app: &TestApp) -> Vec<(String, String)> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        kind: String,
        #[diesel(sql_type = Text)]
        id: String,
    }
    let rows: Vec<Row> = sql_query(
        "SELECT type AS kind, reservation_id::text AS id FROM event_inbox
         UNION ALL SELECT type, reservation_id::text FROM reservation_events",
    )
    .load(&mut app.database().await)
    .await
    .unwrap();
    rows.into_iter().map(|r| (r.kind, r.id)).collect()
}

fn kinds(events: &[pb::ReservationEvent]) -> Vec<(Kind, String)> {
    events.iter().map(|e| (e.r#type(), e.reservation.as_ref().unwrap().id.clone())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_2000_writes_exactly_ten_created_events_and_nothing_for_refusals() {
    let app = spawn_app_with(generous_timeouts).await;
    let slot = slot_at("19:00");
    app.open(&[(slot.clone(), 40)]).await;
    let mut stream = watch(&app, 0).await.unwrap();
    let results = burst(app.addr, clicks(std::slice::from_ref(&slot), 2_000, 3), 8).await;
    let mut winners: Vec<String> = results.iter().flatten().map(|r| r.id.clone()).collect();
    assert_eq!(winners.len(), 10);

    let events = next_events(&mut stream, 10, Duration::from_secs(30)).await;
    assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), (1..=10).collect::<Vec<u64>>());
    let mut created: Vec<String> = events.iter().map(|e| e.reservation.as_ref().unwrap().id.clone()).collect();
    assert!(events.iter().all(|e| e.r#type() == Kind::Created));
    assert!(events.iter().all(|e| e.reservation.as_ref().unwrap().status() == pb::ReservationStatus::PendingDeposit));
    created.sort();
    winners.sort();
    assert_eq!(created, winners);
    // Refusals wrote nothing: ten rows in all.
    assert_eq!(event_rows(&app).await.len(), 10);
}

/// Confirm, cancel and expiry each write one event (a repeated cancel and
/// a confirm of a confirmed reservation none), also with three replicas
/// sweeping expiries at once; a late confirm's expiry is an EXPIRED event.
#[tokio::test(flavor = "multi_thread")]
async fn each_change_writes_one_event_also_with_three_replicas_sweeping() {
    let app = spawn_app_by_hand().await;
    let (r2, r3) = (app.spawn_replica().await, app.spawn_replica().await);
    let slot = slot_at("19:30");
    app.open(&[(slot.clone(), 40)]).await;
    let mut made = Vec::new();
    for (i, user) in ["alice", "bob", "carol", "dave"].iter().enumerate() {
        made.push(app.create(reserve(&format!("r-{i}"), user, &slot, 2)).await.unwrap().id);
    }
    let confirm = |id: &str| pb::ConfirmReservationRequest { id: id.into() };
    let mut client = app.reservations.clone();
    client.confirm_reservation(confirm(&made[0])).await.unwrap();
    client.confirm_reservation(confirm(&made[0])).await.unwrap();
    app.cancel(&made[1], pb::CancelReason::Restaurant).await.unwrap();
    app.cancel(&made[1], pb::CancelReason::Restaurant).await.unwrap();

    // Past every deadline: carol's lapses to three sweepers at once; dave's
    // payment arrives too late.
    app.clock.advance(Duration::from_secs(3_600));
    let (a, b, c) = tokio::join!(app.booking.expire_due(), r2.booking.expire_due(), r3.booking.expire_due());
    assert_eq!(a.unwrap() + b.unwrap() + c.unwrap(), 2, "carol's and dave's lapsed once");
    let late = client.confirm_reservation(confirm(&made[3])).await.unwrap_err();
    assert_eq!(reason_of(&late).1, "DEPOSIT_EXPIRED");

    let mut stream = watch(&app, 0).await.unwrap();
    let events = next_events(&mut stream, 8, Duration::from_secs(10)).await;
    let mut by_reservation: HashMap<String, Vec<Kind>> = HashMap::new();
    for (kind, id) in kinds(&events) {
        by_reservation.entry(id).or_default().push(kind);
    }
    assert_eq!(by_reservation[&made[0]], [Kind::Created, Kind::Confirmed]);
    assert_eq!(by_reservation[&made[1]], [Kind::Created, Kind::Cancelled]);
    assert_eq!(by_reservation[&made[2]], [Kind::Created, Kind::Expired]);
    assert_eq!(by_reservation[&made[3]], [Kind::Created, Kind::Expired]);
    let cancelled = events.iter().find(|e| e.r#type() == Kind::Cancelled).unwrap().reservation.as_ref().unwrap();
    assert_eq!(cancelled.cancel_reason(), pb::CancelReason::Restaurant);
    let expired: Vec<&str> = events.iter().filter(|e| e.r#type() == Kind::Expired).map(|e| e.caller.as_str()).collect();
    assert!(expired.contains(&"slotgate"), "the sweeper's expiry names it: {expired:?}");
    // The reservation in each event is as that change left it.
    let created = events.iter().find(|e| e.r#type() == Kind::Created).unwrap();
    assert_eq!(created.reservation.as_ref().unwrap().status(), pb::ReservationStatus::PendingDeposit);
    assert_eq!(event_rows(&app).await.len(), 8, "nothing else was written");
}

/// Concurrent writers whose transactions take random, overlapping times to
/// commit (so rows commit out of the order they were written), and a
/// watcher that drops its stream at random points and resumes from its last
/// sequence: it gets every event exactly once, numbered 1, 2, 3... with no
/// gap.
#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_resuming_at_random_points_gets_every_event_once_in_order() {
    const WRITERS: usize = 50;
    const PER_WRITER: usize = 8;
    let app = spawn_app_by_hand().await;
    let slot = slot_at("20:00");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 2)).await.unwrap();
    let url = app.config.database.database_url.clone();
    let seed = model_seeds("SLOTGATE_EVENTS_SEED", 1)[0];

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, id) = (url.clone(), booked.id.clone());
            tokio::spawn(async move {
                let mut rng = Rng(seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
                for _ in 0..PER_WRITER {
                    let sleep_ms = rng.below(60);
                    conn.batch_execute(&format!(
                        "BEGIN;
                         INSERT INTO event_inbox (type, reservation_id, restaurant_id, user_id, status)
                           VALUES ('CONFIRMED', '{id}', 67, 'alice', 'CONFIRMED');
                         SELECT pg_sleep({});
                         COMMIT;",
                        sleep_ms as f64 / 1000.0
                    ))
                    .await
                    .unwrap();
                }
            })
        })
        .collect();

    let total = 1 + WRITERS * PER_WRITER;
    let mut rng = Rng(seed);
    let mut received: Vec<u64> = Vec::with_capacity(total);
    let mut reconnects = 0;
    while received.len() < total {
        let last = received.last().copied().unwrap_or(0);
        let mut stream = watch(&app, last).await.unwrap();
        // Read a random number of events, then drop the stream.
        let take = 1 + rng.below(40) as usize;
        let got = next_events(&mut stream, take.min(total - received.len()), Duration::from_secs(30)).await;
        received.extend(got.iter().map(|e| e.sequence));
        reconnects += 1;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(reconnects > 5, "only {reconnects} reconnects");
    assert_eq!(received, (1..=total as u64).collect::<Vec<_>>(), "gaps or repeats");
    // And nothing more came.
    let mut stream = watch(&app, total as u64).await.unwrap();
    let more = timeout(Duration::from_millis(500), async {
        loop {
            let e = stream.message().await.unwrap().unwrap();
            if e.r#type() != Kind::Heartbeat {
                return e;
            }
        }
    })
    .await;
    assert!(more.is_err(), "an event past the last: {more:?}");
}

/// A client that stops reading is ended with WATCHER_TOO_SLOW, not
/// buffered for without bound; it resumes from its last sequence.
#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_that_stops_reading_is_ended_and_can_resume() {
    let app = spawn_app_with(|c| {
        by_hand(c);
        c.watch_buffer = 16;
    })
    .await;
    let slot = slot_at("20:30");
    app.open(&[(slot.clone(), 40)]).await;
    let booked = app.create(reserve("r-1", "alice", &slot, 2)).await.unwrap();
    let mut stream = watch(&app, 0).await.unwrap();
    assert_eq!(next_events(&mut stream, 1, Duration::from_secs(10)).await[0].sequence, 1);
    // Far more events than the client's windows and the buffers hold.
    app.database()
        .await
        .batch_execute(&format!(
            "INSERT INTO event_inbox (type, reservation_id, restaurant_id, user_id, status)
             SELECT 'CONFIRMED', '{}', 67, 'alice', 'CONFIRMED' FROM generate_series(1, 20000)",
            booked.id
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut last = 1;
    let ended = timeout(Duration::from_secs(30), async {
        loop {
            match stream.message().await {
                Ok(Some(e)) => last = e.sequence.max(last),
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the slow watcher was not ended");
    assert_eq!(reason_of(&ended), (Code::ResourceExhausted, "WATCHER_TOO_SLOW".into()));
    let resumed = next_events(&mut watch(&app, last).await.unwrap(), 10, Duration::from_secs(10)).await;
    assert_eq!(resumed[0].sequence, last + 1);
}

/// Idle streams get heartbeats; events past the retention are pruned, and
/// a cursor before them is told EVENTS_COMPACTED.
#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_keep_idle_streams_alive_and_pruned_cursors_are_refused() {
    let app = spawn_app_with(|c| {
        by_hand(c);
        c.watch_heartbeat = Duration::from_millis(200);
        c.events_retention = Duration::from_secs(1);
    })
    .await;
    let slot = slot_at("21:00");
    app.open(&[(slot.clone(), 40)]).await;
    for i in 0..3 {
        app.create(reserve(&format!("r-{i}"), &format!("user-{i}"), &slot, 2)).await.unwrap();
    }
    let mut stream = watch(&app, 0).await.unwrap();
    let _ = next_events(&mut stream, 3, Duration::from_secs(10)).await;
    let beat = timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((beat.r#type(), beat.sequence), (Kind::Heartbeat, 3));
    assert!(beat.reservation.is_none());

    // Pruned once older than a second.
    #[derive(QueryableByName)]
    struct Log {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        pruned_through: i64,
    }
    let mut db = app.database().await;
    let mut pruned = 0;
    for _ in 0..100 {
        let log: Log = sql_query("SELECT pruned_through FROM event_log").get_result(&mut db).await.unwrap();
        pruned = log.pruned_through;
        if pruned == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pruned, 3);
    let refused = watch(&app, 1).await.unwrap_err();
    assert_eq!(reason_of(&refused), (Code::FailedPrecondition, "EVENTS_COMPACTED".into()));
    // From the last pruned on, or from the start, is fine.
    assert!(watch(&app, 3).await.is_ok());
    assert!(watch(&app, 0).await.is_ok());
}

/// A stream filtered by restaurant or user gets only those events, and its
/// heartbeats keep coming while other restaurants' events go by; a cursor
/// past the last event is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_filtered_stream_gets_its_events_and_its_heartbeats_while_others_go_by() {
    let app = spawn_app_with(|c| {
        by_hand(c);
        c.watch_heartbeat = Duration::from_millis(300);
    })
    .await;
    let (here, there) = (slot_at("18:00"), pb::SlotRef { restaurant_id: 68, ..slot_at("18:00") });
    app.open(&[(here.clone(), 400), (there.clone(), 400)]).await;
    app.create(reserve("a-0", "alice", &here, 1)).await.unwrap();
    app.create(reserve("b-0", "bob", &there, 1)).await.unwrap();
    let request = pb::WatchReservationEventsRequest { restaurant_id: 68, ..Default::default() };
    let mut by_restaurant = app.reservations.clone().watch_reservation_events(request).await.unwrap().into_inner();
    let request = pb::WatchReservationEventsRequest { user_id: "alice".into(), ..Default::default() };
    let mut by_user = app.reservations.clone().watch_reservation_events(request).await.unwrap().into_inner();
    let first = next_events(&mut by_restaurant, 1, Duration::from_secs(10)).await;
    assert_eq!(first[0].reservation.as_ref().unwrap().user_id, "bob");
    assert_eq!(next_events(&mut by_user, 1, Duration::from_secs(10)).await[0].sequence, 1);

    // Restaurant 67's events every 50 ms for two seconds: the restaurant 68
    // stream passes them by, and still gets heartbeats.
    let writer = {
        let (addr, here) = (app.addr, here.clone());
        tokio::spawn(async move {
            for i in 1..40 {
                let request = reserve(&format!("c-{i}"), &format!("carol-{i}"), &here, 1);
                burst(addr, vec![request], 1).await.pop().unwrap().unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let beat = timeout(Duration::from_secs(2), async {
        loop {
            let e = by_restaurant.message().await.unwrap().unwrap();
            assert_eq!(e.r#type(), Kind::Heartbeat, "another restaurant's event: {e:?}");
            if e.sequence > 2 {
                return e;
            }
        }
    })
    .await
    .expect("no heartbeat while other events went by");
    assert!(beat.reservation.is_none());
    writer.await.unwrap();

    let past = watch(&app, 1_000_000).await.unwrap_err();
    assert_eq!(reason_of(&past), (Code::InvalidArgument, "INVALID_FIELD".into()));
}

/// Pruning takes only a prefix of the log: an event numbered after a
/// recent one, whose transaction started earlier, waits for it, so no event
/// is left behind the pruned bound, where no cursor could reach it.
#[tokio::test(flavor = "multi_thread")]
async fn pruning_takes_only_a_prefix_of_the_log() {
    let app = spawn_app_by_hand().await;
    let mut db = app.database().await;
    db.batch_execute(
        "INSERT INTO reservation_events
           (sequence, type, reservation_id, restaurant_id, user_id, status, occurred_at, caller)
         VALUES (1, 'CREATED', gen_random_uuid(), 67, 'u', 'PENDING_DEPOSIT', now(), ''),
                (2, 'CREATED', gen_random_uuid(), 67, 'u', 'PENDING_DEPOSIT', now() - interval '1 hour', ''),
                (3, 'CREATED', gen_random_uuid(), 67, 'u', 'PENDING_DEPOSIT', now() - interval '1 hour', '');
         UPDATE event_log SET last_sequence = 3",
    )
    .await
    .unwrap();
    let before = chrono::Utc::now() - chrono::TimeDelta::minutes(1);
    assert_eq!(slotgate::store::events::prune(&mut db, before, 100).await.unwrap(), 0, "2 and 3 wait for 1");
    db.batch_execute("UPDATE reservation_events SET occurred_at = now() - interval '2 hours' WHERE sequence = 1")
        .await
        .unwrap();
    assert_eq!(slotgate::store::events::prune(&mut db, before, 2).await.unwrap(), 2, "a batch of two");
    assert_eq!(slotgate::store::events::bounds(&mut db).await.unwrap().pruned_through, 2);
    assert_eq!(slotgate::store::events::prune(&mut db, before, 100).await.unwrap(), 1);
    assert_eq!(slotgate::store::events::bounds(&mut db).await.unwrap().pruned_through, 3);
}
