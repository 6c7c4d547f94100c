//! Firing calls: all at once behind a start line (the seed's k6 VUs), from a
//! fixed number of workers (closed loop), or at a fixed arrival rate (open
//! loop), with a progress line each second.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use slotgate::pb::{self, reservations_client::ReservationsClient};
use tokio::{sync::watch, time::Instant};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt;

/// One call to make.
#[derive(Debug, Clone)]
pub enum Call {
    Create(pb::CreateReservationRequest),
    /// A create, and when it is refused SOLD_OUT, a join of the slot's
    /// waitlist; the sample is the join's (OK as `WAITLISTED`).
    CreateThenJoin(pb::CreateReservationRequest),
    /// `grpc.health.v1.Health/Check`: the trivial reference RPC, what gRPC
    /// alone costs on this machine.
    Health,
}

/// Makes call number `n` for worker `worker` (ghz's RequestNumber, WorkerID).
pub type Source = Arc<dyn Fn(u64, &str) -> Result<Call, String> + Send + Sync>;

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Every call created first, then released together.
    AllAtOnce,
    /// This many workers, each sending its next call when the last answered.
    Workers(usize),
    /// Calls start at this many per second whatever the answers do.
    Rate(f64),
}

#[derive(Debug, Clone)]
pub struct Fire {
    pub mode: Mode,
    pub total: Option<u64>,
    pub duration: Option<Duration>,
    pub connections: usize,
    pub metadata: Vec<(String, String)>,
    pub timeout: Duration,
    /// Release the calls at this instant rather than as soon as they are
    /// ready: every connection is made and (all at once) every call built
    /// first, then the start line waits for it. The open loop's schedule
    /// and the workers start from it. An instant already past starts at once.
    pub start_at: Option<Instant>,
}

/// How one call ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub code: Code,
    /// `ErrorInfo.reason`, empty when there is none.
    pub reason: String,
    pub message: String,
    /// `RetryInfo.retry_delay`: how long the server says to wait.
    pub retry_delay: Option<Duration>,
    /// `ErrorInfo.metadata["opens_at"]` (SLOT_NOT_OPEN names the opening).
    pub opens_at: Option<String>,
}

impl Outcome {
    /// Sold out and duplicate clicks are what a burst is expected to meet.
    pub fn expected_refusal(&self) -> bool {
        matches!(
            (self.code, self.reason.as_str()),
            (Code::FailedPrecondition, "SOLD_OUT" | "WAITLIST_FULL") | (Code::AlreadyExists, "DUPLICATE")
        )
    }

    /// Booked: OK, and not a waitlist join.
    pub fn booked(&self) -> bool {
        self.code == Code::Ok && self.reason.is_empty()
    }

    /// The slot's sale window has not opened yet: what every call before a
    /// slot's `opens_at` must get.
    pub fn not_open(&self) -> bool {
        self.code == Code::FailedPrecondition && self.reason == "SLOT_NOT_OPEN"
    }
}

pub struct Sample {
    pub number: u64,
    pub call: Call,
    /// When the call started (open loop: when it was scheduled to, so a
    /// late generator does not hide latency).
    pub sent: Instant,
    /// When the call was really handed to the client: `sent`, or later
    /// when an open loop's generator ran late.
    pub issued: Instant,
    pub answered: Instant,
    pub outcome: Outcome,
}

pub struct Run {
    pub samples: Vec<Sample>,
    pub started: Instant,
    pub finished: Instant,
}

#[derive(Default)]
struct Progress {
    answered: AtomicU64,
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

struct Clients {
    reservations: Vec<ReservationsClient<Channel>>,
    health: Vec<HealthClient<Channel>>,
    metadata: Arc<Vec<(String, String)>>,
    timeout: Duration,
    progress: Arc<Progress>,
}

impl Clients {
    async fn call(&self, n: u64, call: Call, sent: Instant) -> Sample {
        let issued = Instant::now();
        let i = n as usize % self.reservations.len();
        let outcome = match &call {
            Call::Create(request) => {
                let mut request = tonic::Request::new(request.clone());
                self.decorate(&mut request);
                outcome(self.reservations[i].clone().create_reservation(request).await.map(|_| ()))
            }
            Call::CreateThenJoin(request) => {
                let mut create = tonic::Request::new(request.clone());
                self.decorate(&mut create);
                let mut client = self.reservations[i].clone();
                let first = outcome(client.create_reservation(create).await.map(|_| ()));
                if first.reason == "SOLD_OUT" {
                    let mut join = tonic::Request::new(crate::waitlist::join_for(request));
                    self.decorate(&mut join);
                    let mut joined = outcome(client.join_waitlist(join).await.map(|_| ()));
                    if joined.code == Code::Ok {
                        joined.reason = crate::waitlist::WAITLISTED.to_owned();
                    }
                    joined
                } else {
                    first
                }
            }
            Call::Health => {
                let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
                self.decorate(&mut request);
                outcome(self.health[i].clone().check(request).await.map(|_| ()))
            }
        };
        let p = &self.progress;
        p.answered.fetch_add(1, Ordering::Relaxed);
        let bucket = match outcome.code {
            Code::Ok if outcome.booked() => &p.ok,
            Code::Ok => &p.refused,
            _ if outcome.expected_refusal() || outcome.not_open() => &p.refused,
            _ => &p.failed,
        };
        bucket.fetch_add(1, Ordering::Relaxed);
        Sample { number: n, call, sent, issued, answered: Instant::now(), outcome }
    }

    fn decorate<T>(&self, request: &mut tonic::Request<T>) {
        request.set_timeout(self.timeout);
        for (key, value) in self.metadata.iter() {
            if let (Ok(key), Ok(value)) =
                (key.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(), value.parse())
            {
                request.metadata_mut().insert(key, value);
            }
        }
    }
}

fn outcome(result: Result<(), tonic::Status>) -> Outcome {
    match result {
        Ok(()) => {
            Outcome { code: Code::Ok, reason: String::new(), message: String::new(), retry_delay: None, opens_at: None }
        }
        Err(status) => {
            // One decoding of the details for both.
            let details = status.get_error_details();
            let info = details.error_info();
            Outcome {
                code: status.code(),
                reason: info.map(|i| i.reason.clone()).unwrap_or_default(),
                message: status.message().to_owned(),
                retry_delay: details.retry_info().and_then(|r| r.retry_delay),
                opens_at: info.and_then(|i| i.metadata.get("opens_at").cloned()),
            }
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("http://{addr}")).expect("a socket address makes a valid URI").connect().await
}

/// Prints `elapsed  answered  ok  refused  failed  rate` to stderr each
/// second until `done` turns true.
fn progress_line(
    progress: Arc<Progress>,
    started: Instant,
    mut done: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
        let mut last = 0;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = done.wait_for(|d| *d) => return,
            }
            let answered = progress.answered.load(Ordering::Relaxed);
            eprintln!(
                "  {:>5.1}s  answered {answered:>8}  ok {:>7}  refused {:>8}  failed {:>6}  {:>7}/s",
                started.elapsed().as_secs_f64(),
                progress.ok.load(Ordering::Relaxed),
                progress.refused.load(Ordering::Relaxed),
                progress.failed.load(Ordering::Relaxed),
                answered - last
            );
            last = answered;
        }
    })
}

/// A task that makes calls and returns what each took.
type Task = tokio::task::JoinHandle<Result<Vec<Sample>, String>>;

/// Fires calls from `source` at `addr` as `fire` says.
pub async fn fire(addr: SocketAddr, source: Source, fire: Fire) -> Result<Run, String> {
    let mut channels = Vec::with_capacity(fire.connections.max(1));
    for _ in 0..fire.connections.max(1) {
        channels.push(connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?);
    }
    let progress = Arc::new(Progress::default());
    let clients = Arc::new(Clients {
        reservations: channels.iter().cloned().map(ReservationsClient::new).collect(),
        health: channels.into_iter().map(HealthClient::new).collect(),
        metadata: Arc::new(fire.metadata),
        timeout: fire.timeout,
        progress: Arc::clone(&progress),
    });
    // Every mode yields tasks that each return the samples they took.
    let (started, tasks): (Instant, Vec<Task>) = match fire.mode {
        Mode::AllAtOnce => {
            let total = fire.total.ok_or("firing all at once needs a total")?;
            let (go, start_line) = watch::channel(false);
            let mut tasks = Vec::with_capacity(total as usize);
            for n in 0..total {
                let call = source(n, &format!("w{n}"))?;
                let (clients, mut start_line) = (Arc::clone(&clients), start_line.clone());
                tasks.push(tokio::spawn(async move {
                    let _ = start_line.wait_for(|go| *go).await;
                    Ok(vec![clients.call(n, call, Instant::now()).await])
                }));
            }
            if let Some(at) = fire.start_at {
                tokio::time::sleep_until(at).await;
            }
            let started = Instant::now();
            let _ = go.send(true);
            (started, tasks)
        }
        Mode::Workers(workers) => {
            if let Some(at) = fire.start_at {
                tokio::time::sleep_until(at).await;
            }
            let started = Instant::now();
            let next = Arc::new(AtomicUsize::new(0));
            let (total, stop_at) = (fire.total, fire.duration.map(|d| started + d));
            let tasks = (0..workers.max(1))
                .map(|w| {
                    let (clients, next, source) = (Arc::clone(&clients), Arc::clone(&next), Arc::clone(&source));
                    tokio::spawn(async move {
                        let (worker, mut mine) = (format!("w{w}"), Vec::new());
                        loop {
                            let n = next.fetch_add(1, Ordering::Relaxed) as u64;
                            if total.is_some_and(|t| n >= t) || stop_at.is_some_and(|s| Instant::now() >= s) {
                                return Ok(mine);
                            }
                            mine.push(clients.call(n, source(n, &worker)?, Instant::now()).await);
                        }
                    })
                })
                .collect();
            (started, tasks)
        }
        Mode::Rate(per_second) => {
            if per_second <= 0.0 {
                return Err("--rps must be positive".into());
            }
            if fire.total.is_none() && fire.duration.is_none() {
                return Err("an open-loop run needs a total or a duration".into());
            }
            // The schedule starts at the release instant, even one already
            // past: calls due since then go out at once.
            let started = match fire.start_at {
                Some(at) => {
                    tokio::time::sleep_until(at).await;
                    at
                }
                None => Instant::now(),
            };
            let (total, duration, clients) = (fire.total, fire.duration, Arc::clone(&clients));
            // The generator starts each call on its schedule without waiting
            // for answers, then gathers them.
            let generator = tokio::spawn(async move {
                let mut calls = Vec::new();
                for n in 0.. {
                    let at = started + Duration::from_secs_f64(n as f64 / per_second);
                    if total.is_some_and(|t| n >= t) || duration.is_some_and(|d| at >= started + d) {
                        break;
                    }
                    tokio::time::sleep_until(at).await;
                    let (clients, call) = (Arc::clone(&clients), source(n, "open-loop")?);
                    calls.push(tokio::spawn(async move { clients.call(n, call, at).await }));
                }
                let mut samples = Vec::with_capacity(calls.len());
                for call in calls {
                    samples.push(call.await.map_err(|e| e.to_string())?);
                }
                Ok(samples)
            });
            (started, vec![generator])
        }
    };

    let (done, done_rx) = watch::channel(false);
    let ticker = progress_line(Arc::clone(&progress), started, done_rx);
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.map_err(|e| e.to_string())??);
    }
    let finished = Instant::now();
    let _ = done.send(true);
    let _ = ticker.await;
    samples.sort_by_key(|s| s.number);
    Ok(Run { samples, started, finished })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn an_outcome_reads_the_reason_the_retry_hint_and_the_opening() {
        let mut details = ErrorDetails::new();
        let metadata = HashMap::from([("opens_at".to_owned(), "2036-12-20T09:00:00.000Z".to_owned())]);
        details.set_error_info("SLOT_NOT_OPEN", "slotgate.v1", metadata);
        details.set_retry_info(Some(Duration::from_millis(1_234)));
        let status = tonic::Status::with_error_details(Code::FailedPrecondition, "not yet", details);
        let o = outcome(Err(status));
        assert!(o.not_open() && !o.expected_refusal());
        assert_eq!(o.retry_delay, Some(Duration::from_millis(1_234)));
        assert_eq!(o.opens_at.as_deref(), Some("2036-12-20T09:00:00.000Z"));

        let mut details = ErrorDetails::new();
        details.set_error_info("SOLD_OUT", "slotgate.v1", HashMap::new());
        let o = outcome(Err(tonic::Status::with_error_details(Code::FailedPrecondition, "sold out", details)));
        assert!(o.expected_refusal() && !o.not_open());
        assert_eq!((o.retry_delay, o.opens_at), (None, None));
        assert!(!outcome(Err(tonic::Status::failed_precondition("no details"))).not_open());
    }

    /// A health service on a free port of this machine.
    async fn health_server() -> SocketAddr {
        let (_, service) = tonic_health::server::health_reporter();
        let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming));
        addr
    }

    fn health_calls() -> Source {
        Arc::new(|_, _| Ok(Call::Health))
    }

    #[tokio::test]
    async fn calls_leave_at_the_release_instant_and_not_before() {
        let addr = health_server().await;
        let fire_at = |mode, start_at| Fire {
            mode,
            total: Some(20),
            duration: None,
            connections: 2,
            metadata: Vec::new(),
            timeout: Duration::from_secs(5),
            start_at,
        };
        for mode in [Mode::AllAtOnce, Mode::Workers(4), Mode::Rate(1_000.0)] {
            let release = Instant::now() + Duration::from_millis(300);
            let run = fire(addr, health_calls(), fire_at(mode, Some(release))).await.unwrap();
            assert_eq!(run.samples.len(), 20);
            assert!(run.samples.iter().all(|s| s.outcome.code == Code::Ok), "{mode:?}");
            assert!(run.started >= release, "{mode:?}: started before the release instant");
            assert!(run.samples.iter().all(|s| s.issued >= release), "{mode:?}: a call left early");
            assert!(run.samples.iter().all(|s| s.sent <= s.issued), "{mode:?}");
        }
        // An instant already past: the open loop's schedule still counts
        // from it, so the calls due since then leave at once.
        // 10 calls at 10/s from 1 s ago: all due, all sent now (a schedule
        // counted from now would end 0.9 s from now).
        let past = Instant::now() - Duration::from_secs(1);
        let run = fire(addr, health_calls(), Fire { total: Some(10), ..fire_at(Mode::Rate(10.0), Some(past)) })
            .await
            .unwrap();
        assert_eq!(run.started, past);
        assert!(run.finished - past < Duration::from_millis(1_500), "the due calls waited their turn");
    }
}
