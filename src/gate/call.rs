//! How a script call reaches Redis: on a shared connection (see
//! [`shared`](super::shared)), or on a pooled one while none is open; sent
//! again when its connection dropped (see [`Scripts`](super::Scripts)), and
//! refused while the namespace is another deployment's.

use std::{sync::atomic::Ordering, time::Instant};

use bb8::PooledConnection;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, Script, ScriptInvocation, ServerErrorKind};

use super::{
    Gate, GateError,
    conn::{ConnectError, GateConnectionManager, is_connection_failure},
    shared,
};
use crate::{links::RedisConnection, pools::CheckoutError};

/// A script call built as its `EVALSHA` command directly.
pub(super) struct Eval<'a> {
    script: &'a Script,
    pub cmd: Cmd,
}

impl<'a> Eval<'a> {
    /// The command so far: `EVALSHA`, the script's hash and how many of the
    /// arguments that follow are keys.
    pub fn new(script: &'a Script, keys: usize) -> Self {
        let mut cmd = Cmd::with_capacity(24, 512);
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys);
        Self { script, cmd }
    }
}

/// One script call, as an invocation or as its command.
#[derive(Clone, Copy)]
pub(super) enum Call<'a, 'b> {
    Invocation(&'b ScriptInvocation<'a>),
    Eval(&'b Eval<'a>),
}

impl Call<'_, '_> {
    /// Runs the call; a Redis that does not know the script yet (it
    /// restarted) is sent the script, and the call again.
    async fn run<T: FromRedisValue>(self, conn: &mut RedisConnection) -> Result<T, RedisError> {
        match self {
            Self::Invocation(invocation) => invocation.invoke_async(conn).await,
            Self::Eval(eval) => match eval.cmd.query_async(conn).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    eval.script.load_async(conn).await?;
                    eval.cmd.query_async(conn).await
                }
                result => result,
            },
        }
    }
}

impl Gate {
    /// Refuses every call while the namespace is another deployment's.
    pub(super) fn check_on(&self) -> Result<(), GateError> {
        if self.foreign.load(Ordering::Relaxed) {
            return Err(GateError::Unavailable(format!(
                "the Redis namespace {:?} holds the keys of another deployment",
                self.namespace
            )));
        }
        Ok(())
    }

    /// A shared connection, if one is open. Taking one is recorded as a
    /// pool checkout is (a `redis.pool.wait` span and a sample of the wait,
    /// which is next to nothing); when none is open, the pool's checkout
    /// that follows records its own.
    fn ride(&self) -> Result<Option<shared::Ride>, GateError> {
        self.check_on()?;
        let started = Instant::now();
        let ride = self.shared.take();
        if ride.is_some() {
            let _taken = (self.waits.span)().entered();
            self.waits.histogram.record(started.elapsed().as_secs_f64(), &[]);
        }
        Ok(ride)
    }

    pub(super) async fn conn(&self) -> Result<PooledConnection<'_, GateConnectionManager>, GateError> {
        self.check_on()?;
        self.pool.get().await.map_err(|e| match e {
            CheckoutError::Connect(ConnectError::Redis(e)) => GateError::from(e),
            CheckoutError::Connect(ConnectError::Foreign(why)) => GateError::Unavailable(why),
            CheckoutError::TimedOut => GateError::Unavailable("no redis connection within the pool timeout".into()),
        })
    }

    /// Runs one script invocation; see [`Gate::call`].
    pub(super) async fn invoke<T: FromRedisValue>(&self, invocation: &ScriptInvocation<'_>) -> Result<T, GateError> {
        self.call(Call::Invocation(invocation)).await
    }

    /// Runs one script call on a shared connection, or on a pooled one
    /// while none is open; see [`Scripts`] for when it is sent again (a
    /// call whose shared connection dropped is sent again on a pooled one).
    pub(super) async fn call<T: FromRedisValue>(&self, call: Call<'_, '_>) -> Result<T, GateError> {
        if let Some(mut ride) = self.ride()? {
            match call.run(&mut ride.conn).await {
                Err(e) if is_connection_failure(&e) => {
                    self.shared.failed(&ride, e.is_timeout());
                    if !e.is_connection_dropped() || e.is_timeout() {
                        return Err(e.into());
                    }
                }
                result => {
                    self.shared.replied(&ride);
                    return Ok(result?);
                }
            }
        }
        let mut tries = 1;
        loop {
            let mut conn = self.conn().await?;
            let result = call.run(&mut conn.conn).await;
            conn.note(&result);
            match result {
                Err(e) if e.is_connection_dropped() && !e.is_timeout() && tries < self.tries => {
                    tries += 1;
                }
                result => return Ok(result?),
            }
        }
    }
}
