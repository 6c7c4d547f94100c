//! Model-based test: seeded random sequences of create / replay / reuse /
//! cancel / confirm / clock moves / expiry sweeps / Redis flushes /
//! reconcile and reaper passes, run against the real service, with every
//! invariant checked after every step against a small in-memory model.
//!
//! Reproduce a failure with `SLOTGATE_MODEL_SEED=<seed>`; run more with
//! `SLOTGATE_MODEL_CASES=<n>`. A failing sequence is shrunk (steps removed
//! while it still fails) before it is reported.

use std::{collections::HashMap, fmt, time::Duration};

use diesel::{QueryableByName, sql_query};
use diesel_async::RunQueryDsl;
use slotgate::pb;
use tonic::Code;

use crate::helpers::{TestApp, by_hand, reason_of, reserve, slot_at, spawn_app_with};

const STEPS: usize = 60;
const DEFAULT_CASES: u64 = 6;
const WINDOW_SECS: u64 = 600;
const CAPACITIES: [i32; 2] = [12, 8];
const USERS: u64 = 5;

/// splitmix64: small, fast, and the same sequence for the same seed
/// everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One step. Steps that act on an earlier request name the label (the
/// generated position) of the `Create` that sent it, and do nothing if that
/// step is gone or booked nothing: removing steps while shrinking keeps every
/// other step meaning what it meant.
#[derive(Debug, Clone, Copy)]
enum Op {
    Create { user: u64, slot: usize, party: i32 },
    Replay { of: usize },
    Reuse { of: usize },
    Cancel { of: usize },
    Confirm { of: usize },
    Advance { secs: u64 },
    Expire,
    Flush,
    Reconcile,
    Reap,
}

/// A step and its label.
type Step = (usize, Op);

fn generate(rng: &mut Rng) -> Vec<Step> {
    let mut creates: Vec<usize> = Vec::new();
    (0..STEPS)
        .map(|label| {
            let roll = if creates.is_empty() { 0 } else { rng.below(100) };
            let op = match roll {
                0..=34 => {
                    creates.push(label);
                    Op::Create { user: rng.below(USERS), slot: rng.below(2) as usize, party: 1 + rng.below(4) as i32 }
                }
                35..=44 => Op::Replay { of: creates[rng.below(creates.len() as u64) as usize] },
                45..=49 => Op::Reuse { of: creates[rng.below(creates.len() as u64) as usize] },
                50..=61 => Op::Cancel { of: creates[rng.below(creates.len() as u64) as usize] },
                62..=71 => Op::Confirm { of: creates[rng.below(creates.len() as u64) as usize] },
                72..=81 => Op::Advance { secs: [60, 300, 599, 601][rng.below(4) as usize] },
                82..=88 => Op::Expire,
                89..=92 => Op::Flush,
                93..=96 => Op::Reconcile,
                _ => Op::Reap,
            };
            (label, op)
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Confirmed,
    Cancelled,
    Expired,
}

impl Status {
    fn active(self) -> bool {
        matches!(self, Self::Pending | Self::Confirmed)
    }

    fn db(self) -> &'static str {
        match self {
            Self::Pending => "PENDING_DEPOSIT",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }
}

struct Booked {
    id: String,
    /// The request that made it: a replay must repeat it exactly.
    request: pb::CreateReservationRequest,
    user: u64,
    slot: usize,
    party: i32,
    status: Status,
    /// Seconds on the model's clock.
    deadline: u64,
}

/// What the service should be, in memory.
#[derive(Default)]
struct Model {
    now: u64,
    /// The request each `Create` step sent, by the step's label.
    sent: HashMap<usize, pb::CreateReservationRequest>,
    /// Reservations by request id.
    booked: HashMap<String, Booked>,
}

impl Model {
    fn seats_taken(&self, slot: usize) -> i32 {
        self.booked.values().filter(|b| b.slot == slot && b.status.active()).map(|b| b.party).sum()
    }

    fn holds(&self, user: u64, slot: usize) -> bool {
        self.booked.values().any(|b| b.user == user && b.slot == slot && b.status.active())
    }

    /// What a request nobody has booked under its id yet should get.
    fn decide(&self, user: u64, slot: usize, party: i32) -> Result<(), (Code, &'static str)> {
        if self.holds(user, slot) {
            Err((Code::AlreadyExists, "DUPLICATE"))
        } else if CAPACITIES[slot] - self.seats_taken(slot) < party {
            Err((Code::FailedPrecondition, "SOLD_OUT"))
        } else {
            Ok(())
        }
    }
}

struct Failure(String);

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

fn slots() -> [pb::SlotRef; 2] {
    [slot_at("18:00"), slot_at("18:30")]
}

fn slot_index(slot: &pb::SlotRef) -> usize {
    slots().iter().position(|s| s == slot).unwrap()
}

fn user_of(request: &pb::CreateReservationRequest) -> u64 {
    request.user_id.trim_start_matches("user-").parse().unwrap()
}

/// Sends a create (new, replayed or reused) and checks the answer against
/// the model, updating it.
async fn create(app: &TestApp, model: &mut Model, request: pb::CreateReservationRequest) -> Result<(), Failure> {
    let (user, slot, party) = (user_of(&request), slot_index(request.slot.as_ref().unwrap()), request.party_size);
    let answer = app.create(request.clone()).await;
    match model.booked.get(&request.request_id) {
        Some(booked) if booked.request == request => {
            let got = answer.map_err(|e| Failure(format!("replay of a booked request failed: {e:?}")))?;
            ensure!(got.id == booked.id, "replay returned another reservation");
        }
        Some(_) => {
            let got = answer.map(|r| r.id).map_err(|e| reason_of(&e));
            ensure!(got == Err((Code::InvalidArgument, "REQUEST_ID_REUSED".into())), "reused id: got {got:?}");
        }
        None => match (model.decide(user, slot, party), answer) {
            (Ok(()), Ok(got)) => {
                ensure!(got.status() == pb::ReservationStatus::PendingDeposit, "new reservation not pending");
                let deadline = model.now + WINDOW_SECS;
                let booked = Booked {
                    id: got.id,
                    request: request.clone(),
                    user,
                    slot,
                    party,
                    status: Status::Pending,
                    deadline,
                };
                model.booked.insert(request.request_id.clone(), booked);
            }
            (Err(expected), Err(status)) => {
                let got = reason_of(&status);
                ensure!((got.0, got.1.as_str()) == expected, "expected {expected:?}, got {got:?}");
            }
            (expected, got) => {
                return Err(Failure(format!(
                    "expected {expected:?}, got {:?}",
                    got.map(|r| r.id).map_err(|e| reason_of(&e))
                )));
            }
        },
    }
    Ok(())
}

/// The reservation booked by the `Create` step labelled `of`, if any.
fn booked_by(model: &mut Model, of: usize) -> Option<&mut Booked> {
    let request_id = &model.sent.get(&of)?.request_id;
    model.booked.get_mut(request_id)
}

async fn step(app: &TestApp, model: &mut Model, (label, op): Step) -> Result<(), Failure> {
    let slots = slots();
    match op {
        Op::Create { user, slot, party } => {
            let request = reserve(&format!("req-{label}"), &format!("user-{user}"), &slots[slot], party);
            model.sent.insert(label, request.clone());
            create(app, model, request).await?;
        }
        Op::Replay { of } => {
            if let Some(request) = model.sent.get(&of).cloned() {
                create(app, model, request).await?;
            }
        }
        Op::Reuse { of } => {
            if let Some(mut request) = model.sent.get(&of).cloned() {
                request.party_size = request.party_size % 4 + 1;
                create(app, model, request).await?;
            }
        }
        Op::Cancel { of } => {
            let Some(booked) = booked_by(model, of) else { return Ok(()) };
            let answer = app.cancel(&booked.id, pb::CancelReason::User).await;
            match booked.status {
                Status::Pending | Status::Confirmed => {
                    let got = answer.map_err(|e| Failure(format!("cancel of an active reservation: {e:?}")))?;
                    ensure!(!got.already_cancelled, "cancel said already cancelled");
                    booked.status = Status::Cancelled;
                }
                Status::Cancelled => {
                    let got = answer.map_err(|e| Failure(format!("repeated cancel: {e:?}")))?;
                    ensure!(got.already_cancelled, "repeated cancel did not say so");
                }
                Status::Expired => {
                    let got = answer.map(|_| ()).map_err(|e| reason_of(&e));
                    ensure!(
                        got == Err((Code::FailedPrecondition, "NOT_CANCELLABLE".into())),
                        "cancel expired: {got:?}"
                    );
                }
            }
        }
        Op::Confirm { of } => {
            let now = model.now;
            let Some(booked) = booked_by(model, of) else { return Ok(()) };
            let answer = app
                .reservations
                .clone()
                .confirm_reservation(pb::ConfirmReservationRequest { id: booked.id.clone() })
                .await
                .map(|r| r.into_inner().status())
                .map_err(|e| reason_of(&e));
            let expected = match booked.status {
                Status::Pending if now < booked.deadline => Ok(pb::ReservationStatus::Confirmed),
                Status::Confirmed => Ok(pb::ReservationStatus::Confirmed),
                Status::Pending | Status::Expired => Err((Code::FailedPrecondition, "DEPOSIT_EXPIRED".to_owned())),
                Status::Cancelled => Err((Code::FailedPrecondition, "NOT_CONFIRMABLE".to_owned())),
            };
            ensure!(answer == expected, "confirm: expected {expected:?}, got {answer:?}");
            booked.status = match (booked.status, &expected) {
                (Status::Pending, Ok(_)) => Status::Confirmed,
                (Status::Pending, Err(_)) => Status::Expired,
                (status, _) => status,
            };
        }
        Op::Advance { secs } => {
            model.now += secs;
            app.clock.advance(Duration::from_secs(secs));
        }
        Op::Expire => {
            let expired = app.booking.expire_due().await.map_err(|e| Failure(format!("sweep: {e}")))?;
            let now = model.now;
            let due: Vec<_> =
                model.booked.values_mut().filter(|b| b.status == Status::Pending && b.deadline <= now).collect();
            ensure!(expired == due.len(), "sweep expired {expired}, model {}", due.len());
            for b in due {
                b.status = Status::Expired;
            }
        }
        Op::Flush => app.flush_redis().await,
        Op::Reconcile => {
            let report = app.booking.reconcile(None).await.map_err(|e| Failure(format!("reconcile: {e}")))?;
            // With no request in flight nothing drifts: a correction here is
            // a bug in some other path.
            ensure!(report.corrections.is_empty(), "reconcile had to correct {:?}", report.corrections);
        }
        Op::Reap => {
            let reaped = app.booking.reap().await.map_err(|e| Failure(format!("reap: {e}")))?;
            ensure!(reaped == Default::default(), "reaped {reaped:?} with no request in flight");
        }
    }
    Ok(())
}

/// Every invariant, against the real database and gate.
async fn check(app: &TestApp, model: &Model) -> Result<(), Failure> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        status: String,
    }
    let rows: Vec<Row> = sql_query("SELECT id::text AS id, status FROM reservations")
        .load(&mut app.database().await)
        .await
        .map_err(|e| Failure(e.to_string()))?;
    let actual: HashMap<String, String> = rows.into_iter().map(|r| (r.id, r.status)).collect();
    let expected: HashMap<String, String> =
        model.booked.values().map(|b| (b.id.clone(), b.status.db().to_owned())).collect();
    ensure!(actual == expected, "reservations: database {actual:?}, model {expected:?}");
    for (i, slot) in slots().iter().enumerate() {
        let taken = model.seats_taken(i);
        let (capacity, reserved, active) = app.db_slot(slot).await;
        ensure!((capacity, reserved, active) == (CAPACITIES[i], taken, i64::from(taken)), "slot {i} in the database");
        let remaining = app.remaining(slot).await.remaining;
        ensure!(remaining == capacity - taken, "slot {i}: counter says {remaining}, model {}", capacity - taken);
    }
    Ok(())
}

/// Runs a sequence on a fresh app; the first failure, with the step index.
async fn run(ops: &[Step]) -> Result<(), (usize, Failure)> {
    let app = spawn_app_with(|c| {
        c.deposit_window_secs = WINDOW_SECS as u32;
        // The model knows nothing of the click guard's clock; a sequence
        // may book for one user many times a second.
        c.user_burst = 0;
        by_hand(c);
    })
    .await;
    app.open(&slots().iter().cloned().zip(CAPACITIES).collect::<Vec<_>>()).await;
    let mut model = Model::default();
    for (n, op) in ops.iter().enumerate() {
        step(&app, &mut model, *op).await.map_err(|f| (n, f))?;
        check(&app, &model).await.map_err(|f| (n, f))?;
    }
    Ok(())
}

/// Removes steps while the sequence still fails: passes from the end to
/// the start, one step at a time, until a whole pass removes nothing.
async fn shrink(mut ops: Vec<Step>) -> (Vec<Step>, usize, Failure) {
    let (mut at, mut failure) = run(&ops).await.expect_err("a failing sequence");
    ops.truncate(at + 1);
    loop {
        let before = ops.len();
        let mut i = ops.len();
        while i > 0 {
            i -= 1;
            let mut candidate = ops.clone();
            candidate.remove(i);
            if let Err((n, f)) = run(&candidate).await {
                candidate.truncate(n + 1);
                (ops, at, failure) = (candidate, n, f);
                i = i.min(ops.len());
            }
        }
        if ops.len() == before {
            return (ops, at, failure);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_sequences_keep_every_invariant_after_every_step() {
    let seeds: Vec<u64> = match std::env::var("SLOTGATE_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("SLOTGATE_MODEL_SEED is a number")],
        Err(_) => {
            let cases =
                std::env::var("SLOTGATE_MODEL_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_CASES);
            (1..=cases).collect()
        }
    };
    for seed in seeds {
        let ops = generate(&mut Rng(seed));
        if run(&ops).await.is_err() {
            let (ops, at, failure) = shrink(ops).await;
            panic!(
                "seed {seed}: step {} failed: {failure:?}\nminimal sequence ({} steps, by label):\n{}",
                ops[at].0,
                ops.len(),
                ops.iter().map(|(label, op)| format!("  {label}: {op:?}")).collect::<Vec<_>>().join("\n")
            );
        }
    }
}
