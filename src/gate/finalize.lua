-- finalize: the reservation committed; end the hold, keep its seats. Only
-- the attempt that made the hold (named by its nonce) ends it.
--
-- KEYS[1] seats   KEYS[2] users   KEYS[3] holds   (as acquire's 1, 2, 4)
-- ARGV[1] reservation id   ARGV[2] nonce of the attempt   ARGV[3] user id
-- ARGV[4] the slot's version after the commit   ARGV[5] keys' expiry
-- Returns 1 if a hold was ended, 0 if this attempt held none.
-- (Loaded after versions.lua.)
local id, v = ARGV[1], tonumber(ARGV[4])
note_seen(KEYS[1], v, ARGV[5])
local hold = redis.call('HGET', KEYS[3], id)
if hold and string.match(hold, '|(%d+)$') == ARGV[2] then
  redis.call('HDEL', KEYS[3], id)
  if redis.call('HEXISTS', KEYS[1], 'left') == 1 then
    redis.call('HINCRBY', KEYS[1], 'epoch', 1)
  end
  return 1
end
-- No hold of this attempt. If the counter was loaded before this commit
-- and does not count its seats, the hold was lost (a flush, an eviction, a
-- load that ran before the commit): the counter reads high. It does not
-- count them when the user's entry names another reservation, or when
-- another attempt of this id holds seats of its own (that attempt will
-- find the row and give its seats back). Make the slot cold, so the next
-- request loads figures that include this commit.
if redis.call('HEXISTS', KEYS[1], 'left') == 1 and v > version_of(KEYS[1], 'ver')
    and (redis.call('HGET', KEYS[2], ARGV[3]) ~= id or hold) then
  redis.call('HDEL', KEYS[1], 'left')
end
return 0
