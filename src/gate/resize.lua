-- resize: a slot's capacity or window changed in the database; move the
-- counter by the difference between the new capacity and the one it has,
-- and set the window as given. Absolute, and
-- applied only if newer than the capacity the counter already has, so a
-- repeated call, two changes arriving out of order, or a load that already
-- read the new capacity move nothing twice. Holds in flight are undisturbed;
-- a counter that goes below zero (capacity lowered under seats being held)
-- reads as sold out.
--
-- KEYS[1] seats (as acquire)
-- ARGV[1] new capacity   ARGV[2] the slot's version after the change
-- ARGV[3] keys' expiry
-- ARGV[4] opens   ARGV[5] closes   ARGV[6] starts: the window after the
--         change, in Unix milliseconds ('' for none)
-- Returns 1 if the counter is warm (moved, or newer already), 0 if cold.
-- (Loaded after versions.lua.)
local v = tonumber(ARGV[2])
note_seen(KEYS[1], v, ARGV[3])
if redis.call('HEXISTS', KEYS[1], 'left') == 0 then
  return 0
end
if v <= version_of(KEYS[1], 'ver') or v <= version_of(KEYS[1], 'capv') then
  return 1
end
local cap = tonumber(redis.call('HGET', KEYS[1], 'cap'))
redis.call('HINCRBY', KEYS[1], 'left', tonumber(ARGV[1]) - cap)
redis.call('HSET', KEYS[1], 'cap', ARGV[1], 'capv', v)
for i, field in ipairs({'opens', 'closes', 'starts'}) do
  if ARGV[3 + i] == '' then
    redis.call('HDEL', KEYS[1], field)
  else
    redis.call('HSET', KEYS[1], field, ARGV[3 + i])
  end
end
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
return 1
