//! The gate's side of the waitlist: deciding a join in one script call.
//! Offers are the database's to make (in the transaction that frees the
//! seats); the counter learns of them by being loaded afresh.

use tracing::{Instrument, field::Empty, info_span};

use super::{Gate, GateError, Shut};
use crate::domain::{EntryId, Join, ReservationId};

/// The gate's decision on one join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinDecision {
    /// In line at `position`; the database is to persist it.
    Joined {
        position: i32,
    },
    /// No counter for the slot: load it and ask again.
    Cold,
    /// The party fits now: `left` seats are public.
    SeatsAvailable {
        left: i64,
    },
    /// The user holds this reservation in the slot.
    Holding(ReservationId),
    /// The user is in line already, as this entry.
    Waiting(EntryId),
    /// This request id joined before with the same payload.
    Replay,
    /// This request id was used with another payload.
    Reused,
    Full {
        limit: i32,
    },
    /// The slot has no waitlist.
    Off,
    /// The slot takes no joins now (as it takes no bookings).
    Shut(Shut),
}

impl JoinDecision {
    fn name(&self) -> &'static str {
        match self {
            Self::Joined { .. } => "JOINED",
            Self::Cold => "COLD",
            Self::SeatsAvailable { .. } => "SEATS_AVAILABLE",
            Self::Holding(_) | Self::Waiting(_) => "DUPLICATE",
            Self::Replay => "REPLAY",
            Self::Reused => "REUSED",
            Self::Full { .. } => "WAITLIST_FULL",
            Self::Off => "WAITLIST_OFF",
            Self::Shut(shut) => shut.name(),
        }
    }
}

impl Gate {
    /// Decides one join: see `join.lua`. `nonce` names this attempt (see
    /// [`super::attempt_nonce`]).
    pub async fn join(&self, join: &Join, nonce: u64) -> Result<JoinDecision, GateError> {
        let span = info_span!("gate.join", slot = %join.slot, party_size = join.party_size, outcome = Empty);
        let decision = async {
            let k = self.keys(&join.slot);
            let entry = join.entry_id();
            let mut invocation = self.scripts.join.key(&k.seats);
            invocation.key(&k.users).key(&k.ids).key(&k.waiters).key(k.void(nonce)).key(k.joining(entry));
            invocation
                .arg(entry.to_string())
                .arg(&join.user_id)
                .arg(join.party_size)
                .arg(join.fingerprint())
                .arg(k.expire_at)
                .arg(nonce);
            let (code, detail): (i64, String) = self.invoke(&invocation).await?;
            if let Some(shut) = Shut::decode(code, &detail, "join") {
                return shut.map(JoinDecision::Shut);
            }
            let bad = || GateError::Protocol(format!("join: bad detail {detail:?}"));
            let number = || detail.parse::<i64>().map_err(|_| bad());
            Ok(match code {
                0 => JoinDecision::Joined { position: i32::try_from(number()?).map_err(|_| bad())? },
                1 => JoinDecision::Cold,
                2 => JoinDecision::SeatsAvailable { left: number()? },
                3 => JoinDecision::Holding(detail.parse().map_err(|_| bad())?),
                4 => JoinDecision::Replay,
                5 => JoinDecision::Reused,
                6 => JoinDecision::Full { limit: i32::try_from(number()?).map_err(|_| bad())? },
                10 => JoinDecision::Waiting(detail.parse().map_err(|_| bad())?),
                11 => JoinDecision::Off,
                // Only an attempt whose caller already gave up (and voided
                // it) gets this; nobody reads it.
                12 => return Err(GateError::Unavailable("the attempt was given up before it ran".into())),
                _ => return Err(GateError::Protocol(format!("join: unknown code {code}"))),
            })
        }
        .instrument(span.clone())
        .await;
        span.record("outcome", decision.as_ref().map_or("ERROR", JoinDecision::name));
        decision
    }

    /// Undoes attempt `nonce`'s join, which the database did not persist or
    /// whose reply was lost (it may not have run yet), and voids the
    /// attempt: see `unjoin.lua`.
    pub async fn unjoin(&self, join: &Join, nonce: u64) -> Result<bool, GateError> {
        let k = self.keys(&join.slot);
        let entry = join.entry_id();
        let mut invocation = self.scripts.unjoin.key(&k.seats);
        invocation.key(&k.ids).key(&k.waiters).key(k.void(nonce)).key(k.joining(entry));
        invocation.arg(entry.to_string()).arg(&join.user_id).arg(nonce).arg(self.lease_ms.max(1));
        let removed: i64 = self.invoke(&invocation).await?;
        Ok(removed == 1)
    }
}
