-- warm: load a slot's state from the database's figures.
--
-- KEYS[1] seats   KEYS[2] users   KEYS[3] ids   KEYS[4] holds   (as acquire)
-- ARGV[1] force: 1 overwrites a counter that exists (a slot just created),
--         unless a change newer than the figures has reached it already
-- ARGV[2..] the figures (see figures.lua)
-- Returns 1 if it wrote the slot's state; 0 if the slot was warm already
-- (and not forced); 2 if it is cold but a change newer than these figures
-- has been reported meanwhile (read the figures again, then retry).
-- (Loaded after versions.lua and figures.lua.)
local v = tonumber(ARGV[4])
local seen = version_of(KEYS[1], 'seen')
if redis.call('HEXISTS', KEYS[1], 'left') == 1 and (ARGV[1] ~= '1' or seen > v) then
  return 0
end
if seen > v then
  return 2
end
-- Leftovers of a partial loss (say, only the counter was evicted) describe
-- holds the database figures do not include: drop them so a later release
-- cannot add their seats on top.
redis.call('DEL', KEYS[4])
-- A fresh epoch from the clock, never a small number a reconciler may have
-- read before the slot was lost and rebuilt.
local now = redis.call('TIME')
write_figures(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(now[1]) * 1000000 + tonumber(now[2]))
return 1
