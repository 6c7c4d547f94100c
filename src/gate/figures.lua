-- figures: shared by warm.lua and reconcile.lua, which the gate loads with
-- this file (and versions.lua) in front of them; not a script of its own.
--
-- Both take the database's figures in ARGV the same way:
--   ARGV[2] capacity   ARGV[3] seats not public (reserved, and set aside
--   for the waitlist)   ARGV[4] the slot's version
--   ARGV[5] when the slot's keys expire (Unix seconds)
--   ARGV[6] opens, ARGV[7] closes, ARGV[8] starts: the sale window and the
--   slot's start, in Unix milliseconds ('' when the slot has no such bound)
--   ARGV[9] the waitlist's limit   ARGV[10] the highest position handed out
--   ARGV[11] n, the number of active reservations   ARGV[12] m, the number
--   of waitlist entries in line; then n pairs of (user id, reservation id),
--   m pairs of (user id, entry id), then pairs of (reservation or entry id,
--   fingerprint) for every reservation and entry of the slot whatever its
--   status, to the end: so duplicates and replays are told apart by the
--   gate again, not by the database.
--
-- The waiters key (KEYS[5] of both) maps each user in line to their entry.
local WAITLIST_LIMIT, LAST_POSITION, N_HOLDERS, N_WAITERS = 9, 10, 11, 12
local FIRST_HOLDER = 13

local function holders_end()
  return FIRST_HOLDER - 1 + 2 * tonumber(ARGV[N_HOLDERS])
end

local function waiters_end()
  return holders_end() + 2 * tonumber(ARGV[N_WAITERS])
end

-- Sets the window fields of `seats` from ARGV[first..first + 2] (opens,
-- closes, starts; '' drops the field).
local function write_window(seats, first)
  for i, field in ipairs({'opens', 'closes', 'starts'}) do
    local value = ARGV[first + i - 1]
    if value == '' then
      redis.call('HDEL', seats, field)
    else
      redis.call('HSET', seats, field, value)
    end
  end
end

-- Whether the window fields of `seats` are ARGV[first..first + 2].
local function window_matches(seats, first)
  local now = redis.call('HMGET', seats, 'opens', 'closes', 'starts')
  for i = 1, 3 do
    if (now[i] or '') ~= ARGV[first + i - 1] then
      return false
    end
  end
  return true
end

-- Writes the whole state of the slot from the figures: the counter, its
-- window, its versions (`seen` as given), the waitlist's limit and
-- numbering (never moved back: a join on its way may hold a position the
-- figures do not show yet), the users, waiters and ids entries; `epoch` as
-- given. The slot's keys expire at ARGV[5]. Each of the users, ids and
-- waiters hashes also gets an entry under the empty field (no user or id is
-- empty): a sentinel, so a script that finds it missing knows the key was
-- lost (evicted, deleted) since it was loaded, and has the slot loaded
-- again.
local function write_figures(seats, users, ids, holds, waiters, epoch, seen)
  redis.call('DEL', users, ids, waiters)
  redis.call('HSET', users, '', '1')
  redis.call('HSET', ids, '', '1')
  redis.call('HSET', waiters, '', '1')
  local cap = tonumber(ARGV[2])
  local wseq = math.max(tonumber(redis.call('HGET', seats, 'wseq')) or 0, tonumber(ARGV[LAST_POSITION]))
  redis.call('HSET', seats, 'left', cap - tonumber(ARGV[3]), 'cap', cap, 'epoch', epoch,
    'ver', ARGV[4], 'seen', seen, 'wlimit', ARGV[WAITLIST_LIMIT], 'wseq', wseq)
  redis.call('HDEL', seats, 'capv')
  write_window(seats, 6)
  for i = FIRST_HOLDER, holders_end(), 2 do
    redis.call('HSET', users, ARGV[i], ARGV[i + 1])
  end
  for i = holders_end() + 1, waiters_end(), 2 do
    redis.call('HSET', waiters, ARGV[i], ARGV[i + 1])
  end
  for i = waiters_end() + 1, #ARGV, 2 do
    redis.call('HSET', ids, ARGV[i], ARGV[i + 1])
  end
  for _, key in ipairs({seats, users, ids, holds, waiters}) do
    redis.call('EXPIREAT', key, ARGV[5])
  end
end

-- Whether `hash` holds its sentinel and exactly the pairs ARGV[from..to].
local function hash_matches(hash, from, to)
  if redis.call('HEXISTS', hash, '') == 0 or redis.call('HLEN', hash) ~= (to - from + 1) / 2 + 1 then
    return false
  end
  for i = from, to, 2 do
    if redis.call('HGET', hash, ARGV[i]) ~= ARGV[i + 1] then
      return false
    end
  end
  return true
end

-- Whether the users, waiters and ids entries and the waitlist's limit are
-- exactly those of the figures.
local function entries_match(seats, users, ids, waiters)
  return redis.call('HGET', seats, 'wlimit') == ARGV[WAITLIST_LIMIT]
    and hash_matches(users, FIRST_HOLDER, holders_end())
    and hash_matches(waiters, holders_end() + 1, waiters_end())
    and hash_matches(ids, waiters_end() + 1, #ARGV)
end

