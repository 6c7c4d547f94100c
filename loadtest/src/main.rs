//! `slotgate-load`: replays the seed's scenarios (defined once, in
//! `loadtest/scenarios.json`, built in) against a running slotgate, speaks
//! ghz's options and report format, and checks that the outcome is exact.
//!
//! ```text
//! slotgate-load --scenario duplicate-2000                 # the seed's burst, all at once
//! slotgate-load --scenario burst-800 -O json -o r.json    # ghz's JSON report
//! slotgate-load --scenario spread --slots 1000            # winners' throughput over many slots
//! slotgate-load --scenario soak --rps 500 -z 30s          # open loop: latency below saturation
//! slotgate-load --config loadtest/ghz/duplicate-2000.json # a ghz config file
//! slotgate-load --scenario duplicate-2000 --call grpc.health.v1.Health/Check   # what gRPC alone costs
//! slotgate-load --scenario duplicate-2000 --opens-in 2s --early 2000   # a slot's opening, hammered before it
//! slotgate-load --scenario duplicate-2000 --join-waitlist --waitlist-limit 20 --cancel-storm   # refused callers queue
//! ```

#[cfg(test)]
mod consumers;
mod fire;
mod ghz;
#[cfg(test)]
mod ghz_files;
mod opening;
mod plot;
mod report;
mod scenarios;
mod waitlist;

use std::{
    collections::{HashMap, HashSet},
    net::{SocketAddr, ToSocketAddrs},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use fire::{Call, Fire, Mode, Source};
use ghz::GhzConfig;
use opening::{Early, Opening, OpeningOptions};
use report::Stats;
use scenarios::seed;
use serde_json::json;
use slotgate::pb::{self, reservations_client::ReservationsClient, slot_admin_client::SlotAdminClient};
use tonic::transport::Channel;

/// The load tool shares the machine with the server it measures: the
/// cheaper its own allocations, the more of the machine the server gets.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CREATE: &str = "slotgate.v1.Reservations/CreateReservation";
const HEALTH: &str = "grpc.health.v1.Health/Check";

#[derive(Debug, Parser)]
#[command(
    name = "slotgate-load",
    about = "Fire the seed's reservation scenarios at slotgate, ghz-style, and check the outcome"
)]
struct Args {
    /// slotgate's address (ghz's positional host).
    host: Option<String>,
    /// Same as the positional host.
    #[arg(long)]
    addr: Option<String>,
    /// A ghz JSON config file; flags given here win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// One of the seed's scenarios (loadtest/scenarios.json; its headline
    /// one by default), spread (many slots, every call a winner), soak (an
    /// arrival rate for a duration), or custom (only -n/-c/--rps/-d; the
    /// default with --config).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(seed().all_names()))]
    scenario: Option<String>,
    /// The method: CreateReservation, or grpc.health.v1.Health/Check for the
    /// trivial reference call with the same load shape.
    #[arg(long)]
    call: Option<String>,
    /// Calls to make (ghz -n). Scenarios set their own.
    #[arg(short = 'n', long)]
    total: Option<u64>,
    /// Workers, each sending when its last call answered (ghz -c). Without
    /// it (and without --rps), every call is fired at once.
    #[arg(short = 'c', long)]
    concurrency: Option<usize>,
    /// HTTP/2 connections to spread calls over.
    #[arg(long)]
    connections: Option<usize>,
    /// Open loop: calls start at this rate, answered or not (ghz -r).
    #[arg(short = 'r', long)]
    rps: Option<u32>,
    /// How long to run, e.g. 30s (ghz -z).
    #[arg(short = 'z', long)]
    duration: Option<String>,
    /// Per-call timeout (ghz -t).
    #[arg(short = 't', long)]
    timeout: Option<String>,
    /// Call data: a JSON CreateReservationRequest with ghz template fields
    /// ({{.RequestNumber}}, {{.WorkerID}}, {{.TimestampUnix}}...).
    #[arg(short = 'd', long)]
    data: Option<String>,
    /// Metadata for every call, as JSON (e.g. {"authorization":"Bearer ..."}).
    #[arg(short = 'm', long)]
    metadata: Option<String>,
    /// summary (ghz's text) or json (ghz's JSON report).
    #[arg(short = 'O', long)]
    format: Option<String>,
    /// Write the report here instead of stdout.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Write SVG plots (latency histogram, answers per 100 ms) here.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// A name for the report.
    #[arg(long)]
    name: Option<String>,
    /// The restaurant of the seed's slot (defaults: loadtest/scenarios.json).
    #[arg(long, default_value_t = seed().restaurant_id)]
    restaurant: i64,
    #[arg(long, default_value_t = seed().date.clone())]
    date: String,
    /// First slot time to try; a slot an earlier run filled is skipped for
    /// the next minute's.
    #[arg(long, default_value_t = seed().time.clone())]
    time: String,
    /// Seats per slot; the seed's scenarios then expect
    /// min(users, capacity / party size) winners.
    #[arg(long, default_value_t = seed().capacity)]
    capacity: i32,
    #[arg(long, default_value_t = seed().party_size, value_parser = clap::value_parser!(i32).range(1..))]
    party_size: i32,
    /// Slots for spread and soak (at least 1).
    #[arg(long)]
    slots: Option<std::num::NonZeroUsize>,
    /// Report only; do not check the outcome.
    #[arg(long)]
    no_checks: bool,
    /// A slot's opening (the seed's scenarios only): open the slot with its
    /// sale window starting this long from now (a Go duration: 2s, 1500ms),
    /// fire the --early calls while it is closed, and release the
    /// scenario's calls at the opening instant (local clock).
    #[arg(long, value_name = "DURATION")]
    opens_in: Option<String>,
    /// With --opens-in: this many calls, each its own user, spread evenly
    /// over the wait, the last 200 ms before the opening. Every one must be
    /// refused SLOT_NOT_OPEN with a RetryInfo no longer than the time left.
    #[arg(long, value_name = "N")]
    early: Option<u64>,
    /// A seed scenario whose clicks refused SOLD_OUT each join the slot's
    /// waitlist at once; the line must hold one entry per join answered OK.
    #[arg(long)]
    join_waitlist: bool,
    /// The slot's own waitlist limit (default: the server's).
    #[arg(long, value_name = "N")]
    waitlist_limit: Option<i32>,
    /// With --join-waitlist: after the burst every winner cancels at once;
    /// the freed seats must all be offered to the first in line, none left
    /// public while entries wait.
    #[arg(long, requires = "join_waitlist")]
    cancel_storm: bool,
}

/// What a run is: which slots to open, which calls to make, how to fire
/// them, and what the outcome must be.
struct Plan {
    source: Source,
    fire: Fire,
    /// Slots to open, and each one's expected winners.
    slots: Vec<(pb::SlotRef, i32)>,
    /// Every call must book (spread, soak).
    all_book: bool,
    /// After the run every opened slot must be sold out.
    sold_out: bool,
    /// `--opens-in`: the slot opens later, the calls go at its opening.
    opening: Option<OpeningPlan>,
    /// `--join-waitlist`: refused clicks join the slot's waitlist.
    joins: bool,
}

/// A slot's opening, as planned: when, and the calls before it.
struct OpeningPlan {
    options: OpeningOptions,
    opening: Opening,
    /// The early calls (`options.early` of them).
    early: Source,
    /// `GetRemaining` right after the slot was opened.
    before: pb::GetRemainingResponse,
}

fn run_id() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn resolve_addr(host: &str) -> Result<SocketAddr, String> {
    let host = host.trim_start_matches("http://");
    host.to_socket_addrs().map_err(|e| format!("{host}: {e}"))?.next().ok_or_else(|| format!("{host}: no address"))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("slotgate-load: {e}");
            ExitCode::from(2)
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<Channel, String> {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a socket address makes a valid URI")
        .connect()
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))
}

pub(crate) fn with_metadata<T>(message: T, metadata: &[(String, String)]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (k, v) in metadata {
        if let (Ok(k), Ok(v)) = (k.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(), v.parse()) {
            request.metadata_mut().insert(k, v);
        }
    }
    request
}

/// A slot opened empty, with its opening when it has one, and what
/// `GetRemaining` said of it then.
struct Opened {
    slot: pb::SlotRef,
    opening: Option<Opening>,
    before: pb::GetRemainingResponse,
}

/// Opens a slot with no seats reserved yet, moving a minute on past slots
/// an earlier run filled. A slot counts as empty when both the database
/// (what `OpenSlots` reports) and the gate (`GetRemaining`) say so: a
/// counter that drifted from the database (until the reconciler's next
/// pass) would make every call a refusal, so such a slot is skipped, and
/// said so on stderr. With `opens_in`, each slot tried is opened with its
/// sale window starting that long from the `OpenSlots` call (`opens_at`,
/// a whole millisecond; no `closes_at`); without it, with no window.
async fn open_empty_slot(
    args: &Args,
    channel: Channel,
    md: &[(String, String)],
    opens_in: Option<Duration>,
) -> Result<Opened, String> {
    let mut admin = SlotAdminClient::new(channel.clone());
    let mut reservations = ReservationsClient::new(channel);
    let (h, m) = args.time.split_once(':').ok_or("--time must be HH:MM")?;
    let start = h.parse::<u32>().map_err(|_| "--time must be HH:MM")? * 60
        + m.parse::<u32>().map_err(|_| "--time must be HH:MM")?;
    for offset in 0..24 * 60 {
        let at = (start + offset) % (24 * 60);
        let slot = pb::SlotRef {
            restaurant_id: args.restaurant,
            date: args.date.clone(),
            time: format!("{:02}:{:02}", at / 60, at % 60),
        };
        let mut capacity = pb::SlotCapacity {
            slot: Some(slot.clone()),
            capacity: args.capacity,
            waitlist_limit: args.waitlist_limit,
            ..Default::default()
        };
        let opening = opens_in.map(Opening::after);
        if let Some(opening) = &opening {
            let at = capacity.opens_at.insert(Default::default());
            (at.seconds, at.nanos) = opening.seconds_nanos();
        }
        let request = pb::OpenSlotsRequest { slots: vec![capacity] };
        let opened =
            admin.open_slots(with_metadata(request, md)).await.map_err(|e| format!("OpenSlots: {e}"))?.into_inner();
        if opened.slots.first().is_none_or(|s| s.reserved != 0) {
            continue;
        }
        let request = with_metadata(pb::GetRemainingRequest { slot: Some(slot.clone()) }, md);
        let left = reservations.get_remaining(request).await.map_err(|e| format!("GetRemaining: {e}"))?.into_inner();
        if left.remaining == args.capacity {
            return Ok(Opened { slot, opening, before: left });
        }
        eprintln!(
            "skipping {} {} {}: the database has no seats reserved but GetRemaining says {} of {} \
             (the reconciler corrects such a counter on its next pass)",
            slot.restaurant_id, slot.date, slot.time, left.remaining, left.capacity
        );
    }
    Err("every slot of that day has reservations; pick another --date".into())
}

/// Opens `count` fresh slots (restaurants no earlier run used) of `capacity`.
async fn open_fresh_slots(
    args: &Args,
    admin: &mut SlotAdminClient<Channel>,
    md: &[(String, String)],
    count: usize,
    capacity: i32,
) -> Result<Vec<pb::SlotRef>, String> {
    let base = (run_id() / 1000 % 100_000_000) as i64 * 10_000;
    let slots: Vec<pb::SlotRef> = (0..count)
        .map(|i| pb::SlotRef { restaurant_id: base + i as i64, date: args.date.clone(), time: args.time.clone() })
        .collect();
    for batch in slots.chunks(5_000) {
        let request = pb::OpenSlotsRequest {
            slots: batch
                .iter()
                .map(|s| pb::SlotCapacity { slot: Some(s.clone()), capacity, ..Default::default() })
                .collect(),
        };
        admin.open_slots(with_metadata(request, md)).await.map_err(|e| format!("OpenSlots: {e}"))?;
    }
    Ok(slots)
}

pub(crate) fn create(request_id: String, user_id: String, slot: &pb::SlotRef, party_size: i32) -> Call {
    Call::Create(pb::CreateReservationRequest {
        request_id,
        user_id,
        slot: Some(slot.clone()),
        party_size,
        r#type: pb::ReservationType::ReservationDeposit as i32,
        menu_items: Vec::new(),
    })
}

/// The seed's scenario into `slot`: call `n` is click `n % clicks` of user
/// `n / clicks`, each click its own request id.
/// With `joins`, a click refused SOLD_OUT joins the slot's waitlist.
fn seed_calls(run: u128, slot: pb::SlotRef, clicks: usize, party: i32, joins: bool) -> Source {
    Arc::new(move |n, _| {
        let (user, click) = (n as usize / clicks, n as usize % clicks);
        let call = create(format!("load-{run}-u{user}-c{click}"), format!("load-{run}-u{user}"), &slot, party);
        Ok(match call {
            Call::Create(request) if joins => Call::CreateThenJoin(request),
            call => call,
        })
    })
}

/// Every call a new user, the slots taken in turn (spread and soak); with
/// `health`, every call the trivial one.
fn one_user_per_call(health: bool, run: u128, slots: Vec<pb::SlotRef>, party: i32) -> Source {
    if health {
        return Arc::new(|_, _| Ok(Call::Health));
    }
    Arc::new(move |n, _| {
        let slot = &slots[n as usize % slots.len()];
        Ok(create(format!("load-{run}-{n}"), format!("load-{run}-user-{n}"), slot, party))
    })
}

/// The scenario a run plays: `--scenario`, else custom with a ghz config,
/// else the seed's headline scenario.
fn scenario_of(args: &Args) -> String {
    match (&args.scenario, &args.config) {
        (Some(name), _) => name.clone(),
        (None, Some(_)) => "custom".into(),
        (None, None) => seed().headline.clone(),
    }
}

async fn plan(
    args: &Args,
    scenario: &str,
    config: &GhzConfig,
    addr: SocketAddr,
    md: &[(String, String)],
) -> Result<Plan, String> {
    let call = args.call.clone().or_else(|| config.call.clone()).unwrap_or_else(|| CREATE.into());
    let health = match call.replace('.', "/").as_str() {
        c if c.ends_with("Reservations/CreateReservation") => false,
        c if c.ends_with("Health/Check") => true,
        _ => return Err(format!("--call {call}: CreateReservation or {HEALTH}")),
    };
    let duration =
        args.duration.clone().or_else(|| config.duration.clone()).map(|d| ghz::go_duration(&d)).transpose()?;
    let timeout = args.timeout.clone().or_else(|| config.timeout.clone()).map(|t| ghz::go_duration(&t)).transpose()?;
    let mode = match (args.rps.or(config.rps), args.concurrency.or(config.concurrency)) {
        (Some(rps), _) if rps > 0 => Mode::Rate(f64::from(rps)),
        (_, Some(c)) if c > 0 => Mode::Workers(c),
        _ => Mode::AllAtOnce,
    };
    let mut fire = Fire {
        mode,
        total: args.total.or(config.total),
        duration,
        connections: args.connections.or(config.connections).unwrap_or(8),
        metadata: md.to_vec(),
        timeout: timeout.unwrap_or(Duration::from_secs(20)),
        start_at: None,
    };
    let seeded = seed().scenario(scenario).is_some();
    let opening = OpeningOptions::new(args.opens_in.as_deref(), args.early, seeded, health)?;
    let channel = connect(addr).await?;
    let mut admin = SlotAdminClient::new(channel.clone());
    let run = run_id();
    let party = args.party_size;

    if let Some(seeded) = seed().scenario(scenario) {
        let (users, clicks) = (seeded.users, seeded.clicks);
        fire.total = Some(seeded.calls() as u64);
        let opened = match health {
            true => None,
            false => Some(open_empty_slot(args, channel.clone(), md, opening.map(|o| o.opens_in)).await?),
        };
        let slot = opened.as_ref().map(|o| o.slot.clone());
        let source: Source = match slot.clone() {
            None => Arc::new(|_, _| Ok(Call::Health)),
            Some(slot) => seed_calls(run, slot, clicks, party, args.join_waitlist),
        };
        let opening = match (opening, opened) {
            (Some(options), Some(Opened { slot, opening: Some(opening), before })) => {
                Some(OpeningPlan { options, opening, early: opening::early_calls(run, slot, party), before })
            }
            _ => None,
        };
        // The definition's winners follow from its seats (checked when it is
        // read), so other seats or parties (--capacity, --party-size) follow
        // the same rule.
        let winners = scenarios::winners(args.capacity, party, users);
        return Ok(Plan {
            source,
            fire,
            slots: slot.into_iter().map(|s| (s, winners)).collect(),
            all_book: false,
            sold_out: winners * party == args.capacity,
            opening,
            joins: args.join_waitlist && !health,
        });
    }
    match scenario {
        "spread" => {
            // Every call a winner: the slots hold exactly the users sent.
            // The figure is sustained commits per second, so by default a
            // closed loop of workers keeps the database busy without making
            // ten thousand winners queue for its connections at once.
            if matches!(fire.mode, Mode::AllAtOnce) {
                fire.mode = Mode::Workers(128);
            }
            let count = args.slots.map_or(1_000, std::num::NonZeroUsize::get);
            let per_slot = (args.capacity / party).max(1) as usize;
            fire.total = Some((count * per_slot) as u64);
            let slots =
                if health { Vec::new() } else { open_fresh_slots(args, &mut admin, md, count, args.capacity).await? };
            let source = one_user_per_call(health, run, slots.clone(), party);
            let winners = per_slot as i32;
            Ok(Plan {
                source,
                fire,
                slots: slots.into_iter().map(|s| (s, winners)).collect(),
                all_book: !health,
                sold_out: true,
                opening: None,
                joins: false,
            })
        }
        "soak" => {
            // An arrival rate for a duration, over slots large enough that
            // every call books: the winners' full path at that rate.
            if matches!(fire.mode, Mode::AllAtOnce) {
                fire.mode = Mode::Rate(500.0);
            }
            if fire.total.is_none() && fire.duration.is_none() {
                fire.duration = Some(Duration::from_secs(30));
            }
            let count = args.slots.map_or(100, std::num::NonZeroUsize::get);
            let slots =
                if health { Vec::new() } else { open_fresh_slots(args, &mut admin, md, count, 1_000_000).await? };
            let source = one_user_per_call(health, run, slots, party);
            Ok(Plan {
                source,
                fire,
                slots: Vec::new(),
                all_book: !health,
                sold_out: false,
                opening: None,
                joins: false,
            })
        }
        "custom" => {
            if fire.total.is_none() && fire.duration.is_none() {
                return Err("custom: give -n or -z".into());
            }
            let source: Source = if health {
                Arc::new(|_, _| Ok(Call::Health))
            } else {
                let template = match (&args.data, config.data_template()?) {
                    (Some(d), _) => d.clone(),
                    (None, Some(t)) => t,
                    (None, None) => {
                        return Err("custom: give the call data (-d, or data or data-file in --config)".into());
                    }
                };
                Arc::new(move |n, worker| {
                    ghz::reservation_from_json(&ghz::render(&template, n, worker)?).map(Call::Create)
                })
            };
            Ok(Plan { source, fire, slots: Vec::new(), all_book: false, sold_out: false, opening: None, joins: false })
        }
        other => Err(format!("--scenario {other}: one of {}", seed().all_names().join(", "))),
    }
}

/// The outcome checks: winners per slot, nobody twice, sold out, nothing
/// unexpected.
async fn check(
    plan: &Plan,
    run: &fire::Run,
    stats: &Stats,
    addr: SocketAddr,
    md: &[(String, String)],
) -> Result<Vec<(String, bool)>, String> {
    let mut checks = vec![(format!("unexpected answers: {}", stats.unexpected), stats.unexpected == 0)];
    let booked: Vec<&pb::CreateReservationRequest> = run
        .samples
        .iter()
        .filter(|s| s.outcome.booked())
        .filter_map(|s| match &s.call {
            Call::Create(r) | Call::CreateThenJoin(r) => Some(r),
            Call::Health => None,
        })
        .collect();
    if plan.all_book {
        checks.push((
            format!("every call booked: {} of {}", booked.len(), run.samples.len()),
            booked.len() == run.samples.len(),
        ));
    }
    let mut per_slot: HashMap<(i64, String, String), i32> = HashMap::new();
    let mut holders = HashSet::new();
    let mut twice = 0;
    for r in &booked {
        let s = r.slot.as_ref().expect("requests name a slot");
        *per_slot.entry((s.restaurant_id, s.date.clone(), s.time.clone())).or_default() += 1;
        if !holders.insert((s.restaurant_id, s.date.clone(), s.time.clone(), r.user_id.clone())) {
            twice += 1;
        }
    }
    checks.push((format!("users who booked twice in a slot: {twice}"), twice == 0));
    if !plan.slots.is_empty() {
        let wrong = plan
            .slots
            .iter()
            .filter(|(s, expected)| {
                per_slot.get(&(s.restaurant_id, s.date.clone(), s.time.clone())).copied().unwrap_or(0) != *expected
            })
            .count();
        let expected = plan.slots.iter().map(|(_, w)| *w).sum::<i32>();
        checks.push((
            format!(
                "winners: {} (expected {expected}, exactly {} per slot; {wrong} slots off)",
                booked.len(),
                plan.slots[0].1
            ),
            wrong == 0,
        ));
    }
    if plan.sold_out && !plan.slots.is_empty() {
        let mut client = ReservationsClient::new(connect(addr).await?);
        let mut left = 0;
        for (slot, _) in &plan.slots {
            let request = with_metadata(pb::GetRemainingRequest { slot: Some(slot.clone()) }, md);
            left +=
                client.get_remaining(request).await.map_err(|e| format!("GetRemaining: {e}"))?.into_inner().remaining;
        }
        checks.push((format!("GetRemaining after the run: {left} (expected 0)"), left == 0));
    }
    Ok(checks)
}

/// A slot's opening: the early calls from now until shortly before the
/// opening (an open loop, spread evenly), and meanwhile the scenario's
/// calls made ready and released at the opening instant. Returns the
/// scenario's run and the early one.
async fn fire_at_opening(
    name: &str,
    addr: SocketAddr,
    plan: &Plan,
    opening: &OpeningPlan,
) -> Result<(fire::Run, Option<fire::Run>), String> {
    let (at, count) = (opening.opening.at, opening.options.early);
    let now = tokio::time::Instant::now();
    let left = at.saturating_duration_since(now);
    eprintln!("{name}: the slot opens at {} ({} ms from now)", opening.opening.rfc3339(), left.as_millis());
    let early = if count == 0 {
        None
    } else {
        let span = (at - opening::EARLY_MARGIN).saturating_duration_since(now);
        if span.is_zero() {
            return Err(format!(
                "the slot was opened too late for early calls: {} ms left before the opening, \
                 less than the {} ms margin; give a longer --opens-in",
                left.as_millis(),
                opening::EARLY_MARGIN.as_millis()
            ));
        }
        eprintln!(
            "{name}: {count} early calls over {} ms, until {} ms before the opening",
            span.as_millis(),
            opening::EARLY_MARGIN.as_millis()
        );
        let fire = fire::Fire {
            mode: Mode::Rate(opening::early_rate(count, span)),
            total: Some(count),
            duration: None,
            start_at: Some(now),
            ..plan.fire.clone()
        };
        Some(tokio::spawn(fire::fire(addr, Arc::clone(&opening.early), fire)))
    };
    let fire = fire::Fire { start_at: Some(at), ..plan.fire.clone() };
    let run = fire::fire(addr, Arc::clone(&plan.source), fire).await?;
    let early = match early {
        Some(task) => Some(task.await.map_err(|e| format!("early calls: {e}"))??),
        None => None,
    };
    Ok((run, early))
}

/// The opening's checks: the slot was not open before it, the early calls
/// met a closed slot, and no call of the burst did.
fn opening_checks(opening: &OpeningPlan, stats: &Stats, early: Option<&Early>) -> Vec<(String, bool)> {
    let o = &opening.opening;
    let before = &opening.before;
    let state =
        pb::SlotState::try_from(before.state).map_or_else(|_| before.state.to_string(), |s| s.as_str_name().into());
    let echoed = before.opens_at.as_ref().is_some_and(|t| o.is_timestamp(t.seconds, t.nanos));
    let mut checks = vec![(
        format!(
            "GetRemaining once opened: {state}, opens_at {} ({})",
            o.rfc3339(),
            if echoed { "as set" } else { "NOT as set" }
        ),
        before.state == pb::SlotState::NotYetOpen as i32 && echoed,
    )];
    let late = opening::burst_refused_not_open(&stats.outcomes);
    checks.push((format!("burst calls refused SLOT_NOT_OPEN: {late}"), late == 0));
    if let Some(early) = early {
        checks.extend(early.checks(o));
    }
    checks
}

async fn run(args: Args) -> Result<bool, String> {
    let config = match &args.config {
        Some(path) => GhzConfig::read(path)?,
        None => GhzConfig::default(),
    };
    let host = args
        .addr
        .clone()
        .or_else(|| args.host.clone())
        .or_else(|| config.host.clone())
        .unwrap_or_else(|| "127.0.0.1:50051".into());
    let addr = resolve_addr(&host)?;
    let metadata: Vec<(String, String)> = match (&args.metadata, &config.metadata) {
        (Some(json), _) => serde_json::from_str::<HashMap<String, String>>(json)
            .map_err(|e| format!("--metadata: {e}"))?
            .into_iter()
            .collect(),
        (None, Some(map)) => map.clone().into_iter().collect(),
        (None, None) => Vec::new(),
    };
    let scenario = scenario_of(&args);
    let name = args.name.clone().or_else(|| config.name.clone()).unwrap_or_else(|| scenario.clone());
    let format = args.format.clone().or_else(|| config.format.clone()).unwrap_or_else(|| "summary".into());
    let output = args.output.clone().or_else(|| config.output.clone().map(PathBuf::from));

    if config.count_errors == Some(false) {
        return Err("count-errors: false is not supported: every call counts in the latency figures".into());
    }
    let plan = plan(&args, &scenario, &config, addr, &metadata).await?;
    let mode = plan.fire.mode;
    let (total, connections) = (plan.fire.total, plan.fire.connections);
    eprintln!(
        "{name}: {} calls, {}, over {connections} connection(s), to {addr}",
        total.map_or("timed".into(), |t| t.to_string()),
        match mode {
            Mode::AllAtOnce => "all at once".to_owned(),
            Mode::Workers(c) => format!("{c} workers"),
            Mode::Rate(r) => format!("open loop at {r}/s"),
        }
    );
    let (run, early) = match &plan.opening {
        None => (fire::fire(addr, Arc::clone(&plan.source), plan.fire.clone()).await?, None),
        Some(opening) => fire_at_opening(&name, addr, &plan, opening).await?,
    };
    let stats = Stats::new(&run, fire::Outcome::expected_refusal);
    let mut checks = if args.no_checks { Vec::new() } else { check(&plan, &run, &stats, addr, &metadata).await? };
    let early = match (&plan.opening, early) {
        (Some(o), Some(early)) => Some(Early::new(&early, &o.opening)),
        _ => None,
    };
    if let (Some(o), false) = (&plan.opening, args.no_checks) {
        checks.extend(opening_checks(o, &stats, early.as_ref()));
    }
    let waitlisted = match (plan.joins, plan.slots.first(), args.no_checks) {
        (true, Some((slot, _)), false) => {
            let channel = connect(addr).await?;
            let figures = waitlist::check(&run, channel, slot, args.party_size, args.cancel_storm, &metadata).await?;
            checks.extend(figures.checks);
            Some(figures.json)
        }
        _ => None,
    };
    let opening_at = plan.opening.as_ref().map(|o| (o.opening, o.options.opens_in));

    let text = if format == "json" {
        let options = json!({
            "host": host, "call": args.call.clone().or(config.call.clone()).unwrap_or_else(|| CREATE.into()),
            "total": total, "connections": connections, "insecure": config.insecure.unwrap_or(true),
            "count-errors": true, "name": name, "proto": config.proto, "import-paths": config.import_paths,
            "concurrency": match mode { Mode::Workers(c) => c, _ => total.unwrap_or(0) as usize },
            "rps": match mode { Mode::Rate(r) => r as u32, _ => 0 },
            "CPUs": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        });
        let mut report = report::ghz_json(&run, &stats, options, &checks);
        if !plan.slots.is_empty() {
            report["slotgate"]["expected_winners"] = json!(plan.slots.iter().map(|(_, w)| *w).sum::<i32>());
        }
        if let Some(tags) = &config.tags {
            report["tags"] = json!(tags);
        }
        if let Some((opening, opens_in)) = &opening_at {
            report["slotgate"]["opening"] = opening::json(opening, *opens_in, run.started, early.as_ref());
        }
        if let Some(waitlist) = waitlisted {
            report["slotgate"]["waitlist"] = waitlist;
        }
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
    } else {
        let opening = opening_at.map(|(o, opens_in)| opening::summary(&o, opens_in, run.started, early.as_ref()));
        report::summary(&name, &stats, opening.as_deref().unwrap_or_default(), &checks)
    };
    match &output {
        Some(path) => std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?,
        None => println!("{text}"),
    }
    if let Some(dir) = &args.plots {
        plot::write(dir, &name, &name, &run).map_err(|e| format!("plots: {e}"))?;
    }
    Ok(checks.iter().all(|(_, ok)| *ok))
}
