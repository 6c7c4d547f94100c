-- give_back: a committed reservation ended in the database (cancelled,
-- expired); return its seats to the counter. The user's entry pointing at
-- this reservation is the token: only the call that removes it gives seats
-- back, so a repeated call gives nothing twice.
--
-- KEYS[1] seats   KEYS[2] users   (as acquire)
-- ARGV[1] reservation id   ARGV[2] user id   ARGV[3] party size
-- ARGV[4] the slot's version after the change   ARGV[5] keys' expiry
-- Returns the seats given back (0 if this reservation had none to give,
-- or the slot is cold: its next load reads the change from the database).
-- (Loaded after versions.lua.)
note_seen(KEYS[1], tonumber(ARGV[4]), ARGV[5])
if redis.call('HEXISTS', KEYS[1], 'left') == 1 and redis.call('HEXISTS', KEYS[2], '') == 0
    and redis.call('HEXISTS', KEYS[1], 'ver') == 1 then
  -- The users key was lost (its sentinel is gone, see figures.lua): whether
  -- the counter counts this reservation is unknown. Make the slot cold; its
  -- next load reads the change from the database.
  redis.call('HDEL', KEYS[1], 'left')
  return 0
end
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[1] then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[2])
if redis.call('HEXISTS', KEYS[1], 'left') == 0 then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'left', tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
return tonumber(ARGV[3])
