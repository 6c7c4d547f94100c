-- resize: a slot's capacity changed in the database by `delta`; move the
-- counter by the same amount. Adding is commutative with acquire and release,
-- so no hold in flight is disturbed. A counter that goes below zero (capacity
-- lowered under seats being held) just reads as sold out.
--
-- KEYS[1] seats (as acquire)
-- ARGV[1] new capacity   ARGV[2] delta (new capacity - old capacity)
-- Returns 1 if the counter was moved, 0 if the slot is cold.
if redis.call('HEXISTS', KEYS[1], 'left') == 0 then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'left', tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'cap', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
return 1
