-- distrust: the gate's entries for a request disagree with the database
-- (the id is known here with no hold in flight, yet no row has it): they
-- were left by a hold that was lost. Unless a hold of the id is in flight,
-- or its entries are gone already (someone loaded the slot since: a second
-- delivery of this call must not make it cold again), make the slot cold,
-- so the next request loads all of it again from the database, which is
-- exact.
--
-- KEYS[1] seats   KEYS[2] users   KEYS[3] ids   KEYS[4] holds   (as acquire)
-- ARGV[1] reservation id   ARGV[2] user id
-- Returns 1 if the slot was made cold.
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then
  return 0
end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 and redis.call('HGET', KEYS[2], ARGV[2]) ~= ARGV[1] then
  return 0
end
redis.call('HDEL', KEYS[1], 'left')
return 1
