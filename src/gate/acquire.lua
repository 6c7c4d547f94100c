-- acquire: decide one reservation request, atomically.
--
-- KEYS[1] seats  hash {left, cap, epoch, ver, seen, capv}: seats left to
--                admit, the capacity, a counter every change of the slot's
--                state moves, and versions (see warm.lua)
-- KEYS[2] users  hash user_id -> reservation id (held or committed, active)
-- KEYS[3] ids    hash reservation id -> request fingerprint
-- KEYS[4] holds  hash reservation id -> "party|user|lease_deadline_ms|nonce"
-- KEYS[5] void   marker of this attempt, set by release.lua when the attempt
--                gave up on a lost reply before this script ran
-- KEYS[6] waiters hash user_id -> waitlist entry id (see join.lua)
-- KEYS[7] (one Redis only; absent with a Redis Cluster, where it would live
--         in another hash slot) the request's record: the slot its id was
--         admitted in, whatever slot this is
-- ARGV[1] reservation id   ARGV[2] user id   ARGV[3] party size
-- ARGV[4] fingerprint      ARGV[5] lease in milliseconds
-- ARGV[6] nonce of this attempt: only the attempt that made a hold (or the
--         lease reaper) may release it, never a retry of the same request
-- ARGV[7] when the slot's keys expire (Unix seconds)
-- ARGV[8] this slot's name, as the request's record holds it
--
-- Returns {code, detail}:
--   {0, left}   ADMITTED: seats taken, hold recorded, left after taking.
--               Also the answer when this attempt's own hold is found: the
--               call reached Redis twice (a client library's retry), and
--               the second time must answer as the first did.
--   {1, ''}     COLD: no counter for this slot (or it was just found
--               untrustworthy and dropped); load it and ask again
--   {2, left}   SOLD_OUT: fewer than party size left (never below 0)
--   {3, id}     DUPLICATE: the user already holds reservation `id` here
--   {4, held}   REPLAY: this request id was admitted before with the same
--               payload (or the user's entry names this very id); held = 1
--               while its transaction is still in flight
--   {5, ''}     REUSED: this request id was admitted with another payload,
--               here or (KEYS[7]) in another slot
--   {6, ''}     VOID: this attempt was given up before it ran (nobody
--               waits for this reply); nothing taken
--   {7..9}      NOT_OPEN, CLOSED, STARTED: see window.lua
--   {10, entry} WAITING: the user is in the slot's waitlist as `entry`: a
--               user in line books through it (an offer) or leaves it first
-- A refusal writes nothing (but for dropping a counter found untrustworthy).
-- The window is decided here (window.lua); a replay of an admitted request
-- is answered as before whatever the window says now.
-- (Loaded after window.lua.)
local id, user, party = ARGV[1], ARGV[2], tonumber(ARGV[3])

if redis.call('EXISTS', KEYS[5]) == 1 then
  return {6, ''}
end

local known = redis.call('HGET', KEYS[3], id)
if known then
  if known ~= ARGV[4] then
    return {5, ''}
  end
  local hold = redis.call('HGET', KEYS[4], id)
  if hold and string.match(hold, '|(%d+)$') == ARGV[6] then
    local now_left = tonumber(redis.call('HGET', KEYS[1], 'left')) or 0
    return {0, tostring(math.max(now_left, 0))}
  end
  return {4, hold and '1' or '0'}
end

if KEYS[7] then
  local elsewhere = redis.call('GET', KEYS[7])
  if elsewhere and elsewhere ~= ARGV[8] then
    return {5, ''}
  end
end

local left = redis.call('HGET', KEYS[1], 'left')
if not left then
  return {1, ''}
end
left = tonumber(left)

-- The users, ids or waiters key was lost since the slot was loaded (its
-- sentinel is gone, see figures.lua): their answers cannot be trusted, nor
-- the absence of this request's id (a replay must be answered as one
-- whatever the window says now). Make the slot cold, so it is loaded
-- again, whole. (A counter without a version was loaded by an older
-- slotgate, which wrote no sentinels.)
if (redis.call('HEXISTS', KEYS[2], '') == 0 or redis.call('HEXISTS', KEYS[3], '') == 0
    or redis.call('HEXISTS', KEYS[6], '') == 0)
    and redis.call('HEXISTS', KEYS[1], 'ver') == 1 then
  redis.call('HDEL', KEYS[1], 'left')
  return {1, ''}
end

local refused, now_ms = window_refusal(KEYS[1])
if refused then
  return refused
end

local holder = redis.call('HGET', KEYS[2], user)
if holder == id then
  -- The id's fingerprint entry is gone (evicted, deleted) but the user's
  -- entry names this very request: a replay, not a duplicate of itself.
  return {4, tostring(redis.call('HEXISTS', KEYS[4], id))}
elseif holder then
  return {3, holder}
end
local waiting = redis.call('HGET', KEYS[6], user)
if waiting then
  return {10, waiting}
end

if left < party then
  return {2, tostring(math.max(left, 0))}
end

local deadline = now_ms + tonumber(ARGV[5])
redis.call('HINCRBY', KEYS[1], 'left', -party)
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[2], user, id)
redis.call('HSET', KEYS[3], id, ARGV[4])
redis.call('HSET', KEYS[4], id, party .. '|' .. user .. '|' .. deadline .. '|' .. ARGV[6])
for i = 2, 4 do
  redis.call('EXPIREAT', KEYS[i], ARGV[7])
end
if KEYS[7] then
  redis.call('SET', KEYS[7], ARGV[8], 'EXAT', ARGV[7])
end
return {0, tostring(left - party)}
