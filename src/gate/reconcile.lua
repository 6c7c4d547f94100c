-- reconcile: rewrite a slot's state from the database's figures, but only if
-- nothing moved since those figures could have been read: no hold in flight
-- (its transaction may commit any moment) and the epoch as read before the
-- database was. Safe to run at any time, from any replica.
--
-- KEYS[1] seats   KEYS[2] users   KEYS[3] ids   KEYS[4] holds   (as acquire)
-- ARGV[1] epoch, as read before the database read
-- ARGV[2] capacity   ARGV[3] seats reserved in the database
-- ARGV[4] n, the number of active reservations, then n pairs of (user id,
--         reservation id), then (reservation id, fingerprint) pairs for every
--         reservation of the slot (as warm.lua)
-- Returns {status, left before}:
--   0 corrected   1 already right   2 busy (hold in flight, or the epoch
--   moved: try again later)   3 cold (no counter: nothing to correct)
-- (Loaded after figures.lua, which defines write_figures.)
local left = redis.call('HGET', KEYS[1], 'left')
if not left then
  return {3, 0}
end
left = tonumber(left)
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] or redis.call('HLEN', KEYS[4]) > 0 then
  return {2, left}
end

local cap = tonumber(ARGV[2])
local want = cap - tonumber(ARGV[3])
local holders = tonumber(ARGV[4])
local holders_end = 4 + 2 * holders
local right = left == want and tonumber(redis.call('HGET', KEYS[1], 'cap')) == cap
    and redis.call('HLEN', KEYS[2]) == holders
if right then
  for i = 5, holders_end, 2 do
    if redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[i + 1] then
      right = false
      break
    end
  end
end
if right then
  return {1, left}
end

redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'left', want, 'cap', cap)
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
write_figures(KEYS[2], KEYS[3])
return {0, left}
