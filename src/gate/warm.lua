-- warm: load a slot's state from the database's figures. Unless forced, does
-- nothing if the counter exists (another loader won, or it was never cold).
--
-- KEYS[1] seats   KEYS[2] users   KEYS[3] ids   KEYS[4] holds   (as acquire)
-- ARGV[1] force: 1 overwrites a counter that exists (a slot just created)
-- ARGV[2] capacity   ARGV[3] seats reserved in the database
-- ARGV[4] n, the number of active reservations, then n pairs of (user id,
--         reservation id), then pairs of (reservation id, fingerprint) for
--         every reservation of the slot whatever its status: so duplicates
--         and replays are told apart by the gate again, not by the database
-- Returns 1 if it wrote the counter, 0 if the slot was already warm.
-- (Loaded after figures.lua, which defines write_figures.)
if ARGV[1] ~= '1' and redis.call('HEXISTS', KEYS[1], 'left') == 1 then
  return 0
end
-- Leftovers of a partial loss (say, only the counter was evicted) describe
-- holds the database figures below do not include: drop them so a later
-- release cannot add their seats on top.
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
local cap = tonumber(ARGV[2])
-- A fresh epoch from the clock, never a small number a reconciler may have
-- read before the slot was lost and rebuilt.
local now = redis.call('TIME')
local epoch = tonumber(now[1]) * 1000000 + tonumber(now[2])
redis.call('HSET', KEYS[1], 'left', cap - tonumber(ARGV[3]), 'cap', cap, 'epoch', epoch)
write_figures(KEYS[2], KEYS[3])
return 1
