//! The gate's Redis connections: opened over the Redis link by a bb8
//! manager of our own, each one checked to belong to this deployment; and
//! the gate's checks of its link (at start) and of its namespace's owner.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use bb8::ManageConnection;
use redis::{ErrorKind, RedisError, Value};

use tracing::{error, info};

use super::GateError;
use crate::links::{LinkError, RedisConnection, RedisLink};

/// Why no connection was opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The namespace holds the keys of another deployment.
    #[error("{0}")]
    Foreign(String),
}

/// A pooled connection that remembers whether it failed.
pub struct GateConnection {
    pub conn: RedisConnection,
    /// Set after a connection-level failure: the pool drops it.
    pub broken: bool,
}

impl GateConnection {
    /// Notes a failed command: a connection-level failure retires the
    /// connection so the pool reconnects.
    pub fn note<T>(&mut self, result: &Result<T, RedisError>) {
        if let Err(e) = result {
            self.broken |= is_connection_failure(e);
        }
    }
}

/// Whether an error says the connection itself failed (as opposed to Redis
/// answering with an error).
pub fn is_connection_failure(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// The namespace's owner: the deployment (one database) whose keys it
/// holds. Every new connection claims the namespace for this deployment or
/// finds it already is this deployment's, so two databases never feed one
/// namespace, even after Redis lost the marker and another deployment
/// claimed the namespace first.
#[derive(Debug, Clone)]
pub struct Owner {
    /// `{namespace}:deployment`.
    pub key: String,
    pub namespace: String,
    pub deployment: String,
}

impl Owner {
    pub fn new(namespace: &str, deployment: &str) -> Self {
        Self {
            key: format!("{namespace}:deployment"),
            namespace: namespace.to_owned(),
            deployment: deployment.to_owned(),
        }
    }

    /// Claims the namespace if no one has, then checks whose it is.
    /// A read when the marker is there (the usual case); a write only to
    /// claim a namespace that has none.
    pub async fn claim(&self, conn: &mut RedisConnection) -> Result<(), ConnectError> {
        let mut found: Option<String> = redis::cmd("GET").arg(&self.key).query_async(conn).await?;
        if found.is_none() {
            redis::cmd("SET").arg(&self.key).arg(&self.deployment).arg("NX").query_async::<Value>(conn).await?;
            found = redis::cmd("GET").arg(&self.key).query_async(conn).await?;
        }
        match found {
            // Gone again between the calls (a flush): not known to be ours.
            None => Err(ConnectError::Redis(RedisError::from((
                ErrorKind::Client,
                "the namespace's deployment marker vanished while it was being claimed",
            )))),
            Some(found) if found == self.deployment => Ok(()),
            Some(found) => Err(ConnectError::Foreign(format!(
                "the Redis namespace {:?} holds the keys of deployment {found}, and this database is deployment {}: \
                 two deployments would share their seats. Give this deployment a namespace of its own \
                 (--redis-namespace; move it with `slotgate move-namespace`), or delete the key {:?} if the other \
                 deployment is gone for good",
                self.namespace, self.deployment, self.key
            ))),
        }
    }
}

/// Opens the pool's Redis connections. bb8-redis's manager would do, but it
/// can set neither the connect nor the reply timeout, and its `has_broken`
/// always says no, so a pool would keep dead connections after Redis
/// restarts unless every checkout pinged first, doubling the round trips of
/// every request. Here a connection that failed at the connection level is
/// flagged and bb8 drops it.
#[derive(Clone)]
pub struct GateConnectionManager {
    link: Arc<RedisLink>,
    owner: Owner,
    /// Set when a connect finds the namespace another deployment's (the
    /// gate's off switch; see `Gate::check_owner`).
    foreign: Arc<AtomicBool>,
}

impl GateConnectionManager {
    pub fn new(link: Arc<RedisLink>, owner: Owner, foreign: Arc<AtomicBool>) -> Self {
        Self { link, owner, foreign }
    }
}

impl std::fmt::Debug for GateConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GateConnectionManager({:?})", self.link)
    }
}

impl ManageConnection for GateConnectionManager {
    type Connection = GateConnection;
    type Error = ConnectError;

    async fn connect(&self) -> Result<GateConnection, ConnectError> {
        let mut conn = self.link.connect().await?;
        let claimed = self.owner.claim(&mut conn).await;
        if let Err(ConnectError::Foreign(_)) = &claimed {
            self.foreign.store(true, Ordering::Relaxed);
        }
        claimed?;
        Ok(GateConnection { conn, broken: false })
    }

    async fn is_valid(&self, conn: &mut GateConnection) -> Result<(), ConnectError> {
        Ok(redis::cmd("PING").query_async::<()>(&mut conn.conn).await?)
    }

    fn has_broken(&self, conn: &mut GateConnection) -> bool {
        conn.broken
    }
}

impl crate::pools::Liveness for GateConnection {
    /// Redis's multiplexed connection tells no closed socket apart before a
    /// command fails on it; such a command is sent again on another
    /// connection (see the gate's `invoke`).
    fn is_closed(&mut self) -> bool {
        self.broken
    }
}

/// The gate's checks of its link and of its namespace's owner.
impl super::Gate {
    /// Connects once, outside the pool, at start: a certificate that does
    /// not verify, a refused login or a namespace of another deployment is
    /// an error (the server must not start); Redis not being there is
    /// `Ok(Some(why))` (the server starts and connects once it is up).
    pub async fn check_link(&self) -> Result<Option<String>, LinkError> {
        match self.claim_fresh().await {
            Ok(()) => Ok(None),
            Err(ConnectError::Foreign(why)) => Err(LinkError::Refused(why)),
            Err(ConnectError::Redis(e)) => match self.link.explain(&e) {
                LinkError::Unreachable(why) => Ok(Some(why)),
                refused => Err(refused),
            },
        }
    }

    /// Claims the namespace over a connection of its own: pooled ones are
    /// exactly what the checks must not trust (and a failed claim at a
    /// pool's connect reaches no caller; it only sets the off switch).
    async fn claim_fresh(&self) -> Result<(), ConnectError> {
        let mut conn = self.link.connect().await?;
        self.owner.claim(&mut conn).await
    }

    /// Checks that the namespace is still this deployment's, claiming it
    /// again if its marker was lost (a flush). A namespace another
    /// deployment claimed meanwhile turns the gate off (so does a pool's
    /// connect that meets one): every call is answered UNAVAILABLE until a
    /// later check finds the namespace this deployment's again. The
    /// reconcile pass runs it.
    pub async fn check_owner(&self) -> Result<(), GateError> {
        match self.claim_fresh().await {
            Ok(()) => {
                if self.foreign.swap(false, Ordering::Relaxed) {
                    info!(namespace = %self.namespace, "the namespace is this deployment's again; the gate is on");
                }
                Ok(())
            }
            Err(ConnectError::Foreign(why)) => {
                self.foreign.store(true, Ordering::Relaxed);
                error!(error = %why, "the gate is off: its namespace belongs to another deployment");
                Err(GateError::Foreign(why))
            }
            Err(ConnectError::Redis(e)) => Err(e.into()),
        }
    }
}
