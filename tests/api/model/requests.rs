//! The model's creates: the request a `Create` step sends, and the check
//! of each answer against the model.

use slotgate::pb;
use tonic::Code;

use super::{Booked, Failure, MENU, MISSING_ITEM, Model, Status, WINDOW_SECS, slot_index, user_of};
use crate::helpers::{TestApp, reason_of, reserve};

/// Sends a create (new, replayed or reused) and checks the answer against
/// the model, updating it.
pub async fn create(app: &TestApp, model: &mut Model, request: pb::CreateReservationRequest) -> Result<(), Failure> {
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
            (Ok(()), answer) if names_missing_item(&request) => {
                let got = answer.map(|r| r.id).map_err(|e| reason_of(&e));
                ensure!(got == Err((Code::NotFound, "MENU_ITEM_NOT_FOUND".into())), "missing item: got {got:?}");
            }
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

fn names_missing_item(request: &pb::CreateReservationRequest) -> bool {
    request.menu_items.iter().any(|i| i.menu_id == MISSING_ITEM)
}

/// The request a `Create` step sends.
pub fn create_request(
    label: usize,
    user: u64,
    slot: &pb::SlotRef,
    party: i32,
    items: u8,
) -> pb::CreateReservationRequest {
    let request = reserve(&format!("req-{label}"), &format!("user-{user}"), slot, party);
    let menu_items = match items {
        0 => return request,
        1 => vec![pb::MenuItemOrder { menu_id: MENU[label % 2].0, quantity: party }],
        _ => vec![pb::MenuItemOrder { menu_id: MISSING_ITEM, quantity: 1 }],
    };
    pb::CreateReservationRequest { r#type: pb::ReservationType::PreorderPrepay as i32, menu_items, ..request }
}
