//! The connections every script call shares.
//!
//! A Redis connection of the gate is multiplexed: many commands may be in
//! flight on it at once, and the commands queued while one is being written
//! go out in the same write (their replies come back in the same read). So
//! the gate's calls ride a few connections that all requests share, rather
//! than each checking one out of the pool for its single round trip: a
//! burst of a thousand refusals then costs Redis and slotgate a handful of
//! reads and writes per batch instead of one each per call.
//!
//! The pool stays as the fallback: a call that finds no shared connection
//! (before the first connect, after one failed) takes a pooled one, with the
//! pool's fail-fast checkout, while the missing shared connection is opened
//! in the background.
//!
//! A shared connection is retired (no later call takes it; it closes once
//! the calls in flight on it are done):
//! - when a call on it fails at the connection level (dropped, reset);
//! - when a call on it times out and no reply at all arrived on it since the
//!   call was sent (a stalled Redis, a silent partition). A call that is only
//!   slower than the reply timeout, while other calls' replies keep coming,
//!   does not retire a connection hundreds of calls are using: Redis
//!   answers in order, and the late reply is dropped;
//! - when it is due: older than [`MAX_AGE`], or opened before the Redis link
//!   was read again (SIGHUP). A due connection keeps serving until its
//!   successor is open, so renewal costs no call a wait.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bb8::ManageConnection;
use tracing::{info, warn};

use super::conn::GateConnectionManager;
use crate::{
    links::{RedisConnection, RedisLink},
    pools::WHILE_DOWN,
};

/// How many connections the gate's calls share. Redis runs one command at a
/// time whatever the number; two keep one connection's reading and writing
/// from being the only lane while the other core is free.
pub const SHARED_CONNECTIONS: usize = 2;

/// Age at which a shared connection is renewed, as the pool renews its own:
/// a server that stopped being the right one without closing the
/// connection (a demoted primary, an address that now names another host)
/// is left within this time.
pub const MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// A shared connection taken for one call.
pub struct Ride {
    lane: usize,
    opened: u64,
    /// The lane's reply count when the call was sent.
    replies: u64,
    pub conn: RedisConnection,
}

/// The shared connections, each opened on first need.
pub struct SharedConnections(Arc<Inner>);

struct Inner {
    lanes: Box<[Lane]>,
    next: AtomicUsize,
    /// Numbers the connections opened, so a failure retires the one it met
    /// and not a successor.
    opened: AtomicU64,
    link: Arc<RedisLink>,
    manager: GateConnectionManager,
    /// Longest a background connect may take.
    patience: Duration,
}

#[derive(Default)]
struct Lane {
    conn: Mutex<Option<Open>>,
    /// Replies that arrived on the lane's connections.
    replies: AtomicU64,
    /// A connect is under way.
    opening: AtomicBool,
    /// When the last connect failed: the next waits [`WHILE_DOWN`], so an
    /// outage is not met with a connect per call (the pool's checkout tries
    /// meanwhile, and fails fast).
    failed: Mutex<Option<Instant>>,
}

struct Open {
    id: u64,
    conn: RedisConnection,
    born: Instant,
    /// The link's generation the connection was opened with.
    generation: u64,
}

impl Open {
    fn is_due(&self, generation: u64) -> bool {
        self.generation != generation || self.born.elapsed() > MAX_AGE
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SharedConnections {
    /// `manager` opens them as it opens pooled ones (the namespace claimed,
    /// the off switch set on a foreign one) over `link`; a connect gives up
    /// after `patience`.
    pub fn new(link: Arc<RedisLink>, manager: GateConnectionManager, patience: Duration) -> Self {
        Self(Arc::new(Inner {
            lanes: (0..SHARED_CONNECTIONS).map(|_| Lane::default()).collect(),
            next: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
            link,
            manager,
            patience,
        }))
    }

    /// One of the open shared connections, taken in turn; `None` while none
    /// is open. A missing or due one is opened in the background.
    pub fn take(&self) -> Option<Ride> {
        let lanes = self.0.lanes.len();
        let first = self.0.next.fetch_add(1, Ordering::Relaxed);
        let generation = self.0.link.generation();
        for lane in (first..first + lanes).map(|i| i % lanes) {
            let state = &self.0.lanes[lane];
            let found = lock(&state.conn).as_ref().map(|open| (open.id, open.conn.clone(), open.is_due(generation)));
            match found {
                Some((opened, conn, due)) => {
                    if due {
                        self.open(lane);
                    }
                    let replies = state.replies.load(Ordering::Acquire);
                    return Some(Ride { lane, opened, replies, conn });
                }
                None => self.open(lane),
            }
        }
        None
    }

    /// A reply (of any kind: a Redis error is one too) arrived for the ride.
    pub fn replied(&self, ride: &Ride) {
        self.0.lanes[ride.lane].replies.fetch_add(1, Ordering::Release);
    }

    /// The ride's call failed at the connection level; `timed_out` if it
    /// only waited too long. See the module docs for when that retires the
    /// connection.
    pub fn failed(&self, ride: &Ride, timed_out: bool) {
        let state = &self.0.lanes[ride.lane];
        if timed_out && state.replies.load(Ordering::Acquire) != ride.replies {
            return;
        }
        let mut conn = lock(&state.conn);
        if conn.as_ref().is_some_and(|open| open.id == ride.opened) {
            *conn = None;
        }
    }

    /// Opens the lane's connection in a task of its own, unless a connect is
    /// under way or one failed within [`WHILE_DOWN`].
    fn open(&self, lane: usize) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let state = &self.0.lanes[lane];
        if lock(&state.failed).is_some_and(|at| at.elapsed() < WHILE_DOWN) || state.opening.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let inner = Arc::clone(&self.0);
        runtime.spawn(async move {
            let state = &inner.lanes[lane];
            // Ends the attempt however the task ends (dropped with its
            // runtime, or done), so the lane is never left "opening".
            let mut attempt = Attempt { lane: state, connected: false };
            // Read before connecting: a reload during the connect leaves
            // this connection due at once.
            let generation = inner.link.generation();
            match tokio::time::timeout(inner.patience, inner.manager.connect()).await {
                Ok(Ok(conn)) => {
                    let mut slot = lock(&state.conn);
                    // A connect started while another's result was being
                    // installed finds the lane taken: the fresh one stays.
                    if slot.as_ref().is_none_or(|open| open.is_due(inner.link.generation())) {
                        let id = inner.opened.fetch_add(1, Ordering::Relaxed);
                        *slot = Some(Open { id, conn: conn.conn, born: Instant::now(), generation });
                    }
                    attempt.connected = true;
                }
                Ok(Err(e)) => attempt.note(&e.to_string()),
                Err(_) => attempt.note(&format!("no connection within {:?}", inner.patience)),
            }
        });
    }
}

/// A background connect of one lane.
struct Attempt<'a> {
    lane: &'a Lane,
    connected: bool,
}

impl Attempt<'_> {
    /// Says, once per outage, why the lane could not be opened.
    fn note(&self, why: &str) {
        if lock(&self.lane.failed).is_none() {
            warn!(error = why, "cannot open a shared Redis connection; calls take pooled ones meanwhile");
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut failed = lock(&self.lane.failed);
        if self.connected {
            if failed.take().is_some() {
                info!("shared Redis connection open again");
            }
        } else {
            *failed = Some(Instant::now());
        }
        drop(failed);
        self.lane.opening.store(false, Ordering::Release);
    }
}
