//! Bursts: many users at one instant, exact winners.

use std::collections::{BTreeMap, HashMap};

use slotgate::{metrics::Metrics, pb};
use tonic::{Code, Status};

use crate::helpers::{TestApp, burst, by_hand, generous_timeouts, reason_of, reserve, slot_at, spawn_app_with, tally};

/// HTTP/2 connections the bursts are spread over (several clients, as in a
/// real burst, rather than one connection's stream limit).
const CONNECTIONS: usize = 8;

/// `users` users per slot, each clicking `clicks` times at once (distinct
/// request ids, as a double click makes), party size 4.
pub fn clicks(slots: &[pb::SlotRef], users: usize, clicks: usize) -> Vec<pb::CreateReservationRequest> {
    let mut requests = Vec::with_capacity(slots.len() * users * clicks);
    for (s, slot) in slots.iter().enumerate() {
        for u in 0..users {
            for c in 0..clicks {
                requests.push(reserve(&format!("s{s}-u{u}-c{c}"), &format!("s{s}-user-{u}"), slot, 4));
            }
        }
    }
    requests
}

fn slot_key(slot: &pb::SlotRef) -> String {
    format!("{}:{}:{}", slot.restaurant_id, slot.date, slot.time)
}

/// Where the burst's requests were decided: at the Redis gate (only the
/// admitted reach the database), or each in the database (the designs
/// slotgate is compared with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    AtTheGate,
    InTheDatabase,
}

/// Checks a burst into 40-seat slots with party size 4: exactly ten winners
/// per slot, no user with two, every refusal an expected one, the database
/// and the counter agree, and only admitted requests reached the database
/// (`db_checkouts_before` is the count when the burst began).
pub async fn assert_exact_outcome(
    app: &TestApp,
    decided: Decided,
    db_checkouts_before: u64,
    requests: &[pb::CreateReservationRequest],
    results: &[Result<pb::Reservation, Status>],
    slots: &[pb::SlotRef],
) {
    // Counted the moment the burst is over: the checks below read the
    // database themselves.
    let reached_database = Metrics::read(&app.metrics.db_checkouts) - db_checkouts_before;
    let outcomes = tally(results);
    for kind in outcomes.keys() {
        assert!(
            ["OK", "AlreadyExists/DUPLICATE", "FailedPrecondition/SOLD_OUT"].contains(&kind.as_str()),
            "unexpected outcome {kind}: {outcomes:?}"
        );
    }

    // Winners per slot, and per (slot, user).
    let mut winners: BTreeMap<String, usize> = BTreeMap::new();
    let mut held: HashMap<(String, String), String> = HashMap::new();
    for r in results.iter().flatten() {
        let slot = slot_key(r.slot.as_ref().unwrap());
        *winners.entry(slot.clone()).or_default() += 1;
        let previous = held.insert((slot, r.user_id.clone()), r.id.clone());
        assert!(previous.is_none(), "user {} won twice in one slot", r.user_id);
    }
    for slot in slots {
        assert_eq!(winners.get(&slot_key(slot)), Some(&10), "winners of {}: {outcomes:?}", slot_key(slot));
    }

    // A winner's other clicks were refused as duplicates of the winning one.
    for (request, result) in requests.iter().zip(results) {
        let key = (slot_key(request.slot.as_ref().unwrap()), request.user_id.clone());
        if let (Some(winning_id), Err(status)) = (held.get(&key), result) {
            assert_eq!(reason_of(status), (Code::AlreadyExists, "DUPLICATE".into()));
            let info = tonic_types::StatusExt::get_details_error_info(status).unwrap();
            assert_eq!(&info.metadata["reservation_id"], winning_id);
        }
    }

    for slot in slots {
        let (capacity, reserved, active) = app.db_slot(slot).await;
        assert_eq!((capacity, reserved, active), (40, 40, 40), "database figures of {}", slot_key(slot));
        let remaining = app.remaining(slot).await;
        assert_eq!((remaining.remaining, remaining.capacity), (0, 40));
    }

    if decided == Decided::InTheDatabase {
        // Without the gate, every request is decided in the database.
        assert_eq!(reached_database, requests.len() as u64, "without a gate every request reaches the database");
        return;
    }
    // Counted on both sides, not assumed: the gate admitted exactly the
    // winners, and the database saw one connection per admitted request
    // during the burst (every pool checkout counts) and nothing else.
    let admitted = Metrics::read(&app.metrics.gate_admitted);
    assert_eq!(admitted, 10 * slots.len() as u64, "the gate admitted exactly the winners");
    assert_eq!(Metrics::read(&app.metrics.store_transactions), admitted, "winner transactions vs admissions");
    assert_eq!(reached_database, admitted, "requests that reached the database vs admissions");
}

async fn run(slots: Vec<pb::SlotRef>, users: usize, clicks_per_user: usize) {
    // These tests assert exact outcomes, not speed: the waits get room.
    // Background work (sweeps, reconcile passes) is off: every database
    // access during the burst must be one of the burst's requests.
    let app = spawn_app_with(|c| {
        generous_timeouts(c);
        by_hand(c);
    })
    .await;
    burst_exactly(&app, &slots, users, clicks_per_user).await;
}

/// Opens `slots` with 40 seats in `app` (which must have its background
/// work off), fires `users` x `clicks_per_user` clicks at each at once, and
/// checks the outcome is exact.
pub async fn burst_exactly(app: &TestApp, slots: &[pb::SlotRef], users: usize, clicks_per_user: usize) {
    app.open(&slots.iter().map(|s| (s.clone(), 40)).collect::<Vec<_>>()).await;
    let requests = clicks(slots, users, clicks_per_user);
    let db_checkouts_before = Metrics::read(&app.metrics.db_checkouts);
    let results = burst(app.addr, requests.clone(), CONNECTIONS).await;
    assert_eq!(results.len(), slots.len() * users * clicks_per_user);
    assert_exact_outcome(app, Decided::AtTheGate, db_checkouts_before, &requests, &results, slots).await;
}

/// One of the seed's scenarios as `loadtest/scenarios.json`, the load kit's
/// one definition of them, has it: users, each clicking `clicks` times at
/// once, into one slot of restaurant 67 (40 seats, parties of 4).
pub struct Scenario {
    pub users: usize,
    pub clicks: usize,
}

pub fn scenario(name: &str) -> Scenario {
    let all: serde_json::Value = serde_json::from_str(include_str!("../../loadtest/scenarios.json")).unwrap();
    // The slot these tests open and the parties they book.
    assert_eq!((&all["restaurant_id"], &all["capacity"], &all["party_size"]), (&67.into(), &40.into(), &4.into()));
    let found = all["scenarios"].as_array().unwrap().iter().find(|s| s["name"] == name).expect("a defined scenario");
    assert_eq!(found["winners"], 10, "{name}: the assertions here expect ten winners");
    let count = |key: &str| found[key].as_u64().unwrap() as usize;
    Scenario { users: count("users"), clicks: count("clicks") }
}

async fn run_scenario(name: &str, slot: pb::SlotRef) {
    let Scenario { users, clicks } = scenario(name);
    run(vec![slot], users, clicks).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_2000_books_exactly_ten_parties_of_four_into_forty_seats() {
    run_scenario("duplicate-2000", slot_at("11:00")).await;
}

/// The duplicate-2000 burst (2,000 distinct users, three clicks each, 6,000 calls at
/// one instant) spread over 50 slots at once: 40 users per slot, so every
/// slot sells out and exactly 500 parties win. (Fifty full duplicate-2000
/// bursts at one instant, 300,000 calls, is an overload test: on two cores
/// the tail waits past the pool timeout, which load shedding must handle.)
#[tokio::test(flavor = "multi_thread")]
async fn the_duplicate_burst_spread_over_50_slots_books_exactly_ten_parties_in_each() {
    let slots: Vec<_> = (0..50).map(|i| slot_at(&format!("{:02}:{:02}", 10 + i / 6, (i % 6) * 10))).collect();
    let Scenario { users, clicks } = scenario("duplicate-2000");
    run(slots, users / 50, clicks).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_100_books_exactly_ten() {
    run_scenario("burst-100", slot_at("12:00")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_200_books_exactly_ten() {
    run_scenario("burst-200", slot_at("12:00")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_400_books_exactly_ten() {
    run_scenario("burst-400", slot_at("12:00")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_800_books_exactly_ten() {
    run_scenario("burst-800", slot_at("12:00")).await;
}
