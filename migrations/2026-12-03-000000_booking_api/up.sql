-- Time zones: a restaurant's IANA zone (NULL: the server's default zone).
-- A slot starts at its local date and time in that zone.
ALTER TABLE restaurants ADD COLUMN time_zone TEXT;

-- Sale windows: a slot takes reservations from `opens_at` (NULL: at once)
-- until `closes_at` (NULL: until it starts). The gate decides with its own
-- clock; these are what its counter is loaded from. Changing either moves
-- the slot's version up, like a capacity change.
ALTER TABLE slots ADD COLUMN opens_at TIMESTAMPTZ;
ALTER TABLE slots ADD COLUMN closes_at TIMESTAMPTZ;
-- (OpenSlots only takes windows that open before they close; CloseSlots
-- may close a slot before its opening, and closed is what it then is.)
-- A restaurant's day in time order is the natural key's index.

-- Listing reservations page by page: each filter walks one index in the
-- listing's order (created_at, id), from the page token's key on. (On a
-- large table, create them beforehand with CREATE INDEX CONCURRENTLY and
-- these names: the migration then leaves them as they are.)
CREATE INDEX IF NOT EXISTS reservations_by_user ON reservations (user_id, created_at, id);
CREATE INDEX IF NOT EXISTS reservations_by_slot ON reservations (slot_id, created_at, id);
