-- unjoin: undo a join the database did not persist (refused, or failed):
-- the user's place in line and the entry id's fingerprint go. Only the
-- join's own entries are touched, so a repeated call, or one racing a
-- reload, changes nothing twice.
--
-- KEYS[1] seats   KEYS[2] ids   KEYS[3] waiters   (as join's 1, 3, 4)
-- ARGV[1] entry id   ARGV[2] user id
-- Returns 1 if the user's place was this entry's and went, else 0.
local removed = 0
if redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[3], ARGV[2])
  removed = 1
end
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'left') == 1 then
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
end
return removed
