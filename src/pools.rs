//! What the Redis and PostgreSQL pools share: failing fast while the
//! dependency behind them is down.
//!
//! bb8 never hands a connect error to a caller waiting for a connection: the
//! error goes to the pool's error sink and the caller waits out the whole
//! pool timeout. [`ConnectFailures`] is that sink. After a connect failed,
//! and until a checkout succeeds again, a checkout waits only
//! [`WHILE_DOWN`]: enough for a fresh connect attempt (which the checkout
//! itself triggers, so the pool heals as soon as the dependency is back),
//! not the full timeout, so callers hear UNAVAILABLE in milliseconds.

use std::{
    fmt::Display,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tracing::{info, warn};

/// How long a checkout waits while the dependency is down.
pub const WHILE_DOWN: Duration = Duration::from_millis(100);

/// The bb8 error sink of a pool: knows whether the dependency is down.
#[derive(Debug, Clone)]
pub struct ConnectFailures {
    dependency: &'static str,
    down: Arc<AtomicBool>,
}

impl ConnectFailures {
    pub fn new(dependency: &'static str) -> Self {
        Self { dependency, down: Arc::default() }
    }

    /// Runs a checkout with the pool timeout, or with [`WHILE_DOWN`] while
    /// the dependency is down. `None` means it timed out. A checkout that
    /// succeeds shows the dependency is up again.
    pub async fn checkout<C, E>(
        &self,
        pool_timeout: Duration,
        get: impl Future<Output = Result<C, E>>,
    ) -> Option<Result<C, E>> {
        let down = self.down.load(Ordering::Relaxed);
        let patience = if down { WHILE_DOWN.min(pool_timeout) } else { pool_timeout };
        let got = tokio::time::timeout(patience, get).await.ok();
        if down && matches!(got, Some(Ok(_))) && self.down.swap(false, Ordering::Relaxed) {
            info!(dependency = self.dependency, "connected again");
        }
        got
    }
}

impl<E: Display + Send + 'static> bb8::ErrorSink<E> for ConnectFailures {
    fn sink(&self, error: E) {
        if !self.down.swap(true, Ordering::Relaxed) {
            warn!(dependency = self.dependency, error = %error, "cannot connect; failing fast until it is back");
        }
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<E>> {
        Box::new(self.clone())
    }
}
