-- The transactional outbox: every change of a reservation writes its event
-- in the transaction that makes the change, so an event exists exactly when
-- its change committed.
--
-- Sequences are not taken when the row is written: a BIGSERIAL read with
-- `sequence > last` loses rows whose transactions commit out of order (a
-- reader sees 8, moves its cursor past 7, then 7 commits). Rows are written
-- with `sequence` NULL, and a sequencer (one at a time, under an advisory
-- lock) numbers the committed ones, in one transaction per pass, after
-- `event_log.last_sequence`. A reader only ever sees numbered rows, and
-- every number up to the highest it sees committed in the same pass or an
-- earlier one: nothing appears behind a reader's cursor.
CREATE TABLE reservation_events (
    id             BIGSERIAL PRIMARY KEY,
    sequence       BIGINT UNIQUE,
    type           TEXT NOT NULL CHECK (type IN ('CREATED', 'CONFIRMED', 'CANCELLED', 'EXPIRED')),
    reservation_id UUID NOT NULL REFERENCES reservations (id),
    restaurant_id  BIGINT NOT NULL,
    user_id        TEXT NOT NULL,
    -- The reservation's status and cancel reason after the change (the rest
    -- of a reservation never changes).
    status         TEXT NOT NULL,
    cancel_reason  TEXT,
    occurred_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The calling service that made the change; empty without
    -- authentication, `slotgate` for the expiry sweeper.
    caller         TEXT NOT NULL DEFAULT ''
);

-- The sequencer's work: rows not numbered yet, in the order written.
CREATE INDEX reservation_events_unnumbered ON reservation_events (id) WHERE sequence IS NULL;

-- Watchers that want one restaurant's or one user's events walk these.
CREATE INDEX reservation_events_by_restaurant ON reservation_events (restaurant_id, sequence);
CREATE INDEX reservation_events_by_user ON reservation_events (user_id, sequence);

-- One row: the highest sequence handed out, and the highest pruned.
CREATE TABLE event_log (
    one             BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    last_sequence   BIGINT NOT NULL DEFAULT 0,
    pruned_through  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO event_log DEFAULT VALUES;
