-- give_back: a committed reservation was cancelled in the database; return
-- its seats to the counter. The user's entry pointing at this reservation is
-- the token: only the call that removes it gives seats back, so a repeated
-- cancel gives nothing twice.
--
-- KEYS[1] seats   KEYS[2] users   (as acquire)
-- ARGV[1] reservation id   ARGV[2] user id   ARGV[3] party size
-- Returns the seats given back (0 if this reservation had none to give).
if redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[1] then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[2])
if redis.call('HEXISTS', KEYS[1], 'left') == 1 then
  redis.call('HINCRBY', KEYS[1], 'left', tonumber(ARGV[3]))
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
end
return tonumber(ARGV[3])
