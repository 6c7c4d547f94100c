//! The events relay to a real RabbitMQ: at least once through a broker
//! outage and a `kill -9` of the relaying replica; deduplicated by
//! `message_id`, exactly once and in order.

use std::{
    collections::HashSet,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use lapin::{
    Connection, ConnectionProperties, ExchangeKind,
    options::{BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use slotgate::relay::EXCHANGE;

use crate::{
    fault_kit::SlotgateProcess,
    helpers::{Patience, eventually, reserve, slot_at, spawn_app_by_hand},
};

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A message as the consumer got it: message id, routing key, content
/// type, body.
type Received = (String, String, String, serde_json::Value);

/// Consumes `queue` (bound to the events exchange with `#`) until dropped,
/// reconnecting while the broker is down.
fn consume(queue: String, into: Arc<Mutex<Vec<Received>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let session = async {
                let connection = Connection::connect(BROKER, ConnectionProperties::default()).await?;
                let channel = connection.create_channel().await?;
                let mut consumer = channel
                    .basic_consume(
                        queue.as_str().into(),
                        "relay-test".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                while let Some(delivery) = consumer.next().await {
                    let delivery = delivery?;
                    let p = &delivery.properties;
                    let id = p.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
                    let kind = p.content_type().as_ref().map(|s| s.to_string()).unwrap_or_default();
                    let body = serde_json::from_slice(&delivery.data).unwrap_or_default();
                    into.lock().unwrap().push((id, delivery.routing_key.to_string(), kind, body));
                    delivery.ack(BasicAckOptions::default()).await?;
                }
                Ok::<_, lapin::Error>(())
            };
            let _ = session.await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

/// Stops RabbitMQ's application; starts it again when dropped, whatever
/// happened in between.
struct BrokerStopped;

fn rabbitmqctl(command: &str) {
    let status = Command::new("rabbitmqctl").args(["-q", command]).status().expect("rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {command}: {status}");
}

impl BrokerStopped {
    fn now() -> Self {
        rabbitmqctl("stop_app");
        Self
    }
}

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        rabbitmqctl("start_app");
    }
}

/// Distinct message ids received so far.
fn distinct(received: &Mutex<Vec<Received>>) -> usize {
    received.lock().unwrap().iter().map(|r| r.0.clone()).collect::<HashSet<_>>().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_delivers_every_event_through_a_broker_outage_and_a_takeover() {
    let app = spawn_app_by_hand().await;
    let slot = slot_at("19:00");
    app.open(&[(slot.clone(), 400)]).await;

    // The consumer's queue, durable so the outage loses nothing for it.
    let queue = format!("slotgate-relay-test-{}", app.namespace);
    {
        let connection = Connection::connect(BROKER, ConnectionProperties::default()).await.expect("RabbitMQ");
        let channel = connection.create_channel().await.unwrap();
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel.exchange_declare(EXCHANGE.into(), ExchangeKind::Topic, durable, FieldTable::default()).await.unwrap();
        let options = QueueDeclareOptions { durable: true, ..Default::default() };
        channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await.unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                EXCHANGE.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    let received = Arc::new(Mutex::new(Vec::new()));
    let consumer = consume(queue.clone(), Arc::clone(&received));

    let mut env = app.env_by_hand();
    env.push(("SLOTGATE_EVENTS_AMQP_URL".into(), BROKER.into()));
    let mut first = SlotgateProcess::start(env.clone()).await;
    let book = async |from: usize, to: usize| {
        for u in from..to {
            app.create(reserve(&format!("r-{u}"), &format!("user-{u}"), &slot, 2)).await.unwrap();
        }
    };
    let patience = Patience::up_to(Duration::from_secs(60)).every(Duration::from_millis(100));
    let received_all = async |n: usize| {
        let got = eventually(patience, async || distinct(&received), |got| *got >= n).await;
        assert_eq!(got, n, "{got} of {n} events reached the consumer");
    };

    book(0, 20).await;
    received_all(20).await;

    // The broker goes away for a few seconds while reservations go on.
    {
        let _stopped = BrokerStopped::now();
        book(20, 40).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    received_all(40).await;

    // A second replica waits its turn; the relaying one is killed.
    let _second = SlotgateProcess::start(env).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill();
    book(40, 60).await;
    received_all(60).await;
    // The waitlist's events take the same way.
    let small = slot_at("19:30");
    app.open(&[(small.clone(), 2)]).await;
    app.create(reserve("r-alice", "alice", &small, 2)).await.unwrap();
    crate::waitlist::join(&app, "j-bob", "bob", &small, 2).await.unwrap();
    received_all(62).await;
    consumer.abort();

    // Deduplicated by message id: each event once, first seen in order.
    let received = received.lock().unwrap().clone();
    let mut seen = HashSet::new();
    let mut firsts = Vec::new();
    for (id, routing, content_type, body) in &received {
        assert_eq!(content_type, "application/json");
        assert_eq!(body["sequence"].as_str(), Some(id.as_str()), "{body}");
        if id.parse::<u64>().unwrap() <= 61 {
            assert_eq!(routing, "reservation.created.67");
            assert_eq!(body["type"], "RESERVATION_EVENT_TYPE_CREATED");
        } else {
            assert_eq!(routing, "reservation.waitlist_joined.67");
            assert_eq!(body["type"], "RESERVATION_EVENT_TYPE_WAITLIST_JOINED");
            assert_eq!(body["waitlistEntry"]["state"], "WAITLIST_STATE_WAITING", "{body}");
            assert_eq!(body["waitlistEntry"]["userId"], "bob", "{body}");
        }
        if seen.insert(id.clone()) {
            firsts.push(id.parse::<u64>().unwrap());
        }
    }
    assert_eq!(firsts, (1..=62).collect::<Vec<u64>>(), "not every event, once, in order");
    println!("{} messages for 62 events (redelivered: {})", received.len(), received.len() - 62);

    let connection = Connection::connect(BROKER, ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let _ = channel.queue_delete(queue.as_str().into(), Default::default()).await;
}
