//! Domain and store types into proto messages.

use chrono::{DateTime, Utc};

use crate::{
    pb,
    store::{
        Reservation,
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
    };
    pb::ReservationEvent {
        sequence: e.sequence,
        r#type: kind as i32,
        reservation: Some(reservation(e.reservation.clone())),
        occurred_at: Some(timestamp(e.occurred_at)),
        caller: e.caller.clone(),
    }
}
