//! Dependencies failing in the middle of a burst: nothing overbooked, nothing
//! half-written, every client answered, and the gate consistent with the
//! database again once leases and a reconcile pass are done.
//!
//! Each scenario prints one `fault report` line (run with `--nocapture` to
//! see them): how the burst's calls ended, how many seats the counter showed
//! unavailable right after the burst, how long until it matched the database
//! again, and what the reaper and the reconciler did.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use diesel::{QueryableByName, sql_query, sql_types::BigInt};
use diesel_async::RunQueryDsl;
use slotgate::{
    config::Config,
    domain::{Limits, NewReservation},
    gate::{Gate, GateError, GateSettings, Release, attempt_nonce},
    links::{RedisLink, RedisSettings},
    metrics::Metrics,
    pb,
    pools::PoolSettings,
};
use tokio::sync::Notify;
use tonic::{Code, Status};

use crate::{
    fault_kit::{FaultProxy, PrivatePostgres, PrivateRedis, SlotgateProcess},
    helpers::{
        Patience, TestApp, burst, by_hand, eventually, reason_of, release_together, reserve, shortest_lease, slot_at,
        spawn_app_with, tally,
    },
};

/// Seats left in a slot's gate counter, read straight from Redis.
async fn counter_left(app: &TestApp, slot: &pb::SlotRef) -> i32 {
    redis::cmd("HGET").arg(app.key(slot, "seats")).arg("left").query_async(&mut app.redis().await).await.unwrap()
}

/// A gate like the one `app` runs, on its Redis, namespace and deployment,
/// for tests that make the gate's calls themselves.
pub async fn the_apps_gate(app: &TestApp) -> Gate {
    #[derive(QueryableByName)]
    struct Deployment {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    let deployment: Deployment = sql_query("SELECT deployment_id::text AS id FROM deployment")
        .get_result(&mut app.database().await)
        .await
        .expect("the app recorded its deployment");
    let link = RedisLink::new(RedisSettings::url(&app.redis_url)).unwrap();
    let settings = GateSettings {
        pool: PoolSettings { size: 2, timeout: Duration::from_secs(2) },
        lease: Duration::from_secs(30),
        waitlist_limit: 200,
    };
    Gate::new(Arc::new(link), &app.namespace, &deployment.id, settings, Metrics::default().redis_pool_wait)
}

/// A client's patience: a call that has no answer by then is a hang.
const CLIENT_DEADLINE: Duration = Duration::from_secs(20);

/// An app with short leases and frequent background passes, so a scenario
/// heals within seconds instead of the production defaults' minutes; `tweak`
/// points it at the dependency to break.
async fn spawn_healing_app(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(|c| {
        tweak(c);
        // The server's own deadline is past the client's, so the client's
        // patience is what counts.
        c.request_timeout = 2 * CLIENT_DEADLINE;
        c.redis_command_timeout = c.redis_command_timeout.min(Duration::from_millis(500));
        c.db_transaction_timeout = Duration::from_millis(1_000);
        shortest_lease(c);
        c.reap_interval = Duration::from_millis(100);
        c.reconcile_interval = Duration::from_millis(200);
    })
    .await
}

/// duplicate-2000 (2,000 users, three clicks each, parties of four) into
/// `slot`, with request ids tagged `tag`.
fn duplicate_2000(slot: &pb::SlotRef, tag: &str) -> Vec<pb::CreateReservationRequest> {
    (0..2_000)
        .flat_map(|u| (0..3).map(move |c| (u, c)))
        .map(|(u, c)| reserve(&format!("{tag}-u{u}-c{c}"), &format!("{tag}-user-{u}"), slot, 4))
        .collect()
}

/// Fires every request at once over a few connections, each call with the
/// client deadline, and runs `fault` once `after` answers have come back.
/// Returns the answers (in request order) and when the fault began.
async fn burst_with_fault(
    addr: SocketAddr,
    requests: Vec<pb::CreateReservationRequest>,
    after: usize,
    fault: impl Future<Output = ()>,
) -> (Vec<Result<pb::Reservation, Status>>, Instant) {
    let answered = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let calls = release_together(addr, 4, requests, |mut client, request| {
        let (answered, enough) = (Arc::clone(&answered), Arc::clone(&enough));
        async move {
            let mut request = tonic::Request::new(request);
            request.set_timeout(CLIENT_DEADLINE);
            let result = client.create_reservation(request).await.map(tonic::Response::into_inner);
            if answered.fetch_add(1, Ordering::Relaxed) + 1 == after {
                enough.notify_one();
            }
            result
        }
    })
    .await;
    enough.notified().await;
    let fault_at = Instant::now();
    fault.await;
    (calls.results().await, fault_at)
}

/// Whether the fault kills the server the clients call: calls it was
/// serving then end in transport errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    KeptRunning,
    Killed,
}

/// One fault scenario: duplicate-2000 into a fresh 40-seat slot,
/// sent to `addr`, with the fault run once `after` answers are back, then
/// every check of [`assert_recovers`].
struct Scenario<'a> {
    /// Names the scenario in failures and its report.
    name: &'a str,
    /// Tags its request ids.
    tag: &'a str,
    after: usize,
    server: Server,
}

impl Scenario<'_> {
    async fn run(&self, app: &TestApp, addr: SocketAddr, fault: impl Future<Output = ()>) {
        let slot = slot_at("11:00");
        app.open(&[(slot.clone(), 40)]).await;
        let requests = duplicate_2000(&slot, self.tag);
        let (results, fault_at) = burst_with_fault(addr, requests.clone(), self.after, fault).await;
        assert_recovers(self, app, &slot, &requests, &results, fault_at).await;
    }
}

/// Asserts the invariants after a fault, waits for the gate to match the
/// database again, refills the slot, and prints the scenario's report.
async fn assert_recovers(
    scenario: &Scenario<'_>,
    app: &TestApp,
    slot: &pb::SlotRef,
    requests: &[pb::CreateReservationRequest],
    results: &[Result<pb::Reservation, Status>],
    fault_at: Instant,
) {
    let name = scenario.name;
    // The counter the moment the burst is over, against the database.
    let burst_over = Instant::now();
    let right_after = app.remaining(slot).await.remaining;
    let (_, reserved_after, _) = app.db_slot(slot).await;

    // Every call was answered, before its deadline, with an answer that
    // means something. A server killed mid-call answers its clients with a
    // transport error; nothing else may end INTERNAL or UNKNOWN.
    let outcomes = tally(results);
    for status in results.iter().filter_map(|r| r.as_ref().err()) {
        let (code, reason) = reason_of(status);
        let expected = matches!(
            (code, reason.as_str()),
            (Code::AlreadyExists, "DUPLICATE")
                | (Code::FailedPrecondition, "SOLD_OUT")
                | (Code::Unavailable, "REDIS_UNAVAILABLE" | "DATABASE_UNAVAILABLE")
                | (Code::Aborted, "REQUEST_IN_PROGRESS")
        ) || (scenario.server == Server::Killed && reason.is_empty() && code != Code::DeadlineExceeded);
        assert!(expected, "{name}: unexpected answer {code:?}/{reason} {status:?}; all: {outcomes:?}");
    }

    // The database: within capacity, reserved = active seats, one active
    // reservation per user.
    let (capacity, reserved, active) = app.db_slot(slot).await;
    assert!(reserved <= capacity, "{name}: overbooked");
    assert_eq!(i64::from(reserved), active, "{name}: reserved vs active reservations");
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let doubled: Count = sql_query(
        "SELECT count(*) AS n FROM (SELECT slot_id, user_id FROM reservations
         WHERE status IN ('PENDING_DEPOSIT', 'CONFIRMED') GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    .get_result(&mut app.database().await)
    .await
    .unwrap();
    assert_eq!(doubled.n, 0, "{name}: a user holds two reservations");

    // Nothing half-written: every OK is a reservation that exists, and every
    // reservation that exists (including commits whose answer was lost) is
    // what a replay of its request id returns.
    let by_request: HashMap<&str, &pb::CreateReservationRequest> =
        requests.iter().map(|r| (r.request_id.as_str(), r)).collect();
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        request_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    let rows: Vec<Row> = sql_query(
        "SELECT request_id, id::text AS id FROM reservations WHERE status IN ('PENDING_DEPOSIT', 'CONFIRMED')",
    )
    .load(&mut app.database().await)
    .await
    .unwrap();
    let committed: HashMap<String, String> = rows.into_iter().map(|r| (r.id, r.request_id)).collect();
    for booked in results.iter().flatten() {
        assert!(committed.contains_key(&booked.id), "{name}: an OK answer with no reservation behind it");
    }
    for (id, request_id) in &committed {
        match app.create(by_request[request_id.as_str()].clone()).await {
            Ok(replayed) => assert_eq!(&replayed.id, id, "{name}: replay of {request_id}"),
            Err(e) => panic!("{name}: replay of {request_id} failed: {e:?}"),
        }
    }

    // Events: every reservation that committed has exactly one CREATED
    // event (and one for its status, if it moved on), and no event speaks
    // of a change that did not commit.
    #[derive(QueryableByName)]
    struct EventAudit {
        #[diesel(sql_type = BigInt)]
        wrong: i64,
        #[diesel(sql_type = BigInt)]
        orphans: i64,
    }
    let audit: EventAudit = sql_query(
        "WITH e AS (SELECT type, reservation_id FROM event_inbox
                    UNION ALL SELECT type, reservation_id FROM reservation_events)
         SELECT (SELECT count(*) FROM reservations r
                 WHERE (SELECT count(*) FROM e WHERE e.reservation_id = r.id AND e.type = 'CREATED') <> 1
                    OR (r.status <> 'PENDING_DEPOSIT'
                        AND (SELECT count(*) FROM e WHERE e.reservation_id = r.id AND e.type = r.status) <> 1)) AS wrong,
                (SELECT count(*) FROM e WHERE NOT EXISTS (SELECT 1 FROM reservations r WHERE r.id = e.reservation_id))
                  AS orphans",
    )
    .get_result(&mut app.database().await)
    .await
    .unwrap();
    assert_eq!((audit.wrong, audit.orphans), (0, 0), "{name}: events and committed changes disagree");

    // The gate: off right after the burst by some seats, then equal to the
    // database again once leases ran out and the reaper and reconciler
    // passed (the bound is patience, not a speed claim).
    let expected = capacity - reserved;
    let patience = Patience::up_to(Duration::from_secs(60).saturating_sub(fault_at.elapsed()));
    let remaining = eventually(
        patience.every(Duration::from_millis(50)),
        async || app.remaining(slot).await.remaining,
        |r| *r == expected,
    )
    .await;
    assert_eq!(remaining, expected, "{name}: the counter never came back to capacity - reserved");
    let healed_after = burst_over.elapsed();

    // No seat is lost for good: fresh users fill the slot exactly.
    let refill: Vec<_> =
        (0..200).map(|u| reserve(&format!("{name}-refill-{u}"), &format!("{name}-refill-{u}"), slot, 4)).collect();
    let mut refilled = burst(app.addr, refill.clone(), 2).await;
    // A caller retries what was refused for a passing reason (this test's
    // short timeouts on a loaded machine); a retry gets the true answer.
    for (request, answer) in refill.iter().zip(&mut refilled) {
        for _ in 0..20 {
            if !matches!(answer, Err(s) if s.code() == Code::Unavailable) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            *answer = app.create(request.clone()).await;
        }
    }
    let refill_winners = refilled.iter().filter(|r| r.is_ok()).count();
    assert_eq!(refill_winners as i32, expected / 4, "{name}: refill winners; answers {:?}", tally(&refilled));
    assert_eq!(app.db_slot(slot).await.1, capacity - capacity % 4, "{name}: slot full after the refill");
    assert_eq!(app.remaining(slot).await.remaining, capacity % 4);

    let c = &app.metrics;
    eprintln!(
        "fault report: {name}: burst took {:.1} s from the fault; answers {:?}; committed {reserved} seats; when the \
         burst ended the counter showed {right_after} seats left where the database had {}; it matched the database \
         {:.1} s later; reaper finalized {} / released {} holds, reconciler corrected {} counters; refill booked \
         {refill_winners} more",
        (burst_over - fault_at).as_secs_f64(),
        outcomes.iter().collect::<BTreeMap<_, _>>(),
        capacity - reserved_after,
        healed_after.as_secs_f64(),
        Metrics::read(&c.holds_reaped_finalized),
        Metrics::read(&c.holds_reaped_released),
        Metrics::read(&c.counters_corrected),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_mid_burst_and_restarted_empty() {
    let mut redis = PrivateRedis::start().await;
    let app = spawn_healing_app(|c| c.redis_url = redis.url.clone()).await;
    let scenario = Scenario { name: "redis kill -9", tag: "rk", after: 300, server: Server::KeptRunning };
    let fault = async {
        redis.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis.restart().await;
    };
    scenario.run(&app, app.addr, fault).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_flushed_mid_burst() {
    let redis = PrivateRedis::start().await;
    let app = spawn_healing_app(|c| c.redis_url = redis.url.clone()).await;
    let scenario = Scenario { name: "redis FLUSHALL", tag: "rf", after: 300, server: Server::KeptRunning };
    let mut conn = redis.connection().await;
    let fault = async {
        redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.unwrap();
    };
    scenario.run(&app, app.addr, fault).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_and_restarted_mid_burst() {
    let pg = PrivatePostgres::start().await;
    let app = spawn_healing_app(|c| c.database.database_url = pg.url.clone()).await;
    // Early in the burst, so winners are still committing when it goes.
    let scenario = Scenario { name: "postgres stop/start", tag: "pg", after: 5, server: Server::KeptRunning };
    let fault = async {
        pg.stop();
        tokio::time::sleep(Duration::from_millis(300)).await;
        pg.restart().await;
    };
    scenario.run(&app, app.addr, fault).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slotgate_killed_mid_burst_and_started_again() {
    let app = spawn_healing_app(|_| {}).await;
    let mut env = app.env();
    let millis = |d: Duration| d.as_millis().to_string();
    env.extend([
        ("SLOTGATE_HOLD_LEASE_MS".to_owned(), millis(app.config.hold_lease)),
        ("SLOTGATE_POOL_TIMEOUT_MS".to_owned(), millis(app.config.pool_timeout)),
        ("SLOTGATE_REDIS_COMMAND_TIMEOUT_MS".to_owned(), millis(app.config.redis_command_timeout)),
        ("SLOTGATE_DB_TRANSACTION_TIMEOUT_MS".to_owned(), millis(app.config.db_transaction_timeout)),
    ]);
    let mut server = SlotgateProcess::start(env).await;
    let scenario = Scenario { name: "slotgate kill -9", tag: "sk", after: 5, server: Server::Killed };
    let addr = server.addr;
    let fault = async {
        server.kill();
        server.restart().await;
    };
    scenario.run(&app, addr, fault).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_to_postgres_slows_down_then_cuts_every_connection_mid_transaction() {
    let pg = PrivatePostgres::start().await;
    let proxy = FaultProxy::start(pg.addr()).await;
    let app =
        spawn_healing_app(|c| c.database.database_url = format!("postgres://postgres@{}/postgres", proxy.addr)).await;
    let scenario = Scenario { name: "postgres proxy delay+cut", tag: "px", after: 5, server: Server::KeptRunning };
    let fault = proxy.slow_down_then_cut(Duration::from_millis(20), Duration::from_millis(100));
    scenario.run(&app, app.addr, fault).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_to_redis_slows_replies_past_their_timeout_then_cuts_connections() {
    let redis = PrivateRedis::start().await;
    let proxy = FaultProxy::start(redis.addr()).await;
    let app = spawn_healing_app(|c| {
        c.redis_url = format!("redis://{}", proxy.addr);
        c.redis_command_timeout = Duration::from_millis(300);
    })
    .await;
    let scenario = Scenario { name: "redis proxy delay+cut", tag: "rp", after: 5, server: Server::KeptRunning };
    let fault = proxy.slow_down_then_cut(Duration::from_millis(400), Duration::from_millis(500));
    scenario.run(&app, app.addr, fault).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acquire_whose_reply_is_lost_takes_no_seats_for_good() {
    let redis = PrivateRedis::start().await;
    let app = spawn_app_with(|c| {
        c.redis_url = redis.url.clone();
        c.redis_command_timeout = Duration::from_millis(100);
        // The undo of the lost acquire normally gives the seats back at
        // once; when Redis is too busy to take the undo in time either (a
        // loaded machine), the reaper does once the hold's lease is over.
        // It runs by hand below: a background pass during the stall would
        // hold the pooled connection the request needs.
        c.pool_timeout = Duration::from_millis(200);
        c.db_transaction_timeout = Duration::from_millis(500);
        shortest_lease(c);
        by_hand(c);
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
    let stalled = redis.stall(Duration::from_millis(600)).await;
    let status = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap_err();
    assert_eq!(reason_of(&status), (Code::Unavailable, "REDIS_UNAVAILABLE".into()));
    stalled.await.unwrap();

    let read = async || {
        app.booking.reap().await.unwrap();
        (app.holds(&slot).await, counter_left(&app, &slot).await)
    };
    let state = eventually(Patience::default(), read, |s| *s == (0, 36)).await;
    assert_eq!(state, (0, 36), "(holds, seats left) once Redis caught up");
    assert_eq!(app.db_slot(&slot).await, (40, 4, 4));
    // Nothing of the lost attempt stands in the user's way.
    app.create(reserve("r-2", "alice", &slot, 4)).await.unwrap();
}

/// The other order of the race above, made deterministic: the undo of a
/// lost acquire reaches Redis first (the acquire was still queued behind a
/// stall, or on a connection Redis had not read yet), then the acquire
/// runs. It must take nothing, and a retry of the request is unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_acquire_that_runs_after_its_undo_takes_nothing() {
    let app = spawn_app_with(|_| {}).await;
    let slot = slot_at("15:00");
    app.open(&[(slot.clone(), 40)]).await;
    app.create(reserve("r-0", "bob", &slot, 4)).await.unwrap();

    // The same gate the server runs, on the same namespace: the calls a
    // request makes, in the order the race can put them.
    let gate = the_apps_gate(&app).await;
    let limits = Limits { max_party_size: 20, max_menu_items: 50 };
    let new = NewReservation::parse(&reserve("r-1", "alice", &slot, 4), limits).unwrap();
    let (id, fingerprint, nonce) = (new.reservation_id(), new.fingerprint(), attempt_nonce());

    assert_eq!(gate.release(&new.slot, id, &new.user_id, nonce, Release::Void).await.unwrap(), 0, "nothing held yet");
    let late = gate.acquire(&new.slot, id, &new.user_id, 4, fingerprint, nonce).await;
    assert!(matches!(late, Err(GateError::Unavailable(_))), "{late:?}");

    let state = (app.holds(&slot).await, counter_left(&app, &slot).await);
    assert_eq!(state, (0, 36), "(holds, seats left) after the late acquire");

    // The client's retry is a new attempt: admitted as any other.
    app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    assert_eq!(app.remaining(&slot).await.remaining, 32);
    assert_eq!(app.db_slot(&slot).await, (40, 8, 8));
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

#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_deadline_passes_after_admission_still_commits_and_replays() {
    let pg = PrivatePostgres::start().await;
    let proxy = FaultProxy::start(pg.addr()).await;
    let app =
        spawn_app_with(|c| c.database.database_url = format!("postgres://postgres@{}/postgres", proxy.addr)).await;
    let slot = slot_at("12:00");
    app.open(&[(slot.clone(), 40)]).await;

    // The database answers slowly; the client gives up long before.
    proxy.set_delay(Duration::from_millis(200));
    let mut request = tonic::Request::new(reserve("r-1", "alice", &slot, 4));
    request.set_timeout(Duration::from_millis(50));
    let status = app.reservations.clone().create_reservation(request).await.unwrap_err();
    assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
    proxy.set_delay(Duration::ZERO);

    // The admitted work went on without the client and committed.
    let seats = eventually(Patience::default(), async || app.db_slot(&slot).await, |s| s.1 == 4).await;
    assert_eq!(seats, (40, 4, 4));
    let replayed = app.create(reserve("r-1", "alice", &slot, 4)).await.unwrap();
    assert_eq!(replayed.user_id, "alice");
    assert_eq!(app.remaining(&slot).await.remaining, 36);
    assert_eq!(app.holds(&slot).await, 0, "the hold was finalized");
}
