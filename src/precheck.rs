//! A tower layer for the checks that decide a call before the service sees
//! it (authentication, the global rate limit): each check lets the call
//! through, possibly adding to its extensions, or answers it at once,
//! without a boxed future either way.

use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use tonic::{
    body::Body,
    codegen::http::{Request, Response},
};
use tower::{Layer, Service};

use crate::status::Refusal;

/// A check made on every call before the service sees it.
pub trait Precheck: Clone {
    /// `Ok` lets the call through; `Err` is its answer.
    fn check<B>(&self, request: &mut Request<B>) -> Result<(), Refusal>;
}

/// Puts a [`Precheck`] in front of a service.
#[derive(Debug, Clone)]
pub struct PrecheckLayer<C> {
    check: C,
}

impl<C> PrecheckLayer<C> {
    pub fn new(check: C) -> Self {
        Self { check }
    }
}

impl<C: Clone, S> Layer<S> for PrecheckLayer<C> {
    type Service = Prechecked<C, S>;
    fn layer(&self, inner: S) -> Self::Service {
        Prechecked { check: self.check.clone(), inner }
    }
}

#[derive(Debug, Clone)]
pub struct Prechecked<C, S> {
    check: C,
    inner: S,
}

impl<C, S, B> Service<Request<B>> for Prechecked<C, S>
where
    C: Precheck,
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.check.check(&mut request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(refusal) => Either::Right(ready(Ok(refusal.response()))),
        }
    }
}
