-- The transactional outbox: every change of a reservation writes its event
-- in the transaction that makes the change, so an event exists exactly when
-- its change committed.
--
-- Sequences are not taken when the event is written: a BIGSERIAL read with
-- `sequence > last` loses rows whose transactions commit out of order (a
-- reader sees 8, moves its cursor past 7, then 7 commits). Events are
-- written to `event_inbox`, and a sequencer (one at a time, under an
-- advisory lock) moves the committed ones into `reservation_events`,
-- numbered after `event_log.last_sequence`, in one transaction per pass. A
-- reader only ever sees numbered events, and every number up to the
-- highest it sees was committed by the same pass or an earlier one: nothing
-- appears behind a reader's cursor. (Moving rather than numbering in place
-- writes each event's indexes once: the winner's transaction pays one
-- small insert.)
CREATE TABLE event_inbox (
    id             BIGSERIAL PRIMARY KEY,
    type           TEXT NOT NULL CHECK (type IN ('CREATED', 'CONFIRMED', 'CANCELLED', 'EXPIRED')),
    reservation_id UUID NOT NULL,
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

CREATE TABLE reservation_events (
    sequence       BIGINT PRIMARY KEY,
    type           TEXT NOT NULL,
    reservation_id UUID NOT NULL,
    restaurant_id  BIGINT NOT NULL,
    user_id        TEXT NOT NULL,
    status         TEXT NOT NULL,
    cancel_reason  TEXT,
    occurred_at    TIMESTAMPTZ NOT NULL,
    caller         TEXT NOT NULL
);

-- Watchers that want one restaurant's or one user's events walk these.
CREATE INDEX reservation_events_by_restaurant ON reservation_events (restaurant_id, sequence);
CREATE INDEX reservation_events_by_user ON reservation_events (user_id, sequence);

-- One row: the highest sequence handed out, the highest pruned, and the
-- highest the RabbitMQ relay had confirmed by the broker.
CREATE TABLE event_log (
    one              BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    last_sequence    BIGINT NOT NULL DEFAULT 0,
    pruned_through   BIGINT NOT NULL DEFAULT 0,
    relayed_through  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO event_log DEFAULT VALUES;
