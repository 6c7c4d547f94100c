//! Domain and store types into proto messages.

use chrono::{DateTime, Utc};

use crate::{
    pb,
    store::{
        Entry, Reservation,
        events::{Event, EventKind},
    },
};

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

pub fn reservation(r: Reservation) -> pb::Reservation {
    let total_price = r.items.iter().map(|i| i64::from(i.quantity) * i.unit_price).sum();
    pb::Reservation {
        id: r.id.to_string(),
        code: r.code,
        slot: Some(r.slot.to_proto()),
        user_id: r.user_id,
        party_size: r.party_size,
        r#type: r.kind.to_proto() as i32,
        status: r.status.to_proto() as i32,
        created_at: Some(timestamp(r.created_at)),
        request_id: r.request_id,
        items: r
            .items
            .iter()
            .map(|i| pb::ReservedItem { menu_id: i.menu_id, quantity: i.quantity, unit_price: i.unit_price })
            .collect(),
        total_price,
        deposit_deadline: r.deposit_deadline.map(timestamp),
        cancel_reason: r.cancel_reason.map_or(pb::CancelReason::Unspecified, |c| c.to_proto()) as i32,
    }
}

pub fn event(e: &Event) -> pb::ReservationEvent {
    let kind = match e.kind {
        EventKind::Created => pb::ReservationEventType::Created,
        EventKind::Confirmed => pb::ReservationEventType::Confirmed,
        EventKind::Cancelled => pb::ReservationEventType::Cancelled,
        EventKind::Expired => pb::ReservationEventType::Expired,
        EventKind::WaitlistJoined => pb::ReservationEventType::WaitlistJoined,
        EventKind::WaitlistOffered => pb::ReservationEventType::WaitlistOffered,
        EventKind::WaitlistLapsed => pb::ReservationEventType::WaitlistLapsed,
        EventKind::WaitlistLeft => pb::ReservationEventType::WaitlistLeft,
    };
    pb::ReservationEvent {
        sequence: e.sequence,
        r#type: kind as i32,
        reservation: e.reservation.clone().map(reservation),
        occurred_at: Some(timestamp(e.occurred_at)),
        caller: e.caller.clone(),
        waitlist_entry: e.entry.clone().map(entry),
    }
}

pub fn entry(e: Entry) -> pb::WaitlistEntry {
    pb::WaitlistEntry {
        id: e.id.to_string(),
        slot: Some(e.slot.to_proto()),
        user_id: e.user_id,
        party_size: e.party_size,
        state: e.state.to_proto() as i32,
        position: e.position,
        parties_ahead: e.parties_ahead,
        offer_reservation_id: e.offer_reservation_id.map(|r| r.to_string()).unwrap_or_default(),
        offer_deadline: e.offer_deadline.map(timestamp),
        created_at: Some(timestamp(e.created_at)),
    }
}
