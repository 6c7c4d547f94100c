//! What the service did, counted: atomics that tests read directly, and the
//! same figures as OpenTelemetry metrics (exported when an OTLP endpoint is
//! configured; the global meter is a no-op otherwise).
//!
//! Metric names: `slotgate.rpc.duration` (histogram, s, by method and status),
//! `slotgate.redis.pool.wait` and `slotgate.db.pool.wait` (histograms, s),
//! `slotgate.redis.pool.connections` (only with the Redis gate, the one
//! strategy that has a Redis pool) and `slotgate.db.pool.connections`
//! (gauges, by state `in_use`/`idle`), `slotgate.gate.decisions` (counter, by
//! outcome), `slotgate.holds.in_flight` (gauge), `slotgate.db.transactions`,
//! `slotgate.db.checkouts`, `slotgate.counters.loaded`,
//! `slotgate.holds.reaped` (by end), `slotgate.counters.corrected`,
//! `slotgate.attempts.voided` (counters; "counters" there are the gate's
//! seat counters).

use std::sync::{
    Arc,
    atomic::{AtomicI64, AtomicU64, Ordering},
};

use opentelemetry::{
    KeyValue, global,
    metrics::{Histogram, Meter},
};

use crate::pools::{PoolState, PoolStates};

#[derive(Debug)]
pub struct Metrics {
    /// Requests the gate admitted (seats taken in Redis).
    pub gate_admitted: AtomicU64,
    /// Requests the gate refused (sold out, duplicate, reused id).
    pub gate_refused: AtomicU64,
    /// Winner transactions started in PostgreSQL.
    pub store_transactions: AtomicU64,
    /// Connections taken from the PostgreSQL pool, for any purpose: every
    /// time anything reached the database.
    pub db_checkouts: AtomicU64,
    /// Cold seat counters loaded from the database.
    pub counters_loaded: AtomicU64,
    /// Expired holds the reaper ended whose reservation had committed.
    pub holds_reaped_finalized: AtomicU64,
    /// Expired holds the reaper ended by releasing their seats.
    pub holds_reaped_released: AtomicU64,
    /// Seat counters the reconciler rewrote.
    pub counters_corrected: AtomicU64,
    /// Attempts voided because their caller left while the gate was
    /// deciding (each costs Redis one more release).
    pub attempts_voided: AtomicU64,
    /// Holds this process took and has not finalized or released yet.
    pub holds_in_flight: AtomicI64,
    pub rpc_duration: Histogram<f64>,
    pub redis_pool_wait: Histogram<f64>,
    pub db_pool_wait: Histogram<f64>,
}

fn seconds(meter: &Meter, name: &'static str, description: &'static str) -> Histogram<f64> {
    // Buckets from 100 µs to 10 s: pool waits are usually far below a
    // millisecond, burst latencies hundreds of milliseconds.
    let bounds =
        vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    meter.f64_histogram(name).with_unit("s").with_description(description).with_boundaries(bounds).build()
}

impl Default for Metrics {
    fn default() -> Self {
        let meter = global::meter("slotgate");
        Self {
            gate_admitted: AtomicU64::new(0),
            gate_refused: AtomicU64::new(0),
            store_transactions: AtomicU64::new(0),
            db_checkouts: AtomicU64::new(0),
            counters_loaded: AtomicU64::new(0),
            holds_reaped_finalized: AtomicU64::new(0),
            holds_reaped_released: AtomicU64::new(0),
            counters_corrected: AtomicU64::new(0),
            attempts_voided: AtomicU64::new(0),
            holds_in_flight: AtomicI64::new(0),
            rpc_duration: seconds(&meter, "slotgate.rpc.duration", "Business calls, from arrival to answer"),
            redis_pool_wait: seconds(&meter, "slotgate.redis.pool.wait", "Waiting for a pooled Redis connection"),
            db_pool_wait: seconds(&meter, "slotgate.db.pool.wait", "Waiting for a pooled PostgreSQL connection"),
        }
    }
}

/// One observation: a value and its attribute, if any.
type Reading = (u64, Option<KeyValue>);

/// Reads one pool's state out of both.
type PoolPick = fn(&PoolStates) -> Option<PoolState>;
/// Reads one metric's observations.
type Readings = fn(&Metrics) -> Vec<Reading>;

fn tagged(key: &'static str, value: &'static str) -> Option<KeyValue> {
    Some(KeyValue::new(key, value))
}

impl Metrics {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Registers the observable metrics: the atomics above, and the state of
    /// the pools as `pools` reports it when the exporter asks.
    pub fn observe(self: &Arc<Self>, pools: impl Fn() -> PoolStates + Send + Sync + 'static) {
        let meter = global::meter("slotgate");
        let pools = Arc::new(pools);
        let pool_gauges: [(&'static str, PoolPick); 2] =
            [("slotgate.redis.pool.connections", |p| p.redis), ("slotgate.db.pool.connections", |p| Some(p.database))];
        for (name, pick) in pool_gauges {
            let pools = Arc::clone(&pools);
            meter
                .u64_observable_gauge(name)
                .with_callback(move |gauge| {
                    if let Some(state) = pick(&pools()) {
                        gauge.observe(u64::from(state.in_use), &[KeyValue::new("state", "in_use")]);
                        gauge.observe(u64::from(state.idle), &[KeyValue::new("state", "idle")]);
                    }
                })
                .build();
        }
        let this = Arc::clone(self);
        meter
            .i64_observable_gauge("slotgate.holds.in_flight")
            .with_callback(move |g| g.observe(this.holds_in_flight.load(Ordering::Relaxed), &[]))
            .build();

        let counters: [(&'static str, Readings); 7] = [
            ("slotgate.gate.decisions", |m| {
                vec![
                    (Self::read(&m.gate_admitted), tagged("outcome", "admitted")),
                    (Self::read(&m.gate_refused), tagged("outcome", "refused")),
                ]
            }),
            ("slotgate.holds.reaped", |m| {
                vec![
                    (Self::read(&m.holds_reaped_finalized), tagged("end", "finalized")),
                    (Self::read(&m.holds_reaped_released), tagged("end", "released")),
                ]
            }),
            ("slotgate.db.transactions", |m| vec![(Self::read(&m.store_transactions), None)]),
            ("slotgate.db.checkouts", |m| vec![(Self::read(&m.db_checkouts), None)]),
            ("slotgate.counters.loaded", |m| vec![(Self::read(&m.counters_loaded), None)]),
            ("slotgate.counters.corrected", |m| vec![(Self::read(&m.counters_corrected), None)]),
            ("slotgate.attempts.voided", |m| vec![(Self::read(&m.attempts_voided), None)]),
        ];
        for (name, readings) in counters {
            let this = Arc::clone(self);
            meter
                .u64_observable_counter(name)
                .with_callback(move |c| {
                    for (value, attribute) in readings(&this) {
                        c.observe(value, attribute.as_slice());
                    }
                })
                .build();
        }
    }
}
