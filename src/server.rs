//! [`Application`]: builds the whole service from a [`Config`]. `main` and
//! the tests both use it, so tests run exactly what ships.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{net::TcpListener, sync::Semaphore, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic::{
    server::NamedService,
    service::LayerExt,
    transport::{
        Certificate, Identity, Server, ServerTlsConfig,
        server::{Router, TcpIncoming},
    },
};
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health, HealthServer},
    server::HealthReporter,
};
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer};
use tracing::{info, warn};

use crate::{
    auth::Credentials,
    booking::Booking,
    clock::{Clock, SystemClock},
    config::{Config, Strategy},
    domain::Limits,
    gate::GateError,
    lifecycle,
    links::{LinkError, PgLink, RedisLink},
    metrics::Metrics,
    overload::{DeadlineLayer, RateLimit, StatusLayer, UserGuard},
    pb::{self, reservations_server::ReservationsServer, slot_admin_server::SlotAdminServer},
    precheck::PrecheckLayer,
    relay,
    service::{AdminService, ReservationsService},
    store::{self, StoreError},
    telemetry::TraceLayer,
};

mod assembly;

use self::assembly::{Links, booking, listen_for_hangups, reload_on_hangup};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("auth tokens: {0}")]
    Tokens(String),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("settings: {0}")]
    Settings(String),
}

/// A bound, ready-to-serve slotgate.
pub struct Application {
    listener: TcpListener,
    health_listener: Option<TcpListener>,
    addr: SocketAddr,
    booking: Arc<Booking>,
    metrics: Arc<Metrics>,
    config: Config,
    tls: Option<ServerTlsConfig>,
    credentials: Credentials,
    links: Links,
    /// SIGHUP, listened for from the start of `build`.
    hangups: Option<tokio::signal::unix::Signal>,
}

fn read(path: &Path) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|source| StartError::Read { path: path.to_owned(), source })
}

/// TLS from the configured PEM files; mutual TLS when a client CA is given.
fn tls_config(config: &Config) -> Result<Option<ServerTlsConfig>, StartError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else { return Ok(None) };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

impl Application {
    /// Migrates (unless told not to), builds the pools and binds the
    /// listener. The pools connect lazily, so a missing Redis does not stop
    /// the start: requests answer UNAVAILABLE until it is back.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] with the clock deposit deadlines are read from
    /// (tests move a manual one).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let hangups = listen_for_hangups();
        config.check().map_err(StartError::Settings)?;
        let links = Links {
            database: Arc::new(PgLink::new(config.database.url())?),
            redis: match config.strategy {
                Strategy::RedisGate => Some(Arc::new(RedisLink::new(config.redis_link())?)),
                Strategy::DbLock | Strategy::FairLock => None,
            },
        };
        info!(
            database_sslmode = links.database.mode().name(),
            redis_tls = links.redis.as_ref().map(|r| r.tls()),
            "links to the dependencies"
        );
        if config.migrate_on_start {
            let applied = store::migrate(&links.database).await?;
            info!(applied, "database migrations up to date");
        }
        let metrics = Arc::new(Metrics::default());
        let booking = Arc::new(booking(&config, &links, &metrics, clock).await?);
        // Every connection sets the default zone; one PostgreSQL does not
        // know would fail them all. Checked now if the database is up.
        match store::zone_known(&links.database, &config.default_time_zone).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(StartError::Settings(format!(
                    "--default-time-zone {:?} is not a time zone the database knows",
                    config.default_time_zone
                )));
            }
            // A database that refused the link is a setting to fix, even
            // when nothing else needed it at start.
            Err(StoreError::Link(e)) => return Err(e.into()),
            Err(e) => warn!(error = %e, "could not check --default-time-zone; the database is not reachable yet"),
        }
        let pools = Arc::downgrade(&booking);
        metrics.observe(move || pools.upgrade().map(|b| b.pool_states()).unwrap_or_default());
        let tls = tls_config(&config)?;
        let credentials =
            Credentials::load(&config.auth_tokens, config.auth_tokens_file.as_deref()).map_err(StartError::Tokens)?;
        info!(tls = tls.is_some(), mutual_tls = config.tls_client_ca.is_some(), auth = credentials.is_on(), "security");
        let listener = bind(config.listen).await?;
        let health_listener = match config.health_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        Ok(Self { listener, health_listener, addr, booking, metrics, config, tls, credentials, links, hangups })
    }

    /// The address actually bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The use cases, for tests that drive background work by hand.
    pub fn booking(&self) -> Arc<Booking> {
        Arc::clone(&self.booking)
    }

    /// Adds every service to `server`: health and reflection as they are,
    /// the business services behind the overload, auth and tracing layers.
    fn routes(&self, server: &mut Server, health: HealthServer<impl Health>) -> Result<Router, StartError> {
        // grpcurl 1.8 (and other older clients) speak only v1alpha. The
        // google.rpc descriptors let such clients decode our error details.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let c = &self.config;
        let limits = Limits { max_party_size: c.max_party_size, max_menu_items: c.max_menu_items };
        let guard = UserGuard::new(c.user_burst, c.user_per_second);
        let reservations = ReservationsServer::new(ReservationsService::new(Arc::clone(&self.booking), limits, guard))
            .max_decoding_message_size(c.max_message_bytes);
        let admin = SlotAdminServer::new(AdminService::new(Arc::clone(&self.booking)))
            .max_decoding_message_size(c.max_message_bytes);
        // One concurrency budget and one rate budget for both services and
        // every connection (see `overload` for the order of the layers).
        let in_flight = Arc::new(Semaphore::new(c.concurrency_limit));
        let stack = ServiceBuilder::new()
            .layer(TraceLayer::new(Arc::clone(&self.metrics)))
            .layer(StatusLayer)
            // Before the limits: a caller without credentials uses no capacity.
            .layer(PrecheckLayer::new(self.credentials.clone()))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::with_semaphore(in_flight))
            .layer(PrecheckLayer::new(RateLimit::new(c.rate_limit, c.rate_burst)))
            .layer(DeadlineLayer::new(c.request_timeout))
            .into_inner();
        Ok(server
            .add_service(health)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(stack.named_layer(reservations))
            .add_service(stack.named_layer(admin)))
    }

    /// Serves until `shutdown` completes, then stops gracefully:
    ///
    /// 1. health turns NOT_SERVING (readiness probes fail, balancers drain);
    /// 2. after `--drain-delay-ms`, new calls are refused (connections get
    ///    GOAWAY) while calls in flight finish;
    /// 3. the work those calls admitted finishes too, so every hold is
    ///    finalized or released now, not left for a reaper;
    /// 4. background loops stop.
    ///
    /// Steps 2 and 3 together are bounded by `--shutdown-grace-ms`; past it
    /// whatever is left is dropped (leases and the reaper then clean up).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, ServingStatus::Serving).await;
        let c = &self.config;
        let mut server = Server::builder();
        if let Some(tls) = self.tls.clone() {
            server = server.tls_config(tls)?;
        }
        if !c.max_connection_age.is_zero() {
            server = server.max_connection_age(c.max_connection_age);
        }
        let mut server = server
            .max_concurrent_streams(Some(c.max_concurrent_streams))
            // Dead peers are found and their streams freed: a client that
            // vanished without closing does not hold streams forever.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .tcp_keepalive(Some(Duration::from_secs(60)));
        let routes = self.routes(&mut server, health_service.clone())?;

        // Everything spawned here stops when serving ends, or when this
        // future is dropped half-way (a token is not cancelled by its drop).
        let stopped = CancellationToken::new();
        let _stop_on_drop = stopped.clone().drop_guard();
        let intervals = lifecycle::Intervals {
            reconcile: c.reconcile_interval,
            expiry_sweep: c.expiry_sweep_interval,
            reap: c.reap_interval,
        };
        let background_stopped = stopped.child_token();
        let background = lifecycle::spawn(Arc::clone(&self.booking), intervals, background_stopped.clone());
        let pump = tokio::spawn(
            Arc::clone(&self.booking).pump_events(Arc::clone(&self.links.database), background_stopped.clone()),
        );
        let reloads =
            tokio::spawn(reload_on_hangup(self.credentials.clone(), self.links.clone(), self.hangups, stopped.clone()));
        let relay = c.events_amqp().map(|amqp_url| {
            let settings = relay::RelaySettings {
                amqp_url,
                database: Arc::clone(&self.links.database),
                bound: c.db_transaction_timeout,
                poll: c.events_poll,
            };
            tokio::spawn(relay::run(settings, background_stopped.clone()))
        });
        // Probes that cannot speak TLS get health alone, in plaintext, on a
        // listener of its own; it stops last, after the background passes.
        let probes = self.health_listener.map(|listener| {
            let stop = stopped.child_token();
            tokio::spawn(
                Server::builder()
                    .add_service(health_service)
                    .serve_with_incoming_shutdown(TcpIncoming::from(listener), stop.cancelled_owned()),
            )
        });

        info!(addr = %self.addr, "serving gRPC");
        let (drain_delay, grace) = (c.drain_delay, c.shutdown_grace);
        let (draining, drain_started) = tokio::sync::oneshot::channel::<Instant>();
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let booking = Arc::clone(&self.booking);
        let served = routes.serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            set_health(&health, ServingStatus::NotServing).await;
            info!(?drain_delay, "shutting down: health NOT_SERVING");
            tokio::time::sleep(drain_delay).await;
            // Event streams never end by themselves: they are ended now,
            // and their clients resume on another replica.
            booking.close_watchers();
            info!(?grace, "refusing new calls; finishing calls in flight");
            let _ = draining.send(Instant::now() + grace);
        });
        let served = finish_calls(served, drain_started, grace).await;

        if !self.booking.drain(served.deadline.saturating_duration_since(Instant::now())).await {
            warn!("grace period over: admitted work still running is left to the lease reaper");
        }
        background_stopped.cancel();
        let _ = background.await;
        let _ = pump.await;
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        stopped.cancel();
        let _ = reloads.await;
        if let Some(probes) = probes {
            let _ = probes.await;
        }
        info!("stopped");
        Ok(served.result?)
    }
}

/// Sets the health of both business services.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status(<ReservationsServer<ReservationsService> as NamedService>::NAME, status).await;
    health.set_service_status(<SlotAdminServer<AdminService> as NamedService>::NAME, status).await;
}

/// How serving ended, and when the grace period for what remains ends.
struct Served {
    result: Result<(), tonic::transport::Error>,
    deadline: Instant,
}

/// Waits for the server to finish: on its own (an error), or after the
/// drain began, for the calls in flight, but no longer than the grace
/// period the drain started.
async fn finish_calls(
    served: impl Future<Output = Result<(), tonic::transport::Error>>,
    mut drain_started: tokio::sync::oneshot::Receiver<Instant>,
    grace: Duration,
) -> Served {
    tokio::pin!(served);
    let mut deadline = None;
    // The server future ends once every connection is done; the grace
    // period bounds that wait.
    let result = tokio::select! {
        result = &mut served => result,
        Ok(at) = &mut drain_started => {
            deadline = Some(at);
            tokio::time::timeout_at(at, &mut served).await.unwrap_or_else(|_| {
                warn!("grace period over: dropping calls still in flight");
                Ok(())
            })
        }
    };
    let deadline = deadline.or_else(|| drain_started.try_recv().ok()).unwrap_or_else(|| Instant::now() + grace);
    Served { result, deadline }
}
