//! `slotgate-load`: fires the seed's scenarios at a running slotgate and
//! checks that the outcome is exact.
//!
//! Every virtual user's requests are created first and wait at a start line;
//! then all are released at once (like the seed's k6 VUs), spread over a
//! number of HTTP/2 connections. Expected refusals (SOLD_OUT, DUPLICATE) are
//! outcomes, not failures: only other codes count as errors.

mod report;

use std::{
    net::SocketAddr,
    process::ExitCode,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use slotgate::pb::{self, reservations_client::ReservationsClient, slot_admin_client::SlotAdminClient};
use tokio::sync::watch;
use tonic::transport::Channel;

use report::{Outcome, Report, Sample};

#[derive(Debug, Parser)]
#[command(name = "slotgate-load", about = "Fire the seed's reservation scenarios at slotgate and check the outcome")]
struct Args {
    /// slotgate's address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,

    /// burst-100, burst-200, burst-400, burst-800 (N users, one request
    /// each) or duplicate-2000 (2,000 users, three requests each at once).
    #[arg(long, default_value = "duplicate-2000", value_parser = parse_scenario)]
    scenario: Scenario,

    /// HTTP/2 connections to spread the requests over.
    #[arg(long, default_value_t = 8)]
    connections: usize,

    #[arg(long, default_value_t = 67)]
    restaurant: i64,

    /// Slot date, YYYY-MM-DD.
    #[arg(long, default_value = "2026-12-24")]
    date: String,

    /// First slot time to try, HH:MM. A slot that already has seats
    /// reserved (an earlier run) is skipped for the next minute's, so every
    /// run starts from an empty slot.
    #[arg(long, default_value = "19:00")]
    time: String,

    #[arg(long, default_value_t = 40)]
    capacity: i32,

    #[arg(long, default_value_t = 4)]
    party_size: i32,
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    users: usize,
    requests_per_user: usize,
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    let (users, requests_per_user, name) = match s {
        "burst-100" => (100, 1, "burst-100"),
        "burst-200" => (200, 1, "burst-200"),
        "burst-400" => (400, 1, "burst-400"),
        "burst-800" => (800, 1, "burst-800"),
        "duplicate-2000" => (2_000, 3, "duplicate-2000"),
        _ => return Err("one of burst-100, burst-200, burst-400, burst-800, duplicate-2000".into()),
    };
    Ok(Scenario { name, users, requests_per_user })
}

/// The load tool shares the machine with the server it measures: the
/// cheaper its own allocations, the more of the machine the server gets.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("slotgate-load: {e}");
            ExitCode::from(2)
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("http://{addr}")).expect("a socket address makes a valid URI").connect().await
}

/// Opens a slot with no seats reserved yet, starting at the given time and
/// moving a minute on past slots an earlier run filled.
async fn open_empty_slot(args: &Args, admin: &mut SlotAdminClient<Channel>) -> Result<pb::SlotRef, tonic::Status> {
    let (hour, minute) = args
        .time
        .split_once(':')
        .and_then(|(h, m)| Some((h.parse::<u32>().ok()?, m.parse::<u32>().ok()?)))
        .ok_or_else(|| tonic::Status::invalid_argument("--time must be HH:MM"))?;
    let start = hour * 60 + minute;
    for offset in 0..24 * 60 {
        let at = (start + offset) % (24 * 60);
        let slot = pb::SlotRef {
            restaurant_id: args.restaurant,
            date: args.date.clone(),
            time: format!("{:02}:{:02}", at / 60, at % 60),
        };
        let opened = admin
            .open_slots(pb::OpenSlotsRequest {
                slots: vec![pb::SlotCapacity { slot: Some(slot.clone()), capacity: args.capacity }],
            })
            .await?
            .into_inner();
        if opened.slots.first().is_some_and(|s| s.reserved == 0) {
            return Ok(slot);
        }
    }
    Err(tonic::Status::failed_precondition("every slot of that day has reservations; pick another --date"))
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let scenario = args.scenario;
    let mut admin = SlotAdminClient::new(connect(args.addr).await?);
    let slot = open_empty_slot(&args, &mut admin).await?;
    // Request ids must be new on every run, or they would replay old ones.
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();

    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections.max(1) {
        clients.push(ReservationsClient::new(connect(args.addr).await?));
    }
    let total = scenario.users * scenario.requests_per_user;
    let (go, start_line) = watch::channel(None::<Instant>);
    let mut tasks = Vec::with_capacity(total);
    for user in 0..scenario.users {
        for click in 0..scenario.requests_per_user {
            let request = pb::CreateReservationRequest {
                request_id: format!("load-{run_id}-u{user}-c{click}"),
                user_id: format!("load-{run_id}-u{user}"),
                slot: Some(slot.clone()),
                party_size: args.party_size,
                r#type: pb::ReservationType::ReservationDeposit as i32,
                menu_items: Vec::new(),
            };
            let mut client = clients[tasks.len() % clients.len()].clone();
            let mut start_line = start_line.clone();
            tasks.push(tokio::spawn(async move {
                let _ = start_line.wait_for(Option::is_some).await;
                let sent = Instant::now();
                let result = client.create_reservation(request).await;
                Sample { user, sent, answered: Instant::now(), outcome: Outcome::of(&result) }
            }));
        }
    }

    println!(
        "{}: {} users x {} request(s) = {total} calls into {}:{} {} ({} seats, party of {}) over {} connection(s)",
        scenario.name,
        scenario.users,
        scenario.requests_per_user,
        slot.restaurant_id,
        slot.date,
        slot.time,
        args.capacity,
        args.party_size,
        clients.len()
    );
    let started = Instant::now();
    go.send(Some(started))?;
    let mut samples = Vec::with_capacity(total);
    for task in tasks {
        samples.push(task.await?);
    }

    let remaining = ReservationsClient::new(connect(args.addr).await?)
        .get_remaining(pb::GetRemainingRequest { slot: Some(slot.clone()) })
        .await?
        .into_inner()
        .remaining;
    let report = Report::new(started, samples);
    report.print();
    Ok(report.check(args.capacity / args.party_size, remaining))
}
