//! The gate's Redis connections: one Redis or a Redis Cluster behind one
//! connection type, opened by a bb8 manager of our own.

use std::time::Duration;

use bb8::ManageConnection;
use redis::{
    AsyncConnectionConfig, Client, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
};

/// Tries a Redis Cluster call gets after its first (see `new`).
const CLUSTER_RETRIES: u32 = 3;

/// How long to wait for Redis, and whether it is a cluster.
#[derive(Debug, Clone, Copy)]
pub struct ConnectSettings {
    /// Longest wait to open a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a reply to one command.
    pub command_timeout: Duration,
    /// The URL lists nodes of a Redis Cluster, comma-separated.
    pub cluster: bool,
}

/// A connection to a single Redis or to a Redis Cluster. Every script
/// touches keys of one hash slot only, so both serve the gate alike.
#[derive(Clone)]
pub enum RedisConnection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
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

/// Opens the pool's Redis connections. bb8-redis's manager would do, but it
/// can set neither the connect nor the reply timeout, and its `has_broken`
/// always says no, so a pool would keep dead connections after Redis
/// restarts unless every checkout pinged first, doubling the round trips of
/// every request. Here a connection that failed at the connection level is
/// flagged and bb8 drops it.
#[derive(Clone)]
pub enum GateConnectionManager {
    Single { client: Client, config: AsyncConnectionConfig },
    Cluster(ClusterClient),
}

impl GateConnectionManager {
    pub fn new(redis_url: &str, settings: ConnectSettings) -> Result<Self, RedisError> {
        Ok(if settings.cluster {
            let nodes: Vec<&str> = redis_url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            // The cluster client sends a call again after a redirection
            // (MOVED, ASK, a slot migrating) or a dropped connection. Every
            // gate script is idempotent for its attempt, so that is safe; it
            // is bounded to a few tries (the default is 16, each up to the
            // reply timeout) so a failing call answers UNAVAILABLE well
            // within a caller's deadline rather than retrying for seconds.
            let client = ClusterClientBuilder::new(nodes)
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.command_timeout)
                .retries(CLUSTER_RETRIES)
                .build()?;
            Self::Cluster(client)
        } else {
            Self::Single {
                client: Client::open(redis_url)?,
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(settings.command_timeout)),
            }
        })
    }
}

impl std::fmt::Debug for GateConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single { .. } => "GateConnectionManager::Single",
            Self::Cluster(_) => "GateConnectionManager::Cluster",
        })
    }
}

impl ManageConnection for GateConnectionManager {
    type Connection = GateConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<GateConnection, RedisError> {
        let conn = match self {
            Self::Single { client, config } => {
                RedisConnection::Single(client.get_multiplexed_async_connection_with_config(config).await?)
            }
            Self::Cluster(client) => RedisConnection::Cluster(client.get_async_connection().await?),
        };
        Ok(GateConnection { conn, broken: false })
    }

    async fn is_valid(&self, conn: &mut GateConnection) -> Result<(), RedisError> {
        redis::cmd("PING").query_async::<()>(&mut conn.conn).await
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
