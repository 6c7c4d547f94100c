//! What a run measured, and whether its outcome was exact.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use slotgate::pb;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// How one call ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Booked,
    /// A refusal the scenario expects: sold out, or a duplicate click.
    Refused(String),
    /// Anything else: these are the run's failures.
    Failed(String),
}

impl Outcome {
    pub fn of(result: &Result<tonic::Response<pb::Reservation>, Status>) -> Self {
        match result {
            Ok(_) => Self::Booked,
            Err(status) => {
                let reason = status.get_details_error_info().map(|i| i.reason).unwrap_or_default();
                let label = format!("{:?}/{reason}", status.code());
                match (status.code(), reason.as_str()) {
                    (Code::FailedPrecondition, "SOLD_OUT") | (Code::AlreadyExists, "DUPLICATE") => Self::Refused(label),
                    _ => Self::Failed(format!("{label} {}", status.message())),
                }
            }
        }
    }

    fn label(&self) -> &str {
        match self {
            Self::Booked => "OK (booked)",
            Self::Refused(l) | Self::Failed(l) => l,
        }
    }
}

pub struct Sample {
    pub user: usize,
    pub sent: Instant,
    pub answered: Instant,
    pub outcome: Outcome,
}

pub struct Report {
    samples: Vec<Sample>,
    /// Sorted latencies of every call, refusals included.
    latencies: Vec<Duration>,
    makespan: Duration,
}

impl Report {
    pub fn new(started: Instant, samples: Vec<Sample>) -> Self {
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.answered - s.sent).collect();
        latencies.sort_unstable();
        let last = samples.iter().map(|s| s.answered).max().unwrap_or(started);
        Self { samples, latencies, makespan: last - started }
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    pub fn print(&self) {
        let mut by_outcome: BTreeMap<&Outcome, usize> = BTreeMap::new();
        for s in &self.samples {
            *by_outcome.entry(&s.outcome).or_default() += 1;
        }
        println!("\noutcomes:");
        for (outcome, n) in &by_outcome {
            println!("  {:<40} {n}", outcome.label());
        }
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let average = self.latencies.iter().sum::<Duration>() / self.latencies.len().max(1) as u32;
        println!("\nlatency of every call (refusals included):");
        println!(
            "  fastest {}  average {}  slowest {}",
            ms(self.percentile(0.0)),
            ms(average),
            ms(self.percentile(100.0))
        );
        println!(
            "  p50 {}  p90 {}  p95 {}  p99 {}",
            ms(self.percentile(50.0)),
            ms(self.percentile(90.0)),
            ms(self.percentile(95.0)),
            ms(self.percentile(99.0))
        );
        let rate = self.samples.len() as f64 / self.makespan.as_secs_f64().max(1e-9);
        println!("  makespan (first send to last answer) {}  throughput {rate:.0} requests/s", ms(self.makespan));
    }

    /// Checks the exact outcome; prints each check and returns whether all
    /// held.
    pub fn check(&self, expected_winners: i32, remaining: i32) -> bool {
        let winners = self.samples.iter().filter(|s| s.outcome == Outcome::Booked).count();
        let mut per_user: HashMap<usize, usize> = HashMap::new();
        for s in self.samples.iter().filter(|s| s.outcome == Outcome::Booked) {
            *per_user.entry(s.user).or_default() += 1;
        }
        let failures = self.samples.iter().filter(|s| matches!(s.outcome, Outcome::Failed(_))).count();
        let checks = [
            (format!("winners: {winners} (expected {expected_winners})"), winners == expected_winners as usize),
            ("no user booked twice".to_owned(), per_user.values().all(|&n| n == 1)),
            (format!("GetRemaining after the burst: {remaining} (expected 0)"), remaining == 0),
            (format!("unexpected errors: {failures}"), failures == 0),
        ];
        println!("\nchecks:");
        for (what, ok) in &checks {
            println!("  [{}] {what}", if *ok { "ok" } else { "FAILED" });
        }
        checks.iter().all(|(_, ok)| *ok)
    }
}
