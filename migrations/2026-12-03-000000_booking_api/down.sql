DROP INDEX reservations_by_slot;
DROP INDEX reservations_by_user;
ALTER TABLE slots DROP COLUMN closes_at;
ALTER TABLE slots DROP COLUMN opens_at;
ALTER TABLE restaurants DROP COLUMN time_zone;
