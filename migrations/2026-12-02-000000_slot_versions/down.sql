ALTER TABLE reservations DROP COLUMN attempt;
ALTER TABLE slots DROP COLUMN version;
