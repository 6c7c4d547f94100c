//! A slot's opening (`--opens-in`, `--early`): the slot is opened with its
//! sale window starting `opens_in` from now, `--early` calls are sent into
//! it while it is still closed (each must be refused `SLOT_NOT_OPEN`, with a
//! `RetryInfo` no longer than the time that was left), and the scenario's
//! burst is released at the opening instant.
//!
//! The instant is taken from the local clock and sent to the server; the
//! server's gate decides by Redis's clock. Both are this machine's clock in
//! our runs; against a remote server the two clocks must agree (NTP) for
//! the release instant and the hint check to mean anything.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use slotgate::pb;
use tokio::time::Instant;

use crate::{
    fire::{Run, Source},
    report::{Stats, go_code},
};

/// The early calls are spread evenly from when the slot is opened until
/// this long before `opens_at`: an early call's answer must come back
/// before the opening, or the gate (which decides when the call reaches
/// it) could take it for a call after the opening.
pub const EARLY_MARGIN: Duration = Duration::from_millis(200);

/// What `--opens-in` and `--early` ask for, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpeningOptions {
    pub opens_in: Duration,
    pub early: u64,
}

impl OpeningOptions {
    /// Checks the options: `--early` needs `--opens-in`, which must leave
    /// room for the early calls before the margin; neither applies to a
    /// run without the seed's slot (`seeded` false: spread, soak, custom)
    /// or to the health Check (`health`).
    pub fn new(opens_in: Option<&str>, early: Option<u64>, seeded: bool, health: bool) -> Result<Option<Self>, String> {
        let Some(opens_in) = opens_in else {
            return match early {
                Some(_) => Err("--early needs --opens-in: early calls go before a slot's opening".into()),
                None => Ok(None),
            };
        };
        let opens_in = crate::ghz::go_duration(opens_in).map_err(|e| format!("--opens-in: {e}"))?;
        if !seeded {
            return Err("--opens-in works with the seed's scenarios (burst-100 ... duplicate-2000), \
                        which open their own slot"
                .into());
        }
        if health {
            return Err("--opens-in needs CreateReservation calls: the health Check has no slot to open".into());
        }
        if opens_in.is_zero() {
            return Err("--opens-in must be more than 0".into());
        }
        let early = early.unwrap_or(0);
        if early > 0 && opens_in <= EARLY_MARGIN {
            return Err(format!(
                "--opens-in {}: the early calls end {} ms before the opening, so it must be longer than that",
                ms(opens_in),
                EARLY_MARGIN.as_millis()
            ));
        }
        Ok(Some(Self { opens_in, early }))
    }
}

/// The opening instant on both clocks: whole milliseconds since the Unix
/// epoch (what is sent as `opens_at`, and what the gate compares with its
/// clock in milliseconds), and the same instant on the monotonic clock the
/// calls are timed with.
#[derive(Debug, Clone, Copy)]
pub struct Opening {
    pub unix_ms: i64,
    pub at: Instant,
}

impl Opening {
    /// `opens_in` from now, cut to a whole millisecond (so at most 1 ms
    /// sooner).
    pub fn after(opens_in: Duration) -> Self {
        // Both clocks read together: the mapping between them is good to
        // well under a millisecond over a few seconds.
        Self::from_clocks(SystemTime::now(), Instant::now(), opens_in)
    }

    fn from_clocks(wall: SystemTime, mono: Instant, opens_in: Duration) -> Self {
        let now = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let unix_ms = ((now + opens_in).as_nanos() / 1_000_000) as i64;
        let ahead = Duration::from_millis(unix_ms as u64).saturating_sub(now);
        Self { unix_ms, at: mono + ahead }
    }

    /// `google.protobuf.Timestamp`'s fields.
    pub fn seconds_nanos(&self) -> (i64, i32) {
        (self.unix_ms.div_euclid(1000), (self.unix_ms.rem_euclid(1000) * 1_000_000) as i32)
    }

    /// RFC 3339 in UTC with milliseconds, as the server writes `opens_at`.
    pub fn rfc3339(&self) -> String {
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(self.unix_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| self.unix_ms.to_string())
    }

    /// Whether `text` (RFC 3339) names this instant, to the millisecond.
    pub fn is(&self, text: &str) -> bool {
        chrono::DateTime::parse_from_rfc3339(text).is_ok_and(|t| t.timestamp_millis() == self.unix_ms)
    }

    /// Whether a `google.protobuf.Timestamp` (as seconds and nanos) names
    /// this instant, to the millisecond.
    pub fn is_timestamp(&self, seconds: i64, nanos: i32) -> bool {
        seconds * 1000 + i64::from(nanos) / 1_000_000 == self.unix_ms && nanos % 1_000_000 == 0
    }
}

/// The open loop's rate that spreads `count` calls evenly from the first
/// at the start to the last `span` later (one call: any rate will do).
pub fn early_rate(count: u64, span: Duration) -> f64 {
    let gaps = count.saturating_sub(1).max(1) as f64;
    gaps / span.as_secs_f64().max(1e-6)
}

/// The early calls: each its own user and request id, none of them the
/// scenario's (`load-RUN-uUSER-cCLICK`), all into the scenario's slot.
pub fn early_calls(run: u128, slot: pb::SlotRef, party: i32) -> Source {
    Arc::new(move |n, _| {
        Ok(crate::create(format!("load-{run}-early-{n}"), format!("load-{run}-early-u{n}"), &slot, party))
    })
}

/// `d` rounded up to a whole millisecond: the gate's clock and its hints
/// are in whole milliseconds, so a hint sent when 1,499.2 ms were left may
/// say 1,500 ms.
pub fn ceil_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_nanos().div_ceil(1_000_000) as u64)
}

/// What the early calls met, and whether it is what a closed slot answers.
pub struct Early {
    pub stats: Stats,
    /// Refused `SLOT_NOT_OPEN`.
    pub not_open: usize,
    /// `SLOT_NOT_OPEN` whose `RetryInfo` is longer than the time from
    /// sending to `opens_at` (rounded up to a millisecond).
    pub hint_too_long: usize,
    /// `SLOT_NOT_OPEN` without a `RetryInfo` delay.
    pub hint_missing: usize,
    /// `SLOT_NOT_OPEN` whose `ErrorInfo` `opens_at` is missing or another
    /// instant than the one set.
    pub opens_at_wrong: usize,
    /// The time left at sending (rounded up to a millisecond) minus the
    /// hint, in milliseconds, sorted: how much the hint undershoots. Never
    /// negative from a correct server.
    pub slack_ms: Vec<f64>,
    /// Early calls answered after `opens_at` (whatever the answer).
    pub answered_after_opening: usize,
    /// First to last send.
    pub window: Duration,
}

impl Early {
    pub fn new(run: &Run, opening: &Opening) -> Self {
        let stats = Stats::new(run, |o| o.not_open());
        let mut early = Self {
            stats,
            not_open: 0,
            hint_too_long: 0,
            hint_missing: 0,
            opens_at_wrong: 0,
            slack_ms: Vec::new(),
            answered_after_opening: 0,
            window: Duration::ZERO,
        };
        for s in &run.samples {
            if s.answered > opening.at {
                early.answered_after_opening += 1;
            }
            if !s.outcome.not_open() {
                continue;
            }
            early.not_open += 1;
            if !s.outcome.opens_at.as_deref().is_some_and(|t| opening.is(t)) {
                early.opens_at_wrong += 1;
            }
            let Some(hint) = s.outcome.retry_delay else {
                early.hint_missing += 1;
                continue;
            };
            let left = ceil_ms(opening.at.saturating_duration_since(s.issued));
            if hint > left {
                early.hint_too_long += 1;
            }
            early.slack_ms.push((left.as_nanos() as i128 - hint.as_nanos() as i128) as f64 / 1e6);
        }
        early.slack_ms.sort_by(f64::total_cmp);
        let sends = || run.samples.iter().map(|s| s.issued);
        if let (Some(first), Some(last)) = (sends().min(), sends().max()) {
            early.window = last - first;
        }
        early
    }

    /// The checks: every early call refused `SLOT_NOT_OPEN`, every hint
    /// within the time left, every refusal naming the opening that was set.
    pub fn checks(&self, opening: &Opening) -> Vec<(String, bool)> {
        let count = self.stats.count;
        let hinted = self.not_open - self.hint_missing;
        vec![
            (format!("early calls refused SLOT_NOT_OPEN: {} of {count}", self.not_open), self.not_open == count),
            (
                format!(
                    "early RetryInfo within the time left to opens_at: {} of {} ({} longer, {} missing)",
                    hinted - self.hint_too_long,
                    self.not_open,
                    self.hint_too_long,
                    self.hint_missing
                ),
                self.hint_too_long == 0 && self.hint_missing == 0,
            ),
            (
                format!("early ErrorInfo opens_at {}: {} differ or missing", opening.rfc3339(), self.opens_at_wrong),
                self.opens_at_wrong == 0,
            ),
        ]
    }

    fn slack(&self, at: f64) -> Option<f64> {
        if self.slack_ms.is_empty() {
            return None;
        }
        let i = ((self.slack_ms.len() - 1) as f64 * at).round() as usize;
        Some(self.slack_ms[i])
    }

    /// The early phase in the JSON report (`slotgate.opening.early`): its
    /// figures in ghz's units (nanoseconds) and shapes.
    pub fn json(&self) -> Value {
        let nanos = |d: Duration| d.as_nanos() as u64;
        let s = &self.stats;
        json!({
            "count": s.count,
            "total": nanos(s.makespan),
            "window": nanos(self.window),
            "margin": nanos(EARLY_MARGIN),
            "average": nanos(s.average),
            "fastest": nanos(s.fastest),
            "slowest": nanos(s.slowest),
            "rps": s.rps,
            "latencyDistribution": s.percentiles.iter().filter(|(p, _)| p.fract() == 0.0)
                .map(|(p, l)| json!({"percentage": *p as u32, "latency": nanos(*l)})).collect::<Vec<_>>(),
            "statusCodeDistribution": s.status_codes,
            "outcomes": s.outcomes,
            "not_open": self.not_open,
            "hint_too_long": self.hint_too_long,
            "hint_missing": self.hint_missing,
            "opens_at_wrong": self.opens_at_wrong,
            "hint_slack_ms": {"min": self.slack(0.0), "p50": self.slack(0.5), "max": self.slack(1.0)},
            "answered_after_opening": self.answered_after_opening,
        })
    }

    /// The early phase in the text summary.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "  Early calls:\t{} over {} (spread evenly, the last {} ms before opens_at)",
            s.count,
            ms(self.window),
            EARLY_MARGIN.as_millis()
        );
        let _ = writeln!(out, "  Early calls/s:\t{:.2} (first send to last answer: {})", s.rps, ms(s.makespan));
        let p = |want: f64| s.percentiles.iter().find(|(p, _)| *p == want).map_or(Duration::ZERO, |(_, l)| *l);
        let _ = writeln!(
            out,
            "  Early latency:\tp50 {}, p95 {}, p99 {}, slowest {}",
            ms(p(50.0)),
            ms(p(95.0)),
            ms(p(99.0)),
            ms(s.slowest)
        );
        let _ = writeln!(out, "  Early outcomes:");
        for (outcome, n) in &s.outcomes {
            let _ = writeln!(out, "    {outcome:<38} {n}");
        }
        match (self.slack(0.0), self.slack(0.5), self.slack(1.0)) {
            (Some(min), Some(p50), Some(max)) => {
                let _ = writeln!(
                    out,
                    "  RetryInfo vs time left at sending: undershoots by {min:.0} ms at least, {p50:.0} ms median, \
                     {max:.0} ms at most; {} longer, {} missing",
                    self.hint_too_long, self.hint_missing
                );
            }
            _ => {
                let _ = writeln!(out, "  RetryInfo: none received ({} missing)", self.hint_missing);
            }
        }
        let _ = writeln!(out, "  Early calls answered after opens_at: {}", self.answered_after_opening);
        out
    }
}

/// The opening in the text summary: the instant, how late the burst left
/// after it, and the early phase.
pub fn summary(opening: &Opening, opens_in: Duration, released: Instant, early: Option<&Early>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nOpening (opens_at {}, set {} ahead; the burst left {} after it):",
        opening.rfc3339(),
        ms(opens_in),
        ms(released.saturating_duration_since(opening.at))
    );
    match early {
        Some(early) => out.push_str(&early.summary()),
        None => out.push_str("  No early calls (--early 0).\n"),
    }
    out
}

/// The opening in the JSON report, under `slotgate.opening`.
pub fn json(opening: &Opening, opens_in: Duration, released: Instant, early: Option<&Early>) -> Value {
    json!({
        "opens_at": opening.rfc3339(),
        "opens_in": opens_in.as_nanos() as u64,
        "released_after_opening": released.saturating_duration_since(opening.at).as_nanos() as u64,
        "early": early.map(Early::json),
    })
}

/// Outcomes of the burst that only a slot not yet open gives: a release
/// before the opening instant (by the gate's clock).
pub fn burst_refused_not_open(outcomes: &BTreeMap<String, usize>) -> usize {
    let label = format!("{}/SLOT_NOT_OPEN", go_code(tonic::Code::FailedPrecondition));
    outcomes.get(&label).copied().unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use clap::Parser;
    use tonic::Code;

    use super::*;
    use crate::fire::{Call, Outcome, Sample};

    fn options(opens_in: Option<&str>, early: Option<u64>) -> Result<Option<OpeningOptions>, String> {
        OpeningOptions::new(opens_in, early, true, false)
    }

    #[test]
    fn the_options_parse_and_are_checked() {
        let args = crate::Args::try_parse_from(["slotgate-load", "--opens-in", "1m2.5s", "--early", "500"]).unwrap();
        assert_eq!(
            OpeningOptions::new(args.opens_in.as_deref(), args.early, true, false),
            Ok(Some(OpeningOptions { opens_in: Duration::from_millis(62_500), early: 500 }))
        );
        assert_eq!(options(None, None), Ok(None));
        assert_eq!(options(Some("2s"), None), Ok(Some(OpeningOptions { opens_in: Duration::from_secs(2), early: 0 })));
        assert!(options(None, Some(10)).unwrap_err().contains("--early needs --opens-in"));
        assert!(options(Some("2"), None).unwrap_err().contains("--opens-in"), "a Go duration needs its unit");
        assert!(options(Some("0s"), None).is_err());
        // The early calls end EARLY_MARGIN before the opening.
        assert!(options(Some("200ms"), Some(1)).unwrap_err().contains("200 ms"));
        assert!(options(Some("200ms"), Some(0)).is_ok(), "without early calls any wait will do");
        assert!(options(Some("201ms"), Some(1)).is_ok());
        assert!(OpeningOptions::new(Some("2s"), None, false, false).unwrap_err().contains("seed's scenarios"));
        assert!(OpeningOptions::new(Some("2s"), None, true, true).unwrap_err().contains("health"));
    }

    #[test]
    fn the_opening_is_a_whole_millisecond_on_both_clocks() {
        let wall = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let mono = Instant::now();
        let o = Opening::from_clocks(wall, mono, Duration::from_secs(2));
        assert_eq!(o.unix_ms, 1_700_000_002_123);
        assert_eq!(o.at - mono, Duration::from_secs(2) - Duration::from_nanos(456_789), "cut, never later");
        assert_eq!(o.seconds_nanos(), (1_700_000_002, 123_000_000));
        assert_eq!(o.rfc3339(), "2023-11-14T22:13:22.123Z");
        assert!(o.is("2023-11-14T22:13:22.123Z"));
        assert!(o.is("2023-11-15T07:13:22.123+09:00"), "any offset naming the same instant");
        assert!(!o.is("2023-11-14T22:13:22.124Z"));
        assert!(!o.is("not a time"));
        assert!(o.is_timestamp(1_700_000_002, 123_000_000));
        assert!(!o.is_timestamp(1_700_000_002, 123_400_000), "finer than the instant set");
        assert!(!o.is_timestamp(1_700_000_001, 123_000_000));
    }

    #[test]
    fn the_last_early_call_goes_at_the_end_of_the_span() {
        let span = Duration::from_millis(1_800);
        let rate = early_rate(2_000, span);
        let last = Duration::from_secs_f64(1_999.0 / rate);
        assert!(last.abs_diff(span) < Duration::from_micros(1), "{last:?}");
        assert!(early_rate(1, span).is_finite() && early_rate(1, span) > 0.0);
        assert!(early_rate(5, Duration::ZERO).is_finite());
    }

    #[test]
    fn time_left_rounds_up_to_a_millisecond() {
        assert_eq!(ceil_ms(Duration::from_micros(1_499_200)), Duration::from_millis(1_500));
        assert_eq!(ceil_ms(Duration::from_millis(7)), Duration::from_millis(7));
        assert_eq!(ceil_ms(Duration::from_nanos(1)), Duration::from_millis(1));
        assert_eq!(ceil_ms(Duration::ZERO), Duration::ZERO);
    }

    fn not_open(opens_at: &str, hint: Option<Duration>) -> Outcome {
        Outcome {
            code: Code::FailedPrecondition,
            reason: "SLOT_NOT_OPEN".into(),
            message: String::new(),
            retry_delay: hint,
            opens_at: Some(opens_at.into()),
        }
    }

    #[test]
    fn early_calls_are_accounted_and_checked() {
        let t0 = Instant::now();
        let opening = Opening { unix_ms: 1_700_000_002_123, at: t0 + Duration::from_secs(1) };
        let at = opening.rfc3339();
        let ms = Duration::from_millis;
        let sample = |n: u64, issued: Duration, answered: Duration, outcome: Outcome| Sample {
            number: n,
            call: Call::Health,
            sent: t0 + issued,
            issued: t0 + issued,
            answered: t0 + answered,
            outcome,
        };
        let samples = vec![
            // 1,000 ms left, hint 1,000 ms: exact.
            sample(0, ms(0), ms(2), not_open(&at, Some(ms(1_000)))),
            // 999.5 ms left: the gate's whole milliseconds may say 1,000.
            sample(1, Duration::from_micros(500), ms(3), not_open(&at, Some(ms(1_000)))),
            // 999 ms left, hint 1,000 ms: too long.
            sample(2, ms(1), ms(4), not_open(&at, Some(ms(1_000)))),
            // Undershooting by 10 ms is fine.
            sample(3, ms(100), ms(101), not_open(&at, Some(ms(890)))),
            sample(4, ms(200), ms(201), not_open(&at, None)),
            sample(5, ms(300), ms(301), not_open("2023-11-14T22:13:22.124Z", Some(ms(1)))),
            sample(
                6,
                ms(400),
                ms(401),
                Outcome {
                    code: Code::FailedPrecondition,
                    reason: "SOLD_OUT".into(),
                    message: String::new(),
                    retry_delay: None,
                    opens_at: None,
                },
            ),
            sample(
                7,
                ms(995),
                ms(1_005),
                Outcome {
                    code: Code::Ok,
                    reason: String::new(),
                    message: String::new(),
                    retry_delay: None,
                    opens_at: None,
                },
            ),
        ];
        let run = Run { samples, started: t0, finished: t0 + ms(1_005) };
        let early = Early::new(&run, &opening);
        assert_eq!(early.not_open, 6);
        assert_eq!(early.hint_too_long, 1);
        assert_eq!(early.hint_missing, 1);
        assert_eq!(early.opens_at_wrong, 1);
        assert_eq!(early.answered_after_opening, 1);
        assert_eq!(early.window, ms(995));
        assert_eq!(early.slack_ms, [-1.0, 0.0, 0.0, 10.0, 699.0]);
        // SOLD_OUT is no answer before the opening (a booking, caught by the
        // first check, is never "unexpected" in the figures).
        assert_eq!(early.stats.unexpected, 1);
        let checks = early.checks(&opening);
        assert_eq!(checks.iter().map(|c| c.1).collect::<Vec<_>>(), [false, false, false], "{checks:?}");
        assert!(checks[0].0.contains("6 of 8"), "{}", checks[0].0);
        assert!(checks[1].0.contains("1 longer, 1 missing"), "{}", checks[1].0);
        let json = early.json();
        assert_eq!(json["not_open"], 6);
        assert_eq!(json["hint_slack_ms"]["min"], -1.0);
        assert_eq!(json["outcomes"]["FailedPrecondition/SLOT_NOT_OPEN"], 6);
        assert!(early.summary().contains("1 longer, 1 missing"));

        // The same calls all answered as a closed slot answers: every check passes.
        let good = Run {
            samples: vec![
                sample(0, ms(0), ms(2), not_open(&at, Some(ms(1_000)))),
                sample(1, ms(500), ms(502), not_open(&at, Some(ms(499)))),
            ],
            started: t0,
            finished: t0 + ms(502),
        };
        let early = Early::new(&good, &opening);
        assert!(early.checks(&opening).iter().all(|c| c.1), "{:?}", early.checks(&opening));
        assert_eq!(early.stats.unexpected, 0);
    }

    #[test]
    fn the_early_calls_are_nobody_of_the_scenario() {
        let slot = pb::SlotRef { restaurant_id: 67, date: "2036-12-24".into(), time: "19:00".into() };
        let (scenario, early) = (crate::seed_calls(7, slot.clone(), 3, 4, false), early_calls(7, slot.clone(), 4));
        let ids = |source: &Source, count: u64| -> (HashSet<String>, HashSet<String>) {
            (0..count)
                .map(|n| match source(n, "w").unwrap() {
                    Call::Create(r) => {
                        assert_eq!((r.slot.as_ref(), r.party_size), (Some(&slot), 4), "into the scenario's slot");
                        (r.request_id, r.user_id)
                    }
                    Call::CreateThenJoin(_) | Call::Health => panic!("a reservation"),
                })
                .unzip()
        };
        let (scenario_ids, scenario_users) = ids(&scenario, 6_000);
        let (early_ids, early_users) = ids(&early, 2_000);
        assert_eq!((scenario_ids.len(), scenario_users.len()), (6_000, 2_000));
        assert_eq!((early_ids.len(), early_users.len()), (2_000, 2_000), "each early call its own user");
        assert!(scenario_ids.is_disjoint(&early_ids));
        assert!(scenario_users.is_disjoint(&early_users));
    }

    /// The report's opening section is what `results.py` reads: a report
    /// made here renders into RESULTS.md's opening table, beside the plain
    /// run of the same scenario.
    #[test]
    fn results_py_renders_the_opening_from_the_report() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let opening = Opening { unix_ms: 1_700_000_002_000, at: t0 + ms(2_000) };
        let at = opening.rfc3339();
        let reply = |number: u64, sent: Duration, answered: Duration, outcome: Outcome| Sample {
            number,
            call: Call::Health,
            sent: t0 + sent,
            issued: t0 + sent,
            answered: t0 + answered,
            outcome,
        };
        // 4 early calls over 500 ms, each hint 3 ms under the time left.
        let early = Run {
            samples: (0..4)
                .map(|n| {
                    let sent = ms(n * 166);
                    reply(n, sent, sent + ms(2), not_open(&at, Some(ms(2_000 - 3) - ms(n * 166))))
                })
                .collect(),
            started: t0,
            finished: t0 + ms(500),
        };
        let early = Early::new(&early, &opening);
        // The burst: 10 winners, 2 ms after the opening.
        let booked = || Outcome {
            code: Code::Ok,
            reason: String::new(),
            message: String::new(),
            retry_delay: None,
            opens_at: None,
        };
        let burst = |start: Duration| Run {
            samples: (0..10).map(|n| reply(n, start, start + ms(40 + n), booked())).collect(),
            started: t0 + start,
            finished: t0 + start + ms(50),
        };
        let work = std::env::temp_dir().join(format!("slotgate-opening-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        for (name, run) in
            [("redis.duplicate-2000.1", burst(ms(0))), ("redis.opening.duplicate-2000.1", burst(ms(2_002)))]
        {
            let stats = Stats::new(&run, Outcome::expected_refusal);
            let mut checks = vec![("winners: 10".to_owned(), true)];
            let opened = name.contains("opening");
            if opened {
                checks.extend(early.checks(&opening));
            }
            let mut report = crate::report::ghz_json(&run, &stats, json!({"name": name}), &checks);
            report["slotgate"]["expected_winners"] = json!(10);
            if opened {
                // As `run` does.
                report["slotgate"]["opening"] = super::json(&opening, ms(2_000), run.started, Some(&early));
            }
            std::fs::write(work.join(format!("{name}.json")), report.to_string()).unwrap();
        }
        let script = "import sys; sys.path.insert(0, 'loadtest'); import results; \
                      print('\\n'.join(results.opening_section(sys.argv[1], ['redis', 'db-lock'], ['duplicate-2000'])))";
        let output = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&work)
            .current_dir(crate::ghz_files::repo())
            .output()
            .expect("python3 runs results.py");
        let _ = std::fs::remove_dir_all(&work);
        assert!(output.status.success(), "results.py: {}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).unwrap();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with("| duplicate-2000 |"))
            .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
            .collect();
        assert_eq!(rows.len(), 2, "the plain run and the opening, for the gate that ran them:\n{text}");
        let (plain, opened) = (&rows[0], &rows[1]);
        assert_eq!(plain[1..4], ["--gate redis", "open from the start", "n/a"], "{text}");
        // early calls, refused, refusals/s (4 in 0.5 s), p95 (2 ms)
        assert_eq!(opened[2..7], ["opening in 2 s", "4", "4", "8", "2.00 ms"], "{text}");
        assert_eq!(opened[7], "within the time left (median 3 ms under)");
        assert_eq!(opened[8], "10 of 10, exact");
        assert_eq!(opened[11], "50.0 ms", "the opening burst's makespan");
        assert_eq!(opened[12], "2.00 ms", "released after opens_at");
        assert!(text.contains("--scenario duplicate-2000 --opens-in 2s --early 4"), "{text}");
    }

    #[test]
    fn a_burst_call_refused_not_open_is_counted() {
        let mut outcomes = BTreeMap::from([("OK".to_owned(), 10), ("FailedPrecondition/SOLD_OUT".to_owned(), 5)]);
        assert_eq!(burst_refused_not_open(&outcomes), 0);
        outcomes.insert("FailedPrecondition/SLOT_NOT_OPEN".into(), 3);
        assert_eq!(burst_refused_not_open(&outcomes), 3);
    }
}
