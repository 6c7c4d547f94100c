//! What [`Application`](super::Application) is assembled from: the links
//! to the dependencies, the Redis gate bound to the database's deployment,
//! the use cases over them, and the reload of secrets on SIGHUP.

use std::{sync::Arc, time::Duration};

use tokio::signal::unix::{Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::StartError;
use crate::{
    auth::Credentials,
    booking::{Booking, Decider, EventSettings, Settings},
    clock::Clock,
    config::{Config, Strategy},
    gate::{Gate, GateSettings},
    links::{PgLink, RedisLink},
    metrics::Metrics,
    pools::PoolSettings,
    store::{self, SeatLock, Store},
};

/// The links to the dependencies, reloaded on SIGHUP with the tokens.
#[derive(Debug, Clone)]
pub(super) struct Links {
    pub database: Arc<PgLink>,
    pub redis: Option<Arc<RedisLink>>,
}

/// The Redis gate, bound to this database's deployment: the database
/// records the namespace on the first start and refuses another one after
/// (so it must be reachable now), and Redis is asked at once whether the
/// namespace is this deployment's. A Redis that is down is waited for; one
/// that cannot be verified, refuses the login or holds another deployment's
/// keys stops the start.
async fn gate(config: &Config, links: &Links, metrics: &Metrics) -> Result<Gate, StartError> {
    let link = links.redis.clone().expect("the Redis gate has a Redis link");
    let bound = store::bind_deployment(&links.database, &config.redis_namespace).await?;
    info!(
        deployment = %bound.deployment_id,
        namespace = %config.redis_namespace,
        recorded_now = bound.first,
        "deployment bound to its Redis namespace"
    );
    let settings = GateSettings {
        pool: PoolSettings { size: config.redis_pool_size, timeout: config.pool_timeout },
        lease: config.hold_lease,
        waitlist_limit: config.waitlist_limit,
    };
    let deployment = bound.deployment_id.to_string();
    let gate = Gate::new(link, &config.redis_namespace, &deployment, settings, metrics.redis_pool_wait.clone());
    if let Some(why) = gate.check_link().await? {
        warn!(error = %why, "redis is not reachable yet; requests answer UNAVAILABLE until it is");
    }
    Ok(gate)
}

/// The use cases over the pools the configured strategy needs: the Redis
/// gate's pool only when the gate decides.
pub(super) async fn booking(
    config: &Config,
    links: &Links,
    metrics: &Arc<Metrics>,
    clock: Arc<dyn Clock>,
) -> Result<Booking, StartError> {
    let store = Store::new(
        Arc::clone(&links.database),
        PoolSettings { size: config.database.db_pool_size, timeout: config.pool_timeout },
        config.db_transaction_timeout,
        &config.default_time_zone,
        Arc::clone(metrics),
    );
    let decider = match config.strategy {
        Strategy::RedisGate => Decider::Gate(Arc::new(gate(config, links, metrics).await?)),
        Strategy::DbLock => Decider::Database(SeatLock::Row),
        Strategy::FairLock => Decider::Database(SeatLock::Slot),
    };
    let settings = Settings {
        deposit_window: Duration::from_secs(config.deposit_window_secs.into()),
        replay_wait: config.replay_wait,
        commit_bound: config.pool_timeout + config.db_transaction_timeout,
        waitlist_limit: config.waitlist_limit,
        offer_window: Duration::from_secs(config.offer_window_secs.into()),
    };
    let events = EventSettings {
        poll: config.events_poll,
        retention: config.events_retention,
        heartbeat: config.watch_heartbeat,
        buffer: config.watch_buffer as usize,
        bound: config.db_transaction_timeout,
    };
    Ok(Booking::new(decider, store, settings, Arc::clone(metrics), clock, events))
}

/// Listens for SIGHUP from now on. Done first thing at start: until a
/// listener exists, SIGHUP's default action ends the process, and a
/// reloader may send one while slotgate is still starting (those are
/// taken at the first reload).
pub(super) fn listen_for_hangups() -> Option<Signal> {
    match tokio::signal::unix::signal(SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; secrets are read at start only");
            None
        }
    }
}

/// On every SIGHUP until `stop`: the tokens, the database URL, the Redis
/// URL and password and the certificate files are read again. Each that
/// fails keeps what it had, and says why.
pub(super) async fn reload_on_hangup(
    credentials: Credentials,
    links: Links,
    hangups: Option<Signal>,
    stop: CancellationToken,
) {
    let Some(mut hangups) = hangups else { return };
    loop {
        tokio::select! {
            Some(()) = hangups.recv() => {}
            () = stop.cancelled() => return,
        }
        match credentials.reload() {
            Ok(count) => info!(tokens = count, "SIGHUP: auth tokens read again"),
            Err(e) => warn!(error = %e, "SIGHUP: auth tokens kept"),
        }
        match links.database.reload() {
            Ok(()) => info!("SIGHUP: database URL and certificates read again"),
            Err(e) => warn!(error = %e, "SIGHUP: database link kept"),
        }
        if let Some(redis) = &links.redis {
            match redis.reload() {
                Ok(()) => info!("SIGHUP: redis URL, password and certificates read again"),
                Err(e) => warn!(error = %e, "SIGHUP: redis link kept"),
            }
        }
    }
}
