//! What a run measured: ghz's summary and JSON report (so tools that read
//! ghz reports read ours), plus what a burst needs besides percentiles: the
//! makespan, outcomes by reason, and whether the outcome was exact.
//!
//! Like ghz with `--count-errors`, every call counts in the latency figures,
//! refusals included: in a burst they are most of the calls.

use std::{collections::BTreeMap, fmt::Write, time::Duration};

use serde_json::{Value, json};
use tonic::Code;

use crate::fire::{Outcome, Run};

/// Percentiles reported (ghz's, plus 99.9 in the text summary).
const PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

pub struct Stats {
    pub count: usize,
    /// First send to last answer.
    pub makespan: Duration,
    pub average: Duration,
    pub fastest: Duration,
    pub slowest: Duration,
    pub rps: f64,
    /// (percentile, latency)
    pub percentiles: Vec<(f64, Duration)>,
    /// Latencies, sorted.
    pub latencies: Vec<Duration>,
    /// Go's status code names, as ghz writes them.
    pub status_codes: BTreeMap<String, usize>,
    /// ghz's error strings: "rpc error: code = X desc = message".
    pub errors: BTreeMap<String, usize>,
    /// "booked", or "Code/REASON".
    pub outcomes: BTreeMap<String, usize>,
    pub unexpected: usize,
}

/// A gRPC code as Go (and so ghz) spells it.
pub fn go_code(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn label(outcome: &Outcome) -> String {
    match outcome.code {
        Code::Ok if outcome.reason.is_empty() => "OK".into(),
        Code::Ok => format!("OK/{}", outcome.reason),
        code if outcome.reason.is_empty() => go_code(code).to_owned(),
        code => format!("{}/{}", go_code(code), outcome.reason),
    }
}

/// ghz's percentile rank (0-based ordinal, stepping back on a whole number).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let ip = p / 100.0 * sorted.len() as f64;
    let mut di = ip as usize;
    if ip == di as f64 {
        di = di.saturating_sub(1);
    }
    sorted[di.min(sorted.len() - 1)]
}

impl Stats {
    /// `expected` says which non-OK outcomes are answers, not failures.
    pub fn new(run: &Run, expected: impl Fn(&Outcome) -> bool) -> Self {
        let mut latencies: Vec<Duration> = run.samples.iter().map(|s| s.answered - s.sent).collect();
        latencies.sort_unstable();
        let makespan = run.finished.saturating_duration_since(run.started);
        let count = run.samples.len();
        let mut status_codes = BTreeMap::new();
        let mut errors = BTreeMap::new();
        let mut outcomes = BTreeMap::new();
        let mut unexpected = 0;
        for s in &run.samples {
            *status_codes.entry(go_code(s.outcome.code).to_owned()).or_default() += 1;
            *outcomes.entry(label(&s.outcome)).or_default() += 1;
            if s.outcome.code != Code::Ok {
                let e = format!("rpc error: code = {} desc = {}", go_code(s.outcome.code), s.outcome.message);
                *errors.entry(e).or_default() += 1;
                if !expected(&s.outcome) {
                    unexpected += 1;
                }
            }
        }
        let total: Duration = latencies.iter().sum();
        Self {
            count,
            makespan,
            average: if count == 0 { Duration::ZERO } else { total / count as u32 },
            fastest: latencies.first().copied().unwrap_or_default(),
            slowest: latencies.last().copied().unwrap_or_default(),
            rps: count as f64 / makespan.as_secs_f64().max(1e-9),
            percentiles: PERCENTILES.iter().map(|&p| (p, percentile(&latencies, p))).collect(),
            latencies,
            status_codes,
            errors,
            outcomes,
            unexpected,
        }
    }

    /// ghz's histogram: ten equal buckets from fastest to slowest, plus one
    /// at the slowest (mark in seconds, count, frequency).
    pub fn histogram(&self) -> Vec<(f64, usize, f64)> {
        let (fast, slow) = (self.fastest.as_secs_f64(), self.slowest.as_secs_f64());
        let step = (slow - fast) / 10.0;
        let marks: Vec<f64> = (0..10).map(|i| fast + step * i as f64).chain([slow]).collect();
        let mut counts = vec![0usize; marks.len()];
        let mut bucket = 0;
        for latency in &self.latencies {
            let l = latency.as_secs_f64();
            while l > marks[bucket] && bucket < marks.len() - 1 {
                bucket += 1;
            }
            counts[bucket] += 1;
        }
        let n = self.latencies.len().max(1) as f64;
        marks.into_iter().zip(counts).map(|(m, c)| (m, c, c as f64 / n)).collect()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// ghz's summary layout, then slotgate's additions: outcomes, makespan,
/// `extra` (e.g. a slot's opening, its early calls), and the checks.
pub fn summary(name: &str, stats: &Stats, extra: &str, checks: &[(String, bool)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nSummary:");
    if !name.is_empty() {
        let _ = writeln!(out, "  Name:\t{name}");
    }
    let _ = writeln!(out, "  Count:\t{}", stats.count);
    let _ = writeln!(out, "  Total:\t{}", ms(stats.makespan));
    let _ = writeln!(out, "  Slowest:\t{}", ms(stats.slowest));
    let _ = writeln!(out, "  Fastest:\t{}", ms(stats.fastest));
    let _ = writeln!(out, "  Average:\t{}", ms(stats.average));
    let _ = writeln!(out, "  Requests/sec:\t{:.2}", stats.rps);
    let _ = writeln!(out, "\nResponse time histogram:");
    let histogram = stats.histogram();
    let widest = histogram.iter().map(|b| b.1).max().unwrap_or(1).max(1);
    for (mark, count, _) in &histogram {
        let bar = "∎".repeat(count * 40 / widest);
        let _ = writeln!(out, "  {:.3} [{count}]\t|{bar}", mark * 1e3);
    }
    let _ = writeln!(out, "\nLatency distribution:");
    for (p, latency) in &stats.percentiles {
        let _ = writeln!(out, "  {p} % in {}", ms(*latency));
    }
    let _ = writeln!(out, "\nStatus code distribution:");
    for (code, n) in &stats.status_codes {
        let _ = writeln!(out, "  [{code}]\t{n} responses");
    }
    let _ = writeln!(out, "\nOutcomes (SOLD_OUT and DUPLICATE are answers, not failures):");
    for (outcome, n) in &stats.outcomes {
        let _ = writeln!(out, "  {outcome:<40} {n}");
    }
    let _ = writeln!(
        out,
        "\nMakespan (first send to last answer): {}; throughput {:.0} calls/s",
        ms(stats.makespan),
        stats.rps
    );
    out.push_str(extra);
    if !checks.is_empty() {
        let _ = writeln!(out, "\nChecks:");
        for (what, ok) in checks {
            let _ = writeln!(out, "  [{}] {what}", if *ok { "ok" } else { "FAILED" });
        }
    }
    out
}

/// ghz's JSON report (`--format json`); slotgate's extra figures sit under
/// `"slotgate"`, which ghz readers ignore.
pub fn ghz_json(run: &Run, stats: &Stats, options: Value, checks: &[(String, bool)]) -> Value {
    let nanos = |d: Duration| d.as_nanos() as u64;
    let epoch = std::time::SystemTime::now() - run.started.elapsed();
    let timestamp = |at: tokio::time::Instant| {
        let t = epoch + at.saturating_duration_since(run.started);
        chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    };
    json!({
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "endReason": "normal",
        "options": options,
        "count": stats.count,
        "total": nanos(stats.makespan),
        "average": nanos(stats.average),
        "fastest": nanos(stats.fastest),
        "slowest": nanos(stats.slowest),
        "rps": stats.rps,
        "errorDistribution": stats.errors,
        "statusCodeDistribution": stats.status_codes,
        "latencyDistribution": stats.percentiles.iter().filter(|(p, _)| p.fract() == 0.0)
            .map(|(p, l)| json!({"percentage": *p as u32, "latency": nanos(*l)})).collect::<Vec<_>>(),
        "histogram": stats.histogram().iter()
            .map(|(mark, count, frequency)| json!({"mark": mark, "count": count, "frequency": frequency})).collect::<Vec<_>>(),
        "details": run.samples.iter().map(|s| json!({
            "timestamp": timestamp(s.sent),
            "latency": nanos(s.answered - s.sent),
            "error": if s.outcome.code == Code::Ok { String::new() } else {
                format!("rpc error: code = {} desc = {}", go_code(s.outcome.code), s.outcome.message)
            },
            "status": go_code(s.outcome.code),
        })).collect::<Vec<_>>(),
        "slotgate": {
            "makespan": nanos(stats.makespan),
            "p99_9": nanos(stats.percentiles.last().map(|p| p.1).unwrap_or_default()),
            "outcomes": stats.outcomes,
            "unexpected": stats.unexpected,
            "checks": checks.iter().map(|(what, ok)| json!({"check": what, "ok": ok})).collect::<Vec<_>>(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_ghz_ranks() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 99.9), Duration::from_millis(100));
        assert_eq!(percentile(&sorted, 10.0), Duration::from_millis(10));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn codes_are_spelled_as_go_spells_them() {
        assert_eq!(go_code(Code::Cancelled), "Canceled");
        assert_eq!(go_code(Code::FailedPrecondition), "FailedPrecondition");
    }
}
