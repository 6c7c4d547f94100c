//! The waitlist under load: a burst whose refused callers join the slot's
//! waitlist (`--join-waitlist`), and a cancel storm after it
//! (`--cancel-storm`): every winner cancels at once, and the freed seats
//! must all go to the line, none to the public counter.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slotgate::pb::{self, reservations_client::ReservationsClient, slot_admin_client::SlotAdminClient};
use tonic::transport::Channel;

use crate::{fire::Run, with_metadata};

/// `ErrorInfo.reason`-like label a joined call's sample carries (its code
/// is OK): it waits in line, it did not book.
pub const WAITLISTED: &str = "WAITLISTED";

/// The join a refused click makes: its own request id, the same party.
pub fn join_for(request: &pb::CreateReservationRequest) -> pb::JoinWaitlistRequest {
    pb::JoinWaitlistRequest {
        request_id: format!("join-{}", request.request_id),
        user_id: request.user_id.clone(),
        slot: request.slot.clone(),
        party_size: request.party_size,
    }
}

/// Every entry of a slot's waitlist, in line order.
async fn entries(
    admin: &mut SlotAdminClient<Channel>,
    slot: &pb::SlotRef,
    md: &[(String, String)],
) -> Result<Vec<pb::WaitlistEntry>, String> {
    let (mut all, mut token) = (Vec::new(), String::new());
    loop {
        let request = pb::ListWaitlistRequest { slot: Some(slot.clone()), page_size: 1_000, page_token: token };
        let page = admin
            .list_waitlist(with_metadata(request, md))
            .await
            .map_err(|e| format!("ListWaitlist: {e}"))?
            .into_inner();
        all.extend(page.entries);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}

/// What the waitlist run found, for the report.
pub struct Figures {
    pub checks: Vec<(String, bool)>,
    pub json: Value,
}

/// Checks the line after the burst: one entry per answer that joined, at
/// positions 1..n without a gap; then, with `storm`, cancels every winner
/// at once and checks that the freed seats went to the line in order.
pub async fn check(
    run: &Run,
    channel: Channel,
    slot: &pb::SlotRef,
    party: i32,
    storm: bool,
    md: &[(String, String)],
) -> Result<Figures, String> {
    let mut admin = SlotAdminClient::new(channel.clone());
    let joined = run.samples.iter().filter(|s| s.outcome.reason == WAITLISTED).count();
    let line = entries(&mut admin, slot, md).await?;
    let positions: Vec<i32> = line.iter().map(|e| e.position).collect();
    let dense = positions.iter().enumerate().all(|(i, &p)| p == i as i32 + 1);
    let mut checks = vec![
        (format!("joined the waitlist: {joined} answers, {} entries in line", line.len()), joined == line.len()),
        (format!("waitlist positions 1..{} without a gap", line.len()), dense),
    ];
    let mut json = json!({ "joined": joined, "entries": line.len() });
    if !storm {
        return Ok(Figures { checks, json });
    }

    // The winners, from the database's listing.
    let mut reservations = ReservationsClient::new(channel.clone());
    let request = pb::ListReservationsRequest {
        slot: Some(slot.clone()),
        statuses: vec![pb::ReservationStatus::PendingDeposit as i32],
        page_size: 1_000,
        ..Default::default()
    };
    let winners = reservations
        .list_reservations(with_metadata(request, md))
        .await
        .map_err(|e| format!("ListReservations: {e}"))?
        .into_inner()
        .reservations;
    let started = Instant::now();
    let cancels: Vec<_> = winners
        .iter()
        .map(|r| {
            let mut client = reservations.clone();
            let request = pb::CancelReservationRequest { id: r.id.clone(), reason: pb::CancelReason::User as i32 };
            let request = with_metadata(request, md);
            tokio::spawn(async move { client.cancel_reservation(request).await.is_ok() })
        })
        .collect();
    let mut failed = 0;
    for cancel in cancels {
        if !cancel.await.unwrap_or(false) {
            failed += 1;
        }
    }
    let took = started.elapsed();
    let remaining = {
        let request = with_metadata(pb::GetRemainingRequest { slot: Some(slot.clone()) }, md);
        reservations.get_remaining(request).await.map_err(|e| format!("GetRemaining: {e}"))?.into_inner().remaining
    };
    let after = entries(&mut admin, slot, md).await?;
    let offered: Vec<i32> =
        after.iter().filter(|e| e.state() == pb::WaitlistState::Offered).map(|e| e.position).collect();
    let seats: i32 = winners.iter().map(|r| r.party_size).sum();
    // Every entry has the burst's party: the freed seats make whole offers
    // for the first entries in line.
    let expected = (seats / party.max(1)).min(line.len() as i32);
    let in_order = offered.iter().enumerate().all(|(i, &p)| p == i as i32 + 1);
    let public = seats - expected * party;
    checks.push((format!("cancel storm: {} cancels, {failed} failed", winners.len()), failed == 0));
    checks.push((
        format!("offers after the storm: {} (expected {expected}, the first in line)", offered.len()),
        offered.len() as i32 == expected && in_order,
    ));
    checks.push((format!("GetRemaining after the storm: {remaining} (expected {public})"), remaining == public));
    json["cancel_storm"] = json!({
        "cancels": winners.len(), "took": duration_ns(took), "offers": offered.len(), "remaining": remaining,
    });
    eprintln!(
        "cancel storm: {} cancels in {:.1} ms, {} offers made, GetRemaining {remaining}",
        winners.len(),
        took.as_secs_f64() * 1e3,
        offered.len()
    );
    Ok(Figures { checks, json })
}

fn duration_ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fire::Call;

    #[test]
    fn a_refused_click_joins_with_a_request_id_of_its_own_and_the_same_party() {
        let slot = pb::SlotRef { restaurant_id: 67, date: "2036-12-24".into(), time: "19:00".into() };
        let source = crate::seed_calls(7, slot.clone(), 3, 4, true);
        let Call::CreateThenJoin(request) = source(5, "w").unwrap() else { panic!("a create that may join") };
        let join = join_for(&request);
        assert_eq!(join.request_id, format!("join-{}", request.request_id));
        assert_eq!(
            (join.user_id.as_str(), join.slot.as_ref(), join.party_size),
            (request.user_id.as_str(), Some(&slot), 4)
        );
        assert!(matches!(crate::seed_calls(7, slot, 3, 4, false)(5, "w").unwrap(), Call::Create(_)));
    }
}
