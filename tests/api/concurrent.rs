//! The concurrent model: several clients against two replicas of the real
//! service (one in this process, one a separate `slotgate` process that is
//! killed and restarted), with every background pass on and short leases,
//! run random operations while random faults strike: one key of a slot
//! lost, Redis flushed, Redis stalled, the replica process killed with
//! SIGKILL and started again, every PostgreSQL connection cut.
//!
//! The clients also join slots' waitlists, leave them and accept offers,
//! while cancels, expiries and capacity changes make offers.
//!
//! Each client checks its own answers as they come (no `INTERNAL`, a replay
//! of a booked request is that booking, a reused id is refused). Once the
//! clients and the faults are done, the run waits exactly one hold lease
//! plus one reaper and one reconciler interval (and a fixed margin for the
//! passes' own work) and then audits, without loading any counter: no slot
//! over capacity, `reserved` equal to the seats of active reservations, no
//! user with two, every `OK` a row, no hold left, every warm counter and
//! its holder and waiter entries exactly the database's; every offer a
//! reservation in the status its entry says, no reservation offered
//! twice, and reserved plus set-aside seats within capacity.
//!
//! Seeds are random on every run and printed; `SLOTGATE_MODEL_SEED=<seed>`
//! replays one's operations and faults (the interleaving is the machine's),
//! `SLOTGATE_MODEL_RUNS=<n>` runs n seeds and `SLOTGATE_MODEL_LANES=<k>`
//! runs k at a time (the long mode; see the operations guide). A failing
//! seed is run again with fewer operations per client, and the smallest
//! setting that still fails is reported with it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use slotgate::pb::{self, reservations_client::ReservationsClient, slot_admin_client::SlotAdminClient};
use tokio::sync::Mutex as AsyncMutex;
use tonic::{Code, Status, transport::Channel};

use crate::{
    fault_kit::{PrivateRedis, SlotgateProcess},
    helpers::{Rng, TestApp, connect, model_seeds, reason_of, reserve, slot_at, spawn_app_with},
};

/// Seeds per run of the ordinary suite.
const DEFAULT_RUNS: u64 = 2;
const CLIENTS: usize = 4;
const OPS_PER_CLIENT: usize = 40;
/// Longest pause between a client's operations: spreads them over the
/// window the faults strike in.
const THINK_MS: u64 = 60;
/// Faults strike within this long of the clients' start.
const FAULT_WINDOW_MS: u64 = 1_500;
const FAULTS: usize = 3;
const USERS: u64 = 10;
const SLOTS: usize = 3;
const DEPOSIT_WINDOW_SECS: u32 = 2;
/// Small, so lines fill.
const WAITLIST_LIMIT: i32 = 4;
/// Offers lapse only when a client moves the clock past them, never by
/// the run's own time: a lapse's next offer would otherwise keep the slot
/// changing while the run waits to audit.
const OFFER_WINDOW_SECS: u32 = 60;
/// Short timeouts, so the shortest lease they allow is short too (see
/// `Config::check`): 2 x (200 + 200 + 400) ms, and a little more.
const POOL_TIMEOUT: Duration = Duration::from_millis(200);
const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_millis(200);
const DB_TRANSACTION_TIMEOUT: Duration = Duration::from_millis(400);
const LEASE: Duration = Duration::from_millis(2_000);
const REAP_INTERVAL: Duration = Duration::from_millis(100);
const RECONCILE_INTERVAL: Duration = Duration::from_millis(200);
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// What a reaper and a reconciler pass themselves may take on a loaded
/// 2-core machine, on top of their intervals.
const PASS_MARGIN: Duration = Duration::from_millis(1_000);
/// A client gives up on a call after this long (the killed replica may
/// never answer).
const CALL_DEADLINE: Duration = Duration::from_secs(10);

fn slots() -> Vec<pb::SlotRef> {
    (0..SLOTS).map(|i| slot_at(&format!("2{i}:00"))).collect()
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// One of a slot's keys deleted, as an eviction would.
    LoseKey {
        slot: usize,
        key: usize,
    },
    Flush,
    /// Redis busy (answering no one) for this long.
    Stall {
        millis: u64,
    },
    /// The replica process killed with SIGKILL, and started again.
    KillReplica,
    /// Every PostgreSQL backend of the database terminated.
    CutDatabase,
}

fn faults(rng: &mut Rng) -> Vec<(Duration, Fault)> {
    (0..FAULTS)
        .map(|_| {
            let at = Duration::from_millis(rng.below(FAULT_WINDOW_MS));
            let fault = match rng.below(5) {
                0 => Fault::LoseKey { slot: rng.below(SLOTS as u64) as usize, key: rng.below(5) as usize },
                1 => Fault::Flush,
                2 => Fault::Stall { millis: 100 + rng.below(400) },
                3 => Fault::KillReplica,
                _ => Fault::CutDatabase,
            };
            (at, fault)
        })
        .collect()
}

/// What one run found wrong.
pub struct Failure(pub String);

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Failure(format!($($msg)+)));
        }
    };
}

mod audit;
mod strike;

use self::{audit::audit, strike::strike};

/// What the clients saw, shared.
#[derive(Default)]
struct Seen {
    /// The reservation each request id got, once any call answered OK.
    booked: HashMap<String, (pb::CreateReservationRequest, String)>,
    /// How creates were answered (OK, or the reason), to show a run did
    /// what it says.
    answers: std::collections::BTreeMap<String, usize>,
    /// Entries joins were answered with.
    joined: HashSet<String>,
    /// How joins were answered.
    joins: std::collections::BTreeMap<String, usize>,
}

/// The two replicas' addresses, as clients reach them.
struct Replicas {
    local: Channel,
    process: Channel,
}

/// Answers a fault may cause, from either replica: the caller retries.
fn a_fault_may_cause(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown)
        || reason_of(status).1 == "REQUEST_IN_PROGRESS"
}

async fn call<T>(work: impl Future<Output = Result<tonic::Response<T>, Status>>) -> Result<T, Status> {
    match tokio::time::timeout(CALL_DEADLINE, work).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded("the client gave up")),
    }
}

/// One client's random operations, each answer checked as it comes.
async fn client(
    n: usize,
    seed: u64,
    ops: usize,
    replicas: Arc<Replicas>,
    app: Arc<TestApp>,
    seen: Arc<Mutex<Seen>>,
) -> Result<(), Failure> {
    let mut rng = Rng(seed ^ (n as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let slots = slots();
    let mut sent: Vec<pb::CreateReservationRequest> = Vec::new();
    let mut joined: Vec<String> = Vec::new();
    for op in 0..ops {
        tokio::time::sleep(Duration::from_millis(rng.below(THINK_MS))).await;
        let channel = if rng.below(2) == 0 { replicas.local.clone() } else { replicas.process.clone() };
        let mut reservations = ReservationsClient::new(channel.clone());
        let roll = if sent.is_empty() { 0 } else { rng.below(120) };
        match roll {
            0..=44 => {
                let slot = &slots[rng.below(SLOTS as u64) as usize];
                let user = format!("user-{}", rng.below(USERS));
                let request = reserve(&format!("c{n}-{op}"), &user, slot, 1 + rng.below(4) as i32);
                sent.push(request.clone());
                create(&mut reservations, &seen, request).await?;
            }
            45..=59 => {
                let request = sent[rng.below(sent.len() as u64) as usize].clone();
                create(&mut reservations, &seen, request).await?;
            }
            60..=64 => {
                let mut request = sent[rng.below(sent.len() as u64) as usize].clone();
                request.party_size = request.party_size % 4 + 1;
                create(&mut reservations, &seen, request).await?;
            }
            65..=84 => {
                let request = &sent[rng.below(sent.len() as u64) as usize];
                let Some(id) = seen.lock().unwrap().booked.get(&request.request_id).map(|(_, id)| id.clone()) else {
                    continue;
                };
                let answer = if roll <= 76 {
                    let cancel = pb::CancelReservationRequest { id, reason: pb::CancelReason::User as i32 };
                    call(reservations.cancel_reservation(cancel)).await.map(|_| ())
                } else {
                    call(reservations.confirm_reservation(pb::ConfirmReservationRequest { id })).await.map(|_| ())
                };
                if let Err(status) = answer {
                    let reason = reason_of(&status).1;
                    let expected = ["NOT_CANCELLABLE", "DEPOSIT_EXPIRED", "NOT_CONFIRMABLE"].contains(&reason.as_str());
                    ensure!(expected || a_fault_may_cause(&status), "cancel or confirm answered {status:?}");
                }
            }
            85..=91 => {
                let slot = slots[rng.below(SLOTS as u64) as usize].clone();
                let capacity = 2 + rng.below(12) as i32;
                let request = pb::OpenSlotsRequest {
                    slots: vec![pb::SlotCapacity { slot: Some(slot), capacity, ..Default::default() }],
                };
                if let Err(status) = call(SlotAdminClient::new(channel).open_slots(request)).await {
                    let below = reason_of(&status).1 == "CAPACITY_BELOW_RESERVED";
                    ensure!(below || a_fault_may_cause(&status), "capacity change answered {status:?}");
                }
            }
            92..=94 => {
                let request = pb::WarmSlotsRequest { from_date: String::new() };
                if let Err(status) = call(SlotAdminClient::new(channel).warm_slots(request)).await {
                    ensure!(a_fault_may_cause(&status), "warm answered {status:?}");
                }
            }
            95..=97 => {
                if let Err(e) = app.booking.reap().await {
                    ensure!(is_retryable(&e), "reap failed: {e}");
                }
            }
            98 => app.clock.advance(Duration::from_secs(u64::from(DEPOSIT_WINDOW_SECS) + 1)),
            99 => app.clock.advance(Duration::from_secs(u64::from(OFFER_WINDOW_SECS) + 1)),
            100..=109 => {
                let request = pb::JoinWaitlistRequest {
                    request_id: format!("j{n}-{op}"),
                    user_id: format!("user-{}", rng.below(USERS)),
                    slot: Some(slots[rng.below(SLOTS as u64) as usize].clone()),
                    party_size: 1 + rng.below(5) as i32,
                };
                let answer = call(reservations.join_waitlist(request)).await;
                let mut seen = seen.lock().unwrap();
                let outcome = match &answer {
                    Ok(_) => "OK".to_owned(),
                    Err(status) => format!("{:?}/{}", status.code(), reason_of(status).1),
                };
                *seen.joins.entry(outcome).or_default() += 1;
                match answer {
                    Ok(entry) => {
                        seen.joined.insert(entry.id.clone());
                        joined.push(entry.id);
                    }
                    Err(status) => {
                        let reason = reason_of(&status).1;
                        let refused = ["SEATS_AVAILABLE", "DUPLICATE", "WAITLIST_FULL"].contains(&reason.as_str());
                        ensure!(refused || a_fault_may_cause(&status), "join answered {status:?}");
                    }
                }
            }
            _ if joined.is_empty() => {}
            110..=114 => {
                let id = joined[rng.below(joined.len() as u64) as usize].clone();
                if let Err(status) = call(reservations.leave_waitlist(pb::LeaveWaitlistRequest { id })).await {
                    let ended = reason_of(&status).1 == "WAITLIST_ENTRY_ENDED";
                    ensure!(ended || a_fault_may_cause(&status), "leave answered {status:?}");
                }
            }
            _ => {
                let id = joined[rng.below(joined.len() as u64) as usize].clone();
                let entry = match call(reservations.get_waitlist_entry(pb::GetWaitlistEntryRequest { id })).await {
                    Ok(entry) => entry,
                    Err(status) => {
                        ensure!(a_fault_may_cause(&status), "get entry answered {status:?}");
                        continue;
                    }
                };
                if entry.offer_reservation_id.is_empty() {
                    continue;
                }
                let confirm = pb::ConfirmReservationRequest { id: entry.offer_reservation_id };
                if let Err(status) = call(reservations.confirm_reservation(confirm)).await {
                    let reason = reason_of(&status).1;
                    let expected = ["DEPOSIT_EXPIRED", "NOT_CONFIRMABLE"].contains(&reason.as_str());
                    ensure!(expected || a_fault_may_cause(&status), "accepting an offer answered {status:?}");
                }
            }
        }
    }
    Ok(())
}

fn is_retryable(e: &slotgate::booking::BookingError) -> bool {
    use slotgate::{booking::BookingError, gate::GateError, store::StoreError};
    matches!(e, BookingError::Gate(GateError::Unavailable(_)) | BookingError::Store(StoreError::Unavailable(_)))
}

/// Sends a create and checks it against every earlier answer to its id.
async fn create(
    reservations: &mut ReservationsClient<Channel>,
    seen: &Mutex<Seen>,
    request: pb::CreateReservationRequest,
) -> Result<(), Failure> {
    let answer = call(reservations.create_reservation(request.clone())).await;
    let mut seen = seen.lock().unwrap();
    let outcome = match &answer {
        Ok(_) => "OK".to_owned(),
        Err(status) => format!("{:?}/{}", status.code(), reason_of(status).1),
    };
    *seen.answers.entry(outcome).or_default() += 1;
    let first = seen.booked.get(&request.request_id).cloned();
    match (answer, first) {
        (Ok(got), Some((booked_with, id))) => {
            ensure!(booked_with == request, "{}: a reused id was booked: {got:?}", request.request_id);
            ensure!(got.id == id, "{}: a replay got {}, the first answer was {id}", request.request_id, got.id);
        }
        (Ok(got), None) => {
            seen.booked.insert(request.request_id.clone(), (request, got.id));
        }
        (Err(status), Some((booked_with, _))) if booked_with != request => {
            let reused = reason_of(&status).1 == "REQUEST_ID_REUSED";
            ensure!(reused || a_fault_may_cause(&status), "{}: a reused id got {status:?}", request.request_id);
        }
        (Err(status), Some(_)) => {
            ensure!(a_fault_may_cause(&status), "{}: a replay of a booking got {status:?}", request.request_id);
        }
        (Err(status), None) => {
            let reason = reason_of(&status).1;
            let refused = ["SOLD_OUT", "DUPLICATE", "REQUEST_ID_REUSED"].contains(&reason.as_str());
            ensure!(refused || a_fault_may_cause(&status), "{}: got {status:?}", request.request_id);
        }
    }
    Ok(())
}

/// The settings both replicas run with (the local one through `Config`).
fn process_env(app: &TestApp) -> Vec<(String, String)> {
    let millis = |d: Duration| d.as_millis().to_string();
    let mut env = app.env();
    env.extend(
        [
            ("SLOTGATE_POOL_TIMEOUT_MS", millis(POOL_TIMEOUT)),
            ("SLOTGATE_REDIS_COMMAND_TIMEOUT_MS", millis(REDIS_COMMAND_TIMEOUT)),
            ("SLOTGATE_REDIS_CONNECT_TIMEOUT_MS", millis(REDIS_COMMAND_TIMEOUT)),
            ("SLOTGATE_DB_TRANSACTION_TIMEOUT_MS", millis(DB_TRANSACTION_TIMEOUT)),
            ("SLOTGATE_HOLD_LEASE_MS", millis(LEASE)),
            ("SLOTGATE_REAP_INTERVAL_MS", millis(REAP_INTERVAL)),
            ("SLOTGATE_RECONCILE_INTERVAL_MS", millis(RECONCILE_INTERVAL)),
            ("SLOTGATE_EXPIRY_SWEEP_INTERVAL_MS", millis(SWEEP_INTERVAL)),
            ("SLOTGATE_DEPOSIT_WINDOW_SECS", DEPOSIT_WINDOW_SECS.to_string()),
            ("SLOTGATE_OFFER_WINDOW_SECS", OFFER_WINDOW_SECS.to_string()),
            ("SLOTGATE_WAITLIST_LIMIT", WAITLIST_LIMIT.to_string()),
            ("SLOTGATE_USER_BURST", "0".to_owned()),
            ("SLOTGATE_MIGRATE_ON_START", "false".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    env
}

/// One seeded run on a fresh database and namespace; `redis` is this lane's.
async fn run(seed: u64, ops: usize, redis: &PrivateRedis) -> Result<(), Failure> {
    let app = Arc::new(
        spawn_app_with(|c| {
            c.redis_url = redis.url.clone();
            c.pool_timeout = POOL_TIMEOUT;
            c.redis_command_timeout = REDIS_COMMAND_TIMEOUT;
            c.redis_connect_timeout = REDIS_COMMAND_TIMEOUT;
            c.db_transaction_timeout = DB_TRANSACTION_TIMEOUT;
            c.hold_lease = LEASE;
            c.reap_interval = REAP_INTERVAL;
            c.reconcile_interval = RECONCILE_INTERVAL;
            c.expiry_sweep_interval = SWEEP_INTERVAL;
            c.deposit_window_secs = DEPOSIT_WINDOW_SECS;
            c.offer_window_secs = OFFER_WINDOW_SECS;
            c.waitlist_limit = WAITLIST_LIMIT;
            c.user_burst = 0;
        })
        .await,
    );
    let mut rng = Rng(seed);
    let capacities: Vec<(pb::SlotRef, i32)> = slots().into_iter().map(|s| (s, 4 + rng.below(9) as i32)).collect();
    app.open(&capacities).await;
    let replica = Arc::new(AsyncMutex::new(SlotgateProcess::start(process_env(&app)).await));
    let process_addr = replica.lock().await.addr;
    let replicas = Arc::new(Replicas {
        local: connect(app.addr).await,
        process: Channel::from_shared(format!("http://{process_addr}")).unwrap().connect_lazy(),
    });
    let seen = Arc::new(Mutex::new(Seen::default()));
    let planned = faults(&mut rng);
    let struck = format!("{planned:?}");

    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(client(n, seed, ops, Arc::clone(&replicas), Arc::clone(&app), Arc::clone(&seen))))
        .collect();
    let mut planned = planned;
    planned.sort_by_key(|(at, _)| *at);
    for (at, fault) in planned {
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + at)).await;
        strike(fault, &app, redis, &replica).await;
    }
    for c in clients {
        c.await.map_err(|e| Failure(format!("a client panicked: {e}")))??;
    }

    // Quiet from here on: the bound starts now.
    tokio::time::sleep(LEASE + REAP_INTERVAL + RECONCILE_INTERVAL + PASS_MARGIN).await;
    let booked: HashSet<String> = seen.lock().unwrap().booked.values().map(|(_, id)| id.clone()).collect();
    let joined = seen.lock().unwrap().joined.clone();
    {
        let seen = seen.lock().unwrap();
        println!("seed {seed}: faults {struck}; creates answered {:?}; joins {:?}", seen.answers, seen.joins);
    }
    audit(&app, redis, &booked).await?;
    crate::waitlist_audit::audit::<Failure>(&app, redis, &joined).await
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_replicas_and_faults_at_once_leave_every_invariant_within_a_lease() {
    let seeds = model_seeds("SLOTGATE_MODEL_RUNS", DEFAULT_RUNS);
    let lanes: usize = std::env::var("SLOTGATE_MODEL_LANES").ok().and_then(|n| n.parse().ok()).unwrap_or(1).max(1);
    println!("concurrent model: {} runs in {lanes} lanes, seeds {}..", seeds.len(), seeds[0]);
    let queue = Arc::new(Mutex::new(seeds.clone()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    // Lanes run side by side in this task (the servers and clients they
    // start have tasks of their own); each has a Redis of its own, so one
    // lane's flush or stall is not another's fault.
    let lanes = (0..lanes).map(|_| {
        let (queue, failures) = (Arc::clone(&queue), Arc::clone(&failures));
        async move {
            let redis = PrivateRedis::start().await;
            loop {
                let Some(seed) = queue.lock().unwrap().pop() else { return };
                if let Err(failure) = run(seed, OPS_PER_CLIENT, &redis).await {
                    let smallest = shrink(seed, &redis).await;
                    failures.lock().unwrap().push(format!("seed {seed}: {failure:?}; {smallest}"));
                }
            }
        }
    });
    futures_util::future::join_all(lanes).await;
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} of {} runs failed:\n{}", failures.len(), seeds.len(), failures.join("\n"));
}

/// Runs a failing seed again with fewer operations per client while it
/// still fails (the interleaving is the machine's, so it may not), and
/// says the smallest that did.
async fn shrink(seed: u64, redis: &PrivateRedis) -> String {
    let mut smallest = None;
    let mut ops = OPS_PER_CLIENT / 2;
    while ops >= 1 {
        match run(seed, ops, redis).await {
            Err(failure) => smallest = Some((ops, failure)),
            Ok(()) => break,
        }
        ops /= 2;
    }
    match smallest {
        Some((ops, failure)) => format!("still fails with {ops} operations per client: {failure:?}"),
        None => "did not fail again with fewer operations per client".to_owned(),
    }
}
