-- unjoin: undo a join the database did not persist (refused, or failed),
-- or whose reply was lost: the user's place in line and the entry id's
-- fingerprint go. Only this attempt's join (named by its marker) is undone,
-- so a repeated call changes nothing twice, and another attempt's join of
-- the same request is left alone. The attempt is over either way: it is
-- voided, so a delivery of its join still on its way (queued behind a
-- stall, or sent again after a dropped connection) takes nothing.
--
-- KEYS[1] seats   KEYS[2] ids   KEYS[3] waiters   KEYS[4] void marker of
-- the attempt   KEYS[5] the join's marker   (as join's 1, 3, 4, 5, 6)
-- ARGV[1] entry id   ARGV[2] user id   ARGV[3] nonce of the attempt
-- ARGV[4] how long the void marker lasts (milliseconds: a hold lease, more
--         than any delivery can be late)
-- Returns 1 if it undid this attempt's join, else 0.
redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
local nonce = string.match(redis.call('GET', KEYS[5]) or '', '^(%d+)|')
if nonce ~= ARGV[3] then
  return 0
end
redis.call('DEL', KEYS[5])
if redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[3], ARGV[2])
end
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'left') == 1 then
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
end
return 1
