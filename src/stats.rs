//! What the service did, counted: atomics that tests read directly, and the
//! same figures as OpenTelemetry metrics (exported when an OTLP endpoint is
//! configured; the global meter is a no-op otherwise).
//!
//! Metric names: `slotgate.rpc.duration` (histogram, s, by method and status),
//! `slotgate.redis.pool.wait` and `slotgate.db.pool.wait` (histograms, s),
//! `slotgate.redis.pool.connections` and `slotgate.db.pool.connections`
//! (gauges, by state `in_use`/`idle`), `slotgate.gate.decisions` (counter, by
//! outcome), `slotgate.holds.in_flight` (gauge), `slotgate.db.transactions`,
//! `slotgate.db.checkouts`, `slotgate.counters.loaded`,
//! `slotgate.holds.reaped` (by end), `slotgate.counters.corrected` (counters).

use std::sync::{
    Arc,
    atomic::{AtomicI64, AtomicU64, Ordering},
};

use opentelemetry::{
    KeyValue, global,
    metrics::{Histogram, Meter},
};

#[derive(Debug)]
pub struct Counters {
    /// Requests the gate admitted (seats taken in Redis).
    pub gate_admitted: AtomicU64,
    /// Requests the gate refused (sold out, duplicate, reused id).
    pub gate_refused: AtomicU64,
    /// Winner transactions started in PostgreSQL.
    pub store_transactions: AtomicU64,
    /// Connections taken from the PostgreSQL pool, for any purpose: every
    /// time anything reached the database.
    pub db_checkouts: AtomicU64,
    /// Cold counters loaded from the database.
    pub counters_loaded: AtomicU64,
    /// Expired holds the reaper ended whose reservation had committed.
    pub holds_reaped_finalized: AtomicU64,
    /// Expired holds the reaper ended by giving their seats back.
    pub holds_reaped_released: AtomicU64,
    /// Counters the reconciler rewrote.
    pub counters_corrected: AtomicU64,
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

impl Default for Counters {
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
            holds_in_flight: AtomicI64::new(0),
            rpc_duration: seconds(&meter, "slotgate.rpc.duration", "Business calls, from arrival to answer"),
            redis_pool_wait: seconds(&meter, "slotgate.redis.pool.wait", "Waiting for a pooled Redis connection"),
            db_pool_wait: seconds(&meter, "slotgate.db.pool.wait", "Waiting for a pooled PostgreSQL connection"),
        }
    }
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Registers the observable metrics: the atomics above, and the pools'
    /// state as `pools()` reports it ((redis in use, idle), (db in use, idle)).
    pub fn observe(self: &Arc<Self>, pools: impl Fn() -> ((u32, u32), (u32, u32)) + Send + Sync + 'static) {
        let meter = global::meter("slotgate");
        let pools = Arc::new(pools);
        for (name, pick) in [("slotgate.redis.pool.connections", 0usize), ("slotgate.db.pool.connections", 1usize)] {
            let pools = Arc::clone(&pools);
            meter
                .u64_observable_gauge(name)
                .with_callback(move |gauge| {
                    let both = pools();
                    let (in_use, idle) = if pick == 0 { both.0 } else { both.1 };
                    gauge.observe(u64::from(in_use), &[KeyValue::new("state", "in_use")]);
                    gauge.observe(u64::from(idle), &[KeyValue::new("state", "idle")]);
                })
                .build();
        }
        let this = Arc::clone(self);
        meter
            .u64_observable_counter("slotgate.gate.decisions")
            .with_callback(move |c| {
                c.observe(Counters::read(&this.gate_admitted), &[KeyValue::new("outcome", "admitted")]);
                c.observe(Counters::read(&this.gate_refused), &[KeyValue::new("outcome", "refused")]);
            })
            .build();
        let this = Arc::clone(self);
        meter
            .i64_observable_gauge("slotgate.holds.in_flight")
            .with_callback(move |g| g.observe(this.holds_in_flight.load(Ordering::Relaxed), &[]))
            .build();
        let this = Arc::clone(self);
        meter
            .u64_observable_counter("slotgate.holds.reaped")
            .with_callback(move |c| {
                c.observe(Counters::read(&this.holds_reaped_finalized), &[KeyValue::new("end", "finalized")]);
                c.observe(Counters::read(&this.holds_reaped_released), &[KeyValue::new("end", "released")]);
            })
            .build();
        for (name, pick) in [
            ("slotgate.db.transactions", 0usize),
            ("slotgate.db.checkouts", 1),
            ("slotgate.counters.loaded", 2),
            ("slotgate.counters.corrected", 3),
        ] {
            let this = Arc::clone(self);
            meter
                .u64_observable_counter(name)
                .with_callback(move |c| {
                    let counter =
                        [&this.store_transactions, &this.db_checkouts, &this.counters_loaded, &this.counters_corrected]
                            [pick];
                    c.observe(Counters::read(counter), &[]);
                })
                .build();
        }
    }
}
