-- release: end a hold whose reservation was not committed, giving its seats
-- back. Only the call that removes the hold gives seats back, so a repeated
-- or racing release gives them back at most once.
--
-- KEYS[1] seats   KEYS[2] users   KEYS[3] ids   KEYS[4] holds   (as acquire)
-- ARGV[1] reservation id   ARGV[2] user id
-- ARGV[3] forget: 1 drops the id's user and fingerprint entries (nothing was
--         booked); 0 keeps them (the id names a reservation that exists)
-- Returns the seats given back (0 when there was no hold).
local id, user = ARGV[1], ARGV[2]
local given = 0

local hold = redis.call('HGET', KEYS[4], id)
if hold then
  redis.call('HDEL', KEYS[4], id)
  given = tonumber(string.match(hold, '^(%d+)|'))
  -- A missing counter means the slot went cold (flush, restart, eviction):
  -- the next load recomputes it from the database, so adding to it here
  -- would invent a counter holding only this hold's seats.
  if redis.call('HEXISTS', KEYS[1], 'left') == 1 then
    redis.call('HINCRBY', KEYS[1], 'left', given)
  end
end

if ARGV[3] == '1' then
  if redis.call('HGET', KEYS[2], user) == id then
    redis.call('HDEL', KEYS[2], user)
  end
  redis.call('HDEL', KEYS[3], id)
end
return given
