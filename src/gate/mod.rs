//! The Redis side: one Lua script call admits or refuses a request.
//!
//! # Key layout
//!
//! Every key of a slot carries the slot as its hash tag, so one script only
//! touches keys of one Redis Cluster hash slot:
//!
//! ```text
//! {ns}:{67:2026-01-16:11:00}:seats   hash  left, cap, epoch
//! {ns}:{67:2026-01-16:11:00}:users   hash  user id -> reservation id
//! {ns}:{67:2026-01-16:11:00}:ids     hash  reservation id -> fingerprint
//! {ns}:{67:2026-01-16:11:00}:holds   hash  reservation id -> party|user|lease deadline|nonce
//! {ns}:{67:2026-01-16:11:00}:void:N  string, for one hold lease: attempt N gave up on a lost
//!                                    reply; its acquire, if it still runs, takes nothing
//! ```
//!
//! The counter (`left`) is an admission filter, not the truth: PostgreSQL is
//! the final arbiter, so a counter that is wrong costs throughput, never an
//! overbooking. The scripts are in the `.lua` files beside this module, each
//! with a header naming its keys, arguments and replies.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bb8::{ManageConnection, Pool, PooledConnection, RunError};
use redis::{
    AsyncConnectionConfig, Client, RedisError, RedisFuture, Script, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
};
use tracing::{Instrument, field::Empty, info_span};

use crate::{
    domain::{ReservationId, SlotKey},
    pools::ConnectFailures,
    stats::Counters,
};

/// The gate's decision on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// Seats taken and a hold recorded; `remaining` seats are left.
    Admitted {
        remaining: i64,
    },
    /// No counter for the slot: load it from the database and ask again.
    Cold,
    SoldOut {
        remaining: i64,
    },
    /// The user already holds `existing` in this slot.
    Duplicate {
        existing: ReservationId,
    },
    /// This request id was admitted before with the same payload; `held`
    /// while its transaction is still in flight.
    Replay {
        held: bool,
    },
    /// This request id was admitted before with another payload.
    Reused,
}

/// What a reconcile pass did to one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// The state was rewritten; the counter said `left_before`.
    Corrected {
        left_before: i64,
    },
    AlreadyRight,
    /// A hold was in flight or the slot changed meanwhile: left alone.
    Busy,
    /// No counter: nothing to correct (the next request loads it).
    Cold,
}

impl SlotFigures {
    /// Appends the holders and fingerprints as `warm.lua` and
    /// `reconcile.lua` read them: a count of holders, the holders' (user,
    /// id) pairs, then (id, fingerprint) pairs.
    fn push_args(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        invocation.arg(self.holders.len());
        for (user, id) in &self.holders {
            invocation.arg(user).arg(id.to_string());
        }
        for (id, fingerprint) in &self.fingerprints {
            invocation.arg(id.to_string()).arg(fingerprint);
        }
    }
}

/// A hold whose lease has run out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredHold {
    pub id: ReservationId,
    pub user: String,
    pub party: i32,
    pub nonce: u64,
}

impl ExpiredHold {
    /// Parses `party|user|deadline|nonce` (the user may contain '|').
    fn parse(id: &str, value: &str) -> Option<Self> {
        let (party, rest) = value.split_once('|')?;
        let (rest, nonce) = rest.rsplit_once('|')?;
        let (user, _deadline) = rest.rsplit_once('|')?;
        Some(Self {
            id: id.parse().ok()?,
            user: user.to_owned(),
            party: party.parse().ok()?,
            nonce: nonce.parse().ok()?,
        })
    }
}

/// A slot's counter state, read before its database figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub left: Option<i64>,
    pub capacity: Option<i64>,
    pub epoch: Option<String>,
    pub holds: i64,
    pub users: i64,
}

/// A slot's state as the database knows it, to load a cold counter from.
#[derive(Debug, Clone, Default)]
pub struct SlotFigures {
    pub capacity: i32,
    pub reserved: i32,
    /// (user id, reservation id) of every active reservation.
    pub holders: Vec<(String, ReservationId)>,
    /// (reservation id, request fingerprint) of every reservation of the
    /// slot, whatever its status: a replay of any of them must be recognised
    /// as one, not mistaken for a duplicate or a new request.
    pub fingerprints: Vec<(ReservationId, i64)>,
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
}

impl From<RedisError> for GateError {
    fn from(e: RedisError) -> Self {
        if is_connection_failure(&e) { Self::Unavailable(e.to_string()) } else { Self::Protocol(e.to_string()) }
    }
}

fn is_connection_failure(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// A connection to a single Redis or to a Redis Cluster. Every script
/// touches keys of one hash slot only, so both serve the gate alike.
#[derive(Clone)]
pub enum RedisConnection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A pooled connection that remembers whether it failed.
pub struct GateConnection {
    conn: RedisConnection,
    broken: bool,
}

/// Opens the pool's Redis connections. bb8-redis's manager would do, but it
/// can set neither the connect nor the reply timeout, and its `has_broken`
/// always says no, so a pool would keep dead connections after Redis
/// restarts unless every checkout pinged first (`test_on_check_out`),
/// doubling the round trips of every request. Here a connection that failed
/// at the connection level is flagged and bb8 drops it.
#[derive(Clone)]
pub enum GateConnectionManager {
    Single { client: Client, config: AsyncConnectionConfig },
    Cluster(ClusterClient),
}

impl std::fmt::Debug for GateConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single { .. } => "GateConnectionManager::Single",
            Self::Cluster(_) => "GateConnectionManager::Cluster",
        })
    }
}

impl ManageConnection for GateConnectionManager {
    type Connection = GateConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<GateConnection, RedisError> {
        let conn = match self {
            Self::Single { client, config } => {
                RedisConnection::Single(client.get_multiplexed_async_connection_with_config(config).await?)
            }
            Self::Cluster(client) => RedisConnection::Cluster(client.get_async_connection().await?),
        };
        Ok(GateConnection { conn, broken: false })
    }

    async fn is_valid(&self, conn: &mut GateConnection) -> Result<(), RedisError> {
        redis::cmd("PING").query_async::<()>(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut GateConnection) -> bool {
        conn.broken
    }
}

/// Pool and timeout settings of the gate.
#[derive(Debug, Clone, Copy)]
pub struct GateSettings {
    pub pool_size: u32,
    /// Longest wait for a pooled connection.
    pub pool_timeout: Duration,
    /// Longest wait to open a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a reply to one command.
    pub command_timeout: Duration,
    /// Lease of a hold.
    pub lease: Duration,
    /// `redis_url` lists the seed nodes of a Redis Cluster.
    pub cluster: bool,
}

/// A fresh attempt nonce. `RandomState` is seeded from the OS once per
/// process and differs per call, so nonces differ across attempts and
/// replicas without a random-number dependency.
pub fn attempt_nonce() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

struct Scripts {
    acquire: Script,
    release: Script,
    finalize: Script,
    give_back: Script,
    warm: Script,
    resize: Script,
    reconcile: Script,
    expired_holds: Script,
}

/// The Redis gate: a connection pool, the key namespace and the scripts.
pub struct Gate {
    pool: Pool<GateConnectionManager>,
    pool_timeout: Duration,
    failures: ConnectFailures,
    namespace: String,
    lease_ms: u64,
    scripts: Scripts,
    counters: Arc<Counters>,
}

/// What a [`Gate::release`] ends besides the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Keep the id's user and fingerprint entries: the id names a
    /// reservation that exists and is active.
    KeepEntries,
    /// Drop them too: nothing was booked.
    Forget,
    /// The attempt's acquire reply was lost: forget, and mark the attempt
    /// void for a hold lease, so that its acquire, if it has not run yet
    /// (it may reach Redis after this call), takes nothing.
    Void,
}

/// The four keys of one slot, in the order the scripts expect them, and
/// the prefix they share.
struct SlotKeys {
    prefix: String,
    seats: String,
    users: String,
    ids: String,
    holds: String,
}

impl SlotKeys {
    /// The void marker of attempt `nonce` (see release.lua); it carries the
    /// slot's hash tag like the other keys.
    fn void(&self, nonce: u64) -> String {
        format!("{}:void:{nonce}", self.prefix)
    }

    /// An invocation of `script` with all four keys (seats, users, ids,
    /// holds) as KEYS[1..4].
    fn invoke<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.key(&self.seats);
        invocation.key(&self.users).key(&self.ids).key(&self.holds);
        invocation
    }
}

impl Gate {
    /// Builds the pool without connecting: the service starts (and answers
    /// UNAVAILABLE) while Redis is down, and connects once it is up.
    pub fn new(
        redis_url: &str,
        namespace: &str,
        settings: GateSettings,
        counters: Arc<Counters>,
    ) -> Result<Self, GateError> {
        let manager = if settings.cluster {
            let seeds: Vec<&str> = redis_url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            let client = ClusterClientBuilder::new(seeds)
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.command_timeout)
                .build()
                .map_err(GateError::from)?;
            GateConnectionManager::Cluster(client)
        } else {
            GateConnectionManager::Single {
                client: Client::open(redis_url).map_err(GateError::from)?,
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(settings.command_timeout)),
            }
        };
        let failures = ConnectFailures::new("redis");
        let pool = Pool::builder()
            .max_size(settings.pool_size)
            .connection_timeout(settings.pool_timeout)
            .test_on_check_out(false)
            // A refused connect is not retried in the background; the next
            // checkout tries again (see `pools`).
            .retry_connection(false)
            .error_sink(Box::new(failures.clone()))
            .build_unchecked(manager);
        Ok(Self {
            pool,
            pool_timeout: settings.pool_timeout,
            failures,
            namespace: namespace.to_owned(),
            lease_ms: settings.lease.as_millis() as u64,
            counters,
            scripts: Scripts {
                acquire: Script::new(include_str!("acquire.lua")),
                release: Script::new(include_str!("release.lua")),
                finalize: Script::new(include_str!("finalize.lua")),
                give_back: Script::new(include_str!("give_back.lua")),
                warm: Script::new(include_str!("warm.lua")),
                resize: Script::new(include_str!("resize.lua")),
                reconcile: Script::new(include_str!("reconcile.lua")),
                expired_holds: Script::new(include_str!("expired_holds.lua")),
            },
        })
    }

    fn keys(&self, slot: &SlotKey) -> SlotKeys {
        let prefix = format!("{}:{{{slot}}}", self.namespace);
        SlotKeys {
            seats: format!("{prefix}:seats"),
            users: format!("{prefix}:users"),
            ids: format!("{prefix}:ids"),
            holds: format!("{prefix}:holds"),
            prefix,
        }
    }

    /// A pooled connection. The wait for it is this service's lock wait:
    /// it gets a span and a histogram of its own.
    async fn conn(&self) -> Result<PooledConnection<'_, GateConnectionManager>, GateError> {
        let started = Instant::now();
        let checkout = self.failures.checkout(self.pool_timeout, self.pool.get());
        let conn = checkout.instrument(info_span!("redis.pool.wait")).await;
        self.counters.redis_pool_wait.record(started.elapsed().as_secs_f64(), &[]);
        match conn {
            Some(Ok(conn)) => Ok(conn),
            Some(Err(RunError::User(e))) => Err(GateError::from(e)),
            Some(Err(RunError::TimedOut)) | None => {
                Err(GateError::Unavailable("no redis connection within the pool timeout".into()))
            }
        }
    }

    /// (connections in use, idle connections).
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections - state.idle_connections, state.idle_connections)
    }

    /// Runs one script invocation on a pooled connection; a connection-level
    /// failure retires the connection so the pool reconnects.
    async fn invoke<T: redis::FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<T, GateError> {
        let mut conn = self.conn().await?;
        let result = invocation.invoke_async(&mut conn.conn).await;
        if let Err(e) = &result {
            conn.broken |= is_connection_failure(e);
        }
        Ok(result?)
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
    ) -> Result<Acquire, GateError> {
        let span = info_span!("gate.acquire", slot = %slot, party_size = party, outcome = Empty, remaining = Empty);
        let decision = async {
            let k = self.keys(slot);
            let (code, detail): (i64, String) = self
                .invoke(
                    k.invoke(&self.scripts.acquire)
                        .key(k.void(nonce))
                        .arg(id.to_string())
                        .arg(user)
                        .arg(party)
                        .arg(fingerprint)
                        .arg(self.lease_ms)
                        .arg(nonce),
                )
                .await?;
            let number =
                || detail.parse::<i64>().map_err(|_| GateError::Protocol(format!("acquire: bad detail {detail:?}")));
            Ok(match code {
                0 => Acquire::Admitted { remaining: number()? },
                1 => Acquire::Cold,
                2 => Acquire::SoldOut { remaining: number()? },
                3 => Acquire::Duplicate {
                    existing: detail.parse().map_err(|_| GateError::Protocol(format!("acquire: bad id {detail:?}")))?,
                },
                4 => Acquire::Replay { held: number()? == 1 },
                5 => Acquire::Reused,
                // Only an attempt whose caller already gave up (and voided
                // it) gets this; nobody reads it.
                6 => return Err(GateError::Unavailable("the attempt was given up before it ran".into())),
                _ => return Err(GateError::Protocol(format!("acquire: unknown code {code}"))),
            })
        }
        .instrument(span.clone())
        .await;
        match &decision {
            Ok(Acquire::Admitted { remaining }) | Ok(Acquire::SoldOut { remaining }) => {
                span.record("remaining", remaining);
            }
            _ => {}
        }
        span.record(
            "outcome",
            match &decision {
                Ok(Acquire::Admitted { .. }) => "ADMITTED",
                Ok(Acquire::Cold) => "COLD",
                Ok(Acquire::SoldOut { .. }) => "SOLD_OUT",
                Ok(Acquire::Duplicate { .. }) => "DUPLICATE",
                Ok(Acquire::Replay { .. }) => "REPLAY",
                Ok(Acquire::Reused) => "REUSED",
                Err(_) => "ERROR",
            },
        );
        decision
    }

    /// The reservation committed: end the hold of attempt `nonce`, keep its
    /// seats.
    pub async fn finalize(&self, slot: &SlotKey, id: ReservationId, nonce: u64) -> Result<bool, GateError> {
        let k = self.keys(slot);
        let ended: i64 = self
            .invoke(self.scripts.finalize.key(&k.seats).key(&k.holds).arg(id.to_string()).arg(nonce))
            .instrument(info_span!("gate.finalize", slot = %slot))
            .await?;
        Ok(ended == 1)
    }

    /// The attempt `nonce` was not committed: end its hold, if it made one,
    /// and give its seats back (once); see [`Release`] for what else goes.
    pub async fn release(
        &self,
        slot: &SlotKey,
        id: ReservationId,
        user: &str,
        nonce: u64,
        how: Release,
    ) -> Result<i64, GateError> {
        let k = self.keys(slot);
        let forget = how != Release::KeepEntries;
        let void_ms = if how == Release::Void { self.lease_ms.max(1) } else { 0 };
        self.invoke(
            k.invoke(&self.scripts.release)
                .key(k.void(nonce))
                .arg(id.to_string())
                .arg(user)
                .arg(nonce)
                .arg(u8::from(forget))
                .arg(void_ms),
        )
        .await
    }

    /// A committed reservation was cancelled: its seats go back, once.
    pub async fn give_back(&self, slot: &SlotKey, id: ReservationId, user: &str, party: i32) -> Result<i64, GateError> {
        let k = self.keys(slot);
        self.invoke(self.scripts.give_back.key(&k.seats).key(&k.users).arg(id.to_string()).arg(user).arg(party)).await
    }

    /// Loads a slot's state from the database's figures; returns false if
    /// it was warm already (and `force` was not given).
    pub async fn warm(&self, slot: &SlotKey, figures: &SlotFigures, force: bool) -> Result<bool, GateError> {
        let k = self.keys(slot);
        let mut invocation = k.invoke(&self.scripts.warm);
        invocation.arg(u8::from(force)).arg(figures.capacity).arg(figures.reserved);
        figures.push_args(&mut invocation);
        let wrote: i64 = self.invoke(&invocation).await?;
        Ok(wrote == 1)
    }

    /// Reads the counter state of many slots: one small pipeline per slot
    /// (a Redis Cluster pipeline must stay within one hash slot), all in
    /// flight at once on one connection.
    pub async fn probe(&self, slots: &[SlotKey]) -> Result<Vec<Probe>, GateError> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        fn parse<T: redis::FromRedisValue>(value: &Value) -> Result<T, GateError> {
            redis::from_redis_value_ref(value).map_err(|e| GateError::Protocol(format!("probe: {e}")))
        }
        let mut pooled = self.conn().await?;
        let shared = pooled.conn.clone();
        let probes = slots.iter().map(|slot| {
            let k = self.keys(slot);
            let mut conn = shared.clone();
            async move {
                let mut pipe = redis::pipe();
                pipe.cmd("HMGET").arg(&k.seats).arg("left").arg("cap").arg("epoch");
                pipe.cmd("HLEN").arg(&k.holds);
                pipe.cmd("HLEN").arg(&k.users);
                let values: Vec<Value> = pipe.query_async(&mut conn).await?;
                let [fields, holds, users] = values.as_slice() else {
                    return Err(GateError::Protocol("probe: reply of the wrong length".into()));
                };
                let (left, capacity, epoch) = parse::<(Option<i64>, Option<i64>, Option<String>)>(fields)?;
                Ok(Probe { left, capacity, epoch, holds: parse(holds)?, users: parse(users)? })
            }
        });
        let result = futures_util::future::try_join_all(probes).await;
        if let Err(GateError::Unavailable(_)) = &result {
            pooled.broken = true;
        }
        result
    }

    /// Rewrites a slot's state from `figures` if nothing moved since `epoch`
    /// was probed; see `reconcile.lua`.
    pub async fn reconcile(&self, slot: &SlotKey, epoch: &str, figures: &SlotFigures) -> Result<Reconciled, GateError> {
        let k = self.keys(slot);
        let mut invocation = k.invoke(&self.scripts.reconcile);
        invocation.arg(epoch).arg(figures.capacity).arg(figures.reserved);
        figures.push_args(&mut invocation);
        let (status, left_before): (i64, i64) = self.invoke(&invocation).await?;
        Ok(match status {
            0 => Reconciled::Corrected { left_before },
            1 => Reconciled::AlreadyRight,
            2 => Reconciled::Busy,
            3 => Reconciled::Cold,
            _ => return Err(GateError::Protocol(format!("reconcile: unknown status {status}"))),
        })
    }

    /// The holds of `slot` whose lease has run out.
    pub async fn expired_holds(&self, slot: &SlotKey) -> Result<Vec<ExpiredHold>, GateError> {
        let k = self.keys(slot);
        let flat: Vec<String> = self.invoke(&self.scripts.expired_holds.key(&k.holds)).await?;
        flat.chunks(2)
            .map(|pair| match pair {
                [id, value] => ExpiredHold::parse(id, value)
                    .ok_or_else(|| GateError::Protocol(format!("expired_holds: bad hold {id:?} = {value:?}"))),
                _ => Err(GateError::Protocol("expired_holds: odd reply".into())),
            })
            .collect()
    }

    /// Moves a warm counter by a capacity change; returns false if cold.
    pub async fn resize(&self, slot: &SlotKey, capacity: i32, delta: i32) -> Result<bool, GateError> {
        let k = self.keys(slot);
        let moved: i64 = self.invoke(self.scripts.resize.key(&k.seats).arg(capacity).arg(delta)).await?;
        Ok(moved == 1)
    }

    /// Seats left and capacity, or `None` when the slot is cold. A counter
    /// below zero (capacity lowered under holds in flight) reads as 0.
    pub async fn remaining(&self, slot: &SlotKey) -> Result<Option<(i32, i32)>, GateError> {
        let k = self.keys(slot);
        let mut conn = self.conn().await?;
        let result: Result<(Option<i32>, Option<i32>), RedisError> =
            redis::cmd("HMGET").arg(&k.seats).arg("left").arg("cap").query_async(&mut conn.conn).await;
        if let Err(e) = &result {
            conn.broken |= is_connection_failure(e);
        }
        Ok(match result? {
            (Some(left), Some(cap)) => Some((left.max(0), cap)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_value_parses_even_when_the_user_id_contains_the_separator() {
        let id = "9b2e6a4c-0d1f-4a8e-9c3b-6f5d4e3c2b1a";
        let hold = ExpiredHold::parse(id, "4|a|b|17|1767225600000|42").unwrap();
        assert_eq!((hold.party, hold.user.as_str(), hold.nonce), (4, "a|b|17", 42));
        assert!(ExpiredHold::parse(id, "garbage").is_none());
    }

    #[test]
    fn attempt_nonces_differ_from_call_to_call() {
        let nonces: std::collections::HashSet<u64> = (0..1_000).map(|_| attempt_nonce()).collect();
        assert_eq!(nonces.len(), 1_000);
    }
}
