-- reconcile: rewrite a slot's state from the database's figures, but only if
-- nothing moved since those figures could have been read: no hold in flight
-- (its transaction may commit any moment) and the epoch as read before the
-- database was. Safe to run at any time, from any replica. (It does not
-- refuse figures older than a change the gate has seen, as a load does: a
-- change that reached the gate without moving the epoch did nothing to the
-- counter, and the next pass corrects what the figures missed; refusing
-- would leave a slot uncorrected for good if the database's versions went
-- back.)
--
-- KEYS[1] seats   KEYS[2] users   KEYS[3] ids   KEYS[4] holds   (as acquire)
-- KEYS[5] waiters (see figures.lua)
-- ARGV[1] epoch, as read before the database read
-- ARGV[2..] the figures (see figures.lua)
-- Returns {status, left before}:
--   0 corrected   1 already right   2 busy (hold in flight, or the slot
--   moved: try again later)   3 cold (no counter: nothing to correct)
-- (Loaded after versions.lua and figures.lua.)
local left = redis.call('HGET', KEYS[1], 'left')
if not left then
  return {3, 0}
end
left = tonumber(left)
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] or redis.call('HLEN', KEYS[4]) > 0 then
  return {2, left}
end

local cap = tonumber(ARGV[2])
if left == cap - tonumber(ARGV[3]) and tonumber(redis.call('HGET', KEYS[1], 'cap')) == cap
    and window_matches(KEYS[1], 6) and entries_match(KEYS[1], KEYS[2], KEYS[3], KEYS[5]) then
  for i = 1, 5 do
    redis.call('EXPIREAT', KEYS[i], ARGV[5])
  end
  return {1, left}
end

local seen = math.max(version_of(KEYS[1], 'seen'), tonumber(ARGV[4]))
write_figures(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], redis.call('HINCRBY', KEYS[1], 'epoch', 1), seen)
return {0, left}
