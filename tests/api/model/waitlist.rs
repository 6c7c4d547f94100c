//! The waitlist's part of the sequential model: joins, leaves, offers made
//! when seats come back, lapses and acceptances, and their checks.

use std::collections::HashMap;

use diesel::{QueryableByName, sql_query};
use diesel_async::RunQueryDsl;
use slotgate::{
    domain::{EntryId, OfferPlan, Waiter, WaitlistState as State, plan_offers},
    pb,
};
use tonic::Code;

use super::{Booked, Failure, Model, Probe, Status, WINDOW_SECS, slot_index, slots};
use crate::helpers::TestApp;

/// The server's waitlist limit in the model's app (small, so lines fill).
pub const LIMIT: usize = 4;

pub struct Entry {
    pub id: String,
    pub user: u64,
    pub slot: usize,
    pub party: i32,
    pub position: i32,
    pub state: State,
    pub passed: i32,
    /// The request id its offer's reservation is booked under.
    pub offer: Option<String>,
}

/// The waitlist side of the model.
#[derive(Default)]
pub struct Lines {
    /// Entries by their join's request id.
    pub entries: HashMap<String, Entry>,
    /// The request id each `Join` step sent, by the step's label.
    pub sent: HashMap<usize, String>,
    pub set_aside: [i32; super::CAPACITIES.len()],
    pub last_position: [i32; super::CAPACITIES.len()],
}

impl Model {
    fn in_line(&self, slot: usize) -> Vec<&Entry> {
        let mut waiting: Vec<&Entry> =
            self.lines.entries.values().filter(|e| e.slot == slot && e.state == State::Waiting).collect();
        waiting.sort_by_key(|e| e.position);
        waiting
    }

    /// Whether `user` is in `slot`'s line: a user in line books through it
    /// (an offer) or leaves it first.
    pub fn waits(&self, user: u64, slot: usize) -> bool {
        self.lines.entries.values().any(|e| e.user == user && e.slot == slot && e.state == State::Waiting)
    }

    /// Seats public in a slot.
    pub fn left(&self, slot: usize) -> i32 {
        self.capacity[slot] - self.seats_taken(slot) - self.lines.set_aside[slot]
    }

    fn decide_join(&self, user: u64, slot: usize, party: i32) -> Result<(), (Code, &'static str)> {
        let queued = self
            .lines
            .entries
            .values()
            .any(|e| e.user == user && e.slot == slot && matches!(e.state, State::Waiting | State::Offered));
        if self.closed[slot] {
            Err((Code::FailedPrecondition, "SLOT_CLOSED"))
        } else if self.holds(user, slot) || queued {
            Err((Code::AlreadyExists, "DUPLICATE"))
        } else if self.left(slot) >= party {
            Err((Code::FailedPrecondition, "SEATS_AVAILABLE"))
        } else if self.in_line(slot).len() >= LIMIT {
            Err((Code::FailedPrecondition, "WAITLIST_FULL"))
        } else {
            Ok(())
        }
    }

    /// `seats` came back in `slot` (a cancel, an expiry, a raise, an offer
    /// given up; none when an entry leaves with seats set aside): they and
    /// the seats set aside are offered to the line by the rule, if it has a
    /// say.
    pub fn offer_round(&mut self, slot: usize, seats: i32) {
        if self.in_line(slot).is_empty() && self.lines.set_aside[slot] == 0 {
            return;
        }
        // Users who booked seats of their own meanwhile leave the line.
        let gone: Vec<String> = self
            .lines
            .entries
            .iter()
            .filter(|(_, e)| e.slot == slot && e.state == State::Waiting && self.holds(e.user, slot))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.lines.entries.get_mut(&k).unwrap().state = State::Left;
        }
        let line: Vec<(String, i32, i32)> =
            self.in_line(slot).iter().map(|e| (e.id.clone(), e.party, e.passed)).collect();
        let waiters: Vec<Waiter> =
            line.iter().map(|&(_, party_size, passed_over)| Waiter { party_size, passed_over }).collect();
        // A slot whose sales ended makes no offers.
        let plan = if self.closed[slot] {
            OfferPlan::default()
        } else {
            let pool = (seats + self.lines.set_aside[slot]).min(self.capacity[slot] - self.seats_taken(slot));
            plan_offers(pool, &waiters, self.capacity[slot])
        };
        for &i in &plan.passed {
            self.entry_by_id(&line[i].0).passed += 1;
        }
        for &i in &plan.offered {
            let now = self.now;
            let entry = self.entry_by_id(&line[i].0);
            let request_id = EntryId(entry.id.parse().unwrap()).offer_request_id();
            entry.state = State::Offered;
            entry.offer = Some(request_id.clone());
            let booked = Booked {
                id: String::new(),
                request: pb::CreateReservationRequest::default(),
                user: entry.user,
                slot,
                party: entry.party,
                status: Status::Pending,
                deadline: now + WINDOW_SECS,
            };
            self.booked.insert(request_id, booked);
        }
        self.lines.set_aside[slot] = plan.set_aside;
    }

    fn entry_by_id(&mut self, id: &str) -> &mut Entry {
        self.lines.entries.values_mut().find(|e| e.id == id).unwrap()
    }

    /// An offer's reservation ended (`status`): its entry moves with it.
    pub fn offer_ended(&mut self, request_id: &str, status: Status) {
        if let Some(e) = self.lines.entries.values_mut().find(|e| e.offer.as_deref() == Some(request_id))
            && e.state == State::Offered
        {
            e.state = match status {
                Status::Confirmed => State::Accepted,
                Status::Expired => State::Lapsed,
                _ => State::Left,
            };
        }
    }

    /// A capacity change of `slot` from `before` to the model's capacity:
    /// set-aside seats a cut leaves no room for go; seats a raise adds come
    /// back to the line; set-aside seats are planned again for the new
    /// capacity.
    pub fn resized(&mut self, slot: usize, before: i32) {
        let had_say = !self.in_line(slot).is_empty() || self.lines.set_aside[slot] > 0;
        let aside_before = self.lines.set_aside[slot];
        let room = self.capacity[slot] - self.seats_taken(slot);
        self.lines.set_aside[slot] = self.lines.set_aside[slot].min(room);
        let raised = self.capacity[slot] - before;
        if (raised > 0 && had_say) || (raised != 0 && aside_before > 0) {
            self.offer_round(slot, raised.max(0));
        }
    }
}

fn join_request(label: usize, user: u64, slot: &pb::SlotRef, party: i32) -> pb::JoinWaitlistRequest {
    pb::JoinWaitlistRequest {
        request_id: format!("join-{label}"),
        user_id: format!("user-{user}"),
        slot: Some(slot.clone()),
        party_size: party,
    }
}

pub async fn join(
    app: &TestApp,
    model: &mut Model,
    label: usize,
    user: u64,
    slot: usize,
    party: i32,
) -> Result<(), Failure> {
    let request = join_request(label, user, &slots()[slot], party);
    let answer = app.reservations.clone().join_waitlist(request.clone()).await.map(tonic::Response::into_inner);
    match (model.decide_join(user, slot, party), answer) {
        (Ok(()), Ok(got)) => {
            let position = model.lines.last_position[slot] + 1;
            let ahead = model.in_line(slot).len() as i32;
            ensure!(got.state() == pb::WaitlistState::Waiting, "join: state {:?}", got.state());
            ensure!(
                (got.position, got.parties_ahead) == (position, ahead),
                "join: {:?}",
                (got.position, got.parties_ahead)
            );
            model.lines.last_position[slot] = position;
            model.lines.sent.insert(label, request.request_id.clone());
            let entry =
                Entry { id: got.id, user, slot, party, position, state: State::Waiting, passed: 0, offer: None };
            model.lines.entries.insert(request.request_id, entry);
        }
        (Err(expected), Err(status)) => {
            let got = crate::helpers::reason_of(&status);
            ensure!((got.0, got.1.as_str()) == expected, "join: expected {expected:?}, got {got:?}");
        }
        (expected, got) => {
            return Err(Failure(format!("join: expected {expected:?}, got {:?}", got.map(|e| e.id))));
        }
    }
    Ok(())
}

/// The entry the `Join` step labelled `of` made, if any: (request id, id).
fn joined_by(model: &Model, of: usize) -> Option<(String, String)> {
    let request_id = model.lines.sent.get(&of)?;
    Some((request_id.clone(), model.lines.entries.get(request_id)?.id.clone()))
}

pub async fn leave(app: &TestApp, model: &mut Model, of: usize) -> Result<(), Failure> {
    let Some((request_id, id)) = joined_by(model, of) else { return Ok(()) };
    let answer = app
        .reservations
        .clone()
        .leave_waitlist(pb::LeaveWaitlistRequest { id })
        .await
        .map(|e| e.into_inner().state())
        .map_err(|e| crate::helpers::reason_of(&e));
    let entry = &model.lines.entries[&request_id];
    let (slot, state, offer) = (entry.slot, entry.state, entry.offer.clone());
    match state {
        State::Waiting | State::Offered | State::Left => {
            ensure!(answer == Ok(pb::WaitlistState::Left), "leave from {state:?}: {answer:?}");
        }
        State::Accepted | State::Lapsed => {
            let ended = Err((Code::FailedPrecondition, "WAITLIST_ENTRY_ENDED".to_owned()));
            ensure!(answer == ended, "leave from {state:?}: {answer:?}");
        }
    }
    match (state, offer) {
        (State::Waiting, _) => {
            model.lines.entries.get_mut(&request_id).unwrap().state = State::Left;
            if model.lines.set_aside[slot] > 0 {
                model.offer_round(slot, 0);
            }
        }
        (State::Offered, Some(offer)) => {
            let booked = model.booked.get_mut(&offer).unwrap();
            booked.status = Status::Cancelled;
            let party = booked.party;
            model.offer_ended(&offer, Status::Cancelled);
            model.offer_round(slot, party);
        }
        _ => {}
    }
    Ok(())
}

/// Confirms the offer of the entry the `Join` step labelled `of` made.
pub async fn accept(app: &TestApp, model: &mut Model, of: usize) -> Result<(), Failure> {
    let Some((request_id, id)) = joined_by(model, of) else { return Ok(()) };
    let Some(offer) = model.lines.entries[&request_id].offer.clone() else { return Ok(()) };
    let got = app.reservations.clone().get_waitlist_entry(pb::GetWaitlistEntryRequest { id }).await;
    let offer_id = got.map_err(|e| Failure(format!("get entry: {e:?}")))?.into_inner().offer_reservation_id;
    let answer = app
        .reservations
        .clone()
        .confirm_reservation(pb::ConfirmReservationRequest { id: offer_id })
        .await
        .map(|r| r.into_inner().status())
        .map_err(|e| crate::helpers::reason_of(&e));
    let now = model.now;
    let booked = model.booked.get_mut(&offer).unwrap();
    let expected = match booked.status {
        Status::Pending if now < booked.deadline => Ok(pb::ReservationStatus::Confirmed),
        Status::Confirmed => Ok(pb::ReservationStatus::Confirmed),
        Status::Pending | Status::Expired => Err((Code::FailedPrecondition, "DEPOSIT_EXPIRED".to_owned())),
        Status::Cancelled => Err((Code::FailedPrecondition, "NOT_CONFIRMABLE".to_owned())),
    };
    ensure!(answer == expected, "accept: expected {expected:?}, got {answer:?}");
    let (before, slot, party) = (booked.status, booked.slot, booked.party);
    booked.status = match (before, &expected) {
        (Status::Pending, Ok(_)) => Status::Confirmed,
        (Status::Pending, Err(_)) => Status::Expired,
        (status, _) => status,
    };
    if before == Status::Pending {
        let after = model.booked[&offer].status;
        model.offer_ended(&offer, after);
        if after == Status::Expired {
            model.offer_round(slot, party);
        }
    }
    Ok(())
}

/// The entries and set-aside seats in the database against the model.
pub async fn check(probe: &mut Probe, model: &Model) -> Result<(), Failure> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        request_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        state: String,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        position: i32,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        passed_over: i32,
    }
    let rows: Vec<Row> = sql_query("SELECT request_id, state, position, passed_over FROM waitlist_entries")
        .load(&mut probe.database)
        .await
        .map_err(|e| Failure(e.to_string()))?;
    let actual: HashMap<String, (String, i32, i32)> =
        rows.into_iter().map(|r| (r.request_id, (r.state, r.position, r.passed_over))).collect();
    let expected: HashMap<String, (String, i32, i32)> = model
        .lines
        .entries
        .iter()
        .map(|(k, e)| (k.clone(), (e.state.as_str().to_owned(), e.position, e.passed)))
        .collect();
    ensure!(actual == expected, "waitlist: database {actual:?}, model {expected:?}");

    #[derive(QueryableByName)]
    struct Aside {
        #[diesel(sql_type = diesel::sql_types::Text)]
        time: String,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        set_aside: i32,
    }
    let rows: Vec<Aside> =
        sql_query("SELECT to_char(slot_time, 'HH24:MI') AS time, set_aside FROM slots ORDER BY slot_time")
            .load(&mut probe.database)
            .await
            .map_err(|e| Failure(e.to_string()))?;
    for row in rows {
        let slot = slot_index(&crate::helpers::slot_at(&row.time));
        ensure!(
            row.set_aside == model.lines.set_aside[slot],
            "slot {slot}: set aside {}, model {}",
            row.set_aside,
            model.lines.set_aside[slot]
        );
    }
    Ok(())
}
