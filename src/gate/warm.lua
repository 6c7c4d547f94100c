-- warm: load a slot's state from the database's figures.
--
-- KEYS[1] seats   KEYS[2] users   KEYS[3] ids   KEYS[4] holds   (as acquire)
-- KEYS[5] waiters (see figures.lua)
-- ARGV[1] mode: 0 only if the slot is cold; 1 a slot just created: also
--         over a counter that exists, unless it is at least as new as the
--         figures; 2 only if cold, even if a newer change was reported: the
--         loader read the figures again after a stale reply and they are
--         still older, so the database's versions went back (a restore, a
--         reseeded database), and `seen` starts again from the figures;
--         3 a refresh: a change the counter cannot apply by itself (the
--         waitlist's offers, leaves) committed before the figures were
--         read: over a counter that exists too, unless a change newer than
--         the figures was reported (then read them again)
-- ARGV[2..] the figures (see figures.lua)
-- Returns {status, seen}: status 1 if it wrote the slot's state; 0 if the
-- slot was warm already; 2 if it is cold (or refreshed) but a change newer
-- than these figures (version `seen`) has been reported meanwhile: read
-- them again.
--
-- Holds in flight whose reservation the figures do not include (not yet
-- committed when they were read) are kept, their seats still taken and
-- their entries kept, so their owners finalize or release them as usual and
-- nothing has to load the slot again because of them. Holds of
-- reservations the figures include are dropped: their seats are in the
-- figures already.
-- (Loaded after versions.lua and figures.lua.)
local v = tonumber(ARGV[4])
local seen = version_of(KEYS[1], 'seen')
if redis.call('HEXISTS', KEYS[1], 'left') == 1 and ARGV[1] ~= '3' and (ARGV[1] ~= '1' or seen >= v) then
  return {0, seen}
end
if seen > v and ARGV[1] ~= '2' then
  return {2, seen}
end

local known = {}
for i = waiters_end() + 1, #ARGV, 2 do
  known[ARGV[i]] = true
end
local kept, held = {}, 0
local holds = redis.call('HGETALL', KEYS[4])
for i = 1, #holds, 2 do
  local id, hold = holds[i], holds[i + 1]
  local party, user = string.match(hold, '^(%d+)|(.*)|%d+|%d+$')
  if party and not known[id] then
    kept[#kept + 1] = {id, hold, user, redis.call('HGET', KEYS[3], id)}
    held = held + tonumber(party)
  end
end
redis.call('DEL', KEYS[4])

-- A fresh epoch from the clock, never a small number a reconciler may have
-- read before the slot was lost and rebuilt.
local now = redis.call('TIME')
local epoch = tonumber(now[1]) * 1000000 + tonumber(now[2])
if ARGV[1] == '2' then
  seen = v
end
write_figures(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], epoch, math.max(seen, v))
if #kept > 0 then
  redis.call('HINCRBY', KEYS[1], 'left', -held)
  for _, h in ipairs(kept) do
    redis.call('HSET', KEYS[4], h[1], h[2])
    redis.call('HSET', KEYS[2], h[3], h[1])
    if h[4] then
      redis.call('HSET', KEYS[3], h[1], h[4])
    end
  end
  redis.call('EXPIREAT', KEYS[4], ARGV[5])
end
return {1, seen}
