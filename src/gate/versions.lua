-- versions: shared by the scripts that carry a slot's database version
-- (finalize, give_back, resize, warm, reconcile); the gate loads them with
-- this file in front (it is not a script of its own).
--
-- The seats hash keeps three versions of the slot's row in PostgreSQL,
-- which moves its version up with every change of `reserved` or `capacity`:
--   ver   the version of the figures the counter was last loaded from
--   seen  the highest version any change has reported to the gate, applied
--         or not (a change that finds the slot cold is recorded here only)
--   capv  the version of the last capacity change applied by resize.lua
-- A load (warm, reconcile) writes only figures at least as new as `seen`,
-- so a load that read the database before a change cannot overwrite it.

local function version_of(seats, field)
  return tonumber(redis.call('HGET', seats, field)) or 0
end

-- Records that the slot's row reached version `v`. A seats hash this
-- creates (the slot is cold) expires with the slot's other keys.
local function note_seen(seats, v, expire_at)
  if v > version_of(seats, 'seen') then
    local existed = redis.call('EXISTS', seats) == 1
    redis.call('HSET', seats, 'seen', v)
    if not existed then
      redis.call('EXPIREAT', seats, expire_at)
    end
  end
end

