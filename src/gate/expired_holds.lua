-- expired_holds: the holds of one slot whose lease has run out, by Redis's
-- clock (so every replica agrees on what "expired" means). Reads only: the
-- reaper then asks the database whether each one committed, and finalizes or
-- releases it with the hold's own nonce.
--
-- KEYS[1] holds (as acquire's KEYS[4])
-- Returns a flat list: reservation id, hold value, reservation id, ...
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local expired = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  -- "party|user|deadline|nonce"; the user id may itself hold '|', so read
  -- the deadline from the end.
  local deadline = tonumber(string.match(all[i + 1], '|(%d+)|%d+$'))
  if deadline and deadline < now_ms then
    expired[#expired + 1] = all[i]
    expired[#expired + 1] = all[i + 1]
  end
end
return expired
