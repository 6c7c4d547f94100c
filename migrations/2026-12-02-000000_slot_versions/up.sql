-- Every change of a slot's `reserved` or `capacity` moves its `version` up
-- by one, in the statement that makes the change. The gate's counter
-- records the version it was loaded from and the highest version any later
-- change reported, so a load that read the database before a change can
-- never overwrite that change in Redis.
ALTER TABLE slots ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- The attempt (the nonce of its hold in Redis) that committed a
-- reservation: the lease reaper keeps an expired hold's seats only when the
-- hold's own attempt committed, in the hold's own slot.
ALTER TABLE reservations ADD COLUMN attempt BIGINT;
