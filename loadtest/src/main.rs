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

mod checks;
#[cfg(test)]
mod consumers;
mod fire;
mod ghz;
#[cfg(test)]
mod ghz_files;
mod opening;
mod plan;
mod plot;
mod report;
mod scenarios;
mod waitlist;

use std::{
    collections::HashMap,
    net::{SocketAddr, ToSocketAddrs},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use checks::{check, opening_checks};
use clap::Parser;
use fire::Mode;
use ghz::GhzConfig;
use opening::Early;
#[cfg(test)]
use plan::seed_calls;
use plan::{OpeningPlan, Plan, create};
use report::Stats;
use scenarios::seed;
use serde_json::json;
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

/// The scenario a run plays: `--scenario`, else custom with a ghz config,
/// else the seed's headline scenario.
fn scenario_of(args: &Args) -> String {
    match (&args.scenario, &args.config) {
        (Some(name), _) => name.clone(),
        (None, Some(_)) => "custom".into(),
        (None, None) => seed().headline.clone(),
    }
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
    let plan = plan::plan(&args, &scenario, &config, addr, &metadata).await?;
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
