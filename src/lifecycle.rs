//! Background work that keeps the gate honest without anyone asking: the
//! periodic reconciler. Every replica runs it; that is safe because every
//! rewrite is guarded by the slot's epoch (see `Booking::reconcile`).

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle, time::MissedTickBehavior};
use tracing::{debug, warn};

use crate::booking::Booking;

/// Spawns the background loops; they stop when `stop` turns true.
pub fn spawn(booking: Arc<Booking>, reconcile_every: Duration, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(reconcile_loop(booking, reconcile_every, stop))
}

async fn reconcile_loop(booking: Arc<Booking>, every: Duration, mut stop: watch::Receiver<bool>) {
    if every.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(every);
    // A pass that overruns does not cause a burst of catch-up passes.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate: the counters were just loaded
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
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
