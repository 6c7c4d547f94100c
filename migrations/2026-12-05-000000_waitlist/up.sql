-- The waitlist: callers refused for want of seats queue per slot, and seats
-- that come back are offered to them, in order, before they become public.
--
-- Per slot: `waitlist_limit` and `offer_window_secs` override the server's
-- defaults (NULL: the default; a limit of 0 turns the waitlist off);
-- `waiting` counts the entries in line (the limit's check); `last_position`
-- is the highest position handed out; `set_aside` counts seats freed and
-- held back for an entry that has been passed over as often as the rule
-- allows. Seats that are public are `capacity - reserved - set_aside`.
ALTER TABLE slots ADD COLUMN waitlist_limit INTEGER CHECK (waitlist_limit >= 0);
ALTER TABLE slots ADD COLUMN offer_window_secs INTEGER CHECK (offer_window_secs > 0);
ALTER TABLE slots ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0 CHECK (waiting >= 0);
ALTER TABLE slots ADD COLUMN last_position INTEGER NOT NULL DEFAULT 0;
ALTER TABLE slots ADD COLUMN set_aside INTEGER NOT NULL DEFAULT 0;
ALTER TABLE slots ADD CONSTRAINT slots_set_aside_within_capacity
    CHECK (set_aside >= 0 AND reserved + set_aside <= capacity);

CREATE TABLE waitlist_entries (
    -- Derived from the join's request_id, like a reservation's id.
    id                   UUID PRIMARY KEY,
    request_id           TEXT NOT NULL,
    fingerprint          BIGINT NOT NULL,
    slot_id              BIGINT NOT NULL REFERENCES slots (id),
    user_id              TEXT NOT NULL,
    party_size           INTEGER NOT NULL CHECK (party_size > 0),
    -- The place in the slot's line, in the order the gate took the joins.
    position             INTEGER NOT NULL CHECK (position > 0),
    state                TEXT NOT NULL CHECK (state IN ('WAITING', 'OFFERED', 'ACCEPTED', 'LAPSED', 'LEFT')),
    -- How often seats went to a later entry because this one's party did
    -- not fit them.
    passed_over          INTEGER NOT NULL DEFAULT 0,
    offer_reservation_id UUID REFERENCES reservations (id),
    offer_deadline       TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT waitlist_position_unique UNIQUE (slot_id, position),
    CONSTRAINT waitlist_offer_iff_offered
        CHECK ((state IN ('WAITING', 'LEFT')) OR offer_reservation_id IS NOT NULL)
);

-- A user is in a slot's line at most once at a time.
CREATE UNIQUE INDEX waitlist_one_per_user
    ON waitlist_entries (slot_id, user_id)
    WHERE state IN ('WAITING', 'OFFERED');
-- The entry an offer reservation belongs to, while it is offered.
CREATE UNIQUE INDEX waitlist_by_offer
    ON waitlist_entries (offer_reservation_id)
    WHERE state = 'OFFERED';

-- Waitlist events ride the same outbox: an entry's events name it, and a
-- reservation only when one is involved (an offer).
ALTER TABLE event_inbox ALTER COLUMN reservation_id DROP NOT NULL;
ALTER TABLE event_inbox ADD COLUMN waitlist_entry_id UUID;
ALTER TABLE event_inbox DROP CONSTRAINT event_inbox_type_check;
ALTER TABLE event_inbox ADD CONSTRAINT event_inbox_type_check CHECK (type IN (
    'CREATED', 'CONFIRMED', 'CANCELLED', 'EXPIRED',
    'WAITLIST_JOINED', 'WAITLIST_OFFERED', 'WAITLIST_LAPSED', 'WAITLIST_LEFT'));
ALTER TABLE event_inbox ADD CONSTRAINT event_inbox_names_something
    CHECK (reservation_id IS NOT NULL OR waitlist_entry_id IS NOT NULL);
ALTER TABLE reservation_events ALTER COLUMN reservation_id DROP NOT NULL;
ALTER TABLE reservation_events ADD COLUMN waitlist_entry_id UUID;
