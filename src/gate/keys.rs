//! The gate's key layout.
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

use redis::{Script, ScriptInvocation};

use crate::domain::SlotKey;

/// The four keys of one slot, in the order the scripts expect them, and
/// the prefix they share.
pub(super) struct SlotKeys {
    prefix: String,
    pub seats: String,
    pub users: String,
    pub ids: String,
    pub holds: String,
}

impl SlotKeys {
    pub fn new(namespace: &str, slot: &SlotKey) -> Self {
        let prefix = format!("{namespace}:{{{slot}}}");
        Self {
            seats: format!("{prefix}:seats"),
            users: format!("{prefix}:users"),
            ids: format!("{prefix}:ids"),
            holds: format!("{prefix}:holds"),
            prefix,
        }
    }

    /// The void marker of attempt `nonce` (see release.lua); it carries the
    /// slot's hash tag like the other keys.
    pub fn void(&self, nonce: u64) -> String {
        format!("{}:void:{nonce}", self.prefix)
    }

    /// An invocation of `script` with all four keys (seats, users, ids,
    /// holds) as KEYS[1..4].
    pub fn invoke<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut invocation = script.key(&self.seats);
        invocation.key(&self.users).key(&self.ids).key(&self.holds);
        invocation
    }
}
