//! Counters of what the service did, read by tests (and, later, exported as
//! metrics). Relaxed atomics: each is a tally, not a synchronisation point.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
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
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
