//! The events relay: numbered reservation events, published to RabbitMQ.
//!
//! With `--events-amqp-url`, every replica runs a relay, and exactly one
//! publishes at a time: the one holding a PostgreSQL session advisory lock
//! on a connection of its own. When that replica dies, its connection
//! closes, the lock goes with it, and another replica's relay, which tries
//! for the lock every second, takes over.
//!
//! The relay publishes each event to the durable topic exchange
//! `slotgate.events` with routing key `reservation.<type>.<restaurant id>`
//! (`reservation.created.67`), as protobuf's JSON mapping of
//! `ReservationEvent`, persistent, with `message_id` the event's sequence,
//! and waits for the broker's confirms. Only then does it record the last
//! sequence confirmed (`event_log.relayed_through`), so after a restart, a
//! broker outage or a takeover it resumes from there: every event is
//! delivered at least once, in sequence order, and a consumer that drops
//! `message_id`s it has seen gets each exactly once.

use std::{sync::Arc, time::Duration};

use chrono::SecondsFormat;
use diesel::{QueryableByName, sql_types::BigInt};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions},
    types::FieldTable,
};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    domain::EventFilter,
    links::{PgLink, Secret},
    pb,
    service::convert,
    store::{
        self, StoreError,
        events::{self, Event},
    },
};

/// The exchange events are published to.
pub const EXCHANGE: &str = "slotgate.events";

/// Session advisory lock of the relaying replica.
const RELAY_LOCK: i64 = 0x736c_6f74_6761_7465 + 3;

/// Events published per round of confirms.
const BATCH: i64 = 500;

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The broker's URL (it may carry a password), read at every connect,
    /// so a rotated secret file is used from the next one.
    pub amqp_url: Secret,
    pub database: Arc<PgLink>,
    /// The database connection's statement bound.
    pub bound: Duration,
    /// How often an idle relay looks for new events.
    pub poll: Duration,
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused event {0}")]
    Nacked(u64),
    #[error("{0}")]
    Url(String),
}

/// The AMQP URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &url[at + 1..]),
        (Some(_), None) => url.to_owned(),
        // Not a URL: it might be anything, a password included.
        (None, _) => "(not a URL)".to_owned(),
    }
}

/// Runs the relay until `stop` (see the module's doc).
pub async fn run(settings: RelaySettings, stop: CancellationToken) {
    let poll = settings.poll.max(Duration::from_millis(10));
    loop {
        let leading = async {
            let mut db = store::connect_bounded(&settings.database, settings.bound, "UTC").await?;
            if !try_lock(&mut db).await? {
                return Ok::<bool, RelayError>(false);
            }
            info!("relaying reservation events");
            // Holding the lock for as long as this connection lives; a
            // broker outage is waited out with it held.
            loop {
                match relay_while_connected(&settings, &mut db, poll, &stop).await {
                    Ok(()) => return Ok(true),
                    Err(RelayError::Store(e)) => return Err(e.into()),
                    Err(e) => {
                        warn!(error = %e, "events relay: broker unavailable; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(500)) => {}
                            () = stop.cancelled() => return Ok(true),
                        }
                    }
                }
            }
        };
        let outcome = tokio::select! {
            outcome = leading => outcome,
            () = stop.cancelled() => return,
        };
        if let Err(e) = outcome {
            warn!(error = %e, "events relay: database unavailable; retrying");
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn try_lock(db: &mut AsyncPgConnection) -> Result<bool, StoreError> {
    #[derive(QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let locked: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
        .bind::<BigInt, _>(RELAY_LOCK)
        .get_result(db)
        .await
        .map_err(StoreError::from)?;
    Ok(locked.locked)
}

/// Publishes from the last confirmed event on, until `stop` or an error.
async fn relay_while_connected(
    settings: &RelaySettings,
    db: &mut AsyncPgConnection,
    poll: Duration,
    stop: &CancellationToken,
) -> Result<(), RelayError> {
    let url = settings.amqp_url.read("--events-amqp-url").map_err(|e| RelayError::Url(e.to_string()))?;
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .map_err(|e| RelayError::Url(format!("broker {}: {e}", redacted(&url))))?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(EXCHANGE.into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        let after = events::relayed_through(db).await?;
        let page = events::events_after(db, after, &EventFilter::default(), BATCH).await?;
        if page.pruned_through > after {
            warn!(after, pruned_through = page.pruned_through, "events pruned before they were relayed");
        }
        let Some(last) = page.events.last().map(|e| e.sequence) else {
            tokio::select! {
                () = tokio::time::sleep(poll) => continue,
                () = stop.cancelled() => return Ok(()),
            }
        };
        publish(&channel, &page.events).await?;
        events::set_relayed_through(db, last).await?;
    }
}

/// Publishes `events` in order and waits for every confirm.
async fn publish(channel: &Channel, events: &[Event]) -> Result<(), RelayError> {
    let mut confirms = Vec::with_capacity(events.len());
    for event in events {
        let message = convert::event(event);
        let routing = format!("reservation.{}.{}", event.kind.as_str().to_lowercase(), event.restaurant_id);
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(event.sequence.to_string().into())
            .with_delivery_mode(2);
        let body = serde_json::to_vec(&event_json(&message)).unwrap_or_default();
        let confirm = channel
            .basic_publish(EXCHANGE.into(), routing.into(), BasicPublishOptions::default(), &body, properties)
            .await?;
        confirms.push((event.sequence, confirm));
    }
    for (sequence, confirm) in confirms {
        if !confirm.await?.is_ack() {
            return Err(RelayError::Nacked(sequence));
        }
    }
    Ok(())
}

/// A timestamp as protobuf's JSON mapping writes it (RFC 3339, UTC).
fn timestamp(t: &prost_types::Timestamp) -> Value {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map_or(Value::Null, |t| Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
}

/// Inserts `value` under `key` unless it is the field's default (the JSON
/// mapping leaves defaults out).
fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    let default = match &value {
        Value::Null => true,
        Value::String(s) => s.is_empty() || s == "0",
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if !default {
        map.insert(key.to_owned(), value);
    }
}

fn slot_json(m: &mut Map<String, Value>, slot: Option<&pb::SlotRef>) {
    if let Some(slot) = slot {
        m.insert(
            "slot".into(),
            json!({ "restaurantId": slot.restaurant_id.to_string(), "date": slot.date, "time": slot.time }),
        );
    }
}

fn reservation_json(r: &pb::Reservation) -> Value {
    let mut m = Map::new();
    put(&mut m, "id", json!(r.id));
    put(&mut m, "code", json!(r.code));
    slot_json(&mut m, r.slot.as_ref());
    put(&mut m, "userId", json!(r.user_id));
    put(&mut m, "partySize", json!(r.party_size));
    put(&mut m, "type", json!(r.r#type().as_str_name()));
    put(&mut m, "status", json!(r.status().as_str_name()));
    put(&mut m, "createdAt", r.created_at.as_ref().map_or(Value::Null, timestamp));
    put(&mut m, "requestId", json!(r.request_id));
    let items: Vec<Value> = r
        .items
        .iter()
        .map(|i| json!({ "menuId": i.menu_id.to_string(), "quantity": i.quantity, "unitPrice": i.unit_price.to_string() }))
        .collect();
    put(&mut m, "items", Value::Array(items));
    put(&mut m, "totalPrice", json!(r.total_price.to_string()));
    put(&mut m, "depositDeadline", r.deposit_deadline.as_ref().map_or(Value::Null, timestamp));
    if r.cancel_reason() != pb::CancelReason::Unspecified {
        m.insert("cancelReason".into(), json!(r.cancel_reason().as_str_name()));
    }
    Value::Object(m)
}

fn entry_json(e: &pb::WaitlistEntry) -> Value {
    let mut m = Map::new();
    put(&mut m, "id", json!(e.id));
    slot_json(&mut m, e.slot.as_ref());
    put(&mut m, "userId", json!(e.user_id));
    put(&mut m, "partySize", json!(e.party_size));
    put(&mut m, "state", json!(e.state().as_str_name()));
    put(&mut m, "position", json!(e.position));
    put(&mut m, "partiesAhead", json!(e.parties_ahead));
    put(&mut m, "offerReservationId", json!(e.offer_reservation_id));
    put(&mut m, "offerDeadline", e.offer_deadline.as_ref().map_or(Value::Null, timestamp));
    put(&mut m, "createdAt", e.created_at.as_ref().map_or(Value::Null, timestamp));
    Value::Object(m)
}

/// A `ReservationEvent` in protobuf's JSON mapping (field names in
/// lowerCamelCase, 64-bit integers as strings, enums by name, defaults
/// left out), as `grpcurl` and every protobuf JSON parser read it.
pub fn event_json(e: &pb::ReservationEvent) -> Value {
    let mut m = Map::new();
    put(&mut m, "sequence", json!(e.sequence.to_string()));
    put(&mut m, "type", json!(e.r#type().as_str_name()));
    if let Some(r) = &e.reservation {
        m.insert("reservation".into(), reservation_json(r));
    }
    put(&mut m, "occurredAt", e.occurred_at.as_ref().map_or(Value::Null, timestamp));
    put(&mut m, "caller", json!(e.caller));
    if let Some(entry) = &e.waitlist_entry {
        m.insert("waitlistEntry".into(), entry_json(entry));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_written_as_protobufs_json_mapping_and_urls_lose_their_password() {
        let event = pb::ReservationEvent {
            sequence: 42,
            r#type: pb::ReservationEventType::Cancelled as i32,
            reservation: Some(pb::Reservation {
                id: "r".into(),
                slot: Some(pb::SlotRef { restaurant_id: 67, date: "2036-12-24".into(), time: "19:00".into() }),
                party_size: 4,
                status: pb::ReservationStatus::Cancelled as i32,
                cancel_reason: pb::CancelReason::User as i32,
                created_at: Some(prost_types::Timestamp { seconds: 2_114_380_800, nanos: 500_000_000 }),
                ..Default::default()
            }),
            occurred_at: Some(prost_types::Timestamp { seconds: 2_114_380_800, nanos: 0 }),
            caller: String::new(),
            waitlist_entry: Some(pb::WaitlistEntry {
                id: "w".into(),
                state: pb::WaitlistState::Offered as i32,
                position: 3,
                ..Default::default()
            }),
        };
        let json = event_json(&event);
        assert_eq!(json["sequence"], "42");
        assert_eq!(json["type"], "RESERVATION_EVENT_TYPE_CANCELLED");
        assert_eq!(json["reservation"]["slot"]["restaurantId"], "67");
        assert_eq!(json["reservation"]["partySize"], 4);
        assert_eq!(json["reservation"]["status"], "CANCELLED");
        assert_eq!(json["reservation"]["cancelReason"], "CANCEL_REASON_USER");
        assert_eq!(json["reservation"]["createdAt"], "2037-01-01T00:00:00.500Z");
        assert_eq!(json["occurredAt"], "2037-01-01T00:00:00Z");
        assert!(json.get("caller").is_none() && json["reservation"].get("items").is_none());
        assert_eq!(json["waitlistEntry"]["state"], "WAITLIST_STATE_OFFERED");
        assert_eq!(json["waitlistEntry"]["position"], 3);
        assert!(json["waitlistEntry"].get("partiesAhead").is_none());
        assert_eq!(redacted("amqp://user:secret@broker:5672/%2f"), "amqp://***@broker:5672/%2f");
        assert_eq!(redacted("user:secret@broker"), "(not a URL)");
    }
}
