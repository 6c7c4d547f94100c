//! The tower layers in front of the business services: excess load is
//! refused at once, never parked in a queue.
//!
//! Outermost first:
//!
//! 1. [`StatusLayer`]: turns a tower error into a gRPC status with our
//!    reason. tonic would otherwise answer a shed call `RESOURCE_EXHAUSTED`
//!    with a text about a per-connection limit that is not ours, and a
//!    timed-out one `INTERNAL` ("h2 protocol error"); and `add_service`
//!    needs services that cannot fail, which this layer makes them.
//! 2. tower's `LoadShed` over a `GlobalConcurrencyLimit`: past the limit of
//!    calls in flight, a call is refused at once, `UNAVAILABLE`/`OVERLOADED`.
//! 3. [`RateLimit`]: a token bucket (`governor`), refusing at once with
//!    `RESOURCE_EXHAUSTED`/`RATE_LIMITED` and the wait until the next token.
//!    (tower's `RateLimit` waits for a token instead, and is not `Clone`: it
//!    would need a `Buffer`, which is a queue.)
//! 4. [`DeadlineLayer`]: the request's deadline, the smaller of the server's
//!    timeout and the client's `grpc-timeout`, put in the request's
//!    extensions for handlers to check before starting work; past it the
//!    call ends `DEADLINE_EXCEEDED`.
//!
//! Health and reflection are not behind these layers: probes must answer
//! under overload, and must not spend the rate budget.
//!
//! [`UserGuard`], checked by the `CreateReservation` handler, is a token
//! bucket per user id.

use std::{
    convert::Infallible,
    future::Future,
    hash::{BuildHasher, RandomState},
    num::NonZeroU32,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::Clock,
    middleware::NoOpMiddleware,
    state::{DirectStateStore, NotKeyed},
};
use tokio::time::Instant;
use tonic::{
    Code,
    body::Body,
    codegen::http::{HeaderMap, Request, Response},
};
use tower::{BoxError, Layer, Service};

use crate::{
    precheck::Precheck,
    status::{Refusal, reason},
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Maps the errors of the layers below it into gRPC statuses.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusLayer;

impl<S> Layer<S> for StatusLayer {
    type Service = StatusService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        StatusService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct StatusService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for StatusService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // An error here resurfaces from `call` (LoadShed reports overload
        // there, not here), so readiness itself never fails.
        let _ = std::task::ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            Ok(match future.await {
                Ok(response) => response,
                Err(e) => {
                    let e: BoxError = e.into();
                    if e.is::<tower::load_shed::error::Overloaded>() {
                        Refusal::new(Code::Unavailable, reason::OVERLOADED, "too many calls in flight; retry shortly")
                            .retry_after(Duration::from_millis(100))
                            .response()
                    } else {
                        tracing::error!(error = %e, "middleware error");
                        Refusal::new(Code::Internal, reason::INTERNAL, "internal error").response()
                    }
                }
            })
        })
    }
}

/// Takes a token from `limiter`, or says how long until there is one.
fn take<S: DirectStateStore, C: Clock>(
    limiter: &RateLimiter<NotKeyed, S, C, NoOpMiddleware<C::Instant>>,
) -> Result<(), Duration> {
    limiter.check().map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
}

/// A quota of `per_second` calls, `burst` of them at once after a quiet
/// spell; `None` when `per_second` is 0 (no limit).
fn quota(per_second: u32, burst: u32) -> Option<Quota> {
    let per_second = NonZeroU32::new(per_second)?;
    Some(Quota::per_second(per_second).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)))
}

/// Global rate limit, shared by every connection; `per_second == 0` turns
/// it off. A [`Precheck`]: in front of the services through a
/// [`PrecheckLayer`](crate::precheck::PrecheckLayer).
#[derive(Debug, Clone)]
pub struct RateLimit {
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl RateLimit {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self { limiter: quota(per_second, burst).map(|q| Arc::new(RateLimiter::direct(q))) }
    }
}

impl Precheck for RateLimit {
    fn check<B>(&self, _request: &mut Request<B>) -> Result<(), Refusal> {
        match self.limiter.as_deref().map(take) {
            Some(Err(wait)) => Err(Refusal::new(
                Code::ResourceExhausted,
                reason::RATE_LIMITED,
                "rate limit reached; retry after the hinted delay",
            )
            .retry_after(wait)),
            _ => Ok(()),
        }
    }
}

/// When a call must be answered by; in every business request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// Sets each call's [`Deadline`] and enforces it.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    server_timeout: Duration,
}

impl DeadlineLayer {
    pub fn new(server_timeout: Duration) -> Self {
        Self { server_timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService { inner, server_timeout: self.server_timeout }
    }
}

#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    server_timeout: Duration,
}

impl<S, B> Service<Request<B>> for DeadlineService<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let timeout = grpc_timeout(request.headers()).map_or(self.server_timeout, |t| t.min(self.server_timeout));
        let deadline = Deadline(Instant::now() + timeout);
        let expired =
            || Refusal::new(Code::DeadlineExceeded, reason::DEADLINE_EXCEEDED, "deadline exceeded").response();
        if timeout.is_zero() {
            return Box::pin(async move { Ok(expired()) });
        }
        request.extensions_mut().insert(deadline);
        let future = self.inner.call(request);
        Box::pin(async move { tokio::time::timeout_at(deadline.0, future).await.unwrap_or_else(|_| Ok(expired())) })
    }
}

/// The `grpc-timeout` header: up to 8 digits and a unit (H M S m u n).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Per-user guard against rapid repeat clicking: a small token bucket per
/// user id, checked in the handler (it needs the decoded user id) before any
/// Redis or database work. A double or triple click passes (the gate answers
/// the extra clicks DUPLICATE, which tells the user more); a script
/// hammering with one user id does not.
///
/// Users are keyed by a hash of their id (random per process): no id is
/// copied or kept, and colliding on purpose needs the process's key. On a
/// 2-core machine, two threads checking fresh users three times each took
/// about 130-200 ns per check, against 490-670 ns for a mutex-guarded map
/// of buckets keyed by the id.
#[derive(Debug)]
pub struct UserGuard {
    limiter: Option<DefaultKeyedRateLimiter<u64>>,
    hasher: RandomState,
    checks: AtomicU32,
}

/// Every this many checks, users whose bucket has refilled are forgotten
/// (a full bucket is an idle user: forgetting it changes nothing), so the
/// map holds about the users seen within one refill time (burst / rate),
/// plus those seen since the last sweep.
const GUARD_SWEEP_EVERY: u32 = 4_096;

impl UserGuard {
    /// `burst == 0` turns the guard off.
    pub fn new(burst: u32, per_second: u32) -> Self {
        let limiter = quota(per_second.max(1), burst).filter(|_| burst > 0).map(RateLimiter::keyed);
        Self { limiter, hasher: RandomState::new(), checks: AtomicU32::new(0) }
    }

    /// Ok, or how long this user should wait.
    pub fn check(&self, user: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        if self.checks.fetch_add(1, Ordering::Relaxed) % GUARD_SWEEP_EVERY == GUARD_SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&self.hasher.hash_one(user))
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_bad_ones_are_ignored() {
        let parse = |v: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&headers)
        };
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(parse("123456789S"), None);
        assert_eq!(parse("S"), None);
        assert_eq!(parse("10x"), None);
    }

    #[test]
    fn a_bucket_refuses_when_empty_and_says_how_long_to_wait() {
        let clock = governor::clock::FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(quota(10, 2).unwrap(), clock.clone());
        assert!(take(&limiter).is_ok());
        assert!(take(&limiter).is_ok());
        let wait = take(&limiter).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        clock.advance(Duration::from_millis(100));
        assert!(take(&limiter).is_ok());
        assert!(quota(0, 5).is_none(), "0 calls per second turns the limit off");
    }

    #[test]
    fn a_triple_click_passes_the_user_guard_but_hammering_does_not() {
        let guard = UserGuard::new(5, 1);
        assert!((0..3).all(|_| guard.check("alice").is_ok()));
        assert!((0..2).all(|_| guard.check("alice").is_ok()));
        assert!(guard.check("alice").is_err());
        assert!(guard.check("bob").is_ok(), "users are guarded separately");
        assert!(UserGuard::new(0, 1).check("alice").is_ok(), "0 turns it off");
    }
}
