-- slotgate's schema. The invariants that must hold even if Redis is wrong
-- live here, in the database itself:
--   * a slot never has more seats reserved than it has (CHECK),
--   * a user holds at most one active reservation per slot (partial UNIQUE),
--   * one request id makes at most one reservation (PRIMARY KEY on the id
--     derived from it).

CREATE TABLE restaurants (
    id         BIGINT PRIMARY KEY CHECK (id > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE slots (
    id            BIGSERIAL PRIMARY KEY,
    restaurant_id BIGINT NOT NULL REFERENCES restaurants (id),
    slot_date     DATE NOT NULL,
    slot_time     TIME NOT NULL,
    capacity      INTEGER NOT NULL,
    reserved      INTEGER NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT slots_natural_key UNIQUE (restaurant_id, slot_date, slot_time),
    CONSTRAINT slots_capacity_positive CHECK (capacity > 0),
    CONSTRAINT slots_reserved_within_capacity CHECK (reserved BETWEEN 0 AND capacity)
);

-- WarmSlots reads every slot from a date on.
CREATE INDEX slots_by_date ON slots (slot_date);

CREATE TABLE menus (
    restaurant_id BIGINT NOT NULL REFERENCES restaurants (id),
    menu_id       BIGINT NOT NULL CHECK (menu_id > 0),
    name          TEXT NOT NULL,
    price         BIGINT NOT NULL CHECK (price >= 0),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (restaurant_id, menu_id)
);

CREATE TABLE reservations (
    id               UUID PRIMARY KEY,
    code             TEXT NOT NULL UNIQUE,
    request_id       TEXT NOT NULL,
    fingerprint      BIGINT NOT NULL,
    slot_id          BIGINT NOT NULL REFERENCES slots (id),
    user_id          TEXT NOT NULL,
    party_size       INTEGER NOT NULL CHECK (party_size > 0),
    kind             TEXT NOT NULL CHECK (kind IN ('RESERVATION_DEPOSIT', 'PREORDER_PREPAY')),
    status           TEXT NOT NULL
                     CHECK (status IN ('PENDING_DEPOSIT', 'CONFIRMED', 'CANCELLED', 'EXPIRED')),
    deposit_deadline TIMESTAMPTZ,
    cancel_reason    TEXT CHECK (cancel_reason IN ('USER', 'RESTAURANT', 'REFUND')),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT reservations_cancel_reason_iff_cancelled
        CHECK ((status = 'CANCELLED') = (cancel_reason IS NOT NULL))
);

-- A user holds at most one active reservation per slot.
CREATE UNIQUE INDEX reservations_one_active_per_user
    ON reservations (slot_id, user_id)
    WHERE status IN ('PENDING_DEPOSIT', 'CONFIRMED');

CREATE TABLE reservation_items (
    reservation_id UUID NOT NULL REFERENCES reservations (id),
    menu_id        BIGINT NOT NULL,
    quantity       INTEGER NOT NULL CHECK (quantity > 0),
    -- The price when the reservation was made; later menu changes leave it.
    unit_price     BIGINT NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (reservation_id, menu_id)
);
