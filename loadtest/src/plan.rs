//! What a run is: the slots it opens, the calls it makes, how it fires
//! them, and what the outcome must be, from the options and the seed's
//! scenarios.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use slotgate::pb::{self, reservations_client::ReservationsClient, slot_admin_client::SlotAdminClient};
use tonic::transport::Channel;

use crate::{
    Args, CREATE, HEALTH, connect,
    fire::{Call, Fire, Mode, Source},
    ghz::{self, GhzConfig},
    opening::{self, Opening, OpeningOptions},
    run_id,
    scenarios::{self, seed},
    with_metadata,
};

/// What a run is: which slots to open, which calls to make, how to fire
/// them, and what the outcome must be.
pub struct Plan {
    pub source: Source,
    pub fire: Fire,
    /// Slots to open, and each one's expected winners.
    pub slots: Vec<(pb::SlotRef, i32)>,
    /// Every call must book (spread, soak).
    pub all_book: bool,
    /// After the run every opened slot must be sold out.
    pub sold_out: bool,
    /// `--opens-in`: the slot opens later, the calls go at its opening.
    pub opening: Option<OpeningPlan>,
    /// `--join-waitlist`: refused clicks join the slot's waitlist.
    pub joins: bool,
}

/// A slot's opening, as planned: when, and the calls before it.
pub struct OpeningPlan {
    pub options: OpeningOptions,
    pub opening: Opening,
    /// The early calls (`options.early` of them).
    pub early: Source,
    /// `GetRemaining` right after the slot was opened.
    pub before: pb::GetRemainingResponse,
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

pub fn create(request_id: String, user_id: String, slot: &pb::SlotRef, party_size: i32) -> Call {
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
pub fn seed_calls(run: u128, slot: pb::SlotRef, clicks: usize, party: i32, joins: bool) -> Source {
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

pub async fn plan(
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
