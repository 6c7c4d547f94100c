DELETE FROM reservation_events WHERE reservation_id IS NULL;
ALTER TABLE reservation_events DROP COLUMN waitlist_entry_id;
ALTER TABLE reservation_events ALTER COLUMN reservation_id SET NOT NULL;
DELETE FROM event_inbox WHERE reservation_id IS NULL;
ALTER TABLE event_inbox DROP CONSTRAINT event_inbox_names_something;
ALTER TABLE event_inbox DROP CONSTRAINT event_inbox_type_check;
DELETE FROM event_inbox WHERE type LIKE 'WAITLIST_%';
ALTER TABLE event_inbox ADD CONSTRAINT event_inbox_type_check
    CHECK (type IN ('CREATED', 'CONFIRMED', 'CANCELLED', 'EXPIRED'));
ALTER TABLE event_inbox DROP COLUMN waitlist_entry_id;
ALTER TABLE event_inbox ALTER COLUMN reservation_id SET NOT NULL;
DROP TABLE waitlist_entries;
ALTER TABLE slots DROP CONSTRAINT slots_set_aside_within_capacity;
ALTER TABLE slots DROP COLUMN set_aside;
ALTER TABLE slots DROP COLUMN last_position;
ALTER TABLE slots DROP COLUMN waiting;
ALTER TABLE slots DROP COLUMN offer_window_secs;
ALTER TABLE slots DROP COLUMN waitlist_limit;
