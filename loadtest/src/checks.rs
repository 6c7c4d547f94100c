//! The checks a run's outcome must pass: winners per slot, nobody twice,
//! sold out, nothing unexpected, and at a slot's opening, its own.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
};

use slotgate::pb::{self, reservations_client::ReservationsClient};

use crate::{
    connect,
    fire::{self, Call},
    opening::{self, Early},
    plan::{OpeningPlan, Plan},
    report::Stats,
    with_metadata,
};

/// The outcome checks: winners per slot, nobody twice, sold out, nothing
/// unexpected.
pub async fn check(
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

/// The opening's checks: the slot was not open before it, the early calls
/// met a closed slot, and no call of the burst did.
pub fn opening_checks(opening: &OpeningPlan, stats: &Stats, early: Option<&Early>) -> Vec<(String, bool)> {
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
