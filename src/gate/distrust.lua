-- distrust: the gate's entries for a request disagree with the database
-- (the id is known here with no hold in flight, yet no row has it): they
-- were left by a hold that was lost. Unless a hold of the id is in flight,
-- make the slot cold, so the next request loads all of it again from the
-- database, which is exact.
--
-- KEYS[1] seats   KEYS[2] holds   (as acquire's 1 and 4)
-- ARGV[1] reservation id
-- Returns 1 if the slot was made cold.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 0
end
redis.call('HDEL', KEYS[1], 'left')
return 1
