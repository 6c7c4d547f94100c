//! The gate's upkeep: loading counters from the database's figures,
//! reading, probing and reconciling them, capacity changes, and the holds
//! whose lease ran out. Requests meet only two of these: a request that
//! finds its counter cold loads it (`warm`), and `GetRemaining` reads one.

use chrono::{DateTime, Utc};
use redis::{ScriptInvocation, Value};

use super::{Gate, GateError, keys::SlotKeys};
use crate::domain::{Remaining, ReservationId, SlotFigures, SlotKey, Window};
use crate::links::RedisConnection;

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

/// A hold whose lease has run out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredHold {
    pub id: ReservationId,
    pub user: String,
    pub nonce: u64,
}

impl ExpiredHold {
    /// Parses `party|user|deadline|nonce` (the user may contain '|').
    fn parse(id: &str, value: &str) -> Option<Self> {
        let (party, rest) = value.split_once('|')?;
        let (rest, nonce) = rest.rsplit_once('|')?;
        let (user, _deadline) = rest.rsplit_once('|')?;
        // A hold of another shape is not the gate's: refuse it whole.
        party.parse::<i32>().ok()?;
        Some(Self { id: id.parse().ok()?, user: user.to_owned(), nonce: nonce.parse().ok()? })
    }
}

/// A slot's counter state, read before its database figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The slot has a counter (it is not cold).
    pub warm: bool,
    pub epoch: Option<String>,
    pub holds: i64,
}

/// What [`Gate::warm`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warm {
    Written,
    /// The slot was warm already (or, when overwriting, a newer change had
    /// reached it): nothing written.
    AlreadyWarm,
    /// The slot is cold, but a change newer than the figures (version
    /// `seen`) was reported meanwhile: read them again.
    Stale {
        seen: i64,
    },
}

/// When [`Gate::warm`] writes (see `warm.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Only a cold slot is written (another loader may have won), and only
    /// with figures at least as new as every change reported.
    IfCold,
    /// The slot was just created: a counter it may have is overwritten
    /// unless it is at least as new as the figures.
    Always,
    /// Only a cold slot, even with figures older than a change reported:
    /// the figures were read again after a stale reply and are still older,
    /// so the database's versions went back (a restore, a reseed).
    IfColdVersionsWentBack,
    /// Warm or cold, unless a change newer than the figures was reported
    /// (then [`Warm::Stale`]): a change the counter cannot apply itself
    /// (the waitlist's offers, a leave) committed before they were read.
    Refresh,
}

/// Appends the figures as `warm.lua` and `reconcile.lua` read them (see
/// `figures.lua`).
fn push_figures(invocation: &mut ScriptInvocation<'_>, figures: &SlotFigures, expire_at: i64, default_limit: i32) {
    let waitlist = &figures.waitlist;
    let not_public = figures.reserved + waitlist.set_aside;
    invocation.arg(figures.capacity).arg(not_public).arg(figures.version).arg(expire_at);
    let w = &figures.window;
    invocation.arg(millis(w.opens_at)).arg(millis(w.closes_at)).arg(millis(w.starts_at));
    invocation.arg(waitlist.limit.unwrap_or(default_limit)).arg(waitlist.last_position);
    invocation.arg(figures.holders.len()).arg(waitlist.waiting.len());
    for holder in &figures.holders {
        invocation.arg(&holder.user).arg(holder.id.to_string());
    }
    for (user, entry) in &waitlist.waiting {
        invocation.arg(user).arg(entry.to_string());
    }
    for request in &figures.requests {
        invocation.arg(request.id.to_string()).arg(request.fingerprint);
    }
    for (entry, fingerprint) in &waitlist.joins {
        invocation.arg(entry.to_string()).arg(fingerprint);
    }
}

impl Gate {
    /// Loads a slot's state from the database's figures; see [`Warm`].
    pub async fn warm(&self, slot: &SlotKey, figures: &SlotFigures, overwrite: Overwrite) -> Result<Warm, GateError> {
        let k = self.keys(slot);
        let mut invocation = k.invoke(&self.scripts.warm);
        invocation.key(&k.waiters);
        let mode = match overwrite {
            Overwrite::IfCold => 0,
            Overwrite::Always => 1,
            Overwrite::IfColdVersionsWentBack => 2,
            Overwrite::Refresh => 3,
        };
        invocation.arg(mode);
        push_figures(&mut invocation, figures, k.expire_at, self.waitlist_limit);
        let (status, seen): (i64, i64) = self.invoke(&invocation).await?;
        match status {
            0 => Ok(Warm::AlreadyWarm),
            1 => Ok(Warm::Written),
            2 => Ok(Warm::Stale { seen }),
            _ => Err(GateError::Protocol(format!("warm: unknown status {status}"))),
        }
    }

    /// Runs `read` for every slot, all in flight at once on one pooled
    /// connection (on one Redis, the lot costs one round trip; a Redis
    /// Cluster connection sends each to its slot's node). Each read stays
    /// within its slot's hash slot.
    async fn per_slot<T, F, Fut>(&self, slots: &[SlotKey], read: F) -> Result<Vec<T>, GateError>
    where
        F: Fn(SlotKeys, RedisConnection) -> Fut,
        Fut: Future<Output = Result<T, GateError>>,
    {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let mut pooled = self.conn().await?;
        let shared = pooled.conn.clone();
        let reads = slots.iter().map(|slot| read(self.keys(slot), shared.clone()));
        let result = futures_util::future::try_join_all(reads).await;
        if let Err(GateError::Unavailable(_)) = &result {
            pooled.broken = true;
        }
        result
    }

    /// Reads the counter state of many slots: one small pipeline per slot,
    /// all in flight at once (see [`Gate::per_slot`]).
    pub async fn probe(&self, slots: &[SlotKey]) -> Result<Vec<Probe>, GateError> {
        fn parse<T: redis::FromRedisValue>(value: &Value) -> Result<T, GateError> {
            redis::from_redis_value_ref(value).map_err(|e| GateError::Protocol(format!("probe: {e}")))
        }
        self.per_slot(slots, async |k, mut conn| {
            let mut pipe = redis::pipe();
            pipe.cmd("HMGET").arg(&k.seats).arg("left").arg("epoch");
            pipe.cmd("HLEN").arg(&k.holds);
            let values: Vec<Value> = pipe.query_async(&mut conn).await?;
            let [fields, holds] = values.as_slice() else {
                return Err(GateError::Protocol("probe: reply of the wrong length".into()));
            };
            let (left, epoch) = parse::<(Option<i64>, Option<String>)>(fields)?;
            Ok(Probe { warm: left.is_some(), epoch, holds: parse(holds)? })
        })
        .await
    }

    /// Rewrites a slot's state from `figures` if nothing moved since `epoch`
    /// was probed; see `reconcile.lua`.
    pub async fn reconcile(&self, slot: &SlotKey, epoch: &str, figures: &SlotFigures) -> Result<Reconciled, GateError> {
        let k = self.keys(slot);
        let mut invocation = k.invoke(&self.scripts.reconcile);
        invocation.key(&k.waiters);
        invocation.arg(epoch);
        push_figures(&mut invocation, figures, k.expire_at, self.waitlist_limit);
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

    /// Brings a warm counter to the capacity and window the slot got at
    /// `version` (see `resize.lua`); returns false if the slot is cold.
    pub async fn resize(
        &self,
        slot: &SlotKey,
        capacity: i32,
        window: &Window,
        version: i64,
    ) -> Result<bool, GateError> {
        let k = self.keys(slot);
        let mut invocation = self.scripts.resize.key(&k.seats);
        invocation.arg(capacity).arg(version).arg(k.expire_at);
        invocation.arg(millis(window.opens_at)).arg(millis(window.closes_at)).arg(millis(window.starts_at));
        let warm: i64 = self.invoke(&invocation).await?;
        Ok(warm == 1)
    }

    /// Seats left, capacity, window and state by Redis's clock, or `None`
    /// when the slot is cold. A counter below zero (capacity lowered under
    /// holds in flight) reads as 0.
    pub async fn remaining(&self, slot: &SlotKey) -> Result<Option<Remaining>, GateError> {
        let k = self.keys(slot);
        let reply: RemainingReply = self.invoke(&self.scripts.remaining.key(&k.seats)).await?;
        reply.into_remaining()
    }

    /// [`Gate::remaining`] of many slots, all in flight at once (see
    /// [`Gate::per_slot`]).
    pub async fn remaining_many(&self, slots: &[SlotKey]) -> Result<Vec<Option<Remaining>>, GateError> {
        self.per_slot(slots, async |k, mut conn| {
            let reply: RemainingReply = self.scripts.remaining.key(&k.seats).invoke_async(&mut conn).await?;
            reply.into_remaining()
        })
        .await
    }

    /// Redis's clock, the one the gate decides sale windows by: the
    /// earliest of the clocks of the nodes that hold `slots` (one node
    /// unless it is a Redis Cluster), so an instant taken from it has
    /// passed on each of them.
    pub async fn now_for(&self, slots: &[SlotKey]) -> Result<DateTime<Utc>, GateError> {
        let clocks = self
            .per_slot(slots, async |k, mut conn| {
                let (seconds, micros): (i64, i64) = self.scripts.clock.key(&k.seats).invoke_async(&mut conn).await?;
                DateTime::from_timestamp_micros(seconds * 1_000_000 + micros)
                    .ok_or_else(|| GateError::Protocol(format!("TIME: bad reply {seconds} {micros}")))
            })
            .await?;
        clocks.into_iter().min().ok_or_else(|| GateError::Protocol("no slot to read the clock at".into()))
    }
}

/// `remaining.lua`'s reply: left, capacity, opens, closes, starts, now.
type RemainingReply = (Option<i64>, Option<i32>, Option<i64>, Option<i64>, Option<i64>, i64);

trait IntoRemaining {
    fn into_remaining(self) -> Result<Option<Remaining>, GateError>;
}

impl IntoRemaining for RemainingReply {
    fn into_remaining(self) -> Result<Option<Remaining>, GateError> {
        let (left, capacity, opens, closes, starts, now) = self;
        let (Some(left), Some(capacity)) = (left, capacity) else { return Ok(None) };
        let instant = |ms: i64| {
            DateTime::from_timestamp_millis(ms).ok_or_else(|| GateError::Protocol(format!("remaining: bad time {ms}")))
        };
        let window = Window {
            opens_at: opens.map(instant).transpose()?,
            closes_at: closes.map(instant).transpose()?,
            starts_at: starts.map(instant).transpose()?,
        };
        let state = window.state_at(instant(now)?);
        Ok(Some(Remaining { left: left.clamp(0, i64::from(i32::MAX)) as i32, capacity, window, state }))
    }
}

/// An instant as the gate's scripts take it: Unix milliseconds, or '' for
/// none.
pub(super) fn millis(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(String::new, |t| t.timestamp_millis().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_value_parses_even_when_the_user_id_contains_the_separator() {
        let id = "9b2e6a4c-0d1f-4a8e-9c3b-6f5d4e3c2b1a";
        let hold = ExpiredHold::parse(id, "4|a|b|17|1767225600000|42").unwrap();
        assert_eq!((hold.user.as_str(), hold.nonce), ("a|b|17", 42));
        assert!(ExpiredHold::parse(id, "garbage").is_none());
    }
}
