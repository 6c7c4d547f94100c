//! Background work nobody has to ask for: the lease reaper (holds whose
//! owner died end, their seats kept if the reservation committed, given back
//! if not), the expiry sweeper (unpaid reservations past their deadline give
//! their seats back) and the periodic reconciler (drifted counters are
//! rewritten from the database). Every replica runs all three; that is safe
//! because holds are ended with their own nonce, the sweeper's rows are
//! claimed with `FOR UPDATE SKIP LOCKED`, and every counter rewrite is guarded
//! by the slot's epoch.

use std::{sync::Arc, time::Duration};

use tokio::{task::JoinHandle, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::booking::Booking;

/// How often each background loop runs (zero turns a loop off).
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    pub reconcile: Duration,
    pub expiry_sweep: Duration,
    pub reap: Duration,
}

/// Spawns the background loops; they stop when `stop` is cancelled. Each
/// pass is a trace of its own (a root span), its pool waits and queries
/// inside it.
pub fn spawn(booking: Arc<Booking>, every: Intervals, stop: CancellationToken) -> JoinHandle<()> {
    let reconciler = every_tick(every.reconcile, stop.clone(), "lifecycle.reconcile", {
        let booking = Arc::clone(&booking);
        move || {
            let booking = Arc::clone(&booking);
            async move {
                match booking.reconcile(None).await {
                    Ok(report) => debug!(
                        checked = report.checked,
                        corrected = report.corrections.len(),
                        busy = report.busy,
                        "reconcile pass"
                    ),
                    Err(e) => warn!(error = %e, "reconcile pass failed; the next one retries"),
                }
            }
        }
    });
    let reaper = every_tick(every.reap, stop.clone(), "lifecycle.reap", {
        let booking = Arc::clone(&booking);
        move || {
            let booking = Arc::clone(&booking);
            async move {
                if let Err(e) = booking.reap().await {
                    warn!(error = %e, "reaper pass failed; the next one retries");
                }
            }
        }
    });
    let sweeper = every_tick(every.expiry_sweep, stop, "lifecycle.expire", move || {
        let booking = Arc::clone(&booking);
        async move {
            match booking.expire_due().await {
                Ok(0) => {}
                Ok(expired) => debug!(expired, "expired unpaid reservations"),
                Err(e) => warn!(error = %e, "expiry sweep failed; the next one retries"),
            }
        }
    });
    tokio::spawn(async move {
        let _ = tokio::join!(reconciler, reaper, sweeper);
    })
}

/// Runs `pass` at once and then every `every` until `stop` is cancelled. A
/// pass that overruns delays the next one instead of causing a burst of
/// catch-up passes; a pass under way when `stop` comes finishes first.
fn every_tick<F, Fut>(every: Duration, stop: CancellationToken, name: &'static str, mut pass: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        if every.is_zero() {
            return;
        }
        // The first tick is immediate: a replica that just started runs each
        // pass at once, because after a restart is when counters are most
        // likely stale and a predecessor's holds most likely need reaping.
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let stopped = tokio::select! {
                _ = ticks.tick() => false,
                () = stop.cancelled() => true,
            };
            if stopped {
                return;
            }
            pass().instrument(info_span!(parent: None, "lifecycle", otel.name = name)).await;
        }
    })
}
