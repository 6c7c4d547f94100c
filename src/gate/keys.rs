//! The gate's key layout.
//!
//! Every key of a slot carries the slot as its hash tag, so one script only
//! touches keys of one Redis Cluster hash slot:
//!
//! ```text
//! {ns}:{67:2026-01-16:11:00}:seats   hash  left, cap, epoch, versions, window, wlimit, wseq
//! {ns}:{67:2026-01-16:11:00}:users   hash  user id -> reservation id; '' -> 1 (sentinel)
//! {ns}:{67:2026-01-16:11:00}:ids     hash  reservation id -> fingerprint; '' -> 1 (sentinel)
//! {ns}:{67:2026-01-16:11:00}:holds   hash  reservation id -> party|user|lease deadline|nonce
//! {ns}:{67:2026-01-16:11:00}:waiters hash  user id -> waitlist entry id (in line); '' -> 1 (sentinel)
//! {ns}:{67:2026-01-16:11:00}:void:N  string, for one hold lease: attempt N gave up on a lost
//!                                    reply; its acquire or join, if it still runs, takes nothing
//! {ns}:{67:2026-01-16:11:00}:joining:E  string "nonce|position", as long as the slot's keys:
//!                                    the attempt that took waitlist entry E
//! {ns}:request:{reservation id}       string, one Redis only: the slot the id was admitted in,
//!                                    so the id reused in another slot is refused there too
//! ```
//!
//! The sentinels (the empty field, which no user or reservation id is) are
//! written with the slot's figures: a script that finds one missing knows
//! that key was lost since, and has the whole slot loaded again.
//!
//! A slot's keys expire at the start (UTC) of the [`KEEP_DAYS`]th day after
//! the slot's date: after the slot's local day has ended in every time zone,
//! with a day to spare, so Redis's memory does not grow with every past
//! slot. Booking a slot dated before yesterday is refused, so no request
//! brings an expired slot's keys back.

use std::io::Write;

use chrono::{Days, NaiveDate};
use redis::{RedisWrite, Script, ScriptInvocation, ToRedisArgs};

use crate::domain::SlotKey;

/// Days after a slot's date at whose start (UTC) its keys expire.
pub const KEEP_DAYS: u64 = 3;

/// The earliest slot date whose keys may still be in Redis on `today`.
pub fn oldest_kept(today: NaiveDate) -> NaiveDate {
    today - Days::new(KEEP_DAYS - 1)
}

/// `{ns}:{slot}`: what every key of the slot named `name` starts with.
pub(super) fn prefix(namespace: &str, name: &str) -> String {
    let mut prefix = String::with_capacity(namespace.len() + name.len() + 3);
    prefix.push_str(namespace);
    prefix.push_str(":{");
    prefix.push_str(name);
    prefix.push('}');
    prefix
}

/// When a slot's keys expire, in Unix seconds.
pub(super) fn expire_at(slot: &SlotKey) -> i64 {
    (slot.date + Days::new(KEEP_DAYS)).and_hms_opt(0, 0, 0).map_or(i64::MAX, |t| t.and_utc().timestamp())
}

/// An argument written straight into a command as its text (a key from
/// the slot's prefix and a suffix, an id), with no string of its own:
/// the request path builds its call without them.
pub(super) struct Text<T>(pub T);

impl<T: std::fmt::Display> ToRedisArgs for Text<T> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        // Writing to the command's own buffer cannot fail.
        let _ = write!(out.writer_for_next_arg(), "{}", self.0);
    }
}

/// The suffixes of a slot's keys after its prefix.
pub(super) const SEATS: &str = ":seats";
pub(super) const USERS: &str = ":users";
pub(super) const IDS: &str = ":ids";
pub(super) const HOLDS: &str = ":holds";
pub(super) const WAITERS: &str = ":waiters";

/// A slot's key as its prefix and suffix, written one after the other.
pub(super) struct Key<'a>(pub &'a str, pub &'a str);

impl std::fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)?;
        f.write_str(self.1)
    }
}

/// The void marker of attempt `.1` in the slot of prefix `.0` (see
/// release.lua); it carries the slot's hash tag like the other keys.
pub(super) struct VoidKey<'a>(pub &'a str, pub u64);

impl std::fmt::Display for VoidKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:void:{}", self.0, self.1)
    }
}

/// The record of the request that names reservation `.1`, in namespace
/// `.0`: outside the slot's hash tag, so only for one Redis, not a Cluster.
pub(super) struct RequestKey<'a, I>(pub &'a str, pub I);

impl<I: std::fmt::Display> std::fmt::Display for RequestKey<'_, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:request:{}", self.0, self.1)
    }
}

/// The keys of one slot, in the order the scripts expect them, and the
/// prefix they share.
pub(super) struct SlotKeys {
    prefix: String,
    /// The slot as the request records name it.
    pub name: String,
    pub seats: String,
    pub users: String,
    pub ids: String,
    pub holds: String,
    pub waiters: String,
    /// When the keys expire, in Unix seconds.
    pub expire_at: i64,
}

impl SlotKeys {
    /// Built by copying the prefix (every call of the gate builds them):
    /// the slot is formatted once.
    pub fn new(namespace: &str, slot: &SlotKey) -> Self {
        let name = slot.to_string();
        let prefix = prefix(namespace, &name);
        let key = |suffix: &str| {
            let mut key = String::with_capacity(prefix.len() + suffix.len());
            key.push_str(&prefix);
            key.push_str(suffix);
            key
        };
        Self {
            seats: key(SEATS),
            users: key(USERS),
            ids: key(IDS),
            holds: key(HOLDS),
            waiters: key(WAITERS),
            name,
            expire_at: expire_at(slot),
            prefix,
        }
    }

    /// The void marker of attempt `nonce`: see [`VoidKey`].
    pub fn void(&self, nonce: u64) -> String {
        VoidKey(&self.prefix, nonce).to_string()
    }

    /// The marker of the join that took waitlist entry `entry` (see
    /// join.lua); it carries the slot's hash tag like the other keys.
    pub fn joining(&self, entry: impl std::fmt::Display) -> String {
        format!("{}:joining:{entry}", self.prefix)
    }

    /// The record of the request that names reservation `id`: see
    /// [`RequestKey`].
    pub fn request(namespace: &str, id: impl std::fmt::Display) -> String {
        RequestKey(namespace, id).to_string()
    }

    /// An invocation of `script` with all four keys (seats, users, ids,
    /// holds) as KEYS[1..4].
    pub fn invoke<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut invocation = script.key(&self.seats);
        invocation.key(&self.users).key(&self.ids).key(&self.holds);
        invocation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_carry_the_namespace_and_the_slot_as_hash_tag() {
        let date = NaiveDate::from_ymd_opt(2026, 1, 16).unwrap();
        let slot = SlotKey { restaurant_id: 67, date, time: chrono::NaiveTime::from_hms_opt(11, 0, 0).unwrap() };
        let keys = SlotKeys::new("ns", &slot);
        assert_eq!(
            [&keys.name, &keys.seats, &keys.users, &keys.ids, &keys.holds, &keys.waiters],
            [
                "67:2026-01-16:11:00",
                "ns:{67:2026-01-16:11:00}:seats",
                "ns:{67:2026-01-16:11:00}:users",
                "ns:{67:2026-01-16:11:00}:ids",
                "ns:{67:2026-01-16:11:00}:holds",
                "ns:{67:2026-01-16:11:00}:waiters"
            ]
        );
        assert_eq!(keys.void(9), "ns:{67:2026-01-16:11:00}:void:9");
    }

    #[test]
    fn a_slots_keys_outlive_its_day_everywhere_and_the_oldest_kept_date_matches() {
        let date = NaiveDate::from_ymd_opt(2026, 1, 16).unwrap();
        let slot = SlotKey { restaurant_id: 67, date, time: chrono::NaiveTime::from_hms_opt(23, 30, 0).unwrap() };
        let keys = SlotKeys::new("ns", &slot);
        // 23:30 at UTC-12 is 11:30 UTC the next day; the keys last a day more.
        let latest_end = (date + Days::new(2)).and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
        assert!(keys.expire_at > latest_end);
        // On the day the keys expire, the slot is no longer kept; the day
        // before, it is.
        let expiry_day = date + Days::new(KEEP_DAYS);
        assert!(oldest_kept(expiry_day) > date);
        assert_eq!(oldest_kept(expiry_day - Days::new(1)), date);
    }
}
