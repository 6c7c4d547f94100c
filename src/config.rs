//! Every setting, from command-line flags or environment variables, with
//! defaults that run against a local PostgreSQL and Redis.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use self::values::{parse_millis, parse_namespace, parse_span, parse_zone};
use crate::links::{RedisSettings, Secret};

mod values;

/// `slotgate [serve|migrate] [options]`
#[derive(Debug, Parser)]
#[command(name = "slotgate", version, about = "Seat reservations that stay fast and exact under bursts")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Log lines as human-readable text or as JSON (one object per line).
    #[arg(long, global = true, env = "SLOTGATE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC (the default when no subcommand is given).
    Serve(Box<Config>),
    /// Apply pending database migrations, then exit.
    Migrate(DatabaseConfig),
    /// Move this database's deployment to another Redis namespace, then
    /// exit. Stop every replica first, and start them again with
    /// `--redis-namespace` set to the new one; the counters are loaded
    /// afresh from the database, and the old namespace's keys expire with
    /// their slots (or can be deleted).
    MoveNamespace(MoveNamespace),
}

/// `slotgate move-namespace --from OLD --to NEW`.
#[derive(Debug, Clone, Args)]
pub struct MoveNamespace {
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// The namespace the database has now (a guard against moving the
    /// wrong database).
    #[arg(long, value_parser = parse_namespace)]
    pub from: String,

    /// The namespace to move to.
    #[arg(long, value_parser = parse_namespace)]
    pub to: String,
}

/// PostgreSQL settings, shared by `serve` and `migrate`.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL. Never printed (it may carry a password).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/slotgate?sslmode=disable",
        hide_env_values = true
    )]
    pub database_url: String,

    /// A file holding the PostgreSQL URL (a mounted secret); replaces
    /// `--database-url`, and is read again on SIGHUP.
    #[arg(long, env = "DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// Connections in the PostgreSQL pool. Only admitted requests (winners)
    /// use one, so this bounds concurrent transactions, not requests.
    #[arg(long, env = "SLOTGATE_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
}

/// Settings of `slotgate serve`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "SLOTGATE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Redis URL; with `--redis-cluster`, the URLs of some nodes of a Redis
    /// Cluster (it discovers the rest), comma-separated.
    /// `rediss://` for TLS; `user:password@` for an ACL user. Never
    /// printed.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: String,

    /// A file holding the Redis URL (a mounted secret); replaces
    /// `--redis-url`, and is read again on SIGHUP.
    #[arg(long, env = "REDIS_URL_FILE")]
    pub redis_url_file: Option<PathBuf>,

    /// A file holding the Redis password; replaces the URL's, and is read
    /// again on SIGHUP.
    #[arg(long, env = "SLOTGATE_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// CA certificates (PEM) a `rediss://` server's certificate must chain
    /// to; without it, the system's trusted roots.
    #[arg(long, env = "SLOTGATE_REDIS_TLS_CA")]
    pub redis_tls_ca: Option<PathBuf>,

    /// Client certificate chain (PEM) for a Redis that asks for one
    /// (`tls-auth-clients yes`).
    #[arg(long, env = "SLOTGATE_REDIS_TLS_CERT", requires = "redis_tls_key")]
    pub redis_tls_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(long, env = "SLOTGATE_REDIS_TLS_KEY", requires = "redis_tls_cert")]
    pub redis_tls_key: Option<PathBuf>,

    /// Redis is a Redis Cluster (every key one script touches carries the
    /// slot's hash tag, so each script runs on one node).
    #[arg(long, env = "SLOTGATE_REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_cluster: bool,

    /// How seats are taken. `redis` (the product): the Redis gate decides,
    /// PostgreSQL commits the winners. `db-lock` and `fair-lock` are the
    /// designs slotgate is compared with, every request inside PostgreSQL:
    /// `SELECT ... FOR UPDATE` on the slot row, or one lock per slot held
    /// across the whole transaction with a `SUM` of booked seats.
    #[arg(long = "gate", env = "SLOTGATE_GATE", value_enum, default_value = "redis")]
    pub strategy: Strategy,

    /// Connections in the Redis pool. Each is multiplexed, and a request holds
    /// one only for its script call.
    #[arg(long, env = "SLOTGATE_REDIS_POOL_SIZE", default_value_t = 32)]
    pub redis_pool_size: u32,

    /// Longest wait for a pooled connection (Redis or PostgreSQL) before the
    /// request is answered UNAVAILABLE.
    #[arg(long = "pool-timeout-ms", env = "SLOTGATE_POOL_TIMEOUT_MS", default_value = "2000", value_parser = parse_millis)]
    pub pool_timeout: Duration,

    /// Longest wait to open a Redis connection.
    #[arg(long = "redis-connect-timeout-ms", env = "SLOTGATE_REDIS_CONNECT_TIMEOUT_MS", default_value = "1000", value_parser = parse_millis)]
    pub redis_connect_timeout: Duration,

    /// Longest wait for Redis to answer one script call. Past it the request
    /// is answered UNAVAILABLE rather than left hanging.
    #[arg(long = "redis-command-timeout-ms", env = "SLOTGATE_REDIS_COMMAND_TIMEOUT_MS", default_value = "1000", value_parser = parse_millis)]
    pub redis_command_timeout: Duration,

    /// Prefix of every Redis key, so several deployments (or tests) can share
    /// one Redis. Letters, digits, '-', '_' and '.' only.
    #[arg(long, env = "SLOTGATE_REDIS_NAMESPACE", default_value = "sg", value_parser = parse_namespace)]
    pub redis_namespace: String,

    /// Largest party one reservation may book.
    #[arg(long, env = "SLOTGATE_MAX_PARTY_SIZE", default_value_t = 20, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub max_party_size: i32,

    /// Most distinct menu items one pre-order may carry.
    #[arg(long, env = "SLOTGATE_MAX_MENU_ITEMS", default_value_t = 50, value_parser = clap::value_parser!(i32).range(1..=1_000))]
    pub max_menu_items: i32,

    /// Lease of a hold: how long seats taken in Redis may stay uncommitted
    /// before the reaper may end the hold. Must be at least twice the
    /// longest a winner can take between its hold and its commit (see
    /// [`Config::check`]).
    #[arg(long = "hold-lease-ms", env = "SLOTGATE_HOLD_LEASE_MS", default_value = "30000", value_parser = parse_millis)]
    pub hold_lease: Duration,

    /// Longest any statement, lock wait or idle spell inside a transaction
    /// may take; PostgreSQL itself ends the session's transaction past it
    /// (statement_timeout, lock_timeout, idle_in_transaction_session_timeout),
    /// and the winner's transaction as a whole is bounded by it too.
    #[arg(long = "db-transaction-timeout-ms", env = "SLOTGATE_DB_TRANSACTION_TIMEOUT_MS", default_value = "5000", value_parser = parse_millis)]
    pub db_transaction_timeout: Duration,

    /// Time zone (IANA name) of restaurants that have none of their own
    /// (`SlotAdmin.PutRestaurant` sets one): their slots start at their
    /// local date and time in this zone.
    #[arg(long, env = "SLOTGATE_DEFAULT_TIME_ZONE", default_value = "UTC", value_parser = parse_zone)]
    pub default_time_zone: String,

    /// How long reservation events are kept (`7d`, `12h`, `30m`, `45s`, or
    /// seconds); older ones are pruned, and a watcher resuming before them
    /// is told EVENTS_COMPACTED.
    #[arg(long = "events-retention", env = "SLOTGATE_EVENTS_RETENTION", default_value = "7d", value_parser = parse_span)]
    pub events_retention: Duration,

    /// Publish reservation events to this RabbitMQ (AMQP 0.9.1), e.g.
    /// `amqp://user:password@broker:5672/%2f`: the topic exchange
    /// `slotgate.events`, one replica at a time. Unset: no relay.
    #[arg(long = "events-amqp-url", env = "SLOTGATE_EVENTS_AMQP_URL", hide_env_values = true)]
    pub events_amqp_url: Option<String>,

    /// A file holding the RabbitMQ URL (a mounted secret); replaces
    /// `--events-amqp-url`, and is read at every connect to the broker.
    #[arg(long = "events-amqp-url-file", env = "SLOTGATE_EVENTS_AMQP_URL_FILE")]
    pub events_amqp_url_file: Option<PathBuf>,

    /// How often each replica numbers committed events and passes new ones
    /// to its watchers; 0 turns events delivery off in this replica.
    #[arg(long = "events-poll-ms", env = "SLOTGATE_EVENTS_POLL_MS", default_value = "20", value_parser = parse_millis)]
    pub events_poll: Duration,

    /// How long an idle WatchReservationEvents stream waits before a
    /// heartbeat.
    #[arg(long = "watch-heartbeat-ms", env = "SLOTGATE_WATCH_HEARTBEAT_MS", default_value = "15000", value_parser = parse_millis)]
    pub watch_heartbeat: Duration,

    /// How many events a watcher may fall behind before its stream is ended
    /// (WATCHER_TOO_SLOW).
    #[arg(long, env = "SLOTGATE_WATCH_BUFFER", default_value_t = 4_096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub watch_buffer: u32,

    /// How long a new reservation may stay unpaid (PENDING_DEPOSIT).
    #[arg(long, env = "SLOTGATE_DEPOSIT_WINDOW_SECS", default_value_t = 600)]
    pub deposit_window_secs: u32,

    /// Entries a slot's waitlist takes unless the slot has its own limit
    /// (`SlotCapacity.waitlist_limit`); 0 turns waitlists off.
    #[arg(long, env = "SLOTGATE_WAITLIST_LIMIT", default_value_t = 200, value_parser = clap::value_parser!(i32).range(0..=10_000))]
    pub waitlist_limit: i32,

    /// How long an offer to a waitlist entry stays open (its reservation's
    /// deposit deadline) unless the slot has its own window.
    #[arg(long, env = "SLOTGATE_OFFER_WINDOW_SECS", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=604_800))]
    pub offer_window_secs: u32,

    /// How long a retry waits for the first attempt of the same request_id
    /// to finish before it is answered ABORTED / REQUEST_IN_PROGRESS.
    #[arg(long = "replay-wait-ms", env = "SLOTGATE_REPLAY_WAIT_MS", default_value = "5000", value_parser = parse_millis)]
    pub replay_wait: Duration,

    /// How often the reconciler rewrites drifted counters from the
    /// database (0 turns it off; `ReconcileSlots` still works).
    #[arg(long = "reconcile-interval-ms", env = "SLOTGATE_RECONCILE_INTERVAL_MS", default_value = "30000", value_parser = parse_millis)]
    pub reconcile_interval: Duration,

    /// How often holds whose lease ran out are reaped (0 turns the reaper
    /// off).
    #[arg(long = "reap-interval-ms", env = "SLOTGATE_REAP_INTERVAL_MS", default_value = "5000", value_parser = parse_millis)]
    pub reap_interval: Duration,

    /// How often unpaid reservations past their deadline are expired (0
    /// turns the sweeper off).
    #[arg(long = "expiry-sweep-interval-ms", env = "SLOTGATE_EXPIRY_SWEEP_INTERVAL_MS", default_value = "1000", value_parser = parse_millis)]
    pub expiry_sweep_interval: Duration,

    /// Longest a business call may take; a client's smaller `grpc-timeout`
    /// wins. Past it: DEADLINE_EXCEEDED.
    #[arg(long = "request-timeout-ms", env = "SLOTGATE_REQUEST_TIMEOUT_MS", default_value = "5000", value_parser = parse_millis)]
    pub request_timeout: Duration,

    /// Business calls in flight at once (all connections together); past
    /// it a call is refused at once, UNAVAILABLE / OVERLOADED. Size it to
    /// what the process answers within its latency target: at 10,000 calls/s,
    /// 10,000 in flight drain in about a second.
    #[arg(long, env = "SLOTGATE_CONCURRENCY_LIMIT", default_value_t = 10_000)]
    pub concurrency_limit: usize,

    /// Business calls per second (all connections together); past it a call
    /// is refused at once, RESOURCE_EXHAUSTED / RATE_LIMITED, with a retry
    /// hint. 0 turns the limit off.
    #[arg(long, env = "SLOTGATE_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,

    /// Calls the rate limit lets through at once after a quiet spell.
    #[arg(long, env = "SLOTGATE_RATE_BURST", default_value_t = 1_000)]
    pub rate_burst: u32,

    /// CreateReservation calls one user may make at once (a triple click
    /// passes); beyond it RESOURCE_EXHAUSTED / USER_RATE_LIMITED before any
    /// Redis or database work. 0 turns the guard off.
    #[arg(long, env = "SLOTGATE_USER_BURST", default_value_t = 5)]
    pub user_burst: u32,

    /// How fast a user's allowance refills, calls per second.
    #[arg(long, env = "SLOTGATE_USER_PER_SECOND", default_value_t = 1)]
    pub user_per_second: u32,

    /// A second, plaintext listener that serves only `grpc.health.v1`, for
    /// probes that cannot speak TLS (Kubernetes' native gRPC probes). Off
    /// when unset.
    #[arg(long, env = "SLOTGATE_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Close client connections after this long (they reconnect), so that
    /// plain L4 load balancing, which pins an HTTP/2 connection to one
    /// replica, spreads load again as replicas come and go. 0: never.
    #[arg(long = "max-connection-age-ms", env = "SLOTGATE_MAX_CONNECTION_AGE_MS", default_value = "0", value_parser = parse_millis)]
    pub max_connection_age: Duration,

    /// HTTP/2 streams one client connection may have open at once. Streams
    /// beyond it wait in the client, not here.
    #[arg(long, env = "SLOTGATE_MAX_CONCURRENT_STREAMS", default_value_t = 1_024)]
    pub max_concurrent_streams: u32,

    /// Largest request message accepted, in bytes (reservation requests are
    /// small; OpenSlots and PutMenu batches are the large ones).
    #[arg(long, env = "SLOTGATE_MAX_MESSAGE_BYTES", default_value_t = 1 << 20)]
    pub max_message_bytes: usize,

    /// Server certificate chain (PEM). With `--tls-key`, turns TLS on.
    #[arg(long, env = "SLOTGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Server private key (PEM).
    #[arg(long, env = "SLOTGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA that signs client certificates (PEM). Turns mutual TLS on: a
    /// client without a certificate from this CA is refused.
    #[arg(long, env = "SLOTGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Bearer tokens of the calling services, `name:role:token` entries
    /// separated by commas (role `caller` or `admin`). None: authentication
    /// is off. Never printed.
    #[arg(long, env = "SLOTGATE_AUTH_TOKENS", hide_env_values = true, default_value = "")]
    pub auth_tokens: String,

    /// A file of token entries, one per line (a mounted secret); added to
    /// `--auth-tokens`, and read again on SIGHUP.
    #[arg(long, env = "SLOTGATE_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// After SIGTERM or SIGINT: how long to keep serving with health
    /// NOT_SERVING before refusing new calls, so load balancers stop sending
    /// first (Kubernetes: a few seconds).
    #[arg(long = "drain-delay-ms", env = "SLOTGATE_DRAIN_DELAY_MS", default_value = "0", value_parser = parse_millis)]
    pub drain_delay: Duration,

    /// Then: how long calls in flight, and the work they admitted, get to
    /// finish before the process exits anyway.
    #[arg(long = "shutdown-grace-ms", env = "SLOTGATE_SHUTDOWN_GRACE_MS", default_value = "10000", value_parser = parse_millis)]
    pub shutdown_grace: Duration,

    /// Apply pending migrations before serving (safe with several replicas
    /// starting at once: they take turns on an advisory lock).
    #[arg(long, env = "SLOTGATE_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,
}

impl Config {
    /// Refuses settings that would break a guarantee. A hold's lease must be
    /// comfortably longer than the longest a winner can take from the
    /// moment its hold is made to its commit (the acquire's reply, a pool
    /// wait, the transaction), or the reaper could give back the seats of a
    /// transaction that then commits: at least twice that.
    pub fn check(&self) -> Result<(), String> {
        let winner = self.redis_command_timeout + self.pool_timeout + self.db_transaction_timeout;
        if self.hold_lease < winner * 2 {
            return Err(format!(
                "--hold-lease-ms ({} ms) must be at least twice the longest a winner may take from its hold to its \
                 commit: 2 x (--redis-command-timeout-ms + --pool-timeout-ms + --db-transaction-timeout-ms) = {} ms",
                self.hold_lease.as_millis(),
                (winner * 2).as_millis()
            ));
        }
        if self.db_transaction_timeout.is_zero() {
            return Err("--db-transaction-timeout-ms must be above 0".into());
        }
        Ok(())
    }

    /// The settings `slotgate serve` has with no flags: the defaults, as
    /// overridden by environment variables. Tests start from here and set
    /// what they need.
    pub fn from_env() -> Self {
        let cli = Cli::parse_from(["slotgate", "serve"]);
        match cli.command {
            Some(Command::Serve(config)) => *config,
            _ => unreachable!("`serve` parses into Command::Serve"),
        }
    }
}

impl DatabaseConfig {
    /// The URL: the file's when one is given.
    pub fn url(&self) -> Secret {
        match &self.database_url_file {
            Some(file) => Secret::File(file.clone()),
            None => Secret::Value(self.database_url.clone()),
        }
    }
}

impl Config {
    /// How Redis is reached.
    pub fn redis_link(&self) -> RedisSettings {
        RedisSettings {
            url: match &self.redis_url_file {
                Some(file) => Secret::File(file.clone()),
                None => Secret::Value(self.redis_url.clone()),
            },
            password: self.redis_password_file.clone().map(Secret::File),
            cluster: self.redis_cluster,
            ca: self.redis_tls_ca.clone(),
            identity: self.redis_tls_cert.clone().zip(self.redis_tls_key.clone()),
            connect_timeout: self.redis_connect_timeout,
            command_timeout: self.redis_command_timeout,
        }
    }

    /// The broker events are relayed to, if any.
    pub fn events_amqp(&self) -> Option<Secret> {
        Secret::either(self.events_amqp_url.as_deref(), self.events_amqp_url_file.as_ref())
    }
}

/// How seats are taken (`--gate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// The product: one Lua script in Redis admits or refuses each request;
    /// PostgreSQL commits the winners with a conditional update.
    #[value(name = "redis")]
    RedisGate,
    /// For comparison, no Redis: every request locks the slot's row
    /// (`SELECT ... FOR UPDATE`) and checks and takes seats under it.
    DbLock,
    /// For comparison, no Redis: the design slotgate replaces. One lock per
    /// slot held across the whole transaction (a PostgreSQL advisory lock,
    /// which queues fairly, like Redisson's FairLock), seats counted with a
    /// `SUM` over reservations.
    FairLock,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests;
