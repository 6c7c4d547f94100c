-- finalize: the reservation committed; end the hold, keep its seats. Only
-- the attempt that made the hold (named by its nonce) ends it.
--
-- KEYS[1] seats   KEYS[2] holds   (as acquire's KEYS[1] and KEYS[4])
-- ARGV[1] reservation id   ARGV[2] nonce of the attempt
-- Returns 1 if a hold was ended, 0 if this attempt held none.
local hold = redis.call('HGET', KEYS[2], ARGV[1])
if not hold or string.match(hold, '|(%d+)$') ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'left') == 1 then
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
end
return 1
