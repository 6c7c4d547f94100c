//! The tower layers in front of the business services: excess load is
//! refused at once, never parked in a queue (invariant 7).
//!
//! Outermost first:
//!
//! 1. [`StatusLayer`]: turns a tower error into a gRPC status with our
//!    reason. tonic would otherwise answer a shed call `RESOURCE_EXHAUSTED`
//!    with a misleading text, and a timed-out one `INTERNAL` (shared/DEPS.md
//!    traps 2-3); the services it wraps cannot fail, as `add_service` needs.
//! 2. tower's `LoadShed` over a `GlobalConcurrencyLimit`: past the limit of
//!    calls in flight, a call is refused at once, `UNAVAILABLE`/`OVERLOADED`.
//! 3. [`RateLimitLayer`]: a token bucket, refusing at once with
//!    `RESOURCE_EXHAUSTED`/`RATE_LIMITED` and the wait until the next token.
//!    (tower's `RateLimit` waits for a token instead, and is not `Clone`: it
//!    would need a `Buffer`, which is a queue.)
//! 4. [`DeadlineLayer`]: the request's deadline, the smaller of the server's
//!    timeout and the client's `grpc-timeout`, put in the request's
//!    extensions for handlers to check before starting work; past it the
//!    call ends `DEADLINE_EXCEEDED`.
//!
//! Health and reflection are not behind these layers: probes must answer
//! under overload.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;
use tonic::{
    Code, Status,
    body::Body,
    codegen::http::{HeaderMap, Request, Response},
};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{BoxError, Layer, Service};

use crate::service::{DOMAIN, reason};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A refusal made by a layer, as the HTTP response a gRPC client reads it
/// from. The reason also rides along as a [`Refused`] extension, so the
/// tracing layer can record it on the call's span.
pub(crate) fn refusal(code: Code, why: &'static str, message: &str, retry_after: Option<Duration>) -> Response<Body> {
    let mut details = ErrorDetails::with_error_info(why, DOMAIN, HashMap::new());
    if let Some(after) = retry_after {
        details.set_retry_info(Some(after));
    }
    let mut response = Status::with_error_details(code, message, details).into_http();
    response.extensions_mut().insert(Refused(why));
    response
}

/// The reason a layer refused a call (a response extension).
#[derive(Debug, Clone, Copy)]
pub struct Refused(pub &'static str);

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
                        refusal(
                            Code::Unavailable,
                            reason::OVERLOADED,
                            "too many calls in flight; retry shortly",
                            Some(Duration::from_millis(100)),
                        )
                    } else {
                        tracing::error!(error = %e, "middleware error");
                        refusal(Code::Internal, reason::INTERNAL, "internal error", None)
                    }
                }
            })
        })
    }
}

/// A token bucket shared by every connection.
#[derive(Debug)]
struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until there is one.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_second))
        }
    }
}

/// Global rate limit; `per_second == 0` turns it off.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    bucket: Option<Arc<Mutex<Bucket>>>,
}

impl RateLimitLayer {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let bucket = (per_second > 0).then(|| {
            let burst = f64::from(burst.max(1));
            Arc::new(Mutex::new(Bucket {
                per_second: f64::from(per_second),
                burst,
                tokens: burst,
                refilled: Instant::now(),
            }))
        });
        Self { bucket }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner, bucket: self.bucket.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    bucket: Option<Arc<Mutex<Bucket>>>,
}

impl<S, B> Service<Request<B>> for RateLimit<S>
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if let Some(bucket) = &self.bucket {
            let taken = bucket.lock().unwrap_or_else(PoisonError::into_inner).take(Instant::now());
            if let Err(wait) = taken {
                let response = refusal(
                    Code::ResourceExhausted,
                    reason::RATE_LIMITED,
                    "rate limit reached; retry after the hinted delay",
                    Some(wait),
                );
                return Box::pin(async move { Ok(response) });
            }
        }
        Box::pin(self.inner.call(request))
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
        let expired = || refusal(Code::DeadlineExceeded, reason::DEADLINE_EXCEEDED, "deadline exceeded", None);
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
#[derive(Debug)]
pub struct UserGuard {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Users tracked before idle ones are forgotten.
const GUARD_MAX_USERS: usize = 100_000;

impl UserGuard {
    /// `burst == 0` turns the guard off.
    pub fn new(burst: u32, per_second: u32) -> Self {
        Self { burst: f64::from(burst), per_second: f64::from(per_second.max(1)), buckets: Mutex::default() }
    }

    /// Ok, or how long this user should wait.
    pub fn check(&self, user: &str) -> Result<(), Duration> {
        if self.burst == 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= GUARD_MAX_USERS && !buckets.contains_key(user) {
            // A full bucket is an idle user: forgetting it changes nothing.
            let refill = Duration::from_secs_f64(self.burst / self.per_second);
            buckets.retain(|_, b| now.saturating_duration_since(b.refilled) < refill);
        }
        let (burst, per_second) = (self.burst, self.per_second);
        buckets
            .entry(user.to_owned())
            .or_insert_with(|| Bucket { per_second, burst, tokens: burst, refilled: now })
            .take(now)
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
        let start = Instant::now();
        let mut bucket = Bucket { per_second: 10.0, burst: 2.0, tokens: 2.0, refilled: start };
        assert!(bucket.take(start).is_ok());
        assert!(bucket.take(start).is_ok());
        let wait = bucket.take(start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert!(bucket.take(start + Duration::from_millis(100)).is_ok());
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
