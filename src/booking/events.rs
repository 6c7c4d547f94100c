//! Reservation events: the pump that numbers committed events and
//! broadcasts them, and the watchers that replay and follow them.
//!
//! Each replica runs one pump on a connection of its own. Every pass it
//! numbers the committed events not numbered yet (one replica at a time;
//! see the `reservation_events` migration), reads the numbered events
//! after the last one it broadcast, in sequence order, and broadcasts them
//! to this replica's watchers over a bounded channel. Now and then it prunes
//! events older than the retention.
//!
//! A watcher subscribes to the broadcast first and only then replays from
//! the database: every event numbered before it subscribed is in the
//! database by the time of its replay's last read, and every event numbered
//! after is broadcast to it. It sends each event once, skipping what its
//! cursor has passed, so the stream has no gaps and no repeats. A watcher
//! that falls more than the broadcast's capacity behind (its client reads
//! too slowly) is ended with `WATCHER_TOO_SLOW` instead of being buffered
//! without bound.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use diesel_async::AsyncPgConnection;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Booking, BookingError};
use crate::domain::{EventFilter, FieldError};
use crate::links::PgLink;
use crate::store::{
    self, StoreError,
    events::{self, Event},
};

/// Events read or numbered per statement.
const BATCH: i64 = 1_000;
/// How often the pump prunes, at most (and at least once per retention).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct EventSettings {
    /// How often the pump looks for new events.
    pub poll: Duration,
    /// Events older than this are pruned.
    pub retention: Duration,
    /// How long an idle stream waits before a heartbeat.
    pub heartbeat: Duration,
    /// How many events a watcher may fall behind before it is ended.
    pub buffer: usize,
    /// The pump connection's statement and transaction bound.
    pub bound: Duration,
}

/// This replica's broadcast of numbered events.
pub struct EventHub {
    sender: broadcast::Sender<Arc<Event>>,
    /// Ends every watcher's stream (shutdown).
    closing: CancellationToken,
    settings: EventSettings,
    /// The highest sequence the pump has broadcast.
    broadcast_through: AtomicU64,
    /// The pump has read where the log stood and broadcasts from there:
    /// until then no watcher starts, or it could replay up to a point the
    /// pump then skips.
    ready: AtomicBool,
    /// Wakes the watchers waiting for `ready`.
    became_ready: Notify,
}

impl EventHub {
    pub fn new(settings: EventSettings) -> Self {
        let (sender, _) = broadcast::channel(settings.buffer.max(1));
        Self {
            sender,
            closing: CancellationToken::new(),
            settings,
            broadcast_through: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            became_ready: Notify::new(),
        }
    }
}

/// What a watcher's stream carries.
#[derive(Debug, Clone)]
pub enum Watched {
    Event(Arc<Event>),
    /// Nothing new for a while; the stream has passed this sequence.
    Heartbeat(u64),
}

impl Booking {
    /// Ends every watcher's stream with `UNAVAILABLE`: the server is
    /// shutting down, and they resume elsewhere from their last sequence.
    pub fn close_watchers(&self) {
        self.events.closing.cancel();
    }

    /// The event pump of this replica (see the module's doc), until `stop`.
    pub async fn pump_events(self: Arc<Self>, database: Arc<PgLink>, stop: CancellationToken) {
        let every = self.events.settings.poll;
        if every.is_zero() {
            return;
        }
        let mut conn: Option<AsyncPgConnection> = None;
        let prune_every = PRUNE_EVERY.min(self.events.settings.retention);
        let mut last_prune = tokio::time::Instant::now();
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            if conn.is_none() {
                match store::connect_bounded(&database, self.events.settings.bound, "UTC").await {
                    Ok(mut c) => {
                        // The first time: broadcast from where the log is
                        // now (watchers replay what came before from the
                        // database, and none starts before this). Later
                        // connections go on from the last broadcast.
                        if !self.events.ready.load(Ordering::Acquire) {
                            match events::bounds(&mut c).await {
                                Ok(b) => {
                                    self.events.broadcast_through.store(b.last_sequence as u64, Ordering::Relaxed);
                                    self.events.ready.store(true, Ordering::Release);
                                    self.events.became_ready.notify_waiters();
                                }
                                Err(e) => {
                                    debug!(error = %e, "event pump: no database yet");
                                    continue;
                                }
                            }
                        }
                        conn = Some(c);
                    }
                    Err(e) => {
                        debug!(error = %e, "event pump: no database yet");
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let prune = last_prune.elapsed() >= prune_every;
            if let Err(e) = self.pump_pass(c, prune).await {
                warn!(error = %e, "event pump pass failed; reconnecting");
                conn = None;
            } else if prune {
                last_prune = tokio::time::Instant::now();
            }
        }
    }

    async fn pump_pass(&self, conn: &mut AsyncPgConnection, prune: bool) -> Result<(), StoreError> {
        let last = loop {
            let (numbered, last) = events::number_events(conn, BATCH).await?;
            if (numbered as i64) < BATCH {
                break last;
            }
        };
        // No watcher here: nothing to read back. One that subscribes after
        // this check replays from the database, which has everything up to
        // `last` (read before the check), so the pump may go on from there.
        if self.events.sender.receiver_count() == 0 {
            let through = self.events.broadcast_through.load(Ordering::Relaxed);
            self.events.broadcast_through.store(through.max(last as u64), Ordering::Relaxed);
        } else {
            self.broadcast_new(conn).await?;
        }
        if prune {
            let retention =
                chrono::TimeDelta::from_std(self.events.settings.retention).unwrap_or(chrono::TimeDelta::MAX);
            let before = chrono::Utc::now() - retention;
            let pruned = events::prune(conn, before, 10 * BATCH).await?;
            if pruned > 0 {
                debug!(pruned, "pruned reservation events past their retention");
            }
        }
        Ok(())
    }

    /// Broadcasts the numbered events after the last one broadcast.
    async fn broadcast_new(&self, conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
        loop {
            let after = self.events.broadcast_through.load(Ordering::Relaxed);
            let page = events::events_after(conn, after, &EventFilter::default(), BATCH).await?;
            if page.pruned_through > after {
                // Only if this replica's pump fell a whole retention
                // behind: its watchers miss what was pruned.
                warn!(after, pruned_through = page.pruned_through, "the event pump fell behind the retention");
            }
            let Some(through) = page.events.last().map(|e| e.sequence) else { break };
            for event in page.events {
                // A watcher that left meanwhile is no error.
                let _ = self.events.sender.send(Arc::new(event));
            }
            self.events.broadcast_through.store(through, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Starts a watcher: the events after `after` that `filter` takes, then
    /// live ones. Refused with `EventsCompacted` when events after `after`
    /// have been pruned.
    pub async fn watch(
        self: &Arc<Self>,
        after: u64,
        filter: EventFilter,
    ) -> Result<mpsc::Receiver<Result<Watched, BookingError>>, BookingError> {
        if self.events.closing.is_cancelled() {
            return Err(BookingError::ShuttingDown);
        }
        if self.events.settings.poll.is_zero() {
            return Err(
                StoreError::Unavailable("this replica does not deliver events (--events-poll-ms 0)".into()).into()
            );
        }
        if !self.events_ready().await {
            return Err(StoreError::Unavailable("event delivery is starting".into()).into());
        }
        // Subscribed before anything is read: see the module's doc.
        let live = self.events.sender.subscribe();
        let bounds = self.store.event_bounds().await?;
        let pruned = bounds.pruned_through as u64;
        if after != 0 && after < pruned {
            return Err(BookingError::EventsCompacted { oldest: pruned + 1 });
        }
        if after > bounds.last_sequence as u64 {
            let why = format!("is past the last event ({}): a cursor from another deployment?", bounds.last_sequence);
            return Err(FieldError::new("after_sequence", why).into());
        }
        let (tx, rx) = mpsc::channel(64);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = this.feed_watcher(after, filter, live, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(rx)
    }

    /// Whether the pump delivers events, waiting for its start (its first
    /// read of the log) up to the pump's own bound: a watcher that arrives
    /// as the replica starts gets its stream rather than a refusal, unless
    /// the database is not reachable in that time.
    async fn events_ready(&self) -> bool {
        let started = self.events.became_ready.notified();
        tokio::pin!(started);
        // Registered before the flag is read, so a start between the two
        // still wakes this call.
        started.as_mut().enable();
        if self.events.ready.load(Ordering::Acquire) {
            return true;
        }
        let _ = tokio::time::timeout(self.events.settings.bound, started).await;
        self.events.ready.load(Ordering::Acquire)
    }

    /// Replays, then follows, until the client goes away or falls behind.
    async fn feed_watcher(
        &self,
        mut cursor: u64,
        filter: EventFilter,
        mut live: broadcast::Receiver<Arc<Event>>,
        tx: &mpsc::Sender<Result<Watched, BookingError>>,
    ) -> Result<(), BookingError> {
        let closing = self.events.closing.clone();
        // Replay: pages from the database until one comes back short. Each
        // page says how far the log was pruned as of its own read: past the
        // cursor, the events between are gone (a cursor of 0 asked for the
        // oldest kept, and starts there).
        let from_oldest = cursor == 0;
        loop {
            if closing.is_cancelled() {
                return Err(BookingError::ShuttingDown);
            }
            let page = self.store.events_after(cursor, &filter, BATCH).await?;
            if page.pruned_through > cursor {
                if from_oldest && cursor == 0 {
                    cursor = page.pruned_through;
                    continue;
                }
                return Err(BookingError::EventsCompacted { oldest: page.pruned_through + 1 });
            }
            let short = (page.events.len() as i64) < BATCH;
            for event in page.events {
                cursor = event.sequence;
                if tx.send(Ok(Watched::Event(Arc::new(event)))).await.is_err() {
                    return Ok(());
                }
            }
            if short {
                break;
            }
        }
        // The highest sequence the stream has passed, matching or not.
        let mut passed = cursor;
        let heartbeat = self.events.settings.heartbeat;
        // Reset only when something is sent: events this stream leaves out
        // do not keep it from its heartbeats.
        let idle = tokio::time::sleep(heartbeat);
        tokio::pin!(idle);
        loop {
            let next = tokio::select! {
                next = live.recv() => next,
                () = &mut idle => {
                    if tx.send(Ok(Watched::Heartbeat(passed))).await.is_err() {
                        return Ok(());
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + heartbeat);
                    continue;
                }
                () = closing.cancelled() => return Err(BookingError::ShuttingDown),
                () = tx.closed() => return Ok(()),
            };
            match next {
                Ok(event) => {
                    passed = passed.max(event.sequence);
                    if event.sequence <= cursor || !filter.takes(event.restaurant_id, &event.user_id) {
                        continue;
                    }
                    cursor = event.sequence;
                    if tx.send(Ok(Watched::Event(event))).await.is_err() {
                        return Ok(());
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + heartbeat);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Err(BookingError::WatcherTooSlow { resume_after: cursor, missed });
                }
                Err(broadcast::error::RecvError::Closed) => return Err(BookingError::ShuttingDown),
            }
        }
    }
}
