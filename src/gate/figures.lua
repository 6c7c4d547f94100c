-- figures: shared by warm.lua and reconcile.lua, which the gate loads with
-- this file (and versions.lua) in front of them; not a script of its own.
--
-- Both take the database's figures in ARGV the same way:
--   ARGV[2] capacity   ARGV[3] seats reserved   ARGV[4] the slot's version
--   ARGV[5] when the slot's keys expire (Unix seconds)
--   ARGV[6] opens, ARGV[7] closes, ARGV[8] starts: the sale window and the
--   slot's start, in Unix milliseconds ('' when the slot has no such bound)
--   ARGV[9] n, the number of active reservations, then n pairs of (user id,
--   reservation id), then pairs of (reservation id, fingerprint) for every
--   reservation of the slot whatever its status, to the end: so duplicates
--   and replays are told apart by the gate again, not by the database.
local FIRST_HOLDER = 10
local N_HOLDERS = 9

local function holders_end()
  return FIRST_HOLDER - 1 + 2 * tonumber(ARGV[N_HOLDERS])
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
-- window, its versions (`seen` as given), the users and ids entries;
-- `epoch` as given.
-- The slot's keys
-- expire at ARGV[5]. Each of the users and ids hashes also gets an entry
-- under the empty field (no user or reservation id is empty): a sentinel,
-- so a script that finds it missing knows the key was lost (evicted,
-- deleted) since it was loaded, and has the slot loaded again.
local function write_figures(seats, users, ids, holds, epoch, seen)
  redis.call('DEL', users, ids)
  redis.call('HSET', users, '', '1')
  redis.call('HSET', ids, '', '1')
  local cap = tonumber(ARGV[2])
  redis.call('HSET', seats, 'left', cap - tonumber(ARGV[3]), 'cap', cap, 'epoch', epoch,
    'ver', ARGV[4], 'seen', seen)
  redis.call('HDEL', seats, 'capv')
  write_window(seats, 6)
  for i = FIRST_HOLDER, holders_end(), 2 do
    redis.call('HSET', users, ARGV[i], ARGV[i + 1])
  end
  for i = holders_end() + 1, #ARGV, 2 do
    redis.call('HSET', ids, ARGV[i], ARGV[i + 1])
  end
  for _, key in ipairs({seats, users, ids, holds}) do
    redis.call('EXPIREAT', key, ARGV[5])
  end
end

-- Whether the users and ids entries are exactly those of the figures.
local function entries_match(users, ids)
  local n = tonumber(ARGV[N_HOLDERS])
  if redis.call('HEXISTS', users, '') == 0 or redis.call('HEXISTS', ids, '') == 0
      or redis.call('HLEN', users) ~= n + 1 or redis.call('HLEN', ids) ~= (#ARGV - holders_end()) / 2 + 1 then
    return false
  end
  for i = FIRST_HOLDER, holders_end(), 2 do
    if redis.call('HGET', users, ARGV[i]) ~= ARGV[i + 1] then
      return false
    end
  end
  for i = holders_end() + 1, #ARGV, 2 do
    if redis.call('HGET', ids, ARGV[i]) ~= ARGV[i + 1] then
      return false
    end
  end
  return true
end

