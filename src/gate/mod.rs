//! The Redis side: one Lua script call admits or refuses a request.
//!
//! The seat counter (`left`) is an admission filter, not the truth:
//! PostgreSQL is the final arbiter, so a counter that is wrong costs
//! throughput, never an overbooking. The scripts are in the `.lua` files
//! beside this module, each with a header naming its keys, arguments and
//! replies. This file has what a reservation's way through needs (acquire,
//! finalize, release, give back); `upkeep` what loads, reads and keeps the
//! counters true (warm, remaining, probe, reconcile, resize, expired
//! holds); `waitlist` the waitlist's joins; `keys` the key layout; [`conn`]
//! the connections; `shared` the connections every call shares; `call` how
//! a script call reaches Redis over them.

mod call;
pub mod conn;
mod decision;
mod keys;
mod shared;
mod upkeep;
mod waitlist;

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use redis::{RedisError, Script};
use tracing::{Instrument, field::Empty, info_span};

use self::{
    call::{Call, Eval},
    conn::{GateConnectionManager, Owner, is_connection_failure},
    keys::{HOLDS, IDS, Key, RequestKey, SEATS, SlotKeys, Text, USERS, VoidKey, WAITERS},
    shared::SharedConnections,
};
pub use self::{
    decision::{Admission, Shut},
    keys::oldest_kept,
    upkeep::{ExpiredHold, Overwrite, Probe, Reconciled, Warm},
    waitlist::JoinDecision,
};
use crate::{
    domain::{ReservationId, SlotKey},
    links::RedisLink,
    pools::{PoolSettings, PoolState, Pooled, WaitRecording},
};

/// What a [`Gate::release`] ends besides the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Keep the id's user and fingerprint entries: the id names a
    /// reservation that exists and is active.
    KeepEntries,
    /// Drop the user's entry, keep the id's: the id names a reservation
    /// that exists but has ended (cancelled, expired).
    ForgetUser,
    /// Drop them too: nothing was booked.
    Forget,
    /// The attempt's acquire reply was lost: forget, and mark the attempt
    /// void for a hold lease, so that its acquire, if it has not run yet
    /// (it may reach Redis after this call), takes nothing.
    Void,
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// Redis could not be reached in time (pool wait, connect or reply
    /// timeout, connection lost). Retryable.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered something the gate does not understand (a script
    /// error, a reply of the wrong shape). A bug or a foreign key clash.
    #[error("redis reply not understood: {0}")]
    Protocol(String),
    /// The namespace holds the keys of another deployment (see
    /// [`Gate::check_owner`]).
    #[error("{0}")]
    Foreign(String),
}

impl From<RedisError> for GateError {
    fn from(e: RedisError) -> Self {
        if is_connection_failure(&e) || is_out_of_memory(&e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Protocol(e.to_string())
        }
    }
}

/// Redis refused a write because it reached `maxmemory` (with the
/// `noeviction` policy slotgate needs): retryable once memory is freed.
fn is_out_of_memory(e: &RedisError) -> bool {
    e.code() == Some("OOM") || e.to_string().contains("OOM command not allowed")
}

/// Pool and lease settings of the gate.
#[derive(Debug, Clone, Copy)]
pub struct GateSettings {
    pub pool: PoolSettings,
    /// Lease of a hold.
    pub lease: Duration,
    /// A slot's waitlist limit unless it has its own.
    pub waitlist_limit: i32,
}

/// A fresh attempt nonce. `RandomState` is seeded from the OS once per
/// process and differs per call, so nonces differ across attempts and
/// replicas without a random-number dependency.
pub fn attempt_nonce() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

/// Every script call is idempotent for its attempt (acquire and release by
/// the attempt's nonce, finalize and give back by the hold and the user's
/// entry, resize and the loads by the slot's version), so a call whose
/// connection dropped is sent again on another: after Redis restarts, every
/// idle pooled connection is dead and fails at once, so after the shared
/// connection up to one more than the pool holds are tried. A call that
/// timed out is not sent again: Redis may be stalled, and the caller's undo
/// takes over.
struct Scripts {
    acquire: Script,
    release: Script,
    finalize: Script,
    give_back: Script,
    distrust: Script,
    warm: Script,
    resize: Script,
    reconcile: Script,
    expired_holds: Script,
    remaining: Script,
    clock: Script,
    join: Script,
    unjoin: Script,
}

/// The Redis gate: its connections (shared, and a pool behind them), the
/// key namespace and the scripts.
pub struct Gate {
    shared: SharedConnections,
    pool: Pooled<GateConnectionManager>,
    /// How taking a connection is recorded (a shared one as a pooled one).
    waits: WaitRecording,
    link: Arc<RedisLink>,
    owner: Owner,
    /// The last owner check, or a pool's connect, found another
    /// deployment's marker: the gate is off.
    foreign: Arc<AtomicBool>,
    namespace: String,
    lease_ms: u64,
    /// Connections a call whose connection dropped tries (see [`Scripts`]).
    tries: usize,
    /// One Redis, not a Cluster: acquire also reads and writes the
    /// request's record, which lives outside the slot's hash slot.
    request_records: bool,
    /// A slot's waitlist limit unless it has its own.
    waitlist_limit: i32,
    scripts: Scripts,
}

impl Gate {
    /// Builds the pool without connecting: the service starts (and answers
    /// UNAVAILABLE) while Redis is down, and connects once it is up. Every
    /// connection claims `namespace` for `deployment` (see [`Owner`]).
    pub fn new(
        link: Arc<RedisLink>,
        namespace: &str,
        deployment: &str,
        settings: GateSettings,
        pool_waits: opentelemetry::metrics::Histogram<f64>,
    ) -> Self {
        let request_records = !link.settings().cluster;
        let owner = Owner::new(namespace, deployment);
        let foreign = Arc::new(AtomicBool::new(false));
        let manager = GateConnectionManager::new(Arc::clone(&link), owner.clone(), Arc::clone(&foreign));
        let waits = WaitRecording { span: || info_span!("redis.pool.wait"), histogram: pool_waits };
        Self {
            shared: SharedConnections::new(Arc::clone(&link), manager.clone(), settings.pool.timeout),
            pool: Pooled::new(manager, "redis", settings.pool, waits.clone()),
            waits,
            link,
            owner,
            foreign,
            namespace: namespace.to_owned(),
            lease_ms: settings.lease.as_millis() as u64,
            tries: settings.pool.size as usize + 1,
            request_records,
            waitlist_limit: settings.waitlist_limit,
            scripts: Scripts {
                acquire: Script::new(concat!(include_str!("window.lua"), include_str!("acquire.lua"))),
                release: Script::new(include_str!("release.lua")),
                finalize: Script::new(concat!(include_str!("versions.lua"), include_str!("finalize.lua"))),
                give_back: Script::new(concat!(include_str!("versions.lua"), include_str!("give_back.lua"))),
                distrust: Script::new(include_str!("distrust.lua")),
                warm: Script::new(concat!(
                    include_str!("versions.lua"),
                    include_str!("figures.lua"),
                    include_str!("warm.lua")
                )),
                resize: Script::new(concat!(include_str!("versions.lua"), include_str!("resize.lua"))),
                reconcile: Script::new(concat!(
                    include_str!("versions.lua"),
                    include_str!("figures.lua"),
                    include_str!("reconcile.lua")
                )),
                expired_holds: Script::new(include_str!("expired_holds.lua")),
                remaining: Script::new(include_str!("remaining.lua")),
                clock: Script::new(include_str!("clock.lua")),
                join: Script::new(concat!(include_str!("window.lua"), include_str!("join.lua"))),
                unjoin: Script::new(include_str!("unjoin.lua")),
            },
        }
    }

    fn keys(&self, slot: &SlotKey) -> SlotKeys {
        SlotKeys::new(&self.namespace, slot)
    }

    pub fn pool_state(&self) -> PoolState {
        self.pool.state()
    }

    /// Decides one request: see `acquire.lua`. `nonce` names this attempt
    /// (see [`attempt_nonce`]) in the hold it may make.
    pub async fn acquire(
        &self,
        slot: &SlotKey,
        id: ReservationId,
        user: &str,
        party: i32,
        fingerprint: i64,
        nonce: u64,
    ) -> Result<Admission, GateError> {
        let span = info_span!("gate.acquire", slot = %slot, party_size = party, outcome = Empty, remaining = Empty);
        let decision = async {
            // Every request's call: its keys and arguments are written
            // straight into the command (those of SlotKeys and the
            // script's own invocation would each be a string first).
            let name = slot.to_string();
            let prefix = keys::prefix(&self.namespace, &name);
            let mut eval = Eval::new(&self.scripts.acquire, if self.request_records { 7 } else { 6 });
            let key = |suffix| Text(Key(&prefix, suffix));
            eval.cmd.arg(key(SEATS)).arg(key(USERS)).arg(key(IDS)).arg(key(HOLDS));
            eval.cmd.arg(Text(VoidKey(&prefix, nonce))).arg(key(WAITERS));
            if self.request_records {
                eval.cmd.arg(Text(RequestKey(&self.namespace, id)));
            }
            eval.cmd
                .arg(Text(id))
                .arg(user)
                .arg(party)
                .arg(fingerprint)
                .arg(self.lease_ms)
                .arg(nonce)
                .arg(keys::expire_at(slot))
                .arg(&name);
            let (code, detail): (i64, String) = self.call(Call::Eval(&eval)).await?;
            Admission::decode(code, &detail)
        }
        .instrument(span.clone())
        .await;
        if let Ok(Admission::Admitted { remaining } | Admission::SoldOut { remaining }) = &decision {
            span.record("remaining", remaining);
        }
        span.record("outcome", decision.as_ref().map_or("ERROR", Admission::name));
        decision
    }

    /// The reservation committed, leaving the slot at `version`: end the
    /// hold of attempt `nonce`, keep its seats. Returns whether it ended one.
    pub async fn finalize(
        &self,
        slot: &SlotKey,
        id: ReservationId,
        nonce: u64,
        user: &str,
        version: i64,
    ) -> Result<bool, GateError> {
        let k = self.keys(slot);
        let ended: i64 = self
            .invoke(
                self.scripts
                    .finalize
                    .key(&k.seats)
                    .key(&k.users)
                    .key(&k.holds)
                    .arg(id.to_string())
                    .arg(nonce)
                    .arg(user)
                    .arg(version)
                    .arg(k.expire_at),
            )
            .instrument(info_span!("gate.finalize", slot = %slot))
            .await?;
        Ok(ended == 1)
    }

    /// Releases the hold of attempt `nonce`, if it made one: the hold ends
    /// and its seats go back to the counter, once; see [`Release`] for what
    /// else goes. Returns the seats released.
    pub async fn release(
        &self,
        slot: &SlotKey,
        id: ReservationId,
        user: &str,
        nonce: u64,
        how: Release,
    ) -> Result<i64, GateError> {
        self.release_keeping(slot, id, user, nonce, how, false).await
    }

    /// As [`Gate::release`]; with `withhold`, the seats are kept out of the
    /// counter: the slot's waitlist gets them first (the caller offers them
    /// in the database and then has the counter loaded afresh).
    pub async fn release_keeping(
        &self,
        slot: &SlotKey,
        id: ReservationId,
        user: &str,
        nonce: u64,
        how: Release,
        withhold: bool,
    ) -> Result<i64, GateError> {
        let k = self.keys(slot);
        let forget = match how {
            Release::KeepEntries => 0,
            Release::Forget | Release::Void => 1,
            Release::ForgetUser => 2,
        };
        let void_ms = if how == Release::Void { self.lease_ms.max(1) } else { 0 };
        let mut invocation = k.invoke(&self.scripts.release);
        invocation.key(k.void(nonce));
        if self.request_records {
            invocation.key(SlotKeys::request(&self.namespace, id));
        }
        invocation
            .arg(id.to_string())
            .arg(user)
            .arg(nonce)
            .arg(forget)
            .arg(void_ms)
            .arg(&k.name)
            .arg(u8::from(withhold));
        self.invoke(&invocation).await
    }

    /// A committed reservation ended (cancelled, expired), leaving the slot
    /// at `version`: gives its seats back to the counter, once. Returns the
    /// seats given back.
    pub async fn give_back(
        &self,
        slot: &SlotKey,
        id: ReservationId,
        user: &str,
        party: i32,
        version: i64,
    ) -> Result<i64, GateError> {
        let k = self.keys(slot);
        self.invoke(
            self.scripts
                .give_back
                .key(&k.seats)
                .key(&k.users)
                .arg(id.to_string())
                .arg(user)
                .arg(party)
                .arg(version)
                .arg(k.expire_at),
        )
        .await
    }

    /// The gate knows request `id` of `user` but the database has no row of
    /// it and no hold is in flight: makes the slot cold (see
    /// `distrust.lua`), so the next request reloads it. Returns whether it
    /// did.
    pub async fn distrust(&self, slot: &SlotKey, id: ReservationId, user: &str) -> Result<bool, GateError> {
        let k = self.keys(slot);
        let cold: i64 = self.invoke(k.invoke(&self.scripts.distrust).arg(id.to_string()).arg(user)).await?;
        Ok(cold == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_nonces_differ_from_call_to_call() {
        let nonces: std::collections::HashSet<u64> = (0..1_000).map(|_| attempt_nonce()).collect();
        assert_eq!(nonces.len(), 1_000);
    }
}
