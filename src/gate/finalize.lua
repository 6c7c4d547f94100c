-- finalize: the reservation committed; end its hold and keep its seats.
--
-- KEYS[1] holds (as acquire's KEYS[4])
-- ARGV[1] reservation id
-- Returns 1 if a hold was ended, 0 if there was none.
return redis.call('HDEL', KEYS[1], ARGV[1])
