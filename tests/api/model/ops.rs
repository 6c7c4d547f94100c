//! The model's steps, and the seeded generator of their sequences.

use super::{CAPACITIES, HOUR, STEPS, USERS};
use crate::helpers::Rng;

/// One step. Steps that act on an earlier request name the label (the
/// generated position) of the `Create` that sent it, and do nothing if that
/// step is gone or booked nothing: removing steps while shrinking keeps every
/// other step meaning what it meant.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// `items`: 0 a deposit, 1 a pre-order from the menu, 2 a pre-order
    /// naming a missing item.
    Create {
        user: u64,
        slot: usize,
        party: i32,
        items: u8,
    },
    Replay {
        of: usize,
    },
    Reuse {
        of: usize,
    },
    Cancel {
        of: usize,
    },
    Confirm {
        of: usize,
    },
    Advance {
        secs: u64,
    },
    Expire,
    Flush,
    /// One of a slot's keys lost (evicted, deleted): 0 seats, 1 users,
    /// 2 ids, 3 holds, 4 waiters.
    LoseKey {
        slot: usize,
        key: usize,
    },
    Resize {
        slot: usize,
        capacity: i32,
    },
    Warm,
    Reconcile,
    Reap,
    Join {
        user: u64,
        slot: usize,
        party: i32,
    },
    /// Leaves the entry the `Join` step labelled `of` made.
    Leave {
        of: usize,
    },
    /// Confirms the offer made to that entry.
    Accept {
        of: usize,
    },
    /// Ends the slot's sales now (`CloseSlots`); a capacity change, which
    /// declares the slot whole, opens it again.
    Close {
        slot: usize,
    },
}

/// A step and its label.
pub type Step = (usize, Op);

pub fn generate(rng: &mut Rng) -> Vec<Step> {
    let mut creates: Vec<usize> = Vec::new();
    let mut joins: Vec<usize> = Vec::new();
    let slots = CAPACITIES.len() as u64;
    (0..STEPS)
        .map(|label| {
            let roll = if creates.is_empty() { 0 } else { rng.below(125) };
            let earlier = |rng: &mut Rng, creates: &[usize]| creates[rng.below(creates.len() as u64) as usize];
            let op = match roll {
                0..=31 => {
                    let items = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2][rng.below(10) as usize];
                    let op = Op::Create {
                        user: rng.below(USERS),
                        slot: rng.below(slots) as usize,
                        party: 1 + rng.below(4) as i32,
                        items,
                    };
                    creates.push(label);
                    op
                }
                32..=40 => Op::Replay { of: earlier(rng, &creates) },
                41..=44 => Op::Reuse { of: earlier(rng, &creates) },
                45..=54 => Op::Cancel { of: earlier(rng, &creates) },
                55..=62 => Op::Confirm { of: earlier(rng, &creates) },
                63..=70 => Op::Advance { secs: [HOUR, HOUR, 2 * HOUR][rng.below(3) as usize] },
                71..=76 => Op::Expire,
                77..=79 => Op::Flush,
                80..=84 => Op::LoseKey { slot: rng.below(slots) as usize, key: rng.below(5) as usize },
                85..=90 => Op::Resize { slot: rng.below(slots) as usize, capacity: 2 + rng.below(14) as i32 },
                91..=92 => Op::Warm,
                93..=96 => Op::Reconcile,
                97..=99 => Op::Reap,
                100..=111 => {
                    joins.push(label);
                    Op::Join { user: rng.below(USERS), slot: rng.below(slots) as usize, party: 1 + rng.below(6) as i32 }
                }
                112..=116 if !joins.is_empty() => Op::Leave { of: earlier(rng, &joins) },
                117..=121 if !joins.is_empty() => Op::Accept { of: earlier(rng, &joins) },
                122..=124 => Op::Close { slot: rng.below(slots) as usize },
                _ => Op::Reap,
            };
            (label, op)
        })
        .collect()
}
