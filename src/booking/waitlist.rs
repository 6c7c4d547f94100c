//! The waitlist's use cases: joining (the gate decides, the database
//! persists and stays the arbiter), reading, leaving, listing; and bringing
//! the gate's counter up to date after the database made offers.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Days;
use tracing::warn;

use super::{Booking, BookingError, create::COLD_RETRIES};
use crate::{
    domain::{EntryId, Join, SlotKey, WaitlistQuery, WaitlistState},
    gate::{Gate, GateError, JoinDecision, Overwrite, Warm, attempt_nonce},
    store::{Cancelled, Entry, Freed, Joined, Left, StoreError},
};

/// A page of a slot's waitlist.
#[derive(Debug, Clone)]
pub struct EntryPage {
    pub entries: Vec<Entry>,
    pub next_page_token: String,
}

impl Booking {
    /// Puts `join`'s party in the slot's line, or says why not. The gate
    /// decides in one script call; the database persists the entry and
    /// checks the limit and the user's uniqueness again.
    pub async fn join_waitlist(self: &Arc<Self>, join: Join) -> Result<Entry, BookingError> {
        if join.slot.date < self.clock.now().date_naive() - Days::new(1) {
            return Err(BookingError::SlotStarted(join.slot));
        }
        // The database-only strategies have no gate to decide joins.
        if self.gate().is_none() {
            return Err(BookingError::WaitlistOff);
        }
        let this = Arc::clone(self);
        self.run_to_completion(async move {
            let Some(gate) = this.gate() else { return Err(BookingError::WaitlistOff) };
            this.decide_join(gate, &join).await
        })
        .await
    }

    async fn decide_join(&self, gate: &Gate, join: &Join) -> Result<Entry, BookingError> {
        let give_up = Instant::now() + self.settings.replay_wait;
        let mut backoff = Duration::from_millis(2);
        let mut loads = 0;
        let nonce = attempt_nonce();
        loop {
            let decision = match gate.join(join, nonce).await {
                Ok(decision) => decision,
                Err(e) => {
                    // The reply was lost: the script may have recorded the
                    // join, or may still run. Undo it either way; a retry
                    // decides afresh.
                    if let Err(undo) = gate.unjoin(join, nonce).await {
                        warn!(error = %undo, "could not undo a join whose reply was lost");
                    }
                    return Err(e.into());
                }
            };
            match decision {
                JoinDecision::Joined { position } => return self.persist_join(gate, join, position, nonce).await,
                JoinDecision::Cold if loads < COLD_RETRIES => {
                    loads += 1;
                    self.load_counter(gate, join.slot).await?;
                }
                JoinDecision::Cold => {
                    return Err(GateError::Unavailable("the slot's counter keeps disappearing".into()).into());
                }
                JoinDecision::SeatsAvailable { left } => return Err(BookingError::SeatsAvailable { left }),
                JoinDecision::Holding(existing) => return Err(BookingError::Duplicate { existing }),
                JoinDecision::Waiting(entry) => return Err(BookingError::AlreadyWaiting { entry }),
                JoinDecision::Reused => return Err(BookingError::RequestIdReused),
                JoinDecision::Full { limit } => return Err(BookingError::WaitlistFull { limit }),
                JoinDecision::Off => return Err(BookingError::WaitlistOff),
                JoinDecision::Shut(shut) => return Err(BookingError::shut(join.slot, shut)),
                JoinDecision::Replay => {
                    // Joined before: answered from the database once its
                    // entry is there (the first attempt may be in flight).
                    match self.store.find_entry(join.entry_id()).await? {
                        Some(e) if e.fingerprint == join.fingerprint() => return Ok(e),
                        Some(_) => return Err(BookingError::RequestIdReused),
                        None if Instant::now() + backoff > give_up => return Err(BookingError::RequestInProgress),
                        None => {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_millis(50));
                        }
                    }
                }
            }
        }
    }

    /// The gate took the join at `position`: the database persists it. A
    /// join the database refuses or loses is undone in the gate.
    async fn persist_join(&self, gate: &Gate, join: &Join, position: i32, nonce: u64) -> Result<Entry, BookingError> {
        let persisted =
            self.store.insert_entry(join, position, self.settings.waitlist_limit, self.clock.offset()).await;
        let refusal = match persisted {
            Ok(Joined::Created { entry, .. } | Joined::Existing(entry)) => return Ok(entry),
            Ok(Joined::Reused) => BookingError::RequestIdReused,
            Ok(Joined::Duplicate(entry)) => BookingError::AlreadyWaiting { entry },
            Ok(Joined::Holding(existing)) => BookingError::Duplicate { existing },
            Ok(Joined::Full { limit: 0 }) => BookingError::WaitlistOff,
            Ok(Joined::Full { limit }) => BookingError::WaitlistFull { limit },
            Ok(Joined::SlotMissing) => BookingError::SlotNotFound(join.slot),
            Ok(Joined::PositionTaken) => {
                StoreError::Unavailable("the waitlist's numbering was rebuilt meanwhile; retry".into()).into()
            }
            Err(e) => {
                // The answer may be lost after the commit: ask.
                match self.store.find_entry(join.entry_id()).await {
                    Ok(Some(entry)) if entry.fingerprint == join.fingerprint() => return Ok(entry),
                    Ok(_) => e.into(),
                    // Unknown either way: the gate's entries stay until a
                    // reconcile pass compares them with the database.
                    Err(_) => return Err(e.into()),
                }
            }
        };
        if let Err(e) = gate.unjoin(join, nonce).await {
            warn!(error = %e, "could not undo a join the database did not persist");
        }
        // The gate thought otherwise than the database (other than for an
        // outage): it is loaded afresh.
        if !matches!(refusal, BookingError::Store(_) | BookingError::SlotNotFound(_)) {
            self.refresh_counter(join.slot).await;
        }
        Err(refusal)
    }

    pub async fn get_entry(&self, id: EntryId) -> Result<Entry, BookingError> {
        self.store.find_entry(id).await?.ok_or(BookingError::WaitlistEntryNotFound)
    }

    /// Takes an entry out of line. An entry holding an offer gives it up:
    /// the offer's reservation is cancelled (USER), and its seats go to the
    /// next entry. Leaving a left entry changes nothing; an accepted or
    /// lapsed one cannot leave.
    pub async fn leave_waitlist(self: &Arc<Self>, id: EntryId, caller: String) -> Result<Entry, BookingError> {
        let this = Arc::clone(self);
        self.run_to_completion(async move {
            match this.store.leave_entry(id, &caller, this.offer_terms()).await? {
                Left::Now { entry, .. } => {
                    this.refresh_counter(entry.slot).await;
                    Ok(entry)
                }
                Left::Offered { reservation, .. } => {
                    // Only while the offer is still pending: one accepted
                    // meanwhile is the user's booking and stays.
                    if let Cancelled::Now { reservation: r, version, waitlist } =
                        this.store.give_up_offer(reservation, &caller, this.offer_terms()).await?
                    {
                        let freed = Freed { version, waitlist };
                        this.seats_freed(&r.slot, r.id, &r.user_id, r.party_size, freed).await;
                    }
                    match this.get_entry(id).await? {
                        entry if entry.state == WaitlistState::Left => Ok(entry),
                        entry => Err(BookingError::WaitlistEntryEnded(entry.state)),
                    }
                }
                Left::Ended(entry) if entry.state == WaitlistState::Left => Ok(entry),
                Left::Ended(entry) => Err(BookingError::WaitlistEntryEnded(entry.state)),
                Left::Missing => Err(BookingError::WaitlistEntryNotFound),
            }
        })
        .await
    }

    /// A page of a slot's waitlist, in line order.
    pub async fn list_waitlist(&self, query: &WaitlistQuery) -> Result<EntryPage, BookingError> {
        let mut entries = self.store.list_entries(query).await?;
        let more = entries.len() as i64 > query.page_size;
        entries.truncate(query.page_size as usize);
        let next_page_token = match entries.last() {
            Some(last) if more => query.token_after(last.position),
            _ => String::new(),
        };
        Ok(EntryPage { entries, next_page_token })
    }

    /// Loads a slot's counter afresh after the database changed its
    /// waitlist (offers made, seats set aside, an entry gone): the counter
    /// cannot apply those by itself. Until this lands the counter shows
    /// fewer seats than the database, never more (seats offered were not
    /// public before either); if Redis cannot be reached, the reconciler
    /// brings it up to date later.
    pub(super) async fn refresh_counter(&self, slot: SlotKey) {
        let Some(gate) = self.gate() else { return };
        for _ in 0..COLD_RETRIES {
            let figures = match self.store.slot_figures(&slot).await {
                Ok(Some(figures)) => figures,
                Ok(None) => return,
                Err(e) => {
                    warn!(error = %e, %slot, "could not read a slot to refresh its counter");
                    return;
                }
            };
            match gate.warm(&slot, &figures, Overwrite::Refresh).await {
                Ok(Warm::Stale { .. }) => continue,
                Ok(Warm::Written | Warm::AlreadyWarm) => return,
                Err(e) => {
                    warn!(error = %e, %slot, "could not refresh a slot's counter; the reconciler will");
                    return;
                }
            }
        }
        warn!(%slot, "the slot kept changing while its counter was refreshed; the reconciler will");
    }
}
