-- figures: shared by warm.lua and reconcile.lua, which the gate loads with
-- this file in front of them (it is not a script of its own).
--
-- write_figures(users, ids) writes the database's figures, as both scripts
-- take them in ARGV: ARGV[4] n, the number of active reservations, then n
-- pairs of (user id, reservation id) into `users`, then (reservation id,
-- fingerprint) pairs, to the end, into `ids`.
local function write_figures(users, ids)
  local holders_end = 4 + 2 * tonumber(ARGV[4])
  for i = 5, holders_end, 2 do
    redis.call('HSET', users, ARGV[i], ARGV[i + 1])
  end
  for i = holders_end + 1, #ARGV, 2 do
    redis.call('HSET', ids, ARGV[i], ARGV[i + 1])
  end
end

