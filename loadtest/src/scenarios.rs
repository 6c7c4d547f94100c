//! The seed's scenarios, defined once in `loadtest/scenarios.json` and built
//! into the binary (the tool needs no file at run time): the slot every
//! burst goes to, the party size, and per scenario how many users click how
//! many times and how many of them must win.
//!
//! Everything else in `loadtest/` reads the same file or is generated from
//! it; the crate's tests fail when a consumer disagrees with it.

use std::sync::LazyLock;

use serde::Deserialize;
use slotgate::{domain::SlotKey, pb};

/// `loadtest/scenarios.json`, as built into the binary.
pub const DEFINITION: &str = include_str!("../scenarios.json");

/// The keys of the definition this tool uses (the others, such as the seed
/// team's p95 figures, are for the report).
#[derive(Debug, Deserialize)]
pub struct Seed {
    pub restaurant_id: i64,
    pub date: String,
    pub time: String,
    pub capacity: i32,
    pub party_size: i32,
    /// The scenario run when none is named.
    pub headline: String,
    pub scenarios: Vec<Scenario>,
}

#[derive(Debug, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub users: usize,
    /// Simultaneous clicks per user (each its own request id).
    pub clicks: usize,
    /// Exactly this many calls must book.
    pub winners: i32,
}

impl Scenario {
    pub fn calls(&self) -> usize {
        self.users * self.clicks
    }
}

/// How many of `users` parties of `party_size` win `capacity` seats.
pub fn winners(capacity: i32, party_size: i32, users: usize) -> i32 {
    (capacity / party_size).min(i32::try_from(users).unwrap_or(i32::MAX))
}

/// Scenario names the tool has besides the seed's.
pub const OWN: [&str; 3] = ["spread", "soak", "custom"];

static SEED: LazyLock<Seed> = LazyLock::new(|| {
    let seed: Seed = serde_json::from_str(DEFINITION).unwrap_or_else(|e| panic!("loadtest/scenarios.json: {e}"));
    if let Err(e) = seed.check() {
        panic!("loadtest/scenarios.json: {e}");
    }
    seed
});

/// The definition (parsed and checked on first use).
pub fn seed() -> &'static Seed {
    &SEED
}

impl Seed {
    pub fn scenario(&self, name: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// Every name `--scenario` takes: the seed's, then the tool's own.
    pub fn all_names(&'static self) -> Vec<&'static str> {
        self.scenarios.iter().map(|s| s.name.as_str()).chain(OWN).collect()
    }

    /// What every consumer relies on: usable names, one per scenario, a
    /// slot the server accepts, and winners that follow from the seats.
    pub fn check(&self) -> Result<(), String> {
        if self.capacity <= 0 || self.party_size <= 0 {
            return Err("capacity and party_size must be positive".into());
        }
        let slot = pb::SlotRef { restaurant_id: self.restaurant_id, date: self.date.clone(), time: self.time.clone() };
        SlotKey::parse(Some(&slot), "slot").map_err(|e| format!("not a slot the server accepts: {e}"))?;
        let mut seen = std::collections::HashSet::new();
        for s in &self.scenarios {
            let name = &s.name;
            // Names become file names (loadtest/ghz/NAME.json) and JSON and
            // shell words unquoted: lower-case letters, digits and dashes.
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                return Err(format!("scenario name {name:?}: lower-case letters, digits and dashes only"));
            }
            if OWN.contains(&name.as_str()) || !seen.insert(name.as_str()) {
                return Err(format!("scenario name {name:?} is taken"));
            }
            if s.users == 0 || s.clicks == 0 {
                return Err(format!("{name}: users and clicks must be positive"));
            }
            let winners = winners(self.capacity, self.party_size, s.users);
            if s.winners != winners {
                return Err(format!(
                    "{name}: winners {} but {} seats in parties of {} among {} users make {winners}",
                    s.winners, self.capacity, self.party_size, s.users
                ));
            }
        }
        if self.scenario(&self.headline).is_none() {
            return Err(format!("headline {:?} is not a scenario", self.headline));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_parses_and_holds_together() {
        let seed = seed();
        assert!(!seed.scenarios.is_empty());
        seed.check().unwrap();
    }

    #[test]
    fn winners_must_follow_from_the_seats() {
        let mut seed: Seed = serde_json::from_str(DEFINITION).unwrap();
        seed.scenarios[0].winners += 1;
        assert!(seed.check().unwrap_err().contains("winners"));
        let mut seed: Seed = serde_json::from_str(DEFINITION).unwrap();
        seed.scenarios[0].name = "spread".into();
        assert!(seed.check().is_err(), "the tool's own names are not the seed's");
        let mut seed: Seed = serde_json::from_str(DEFINITION).unwrap();
        seed.headline = "nope".into();
        assert!(seed.check().is_err());
    }
}
