-- join: decide one waitlist join, atomically.
--
-- KEYS[1] seats  (as acquire; its `wlimit` is the waitlist's limit, `wseq`
--                the highest position handed out)
-- KEYS[2] users  (as acquire)
-- KEYS[3] ids    (as acquire: entry ids live here too, beside reservation
--                ids; the two are derived apart, so they never meet)
-- KEYS[4] waiters hash user_id -> entry id, for every entry in line
-- KEYS[5] void marker of this attempt, set by unjoin.lua when the attempt
--         gave up on a lost reply before this script ran
-- KEYS[6] the join's marker "nonce|position", kept as long as the slot's
--         keys: which attempt took the entry, so a second delivery of the
--         same call (a client library's retry) is answered as the first
--         was, and only that attempt's undo undoes it
-- ARGV[1] entry id   ARGV[2] user id   ARGV[3] party size
-- ARGV[4] fingerprint   ARGV[5] when the slot's keys expire (Unix seconds)
-- ARGV[6] nonce of this attempt
--
-- Returns {code, detail}:
--   {0, position}  JOINED: in line at `position`, entries recorded (also
--                  the answer to this attempt's own second delivery)
--   {1, ''}        COLD: no counter for this slot; load it and ask again
--   {2, left}      SEATS_AVAILABLE: the party fits now; nothing recorded
--   {3, id}        HOLDING: the user holds reservation `id` in this slot
--   {4, ''}        REPLAY: this request id joined before, same payload
--   {5, ''}        REUSED: this request id was used with another payload
--   {6, limit}     FULL: `limit` entries are in line already
--   {7..9}         NOT_OPEN, CLOSED, STARTED: see window.lua
--   {10, id}       WAITING: the user is in line already, as entry `id`
--   {11, ''}       OFF: the slot has no waitlist (its limit is 0)
--   {12, ''}       VOID: this attempt was given up before it ran; nothing
-- A refusal writes nothing (but for dropping a counter found untrustworthy).
-- (Loaded after window.lua.)
local id, user, party = ARGV[1], ARGV[2], tonumber(ARGV[3])

if redis.call('EXISTS', KEYS[5]) == 1 then
  return {12, ''}
end

local known = redis.call('HGET', KEYS[3], id)
if known then
  if known ~= ARGV[4] then
    return {5, ''}
  end
  local nonce, position = string.match(redis.call('GET', KEYS[6]) or '', '^(%d+)|(%d+)$')
  if nonce == ARGV[6] then
    return {0, position}
  end
  return {4, ''}
end

local left = redis.call('HGET', KEYS[1], 'left')
if not left then
  return {1, ''}
end
left = tonumber(left)

-- A lost users, ids or waiters key (its sentinel is gone), or a counter
-- loaded by a slotgate without waitlists (no limit recorded): reload
-- (before the window: a replay is answered as one whatever it says now).
local line = redis.call('HMGET', KEYS[1], 'wlimit', 'wseq')
local limit = tonumber(line[1])
if not limit or redis.call('HEXISTS', KEYS[2], '') == 0 or redis.call('HEXISTS', KEYS[3], '') == 0
    or redis.call('HEXISTS', KEYS[4], '') == 0 then
  redis.call('HDEL', KEYS[1], 'left')
  return {1, ''}
end

local refused = window_refusal(KEYS[1])
if refused then
  return refused
end

local holder = redis.call('HGET', KEYS[2], user)
if holder then
  return {3, holder}
end
local waiting = redis.call('HGET', KEYS[4], user)
if waiting then
  return {10, waiting}
end
if limit == 0 then
  return {11, ''}
end
if left >= party then
  return {2, tostring(left)}
end
if redis.call('HLEN', KEYS[4]) - 1 >= limit then
  return {6, tostring(limit)}
end

local position = (tonumber(line[2]) or 0) + 1
redis.call('HSET', KEYS[1], 'wseq', position)
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[4], user, id)
redis.call('HSET', KEYS[3], id, ARGV[4])
for i = 3, 4 do
  redis.call('EXPIREAT', KEYS[i], ARGV[5])
end
redis.call('SET', KEYS[6], ARGV[6] .. '|' .. position, 'EXAT', ARGV[5])
return {0, tostring(position)}
